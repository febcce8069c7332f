//! Spool mode on a shared store (local spool and JetStream; the property in `tests.rs` draws
//! these modes too): the smallest sequences for what the session-10 fixes changed, and for what
//! this model found open.

use super::{Action, Answer, Finding, Mode, World, net::REPAIR_WINDOW, shared::Old, tests::play};

use Action::{Advance, Copy, Crash, Step, StoreFault, StoreFaultAfterEffect};

fn run_old(mode: Mode, old: Old, minio_retries: bool, actions: &[Action]) -> World {
    let mut w = World::new(mode);
    w.old = old;
    w.minio_retries = minio_retries;
    play(w, actions)
}

/// A clean copy's delivery reaches OSCAR exactly once on each shared-store protocol.
#[test]
fn shared_store_happy_paths() {
    for mode in [
        Mode::Shared { fail_open: false },
        Mode::Jet { fail_open: false },
    ] {
        let w = run_old(mode, Old::default(), false, &[Copy { held: false }]);
        assert_eq!(w.deliveries, 1, "{mode:?}");
        assert_eq!(w.acked, [(0, "accepted")], "{mode:?}");
        assert_eq!(w.check(&[]), Ok(()));
    }
}

/// Session-10 fix, JetStream: the consumer handed the message to a worker before the request's
/// claim; the worker (after its one `CLAIM_WAIT`) reserved under a fresh token and its POST
/// failed; the claim then met that reservation. The old protocol deleted the message as a
/// duplicate's leftover and answered `duplicate`: the event was acknowledged and gone. Now the
/// message is kept, and delivered on its retry.
#[test]
fn model_shared_jet_claim_meets_the_workers_reservation() {
    let actions = [
        Copy { held: false },
        Step(0), // peek: free
        Step(0), // publish: the message is with the consumer (actor 1)
        Step(1), // handed out, nothing of its own to release, first delivery: NAK for CLAIM_WAIT
        Advance(super::jet::CLAIM_WAIT as u16),
        Step(1), // handed out again, release: nothing
        Step(1), // reserve under a fresh token
        Action::Oscar(Answer::Retry),
        Step(1), // POST fails: the identity goes back to the message's token, NAK
        Step(0), // the request's claim meets a reservation in flight
    ];
    let mode = Mode::Jet { fail_open: false };
    let w = run_old(mode, Old::default(), true, &actions);
    assert_eq!(w.acked, [(0, "duplicate")]);
    assert_eq!((w.deliveries, w.findings.as_slice()), (1, &[][..]));
    assert_eq!(w.check(&[]), Ok(()));
    let old = Old {
        delete_on_in_flight: true,
        ..Old::default()
    };
    let w = run_old(mode, old, true, &actions);
    assert_eq!(w.findings, [Finding::DuplicateBeforeDurable]);
    assert_eq!(w.deliveries, 0);
    assert!(w.check(&[]).is_err(), "the old protocol loses the event");
}

/// Session-10 fix, fail-open: the claim after the write timed out after it ran (an entry under
/// the request's token), and the repair's release never got through (the store stayed down past
/// `REPAIR_WINDOW`). The old protocol removed the record and forwarded from the request; that
/// forward failed (503), and MinIO's retries met the unseen claim: `duplicate`, for an event
/// nobody has. Now the record is kept and answered `accepted`, and the worker delivers it.
#[test]
fn model_shared_fail_open_claim_error_keeps_the_record() {
    let actions = [
        Copy { held: false },
        Step(0), // peek: free
        Step(0), // write
        StoreFaultAfterEffect,
        Action::Oscar(Answer::Retry),
        Step(0), // claim: ran, but the caller got an error (a repair release is scheduled)
        Step(0), // old: the forward from the request fails (503); fixed: the repair runs
        Advance(REPAIR_WINDOW as u16 + 1),
        Copy { held: false },
        Step(1), // old: the peek meets the unseen claim
    ];
    let mode = Mode::Shared { fail_open: true };
    let w = run_old(mode, Old::default(), true, &actions);
    assert_eq!(w.acked[0], (0, "accepted"));
    assert_eq!((w.deliveries, w.findings.as_slice()), (1, &[][..]));
    assert_eq!(w.check(&[]), Ok(()));
    let old = Old {
        forward_on_claim_error: true,
        ..Old::default()
    };
    let w = run_old(mode, old, true, &actions);
    assert_eq!(w.findings, [Finding::DuplicateBeforeDurable]);
    assert_eq!((w.deliveries, w.acked.len()), (0, 2));
    assert!(w.check(&[]).is_err(), "the old protocol loses the event");
}

/// Found by this model (shared store, fail-open, local spool), fixed in session 11: Redis fails
/// once during a restart's restore (here the record's own release; with `store_down` set by an
/// earlier record or a committed identity, not even that is tried). The old `defer_claim`
/// queued the record under a *fresh* token; Redis answers again before the worker's turn, the
/// worker wrote the fresh token over the record's own (`record_owner`), and `keep_reserved` found
/// the identity taken — by the record's own reservation from before the restart, which nothing
/// on disk named any more. A second restart within the retry horizon released the fresh token
/// (nothing) and reserved: `duplicate`, and the restore removed the acknowledged record. Now the
/// deferred record releases its own entry first and claims under its own token, as fail-closed.
#[test]
fn model_shared_fail_open_restore_releases_the_records_own_claim() {
    let actions = [
        Copy { held: false },
        Step(0), // peek
        Step(0), // write
        Step(0), // claim: accepted, reserved under the record's token for the horizon
        StoreFault,
        Crash,   // restore: the release fails → deferred
        Step(1), // the worker: old, the fresh token over the record's own; now, the release
        Crash,   // restore: old, release (nothing) + reserve → duplicate → record removed
    ];
    let mode = Mode::Shared { fail_open: true };
    let w = run_old(mode, Old::default(), true, &actions);
    assert_eq!(w.findings, []);
    assert_eq!(w.deliveries, 1);
    assert_eq!(w.check(&[]), Ok(()));
    let old = Old {
        fresh_defer: true,
        ..Old::default()
    };
    let w = run_old(mode, old, true, &actions);
    assert_eq!(w.findings, [Finding::RestoreOrphanedOwnClaim]);
    assert_eq!(w.deliveries, 0);
    assert!(w.check(&[]).is_err(), "the old protocol loses the event");
}
