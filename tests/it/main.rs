//! One integration binary: every test starts the real gateway on 127.0.0.1:0 against a fake OSCAR.

mod binary;
mod core;
mod crash;
mod hardening;
mod helpers;
mod jetstream;
mod ops;
mod redis;
mod spool;
