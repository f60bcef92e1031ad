//! The library API against real, private Redis servers.

mod claim;
mod consume;
mod gc;
mod lock;
mod publish;
mod stats;
