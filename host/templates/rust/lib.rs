//! {{name}}: a Beehive event handler. Routes `activity` events by the `type` field of their
//! body: `signup` to `signups`, `purchase` to `purchases` (the body unchanged, with the meta
//! `source-id`). Bad input (no body, no string `type`, a type with no route) is
//! dead-lettered with the reason; a refused publish fails the batch, which is retried.
//!
//! Build: `cargo build --release --target wasm32-wasip2`; the component is
//! `target/wasm32-wasip2/release/{{crate_file}}.wasm`. Test: see README.md.

use beehive_guest::{Error, Event, Outcome, Result, info, publish_raw};
use serde::Deserialize;

/// Where each `type` goes.
const ROUTES: &[(&str, &str)] = &[("signup", "signups"), ("purchase", "purchases")];

/// The part of the body the router reads; other fields are passed on untouched.
#[derive(Deserialize)]
struct Activity {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Publishes one event to its route; bad input is an error that `Outcome::each`
/// dead-letters.
fn route(event: Event) -> Result<Outcome> {
    let body = event.body().ok_or_else(|| Error::bad_input("no body"))?;
    let kind = event
        .unserialize::<Activity>()
        .ok()
        .and_then(|activity| activity.kind)
        .ok_or_else(|| Error::bad_input("expected a map with a string \"type\""))?;
    let Some(&(_, stream)) = ROUTES.iter().find(|(k, _)| *k == kind) else {
        return Err(Error::bad_input(format_args!("unknown type {kind:?}")));
    };
    // A refusal is not bad input: it fails (and retries) the whole batch.
    publish_raw(stream, Some(body), &[("source-id", event.id())])?;
    info!("{} {kind} -> {stream}", event.id());
    Ok(Outcome::Ack)
}

fn handle(events: &[Event]) -> Result<Vec<Outcome>> {
    Outcome::each(events, route)
}

beehive_guest::export_handler!(handle);
