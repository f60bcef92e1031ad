//! Where a consumer's entries come from: its own pending entries (ID `0`, with their
//! delivery counts), new entries (`>`, blocking on a connection of its own), and entries
//! other consumers left idle past min-idle (`XAUTOCLAIM`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::redis::pool::Connection;

use super::run::{Run, to_redis};
use crate::event::{EntryId, Event};
use crate::redis::commands::{self, RawEntry};

/// The events of a read of new entries (`>`), first delivery, from the streams we read.
pub(super) fn new_events(
    reply: redis::Value,
    streams: &[Arc<str>],
) -> redis::RedisResult<Vec<Event>> {
    let mut events = Vec::new();
    for (name, entries) in commands::parse_read_reply(reply)? {
        let Some(stream) = streams.iter().find(|s| ***s == name) else {
            continue;
        };
        events.extend(entries.into_iter().map(|entry| entry.into_event(stream)));
    }
    Ok(events)
}

/// A connection for blocking reads, with its server-side client ID (to unblock it); no ID
/// on a cluster, whose connection spans nodes.
pub(super) struct Reader {
    pub(super) con: Connection,
    pub(super) id: Option<i64>,
}

pub(super) enum Fetched {
    /// Entries were queued (or the pending pass advanced).
    Progress,
    /// Nothing new to read.
    Empty,
    /// Cancelled or lock lost while waiting.
    Interrupted,
}

impl Run<'_> {
    /// Reads the next entries into the queue: a page of the pending pass when one is due,
    /// new entries otherwise.
    pub(super) async fn fetch(&mut self) -> redis::RedisResult<Fetched> {
        if !self.groups_ready {
            for stream in &self.streams {
                commands::create_group(&mut self.con, stream, &self.consumer.group.name).await?;
            }
            self.groups_ready = true;
        }
        let now = Instant::now();
        if self.pending.is_none()
            && (now >= self.pending_due || self.retry_at.is_some_and(|t| now >= t))
        {
            self.retry_at = None;
            if let Some(min_idle) = self.options().reclaim_idle {
                self.reclaim(min_idle).await?;
            }
            self.pending = Some(
                (0..self.streams.len())
                    .map(|i| (i, EntryId::ZERO))
                    .collect(),
            );
        }
        if self.pending.is_some() {
            return self.fetch_pending().await;
        }
        self.fetch_new().await
    }

    /// One page of our own pending entries, with their delivery counts.
    pub(super) async fn fetch_pending(&mut self) -> redis::RedisResult<Fetched> {
        let cursors = self.pending.clone().unwrap_or_default();
        if cursors.is_empty() {
            self.pending = None;
            self.pending_due = Instant::now() + self.options().pending_interval;
            return Ok(Fetched::Progress);
        }
        let args: Vec<(&str, String)> = cursors
            .iter()
            .map(|(i, id)| (&*self.streams[*i], id.to_string()))
            .collect();
        let read_at = Instant::now();
        let reply = commands::xreadgroup(self.group(), &self.name, self.count, None, &args)
            .query_async(&mut self.con)
            .await?;
        let mut next = Vec::new();
        let mut fetched = Vec::new();
        for (name, entries) in commands::parse_read_reply(reply)? {
            let Some(&(i, _)) = cursors.iter().find(|(i, _)| *self.streams[*i] == *name) else {
                continue;
            };
            if let Some(last) = entries.last() {
                next.push((i, last.id));
                fetched.push((i, entries));
            }
        }
        self.pending = Some(next);
        for (i, entries) in fetched {
            let stream = self.streams[i].clone();
            let (first, last) = (
                entries[0].id.to_string(),
                entries[entries.len() - 1].id.to_string(),
            );
            let counts: BTreeMap<EntryId, u32> = commands::pending_range(
                &mut self.con,
                &stream,
                &self.consumer.group.name,
                &first,
                &last,
                entries.len(),
                Some(&self.name),
            )
            .await?
            .into_iter()
            .map(|p| (p.id, p.deliveries))
            .collect();
            self.enqueue(
                &stream,
                entries,
                |id| counts.get(&id).copied().unwrap_or(1),
                read_at,
            );
        }
        self.sort_queue();
        Ok(Fetched::Progress)
    }

    /// New entries (`>`), blocking unless draining; cancellation and lock loss interrupt
    /// the wait at once.
    pub(super) async fn fetch_new(&mut self) -> redis::RedisResult<Fetched> {
        let args: Vec<(&str, String)> = self
            .streams
            .iter()
            .map(|s| (&**s, ">".to_string()))
            .collect();
        let block = if self.options().looping {
            let next_pass = self
                .retry_at
                .map_or(self.pending_due, |t| t.min(self.pending_due));
            let until_pending = next_pass.saturating_duration_since(Instant::now());
            Some(
                self.options()
                    .block
                    .min(until_pending)
                    .max(Duration::from_millis(1)),
            )
        } else {
            None
        };
        let cmd = commands::xreadgroup(self.group(), &self.name, self.count, block, &args);
        let mut read_at = Instant::now();
        let reply = match block {
            None => cmd.query_async(&mut self.con).await?,
            Some(block) => {
                if self.reader.is_none() {
                    self.reader = Some(self.open_reader(block).await?);
                }
                let reader = self.reader.as_mut().expect("reader was just opened");
                let id = reader.id;
                let read = cmd.query_async::<redis::Value>(&mut reader.con);
                tokio::select! {
                    // A blocking read delivers when it returns.
                    reply = read => {
                        read_at = Instant::now();
                        reply?
                    }
                    _ = self.cancel.cancelled() => return self.interrupt_read(id).await,
                    _ = self.lock.lost().cancelled() => return self.interrupt_read(id).await,
                }
            }
        };
        Ok(if self.absorb_new(reply, read_at)? {
            Fetched::Progress
        } else {
            Fetched::Empty
        })
    }

    /// Queues the entries of a read of new entries; true when there were any.
    pub(super) fn absorb_new(
        &mut self,
        reply: redis::Value,
        read_at: Instant,
    ) -> redis::RedisResult<bool> {
        let events = new_events(reply, &self.streams)?;
        if events.is_empty() {
            return Ok(false);
        }
        if self.queue.is_empty() {
            self.queued_at = read_at;
        }
        self.queue.extend(events);
        self.sort_queue();
        Ok(true)
    }

    pub(super) async fn open_reader(&self, block: Duration) -> redis::RedisResult<Reader> {
        let pool = self
            .consumer
            .engine
            .pool(&self.consumer.group.pool)
            .map_err(to_redis)?;
        // Above the longest block, so a blocking read is never cut short by the client.
        let timeout = self.options().block.max(block) + Duration::from_secs(5);
        let mut con = pool.dedicated(timeout).await.map_err(to_redis)?;
        let id = if con.is_cluster() {
            None
        } else {
            Some(commands::client_id(&mut con).await?)
        };
        Ok(Reader { con, id })
    }

    /// Unblocks our blocked read server-side, so nothing is delivered to a reader that no
    /// longer listens, and drops the reader connection. On a cluster the read is only
    /// dropped: what the server still delivers to it stays pending under this consumer's
    /// name, and its next pending pass (ID `0`) reads it again.
    pub(super) async fn interrupt_read(&mut self, id: Option<i64>) -> redis::RedisResult<Fetched> {
        self.reader = None;
        if let Some(id) = id {
            let _ = commands::client_unblock(&mut self.con, id).await;
        }
        Ok(Fetched::Interrupted)
    }

    pub(super) fn enqueue(
        &mut self,
        stream: &Arc<str>,
        entries: Vec<RawEntry>,
        deliveries: impl Fn(EntryId) -> u32,
        read_at: Instant,
    ) {
        if self.queue.is_empty() {
            self.queued_at = read_at;
        }
        for entry in entries {
            let mut event = entry.into_event(stream);
            event.deliveries = deliveries(event.id);
            self.queue.push_back(event);
        }
    }

    /// Orders queued entries by ID across streams (a stable sort keeps each stream's order).
    pub(super) fn sort_queue(&mut self) {
        if self.streams.len() > 1 {
            self.queue.make_contiguous().sort_by_key(|e| e.id);
        }
    }

    /// XAUTOCLAIM of every entry idle longer than `min_idle` into this consumer.
    pub(super) async fn reclaim(&mut self, min_idle: Duration) -> redis::RedisResult<()> {
        for stream in self.streams.clone() {
            let mut cursor = "0-0".to_string();
            loop {
                let claimed = commands::autoclaim(
                    &mut self.con,
                    &stream,
                    &self.consumer.group.name,
                    &self.name,
                    min_idle,
                    &cursor,
                    1000,
                )
                .await?;
                if !claimed.entries.is_empty() {
                    tracing::info!(group = %self.group(), consumer = %self.name, stream = %stream, entries = claimed.entries.len(), "reclaimed idle entries");
                }
                // Redis dropped these from the pending list: queued as entries without
                // data, they are dead-lettered (with their ID) like any deleted entry.
                if !claimed.deleted.is_empty() {
                    tracing::warn!(group = %self.group(), stream = %stream, entries = claimed.deleted.len(), "idle pending entries were deleted from the stream; dead-lettering them");
                    for id in claimed.deleted {
                        self.queue
                            .push_back(Event::new(&stream, id, None, Vec::new()));
                    }
                }
                if claimed.cursor == "0-0" {
                    break;
                }
                cursor = claimed.cursor;
            }
        }
        Ok(())
    }
}
