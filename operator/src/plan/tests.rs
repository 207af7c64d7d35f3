//! The pass as a whole, from a snapshot of plain values: every condition
//! reason and message a Service can show, without an apiserver.

use super::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use status::Desired;

#[test]
fn a_passing_not_yet_applied_raises_no_warning_but_a_real_problem_does() {
    let pending = Verdict::no("NotYetApplied", "the speaker has not applied it yet");
    assert!(transition(condition::ANNOUNCED, None, &pending).is_none());
    let stuck = Verdict::no("NoEligibleNode", "no node may announce 10.0.0.1");
    let event = transition(condition::ANNOUNCED, Some("NotYetApplied"), &stuck).unwrap();
    assert_eq!(event.type_, EventType::Warning);
    assert_eq!(event.reason, "NotAnnounced");
    let fine = Verdict::yes("Announced", "L2: 10.0.0.1 answered by node a");
    let event = transition(condition::ANNOUNCED, Some("NotYetApplied"), &fine).unwrap();
    assert_eq!(event.type_, EventType::Normal);
    assert!(transition(condition::ANNOUNCED, Some("Announced"), &fine).is_none());
}

use crate::cluster::{Objects, Options};
use ferrolb_api::nodeannouncement::{
    BgpState, L2Phase, L2State, NodeAnnouncementStatus, SessionState,
};
use ferrolb_api::{NodeAnnouncement, constants::speaker_lease};
use serde::de::DeserializeOwned;

/// Reads `---`-separated YAML documents into the kinds a pass reads.
fn objects(yaml: &str) -> Objects {
    fn one<K: DeserializeOwned>(doc: &serde_yaml::Value) -> Arc<K> {
        Arc::new(serde_yaml::from_value(doc.clone()).expect("object"))
    }
    let mut objects = Objects::default();
    for doc in yaml.split("\n---\n") {
        let doc: serde_yaml::Value = serde_yaml::from_str(doc).expect("yaml");
        match doc["kind"].as_str().expect("kind") {
            "Service" => objects.services.push(one(&doc)),
            "IPAddressPool" => objects.pools.push(one(&doc)),
            "Node" => objects.nodes.push(one(&doc)),
            "L2Advertisement" => objects.l2.push(one(&doc)),
            "BGPPeer" => objects.peers.push(one(&doc)),
            "BGPAdvertisement" => objects.bgp.push(one(&doc)),
            "BFDProfile" => objects.bfd_profiles.push(one(&doc)),
            "EndpointSlice" => objects.slices.push(one(&doc)),
            other => panic!("unexpected kind {other}"),
        }
    }
    objects
}

const POOL: &str = "apiVersion: ferrolb.io/v1alpha1
kind: IPAddressPool
metadata: {name: lan}
spec: {addresses: [192.168.1.10-192.168.1.11]}";

const L2: &str = "apiVersion: ferrolb.io/v1alpha1
kind: L2Advertisement
metadata: {name: all}
spec: {}";

const NODE: &str = "apiVersion: v1
kind: Node
metadata: {name: node-a}
status: {conditions: [{type: Ready, status: 'True'}]}";

const PEER: &str = "apiVersion: ferrolb.io/v1alpha1
kind: BGPPeer
metadata: {name: tor}
spec: {myASN: 64512, peerASN: 64513, peerAddress: 172.30.0.1}";

const BGP: &str = "apiVersion: ferrolb.io/v1alpha1
kind: BGPAdvertisement
metadata: {name: all}
spec: {}";

fn service(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default, resourceVersion: '1', creationTimestamp: '2026-01-01T00:00:0{}Z'{extra}}}
spec: {{type: LoadBalancer, ports: [{{port: 80, protocol: TCP}}]}}",
        // `web` asks last.
        if name == "web" { 9 } else { name.len() % 9 }
    )
}

/// Every session of a spec reported in `state`, as a speaker would.
fn sessions(
    spec: &ferrolb_api::NodeAnnouncementSpec,
    state: BgpState,
    prefixes_advertised: i32,
    last_error: Option<&str>,
) -> Vec<SessionState> {
    spec.bgp
        .iter()
        .map(|s| SessionState {
            name: s.name.clone(),
            state,
            since: None,
            prefixes_advertised,
            last_error: last_error.map(str::to_string),
            families_not_sent: None,
            bfd: None,
        })
        .collect()
}

/// What the speakers report, applied to the NodeAnnouncements a first
/// pass wrote.
#[derive(Clone, Copy)]
enum Report {
    Nothing,
    Answering,
    Failed,
    Session(BgpState),
    /// Established, with BFD in this state.
    Bfd(ferrolb_api::nodeannouncement::BfdState),
}

/// Two passes, as the operator makes them: the first plans and writes the
/// NodeAnnouncements, the speakers report, the second tells the Service.
/// Returns the Service `web`'s desired status.
fn status_of(yaml: &[String], report: Report, live: bool) -> Desired {
    let yaml = yaml.join("\n---\n");
    let options = Options {
        lb_class: "ferrolb.io/ferrolb".into(),
        ignore_exclude_lb: false,
    };
    let live: BTreeSet<String> = if live {
        BTreeSet::from([speaker_lease("node-a")])
    } else {
        BTreeSet::new()
    };
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let snapshot = crate::cluster::Snapshot::read(objects(&yaml), &options, &live);
    let mut memory = Memory::rebuild(&snapshot);
    let first = memory.pass(&snapshot, now);
    let mut objects = objects(&yaml);
    for write in &first.writes {
        if let Write::Announcement { node, spec, .. } = write {
            let mut announcement = NodeAnnouncement::new(node, spec.clone());
            announcement.metadata.generation = Some(1);
            let l2 = |state: L2Phase, message: Option<&str>| {
                spec.l2
                    .iter()
                    .map(|e| L2State {
                        ips: e.ips.clone(),
                        state,
                        interfaces: vec!["eth0".into()],
                        since: None,
                        message: message.map(str::to_string),
                        taken_from: None,
                    })
                    .collect()
            };
            announcement.status = match report {
                Report::Nothing => None,
                Report::Answering => Some(NodeAnnouncementStatus {
                    observed_generation: Some(1),
                    l2: l2(L2Phase::Announcing, None),
                    ..Default::default()
                }),
                Report::Failed => Some(NodeAnnouncementStatus {
                    observed_generation: Some(1),
                    l2: l2(L2Phase::Failed, Some("interface eth0 is down")),
                    ..Default::default()
                }),
                Report::Bfd(bfd) => Some(NodeAnnouncementStatus {
                    observed_generation: Some(1),
                    bgp: sessions(spec, BgpState::Established, 1, None)
                        .into_iter()
                        .map(|mut s| {
                            s.bfd = Some(ferrolb_api::nodeannouncement::BfdStatus {
                                state: bfd,
                                message: None,
                            });
                            s
                        })
                        .collect(),
                    ..Default::default()
                }),
                Report::Session(state) => Some(NodeAnnouncementStatus {
                    observed_generation: Some(1),
                    bgp: sessions(
                        spec,
                        state,
                        1,
                        (state != BgpState::Established).then_some("connection refused"),
                    ),
                    ..Default::default()
                }),
            };
            objects.announcements.push(Arc::new(announcement));
        }
    }
    let snapshot = crate::cluster::Snapshot::read(objects, &options, &live);
    let second = memory.pass(&snapshot, now);
    second
        .writes
        .into_iter()
        .find_map(|w| match w {
            Write::Service { key, desired, .. } if key.name == "web" => Some(desired),
            _ => None,
        })
        .expect("a status for web")
}

/// A case, its objects, what the speakers report, whether the speaker is
/// alive, the condition, its reason and its message.
type Case<'a> = (&'a str, Vec<String>, Report, bool, &'a str, &'a str, String);

#[test]
fn every_condition_reason_and_message_through_the_pass() {
    let web = service("web", "");
    let other = service("first", "");
    let ann = |a: &str| service("web", &format!(", annotations: {{{a}}}"));
    let local = web.replace(
        "type: LoadBalancer",
        "type: LoadBalancer, externalTrafficPolicy: Local",
    );
    let dual = web.replace(
        "type: LoadBalancer",
        "type: LoadBalancer, ipFamilyPolicy: RequireDualStack, ipFamilies: [IPv4, IPv6]",
    );
    let shows_outside = service("web", "").replace(
        "spec:",
        "status: {loadBalancer: {ingress: [{ip: 10.9.9.9}]}}\nspec:",
    );
    let third = service("a", "");
    let other_manager = service(
        "web",
        ", managedFields: [{manager: ferrolb-operator, operation: Apply, subresource: status, time: '2026-01-01T00:00:00Z', fieldsType: FieldsV1, fieldsV1: {'f:status': {'f:conditions': {}}}}, {manager: svclb-controller, operation: Update, subresource: status, time: '2026-01-01T00:00:05Z', fieldsType: FieldsV1, fieldsV1: {'f:status': {'f:loadBalancer': {'f:ingress': {}}}}}]",
    );
    let not_ready = NODE.replace("'True'", "'False'");
    let bgp_only = [POOL, NODE, PEER, BGP];
    use condition::reason as r;
    macro_rules! docs {
        ($($d:expr),* $(,)?) => { vec![$(String::from(AsRef::<str>::as_ref(&$d))),*] };
    }
    let ip = "192.168.1.10";
    // (case, objects, report, speaker alive, condition, reason, message)
    #[rustfmt::skip]
    let table: Vec<Case> = vec![
        ("allocated", docs![POOL, L2, NODE, &web], Report::Answering, true,
            condition::IP_ALLOCATED, r::ALLOCATED, format!("Allocated {ip} from pool lan")),
        ("no pool serves it", docs![POOL, L2, NODE, &ann("ferrolb.io/address-pool: elsewhere")], Report::Nothing, true,
            condition::IP_ALLOCATED, r::NO_MATCHING_POOL, "asks for pool 'elsewhere' (annotation ferrolb.io/address-pool), and there is no IPAddressPool of that name".into()),
        ("the pool is full", docs![POOL, L2, NODE, &other, &third, &web], Report::Nothing, true,
            condition::IP_ALLOCATED, r::POOL_EXHAUSTED, "every pool that serves this Service is out of IPv4 addresses (lan): add addresses to a pool or free some; the Service gets an IP as soon as one is free".into()),
        ("the IP asked for is taken", docs![POOL, L2, NODE, &service("first", &format!(", annotations: {{ferrolb.io/loadBalancerIPs: '{ip}'}}")), &ann(&format!("ferrolb.io/loadBalancerIPs: '{ip}'"))], Report::Nothing, true,
            condition::IP_ALLOCATED, r::REQUESTED_IP_UNAVAILABLE, "192.168.1.10 is held by default/first; to share it, give both Services the annotation ferrolb.io/allow-shared-ip with the same key, or ask for another IP".into()),
        ("the IP asked for is in no pool", docs![POOL, L2, NODE, &ann("ferrolb.io/loadBalancerIPs: '10.9.9.9'")], Report::Nothing, true,
            condition::IP_ALLOCATED, r::REQUESTED_IP_NOT_IN_ANY_POOL, "asks for 10.9.9.9, which is in no IPAddressPool: add it to a pool or ask for an address of one".into()),
        ("sharing on the same port", docs![POOL, L2, NODE,
            &service("first", &format!(", annotations: {{ferrolb.io/loadBalancerIPs: '{ip}', ferrolb.io/allow-shared-ip: k}}")),
            &ann(&format!("ferrolb.io/loadBalancerIPs: '{ip}', ferrolb.io/allow-shared-ip: k"))], Report::Nothing, true,
            condition::IP_ALLOCATED, r::SHARING_CONFLICT, "192.168.1.10 is held by default/first, which cannot share it with this Service: it uses port 80/TCP too".into()),
        ("an IP that is not one", docs![POOL, L2, NODE, &ann("ferrolb.io/loadBalancerIPs: 'not-an-ip'")], Report::Nothing, true,
            condition::IP_ALLOCATED, r::INVALID_REQUEST, "annotation ferrolb.io/loadBalancerIPs: 'not-an-ip' is not an IP address; write one IP per family, comma-separated".into()),
        ("dual-stack from an IPv4 pool", docs![POOL, L2, NODE, &dual], Report::Nothing, true,
            condition::IP_ALLOCATED, r::DUAL_STACK_UNAVAILABLE, "the Service requires dual stack, but no IPAddressPool with autoAssign hands out IPv6 addresses to namespace 'default' and this Service's labels: add a pool, widen a pool's serviceAllocation, or name a pool with the annotation ferrolb.io/address-pool".into()),
        ("an IP kept outside every pool", docs![POOL, L2, NODE, &shows_outside], Report::Nothing, true,
            condition::IP_ALLOCATED, r::IP_NOT_IN_ANY_POOL, "keeps 10.9.9.9 so traffic keeps flowing, but no IPAddressPool holds it any more (its pool was edited or deleted): add it back to a pool, or name a pool with the annotation ferrolb.io/address-pool to move the Service to a new address".into()),
        ("answered", docs![POOL, L2, NODE, &web], Report::Answering, true,
            condition::ANNOUNCED, r::ANNOUNCED, format!("L2: {ip} answered by node node-a (no standby node)")),
        ("not reported yet", docs![POOL, L2, NODE, &web], Report::Nothing, true,
            condition::ANNOUNCED, r::NOT_YET_APPLIED, format!("L2: node node-a is to answer for {ip} (no standby node); its speaker has not reported it yet")),
        ("the speaker cannot answer", docs![POOL, L2, NODE, &web], Report::Failed, true,
            condition::ANNOUNCED, r::ANNOUNCE_FAILED, format!("L2: node node-a cannot answer for {ip}: interface eth0 is down")),
        ("no advertisement", docs![POOL, NODE, &web], Report::Nothing, true,
            condition::ANNOUNCED, r::NO_ADVERTISEMENT, "no L2Advertisement or BGPAdvertisement covers pool lan: create one that selects it".into()),
        ("no node ready", docs![POOL, L2, &not_ready, &web], Report::Nothing, true,
            condition::ANNOUNCED, r::NO_ELIGIBLE_NODE, "L2: no node may announce 192.168.1.10: node-a: not Ready".into()),
        ("no live speaker", docs![POOL, L2, NODE, &web], Report::Nothing, false,
            condition::ANNOUNCED, r::NO_ELIGIBLE_NODE, "L2: no node may announce 192.168.1.10: node-a: its speaker is not running".into()),
        ("Local without endpoints", docs![POOL, L2, NODE, &local], Report::Nothing, true,
            condition::ANNOUNCED, r::NO_LOCAL_ENDPOINTS, "L2: externalTrafficPolicy is Local and no eligible node has a ready endpoint of this Service".into()),
        ("another controller", docs![POOL, L2, NODE, &other_manager], Report::Answering, true,
            condition::ANNOUNCED, r::OTHER_CONTROLLER, "another controller (field manager \"svclb-controller\") also writes status.loadBalancer of this Service, so clients may be handed its address instead of ferrolb's: turn it off (k3s: start the server with --disable servicelb; MetalLB: uninstall it once migrated) or keep the two apart with spec.loadBalancerClass (ferrolb handles --lb-class and Services without a class)".into()),
        ("BGP established", bgp_only.iter().copied().chain([web.as_str()]).map(String::from).collect(), Report::Session(BgpState::Established), true,
            condition::ANNOUNCED, r::ANNOUNCED, format!("BGP: {ip} advertised by node node-a to 1 peer(s) (1 of 1 sessions Established)")),
        ("BGP established with BFD", bgp_only.iter().copied().chain([web.as_str()]).map(String::from).collect(), Report::Bfd(ferrolb_api::nodeannouncement::BfdState::Up), true,
            condition::ANNOUNCED, r::ANNOUNCED, format!("BGP: {ip} advertised by node node-a to 1 peer(s) (1 of 1 sessions Established, BFD Up on 1 of 1)")),
        ("BGP established, BFD down", bgp_only.iter().copied().chain([web.as_str()]).map(String::from).collect(), Report::Bfd(ferrolb_api::nodeannouncement::BfdState::Down), true,
            condition::ANNOUNCED, r::ANNOUNCED, format!("BGP: {ip} advertised by node node-a to 1 peer(s) (1 of 1 sessions Established, BFD Up on 0 of 1)")),
        ("BGP session down", bgp_only.iter().copied().chain([web.as_str()]).map(String::from).collect(), Report::Session(BgpState::Active), true,
            condition::ANNOUNCED, r::NO_ESTABLISHED_SESSION, format!("BGP: no session that would carry {ip} is Established: node-a to tor: Active: connection refused")),
        ("BGP not applied yet", bgp_only.iter().copied().chain([web.as_str()]).map(String::from).collect(), Report::Nothing, true,
            condition::ANNOUNCED, r::NOT_YET_APPLIED, format!("BGP: {ip} is to be advertised on 1 session(s); node-a to tor: its speaker has not reported yet")),
    ];
    let mut seen = BTreeSet::new();
    for (case, yaml, report, live, kind, reason, message) in table {
        let desired = status_of(&yaml, report, live);
        let verdict = if kind == condition::IP_ALLOCATED {
            Some(desired.allocated.clone())
        } else {
            desired.announced.clone()
        };
        let verdict = verdict.unwrap_or_else(|| panic!("{case}: no {kind} verdict"));
        assert_eq!(verdict.reason, reason, "{case}: {}", verdict.message);
        assert_eq!(verdict.message, message, "{case}");
        seen.insert(reason);
    }
    let every = [
        r::ALLOCATED,
        r::NO_MATCHING_POOL,
        r::POOL_EXHAUSTED,
        r::REQUESTED_IP_UNAVAILABLE,
        r::REQUESTED_IP_NOT_IN_ANY_POOL,
        r::SHARING_CONFLICT,
        r::INVALID_REQUEST,
        r::DUAL_STACK_UNAVAILABLE,
        r::IP_NOT_IN_ANY_POOL,
        r::ANNOUNCED,
        r::NO_ADVERTISEMENT,
        r::NO_ELIGIBLE_NODE,
        r::NO_LOCAL_ENDPOINTS,
        r::NOT_YET_APPLIED,
        r::ANNOUNCE_FAILED,
        r::NO_ESTABLISHED_SESSION,
        r::OTHER_CONTROLLER,
    ];
    for reason in every {
        assert!(seen.contains(reason), "no case shows {reason}");
    }
}

/// One change to the cluster between passes, for the replay below.
#[derive(Clone, Debug)]
enum Step {
    /// A Service: plain, asking for a shared IP, Local, or dual-stack if
    /// possible.
    Add(u8, u8),
    Delete(u8),
    /// Moves a Service to another IP or back to any.
    Ask(u8, u8),
    NodeReady(u8, bool),
    SpeakerAlive(u8, bool),
    /// An endpoint of a Service on a node.
    Endpoint(u8, u8),
    /// A node's speaker reports its NodeAnnouncement: answering, or its
    /// sessions up or down.
    Report(u8, u8),
    /// A Service turns Local or Cluster.
    Policy(u8, bool),
    /// A BGPAdvertisement comes or goes.
    Bgp(bool),
    /// The statuses the whole pass wants are written.
    Land,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0u8..12, 0u8..4).prop_map(|(s, k)| Step::Add(s, k)),
        2 => (0u8..12).prop_map(Step::Delete),
        2 => (0u8..12, 0u8..4).prop_map(|(s, ip)| Step::Ask(s, ip)),
        1 => (0u8..4, any::<bool>()).prop_map(|(n, r)| Step::NodeReady(n, r)),
        1 => (0u8..4, any::<bool>()).prop_map(|(n, a)| Step::SpeakerAlive(n, a)),
        2 => (0u8..12, 0u8..4).prop_map(|(s, n)| Step::Endpoint(s, n)),
        3 => (0u8..4, 0u8..3).prop_map(|(n, r)| Step::Report(n, r)),
        1 => any::<bool>().prop_map(Step::Bgp),
        2 => (0u8..12, any::<bool>()).prop_map(|(s, l)| Step::Policy(s, l)),
        3 => Just(Step::Land),
    ]
}

/// The cluster of the replay, as objects.
struct Replay {
    /// Each Service as JSON, and the object made of it (a new object only
    /// when it changed, as the stores hand them out).
    services: BTreeMap<u8, serde_json::Value>,
    objects: BTreeMap<u8, (serde_json::Value, Arc<k8s_openapi::api::core::v1::Service>)>,
    slices: BTreeMap<
        u8,
        (
            BTreeSet<u8>,
            Arc<k8s_openapi::api::discovery::v1::EndpointSlice>,
        ),
    >,
    ready: [bool; 4],
    alive: [bool; 4],
    endpoints: BTreeMap<u8, BTreeSet<u8>>,
    bgp: bool,
    announcements: BTreeMap<String, Arc<NodeAnnouncement>>,
}

impl Replay {
    fn objects(&mut self) -> (Objects, BTreeSet<String>) {
        fn from<K: DeserializeOwned>(value: serde_json::Value) -> Arc<K> {
            Arc::new(serde_json::from_value(value).expect("object"))
        }
        let mut objects = Objects {
            pools: vec![from(serde_json::json!({
                "apiVersion": "ferrolb.io/v1alpha1", "kind": "IPAddressPool",
                "metadata": {"name": "lan"}, "spec": {"addresses": ["192.168.1.10-192.168.1.17", "fd00::10-fd00::11"]},
            }))],
            l2: vec![from(serde_json::json!({
                "apiVersion": "ferrolb.io/v1alpha1", "kind": "L2Advertisement",
                "metadata": {"name": "all"}, "spec": {},
            }))],
            peers: vec![from(serde_json::json!({
                "apiVersion": "ferrolb.io/v1alpha1", "kind": "BGPPeer",
                "metadata": {"name": "tor"},
                "spec": {"myASN": 64512, "peerASN": 64513, "peerAddress": "172.30.0.1"},
            }))],
            ..Default::default()
        };
        if self.bgp {
            objects.bgp.push(from(serde_json::json!({
                "apiVersion": "ferrolb.io/v1alpha1", "kind": "BGPAdvertisement",
                "metadata": {"name": "all"}, "spec": {},
            })));
        }
        let mut live = BTreeSet::new();
        for n in 0..4 {
            let name = format!("node-{n}");
            if self.alive[n] {
                live.insert(speaker_lease(&name));
            }
            objects.nodes.push(from(serde_json::json!({
                "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                "status": {"conditions": [{"type": "Ready",
                    "status": if self.ready[n] { "True" } else { "False" }}]},
            })));
        }
        self.objects.retain(|s, _| self.services.contains_key(s));
        for (s, service) in &self.services {
            let object = match self.objects.get(s) {
                Some((json, object)) if json == service => object.clone(),
                _ => {
                    let object: Arc<k8s_openapi::api::core::v1::Service> = from(service.clone());
                    self.objects.insert(*s, (service.clone(), object.clone()));
                    object
                }
            };
            objects.services.push(object);
            if let Some(nodes) = self.endpoints.get(s) {
                if let Some((seen, slice)) = self.slices.get(s)
                    && seen == nodes
                {
                    objects.slices.push(slice.clone());
                    continue;
                }
                let slice: Arc<k8s_openapi::api::discovery::v1::EndpointSlice> =
                    from(serde_json::json!({
                        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                        "metadata": {"name": format!("svc-{s}-x"), "namespace": "default",
                            "labels": {"kubernetes.io/service-name": format!("svc-{s}")}},
                        "addressType": "IPv4",
                        "endpoints": nodes.iter().map(|n| serde_json::json!({
                            "addresses": ["10.244.0.1"], "nodeName": format!("node-{n}"),
                            "conditions": {"ready": true}})).collect::<Vec<_>>(),
                    }));
                self.slices.insert(*s, (nodes.clone(), slice.clone()));
                objects.slices.push(slice);
            }
        }
        objects.announcements = self.announcements.values().cloned().collect();
        (objects, live)
    }
}

proptest::proptest! {
    /// An incremental pass decides what a pass re-planning everything
    /// decides, through any sequence of Service, node, speaker, endpoint,
    /// report and advertisement changes, with writes landing in between.
    #[test]
    fn an_incremental_pass_decides_what_a_whole_pass_decides(
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        let options = Options { lb_class: "ferrolb.io/ferrolb".into(), ignore_exclude_lb: false };
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut replay = Replay {
            services: BTreeMap::new(),
            objects: BTreeMap::new(),
            slices: BTreeMap::new(),
            ready: [true; 4],
            alive: [true; 4],
            endpoints: BTreeMap::new(),
            bgp: false,
            announcements: BTreeMap::new(),
        };
        let (objects, live) = replay.objects();
        let mut reads = crate::cluster::Reads::default();
        let first = crate::cluster::Snapshot::read(objects, &options, &live);
        let mut incremental = Memory::rebuild(&first);
        let mut whole = Memory::rebuild(&first).whole_every_pass();
        let mut created = 0;
        for step in steps {
            match step {
                Step::Add(s, kind) => {
                    created += 1;
                    let mut service = serde_json::json!({
                        "apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": format!("svc-{s}"), "namespace": "default",
                            "resourceVersion": "1",
                            "creationTimestamp": Timestamp::from_second(1_700_000_000 + created).unwrap().to_string()},
                        "spec": {"type": "LoadBalancer", "ports": [{"port": 80 + u16::from(s), "protocol": "TCP"}]},
                    });
                    match kind {
                        1 => {
                            service["metadata"]["annotations"] = serde_json::json!({
                                "ferrolb.io/loadBalancerIPs": "192.168.1.10",
                                "ferrolb.io/allow-shared-ip": "k"});
                        }
                        2 => service["spec"]["externalTrafficPolicy"] = "Local".into(),
                        3 => {
                            service["spec"]["ipFamilyPolicy"] = "PreferDualStack".into();
                            service["spec"]["ipFamilies"] = serde_json::json!(["IPv4", "IPv6"]);
                        }
                        _ => {}
                    }
                    replay.services.entry(s).or_insert(service);
                }
                Step::Delete(s) => { replay.services.remove(&s); }
                Step::Ask(s, ip) => {
                    if let Some(service) = replay.services.get_mut(&s) {
                        service["metadata"]["annotations"] = if ip == 0 {
                            serde_json::json!({})
                        } else {
                            serde_json::json!({"ferrolb.io/loadBalancerIPs": format!("192.168.1.1{ip}"),
                                "ferrolb.io/allow-shared-ip": "k"})
                        };
                    }
                }
                Step::NodeReady(n, ready) => replay.ready[usize::from(n)] = ready,
                Step::SpeakerAlive(n, alive) => replay.alive[usize::from(n)] = alive,
                Step::Endpoint(s, n) => { replay.endpoints.entry(s).or_default().insert(n); }
                Step::Report(n, report) => {
                    if let Some(a) = replay.announcements.get(&format!("node-{n}")) {
                        let mut a = (**a).clone();
                        a.status = Some(NodeAnnouncementStatus {
                            observed_generation: a.metadata.generation,
                            l2: a.spec.l2.iter().map(|e| L2State {
                                ips: e.ips.clone(), state: L2Phase::Announcing,
                                interfaces: vec!["eth0".into()], since: None, message: None,
                                taken_from: None }).collect(),
                            bgp: sessions(&a.spec,
                                if report == 0 { BgpState::Active } else { BgpState::Established }, 0, None),
                            ..Default::default()
                        });
                        replay.announcements.insert(format!("node-{n}"), Arc::new(a));
                    }
                }
                Step::Bgp(on) => replay.bgp = on,
                Step::Policy(s, local) => {
                    if let Some(service) = replay.services.get_mut(&s) {
                        service["spec"]["externalTrafficPolicy"] =
                            if local { "Local" } else { "Cluster" }.into();
                    }
                }
                Step::Land => {}
            }
            let (objects, live) = replay.objects();
            // The incremental memory reads as the stores do (Services
            // unchanged are not read again); the whole one reads afresh.
            let cached = crate::cluster::Snapshot::read_with(objects.clone(), &options, &live, &mut reads);
            let snapshot = crate::cluster::Snapshot::read(objects, &options, &live);
            let _ = incremental.pass(&cached, now);
            let pass = whole.pass(&snapshot, now);
            proptest::prop_assert_eq!(incremental.digest(), whole.digest());
            // What the whole pass wrote lands: NodeAnnouncements always (the
            // speakers act on them), Service status on `Land`.
            for write in pass.writes {
                match write {
                    Write::Announcement { node, spec, .. } => {
                        let mut a = replay.announcements.get(&node)
                            .map(|a| (**a).clone())
                            .unwrap_or_else(|| NodeAnnouncement::new(&node, spec.clone()));
                        if a.spec != spec {
                            a.metadata.generation = Some(a.metadata.generation.unwrap_or(0) + 1);
                        }
                        a.spec = spec;
                        replay.announcements.insert(node, Arc::new(a));
                    }
                    Write::Retire { node } => { replay.announcements.remove(&node); }
                    Write::Service { key, service, desired, .. } if matches!(step, Step::Land) => {
                        let body = status::apply_body(&service, &desired, Time(now));
                        let s: u8 = key.name.trim_start_matches("svc-").parse().unwrap();
                        if let Some(object) = replay.services.get_mut(&s) {
                            object["status"] = body["status"].clone();
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The BGPPeer `tor`'s Established condition when `up` of two nodes report
/// the session Established (the other Active), or when its node selector
/// matches no node.
fn peer_condition(up: usize, selecting_none: bool) -> (String, String) {
    let node = |name: &str| NODE.replace("node-a", name);
    let peer = if selecting_none {
        PEER.replace(
            "peerAddress: 172.30.0.1}",
            "peerAddress: 172.30.0.1, nodeSelectors: [{matchLabels: {rack: none}}]}",
        )
    } else {
        PEER.to_string()
    };
    let yaml = [
        POOL.to_string(),
        node("node-a"),
        node("node-b"),
        peer,
        BGP.to_string(),
    ]
    .join("\n---\n");
    let options = Options {
        lb_class: "ferrolb.io/ferrolb".into(),
        ignore_exclude_lb: false,
    };
    let live = BTreeSet::from([speaker_lease("node-a"), speaker_lease("node-b")]);
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let snapshot = crate::cluster::Snapshot::read(objects(&yaml), &options, &live);
    let mut memory = Memory::rebuild(&snapshot);
    let first = memory.pass(&snapshot, now);
    let mut objects = objects(&yaml);
    let mut reported = 0;
    for write in &first.writes {
        if let Write::Announcement { node, spec, .. } = write {
            let mut announcement = NodeAnnouncement::new(node, spec.clone());
            announcement.metadata.generation = Some(1);
            let state = if reported < up {
                BgpState::Established
            } else {
                BgpState::Active
            };
            reported += 1;
            announcement.status = Some(NodeAnnouncementStatus {
                observed_generation: Some(1),
                bgp: sessions(spec, state, 0, None),
                ..Default::default()
            });
            objects.announcements.push(Arc::new(announcement));
        }
    }
    let snapshot = crate::cluster::Snapshot::read(objects, &options, &live);
    memory
        .pass(&snapshot, now)
        .writes
        .into_iter()
        .find_map(|w| match w {
            Write::Peer { status, .. } => {
                let c = status.conditions.first()?.clone();
                Some((format!("{} {}", c.status, c.reason), c.message))
            }
            _ => None,
        })
        .expect("a BGPPeer status")
}

#[test]
fn every_bgp_peer_condition_through_the_pass() {
    assert_eq!(
        peer_condition(2, false),
        (
            "True Established".into(),
            "Established on all 2 selected nodes".into()
        )
    );
    assert_eq!(
        peer_condition(1, false),
        (
            "False PartlyEstablished".into(),
            "Established on 1 of 2 nodes; node-b: Active".into()
        )
    );
    assert_eq!(
        peer_condition(0, false),
        (
            "False NotEstablished".into(),
            "Established on 0 of 2 nodes; node-a: Active; node-b: Active".into()
        )
    );
    assert_eq!(
        peer_condition(0, true),
        (
            "False NoSelectedNodes".into(),
            "no node with a running speaker is selected by nodeSelectors".into()
        )
    );
}

#[test]
fn a_prefix_set_not_stored_as_planned_is_written_again_until_it_is() {
    let yaml = [
        POOL.to_string(),
        NODE.to_string(),
        PEER.to_string(),
        BGP.to_string(),
        service("web", ""),
    ]
    .join("\n---\n");
    let options = Options {
        lb_class: "ferrolb.io/ferrolb".into(),
        ignore_exclude_lb: false,
    };
    let live = BTreeSet::from([speaker_lease("node-a")]);
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let prefix_sets = |pass: &Pass| -> Vec<(String, ferrolb_api::PrefixSetSpec)> {
        pass.writes
            .iter()
            .filter_map(|w| match w {
                Write::PrefixSet { name, spec, .. } => Some((name.clone(), spec.clone())),
                _ => None,
            })
            .collect()
    };
    let snapshot = crate::cluster::Snapshot::read(objects(&yaml), &options, &live);
    let mut memory = Memory::rebuild(&snapshot);
    let first = prefix_sets(&memory.pass(&snapshot, now));
    assert_eq!(first.len(), 1, "one shard for the one advertisement");
    // The write failed (nothing stored): the next pass, with nothing else
    // changed, writes it again.
    assert_eq!(prefix_sets(&memory.pass(&snapshot, now)), first);
    // Stored as planned: nothing more to write.
    let stored = |sets: &[(String, ferrolb_api::PrefixSetSpec)]| {
        let mut objects = objects(&yaml);
        objects.prefix_sets = sets
            .iter()
            .map(|(name, spec)| Arc::new(ferrolb_api::PrefixSet::new(name, spec.clone())))
            .collect();
        crate::cluster::Snapshot::read(objects, &options, &live)
    };
    let landed = stored(&first);
    assert!(prefix_sets(&memory.pass(&landed, now)).is_empty());
    assert!(prefix_sets(&memory.pass(&landed, now)).is_empty());
    // Someone deletes it by hand: written again.
    let deleted = stored(&[]);
    assert_eq!(prefix_sets(&memory.pass(&deleted, now)), first);
}

/// The layer 2 IPs of the first NodeAnnouncement spec a pass writes.
fn l2_announced(pass: &Pass) -> Option<String> {
    pass.writes.iter().find_map(|w| match w {
        Write::Announcement { spec, .. } => Some(
            spec.l2
                .iter()
                .map(|g| g.ips.to_string())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    })
}

/// A paced memory: `web` at t0, `web` and `db` 50 ms later. Returns what
/// `written` finds in the first pass, in the second (the Service status of
/// `db` is written at once whatever else waits), and in the pass at the
/// time `due` gives for the held write (`wait` after the first; a pass is
/// wanted by then).
fn paced_second_service(
    yaml: &[&str],
    rate: u64,
    wait: std::time::Duration,
    written: impl Fn(&Pass) -> Option<Vec<String>>,
    due: impl Fn(&Memory) -> Option<Timestamp>,
) -> [Option<Vec<String>>; 3] {
    let options = Options {
        lb_class: "ferrolb.io/ferrolb".into(),
        ignore_exclude_lb: false,
    };
    let live = BTreeSet::from([speaker_lease("node-a")]);
    let t0 = Timestamp::from_second(1_800_000_000).unwrap();
    let read = |services: &[&str]| {
        let mut all: Vec<String> = yaml.iter().map(|y| y.to_string()).collect();
        all.extend(services.iter().map(|s| service(s, "")));
        crate::cluster::Snapshot::read(objects(&all.join("\n---\n")), &options, &live)
    };
    let first = read(&["web"]);
    let mut memory = Memory::rebuild(&first).paced(rate);
    let at_first = written(&memory.pass(&first, t0));
    assert_eq!(due(&memory), None, "nothing held back after a lone change");
    let second = read(&["web", "db"]);
    let pass = memory.pass(&second, t0 + std::time::Duration::from_millis(50));
    assert!(
        pass.writes
            .iter()
            .any(|w| matches!(w, Write::Service { key, .. } if key.name == "db")),
        "the new Service's status is never held back"
    );
    let at_second = written(&pass);
    let when = due(&memory).expect("a write is due");
    assert_eq!(when, t0 + wait);
    assert!(
        memory.next_announcement().is_some_and(|at| at <= when),
        "a pass is wanted by then"
    );
    let when_due = written(&memory.pass(&second, when));
    assert_eq!(due(&memory), None, "nothing held back once written");
    [at_first, at_second, when_due]
}

#[test]
fn a_paced_node_announcement_is_written_when_due_with_every_change_since() {
    let ips = |pass: &Pass| l2_announced(pass).map(|ips| vec![ips]);
    // One byte a second: any object waits the longest after a write.
    let [first, second, due] =
        paced_second_service(&[POOL, NODE, L2], 1, memory::pacing::LONGEST, ips, |m| {
            m.next_node_announcement()
        });
    assert_eq!(first, Some(vec!["192.168.1.10".to_string()]));
    assert_eq!(second, None, "the node's object waits");
    assert_eq!(
        due,
        Some(vec!["192.168.1.10-192.168.1.11".to_string()]),
        "written when due with the change it held back"
    );
}

#[test]
fn a_paced_prefix_set_is_written_when_due_with_every_change_since() {
    let prefixes = |pass: &Pass| {
        pass.writes.iter().find_map(|w| match w {
            Write::PrefixSet { spec, .. } => Some(spec.prefixes.clone()),
            _ => None,
        })
    };
    let [first, second, due] = paced_second_service(
        &[POOL, NODE, PEER, BGP],
        crate::plan::pacing::RATE,
        memory::pacing::BURST_EVERY,
        prefixes,
        |m| m.next_prefix_set(),
    );
    assert_eq!(first, Some(vec!["192.168.1.10/32".to_string()]));
    assert_eq!(second, None, "the shard waits");
    assert_eq!(
        due,
        Some(vec![
            "192.168.1.10/32".to_string(),
            "192.168.1.11/32".to_string()
        ]),
        "written when due with the change it held back"
    );
}

#[test]
fn a_pool_status_in_a_burst_is_written_once_a_second_with_its_last_count() {
    let options = Options {
        lb_class: "ferrolb.io/ferrolb".into(),
        ignore_exclude_lb: false,
    };
    let live = BTreeSet::from([speaker_lease("node-a")]);
    let t0 = Timestamp::from_second(1_800_000_000).unwrap();
    let read = |services: &[&str]| {
        let mut yaml = vec![POOL.to_string(), NODE.to_string(), L2.to_string()];
        yaml.extend(services.iter().map(|s| service(s, "")));
        crate::cluster::Snapshot::read(objects(&yaml.join("\n---\n")), &options, &live)
    };
    // The pool's count, when the pass writes a new one.
    let assigned = |pass: &Pass| -> Option<i64> {
        pass.writes.iter().find_map(|w| match w {
            Write::Pool { status, seen, .. } if !seen.up_to_date => Some(status.assigned),
            _ => None,
        })
    };
    let first = read(&["web"]);
    let mut memory = Memory::rebuild(&first).paced(crate::plan::pacing::RATE);
    assert_eq!(
        assigned(&memory.pass(&first, t0)),
        Some(1),
        "a lone change at once"
    );
    let ms = |n: u64| t0 + std::time::Duration::from_millis(n);
    // The pool holds two addresses: a second Service takes the other, a
    // third finds none.
    let second = read(&["web", "db"]);
    assert_eq!(assigned(&memory.pass(&second, ms(20))), None, "held back");
    let third = read(&["web", "db", "api"]);
    assert_eq!(
        assigned(&memory.pass(&third, ms(500))),
        None,
        "still held back"
    );
    assert!(
        memory.next_announcement().is_some_and(|at| at <= ms(1_000)),
        "a pass is wanted once it is due"
    );
    assert_eq!(
        assigned(&memory.pass(&third, ms(1_000))),
        Some(2),
        "written when due, with the last count"
    );
}

#[test]
fn an_ip_stays_on_its_node_while_the_store_has_not_caught_up_with_the_write() {
    let options = Options {
        lb_class: "ferrolb.io/ferrolb".into(),
        ignore_exclude_lb: false,
    };
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let nodes = ["node-a", "node-b", "node-c", "node-d", "node-e", "node-f"];
    let read = |up: &[&str]| {
        let mut yaml = vec![POOL.to_string(), L2.to_string(), service("web", "")];
        yaml.extend(up.iter().map(|n| NODE.replace("node-a", n)));
        let live: BTreeSet<String> = up.iter().map(|n| speaker_lease(n)).collect();
        crate::cluster::Snapshot::read(objects(&yaml.join("\n---\n")), &options, &live)
    };
    let active = |pass: &Pass| -> Option<String> {
        pass.writes.iter().find_map(|w| match w {
            Write::Announcement { node, spec, .. }
                if spec
                    .l2
                    .iter()
                    .any(|g| g.role == ferrolb_api::nodeannouncement::L2Role::Active) =>
            {
                Some(node.clone())
            }
            _ => None,
        })
    };
    let first = read(&["node-a"]);
    let mut memory = Memory::rebuild(&first);
    assert_eq!(active(&memory.pass(&first, now)).as_deref(), Some("node-a"));
    // Five more nodes become eligible before the operator's store shows the
    // NodeAnnouncement it wrote (no NodeAnnouncement in the snapshot): the IP
    // stays where it was placed, and a standby joins.
    let more = read(&nodes);
    let pass = memory.pass(&more, now);
    assert_eq!(active(&pass).as_deref(), Some("node-a"));
}

#[test]
fn an_ip_left_outside_its_edited_or_deleted_pool_stays_announced() {
    let options = Options {
        lb_class: "ferrolb.io/ferrolb".into(),
        ignore_exclude_lb: false,
    };
    let live = BTreeSet::from([speaker_lease("node-a")]);
    let t0 = Timestamp::from_second(1_800_000_000).unwrap();
    let named_l2 = "apiVersion: ferrolb.io/v1alpha1\nkind: L2Advertisement\nmetadata: {name: lan}\nspec: {ipAddressPools: [lan]}";
    let read = |pool: Option<&str>| {
        let mut yaml = vec![NODE.to_string(), named_l2.to_string()];
        yaml.extend(pool.map(str::to_string));
        yaml.push(service("web", ""));
        crate::cluster::Snapshot::read(objects(&yaml.join("\n---\n")), &options, &live)
    };
    // What the pass writes for node-a's layer 2 IPs.
    let announced = l2_announced;
    let first = read(Some(POOL));
    let mut memory = Memory::rebuild(&first);
    let l2 = announced(&memory.pass(&first, t0)).expect("node-a's spec");
    assert_eq!(l2, "192.168.1.10");
    // The pool shrinks past web's IP, then goes: web keeps it, and node-a
    // keeps answering for it (the status says it is in no pool).
    let shrunk = "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: lan}\nspec: {addresses: [192.168.1.11/32]}";
    for (step, pool) in [("shrunk", Some(shrunk)), ("deleted", None)] {
        let snapshot = read(pool);
        let pass = memory.pass(&snapshot, t0);
        if let Some(l2) = announced(&pass) {
            assert_eq!(l2, "192.168.1.10", "{step}: still answered");
        }
        let status = pass.writes.iter().find_map(|w| match w {
            Write::Service { desired, .. } => Some(desired.clone()),
            _ => None,
        });
        if let Some(desired) = status {
            let text = format!("{:?}", desired);
            assert!(
                text.contains(ferrolb_api::constants::condition::reason::IP_NOT_IN_ANY_POOL),
                "{step}: {text}"
            );
            assert!(
                !text.contains(ferrolb_api::constants::condition::reason::NO_ADVERTISEMENT),
                "{step}: {text}"
            );
        }
    }
}
