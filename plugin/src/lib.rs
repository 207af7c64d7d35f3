//! `kubectl ferrolb`: a kubectl plugin for ferrolb. `convert` turns MetalLB's
//! legacy ConfigMap into `ferrolb.io` objects.

pub mod convert;
pub mod legacy;
