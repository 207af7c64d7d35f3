//! The ferrolb speaker: applies its node's NodeAnnouncement. So far layer 2
//! (ARP and NDP), in a cluster or from a file; BGP is to come.

pub mod bgp;
pub mod cluster;
pub mod l2;
pub mod node;
