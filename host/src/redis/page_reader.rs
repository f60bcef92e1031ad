//! A connection of the consumer's own for reading new entries ahead, whose RESP2 replies
//! are parsed by hand into [`redis::Value`]s.
//!
//! redis-rs's `combine`-based parser is about a third of a consumer's CPU at large
//! batches; these replies are plain arrays of bulk strings, which a direct parser turns
//! into the same `Value` tree for a fraction of that. Only plain TCP with RESP2 is served
//! here: for TLS, unix sockets or RESP3, [`PageReader::connect`] returns `None` and the
//! consumer reads through redis-rs as before.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use redis::{Cmd, ConnectionAddr, ConnectionInfo, ProtocolVersion, RedisError, RedisResult, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::pool::CONNECT_TIMEOUT;
use super::resp::{parse, protocol};

/// Where the driver hands one command's reply.
type Reply = oneshot::Sender<RedisResult<Value>>;

/// A pipelined connection: commands go out in the order [`send`](Self::send) is called and
/// each gets its own reply. Dropping it closes the connection once the replies of the
/// commands already sent are in.
pub(crate) struct PageReader {
    requests: mpsc::UnboundedSender<(Vec<u8>, Reply)>,
    response_timeout: Duration,
}

impl PageReader {
    /// Connects, authenticates and selects the database of `info`; `None` when `info` is
    /// not plain TCP with RESP2. The connection is named `name` (`CLIENT SETNAME`), so `CLIENT LIST` tells it apart.
    pub(crate) async fn connect(
        info: &ConnectionInfo,
        name: &str,
        response_timeout: Duration,
    ) -> RedisResult<Option<Self>> {
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Ok(None);
        };
        let settings = info.redis_settings();
        if settings.protocol() != ProtocolVersion::RESP2 {
            return Ok(None);
        }
        let stream =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), *port)))
                .await
                .map_err(|_| timed_out("connecting"))??;
        stream.set_nodelay(true)?;
        let (requests, queue) = mpsc::unbounded_channel();
        tokio::spawn(drive(stream, queue));
        let reader = Self {
            requests,
            response_timeout,
        };
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(username) = settings.username() {
                auth.arg(username);
            }
            auth.arg(password);
            reader.send(&auth).await?;
        }
        if settings.db() != 0 {
            reader.send(redis::cmd("SELECT").arg(settings.db())).await?;
        }
        reader
            .send(redis::cmd("CLIENT").arg("SETNAME").arg(name))
            .await?;
        Ok(Some(reader))
    }

    /// Queues `cmd` now, so commands reach Redis in call order; the future resolves to its
    /// reply (a server error as `Err`), or fails after the response timeout.
    pub(crate) fn send(
        &self,
        cmd: &Cmd,
    ) -> impl Future<Output = RedisResult<Value>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self
            .requests
            .send((cmd.get_packed_command(), reply))
            .is_ok();
        let timeout = self.response_timeout;
        async move {
            if !queued {
                return Err(closed());
            }
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(_)) => Err(closed()),
                Err(_) => Err(timed_out("waiting for a reply")),
            }
        }
    }
}

/// Writes queued commands and hands out replies in order until the connection fails or
/// every handle is dropped and every reply is in.
async fn drive(stream: TcpStream, mut queue: mpsc::UnboundedReceiver<(Vec<u8>, Reply)>) {
    let (mut rd, mut wr) = stream.into_split();
    let mut waiting: VecDeque<Reply> = VecDeque::new();
    let (mut buf, mut start) = (Vec::with_capacity(64 * 1024), 0);
    let mut out = Vec::new();
    let mut open = true;
    let failure = loop {
        if !open && waiting.is_empty() {
            return;
        }
        tokio::select! {
            request = queue.recv(), if open => {
                let Some((bytes, reply)) = request else {
                    open = false;
                    continue;
                };
                out.extend_from_slice(&bytes);
                waiting.push_back(reply);
                while let Ok((bytes, reply)) = queue.try_recv() {
                    out.extend_from_slice(&bytes);
                    waiting.push_back(reply);
                }
                if let Err(e) = wr.write_all(&out).await {
                    break RedisError::from(e);
                }
                out.clear();
            }
            read = rd.read_buf(&mut buf), if !waiting.is_empty() => {
                match read {
                    Ok(0) => break closed(),
                    Ok(_) => {}
                    Err(e) => break RedisError::from(e),
                }
                let mut bad = None;
                while start < buf.len() {
                    match parse(&buf[start..]) {
                        Ok(None) => break,
                        Ok(Some((reply, used))) => {
                            start += used;
                            match waiting.pop_front() {
                                // The caller may have given up (timeout): nothing to do.
                                Some(tx) => drop(tx.send(reply)),
                                None => {
                                    bad = Some(protocol("a reply nobody asked for"));
                                    break;
                                }
                            }
                        }
                        Err(e) => {
                            bad = Some(e);
                            break;
                        }
                    }
                }
                if let Some(e) = bad {
                    break e;
                }
                if start == buf.len() {
                    buf.clear();
                    start = 0;
                } else if start > buf.capacity() / 2 {
                    buf.drain(..start);
                    start = 0;
                }
            }
        }
    };
    // The connection is unusable: every caller still waiting learns why.
    for tx in waiting {
        let _ = tx.send(Err(copy_error(&failure)));
    }
}

fn closed() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "the read-ahead connection closed",
    ))
}

fn timed_out(what: &str) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("timed out {what}"),
    ))
}

/// The same failure for every waiting caller (a `RedisError` is not `Clone`).
fn copy_error(e: &RedisError) -> RedisError {
    if e.is_io_error() {
        RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            e.to_string(),
        ))
    } else {
        protocol(e.to_string())
    }
}
