//! Unit tests of the writer: group commit, limits, disk failures and what a reopen finds; the
//! journal's own (segments, recovery, a model of the ops across restarts) in [`journal`].

mod harness;
mod journal;

use std::sync::Arc;

use harness::{Harness, entry};

use super::{
    SpoolError,
    io::FaultSwitch,
    unix_ms,
    writer::{self, Op},
};
use crate::identity::DedupKey;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let (h, _) = Harness::start(&path, &FaultSwitch::new(), 10_000);
    let h = Arc::new(h);
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.submit(Op::Append(entry(i as u8))).await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap());
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 200, "every append gets its own id");
    let (sum, count) = (
        h.metric("spool_fsync_batch_size_sum"),
        h.metric("spool_fsync_batch_size_count"),
    );
    assert_eq!(sum, 200.0);
    assert!(
        count < 200.0,
        "some commits carried several appends: {count} commits"
    );
    assert_eq!(
        h.shared.depth.load(std::sync::atomic::Ordering::Relaxed),
        200
    );
    Arc::try_unwrap(h).ok().unwrap().stop().await;
}

#[tokio::test]
async fn limits_refuse_only_the_op_that_overflows() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = Harness::start(&dir.path().join("s.redb"), &FaultSwitch::new(), 2);
    let a = h.submit(Op::Append(entry(1))).await.unwrap();
    h.submit(Op::Append(entry(2))).await.unwrap();
    assert!(matches!(
        h.submit(Op::Append(entry(3))).await,
        Err(SpoolError::Full)
    ));
    h.submit(Op::Remove { id: a }).await.unwrap();
    h.submit(Op::Append(entry(3))).await.unwrap();
    assert!(matches!(
        h.submit(Op::Remove { id: 999 }).await,
        Err(SpoolError::NotFound)
    ));
    h.stop().await;
}

/// A failing disk fails every op of the batch; once it recovers the writer reopens and everything
/// committed before the failure is still there.
#[tokio::test]
async fn disk_failure_fails_the_batch_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let faults = FaultSwitch::new();
    let (h, _) = Harness::start(&path, &faults, 100);
    let kept = h.submit(Op::Append(entry(1))).await.unwrap();
    faults.fail_writes(true);
    assert!(matches!(
        h.submit(Op::Append(entry(2))).await,
        Err(SpoolError::Write(_))
    ));
    assert!(matches!(
        h.submit(Op::Probe).await,
        Err(SpoolError::Write(_))
    ));
    assert!(!h.shared.healthy.load(std::sync::atomic::Ordering::SeqCst));
    faults.fail_writes(false);
    h.submit(Op::Probe).await.unwrap();
    assert!(h.shared.healthy.load(std::sync::atomic::Ordering::SeqCst));
    let second = h.submit(Op::Append(entry(3))).await.unwrap();
    h.stop().await;
    let (h, opened) = Harness::start(&path, &faults, 100);
    let ids: Vec<u64> = opened.events.iter().map(|e| e.id).collect();
    assert_eq!(
        ids,
        vec![kept, second],
        "the refused append is not on disk, the others are"
    );
    h.stop().await;
}

/// What a restart finds: delivered identities (until they expire), not the delivered events;
/// dead letters keep their id.
#[tokio::test]
async fn reopen_finds_committed_identities_and_undelivered_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let faults = FaultSwitch::new();
    let (h, _) = Harness::start(&path, &faults, 100);
    let delivered = h.submit(Op::Append(entry(1))).await.unwrap();
    let waiting = h.submit(Op::Append(entry(2))).await.unwrap();
    let dead = h.submit(Op::Append(entry(3))).await.unwrap();
    let expired = h.submit(Op::Append(entry(4))).await.unwrap();
    let now = unix_ms();
    h.submit(Op::Delivered {
        id: delivered,
        key: DedupKey([1; 16]),
        expires_ms: now + 60_000,
    })
    .await
    .unwrap();
    h.submit(Op::Delivered {
        id: expired,
        key: DedupKey([4; 16]),
        expires_ms: now.saturating_sub(1),
    })
    .await
    .unwrap();
    h.submit(Op::Dead {
        id: dead,
        entry: entry(3),
    })
    .await
    .unwrap();
    h.stop().await;

    let (h, opened) = Harness::start(&path, &faults, 100);
    assert_eq!(opened.committed.len(), 1, "the expired identity was swept");
    assert_eq!(opened.committed[0].0, DedupKey([1; 16]));
    let ids: Vec<u64> = opened.events.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![waiting]);
    assert_eq!(
        opened.shared.dlq.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(
        opened.next_id > expired,
        "ids are never reused while entries exist"
    );
    let (page, total, _) = writer::dlq_page(&h.shared, None, 10).unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(total, 1);
    assert_eq!(page[0].0, dead);
    h.submit(Op::Revive {
        id: dead,
        entry: entry(3),
    })
    .await
    .unwrap();
    assert!(writer::load(&h.shared, false, dead).is_ok());
    assert!(matches!(
        writer::load(&h.shared, true, dead),
        Err(SpoolError::NotFound)
    ));
    h.stop().await;
}
