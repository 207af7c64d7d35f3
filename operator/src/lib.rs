//! The ferrolb operator: decides which IP each LoadBalancer Service gets and
//! which node announces it.

pub mod allocation;
pub mod announce;
pub mod announcing;
pub mod controller;
pub mod convert;
pub mod failover_key;
pub mod leader;
pub mod metrics;
pub mod status;
pub mod written;

#[cfg(test)]
pub(crate) mod scripted;
