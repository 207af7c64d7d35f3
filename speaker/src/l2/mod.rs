//! Layer 2 announcement: answering ARP and NDP for the IPs a node holds.

pub mod interface;
pub mod kernel;
pub mod packet;
pub mod responder;
pub mod socket;
