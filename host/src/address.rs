//! Parsing of Redis addresses: `host:port[:db]`, `redis://` / `rediss://` URLs and unix sockets.

use std::fmt;
use std::path::PathBuf;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

/// A parsed, validated Redis address.
///
/// Its [`Display`](fmt::Display) form never shows the password: it is safe to log.
#[derive(Clone)]
pub struct RedisAddress {
    info: ConnectionInfo,
}

impl RedisAddress {
    /// Parses `address` and applies `password` and `db` on top of what it says.
    ///
    /// Accepted forms:
    /// - `host:port` and `host:port:db` (`[::1]:6379` for IPv6),
    /// - `redis://[user[:password]@]host[:port][/db]` and `rediss://...` (TLS),
    /// - `unix:///path/to.sock`, `redis+unix:///path` or a plain path `/path/to.sock[:db]`.
    ///
    /// A non-empty `password` replaces the one in the URL; a `db` of `Some(n)` replaces the
    /// address's db. Errors say what was expected.
    pub fn parse(address: &str, password: &str, db: Option<i64>) -> Result<Self, String> {
        let address = address.trim();
        if address.is_empty() {
            return Err("expected a Redis address (host:port[:db], redis://..., or a unix socket path), got an empty string".into());
        }
        let (info, address_db) = if address.contains("://") {
            let info = address
                .into_connection_info()
                .map_err(|e| format!("invalid Redis URL {}: {e}", redact_url(address)))?;
            let db = info.redis_settings().db();
            (info, Some(db))
        } else if address.starts_with('/') || address.starts_with('.') {
            let (path, db) = match address.rsplit_once(':') {
                Some((path, db)) => (path, Some(parse_db(db)?)),
                None => (address, None),
            };
            (
                ConnectionAddr::Unix(PathBuf::from(path))
                    .into_connection_info()
                    .map_err(|e| e.to_string())?,
                db,
            )
        } else {
            let (host, rest) = if let Some(stripped) = address.strip_prefix('[') {
                let (host, rest) = stripped.split_once(']').ok_or_else(|| {
                    format!("invalid Redis address {address:?}: missing ']' after IPv6 host")
                })?;
                let rest = rest.strip_prefix(':').ok_or_else(|| {
                    format!("invalid Redis address {address:?}: expected host:port[:db]")
                })?;
                (host.to_string(), rest)
            } else {
                let (host, rest) = address.split_once(':').ok_or_else(|| {
                    format!("invalid Redis address {address:?}: expected host:port[:db]")
                })?;
                (host.to_string(), rest)
            };
            if host.is_empty()
                || host
                    .chars()
                    .any(|c| c.is_whitespace() || c == '/' || c == '@')
            {
                return Err(format!(
                    "invalid Redis address {address:?}: expected a host name or IP before the port"
                ));
            }
            let (port, db) = match rest.split_once(':') {
                Some((port, db)) => (port, Some(parse_db(db)?)),
                None => (rest, None),
            };
            let port: u16 = port
                .parse()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("invalid Redis address {address:?}: expected a port from 1 to 65535, got {port:?}"))?;
            (
                ConnectionAddr::Tcp(host, port)
                    .into_connection_info()
                    .map_err(|e| e.to_string())?,
                db,
            )
        };
        let db = match db {
            Some(db) if db < 0 => {
                return Err(format!(
                    "invalid Redis db {db}: expected a number from 0 up"
                ));
            }
            Some(db) => db,
            None => address_db.unwrap_or(0),
        };
        let mut settings = info.redis_settings().clone().set_db(db);
        if !password.is_empty() {
            settings = settings.set_password(password);
        }
        Ok(Self {
            info: info.set_redis_settings(settings),
        })
    }

    /// The connection settings for redis-rs.
    pub fn connection_info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// The database number.
    pub fn db(&self) -> i64 {
        self.info.redis_settings().db()
    }
}

fn parse_db(db: &str) -> Result<i64, String> {
    db.parse::<i64>()
        .ok()
        .filter(|d| *d >= 0)
        .ok_or_else(|| format!("invalid Redis db {db:?}: expected a number from 0 up"))
}

/// Replaces the password of a URL with `***` for messages.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

impl fmt::Display for RedisAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = self.info.redis_settings();
        let scheme = match self.info.addr() {
            ConnectionAddr::Tcp(..) => "redis",
            ConnectionAddr::TcpTls { .. } => "rediss",
            ConnectionAddr::Unix(_) => "unix",
            _ => "redis",
        };
        write!(f, "{scheme}://")?;
        match (settings.username(), settings.password()) {
            (Some(user), Some(_)) => write!(f, "{user}:***@")?,
            (Some(user), None) => write!(f, "{user}@")?,
            (None, Some(_)) => f.write_str(":***@")?,
            (None, None) => {}
        }
        write!(f, "{}/{}", self.info.addr(), settings.db())
    }
}

impl fmt::Debug for RedisAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisAddress({self})")
    }
}

/// Parses a metrics address: `host:port`, or a bare `port` / `:port` (bound on 127.0.0.1).
pub fn parse_listen_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    let text = text.trim();
    let port = text.strip_prefix(':').unwrap_or(text);
    if let Ok(port) = port.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse().map_err(|_| {
        format!("invalid metrics address {text:?}: expected host:port or a port (loopback)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_db() {
        let a = RedisAddress::parse("localhost:6379:3", "", None).unwrap();
        assert_eq!(a.to_string(), "redis://localhost:6379/3");
        let a = RedisAddress::parse("127.0.0.1:6380", "secret", Some(2)).unwrap();
        assert_eq!(a.to_string(), "redis://:***@127.0.0.1:6380/2");
        assert_eq!(
            a.connection_info().redis_settings().password(),
            Some("secret")
        );
        let a = RedisAddress::parse("[::1]:6379:1", "", None).unwrap();
        assert_eq!(a.db(), 1);
    }

    #[test]
    fn urls_keep_user_and_hide_password() {
        let a = RedisAddress::parse("redis://alice:pw@example.com:7000/4", "", None).unwrap();
        assert_eq!(a.to_string(), "redis://alice:***@example.com:7000/4");
        assert_eq!(
            a.connection_info().redis_settings().username(),
            Some("alice")
        );
        assert_eq!(a.connection_info().redis_settings().password(), Some("pw"));
    }

    #[test]
    fn unix_socket() {
        let a = RedisAddress::parse("/var/run/redis.sock:2", "", None).unwrap();
        assert_eq!(a.to_string(), "unix:///var/run/redis.sock/2");
    }

    #[test]
    fn bad_addresses_explain_themselves() {
        for (input, needle) in [
            ("", "empty"),
            ("localhost", "host:port"),
            ("localhost:0", "port"),
            ("localhost:99999", "port"),
            ("localhost:abc", "port"),
            (":6379", "host"),
            ("localhost:6379:x", "db"),
            ("localhost:6379:-1", "db"),
            ("redis://[bad", "invalid Redis URL"),
        ] {
            let err = RedisAddress::parse(input, "", None).unwrap_err();
            assert!(err.contains(needle), "{input:?}: {err}");
        }
        assert!(
            RedisAddress::parse("localhost:6379", "", Some(-2))
                .unwrap_err()
                .contains("db")
        );
    }

    #[test]
    fn redacts_password_in_url_errors() {
        let err = RedisAddress::parse("redis://u:topsecret@[bad", "", None).unwrap_err();
        assert!(!err.contains("topsecret"), "{err}");
    }
}
