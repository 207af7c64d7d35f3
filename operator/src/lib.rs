//! The ferrolb operator: decides which IP each LoadBalancer Service gets and
//! which node announces it.
//!
//! Three layers, and the wiring between them:
//! - [`cluster`] watches the API and reads the watched objects into plain
//!   values (a [`cluster::Snapshot`]);
//! - [`plan`] is pure: allocation, layer 2 and BGP planning, every condition
//!   reason and message, pool and BGPPeer status — no client, clock or I/O;
//! - [`write`] is the one writer: "already written?", the leader gate, failures
//!   classified with the retry each deserves, events and counters only after a
//!   write lands;
//! - [`controller`] wires them: when to pass, what to hand the writer.

pub mod cluster;
pub mod controller;
pub mod failover_key;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod write;

#[cfg(test)]
pub(crate) mod scripted;
