//! A RESP2 reply parser for the read-ahead connection ([`super::page_reader`]), which
//! turns replies straight into the [`redis::Value`] tree redis-rs's own parser builds.
//!
//! A cheap completeness scan runs first, so a partial reply allocates nothing; nesting is
//! capped at [`MAX_DEPTH`]; bytes that are not RESP2 are an error (the caller closes the
//! connection).

use redis::{RedisError, RedisResult, Value};

/// Arrays nested deeper than this are refused (an XREADGROUP reply nests four deep).
const MAX_DEPTH: usize = 16;

/// Parses the reply at the front of `buf`: `Ok(None)` until all of it is there, then the
/// reply (a server error reply as `Err`) and its length. `Err` when the bytes are not RESP2.
pub(crate) fn parse(buf: &[u8]) -> RedisResult<Option<(RedisResult<Value>, usize)>> {
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
pub(crate) fn protocol(what: impl Into<String>) -> RedisError {
    RedisError::from((
        redis::ErrorKind::Parse,
        "invalid reply from redis",
        what.into(),
    ))
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
