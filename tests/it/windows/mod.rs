//! Issue 13: evidence for each reported window and contract departure, against today's code.
//!
//! One test per item of the issue (the item number is in each test's name and doc). A test that
//! shows the window happens asserts the behaviour the contract asks for and is marked
//! `#[ignore = "issue 13 item N: fails until fixed"]`, so the suite stays green and the fix turns
//! it on; a test for a window that does not happen passes and proves it. [`restart_kill`] holds the
//! `kill -9` variants of the restart tests that stop the gateway gracefully.
//!
//! Run the ignored ones with `cargo test --test it windows -- --ignored`.

mod redis_items;
mod restart_kill;
mod spool_items;
mod sync_items;

use std::time::Duration;

use serde_json::Value;

use crate::{crash::Bin, helpers::*};

/// The value of an unlabelled metric line of the binary's `/metrics` (-1 when absent).
pub(crate) async fn metric_of(gw: &Bin, name: &str) -> f64 {
    metric_value(&scrape_metrics(&gw.client, &gw.url("")).await, name).unwrap_or(-1.0)
}

/// 2xx deliveries of the identity `key` at the fake.
pub(crate) fn delivered(oscar: &FakeOscar, key: &str) -> usize {
    oscar
        .accepted()
        .iter()
        .filter(|r| r.headers.get("x-dedup-key").and_then(|v| v.to_str().ok()) == Some(key))
        .count()
}

/// The dedup key of a one-record answer.
pub(crate) fn key_of(answer: &Value) -> String {
    answer["results"][0]["key"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits (bounded, 5 s) until the gateway has *recorded* the delivery of `key` (the verdict history
/// shows a delivery time only after the spool wrote the outcome): past the crash window, a
/// kill no longer repeats it.
pub(crate) async fn recorded(gw: &Bin, key: &str) -> bool {
    for _ in 0..100 {
        let (_, v) = gw
            .admin(reqwest::Method::GET, &format!("/admin/verdicts?key={key}"))
            .await;
        if v.to_string().contains("\"delivered_at\":\"") {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Sleeps `d`: the quiet period after the expected outcome in which a late redelivery would show.
pub(crate) async fn quiet(d: Duration) {
    tokio::time::sleep(d).await;
}
