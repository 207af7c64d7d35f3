//! The ferrolb operator: decides which IP each LoadBalancer Service gets and
//! which node announces it.

pub mod allocation;
