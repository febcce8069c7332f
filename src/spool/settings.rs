//! What the spool takes from the configuration, and the two spans derived from it: how long a
//! spooled event's reservation must last (the retry horizon) and how long it is retried.

use std::{path::PathBuf, time::Duration};

use super::{FILE_NAME, FaultSwitch};
use crate::{
    config::Config,
    deliver::{backoff::Backoff, settle::RetryBudget},
};

/// Everything the spool needs from the configuration.
#[derive(Debug, Clone)]
pub struct SpoolSettings {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub max_entries: u64,
    pub group_commit_delay: Duration,
    /// `spool.segment_bytes`: the journal's segment size.
    pub segment_bytes: u64,
    pub concurrency: usize,
    pub backoff: Backoff,
    pub max_attempts: u32,
    pub max_age: Duration,
    pub ttl: Duration,
    pub grace: Duration,
    /// `dedup.lease`: the margin added to the retry horizon.
    pub lease_margin: Duration,
    /// `dedup.on_store_error = "fail-open"`: events restored while the store fails are delivered
    /// unchecked rather than waiting for the store.
    pub fail_open: bool,
    /// The longest one delivery attempt can take (`delivery.connect_timeout` +
    /// `delivery.request_timeout`): how long shutdown lets a started delivery run.
    pub attempt_bound: Duration,
    pub faults: FaultSwitch,
}

impl SpoolSettings {
    pub fn from_config(cfg: &Config, backoff: Backoff, faults: FaultSwitch) -> Self {
        Self {
            path: cfg.data_dir.join(FILE_NAME),
            max_bytes: cfg.spool.max_bytes,
            max_entries: cfg.spool.max_entries,
            group_commit_delay: cfg.spool.group_commit_delay,
            segment_bytes: cfg.spool.segment_bytes,
            concurrency: cfg.delivery.concurrency,
            backoff,
            max_attempts: cfg.delivery.max_attempts,
            max_age: cfg.delivery.max_age,
            ttl: cfg.dedup.ttl,
            grace: cfg.policy.pending_grace,
            lease_margin: cfg.dedup.lease,
            fail_open: cfg.dedup.on_store_error == crate::config::OnStoreError::FailOpen,
            attempt_bound: cfg.delivery.connect_timeout + cfg.delivery.request_timeout,
            faults,
        }
    }

    /// How long a spooled event's reservation must last: every retry up to `max_age`, the last
    /// backoff delay, and the lease as margin for the final attempt.
    pub fn horizon(&self) -> Duration {
        self.max_age + self.backoff.ceiling(u32::MAX) + self.lease_margin
    }

    /// How long a failed event is retried (`delivery.max_attempts`, `delivery.max_age`).
    pub fn budget(&self) -> RetryBudget {
        RetryBudget {
            backoff: self.backoff,
            max_attempts: self.max_attempts,
            max_age: self.max_age,
        }
    }
}
