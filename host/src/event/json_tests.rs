//! The lossless JSON form of MessagePack bodies: examples of every form, the canonical
//! encoders whose bodies replay byte for byte, and properties over arbitrary values.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::json::{MAX_DEPTH, body_to_json, event_from_json, event_to_json, from_json, to_json};
use super::{EntryId, Event};

fn hex(text: &str) -> Vec<u8> {
    hex::decode(text.replace(' ', "")).expect("valid hex")
}

/// MessagePack → JSON text → MessagePack, as `record` then `publish --json` do.
fn through_text(body: &[u8]) -> (String, Vec<u8>) {
    let text = to_json(body).expect("decodes").to_string();
    let read: Value = serde_json::from_str(&text).expect("serde_json reads what it printed");
    (text.clone(), from_json(&read).expect("encodes"))
}

#[test]
fn plain_json_stays_plain_and_keeps_key_order() {
    let value = json!({"zeta": 1, "alpha": [true, null, "x"], "mid": {"b": -3, "a": 2.5}});
    let body = rmp_serde::to_vec_named(&value).unwrap();
    let (text, back) = through_text(&body);
    assert_eq!(
        text,
        r#"{"zeta":1,"alpha":[true,null,"x"],"mid":{"b":-3,"a":2.5}}"#
    );
    assert_eq!(back, body);
}

#[test]
fn every_form_by_example() {
    let cases: &[(&str, &str)] = &[
        ("c0", "null"),
        ("c3", "true"),
        ("01", "1"),
        ("cb 3ff0000000000000", "1.0"),
        ("cb 4029000000000000", "12.5"),
        ("cb 7e37e43c8800759c", "1e+300"),
        ("ca 3dcccccd", r#"{"$f32":0.1}"#),
        ("ca 3f800000", r#"{"$f32":1.0}"#),
        ("cb 7ff8000000000000", r#"{"$f64":"NaN"}"#),
        ("cb fff0000000000000", r#"{"$f64":"-Infinity"}"#),
        ("cb 7ff8000000000001", r#"{"$f64":"0x7ff8000000000001"}"#),
        ("ca 7f800000", r#"{"$f32":"Infinity"}"#),
        ("cb 8000000000000000", "-0.0"),
        ("cf ffffffffffffffff", "18446744073709551615"),
        ("d3 8000000000000000", "-9223372036854775808"),
        ("a2 6131", r#""a1""#),
        ("a2 c328", r#"{"$str":"wyg="}"#),
        ("c4 04 0001feff", r#"{"$bin":"AAH+/w=="}"#),
        ("c4 00", r#"{"$bin":""}"#),
        // Go's time.Time through BeeORM: 32-bit, 64-bit and 96-bit timestamps.
        ("d6 ff 6553f100", r#"{"$time":"2023-11-14T22:13:20Z"}"#),
        (
            "d7 ff 1d6f3454 6553f100",
            r#"{"$time":"2023-11-14T22:13:20.123456789Z"}"#,
        ),
        (
            "c7 0c ff 00000000 fffffffffffff1f0",
            r#"{"$time":"1969-12-31T23:00:00Z"}"#,
        ),
        ("d4 05 2a", r#"{"$ext":[5,"Kg=="]}"#),
        // A timestamp in a non-canonical format stays an ext, so its bytes survive.
        ("d7 ff 00000000 6553f100", r#"{"$ext":[-1,"AAAAAGVT8QA="]}"#),
        (
            "82 01 a3 6f6e65 fe a9 6d696e7573207477 6f",
            r#"{"$map":[[1,"one"],[-2,"minus two"]]}"#,
        ),
        ("81 a4 2462696e 01", r#"{"$map":[["$bin",1]]}"#),
        ("82 a1 61 01 a1 61 02", r#"{"$map":[["a",1],["a",2]]}"#),
        ("82 a4 2462696e 01 a1 61 02", r#"{"$bin":1,"a":2}"#),
        ("80", "{}"),
        ("90", "[]"),
    ];
    for (bytes, expected) in cases {
        let body = hex(bytes);
        let (text, back) = through_text(&body);
        assert_eq!(&text, expected, "{bytes}");
        assert_eq!(back, body, "{bytes} -> {text} -> {}", hex::encode(&back));
    }
}

#[test]
fn integers_and_floats_stay_apart() {
    // serde_json keeps 1.0 a float through text; an integer stays an integer.
    assert_eq!(
        from_json(&serde_json::from_str("1").unwrap()).unwrap(),
        [0x01]
    );
    assert_eq!(
        from_json(&serde_json::from_str("1.0").unwrap()).unwrap(),
        hex("cb 3ff0000000000000")
    );
    assert_eq!(
        from_json(&serde_json::from_str("1e2").unwrap()).unwrap(),
        hex("cb 4059000000000000")
    );
    assert_eq!(
        from_json(&json!({"$f64": 1})).unwrap(),
        hex("cb 3ff0000000000000")
    );
    assert_eq!(from_json(&json!({"$f32": 1})).unwrap(), hex("ca 3f800000"));
    assert_eq!(from_json(&json!(-1)).unwrap(), [0xff]);
    assert_eq!(from_json(&json!(200)).unwrap(), [0xcc, 200]);
}

#[test]
fn hand_written_json_mistakes_are_named() {
    let cases = [
        (json!({"a": {"$ref": 1}}), "body.a: unknown tag \"$ref\""),
        (json!({"$bin": "not base64!"}), "body.$bin: invalid base64"),
        (
            json!({"$ext": [300, ""]}),
            "body.$ext[0]: expected an ext type",
        ),
        (json!({"$ext": "x"}), "body.$ext: expected [type"),
        (
            json!({"$time": "2024-13-01T00:00:00Z"}),
            "body.$time: expected a UTC time",
        ),
        (
            json!([{"$map": [[1]]}]),
            "body[0].$map[0]: expected a [key, value] pair",
        ),
        (json!({"a": {"$raw": ""}}), "may only be the whole body"),
        (json!({"$f64": "nan"}), "body.$f64: expected a number, NaN"),
    ];
    for (value, expected) in cases {
        let message = from_json(&value).unwrap_err().to_string();
        assert!(message.contains(expected), "{value}: {message}");
    }
    let message = from_json(&json!({"$ref": 1})).unwrap_err().to_string();
    assert!(
        message.contains(r#"written {"$map": [["$ref", value]]}"#),
        "{message}"
    );
}

#[test]
fn bytes_that_are_not_one_value_are_raw() {
    for bytes in ["", "c1", "a5 61", "01 02", "dd ffffffff"] {
        let body = hex(bytes);
        assert!(to_json(&body).is_err(), "{bytes}");
        let json = body_to_json(&body);
        assert!(json.get("$raw").is_some(), "{bytes}: {json}");
        assert_eq!(from_json(&json).unwrap(), body, "{bytes}");
    }
}

#[test]
fn nesting_up_to_the_limit_prints_and_reads_back() {
    let nested = |depth: usize| {
        let mut body = vec![0x91; depth - 1];
        body.push(0x90);
        body
    };
    let (_, back) = through_text(&nested(MAX_DEPTH));
    assert_eq!(back, nested(MAX_DEPTH));
    let deeper = nested(MAX_DEPTH + 1);
    assert!(to_json(&deeper).is_err());
    assert_eq!(from_json(&body_to_json(&deeper)).unwrap(), deeper);
    // Tags count: a $map pair sits two levels below the map.
    let mut map_at_limit = vec![0x91; MAX_DEPTH - 4];
    map_at_limit.extend([0x81, 0x01, 0x90]);
    let (_, back) = through_text(&map_at_limit);
    assert_eq!(back, map_at_limit);
}

/// Bodies as the encoders Beehive meets write them come back byte for byte.
#[test]
fn canonical_encoders_replay_byte_for_byte() {
    #[derive(serde::Serialize)]
    struct Order {
        id: u64,
        delta: i32,
        total: f64,
        ratio: f32,
        items: Vec<String>,
        note: Option<String>,
        big: i64,
    }
    let rust = rmp_serde::to_vec_named(&Order {
        id: 300,
        delta: -40_000,
        total: 12.0,
        ratio: 0.25,
        items: vec!["tea".into(), "é".repeat(40)],
        note: None,
        big: i64::MIN,
    })
    .unwrap();
    // BeeORM (shamaton/msgpack) encoding a Go struct { ID uint64; At time.Time;
    // Raw []byte; Names map[int]string; Score float32; Count int64; Name string }.
    let go = hex(
        "87 a2 4944 cd 012c a2 4174 d7 ff 1d6f3454 6553f100 a3 526177 c4 03 010203 \
         a5 4e616d6573 82 01 a3 6f6e65 d0 80 a3 6d696e \
         a5 53636f7265 ca 3fc00000 a5 436f756e74 d2 fffe7960 a4 4e616d65 a0",
    );
    for body in [rust, go] {
        let (text, back) = through_text(&body);
        assert_eq!(back, body, "{text}");
    }
}

/// Every body of the SDK test vectors (written by the Rust, Python and JS encoders' rules)
/// round-trips; the invalid ones as `$raw`.
#[test]
fn the_wit_vectors_bodies_replay_byte_for_byte() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/vectors");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let vectors: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for event in vectors["events"].as_array().unwrap() {
            let Some(body) = event["body"].as_str() else {
                continue;
            };
            let body = hex(body);
            let text = body_to_json(&body).to_string();
            let back = from_json(&serde_json::from_str(&text).unwrap()).unwrap();
            assert_eq!(back, body, "{}: {text}", path.display());
            seen += 1;
        }
    }
    assert!(seen > 10, "read the vectors ({seen} bodies)");
}

/// What "byte for byte" does not promise: another encoding of the same value comes back in
/// canonical form.
#[test]
fn non_canonical_encodings_keep_their_value_not_their_bytes() {
    for (given, canonical) in [
        ("d0 05", "05"),
        ("d3 0000000000000005", "05"),
        ("cd 0010", "10"),
        ("d9 01 61", "a1 61"),
        ("de 0000", "80"),
        ("c5 0001 ff", "c4 01 ff"),
    ] {
        assert_eq!(through_text(&hex(given)).1, hex(canonical), "{given}");
    }
}

#[test]
fn event_lines_round_trip() {
    let body = hex("82 01 a3 6f6e65 a1 78 c4 01 ff");
    let event = Event::new(
        "orders",
        "1700000000000-3".parse().unwrap(),
        Some(body.clone()),
        vec![("version".into(), "2".into()), ("ключ".into(), "é".into())],
    );
    let line = event_to_json(&event);
    assert_eq!(
        line.to_string(),
        r#"{"id":"1700000000000-3","stream":"orders","body":{"$map":[[1,"one"],["x",{"$bin":"/w=="}]]},"meta":{"version":"2","ключ":"é"}}"#
    );
    let back = event_from_json(&serde_json::from_str(&line.to_string()).unwrap()).unwrap();
    assert_eq!(back, event);

    // No body: no key; a repeated meta key: pairs.
    let bare = Event::new(
        "views",
        EntryId { ms: 5, seq: 0 },
        None,
        vec![("url".into(), "/".into()), ("url".into(), "/twice/".into())],
    );
    let line = event_to_json(&bare);
    assert_eq!(
        line.to_string(),
        r#"{"id":"5-0","stream":"views","meta":[["url","/"],["url","/twice/"]]}"#
    );
    assert_eq!(event_from_json(&line).unwrap(), bare);

    // What `beehive test` reads: deliveries optional, id optional.
    let read = event_from_json(&json!({"stream": "s", "body": null, "deliveries": 3})).unwrap();
    assert_eq!(read.deliveries(), 3);
    assert_eq!(read.body(), Some(&[0xc0][..]));
    assert_eq!(read.entry_id(), EntryId::ZERO);
    for (line, expected) in [
        (json!({"body": 1}), "stream: missing"),
        (
            json!({"stream": "s", "metadata": {}}),
            "unknown key \"metadata\"",
        ),
        (
            json!({"stream": "s", "meta": {"a": 1}}),
            "meta.a: expected a string",
        ),
        (
            json!({"stream": "s", "deliveries": 0}),
            "deliveries: expected a whole number",
        ),
        (
            json!({"stream": "s", "id": "x"}),
            "id: invalid stream entry ID",
        ),
        (
            json!({"stream": "s", "body": {"$bin": 5}}),
            "body.$bin: expected a base64 string",
        ),
    ] {
        let message = event_from_json(&line).unwrap_err().to_string();
        assert!(message.contains(expected), "{line}: {message}");
    }
}

// ---- properties ----

/// Any MessagePack value, including every float bit pattern, timestamps, and maps with
/// repeated, non-string and `$` keys.
fn any_value() -> impl Strategy<Value = rmpv::Value> {
    use rmpv::Value as M;
    let key = prop_oneof![
        "[a-c$]{0,3}".prop_map(M::from),
        any::<i64>().prop_map(M::from),
        Just(M::Nil),
    ];
    let leaf = prop_oneof![
        Just(M::Nil),
        any::<bool>().prop_map(M::Boolean),
        any::<u64>().prop_map(M::from),
        any::<i64>().prop_map(M::from),
        (0u64..300).prop_map(M::from),
        any::<u32>().prop_map(|bits| M::F32(f32::from_bits(bits))),
        any::<u64>().prop_map(|bits| M::F64(f64::from_bits(bits))),
        any::<f64>().prop_map(M::F64),
        (-1e6f64..1e6).prop_map(|f| M::F64(f.round())),
        ".{0,40}".prop_map(M::from),
        "\\$[a-z]{0,4}".prop_map(M::from),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(M::Binary),
        (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..20))
            .prop_map(|(ty, data)| M::Ext(ty, data)),
        (any::<i64>(), 0u32..1_000_000_000)
            .prop_map(|(secs, nanos)| M::Ext(-1, timestamp_data(secs, nanos))),
        (0i64..1 << 34, 0u32..1_000_000_000)
            .prop_map(|(secs, nanos)| M::Ext(-1, timestamp_data(secs, nanos))),
    ];
    leaf.prop_recursive(5, 64, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(M::Array),
            proptest::collection::vec((key.clone(), inner.clone()), 0..6).prop_map(M::Map),
            proptest::collection::vec(("[a-z$]{0,3}".prop_map(M::from), inner), 0..6)
                .prop_map(M::Map),
        ]
    })
}

/// Timestamp data as the spec's encoder writes it (checked against ours below).
fn timestamp_data(secs: i64, nanos: u32) -> Vec<u8> {
    if secs >= 0 && secs >> 34 == 0 {
        let data = (u64::from(nanos) << 34) | secs as u64;
        if data >> 32 == 0 {
            (data as u32).to_be_bytes().to_vec()
        } else {
            data.to_be_bytes().to_vec()
        }
    } else {
        let mut data = nanos.to_be_bytes().to_vec();
        data.extend_from_slice(&secs.to_be_bytes());
        data
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// rmpv's canonical encoding of any value → JSON text → MessagePack is the same bytes.
    #[test]
    fn any_value_replays_byte_for_byte(value in any_value()) {
        let mut body = Vec::new();
        rmpv::encode::write_value(&mut body, &value).unwrap();
        let text = to_json(&body).unwrap().to_string();
        let read: Value = serde_json::from_str(&text).unwrap();
        let back = from_json(&read).unwrap();
        prop_assert_eq!(back, body, "{}", text);
    }

    /// A str holding any bytes (not always UTF-8) survives too.
    #[test]
    fn any_str_bytes_replay(bytes in proptest::collection::vec(any::<u8>(), 0..70)) {
        let mut body = Vec::new();
        rmp::encode::write_str_len(&mut body, bytes.len() as u32).unwrap();
        body.extend_from_slice(&bytes);
        let (_, back) = through_text(&body);
        prop_assert_eq!(back, body);
    }

    /// Any bytes at all: printed, read back and encoded, they are the same bytes when they
    /// were canonical, and the same value otherwise; never a panic.
    #[test]
    fn any_bytes_keep_their_value(body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let text = body_to_json(&body).to_string();
        let back = from_json(&serde_json::from_str(&text).unwrap()).unwrap();
        match to_json(&body) {
            Err(_) => prop_assert_eq!(back, body),
            Ok(_) => {
                let before = rmpv::decode::read_value(&mut body.as_slice()).unwrap();
                let after = rmpv::decode::read_value(&mut back.as_slice()).unwrap();
                // NaN != NaN: compare encodings of the decoded values instead.
                let (mut a, mut b) = (Vec::new(), Vec::new());
                rmpv::encode::write_value(&mut a, &before).unwrap();
                rmpv::encode::write_value(&mut b, &after).unwrap();
                prop_assert_eq!(a, b);
            }
        }
    }
}
