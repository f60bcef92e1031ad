//! `beehive status`, `claim`, `gc` and `validate`.

use super::{CommandResult, ConfigArg, Failure};

/// Arguments of `beehive status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Refresh in place until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// How often --watch refreshes.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
}

/// Arguments of `beehive claim`.
#[derive(Debug, clap::Args)]
pub struct ClaimArgs {
    /// The consumer group.
    pub group: String,
    /// Move the pending entries of consumer-<FROM> ...
    pub from: u32,
    /// ... to consumer-<TO>.
    pub to: u32,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
}

/// Arguments of `beehive gc`.
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
}

/// Arguments of `beehive validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Do not check that every pool answers (for checking a file where Redis is not
    /// reachable, e.g. a CI lint step).
    #[arg(long)]
    pub offline: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
}

pub(super) async fn status(args: StatusArgs) -> CommandResult {
    let config = args.config.load()?;
    let broker = config.registry.create_engine().event_broker();
    let dead_letters = |group: &str| {
        config.consumers.get(group).map_or_else(
            || config.registry.default_dead_letter_stream(group),
            |c| c.dead_letter.clone(),
        )
    };
    loop {
        let stats = broker.statistics_with(&dead_letters).await?;
        let text = if args.json {
            let json = serde_json::json!({ "streams": stats });
            serde_json::to_string_pretty(&json).map_err(|e| Failure::Runtime(e.to_string()))?
        } else {
            status_table(&stats)
        };
        if !args.watch {
            println!("{text}");
            return Ok(());
        }
        // Clear the screen and home the cursor, then redraw.
        print!(
            "\x1b[2J\x1b[H{text}\n(refreshing every {}; Ctrl-C to stop)\n",
            humantime::format_duration(args.interval)
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(args.interval) => {}
        }
    }
}

fn status_table(stats: &[crate::broker::stats::StreamStatistics]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<10} {:>10}  {:<24} {:>8} {:>8} {:>10} {:>12}  consumers (pending)",
        "STREAM", "POOL", "LENGTH", "GROUP", "PENDING", "LAG", "OLDEST", "DEAD-LETTER"
    );
    for s in stats {
        if let Some(error) = &s.error {
            let _ = writeln!(
                out,
                "{:<24} {:<10} {:>10}  unreachable: {error}",
                s.name, s.pool, "?"
            );
            continue;
        }
        if s.groups.is_empty() {
            let _ = writeln!(out, "{:<24} {:<10} {:>10}", s.name, s.pool, s.length);
        }
        for (i, g) in s.groups.iter().enumerate() {
            let (name, pool, length) = if i == 0 {
                (s.name.as_str(), s.pool.as_str(), s.length.to_string())
            } else {
                ("", "", String::new())
            };
            let lag = g.lag.map_or("?".to_string(), |l| l.to_string());
            let oldest = g.oldest_pending_age.map_or("-".to_string(), |d| {
                humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string()
            });
            let dead = g
                .dead_letter
                .as_ref()
                .map_or("-".to_string(), |d| d.length.to_string());
            let group = if g.created {
                g.name.clone()
            } else {
                format!("{} (not started)", g.name)
            };
            let consumers: Vec<String> = g
                .consumers
                .iter()
                .map(|c| match &c.host {
                    Some(host) => format!("{} ({}) on {host}", c.name, c.pending),
                    None => format!("{} ({})", c.name, c.pending),
                })
                .collect();
            let _ = writeln!(
                out,
                "{name:<24} {pool:<10} {length:>10}  {group:<24} {:>8} {lag:>8} {oldest:>10} {dead:>12}  {}",
                g.pending,
                consumers.join(", ")
            );
            if !g.fleet.is_empty() {
                let hosts: Vec<String> = g
                    .fleet
                    .iter()
                    .map(|h| {
                        format!(
                            "{} ({} ago)",
                            h.host,
                            humantime::format_duration(std::time::Duration::from_millis(
                                h.heartbeat_age.as_millis() as u64 / 100 * 100
                            ))
                        )
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "{:<24} {:<10} {:>10}  fleet: {}",
                    "",
                    "",
                    "",
                    hosts.join(", ")
                );
            }
            if let Some(outbox) = g.outbox.as_ref().filter(|o| o.length > 0) {
                let oldest = outbox.oldest_age.map_or("-".to_string(), |d| {
                    humantime::format_duration(std::time::Duration::from_secs(d.as_secs()))
                        .to_string()
                });
                let _ = writeln!(
                    out,
                    "{:<24} {:<10} {:>10}  outbox: {} outputs waiting for the relay, oldest {oldest}",
                    "", "", "", outbox.length
                );
            }
            if g.deployed.is_some() || !g.hosts.is_empty() {
                let short = |d: &str| d[..12.min(d.len())].to_string();
                let hosts: Vec<String> = g
                    .hosts
                    .iter()
                    .map(|h| format!("{}={}", h.host, short(&h.digest)))
                    .collect();
                let _ = writeln!(
                    out,
                    "{:<24} {:<10} {:>10}  component: deployed {}; running: {}",
                    "",
                    "",
                    "",
                    g.deployed.as_deref().map_or("-".to_string(), short),
                    if hosts.is_empty() {
                        "-".to_string()
                    } else {
                        hosts.join(", ")
                    }
                );
            }
        }
    }
    out.trim_end().to_string()
}

pub(super) async fn claim(args: ClaimArgs) -> CommandResult {
    if args.from == 0 || args.to == 0 {
        return Err(Failure::Usage("consumer numbers start at 1".into()));
    }
    let config = args.config.load()?;
    let consumer = config
        .registry
        .create_engine()
        .event_broker()
        .consumer(&args.group)?;
    let moved = consumer.claim(args.from, args.to).await?;
    println!(
        "moved {moved} pending entries of {} from consumer-{} to consumer-{}",
        args.group, args.from, args.to
    );
    Ok(())
}

pub(super) async fn gc(args: GcArgs) -> CommandResult {
    let config = args.config.load()?;
    let report = config.registry.create_engine().gc().await?;
    for line in &report.streams {
        match &line.kept_because {
            Some(reason) if line.deleted == 0 => println!("{}: deleted 0 ({reason})", line.stream),
            _ => println!("{}: deleted {}", line.stream, line.deleted),
        }
    }
    println!("total deleted: {}", report.deleted());
    Ok(())
}

pub(super) async fn validate(args: ValidateArgs) -> CommandResult {
    let config = args.config.load()?;
    if !config.consumers.is_empty() {
        let wasm = crate::runtime::WasmEngine::new()
            .map_err(|e| Failure::Runtime(format!("cannot start the WebAssembly engine: {e:#}")))?;
        for (group, consumer) in &config.consumers {
            if consumer.component == crate::config::ComponentSource::Deployed {
                println!("consumers.{group}: deployed through Redis (checked by beehive deploy)");
            }
        }
        for (group, component) in crate::ops::supervisor::load_components(&config, &wasm)
            .map_err(|e| super::run::component_failure(&config, e))?
        {
            println!(
                "consumers.{group}: {} implements beehive:broker/consumer (sha256 {})",
                component.origin(),
                component.digest()
            );
        }
    }
    for domains in crate::config::group_domains(&config) {
        let list = |d: &mut dyn Iterator<Item = &crate::registry::Domain>| {
            let mut names: Vec<String> = d.map(|d| d.to_string()).collect();
            names.dedup();
            names.join(", ")
        };
        let mut outputs: Vec<String> = domains
            .outputs
            .iter()
            .map(|(stream, d)| format!("{stream} ({d})"))
            .collect();
        outputs.dedup();
        println!(
            "consumers.{}: reads {}; writes {}",
            domains.group,
            list(&mut domains.inputs.iter()),
            outputs.join(", ")
        );
        for (stream, domain) in domains.crossing() {
            eprintln!(
                "warning: consumers.{}: {stream} lives in {domain}, outside the group's domain: its outputs go through the outbox and land a little after the input is acknowledged",
                domains.group
            );
        }
    }
    if !args.offline {
        ping_pools(&config).await?;
    }
    let r = &config.registry;
    println!(
        "{}: ok ({} pools, {} streams, {} groups, {} consumers)",
        config.file.display(),
        r.pools().count(),
        r.streams().count(),
        r.groups().count(),
        config.consumers.len()
    );
    Ok(())
}

/// Every pool must answer `PING` (within 2 s to connect and 5 s to answer). A pool that
/// does not is a runtime failure (exit 1), not a configuration error (exit 2): the file is
/// valid, the server is down, unreachable or refuses the credentials; `--offline` skips it.
async fn ping_pools(config: &crate::config::Config) -> CommandResult {
    let engine = config.registry.create_engine();
    let mut failed = Vec::new();
    for pool in config.registry.pools() {
        let address = match &pool.cluster {
            Some(seeds) => format!("cluster {}", crate::error::List(seeds)),
            None => pool.address.to_string(),
        };
        match engine
            .ping(&pool.name, std::time::Duration::from_secs(5))
            .await
        {
            Ok(()) => println!("pool {}: {address} answers", pool.name),
            Err(crate::Error::Redis { source, .. }) => failed.push(format!(
                "pool {} ({address}) does not answer: {source}",
                pool.name
            )),
            Err(e) => failed.push(format!(
                "pool {} ({address}) does not answer: {e}",
                pool.name
            )),
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(Failure::Runtime(format!(
        "{}\n(the configuration itself is valid; start the server, fix its address, or pass --offline to check the file alone)",
        failed.join("\n")
    )))
}
