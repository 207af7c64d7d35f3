//! Eligibility, grouping, and the rendezvous choice as properties.

use proptest::prelude::*;

use super::*;
use crate::plan::allocation::selector::Selector;

fn node(name: &str) -> Node {
    Node {
        name: name.to_string(),
        labels: Labels::from([("kubernetes.io/hostname".to_string(), name.to_string())]),
        ready: true,
        excluded: false,
        speaker_alive: true,
        network_unavailable: false,
    }
}

fn everywhere() -> L2Advertisement {
    L2Advertisement {
        name: "everywhere".to_string(),
        pools: Pools::All,
        service_selectors: Vec::new(),
        node_selectors: Vec::new(),
        interfaces: Vec::new(),
    }
}

fn service(name: &str, ips: &[&str]) -> Announced {
    Announced {
        service: ServiceKey::new("default", name),
        labels: Labels::from([("app".to_string(), name.to_string())]),
        ips: ips
            .iter()
            .map(|ip| (ip.parse().expect("ip"), Some("pool".to_string())))
            .collect(),
        local: false,
        endpoint_nodes: BTreeSet::new(),
        current: None,
        standby: None,
        avoid: None,
    }
}

fn active_of(plan: &Plan, name: &str) -> Option<String> {
    match plan.services.get(&ServiceKey::new("default", name)) {
        Some(Outcome::Announced { node, .. }) => Some(node.clone()),
        _ => None,
    }
}

#[test]
fn one_active_and_one_standby_node_per_ip() {
    let nodes = [node("a"), node("b"), node("c")];
    let plan = plan_l2(&nodes, &[everywhere()], &[service("web", &["10.0.0.1"])]);
    let Some(Outcome::Announced {
        node,
        standby: Some(standby),
    }) = plan.services.values().next().cloned()
    else {
        panic!("{plan:?}");
    };
    assert_ne!(node, standby);
    let roles: Vec<(String, Role)> = plan
        .nodes
        .iter()
        .flat_map(|(n, entries)| entries.iter().map(move |e| (n.clone(), e.role.clone())))
        .collect();
    assert_eq!(roles.len(), 2);
    assert!(roles.contains(&(node.clone(), Role::Active)));
    assert!(roles.contains(&(standby, Role::Standby(node))));
}

#[test]
fn all_ips_of_a_service_and_services_sharing_an_ip_land_together() {
    let nodes: Vec<Node> = (0..8).map(|i| node(&format!("n{i}"))).collect();
    let services = [
        service("dual", &["10.0.0.1", "fd00::1"]),
        service("http", &["10.0.0.9"]),
        service("https", &["10.0.0.9"]),
        service("both", &["10.0.0.9", "fd00::9"]),
    ];
    let plan = plan_l2(&nodes, &[everywhere()], &services);
    let home = |ip: &str| -> Vec<String> {
        plan.nodes
            .iter()
            .filter(|(_, e)| {
                e.iter()
                    .any(|e| e.ip.to_string() == ip && e.role == Role::Active)
            })
            .map(|(n, _)| n.clone())
            .collect()
    };
    assert_eq!(home("10.0.0.1"), home("fd00::1"));
    assert_eq!(home("10.0.0.9"), home("fd00::9"));
    assert_eq!(active_of(&plan, "http"), active_of(&plan, "https"));
    let entry = plan
        .nodes
        .values()
        .flatten()
        .find(|e| e.ip.to_string() == "10.0.0.9" && e.role == Role::Active)
        .expect("entry");
    assert_eq!(
        entry.services,
        ["default/both", "default/http", "default/https"]
    );
}

#[test]
fn ineligible_nodes_are_skipped_and_named() {
    let mut not_ready = node("a");
    not_ready.ready = false;
    let mut excluded = node("b");
    excluded.excluded = true;
    let mut no_speaker = node("c");
    no_speaker.speaker_alive = false;
    let nodes = [not_ready, excluded, no_speaker];
    let plan = plan_l2(&nodes, &[everywhere()], &[service("web", &["10.0.0.1"])]);
    let Some(Outcome::NoEligibleNode(why)) = plan.services.values().next() else {
        panic!("{plan:?}")
    };
    assert!(
        why.contains("a: not Ready")
            && why.contains("b: labelled")
            && why.contains("c: its speaker"),
        "{why}"
    );
    let mut nodes = nodes.to_vec();
    nodes.push(node("d"));
    assert_eq!(
        active_of(
            &plan_l2(&nodes, &[everywhere()], &[service("web", &["10.0.0.1"])]),
            "web"
        ),
        Some("d".into())
    );
}

#[test]
fn a_node_whose_network_is_unavailable_does_not_announce() {
    let mut unavailable = node("a");
    unavailable.network_unavailable = true;
    let web = [service("web", &["10.0.0.1"])];
    let plan = plan_l2(std::slice::from_ref(&unavailable), &[everywhere()], &web);
    let Some(Outcome::NoEligibleNode(why)) = plan.services.values().next() else {
        panic!("{plan:?}")
    };
    assert!(
        why.contains("a: its NetworkUnavailable condition is True"),
        "{why}"
    );
    let plan = plan_l2(&[unavailable, node("b")], &[everywhere()], &web);
    assert_eq!(active_of(&plan, "web"), Some("b".into()));
    assert!(
        plan.nodes.get("a").is_none_or(|entries| entries.is_empty()),
        "neither active nor standby: {plan:?}"
    );
}

fn app_is(app: &str) -> Selector {
    Selector {
        labels: Labels::from([("app".to_string(), app.to_string())]),
        ..Selector::default()
    }
}

#[test]
fn service_selectors_pick_the_services_and_a_shared_ip_is_never_split() {
    let nodes = [node("a"), node("b")];
    let on = |node: &str, name: &str, apps: &[&str]| L2Advertisement {
        name: name.to_string(),
        service_selectors: apps.iter().map(|a| app_is(a)).collect(),
        node_selectors: vec![Selector {
            labels: Labels::from([("kubernetes.io/hostname".to_string(), node.to_string())]),
            ..Selector::default()
        }],
        ..everywhere()
    };
    let advertisements = [on("a", "web-on-a", &["web"]), on("b", "db-on-b", &["db"])];
    let plan = plan_l2(
        &nodes,
        &advertisements,
        &[
            service("web", &["10.0.0.1"]),
            service("db", &["10.0.0.2"]),
            service("cache", &["10.0.0.3"]),
        ],
    );
    assert_eq!(active_of(&plan, "web"), Some("a".into()));
    assert_eq!(active_of(&plan, "db"), Some("b".into()));
    assert_eq!(
        plan.services[&ServiceKey::new("default", "cache")],
        Outcome::NotSelected(vec!["web-on-a".into(), "db-on-b".into()])
    );
    // web and db sharing one IP: no advertisement selects both, so neither
    // node answers for it (two would split it), and both say why.
    let shared = plan_l2(
        &nodes,
        &advertisements,
        &[service("web", &["10.0.0.9"]), service("db", &["10.0.0.9"])],
    );
    assert!(shared.nodes.values().all(Vec::is_empty), "{shared:?}");
    for name in ["web", "db"] {
        assert!(
            matches!(
                &shared.services[&ServiceKey::new("default", name)],
                Outcome::NotSelected(skipping) if skipping.len() == 2
            ),
            "{name}: {shared:?}"
        );
    }
    // An advertisement selecting both announces the shared IP from one node.
    let both = [on("b", "both-on-b", &["web", "db"])];
    let shared = plan_l2(
        &nodes,
        &both,
        &[service("web", &["10.0.0.9"]), service("db", &["10.0.0.9"])],
    );
    assert_eq!(active_of(&shared, "web"), Some("b".into()));
    assert_eq!(active_of(&shared, "db"), Some("b".into()));
}

#[test]
fn advertisements_select_pools_nodes_and_interfaces() {
    let nodes = [node("a"), node("b")];
    let only_b = L2Advertisement {
        name: "only-b".to_string(),
        pools: Pools::Named(BTreeSet::from(["pool".to_string()])),
        service_selectors: Vec::new(),
        node_selectors: vec![Selector {
            labels: Labels::from([("kubernetes.io/hostname".to_string(), "b".to_string())]),
            ..Selector::default()
        }],
        interfaces: vec!["eth1".to_string()],
    };
    let plan = plan_l2(
        &nodes,
        std::slice::from_ref(&only_b),
        &[service("web", &["10.0.0.1"])],
    );
    assert_eq!(active_of(&plan, "web"), Some("b".into()));
    assert_eq!(plan.nodes["b"][0].interfaces, ["eth1"]);
    let other_pool = L2Advertisement {
        pools: Pools::Named(BTreeSet::from(["other".to_string()])),
        ..only_b
    };
    let plan = plan_l2(&nodes, &[other_pool], &[service("web", &["10.0.0.1"])]);
    assert_eq!(
        plan.services.values().next(),
        Some(&Outcome::NoAdvertisement)
    );
}

#[test]
fn local_services_follow_their_endpoints() {
    let nodes = [node("a"), node("b"), node("c")];
    let mut web = service("web", &["10.0.0.1"]);
    web.local = true;
    web.endpoint_nodes = BTreeSet::from(["c".to_string()]);
    let plan = plan_l2(&nodes, &[everywhere()], std::slice::from_ref(&web));
    assert_eq!(
        plan.services.values().next(),
        Some(&Outcome::Announced {
            node: "c".into(),
            standby: None
        })
    );
    web.endpoint_nodes.clear();
    let plan = plan_l2(&nodes, &[everywhere()], &[web]);
    assert_eq!(
        plan.services.values().next(),
        Some(&Outcome::NoLocalEndpoints)
    );
}

fn cluster(size: usize) -> Vec<Node> {
    (0..size).map(|i| node(&format!("node-{i}"))).collect()
}

fn many(ips: usize) -> Vec<Announced> {
    (0..ips)
        .map(|i| {
            service(
                &format!("s{i}"),
                &[&format!("10.0.{}.{}", i / 250, i % 250)],
            )
        })
        .collect()
}

proptest! {
    #[test]
    fn every_ip_has_exactly_one_active_node(size in 1usize..9, count in 1usize..40) {
        let plan = plan_l2(&cluster(size), &[everywhere()], &many(count));
        let mut active: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for entries in plan.nodes.values() {
            for e in entries.iter().filter(|e| e.role == Role::Active) {
                *active.entry(e.ip).or_default() += 1;
            }
        }
        prop_assert_eq!(active.len(), count);
        prop_assert!(active.values().all(|n| *n == 1));
    }

    #[test]
    fn the_same_inputs_give_the_same_plan(size in 1usize..9, count in 1usize..40) {
        let a = plan_l2(&cluster(size), &[everywhere()], &many(count));
        let mut reversed = cluster(size);
        reversed.reverse();
        let b = plan_l2(&reversed, &[everywhere()], &many(count));
        prop_assert_eq!(a, b);
    }

    #[test]
    fn removing_a_node_moves_only_the_ips_it_held(size in 2usize..9, count in 1usize..60, gone in 0usize..8) {
        let nodes = cluster(size);
        let gone = &nodes[gone % size].name;
        let before = plan_l2(&nodes, &[everywhere()], &many(count));
        let fewer: Vec<Node> = nodes.iter().filter(|n| &n.name != gone).cloned().collect();
        let after = plan_l2(&fewer, &[everywhere()], &many(count));
        for (service, outcome) in &before.services {
            if let Outcome::Announced { node, standby } = outcome {
                let Outcome::Announced { node: now, .. } = &after.services[service] else { unreachable!() };
                if node != gone {
                    prop_assert_eq!(now, node, "{} moved although its node stayed", service);
                } else {
                    // The standby takes over: what the speakers already prepared.
                    prop_assert_eq!(Some(now), standby.as_ref());
                }
            }
        }
    }
}

#[test]
fn an_ip_stays_on_its_current_node_while_eligible_and_follows_a_takeover() {
    let nodes: Vec<Node> = ["a", "b", "c"].iter().map(|n| node(n)).collect();
    let fresh = plan_l2(&nodes, &[everywhere()], &[service("web", &["10.0.0.1"])]);
    let chosen = active_of(&fresh, "web").expect("active");
    let other = ["a", "b", "c"]
        .into_iter()
        .find(|n| *n != chosen)
        .expect("other");
    let mut kept = service("web", &["10.0.0.1"]);
    kept.current = Some(other.to_string());
    let plan = plan_l2(&nodes, &[everywhere()], std::slice::from_ref(&kept));
    assert_eq!(
        active_of(&plan, "web").as_deref(),
        Some(other),
        "no move back"
    );
    // The current node goes: the usual choice among the rest.
    let rest: Vec<Node> = nodes.iter().filter(|n| n.name != other).cloned().collect();
    let plan = plan_l2(&rest, &[everywhere()], &[kept]);
    assert_ne!(active_of(&plan, "web").as_deref(), Some(other));
}

#[test]
fn a_takeover_moves_that_pairs_ips_only_and_the_node_taken_from_does_not_stand_by_for_them() {
    let nodes: Vec<Node> = ["a", "b", "c"].iter().map(|n| node(n)).collect();
    // Find two Services with the same active node.
    let all: Vec<Announced> = (0..40)
        .map(|i| service(&format!("s{i}"), &[&format!("10.0.0.{}", i + 1)]))
        .collect();
    let first = plan_l2(&nodes, &[everywhere()], &all);
    let placed =
        |plan: &Plan, name: &str| match plan.services.get(&ServiceKey::new("default", name)) {
            Some(Outcome::Announced { node, standby }) => (node.clone(), standby.clone()),
            other => panic!("{name}: {other:?}"),
        };
    let (old, taker) = placed(&first, "s0");
    let taker = taker.expect("a standby");
    let other = (1..40)
        .map(|i| format!("s{i}"))
        .find(|name| placed(&first, name).0 == old)
        .expect("another Service on the same node");
    // s0's standby took it over from `old`; everything else stays where it is.
    let mut services: Vec<Announced> = all
        .iter()
        .map(|s| Announced {
            current: Some(placed(&first, &s.service.name).0),
            ..s.clone()
        })
        .collect();
    services[0].current = Some(taker.clone());
    services[0].avoid = Some(old.clone());
    let after = plan_l2(&nodes, &[everywhere()], &services);
    let (now, standby) = placed(&after, "s0");
    assert_eq!(now, taker);
    assert!(
        standby.is_some() && standby.as_ref() != Some(&old),
        "{standby:?}"
    );
    assert_eq!(
        placed(&after, &other).0,
        old,
        "the old node keeps its other IPs"
    );
    // Two nodes: the taker answers alone rather than with a standby that
    // could not hear it.
    let two: Vec<Node> = nodes
        .iter()
        .filter(|n| n.name == old || n.name == taker)
        .cloned()
        .collect();
    let after = plan_l2(&two, &[everywhere()], &services[..1]);
    assert_eq!(placed(&after, "s0"), (taker.clone(), None));
    // The taker gone too: better the node it was taken from than none.
    let alone: Vec<Node> = nodes.iter().filter(|n| n.name == old).cloned().collect();
    let after = plan_l2(&alone, &[everywhere()], &services[..1]);
    assert_eq!(placed(&after, "s0"), (old.clone(), None));
}

#[test]
fn a_local_services_standby_stays_when_a_higher_scoring_node_gains_an_endpoint() {
    let nodes = cluster(6);
    let mut web = service("web", &["10.0.0.9"]);
    web.local = true;
    web.endpoint_nodes = ["node-0", "node-1"].iter().map(|n| n.to_string()).collect();
    let first = plan_l2(&nodes, &[everywhere()], std::slice::from_ref(&web));
    let Some(Outcome::Announced {
        node,
        standby: Some(standby),
    }) = first.services.values().next().cloned()
    else {
        panic!("{first:?}");
    };
    web.current = Some(node.clone());
    web.standby = Some(standby.clone());
    // Endpoints start on every other node: some outscore the standby.
    web.endpoint_nodes = nodes.iter().map(|n| n.name.clone()).collect();
    let outscoring = nodes
        .iter()
        .filter(|n| n.name != node && score(&n.name, "10.0.0.9") > score(&standby, "10.0.0.9"))
        .count();
    assert!(
        outscoring > 0,
        "the case needs a node that outscores the standby"
    );
    let after = plan_l2(&nodes, &[everywhere()], &[web]);
    assert_eq!(
        after.services.values().next(),
        Some(&Outcome::Announced {
            node,
            standby: Some(standby)
        }),
        "the standby that has heard the active stays"
    );
}

/// One change between passes, for the replay below.
#[derive(Clone, Debug)]
enum Change {
    NodeDown(usize),
    NodeUp(usize),
    Relabel(usize),
    AddService(usize),
    RemoveService(usize),
    MakeLocal(usize),
    MakeCluster(usize),
    TakeOver(usize, usize),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (0usize..8).prop_map(Change::NodeDown),
        (0usize..8).prop_map(Change::NodeUp),
        (0usize..8).prop_map(Change::Relabel),
        (0usize..60).prop_map(Change::AddService),
        (0usize..60).prop_map(Change::RemoveService),
        (0usize..60).prop_map(Change::MakeLocal),
        (0usize..60).prop_map(Change::MakeCluster),
        ((0usize..60), (0usize..8)).prop_map(|(s, n)| Change::TakeOver(s, n)),
    ]
}

proptest! {
    /// Placing from the last pass gives what placing from scratch gives,
    /// through any sequence of node, Service and takeover changes, with the
    /// current node fed back from each plan as the operator does.
    #[test]
    fn placing_from_the_last_pass_is_placing_from_scratch(
        size in 1usize..8,
        count in 1usize..40,
        changes in proptest::collection::vec(change(), 1..25),
    ) {
        let mut nodes = cluster(size);
        let mut services = many(count);
        let only_zone_a = L2Advertisement {
            name: "zone-a".to_string(),
            pools: Pools::All,
            service_selectors: Vec::new(),
            node_selectors: vec![Selector::from(&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                match_labels: Some([("zone".to_string(), "a".to_string())].into()),
                ..Default::default()
            })],
            interfaces: vec!["eth1".into()],
        };
        let advertisements = [everywhere(), only_zone_a];
        let mut placements = Placements::default();
        let mut last = plan_l2_from(&mut placements, &nodes, &advertisements, &services, true);
        for change in changes {
            match change {
                Change::NodeDown(i) => { let n = i % nodes.len(); nodes[n].speaker_alive = false; }
                Change::NodeUp(i) => { let n = i % nodes.len(); nodes[n].speaker_alive = true; nodes[n].ready = true; }
                Change::Relabel(i) => {
                    let n = i % nodes.len();
                    if nodes[n].labels.remove("zone").is_none() {
                        nodes[n].labels.insert("zone".into(), "a".into());
                    }
                }
                Change::AddService(i) => services.push(service(&format!("n{i}"), &[&format!("10.1.0.{}", i % 250)])),
                Change::RemoveService(i) => { if !services.is_empty() { let s = i % services.len(); services.remove(s); } }
                Change::MakeLocal(i) => {
                    if !services.is_empty() {
                        let s = i % services.len();
                        services[s].local = true;
                        services[s].endpoint_nodes = nodes.iter().step_by(2).map(|n| n.name.clone()).collect();
                    }
                }
                Change::MakeCluster(i) => {
                    if !services.is_empty() {
                        let s = i % services.len();
                        services[s].local = false;
                    }
                }
                Change::TakeOver(s, n) => {
                    if !services.is_empty() {
                        let s = s % services.len();
                        let taker = nodes[n % nodes.len()].name.clone();
                        // The node taken from is avoided while the report stands.
                        services[s].avoid = services[s].current.take().filter(|old| *old != taker);
                        services[s].current = Some(taker);
                    }
                }
            }
            // The operator feeds back where each IP answers now.
            for service in services.iter_mut() {
                let placed = last.services.get(&service.service);
                if let Some(Outcome::Announced { node, .. }) = placed
                    && service.current.is_none()
                {
                    service.current = Some(node.clone());
                }
                // And which node stands by for it now.
                service.standby = match placed {
                    Some(Outcome::Announced { standby, .. }) => standby.clone(),
                    _ => None,
                };
            }
            let kept = plan_l2_from(&mut placements, &nodes, &advertisements, &services, true);
            let fresh = plan_l2(&nodes, &advertisements, &services);
            prop_assert_eq!(&kept, &fresh);
            // The node taken from neither answers nor stands by for the IP.
            for service in &services {
                if let (Some(avoided), Some(Outcome::Announced { node, standby })) =
                    (&service.avoid, kept.services.get(&service.service))
                    && service.current.as_ref() == Some(node)
                {
                    prop_assert_ne!(Some(avoided), standby.as_ref());
                }
            }
            // Reports end once the plan follows them.
            for service in services.iter_mut() {
                service.avoid = None;
            }
            last = kept;
        }
    }
}
