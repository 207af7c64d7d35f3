//! The ferrolb validating admission webhook: the cross-object rules for pools,
//! peers and advertisements, the HTTPS server and its self-managed TLS.

pub mod admission;
pub mod metrics;
pub mod rules;
pub mod source;
pub mod tls;
