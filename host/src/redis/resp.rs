//! A RESP2 reply parser for the read-ahead connection ([`super::page_reader`]), which
//! turns replies straight into the [`redis::Value`] tree redis-rs's own parser builds.
//!
//! A cheap completeness scan runs first, so a partial reply allocates nothing; nesting is
//! capped at [`MAX_DEPTH`] and size at [`MAX_REPLY_BYTES`]; bytes that are not RESP2 are an
//! error (the caller closes the connection).
//!
//! Where redis-rs is more lenient with bytes Redis never sends (lengths below -1, RESP3
//! types, nesting past [`MAX_DEPTH`]) this parser refuses them; simple strings and errors
//! that are not UTF-8 are read lossily where redis-rs refuses them.

use redis::{ErrorKind, RedisError, RedisResult, Value};

/// Arrays nested deeper than this are refused (an XREADGROUP reply nests four deep).
const MAX_DEPTH: usize = 16;

/// The largest reply the read-ahead connection takes, in bytes: a reply that declares or
/// buffers more is refused (the connection is closed and the consumer reads through its
/// shared connection instead), before any of it is allocated for or copied.
///
/// Redis's own limit on one bulk string (`proto-max-bulk-len`) is 512 MiB; a page of
/// XREADGROUP is a few hundred entries and normally far below 1 MiB. A reply is held twice
/// while it is turned into a [`Value`] (the read buffer and the tree), and a consumer has up
/// to two reads ahead in flight, so 256 MiB keeps one connection's worst case near 1 GiB
/// while entries up to half Redis's bulk limit still read ahead here; anything larger goes
/// the slower but unbounded way through redis-rs.
pub(crate) const MAX_REPLY_BYTES: usize = 256 << 20;

/// The fewest bytes one value takes on the wire (a type byte and CRLF): what an array's
/// length is checked against before its items are looked at or allocated for.
const MIN_VALUE_BYTES: usize = 3;

/// The description of the error [`parse`] returns for a reply past [`MAX_REPLY_BYTES`]
/// (what [`is_reply_too_large`] recognises).
const REPLY_TOO_LARGE: &str = "reply too large for the read-ahead connection";

/// Parses the reply at the front of `buf`: `Ok(None)` until all of it is there, then the
/// reply (a server error reply as `Err`) and its length. `Err` when the bytes are not RESP2
/// or the reply is past [`MAX_REPLY_BYTES`] (see [`is_reply_too_large`]).
pub(crate) fn parse(buf: &[u8]) -> RedisResult<Option<(RedisResult<Value>, usize)>> {
    parse_within(buf, MAX_REPLY_BYTES)
}

/// Like [`parse`], but hands back the reply's own bytes (copied out of `buf`) instead of a
/// [`Value`] tree: for replies the caller walks with a [`Cursor`] or passes on as they are.
/// A server error reply is `Err` as with [`parse`]; errors nested in an array stay in the
/// bytes.
pub(crate) fn parse_raw(buf: &[u8]) -> RedisResult<Option<(RedisResult<Vec<u8>>, usize)>> {
    let Some(end) = reply_len(buf)? else {
        return Ok(None);
    };
    if buf[0] == b'-' {
        let (reply, _) = build(buf, 0);
        return Ok(Some((reply.map(|_| Vec::new()), end)));
    }
    Ok(Some((Ok(buf[..end].to_vec()), end)))
}

/// Walks a whole, well-formed RESP2 reply (one [`parse_raw`] returned) value by value
/// without building anything: each step says what the next value is, and refuses a value
/// of another type than the caller expects as a protocol error.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    /// Where the next value starts.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// The next value's type byte, the rest of its line, and moves past that line.
    fn line(&mut self) -> RedisResult<(u8, &'a [u8])> {
        let (kind, header, next) =
            header(self.buf, self.pos)?.ok_or_else(|| protocol("a reply cut short"))?;
        self.pos = next;
        Ok((kind, header))
    }

    /// An array header: its length (`None` for the null array); its items follow.
    pub(crate) fn array(&mut self) -> RedisResult<Option<usize>> {
        match self.line()? {
            (b'*', header) => Ok(usize::try_from(length(header)?).ok()),
            _ => Err(protocol("not an array")),
        }
    }

    /// A bulk string (`None` for the null one).
    pub(crate) fn bulk(&mut self) -> RedisResult<Option<&'a [u8]>> {
        match self.line()? {
            (b'$', header) => {
                let Ok(len) = usize::try_from(length(header)?) else {
                    return Ok(None);
                };
                let end = self.pos.saturating_add(len);
                let bytes = self
                    .buf
                    .get(self.pos..end)
                    .ok_or_else(|| protocol("a bulk string cut short"))?;
                self.pos = end + 2;
                Ok(Some(bytes))
            }
            _ => Err(protocol("not a bulk string")),
        }
    }

    /// Any one value, skipped; `Err(text)` (the line without its `-`) when it is an error
    /// reply.
    pub(crate) fn skip_or_error(&mut self) -> RedisResult<Result<(), String>> {
        let start = self.pos;
        if self.buf.get(start) == Some(&b'-') {
            let (_, text) = self.line()?;
            return Ok(Err(String::from_utf8_lossy(text).into_owned()));
        }
        let end = scan(self.buf, start, 0, self.buf.len())?
            .ok_or_else(|| protocol("a reply cut short"))?;
        self.pos = end;
        Ok(Ok(()))
    }
}

/// True when `e` is [`parse`] refusing a reply past [`MAX_REPLY_BYTES`] (handed to every
/// caller waiting on the read-ahead connection, which is closed): the reply is fine for
/// Redis, only too large for this connection, so the caller reads through redis-rs instead.
pub(crate) fn is_reply_too_large(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Parse && e.to_string().starts_with(REPLY_TOO_LARGE)
}

/// The length of the reply at the front of `buf`, building nothing: `Ok(None)` until all
/// of it is there; `Err` as with [`parse`]. For replies read past (the ones before the one
/// a caller waits for).
pub(crate) fn reply_len(buf: &[u8]) -> RedisResult<Option<usize>> {
    complete_within(buf, MAX_REPLY_BYTES)
}

/// [`reply_len`] with a size limit of `max` bytes.
fn complete_within(buf: &[u8], max: usize) -> RedisResult<Option<usize>> {
    let end = scan(buf, 0, 0, max)?;
    // Everything buffered belongs to an incomplete reply: a long line, or many small values.
    if end.is_none() && buf.len() > max {
        return Err(too_large(
            format!("{} bytes and not complete", buf.len()),
            max,
        ));
    }
    Ok(end)
}

/// [`parse`] with a size limit of `max` bytes (small ones in tests).
fn parse_within(buf: &[u8], max: usize) -> RedisResult<Option<(RedisResult<Value>, usize)>> {
    // A cheap pass first, so an incomplete reply allocates nothing.
    let Some(end) = complete_within(buf, max)? else {
        return Ok(None);
    };
    let (reply, used) = build(buf, 0);
    debug_assert_eq!(used, end);
    Ok(Some((reply, end)))
}

/// The end of the value starting at `pos`, `None` if `buf` ends first; `Err` when it is not
/// RESP2 or would end past `max`.
fn scan(buf: &[u8], pos: usize, depth: usize, max: usize) -> RedisResult<Option<usize>> {
    let Some((kind, header, mut pos)) = header(buf, pos)? else {
        return Ok(None);
    };
    if pos > max {
        return Err(too_large(format!("a line ending at byte {pos}"), max));
    }
    match kind {
        b'+' | b'-' | b':' => Ok(Some(pos)),
        b'$' => {
            let Ok(len) = usize::try_from(length(header)?) else {
                return Ok(Some(pos)); // -1: the null bulk string
            };
            let end = pos.saturating_add(len).saturating_add(2);
            if end > max {
                return Err(too_large(format!("a bulk string of {len} bytes"), max));
            }
            match buf.get(end - 2..end) {
                None => Ok(None),
                Some(b"\r\n") => Ok(Some(end)),
                Some(_) => Err(protocol("a bulk string not ended by CRLF")),
            }
        }
        b'*' => {
            let Ok(len) = usize::try_from(length(header)?) else {
                return Ok(Some(pos)); // -1: the null array
            };
            if depth >= MAX_DEPTH {
                return Err(protocol("arrays nested too deep"));
            }
            if pos.saturating_add(len.saturating_mul(MIN_VALUE_BYTES)) > max {
                return Err(too_large(format!("an array of {len} items"), max));
            }
            for _ in 0..len {
                match scan(buf, pos, depth + 1, max)? {
                    Some(end) => pos = end,
                    None => return Ok(None),
                }
            }
            Ok(Some(pos))
        }
        _ => unreachable!("header() refuses other types"),
    }
}

/// Builds the value starting at `pos`, which [`scan`] found complete and well-formed.
fn build(buf: &[u8], pos: usize) -> (RedisResult<Value>, usize) {
    let start = pos;
    let Ok(Some((kind, header, pos))) = header(buf, pos) else {
        unreachable!("scanned before");
    };
    let text = || String::from_utf8_lossy(header).into_owned();
    match kind {
        b'+' if header == b"OK" => (Ok(Value::Okay), pos),
        b'+' => (Ok(Value::SimpleString(text())), pos),
        b'-' => (Err(server_error(&buf[start..pos], &text())), pos),
        b':' => (
            std::str::from_utf8(header)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .map(Value::Int)
                .ok_or_else(|| protocol("a bad integer")),
            pos,
        ),
        b'$' => match usize::try_from(length(header).unwrap_or(-1)) {
            Err(_) => (Ok(Value::Nil), pos),
            Ok(len) => {
                let end = pos + len;
                (Ok(Value::BulkString(buf[pos..end].to_vec())), end + 2)
            }
        },
        _ => match usize::try_from(length(header).unwrap_or(-1)) {
            Err(_) => (Ok(Value::Nil), pos),
            Ok(len) => {
                // Scanned, so every item is in `buf` and takes at least MIN_VALUE_BYTES:
                // the capacity never exceeds what the buffer can hold, whatever the header
                // claims.
                let capacity = len.min((buf.len() - pos) / MIN_VALUE_BYTES);
                let (mut items, mut pos, mut error) = (Vec::with_capacity(capacity), pos, None);
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

/// The error reply `line` (with its `-` and CRLF) as redis-rs makes it, so its kind, code
/// and detail are the same whichever connection read it; `text` is the line without
/// either, for the lossy fallback when it is not UTF-8 (which redis-rs refuses).
fn server_error(line: &[u8], text: &str) -> RedisError {
    // Error replies are rare: redis-rs's own parser maps codes to kinds (ERR, MOVED, ...).
    if let Ok(Err(e)) = redis::parse_redis_value(line).map(Value::extract_error) {
        return e;
    }
    let (code, detail) = match text.split_once(' ') {
        Some((code, detail)) => (code.to_string(), Some(detail.to_string())),
        None => (text.to_string(), None),
    };
    redis::make_extension_error(code, detail)
}

/// The type byte and the rest of the line at `pos`, and where the next line starts.
fn header(buf: &[u8], pos: usize) -> RedisResult<Option<(u8, &[u8], usize)>> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    if !matches!(kind, b'+' | b'-' | b':' | b'$' | b'*') {
        // Refused at once: nothing that follows could make it RESP2.
        return Err(protocol("an unknown reply type"));
    }
    let Some(cr) = buf[pos + 1..].iter().position(|&b| b == b'\r') else {
        return Ok(None);
    };
    let cr = pos + 1 + cr;
    match buf.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((kind, &buf[pos + 1..cr], cr + 2))),
        Some(_) => Err(protocol("a line not ended by CRLF")),
    }
}

/// The length in a bulk string or array header: -1 (null) or more. Only what Redis writes
/// is read: `-1` or decimal digits, by hand (this runs for every value of every reply).
fn length(header: &[u8]) -> RedisResult<i64> {
    let bad = || protocol("a bad length");
    if header == b"-1" {
        return Ok(-1);
    }
    if header.is_empty() {
        return Err(bad());
    }
    header.iter().try_fold(0i64, |n, &d| {
        if !d.is_ascii_digit() {
            return Err(bad());
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(i64::from(d - b'0')))
            .ok_or_else(bad)
    })
}

/// Redis sent something that is not RESP2 (or a reply nobody asked for).
pub(crate) fn protocol(what: impl Into<String>) -> RedisError {
    RedisError::from((ErrorKind::Parse, "invalid reply from redis", what.into()))
}

/// A reply past the limit of `max` bytes ([`MAX_REPLY_BYTES`]); `what` says how it was seen.
fn too_large(what: String, max: usize) -> RedisError {
    RedisError::from((
        ErrorKind::Parse,
        REPLY_TOO_LARGE,
        format!("{what}, past the limit of {max} bytes"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;

    /// What redis-rs makes of `bytes`, the reference this parser must agree with.
    fn reference(bytes: &[u8]) -> RedisResult<Value> {
        redis::parse_redis_value(bytes)
    }

    /// What a redis-rs connection hands its caller for `bytes`: the reference with a server
    /// error reply (also one nested in an array) as `Err`, as [`parse`] returns it.
    fn reference_reply(bytes: &[u8]) -> RedisResult<Value> {
        reference(bytes).and_then(Value::extract_error)
    }

    /// The reply `bytes` hold, which must be complete and all of them.
    fn whole(bytes: &[u8]) -> RedisResult<Value> {
        let (reply, used) = parse(bytes).unwrap().expect("a complete reply");
        assert_eq!(used, bytes.len());
        reply
    }

    /// The same reply: equal values, or errors of the same kind, code and detail.
    fn same_reply(ours: &RedisResult<Value>, theirs: &RedisResult<Value>) -> bool {
        match (ours, theirs) {
            (Ok(a), Ok(b)) => a == b,
            (Err(a), Err(b)) => {
                a == b && a.kind() == b.kind() && a.code() == b.code() && a.detail() == b.detail()
            }
            _ => false,
        }
    }

    /// An XREADGROUP reply: two streams, an entry with binary and empty values, an entry
    /// deleted while pending (null fields), a stream with no entries.
    const XREADGROUP: &[u8] = b"*2\r\n*2\r\n$8\r\nstream-a\r\n*2\r\n*2\r\n$15\r\n1700000000000-0\r\n*4\r\n$1\r\ns\r\n$3\r\n\x01\r\n\r\n$4\r\nmeta\r\n$0\r\n\r\n*2\r\n$15\r\n1700000000000-1\r\n*-1\r\n*2\r\n$8\r\nstream-b\r\n*0\r\n";

    /// Typical replies parse to what redis-rs makes of them.
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

    /// A partial reply is waited for; of two replies, the first is returned with its length.
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

    /// Server error replies, also nested, are errors with their code and message.
    #[test]
    fn server_errors_keep_their_code() {
        let err = whole(b"-NOGROUP No such key 'a' or consumer group 'g'\r\n").unwrap_err();
        assert_eq!(err.code(), Some("NOGROUP"));
        assert!(err.to_string().contains("No such key"), "{err}");
        let nested = whole(b"*2\r\n:1\r\n-ERR inner\r\n").unwrap_err();
        assert_eq!(nested.code(), Some("ERR"));
    }

    /// Server error replies are the very errors redis-rs makes (kind, code and detail).
    #[test]
    fn server_errors_are_the_errors_redis_rs_makes() {
        for bytes in [
            b"-ERR unknown command\r\n".as_slice(),
            b"-MOVED 3999 127.0.0.1:6381\r\n",
            b"-LOADING Redis is loading the dataset in memory\r\n",
            b"-NOGROUP No such key\r\n",
            b"-WRONGTYPE\r\n",
            b"-\r\n",
            b"*3\r\n:1\r\n-READONLY replica\r\n-ERR second\r\n",
        ] {
            let ours = whole(bytes);
            let theirs = reference_reply(bytes);
            assert!(
                same_reply(&ours, &theirs),
                "{bytes:?}: {ours:?} vs {theirs:?}"
            );
        }
        // Not UTF-8, which redis-rs refuses: still the server's error, read lossily.
        let err = whole(b"-ERR bad \xff\r\n").unwrap_err();
        assert_eq!(err.code(), Some("ERR"));
        assert!(!is_reply_too_large(&err));
    }

    /// Bytes that are not RESP2 (or nest too deep) are an error, not waited for.
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
        // Found by the fuzz test below: a CR where the type byte goes used to panic.
        for bad in [b"\r\n".as_slice(), b"\r\r\n", b"*1\r\n\r\n"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse(b"\r").is_err());
        assert!(parse(b"*2\r\n:1\r\n%").is_err());
    }

    /// Arrays nested exactly [`MAX_DEPTH`] deep are still taken.
    #[test]
    fn arrays_nested_to_the_depth_limit_parse() {
        let deepest = "*1\r\n".repeat(MAX_DEPTH) + ":1\r\n";
        assert_eq!(
            whole(deepest.as_bytes()).unwrap(),
            reference(deepest.as_bytes()).unwrap()
        );
    }

    /// A bulk string or array header that declares more than [`MAX_REPLY_BYTES`] is refused
    /// as too large at once (`*2000000000` allocates nothing), one within it is waited for.
    #[test]
    fn a_header_past_the_size_limit_is_refused_before_its_body_arrives() {
        for header in [
            format!("${}\r\n", MAX_REPLY_BYTES),
            format!("${}\r\n", i64::MAX),
            "*2000000000\r\n".to_string(),
            format!("*{}\r\n", i64::MAX),
            "*2\r\n$3\r\nabc\r\n*2000000000\r\n".to_string(),
            format!("*2\r\n:1\r\n${}\r\n", MAX_REPLY_BYTES - 10),
        ] {
            let err = parse(header.as_bytes()).unwrap_err();
            assert!(is_reply_too_large(&err), "{header:?}: {err}");
            assert!(err.to_string().contains("past the limit"), "{err}");
        }
        // Just within the limit: waited for, nothing allocated for it yet.
        let within = format!("${}\r\n", MAX_REPLY_BYTES - 20);
        assert!(parse(within.as_bytes()).unwrap().is_none());
        let many = format!("*{}\r\n", MAX_REPLY_BYTES / MIN_VALUE_BYTES - 10);
        assert!(parse(many.as_bytes()).unwrap().is_none());
    }

    /// A reply whose parts add up past the limit, or whose buffered bytes pass it, is
    /// refused as too large.
    #[test]
    fn a_reply_that_grows_past_the_size_limit_is_refused() {
        // The declared sizes add up past the limit...
        let bulks = b"*3\r\n$10\r\n0123456789\r\n$10\r\n0123456789\r\n$10\r\n";
        assert!(parse_within(&bulks[..40], 48).unwrap().is_none());
        assert!(is_reply_too_large(&parse_within(bulks, 48).unwrap_err()));
        // ...or what is buffered does, in a line that does not end.
        let line = [b"+".as_slice(), &[b'a'; 60]].concat();
        assert!(parse_within(&line[..48], 48).unwrap().is_none());
        assert!(is_reply_too_large(&parse_within(&line, 48).unwrap_err()));
        // A complete reply within the limit, followed by more bytes than the limit: fine.
        let two = [b"+OK\r\n".as_slice(), &line].concat();
        assert_eq!(parse_within(&two, 48).unwrap().unwrap().1, 5);
    }

    /// Protocol, server and I/O errors are not taken for a reply too large.
    #[test]
    fn other_errors_are_not_too_large() {
        assert!(!is_reply_too_large(&parse(b"$x\r\n").unwrap_err()));
        assert!(!is_reply_too_large(&protocol("a reply nobody asked for")));
        assert!(!is_reply_too_large(
            &whole(b"-ERR reply too large\r\n").unwrap_err()
        ));
        assert!(!is_reply_too_large(&RedisError::from(
            std::io::Error::other(REPLY_TOO_LARGE)
        )));
    }

    /// RESP2 bytes for `value` (the reply types Redis sends on a RESP2 connection); a
    /// `Nil` is written as a null array when `null_array`, which flips at each one.
    fn encode(value: &Value, null_array: &mut bool, out: &mut Vec<u8>) {
        match value {
            Value::Nil => {
                out.extend_from_slice(if *null_array { b"*-1\r\n" } else { b"$-1\r\n" });
                *null_array = !*null_array;
            }
            Value::Int(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
            Value::Okay => out.extend_from_slice(b"+OK\r\n"),
            Value::SimpleString(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
            Value::ServerError(e) => {
                let line = match e.details() {
                    Some(detail) => format!("-{} {detail}\r\n", e.code()),
                    None => format!("-{}\r\n", e.code()),
                };
                out.extend_from_slice(line.as_bytes());
            }
            Value::BulkString(b) => {
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Value::Array(items) => {
                out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                items.iter().for_each(|item| encode(item, null_array, out));
            }
            other => unreachable!("not generated: {other:?}"),
        }
    }

    /// The RESP2 bytes of `value`, nulls starting as null bulk strings or null arrays.
    fn encoded(value: &Value, null_array: bool) -> Vec<u8> {
        let mut out = Vec::new();
        encode(value, &mut { null_array }, &mut out);
        out
    }

    /// A server error reply as redis-rs reads it: a known code (which redis-rs maps to a
    /// kind) or any other, with or without a detail.
    fn any_server_error() -> impl Strategy<Value = Value> {
        let code = prop_oneof![
            proptest::sample::select(vec![
                "ERR",
                "NOGROUP",
                "WRONGTYPE",
                "MOVED",
                "ASK",
                "LOADING",
                "NOSCRIPT",
                "READONLY",
                "EXECABORT",
                "BUSYGROUP",
                "NOPERM",
                "OK",
            ])
            .prop_map(String::from),
            "[A-Z]{0,10}",
        ];
        (code, proptest::option::of("[ -~]{0,24}")).prop_map(|(code, detail)| {
            let line = match detail {
                Some(detail) => format!("-{code} {detail}\r\n"),
                None => format!("-{code}\r\n"),
            };
            reference(line.as_bytes()).expect("an error reply")
        })
    }

    /// How many arrays deep `value` nests.
    fn depth(value: &Value) -> usize {
        match value {
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// Any RESP2 reply that is not an array: simple strings (`OK` too), errors, integers,
    /// bulk strings (binary and empty), nulls.
    fn any_leaf() -> impl Strategy<Value = Value> + Clone {
        prop_oneof![
            Just(Value::Nil),
            Just(Value::Okay),
            any::<i64>().prop_map(Value::Int),
            "[^\r\n]{0,12}".prop_map(Value::SimpleString),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::BulkString),
            any_server_error(),
        ]
    }

    /// Any RESP2 reply: a leaf, or arrays of them, bushy and a few levels deep, or wrapped
    /// in narrow arrays up to [`MAX_DEPTH`] deep.
    fn any_value() -> impl Strategy<Value = Value> {
        let tree = any_leaf().prop_recursive(4, 64, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(Value::Array)
        });
        let levels = proptest::collection::vec(proptest::option::of(any_leaf()), 1..=MAX_DEPTH);
        let deep = (tree.clone(), levels).prop_map(|(value, levels)| {
            let room = MAX_DEPTH - depth(&value);
            levels
                .into_iter()
                .take(room)
                .fold(value, |value, sibling| match sibling {
                    Some(sibling) => Value::Array(vec![sibling, value]),
                    None => Value::Array(vec![value]),
                })
        });
        prop_oneof![3 => tree, 1 => deep]
    }

    /// Bytes to throw at the parser: random ones, RESP-like tokens in random order, and
    /// well-formed replies with a few bytes changed.
    fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
        let token = prop_oneof![
            any::<u8>().prop_map(|b| vec![b]),
            proptest::sample::select(vec![
                "*",
                "$",
                ":",
                "+",
                "-",
                "\r\n",
                "\r",
                "\n",
                "-1",
                "-2",
                "0",
                "1",
                "2",
                "3",
                "10",
                "99999999999",
                "OK",
                "ERR x",
                " ",
            ])
            .prop_map(|token| token.as_bytes().to_vec()),
        ];
        let mutated = (
            any_value(),
            any::<bool>(),
            proptest::collection::vec((any::<Index>(), any::<u8>()), 1..4),
        )
            .prop_map(|(value, null_array, edits)| {
                let mut bytes = encoded(&value, null_array);
                for (at, byte) in edits {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
                bytes
            });
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(token, 0..48).prop_map(|tokens| tokens.concat()),
            mutated,
        ]
    }

    proptest! {
        // Failures are not saved to a file in the source tree: a case found is kept as a
        // unit test (see `bytes_that_are_not_resp2_are_refused`).
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// (a) Any bytes: `parse` returns (no panic, no endless loop), and a reply it finds
        /// takes at least one byte and at most what is there, depends on those bytes only,
        /// and is what redis-rs reads from them whenever redis-rs reads them at all.
        #[test]
        fn any_bytes_parse_without_panic_and_a_reply_takes_what_it_says(bytes in any_bytes()) {
            for max in [MAX_REPLY_BYTES, 32] {
                let Ok(Some((reply, used))) = parse_within(&bytes, max) else {
                    continue;
                };
                prop_assert!(used >= 1 && used <= bytes.len().min(max), "used {} of {}", used, bytes.len());
                let (again, used_again) = parse_within(&bytes[..used], max)
                    .expect("the same bytes")
                    .expect("the same reply");
                prop_assert_eq!(used_again, used);
                prop_assert!(same_reply(&again, &reply));
                if let Ok(theirs) = reference(&bytes[..used]) {
                    let theirs = theirs.extract_error();
                    prop_assert!(same_reply(&reply, &theirs), "{:?} vs {:?}", reply, theirs);
                }
            }
        }

        /// (b) A well-formed reply parses to what redis-rs makes of it, whole, followed by
        /// the next reply, and when it arrives in two parts split anywhere.
        #[test]
        fn any_reply_parses_as_redis_rs_parses_it(
            value in any_value(),
            null_array in any::<bool>(),
            split in any::<Index>(),
        ) {
            let bytes = encoded(&value, null_array);
            let theirs = reference_reply(&bytes);
            prop_assert!(same_reply(&whole(&bytes), &theirs), "{:?} vs {:?}", whole(&bytes), theirs);
            let followed = [bytes.as_slice(), b":7\r\n"].concat();
            let (reply, used) = parse(&followed).unwrap().unwrap();
            prop_assert_eq!(used, bytes.len());
            prop_assert!(same_reply(&reply, &theirs));
            let cut = split.index(bytes.len());
            prop_assert!(parse(&bytes[..cut]).unwrap().is_none(), "first {} bytes", cut);
            prop_assert!(same_reply(&whole(&bytes), &theirs));
        }

        /// (c) A well-formed reply cut short anywhere is waited for: never an error, never a
        /// value.
        #[test]
        fn any_reply_cut_short_waits_for_the_rest(
            value in any_value(),
            null_array in any::<bool>(),
        ) {
            let bytes = encoded(&value, null_array);
            for cut in 0..bytes.len() {
                prop_assert!(parse(&bytes[..cut]).unwrap().is_none(), "first {} bytes", cut);
            }
        }

        /// (d) `reply_len` and `parse_raw` find the same replies in any bytes as `parse`,
        /// taking the same bytes, `parse_raw` handing them back as they are (a server error
        /// reply as `Err`); a cursor skips a well-formed reply's items to its end, telling
        /// the errors apart.
        #[test]
        fn raw_replies_are_the_bytes_parse_reads(bytes in any_bytes(), value in any_value()) {
            let len = reply_len(&bytes).map_err(|e| e.to_string());
            let parsed = parse(&bytes).map(|p| p.map(|(_, used)| used)).map_err(|e| e.to_string());
            prop_assert_eq!(len, parsed, "reply_len takes what parse takes");
            match (parse(&bytes), parse_raw(&bytes)) {
                (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
                (Ok(Some((reply, used))), Ok(Some((raw, raw_used)))) => {
                    prop_assert_eq!(used, raw_used);
                    match (reply, raw) {
                        (Ok(_), Ok(raw)) => prop_assert_eq!(&raw[..], &bytes[..used]),
                        // An error nested in an array, or an integer that is not one, fails
                        // `parse`; `parse_raw` leaves them to whoever reads the bytes.
                        (Err(_), Ok(raw)) => prop_assert!(matches!(raw[0], b'*' | b':')),
                        (Err(e), Err(raw)) => prop_assert_eq!(e.to_string(), raw.to_string()),
                        (Ok(v), Err(e)) => prop_assert!(false, "{:?} vs {}", v, e),
                    }
                }
                (ours, raw) => prop_assert!(false, "{:?} vs {:?}", ours.map(|o| o.map(|r| r.1)), raw.map(|r| r.map(|r| r.1))),
            }
            let bytes = encoded(&value, false);
            let mut cursor = Cursor::new(&bytes);
            match &value {
                Value::Array(items) => {
                    prop_assert_eq!(cursor.array().unwrap(), Some(items.len()));
                    for item in items {
                        let skipped = cursor.skip_or_error().unwrap();
                        prop_assert_eq!(skipped.is_err(), matches!(item, Value::ServerError(_)));
                    }
                }
                Value::ServerError(_) => prop_assert!(cursor.skip_or_error().unwrap().is_err()),
                _ => prop_assert_eq!(cursor.skip_or_error().unwrap(), Ok(())),
            }
            prop_assert_eq!(cursor.position(), bytes.len());
        }

        /// A well-formed reply longer than the limit is refused as too large, never parsed,
        /// once its declared sizes or its buffered bytes pass the limit; shorter prefixes
        /// are waited for or refused the same way.
        #[test]
        fn a_reply_past_the_limit_is_refused(
            value in any_value(),
            null_array in any::<bool>(),
            limit in any::<Index>(),
        ) {
            let bytes = encoded(&value, null_array);
            let max = limit.index(bytes.len());
            for cut in 0..=bytes.len() {
                match parse_within(&bytes[..cut], max) {
                    Ok(None) => prop_assert!(cut <= max, "{} bytes buffered", cut),
                    Ok(Some(_)) => prop_assert!(false, "parsed {} bytes with a limit of {}", bytes.len(), max),
                    Err(e) => prop_assert!(is_reply_too_large(&e), "{}", e),
                }
            }
        }
    }
}
