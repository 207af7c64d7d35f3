//! The API on a real kube-apiserver [API, WEBHOOK], driven with the real kubectl: the CRDs
//! install, the samples apply, bad objects are rejected by the schema alone (no
//! webhook runs here) with a message naming the field, and the schema's rules
//! agree with the Rust rules in `ferrolb-api`.

use ferrolb_api::address::parse_pool_entry;
use ferrolb_api::community::Community;
use ferrolb_api::timer::parse_timer;
use ferrolb_api::{IPAddressPool, NodeAnnouncement, Validate};
use ferrolb_e2e::cluster::{TestCluster, text};
use ferrolb_e2e::controlplane::workspace_root;
use kube::api::{Api, Patch, PatchParams, PostParams};

/// The control plane with the CRDs installed, and its kubectl output on success.
async fn cluster() -> TestCluster {
    TestCluster::start().await.expect("cluster with CRDs")
}

fn kubectl_ok(cluster: &TestCluster, args: &[&str]) -> String {
    cluster.kubectl(args).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn crds_install_samples_apply_and_kubectl_explains_and_prints_columns() {
    let plane = cluster().await;
    let established = kubectl_ok(&plane, &["get", "crd", "-o", "name"]);
    for name in [
        "ipaddresspools.ferrolb.io",
        "l2advertisements.ferrolb.io",
        "bgppeers.ferrolb.io",
        "bgpadvertisements.ferrolb.io",
        "nodeannouncements.ferrolb.io",
        "bfdprofiles.ferrolb.io",
    ] {
        assert!(established.contains(name), "{name} in {established}");
    }

    let samples = workspace_root().join("config/samples");
    let out = kubectl_ok(&plane, &["apply", "-f", samples.to_str().expect("path")]);
    for object in [
        "ipaddresspool.ferrolb.io/l2-pool created",
        "l2advertisement.ferrolb.io/l2-pool created",
        "bgppeer.ferrolb.io/router created",
        "bfdprofile.ferrolb.io/fast created",
        "ipaddresspool.ferrolb.io/bgp-pool created",
        "bgpadvertisement.ferrolb.io/bgp-pool created",
        "ipaddresspool.ferrolb.io/dual-stack created",
        "ipaddresspool.ferrolb.io/team-a created",
        "bgpadvertisement.ferrolb.io/bgp-pool-to-rr created",
    ] {
        assert!(out.contains(object), "{object} in:\n{out}");
    }

    let explain = kubectl_ok(&plane, &["explain", "ipaddresspool.spec.addresses"]);
    assert!(explain.contains("FIELD: addresses <[]string>"), "{explain}");
    assert!(explain.contains("an inclusive range"), "{explain}");
    let explain = kubectl_ok(&plane, &["explain", "bfdprofile.spec.detectMultiplier"]);
    assert!(explain.contains("detection time"), "{explain}");
    let explain = kubectl_ok(&plane, &["explain", "bgppeer.spec.holdTime"]);
    assert!(
        explain.contains("Proposed BGP hold time in whole seconds"),
        "{explain}"
    );

    let pools = kubectl_ok(&plane, &["get", "ipaddresspools"]);
    let header: Vec<&str> = pools
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "ADDRESSES",
            "AUTO",
            "ASSIGN",
            "ASSIGNED",
            "AVAILABLE",
            "AGE"
        ]
    );
    assert!(
        pools.contains(r#"["192.168.35.100-192.168.35.110"]"#),
        "{pools}"
    );
    let peers = kubectl_ok(&plane, &["get", "bgppeers"]);
    let line = peers
        .lines()
        .find(|l| l.starts_with("router "))
        .expect("router row");
    assert_eq!(
        line.split_whitespace().take(4).collect::<Vec<_>>(),
        ["router", "192.168.10.254", "64513", "64512"]
    );
    assert!(
        peers
            .lines()
            .next()
            .unwrap_or_default()
            .contains("ESTABLISHED"),
        "{peers}"
    );

    // A NodeAnnouncement as the operator and a speaker would leave it.
    plane
        .apply_ok("apiVersion: ferrolb.io/v1alpha1\nkind: NodeAnnouncement\nmetadata: {name: node-a}\nspec:\n  l2: [{role: active, ips: [192.168.35.100]}]\n")
        .expect("node announcement");
    let status = r#"{"status":{"observedGeneration":1,"l2Active":"192.168.35.100","bgpSessions":"1/2","bfdSessions":"1/1"}}"#;
    kubectl_ok(
        &plane,
        &[
            "patch",
            "nodeannouncement",
            "node-a",
            "--subresource=status",
            "--type=merge",
            "-p",
            status,
        ],
    );
    let table = kubectl_ok(&plane, &["get", "nodeannouncements"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "L2",
            "ACTIVE",
            "BGP",
            "UP",
            "BFD",
            "UP",
            "GENERATION",
            "APPLIED",
            "AGE"
        ]
    );
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..6],
        ["node-a", "192.168.35.100", "1/2", "1/1", "1", "1"],
        "{table}"
    );

    // `kubectl get ferrolb` lists every kind through the category.
    let all = kubectl_ok(&plane, &["get", "ferrolb", "-o", "name"]);
    assert!(
        all.contains("nodeannouncement.ferrolb.io/node-a")
            && all.contains("bgppeer.ferrolb.io/router"),
        "{all}"
    );
}

/// One object the schema must reject: where, and words the message must hold.
struct Bad {
    kind: &'static str,
    spec: &'static str,
    path: &'static str,
    says: &'static str,
}

const fn bad(
    kind: &'static str,
    spec: &'static str,
    path: &'static str,
    says: &'static str,
) -> Bad {
    Bad {
        kind,
        spec,
        path,
        says,
    }
}

const POOL: &str = "IPAddressPool";
const L2: &str = "L2Advertisement";
const PEER: &str = "BGPPeer";
const ADV: &str = "BGPAdvertisement";
const NODE: &str = "NodeAnnouncement";

const BAD: &[Bad] = &[
    bad(
        POOL,
        "{addresses: [nonsense]}",
        "spec.addresses[0]",
        "'nonsense' is not an address",
    ),
    bad(
        POOL,
        "{addresses: ['10.0.0.0/33']}",
        "spec.addresses[0]",
        "is not an address",
    ),
    bad(
        POOL,
        "{addresses: [10.0.0.1/24]}",
        "spec.addresses[0]",
        "has host bits set",
    ),
    bad(
        POOL,
        "{addresses: ['fd00::1/64']}",
        "spec.addresses[0]",
        "has host bits set",
    ),
    bad(
        POOL,
        "{addresses: ['10.0.0.1-fd00::1']}",
        "spec.addresses[0]",
        "mixes IPv4 and IPv6",
    ),
    bad(
        POOL,
        "{addresses: [10.0.0.20-10.0.0.10]}",
        "spec.addresses[0]",
        "starts after it ends",
    ),
    bad(
        POOL,
        "{addresses: ['fd00::1:0-fd00::ffff']}",
        "spec.addresses[0]",
        "starts after it ends",
    ),
    bad(
        POOL,
        "{addresses: [10.0.0.0/24, 10.0.0.0/24]}",
        "spec.addresses[1]",
        "Duplicate value",
    ),
    bad(
        POOL,
        "{addresses: []}",
        "spec.addresses",
        "at least 1 items",
    ),
    bad(
        POOL,
        "{addresses: [10.0.0.0/24], serviceAllocation: {namespaces: [Team_A]}}",
        "spec.serviceAllocation.namespaces[0]",
        "is not a namespace name",
    ),
    bad(
        POOL,
        "{addresses: [10.0.0.0/24], serviceAllocation: {serviceSelectors: [{matchExpressions: [{key: tier, operator: In}]}]}}",
        "spec.serviceAllocation.serviceSelectors[0].matchExpressions[0].values",
        "need at least one value",
    ),
    bad(
        POOL,
        "{addresses: [10.0.0.0/24], serviceAllocation: {namespaceSelectors: [{matchExpressions: [{key: '-x', operator: Exists}]}]}}",
        "spec.serviceAllocation.namespaceSelectors[0].matchExpressions[0].key",
        "is not a label key",
    ),
    bad(
        L2,
        "{interfaces: ['eth0:1']}",
        "spec.interfaces[0]",
        "not a network interface name",
    ),
    bad(
        L2,
        "{ipAddressPools: [a, a]}",
        "spec.ipAddressPools[1]",
        "Duplicate value",
    ),
    bad(
        L2,
        "{ipAddressPools: [L2_Pool]}",
        "spec.ipAddressPools[0]",
        "is not an object name",
    ),
    bad(
        PEER,
        "{myASN: 0, peerASN: 1, peerAddress: 10.0.0.1}",
        "spec.myASN",
        "greater than or equal to 1",
    ),
    bad(
        PEER,
        "{myASN: 1, peerASN: 4294967296, peerAddress: 10.0.0.1}",
        "spec.peerASN",
        "less than or equal to 4294967295",
    ),
    bad(
        PEER,
        "{myASN: 1, peerAddress: 10.0.0.1}",
        "spec",
        "set exactly one of peerASN and dynamicASN",
    ),
    bad(
        PEER,
        "{myASN: 1, peerASN: 2, dynamicASN: external, peerAddress: 10.0.0.1}",
        "spec",
        "set exactly one of peerASN and dynamicASN",
    ),
    bad(
        PEER,
        "{myASN: 1, peerASN: 2, peerAddress: 10.0.0.1, peerPort: 0}",
        "spec.peerPort",
        "greater than or equal to 1",
    ),
    bad(
        PEER,
        "{myASN: 1, peerASN: 2, peerAddress: 10.0.0.1, peerPort: 65536}",
        "spec.peerPort",
        "less than or equal to 65535",
    ),
    bad(
        PEER,
        "{myASN: 1, peerASN: 2, peerAddress: router.lan}",
        "spec.peerAddress",
        "is not an IP address",
    ),
    bad(
        PEER,
        "{myASN: 1, peerASN: 2, peerAddress: 10.0.0.1, holdTime: 2s}",
        "spec.holdTime",
        "0s (no keepalives) or between 3s and 65535s",
    ),
    bad(
        PEER,
        "{myASN: 1, peerASN: 2, peerAddress: 10.0.0.1, holdTime: 1.5s}",
        "spec.holdTime",
        "not a whole number of seconds",
    ),
    bad(
        PEER,
        "{myASN: 1, peerASN: 2, peerAddress: 10.0.0.1, holdTime: 9s, keepaliveTime: 10s}",
        "spec.keepaliveTime",
        "must not exceed holdTime",
    ),
    bad(
        PEER,
        "{myASN: 1, peerASN: 2, peerAddress: 10.0.0.1, connectTime: 0s}",
        "spec.connectTime",
        "between 1s and 65535s",
    ),
    bad(
        PEER,
        "{myASN: 1, peerASN: 2, peerAddress: 10.0.0.1, sourceAddress: 'fd00::1'}",
        "spec.sourceAddress",
        "same IP family",
    ),
    bad(
        PEER,
        "{myASN: 1, peerASN: 2, peerAddress: 10.0.0.1, routerID: 'fd00::1'}",
        "spec.routerID",
        "is not an IPv4 address",
    ),
    bad(
        PEER,
        "{myASN: 7, peerASN: 7, peerAddress: 10.0.0.1, ebgpMultiHop: true}",
        "spec.ebgpMultiHop",
        "eBGP only",
    ),
    bad(
        PEER,
        "{myASN: 1, peerASN: 2, peerAddress: 10.0.0.1, passwordSecretRef: {name: Bgp_Auth}}",
        "spec.passwordSecretRef.name",
        "is not an object name",
    ),
    bad(
        ADV,
        "{aggregationLength: 33}",
        "spec.aggregationLength",
        "less than or equal to 32",
    ),
    bad(
        ADV,
        "{aggregationLength: 0}",
        "spec.aggregationLength",
        "greater than or equal to 1",
    ),
    bad(
        ADV,
        "{aggregationLengthV6: 129}",
        "spec.aggregationLengthV6",
        "less than or equal to 128",
    ),
    bad(
        ADV,
        "{communities: ['65536:1']}",
        "spec.communities[0]",
        "is not a community",
    ),
    bad(
        ADV,
        "{communities: ['large:1:2']}",
        "spec.communities[0]",
        "is not a community",
    ),
    bad(
        ADV,
        "{communities: ['1:1', '1:1']}",
        "spec.communities[1]",
        "Duplicate value",
    ),
    bad(
        ADV,
        "{localPref: 4294967296}",
        "spec.localPref",
        "less than or equal to 4294967295",
    ),
    bad(
        ADV,
        "{peers: [Router]}",
        "spec.peers[0]",
        "is not an object name",
    ),
    bad(
        NODE,
        "{l2: [{ips: [10.0.0.1], role: standby}]}",
        "spec.l2[0].standbyFor",
        "required for role standby",
    ),
    bad(
        NODE,
        "{l2: [{ips: [10.0.0.1], role: leader}]}",
        "spec.l2[0].role",
        "Unsupported value",
    ),
];

/// The Rust rules find an error at the same path, or cannot even read the spec
/// (a number out of its type's range).
fn rust_rejects(case: &Bad) -> bool {
    fn check<T: serde::de::DeserializeOwned + Validate>(case: &Bad) -> bool {
        match serde_yaml::from_str::<T>(case.spec) {
            Ok(spec) => spec.validate().iter().any(|e| e.path == case.path),
            Err(_) => true,
        }
    }
    match case.kind {
        POOL => check::<ferrolb_api::IPAddressPoolSpec>(case),
        L2 => check::<ferrolb_api::L2AdvertisementSpec>(case),
        PEER => check::<ferrolb_api::BGPPeerSpec>(case),
        ADV => check::<ferrolb_api::BGPAdvertisementSpec>(case),
        _ => check::<ferrolb_api::NodeAnnouncementSpec>(case),
    }
}

#[tokio::test]
async fn the_apiserver_alone_rejects_bad_objects_naming_the_field() {
    assert!(BAD.len() >= 25);
    let plane = cluster().await;
    let mut failures = Vec::new();
    for (i, case) in BAD.iter().enumerate() {
        let yaml = format!(
            "apiVersion: ferrolb.io/v1alpha1\nkind: {}\nmetadata: {{name: bad-{i}}}\nspec: {}\n",
            case.kind, case.spec
        );
        let out = plane.apply(&yaml).expect("kubectl");
        let said = text(&out);
        if out.status.success() {
            failures.push(format!("accepted: {} {}", case.kind, case.spec));
        } else if !said.contains(&format!("{}: ", case.path)) || !said.contains(case.says) {
            failures.push(format!(
                "{} {}: wanted `{}` and `{}` in:\n{said}",
                case.kind, case.spec, case.path, case.says
            ));
        }
        if !rust_rejects(case) {
            failures.push(format!("the Rust rules accept {} {}", case.kind, case.spec));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A small deterministic generator, so a failure names a reproducible case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Address-like strings near the edges of the rules: valid and invalid octets,
/// prefix lengths with and without host bits, ranges in both orders and mixed
/// families, IPv6 with `::` in every position.
fn address_like(rng: &mut Rng) -> String {
    let v4 = |rng: &mut Rng| {
        let octet = |rng: &mut Rng| match rng.below(12) {
            0 => "256".to_string(),
            1 => "01".to_string(),
            2 => "255".to_string(),
            3 => "0".to_string(),
            _ => rng.below(8).to_string(),
        };
        format!("{}.{}.{}.{}", 10, octet(rng), octet(rng), octet(rng))
    };
    let v6 = |rng: &mut Rng| {
        let group = |rng: &mut Rng| match rng.below(10) {
            0 => "0".to_string(),
            1 => "ffff".to_string(),
            2 => "10000".to_string(),
            _ => format!("{:x}", rng.below(4)),
        };
        match rng.below(5) {
            0 => format!("fd00::{}", group(rng)),
            1 => format!("fd00:{}::", group(rng)),
            2 => format!("::{}", group(rng)),
            3 => format!("fd00:0:0:0:0:0:{}:{}", group(rng), group(rng)),
            _ => format!("fd00::{}:{}", group(rng), group(rng)),
        }
    };
    let ip = |rng: &mut Rng| if rng.below(2) == 0 { v4(rng) } else { v6(rng) };
    match rng.below(6) {
        0 => ip(rng),
        1 | 2 => format!("{}/{}", ip(rng), rng.below(131)),
        3 => format!("{}-{}", ip(rng), ip(rng)),
        4 => {
            let a = ip(rng);
            let b = ip(rng);
            format!("{a} - {b}")
        }
        _ => rng
            .pick(&[
                "",
                "x",
                "10.0.0.1-",
                "-10.0.0.1",
                "10.0.0.0/+8",
                "10.0.0.0/08",
                " 10.0.0.1",
                "::ffff:10.0.0.1",
                "fe80::1%eth0",
                "10.0.0.1--10.0.0.2",
            ])
            .to_string(),
    }
}

#[tokio::test]
async fn schema_rules_and_rust_rules_agree() {
    let plane = cluster().await;
    let client = plane.client.clone();
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let mut rng = Rng(0x5eed_f0e1_0b00_0001);
    let mut disagreements = Vec::new();

    let pools: Api<IPAddressPool> = Api::all(client.clone());
    let mut accepted = 0;
    for i in 0..400 {
        let entry = address_like(&mut rng);
        let pool: IPAddressPool = serde_json::from_value(serde_json::json!({
            "apiVersion": "ferrolb.io/v1alpha1", "kind": "IPAddressPool",
            "metadata": {"name": format!("p{i}")}, "spec": {"addresses": [entry]},
        }))
        .expect("pool");
        let server = pools.create(&dry_run, &pool).await;
        let rust = parse_pool_entry(&entry);
        accepted += usize::from(server.is_ok());
        if server.is_ok() != rust.is_ok() {
            disagreements.push(format!(
                "address {entry:?}: apiserver {server:?}, Rust {rust:?}"
            ));
        }
    }
    assert!(
        accepted > 80 && accepted < 320,
        "the cases exercise both verdicts ({accepted}/400 accepted)"
    );

    let advertisements: Api<ferrolb_api::BGPAdvertisement> = Api::all(client.clone());
    for i in 0..150 {
        let n = |rng: &mut Rng| match rng.below(4) {
            0 => "65535".to_string(),
            1 => "65536".to_string(),
            2 => "4294967296".to_string(),
            _ => rng.below(70000).to_string(),
        };
        let community = match rng.below(4) {
            0 => format!("{}:{}", n(&mut rng), n(&mut rng)),
            1 => format!("large:{}:{}:{}", n(&mut rng), n(&mut rng), n(&mut rng)),
            2 => format!("large:{}:{}", n(&mut rng), n(&mut rng)),
            _ => rng
                .pick(&[
                    "no-export",
                    "no-peer",
                    "NO-EXPORT",
                    "1:2:3",
                    "+1:2",
                    ":",
                    "blackhole",
                ])
                .to_string(),
        };
        let adv: ferrolb_api::BGPAdvertisement = serde_json::from_value(serde_json::json!({
            "apiVersion": "ferrolb.io/v1alpha1", "kind": "BGPAdvertisement",
            "metadata": {"name": format!("a{i}")}, "spec": {"communities": [community]},
        }))
        .expect("advertisement");
        let server = advertisements.create(&dry_run, &adv).await;
        let rust = Community::parse(&community);
        if server.is_ok() != rust.is_ok() {
            disagreements.push(format!(
                "community {community:?}: apiserver {server:?}, Rust {rust:?}"
            ));
        }
    }

    let peers: Api<ferrolb_api::BGPPeer> = Api::all(client.clone());
    for (i, hold) in [
        "0",
        "0s",
        "2s",
        "3s",
        "90s",
        "1m30s",
        "1h",
        "18h12m15s",
        "18h12m16s",
        "1.5s",
        "500ms",
        "3",
        "1s1m",
        "s",
        "-3s",
        "65535s",
        "65536s",
    ]
    .iter()
    .enumerate()
    {
        let peer: ferrolb_api::BGPPeer = serde_json::from_value(serde_json::json!({
            "apiVersion": "ferrolb.io/v1alpha1", "kind": "BGPPeer",
            "metadata": {"name": format!("h{i}")},
            "spec": {"myASN": 1, "peerASN": 2, "peerAddress": "10.0.0.1", "holdTime": hold, "keepaliveTime": "0s"},
        }))
        .expect("peer");
        let server = peers.create(&dry_run, &peer).await;
        let rust = peer.spec.validate();
        if server.is_ok() != rust.is_empty() {
            disagreements.push(format!(
                "holdTime {hold:?}: apiserver {server:?}, Rust {rust:?}"
            ));
        }
        // The parser alone agrees on syntax too.
        let _ = parse_timer(hold);
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

#[tokio::test]
async fn server_side_apply_merges_conditions_by_type() {
    let plane = cluster().await;
    let client = plane.client.clone();
    let api: Api<NodeAnnouncement> = Api::all(client);
    let node = NodeAnnouncement::new("node-a", Default::default());
    api.create(&PostParams::default(), &node)
        .await
        .expect("create");
    let condition = |kind: &str, manager: &str| {
        serde_json::json!({
            "apiVersion": "ferrolb.io/v1alpha1", "kind": "NodeAnnouncement",
            "metadata": {"name": "node-a"},
            "status": {"conditions": [{
                "type": kind, "status": "True", "reason": "Test", "message": manager,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }]},
        })
    };
    for (kind, manager) in [("Applied", "ferrolb-speaker"), ("Checked", "someone-else")] {
        api.patch_status(
            "node-a",
            &PatchParams::apply(manager).force(),
            &Patch::Apply(condition(kind, manager)),
        )
        .await
        .expect("apply status");
    }
    let status = api
        .get_status("node-a")
        .await
        .expect("get")
        .status
        .expect("status");
    let mut kinds: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["Applied", "Checked"],
        "each manager keeps its own condition"
    );
}
