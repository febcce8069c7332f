//! Shadow mode: forward everything, count what the gateway would have changed.
//!
//! Operators put the gateway in front of OSCAR in `mode = "shadow"` before trusting it: every POST
//! goes to OSCAR as received (one upstream POST per inbound POST, body and `Authorization`
//! untouched, no retries) and MinIO gets OSCAR's status back, as from a plain proxy (503 when OSCAR
//! could not be reached). Meanwhile each record is judged exactly as sync mode would judge it and
//! the *would-be* verdict is counted in `dedup_gateway_shadow_verdicts_total{verdict,would_drop}`,
//! logged with `would_drop=true|false`, recorded in the verdict history, and returned in the
//! answer's `results`.
//!
//! # Same store semantics, nothing dropped
//! Would-be duplicates come from the real dedup store with sync mode's two-phase marking, so the
//! counts match what sync mode would drop on the same input:
//! - a record sync mode would forward is *reserved* before the POST, *committed* when OSCAR
//!   answers 2xx and *released* otherwise (MinIO's retry is then judged afresh, as in sync mode);
//! - a PENDING-marked record is *held*; when the grace ends a timer claims and commits it, as sync
//!   mode's held delivery would, unless a clean copy preempted it meanwhile (counted in
//!   `dedup_gateway_shadow_held_superseded_total`). The held copy was already forwarded with its
//!   POST, so the timer never sends anything;
//! - a dedup-store failure gives the verdict `on_store_error` would give, and the POST is
//!   forwarded all the same.
//!
//! One difference cannot be avoided: when OSCAR fails a POST, MinIO retries it, and the retry is
//! judged again. For a record sync mode would forward that matches (its reservation was released);
//! for a held record sync mode would have answered 2xx and seen no retry, so the retry adds one
//! would-be `duplicate`.
//!
//! The HTTP edge (body limit, content type, inbound tokens) still applies: those guard the gateway
//! itself and are not dedup decisions. A body that is not a MinIO envelope is forwarded too and
//! counted once as `invalid`. `dedup_gateway_records_total` counts what actually happened to each
//! record (`forwarded`, or `failed` when OSCAR did not accept the POST).

use std::{borrow::Cow, time::SystemTime};

use super::{
    Answer, Gateway, Inbound, RecordResult, Verdict,
    key::DedupKey,
    parse::{self, Record},
    policy::Ruling,
};
use crate::{
    config::OnStoreError,
    deliver::{Delivery, Outcome},
    history,
    identity::{Owner, new_owner},
    store::{Claim, DedupStore, StoreError},
};

/// Verdicts with which sync mode would not forward the record; see [`Verdict::would_drop`].
pub fn would_drop(v: Verdict) -> bool {
    v.would_drop()
}

/// A record's would-be verdict before the POST; reservations are settled after it.
enum Judged {
    Done(Verdict, Cow<'static, str>, Option<DedupKey>),
    /// Reserved; forwarded or failed depending on OSCAR's answer.
    Reserved {
        key: DedupKey,
        owner: Owner,
        preempted: bool,
    },
}

impl Gateway {
    /// Shadow mode's handling of one POST (see the module doc): judge every record as sync mode
    /// would, forward the POST as received, then settle and report each would-be verdict.
    pub(super) async fn shadow(&self, req: Inbound) -> Answer {
        let seen = SystemTime::now();
        // The same bound as sync mode: a body over `http.max_records` would be refused whole.
        let limit = self.inner.cfg.http.max_records;
        let env = parse::envelope(&req.body).and_then(|env| match env.records.len() {
            n if n > limit => Err(parse::EnvelopeError::TooManyRecords { count: n, limit }),
            _ => Ok(env),
        });
        let env = match env {
            Ok(env) => env,
            Err(e) => return self.shadow_invalid(&req, &e).await,
        };
        let judged = self.shadow_judge_all(&req, &env.records).await;
        let header_key = judged
            .iter()
            .find_map(|(_, j)| match j {
                Judged::Done(_, _, k) => *k,
                Judged::Reserved { key, .. } => Some(*key),
            })
            .unwrap_or(DedupKey([0; 16]));
        let outcome = self.shadow_send(&req, header_key).await;
        let delivered_at = outcome.is_delivered().then(SystemTime::now);
        let mut results = Vec::with_capacity(judged.len());
        for (rec, j) in judged {
            let (verdict, reason, key) = self.settle(j, &outcome).await;
            let result = RecordResult {
                verdict,
                reason,
                key,
            };
            self.shadow_report(&req, rec.as_ref(), &result, &outcome, seen, delivered_at);
            results.push(result);
        }
        Answer {
            results,
            status: status_of(&outcome),
        }
    }

    /// A body that is not a MinIO envelope: forwarded all the same, counted once as `invalid`.
    async fn shadow_invalid(&self, req: &Inbound, e: &parse::EnvelopeError) -> Answer {
        let outcome = self.shadow_send(req, DedupKey([0; 16])).await;
        self.inner.metrics.shadow_verdict(Verdict::Invalid);
        tracing::info!(mode = "shadow", verdict = "invalid", would_drop = true, service = %req.service, reason = %e, "shadow decision");
        let results = vec![RecordResult {
            verdict: Verdict::Invalid,
            reason: Cow::Owned(e.to_string()),
            key: None,
        }];
        Answer {
            results,
            status: status_of(&outcome),
        }
    }

    /// Every record judged as sync mode would, up to the send (`None`: the record did not parse).
    async fn shadow_judge_all<'b>(
        &self,
        req: &Inbound,
        records: &'b [&'b serde_json::value::RawValue],
    ) -> Vec<(Option<Record<'b>>, Judged)> {
        let scope = self.inner.keys.scope(
            &req.service,
            req.authorization.as_ref().map(|h| h.as_bytes()),
        );
        let mut judged = Vec::with_capacity(records.len());
        for raw in records {
            match parse::record(raw) {
                Ok(rec) => {
                    let j = self.shadow_judge(req, &scope, &rec).await;
                    judged.push((Some(rec), j));
                }
                Err(e) => judged.push((
                    None,
                    Judged::Done(Verdict::Invalid, Cow::Owned(e.to_string()), None),
                )),
            }
        }
        judged
    }

    /// The counts, the log line and the history entry of one record's would-be verdict.
    fn shadow_report(
        &self,
        req: &Inbound,
        rec: Option<&Record<'_>>,
        r: &RecordResult,
        outcome: &Outcome,
        seen: SystemTime,
        delivered_at: Option<SystemTime>,
    ) {
        self.inner.metrics.shadow_verdict(r.verdict);
        self.inner.metrics.verdict(if outcome.is_delivered() {
            Verdict::Forwarded
        } else {
            Verdict::Failed
        });
        log_shadow(r.verdict, &r.reason, &req.service, rec, r.key.as_ref());
        if let Some(rec) = rec
            && self.inner.history.is_enabled()
        {
            let delivered = delivered_at.filter(|_| r.verdict == Verdict::Forwarded);
            let d = history::Decision::new(
                super::report::subject(&req.service, rec),
                r.key,
                r.verdict,
                r.reason.clone(),
            )
            .seen_at(seen)
            .delivered_at(delivered, u32::from(delivered.is_some()));
            self.inner.history.record(d);
        }
    }

    /// Sync mode's decision up to the point where it would send.
    async fn shadow_judge(
        &self,
        req: &Inbound,
        scope: &super::key::RequestScope,
        rec: &Record<'_>,
    ) -> Judged {
        let available_on = self.inner.cfg.service(&req.service).available_on;
        let (class, hold) = match self.inner.policy.decide(rec, available_on) {
            Ruling::Final(v, reason) => {
                let verdict = Verdict::from(v);
                return Judged::Done(verdict, Cow::Borrowed(reason), None);
            }
            Ruling::Forward(c) => (c, false),
            Ruling::Hold(c) => (c, true),
        };
        let key = self.inner.keys.key(scope, rec, class);
        let owner = new_owner();
        let store = &self.inner.store;
        if hold {
            return match store.hold(&key, owner, self.inner.held.hold_lease()).await {
                Ok(Claim::Acquired | Claim::Preempted) => {
                    self.shadow_hold_timer(key, owner);
                    Judged::Done(
                        Verdict::Held,
                        Cow::Borrowed("replication-pending"),
                        Some(key),
                    )
                }
                Ok(Claim::Duplicate(existing)) => Judged::Done(
                    Verdict::Duplicate,
                    Cow::Borrowed(existing.reason()),
                    Some(key),
                ),
                Err(e) => self.shadow_store_error(e, key),
            };
        }
        match store.reserve(&key, owner, self.inner.cfg.dedup.lease).await {
            Ok(Claim::Acquired) => Judged::Reserved {
                key,
                owner,
                preempted: false,
            },
            Ok(Claim::Preempted) => Judged::Reserved {
                key,
                owner,
                preempted: true,
            },
            Ok(Claim::Duplicate(existing)) => Judged::Done(
                Verdict::Duplicate,
                Cow::Borrowed(existing.reason()),
                Some(key),
            ),
            Err(e) => self.shadow_store_error(e, key),
        }
    }

    fn shadow_store_error(&self, e: StoreError, key: DedupKey) -> Judged {
        self.inner.metrics.store_error();
        tracing::warn!(mode = "shadow", dedup_key = %key, error = %e, "dedup store failed");
        match (self.inner.cfg.dedup.on_store_error, &e) {
            (OnStoreError::FailOpen, StoreError::Unavailable(_)) => Judged::Done(
                Verdict::Forwarded,
                Cow::Borrowed("fail-open-unchecked"),
                Some(key),
            ),
            _ => Judged::Done(
                Verdict::Failed,
                Cow::Borrowed("dedup-store-unavailable"),
                Some(key),
            ),
        }
    }

    /// Commits or releases a reservation once OSCAR answered, as sync mode would.
    async fn settle(
        &self,
        j: Judged,
        outcome: &Outcome,
    ) -> (Verdict, Cow<'static, str>, Option<DedupKey>) {
        let (key, owner, preempted) = match j {
            Judged::Done(v, r, k) => return (v, r, k),
            Judged::Reserved {
                key,
                owner,
                preempted,
            } => (key, owner, preempted),
        };
        let store = &self.inner.store;
        if outcome.is_delivered() {
            if let Err(e) = store.commit(&key, owner, self.inner.cfg.dedup.ttl).await {
                self.inner.metrics.store_error();
                tracing::warn!(mode = "shadow", dedup_key = %key, error = %e, "delivered but the commit failed");
            }
            let reason = if preempted {
                "clean-copy-preempted-held"
            } else {
                "delivered"
            };
            return (Verdict::Forwarded, Cow::Borrowed(reason), Some(key));
        }
        if let Err(e) = store.release(&key, owner).await {
            self.inner.metrics.store_error();
            tracing::warn!(mode = "shadow", dedup_key = %key, error = %e, "could not release; the lease will");
        }
        (Verdict::Failed, Cow::Owned(outcome.describe()), Some(key))
    }

    /// One POST to OSCAR with the body as received.
    async fn shadow_send(&self, req: &Inbound, key: DedupKey) -> Outcome {
        let delivery = Delivery {
            service: req.service.clone(),
            authorization: req.authorization.clone(),
            body: req.body.clone(),
            key,
        };
        self.inner.forwarder.send(&delivery).await
    }

    /// After the grace, turns the hold into a delivered identity, as sync mode's held delivery
    /// would; a clean copy that preempted the hold meanwhile makes this copy a would-be drop.
    /// The task owns clones of the store and metrics and ends after one grace.
    fn shadow_hold_timer(&self, key: DedupKey, owner: Owner) {
        let store = self.inner.store.clone();
        let metrics = self.inner.metrics.clone();
        let grace = self.inner.cfg.policy.pending_grace;
        let lease = self.inner.cfg.dedup.lease;
        let ttl = self.inner.cfg.dedup.ttl;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            match store.claim_held(&key, owner, lease).await {
                Ok(true) => {
                    if let Err(e) = store.commit(&key, owner, ttl).await {
                        metrics.store_error();
                        tracing::warn!(mode = "shadow", dedup_key = %key, error = %e, "cannot commit held copy");
                    }
                }
                Ok(false) => {
                    metrics.shadow_held_superseded();
                    tracing::info!(mode = "shadow", dedup_key = %key, would_drop = true, "held copy would have been superseded by a clean copy");
                }
                Err(e) => {
                    metrics.store_error();
                    tracing::warn!(mode = "shadow", dedup_key = %key, error = %e, "cannot claim held copy");
                }
            }
        });
    }
}

/// MinIO gets OSCAR's status, or 503 when OSCAR gave none.
fn status_of(outcome: &Outcome) -> u16 {
    match outcome {
        Outcome::Delivered { status } | Outcome::Permanent { status, .. } => *status,
        Outcome::Retryable {
            status: Some(s), ..
        } => *s,
        Outcome::Retryable { status: None, .. } => 503,
    }
}

fn log_shadow(
    verdict: Verdict,
    reason: &str,
    service: &str,
    rec: Option<&Record<'_>>,
    key: Option<&DedupKey>,
) {
    tracing::info!(
        mode = "shadow",
        verdict = verdict.as_str(),
        would_drop = verdict.would_drop(),
        reason,
        service,
        // `&str`, not `display`: quoted and escaped in text logs (no forged lines from a key).
        event = rec.map(|r| r.event_name.as_ref()),
        bucket = rec.map(|r| r.bucket.as_ref()),
        object = rec.map(|r| r.key.as_str()),
        version = rec.map(|r| r.version.as_ref()),
        dedup_key = key.map(tracing::field::display),
        "shadow decision"
    );
}
