//! `kubectl ferrolb`: a kubectl plugin for ferrolb. `convert` turns MetalLB's
//! configuration (legacy ConfigMap, Helm `configInline`, `metallb.io`
//! resources) into `ferrolb.io` objects.

pub mod convert;
pub mod legacy;
pub mod resources;
