//! Guest tooling and the mistakes a new user makes, through the real binary on a real
//! redis-server: `beehive record` → `beehive publish --json` replays bodies byte for byte;
//! a Rust panic is the dead-letter reason; misspelt keys, missing component files,
//! unreachable pools and `run --drain` against a dead Redis end with clear errors.

use std::time::{Duration, Instant};

use beehive::consumer::{BatchError, BatchHandler, FailureKind};
use beehive::runtime::{GuestSettings, WasmEngine, WasmHandler};
use beehive::{EntryId, Event};
use beehive_tests::{
    Beehive, TempDir, component, drain, entries, field, raw_entries, redis, run_beehive, xadd_raw,
};

const LONG: Duration = Duration::from_secs(60);

fn hex(text: &str) -> Vec<u8> {
    let text = text.replace(' ', "");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A free TCP port nobody listens on.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn record_prints_tails_lines_and_publish_json_replays_them_byte_for_byte() {
    let server = redis();
    let dir = TempDir::new();
    let cfg = dir.write(
        "beehive.yaml",
        &format!(
            "default:\n  redis: {}:0\n  streams:\n    odd: [g]\n    replay: [h]\n",
            server.address()
        ),
    );
    let cfg = cfg.to_str().unwrap();
    let unicode = rmp_serde::to_vec_named("日本語 ✓ é 🐝").unwrap();
    let bodies: Vec<Option<Vec<u8>>> = vec![
        // bin ([]byte)
        Some(hex("c4 03 010203")),
        // Go's time.Time (ext -1) in each of its three formats
        Some(hex("d6 ff 6553f100")),
        Some(hex("d7 ff 1d6f3454 6553f100")),
        Some(hex("c7 0c ff 00000000 fffffffffffff1f0")),
        // map[int]string
        Some(hex("82 01 a3 6f6e65 fe a3 6d696e")),
        // float 1.0 stays a float; a float 32
        Some(hex("cb 3ff0000000000000")),
        Some(hex("ca 3fc00000")),
        Some(unicode),
        // a BeeORM struct mixing them
        Some(hex(
            "86 a2 4944 cd 012c a2 4174 d7 ff 1d6f3454 6553f100 a3 526177 c4 03 010203 \
             a5 4e616d6573 82 01 a3 6f6e65 d0 80 a3 6d696e a5 53636f7265 ca 3fc00000 \
             a5 436f756e74 d2 fffe7960",
        )),
        // a map whose only key looks like a tag, nil, and bytes that are not MessagePack
        Some(hex("81 a4 2462696e 01")),
        Some(hex("c0")),
        Some(hex("c1")),
        // no body
        None,
    ];
    let mut ids = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let n = i.to_string();
        let mut fields: Vec<(&[u8], &[u8])> = Vec::new();
        if let Some(body) = body {
            fields.push((b"s", body));
        }
        fields.push((b"n", n.as_bytes()));
        fields.push((b"kind", "odd ✓".as_bytes()));
        ids.push(xadd_raw(&server, "odd", &fields).await);
    }

    let (code, recorded, stderr) = run_beehive(&["record", "odd", "-c", cfg], LONG);
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<serde_json::Value> = recorded
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), bodies.len(), "{recorded}");
    assert_eq!(lines[0]["body"], serde_json::json!({"$bin": "AQID"}));
    assert_eq!(
        lines[2]["body"],
        serde_json::json!({"$time": "2023-11-14T22:13:20.123456789Z"})
    );
    assert_eq!(
        lines[4]["body"],
        serde_json::json!({"$map": [[1, "one"], [-2, "min"]]})
    );
    assert!(recorded.lines().nth(5).unwrap().contains(r#""body":1.0"#));
    assert_eq!(lines[11]["body"], serde_json::json!({"$raw": "wQ=="}));
    assert!(lines[12].get("body").is_none(), "no body, no key");
    assert_eq!(lines[12]["meta"]["kind"], "odd ✓");

    // The same formatter as `tail --json`.
    let count = bodies.len().to_string();
    let (code, tailed, stderr) = run_beehive(
        &[
            "tail", "odd", "--from", "0", "--count", &count, "--json", "-c", cfg,
        ],
        LONG,
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(tailed, recorded);
    // --from (inclusive) and --count.
    let (code, some, _) = run_beehive(
        &[
            "record", "odd", "--from", &ids[3], "--count", "2", "-c", cfg,
        ],
        LONG,
    );
    assert_eq!(code, Some(0));
    let some: Vec<serde_json::Value> = some
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(some.len(), 2);
    assert_eq!(some[0]["id"], ids[3].as_str());
    assert_eq!(some[1]["id"], ids[4].as_str());

    // Replay every recorded line into another stream.
    for line in &lines {
        let mut args = vec!["publish".to_string(), "replay".to_string()];
        if let Some(body) = line.get("body") {
            args.extend(["--json".to_string(), body.to_string()]);
        }
        for (k, v) in line["meta"].as_object().unwrap() {
            args.extend(["--meta".to_string(), format!("{k}={}", v.as_str().unwrap())]);
        }
        args.extend(["-c".to_string(), cfg.to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, stderr) = run_beehive(&args, LONG);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
    }
    let original = raw_entries(&server, "odd").await;
    let replayed = raw_entries(&server, "replay").await;
    assert_eq!(replayed.len(), original.len());
    for ((_, a), (_, b)) in original.iter().zip(&replayed) {
        assert_eq!(a, b, "the raw fields, s included, are byte-identical");
    }
}

#[tokio::test]
async fn a_rust_panic_is_the_dead_letter_reason_not_a_backtrace() {
    let server = redis();
    let dir = TempDir::new();
    let cfg = dir.write(
        "beehive.yaml",
        &format!(
            "default:\n  redis: {}:0\n  streams:\n    events: [handlers]\n\
             consumers:\n  handlers:\n    component: {}\n    max-deliveries: 1\n",
            server.address(),
            component("beehive-example-echo").display()
        ),
    );
    xadd_raw(&server, "events", &[(b"fail", b"trap")]).await;
    let log = drain(&cfg);
    let dead = entries(&server, "handlers-dead-letter").await;
    assert_eq!(dead.len(), 1, "{log}");
    let reason = field(&dead[0].1, "beehive.reason").unwrap();
    assert!(reason.contains("panic: asked to trap (at "), "{reason}");
    assert!(!reason.contains("backtrace"), "{reason}");
    assert!(!reason.contains("trapped"), "{reason}");
}

/// The failure kind (the `kind` label of `beehive_batch_failures_total`) is `panic`, and the
/// next batch runs on a fresh instance.
#[tokio::test]
async fn a_rust_panic_fails_the_batch_as_kind_panic() {
    let wasm = WasmEngine::new().unwrap();
    let echo = wasm.load_file(&component("beehive-example-echo")).unwrap();
    let mut handler = WasmHandler::new(echo, GuestSettings::default(), "handlers/consumer-1");
    let event = |meta: &[(&str, &str)]| {
        Event::new(
            "events",
            EntryId { ms: 1, seq: 0 },
            None,
            meta.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    };
    let error = handler
        .handle(&[event(&[("fail", "trap")])])
        .await
        .unwrap_err();
    let error = error.downcast_ref::<BatchError>().expect("a BatchError");
    assert_eq!(error.kind, FailureKind::Panic);
    assert_eq!(error.kind.label(), "panic");
    assert!(
        error.message.starts_with("panic: asked to trap (at "),
        "{}",
        error.message
    );
    let decision = handler.handle(&[event(&[("n", "1")])]).await.unwrap();
    assert_eq!(decision.outcomes.len(), 1);
}

#[test]
fn a_misspelt_consumers_key_suggests_consumers() {
    let server = redis();
    let dir = TempDir::new();
    let cfg = dir.write(
        "beehive.yaml",
        &format!(
            "default:\n  redis: {}:0\n  streams:\n    events: [handlers]\n\
             consumer:\n  handlers:\n    component: echo.wasm\n",
            server.address()
        ),
    );
    let (code, _, stderr) = run_beehive(&["validate", "-c", cfg.to_str().unwrap()], LONG);
    assert_eq!(code, Some(2), "{stderr}");
    let first = stderr.lines().next().unwrap_or("");
    assert!(
        first.contains(
            "beehive.yaml: consumer: unknown top-level key \"consumer\": did you mean consumers?"
        ),
        "{first}"
    );
    let cfg = dir.write(
        "instances.yaml",
        &format!(
            "default:\n  redis: {}:0\n  streams:\n    events: [handlers]\n\
             consumers:\n  handlers:\n    component: echo.wasm\n    instance: 2\n",
            server.address()
        ),
    );
    let (code, _, stderr) = run_beehive(&["validate", "-c", cfg.to_str().unwrap()], LONG);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "consumers.handlers.instance: unknown key \"instance\": did you mean instances?"
        ),
        "{stderr}"
    );
}

#[test]
fn a_missing_component_file_names_its_key() {
    let server = redis();
    let dir = TempDir::new();
    let cfg = dir.write(
        "beehive.yaml",
        &format!(
            "default:\n  redis: {}:0\n  streams:\n    events: [handlers]\n\
             consumers:\n  handlers:\n    component: build/echo.wasm\n",
            server.address()
        ),
    );
    let missing = dir.path().join("build/echo.wasm");
    let cfg = cfg.to_str().unwrap();
    for args in [
        vec!["validate", "-c", cfg],
        vec!["run", "--drain", "-c", cfg],
    ] {
        let (code, _, stderr) = run_beehive(&args, LONG);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        let first = stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or("");
        assert_eq!(
            first,
            format!(
                "error: {cfg}: consumers.handlers.component: {}: no such file: build the component first, or fix the path",
                missing.display()
            ),
            "{args:?}"
        );
    }
}

#[test]
fn validate_checks_that_every_pool_answers() {
    let server = redis();
    let dir = TempDir::new();
    let port = dead_port();
    let two = dir.write(
        "two.yaml",
        &format!(
            "default:\n  redis: {}:0\n  streams:\n    a: [g]\nsecond:\n  redis: 127.0.0.1:{port}:0\n  streams:\n    b: [h]\n",
            server.address()
        ),
    );
    let two = two.to_str().unwrap();
    let (code, stdout, stderr) = run_beehive(&["validate", "-c", two], LONG);
    assert_eq!(
        code,
        Some(1),
        "a pool that does not answer is a runtime failure: {stderr}"
    );
    let first = stderr.lines().next().unwrap_or("");
    assert!(
        first.starts_with(&format!(
            "error: pool second (redis://127.0.0.1:{port}/0) does not answer: "
        )),
        "{first}"
    );
    assert!(stdout.contains("pool default: redis://"), "{stdout}");
    assert!(stderr.contains("--offline"), "{stderr}");

    let (code, stdout, stderr) = run_beehive(&["validate", "--offline", "-c", two], LONG);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("ok (2 pools"), "{stdout}");

    let one = dir.write(
        "one.yaml",
        &format!(
            "default:\n  redis: {}:0\n  streams:\n    a: [g]\n",
            server.address()
        ),
    );
    let (code, stdout, stderr) = run_beehive(&["validate", "-c", one.to_str().unwrap()], LONG);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("answers"), "{stdout}");
}

#[test]
fn drain_against_an_unreachable_redis_gives_up_with_exit_1() {
    let dir = TempDir::new();
    let port = dead_port();
    let cfg = dir.write(
        "beehive.yaml",
        &format!(
            "default:\n  redis: 127.0.0.1:{port}:0\n  streams:\n    events: [handlers]\n\
             consumers:\n  handlers:\n    component: {}\n",
            component("beehive-example-echo").display()
        ),
    );
    let started = Instant::now();
    let (code, _, stderr) = run_beehive(
        &[
            "run",
            "--drain",
            "--connect-timeout",
            "2s",
            "-c",
            cfg.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    let took = started.elapsed();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(20),
        "took {took:?}"
    );
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or("");
    assert!(
        error.starts_with(&format!(
            "error: giving up the drain: pool default (redis://127.0.0.1:{port}/0) did not answer within 2s (--connect-timeout): "
        )),
        "{stderr}"
    );
}

/// Redis going away in the middle of a drain ends it too, after --connect-timeout.
#[test]
fn drain_gives_up_when_redis_goes_away_midway() {
    let mut server = redis();
    let dir = TempDir::new();
    // 100 events of 200 ms each, one per batch: about 20 s of work when Redis stays.
    let cfg = dir.write(
        "beehive.yaml",
        &format!(
            "default:\n  redis: {}:0\n  streams:\n    events: [handlers]\n\
             consumers:\n  handlers:\n    component: {}\n    count: 1\n",
            server.address(),
            component("beehive-test-hostile").display()
        ),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for _ in 0..100 {
        runtime.block_on(xadd_raw(
            &server,
            "events",
            &[(b"do", b"slow"), (b"ms", b"200")],
        ));
    }
    let mut process = Beehive::run(&cfg, &["--drain", "--connect-timeout", "2s"]);
    // Midway: the drain has events in hand (delivered, not all acknowledged yet).
    runtime.block_on(beehive_tests::eventually(
        "the drain to be under way",
        LONG,
        || async { beehive_tests::pending(&server, "events", "handlers").await > 0 },
    ));
    server.stop();
    let stopped = Instant::now();
    let code = process.wait(Duration::from_secs(40));
    assert_eq!(code, Some(1), "{}", process.log_text());
    assert!(stopped.elapsed() >= Duration::from_secs(2));
    assert!(
        process
            .log_text()
            .contains("giving up the drain: pool default"),
        "{}",
        process.log_text()
    );
}

/// What a new user gets from componentize-js without `-d http fetch-event`: a component
/// importing wasi:http, refused with the flag to add.
#[test]
fn a_js_component_built_without_the_http_flags_is_told_how_to_build() {
    beehive_tests::js_component(); // installs the pinned componentize-js under target/
    let tool = std::env::var_os("COMPONENTIZE_JS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            beehive_tests::target_dir().join("js-tools/node_modules/.bin/componentize-js")
        });
    let dir = TempDir::new();
    let root = beehive_tests::workspace_root();
    for file in ["handler.js", "beehive.js"] {
        std::fs::copy(
            root.join("examples/js-router").join(file),
            dir.path().join(file),
        )
        .unwrap();
    }
    let out = dir.path().join("router.wasm");
    let built = std::process::Command::new(&tool)
        .arg(dir.path().join("handler.js"))
        .arg("--wit")
        .arg(root.join("wit"))
        .args(["-n", "consumer", "-o"])
        .arg(&out)
        .output()
        .expect("run componentize-js");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let server = redis();
    let cfg = dir.write(
        "beehive.yaml",
        &format!(
            "default:\n  redis: {}:0\n  streams:\n    events: [handlers]\n\
             consumers:\n  handlers:\n    component: router.wasm\n",
            server.address()
        ),
    );
    let (code, _, stderr) = run_beehive(&["validate", "-c", cfg.to_str().unwrap()], LONG);
    assert_eq!(code, Some(2), "{stderr}");
    let first = stderr.lines().next().unwrap_or("");
    assert!(
        first.contains("consumers.handlers.component:") && first.contains("imports wasi:http/"),
        "{first}"
    );
    assert!(
        first.contains("componentize-js `-d http fetch-event`"),
        "{first}"
    );
}
