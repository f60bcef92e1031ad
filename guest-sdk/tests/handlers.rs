//! Handlers run natively through the same glue as the component's export, with the
//! `testing` fakes standing in for the host.

use beehive_guest::testing::{self, TestEvent, encode_batch};
use beehive_guest::{
    Error, ErrorKind, Event, Handler, Level, NO_META, Outcome, PANIC_PREFIX, Result, info, publish,
    publish_meta,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Color {
    color: String,
    price: f64,
}

fn router(events: &[Event]) -> Result<Vec<Outcome>> {
    Outcome::each(events, |event| {
        let color: Color = match event.tag("version") {
            "1" => event
                .unserialize()
                .map_err(|e| e.context("cannot decode v1 body"))?,
            other => {
                return Ok(Outcome::dead_letter(format_args!(
                    "unknown version {other:?}"
                )));
            }
        };
        info!("{} costs {}", color.color, color.price);
        publish("out", &color, &[("source-id", event.id())])?;
        Ok(Outcome::Ack)
    })
}

#[test]
fn each_acks_dead_letters_bad_input_and_fails_the_batch_on_other_errors() {
    testing::allow_publish(&["out"]);
    let red = Color {
        color: "red".into(),
        price: 1.5,
    };
    let batch = encode_batch(&[
        TestEvent::new("1-0", "in").body(&red).meta("version", "1"),
        TestEvent::new("1-1", "in").body(&red).meta("version", "3"),
        TestEvent::new("1-2", "in")
            .raw_body(&[0xC1])
            .meta("version", "1"),
        TestEvent::new("1-3", "in").meta("version", "1"),
    ]);
    let outcomes = testing::run(router, &batch).unwrap();
    assert_eq!(
        outcomes,
        [
            Outcome::Ack,
            Outcome::DeadLetter("unknown version \"3\"".into()),
            Outcome::DeadLetter(outcomes[2].reason().to_string()),
            Outcome::DeadLetter("cannot decode v1 body: the event has no body".into()),
        ]
    );
    assert!(outcomes[2].reason().starts_with("cannot decode v1 body: "));
    let published = testing::take_published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].unserialize::<Color>().unwrap(), red);
    assert_eq!(published[0].meta, [("source-id".into(), "1-0".into())]);
    assert_eq!(
        testing::take_logs(),
        [(Level::Info, "red costs 1.5".to_string())]
    );

    // A refused publish fails the whole batch, naming the event.
    testing::allow_publish(&["elsewhere"]);
    let err = testing::run(router, &batch).unwrap_err();
    assert_eq!(
        err,
        "event 1-0: publish to out: stream out is not in this group's publish allow-list"
    );
}

/// A helper trait so the test reads well.
trait Reason {
    fn reason(&self) -> &str;
}

impl Reason for Outcome {
    fn reason(&self) -> &str {
        match self {
            Outcome::Ack => "",
            Outcome::Retry(r) | Outcome::DeadLetter(r) => r,
        }
    }
}

#[test]
fn publish_errors_have_a_kind_and_name_the_stream() {
    testing::allow_any_publish();
    let err = publish_meta("x", NO_META).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Publish);
    assert_eq!(
        err.to_string(),
        "publish to x: event for stream x has neither body nor metadata"
    );
    let err = publish_meta("x", &[("s", "1")]).unwrap_err();
    assert!(err.message().contains("reserved"), "{err}");
    publish("x", &42u8, NO_META).unwrap();
    assert_eq!(testing::take_published()[0].body, Some(vec![42]));
}

#[test]
fn a_panic_becomes_the_batch_error_with_the_panic_prefix() {
    fn panics(events: &[Event]) -> Result<Vec<Outcome>> {
        if events[0].tag("do") == "panic" {
            panic!("asked to panic: {}", events[0].id());
        }
        Ok(Outcome::all_ack(events))
    }
    let batch = encode_batch(&[TestEvent::new("7-0", "in").meta("do", "panic")]);
    let err = testing::run(panics, &batch).unwrap_err();
    assert!(err.starts_with(PANIC_PREFIX), "{err}");
    assert!(
        err.starts_with("panic: asked to panic: 7-0 (at guest-sdk/tests/handlers.rs:"),
        "{err}"
    );
    // The same line went to the host's log, at error level, before anything else.
    assert_eq!(testing::take_logs(), [(Level::Error, err.clone())]);
    // The instance carries on.
    let ok = encode_batch(&[TestEvent::new("7-1", "in").meta("do", "nothing")]);
    assert_eq!(testing::run(panics, &ok), Ok(vec![Outcome::Ack]));
}

#[test]
fn a_malformed_batch_fails_with_the_decoder_message() {
    fn never(_: &[Event]) -> Result<Vec<Outcome>> {
        unreachable!()
    }
    let err = testing::run(never, &[1, 0, 0]).unwrap_err();
    assert_eq!(err, "malformed event batch at byte 0: truncated");
}

#[test]
fn outcome_helpers() {
    assert_eq!(Outcome::retry(3), Outcome::Retry("3".into()));
    assert_eq!(Outcome::dead_letter("x"), Outcome::DeadLetter("x".into()));
    assert!(Outcome::Ack.is_ack());
    assert_eq!(
        Outcome::ack_or_dead_letter(Ok::<_, Error>(())),
        Outcome::Ack
    );
    assert_eq!(
        Outcome::ack_or_dead_letter(Err::<(), _>("bad")),
        Outcome::DeadLetter("bad".into())
    );
    assert_eq!(
        Outcome::ack_or_retry(Err::<(), _>(Error::msg("later"))),
        Outcome::Retry("later".into())
    );
}

#[test]
fn event_methods_borrow_from_the_batch() {
    let bytes = encode_batch(&[TestEvent::new("1-0", "s")
        .body(&("borrowed", 2))
        .meta("a", "1")
        .meta("a", "2")
        .deliveries(3)]);
    let batch = beehive_guest::Batch::decode(&bytes).unwrap();
    let event = batch.events()[0];
    let (text, n): (&str, u8) = event.unserialize().unwrap();
    assert_eq!((text, n), ("borrowed", 2));
    assert_eq!(event.tag("a"), "1");
    assert_eq!(event.try_tag("b"), None);
    assert_eq!(
        event.require_tag("b").unwrap_err().to_string(),
        "the event has no \"b\" tag"
    );
    assert!(event.is_redelivery());
    let err = event.unserialize::<bool>().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadInput);
}

/// The earlier API: a unit struct implementing `Handler`, the `EventExt` import, `String`
/// errors; `?` on the SDK's calls converts.
mod legacy {
    use beehive_guest::{Event, EventExt, Handler, Outcome, publish_meta};

    pub struct Old;

    impl Handler for Old {
        fn handle(events: &[Event]) -> Result<Vec<Outcome>, String> {
            for event in events {
                publish_meta("receipts", &[("of", event.id()), ("tag", event.tag("t"))])?;
            }
            Ok(Outcome::all_ack(events))
        }
    }
}

#[test]
fn the_legacy_handler_trait_still_works() {
    testing::allow_any_publish();
    let batch = encode_batch(&[TestEvent::new("1-0", "s").meta("t", "x")]);
    let batch = beehive_guest::Batch::decode(&batch).unwrap();
    assert_eq!(
        <legacy::Old as Handler>::handle(&batch.events()),
        Ok(vec![Outcome::Ack])
    );
    assert_eq!(testing::take_published().len(), 1);
}
