//! The library's error type.

use std::fmt;

/// Everything that can go wrong in Beehive's library API.
///
/// Each variant's message is a complete sentence fragment meant for a log line or stderr:
/// it names the stream, group, pool or file involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry is inconsistent (duplicate stream, unknown pool, bad address, ...).
    #[error("{0}")]
    Validation(String),
    /// The configuration file is invalid; see [`ConfigError`].
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Publishing to, or reading from, a stream that is not registered.
    #[error("unregistered stream {0}")]
    UnregisteredStream(String),
    /// A consumer for a group that is not registered.
    #[error("unregistered consumer group {0}")]
    UnregisteredGroup(String),
    /// An event must carry a body, metadata, or both.
    #[error("event for stream {0} has neither body nor metadata")]
    EmptyEvent(String),
    /// Metadata keys may not be `s` (the body field) or empty.
    #[error("invalid metadata key {key:?} for stream {stream}: {reason}")]
    InvalidMetaKey {
        /// The stream the event was meant for.
        stream: String,
        /// The offending key.
        key: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A body could not be encoded to MessagePack.
    #[error("cannot encode body for stream {stream}: {message}")]
    Encode {
        /// The stream the event was meant for.
        stream: String,
        /// The encoder's message.
        message: String,
    },
    /// An event body could not be decoded from MessagePack into the requested type.
    #[error("cannot decode event {id} of stream {stream}: {message}")]
    Decode {
        /// The entry ID.
        id: String,
        /// The stream of the entry.
        stream: String,
        /// What went wrong.
        message: String,
    },
    /// A Redis command failed.
    #[error("redis pool {pool}: {source}")]
    Redis {
        /// The pool whose server failed.
        pool: String,
        /// The underlying error.
        #[source]
        source: redis::RedisError,
    },
    /// The consumer's single-runner lock was lost (deleted, expired, or taken over).
    #[error("lock {0} lost")]
    LockLost(String),
    /// A number, name or option given to the API is out of range.
    #[error("{0}")]
    InvalidArgument(String),
}

/// A configuration problem: which file, which key, what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (as given).
    pub file: String,
    /// The key path, e.g. `consumers.read-group-ab.count`; empty for the whole file.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches the pool name to Redis errors.
pub(crate) trait PoolContext<T> {
    fn pool(self, pool: &str) -> Result<T>;
}

impl<T> PoolContext<T> for std::result::Result<T, redis::RedisError> {
    fn pool(self, pool: &str) -> Result<T> {
        self.map_err(|source| Error::Redis {
            pool: pool.to_string(),
            source,
        })
    }
}

/// Formats a list of names as `a, b, c` for error messages.
pub(crate) struct List<'a, T>(pub &'a [T]);

impl<T: fmt::Display> fmt::Display for List<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}
