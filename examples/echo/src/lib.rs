//! Echo: logs every event and acknowledges it. Tags steer it, for demos and tests:
//! `echo-to=<stream>` republishes the event there (with `echo-of` = its ID; a refused
//! publish dead-letters the event with the host's reason), `fail=retry` retries it,
//! `fail=dead` dead-letters it and `fail=trap` makes the whole batch trap.

// Components are built for wasm32-wasip2; on other targets the crate is empty, so the
// workspace still builds and tests natively.
#![cfg(target_arch = "wasm32")]

use beehive_guest::{Event, EventExt, Handler, Outcome, info};

struct Echo;

impl Handler for Echo {
    fn handle(events: &[Event]) -> Result<Vec<Outcome>, String> {
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events {
            info(&format!(
                "{} {} deliveries={}",
                event.stream(),
                event.id(),
                event.deliveries
            ));
            let outcome = match event.tag("fail") {
                "retry" => Outcome::Retry("asked to retry".into()),
                "dead" => Outcome::DeadLetter("asked to dead-letter".into()),
                "trap" => panic!("asked to trap"),
                _ => match event.tag("echo-to") {
                    "" => Outcome::Ack,
                    target => {
                        let mut meta: Vec<(&str, &str)> = event
                            .meta
                            .iter()
                            .filter(|(k, _)| *k != "echo-to")
                            .copied()
                            .collect();
                        meta.push(("echo-of", event.id));
                        match beehive_guest::publish_raw(target, event.body, &meta) {
                            Ok(()) => Outcome::Ack,
                            Err(refused) => {
                                Outcome::DeadLetter(format!("publish refused: {refused}"))
                            }
                        }
                    }
                },
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }
}

beehive_guest::export_handler!(Echo);
