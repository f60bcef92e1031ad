//! `beehive test <component.wasm> <events.jsonl>`: runs a handler component on recorded
//! events, without Redis, in the sandbox and limits of `beehive run`, and compares what it
//! did with each event against an expectation file.
//!
//! - **Input**: JSON lines as `beehive tail --json` and `beehive record` print them (see
//!   [`input::read_events`]); `deliveries` is optional.
//! - **Sandbox**: the same [`WasmEngine`] and [`WasmHandler`] as `beehive run`, with
//!   [`GuestSettings`] from the flags (`--publish`, `--timeout`, `--memory`,
//!   `--max-publishes`, defaulting as the config file does). One instance serves every
//!   call, as for a running consumer, and is re-created after a trap.
//! - **Batches**: `--count` events per `handle-events` call, default 1. The WIT returns
//!   outcomes per event but publishes and log lines per call, so one event per call is the
//!   only way to know exactly which event published or logged what; with a larger count
//!   (to test a handler that works on whole batches, or to measure throughput), the
//!   publishes, logs and refusals of a batch are listed on its first event, which records
//!   the batch size. A trap, a deadline, the memory cap, an error or a wrong number of
//!   outcomes fails the batch: each of its events gets the outcome
//!   `batch failed (<kind>): <message>` and, as in production, nothing it published.
//! - **Expectation**: one JSON object per event (see [`record::Record`]), matched by entry
//!   ID; by default `expected.jsonl` beside `events.jsonl`, and `NAME.expected.jsonl`
//!   beside any other `NAME.jsonl`. `--update` writes it from this run.
//! - **Report**: a diff per mismatching event (expected `-`, actual `+`; coloured on a
//!   terminal), then exactly `N passed, N failed` as the last line. Exit 0 when all
//!   match, 1 otherwise, 2 for bad usage (a missing file, a bad line named `file:line`, a
//!   file that is not a usable component).

mod capture;
mod input;
mod record;

use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

use self::capture::{Capture, Refusals};
use self::input::Input;
use self::record::{DiffLine, Published, Record};
use super::{CommandResult, Failure};
use crate::consumer::{BatchError, BatchHandler, Observer, Outcome};
use crate::event::{Event, NewEvent, json};
use crate::runtime::{GuestSettings, WasmEngine, WasmHandler};

/// Arguments of `beehive test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The handler component (.wasm).
    pub component: PathBuf,
    /// The events: JSON lines as `beehive tail --json` and `beehive record` print them
    /// (id, stream, body as JSON, meta; deliveries optional, default 1).
    pub events: PathBuf,
    /// The expectation file [default: expected.jsonl beside events.jsonl; NAME.expected.jsonl
    /// beside any other NAME.jsonl].
    #[arg(long, value_name = "FILE")]
    pub expect: Option<PathBuf>,
    /// Write the expectation file from this run instead of comparing.
    #[arg(long)]
    pub update: bool,
    /// Streams the handler may publish to (the group's `publish:` list); a publish to any
    /// other is refused, as in production.
    #[arg(long, value_name = "STREAM,...", value_delimiter = ',')]
    pub publish: Vec<String>,
    /// Events per handle-events call. With 1, each event's publishes and logs are exactly
    /// its own; with more, a batch's are listed on its first event.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub count: u64,
    /// CPU deadline per call (the group's `limits.timeout`).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Memory cap of the instance (the group's `limits.memory`), e.g. 64MiB.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub memory: u64,
    /// Most events one call may publish (the group's `max-publishes`).
    #[arg(long, default_value_t = 10_000)]
    pub max_publishes: usize,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("expected a duration such as 500ms, 5s or 2m, got {text:?}"))
}

/// Parses `64MiB`, `512KB`, `1GiB`, `1048576`, as the config file's `limits.memory`.
fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let factor: Option<u64> = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => Some(1),
        "k" | "kb" => Some(1000),
        "kib" => Some(1 << 10),
        "m" | "mb" => Some(1000 * 1000),
        "mib" => Some(1 << 20),
        "g" | "gb" => Some(1000 * 1000 * 1000),
        "gib" => Some(1 << 30),
        _ => None,
    };
    digits
        .parse::<u64>()
        .ok()
        .zip(factor)
        .and_then(|(n, f)| n.checked_mul(f))
        .filter(|n| *n >= 1 << 16)
        .ok_or_else(|| {
            format!("expected a size of at least 64KiB such as 64MiB or 1GiB, got {text:?}")
        })
}

/// The expectation file of `events` when `--expect` is not given.
pub fn default_expectation(events: &Path) -> PathBuf {
    let stem = events
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = if stem == "events" {
        "expected.jsonl".to_string()
    } else {
        format!("{stem}.expected.jsonl")
    };
    events.with_file_name(name)
}

pub(super) async fn run(args: TestArgs) -> CommandResult {
    for (what, path) in [
        ("component", &args.component),
        ("events file", &args.events),
    ] {
        if !path.is_file() {
            return Err(Failure::Usage(format!(
                "{what} {} not found",
                path.display()
            )));
        }
    }
    let inputs = input::read_events(&args.events)?;
    let expect_path = args
        .expect
        .clone()
        .unwrap_or_else(|| default_expectation(&args.events));
    // The expectations are read on a thread of their own while the component loads and
    // runs (on 2 cores, reading 100,000 expectations costs about as much as running them).
    let expected = (!args.update).then(|| {
        let path = expect_path.clone();
        std::thread::spawn(move || record::read_expectations(&path))
    });
    let wasm = WasmEngine::new()
        .map_err(|e| Failure::Runtime(format!("cannot start the WebAssembly engine: {e:#}")))?;
    let component = wasm
        .load_file(&args.component)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let refusals = Arc::new(Refusals::default());
    let settings = GuestSettings {
        group: "test".into(),
        publish: args.publish.clone(),
        max_publishes: args.max_publishes,
        memory: args.memory,
        timeout: args.timeout,
        metrics: Some(refusals.clone() as Arc<dyn Observer>),
    };
    let handler = WasmHandler::new(component, settings, "test");
    let count = usize::try_from(args.count).unwrap_or(usize::MAX);
    let started = Instant::now();
    let (records, calls) = run_isolated(handler, &inputs, count, refusals)?;
    let took = started.elapsed();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "ran {} events in {calls} calls of up to {count} in {:.2}s",
        inputs.len(),
        took.as_secs_f64()
    );
    let expected = match expected {
        None => None,
        Some(reading) => Some(
            reading
                .join()
                .map_err(|_| Failure::Runtime("reading the expectations panicked".into()))??,
        ),
    };
    let (passed, failed) = match expected {
        None => {
            record::write_expectations(&expect_path, &records)?;
            for (input, record) in inputs.iter().zip(&records) {
                if record.outcome.starts_with("batch failed") {
                    eprintln!(
                        "note: {}:{} ({}): {}",
                        args.events.display(),
                        input.line,
                        record.id,
                        record.outcome.lines().next().unwrap_or("")
                    );
                }
            }
            let _ = writeln!(
                out,
                "wrote {} expectations to {}",
                records.len(),
                expect_path.display()
            );
            (records.len(), 0)
        }
        Some(expected) => {
            let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            compare(
                &mut out,
                &inputs,
                &records,
                expected,
                &args.events,
                &expect_path,
                color,
            )
        }
    };
    let _ = writeln!(out, "{passed} passed, {failed} failed");
    let _ = out.flush();
    if failed > 0 {
        return Err(Failure::Runtime(format!(
            "{failed} of {} checks against {} failed",
            passed + failed,
            expect_path.display()
        )));
    }
    Ok(())
}

/// Runs every batch on a thread of its own, with a current-thread runtime (so the tasks
/// that forward guest stdout run there too) whose tracing dispatcher captures guest logs
/// and refusals; other warnings still go to stderr. Returns the records and the number of
/// calls.
fn run_isolated(
    handler: WasmHandler,
    inputs: &[Input],
    count: usize,
    refusals: Arc<Refusals>,
) -> Result<(Vec<Record>, usize), Failure> {
    let capture = Capture::default();
    let printed = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
            *metadata.level() <= tracing::Level::WARN && !Capture::captures(metadata)
        }));
    let subscriber = tracing_subscriber::registry()
        .with(capture.clone())
        .with(printed);
    let dispatch = tracing::Dispatch::new(subscriber);
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let _default = tracing::dispatcher::set_default(&dispatch);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| Failure::Runtime(format!("cannot start a runtime: {e}")))?;
                Ok(runtime.block_on(run_batches(handler, inputs, count, &capture, &refusals)))
            })
            .join()
            .unwrap_or_else(|_| Err(Failure::Runtime("the test runner panicked".into())))
    })
}

async fn run_batches(
    mut handler: WasmHandler,
    inputs: &[Input],
    count: usize,
    capture: &Capture,
    refusals: &Refusals,
) -> (Vec<Record>, usize) {
    let events: Vec<Event> = inputs.iter().map(|input| input.event.clone()).collect();
    let mut records = Vec::with_capacity(events.len());
    let mut calls = 0;
    for batch in events.chunks(count) {
        capture.take();
        refusals.take();
        let result = handler.handle(batch).await;
        calls += 1;
        let captured = capture.take();
        let refused = capture::refused(captured.refused_streams, refusals.take());
        let (outcomes, publishes): (Vec<String>, Vec<Published>) = match result {
            Ok(decision) => (
                decision.outcomes.iter().map(outcome_text).collect(),
                decision.publishes.iter().map(published).collect(),
            ),
            Err(error) => {
                let text = failure_text(&error);
                (vec![text; batch.len()], Vec::new())
            }
        };
        let mut publishes = Some(publishes);
        let mut logs = Some(captured.logs);
        let mut refused = Some(refused);
        for (i, (event, outcome)) in batch.iter().zip(outcomes).enumerate() {
            records.push(Record {
                id: event.id(),
                outcome,
                publishes: publishes.take().unwrap_or_default(),
                logs: logs.take().unwrap_or_default(),
                refused: refused.take().unwrap_or_default(),
                batch: (count > 1 && i == 0).then_some(batch.len()),
            });
        }
    }
    (records, calls)
}

fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ack => "ack".into(),
        Outcome::Retry(reason) => format!("retry: {reason}"),
        Outcome::DeadLetter(reason) => format!("dead-letter: {reason}"),
    }
}

fn failure_text(error: &anyhow::Error) -> String {
    match error.downcast_ref::<BatchError>() {
        Some(failure) => format!(
            "batch failed ({}): {}",
            failure.kind.label(),
            without_backtrace(&failure.message)
        ),
        None => format!(
            "batch failed (error): {}",
            without_backtrace(&format!("{error:#}"))
        ),
    }
}

/// `message` without a wasm backtrace: its frames name code offsets and symbol hashes that
/// change with every build of the component, which would make every trap a mismatch after a
/// rebuild. What follows a frame (the cause of the trap) is kept.
fn without_backtrace(message: &str) -> String {
    const HEAD: &str = "error while executing at wasm backtrace:";
    let Some(at) = message.find(HEAD) else {
        return message.to_string();
    };
    let mut kept = message[..at].trim_end().trim_end_matches(':').to_string();
    for line in message[at + HEAD.len()..].lines() {
        let trimmed = line.trim_start();
        let is_frame = trimmed.split_once(": ").is_some_and(|(n, rest)| {
            n.parse::<u32>().is_ok() && rest.trim_start().starts_with("0x")
        });
        let text = if is_frame {
            // `N: 0xOFFSET - symbol`, maybe followed by `: cause`.
            match trimmed
                .split_once(" - ")
                .and_then(|(_, symbol)| symbol.split_once(": "))
            {
                Some((_, cause)) => cause,
                None => continue,
            }
        } else {
            line
        };
        if !text.trim().is_empty() {
            if !kept.is_empty() {
                kept.push_str(if is_frame { ": " } else { "\n" });
            }
            kept.push_str(text);
        }
    }
    kept
}

fn published(event: &NewEvent) -> Published {
    Published {
        stream: event.stream.clone(),
        body: event.body.as_deref().map(json::body_to_json),
        meta: event.meta.iter().cloned().collect(),
    }
}

/// Compares `records` with `expected` (matched by ID, in order among equal IDs), prints a
/// diff per mismatch and returns how many passed and how many failed: events that do not
/// match, and expectations no event matched.
fn compare(
    out: &mut impl Write,
    inputs: &[Input],
    records: &[Record],
    expected: Vec<record::Expected>,
    events_path: &Path,
    expect_path: &Path,
    color: bool,
) -> (usize, usize) {
    let mut by_id: HashMap<String, VecDeque<record::Expected>> = HashMap::new();
    for expectation in expected {
        by_id
            .entry(expectation.record.id.clone())
            .or_default()
            .push_back(expectation);
    }
    let mut failed = 0;
    let mut mismatched = 0;
    for (input, actual) in inputs.iter().zip(records) {
        let expectation = by_id.get_mut(&actual.id).and_then(VecDeque::pop_front);
        if let Some(expectation) = &expectation
            && expectation.record == *actual
        {
            continue;
        }
        failed += 1;
        mismatched += 1;
        let at = match &expectation {
            Some(e) => format!("{}:{}", expect_path.display(), e.line),
            None => "no expectation".into(),
        };
        let _ = writeln!(
            out,
            "FAIL {} ({}:{}; {at})",
            actual.id,
            events_path.display(),
            input.line
        );
        let expected_lines = expectation.map(|e| e.record.lines()).unwrap_or_default();
        let actual_lines = actual.lines();
        for line in record::diff(&expected_lines, &actual_lines) {
            let _ = match line {
                DiffLine::Same(text) => writeln!(out, "    {text}"),
                DiffLine::Expected(text) => writeln!(out, "{}", paint(color, "31", "  - ", text)),
                DiffLine::Actual(text) => writeln!(out, "{}", paint(color, "32", "  + ", text)),
            };
        }
    }
    let mut left: Vec<record::Expected> = by_id.into_values().flatten().collect();
    left.sort_by_key(|e| e.line);
    for expectation in left {
        failed += 1;
        let _ = writeln!(
            out,
            "FAIL {} ({}:{}: no such event in {})",
            expectation.record.id,
            expect_path.display(),
            expectation.line,
            events_path.display()
        );
        for text in expectation.record.lines() {
            let _ = writeln!(out, "{}", paint(color, "31", "  - ", &text));
        }
    }
    (records.len() - mismatched, failed)
}

fn paint(color: bool, code: &str, prefix: &str, text: &str) -> String {
    if color {
        format!("\x1b[{code}m{prefix}{text}\x1b[0m")
    } else {
        format!("{prefix}{text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectation_files_are_named_after_the_events() {
        assert_eq!(
            default_expectation(Path::new("dir/events.jsonl")),
            Path::new("dir/expected.jsonl")
        );
        assert_eq!(
            default_expectation(Path::new("orders.jsonl")),
            Path::new("orders.expected.jsonl")
        );
    }

    #[test]
    fn the_flag_defaults_are_the_config_defaults() {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: TestArgs,
        }
        let args = Wrapper::parse_from(["x", "c.wasm", "e.jsonl"]).args;
        let defaults = GuestSettings::default();
        assert_eq!(args.timeout, defaults.timeout);
        assert_eq!(args.memory, defaults.memory);
        assert_eq!(args.max_publishes, defaults.max_publishes);
        assert_eq!(args.publish, defaults.publish);
        assert_eq!(args.count, 1);
        assert_eq!(parse_size("128MiB"), Ok(128 << 20));
        assert!(parse_size("1k").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn wasm_backtraces_are_left_out() {
        let trapped = "the component trapped: error while executing at wasm backtrace:\n    0:   0xdd03 - h.wasm!abort\n    1:  0x1abef - h.wasm!main::h12: wasm trap: unreachable";
        assert_eq!(
            without_backtrace(trapped),
            "the component trapped: wasm trap: unreachable"
        );
        let memory = "memory limit exceeded (limits.memory): error while executing at wasm backtrace:\n    0:  0x169cf - h.wasm!sbrk\n    6:   0x5bf4 - beeh";
        assert_eq!(
            without_backtrace(memory),
            "memory limit exceeded (limits.memory)"
        );
        assert_eq!(without_backtrace("deadline exceeded"), "deadline exceeded");
    }
}
