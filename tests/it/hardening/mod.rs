//! Hardening (issue 6): hostile and broken input, slow and abusive clients, misbehaving
//! upstreams, secrets and TLS. Every case runs against the real gateway on 127.0.0.1:0 and checks
//! the status, the error body and that OSCAR received nothing it should not have.
//!
//! The fakes come from `crate::helpers`: `GateOscar` holds every request until the test opens
//! the gate (deterministic "slow OSCAR" without timing), and the upstream tests build raw TCP or
//! streaming fakes for what a well-behaved server never does.

mod bad_input;
mod clients;
mod fuzz_corpus;
mod keepalive;
mod secrets;
mod tls;
mod upstream;

// Kept for `redis::spool`, which imports the gated fake from here.
pub(crate) use crate::helpers::GateOscar;
