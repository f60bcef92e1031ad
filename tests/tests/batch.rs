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

/// The host's encoder writes every vector of `wit/vectors` byte for byte (the SDKs' tests
/// decode the same files), so the four implementations of the layout agree.
#[test]
fn the_host_encodes_every_wit_vector_byte_for_byte() {
    let dir = workspace_root().join("wit/vectors");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("wit/vectors exists") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let events: Vec<Event> = json["events"]
            .as_array()
            .expect("an events array")
            .iter()
            .map(|e| {
                let id: EntryId = e["id"].as_str().unwrap().parse().unwrap();
                let body = e["body"].as_str().map(|hex| {
                    (0..hex.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                        .collect::<Vec<u8>>()
                });
                let meta = e["meta"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|pair| {
                        (
                            pair[0].as_str().unwrap().to_string(),
                            pair[1].as_str().unwrap().to_string(),
                        )
                    })
                    .collect();
                Event::new(e["stream"].as_str().unwrap(), id, body, meta)
                    .with_deliveries(e["deliveries"].as_u64().unwrap() as u32)
            })
            .collect();
        let mut packed = Vec::new();
        encode_batch(&events, &mut packed);
        let expected = std::fs::read(path.with_extension("bin")).unwrap();
        assert!(
            packed == expected,
            "{}: the host's encoding differs from the vector",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} vectors found");
}
