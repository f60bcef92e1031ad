//! The benchmark's trivial handler: acknowledges every event. Its meta `p` says what it
//! publishes besides, committed atomically with the acknowledgements:
//!
//! - `0`: nothing (scenario C3);
//! - `1`: a receipt (its ID as meta `of`) to `bench-receipts` (scenario C4);
//! - anything else names a stream: the event's body goes there, with its ID as meta `of`
//!   and the wall-clock time (ms) at which the handler ran as meta `t` (the output
//!   scenarios, which measure the time from there to the output's `XADD`).

#![cfg(target_arch = "wasm32")]

use std::time::{SystemTime, UNIX_EPOCH};

use beehive_guest::{Event, EventExt, Handler, Outcome};

struct Bench;

/// Milliseconds since the Unix epoch, from the host's wall clock.
fn now_ms() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
        .to_string()
}

impl Handler for Bench {
    fn handle(events: &[Event]) -> Result<Vec<Outcome>, String> {
        // Read once per batch: every output of a batch is committed by the same commit.
        let mut ran_at: Option<String> = None;
        for event in events {
            match event.tag("p") {
                "0" | "" => {}
                "1" => beehive_guest::publish_meta("bench-receipts", &[("of", event.id)])?,
                target => {
                    let t = ran_at.get_or_insert_with(now_ms);
                    beehive_guest::publish_raw(
                        target,
                        event.body,
                        &[("of", event.id), ("t", t.as_str())],
                    )?;
                }
            }
        }
        Ok(Outcome::all_ack(events))
    }
}

beehive_guest::export_handler!(Bench);
