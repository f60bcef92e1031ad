//! `beehive test <component.wasm> <events.jsonl>`: runs a handler component on recorded
//! events, without Redis, in the sandbox and limits of `beehive run`, and compares what it
//! did with each event against an expectation file.
//!
//! - **Input**: JSON lines as `beehive tail --json` and `beehive record` print them (see
//!   [`input::stream_events`]); `deliveries` is optional.
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
mod text;

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::{Duration, Instant};

use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

use self::capture::{Capture, Refusals};
use self::input::Block;
use self::record::{DiffLine, Expectations, Matched, Record};
use super::{CommandResult, Failure};
use crate::consumer::{BatchError, BatchHandler, Decision, Observer, Outcome};
use crate::event::{EntryId, Event, NewEvent};
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
    // The events are read on a thread of their own and run as they come: reading overlaps
    // running, and what each call did is compared (or written) here while the next run.
    let (to_runner, blocks) = std::sync::mpsc::sync_channel(AHEAD);
    let events_path = args.events.clone();
    let reader = std::thread::spawn(move || input::stream_events(&events_path, &to_runner));
    let expect_path = args
        .expect
        .clone()
        .unwrap_or_else(|| default_expectation(&args.events));
    // So are the expectations, while the component loads.
    let expected = (!args.update).then(|| {
        let path = expect_path.clone();
        std::thread::spawn(move || Expectations::read(&path))
    });
    // A bad events file is reported before a bad component, as when it was read first.
    let loaded = WasmEngine::new()
        .map_err(|e| Failure::Runtime(format!("cannot start the WebAssembly engine: {e:#}")))
        .and_then(|wasm| {
            wasm.load_file(&args.component)
                .map_err(|e| Failure::Usage(e.to_string()))
        });
    let component = match loaded {
        Ok(component) => component,
        Err(failure) => {
            let bad_line = blocks.iter().find_map(Result::err);
            let _ = reader.join();
            return Err(bad_line.unwrap_or(failure));
        }
    };
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
    let expected = match expected {
        None => None,
        Some(reading) => Some(
            reading
                .join()
                .map_err(|_| Failure::Runtime("reading the expectations panicked".into()))?,
        ),
    };
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut results = match expected {
        None => Results::Update {
            lines: Vec::new(),
            notes: Vec::new(),
        },
        Some(Ok(expected)) => Results::Compare(Box::new(Comparison {
            expected,
            report: Vec::new(),
            events_path: &args.events,
            color,
            passed: 0,
            failed: 0,
        })),
        Some(Err(failure)) => Results::Unreadable(failure),
    };
    let started = Instant::now();
    let ran = run_isolated(handler, blocks, count, refusals, |ran| {
        results.add(ran, count)
    });
    let took = started.elapsed();
    if reader.join().is_err() {
        return Err(Failure::Runtime("reading the events panicked".into()));
    }
    let (events, calls) = ran?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "ran {events} events in {calls} calls of up to {count} in {:.2}s",
        took.as_secs_f64()
    );
    let (passed, failed) = match results {
        Results::Unreadable(failure) => return Err(failure),
        Results::Update { lines, notes } => {
            record::write_expectations(&expect_path, &lines)?;
            for (line, id, outcome) in notes {
                eprintln!(
                    "note: {}:{line} ({id}): {}",
                    args.events.display(),
                    outcome.lines().next().unwrap_or("")
                );
            }
            let _ = writeln!(
                out,
                "wrote {events} expectations to {}",
                expect_path.display()
            );
            (events, 0)
        }
        Results::Compare(mut comparison) => {
            comparison.finish();
            if let Some(failure) = comparison.expected.error() {
                return Err(failure);
            }
            let _ = out.write_all(&comparison.report);
            (comparison.passed, comparison.failed)
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

/// Blocks of events read ahead of the runner.
const AHEAD: usize = 64;

/// Batches run ahead of their comparison.
const RESULTS_AHEAD: usize = 64;

/// What one call did, as the runner hands it over.
struct Ran {
    /// The events of the batch: ID and line in the events file.
    ids: Vec<(EntryId, usize)>,
    /// The outcomes and publishes, or the text of the failure of the batch.
    decision: Result<Decision, String>,
    /// What the handler logged during the call.
    logs: Vec<String>,
    /// The refused publishes of the call.
    refused: Vec<String>,
}

/// What becomes of the results: an expectation file, or a comparison.
enum Results<'a> {
    /// `--update`: the expectation lines, and the events of failed batches to note.
    Update {
        lines: Vec<u8>,
        notes: Vec<(usize, String, String)>,
    },
    Compare(Box<Comparison<'a>>),
    /// The expectation file could not be read: reported after the run.
    Unreadable(Failure),
}

impl Results<'_> {
    /// Adds the records of one call's events.
    fn add(&mut self, ran: Ran, count: usize) {
        if let Results::Unreadable(_) = self {
            return;
        }
        let (outcomes, publishes): (Vec<Cow<'_, str>>, &[NewEvent]) = match &ran.decision {
            Ok(decision) => (
                decision.outcomes.iter().map(outcome_text).collect(),
                &decision.publishes,
            ),
            Err(text) => (vec![Cow::Borrowed(text.as_str()); ran.ids.len()], &[]),
        };
        let mut line = Vec::with_capacity(256);
        let mut id = String::with_capacity(40);
        for (i, ((entry, at), outcome)) in ran.ids.iter().zip(&outcomes).enumerate() {
            id.clear();
            let _ = write!(id, "{entry}");
            let first = i == 0;
            line.clear();
            text::write_record(
                &mut line,
                &id,
                outcome,
                if first { publishes } else { &[] },
                if first { &ran.logs } else { &[] },
                if first { &ran.refused } else { &[] },
                (count > 1 && first).then_some(ran.ids.len()),
            );
            match self {
                Results::Update { lines, notes } => {
                    lines.extend_from_slice(&line);
                    lines.push(b'\n');
                    if ran.decision.is_err() {
                        notes.push((*at, id.clone(), outcome.to_string()));
                    }
                }
                Results::Compare(comparison) => comparison.check(&id, *at, &line),
                Results::Unreadable(_) => {}
            }
        }
    }
}

/// Compares each event's record with its expectation (matched by ID, in order among equal
/// IDs) and writes a diff per mismatch to `report`.
struct Comparison<'a> {
    expected: Expectations,
    report: Vec<u8>,
    events_path: &'a Path,
    color: bool,
    /// Events that match.
    passed: usize,
    /// Events that do not match, and expectations no event matched.
    failed: usize,
}

impl Comparison<'_> {
    /// Checks the event `id` (line `at` of the events file) whose expectation line is
    /// `actual`.
    fn check(&mut self, id: &str, at: usize, actual: &[u8]) {
        let (expectation, number) = match self.expected.take(id, actual) {
            Some(Matched::Same) => {
                self.passed += 1;
                return;
            }
            // Not a record: the run ends with that error, the report is not shown.
            Some(Matched::Bad) => return,
            Some(Matched::Read(record, number)) => (Some(record), Some(number)),
            None => (None, None),
        };
        let actual: Record =
            serde_json::from_slice(actual).expect("a record reads back from its line");
        if expectation.as_ref() == Some(&actual) {
            self.passed += 1;
            return;
        }
        self.failed += 1;
        let out = &mut self.report;
        let place = match number {
            Some(line) => format!("{}:{line}", self.expected.path().display()),
            None => "no expectation".into(),
        };
        let _ = writeln!(
            out,
            "FAIL {} ({}:{at}; {place})",
            actual.id,
            self.events_path.display(),
        );
        let expected_lines = expectation.map(|e| e.lines()).unwrap_or_default();
        let actual_lines = actual.lines();
        for line in record::diff(&expected_lines, &actual_lines) {
            let _ = match line {
                DiffLine::Same(text) => writeln!(out, "    {text}"),
                DiffLine::Expected(text) => {
                    writeln!(out, "{}", paint(self.color, "31", "  - ", text))
                }
                DiffLine::Actual(text) => {
                    writeln!(out, "{}", paint(self.color, "32", "  + ", text))
                }
            };
        }
    }

    /// Reports the expectations no event matched.
    fn finish(&mut self) {
        for (record, number) in self.expected.left() {
            self.failed += 1;
            let _ = writeln!(
                self.report,
                "FAIL {} ({}:{number}: no such event in {})",
                record.id,
                self.expected.path().display(),
                self.events_path.display()
            );
            for text in record.lines() {
                let _ = writeln!(self.report, "{}", paint(self.color, "31", "  - ", &text));
            }
        }
    }
}

/// Runs every batch on a thread of its own, with a current-thread runtime (so the tasks
/// that forward guest stdout run there too) whose tracing dispatcher captures guest logs
/// and refusals; other warnings still go to stderr. Events come from `blocks`, in batches
/// of `count`; what each call did goes to `add`, on this thread, while the next ones run.
/// Returns the number of events and of calls, or the bad line of the events file.
fn run_isolated(
    handler: WasmHandler,
    blocks: Receiver<Result<Block, Failure>>,
    count: usize,
    refusals: Arc<Refusals>,
    mut add: impl FnMut(Ran),
) -> Result<(usize, usize), Failure> {
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
    let (to_results, results) = std::sync::mpsc::sync_channel(RESULTS_AHEAD);
    std::thread::scope(|scope| {
        let runner = scope.spawn(move || {
            let _default = tracing::dispatcher::set_default(&dispatch);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Failure::Runtime(format!("cannot start a runtime: {e}")))?;
            runtime.block_on(run_batches(
                handler, blocks, count, &capture, &refusals, to_results,
            ))
        });
        for ran in results {
            add(ran);
        }
        runner
            .join()
            .unwrap_or_else(|_| Err(Failure::Runtime("the test runner panicked".into())))
    })
}

/// Runs the events of `blocks` in batches of `count` and sends what each call did to
/// `to`. Blocks between calls only where the old runner took the next batch (no await
/// between calls: guest output forwarded late lands in the next call, as before).
async fn run_batches(
    mut handler: WasmHandler,
    blocks: Receiver<Result<Block, Failure>>,
    count: usize,
    capture: &Capture,
    refusals: &Refusals,
    to: SyncSender<Ran>,
) -> Result<(usize, usize), Failure> {
    let mut events: Vec<Event> = Vec::new();
    let mut lines: Vec<usize> = Vec::new();
    let mut start = 0;
    let mut read_all = false;
    let (mut total, mut calls) = (0, 0);
    loop {
        while !read_all && events.len() - start < count {
            match blocks.recv() {
                Ok(Ok(block)) => {
                    events.drain(..start);
                    lines.drain(..start);
                    start = 0;
                    events.extend(block.events);
                    lines.extend(block.lines);
                }
                Ok(Err(bad_line)) => return Err(bad_line),
                Err(_) => read_all = true,
            }
        }
        let n = (events.len() - start).min(count);
        if n == 0 {
            return Ok((total, calls));
        }
        let batch = &events[start..start + n];
        capture.take();
        refusals.take();
        let result = handler.handle(batch).await;
        calls += 1;
        total += n;
        let captured = capture.take();
        let refused = capture::refused(captured.refused_streams, refusals.take());
        let ran = Ran {
            ids: batch
                .iter()
                .map(|e| e.entry_id())
                .zip(lines[start..start + n].iter().copied())
                .collect(),
            decision: result.map_err(|error| failure_text(&error)),
            logs: captured.logs,
            refused,
        };
        start += n;
        if to.send(ran).is_err() {
            return Ok((total, calls));
        }
    }
}

fn outcome_text(outcome: &Outcome) -> Cow<'static, str> {
    match outcome {
        Outcome::Ack => Cow::Borrowed("ack"),
        Outcome::Retry(reason) => format!("retry: {reason}").into(),
        Outcome::DeadLetter(reason) => format!("dead-letter: {reason}").into(),
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
