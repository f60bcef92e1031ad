//! `beehive validate` refuses unusable components and configs with exit 2.

use std::process::Command;

use beehive_tests::{TempDir, beehive_bin, component, redis};

use crate::config;

fn validate(path: &std::path::Path) -> (Option<i32>, String, String) {
    let out = Command::new(beehive_bin())
        .arg("validate")
        .arg("-c")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_good_component_validates() {
    let server = redis();
    let dir = TempDir::new();
    let (code, stdout, stderr) = validate(&config(
        &dir,
        &server,
        &component("beehive-example-echo"),
        "",
    ));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("implements beehive:broker/consumer"),
        "{stdout}"
    );
}

#[test]
fn unusable_components_and_configs_are_refused_with_exit_2() {
    let server = redis();
    let dir = TempDir::new();
    let not_wasm = dir.write("notes.wasm", "hello, not wasm");
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let truncated = dir.path().join("truncated.wasm");
    let echo = std::fs::read(component("beehive-example-echo")).unwrap();
    std::fs::write(&truncated, &echo[..echo.len() / 2]).unwrap();
    let cases: Vec<(std::path::PathBuf, &str, &str)> = vec![
        (not_wasm, "", "not a WebAssembly component"),
        (core, "", "core WebAssembly module, not a component"),
        (truncated, "", "does not compile"),
        (
            component("beehive-test-other-world"),
            "",
            "does not implement the world beehive:broker/consumer",
        ),
        (
            component("beehive-test-old-world"),
            "",
            "it was built for beehive:broker@0.1.0; this host runs beehive:broker@0.2.0",
        ),
        (
            component("beehive-example-echo"),
            "    publish: [receipts, nowhere]\n",
            "consumers.handlers.publish[1]: expected a registered stream, and nowhere is not one",
        ),
        (
            component("beehive-example-echo"),
            "    min-idle: 5s\n    limits: {timeout: 5s}\n",
            "consumers.handlers.limits.timeout: expected a batch deadline below min-idle",
        ),
    ];
    for (path, settings, expected) in cases {
        let cfg = config(&dir, &server, &path, settings);
        let (code, _, stderr) = validate(&cfg);
        assert_eq!(code, Some(2), "{expected}: {stderr}");
        let first = stderr.lines().next().unwrap_or("");
        assert!(
            first.contains(expected),
            "want {expected:?} in the first line, got {stderr}"
        );
        if !settings.is_empty() {
            assert!(
                first.contains("beehive.yaml: consumers.handlers"),
                "{first}"
            );
        } else {
            assert!(
                first.contains(&path.display().to_string()),
                "names the file: {first}"
            );
        }
    }
    let unregistered = dir.write(
        "unregistered.yaml",
        &format!("default:\n  redis: {}:0\n  streams:\n    events: [handlers]\nconsumers:\n  strangers:\n    component: x.wasm\n", server.address()),
    );
    let (code, _, stderr) = validate(&unregistered);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("consumers.strangers: expected a registered consumer group"),
        "{stderr}"
    );
}
