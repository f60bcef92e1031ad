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
    ///
    /// Loading native code is only as safe as the folder it comes from, so the folder is
    /// created with mode 0700 and used only while it is owned by the user this process runs
    /// as and writable by nobody else; each artifact in it must be a regular file owned by
    /// that user and not writable by group or others. Otherwise components are compiled in
    /// memory and a warning is logged (once per folder, or artifact, per process). The
    /// folder's parents are not checked. Artifacts are written with mode 0600, through a
    /// temporary file renamed into place.
    pub fn with_cache_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.cache = dir;
        self
    }

    /// Where the artifact of the component whose source bytes have `digest` is cached, if
    /// there is a cache folder and it can be trusted (created first if it is missing).
    fn artifact_path(&self, digest: &str) -> Option<PathBuf> {
        let dir = self.cache.as_deref()?;
        if let Err(reason) = cache::prepare_folder(dir) {
            cache::warn_once(dir, || {
                tracing::warn!(folder = %dir.display(), %reason, "not using this folder to cache compiled components; compiling them in memory");
            });
            return None;
        }
        let mut hasher = std::hash::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let engine = hasher.finish();
        Some(dir.join(format!("{digest}-{engine:016x}.cwasm")))
    }

    /// The cached artifact at `path`, if there is one this process may trust and it
    /// deserializes.
    fn cached(&self, path: &Path) -> Option<wasmtime::component::Component> {
        let bytes = match cache::read_artifact(path) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return None,
            Err(reason) => {
                cache::warn_once(path, || {
                    tracing::warn!(path = %path.display(), %reason, "refusing a cached compiled component; compiling it in memory");
                });
                return None;
            }
        };
        // SAFETY: `bytes` were read, through the handle whose owner and mode were checked,
        // from a folder only this user can write to (checked by `artifact_path`), where this
        // host writes artifacts that this engine configuration serialized, named by the
        // digest of their source bytes and the engine's compatibility hash. Deserializing
        // from memory (not a mapping of the file) means later writes to the file cannot
        // change the code.
        match unsafe { wasmtime::component::Component::deserialize(&self.engine, &bytes) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable cached component");
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }

    fn store_in_cache(&self, path: &Path, component: &wasmtime::component::Component) {
        let result = component
            .serialize()
            .map_err(std::io::Error::other)
            .and_then(|bytes| cache::write_artifact(path, &bytes));
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
            reason: if e.kind() == std::io::ErrorKind::NotFound {
                "no such file: build the component first, or fix the path".to_string()
            } else {
                format!("cannot read: {e}")
            },
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
        let artifact = self.artifact_path(&digest);
        let component = match artifact.as_deref().and_then(|path| self.cached(path)) {
            Some(component) => component,
            None => {
                let component = wasmtime::component::Component::new(&self.engine, bytes)
                    .map_err(|e| refuse(format!("does not compile: {e:#}")))?;
                if let Some(path) = &artifact {
                    self.store_in_cache(path, &component);
                }
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
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| refuse(self.unprovided_imports(&component, &e)))?;
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

impl WasmEngine {
    /// Why a component's imports cannot be satisfied, with the fix where one is known.
    fn unprovided_imports(
        &self,
        component: &wasmtime::component::Component,
        error: &wasmtime::Error,
    ) -> String {
        let http = component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_string())
            .find(|name| name.starts_with("wasi:http/"));
        match http {
            // componentize-js adds an HTTP fetch handler and wasi:http imports unless told
            // not to.
            Some(name) => format!(
                "it imports {name}, and the sandbox provides no HTTP (nor any network):                  a JavaScript component must be built with componentize-js `-d http fetch-event`                  (as scripts/build-js does), which leaves its HTTP support out;                  in other languages, drop the HTTP dependency"
            ),
            None => format!("imports something the host does not provide: {error:#}"),
        }
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

/// The folder of compiled components: who may write to it decides whether its native code
/// may be loaded.
mod cache {
    use std::collections::BTreeSet;
    use std::fs::{DirBuilder, File, Metadata, OpenOptions};
    use std::io::{Read, Write};
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, OnceLock, PoisonError};

    /// Creates `dir` (mode 0700, parents too) if it is missing, and checks that this
    /// process may trust it; why not, if it may not.
    pub(super) fn prepare_folder(dir: &Path) -> Result<(), String> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create it: {e}"))?;
        let metadata = std::fs::metadata(dir).map_err(|e| format!("cannot inspect it: {e}"))?;
        if !metadata.is_dir() {
            return Err("it is not a folder".into());
        }
        trusted(&metadata)
    }

    /// The artifact at `path`: `None` if there is none, an error saying why if it may not
    /// be trusted. Its owner and mode are checked on the open file, so the bytes read are
    /// those of the file checked.
    pub(super) fn read_artifact(path: &Path) -> Result<Option<Vec<u8>>, String> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot open it: {e}")),
        };
        let metadata = file
            .metadata()
            .map_err(|e| format!("cannot inspect it: {e}"))?;
        if !metadata.is_file() {
            return Err("it is not a regular file".into());
        }
        trusted(&metadata)?;
        let mut bytes = Vec::with_capacity(metadata.len() as usize);
        file.read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read it: {e}"))?;
        Ok(Some(bytes))
    }

    /// Writes `bytes` to `path` atomically: into a new file of mode 0600 in the same folder,
    /// flushed to disk, then renamed over `path`.
    pub(super) fn write_artifact(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = path.with_file_name(format!(
            ".{name}.{}-{}.tmp",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Whether a folder or file with `metadata` may be trusted: owned by this process's
    /// user and not writable by group or others.
    fn trusted(metadata: &Metadata) -> Result<(), String> {
        let Some(uid) = running_uid() else {
            return Err("cannot tell which user this process runs as".into());
        };
        if metadata.uid() != uid {
            return Err(format!(
                "it is owned by uid {}, not by the user this process runs as (uid {uid})",
                metadata.uid()
            ));
        }
        let mode = metadata.mode();
        if mode & 0o022 != 0 {
            let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
                (true, true) => "group and others",
                (true, false) => "its group",
                _ => "others",
            };
            return Err(format!(
                "it is writable by {who} (mode {:04o}; `chmod go-w` makes it usable)",
                mode & 0o7777
            ));
        }
        Ok(())
    }

    /// The user that owns the files this process creates: the filesystem uid from
    /// `/proc/self/status` or, where there is none, the owner of a file it creates.
    fn running_uid() -> Option<u32> {
        static UID: OnceLock<Option<u32>> = OnceLock::new();
        *UID.get_or_init(|| proc_status_uid().or_else(created_file_uid))
    }

    fn proc_status_uid() -> Option<u32> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
        // Real, effective, saved and filesystem uid.
        line.split_whitespace().nth(3)?.parse().ok()
    }

    fn created_file_uid() -> Option<u32> {
        let path = std::env::temp_dir().join(format!(
            ".beehive-uid-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_nanos()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .ok()?;
        let uid = file.metadata().ok().map(|m| m.uid());
        let _ = std::fs::remove_file(&path);
        uid
    }

    /// Runs `warn` the first time it is called for `path` in this process.
    pub(super) fn warn_once(path: &Path, warn: impl FnOnce()) {
        static WARNED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
        let first = WARNED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_path_buf());
        if first {
            warn();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What componentize-js builds without `-d http fetch-event`: a component importing
    /// wasi:http. It is refused with the flag to build it with.
    #[test]
    fn a_component_importing_wasi_http_is_told_how_to_build() {
        let wasm = WasmEngine::new().unwrap().with_cache_dir(None);
        let text = r#"
            (component
              (import "wasi:http/outgoing-handler@0.2.3" (instance
                (export "handle" (func))))
            )
        "#;
        let error = wasm.load_wat(text, "router.wasm").unwrap_err().to_string();
        assert!(
            error.starts_with("component router.wasm: it imports wasi:http/outgoing-handler@0.2.3"),
            "{error}"
        );
        assert!(
            error.contains("componentize-js `-d http fetch-event`"),
            "{error}"
        );

        let other = r#"
            (component
              (import "acme:thing/api@1.0.0" (instance (export "f" (func))))
            )
        "#;
        let error = wasm.load_wat(other, "other.wasm").unwrap_err().to_string();
        assert!(
            error.contains("imports something the host does not provide"),
            "{error}"
        );
    }
}
