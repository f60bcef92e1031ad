//! The Redis layer: the one place that builds and sends Redis commands.
//!
//! Everything above it speaks in domain terms (publish, read a page, commit a batch, take
//! a lock); this layer turns those into commands and replies into domain values.

pub(crate) mod commands;
pub(crate) mod commit;
pub(crate) mod lock;
pub(crate) mod outbox;
pub(crate) mod outbox_page;
pub(crate) mod page_reader;
pub(crate) mod pool;
pub(crate) mod records;
pub(crate) mod resp;
pub(crate) mod transaction;
