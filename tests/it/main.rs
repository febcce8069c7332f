//! One integration binary: every test starts the real gateway on 127.0.0.1:0 against a fake OSCAR.

// Test and measurement code: a panic on unexpected data is the failure it reports.
#![allow(clippy::unwrap_used)]

mod admin;
mod cli;
mod crash;
mod dedup;
mod deliver_pool;
mod deploy;
mod dlq;
mod hardening;
mod helpers;
mod jetstream;
mod mc_setup;
mod metrics;
mod pending;
mod receive;
mod reconcile;
mod redis;
mod restart;
mod shadow;
mod shutdown;
mod spool;
mod windows;
