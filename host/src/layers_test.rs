//! Keeps the architecture as README's "Architecture" section draws it: reads every source
//! file of the crate and fails, naming file and line, when
//!
//! - a module refers to a module of a layer above its own (`crate::<module>` paths),
//! - a Redis command is built outside the `redis` layer (`redis::cmd(`, `redis::pipe(`,
//!   `redis::Script`),
//! - a Redis key or derived name is spelled outside `keys.rs`.
//!
//! The layer table lives here and nowhere else.

use std::path::{Path, PathBuf};

/// Bottom to top: a module may use its own module and those of lower layers only.
const LAYERS: &[&[&str]] = &[
    // The floor.
    &["error", "keys", "address"],
    &["event"],
    // The topology.
    &["registry"],
    &["config"],
    // The one layer that sends Redis commands.
    &["redis"],
    &["engine"],
    // What users call.
    &["broker"],
    &["consumer"],
    &["runtime"],
    // Running a fleet, and the command line.
    &["ops"],
    &["cli"],
];

/// Files that wire the layers together (they may name every module).
const ROOTS: &[&str] = &["lib.rs", "main.rs", "fuzz_tests.rs", "layers_test.rs"];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("the source directory is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The non-test, non-comment lines of a file, numbered from 1.
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        lines.push((i + 1, line));
    }
    lines
}

/// The top-level modules a line refers to through `crate::` paths, including grouped
/// imports such as `use crate::{a::X, b};`.
fn referenced_modules(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push(name);
        }
    }
    found
}

#[test]
fn modules_depend_on_lower_layers_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    files.sort();
    let mut violations = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&root).expect("under src");
        let name = relative.to_string_lossy().replace('\\', "/");
        if ROOTS.contains(&name.as_str()) {
            continue;
        }
        let module = name
            .split('/')
            .next()
            .expect("a path has a first component")
            .trim_end_matches(".rs")
            .to_string();
        let Some(own) = rank(&module) else {
            violations.push(format!(
                "src/{name}: module {module} is in no layer of layers_test.rs"
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for (line_no, line) in code_lines(&text) {
            for used in referenced_modules(line) {
                if used == module || rank(&used).is_some_and(|r| r < own) {
                    continue;
                }
                // Re-exports at the crate root (`crate::Event`, `crate::CancellationToken`)
                // name no module: they resolve to a layer below through lib.rs.
                if used.starts_with(|c: char| c.is_uppercase()) {
                    continue;
                }
                violations.push(format!(
                    "src/{name}:{line_no}: {module} uses crate::{used}, a layer above or beside it"
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations.join("\n")
    );
}

#[test]
fn redis_commands_and_keys_each_live_in_one_place() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    files.sort();
    let mut violations = Vec::new();
    for file in &files {
        let name = file
            .strip_prefix(&root)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        // Test files may spell keys to check them.
        if name == "layers_test.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for (line_no, line) in code_lines(&text) {
            if !name.starts_with("redis/") {
                for command in ["redis::cmd(", "redis::pipe(", "redis::Script", "Cmd::new("] {
                    if line.contains(command) {
                        violations.push(format!(
                            "src/{name}:{line_no}: {command} outside the redis layer"
                        ));
                    }
                }
            }
            if name != "keys.rs" {
                let key_like = line.match_indices("\"beehive:").any(|(at, _)| {
                    let after = &line[at + "\"beehive:".len()..];
                    !after.starts_with(':') && !after.starts_with("broker")
                });
                for pattern in ["-dead-letter\"", "_consumer-", "\"consumer-"] {
                    if line.contains(pattern) || key_like {
                        violations.push(format!(
                            "src/{name}:{line_no}: a Redis key or name spelled outside keys.rs"
                        ));
                        break;
                    }
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "commands or keys out of place:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_grouped_and_inline_paths() {
    assert_eq!(
        referenced_modules("use crate::{broker::EventBroker, keys};"),
        ["broker", "keys"]
    );
    assert_eq!(
        referenced_modules("let x = crate::ops::metrics::Metrics::new(); crate::cli::main()"),
        ["ops", "cli"]
    );
    assert!(rank("ops") > rank("consumer"));
    assert!(rank("redis") < rank("engine"));
}
