//! The single-object rules in Rust, rule by rule, on specs written the way users
//! write them (YAML). The same rules run in the apiserver as CRD schema; the e2e
//! tests check that both agree.

use ferrolb_api::{
    BGPAdvertisementSpec, BGPPeerSpec, IPAddressPoolSpec, L2AdvertisementSpec,
    NodeAnnouncementSpec, Validate,
};
use serde::de::DeserializeOwned;

/// The errors of a spec as `path: message` lines.
fn errors<T: DeserializeOwned + Validate>(yaml: &str) -> Vec<String> {
    let spec: T = serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
    spec.validate().iter().map(ToString::to_string).collect()
}

/// Asserts exactly one error, at `path`, whose message contains `fragment`.
#[track_caller]
fn one_error<T: DeserializeOwned + Validate>(yaml: &str, path: &str, fragment: &str) {
    let found = errors::<T>(yaml);
    assert_eq!(found.len(), 1, "{yaml}\n=> {found:#?}");
    assert!(
        found[0].starts_with(&format!("{path}: ")) && found[0].contains(fragment),
        "{yaml}\n=> {found:#?}\nwanted {path}: …{fragment}…"
    );
}

#[track_caller]
fn valid<T: DeserializeOwned + Validate>(yaml: &str) {
    let found = errors::<T>(yaml);
    assert!(found.is_empty(), "{yaml}\n=> {found:#?}");
}

type Pool = IPAddressPoolSpec;

#[test]
fn pool_entries_of_every_form_and_family_are_valid() {
    valid::<Pool>(
        "addresses: [10.0.0.0/24, 10.0.1.10-10.0.1.20, 10.0.2.7, fd00::/64, 'fd00:1::1 - fd00:1::ff', '2001:db8::1']",
    );
}

#[test]
fn pool_needs_an_address() {
    one_error::<Pool>("addresses: []", "spec.addresses", "at least one address");
}

#[test]
fn pool_entry_syntax() {
    one_error::<Pool>(
        "addresses: [10.0.0.0/24, nonsense]",
        "spec.addresses[1]",
        "'nonsense' is not an address",
    );
    one_error::<Pool>(
        "addresses: ['fd00::/129']",
        "spec.addresses[0]",
        "is not an address",
    );
    one_error::<Pool>(
        "addresses: ['10.0.0.1-']",
        "spec.addresses[0]",
        "is not an address",
    );
}

#[test]
fn pool_cidr_host_bits() {
    one_error::<Pool>(
        "addresses: [10.0.0.1/24]",
        "spec.addresses[0]",
        "host bits set",
    );
    one_error::<Pool>(
        "addresses: ['fd00::1/64']",
        "spec.addresses[0]",
        "here fd00::/64",
    );
}

#[test]
fn pool_range_is_one_family() {
    one_error::<Pool>(
        "addresses: ['10.0.0.1-fd00::1']",
        "spec.addresses[0]",
        "mixes IPv4 and IPv6",
    );
}

#[test]
fn pool_range_runs_low_to_high() {
    one_error::<Pool>(
        "addresses: [10.0.0.9-10.0.0.1]",
        "spec.addresses[0]",
        "starts after it ends",
    );
    one_error::<Pool>(
        "addresses: ['fd00::1:0-fd00::ffff']",
        "spec.addresses[0]",
        "starts after it ends",
    );
    valid::<Pool>("addresses: ['10.0.0.9-10.0.0.9', 'fd00::ffff-fd00::1:0']");
}

#[test]
fn pool_entries_are_not_repeated() {
    one_error::<Pool>(
        "addresses: [10.0.0.0/24, 10.0.0.0/24]",
        "spec.addresses[1]",
        "Duplicate value",
    );
}

#[test]
fn pool_self_overlap_is_found_for_the_webhook() {
    let spec: Pool =
        serde_yaml::from_str("addresses: [10.0.0.0/24, 10.0.0.200-10.0.1.5, 'fd00::/64']")
            .expect("spec");
    let overlaps = spec.self_overlaps();
    assert_eq!(overlaps.len(), 1);
    assert_eq!((overlaps[0].0, overlaps[0].1), (0, 1));
    assert_eq!(overlaps[0].2.to_string(), "10.0.0.200-10.0.0.255");
}

#[test]
fn pool_service_allocation_namespaces() {
    one_error::<Pool>(
        "{addresses: [10.0.0.0/24], serviceAllocation: {namespaces: [Team_A]}}",
        "spec.serviceAllocation.namespaces[0]",
        "is not a namespace name",
    );
    one_error::<Pool>(
        "{addresses: [10.0.0.0/24], serviceAllocation: {namespaces: [a, a]}}",
        "spec.serviceAllocation.namespaces[1]",
        "Duplicate value",
    );
}

#[test]
fn selectors_need_valid_keys_values_and_operators() {
    let at = "spec.serviceAllocation.serviceSelectors[0]";
    let pool = |selector: &str| {
        format!(
            "{{addresses: [10.0.0.0/24], serviceAllocation: {{serviceSelectors: [{selector}]}}}}"
        )
    };
    valid::<Pool>(&pool(
        "{matchLabels: {app.kubernetes.io/name: web, tier: ''}}",
    ));
    one_error::<Pool>(
        &pool("{matchLabels: {'-bad': x}}"),
        &format!("{at}.matchLabels"),
        "is not a label key",
    );
    one_error::<Pool>(
        &pool("{matchLabels: {good: 'bad value'}}"),
        &format!("{at}.matchLabels"),
        "is not a label value",
    );
    one_error::<Pool>(
        &pool("{matchExpressions: [{key: tier, operator: In}]}"),
        &format!("{at}.matchExpressions[0].values"),
        "need at least one value",
    );
    one_error::<Pool>(
        &pool("{matchExpressions: [{key: tier, operator: Exists, values: [x]}]}"),
        &format!("{at}.matchExpressions[0].values"),
        "take none",
    );
    one_error::<Pool>(
        &pool("{matchExpressions: [{key: tier, operator: Equals, values: [x]}]}"),
        &format!("{at}.matchExpressions[0].operator"),
        "must be one of",
    );
    one_error::<Pool>(
        &pool("{matchExpressions: [{key: 'a/b/c', operator: Exists}]}"),
        &format!("{at}.matchExpressions[0].key"),
        "is not a label key",
    );
}

type L2 = L2AdvertisementSpec;

#[test]
fn l2_advertisement_names_and_interfaces() {
    valid::<L2>("{ipAddressPools: [l2-pool], interfaces: [eth0, bond0.100]}");
    valid::<L2>("{}");
    one_error::<L2>(
        "ipAddressPools: [L2_Pool]",
        "spec.ipAddressPools[0]",
        "is not an object name",
    );
    one_error::<L2>(
        "ipAddressPools: [a, a]",
        "spec.ipAddressPools[1]",
        "Duplicate value",
    );
    one_error::<L2>(
        "interfaces: [averyveryverylongname]",
        "spec.interfaces[0]",
        "not a network interface name",
    );
    one_error::<L2>(
        "interfaces: ['eth0:1']",
        "spec.interfaces[0]",
        "not a network interface name",
    );
    one_error::<L2>(
        "interfaces: [eth0, eth0]",
        "spec.interfaces[1]",
        "Duplicate value",
    );
}

type Peer = BGPPeerSpec;

fn peer(extra: &str) -> String {
    format!("{{myASN: 64512, peerASN: 64513, peerAddress: 192.168.10.254{extra}}}")
}

#[test]
fn peer_defaults_are_valid() {
    let spec: Peer = serde_yaml::from_str(&peer("")).expect("peer");
    assert_eq!((spec.peer_port, spec.hold_time.as_str()), (179, "90s"));
    assert!(spec.validate().is_empty());
    valid::<Peer>(
        "{myASN: 4294967295, dynamicASN: external, peerAddress: 'fd00::1', sourceAddress: 'fd00::2'}",
    );
}

#[test]
fn peer_asn_range() {
    one_error::<Peer>(
        "{myASN: 0, peerASN: 1, peerAddress: 10.0.0.1}",
        "spec.myASN",
        "1-4294967295",
    );
    assert!(
        serde_yaml::from_str::<Peer>("{myASN: 4294967296, peerASN: 1, peerAddress: 10.0.0.1}")
            .is_err()
    );
}

#[test]
fn peer_asn_is_exactly_one_of_two() {
    one_error::<Peer>(
        "{myASN: 1, peerAddress: 10.0.0.1}",
        "spec",
        "exactly one of peerASN and dynamicASN",
    );
    one_error::<Peer>(
        "{myASN: 1, peerASN: 2, dynamicASN: external, peerAddress: 10.0.0.1}",
        "spec",
        "exactly one of",
    );
}

#[test]
fn peer_port_range() {
    one_error::<Peer>(&peer(", peerPort: 0"), "spec.peerPort", "1-65535");
    assert!(serde_yaml::from_str::<Peer>(&peer(", peerPort: 65536")).is_err());
}

#[test]
fn peer_addresses() {
    one_error::<Peer>(
        "{myASN: 1, peerASN: 2, peerAddress: router}",
        "spec.peerAddress",
        "is not an IP address",
    );
    one_error::<Peer>(
        &peer(", sourceAddress: 'fd00::1'"),
        "spec.sourceAddress",
        "same IP family",
    );
    one_error::<Peer>(
        &peer(", routerID: 'fd00::1'"),
        "spec.routerID",
        "is not an IPv4 address",
    );
}

#[test]
fn peer_hold_time_is_zero_or_at_least_three_seconds() {
    valid::<Peer>(&peer(", holdTime: 0s, keepaliveTime: 0s"));
    valid::<Peer>(&peer(", holdTime: 3s, keepaliveTime: 1s"));
    one_error::<Peer>(
        &peer(", holdTime: 2s"),
        "spec.holdTime",
        "0s (no keepalives) or between 3s and 65535s",
    );
    one_error::<Peer>(
        &peer(", holdTime: 19h"),
        "spec.holdTime",
        "between 3s and 65535s",
    );
    one_error::<Peer>(
        &peer(", holdTime: 1.5s"),
        "spec.holdTime",
        "not a whole number of seconds",
    );
}

#[test]
fn peer_keepalive_within_hold_time() {
    valid::<Peer>(&peer(", holdTime: 1m30s, keepaliveTime: 90s"));
    one_error::<Peer>(
        &peer(", holdTime: 9s, keepaliveTime: 10s"),
        "spec.keepaliveTime",
        "must not exceed holdTime",
    );
    one_error::<Peer>(
        &peer(", keepaliveTime: 2m"),
        "spec.keepaliveTime",
        "must not exceed holdTime",
    );
}

#[test]
fn peer_connect_time() {
    one_error::<Peer>(
        &peer(", connectTime: 0s"),
        "spec.connectTime",
        "between 1s and 65535s",
    );
}

#[test]
fn peer_multihop_is_for_ebgp_only() {
    valid::<Peer>(&peer(", ebgpMultiHop: true"));
    one_error::<Peer>(
        "{myASN: 64512, peerASN: 64512, peerAddress: 10.0.0.1, ebgpMultiHop: true}",
        "spec.ebgpMultiHop",
        "eBGP only",
    );
    one_error::<Peer>(
        "{myASN: 64512, dynamicASN: internal, peerAddress: 10.0.0.1, ebgpMultiHop: true}",
        "spec.ebgpMultiHop",
        "eBGP only",
    );
}

#[test]
fn peer_password_secret_reference() {
    let spec: Peer =
        serde_yaml::from_str(&peer(", passwordSecretRef: {name: bgp-auth}")).expect("peer");
    let secret = spec.password_secret_ref.clone().expect("secret ref");
    assert_eq!(
        (secret.namespace.as_str(), secret.key.as_str()),
        ("ferrolb-system", "password")
    );
    one_error::<Peer>(
        &peer(", passwordSecretRef: {name: Bgp_Auth}"),
        "spec.passwordSecretRef.name",
        "not an object name",
    );
}

type BgpAdv = BGPAdvertisementSpec;

#[test]
fn advertisement_aggregation_lengths() {
    let spec: BgpAdv = serde_yaml::from_str("{}").expect("empty");
    assert_eq!(
        (spec.aggregation_length, spec.aggregation_length_v6),
        (32, 128)
    );
    one_error::<BgpAdv>("aggregationLength: 0", "spec.aggregationLength", "1-32");
    one_error::<BgpAdv>("aggregationLength: 33", "spec.aggregationLength", "1-32");
    one_error::<BgpAdv>(
        "aggregationLengthV6: 129",
        "spec.aggregationLengthV6",
        "1-128",
    );
}

#[test]
fn advertisement_communities() {
    valid::<BgpAdv>("communities: ['65535:65535', 'large:4294967295:0:1', no-export, no-peer]");
    one_error::<BgpAdv>(
        "communities: ['65536:1']",
        "spec.communities[0]",
        "is not a community",
    );
    one_error::<BgpAdv>(
        "communities: ['large:1:2']",
        "spec.communities[0]",
        "is not a community",
    );
    one_error::<BgpAdv>(
        "communities: ['1:1', '1:1']",
        "spec.communities[1]",
        "Duplicate value",
    );
}

#[test]
fn advertisement_names() {
    one_error::<BgpAdv>("peers: [Router]", "spec.peers[0]", "not an object name");
    one_error::<BgpAdv>(
        "ipAddressPools: [p, p]",
        "spec.ipAddressPools[1]",
        "Duplicate value",
    );
    one_error::<BgpAdv>(
        "nodeSelectors: [{matchExpressions: [{key: zone, operator: NotIn}]}]",
        "spec.nodeSelectors[0].matchExpressions[0].values",
        "need at least one value",
    );
}

type Node = NodeAnnouncementSpec;

#[test]
fn node_announcement_roles() {
    valid::<Node>(
        "l2: [{role: active, standby: node-b, probe: '10.0.0.2:7473', ips: [10.0.0.1-10.0.0.5, 10.0.0.9]}, {role: standby, standbyFor: node-b, probe: '[fd00::2]:7473', ips: ['fd00::1']}]",
    );
    one_error::<Node>(
        "l2: [{role: standby, ips: [10.0.0.1]}]",
        "spec.l2[0].standbyFor",
        "required for role standby",
    );
    one_error::<Node>(
        "l2: [{role: active, standbyFor: b, ips: [10.0.0.1]}]",
        "spec.l2[0].standbyFor",
        "not allowed for role active",
    );
    one_error::<Node>(
        "l2: [{role: standby, standbyFor: b, standby: c, ips: [10.0.0.1]}]",
        "spec.l2[0].standby",
        "only for role active",
    );
    // An IP in two groups.
    let spec: Node = serde_yaml::from_str(
        "l2: [{role: active, ips: [10.0.0.1-10.0.0.9]}, {role: standby, standbyFor: b, ips: [10.0.0.5]}]",
    )
    .unwrap();
    let errors = spec.validate();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "spec.l2[1].ips");
    assert!(errors[0].message.contains("10.0.0.5 is also in spec.l2[0]"));
    // Not an address: not even read.
    for bad in [
        "l2: [{role: active, ips: [10.0.0.300]}]",
        "l2: [{role: active, ips: [10.0.0.9-10.0.0.1]}]",
        "l2: [{role: active, probe: 'nowhere', ips: [10.0.0.1]}]",
    ] {
        assert!(serde_yaml::from_str::<Node>(bad).is_err(), "{bad}");
    }
}

#[test]
fn node_announcement_sessions() {
    let session = |prefix: &str| {
        format!(
            "bgp: [{{name: router, myASN: 1, peerASN: 2, peerAddress: 10.0.0.1, peerPort: 179, holdTime: 90s, keepaliveTime: 30s, connectTime: 10s, prefixes: [{{prefix: '{prefix}'}}]}}]"
        )
    };
    valid::<Node>(&session("172.20.1.5/32"));
    one_error::<Node>(
        &session("172.20.1.5/24"),
        "spec.bgp[0].prefixes[0].prefix",
        "host bits set",
    );
}
