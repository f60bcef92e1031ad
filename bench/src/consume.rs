//! Consuming scenarios C0–C7: publish N, then consume and acknowledge all of it.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use beehive::runtime::{Component, GuestSettings, WasmHandler};
use beehive::{BatchHandler, CancellationToken, Decision, EntryId, Event, Outcome};
use redis::Value;

use crate::report::{Report, Sample};
use crate::setup::{Bench, GROUP, RECEIPTS, STREAM, rate};

/// The components the consume scenarios run.
pub struct Guests {
    /// The trivial Rust guest (bench/guest).
    pub rust: Component,
    /// The trivial Python guest (bench/python-noop), when built.
    pub python: Option<Component>,
}

fn settings() -> GuestSettings {
    GuestSettings {
        group: GROUP.into(),
        publish: vec![RECEIPTS.into()],
        ..GuestSettings::default()
    }
}

/// The entries of an XREADGROUP reply (one stream), without building a map per entry.
fn entries(reply: Value) -> Vec<Value> {
    let streams = match reply {
        Value::Array(streams) => streams,
        Value::Map(pairs) => pairs.into_iter().map(|(_, v)| v).collect(),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for stream in streams {
        match stream {
            Value::Array(mut parts) if parts.len() == 2 => {
                if let Value::Array(entries) = parts.pop().expect("two parts") {
                    out.extend(entries);
                }
            }
            Value::Array(entries) => out.extend(entries),
            _ => {}
        }
    }
    out
}

/// The ID of an entry (`[id, [k, v, ...]]`) as it came.
fn entry_id(entry: &Value) -> Option<&[u8]> {
    match entry {
        Value::Array(parts) => match parts.first() {
            Some(Value::BulkString(id)) => Some(id),
            _ => None,
        },
        _ => None,
    }
}

fn xreadgroup(consumer: &str, count: usize) -> redis::Cmd {
    xreadgroup_on(STREAM, GROUP, consumer, count)
}

fn xreadgroup_on(stream: &str, group: &str, consumer: &str, count: usize) -> redis::Cmd {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(stream)
        .arg(">");
    cmd
}

/// C0: the bare redis-rs loop: XREADGROUP COUNT n, with the previous batch's XACK
/// pipelined in front of the next read, raw reply parsing.
async fn c0(bench: &Bench, batch: usize) -> anyhow::Result<usize> {
    c0_loop(bench.connection().await?, STREAM, GROUP, batch).await
}

/// The C0 loop on `stream`/`group` over any connection (one server or a cluster client):
/// returns how many entries it read and acknowledged before the stream was drained.
pub async fn c0_loop(
    mut con: impl redis::aio::ConnectionLike,
    stream: &str,
    group: &str,
    batch: usize,
) -> anyhow::Result<usize> {
    let mut acks: Vec<Vec<u8>> = Vec::new();
    let mut handled = 0;
    loop {
        let mut pipe = redis::pipe();
        if !acks.is_empty() {
            pipe.cmd("XACK").arg(stream).arg(group).arg(&acks).ignore();
        }
        pipe.add_command(xreadgroup_on(stream, group, "c0", batch));
        let (reply,): (Value,) = pipe.query_async(&mut con).await?;
        acks.clear();
        for entry in entries(reply) {
            if let Some(id) = entry_id(&entry) {
                acks.push(id.to_vec());
            }
        }
        if acks.is_empty() {
            return Ok(handled);
        }
        handled += acks.len();
    }
}

const LUA_READ_ACK: &str = r#"
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], 'c1', 'COUNT', ARGV[2], 'STREAMS', KEYS[1], '>')
if not reply then return 0 end
local entries = reply[1][2]
if #entries == 0 then return 0 end
local ids = {}
for i, entry in ipairs(entries) do ids[i] = entry[1] end
redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
return #ids
"#;

/// C1: the server-side ceiling: XREADGROUP + XACK inside one Lua script per batch.
async fn c1(bench: &Bench, batch: usize) -> anyhow::Result<usize> {
    let mut con = bench.connection().await?;
    let script = redis::Script::new(LUA_READ_ACK);
    let mut handled = 0;
    loop {
        let n: usize = script
            .key(STREAM)
            .arg(GROUP)
            .arg(batch)
            .invoke_async(&mut con)
            .await?;
        if n == 0 {
            return Ok(handled);
        }
        handled += n;
    }
}

/// A native handler that acknowledges everything.
struct NativeAck;

impl BatchHandler for NativeAck {
    async fn handle(&mut self, events: &[Event]) -> anyhow::Result<Decision> {
        Ok(Decision::ack_all(events.len()))
    }
}

/// C6's handler: a fresh component instance for every event, as Spin's Redis trigger does.
struct FreshPerEvent {
    component: Component,
    settings: GuestSettings,
}

impl BatchHandler for FreshPerEvent {
    async fn handle(&mut self, events: &[Event]) -> anyhow::Result<Decision> {
        let mut decision = Decision::default();
        for event in events {
            let mut handler = WasmHandler::new(self.component.clone(), self.settings.clone(), "c6");
            let one = handler.handle(std::slice::from_ref(event)).await?;
            decision.outcomes.extend(one.outcomes);
            decision.publishes.extend(one.publishes);
        }
        Ok(decision)
    }
}

/// Counts what a handler saw.
pub struct Counted<H> {
    /// The handler that decides.
    pub inner: H,
    /// Events handed to it so far.
    pub seen: Arc<std::sync::atomic::AtomicUsize>,
}

impl<H: BatchHandler> BatchHandler for Counted<H> {
    async fn handle(&mut self, events: &[Event]) -> anyhow::Result<Decision> {
        self.seen
            .fetch_add(events.len(), std::sync::atomic::Ordering::Relaxed);
        self.inner.handle(events).await
    }
}

/// C2–C6: the Beehive consumer (the path `beehive run` takes: lock, batches, atomic
/// commit) draining the stream with `handler`.
async fn library<H: BatchHandler>(
    bench: &Bench,
    batch: usize,
    handler: H,
) -> anyhow::Result<usize> {
    let mut consumer = bench.broker.consumer(GROUP)?;
    consumer.disable_loop();
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    consumer
        .consume_with(
            CancellationToken::new(),
            1,
            batch,
            Counted {
                inner: handler,
                seen: seen.clone(),
            },
        )
        .await?;
    Ok(seen.load(std::sync::atomic::Ordering::Relaxed))
}

/// C7: COUNT 1 with a per-message ack, as Watermill's redisstream subscriber reads: read
/// one, handle it (the same WASM handler), XACK it, each awaited.
async fn c7(bench: &Bench, component: &Component) -> anyhow::Result<usize> {
    let mut con = bench.connection().await?;
    let mut handler = WasmHandler::new(component.clone(), settings(), "c7");
    let mut handled = 0;
    loop {
        let reply: Value = xreadgroup("c7", 1).query_async(&mut con).await?;
        let Some(entry) = entries(reply).into_iter().next() else {
            return Ok(handled);
        };
        let event = to_event(entry).context("parsing an entry")?;
        let decision = handler.handle(std::slice::from_ref(&event)).await?;
        anyhow::ensure!(matches!(decision.outcomes[..], [Outcome::Ack]));
        redis::cmd("XACK")
            .arg(STREAM)
            .arg(GROUP)
            .arg(event.id())
            .exec_async(&mut con)
            .await?;
        handled += 1;
    }
}

fn to_event(entry: Value) -> Option<Event> {
    let Value::Array(mut parts) = entry else {
        return None;
    };
    let fields = parts.pop()?;
    let Value::BulkString(id) = parts.pop()? else {
        return None;
    };
    let id: EntryId = std::str::from_utf8(&id).ok()?.parse().ok()?;
    let Value::Array(fields) = fields else {
        return None;
    };
    let mut body = None;
    let mut meta = Vec::new();
    let mut it = fields.into_iter();
    while let (Some(Value::BulkString(k)), Some(Value::BulkString(v))) = (it.next(), it.next()) {
        if k == b"s" {
            body = Some(v);
        } else {
            meta.push((String::from_utf8(k).ok()?, String::from_utf8(v).ok()?));
        }
    }
    Some(Event::new(STREAM, id, body, meta))
}

/// One interleaved run of every consuming scenario.
pub async fn run(
    bench: &Bench,
    guests: &Guests,
    report: &mut Report,
    run: usize,
    n: usize,
) -> anyhow::Result<()> {
    for batch in bench.batches.clone() {
        measure(
            bench,
            report,
            run,
            "C0",
            "bare redis-rs loop (baseline)",
            batch,
            n,
            0,
            c0(bench, batch),
        )
        .await?;
        measure(
            bench,
            report,
            run,
            "C1",
            "Lua XREADGROUP+XACK in Redis (ceiling)",
            batch,
            n,
            0,
            c1(bench, batch),
        )
        .await?;
        measure(
            bench,
            report,
            run,
            "C2",
            "Beehive consumer, native Rust handler",
            batch,
            n,
            0,
            library(bench, batch, NativeAck),
        )
        .await?;
        let wasm = || WasmHandler::new(guests.rust.clone(), settings(), "bench");
        measure(
            bench,
            report,
            run,
            "C3",
            "Beehive consumer, trivial WASM handler",
            batch,
            n,
            0,
            library(bench, batch, wasm()),
        )
        .await?;
        measure(
            bench,
            report,
            run,
            "C4",
            "C3 publishing for 1% of events",
            batch,
            n,
            100,
            library(bench, batch, wasm()),
        )
        .await?;
        if let Some(python) = &guests.python {
            let handler = WasmHandler::new(python.clone(), settings(), "bench");
            measure(
                bench,
                report,
                run,
                "C5",
                "Beehive consumer, trivial Python handler",
                batch,
                n / 2,
                0,
                library(bench, batch, handler),
            )
            .await?;
        }
    }
    let fresh = FreshPerEvent {
        component: guests.rust.clone(),
        settings: settings(),
    };
    measure(
        bench,
        report,
        run,
        "C6",
        "fresh instance per event (Spin model)",
        100,
        n / 10,
        0,
        library(bench, 100, fresh),
    )
    .await?;
    measure(
        bench,
        report,
        run,
        "C7",
        "COUNT 1, ack per message (Watermill model)",
        1,
        n / 20,
        0,
        c7(bench, &guests.rust),
    )
    .await?;
    Ok(())
}

/// Fills the stream, times `scenario` and checks it handled everything.
#[allow(clippy::too_many_arguments)]
async fn measure(
    bench: &Bench,
    report: &mut Report,
    run: usize,
    scenario: &'static str,
    label: &'static str,
    batch: usize,
    n: usize,
    receipt_every: usize,
    consume: impl Future<Output = anyhow::Result<usize>>,
) -> anyhow::Result<()> {
    if !bench.selected(scenario) {
        return Ok(());
    }
    bench.fill(n, receipt_every).await?;
    let cpu = bench.redis_cpu().await?;
    let started = Instant::now();
    let handled = consume
        .await
        .with_context(|| format!("{scenario} at batch {batch}"))?;
    let elapsed = started.elapsed();
    let cpu = bench.redis_cpu().await? - cpu;
    anyhow::ensure!(handled == n, "{scenario}: handled {handled} of {n} events");
    bench.check_drained(scenario, n).await?;
    if receipt_every > 0 {
        let mut con = bench.connection().await?;
        let receipts: usize = redis::cmd("XLEN")
            .arg(RECEIPTS)
            .query_async(&mut con)
            .await?;
        anyhow::ensure!(
            receipts == n.div_ceil(receipt_every),
            "{scenario}: {receipts} receipts for {n} events"
        );
    }
    report.add(Sample {
        scenario,
        label,
        batch: Some(batch),
        rate: rate(n, elapsed),
        run,
        redis_us: Some(cpu * 1e6 / n as f64),
    });
    Ok(())
}
