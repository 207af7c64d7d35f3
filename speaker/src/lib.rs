//! The ferrolb speaker: applies its node's NodeAnnouncement. So far, the ARP and
//! NDP frames it reads and writes; the sockets, the runtime and BGP are to come.

pub mod l2;
