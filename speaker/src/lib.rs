//! The ferrolb speaker: applies its node's NodeAnnouncement. So far layer 2
//! (ARP and NDP) with
//! a fast failover path between speakers, and BGP; in a cluster or from a file.

pub mod bfd;
pub mod bgp;
pub mod cluster;
pub mod failover;
pub mod l2;
pub mod metrics;
pub mod netns;
pub mod node;
pub mod runner;
