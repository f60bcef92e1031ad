//! Guest tooling with the real binary: `beehive new` projects in each language, built with
//! the command it prints, outside the repository and offline, then checked with
//! `beehive test`; `beehive test` against hostile components (always reported, never past
//! the limits); and real events from `beehive record` replayed under `beehive test`, which
//! must agree with what `beehive run` does with them.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use beehive_tests::{
    TempDir, beehive_bin, component, drain, engine, example_config, js_component, python_component,
    raw, redis, target_dir, workspace_root,
};
use serde_json::{Value, json};

/// What a finished process left.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn last_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or("")
    }

    fn show(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `command` to completion, failing the test when it runs past `timeout`.
fn run(command: &mut Command, timeout: Duration) -> Ran {
    let mut child = command
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut text);
        text
    });
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} ran past {timeout:?}; stderr:\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ran {
        code,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn beehive(args: &[&str], timeout: Duration) -> Ran {
    run(Command::new(beehive_bin()).args(args), timeout)
}

/// Runs a command line as printed, with `sh -c`.
fn shell(line: &str, env: &[(&str, &str)], timeout: Duration) -> Ran {
    run(
        Command::new("sh")
            .arg("-c")
            .arg(line)
            .env_remove("CARGO_TARGET_DIR")
            .envs(env.iter().copied()),
        timeout,
    )
}

/// `beehive new <dir> --lang <lang>`, the printed build command, then `beehive test` as
/// printed: the shipped expectation passes, `--update` rewrites it unchanged, and a changed
/// expectation fails with a diff.
fn new_build_test(lang: &str) {
    let dir = TempDir::new();
    assert!(
        !dir.path().starts_with(workspace_root()),
        "the project must live outside the repository"
    );
    let project = dir.path().join(format!("my-{lang}-handler"));
    let created = beehive(
        &["new", project.to_str().unwrap(), "--lang", lang],
        Duration::from_secs(30),
    );
    assert_eq!(created.code, Some(0), "{}", created.show());
    let build = created.last_line().trim().to_string();
    let test = created
        .stdout
        .lines()
        .find(|line| line.contains(" test "))
        .expect("a printed test command")
        .trim()
        .to_string();
    assert!(build.starts_with("cd "), "{}", created.show());

    // Offline: cargo may not touch the network, pip and npm may not install anything (the
    // tools come from the repository's target/, where the demo puts them).
    let tools_cache = dir.path().join("tools-cache");
    let mut env = vec![
        ("CARGO_NET_OFFLINE", "true"),
        ("PIP_NO_INDEX", "1"),
        ("npm_config_offline", "true"),
        ("XDG_CACHE_HOME", tools_cache.to_str().unwrap()),
    ];
    match lang {
        "rust" => {
            // The crates compile once for every run of this test: the project's target/ is
            // a shared folder under the workspace's target/.
            let shared = target_dir().join("guest-tooling-rust-target");
            std::fs::create_dir_all(&shared).unwrap();
            std::os::unix::fs::symlink(&shared, project.join("target")).unwrap();
            env.retain(|(k, _)| *k != "XDG_CACHE_HOME");
        }
        "python" => {
            python_component();
        }
        _ => {
            js_component();
        }
    }
    let built = shell(&build, &env, Duration::from_secs(900));
    assert_eq!(built.code, Some(0), "{build}\n{}", built.show());

    let expected = project.join("expected.jsonl");
    let shipped = std::fs::read_to_string(&expected).unwrap();
    let passed = shell(&test, &[], Duration::from_secs(300));
    assert_eq!(passed.code, Some(0), "{test}\n{}", passed.show());
    assert_eq!(
        passed.last_line(),
        "5 passed, 0 failed",
        "{}",
        passed.show()
    );

    let updated = shell(&format!("{test} --update"), &[], Duration::from_secs(300));
    assert_eq!(updated.code, Some(0), "{}", updated.show());
    assert_eq!(updated.last_line(), "5 passed, 0 failed");
    assert_eq!(std::fs::read_to_string(&expected).unwrap(), shipped);
    let again = shell(&test, &[], Duration::from_secs(300));
    assert_eq!(again.code, Some(0), "{}", again.show());
    assert_eq!(again.last_line(), "5 passed, 0 failed");

    let changed = shipped.replace(r#""outcome":"dead-letter: no body""#, r#""outcome":"ack""#);
    assert_ne!(changed, shipped);
    std::fs::write(&expected, changed).unwrap();
    let failed = shell(&test, &[], Duration::from_secs(300));
    assert_eq!(failed.code, Some(1), "{}", failed.show());
    assert_eq!(
        failed.last_line(),
        "4 passed, 1 failed",
        "{}",
        failed.show()
    );
    for line in [
        "FAIL 1700000000004-0 (events.jsonl:5; expected.jsonl:5)",
        "  - outcome ack",
        "  + outcome dead-letter: no body",
    ] {
        assert!(
            failed.stdout.contains(line),
            "{line:?} in\n{}",
            failed.show()
        );
    }
    assert!(
        failed.stderr.starts_with("error: "),
        "one clear line on stderr: {}",
        failed.show()
    );

    // A publish outside --publish is refused as in production: the guest sees the error
    // (the template fails the batch), and the result names the refused stream.
    std::fs::write(&expected, &shipped).unwrap();
    let refused = shell(
        &test.replace("--publish signups,purchases", "--publish signups"),
        &[],
        Duration::from_secs(300),
    );
    assert_eq!(refused.code, Some(1), "{}", refused.show());
    assert_eq!(
        refused.last_line(),
        "4 passed, 1 failed",
        "{}",
        refused.show()
    );
    assert!(
        refused.stdout.contains("  + refused publish to purchases")
            && refused.stdout.contains("  + outcome batch failed (error)"),
        "{}",
        refused.show()
    );
}

#[test]
fn a_new_rust_handler_builds_offline_and_passes_its_test() {
    new_build_test("rust");
}

#[test]
fn a_new_python_handler_builds_offline_and_passes_its_test() {
    new_build_test("python");
}

#[test]
fn a_new_js_handler_builds_offline_and_passes_its_test() {
    new_build_test("js");
}

/// Writes `events` (JSON values) as an events file and `expected` as its expectation.
fn write_case(dir: &TempDir, events: &[Value], expected: &[Value]) -> (PathBuf, PathBuf) {
    let lines = |values: &[Value]| values.iter().map(|v| format!("{v}\n")).collect::<String>();
    (
        dir.write("events.jsonl", &lines(events)),
        dir.write("expected.jsonl", &lines(expected)),
    )
}

fn hostile(id: &str, meta: Value) -> Value {
    json!({"id": id, "stream": "jobs", "meta": meta})
}

#[test]
fn hostile_components_are_reported_per_batch_and_never_hang() {
    let guest = component("beehive-test-hostile");
    let dir = TempDir::new();
    let cases = [
        ("1-0", json!({"do": "loop"}), "batch failed (deadline)"),
        ("2-0", json!({"do": "alloc"}), "batch failed (memory)"),
        ("3-0", json!({"do": "panic"}), "asked to panic"),
        (
            "4-0",
            json!({"do": "wrong-count"}),
            "batch failed (wrong_outcomes)",
        ),
        (
            "5-0",
            json!({"do": "publish-to", "to": "elsewhere"}),
            "  + refused publish to elsewhere",
        ),
    ];
    let mut events: Vec<Value> = cases
        .iter()
        .map(|(id, m, _)| hostile(id, m.clone()))
        .collect();
    let mut expected: Vec<Value> = cases
        .iter()
        .map(|(id, _, _)| json!({"id": id, "outcome": "ack"}))
        .collect();
    events.push(hostile("6-0", json!({"do": "nothing"})));
    expected.push(json!({"id": "6-0", "outcome": "ack", "publishes": [
        {"stream": "receipts", "meta": {"of": "6-0", "version": "v1"}}
    ]}));
    let (events, _) = write_case(&dir, &events, &expected);

    let started = Instant::now();
    let ran = beehive(
        &[
            "test",
            guest.to_str().unwrap(),
            events.to_str().unwrap(),
            "--publish",
            "receipts",
            "--timeout",
            "1s",
        ],
        Duration::from_secs(120),
    );
    let took = started.elapsed();
    assert_eq!(ran.code, Some(1), "{}", ran.show());
    assert_eq!(ran.last_line(), "1 passed, 5 failed", "{}", ran.show());
    for (id, _, shown) in &cases {
        assert!(
            ran.stdout.contains(&format!("FAIL {id} ")),
            "{id}: {}",
            ran.show()
        );
        assert!(ran.stdout.contains(shown), "{shown:?}: {}", ran.show());
    }
    assert!(
        ran.stdout.contains("batch failed (trap)") || ran.stdout.contains("batch failed (panic)"),
        "{}",
        ran.show()
    );
    // One deadline of 1 s, the rest fail fast.
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert!(!ran.stdout.contains("wasm backtrace"), "{}", ran.show());
}

#[test]
fn with_count_a_batch_lists_its_publishes_on_its_first_event() {
    let guest = component("beehive-test-hostile");
    let dir = TempDir::new();
    let events: Vec<Value> = ["1-0", "2-0", "3-0"]
        .iter()
        .map(|id| hostile(id, json!({})))
        .collect();
    let (events, expected) = write_case(&dir, &events, &[]);
    let args = [
        "test",
        guest.to_str().unwrap(),
        events.to_str().unwrap(),
        "--publish",
        "receipts",
        "--count",
        "2",
    ];
    let updated = beehive(
        &[&args[..], &["--update"]].concat(),
        Duration::from_secs(60),
    );
    assert_eq!(updated.code, Some(0), "{}", updated.show());
    assert!(
        updated.stdout.contains("ran 3 events in 2 calls"),
        "{}",
        updated.show()
    );
    let records: Vec<Value> = std::fs::read_to_string(&expected)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let receipt = |id: &str| json!({"stream": "receipts", "meta": {"of": id, "version": "v1"}});
    assert_eq!(
        records,
        [
            json!({"id": "1-0", "outcome": "ack", "publishes": [receipt("1-0"), receipt("2-0")], "batch": 2}),
            json!({"id": "2-0", "outcome": "ack"}),
            json!({"id": "3-0", "outcome": "ack", "publishes": [receipt("3-0")], "batch": 1}),
        ]
    );
    let passed = beehive(&args, Duration::from_secs(60));
    assert_eq!(passed.code, Some(0), "{}", passed.show());
    assert_eq!(passed.last_line(), "3 passed, 0 failed");
}

#[test]
fn bad_usage_exits_2_naming_the_file_and_line() {
    let guest = component("beehive-test-hostile");
    let dir = TempDir::new();
    let events = dir.write(
        "events.jsonl",
        "{\"id\":\"1-0\",\"stream\":\"s\"}\n{\"stream\": 7}\n",
    );
    let guest = guest.to_str().unwrap();
    let ran = beehive(
        &["test", guest, events.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_eq!(ran.code, Some(2), "{}", ran.show());
    assert!(ran.stderr.contains("events.jsonl:2: "), "{}", ran.show());

    let events = dir.write("events.jsonl", "{\"id\":\"1-0\",\"stream\":\"s\"}\n");
    let ran = beehive(
        &["test", guest, events.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_eq!(ran.code, Some(2), "{}", ran.show());
    assert!(
        ran.stderr.contains("expected.jsonl") && ran.stderr.contains("--update"),
        "{}",
        ran.show()
    );

    let missing = dir.path().join("missing.wasm");
    let ran = beehive(
        &["test", missing.to_str().unwrap(), events.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_eq!(ran.code, Some(2), "{}", ran.show());
    assert!(ran.stderr.contains("missing.wasm"), "{}", ran.show());

    let ran = beehive(
        &["new", dir.path().to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_eq!(
        ran.code,
        Some(2),
        "a folder that is not empty: {}",
        ran.show()
    );
}

/// `beehive record` on a real Redis, then `beehive test --update`: what the expectation says
/// the router publishes and dead-letters is what `beehive run` publishes and dead-letters.
#[tokio::test]
async fn recorded_events_replay_under_beehive_test_as_under_beehive_run() {
    let server = redis();
    let router = component("beehive-example-router");
    let dir = TempDir::new();
    let config = example_config(&dir, "router", &server, &router);
    let engine = engine(
        &server,
        &[
            ("colors", &["routers"]),
            ("colors-normalized", &["color-audit"]),
        ],
    )
    .await;
    let broker = engine.event_broker();
    broker
        .publish(
            "colors",
            &json!({"color": "red", "price": 12.34}),
            &[("version", "1")],
        )
        .await
        .unwrap();
    broker
        .publish(
            "colors",
            &json!({"name": "blue", "price_cents": 99}),
            &[("version", "2")],
        )
        .await
        .unwrap();
    broker
        .publish(
            "colors",
            &json!({"name": "green", "price_cents": 1}),
            &[("version", "3")],
        )
        .await
        .unwrap();
    broker
        .publish_raw("colors", Some(vec![0xC1, 0xFF]), &[("version", "1")])
        .await
        .unwrap();

    let config_arg = config.to_str().unwrap();
    let recorded = beehive(
        &["record", "colors", "-c", config_arg],
        Duration::from_secs(60),
    );
    assert_eq!(recorded.code, Some(0), "{}", recorded.show());
    assert_eq!(recorded.stdout.lines().count(), 4, "{}", recorded.show());
    let events = dir.write("colors.jsonl", &recorded.stdout);
    let expect = dir.path().join("colors.expected.jsonl");
    let test = [
        "test",
        router.to_str().unwrap(),
        events.to_str().unwrap(),
        "--publish",
        "colors-normalized",
    ];
    let updated = beehive(
        &[&test[..], &["--update"]].concat(),
        Duration::from_secs(60),
    );
    assert_eq!(updated.code, Some(0), "{}", updated.show());
    let passed = beehive(&test, Duration::from_secs(60));
    assert_eq!(passed.code, Some(0), "{}", passed.show());
    assert_eq!(passed.last_line(), "4 passed, 0 failed");

    let records: Vec<Value> = std::fs::read_to_string(&expect)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let predicted_publishes: Vec<Value> = records
        .iter()
        .flat_map(|r| r["publishes"].as_array().cloned().unwrap_or_default())
        .collect();
    let predicted_dead: Vec<(String, String)> = records
        .iter()
        .filter_map(|r| {
            let reason = r["outcome"].as_str()?.strip_prefix("dead-letter: ")?;
            Some((r["id"].as_str()?.to_string(), reason.to_string()))
        })
        .collect();
    assert_eq!(predicted_publishes.len(), 2, "{records:?}");
    assert_eq!(predicted_dead.len(), 2, "{records:?}");

    drain(&config);
    let published: Vec<Value> = entries_json(&server, "colors-normalized").await;
    assert_eq!(published, predicted_publishes);
    let dead = beehive_tests::entries(&server, "routers-dead-letter").await;
    let mut actual_dead: Vec<(String, String)> = dead
        .iter()
        .map(|(_, fields)| {
            (
                beehive_tests::field(fields, "beehive.origin-id")
                    .unwrap()
                    .to_string(),
                beehive_tests::field(fields, "beehive.reason")
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    actual_dead.sort();
    let mut predicted_dead = predicted_dead;
    predicted_dead.sort();
    assert_eq!(actual_dead, predicted_dead);
}

/// The entries of `stream` as `beehive test` shows publishes: stream, body (lossless JSON),
/// meta.
async fn entries_json(server: &beehive_tests::RedisServer, stream: &str) -> Vec<Value> {
    let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut raw(server).await)
        .await
        .expect("XRANGE");
    entries
        .into_iter()
        .map(|(_, flat)| {
            let mut entry = serde_json::Map::new();
            entry.insert("stream".into(), stream.into());
            let mut meta = serde_json::Map::new();
            for pair in flat.chunks(2) {
                if pair[0] == b"s" {
                    entry.insert("body".into(), beehive::event::json::body_to_json(&pair[1]));
                } else {
                    meta.insert(
                        String::from_utf8_lossy(&pair[0]).into_owned(),
                        String::from_utf8_lossy(&pair[1]).into_owned().into(),
                    );
                }
            }
            if !meta.is_empty() {
                entry.insert("meta".into(), Value::Object(meta));
            }
            Value::Object(entry)
        })
        .collect()
}
