//! Every rule, denying and allowing, on objects written as users write them.

use super::*;

fn object<T: serde::de::DeserializeOwned>(kind: &str, name: &str, rest: &str) -> T {
    let yaml =
        format!("apiVersion: ferrolb.io/v1alpha1\nkind: {kind}\nmetadata:\n  name: {name}\n{rest}");
    serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{yaml}\n{e}"))
}

fn pool(name: &str, addresses: &str) -> IPAddressPool {
    object(
        "IPAddressPool",
        name,
        &format!("spec: {{addresses: {addresses}}}"),
    )
}

fn labelled_pool(name: &str, addresses: &str, labels: &str) -> IPAddressPool {
    object(
        "IPAddressPool",
        name,
        &format!("  labels: {labels}\nspec: {{addresses: {addresses}}}"),
    )
}

fn peer(name: &str, spec: &str) -> BGPPeer {
    object("BGPPeer", name, &format!("spec: {spec}"))
}

fn adv(name: &str, spec: &str) -> BGPAdvertisement {
    object("BGPAdvertisement", name, &format!("spec: {spec}"))
}

fn l2(name: &str, spec: &str) -> L2Advertisement {
    object("L2Advertisement", name, &format!("spec: {spec}"))
}

#[track_caller]
fn denied_with(verdict: &Verdict, fragments: &[&str]) {
    assert!(
        verdict
            .denials
            .iter()
            .any(|d| fragments.iter().all(|f| d.contains(f))),
        "wanted a denial with {fragments:?}, got {verdict:#?}"
    );
}

#[test]
fn pools_may_not_overlap_each_other() {
    let snapshot = Snapshot {
        pools: vec![pool("other", "[10.0.0.128/25, 'fd00::/64']")],
        ..Snapshot::default()
    };
    let verdict = super::pool(Some(&pool("new", "[10.0.0.0/24]")), None, &snapshot);
    denied_with(
        &verdict,
        &[
            "spec.addresses[0]",
            "10.0.0.0/24",
            "IPAddressPool 'other'",
            "10.0.0.128/25",
            "10.0.0.128-10.0.0.255",
        ],
    );
    let verdict = super::pool(
        Some(&pool("new", "['fd00::ff-fd00:0:0:1::']")),
        None,
        &snapshot,
    );
    denied_with(&verdict, &["IPAddressPool 'other'", "fd00::/64"]);
    assert!(
        super::pool(
            Some(&pool("new", "[10.0.1.0/24, 'fd01::/64']")),
            None,
            &snapshot
        )
        .allowed()
    );
    // Updating a pool does not collide with its own old version.
    assert!(super::pool(Some(&pool("other", "[10.0.0.0/24]")), None, &snapshot).allowed());
}

#[test]
fn entries_of_one_pool_may_not_overlap() {
    let verdict = super::pool(
        Some(&pool("p", "[10.0.0.0/24, 10.0.0.200-10.0.1.5]")),
        None,
        &Snapshot::default(),
    );
    denied_with(
        &verdict,
        &[
            "spec.addresses[1]",
            "overlaps spec.addresses[0]",
            "10.0.0.200-10.0.0.255",
        ],
    );
    assert!(
        super::pool(
            Some(&pool("p", "[10.0.0.0/24, 10.0.1.0-10.0.1.5]")),
            None,
            &Snapshot::default()
        )
        .allowed()
    );
}

#[test]
fn single_object_rules_are_applied_too() {
    let verdict = super::pool(
        Some(&pool("p", "[10.0.0.9-10.0.0.1]")),
        None,
        &Snapshot::default(),
    );
    denied_with(&verdict, &["spec.addresses[0]", "starts after it ends"]);
}

#[test]
fn stranding_in_use_ips_is_allowed_with_a_warning_naming_the_services() {
    let old = pool("p", "[10.0.0.0/24]");
    let snapshot = Snapshot {
        pools: vec![old.clone(), pool("q", "[10.1.0.0/24]")],
        services: vec![
            ServiceIps {
                name: "default/web".into(),
                ips: vec!["10.0.0.5".parse().expect("ip")],
            },
            ServiceIps {
                name: "default/dns".into(),
                ips: vec!["10.0.0.200".parse().expect("ip")],
            },
            ServiceIps {
                name: "default/other".into(),
                ips: vec!["10.1.0.1".parse().expect("ip")],
            },
        ],
        ..Snapshot::default()
    };
    let shrunk = super::pool(Some(&pool("p", "[10.0.0.128/25]")), Some(&old), &snapshot);
    assert!(shrunk.allowed());
    assert_eq!(shrunk.warnings.len(), 1, "{shrunk:#?}");
    assert!(
        shrunk.warnings[0].contains("default/web (10.0.0.5)")
            && !shrunk.warnings[0].contains("dns")
    );
    let deleted = super::pool(None, Some(&old), &snapshot);
    assert!(deleted.allowed());
    assert!(
        deleted.warnings[0].contains("default/web") && deleted.warnings[0].contains("default/dns")
    );
    assert!(!deleted.warnings[0].contains("default/other"));
    let grown = super::pool(Some(&pool("p", "[10.0.0.0/23]")), Some(&old), &snapshot);
    assert!(grown.allowed() && grown.warnings.is_empty());
}

#[test]
fn peers_on_one_address_need_disjoint_nodes() {
    let snapshot = Snapshot {
        peers: vec![peer(
            "router",
            "{myASN: 64512, peerASN: 64513, peerAddress: 192.168.10.254, nodeSelectors: [{matchLabels: {rack: a}}]}",
        )],
        ..Snapshot::default()
    };
    let same = peer(
        "router2",
        "{myASN: 64512, peerASN: 64514, peerAddress: 192.168.10.254}",
    );
    denied_with(
        &super::peer(&same, &snapshot, false),
        &["spec.peerAddress", "192.168.10.254", "BGPPeer 'router'"],
    );
    let disjoint = peer(
        "router2",
        "{myASN: 64512, peerASN: 64513, peerAddress: 192.168.10.254, nodeSelectors: [{matchLabels: {rack: b}}]}",
    );
    assert!(super::peer(&disjoint, &snapshot, false).allowed());
    let other_port = peer(
        "router2",
        "{myASN: 64512, peerASN: 64513, peerAddress: 192.168.10.254, peerPort: 1179}",
    );
    assert!(super::peer(&other_port, &snapshot, false).allowed());
    let itself = peer(
        "router",
        "{myASN: 64512, peerASN: 64513, peerAddress: 192.168.10.254}",
    );
    assert!(super::peer(&itself, &snapshot, false).allowed());
}

#[test]
fn multihop_on_ibgp_is_denied() {
    let ibgp = peer(
        "rr",
        "{myASN: 64512, peerASN: 64512, peerAddress: 10.0.0.1, ebgpMultiHop: true}",
    );
    denied_with(
        &super::peer(&ibgp, &Snapshot::default(), false),
        &["spec.ebgpMultiHop", "eBGP only"],
    );
}

#[test]
fn a_missing_password_secret_is_a_warning() {
    let p = peer(
        "r",
        "{myASN: 1, peerASN: 2, peerAddress: 10.0.0.1, passwordSecretRef: {name: bgp-auth}}",
    );
    let verdict = super::peer(&p, &Snapshot::default(), true);
    assert!(verdict.allowed());
    assert!(verdict.warnings[0].contains("ferrolb-system/bgp-auth"));
}

#[test]
fn aggregation_may_not_be_wider_than_a_selected_pool() {
    let snapshot = Snapshot {
        pools: vec![
            pool("bgp-pool", "[172.20.1.0/24, 'fd00:20::/64']"),
            pool("unrelated", "[10.0.0.0/28]"),
        ],
        ..Snapshot::default()
    };
    let wide = adv("a", "{ipAddressPools: [bgp-pool], aggregationLength: 16}");
    denied_with(
        &super::bgp_advertisement(&wide, &snapshot),
        &[
            "aggregationLength 16",
            "IPAddressPool 'bgp-pool'",
            "/24",
            "172.20.1.0/24",
        ],
    );
    let wide6 = adv("a", "{ipAddressPools: [bgp-pool], aggregationLengthV6: 48}");
    denied_with(
        &super::bgp_advertisement(&wide6, &snapshot),
        &["aggregationLengthV6 48", "/64"],
    );
    let fine = adv("a", "{ipAddressPools: [bgp-pool], aggregationLength: 24}");
    assert!(super::bgp_advertisement(&fine, &snapshot).allowed());
    // Without names or selectors every pool is selected, so the /28 counts.
    let all = adv("a", "{aggregationLength: 24}");
    denied_with(
        &super::bgp_advertisement(&all, &snapshot),
        &["IPAddressPool 'unrelated'"],
    );
    // The rule holds from the pool's side too: a GitOps folder applies in any order.
    let verdict = super::pool(
        Some(&pool("bgp-pool", "[172.20.1.0/24]")),
        None,
        &Snapshot {
            bgp_advertisements: vec![wide],
            ..Snapshot::default()
        },
    );
    denied_with(&verdict, &["BGPAdvertisement 'a'", "aggregationLength 16"]);
}

#[test]
fn selected_by_label_counts_for_aggregation() {
    let snapshot = Snapshot {
        pools: vec![labelled_pool("edge", "[192.168.0.0/26]", "{tier: edge}")],
        ..Snapshot::default()
    };
    let wide = adv(
        "a",
        "{ipAddressPoolSelectors: [{matchLabels: {tier: edge}}], aggregationLength: 24}",
    );
    denied_with(
        &super::bgp_advertisement(&wide, &snapshot),
        &["IPAddressPool 'edge'"],
    );
    let other = adv(
        "a",
        "{ipAddressPoolSelectors: [{matchLabels: {tier: core}}], aggregationLength: 24}",
    );
    assert!(super::bgp_advertisement(&other, &snapshot).allowed());
}

#[test]
fn local_preferences_may_not_conflict_for_the_same_pool_peers_and_nodes() {
    let snapshot = Snapshot {
        bgp_advertisements: vec![adv(
            "first",
            "{ipAddressPools: [p], peers: [rr], localPref: 100}",
        )],
        ..Snapshot::default()
    };
    let clash = adv("second", "{ipAddressPools: [p], localPref: 200}");
    denied_with(
        &super::bgp_advertisement(&clash, &snapshot),
        &[
            "spec.localPref",
            "BGPAdvertisement 'first'",
            "localPref 100",
        ],
    );
    let same = adv("second", "{ipAddressPools: [p], localPref: 100}");
    assert!(super::bgp_advertisement(&same, &snapshot).allowed());
    let other_peer = adv(
        "second",
        "{ipAddressPools: [p], peers: [edge], localPref: 200}",
    );
    assert!(super::bgp_advertisement(&other_peer, &snapshot).allowed());
    let other_pool = adv("second", "{ipAddressPools: [q], localPref: 200}");
    assert!(super::bgp_advertisement(&other_pool, &snapshot).allowed());
    let other_nodes = {
        let snapshot = Snapshot {
            bgp_advertisements: vec![adv(
                "first",
                "{ipAddressPools: [p], localPref: 100, nodeSelectors: [{matchLabels: {zone: a}}]}",
            )],
            ..Snapshot::default()
        };
        super::bgp_advertisement(
            &adv(
                "second",
                "{ipAddressPools: [p], localPref: 200, nodeSelectors: [{matchLabels: {zone: b}}]}",
            ),
            &snapshot,
        )
    };
    assert!(other_nodes.allowed());
}

#[test]
fn duplicate_selectors_are_denied() {
    let verdict = super::l2_advertisement(
        &l2(
            "a",
            "{nodeSelectors: [{matchLabels: {a: b}}, {matchLabels: {a: b}}]}",
        ),
        &Snapshot::default(),
    );
    denied_with(
        &verdict,
        &["spec.nodeSelectors[1]: duplicate of spec.nodeSelectors[0]"],
    );
    let verdict = super::bgp_advertisement(
        &adv(
            "a",
            "{ipAddressPoolSelectors: [{matchLabels: {a: b}}, {matchLabels: {a: b}}]}",
        ),
        &Snapshot::default(),
    );
    denied_with(&verdict, &["spec.ipAddressPoolSelectors[1]"]);
}

#[test]
fn references_to_objects_not_there_yet_are_warnings() {
    let snapshot = Snapshot {
        pools: vec![pool("exists", "[10.0.0.0/28]")],
        ..Snapshot::default()
    };
    let verdict = super::l2_advertisement(&l2("a", "{ipAddressPools: [exists, later]}"), &snapshot);
    assert!(verdict.allowed());
    assert_eq!(verdict.warnings.len(), 1);
    assert!(verdict.warnings[0].contains("'later' does not exist yet"));
    let verdict = super::bgp_advertisement(&adv("a", "{peers: [router]}"), &snapshot);
    assert!(verdict.allowed() && verdict.warnings[0].contains("BGPPeer 'router'"));
}

#[test]
fn a_bfd_profile_a_peer_uses_cannot_be_deleted_and_an_unused_one_can() {
    let snapshot = Snapshot {
        peers: vec![
            peer(
                "tor-a",
                "{myASN: 64512, peerASN: 64513, peerAddress: 10.0.0.1, bfdProfile: fast}",
            ),
            peer(
                "tor-b",
                "{myASN: 64512, peerASN: 64513, peerAddress: 10.0.0.2, bfdProfile: fast}",
            ),
            peer(
                "edge",
                "{myASN: 64512, peerASN: 64514, peerAddress: 10.0.0.3, bfdProfile: slow}",
            ),
            peer(
                "plain",
                "{myASN: 64512, peerASN: 64515, peerAddress: 10.0.0.4}",
            ),
        ],
        ..Snapshot::default()
    };
    denied_with(
        &bfd_profile_deleted("fast", &snapshot),
        &[
            "BFDProfile 'fast'",
            "'tor-a', 'tor-b'",
            "without BFD",
            "remove spec.bfdProfile",
        ],
    );
    let slow = bfd_profile_deleted("slow", &snapshot);
    assert!(
        !slow.allowed() && !slow.denials[0].contains("tor-a"),
        "{slow:?}"
    );
    assert_eq!(bfd_profile_deleted("unused", &snapshot), Verdict::default());
}

#[test]
fn service_selectors_are_checked_and_keep_disjoint_local_prefs_apart() {
    let twice = l2(
        "a",
        "{serviceSelectors: [{matchLabels: {tier: web}}, {matchLabels: {tier: web}}]}",
    );
    denied_with(
        &l2_advertisement(&twice, &Snapshot::default()),
        &["spec.serviceSelectors[1]: duplicate of spec.serviceSelectors[0]"],
    );
    // Two localPrefs for one pool, to one peer, from the same nodes: refused
    // unless their serviceSelectors pick different Services.
    let snapshot = Snapshot {
        pools: vec![pool("p", "[10.0.0.0/24]")],
        bgp_advertisements: vec![adv(
            "web",
            "{ipAddressPools: [p], localPref: 100, serviceSelectors: [{matchLabels: {tier: web}}]}",
        )],
        ..Snapshot::default()
    };
    let db = adv(
        "db",
        "{ipAddressPools: [p], localPref: 200, serviceSelectors: [{matchLabels: {tier: db}}]}",
    );
    assert!(bgp_advertisement(&db, &snapshot).allowed());
    let everything = adv("all", "{ipAddressPools: [p], localPref: 200}");
    denied_with(
        &bgp_advertisement(&everything, &snapshot),
        &[
            "spec.localPref: 200 conflicts with BGPAdvertisement 'web'",
            "serviceSelectors",
        ],
    );
}
