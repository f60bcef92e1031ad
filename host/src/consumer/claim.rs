//! Moving pending entries between consumers of a group (`beehive claim`).

use std::sync::Arc;

use crate::redis::pool::Connection;

use super::Consumer;
use super::decide::DELETED;
use crate::error::{PoolContext, Result};
use crate::event::{EntryId, Event};
use crate::keys::consumer_name;
use crate::redis::commands;
use crate::redis::commit::CommitBatch;

impl Consumer {
    /// Moves every pending entry of `consumer-<from>` to `consumer-<to>`, on all the group's
    /// streams, and returns how many moved. Claiming does not count as a delivery.
    pub async fn claim(&self, from: u32, to: u32) -> Result<u64> {
        let pool = self.engine.pool(&self.group.pool)?;
        let mut con = pool.connection().await?;
        let (from, to) = (consumer_name(from), consumer_name(to));
        let mut moved = 0;
        for stream in &self.group.streams {
            loop {
                let page = match commands::pending_range(
                    &mut con,
                    stream,
                    &self.group.name,
                    "-",
                    "+",
                    1000,
                    Some(&from),
                )
                .await
                {
                    Ok(page) => page,
                    Err(e) if commands::is_no_group(&e) => break,
                    Err(e) => return Err(e).pool(&pool.name),
                };
                if page.is_empty() {
                    break;
                }
                let ids: Vec<EntryId> = page.iter().map(|p| p.id).collect();
                let claimed: Vec<String> =
                    commands::xclaim_justid(stream, &self.group.name, &to, &ids)
                        .query_async(&mut con)
                        .await
                        .pool(&pool.name)?;
                moved += claimed.len() as u64;
                // Entries deleted while pending cannot be claimed: Redis drops them from
                // the pending list. Those that are gone from the stream are dead-lettered
                // with their ID (the others were acknowledged meanwhile).
                let unclaimed: Vec<EntryId> = ids
                    .iter()
                    .filter(|id| !claimed.iter().any(|c| c.parse() == Ok(**id)))
                    .copied()
                    .collect();
                let gone = commands::missing_entries(&mut con, stream, &unclaimed)
                    .await
                    .pool(&pool.name)?;
                self.dead_letter_deleted(&mut con, stream, &gone)
                    .await
                    .pool(&pool.name)?;
                if claimed.is_empty() && gone.is_empty() {
                    // Nothing moved: stop rather than spin.
                    break;
                }
            }
        }
        Ok(moved)
    }

    /// Dead-letters entries of `stream` found deleted while pending (not pending any more:
    /// Redis dropped them), with their ID and the reason `deleted`.
    async fn dead_letter_deleted(
        &self,
        con: &mut Connection,
        stream: &str,
        ids: &[EntryId],
    ) -> redis::RedisResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let dead_letter = &self.options.dead_letter_stream;
        // Committed in the stream's own commit domain (its slice of the group).
        let registry = self.engine.registry();
        let slice = self
            .group
            .slice_of(stream)
            .unwrap_or_else(|| self.group.slices().remove(0));
        let outbox = slice.outbox(&self.group.name);
        let remote =
            registry.crosses_domain(dead_letter, &registry.slice_domain(&self.group, &slice));
        let stream: Arc<str> = Arc::from(stream);
        let mut commit = CommitBatch::default();
        for id in ids {
            let event = Event::new(&stream, *id, None, Vec::new());
            commit.dead_letter(
                dead_letter,
                &self.group.name,
                &event,
                DELETED,
                remote.then_some(outbox.as_str()),
            );
        }
        tracing::warn!(group = %self.group.name, stream = %stream, entries = ids.len(), "pending entries were deleted from the stream; dead-lettering them");
        commit.run(con.clone(), None, None).await?;
        if let Some(metrics) = &self.options.metrics {
            metrics.deleted_while_pending(&self.group.name, ids.len() as u64);
        }
        Ok(())
    }
}
