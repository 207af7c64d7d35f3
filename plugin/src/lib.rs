//! `kubectl ferrolb`: a kubectl plugin for ferrolb. `convert` turns MetalLB's
//! configuration (legacy ConfigMap, Helm `configInline`, `metallb.io`
//! resources) into `ferrolb.io` objects; `status` says why a Service is or is
//! not reachable; `doctor` finds what in a cluster breaks a load balancer.
//! Decisions are pure ([`convert`], [`status`], [`doctor`]); [`cluster`] only
//! reads (and sends dry runs).

pub mod check;
pub mod cluster;
pub mod convert;
pub mod doctor;
pub mod legacy;
pub mod resources;
pub mod snapshot;
pub mod status;
