//! `beehive new <dir> [--lang rust|python|js]`: a handler project that builds on its own,
//! offline, outside this repository, with events and their expectation for `beehive test`.
//!
//! Every file comes from the binary (`host/templates/`, the SDKs and the WIT are embedded
//! with `include_str!`), so the command works wherever the binary is. The project carries
//! its own copy of the SDK and of `wit/beehive.wit` rather than a path to this repository:
//! it stays buildable when the repository moves or is gone, can live in a repository of its
//! own, and the three languages work alike (componentize-py and componentize-js need the WIT
//! as files anyway). A Rust project gets the workspace's `rust-toolchain.toml` and a
//! `Cargo.lock` cut from the workspace's, pinning the crates this repository builds with, so
//! `cargo build` resolves nothing and reads only `~/.cargo`. The Python and JavaScript
//! build scripts look for componentize-py / componentize-js on PATH (or
//! `$COMPONENTIZE_JS`), then where this repository's demo installs them (its `target/`, the
//! folder of this binary's checkout, or `$BEEHIVE_HOME`), and only then install them from
//! the network.

mod lock;

use std::path::{Path, PathBuf};

use clap::ValueEnum;

use super::{CommandResult, Failure};

/// Arguments of `beehive new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The project folder to create (it must not exist, or be empty).
    pub dir: PathBuf,
    /// The handler's language.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    pub lang: Lang,
}

/// The languages `beehive new` writes handlers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Rust, with the `beehive-guest` SDK (cargo, wasm32-wasip2).
    Rust,
    /// Python, with the SDK of `guest-sdk/python` (componentize-py).
    Python,
    /// JavaScript, with `guest-sdk/js/beehive.js` (componentize-js).
    Js,
}

/// Files shared by every language.
const README: &str = include_str!("../../templates/README.md");
const CONFIG: &str = include_str!("../../templates/beehive.yaml");
const EVENTS: &str = include_str!("../../templates/events.jsonl");
/// What every language's template handler does with [`EVENTS`].
const EXPECTED: &str = include_str!("../../templates/expected.jsonl");
const WIT: &str = include_str!("../../../wit/beehive.wit");

/// The Rust SDK, copied into `beehive-guest/src/` of a Rust project.
const RUST_SDK: &[(&str, &str)] = &[
    ("error.rs", include_str!("../../../guest-sdk/src/error.rs")),
    ("event.rs", include_str!("../../../guest-sdk/src/event.rs")),
    (
        "export.rs",
        include_str!("../../../guest-sdk/src/export.rs"),
    ),
    ("host.rs", include_str!("../../../guest-sdk/src/host.rs")),
    ("lib.rs", include_str!("../../../guest-sdk/src/lib.rs")),
    (
        "outcome.rs",
        include_str!("../../../guest-sdk/src/outcome.rs"),
    ),
    (
        "testing.rs",
        include_str!("../../../guest-sdk/src/testing.rs"),
    ),
];

/// The Python SDK, copied into `sdk/` of a Python project.
const PYTHON_SDK: &[(&str, &str)] = &[
    (
        "beehive_batch.py",
        include_str!("../../../guest-sdk/python/beehive_batch.py"),
    ),
    (
        "beehive_guest.py",
        include_str!("../../../guest-sdk/python/beehive_guest.py"),
    ),
    (
        "beehive_msgpack.py",
        include_str!("../../../guest-sdk/python/beehive_msgpack.py"),
    ),
];

/// The JavaScript SDK, copied beside `handler.js`.
const JS_SDK: &str = include_str!("../../../guest-sdk/js/beehive.js");

/// The workspace's lock and toolchain: the crate versions and the Rust this repository
/// builds with (and so the ones a machine that ran its demo has).
const WORKSPACE_LOCK: &str = include_str!("../../../Cargo.lock");
const TOOLCHAIN: &str = include_str!("../../../rust-toolchain.toml");

/// The version of the SDK copied (the workspace's).
const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The registry dependencies of the copied SDK and of the handler crate, as version
/// prefixes of their requirements in the templates' `Cargo.toml` files.
const SDK_DEPENDENCIES: &[(&str, &str)] = &[
    ("rmp-serde", "1.3."),
    ("serde", "1."),
    ("wit-bindgen", "0.61."),
];
const HANDLER_DEPENDENCIES: &[(&str, &str)] = &[("beehive-guest", ""), ("serde", "1.")];

/// A file of the project: its path inside the project, its text, whether it is executable.
struct File {
    path: String,
    text: String,
    executable: bool,
}

impl File {
    fn new(path: impl Into<String>, text: impl Into<String>) -> Self {
        File {
            path: path.into(),
            text: text.into(),
            executable: false,
        }
    }

    fn executable(mut self) -> Self {
        self.executable = true;
        self
    }
}

/// Everything that differs between the languages.
struct Project {
    files: Vec<File>,
    /// The language's name in prose.
    language: &'static str,
    /// The build command, run in the project folder.
    build: String,
    /// The component the build writes, relative to the project folder.
    component: String,
    /// The limits for `beehive.yaml` and `beehive test` (an interpreter needs more).
    memory: &'static str,
    timeout: &'static str,
    /// README notes on the build.
    build_notes: &'static str,
    /// README lines on the files.
    files_notes: &'static str,
}

/// The project's name: the folder's, made a valid package name.
fn project_name(dir: &Path) -> String {
    let raw = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name.trim_matches(['-', '_']).to_string();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name = format!("handler-{name}").trim_end_matches('-').to_string();
    }
    if [
        "test",
        "core",
        "std",
        "alloc",
        "proc-macro",
        "proc_macro",
        "build",
    ]
    .contains(&name.as_str())
    {
        name.push_str("-handler");
    }
    name
}

fn rust_project(name: &str) -> Result<Project, Failure> {
    let crate_file = name.replace('-', "_");
    let lock = lock::project_lock(
        WORKSPACE_LOCK,
        &[
            lock::Local {
                name,
                version: "0.1.0",
                dependencies: HANDLER_DEPENDENCIES.to_vec(),
            },
            lock::Local {
                name: "beehive-guest",
                version: SDK_VERSION,
                dependencies: SDK_DEPENDENCIES.to_vec(),
            },
        ],
    )
    .map_err(|e| Failure::Runtime(format!("cannot write Cargo.lock: {e}")))?;
    let mut files = vec![
        File::new(
            "Cargo.toml",
            include_str!("../../templates/rust/Cargo.toml"),
        ),
        File::new("Cargo.lock", lock),
        File::new("rust-toolchain.toml", TOOLCHAIN),
        File::new("src/lib.rs", include_str!("../../templates/rust/lib.rs")),
        File::new(
            "beehive-guest/Cargo.toml",
            include_str!("../../templates/rust/beehive-guest.Cargo.toml"),
        ),
        File::new("wit/beehive.wit", WIT),
        File::new(".gitignore", include_str!("../../templates/rust/gitignore")),
    ];
    for (file, text) in RUST_SDK {
        files.push(File::new(format!("beehive-guest/src/{file}"), *text));
    }
    Ok(Project {
        files,
        language: "Rust",
        build: "cargo build --release --target wasm32-wasip2".into(),
        component: format!("target/wasm32-wasip2/release/{crate_file}.wasm"),
        memory: "64MiB",
        timeout: "5s",
        build_notes: "The `.wasm` in `target/wasm32-wasip2/release/` is already a component. \
`Cargo.lock` pins the crates the Beehive repository builds with, so the build needs no \
network on a machine that ran its demo; `rust-toolchain.toml` picks the same Rust (with the \
`wasm32-wasip2` target).",
        files_notes: "- `src/lib.rs`: the handler;\n\
- `beehive-guest/`: the Beehive SDK for Rust (a copy of `guest-sdk/`; see its `src/lib.rs` \
for the API: `Event`, `Outcome`, `publish`, the log macros), and `wit/beehive.wit`, the \
contract between handlers and the host it is generated from;\n\
- `events.jsonl`, `expected.jsonl`: the test events and what the handler does with them;\n\
- `beehive.yaml`: a configuration that runs the handler.",
    })
}

fn python_project() -> Project {
    let mut files = vec![
        File::new("app.py", include_str!("../../templates/python/app.py")),
        File::new("build.sh", include_str!("../../templates/python/build.sh")).executable(),
        File::new("wit/beehive.wit", WIT),
        File::new(
            ".gitignore",
            include_str!("../../templates/python/gitignore"),
        ),
    ];
    for (file, text) in PYTHON_SDK {
        files.push(File::new(format!("sdk/{file}"), *text));
    }
    Project {
        files,
        language: "Python",
        build: "bash build.sh".into(),
        component: "handler.wasm".into(),
        memory: "128MiB",
        timeout: "10s",
        build_notes: "`build.sh` runs componentize-py (0.25.1, from PyPI): the one on PATH, else \
the one the Beehive repository's demo installed (`$BEEHIVE_HOME/target/componentize-py-venv`), \
else one it installs into `~/.cache/beehive-tools` (that once needs the network). The \
component bundles the Python interpreter, hence the larger limits in `beehive.yaml`.",
        files_notes: "- `app.py`: the handler;\n\
- `sdk/`: the Beehive SDK for Python (a copy of `guest-sdk/python`; `beehive_guest.py` \
documents the API: `each`, `ack`, `publish`, `info`, `BadInput`), and `wit/beehive.wit`, \
the contract between handlers and the host;\n\
- `events.jsonl`, `expected.jsonl`: the test events and what the handler does with them;\n\
- `beehive.yaml`: a configuration that runs the handler.",
    }
}

fn js_project(name: &str) -> Project {
    Project {
        files: vec![
            File::new("handler.js", include_str!("../../templates/js/handler.js")),
            File::new("beehive.js", JS_SDK),
            File::new("build.sh", include_str!("../../templates/js/build.sh")).executable(),
            File::new(
                "package.json",
                include_str!("../../templates/js/package.json").replace("{{crate}}", name),
            ),
            File::new("wit/beehive.wit", WIT),
            File::new(".gitignore", include_str!("../../templates/js/gitignore")),
        ],
        language: "JavaScript",
        build: "bash build.sh".into(),
        component: "handler.wasm".into(),
        memory: "128MiB",
        timeout: "10s",
        build_notes: "`build.sh` runs componentize-js (0.23.0, from npm; Node 20 or later): \
`$COMPONENTIZE_JS`, else the one the Beehive repository's demo installed \
(`$BEEHIVE_HOME/target/js-tools`), else one it installs into `~/.cache/beehive-tools` (that \
once needs the network). It passes `-d http fetch-event`: without it the component imports \
`wasi:http`, which the host refuses. The component bundles a JavaScript engine, hence the \
larger limits in `beehive.yaml`.",
        files_notes: "- `handler.js`: the handler;\n\
- `beehive.js`: the Beehive SDK for JavaScript (a copy of `guest-sdk/js/beehive.js`; its \
header documents the API: `each`, `ack`, `publish`, `info`, `BadInput`), and \
`wit/beehive.wit`, the contract between handlers and the host;\n\
- `events.jsonl`, `expected.jsonl`: the test events and what the handler does with them;\n\
- `beehive.yaml`: a configuration that runs the handler.",
    }
}

/// The Beehive checkout this binary belongs to (`$BEEHIVE_HOME`, else the folder above the
/// binary holding `wit/beehive.wit` and `guest-sdk/`), where the demo installs the Python
/// and JavaScript build tools.
fn beehive_home() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("BEEHIVE_HOME") {
        return (!home.is_empty()).then(|| PathBuf::from(home));
    }
    let exe = std::env::current_exe().ok()?.canonicalize().ok()?;
    exe.ancestors()
        .skip(1)
        .find(|dir| dir.join("wit/beehive.wit").is_file() && dir.join("guest-sdk").is_dir())
        .map(Path::to_path_buf)
}

/// How to call this binary in a printed command: `beehive` when that is what PATH finds,
/// else its full path.
fn beehive_command() -> String {
    let Some(exe) = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok())
    else {
        return "beehive".into();
    };
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("beehive"))
            .find(|candidate| candidate.is_file())
    });
    if on_path.and_then(|p| p.canonicalize().ok()).as_ref() == Some(&exe) {
        "beehive".into()
    } else {
        shell_word(&exe.to_string_lossy())
    }
}

/// `text` as one shell word.
fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// `text` for use inside double quotes in a shell script.
fn double_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '"' | '$' | '`' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut text = template.to_string();
    for (key, value) in values {
        text = text.replace(&format!("{{{{{key}}}}}"), value);
    }
    text
}

/// The project for `lang` named `name`, with every placeholder filled.
fn project(
    lang: Lang,
    name: &str,
    beehive: &str,
    home: &str,
) -> Result<(Project, String), Failure> {
    let mut project = match lang {
        Lang::Rust => rust_project(name)?,
        Lang::Python => python_project(),
        Lang::Js => js_project(name),
    };
    let test = format!(
        "{beehive} test {} events.jsonl --publish signups,purchases{}",
        project.component,
        if project.memory == "64MiB" && project.timeout == "5s" {
            String::new()
        } else {
            format!(" --memory {} --timeout {}", project.memory, project.timeout)
        }
    );
    let readme_test = test.replacen(beehive, "beehive", 1);
    let values: [(&str, &str); 12] = [
        ("name", name),
        ("crate", name),
        ("crate_file", &name.replace('-', "_")),
        ("sdk_version", SDK_VERSION),
        ("beehive_home", &double_quoted(home)),
        ("component", &project.component.clone()),
        ("memory", project.memory),
        ("timeout", project.timeout),
        ("language", project.language),
        ("build", &project.build.clone()),
        ("test", &readme_test),
        ("build_notes", project.build_notes),
    ];
    let files_notes = project.files_notes;
    for file in &mut project.files {
        file.text = fill(&file.text, &values);
    }
    project.files.push(File::new("events.jsonl", EVENTS));
    project.files.push(File::new("expected.jsonl", EXPECTED));
    project
        .files
        .push(File::new("beehive.yaml", fill(CONFIG, &values)));
    project.files.push(File::new(
        "README.md",
        fill(&README.replace("{{files}}", files_notes), &values),
    ));
    Ok((project, test))
}

pub(super) async fn run(args: NewArgs) -> CommandResult {
    let dir = &args.dir;
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Failure::Usage(format!(
                    "{} already exists and is not empty: give a new folder",
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Failure::Usage(format!("cannot use {}: {e}", dir.display())));
        }
    }
    let name = project_name(&std::path::absolute(dir).unwrap_or_else(|_| dir.clone()));
    let home = beehive_home()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (project, test) = project(args.lang, &name, &beehive_command(), &home)?;
    for file in &project.files {
        write(dir, file).map_err(|e| {
            Failure::Runtime(format!(
                "cannot write {}: {e}",
                dir.join(&file.path).display()
            ))
        })?;
    }
    let shown = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
    let cd = format!("cd {} && ", shell_word(&shown.to_string_lossy()));
    println!(
        "created a {} handler in {} ({} files; README.md explains them)",
        project.language,
        shown.display(),
        project.files.len()
    );
    println!(
        "test it once built (the events and their expectation are in events.jsonl and expected.jsonl):"
    );
    println!("  {cd}{test}");
    println!("build it:");
    println!("  {cd}{}", project.build);
    Ok(())
}

fn write(dir: &Path, file: &File) -> std::io::Result<()> {
    let path = dir.join(&file.path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, &file.text)?;
    if file.executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace_file(path: &str) -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn names_in(dir: &str, ext: &str) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(ext))
                .collect();
        names.sort();
        names
    }

    #[test]
    fn every_sdk_file_is_copied() {
        let rust: Vec<&str> = RUST_SDK.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names_in("guest-sdk/src", ".rs"),
            rust,
            "add the file to RUST_SDK"
        );
        let python: Vec<&str> = PYTHON_SDK.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names_in("guest-sdk/python", ".py"),
            python,
            "add the file to PYTHON_SDK"
        );
    }

    #[test]
    fn the_copied_sdk_depends_on_what_guest_sdk_does() {
        let manifest = workspace_file("guest-sdk/Cargo.toml");
        let workspace = workspace_file("Cargo.toml");
        let template = include_str!("../../templates/rust/beehive-guest.Cargo.toml");
        assert!(manifest.contains("wit-bindgen = \"0.61\""), "{manifest}");
        assert!(template.contains("wit-bindgen = \"0.61\""));
        assert!(workspace.contains("serde = { version = \"1\""));
        assert!(workspace.contains("rmp-serde = \"1.3\""));
        assert!(template.contains("rmp-serde = \"1.3\""));
        assert!(template.contains("serde = { version = \"1\""));
        for line in manifest
            .lines()
            .skip_while(|l| *l != "[dependencies]")
            .skip(1)
        {
            if line.starts_with('[') {
                break;
            }
            let dep: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            if !dep.is_empty() {
                assert!(
                    SDK_DEPENDENCIES.iter().any(|(name, _)| *name == dep),
                    "guest-sdk depends on {dep}: add it to the template and SDK_DEPENDENCIES"
                );
            }
        }
    }

    #[test]
    fn every_placeholder_is_filled_and_the_config_is_valid() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            let (project, test) =
                project(lang, "my-handler", "beehive", "/opt/bee \"hive\"").unwrap();
            for file in &project.files {
                assert!(
                    !file.text.contains("{{"),
                    "{lang:?} {}: unfilled placeholder",
                    file.path
                );
            }
            let config = &project
                .files
                .iter()
                .find(|f| f.path == "beehive.yaml")
                .unwrap()
                .text;
            let parsed = crate::Config::parse(config, Path::new("beehive.yaml")).unwrap();
            assert_eq!(parsed.consumers["router"].publish, ["signups", "purchases"]);
            assert!(
                test.starts_with("beehive test ") && test.contains("--publish signups,purchases")
            );
            if lang != Lang::Rust {
                let build = &project.files.iter().find(|f| f.path == "build.sh").unwrap();
                assert!(build.executable);
                assert!(
                    build
                        .text
                        .contains(r#"BEEHIVE_HOME="${BEEHIVE_HOME:-/opt/bee \"hive\"}""#)
                );
            }
        }
    }

    #[test]
    fn the_rust_lock_pins_the_sdk_dependencies() {
        let (project, _) = project(Lang::Rust, "my-handler", "beehive", "").unwrap();
        let lock = &project
            .files
            .iter()
            .find(|f| f.path == "Cargo.lock")
            .unwrap()
            .text;
        for needed in [
            "name = \"wit-bindgen\"",
            "name = \"rmp-serde\"",
            "name = \"serde\"",
            "name = \"my-handler\"",
            "name = \"beehive-guest\"",
        ] {
            assert!(lock.contains(needed), "{needed}");
        }
        assert!(!lock.contains("name = \"wasmtime\""));
    }

    #[test]
    fn names_are_valid_package_names() {
        assert_eq!(project_name(Path::new("/tmp/My Handler")), "my-handler");
        assert_eq!(project_name(Path::new("/tmp/2go")), "handler-2go");
        assert_eq!(project_name(Path::new("/tmp/test")), "test-handler");
        assert_eq!(shell_word("/a b/c"), "'/a b/c'");
        assert_eq!(shell_word("/usr/bin/beehive"), "/usr/bin/beehive");
    }
}
