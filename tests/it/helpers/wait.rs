//! Bounded polls: every wait in the suite has a count and a pause (or a time limit), so a
//! broken gateway fails a test instead of hanging it.

use std::time::Duration;

/// Polls `f` every 20 ms until it is true or `limit` passes; returns the last value.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`eventually`], asserted: panics with `what` if `f` is not true within `limit`.
pub async fn wait_for(what: &str, limit: Duration, f: impl FnMut() -> bool) {
    assert!(eventually(limit, f).await, "timed out waiting for {what}");
}

/// Runs `f` up to `tries` times, `pause` apart, until `done` holds for its value; returns the
/// last value either way, for the caller to assert on.
pub async fn retry<T>(
    tries: usize,
    pause: Duration,
    mut f: impl AsyncFnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let mut last = f().await;
    for _ in 1..tries {
        if done(&last) {
            break;
        }
        tokio::time::sleep(pause).await;
        last = f().await;
    }
    last
}
