//! The glue behind `export_handler!`: decoding the batch, reporting panics, and choosing
//! between a handler function and a type implementing [`Handler`].

use std::any::Any;
use std::cell::RefCell;
use std::fmt::Display;
use std::panic::{self, AssertUnwindSafe, PanicHookInfo};
use std::sync::Once;

use crate::event::{Batch, Event};
use crate::{Handler, Level, Outcome, host};

/// How a handler's panic message begins, in the host's log and as the batch error.
///
/// The contract with the host: a panic in the handler logs, at `error` level through
/// `logging.log`, exactly one message `panic: <message> (at <file>:<line>:<column>)`
/// before the component traps (`wasm32-wasip2` aborts on panic). Where a panic unwinds
/// instead (native tests), `handle-events` returns that same message as its error.
pub const PANIC_PREFIX: &str = "panic: ";

/// Longest panic message kept (in bytes, on a character boundary); the host truncates log
/// lines at 8 KiB, and the location must fit after the message.
const MAX_PANIC_MESSAGE: usize = 4096;

thread_local! {
    /// The last panic's report, for the unwinding path to return.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Formats a panic the way the host recognises it.
fn report(payload: &(dyn Any + Send), location: Option<&panic::Location<'_>>) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("Box<dyn Any>");
    let message = if message.len() > MAX_PANIC_MESSAGE {
        let mut end = MAX_PANIC_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        &message[..end]
    } else {
        message
    };
    match location {
        Some(at) => format!(
            "{PANIC_PREFIX}{message} (at {}:{}:{})",
            at.file(),
            at.line(),
            at.column()
        ),
        None => format!("{PANIC_PREFIX}{message}"),
    }
}

/// Installs the panic hook once per instance. On wasm it replaces std's (which writes a
/// "thread panicked" line to stderr); natively it also calls the previous one, so test
/// output keeps its panic messages.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(not(target_arch = "wasm32"))]
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
            let line = report(info.payload(), info.location());
            host::log(Level::Error, &line);
            LAST_PANIC.with(|last| *last.borrow_mut() = Some(line));
            #[cfg(not(target_arch = "wasm32"))]
            previous(info);
        }));
    });
}

/// Decodes `batch`, runs `handle` on its events, and turns an error or an unwinding panic
/// into the batch's error string.
fn run<F>(batch: &[u8], handle: F) -> Result<Vec<Outcome>, String>
where
    F: FnOnce(&[Event<'_>]) -> Result<Vec<Outcome>, String>,
{
    install_panic_hook();
    LAST_PANIC.with(|last| last.borrow_mut().take());
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let batch = Batch::decode(batch).map_err(String::from)?;
        handle(&batch.events())
    }));
    result.unwrap_or_else(|payload| {
        Err(LAST_PANIC
            .with(|last| last.borrow_mut().take())
            .unwrap_or_else(|| report(payload.as_ref(), None)))
    })
}

/// Runs a handler function on a packed batch as the export does; [`crate::testing`] uses it.
pub(crate) fn run_function<F, E>(handler: &F, batch: &[u8]) -> Result<Vec<Outcome>, String>
where
    F: Fn(&[Event<'_>]) -> Result<Vec<Outcome>, E>,
    E: Display,
{
    run(batch, |events| handler(events).map_err(|e| e.to_string()))
}

/// Used by `export_handler!`; not part of the API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    /// Wraps the macro's argument: a handler function or a unit struct implementing
    /// [`Handler`]. Method resolution on `&&Export(x)` picks [`ViaHandler`] when `x`'s type
    /// implements `Handler`, else [`ViaFunction`] (autoref specialization).
    pub struct Export<H>(pub H);

    /// The export of a type implementing [`Handler`].
    pub trait ViaHandler {
        /// Runs the handler on a packed batch.
        fn handle_events(&self, batch: Vec<u8>) -> Result<Vec<Outcome>, String>;
    }

    impl<H: Handler> ViaHandler for &Export<H> {
        fn handle_events(&self, batch: Vec<u8>) -> Result<Vec<Outcome>, String> {
            run(&batch, |events| H::handle(events))
        }
    }

    /// The export of a handler function.
    pub trait ViaFunction {
        /// Runs the handler on a packed batch.
        fn handle_events(&self, batch: Vec<u8>) -> Result<Vec<Outcome>, String>;
    }

    impl<F, E> ViaFunction for Export<F>
    where
        F: Fn(&[Event<'_>]) -> Result<Vec<Outcome>, E>,
        E: Display,
    {
        fn handle_events(&self, batch: Vec<u8>) -> Result<Vec<Outcome>, String> {
            run_function(&self.0, &batch)
        }
    }
}
