//! Bounding the map: the periodic expiry sweep and the eviction an insert at the bound triggers.
//!
//! Kept apart from the claim operations because it follows other rules: it may scan every shard
//! (never under one shard's lock), and it may remove only what no one can lose (expired entries
//! and the oldest committed ones), never a held or reserved identity.
//!
//! The periodic sweep runs on a thread of its own at lowered priority (nice 9: it yields the CPU to
//! requests, see `lower_priority`), not on a worker, and takes one shard's write lock at a time
//! ([`super::SHARDS`] of them). Before, with 10 M entries, the sweep ran on worker 0 and
//! stalled every connection of that worker for its whole length, and each of dashmap's default 8
//! shards was locked for ≈ 1/8 of it against the other worker; on the blocking pool it still took
//! a full share of a busy core (BENCHMARKS.md, session 8: p99 during a sweep of 5 M expired
//! identities 7.8 × and 5.0 × the p99 without one). A sweeper starved by a saturated core only
//! delays expiry: the bound (`make_room`) still sweeps on the insert that reaches it.
//!
//! Evicting a delivered identity inside its TTL is a documented choice (docs/operations.md,
//! "Sizing"): the bound keeps the process alive, and the cost is that a repeat of the evicted
//! identity is forwarded again. It is never silent: each eviction is counted
//! ([`MemoryStore::evicted_live`], exported as `dedup_gateway_store_evicted_live_total`) and
//! logged as a warning that the bound is too small.

use std::{
    sync::{atomic::Ordering, mpsc::RecvTimeoutError},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use super::{
    MemoryStore, StoreError,
    slot::{Slot, State},
};

impl MemoryStore {
    /// Runs the expiry sweep every `interval` until `stop` is cancelled, on a thread of its own
    /// at lowered priority (see the module doc); the returned task ends the thread when `stop` is
    /// cancelled.
    pub fn spawn_sweeper(
        &self,
        interval: Duration,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        // Dropping the sender (when `stop` is cancelled) wakes the thread and ends it.
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("dedup-sweeper".into())
            .spawn(move || {
                lower_priority();
                while let Err(RecvTimeoutError::Timeout) = stop_rx.recv_timeout(interval) {
                    let removed = store.sweep_at(store.now());
                    if removed > 0 {
                        tracing::debug!(removed, "dedup sweep");
                    }
                }
            });
        if let Err(e) = &thread {
            tracing::error!(error = %e, "cannot start the dedup sweeper; expired identities are removed only at the bound");
        }
        tokio::spawn(async move {
            stop.cancelled().await;
            drop(stop_tx);
        })
    }

    /// Removes every entry expired at `now`; returns how many.
    pub fn sweep_at(&self, now: u64) -> usize {
        let before = self.inner.map.len();
        self.inner.map.retain(|_, v| Slot::unpack(*v).expires > now);
        let after = self.inner.map.len();
        self.inner.len.store(after, Ordering::Relaxed);
        before.saturating_sub(after)
    }

    /// Makes room for one insert when the map is at its bound.
    pub(super) fn make_room(&self, now: u64) -> Result<(), StoreError> {
        if self.inner.len.load(Ordering::Relaxed) < self.inner.max_entries {
            return Ok(());
        }
        self.sweep_at(now);
        if self.inner.map.len() < self.inner.max_entries {
            return Ok(());
        }
        // Evict the oldest ~1% of committed entries: one scan to find the expiry threshold.
        let mut expiries: Vec<u64> = self
            .inner
            .map
            .iter()
            .map(|e| Slot::unpack(*e.value()))
            .filter(|s| s.state == State::Committed)
            .map(|s| s.expires)
            .collect();
        if expiries.is_empty() {
            return Err(StoreError::Full);
        }
        let nth = (self.inner.max_entries / 100).clamp(1, expiries.len()) - 1;
        let (_, threshold, _) = expiries.select_nth_unstable(nth);
        let threshold = *threshold;
        let before = self.inner.map.len();
        self.inner.map.retain(|_, v| {
            let s = Slot::unpack(*v);
            s.state != State::Committed || s.expires > threshold
        });
        let after = self.inner.map.len();
        self.inner.len.store(after, Ordering::Relaxed);
        // Expired entries were swept just before: every one evicted here was still live.
        let evicted = before.saturating_sub(after) as u64;
        let total = self
            .inner
            .evicted_live
            .fetch_add(evicted, Ordering::Relaxed)
            .saturating_add(evicted);
        tracing::warn!(
            max_entries = self.inner.max_entries,
            evicted,
            evicted_total = total,
            "dedup store full: evicted delivered identities inside their TTL, whose repeats will be forwarded again; raise dedup.max_entries or lower dedup.ttl"
        );
        Ok(())
    }
}

/// Lowers the calling thread's priority (nice 9), best effort: where the system refuses, the
/// sweep runs at normal priority as before. Lowered, not idle (`SCHED_IDLE`, measured first): the
/// sweeper holds one shard's write lock at a time, and an idle-class holder preempted on a
/// saturated core gets ≈ 0.3 % of it, so a worker waiting on that shard would wait hundreds of
/// milliseconds; at nice 9 it gets ≈ 12 %, and a shard's ≈ 1 ms of work ends within ≈ 10 ms.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
            set_thread_priority_and_policy, thread_native_id,
        };
        let other = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other);
        // The crate's 0–99 scale, mapped to niceness 19..-20: 25 is nice 9.
        let r = ThreadPriorityValue::try_from(25u8)
            .map_err(|e| format!("{e:?}"))
            .and_then(|p| {
                set_thread_priority_and_policy(
                    thread_native_id(),
                    ThreadPriority::Crossplatform(p),
                    other,
                )
                .map_err(|e| format!("{e:?}"))
            });
        if let Err(e) = r {
            tracing::debug!(error = %e, "dedup sweeper keeps normal priority");
        }
    }
}
