//! BFD (RFC 5880 asynchronous mode, RFC 5881 single hop, RFC 5883 multihop):
//! the packet format and authentication ([`packet`]) and one session's state
//! machine ([`session`]), both pure. A session going Down takes its BGP
//! session down at once (RFC 5882); a peer's AdminDown does not.

pub mod packet;
pub mod session;
pub mod socket;

/// UDP port of single-hop control packets (RFC 5881).
pub const SINGLE_HOP_PORT: u16 = 3784;
/// UDP port of multihop control packets (RFC 5883).
pub const MULTIHOP_PORT: u16 = 4784;
