//! A handler built for the previous contract, `beehive:broker@0.1.0` (a `list<event>` of
//! records): the host refuses it and says to rebuild it.

#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    path: "wit",
    world: "consumer",
});

use beehive::broker::types::{Event, Outcome};
use exports::beehive::broker::handler::Guest;

struct Old;

impl Guest for Old {
    fn handle_events(events: Vec<Event>) -> Result<Vec<Outcome>, String> {
        Ok(events.iter().map(|_| Outcome::Ack).collect())
    }
}

export!(Old);
