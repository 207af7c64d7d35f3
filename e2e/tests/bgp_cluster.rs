//! BGP with everything real [BGP, E2E, METRICS, IPV6, DUALSTACK]: kube-apiserver,
//! the operator, three speakers peering from node namespaces with FRR in a
//! router namespace.
//! BGPPeer + BGPAdvertisement + Service → the route at FRR; Local policy
//! follows endpoints; NotReady, Service delete, a peer node selector and an
//! edited advertisement change what FRR holds; L2 and BGP on one Service; a
//! wrong TCP-MD5 password shows in BGPPeer, NodeAnnouncement and Service
//! status. Figures are printed, never asserted.

use std::time::{Duration, Instant};

use ferrolb_e2e::cluster::{TestCluster, local_endpoint_yaml, service_yaml};
use ferrolb_e2e::netns::{Host, Network};
use ferrolb_e2e::process::Process;
use ferrolb_e2e::routers::{Frr, Router, frr_config, wait_for};

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

fn condition(cluster: &TestCluster, name: &str) -> String {
    cluster
        .kubectl(&[
            "get",
            "svc",
            name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"ferrolb.io/Announced\")].reason}: {.status.conditions[?(@.type==\"ferrolb.io/Announced\")].message}",
        ])
        .unwrap_or_default()
}

#[tokio::test]
async fn routes_reach_frr_follow_endpoints_and_a_wrong_password_is_explained() {
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
    let mut speakers: Vec<Process> = NODES
        .iter()
        .zip(&hosts)
        .map(|(n, h)| speaker(&cluster, n, h))
        .collect();
    let _operator = cluster.operator("solo", &[]).expect("operator");
    cluster
        .apply_ok(&service_yaml("default", "web", "", ""))
        .expect("service");

    // Status explains the wrong password everywhere a user looks.
    let peer_message = wait_for(
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
    wait_for(
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
    let reason = wait_for("the Service condition", Duration::from_secs(30), || {
        let c = condition(&cluster, "web");
        c.starts_with("NoEstablishedSession").then_some(c)
    })
    .expect("NoEstablishedSession");
    println!("Service: {reason}");

    // The right password: sessions come up, the route reaches FRR from all three.
    cluster.apply_ok(&secret("s3cret")).expect("secret");
    let ip = cluster.service_ip("web").expect("ip");
    let prefix = format!("{ip}/32");
    let route = wait_for(
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
        .kubectl(&[
            "wait",
            "--for=condition=ferrolb.io/Announced",
            "svc/web",
            "--timeout=30s",
        ])
        .expect("Announced");
    let message = condition(&cluster, "web");
    assert!(
        message.contains("BGP:") && message.contains("3 of 3 sessions"),
        "{message}"
    );
    let counts = wait_for("BGPPeer 3/3", Duration::from_secs(30), || {
        let out = cluster
            .kubectl(&[
                "get",
                "bgppeer",
                "router",
                "-o",
                "jsonpath={.status.establishedNodes}/{.status.selectedNodes}",
            ])
            .ok()?;
        (out == "3/3").then_some(out)
    })
    .expect("peer status");
    println!("BGPPeer established/selected: {counts}");

    // Local policy: only nodes with an endpoint advertise.
    cluster.local_service("", NODES[1]).expect("local");
    let slice = local_endpoint_yaml;
    let local = wait_for("the local Service's IP", Duration::from_secs(30), || {
        cluster.service_ip("local")
    })
    .unwrap();
    let local_prefix = format!("{local}/32");
    wait_for(
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
    wait_for(
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

    // A node going NotReady withdraws its next hop; Ready again brings it back.
    let hops = |n: usize| {
        let prefix = prefix.clone();
        let frr = &frr;
        move || {
            frr.route(&prefix)
                .ok()
                .flatten()
                .filter(|r| r.next_hops.len() == n)
        }
    };
    cluster.set_ready(NODES[2], false).expect("not ready");
    let two = wait_for("node-c's next hop to go", Duration::from_secs(30), hops(2)).unwrap();
    assert!(!two.next_hops.contains(&node_ip(2)));
    cluster.set_ready(NODES[2], true).expect("ready");
    wait_for("three next hops again", Duration::from_secs(30), hops(3)).unwrap();

    // Layer 2 and BGP on the same Service: both parts in its condition.
    cluster
        .apply_ok("apiVersion: ferrolb.io/v1alpha1\nkind: L2Advertisement\nmetadata: {name: both}\nspec: {ipAddressPools: [bgp]}\n")
        .expect("l2 advertisement");
    let both = wait_for(
        "both L2 and BGP in the condition",
        Duration::from_secs(30),
        || {
            let c = condition(&cluster, "web");
            (c.starts_with("Announced") && c.contains("L2:") && c.contains("BGP:")).then_some(c)
        },
    )
    .expect("L2 and BGP");
    println!("Service: {both}");
    assert!(
        frr.route(&prefix).unwrap().is_some(),
        "BGP keeps advertising"
    );
    cluster
        .kubectl(&["delete", "l2advertisement", "both"])
        .expect("delete");

    // The speakers' metrics show the session up and what they sent.
    for speaker in &speakers {
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

    // Editing the advertisement's communities updates the route in place.
    cluster
        .apply_ok("apiVersion: ferrolb.io/v1alpha1\nkind: BGPAdvertisement\nmetadata: {name: bgp}\nspec: {ipAddressPools: [bgp], communities: ['65000:8', 'large:64512:9:9']}\n")
        .expect("new communities");
    wait_for(
        "the new communities at FRR",
        Duration::from_secs(30),
        || {
            frr.route(&prefix).ok().flatten().filter(|r| {
                r.communities == vec!["65000:8"] && r.large_communities == vec!["64512:9:9"]
            })
        },
    )
    .unwrap();

    // The advertisement's node selector: only node-b advertises.
    cluster
        .apply_ok("apiVersion: ferrolb.io/v1alpha1\nkind: BGPAdvertisement\nmetadata: {name: bgp}\nspec: {ipAddressPools: [bgp], nodeSelectors: [{matchLabels: {kubernetes.io/hostname: node-b}}]}\n")
        .expect("advertisement node selector");
    wait_for("node-b's next hop only", Duration::from_secs(30), || {
        frr.route(&prefix)
            .ok()
            .flatten()
            .filter(|r| r.next_hops == vec![node_ip(1)])
    })
    .unwrap();
    assert!(
        frr.established(&node_ip(0)).unwrap(),
        "the other nodes keep their sessions, with nothing to advertise"
    );

    // Aggregation: the /24 instead of the /32s.
    cluster
        .apply_ok("apiVersion: ferrolb.io/v1alpha1\nkind: BGPAdvertisement\nmetadata: {name: bgp}\nspec: {ipAddressPools: [bgp], aggregationLength: 24}\n")
        .expect("aggregation");
    wait_for(
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
    wait_for("the /32 to go", Duration::from_secs(30), || {
        frr.route(&prefix)
            .ok()
            .and_then(|r| r.is_none().then_some(()))
    })
    .unwrap();
    cluster
        .apply_ok("apiVersion: ferrolb.io/v1alpha1\nkind: BGPAdvertisement\nmetadata: {name: bgp}\nspec: {ipAddressPools: [bgp], communities: ['65000:8', 'large:64512:9:9']}\n")
        .expect("back to /32");
    wait_for("three next hops again", Duration::from_secs(60), hops(3)).unwrap();

    // A peer's node selector: only node-a keeps its session; the others end
    // theirs (Cease) and their next hops go.
    cluster
        .kubectl(&[
            "patch",
            "bgppeer",
            "router",
            "--type=merge",
            "-p",
            r#"{"spec":{"nodeSelectors":[{"matchLabels":{"kubernetes.io/hostname":"node-a"}}]}}"#,
        ])
        .expect("peer selector");
    wait_for("node-a's next hop only", Duration::from_secs(30), || {
        frr.route(&prefix)
            .ok()
            .flatten()
            .filter(|r| r.next_hops == vec![node_ip(0)])
    })
    .unwrap();
    assert_ne!(frr.neighbor_state(&node_ip(1)).unwrap(), "Established");
    let counts = wait_for("BGPPeer 1/1", Duration::from_secs(30), || {
        let out = cluster
            .kubectl(&[
                "get",
                "bgppeer",
                "router",
                "-o",
                "jsonpath={.status.establishedNodes}/{.status.selectedNodes}",
            ])
            .ok()?;
        (out == "1/1").then_some(out)
    })
    .expect("peer status follows the selector");
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
    wait_for("three next hops again", Duration::from_secs(60), hops(3)).unwrap();

    // Deleting the Service withdraws its route.
    cluster
        .kubectl(&["delete", "svc", "web"])
        .expect("delete svc");
    wait_for("web's route to go", Duration::from_secs(30), || {
        frr.route(&prefix)
            .ok()
            .and_then(|r| r.is_none().then_some(()))
    })
    .unwrap();

    // Figure: Service created → its route at FRR, 20 Services one after another.
    let mut times = Vec::new();
    let mut last = String::new();
    for i in 0..20 {
        let name = format!("timed-{i}");
        let started = Instant::now();
        cluster
            .apply_ok(&service_yaml("default", &name, "", ""))
            .expect("service");
        let ip = wait_for("an IP", Duration::from_secs(30), || {
            cluster.service_ip(&name)
        })
        .unwrap();
        let prefix = format!("{ip}/32");
        wait_for("the route", Duration::from_secs(30), || {
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
    // Figure: speaker killed → FRR withdraws its next hop.
    wait_for("three next hops", Duration::from_secs(30), || {
        frr.route(&last)
            .ok()
            .flatten()
            .filter(|r| r.next_hops.len() == 3)
    })
    .unwrap();
    let killed = Instant::now();
    speakers.remove(0).kill();
    wait_for("node-a's next hop to go", Duration::from_secs(30), || {
        frr.route(&last)
            .ok()
            .flatten()
            .filter(|r| r.next_hops.len() == 2 && !r.next_hops.contains(&node_ip(0)))
    })
    .unwrap();
    println!(
        "FIGURE speaker SIGKILL -> its next hop withdrawn at FRR: {:?}",
        killed.elapsed()
    );
    drop(speakers);
    drop(frr);
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
    let ips = wait_for("two IPs", Duration::from_secs(30), || {
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
    wait_for(
        "the IPv4 prefix from three nodes",
        Duration::from_secs(60),
        route(format!("{ip4}/32"), all4),
    )
    .unwrap();
    wait_for(
        "the IPv6 prefix from three nodes",
        Duration::from_secs(60),
        route(format!("{ip6}/128"), all6),
    )
    .unwrap();
    cluster
        .kubectl(&[
            "wait",
            "--for=condition=ferrolb.io/Announced",
            "svc/dual",
            "--timeout=30s",
        ])
        .expect("Announced");

    // The advertisement's `peers`: only the IPv6 router gets routes; the
    // IPv4 prefix is withdrawn, the IPv6 one stays.
    cluster
        .apply_ok("apiVersion: ferrolb.io/v1alpha1\nkind: BGPAdvertisement\nmetadata: {name: dual}\nspec: {ipAddressPools: [dual], peers: [router6]}\n")
        .expect("peers");
    let v4_prefix = format!("{ip4}/32");
    wait_for("the IPv4 prefix to go", Duration::from_secs(30), || {
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
    let ips = wait_for("two IPs", Duration::from_secs(30), || {
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
        wait_for(
            "the Local prefix from node-b only",
            Duration::from_secs(30),
            route(prefix, vec![hop]),
        )
        .unwrap();
    }
}
