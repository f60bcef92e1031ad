//! `beehive tail` and `beehive redrive`: inspecting streams and repairing dead letters.

use std::time::Duration;

use super::{CommandResult, ConfigArg, Failure};
use crate::Event;
use crate::broker::redrive::{self, RedriveFilter};
use crate::config::Config;

/// Arguments of `beehive tail`.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// The stream (registered, or a dead-letter stream).
    pub stream: String,
    /// Start at this entry ID (inclusive; `0` for the whole stream); default: only new entries.
    #[arg(long)]
    pub from: Option<String>,
    /// Stop after this many entries; default: follow until Ctrl-C.
    #[arg(long)]
    pub count: Option<usize>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// The pool holding the stream, when the config cannot tell.
    #[arg(long)]
    pub pool: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
}

/// Arguments of `beehive redrive`.
#[derive(Debug, clap::Args)]
pub struct RedriveArgs {
    /// The dead-letter stream.
    pub dead_letter_stream: String,
    /// Republish to this stream instead of each entry's origin stream.
    #[arg(long)]
    pub to: Option<String>,
    /// Only matching entries: reason=TEXT (substring), origin-stream=NAME or group=NAME; repeatable.
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// Show what would be redriven; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The pool holding the dead-letter stream, when the config cannot tell.
    #[arg(long)]
    pub pool: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
}

/// The pool holding `stream`: given, registered, a configured group's dead-letter stream,
/// `<group>-dead-letter` of a registered group, or the only pool there is.
fn pool_of(config: &Config, stream: &str, given: Option<&str>) -> Result<String, Failure> {
    if let Some(pool) = given {
        return Ok(pool.to_string());
    }
    let registry = &config.registry;
    if let Some(def) = registry.stream(stream) {
        return Ok(def.pool.clone());
    }
    if let Some(consumer) = config.consumers.values().find(|c| c.dead_letter == stream)
        && let Some(group) = registry.group(&consumer.group)
    {
        return Ok(group.pool.clone());
    }
    if let Some(group) = crate::keys::dead_letter_group(stream).and_then(|g| registry.group(g)) {
        return Ok(group.pool.clone());
    }
    let pools: Vec<&str> = registry.pools().map(|p| p.name.as_str()).collect();
    match pools.as_slice() {
        [only] => Ok(only.to_string()),
        _ => Err(Failure::Usage(format!(
            "cannot tell which pool holds stream {stream}: give --pool (one of {})",
            pools.join(", ")
        ))),
    }
}

fn event_json(event: &Event) -> serde_json::Value {
    let body = match event.body_json() {
        None => serde_json::Value::Null,
        Some(Ok(json)) => json,
        Some(Err(_)) => {
            serde_json::json!({ "undecodable-messagepack": event.body().map(|b| b.len()) })
        }
    };
    let meta: serde_json::Map<String, serde_json::Value> = event
        .meta()
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::json!({ "id": event.id(), "stream": event.stream(), "body": body, "meta": meta })
}

fn event_line(event: &Event) -> String {
    let mut line = format!("{} {}", event.id(), event.stream());
    match event.body_json() {
        None => {}
        Some(Ok(json)) => line.push_str(&format!(" body={json}")),
        Some(Err(_)) => line.push_str(" body=<undecodable MessagePack>"),
    }
    for (k, v) in event.meta() {
        line.push_str(&format!(" {k}={v}"));
    }
    line
}

pub(super) async fn tail(args: TailArgs) -> CommandResult {
    if args.count == Some(0) {
        return Ok(());
    }
    let config = args.config.load()?;
    let pool = pool_of(&config, &args.stream, args.pool.as_deref())?;
    let broker = config.registry.create_engine().event_broker();
    let mut follower = broker
        .follow(&pool, &args.stream, args.from.as_deref())
        .await?;
    let mut printed = 0usize;
    loop {
        let want = args.count.map_or(100, |c| (c - printed).min(100));
        let events = tokio::select! {
            events = follower.next(want, Duration::from_secs(5)) => events?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        for event in &events {
            if args.json {
                println!("{}", event_json(event));
            } else {
                println!("{}", event_line(event));
            }
        }
        printed += events.len();
        if args.count.is_some_and(|c| printed >= c) {
            return Ok(());
        }
    }
}

pub(super) async fn redrive(args: RedriveArgs) -> CommandResult {
    let config = args.config.load()?;
    let mut filter = RedriveFilter::default();
    for expression in &args.filters {
        filter.add(expression)?;
    }
    let pool = pool_of(&config, &args.dead_letter_stream, args.pool.as_deref())?;
    if let Some(to) = &args.to
        && config.registry.stream(to).is_none()
    {
        return Err(Failure::Usage(format!("--to {to}: unregistered stream")));
    }
    let engine = config.registry.create_engine();
    let lines = redrive::redrive(
        &engine,
        &pool,
        &args.dead_letter_stream,
        args.to.as_deref(),
        &filter,
        args.dry_run,
    )
    .await?;
    for line in &lines {
        match &line.new_id {
            Some(id) => println!(
                "{} -> {} {id} (was: {})",
                line.dead_letter_id, line.to, line.reason
            ),
            None if args.dry_run => println!(
                "would redrive {} -> {} (was: {})",
                line.dead_letter_id, line.to, line.reason
            ),
            None => println!(
                "{} skipped: already redriven by someone else",
                line.dead_letter_id
            ),
        }
    }
    let verb = if args.dry_run {
        "would redrive"
    } else {
        "redrove"
    };
    println!(
        "{verb} {} entries from {}",
        lines.len(),
        args.dead_letter_stream
    );
    Ok(())
}
