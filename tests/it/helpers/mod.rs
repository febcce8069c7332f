//! The shared test harness. Every integration test starts the real gateway on 127.0.0.1:0 (in
//! process, or the real binary) against a fake OSCAR it starts itself, posts MinIO events and
//! asserts on the answers; the pieces for that live here so each test reads as the behaviour it
//! checks:
//!
//! - [`oscar`]: fake OSCARs — [`FakeOscar`] records and answers a switchable status,
//!   [`GateOscar`] holds every request until the test opens its gate.
//! - [`gateway`]: the gateway in process — [`TestGateway`] (sync mode by default, own temp dir)
//!   and [`SpoolGw`] (spool mode on a directory the test keeps, for restarts and disk faults).
//! - [`answer`]: what a webhook POST got back ([`Posted`]) and the assertions made on it, plus
//!   readers for `/metrics` text.
//! - [`events`]: the MinIO fixtures and builders for events with their own identity.
//! - [`process`]: the real binary as a child process, raw TCP exchanges, readiness polls.
//! - [`wait`]: bounded polls (every loop a test runs is bounded in count and time).
//! - [`internals`]: the few crate internals tests use, imported in this one place.

mod answer;
mod events;
mod gate;
mod gateway;
pub mod internals;
mod oscar;
mod process;
mod spool_gw;
mod wait;

pub use answer::*;
pub use events::*;
pub use gate::*;
pub use gateway::*;
pub use oscar::*;
pub use process::*;
pub use spool_gw::*;
pub use wait::*;
