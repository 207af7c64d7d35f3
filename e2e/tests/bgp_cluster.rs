//! BGP with everything real [BGP, E2E, METRICS, IPV6, DUALSTACK]: kube-apiserver,
//! the operator, three speakers peering from node namespaces with FRR in a
//! router namespace.
//! BGPPeer + BGPAdvertisement + Service → the route at FRR; Local policy
//! follows endpoints; NotReady, Service delete, a peer node selector and an
//! edited advertisement change what FRR holds; L2 and BGP on one Service; a
//! wrong TCP-MD5 password shows in BGPPeer, NodeAnnouncement and Service
//! status; BFD applied with kubectl comes up with FRR's bfdd, and a cut link
//! leaves FRR at once with every status saying so. Figures are printed, never asserted.

use std::time::{Duration, Instant};

use ferrolb_e2e::cluster::{TestCluster, local_endpoint_yaml, service_yaml};
use ferrolb_e2e::netns::{Host, Network};
use ferrolb_e2e::process::Process;
use ferrolb_e2e::routers::{Frr, Route, Router, frr_config};
use ferrolb_e2e::wait::{step, until};

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

fn node_ip(i: usize) -> String {
    format!("192.168.50.{}", 11 + i)
}

fn speaker(cluster: &TestCluster, node: &str, host: &Host) -> Process {
    cluster
        .speaker(node, &host.namespace, &[])
        .expect("speaker")
}

fn secret(password: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: bgp-auth, namespace: ferrolb-system}}\nstringData: {{password: {password}}}\n"
    )
}

/// The Announced condition as "reason: message".
fn condition(cluster: &TestCluster, name: &str) -> String {
    let (_, reason, message) = cluster.announced(name);
    format!("{reason}: {message}")
}

/// The lab: the apiserver, three node namespaces and FRR on one switch, a
/// speaker per node, the operator, and Service `web` (its prefix kept).
struct Lab {
    cluster: TestCluster,
    _network: Network,
    hosts: Vec<Host>,
    frr: Frr,
    speakers: Vec<Process>,
    _operator: Process,
    prefix: String,
}

impl Lab {
    /// Starts everything with the wrong TCP-MD5 password in the Secret.
    async fn start() -> Lab {
        let cluster = TestCluster::start().await.expect("cluster");
        let mut network = Network::new().expect("switch");
        let router_host = network
            .host("rtr", "02:00:00:00:02:01", &["192.168.50.1/24"])
            .expect("router");
        let hosts: Vec<Host> = (0..3)
            .map(|i| {
                network
                    .host(
                        NODES[i],
                        &format!("02:00:00:00:02:1{i}"),
                        &[&format!("{}/24", node_ip(i))],
                    )
                    .expect("node")
            })
            .collect();
        let neighbors: Vec<(String, u32)> = (0..3).map(|i| (node_ip(i), 64512)).collect();
        let frr = Frr::start(
            &router_host,
            &frr_config(
                64500,
                "192.168.50.1",
                &neighbors,
                &["password s3cret"],
                &[],
                true,
            ),
        )
        .expect("frr");
        for node in NODES {
            cluster.node(node).expect("node");
        }
        cluster
            .kubectl(&["create", "namespace", "ferrolb-system"])
            .ok();
        // The wrong password first.
        cluster.apply_ok(&secret("guess")).expect("secret");
        cluster
            .apply_ok(
                "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: bgp}\nspec: {addresses: [172.30.0.0/24]}\n---\n\
                 apiVersion: ferrolb.io/v1alpha1\nkind: BGPPeer\nmetadata: {name: router}\nspec:\n  myASN: 64512\n  peerASN: 64500\n  peerAddress: 192.168.50.1\n  connectTime: 2s\n  passwordSecretRef: {namespace: ferrolb-system, name: bgp-auth, key: password}\n---\n\
                 apiVersion: ferrolb.io/v1alpha1\nkind: BGPAdvertisement\nmetadata: {name: bgp}\nspec: {ipAddressPools: [bgp], communities: ['65000:7']}\n",
            )
            .expect("config");
        let speakers: Vec<Process> = NODES
            .iter()
            .zip(&hosts)
            .map(|(n, h)| speaker(&cluster, n, h))
            .collect();
        let _operator = cluster.operator("solo", &[]).expect("operator");
        cluster
            .apply_ok(&service_yaml("default", "web", "", ""))
            .expect("service");

        Lab {
            cluster,
            _network: network,
            hosts,
            frr,
            speakers,
            _operator,
            prefix: String::new(),
        }
    }
}

/// FRR's route for `prefix` once it has `n` next hops.
fn hops<'a>(frr: &'a Frr, prefix: &'a str, n: usize) -> impl FnMut() -> Option<Route> + 'a {
    move || {
        frr.route(prefix)
            .ok()
            .flatten()
            .filter(|r| r.next_hops.len() == n)
    }
}

/// The BGPPeer's established/selected node counts once they read `want`.
fn peer_counts(cluster: &TestCluster, want: &str) -> String {
    until("BGPPeer counts", Duration::from_secs(30), || {
        let out = cluster
            .kubectl(&[
                "get",
                "bgppeer",
                "router",
                "-o",
                "jsonpath={.status.establishedNodes}/{.status.selectedNodes}",
            ])
            .ok()?;
        (out == want).then_some(out)
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn routes_reach_frr_follow_endpoints_and_a_wrong_password_is_explained() {
    let mut lab = Lab::start().await;
    step("a wrong password is explained in every status", || {
        wrong_password(&lab)
    });
    lab.prefix = step(
        "the right password brings the route from all three nodes",
        || right_password(&lab),
    );
    step(
        "BFD from kubectl: up on every node, a cut link leaves FRR at once and the statuses follow",
        || bfd(&lab),
    );
    step(
        "Local policy: only nodes with an endpoint advertise",
        || local_policy(&lab),
    );
    step(
        "a NotReady node's next hop goes and comes back, and a node whose network is unavailable",
        || not_ready(&lab),
    );
    step("layer 2 and BGP on one Service", || layer2_and_bgp(&lab));
    step("the speakers' metrics show the session and updates", || {
        metrics(&lab)
    });
    step("edited communities update the route in place", || {
        communities(&lab)
    });
    step("an advertisement's node selector", || {
        advertisement_selector(&lab)
    });
    step("aggregation: the /24 instead of the /32s", || {
        aggregation(&lab)
    });
    step("a peer's node selector ends the other sessions", || {
        peer_selector(&lab)
    });
    step("deleting the Service withdraws its route", || {
        delete_service(&lab)
    });
    let last = step("figure: Service created -> route at FRR", || {
        figure_route(&lab)
    });
    step("figure: speaker killed -> next hop withdrawn", || {
        figure_speaker_killed(&mut lab, &last)
    });
}

/// With the wrong password, the BGPPeer, the NodeAnnouncement and the Service say why.
fn wrong_password(lab: &Lab) {
    let cluster = &lab.cluster;
    let peer_message = until(
        "BGPPeer status naming the password",
        Duration::from_secs(60),
        || {
            let out = cluster
                .kubectl(&[
                    "get",
                    "bgppeer",
                    "router",
                    "-o",
                    "jsonpath={.status.conditions[0].reason} {.status.conditions[0].message}",
                ])
                .ok()?;
            (out.starts_with("NotEstablished") && out.contains("TCP-MD5")).then_some(out)
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            cluster
                .kubectl(&["get", "bgppeer", "router", "-o", "yaml"])
                .unwrap_or_default()
        )
    });
    println!("BGPPeer: {peer_message}");
    // Each node's first attempt times out on its own schedule.
    until(
        "node-a's NodeAnnouncement to say why",
        Duration::from_secs(30),
        || {
            let na = cluster
                .kubectl(&[
                    "get",
                    "nodeannouncement",
                    NODES[0],
                    "-o",
                    "jsonpath={.status.bgp[0].lastError}",
                ])
                .ok()?;
            na.contains("TCP-MD5").then_some(())
        },
    )
    .expect("NodeAnnouncement says why");
    assert!(
        !cluster
            .kubectl(&["get", "nodeannouncement", NODES[0], "-o", "yaml"])
            .unwrap()
            .contains("guess"),
        "the password itself is never written"
    );
    let reason = until("the Service condition", Duration::from_secs(30), || {
        let c = condition(cluster, "web");
        c.starts_with("NoEstablishedSession").then_some(c)
    })
    .expect("NoEstablishedSession");
    println!("Service: {reason}");
}

/// The right password: sessions come up and the route reaches FRR from all
/// three nodes; returns the Service's prefix.
fn right_password(lab: &Lab) -> String {
    let Lab {
        cluster,
        frr,
        speakers,
        ..
    } = lab;
    cluster.apply_ok(&secret("s3cret")).expect("secret");
    let ip = cluster.service_ip("web").expect("ip");
    let prefix = format!("{ip}/32");
    let route = until(
        "the route at FRR with three next hops",
        Duration::from_secs(60),
        || {
            frr.route(&prefix)
                .ok()
                .flatten()
                .filter(|r| r.next_hops.len() == 3)
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            speakers
                .iter()
                .map(Process::output)
                .collect::<Vec<_>>()
                .join("\n---\n")
        )
    });
    assert_eq!(route.communities, vec!["65000:7"]);
    assert_eq!(route.as_path, vec![64512]);
    cluster
        .wait_announced("web", Duration::from_secs(30))
        .expect("Announced");
    let message = condition(cluster, "web");
    assert!(
        message.contains("BGP:") && message.contains("3 of 3 sessions"),
        "{message}"
    );
    let counts = peer_counts(cluster, "3/3");
    println!("BGPPeer established/selected: {counts}");

    prefix
}

/// Merges `patch` into BGPPeer `router`.
fn patch_peer(cluster: &TestCluster, patch: &str) {
    cluster
        .kubectl(&["patch", "bgppeer", "router", "--type=merge", "-p", patch])
        .expect("patch the BGPPeer");
}

/// A jsonpath of an object, once it reads `want`.
fn reads(cluster: &TestCluster, what: &[&str], want: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    until(&format!("{what:?}"), Duration::from_secs(30), || {
        let mut args = vec!["get"];
        args.extend(what);
        last = cluster.kubectl(&args).ok()?;
        want(&last).then(|| last.clone())
    })
    .unwrap_or_else(|e| panic!("{e}; last: {last}"))
}

/// BFD: FRR gets a profile for the nodes; a BFDProfile and the BGPPeer's
/// bfdProfile applied with kubectl bring BFD up on all three; node-c's link
/// cut: FRR drops its next hop long before the 90 s hold time, and the
/// NodeAnnouncement, the BGPPeer and the Service say so.
fn bfd(lab: &Lab) {
    let Lab { cluster, frr, .. } = lab;
    let mut commands = vec![
        "configure terminal".to_string(),
        "bfd".into(),
        "profile fast".into(),
        "transmit-interval 100".into(),
        "receive-interval 100".into(),
        "exit".into(),
        "exit".into(),
        "router bgp 64500".into(),
    ];
    for i in 0..3 {
        commands.push(format!("neighbor {} bfd profile fast", node_ip(i)));
    }
    frr.configure(&commands).expect("FRR BFD");
    cluster
        .apply_ok(
            "apiVersion: ferrolb.io/v1alpha1\nkind: BFDProfile\nmetadata: {name: fast}\nspec: {receiveInterval: 100, transmitInterval: 100, detectMultiplier: 3}\n",
        )
        .expect("BFDProfile");
    patch_peer(cluster, r#"{"spec":{"bfdProfile":"fast"}}"#);
    for (i, node) in NODES.iter().enumerate() {
        until(
            &format!("FRR's BFD with {node} up"),
            Duration::from_secs(30),
            || frr.bfd_state(&node_ip(i)).filter(|s| s == "up"),
        )
        .unwrap();
    }
    reads(
        cluster,
        &["bgppeer", "router", "-o", "jsonpath={.status.bfdUpNodes}"],
        |v| v == "3",
    );
    reads(
        cluster,
        &[
            "nodeannouncement",
            NODES[2],
            "-o",
            "jsonpath={.status.bfdSessions}",
        ],
        |v| v == "1/1",
    );
    let up = reads(
        cluster,
        &[
            "svc",
            "web",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"ferrolb.io/Announced\")].message}",
        ],
        |m| m.contains("BFD Up on 3 of 3"),
    );
    println!("Service: {up}");

    let cut = Instant::now();
    lab.hosts[2]
        .run("ip", &["link", "set", "eth0", "down"])
        .expect("cut");
    let prefix = format!("{}/32", cluster.service_ip("web").expect("ip"));
    until(
        "FRR without node-c's next hop",
        Duration::from_secs(30),
        hops(frr, &prefix, 2),
    )
    .unwrap();
    println!(
        "FIGURE BFD 100 ms x 3 through the apiserver: node-c's link cut -> FRR dropped its next hop in {} ms (hold time 90 s)",
        cut.elapsed().as_millis()
    );
    let na = reads(
        cluster,
        &[
            "nodeannouncement",
            NODES[2],
            "-o",
            "jsonpath={.status.bgp[0].bfd.state} {.status.bgp[0].bfd.message}",
        ],
        |v| v.starts_with("Down"),
    );
    println!("node-c: {na}");
    let peer = reads(
        cluster,
        &[
            "bgppeer",
            "router",
            "-o",
            "jsonpath={.status.bfdUpNodes} {.status.conditions[0].message}",
        ],
        |v| v.starts_with("2 ") && v.contains("BFD not Up on node-c"),
    );
    println!("BGPPeer: {peer}");
    let down = reads(
        cluster,
        &[
            "svc",
            "web",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"ferrolb.io/Announced\")].message}",
        ],
        |m| m.contains("2 of 3 sessions Established, BFD Up on 2 of 2"),
    );
    println!("Service: {down}");

    lab.hosts[2]
        .run("ip", &["link", "set", "eth0", "up"])
        .expect("restore");
    until(
        "node-c's next hop back",
        Duration::from_secs(60),
        hops(frr, &prefix, 3),
    )
    .unwrap();
    until(
        "FRR's BFD with node-c up again",
        Duration::from_secs(30),
        || frr.bfd_state(&node_ip(2)).filter(|s| s == "up"),
    )
    .unwrap();
}

/// Local policy: only nodes with an endpoint advertise.
fn local_policy(lab: &Lab) {
    let Lab { cluster, frr, .. } = lab;
    cluster.local_service("", NODES[1]).expect("local");
    let slice = local_endpoint_yaml;
    let local = until("the local Service's IP", Duration::from_secs(30), || {
        cluster.service_ip("local")
    })
    .unwrap();
    let local_prefix = format!("{local}/32");
    until(
        "the local route from node-b only",
        Duration::from_secs(30),
        || {
            frr.route(&local_prefix)
                .ok()
                .flatten()
                .filter(|r| r.next_hops == vec![node_ip(1)])
        },
    )
    .unwrap();
    cluster.apply_ok(&slice(NODES[2])).expect("slice moves");
    until(
        "the local route from node-c only",
        Duration::from_secs(30),
        || {
            frr.route(&local_prefix)
                .ok()
                .flatten()
                .filter(|r| r.next_hops == vec![node_ip(2)])
        },
    )
    .unwrap();
}

/// A node going NotReady withdraws its next hop; Ready again brings it back.
/// The same for a Ready node whose network is unavailable (MetalLB's e2e
/// check: `NetworkUnavailable` True).
fn not_ready(lab: &Lab) {
    let Lab {
        cluster,
        frr,
        prefix,
        ..
    } = lab;
    cluster.set_ready(NODES[2], false).expect("not ready");
    let two = until(
        "node-c's next hop to go",
        Duration::from_secs(30),
        hops(frr, prefix, 2),
    )
    .unwrap();
    assert!(!two.next_hops.contains(&node_ip(2)));
    cluster.set_ready(NODES[2], true).expect("ready");
    until(
        "three next hops again",
        Duration::from_secs(30),
        hops(frr, prefix, 3),
    )
    .unwrap();
    let network = |unavailable| {
        cluster
            .set_conditions(
                NODES[1],
                &[("Ready", true), ("NetworkUnavailable", unavailable)],
            )
            .expect("conditions")
    };
    network(true);
    let two = until(
        "node-b's next hop to go while its network is unavailable",
        Duration::from_secs(30),
        hops(frr, prefix, 2),
    )
    .unwrap();
    assert!(!two.next_hops.contains(&node_ip(1)));
    network(false);
    until(
        "three next hops once node-b's network is back",
        Duration::from_secs(30),
        hops(frr, prefix, 3),
    )
    .unwrap();
}

/// Layer 2 and BGP on the same Service: both parts in its condition.
fn layer2_and_bgp(lab: &Lab) {
    let Lab {
        cluster,
        frr,
        prefix,
        ..
    } = lab;
    cluster
        .apply_ok("apiVersion: ferrolb.io/v1alpha1\nkind: L2Advertisement\nmetadata: {name: both}\nspec: {ipAddressPools: [bgp]}\n")
        .expect("l2 advertisement");
    let both = until(
        "both L2 and BGP in the condition",
        Duration::from_secs(30),
        || {
            let c = condition(cluster, "web");
            (c.starts_with("Announced") && c.contains("L2:") && c.contains("BGP:")).then_some(c)
        },
    )
    .expect("L2 and BGP");
    println!("Service: {both}");
    assert!(
        frr.route(prefix).unwrap().is_some(),
        "BGP keeps advertising"
    );
    cluster
        .kubectl(&["delete", "l2advertisement", "both"])
        .expect("delete");
}

/// The speakers' metrics show the session up and what they sent.
fn metrics(lab: &Lab) {
    let speakers = &lab.speakers;
    for speaker in speakers {
        assert_eq!(
            speaker
                .metric("ferrolb_speaker_bgp_session_up{session=\"router\"}")
                .expect("metric"),
            1.0
        );
        assert!(
            speaker
                .metric("ferrolb_speaker_bgp_updates_sent_total{session=\"router\"}")
                .expect("metric")
                >= 1.0
        );
    }
}

/// Editing the advertisement's communities updates the route in place.
fn communities(lab: &Lab) {
    let Lab {
        cluster,
        frr,
        prefix,
        ..
    } = lab;
    cluster
        .apply_ok("apiVersion: ferrolb.io/v1alpha1\nkind: BGPAdvertisement\nmetadata: {name: bgp}\nspec: {ipAddressPools: [bgp], communities: ['65000:8', 'large:64512:9:9']}\n")
        .expect("new communities");
    until(
        "the new communities at FRR",
        Duration::from_secs(30),
        || {
            frr.route(prefix).ok().flatten().filter(|r| {
                r.communities == vec!["65000:8"] && r.large_communities == vec!["64512:9:9"]
            })
        },
    )
    .unwrap();
}

/// The advertisement's node selector: only node-b advertises.
fn advertisement_selector(lab: &Lab) {
    let Lab {
        cluster,
        frr,
        prefix,
        ..
    } = lab;
    cluster
        .apply_ok("apiVersion: ferrolb.io/v1alpha1\nkind: BGPAdvertisement\nmetadata: {name: bgp}\nspec: {ipAddressPools: [bgp], nodeSelectors: [{matchLabels: {kubernetes.io/hostname: node-b}}]}\n")
        .expect("advertisement node selector");
    until("node-b's next hop only", Duration::from_secs(30), || {
        frr.route(prefix)
            .ok()
            .flatten()
            .filter(|r| r.next_hops == vec![node_ip(1)])
    })
    .unwrap();
    assert!(
        frr.established(&node_ip(0)).unwrap(),
        "the other nodes keep their sessions, with nothing to advertise"
    );
}

/// Aggregation: the /24 instead of the /32s, and back.
fn aggregation(lab: &Lab) {
    let Lab {
        cluster,
        frr,
        prefix,
        ..
    } = lab;
    cluster
        .apply_ok("apiVersion: ferrolb.io/v1alpha1\nkind: BGPAdvertisement\nmetadata: {name: bgp}\nspec: {ipAddressPools: [bgp], aggregationLength: 24}\n")
        .expect("aggregation");
    until(
        "the aggregate from three nodes",
        Duration::from_secs(30),
        || {
            frr.route("172.30.0.0/24")
                .ok()
                .flatten()
                .filter(|r| r.next_hops.len() == 3)
        },
    )
    .unwrap();
    until("the /32 to go", Duration::from_secs(30), || {
        frr.route(prefix)
            .ok()
            .and_then(|r| r.is_none().then_some(()))
    })
    .unwrap();
    cluster
        .apply_ok("apiVersion: ferrolb.io/v1alpha1\nkind: BGPAdvertisement\nmetadata: {name: bgp}\nspec: {ipAddressPools: [bgp], communities: ['65000:8', 'large:64512:9:9']}\n")
        .expect("back to /32");
    until(
        "three next hops again",
        Duration::from_secs(60),
        hops(frr, prefix, 3),
    )
    .unwrap();
}

/// A peer's node selector: only node-a keeps its session; the others end theirs (Cease) and their next hops go.
fn peer_selector(lab: &Lab) {
    let Lab {
        cluster,
        frr,
        prefix,
        ..
    } = lab;
    patch_peer(
        cluster,
        r#"{"spec":{"nodeSelectors":[{"matchLabels":{"kubernetes.io/hostname":"node-a"}}]}}"#,
    );
    until("node-a's next hop only", Duration::from_secs(30), || {
        frr.route(prefix)
            .ok()
            .flatten()
            .filter(|r| r.next_hops == vec![node_ip(0)])
    })
    .unwrap();
    assert_ne!(frr.neighbor_state(&node_ip(1)).unwrap(), "Established");
    let counts = peer_counts(cluster, "1/1");
    println!("BGPPeer with a node selector, established/selected: {counts}");
    cluster
        .kubectl(&[
            "patch",
            "bgppeer",
            "router",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/spec/nodeSelectors"}]"#,
        ])
        .expect("every node again");
    until(
        "three next hops again",
        Duration::from_secs(60),
        hops(frr, prefix, 3),
    )
    .unwrap();
}

/// Deleting the Service withdraws its route.
fn delete_service(lab: &Lab) {
    let Lab {
        cluster,
        frr,
        prefix,
        ..
    } = lab;
    cluster
        .kubectl(&["delete", "svc", "web"])
        .expect("delete svc");
    until("web's route to go", Duration::from_secs(30), || {
        frr.route(prefix)
            .ok()
            .and_then(|r| r.is_none().then_some(()))
    })
    .unwrap();
}

/// Figure: Service created → its route at FRR, 20 Services one after
/// another; returns the last one's prefix.
fn figure_route(lab: &Lab) -> String {
    let Lab { cluster, frr, .. } = lab;
    let mut times = Vec::new();
    let mut last = String::new();
    for i in 0..20 {
        let name = format!("timed-{i}");
        let started = Instant::now();
        cluster
            .apply_ok(&service_yaml("default", &name, "", ""))
            .expect("service");
        let ip = until("an IP", Duration::from_secs(30), || {
            cluster.service_ip(&name)
        })
        .unwrap();
        let prefix = format!("{ip}/32");
        until("the route", Duration::from_secs(30), || {
            frr.route(&prefix)
                .ok()
                .flatten()
                .filter(|r| !r.next_hops.is_empty())
        })
        .unwrap();
        times.push(started.elapsed());
        last = prefix;
    }
    times.sort();
    println!(
        "FIGURE Service created -> route in FRR: p50 {:?}, max {:?} (20 Services; kubectl apply + vtysh polling included)",
        times[10], times[19]
    );
    last
}

/// Figure: speaker killed → FRR withdraws its next hop.
fn figure_speaker_killed(lab: &mut Lab, last: &str) {
    let frr = &lab.frr;
    until("three next hops", Duration::from_secs(30), || {
        frr.route(last)
            .ok()
            .flatten()
            .filter(|r| r.next_hops.len() == 3)
    })
    .unwrap();
    let killed = Instant::now();
    lab.speakers.remove(0).kill();
    until("node-a's next hop to go", Duration::from_secs(30), || {
        frr.route(last)
            .ok()
            .flatten()
            .filter(|r| r.next_hops.len() == 2 && !r.next_hops.contains(&node_ip(0)))
    })
    .unwrap();
    println!(
        "FIGURE speaker SIGKILL -> its next hop withdrawn at FRR: {:?}",
        killed.elapsed()
    );
}

/// Dual stack over BGP [IPV6, DUALSTACK]: an IPv4 and an IPv6 BGPPeer, a
/// dual-stack pool and a PreferDualStack Service; FRR gets the IPv4 prefix
/// over the IPv4 sessions and the IPv6 one over MP-BGP on the IPv6 sessions,
/// from every node, then (Local policy) only from the node with an endpoint.
#[tokio::test]
async fn a_dual_stack_service_reaches_frr_over_ipv4_and_ipv6_sessions() {
    let cluster = TestCluster::start().await.expect("cluster");
    let mut network = Network::new().expect("switch");
    let router_host = network
        .host(
            "rtr6",
            "02:00:00:00:04:01",
            &["192.168.51.1/24", "fd51::1/64"],
        )
        .expect("router");
    let v4 = |i: usize| format!("192.168.51.{}", 11 + i);
    let v6 = |i: usize| format!("fd51::{}", 11 + i);
    let hosts: Vec<Host> = (0..3)
        .map(|i| {
            network
                .host(
                    NODES[i],
                    &format!("02:00:00:00:04:1{i}"),
                    &[&format!("{}/24", v4(i)), &format!("{}/64", v6(i))],
                )
                .expect("node")
        })
        .collect();
    let neighbors: Vec<(String, u32)> = (0..3)
        .flat_map(|i| [(v4(i), 64512), (v6(i), 64512)])
        .collect();
    let frr = Frr::start(
        &router_host,
        &frr_config(64500, "192.168.51.1", &neighbors, &[], &[], true),
    )
    .expect("frr");
    for node in NODES {
        cluster.node(node).expect("node");
    }
    cluster
        .apply_ok(
            "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: dual}\nspec: {addresses: [172.31.0.0/24, 'fd31::/120']}\n---\n\
             apiVersion: ferrolb.io/v1alpha1\nkind: BGPPeer\nmetadata: {name: router4}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 192.168.51.1, connectTime: 2s}\n---\n\
             apiVersion: ferrolb.io/v1alpha1\nkind: BGPPeer\nmetadata: {name: router6}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 'fd51::1', connectTime: 2s}\n---\n\
             apiVersion: ferrolb.io/v1alpha1\nkind: BGPAdvertisement\nmetadata: {name: dual}\nspec: {ipAddressPools: [dual]}\n",
        )
        .expect("config");
    let _speakers: Vec<Process> = NODES
        .iter()
        .zip(&hosts)
        .map(|(n, h)| speaker(&cluster, n, h))
        .collect();
    let _operator = cluster.operator("solo", &[]).expect("operator");
    let dual = "  ipFamilyPolicy: PreferDualStack\n  ipFamilies: [IPv4, IPv6]\n";
    cluster
        .apply_ok(&service_yaml("default", "dual", "", dual))
        .expect("service");
    let ips = until("two IPs", Duration::from_secs(30), || {
        let ips = cluster.service_ips("dual");
        (ips.len() == 2).then_some(ips)
    })
    .expect("dual-stack IPs");
    let ip4 = ips.iter().find(|ip| !ip.contains(':')).expect("v4").clone();
    let ip6 = ips.iter().find(|ip| ip.contains(':')).expect("v6").clone();
    let all4: Vec<String> = (0..3).map(v4).collect();
    let all6: Vec<String> = (0..3).map(v6).collect();
    let route = |prefix: String, hops: Vec<String>| {
        let frr = &frr;
        move || {
            frr.route(&prefix)
                .ok()
                .flatten()
                .filter(|r| r.next_hops == hops)
        }
    };
    until(
        "the IPv4 prefix from three nodes",
        Duration::from_secs(60),
        route(format!("{ip4}/32"), all4),
    )
    .unwrap();
    until(
        "the IPv6 prefix from three nodes",
        Duration::from_secs(60),
        route(format!("{ip6}/128"), all6),
    )
    .unwrap();
    cluster
        .wait_announced("dual", Duration::from_secs(30))
        .expect("Announced");

    // The advertisement's `peers`: only the IPv6 router gets routes; the
    // IPv4 prefix is withdrawn, the IPv6 one stays.
    cluster
        .apply_ok("apiVersion: ferrolb.io/v1alpha1\nkind: BGPAdvertisement\nmetadata: {name: dual}\nspec: {ipAddressPools: [dual], peers: [router6]}\n")
        .expect("peers");
    let v4_prefix = format!("{ip4}/32");
    until("the IPv4 prefix to go", Duration::from_secs(30), || {
        frr.route(&v4_prefix)
            .ok()
            .and_then(|r| r.is_none().then_some(()))
    })
    .unwrap();
    assert!(frr.route(&format!("{ip6}/128")).unwrap().is_some());
    cluster
        .apply_ok("apiVersion: ferrolb.io/v1alpha1\nkind: BGPAdvertisement\nmetadata: {name: dual}\nspec: {ipAddressPools: [dual]}\n")
        .expect("every peer again");

    // Local policy, both families: only node-b advertises.
    cluster.local_service(dual, NODES[1]).expect("local");
    let ips = until("two IPs", Duration::from_secs(30), || {
        let ips = cluster.service_ips("local");
        (ips.len() == 2).then_some(ips)
    })
    .expect("dual-stack IPs");
    for ip in ips {
        let (prefix, hop) = if ip.contains(':') {
            (format!("{ip}/128"), v6(1))
        } else {
            (format!("{ip}/32"), v4(1))
        };
        until(
            "the Local prefix from node-b only",
            Duration::from_secs(30),
            route(prefix, vec![hop]),
        )
        .unwrap();
    }
}
