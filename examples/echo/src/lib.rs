//! Echo: logs every event and acknowledges it. Tags steer it, for demos and tests:
//! `echo-to=<stream>` republishes the event there (with `echo-of` = its ID; a refused
//! publish dead-letters the event with the host's reason), `fail=retry` retries it,
//! `fail=dead` dead-letters it and `fail=trap` makes the whole batch trap (a panic: the host
//! reports its message, see `beehive_guest::PANIC_PREFIX`).

// Components are built for wasm32-wasip2; on other targets the crate is empty, so the
// workspace still builds and tests natively.
#![cfg(target_arch = "wasm32")]

use beehive_guest::{Event, Outcome, Result, info, publish_raw};

fn echo(event: Event) -> Outcome {
    match event.tag("fail") {
        "retry" => return Outcome::retry("asked to retry"),
        "dead" => return Outcome::dead_letter("asked to dead-letter"),
        "trap" => panic!("asked to trap"),
        _ => {}
    }
    let target = event.tag("echo-to");
    if target.is_empty() {
        return Outcome::Ack;
    }
    let mut meta: Vec<(&str, &str)> = event
        .meta()
        .iter()
        .filter(|(k, _)| *k != "echo-to")
        .copied()
        .collect();
    meta.push(("echo-of", event.id()));
    match publish_raw(target, event.body(), &meta) {
        Ok(()) => Outcome::Ack,
        Err(refused) => Outcome::dead_letter(format_args!("publish refused: {refused}")),
    }
}

fn handle(events: &[Event]) -> Result<Vec<Outcome>> {
    Ok(events
        .iter()
        .map(|&event| {
            info!(
                "{} {} deliveries={}",
                event.stream(),
                event.id(),
                event.deliveries()
            );
            echo(event)
        })
        .collect())
}

beehive_guest::export_handler!(handle);
