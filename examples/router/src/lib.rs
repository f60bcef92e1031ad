//! Router: reads the `version` tag, decodes the v1 or v2 shape of a colour event and
//! republishes one normalized shape to `colors-normalized` (meta `source-id`,
//! `source-version`, `router=rust`). Unknown versions and bodies that do not decode are dead-lettered with
//! the reason; they never block the stream.
//!
//! - v1 (the seed's shape): `{ "color": "red", "price": 12.34 }`
//! - v2: `{ "name": "red", "price_cents": 1234 }`
//! - normalized: `{ "color": "red", "price_cents": 1234 }`

// Components are built for wasm32-wasip2; on other targets the crate is empty, so the
// workspace still builds and tests natively.
#![cfg(target_arch = "wasm32")]

use beehive_guest::{Event, EventExt, Handler, Outcome, publish};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct ColorV1 {
    color: String,
    price: f64,
}

#[derive(Deserialize)]
struct ColorV2 {
    name: String,
    price_cents: i64,
}

#[derive(Serialize)]
struct Normalized {
    color: String,
    price_cents: i64,
}

/// Where normalized events go.
const TARGET: &str = "colors-normalized";

fn normalize(event: &Event) -> Result<Normalized, String> {
    match event.tag("version") {
        "1" | "" => {
            let v1: ColorV1 = event
                .unserialize()
                .map_err(|e| format!("cannot decode v1 body: {e}"))?;
            Ok(Normalized {
                color: v1.color,
                price_cents: (v1.price * 100.0).round() as i64,
            })
        }
        "2" => {
            let v2: ColorV2 = event
                .unserialize()
                .map_err(|e| format!("cannot decode v2 body: {e}"))?;
            Ok(Normalized {
                color: v2.name,
                price_cents: v2.price_cents,
            })
        }
        other => Err(format!("unknown version {other:?}")),
    }
}

struct Router;

impl Handler for Router {
    fn handle(events: &[Event]) -> Result<Vec<Outcome>, String> {
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events {
            outcomes.push(match normalize(event) {
                Ok(normalized) => {
                    // A refused publish is a configuration error: fail (and retry) the batch.
                    publish(
                        TARGET,
                        &normalized,
                        &[
                            ("source-id", event.id()),
                            ("source-version", event.tag("version")),
                            ("router", "rust"),
                        ],
                    )?;
                    Outcome::Ack
                }
                Err(reason) => Outcome::DeadLetter(reason),
            });
        }
        Ok(outcomes)
    }
}

beehive_guest::export_handler!(Router);
