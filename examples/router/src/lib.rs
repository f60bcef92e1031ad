//! Router: reads the `version` tag, decodes the v1 or v2 shape of a colour event and
//! republishes one normalized shape to `colors-normalized` (meta `source-id`,
//! `source-version`, `router=rust`). Unknown versions and bodies that do not decode are
//! dead-lettered with the reason; they never block the stream. A refused publish fails (and
//! retries) the batch. `examples/python-router` and `examples/js-router` keep the same
//! contract.
//!
//! - v1 (the seed's shape): `{ "color": "red", "price": 12.34 }` (`version` 1 or missing)
//! - v2: `{ "name": "red", "price_cents": 1234 }`
//! - normalized: `{ "color": "red", "price_cents": 1234 }`

// Components are built for wasm32-wasip2; on other targets the crate is empty, so the
// workspace still builds and tests natively.
#![cfg(target_arch = "wasm32")]

use beehive_guest::{Error, Event, Outcome, Result, publish};
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

/// The normalized shape, or a bad-input error (dead-lettered by `Outcome::each`).
fn normalize(event: Event) -> Result<Normalized> {
    match event.tag("version") {
        "1" | "" => {
            let v1: ColorV1 = event
                .unserialize()
                .map_err(|e| e.context("cannot decode v1 body"))?;
            Ok(Normalized {
                color: v1.color,
                price_cents: (v1.price * 100.0).round() as i64,
            })
        }
        "2" => {
            let v2: ColorV2 = event
                .unserialize()
                .map_err(|e| e.context("cannot decode v2 body"))?;
            Ok(Normalized {
                color: v2.name,
                price_cents: v2.price_cents,
            })
        }
        other => Err(Error::bad_input(format_args!("unknown version {other:?}"))),
    }
}

fn handle(events: &[Event]) -> Result<Vec<Outcome>> {
    Outcome::each(events, |event| {
        let normalized = normalize(event)?;
        publish(
            TARGET,
            &normalized,
            &[
                ("source-id", event.id()),
                ("source-version", event.tag("version")),
                ("router", "rust"),
            ],
        )?;
        Ok(Outcome::Ack)
    })
}

beehive_guest::export_handler!(handle);
