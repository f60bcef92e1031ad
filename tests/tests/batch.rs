//! The packed batch of `handle-events` is one contract in three places: the host's encoder,
//! the Rust SDK's decoder and the Python SDK's decoder must agree on every event.

use std::process::Command;

use beehive::EntryId;
use beehive::Event;
use beehive::runtime::encode_batch;
use beehive_tests::{TempDir, workspace_root};

fn events() -> Vec<Event> {
    let mut redelivered = Event::new(
        "views",
        EntryId {
            ms: u64::MAX,
            seq: 7,
        },
        None,
        vec![
            ("url".into(), "/ü?q=🐝".into()),
            ("ip".into(), String::new()),
        ],
    );
    redelivered = redelivered.with_deliveries(4);
    vec![
        Event::new(
            "orders",
            EntryId {
                ms: 1700000000000,
                seq: 0,
            },
            Some(rmp_serde::to_vec_named(&("blue", 9.5)).unwrap()),
            vec![("version".into(), "2".into()), ("k".into(), "v".into())],
        ),
        redelivered,
        // A body of every byte value and no metadata.
        Event::new(
            "raw",
            EntryId { ms: 1, seq: 1 },
            Some((0..=255u8).collect()),
            vec![],
        ),
        // An empty body is a body.
        Event::new("raw", EntryId { ms: 2, seq: 0 }, Some(vec![]), vec![]),
    ]
}

/// The events as the SDKs should see them: `[id, stream, body bytes or null, [[k, v]], deliveries]`.
fn expected() -> serde_json::Value {
    serde_json::Value::Array(
        events()
            .iter()
            .map(|e| {
                serde_json::json!([
                    e.id(),
                    e.stream(),
                    e.body().map(|b| b.to_vec()),
                    e.meta().iter().map(|(k, v)| [k, v]).collect::<Vec<_>>(),
                    e.deliveries()
                ])
            })
            .collect(),
    )
}

#[test]
fn the_rust_sdk_decodes_what_the_host_encodes() {
    let mut bytes = Vec::new();
    encode_batch(&events(), &mut bytes);
    let batch = beehive_guest::Batch::decode(&bytes).unwrap();
    let decoded: Vec<serde_json::Value> = batch
        .events()
        .iter()
        .map(|e| {
            serde_json::json!([
                e.id,
                e.stream,
                e.body.map(|b| b.to_vec()),
                e.meta.iter().map(|(k, v)| [k, v]).collect::<Vec<_>>(),
                e.deliveries
            ])
        })
        .collect();
    assert_eq!(serde_json::Value::Array(decoded), expected());
    let mut empty = Vec::new();
    encode_batch(&[], &mut empty);
    assert!(beehive_guest::Batch::decode(&empty).unwrap().is_empty());
}

#[test]
fn the_python_sdk_decodes_what_the_host_encodes() {
    let dir = TempDir::new();
    let mut bytes = Vec::new();
    encode_batch(&events(), &mut bytes);
    let path = dir.path().join("batch.bin");
    std::fs::write(&path, &bytes).unwrap();
    let script = r#"
import json, sys
import beehive_batch
data = open(sys.argv[1], "rb").read()
events = beehive_batch.decode(data)
assert beehive_batch.count(data) == len(events)
assert events[0].tag("version") == "2" and events[0].tag("missing") == ""
for bad in (data[:-1], data + b"\0"):
    try:
        beehive_batch.decode(bad)
        raise SystemExit("a malformed batch was accepted")
    except ValueError as e:
        assert str(e).startswith("malformed event batch at byte"), e
print(json.dumps([[e.id, e.stream, None if e.body is None else list(e.body),
                   [list(p) for p in e.meta], e.deliveries] for e in events]))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .env("PYTHONPATH", workspace_root().join("guest-sdk/python"))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(decoded, expected());
}
