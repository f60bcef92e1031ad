//! Property tests ("fuzzing") of the inputs users write by hand: the YAML config and Redis
//! addresses. They must never panic, and every configuration error names the file and,
//! for structural errors, the key path. `PROPTEST_CASES` sets the number of cases (CI runs
//! the default smoke count; the fuzz run uses 100,000).

use std::path::Path;

use proptest::prelude::*;
use yaml_serde::{Mapping, Value};

use crate::address::RedisAddress;
use crate::config::Config;

const KEYS: &[&str] = &[
    "default",
    "second",
    "consumers",
    "metrics",
    "redis",
    "password",
    "streams",
    "stream-a",
    "stream-b",
    "g",
    "h",
    "component",
    "count",
    "instances",
    "block",
    "publish",
    "min-idle",
    "max-deliveries",
    "max-publishes",
    "dead-letter",
    "limits",
    "memory",
    "timeout",
    "addr",
    "s",
    "",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|f| Value::Number(f.into())),
        prop::sample::select(KEYS).prop_map(|k| Value::String(k.to_string())),
        "[a-z0-9:./@-]{0,24}".prop_map(Value::String),
        prop::sample::select(
            &[
                "localhost:6379:0",
                "127.0.0.1:1",
                "redis://u:p@h:1/2",
                "5s",
                "64MiB",
                "0",
                "-1",
                "x.wasm",
                "deployed"
            ][..]
        )
        .prop_map(|s| Value::String(s.to_string())),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Sequence),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|pairs| {
                let mut map = Mapping::new();
                for (k, v) in pairs {
                    map.insert(Value::String(k.to_string()), v);
                }
                Value::Mapping(map)
            }),
        ]
    })
}

proptest! {
    #[test]
    fn addresses_never_panic(address in ".{0,64}", password in ".{0,8}", db in prop::option::of(any::<i64>())) {
        if let Err(message) = RedisAddress::parse(&address, &password, db) {
            prop_assert!(!message.is_empty());
            // The password given apart from the address is never echoed (messages quote only
            // the address itself).
            if password.chars().count() > 3 {
                prop_assert!(!message.contains(&password) || format!("{address:?}").contains(&password), "{message}");
            }
        }
    }

    #[test]
    fn structured_configs_never_panic_and_errors_name_file_and_key(value in value()) {
        let text = yaml_serde::to_string(&value).unwrap();
        if let Err(e) = Config::parse(&text, Path::new("fuzz.yaml")) {
            let message = e.to_string();
            prop_assert!(message.starts_with("fuzz.yaml: "), "{message}");
            prop_assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,256}") {
        if let Err(e) = Config::parse(&text, Path::new("fuzz.yaml")) {
            prop_assert!(e.to_string().starts_with("fuzz.yaml: "));
        }
    }
}
