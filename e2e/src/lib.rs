//! End-to-end support for ferrolb: the test control plane (real etcd and
//! kube-apiserver), its PKI, and helpers the scenario tests share.

pub mod controlplane;
pub mod pki;

pub use controlplane::ControlPlane;
