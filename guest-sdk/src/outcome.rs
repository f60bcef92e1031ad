//! Helpers for the outcomes a handler returns, one per event.

use std::fmt::Display;

use crate::Outcome;
use crate::error::Result;
use crate::event::Event;

impl Outcome {
    /// `Retry(reason)`: leave the event pending; it is delivered again later and
    /// dead-lettered by the host after the group's `max-deliveries`.
    pub fn retry(reason: impl Display) -> Outcome {
        Outcome::Retry(reason.to_string())
    }

    /// `DeadLetter(reason)`: move the event to the group's dead-letter stream now.
    pub fn dead_letter(reason: impl Display) -> Outcome {
        Outcome::DeadLetter(reason.to_string())
    }

    /// Whether this is `Ack`.
    pub fn is_ack(&self) -> bool {
        matches!(self, Outcome::Ack)
    }

    /// `Ack` for every event.
    pub fn all_ack(events: &[Event<'_>]) -> Vec<Outcome> {
        vec![Outcome::Ack; events.len()]
    }

    /// `Ack` when `result` is `Ok`, else `DeadLetter` with the error as the reason.
    pub fn ack_or_dead_letter<T, E: Display>(result: Result<T, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ack,
            Err(e) => Outcome::dead_letter(e),
        }
    }

    /// `Ack` when `result` is `Ok`, else `Retry` with the error as the reason.
    pub fn ack_or_retry<T, E: Display>(result: Result<T, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ack,
            Err(e) => Outcome::retry(e),
        }
    }

    /// Decides each event with `decide`, the common shape of a handler:
    ///
    /// - `Ok(outcome)` is that event's outcome;
    /// - an error of kind [`BadInput`](crate::ErrorKind::BadInput) — no body, a body that
    ///   does not [`unserialize`](Event::unserialize), a tag that does not parse,
    ///   [`Error::bad_input`](crate::Error::bad_input) — dead-letters that event with the
    ///   error's message as the reason: bad input never blocks the stream;
    /// - any other error (a refused publish, say) fails the whole batch, named with the
    ///   event's ID: nothing of the batch is published and every event is retried.
    ///
    /// ```
    /// use beehive_guest::{Error, Event, Outcome, Result};
    ///
    /// fn handle(events: &[Event]) -> Result<Vec<Outcome>> {
    ///     Outcome::each(events, |event| {
    ///         let qty: u32 = event.require_tag("qty")?.parse()?;
    ///         if qty > 100 {
    ///             return Ok(Outcome::retry("too many for now"));
    ///         }
    ///         Ok(Outcome::Ack)
    ///     })
    /// }
    /// # let _ = handle;
    /// ```
    pub fn each<'a, F>(events: &[Event<'a>], mut decide: F) -> Result<Vec<Outcome>>
    where
        F: FnMut(Event<'a>) -> Result<Outcome>,
    {
        let mut outcomes = Vec::with_capacity(events.len());
        for &event in events {
            outcomes.push(match decide(event) {
                Ok(outcome) => outcome,
                Err(e) if e.is_bad_input() => Outcome::DeadLetter(e.to_string()),
                Err(e) => return Err(e.context(format_args!("event {}", event.id))),
            });
        }
        Ok(outcomes)
    }
}
