//! `beehive tail` and `beehive redrive`: inspecting streams and repairing dead letters.

use std::time::Duration;

use super::{CommandResult, ConfigArg, Failure};
use crate::Event;
use crate::broker::redrive::{self, RedriveFilter};
use crate::config::Config;
use crate::event::json;

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

/// Arguments of `beehive record`.
#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// The stream (registered, or a dead-letter stream).
    pub stream: String,
    /// Start at this entry ID (inclusive); default: the oldest entry.
    #[arg(long)]
    pub from: Option<String>,
    /// Stop after this many entries; default: every entry up to the newest.
    #[arg(long)]
    pub count: Option<usize>,
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

/// One line of `beehive tail`: ID, stream, the body in the lossless JSON form, metadata.
fn event_line(event: &Event) -> String {
    let mut line = format!("{} {}", event.id(), event.stream());
    if let Some(body) = event.body() {
        line.push_str(&format!(" body={}", json::body_to_json(body)));
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
                println!("{}", json::event_to_json(event));
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

/// `beehive record`: the stream's entries as they are now, oldest first, one JSON line each
/// in `tail --json`'s format (the input of `beehive test`); joins no group, follows nothing.
pub(super) async fn record(args: RecordArgs) -> CommandResult {
    use std::io::Write;
    let config = args.config.load()?;
    let pool = pool_of(&config, &args.stream, args.pool.as_deref())?;
    let broker = config.registry.create_engine().event_broker();
    let mut start = match args.from.as_deref() {
        None | Some("-" | "0") => "-".to_string(),
        Some(id) => id
            .parse::<crate::EntryId>()
            .map_err(|e| Failure::Usage(format!("--from: {e}")))?
            .to_string(),
    };
    let mut left = args.count.unwrap_or(usize::MAX);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    while left > 0 {
        let page = left.min(500);
        let events = broker.range(&pool, &args.stream, &start, page).await?;
        for event in &events {
            writeln!(out, "{}", json::event_to_json(event))
                .map_err(|e| Failure::Runtime(format!("cannot write to stdout: {e}")))?;
        }
        left -= events.len();
        match events.last() {
            Some(last) if events.len() == page => start = format!("({}", last.id()),
            _ => break,
        }
    }
    out.flush()
        .map_err(|e| Failure::Runtime(format!("cannot write to stdout: {e}")))?;
    Ok(())
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
