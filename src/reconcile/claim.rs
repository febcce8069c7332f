//! The hand-off of one listed version: its body through [`crate::pipeline::Gateway::handle`]
//! (or, for a dry run, the same identity, and for an unversioned object its alias, looked up
//! with a read-only `peek`).
//!
//! It runs in a task of its own per version (at most `concurrency` at once), holding only cheap
//! clones, so a pass's page loop never waits on one slow delivery more than it must.

use reqwest::header::HeaderValue;

use super::{Reconciler, body, xml::Listed};
use crate::{
    pipeline::{
        Inbound, Verdict,
        parse::{self, Records},
        policy::Ruling,
    },
    store::DedupStore,
};

/// The per-version result of handing one body to the pipeline.
pub(super) struct Handled {
    pub entry: Listed,
    pub event: &'static str,
    /// The verdict and the dedup key, or why none could be had.
    pub verdict: Result<(Verdict, String), String>,
}

/// What a spawned per-version task needs (all cheap clones).
pub(super) struct Parts {
    service: String,
    bucket: String,
    authorization: HeaderValue,
    gateway: crate::pipeline::Gateway,
    keys: crate::pipeline::key::KeyDeriver,
    policy: std::sync::Arc<crate::pipeline::policy::Policy>,
}

impl Reconciler {
    pub(super) fn clone_parts(&self) -> Parts {
        Parts {
            service: self.service.clone(),
            bucket: self.cfg.bucket.clone(),
            authorization: self.authorization.clone(),
            gateway: self.gateway.clone(),
            keys: self.keys.clone(),
            policy: self.policy.clone(),
        }
    }
}

impl Parts {
    pub(super) async fn handle(
        self,
        entry: Listed,
        event: &'static str,
        dry_run: bool,
        now: jiff::Timestamp,
    ) -> Handled {
        let body = body::body(&self.bucket, &entry, event, now);
        let verdict = if dry_run {
            self.peek(&body).await
        } else {
            let req = Inbound {
                service: self.service.clone(),
                authorization: Some(self.authorization.clone()),
                body: body.into(),
            };
            match self.gateway.handle(req).await {
                Ok(answer) => answer
                    .results
                    .first()
                    .map(|r| {
                        let k = r.key.map(|k| k.to_string()).unwrap_or_default();
                        (r.verdict, k)
                    })
                    .ok_or_else(|| "no verdict".to_string()),
                Err(e) => Err(e.to_string()),
            }
        };
        Handled {
            entry,
            event,
            verdict,
        }
    }

    /// The dry run: the identity the pipeline would derive, looked up without claiming.
    async fn peek(&self, body: &[u8]) -> Result<(Verdict, String), String> {
        let records = parse::records(body).map_err(|e| e.to_string())?;
        let Records::Single(rec) = records else {
            return Err("not a single-record body".into());
        };
        let rec = rec.map_err(|e| e.to_string())?;
        let available_on = self.gateway.config().service(&self.service).available_on;
        let class = match self.policy.decide(&rec, available_on) {
            Ruling::Final(..) => return Ok((Verdict::Ignored, String::new())),
            Ruling::Forward(c) | Ruling::Hold(c) => c,
        };
        let scope = self
            .keys
            .scope(&self.service, Some(self.authorization.as_bytes()));
        let key = self.keys.key(&scope, &rec, class);
        // An unversioned object's event commits only its alias under this body's identity.
        let alias = self.keys.alias(&scope, &rec, class);
        let store = self.gateway.store();
        for k in std::iter::once(key).chain(alias) {
            match store.peek(&k).await {
                Ok(None) => {}
                Ok(Some(_)) => return Ok((Verdict::Duplicate, key.to_string())),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok((Verdict::Forwarded, key.to_string()))
    }
}
