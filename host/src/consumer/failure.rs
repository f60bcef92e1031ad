//! Why a handler failed a batch: the kinds counted in metrics and logged.

/// The metrics label of a handler error: a [`BatchError`] says its kind; anything else is
/// an `error`.
pub(super) fn failure_kind(error: &anyhow::Error) -> &'static str {
    error
        .downcast_ref::<BatchError>()
        .map_or("error", |e| e.kind.label())
}

/// A handler error that says what kind of failure it was (for metrics); return it from a
/// [`BatchHandler`] as `Err(BatchError { .. }.into())`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    /// What kind of failure.
    pub kind: FailureKind,
    /// What happened.
    pub message: String,
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BatchError {}

/// Why a handler failed a batch, attached to its error for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The guest trapped (`unreachable`, an abort, ...).
    Trap,
    /// The guest panicked: it logged a line starting with `panic: ` and then trapped.
    Panic,
    /// The batch ran past its CPU deadline.
    Deadline,
    /// The guest hit its memory cap.
    Memory,
    /// The guest overflowed its stack.
    StackOverflow,
    /// The guest returned an error for the batch.
    Error,
    /// The guest returned the wrong number of outcomes.
    WrongOutcomes,
    /// The component could not be instantiated.
    Instantiate,
}

impl FailureKind {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Panic => "panic",
            FailureKind::Deadline => "deadline",
            FailureKind::Memory => "memory",
            FailureKind::StackOverflow => "stack_overflow",
            FailureKind::Error => "error",
            FailureKind::WrongOutcomes => "wrong_outcomes",
            FailureKind::Instantiate => "instantiate",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

pub(super) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}
