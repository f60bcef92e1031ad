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
use tokio::time::Instant;

use super::pool::CONNECT_TIMEOUT;
use super::resp::{parse, parse_raw, protocol, reply_len};

/// Where the driver hands one command's reply: parsed into a [`Value`], or as the bytes
/// Redis sent ([`PageReader::send_raw`]).
enum Reply {
    Value(oneshot::Sender<RedisResult<Value>>),
    Raw(oneshot::Sender<RedisResult<Vec<u8>>>),
}

impl Reply {
    /// Tells the caller the connection failed (it may have given up already).
    fn fail(self, e: RedisError) {
        match self {
            Reply::Value(tx) => drop(tx.send(Err(e))),
            Reply::Raw(tx) => drop(tx.send(Err(e))),
        }
    }
}

/// One request for the driver: the bytes of one or more commands, how many replies come
/// before the one that matters (parsed and dropped), where that one goes, and when it was
/// queued (its replies are due a response timeout later).
type Request = (Vec<u8>, usize, Reply, Instant);

/// The read buffer's capacity to begin with, and what it shrinks back to.
const READ_BUFFER: usize = 64 * 1024;

/// A read buffer that grew past this for a large reply is given back once it is empty, so a
/// connection does not keep a one-off reply's memory (up to [`super::resp::MAX_REPLY_BYTES`]).
const KEEP_READ_BUFFER: usize = 16 * 1024 * 1024;

/// A pipelined connection: commands go out in the order [`send`](Self::send) is called and
/// each gets its own reply. Dropping it closes the connection once the replies of the
/// commands already sent are in.
pub(crate) struct PageReader {
    requests: mpsc::UnboundedSender<Request>,
    response_timeout: Duration,
}

impl PageReader {
    /// Connects, authenticates and selects the database of `info`; `None` when `info` is
    /// not plain TCP with RESP2. The connection is named `name` (`CLIENT SETNAME`), so
    /// `CLIENT LIST` tells it apart.
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
        let reader = Self::start(stream, response_timeout);
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

    /// Starts the driver task on a connected `stream` (nothing sent yet).
    fn start(stream: TcpStream, response_timeout: Duration) -> Self {
        let (requests, queue) = mpsc::unbounded_channel();
        tokio::spawn(drive(stream, queue, response_timeout));
        Self {
            requests,
            response_timeout,
        }
    }

    /// Queues `cmd` now, so commands reach Redis in call order; the future resolves to its
    /// reply (a server error as `Err`), or fails after the response timeout (an I/O
    /// `TimedOut` error, as when the driver gives up on a silent connection). A reply past
    /// [`super::resp::MAX_REPLY_BYTES`] fails with an error
    /// [`is_reply_too_large`](super::resp::is_reply_too_large) recognises, and the connection
    /// closes: every later call fails as closed (an I/O error).
    pub(crate) fn send(
        &self,
        cmd: &Cmd,
    ) -> impl Future<Output = RedisResult<Value>> + Send + 'static {
        self.send_packed(cmd.get_packed_command(), 0)
    }

    /// Queues `commands`, the packed bytes of `skip + 1` commands (a transaction, say), and
    /// resolves to the last one's reply; the replies before it are read and dropped. As
    /// [`send`](Self::send) otherwise.
    pub(crate) fn send_packed(
        &self,
        commands: Vec<u8>,
        skip: usize,
    ) -> impl Future<Output = RedisResult<Value>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.queue(commands, skip, Reply::Value(reply));
        wait(queued, self.response_timeout, answer)
    }

    /// As [`send`](Self::send), but resolves to the reply's bytes as Redis sent them (a
    /// whole, well-formed RESP2 value, to walk with a [`super::resp::Cursor`]): nothing is
    /// built per item of a large reply. A server error reply is still `Err`.
    pub(crate) fn send_raw(
        &self,
        cmd: &Cmd,
    ) -> impl Future<Output = RedisResult<Vec<u8>>> + Send + 'static {
        self.send_packed_raw(cmd.get_packed_command(), 0)
    }

    /// As [`send_packed`](Self::send_packed), with the last reply's bytes as
    /// [`send_raw`](Self::send_raw) gives them.
    pub(crate) fn send_packed_raw(
        &self,
        commands: Vec<u8>,
        skip: usize,
    ) -> impl Future<Output = RedisResult<Vec<u8>>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.queue(commands, skip, Reply::Raw(reply));
        wait(queued, self.response_timeout, answer)
    }

    /// Hands a request to the driver; false when the connection is closed.
    fn queue(&self, commands: Vec<u8>, skip: usize, reply: Reply) -> bool {
        self.requests
            .send((commands, skip, reply, Instant::now()))
            .is_ok()
    }
}

/// Waits for the reply of a request (`queued`: whether the driver took it), at most
/// `timeout`.
async fn wait<T>(
    queued: bool,
    timeout: Duration,
    answer: oneshot::Receiver<RedisResult<T>>,
) -> RedisResult<T> {
    if !queued {
        return Err(closed());
    }
    match tokio::time::timeout(timeout, answer).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(_)) => Err(closed()),
        Err(_) => Err(timed_out("waiting for a reply")),
    }
}

/// Writes queued commands and hands out replies in order until the connection fails or
/// every handle is dropped and every reply is in.
///
/// The connection fails, and every caller still waiting gets the error, when: a reply is
/// not all in a `response_timeout` after its command was queued (or a write takes that
/// long), so a connection gone silent does not keep this task and its socket forever; a
/// reply is past [`super::resp::MAX_REPLY_BYTES`]; Redis sends bytes that are not RESP2
/// or a reply nobody asked for; or the socket fails or closes.
async fn drive(
    stream: TcpStream,
    mut queue: mpsc::UnboundedReceiver<Request>,
    response_timeout: Duration,
) {
    let (mut rd, mut wr) = stream.into_split();
    // The callers waiting, oldest first, each with when its reply is due (`None`: a reply
    // nobody waits for, read and dropped).
    let mut waiting: VecDeque<(Option<Reply>, Option<Instant>)> = VecDeque::new();
    let (mut buf, mut start) = (Vec::with_capacity(READ_BUFFER), 0);
    let mut out = Vec::new();
    let mut open = true;
    // Armed for the oldest waiting caller's reply; a timeout too large for a deadline never
    // fires.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let failure = loop {
        if !open && waiting.is_empty() {
            return;
        }
        let due = waiting.front().and_then(|(_, due)| *due);
        if let Some(due) = due
            && timer.deadline() != due
        {
            timer.as_mut().reset(due);
        }
        tokio::select! {
            request = queue.recv(), if open => {
                let Some(request) = request else {
                    open = false;
                    continue;
                };
                let mut next = Some(request);
                while let Some((bytes, skip, reply, queued)) = next {
                    out.extend_from_slice(&bytes);
                    let due = queued.checked_add(response_timeout);
                    waiting.extend((0..skip).map(|_| (None, due)));
                    waiting.push_back((Some(reply), due));
                    next = queue.try_recv().ok();
                }
                // A peer that stops reading must not hold the writes (and this task) forever.
                let write = wr.write_all(&out);
                let written = match waiting.front().and_then(|(_, due)| *due) {
                    Some(due) => tokio::time::timeout_at(due, write).await,
                    None => Ok(write.await),
                };
                match written {
                    Ok(Ok(())) => out.clear(),
                    Ok(Err(e)) => break RedisError::from(e),
                    Err(_) => break timed_out("writing a command"),
                }
            }
            () = &mut timer, if due.is_some() => {
                break timed_out("waiting for a reply; closing the read-ahead connection");
            }
            read = rd.read_buf(&mut buf), if !waiting.is_empty() => {
                match read {
                    Ok(0) => break closed(),
                    Ok(_) => {}
                    Err(e) => break RedisError::from(e),
                }
                let mut bad = None;
                while start < buf.len() {
                    match hand_over(&mut waiting, &buf[start..]) {
                        Ok(None) => break,
                        Ok(Some(used)) => start += used,
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
                    if buf.capacity() > KEEP_READ_BUFFER {
                        buf = Vec::with_capacity(READ_BUFFER);
                    }
                } else if start > buf.capacity() / 2 {
                    buf.drain(..start);
                    start = 0;
                }
            }
        }
    };
    // The connection is unusable: close it, then every caller still waiting learns why.
    drop((rd, wr));
    for (tx, _) in waiting {
        if let Some(tx) = tx {
            tx.fail(failure.clone());
        }
    }
}

/// Reads the reply at the front of `buf` for the oldest entry of `waiting` and, once it is
/// all in, hands it over and removes that entry: how many bytes it took, `None` while it is
/// not all in. A reply nobody waits for (one before the reply a caller wants) is read past
/// without building anything; sending to a caller that gave up (timeout) does nothing.
fn hand_over(
    waiting: &mut VecDeque<(Option<Reply>, Option<Instant>)>,
    buf: &[u8],
) -> RedisResult<Option<usize>> {
    let used = match waiting.front() {
        None => return Err(protocol("a reply nobody asked for")),
        Some((None, _)) => reply_len(buf)?.inspect(|_| {
            waiting.pop_front();
        }),
        Some((Some(Reply::Raw(_)), _)) => parse_raw(buf)?.map(|(reply, used)| {
            if let Some((Some(Reply::Raw(tx)), _)) = waiting.pop_front() {
                drop(tx.send(reply));
            }
            used
        }),
        Some((Some(Reply::Value(_)), _)) => parse(buf)?.map(|(reply, used)| {
            if let Some((Some(Reply::Value(tx)), _)) = waiting.pop_front() {
                drop(tx.send(reply));
            }
            used
        }),
    };
    Ok(used)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::resp::{MAX_REPLY_BYTES, is_reply_too_large};
    use tokio::net::TcpListener;

    /// The response timeout of the readers under test.
    const TIMEOUT: Duration = Duration::from_millis(300);

    /// How long a test waits for what should happen at once (generous: CI machines are
    /// busy).
    const PATIENCE: Duration = Duration::from_secs(5);

    /// A fake Redis on 127.0.0.1 that accepts one connection, reads the first command, then
    /// writes `answer` (if any) and reads on until the client closes, when the task ends.
    /// Returns a [`PageReader`] on it.
    async fn fake_redis(answer: Option<Vec<u8>>) -> (PageReader, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 4096];
            assert!(socket.read(&mut buf).await.unwrap() > 0, "a command");
            if let Some(answer) = answer {
                socket.write_all(&answer).await.unwrap();
            }
            // Until the client closes (EOF, or a reset when unread bytes were left).
            while let Ok(1..) = socket.read(&mut buf).await {}
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        (PageReader::start(stream, TIMEOUT), server)
    }

    /// After the connection failed, a send fails at once as closed.
    async fn assert_closed(reader: &PageReader) {
        let again = tokio::time::timeout(TIMEOUT / 2, reader.send(&redis::cmd("PING")))
            .await
            .expect("fails at once, not after a timeout")
            .unwrap_err();
        assert!(again.is_connection_dropped(), "{again}");
    }

    /// A server that never answers: the caller gets a timeout, and the driver closes the
    /// connection and ends although the handle is still alive.
    #[tokio::test]
    async fn a_silent_connection_times_out_and_is_closed() {
        let (reader, server) = fake_redis(None).await;
        let started = std::time::Instant::now();
        let err = reader.send(&redis::cmd("PING")).await.unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert!(err.is_io_error(), "{err}");
        assert!(!is_reply_too_large(&err));
        let elapsed = started.elapsed();
        assert!(
            elapsed >= TIMEOUT - Duration::from_millis(50),
            "{elapsed:?}"
        );
        assert!(elapsed < PATIENCE, "{elapsed:?}");
        // The driver closed the socket (while the handle is still alive) and ended.
        tokio::time::timeout(PATIENCE, server)
            .await
            .expect("the driver closes the connection")
            .unwrap();
        assert_closed(&reader).await;
    }

    /// Every command in flight on a silent connection fails as a timeout.
    #[tokio::test]
    async fn every_waiting_caller_of_a_silent_connection_gets_the_timeout() {
        let (reader, server) = fake_redis(None).await;
        let first = reader.send(&redis::cmd("PING"));
        let second = reader.send(&redis::cmd("PING"));
        let (first, second) = tokio::join!(first, second);
        for err in [first.unwrap_err(), second.unwrap_err()] {
            assert!(err.is_timeout(), "{err}");
        }
        tokio::time::timeout(PATIENCE, server)
            .await
            .unwrap()
            .unwrap();
    }

    /// A bulk string header past the limit: the caller gets the too-large error before the
    /// body arrives, and the connection is closed.
    #[tokio::test]
    async fn a_reply_past_the_size_limit_fails_and_closes_the_connection() {
        let header = format!("*1\r\n${}\r\nabc", MAX_REPLY_BYTES + 1);
        let (reader, server) = fake_redis(Some(header.into_bytes())).await;
        let err = reader.send(&redis::cmd("PING")).await.unwrap_err();
        assert!(is_reply_too_large(&err), "{err}");
        assert!(!err.is_timeout() && !err.is_io_error(), "{err}");
        tokio::time::timeout(PATIENCE, server)
            .await
            .expect("the driver closes the connection")
            .unwrap();
        assert_closed(&reader).await;
    }

    /// Raw and parsed replies interleave in order; a raw reply is its bytes, a server error
    /// reply an error either way, and replies skipped before a raw one are dropped.
    #[tokio::test]
    async fn raw_replies_are_the_bytes_in_order() {
        let answer = b"+PONG\r\n*2\r\n$1\r\na\r\n:1\r\n-ERR no\r\n+OK\r\n:5\r\n$-1\r\n".to_vec();
        let (reader, server) = fake_redis(Some(answer)).await;
        let ping = reader.send(&redis::cmd("PING"));
        let raw = reader.send_raw(&redis::cmd("XRANGE"));
        let error = reader.send_raw(&redis::cmd("XADD"));
        let skipped = reader.send_packed_raw(b"MULTI\r\nINCR\r\nGET\r\n".to_vec(), 2);
        let (ping, raw, error, skipped) = tokio::join!(ping, raw, error, skipped);
        assert_eq!(ping.unwrap(), Value::SimpleString("PONG".into()));
        assert_eq!(raw.unwrap(), b"*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(error.unwrap_err().code(), Some("ERR"));
        assert_eq!(skipped.unwrap(), b"$-1\r\n");
        drop(reader);
        tokio::time::timeout(PATIENCE, server)
            .await
            .unwrap()
            .unwrap();
    }

    /// Replies still go to their callers in order, with the timer armed.
    #[tokio::test]
    async fn replies_still_arrive_in_order() {
        let (reader, server) = fake_redis(Some(b"+PONG\r\n:2\r\n".to_vec())).await;
        let first = reader.send(&redis::cmd("PING"));
        let second = reader.send(redis::cmd("INCR").arg("n"));
        let (first, second) = tokio::join!(first, second);
        assert_eq!(first.unwrap(), Value::SimpleString("PONG".into()));
        assert_eq!(second.unwrap(), Value::Int(2));
        // Dropping the handle with nothing waiting closes the connection.
        drop(reader);
        tokio::time::timeout(PATIENCE, server)
            .await
            .unwrap()
            .unwrap();
    }
}
