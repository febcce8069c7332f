//! The shared test harness. Every integration test starts the real gateway on 127.0.0.1:0 (in
//! process, or the real binary) against a fake OSCAR it starts itself, posts MinIO events and
//! asserts on the answers; the pieces for that live here so each test reads as the behaviour it
//! checks:
//!
//! - `oscar`, `gate`: fake OSCARs — `FakeOscar` records every request and answers a switchable
//!   status; `GateOscar` holds every request until the test opens its gate.
//! - `gateway`: the gateway in process — `TestGateway` (sync mode by default, its own temp dir),
//!   the `oscar_and_gateway` / `gate_and_gateway` starts, and the MinIO-shaped request helpers.
//! - `spool_gw`: `SpoolGw`, spool mode on a directory the test keeps (restarts, disk faults).
//! - `answer`: what a webhook POST got back (`Posted`), the assertions made on it, and readers
//!   for the `/metrics` text.
//! - `events`: the MinIO fixtures and builders for events with an identity of their own.
//! - `process`: the real binary as a child process, raw TCP exchanges, the `/healthz` poll.
//! - `hold_proxy`: a relay to Redis that holds at a chosen command, to force a race's order.
//! - `wait`: bounded polls (every wait in a test is bounded in count and time).
//! - `internals`: the few crate internals tests use, imported in this one place (by name, not
//!   through the glob), so a type moving inside `src/` is one edit here.

mod answer;
mod events;
mod gate;
mod gateway;
mod hold_proxy;
pub mod internals;
mod oscar;
mod process;
mod raw_http;
mod spool_gw;
mod wait;

pub use answer::*;
pub use events::*;
pub use gate::*;
pub use gateway::*;
pub use hold_proxy::*;
pub use oscar::*;
pub use process::*;
pub use raw_http::*;
pub use spool_gw::*;
pub use wait::*;
