//! The speaker's BGP input path: whatever bytes a peer sends, the codec, the
//! classification and the OPEN checks decide without panicking, every
//! NOTIFICATION the speaker would answer with encodes, and a decoding error
//! always ends the session with a NOTIFICATION.

#![no_main]

use std::net::Ipv4Addr;
use std::time::Duration;

use ferrolb_speaker::bgp::config::Peer;
use ferrolb_speaker::bgp::message::{Family, Local};
use ferrolb_speaker::bgp::session::{Inbound, feed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let peer = Peer {
        name: "fuzz".to_string(),
        my_asn: 64512,
        peer_asn: Some(64500),
        dynamic: None,
        address: "10.0.0.1".parse().unwrap(),
        port: 179,
        source: None,
        router_id: Some(Ipv4Addr::new(10, 0, 0, 2)),
        hold_time: Duration::from_secs(90),
        keepalive: Duration::from_secs(30),
        connect_retry: Duration::from_secs(10),
        multihop: false,
        graceful_restart: true,
        password: None,
        dual_stack: false,
    };
    let local = Local {
        asn: 64512,
        router_id: Ipv4Addr::new(10, 0, 0, 2),
        hold_time: 90,
        families: vec![Family::V4, Family::V6],
        graceful_restart: true,
    };
    let items = feed(&peer, &local, data);
    for (inbound, encoded) in &items {
        if let Inbound::Close(Some(_), _) = inbound {
            assert!(encoded.len() >= 21, "a NOTIFICATION has a header and a code");
        }
    }
});
