//! The real `beehive` binary against a private Redis.

use std::process::{Command, Output};

use beehive_tests::{TempDir, beehive_bin, redis};

fn beehive(args: &[&str]) -> Output {
    Command::new(beehive_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run beehive")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn publish_then_status_shows_the_event() {
    let server = redis();
    let dir = TempDir::new();
    let config = dir.write(
        "beehive.yaml",
        &format!(
            "default:\n  redis: {}:0\n  streams:\n    orders: [billing, shipping]\n",
            server.address()
        ),
    );
    let config = config.to_str().unwrap();
    let out = beehive(&[
        "publish",
        "orders",
        "--json",
        r#"{"id": 7, "total": 12.5}"#,
        "--meta",
        "version=2",
        "-c",
        config,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    assert!(id.contains('-'), "prints the entry ID, got {id:?}");
    let out = beehive(&["publish", "orders", "--meta", "kind=ping", "-c", config]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = beehive(&["status", "--json", "-c", config]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&out)).expect("status --json prints JSON");
    let stream = &status["streams"][0];
    assert_eq!(stream["name"], "orders");
    assert_eq!(stream["pool"], "default");
    assert_eq!(stream["length"], 2);
    let groups: Vec<&str> = stream["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["billing", "shipping"]);
    assert_eq!(stream["groups"][0]["pending"], 0);
    assert_eq!(stream["groups"][0]["lag"], 2);
    assert!(
        stream["groups"][0]["consumers"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let out = beehive(&["status", "-c", config]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("orders"), "{}", stdout(&out));

    let out = beehive(&["publish", "nowhere", "--meta", "a=b", "-c", config]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).lines().next(),
        Some("error: unregistered stream nowhere")
    );
}

#[test]
fn validate_refuses_a_duplicate_stream_with_exit_2() {
    let dir = TempDir::new();
    let config = dir.write(
        "beehive.yaml",
        "default:\n  redis: 127.0.0.1:1:0\n  streams:\n    a: [g]\nsecond:\n  redis: 127.0.0.1:2:0\n  streams:\n    a: [h]\n",
    );
    let out = beehive(&["validate", "-c", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let first = stderr(&out).lines().next().unwrap_or("").to_string();
    assert!(
        first.contains("beehive.yaml: second.streams.a: stream with name a already exists"),
        "{first}"
    );

    let good = dir.write(
        "good.yaml",
        "default:\n  redis: 127.0.0.1:1:0\n  streams:\n    a: [g]\n",
    );
    // Nothing listens on port 1: --offline checks the file alone.
    let out = beehive(&["validate", "--offline", "-c", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = beehive(&[
        "validate",
        "-c",
        dir.path().join("missing.yaml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read the configuration file"));

    let out = beehive(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "bad usage");
}

#[test]
fn claim_and_gc_commands() {
    let server = redis();
    let dir = TempDir::new();
    let config = dir.write(
        "beehive.yaml",
        &format!(
            "default:\n  redis: {}:0\n  streams:\n    a: [g]\n",
            server.address()
        ),
    );
    let config = config.to_str().unwrap();
    for _ in 0..3 {
        assert!(
            beehive(&["publish", "a", "--json", "1", "-c", config])
                .status
                .success()
        );
    }
    let out = beehive(&["claim", "g", "2", "1", "-c", config]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("moved 0"), "{}", stdout(&out));
    let out = beehive(&["gc", "-c", config]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("a: deleted 0 (no consumer group has been created yet)"),
        "{}",
        stdout(&out)
    );
    let out = beehive(&["claim", "nope", "2", "1", "-c", config]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unregistered consumer group nope"));
}

#[test]
fn the_demo_runs_on_a_private_redis_and_exits_0() {
    let components = beehive_tests::component("beehive-example-router");
    beehive_tests::component("beehive-example-page-views");
    let python = beehive_tests::python_component();
    let js = beehive_tests::js_component();
    let out = Command::new(beehive_bin())
        .arg("demo")
        .arg("--components")
        .arg(components.parent().unwrap())
        .arg("--python")
        .arg(&python)
        .arg("--js")
        .arg(&js)
        .output()
        .expect("run beehive demo");
    let text = stdout(&out);
    assert!(out.status.success(), "{}\n{}", text, stderr(&out));
    assert!(
        text.contains(r#"body={"color":"red","price_cents":1234}"#) && text.contains("router=rust"),
        "{text}"
    );
    assert!(text.contains("router=python"), "{text}");
    assert!(text.contains("router=js"), "{text}");
    assert!(
        text.contains("page-view-totals") && text.contains("/about-us/=2"),
        "{text}"
    );
    assert!(text.contains("unknown version"), "{text}");
}
