//! End-to-end support for ferrolb: the test control plane (real etcd and
//! kube-apiserver), its PKI, ferrolb processes, and helpers the scenario tests
//! share.

pub mod chaos;
pub mod chart;
pub mod cluster;
pub mod controlplane;
pub mod image;
pub mod lab;
pub mod netns;
pub mod pki;
pub mod probe;
pub mod process;
pub mod real;
pub mod routers;
pub mod tier;
pub mod wait;

pub use cluster::TestCluster;
pub use controlplane::ControlPlane;
