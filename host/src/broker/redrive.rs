//! Redrive: republish dead-lettered entries to their origin stream (or another), deleting
//! each from the dead-letter stream in the same atomic step, so a crash mid-redrive neither
//! loses nor duplicates an entry.

use std::time::Duration;

use serde::Serialize;

use super::relay::Relay;

use crate::engine::Engine;
use crate::error::{Error, PoolContext, Result};
use crate::event::{BODY_FIELD, Event};
use crate::keys::dead_letter_fields::{ADDED, GROUP, ORIGIN_STREAM, REASON, REDRIVES};
use crate::keys::{self, OUTBOX_TARGET};
use crate::redis::commands;

/// Which dead-lettered entries to redrive.
#[derive(Debug, Clone, Default)]
pub struct RedriveFilter {
    /// Only entries whose reason contains this text.
    pub reason: Option<String>,
    /// Only entries from this origin stream.
    pub origin_stream: Option<String>,
    /// Only entries of this group.
    pub group: Option<String>,
}

impl RedriveFilter {
    /// Parses `key=value` (keys: `reason` (substring), `origin-stream`, `group`).
    pub fn add(&mut self, expression: &str) -> Result<()> {
        let (key, value) = expression.split_once('=').ok_or_else(|| {
            Error::InvalidArgument(format!("filter {expression:?}: expected key=value"))
        })?;
        let slot = match key {
            "reason" => &mut self.reason,
            "origin-stream" => &mut self.origin_stream,
            "group" => &mut self.group,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "filter key {other:?}: expected reason, origin-stream or group"
                )));
            }
        };
        *slot = Some(value.to_string());
        Ok(())
    }

    fn matches(&self, event: &Event) -> bool {
        self.reason
            .as_ref()
            .is_none_or(|r| event.tag(REASON).contains(r.as_str()))
            && self
                .origin_stream
                .as_ref()
                .is_none_or(|s| event.tag(ORIGIN_STREAM) == s)
            && self.group.as_ref().is_none_or(|g| event.tag(GROUP) == g)
    }
}

/// One redriven (or, in a dry run, redrivable) entry.
#[derive(Debug, Clone, Serialize)]
pub struct Redriven {
    /// Its ID in the dead-letter stream.
    pub dead_letter_id: String,
    /// Where it went (or would go).
    pub to: String,
    /// Its new ID there (`None` in a dry run, or when a concurrent redrive took it).
    pub new_id: Option<String>,
    /// Why it had been dead-lettered.
    pub reason: String,
}

/// Redrives the entries of `dead_letter_stream` (in `pool`) that match `filter` to their
/// origin stream, or to `to`. The original body and metadata are kept, the dead-letter
/// fields stripped and `beehive.redrives` incremented. With `dry_run` nothing changes.
pub async fn redrive(
    engine: &Engine,
    pool: &str,
    dead_letter_stream: &str,
    to: Option<&str>,
    filter: &RedriveFilter,
    dry_run: bool,
) -> Result<Vec<Redriven>> {
    let broker = engine.event_broker();
    let pool_handle = engine.pool(pool)?;
    let clustered = engine.registry().is_cluster(pool);
    let outbox = keys::redrive_outbox(dead_letter_stream, clustered);
    // The dead-letter stream's commit domain: where the redrive script runs.
    let here = crate::registry::Domain {
        pool: pool.to_string(),
        slot: clustered.then(|| keys::slot(dead_letter_stream)),
    };
    let relay = Relay::for_redrive(engine, pool, dead_letter_stream);
    let mut relayed = 0;
    let mut con = pool_handle.connection().await?;
    if !dry_run {
        // Redrives an earlier run left for the relay go first.
        finish_relay(&relay).await?;
    }
    let mut done = Vec::new();
    let mut start = "-".to_string();
    loop {
        let page = broker.range(pool, dead_letter_stream, &start, 500).await?;
        let Some(last) = page.last() else { break };
        start = format!("({}", last.id());
        for event in page.iter().filter(|e| filter.matches(e)) {
            let target = match to {
                Some(to) => to.to_string(),
                None => match event.tag(ORIGIN_STREAM) {
                    "" => {
                        tracing::warn!(id = %event.id(), "dead-lettered entry without beehive.origin-stream; give --to");
                        continue;
                    }
                    origin => origin.to_string(),
                },
            };
            let mut line = Redriven {
                dead_letter_id: event.id(),
                to: target.clone(),
                new_id: None,
                reason: event.tag(REASON).to_string(),
            };
            if !dry_run {
                let redrives: u64 = event.tag(REDRIVES).parse().unwrap_or(0) + 1;
                let redrives = redrives.to_string();
                let mut fields: Vec<(&[u8], &[u8])> = Vec::new();
                if let Some(body) = event.body() {
                    fields.push((BODY_FIELD.as_bytes(), body));
                }
                for (k, v) in event.meta() {
                    if !ADDED.contains(&k.as_str()) && k != REDRIVES {
                        fields.push((k.as_bytes(), v.as_bytes()));
                    }
                }
                fields.push((REDRIVES.as_bytes(), redrives.as_bytes()));
                // A target in another commit domain is reached through the outbox, in the
                // same atomic step; the relay then writes it there exactly once.
                let remote = engine.registry().crosses_domain(&target, &here);
                let destination = if remote {
                    fields.insert(0, (OUTBOX_TARGET.as_bytes(), target.as_bytes()));
                    relayed += 1;
                    outbox.as_str()
                } else {
                    target.as_str()
                };
                line.new_id = commands::redrive_entry(
                    &mut con,
                    dead_letter_stream,
                    destination,
                    &event.id(),
                    &fields,
                )
                .await
                .pool(pool)?;
            }
            done.push(line);
        }
    }
    if relayed > 0 {
        finish_relay(&relay).await?;
    }
    Ok(done)
}

/// Relays what waits in the redrive outbox; an error when it cannot finish in time (the
/// entries stay in the outbox, and the next redrive of this stream relays them first).
async fn finish_relay(relay: &Relay) -> Result<()> {
    if relay.drain(Duration::from_secs(30)).await? {
        Ok(())
    } else {
        let (waiting, _) = relay.backlog().await?;
        Err(Error::InvalidArgument(format!(
            "{waiting} redriven entries wait in the outbox for a stream of another pool that cannot be reached; run beehive redrive again to finish"
        )))
    }
}
