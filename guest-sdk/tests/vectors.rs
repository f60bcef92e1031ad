//! Decodes every batch of `wit/vectors/` and compares it with its JSON (see the README
//! there); every input of `wit/vectors/invalid/` must be refused with the named error.

use std::path::{Path, PathBuf};

use beehive_guest::testing::{TestEvent, encode_batch};
use beehive_guest::{Batch, ErrorKind, Event};
use serde_json::Value;

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/vectors")
}

/// `(name, bin, json)` of every `*.bin` in `dir`, sorted by name.
fn vectors(dir: &Path) -> Vec<(String, Vec<u8>, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("wit/vectors") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let bin = std::fs::read(&path).unwrap();
            let json = std::fs::read_to_string(path.with_extension("json"))
                .unwrap_or_else(|e| panic!("{name}.json: {e}"));
            out.push((name, bin, serde_json::from_str(&json).unwrap()));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn hex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex length");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The JSON form of one decoded event.
fn json_of(event: Event) -> Value {
    serde_json::json!({
        "id": event.id(),
        "stream": event.stream(),
        "deliveries": event.deliveries(),
        "body": event.body().map(|b| b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
        "meta": event.meta().iter().map(|(k, v)| [k, v]).collect::<Vec<_>>(),
    })
}

/// The JSON's events as the test encoder's input.
fn test_events(json: &Value) -> Vec<TestEvent> {
    json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| TestEvent {
            id: e["id"].as_str().unwrap().to_string(),
            stream: e["stream"].as_str().unwrap().to_string(),
            body: e["body"].as_str().map(hex),
            meta: e["meta"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p[0].as_str().unwrap().to_string(),
                        p[1].as_str().unwrap().to_string(),
                    )
                })
                .collect(),
            deliveries: u32::try_from(e["deliveries"].as_u64().unwrap()).unwrap(),
        })
        .collect()
}

#[test]
fn every_vector_decodes_to_its_json() {
    let all = vectors(&vectors_dir());
    let names: Vec<&str> = all.iter().map(|v| v.0.as_str()).collect();
    for expected in [
        "empty",
        "empty-meta",
        "large-body",
        "many-events",
        "mixed",
        "no-body",
        "redelivered",
        "unicode",
    ] {
        assert!(
            names.contains(&expected),
            "missing vector {expected}: {names:?}"
        );
    }
    for (name, bin, json) in &all {
        let batch = Batch::decode(bin).unwrap_or_else(|e| panic!("{name}: {e}"));
        let events: Vec<Value> = batch.events().into_iter().map(json_of).collect();
        let expected = json["events"].as_array().unwrap();
        assert_eq!(events.len(), expected.len(), "{name}: event count");
        for (i, (got, want)) in events.iter().zip(expected).enumerate() {
            assert_eq!(got, want, "{name}: event {i}");
        }
        assert_eq!(batch.len(), expected.len(), "{name}");
    }
}

#[test]
fn the_test_encoder_writes_every_vector_byte_for_byte() {
    for (name, bin, json) in vectors(&vectors_dir()) {
        assert!(encode_batch(&test_events(&json)) == bin, "{name}");
    }
}

#[test]
fn every_invalid_input_is_refused_with_its_error() {
    let all = vectors(&vectors_dir().join("invalid"));
    assert!(all.len() >= 5, "{} invalid vectors", all.len());
    for (name, bin, json) in all {
        let word = json["error"].as_str().unwrap();
        let err = Batch::decode(&bin).expect_err(&name);
        assert_eq!(err.kind(), ErrorKind::Batch, "{name}");
        assert!(err.message().contains(word), "{name}: {err} lacks {word:?}");
    }
}
