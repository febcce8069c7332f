//! `dedup-gateway replay`: captured payloads through the same parse, policy, key and dedup
//! stages, offline, one JSON verdict per record on stdout.
//!
//! For tuning a policy against real traffic and for incident review ("why was this forwarded
//! twice?"). Nothing is sent anywhere: a record that would be forwarded is taken as delivered at
//! once, and held records stay held (the grace never ends offline), so a later clean copy of the
//! same version shows as the one forwarded. All records share one dedup store, in input order.
//! Keys are derived with the gateway's own secret (`dedup.hash_secret`, or the one kept in
//! `data_dir`), so they match its logs; with neither, a random one (keys then differ per run).

use std::{io::Write, path::PathBuf, time::Duration};

use serde::Serialize;

use crate::{
    config::{AvailableOn, Config},
    identity::DedupKey,
    pipeline::{
        key::{KeyDeriver, RequestScope},
        parse::{self, Record},
        policy::{Policy, Ruling},
    },
    store::{Claim, MemoryStore},
    verdict::Verdict,
};

#[derive(Debug, Serialize)]
struct Line<'a> {
    source: &'a str,
    document: usize,
    record: usize,
    verdict: &'static str,
    reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bucket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    object: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

/// Replays `files` for `service` with `authorization`; returns the number of records seen.
pub fn replay(
    cfg: &Config,
    files: &[PathBuf],
    service: &str,
    authorization: Option<&str>,
    out: &mut dyn Write,
) -> Result<usize, String> {
    let replayer = Replayer::new(cfg, service, authorization)?;
    let mut seen = 0;
    for path in files {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let source = path.display().to_string();
        for (doc_no, doc) in documents(&text).into_iter().enumerate() {
            seen += replayer.document(&source, doc_no + 1, doc, out)?;
        }
    }
    Ok(seen)
}

/// The stages of one replay run, shared by every record of every file.
struct Replayer {
    policy: Policy,
    keys: KeyDeriver,
    scope: RequestScope,
    store: MemoryStore,
    available_on: AvailableOn,
}

/// A claim that never expires: nothing ends offline, so nothing may time out.
const FOREVER: Duration = Duration::from_secs(u32::MAX as u64);

impl Replayer {
    fn new(cfg: &Config, service: &str, authorization: Option<&str>) -> Result<Self, String> {
        let policy = Policy::new(&cfg.policy.forward, cfg.policy.pending)?;
        // The gateway's own secret when there is one (configured, or kept in `data_dir`), so that
        // the printed keys are the ones in the gateway's logs and `/admin/verdicts`.
        let keys = if cfg.dedup.hash_secret.is_empty() {
            KeyDeriver::load(&cfg.data_dir).unwrap_or_else(KeyDeriver::random)
        } else {
            KeyDeriver::new(cfg.dedup.hash_secret.as_bytes())
        };
        let scope = keys.scope(service, authorization.map(str::as_bytes));
        Ok(Self {
            policy,
            keys,
            scope,
            store: MemoryStore::new(usize::MAX / 2),
            available_on: cfg.service(service).available_on,
        })
    }

    /// Replays one document (numbered from 1); returns how many records it held.
    fn document(
        &self,
        source: &str,
        document: usize,
        doc: &[u8],
        out: &mut dyn Write,
    ) -> Result<usize, String> {
        let env = match parse::envelope(doc) {
            Ok(env) => env,
            Err(e) => {
                let line = bare(source, document, 0, Verdict::Invalid, e.to_string());
                emit(out, &line)?;
                return Ok(0);
            }
        };
        for (i, raw) in env.records.iter().enumerate() {
            let rec = match parse::record(raw) {
                Ok(r) => r,
                Err(e) => {
                    emit(
                        out,
                        &bare(source, document, i, Verdict::Invalid, e.to_string()),
                    )?;
                    continue;
                }
            };
            let (verdict, reason, key) = self.judge(&rec)?;
            emit(
                out,
                &Line {
                    source,
                    document,
                    record: i,
                    verdict: verdict.as_str(),
                    reason,
                    event: Some(rec.event_name.to_string()),
                    bucket: Some(rec.bucket.to_string()),
                    object: Some(rec.key.clone()),
                    version: Some(rec.version.to_string()),
                    key,
                },
            )?;
        }
        Ok(env.records.len())
    }

    /// The policy's ruling, then for a forward or a hold the dedup claim: the verdict, its reason
    /// and the identity's key when one was derived.
    fn judge(&self, rec: &Record<'_>) -> Result<(Verdict, String, Option<String>), String> {
        let (class, hold) = match self.policy.decide(rec, self.available_on) {
            Ruling::Final(v, reason) => return Ok((Verdict::from(v), reason.to_string(), None)),
            Ruling::Forward(class) => (class, false),
            Ruling::Hold(class) => (class, true),
        };
        let key = self.keys.key(&self.scope, rec, class);
        let (verdict, reason) = self.claim(&key, hold)?;
        Ok((verdict, reason.to_string(), Some(key.to_hex())))
    }

    /// Claims `key` as the gateway would, taking a forward as delivered at once.
    fn claim(&self, key: &DedupKey, hold: bool) -> Result<(Verdict, &'static str), String> {
        let owner = crate::identity::new_owner();
        let claim = if hold {
            self.store.hold_at(key, owner, FOREVER, 0)
        } else {
            self.store.reserve_at(key, owner, FOREVER, 0)
        }
        .map_err(|e| e.to_string())?;
        Ok(match claim {
            Claim::Duplicate(existing) => (Verdict::Duplicate, existing.reason()),
            _ if hold => (Verdict::Held, "replication-pending"),
            Claim::Preempted => {
                self.store.commit_at(key, owner, FOREVER, 0);
                (Verdict::Forwarded, "clean-copy-preempted-held")
            }
            _ => {
                self.store.commit_at(key, owner, FOREVER, 0);
                (Verdict::Forwarded, "would-deliver")
            }
        })
    }
}

/// One JSON line on `out`.
fn emit(out: &mut dyn Write, line: &Line<'_>) -> Result<(), String> {
    serde_json::to_writer(&mut *out, line).map_err(|e| e.to_string())?;
    writeln!(out).map_err(|e| e.to_string())
}

fn bare(
    source: &str,
    document: usize,
    record: usize,
    verdict: Verdict,
    reason: String,
) -> Line<'_> {
    Line {
        source,
        document,
        record,
        verdict: verdict.as_str(),
        reason,
        event: None,
        bucket: None,
        object: None,
        version: None,
        key: None,
    }
}

/// A file is one JSON document, or JSON lines (one document per non-empty line).
fn documents(text: &[u8]) -> Vec<&[u8]> {
    if serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok() {
        return vec![text];
    }
    text.split(|b| *b == b'\n')
        .map(|l| l.trim_ascii())
        .filter(|l| !l.is_empty())
        .collect()
}
