//! Issue 4: the Redis dedup backend. Every test starts its own `redis-server` on an ephemeral
//! loopback port ([`server`]); none depends on a Redis started by hand.

mod cluster;
mod cluster_gateway;
mod cluster_server;
mod conformance;
mod gateway;
pub(crate) mod server;
mod spool;
