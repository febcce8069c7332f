//! The delivery queue: spool ids in due order, and nothing else of the event.
//!
//! The queue holds only `(due, id, owner)`: the event itself stays on disk and is read when its
//! turn comes, so a long backlog (OSCAR down for hours) costs a few dozen bytes of memory per event,
//! not its body. (A record just admitted is also kept in memory for its first delivery, within a
//! fixed bound: [`super::handoff`].) A `Notify` wakes the dispatcher ([`super::worker`]) when
//! something earlier is pushed.

use std::{cmp::Reverse, collections::BinaryHeap, sync::Mutex};

use tokio::{sync::Notify, time::Instant};

use crate::identity::Owner;

/// One scheduled delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Due {
    pub at: Instant,
    pub id: u64,
    pub owner: Owner,
    /// A record that has yet to claim its identity: a held one after its grace, or one whose
    /// claim failed on a store error when it was accepted.
    pub claim: bool,
    /// Release `owner`'s entry before claiming: the claim at acceptance failed on a store error
    /// and may have taken effect unseen (see `DedupStore`). Sent after that failed command on the
    /// same connection, the release cannot be overtaken by it.
    pub release_first: bool,
}

/// The time-ordered queue. The std mutex is held only to push or pop, never across an await.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    heap: Mutex<BinaryHeap<Reverse<Due>>>,
    notify: Notify,
}

impl Queue {
    pub fn push(&self, due: Due) {
        if let Ok(mut h) = self.heap.lock() {
            h.push(Reverse(due));
        }
        self.notify.notify_one();
    }

    pub fn len(&self) -> usize {
        self.heap.lock().map(|h| h.len()).unwrap_or(0)
    }

    /// Waits for the earliest item to be due and takes it.
    pub(super) async fn next_due(&self) -> Due {
        loop {
            let next = {
                let Ok(mut h) = self.heap.lock() else {
                    return std::future::pending().await;
                };
                match h.peek() {
                    Some(Reverse(d)) if d.at <= Instant::now() => match h.pop() {
                        Some(Reverse(d)) => return d,
                        None => None,
                    },
                    Some(Reverse(d)) => Some(d.at),
                    None => None,
                }
            };
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.notify.notified() => {}
                    }
                }
                None => self.notify.notified().await,
            }
        }
    }
}
