//! The benchmark's trivial handler: acknowledges every event. An event tagged `p=1`
//! publishes a receipt (its ID as meta `of`) to `bench-receipts`, committed atomically with
//! the acknowledgements (scenario C4).

#![cfg(target_arch = "wasm32")]

use beehive_guest::{Event, EventExt, Handler, Outcome};

struct Bench;

impl Handler for Bench {
    fn handle(events: &[Event]) -> Result<Vec<Outcome>, String> {
        for event in events {
            if event.tag("p") == "1" {
                beehive_guest::publish_meta("bench-receipts", &[("of", event.id)])?;
            }
        }
        Ok(Outcome::all_ack(events))
    }
}

beehive_guest::export_handler!(Bench);
