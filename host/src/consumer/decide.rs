//! What happens to each entry of a batch: a pure function from (entries, how the handler's
//! call ended, settings) to a commit plan. No Redis, no clock, no handler in here, so
//! every branch is unit-tested.
//!
//! | entry | becomes |
//! |---|---|
//! | deleted while pending (no body, no metadata) | dead-lettered, reason `deleted …`, never handed over |
//! | delivered more than `max-deliveries` times | dead-lettered, never handed over |
//! | `Ack` | acknowledged |
//! | `DeadLetter(reason)` | dead-lettered with the reason |
//! | `Retry(reason)` below `max-deliveries` | left pending |
//! | `Retry(reason)` at `max-deliveries` | dead-lettered, "gave up after N deliveries" |
//! | batch failed (error, panic, wrong number of outcomes) | every event left pending, or dead-lettered once at `max-deliveries` |
//! | lock lost while handling | nothing is committed |

use std::collections::BTreeMap;

use super::{BatchCounts, Decision, Outcome};
use crate::event::{EntryId, Event, NewEvent};
use crate::redis::commit::CommitBatch;

/// The reason given to an entry deleted while pending.
pub(super) const DELETED: &str = "deleted: the entry was deleted while pending (XDEL, or trimmed)";

/// The settings a decision depends on.
#[derive(Clone, Copy)]
pub(super) struct Rules<'a> {
    /// The group's outbox, for outputs to streams of another commit domain.
    pub(super) outbox: &'a str,
    /// True for a stream of another commit domain than the batch's.
    pub(super) is_remote: &'a (dyn Fn(&str) -> bool + Sync),
    /// The consumer group.
    pub(super) group: &'a str,
    /// Where dead-lettered entries go.
    pub(super) dead_letter_stream: &'a str,
    /// After this many deliveries an entry is dead-lettered.
    pub(super) max_deliveries: Option<u32>,
}

/// How the handler's call for the usable events of a batch ended.
#[derive(Debug)]
pub(super) enum Handled {
    /// There was nothing to hand over (every entry was hopeless).
    Nothing,
    /// The handler decided.
    Decided(Decision),
    /// The handler failed the batch: its metrics kind and the error.
    Failed {
        /// The metrics label (`error`, `trap`, `panic`, ...).
        kind: &'static str,
        /// The error, for logs and dead-letter reasons.
        error: String,
    },
    /// The consumer's lock was lost while the handler ran.
    LockLost,
}

/// Splits a batch into the entries the handler gets and those it never sees (deleted
/// while pending, or delivered more than `max_deliveries` times), each with its reason.
/// Order is kept in both.
pub(super) fn triage(
    batch: Vec<Event>,
    max_deliveries: Option<u32>,
) -> (Vec<Event>, Vec<(Event, String)>) {
    let hopeless = |e: &Event| -> Option<String> {
        if e.body.is_none() && e.meta.is_empty() {
            Some(DELETED.to_string())
        } else {
            max_deliveries
                .filter(|m| e.deliveries > *m)
                .map(|m| format!("delivered {} times (max-deliveries {m})", e.deliveries))
        }
    };
    if batch.iter().all(|e| hopeless(e).is_none()) {
        return (batch, Vec::new());
    }
    let mut usable = Vec::with_capacity(batch.len());
    let mut out = Vec::new();
    for event in batch {
        match hopeless(&event) {
            Some(reason) => out.push((event, reason)),
            None => usable.push(event),
        }
    }
    (usable, out)
}

/// Checks a handler's decision against the batch it was given: one outcome per event.
pub(super) fn check_decision(decision: Decision, events: usize) -> Handled {
    if decision.outcomes.len() == events {
        Handled::Decided(decision)
    } else {
        Handled::Failed {
            kind: "wrong_outcomes",
            error: format!(
                "the handler returned {} outcomes for {events} events",
                decision.outcomes.len()
            ),
        }
    }
}

/// What one batch commits, and what it did.
#[derive(Debug, Default)]
pub(super) struct Plan<'a> {
    /// Entries to acknowledge, per stream, in order.
    pub(super) acks: BTreeMap<&'a str, Vec<EntryId>>,
    /// Entries to copy to the dead-letter stream (and acknowledge), with the reason.
    pub(super) dead_letters: Vec<(&'a Event, String)>,
    /// The handler's publishes, in order.
    pub(super) publishes: Vec<NewEvent>,
    /// What the batch did, for metrics.
    pub(super) counts: BatchCounts,
    /// Events published per stream.
    pub(super) published: BTreeMap<String, u64>,
    /// Why the batch failed, if it did: (metrics kind, error).
    pub(super) failure: Option<(&'static str, String)>,
}

/// Decides what happens to every entry of a batch; `None` when the lock was lost and
/// nothing may be committed.
pub(super) fn decide<'a>(
    hopeless: &'a [(Event, String)],
    events: &'a [Event],
    handled: Handled,
    rules: Rules<'_>,
) -> Option<Plan<'a>> {
    let mut plan = Plan::default();
    for (event, reason) in hopeless {
        plan.dead_letters.push((event, reason.clone()));
        plan.counts.dead_lettered += 1;
    }
    plan.counts.handled = events.len() as u64;
    let at_max = |e: &Event| rules.max_deliveries.is_some_and(|m| e.deliveries >= m);
    match handled {
        Handled::LockLost => return None,
        Handled::Nothing => {}
        Handled::Decided(decision) => {
            for (event, outcome) in events.iter().zip(&decision.outcomes) {
                match outcome {
                    Outcome::Ack => {
                        plan.acks.entry(event.stream()).or_default().push(event.id);
                        plan.counts.acked += 1;
                    }
                    Outcome::DeadLetter(reason) => {
                        plan.dead_letters.push((event, reason.clone()));
                        plan.counts.dead_lettered += 1;
                    }
                    Outcome::Retry(reason) if at_max(event) => {
                        let reason =
                            format!("{reason} (gave up after {} deliveries)", event.deliveries);
                        plan.dead_letters.push((event, reason));
                        plan.counts.dead_lettered += 1;
                    }
                    Outcome::Retry(_) => plan.counts.retried += 1,
                }
            }
            for event in &decision.publishes {
                *plan
                    .published
                    .entry(event.stream().to_string())
                    .or_default() += 1;
            }
            plan.publishes = decision.publishes;
        }
        Handled::Failed { kind, error } => {
            for event in events {
                if at_max(event) {
                    let reason = format!("failed {} times, last: {error}", event.deliveries);
                    plan.dead_letters.push((event, reason));
                    plan.counts.dead_lettered += 1;
                } else {
                    plan.counts.retried += 1;
                }
            }
            plan.failure = Some((kind, error));
        }
    }
    Some(plan)
}

impl Plan<'_> {
    /// The commit of this plan: dead-letters first (each with its acknowledgement), then
    /// the acknowledgements per stream, then the publishes in the handler's order. Outputs
    /// to streams of another commit domain go to the outbox, naming their target.
    pub(super) fn commit(&self, rules: Rules<'_>) -> CommitBatch {
        let mut commit = CommitBatch::default();
        let via = |stream: &str| (rules.is_remote)(stream).then_some(rules.outbox);
        let dead_letter_via = via(rules.dead_letter_stream);
        for (event, reason) in &self.dead_letters {
            commit.dead_letter(
                rules.dead_letter_stream,
                rules.group,
                event,
                reason,
                dead_letter_via,
            );
        }
        for (stream, ids) in &self.acks {
            commit.ack(stream, rules.group, ids);
        }
        for event in &self.publishes {
            commit.publish(event, via(event.stream()));
        }
        commit
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
