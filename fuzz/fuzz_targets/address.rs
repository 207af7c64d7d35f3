//! Address, community and timer parsing: any string either parses into a value
//! that prints back to an equal value, or is refused with a message naming it.

#![no_main]

use ferrolb_api::address::{is_ipv4_mapped, parse_cidr, parse_ip, parse_pool_entry, to_u128};
use ferrolb_api::community::Community;
use ferrolb_api::timer::parse_timer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match parse_pool_entry(text) {
        Ok(range) => {
            assert!(to_u128(range.start()) <= to_u128(range.end()));
            assert_eq!(range.start().is_ipv4(), range.end().is_ipv4());
            // A printed range reads back, unless an end is IPv4-mapped (which
            // the API never reads as an IP; `::/80` ends in one).
            if !is_ipv4_mapped(range.start()) && !is_ipv4_mapped(range.end()) {
                let again = parse_pool_entry(&range.to_string()).expect("a printed range parses");
                assert_eq!(again, range);
            }
            assert!(range.covering_prefix_len() <= range.family().max_prefix_len());
        }
        Err(e) => assert!(e.to_string().contains(text)),
    }
    if let Ok(range) = parse_cidr(text) {
        assert!(range.size() >= 1);
    }
    if let Ok(ip) = parse_ip(text) {
        assert_eq!(parse_ip(&ip.to_string()), Ok(ip));
    }
    match Community::parse(text) {
        Ok(c) => assert_eq!(Community::parse(&c.to_string()), Ok(c)),
        Err(e) => assert!(e.to_string().contains(text)),
    }
    if let Ok(d) = parse_timer(text) {
        assert_eq!(parse_timer(&format!("{}s", d.as_secs())), Ok(d));
    }
});
