//! Loading components: compile once, check the world, build the `InstancePre`.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{HasSelf, Linker};

use super::batch::WIT_VERSION;
use super::bindings::{Consumer, ConsumerPre};
use super::host::HostState;

/// How often the epoch advances; batch deadlines are checked at this granularity.
pub(crate) const TICK: Duration = Duration::from_millis(10);

/// A component that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("component {origin}: {reason}")]
pub struct ComponentError {
    /// Where it came from (a file path or a deployment).
    pub origin: String,
    /// Why it was refused.
    pub reason: String,
}

/// The wasmtime engine and linker shared by every component; cheap to clone.
///
/// The linker provides Beehive's imports (`publisher`, `logging`) and WASI 0.2, which a
/// Rust guest's standard library imports; the WASI context of each store grants nothing.
#[derive(Clone)]
pub struct WasmEngine {
    engine: wasmtime::Engine,
    linker: Arc<Linker<HostState>>,
    cache: Option<PathBuf>,
}

impl WasmEngine {
    /// Creates the engine (epoch interruption on) and starts its epoch ticker thread, which
    /// stops when the last clone of the engine is dropped.
    pub fn new() -> anyhow::Result<Self> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let engine = wasmtime::Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        Consumer::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("beehive-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })?;
        Ok(WasmEngine {
            engine,
            linker: Arc::new(linker),
            cache: cache_dir(),
        })
    }

    /// Uses `dir` (or nothing) to cache compiled components; by default
    /// `$BEEHIVE_CACHE_DIR`, else `$XDG_CACHE_HOME/beehive`, else `~/.cache/beehive`.
    pub fn with_cache_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.cache = dir;
        self
    }

    fn cache_path(&self, digest: &str) -> Option<PathBuf> {
        let mut hasher = std::hash::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let engine = hasher.finish();
        self.cache
            .as_ref()
            .map(|dir| dir.join(format!("{digest}-{engine:016x}.cwasm")))
    }

    fn cached(&self, digest: &str) -> Option<wasmtime::component::Component> {
        let path = self.cache_path(digest)?;
        if !path.exists() {
            return None;
        }
        // SAFETY: the cache holds only artifacts this engine configuration serialized, in a
        // folder private to the user (0700), named by the digest of the source bytes and
        // the engine's compatibility hash.
        match unsafe { wasmtime::component::Component::deserialize_file(&self.engine, &path) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable cached component");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    fn store_in_cache(&self, digest: &str, component: &wasmtime::component::Component) {
        let Some(path) = self.cache_path(digest) else {
            return;
        };
        let result = (|| -> anyhow::Result<()> {
            let dir = path.parent().expect("cache files live in a folder");
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
            let bytes = component.serialize()?;
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &path)?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot cache the compiled component");
        }
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &wasmtime::Engine {
        &self.engine
    }

    /// Loads a component file; see [`load_bytes`](Self::load_bytes).
    pub fn load_file(&self, path: &Path) -> Result<Component, ComponentError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| ComponentError {
            origin: origin.clone(),
            reason: format!("cannot read: {e}"),
        })?;
        self.load_bytes(&bytes, &origin)
    }

    /// Compiles `bytes`, checks that they are a component implementing the
    /// `beehive:broker/consumer` world with nothing imported beyond what the host provides,
    /// and builds its `InstancePre`.
    pub fn load_bytes(&self, bytes: &[u8], origin: &str) -> Result<Component, ComponentError> {
        let refuse = |reason: String| ComponentError {
            origin: origin.to_string(),
            reason,
        };
        if bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0] {
            return Err(refuse("this is a core WebAssembly module, not a component: build with --target wasm32-wasip2 (or componentize it)".into()));
        }
        if bytes.len() < 8 || bytes[..4] != *b"\0asm" {
            return Err(refuse(
                "not a WebAssembly component (bad magic number)".into(),
            ));
        }
        let digest = hex::encode(Sha256::digest(bytes));
        let component = match self.cached(&digest) {
            Some(component) => component,
            None => {
                let component = wasmtime::component::Component::new(&self.engine, bytes)
                    .map_err(|e| refuse(format!("does not compile: {e:#}")))?;
                self.store_in_cache(&digest, &component);
                component
            }
        };
        self.check(component, digest, origin)
    }

    /// Compiles a component written in the WebAssembly text format, for tests.
    #[cfg(test)]
    pub(crate) fn load_wat(&self, text: &str, origin: &str) -> Result<Component, ComponentError> {
        let component = wasmtime::component::Component::new(&self.engine, text).map_err(|e| {
            ComponentError {
                origin: origin.to_string(),
                reason: format!("does not compile: {e:#}"),
            }
        })?;
        self.check(component, hex::encode(Sha256::digest(text)), origin)
    }

    /// Checks that `component` implements the `beehive:broker/consumer` world with nothing
    /// imported beyond what the host provides, and builds its `InstancePre`.
    fn check(
        &self,
        component: wasmtime::component::Component,
        digest: String,
        origin: &str,
    ) -> Result<Component, ComponentError> {
        let refuse = |reason: String| ComponentError {
            origin: origin.to_string(),
            reason,
        };
        if let Some(version) = other_wit_version(&self.engine, &component) {
            return Err(refuse(format!(
                "it was built for beehive:broker@{version}; this host runs beehive:broker@{WIT_VERSION} \
                 (events arrive as one packed batch): rebuild it against this release's wit/ \
                 (Rust: beehive-guest {WIT_VERSION})"
            )));
        }
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            refuse(format!(
                "imports something the host does not provide: {e:#}"
            ))
        })?;
        let pre = ConsumerPre::new(pre).map_err(|e| refuse(format!("does not implement the world beehive:broker/consumer (it must export beehive:broker/handler@{WIT_VERSION} with handle-events): {e:#}")))?;
        Ok(Component {
            inner: Arc::new(ComponentInner {
                digest,
                origin: origin.to_string(),
                pre,
            }),
        })
    }
}

/// A compiled, checked component; cheap to clone.
#[derive(Clone)]
pub struct Component {
    inner: Arc<ComponentInner>,
}

struct ComponentInner {
    digest: String,
    origin: String,
    pre: ConsumerPre<HostState>,
}

impl Component {
    /// The SHA-256 digest of its bytes, in hex: the version's identity.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// The first 12 hex digits of the digest, for logs.
    pub fn short_digest(&self) -> &str {
        &self.inner.digest[..12]
    }

    /// Where it was loaded from.
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    pub(crate) fn pre(&self) -> &ConsumerPre<HostState> {
        &self.inner.pre
    }
}

impl std::fmt::Debug for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Component({} {})",
            self.inner.origin,
            self.short_digest()
        )
    }
}

/// The version of `beehive:broker` a component imports or exports, when it is not the one
/// this host implements.
fn other_wit_version(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> Option<String> {
    let ty = component.component_type();
    let names: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .chain(ty.exports(engine).map(|(name, _)| name.to_string()))
        .collect();
    names.iter().find_map(|name| {
        let (_, version) = name.strip_prefix("beehive:broker/")?.split_once('@')?;
        (version != WIT_VERSION).then(|| version.to_string())
    })
}

/// The default cache folder for compiled components.
fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("BEEHIVE_CACHE_DIR") {
        return (!dir.is_empty()).then(|| PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("beehive"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/beehive"))
}
