//! The SDK's error type: one type for decoding, unserializing and publishing, so `?` works
//! on all of them in a handler.

use std::fmt;

/// What went wrong, for code that reacts differently (see [`Outcome::each`]).
///
/// [`Outcome::each`]: crate::Outcome::each
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The batch the host passed does not decode: the SDK and the host disagree on the
    /// layout. Never the event's fault.
    Batch,
    /// The event itself is bad: it has no body where one is needed, its body does not
    /// decode into the type asked for, a tag does not parse, or the handler said so with
    /// [`Error::bad_input`]. Retrying will not help: [`Outcome::each`] dead-letters it.
    ///
    /// [`Outcome::each`]: crate::Outcome::each
    BadInput,
    /// A value to publish could not be encoded as MessagePack.
    Encode,
    /// The host refused a publish: a stream outside the group's `publish` allow-list, the
    /// reserved metadata key `s`, an event with neither body nor metadata, or too many
    /// publishes in one batch.
    Publish,
    /// Anything else: a handler's own error.
    Other,
}

/// An error of the SDK or of a handler; converts from `String` and `&str`, and into
/// `String`, so it works with `?` on either side.
///
/// ```
/// use beehive_guest::{Error, ErrorKind};
///
/// fn quantity(tag: &str) -> beehive_guest::Result<u32> {
///     let n: u32 = tag.parse()?; // a ParseIntError is bad input
///     if n == 0 {
///         return Err(Error::bad_input("quantity 0"));
///     }
///     Ok(n)
/// }
/// assert_eq!(quantity("3").unwrap(), 3);
/// let err = quantity("x").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::BadInput);
/// assert_eq!(err.context("tag qty").to_string(), "tag qty: invalid digit found in string");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// `Result` with the SDK's [`Error`] by default.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl fmt::Display) -> Self {
        Error {
            kind,
            message: message.to_string(),
        }
    }

    /// A handler's own error ([`ErrorKind::Other`]): fails the batch.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error::new(ErrorKind::Other, message)
    }

    /// The event is bad and retrying will not help ([`ErrorKind::BadInput`]):
    /// [`Outcome::each`](crate::Outcome::each) dead-letters it with this message.
    pub fn bad_input(message: impl fmt::Display) -> Self {
        Error::new(ErrorKind::BadInput, message)
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the event is at fault ([`ErrorKind::BadInput`]).
    pub fn is_bad_input(&self) -> bool {
        self.kind == ErrorKind::BadInput
    }

    /// The message, without its kind.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with `context: ` before its message.
    #[must_use]
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error {
            kind: self.kind,
            message: format!("{context}: {}", self.message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::new(ErrorKind::Other, message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::new(ErrorKind::Other, message)
    }
}

/// The message: handlers returning `Result<_, String>` can use `?` on the SDK's calls.
impl From<Error> for String {
    fn from(error: Error) -> Self {
        error.message
    }
}

impl From<std::num::ParseIntError> for Error {
    fn from(e: std::num::ParseIntError) -> Self {
        Error::bad_input(e)
    }
}

impl From<std::num::ParseFloatError> for Error {
    fn from(e: std::num::ParseFloatError) -> Self {
        Error::bad_input(e)
    }
}

impl From<std::str::Utf8Error> for Error {
    fn from(e: std::str::Utf8Error) -> Self {
        Error::bad_input(e)
    }
}

impl From<std::str::ParseBoolError> for Error {
    fn from(e: std::str::ParseBoolError) -> Self {
        Error::bad_input(e)
    }
}
