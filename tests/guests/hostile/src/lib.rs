//! A test guest steered by the tag `do` of the first event of each batch:
//!
//! - `loop`: spin forever (deadline); `alloc`: allocate until the memory cap; `panic`: trap;
//!   `recurse`: overflow the stack; `wrong-count`: return one outcome too few;
//!   `huge-error`: fail the batch with a 4 MB message;
//! - `file`, `env`, `socket`: try to escape the sandbox; the event is dead-lettered with the
//!   error the guest saw (acknowledged instead if the escape worked);
//! - `publish-many`: publish `n` receipts; `slow`: spin `ms` milliseconds per event;
//! - anything else: publish a receipt `{id}` to `receipts` (meta `of`, `version`) when the
//!   group may, and acknowledge.
//!
//! `version` (meta) is this build's `VERSION` env at compile time, for hot-reload tests.

#![cfg(target_arch = "wasm32")]

use beehive_guest::{Event, EventExt, Handler, Outcome, publish_meta};

struct Hostile;

const VERSION: &str = match option_env!("BEEHIVE_TEST_VERSION") {
    Some(v) => v,
    None => "v1",
};

#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    let buf = [n; 64];
    recurse(buf[(n % 64) as usize] + 1) + buf[0]
}

impl Handler for Hostile {
    fn handle(events: &[Event]) -> Result<Vec<Outcome>, String> {
        let Some(first) = events.first() else {
            return Ok(Vec::new());
        };
        match first.tag("do") {
            "loop" => {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("asked to panic"),
            "recurse" => return Ok(vec![Outcome::Retry(recurse(1).to_string())]),
            "wrong-count" => return Ok(vec![Outcome::Ack; events.len().saturating_sub(1)]),
            "huge-error" => return Err("x".repeat(4 << 20)),
            _ => {}
        }
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events {
            let outcome = match event.tag("do") {
                "file" => match std::fs::read("/etc/passwd") {
                    Ok(_) => Outcome::Ack,
                    Err(e) => Outcome::DeadLetter(format!("file: {e}")),
                },
                "env" => {
                    let vars: Vec<(String, String)> = std::env::vars().collect();
                    if vars.is_empty() && std::env::var("HOME").is_err() {
                        Outcome::DeadLetter("env: empty".into())
                    } else {
                        Outcome::Ack
                    }
                }
                "socket" => match std::net::TcpStream::connect(event.tag("addr")) {
                    Ok(_) => Outcome::Ack,
                    Err(e) => Outcome::DeadLetter(format!("socket: {e}")),
                },
                "publish-many" => {
                    let n: usize = event.tag("n").parse().unwrap_or(1);
                    let mut refused = None;
                    for i in 0..n {
                        if let Err(e) =
                            publish_meta("receipts", &[("of", event.id()), ("i", &i.to_string())])
                        {
                            refused = Some(e);
                            break;
                        }
                    }
                    match refused {
                        Some(e) => Outcome::DeadLetter(format!("publish refused: {e}")),
                        None => Outcome::Ack,
                    }
                }
                "publish-to" => match publish_meta(event.tag("to"), &[("of", event.id())]) {
                    Ok(()) => Outcome::Ack,
                    Err(e) => Outcome::DeadLetter(format!("publish refused: {e}")),
                },
                "retry" => Outcome::Retry("asked to retry".into()),
                other => {
                    if other == "slow" {
                        let ms: u64 = event.tag("ms").parse().unwrap_or(100);
                        let until =
                            std::time::Instant::now() + std::time::Duration::from_millis(ms);
                        while std::time::Instant::now() < until {
                            std::hint::spin_loop();
                        }
                    }
                    match publish_meta("receipts", &[("of", event.id()), ("version", VERSION)]) {
                        Ok(()) | Err(_) => Outcome::Ack,
                    }
                }
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }
}

beehive_guest::export_handler!(Hostile);
