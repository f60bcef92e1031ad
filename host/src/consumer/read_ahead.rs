//! Reading new entries ahead of need, so Redis reads the next pages while batches are
//! handled and committed: on a connection of the consumer's own whose replies skip
//! redis-rs's generic parser ([`PageReader`]), or on the shared connection.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use redis::ConnectionAddr;

use super::run::Run;
use super::source::new_events;
use crate::keys;
use crate::redis::commands;
use crate::redis::page_reader::PageReader;
use crate::redis::pool::RESPONSE_TIMEOUT;

/// The most entries one read ahead asks for (per stream).
const READ_PAGE: usize = 200;

/// Where a consumer's reads ahead go: a connection of its own whose replies are parsed
/// without redis-rs's generic parser, or the shared connection.
pub(super) enum Pages {
    /// Not tried yet (or to be reopened after a connection error).
    Unopened,
    Own(PageReader),
    /// The address is not plain TCP with RESP2: always the shared connection.
    Unsupported,
    /// Opening failed: the shared connection until the next connection error.
    Failed,
    /// The cluster slot read ahead on moved (or is moving) to another node: the shared
    /// connection, which follows it, until then; then reopened on the slot's master.
    Redirected(Instant),
}

/// How long a consumer reads ahead on the shared cluster connection after its own reader's
/// node redirected it (a slot migration takes about this long per key to settle).
pub(super) const REOPEN_AFTER_REDIRECT: std::time::Duration = std::time::Duration::from_secs(1);

impl Run<'_> {
    /// Sends non-blocking reads of new entries ahead of need, so Redis reads the next
    /// pages while batches are handled and committed: up to two reads in flight, as long as
    /// the queue and the reads in flight hold less than two batches. Only when the next
    /// fetch would read new entries anyway (no pending pass running or due), and only one
    /// read ahead when queued entries could otherwise wait close to min-idle.
    pub(super) async fn read_ahead(&mut self) {
        let now = Instant::now();
        let pending_pass_due = self.pending.is_some()
            || now >= self.pending_due
            || self.retry_at.is_some_and(|t| now >= t);
        if pending_pass_due || !self.groups_ready || self.cancel.is_cancelled() {
            return;
        }
        let depth = match self.options().reclaim_idle {
            Some(min_idle) if self.options().handler_deadline * 3 >= min_idle => 1,
            _ => 2,
        };
        // Large batches are read in pages of READ_PAGE entries: Redis writes one page while
        // the client parses the one before, instead of handing over one large reply.
        let page = self.count.min(READ_PAGE);
        let reopen = match self.pages {
            Pages::Unopened => true,
            Pages::Redirected(at) => now >= at,
            _ => false,
        };
        if reopen {
            self.pages = self.open_pages().await;
        }
        while self.queue.len() + self.reading.len() * page < depth * self.count {
            let args: Vec<(&str, String)> = self
                .streams
                .iter()
                .map(|s| (&**s, ">".to_string()))
                .collect();
            let cmd = commands::xreadgroup(self.group(), &self.name, page, None, &args);
            let mut read: Pin<Box<dyn Future<Output = redis::RedisResult<redis::Value>> + Send>> =
                match &self.pages {
                    Pages::Own(pages) => Box::pin(pages.send(&cmd)),
                    _ => {
                        let mut con = self.con.clone();
                        Box::pin(async move { cmd.query_async::<redis::Value>(&mut con).await })
                    }
                };
            // The first poll hands the command to the connection here, so reads reach Redis
            // in order; turning the reply into events happens on a task of its own, which
            // the runtime may run on another worker while this one handles a batch.
            let sent = futures::poll!(read.as_mut());
            let streams = self.streams.clone();
            let convert = tokio::spawn(async move {
                let reply = match sent {
                    std::task::Poll::Ready(reply) => reply,
                    std::task::Poll::Pending => read.await,
                };
                new_events(reply?, &streams)
            });
            self.reading.push_back((Instant::now(), convert));
        }
    }

    /// Opens the connection for reads ahead, or says why the shared one is used.
    pub(super) async fn open_pages(&self) -> Pages {
        let pool = match self.consumer.engine.pool(&self.consumer.group.pool) {
            Ok(pool) => pool,
            Err(_) => return Pages::Failed,
        };
        let mut info = pool.connection_info().clone();
        if pool.is_cluster() {
            // The reader speaks to one server: the master of the slice's slot, found through
            // the cluster connection (a redirect later sends reads back to that connection
            // until the reader is reopened on the slot's new master).
            if !matches!(info.addr(), ConnectionAddr::Tcp(..)) {
                return Pages::Unsupported;
            }
            let mut con = self.con.clone();
            match con.master_of(&self.streams[0]).await {
                Ok(Some((host, port))) => info = info.set_addr(ConnectionAddr::Tcp(host, port)),
                Ok(None) => return Pages::Unsupported,
                Err(e) => {
                    tracing::debug!(group = %self.group(), error = %e, "cannot find the slot's master; reading ahead on the shared connection");
                    return Pages::Redirected(Instant::now() + REOPEN_AFTER_REDIRECT);
                }
            }
        }
        let name = keys::read_ahead_client_name(self.group(), &self.name);
        match PageReader::connect(&info, &name, RESPONSE_TIMEOUT).await {
            Ok(Some(pages)) => Pages::Own(pages),
            Ok(None) => Pages::Unsupported,
            Err(e) => {
                tracing::warn!(group = %self.group(), error = %e, "cannot open the read-ahead connection; reading ahead on the shared one");
                Pages::Failed
            }
        }
    }

    /// Waits for the oldest read ahead and queues what it delivered.
    pub(super) async fn absorb_read_ahead(&mut self) {
        let Some((sent_at, read)) = self.reading.pop_front() else {
            return;
        };
        let events = read.await.unwrap_or_else(|e| {
            Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "reading ahead failed",
                e.to_string(),
            )))
        });
        match events {
            Ok(events) => {
                // Entries are delivered when Redis runs the read: counting their wait from
                // when it was sent errs on the safe side.
                if self.queue.is_empty() {
                    self.queued_at = sent_at;
                }
                self.queue.extend(events);
                self.sort_queue();
            }
            Err(e) => {
                // Whatever the read delivered sits in our pending list: the next pending
                // pass picks it up.
                self.on_redis_error(&e);
                self.pending_due = Instant::now();
            }
        }
    }
}
