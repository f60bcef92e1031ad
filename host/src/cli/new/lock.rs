//! A `Cargo.lock` for a new Rust handler project, cut from the workspace's own: the
//! packages the SDK's dependencies reach, at the versions this repository builds with, so
//! that `cargo build` resolves nothing and needs no network when they are in `~/.cargo`.

use std::collections::{BTreeSet, HashMap};

/// A package of the lock file.
struct Package<'a> {
    name: &'a str,
    version: &'a str,
    /// Its lines (without `[[package]]`).
    lines: Vec<&'a str>,
    /// Its dependency entries: `name`, `name version` or `name version (source)`.
    dependencies: Vec<&'a str>,
}

/// A package of the new project itself (a path dependency or the root: no source).
pub(super) struct Local<'a> {
    /// Its name.
    pub(super) name: &'a str,
    /// Its version.
    pub(super) version: &'a str,
    /// Its dependencies: a local name, or a registry package as `(name, version prefix)`
    /// (the highest locked version starting with the prefix is taken).
    pub(super) dependencies: Vec<(&'a str, &'a str)>,
}

fn parse(lock: &str) -> (&str, Vec<Package<'_>>) {
    let mut blocks = lock.split("[[package]]\n");
    let header = blocks.next().unwrap_or_default();
    let packages = blocks
        .map(|block| {
            let lines: Vec<&str> = block.lines().filter(|l| !l.is_empty()).collect();
            let field = |key: &str| {
                lines
                    .iter()
                    .find_map(|l| {
                        l.strip_prefix(key)?
                            .strip_prefix(" = \"")?
                            .strip_suffix('"')
                    })
                    .unwrap_or_default()
            };
            let dependencies = lines
                .iter()
                .skip_while(|l| !l.starts_with("dependencies = ["))
                .skip(1)
                .take_while(|l| !l.starts_with(']'))
                .filter_map(|l| l.trim().strip_prefix('"')?.strip_suffix("\","))
                .collect();
            Package {
                name: field("name"),
                version: field("version"),
                lines,
                dependencies,
            }
        })
        .collect();
    (header, packages)
}

/// The lock of a project made of `locals`, with the registry packages they reach in
/// `workspace_lock`; an error names a dependency the workspace does not lock.
pub(super) fn project_lock(workspace_lock: &str, locals: &[Local<'_>]) -> Result<String, String> {
    let (header, packages) = parse(workspace_lock);
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, package) in packages.iter().enumerate() {
        by_name.entry(package.name).or_default().push(i);
    }
    // A dependency entry of the lock: `name`, `name version`, `name version (source)`.
    let resolve = |entry: &str| -> Option<usize> {
        let mut parts = entry.split(' ');
        let name = parts.next()?;
        let candidates = by_name.get(name)?;
        match parts.next() {
            None => candidates.first().copied(),
            Some(version) => candidates
                .iter()
                .copied()
                .find(|&i| packages[i].version == version),
        }
    };
    let local_names: BTreeSet<&str> = locals.iter().map(|l| l.name).collect();
    let mut keep = BTreeSet::new();
    let mut todo = Vec::new();
    let mut local_deps: Vec<Vec<Result<&str, usize>>> = Vec::new();
    for local in locals {
        let mut deps = Vec::new();
        for &(name, prefix) in &local.dependencies {
            if local_names.contains(name) {
                deps.push(Ok(name));
                continue;
            }
            let found = by_name
                .get(name)
                .into_iter()
                .flatten()
                .copied()
                .filter(|&i| packages[i].version.starts_with(prefix))
                .max_by(|&a, &b| compare_versions(packages[a].version, packages[b].version))
                .ok_or_else(|| {
                    format!(
                        "the workspace's Cargo.lock has no {name} {prefix}* (a dependency of {})",
                        local.name
                    )
                })?;
            deps.push(Err(found));
            todo.push(found);
        }
        local_deps.push(deps);
    }
    while let Some(i) = todo.pop() {
        if keep.insert(i) {
            for entry in &packages[i].dependencies {
                let found = resolve(entry)
                    .ok_or_else(|| format!("the workspace's Cargo.lock lacks {entry}"))?;
                todo.push(found);
            }
        }
    }
    // How a kept package is named in a dependency list: with its version only when another
    // version of it is kept too (as Cargo writes it).
    let mut versions: HashMap<&str, usize> = HashMap::new();
    for &i in &keep {
        *versions.entry(packages[i].name).or_default() += 1;
    }
    let entry_of = |i: usize| {
        let package = &packages[i];
        if versions[package.name] > 1 {
            format!("{} {}", package.name, package.version)
        } else {
            package.name.to_string()
        }
    };
    let mut blocks: Vec<(String, String, String)> = Vec::new();
    for &i in &keep {
        let package = &packages[i];
        let mut text = String::new();
        let mut in_dependencies = false;
        for line in &package.lines {
            if in_dependencies && !line.starts_with(']') {
                let entry = line.trim().trim_start_matches('"').trim_end_matches("\",");
                let found = resolve(entry).expect("resolved above");
                text.push_str(&format!(" \"{}\",\n", entry_of(found)));
                continue;
            }
            in_dependencies = line.starts_with("dependencies = [");
            text.push_str(line);
            text.push('\n');
        }
        blocks.push((package.name.to_string(), package.version.to_string(), text));
    }
    for (local, deps) in locals.iter().zip(local_deps) {
        let mut names: Vec<String> = deps
            .into_iter()
            .map(|d| d.map_or_else(entry_of, str::to_string))
            .collect();
        names.sort();
        let mut text = format!(
            "name = \"{}\"\nversion = \"{}\"\n",
            local.name, local.version
        );
        if !names.is_empty() {
            text.push_str("dependencies = [\n");
            for name in names {
                text.push_str(&format!(" \"{name}\",\n"));
            }
            text.push_str("]\n");
        }
        blocks.push((local.name.to_string(), local.version.to_string(), text));
    }
    blocks.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| compare_versions(&a.1, &b.1)));
    let mut out = header.trim_end().to_string();
    out.push('\n');
    for (_, _, text) in blocks {
        out.push_str("\n[[package]]\n");
        out.push_str(&text);
    }
    Ok(out)
}

/// Orders `1.2.10` after `1.2.9` (numeric parts compared as numbers).
fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |v: &str| -> Vec<u64> {
        v.split(['.', '-', '+'])
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    parts(a).cmp(&parts(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = r#"# This file is automatically @generated by Cargo.
# It is not intended for manual editing.
version = 4

[[package]]
name = "a"
version = "1.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "aa"
dependencies = [
 "b 0.2.1",
]

[[package]]
name = "b"
version = "0.1.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "b1"

[[package]]
name = "b"
version = "0.2.1"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "b2"

[[package]]
name = "huge"
version = "1.0.0"
dependencies = [
 "b 0.1.0",
]
"#;

    #[test]
    fn only_what_the_project_reaches_is_kept() {
        let lock = project_lock(
            LOCK,
            &[
                Local {
                    name: "my-handler",
                    version: "0.1.0",
                    dependencies: vec![("sdk", ""), ("a", "1")],
                },
                Local {
                    name: "sdk",
                    version: "0.2.0",
                    dependencies: vec![("a", "1.0")],
                },
            ],
        )
        .unwrap();
        assert_eq!(
            lock,
            r#"# This file is automatically @generated by Cargo.
# It is not intended for manual editing.
version = 4

[[package]]
name = "a"
version = "1.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "aa"
dependencies = [
 "b",
]

[[package]]
name = "b"
version = "0.2.1"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "b2"

[[package]]
name = "my-handler"
version = "0.1.0"
dependencies = [
 "a",
 "sdk",
]

[[package]]
name = "sdk"
version = "0.2.0"
dependencies = [
 "a",
]
"#
        );
    }

    #[test]
    fn a_dependency_the_workspace_does_not_lock_is_an_error() {
        let error = project_lock(
            LOCK,
            &[Local {
                name: "x",
                version: "0.1.0",
                dependencies: vec![("zzz", "1")],
            }],
        )
        .err()
        .unwrap();
        assert!(error.contains("zzz"), "{error}");
    }

    #[test]
    fn versions_compare_as_numbers() {
        assert!(compare_versions("1.2.10", "1.2.9").is_gt());
        assert!(compare_versions("0.61.1", "0.61.1").is_eq());
    }
}
