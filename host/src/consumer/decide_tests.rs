//! Unit tests of [`super::decide`]: one per branch of the decision table.
use super::*;

fn local(_: &str) -> bool {
    false
}

const RULES: Rules<'static> = Rules {
    outbox: "beehive:outbox:g",
    is_remote: &local,
    group: "g",
    dead_letter_stream: "g-dead",
    max_deliveries: Some(3),
};

fn event(stream: &str, seq: u64, deliveries: u32) -> Event {
    Event::new(
        stream,
        EntryId { ms: 1, seq },
        Some(vec![0xa1, b'x']),
        vec![("k".into(), "v".into())],
    )
    .with_deliveries(deliveries)
}

fn deleted(seq: u64) -> Event {
    Event::new("a", EntryId { ms: 1, seq }, None, Vec::new())
}

fn decision(outcomes: Vec<Outcome>) -> Handled {
    Handled::Decided(Decision {
        outcomes,
        publishes: Vec::new(),
    })
}

fn reasons<'a>(plan: &'a Plan<'_>) -> Vec<(u64, &'a str)> {
    plan.dead_letters
        .iter()
        .map(|(e, r)| (e.id.seq, r.as_str()))
        .collect()
}

#[test]
fn triage_keeps_order_and_sets_aside_deleted_and_exhausted_entries() {
    let batch = vec![
        event("a", 1, 1),
        deleted(2),
        event("a", 3, 4),
        event("a", 4, 3),
    ];
    let (usable, hopeless) = triage(batch, Some(3));
    assert_eq!(usable.iter().map(|e| e.id.seq).collect::<Vec<_>>(), [1, 4]);
    assert_eq!(hopeless.len(), 2);
    assert_eq!((hopeless[0].0.id.seq, hopeless[0].1.as_str()), (2, DELETED));
    assert!(hopeless[0].1.starts_with("deleted"));
    assert_eq!(hopeless[1].1, "delivered 4 times (max-deliveries 3)");
}

#[test]
fn triage_without_max_deliveries_never_gives_up() {
    let (usable, hopeless) = triage(vec![event("a", 1, 1000)], None);
    assert_eq!(usable.len(), 1);
    assert!(hopeless.is_empty());
}

#[test]
fn hopeless_entries_are_dead_lettered_even_when_nothing_is_handled() {
    let (usable, hopeless) = triage(vec![deleted(1)], Some(3));
    let plan = decide(&hopeless, &usable, Handled::Nothing, RULES).unwrap();
    assert_eq!(reasons(&plan), [(1, DELETED)]);
    assert_eq!(
        plan.counts,
        BatchCounts {
            dead_lettered: 1,
            ..BatchCounts::default()
        }
    );
}

#[test]
fn acks_are_grouped_per_stream_in_order() {
    let events = [event("a", 1, 1), event("b", 2, 1), event("a", 3, 1)];
    let plan = decide(&[], &events, decision(vec![Outcome::Ack; 3]), RULES).unwrap();
    assert_eq!(
        plan.acks["a"],
        [EntryId { ms: 1, seq: 1 }, EntryId { ms: 1, seq: 3 }]
    );
    assert_eq!(plan.acks["b"], [EntryId { ms: 1, seq: 2 }]);
    assert_eq!(plan.counts.acked, 3);
    assert_eq!(plan.counts.handled, 3);
    assert!(plan.dead_letters.is_empty() && plan.failure.is_none());
}

#[test]
fn each_outcome_has_its_effect() {
    let events = [
        event("a", 1, 1),
        event("a", 2, 1),
        event("a", 3, 1),
        event("a", 4, 3),
    ];
    let outcomes = vec![
        Outcome::Ack,
        Outcome::DeadLetter("bad color".into()),
        Outcome::Retry("later".into()),
        Outcome::Retry("still not".into()),
    ];
    let plan = decide(&[], &events, decision(outcomes), RULES).unwrap();
    assert_eq!(plan.acks["a"], [EntryId { ms: 1, seq: 1 }]);
    assert_eq!(
        reasons(&plan),
        [
            (2, "bad color"),
            (4, "still not (gave up after 3 deliveries)")
        ]
    );
    assert_eq!(
        plan.counts,
        BatchCounts {
            handled: 4,
            acked: 1,
            retried: 1,
            dead_lettered: 2
        }
    );
}

#[test]
fn a_failed_batch_stays_pending_except_what_reached_max_deliveries() {
    let events = [event("a", 1, 1), event("a", 2, 3)];
    let failed = Handled::Failed {
        kind: "trap",
        error: "wasm trap: unreachable".into(),
    };
    let plan = decide(&[], &events, failed, RULES).unwrap();
    assert!(plan.acks.is_empty());
    assert_eq!(
        reasons(&plan),
        [(2, "failed 3 times, last: wasm trap: unreachable")]
    );
    assert_eq!(plan.counts.retried, 1);
    assert_eq!(
        plan.failure,
        Some(("trap", "wasm trap: unreachable".into()))
    );
}

#[test]
fn a_failed_batch_without_max_deliveries_is_all_retried() {
    let rules = Rules {
        max_deliveries: None,
        ..RULES
    };
    let events = [event("a", 1, 50)];
    let failed = Handled::Failed {
        kind: "panic",
        error: "boom".into(),
    };
    let plan = decide(&[], &events, failed, rules).unwrap();
    assert!(plan.dead_letters.is_empty());
    assert_eq!(plan.counts.retried, 1);
}

#[test]
fn the_wrong_number_of_outcomes_fails_the_batch() {
    let handled = check_decision(Decision::ack_all(1), 2);
    let Handled::Failed { kind, error } = &handled else {
        panic!("expected a failure, got {handled:?}");
    };
    assert_eq!(*kind, "wrong_outcomes");
    assert_eq!(error, "the handler returned 1 outcomes for 2 events");
    assert!(matches!(
        check_decision(Decision::ack_all(2), 2),
        Handled::Decided(_)
    ));
    let events = [event("a", 1, 1), event("a", 2, 1)];
    let plan = decide(&[], &events, handled, RULES).unwrap();
    assert!(plan.acks.is_empty());
    assert_eq!(plan.counts.retried, 2);
}

#[test]
fn a_lost_lock_commits_nothing() {
    let events = [event("a", 1, 1)];
    let (usable, hopeless) = triage(vec![deleted(2)], Some(3));
    assert!(usable.is_empty());
    assert!(decide(&hopeless, &events, Handled::LockLost, RULES).is_none());
}

#[test]
fn publishes_are_kept_in_order_and_counted_per_stream() {
    let events = [event("a", 1, 1)];
    let publishes = vec![
        NewEvent::new("x", None, vec![("n".into(), "1".into())]).unwrap(),
        NewEvent::new("y", None, vec![("n".into(), "2".into())]).unwrap(),
        NewEvent::new("x", None, vec![("n".into(), "3".into())]).unwrap(),
    ];
    let handled = Handled::Decided(Decision {
        outcomes: vec![Outcome::Ack],
        publishes,
    });
    let plan = decide(&[], &events, handled, RULES).unwrap();
    let streams: Vec<&str> = plan.publishes.iter().map(|e| e.stream()).collect();
    assert_eq!(streams, ["x", "y", "x"]);
    assert_eq!(plan.published["x"], 2);
    assert_eq!(plan.published["y"], 1);
}

#[test]
fn publishes_of_a_failed_batch_are_dropped() {
    let events = [event("a", 1, 1)];
    let failed = Handled::Failed {
        kind: "error",
        error: "no".into(),
    };
    let plan = decide(&[], &events, failed, RULES).unwrap();
    assert!(plan.publishes.is_empty() && plan.published.is_empty());
}

#[test]
fn the_commit_holds_dead_letters_acks_and_publishes_in_that_order() {
    let events = [event("a", 1, 1), event("a", 2, 1)];
    let handled = Handled::Decided(Decision {
        outcomes: vec![Outcome::Ack, Outcome::DeadLetter("bad".into())],
        publishes: vec![NewEvent::new("out", Some(vec![0xc0]), Vec::new()).unwrap()],
    });
    let plan = decide(&[], &events, handled, RULES).unwrap();
    let ops = plan.commit(RULES).describe();
    assert_eq!(
        ops,
        [
            "A g-dead s \u{fffd}x k v beehive.origin-stream a beehive.origin-id 1-2 beehive.group g beehive.reason bad beehive.deliveries 1",
            "K a g 1-2",
            "K a g 1-1",
            "A out s \u{fffd}",
        ]
    );
}

#[test]
fn an_empty_plan_commits_nothing() {
    let plan = decide(&[], &[], Handled::Nothing, RULES).unwrap();
    assert!(plan.commit(RULES).is_empty());
}

#[test]
fn outputs_to_another_domain_go_through_the_outbox() {
    let far = |stream: &str| stream == "far" || stream == "g-dead";
    let rules = Rules {
        is_remote: &far,
        ..RULES
    };
    let events = [event("a", 1, 1), event("a", 2, 1)];
    let handled = Handled::Decided(Decision {
        outcomes: vec![Outcome::Ack, Outcome::DeadLetter("bad".into())],
        publishes: vec![
            NewEvent::new("near", None, vec![("n".into(), "1".into())]).unwrap(),
            NewEvent::new("far", None, vec![("n".into(), "2".into())]).unwrap(),
        ],
    });
    let plan = decide(&[], &events, handled, rules).unwrap();
    let ops = plan.commit(rules).describe();
    assert!(
        ops[0].starts_with("A beehive:outbox:g beehive.target g-dead "),
        "{ops:?}"
    );
    assert_eq!(ops[1], "K a g 1-2");
    assert_eq!(ops[2], "K a g 1-1");
    assert_eq!(ops[3], "A near n 1");
    assert_eq!(ops[4], "A beehive:outbox:g beehive.target far n 2");
}
