//! Page views: counts meta-only events (`url`, `ip`) by URL. Per batch it publishes one
//! meta-only summary to `page-view-totals` (one pair per URL: url = views in the batch) and
//! logs the running totals this instance has seen.

// Components are built for wasm32-wasip2; on other targets the crate is empty, so the
// workspace still builds and tests natively.
#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::collections::BTreeMap;

use beehive_guest::{Error, Event, Outcome, Result, info, publish_meta};

thread_local! {
    static TOTALS: RefCell<BTreeMap<String, u64>> = const { RefCell::new(BTreeMap::new()) };
}

fn handle(events: &[Event]) -> Result<Vec<Outcome>> {
    let mut batch: BTreeMap<&str, u64> = BTreeMap::new();
    // A page view without a url is bad input: dead-lettered, never retried.
    let outcomes = Outcome::each(events, |event| match event.tag("url") {
        "" => Err(Error::bad_input("page view without a url")),
        url => {
            *batch.entry(url).or_default() += 1;
            Ok(Outcome::Ack)
        }
    })?;
    if !batch.is_empty() {
        let pairs: Vec<(&str, String)> =
            batch.iter().map(|(url, n)| (*url, n.to_string())).collect();
        // A refused publish fails (and retries) the batch.
        publish_meta("page-view-totals", &pairs)?;
        TOTALS.with(|totals| {
            let mut totals = totals.borrow_mut();
            for (url, n) in &batch {
                *totals.entry(url.to_string()).or_default() += n;
            }
            info!("page views so far: {totals:?}");
        });
    }
    Ok(outcomes)
}

beehive_guest::export_handler!(handle);
