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

use crate::engine::CONNECT_TIMEOUT;

/// Arrays nested deeper than this are refused (an XREADGROUP reply nests four deep).
const MAX_DEPTH: usize = 16;

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

/// Parses the reply at the front of `buf`: `Ok(None)` until all of it is there, then the
/// reply (a server error reply as `Err`) and its length. `Err` when the bytes are not RESP2.
fn parse(buf: &[u8]) -> RedisResult<Option<(RedisResult<Value>, usize)>> {
    // A cheap pass first, so an incomplete reply allocates nothing.
    let Some(end) = scan(buf, 0, 0)? else {
        return Ok(None);
    };
    let (reply, used) = build(buf, 0);
    debug_assert_eq!(used, end);
    Ok(Some((reply, end)))
}

/// The end of the value starting at `pos`, `None` if `buf` ends first.
fn scan(buf: &[u8], pos: usize, depth: usize) -> RedisResult<Option<usize>> {
    let Some((kind, header, mut pos)) = header(buf, pos)? else {
        return Ok(None);
    };
    match kind {
        b'+' | b'-' | b':' => Ok(Some(pos)),
        b'$' => {
            let len = length(header)?;
            if len < 0 {
                return Ok(Some(pos));
            }
            let end = pos + len as usize + 2;
            match buf.get(end - 2..end) {
                None => Ok(None),
                Some(b"\r\n") => Ok(Some(end)),
                Some(_) => Err(protocol("a bulk string not ended by CRLF")),
            }
        }
        b'*' => {
            let len = length(header)?;
            if depth >= MAX_DEPTH {
                return Err(protocol("arrays nested too deep"));
            }
            for _ in 0..len.max(0) {
                match scan(buf, pos, depth + 1)? {
                    Some(end) => pos = end,
                    None => return Ok(None),
                }
            }
            Ok(Some(pos))
        }
        _ => Err(protocol("an unknown reply type")),
    }
}

/// Builds the value starting at `pos`, which [`scan`] found complete and well-formed.
fn build(buf: &[u8], pos: usize) -> (RedisResult<Value>, usize) {
    let Ok(Some((kind, header, pos))) = header(buf, pos) else {
        unreachable!("scanned before");
    };
    let text = || String::from_utf8_lossy(header).into_owned();
    match kind {
        b'+' if header == b"OK" => (Ok(Value::Okay), pos),
        b'+' => (Ok(Value::SimpleString(text())), pos),
        b'-' => {
            let line = text();
            let (code, detail) = match line.split_once(' ') {
                Some((code, detail)) => (code.to_string(), Some(detail.to_string())),
                None => (line, None),
            };
            (Err(redis::make_extension_error(code, detail)), pos)
        }
        b':' => (
            std::str::from_utf8(header)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Value::Int)
                .ok_or_else(|| protocol("a bad integer")),
            pos,
        ),
        b'$' => match length(header).unwrap_or(-1) {
            len if len < 0 => (Ok(Value::Nil), pos),
            len => {
                let end = pos + len as usize;
                (Ok(Value::BulkString(buf[pos..end].to_vec())), end + 2)
            }
        },
        _ => match length(header).unwrap_or(-1) {
            len if len < 0 => (Ok(Value::Nil), pos),
            len => {
                let (mut items, mut pos, mut error) = (Vec::with_capacity(len as usize), pos, None);
                for _ in 0..len {
                    let (item, end) = build(buf, pos);
                    pos = end;
                    match item {
                        Ok(value) => items.push(value),
                        Err(e) => {
                            error.get_or_insert(e);
                        }
                    }
                }
                match error {
                    Some(e) => (Err(e), pos),
                    None => (Ok(Value::Array(items)), pos),
                }
            }
        },
    }
}

/// The type byte and the rest of the line at `pos`, and where the next line starts.
fn header(buf: &[u8], pos: usize) -> RedisResult<Option<(u8, &[u8], usize)>> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some(cr) = buf[pos..].iter().position(|&b| b == b'\r') else {
        return Ok(None);
    };
    let cr = pos + cr;
    match buf.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((kind, &buf[pos + 1..cr], cr + 2))),
        Some(_) => Err(protocol("a line not ended by CRLF")),
    }
}

fn length(header: &[u8]) -> RedisResult<i64> {
    std::str::from_utf8(header)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|len| *len >= -1)
        .ok_or_else(|| protocol("a bad length"))
}

/// Redis sent something that is not RESP2 (or a reply nobody asked for).
fn protocol(what: impl Into<String>) -> RedisError {
    RedisError::from((
        redis::ErrorKind::Parse,
        "invalid reply from redis",
        what.into(),
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What redis-rs makes of `bytes`, the reference this parser must agree with.
    fn reference(bytes: &[u8]) -> RedisResult<Value> {
        redis::parse_redis_value(bytes)
    }

    fn whole(bytes: &[u8]) -> RedisResult<Value> {
        let (reply, used) = parse(bytes).unwrap().expect("a complete reply");
        assert_eq!(used, bytes.len());
        reply
    }

    const XREADGROUP: &[u8] = b"*2\r\n*2\r\n$8\r\nstream-a\r\n*2\r\n*2\r\n$15\r\n1700000000000-0\r\n*4\r\n$1\r\ns\r\n$3\r\n\x01\r\n\r\n$4\r\nmeta\r\n$0\r\n\r\n*2\r\n$15\r\n1700000000000-1\r\n*-1\r\n*2\r\n$8\r\nstream-b\r\n*0\r\n";

    #[test]
    fn replies_parse_as_redis_rs_parses_them() {
        for bytes in [
            XREADGROUP,
            b"*-1\r\n".as_slice(),
            b"$-1\r\n",
            b"+OK\r\n",
            b"+QUEUED\r\n",
            b":-42\r\n",
            b"$0\r\n\r\n",
            b"*3\r\n:1\r\n*0\r\n$2\r\nab\r\n",
        ] {
            assert_eq!(
                whole(bytes).unwrap(),
                reference(bytes).unwrap(),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn a_reply_cut_anywhere_waits_for_the_rest() {
        for cut in 0..XREADGROUP.len() {
            assert!(parse(&XREADGROUP[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        // Two replies back to back: the first is returned with its length.
        let two = [XREADGROUP, b"+OK\r\n"].concat();
        let (first, used) = parse(&two).unwrap().unwrap();
        assert_eq!(used, XREADGROUP.len());
        assert_eq!(first.unwrap(), reference(XREADGROUP).unwrap());
    }

    #[test]
    fn server_errors_keep_their_code() {
        let err = whole(b"-NOGROUP No such key 'a' or consumer group 'g'\r\n").unwrap_err();
        assert_eq!(err.code(), Some("NOGROUP"));
        assert!(err.to_string().contains("No such key"), "{err}");
        let nested = whole(b"*2\r\n:1\r\n-ERR inner\r\n").unwrap_err();
        assert_eq!(nested.code(), Some("ERR"));
    }

    /// RESP2 bytes for `value` (the reply types Redis sends on a RESP2 connection).
    fn encode(value: &Value, out: &mut Vec<u8>) {
        match value {
            Value::Nil => out.extend_from_slice(b"$-1\r\n"),
            Value::Int(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
            Value::Okay => out.extend_from_slice(b"+OK\r\n"),
            Value::SimpleString(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
            Value::BulkString(b) => {
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Value::Array(items) => {
                out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                items.iter().for_each(|item| encode(item, out));
            }
            other => unreachable!("not generated: {other:?}"),
        }
    }

    fn any_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<i64>().prop_map(Value::Int),
            "[a-zA-Z0-9 ]{0,12}".prop_map(Value::SimpleString),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::BulkString),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            proptest::collection::vec(inner, 0..8).prop_map(Value::Array)
        })
    }

    proptest::proptest! {
        #[test]
        fn any_reply_parses_as_redis_rs_parses_it_and_no_prefix_completes(value in any_value()) {
            let mut bytes = Vec::new();
            encode(&value, &mut bytes);
            let ours = whole(&bytes).unwrap();
            // redis-rs reads "+OK" as Okay; ours does the same.
            proptest::prop_assert_eq!(&ours, &reference(&bytes).unwrap());
            for cut in 0..bytes.len() {
                proptest::prop_assert!(parse(&bytes[..cut]).unwrap().is_none());
            }
        }
    }

    #[test]
    fn bytes_that_are_not_resp2_are_refused() {
        for bad in [
            b"%1\r\n+a\r\n+b\r\n".as_slice(),
            b"$x\r\n",
            b"$-2\r\n",
            b"+OK\rX",
            b"$2\r\nabc\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1) + ":1\r\n";
        assert!(parse(deep.as_bytes()).is_err());
    }
}
