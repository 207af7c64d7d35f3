//! Layer 2 with everything real [L2, FAILOVER, IPV6, DUALSTACK]: kube-apiserver,
//! the operator, three speakers answering inside node namespaces, and a client
//! namespace resolving Service IPs with `arping` (and `ndisc6`). Figures are
//! printed, never asserted.

use std::time::{Duration, Instant};

use ferrolb_e2e::cluster::{TestCluster, local_endpoint_yaml, service_yaml};
use ferrolb_e2e::lab::{NODES, ThreeNodes, mac};
use ferrolb_e2e::netns::{Host, Network};
use ferrolb_e2e::process::Process;
use ferrolb_e2e::wait::{step, until};

/// The MACs of the nodes, to tell which one answered.
fn macs() -> [String; 3] {
    [mac(1, 0), mac(1, 1), mac(1, 2)]
}

/// Which MAC answers ARP for `ip` from the client, if one does.
fn answering_mac(client: &Host, ip: &str) -> Option<usize> {
    let out = client
        .run(
            "arping",
            &["-c", "1", "-w", "1", "-i", &client.interface, ip],
        )
        .ok()?;
    let said = String::from_utf8_lossy(&out.stdout).to_lowercase();
    macs().iter().position(|m| said.contains(m.as_str()))
}

/// The node the operator made active for `ip`.
fn active_node(cluster: &TestCluster, ip: &str) -> Option<usize> {
    let list: serde_json::Value = serde_json::from_str(
        &cluster
            .kubectl(&["get", "nodeannouncements", "-o", "json"])
            .ok()?,
    )
    .ok()?;
    let node = list["items"].as_array()?.iter().find(|item| {
        item["spec"]["l2"].as_array().is_some_and(|groups| {
            groups
                .iter()
                .any(|g| g["role"] == "active" && ferrolb_e2e::lab::holds(&g["ips"], ip))
        })
    })?["metadata"]["name"]
        .as_str()?
        .to_string();
    NODES.iter().position(|n| *n == node)
}

/// Waits until the client reaches `ip` at the node the operator chose, other
/// than `not`; returns that node.
fn resolves_to_chosen(
    cluster: &TestCluster,
    client: &Host,
    ip: &str,
    not: Option<usize>,
    what: &str,
) -> usize {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let (Some(chosen), Some(answering)) =
            (active_node(cluster, ip), answering_mac(client, ip))
            && chosen == answering
            && Some(chosen) != not
        {
            return chosen;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {ip} never resolved to a newly chosen node (chosen {:?}, answering {:?})\n{}",
            active_node(cluster, ip),
            answering_mac(client, ip),
            cluster
                .kubectl(&["get", "nodeannouncements", "-o", "yaml"])
                .unwrap_or_default()
        );
    }
}

struct Setup {
    cluster: TestCluster,
    // Dropped after the cluster's processes, before the namespaces go.
    speakers: Vec<Option<Process>>,
    _operator: Process,
    client: Host,
    hosts: Vec<Host>,
    _network: Network,
}

/// The lab, a speaker per node (with `extra` flags) and the operator.
async fn setup(extra: &[&str]) -> Setup {
    let lab = ThreeNodes::start("192.168.40", 1, "192.168.40.100-192.168.40.199")
        .await
        .expect("lab");
    let speakers = NODES
        .iter()
        .zip(&lab.hosts)
        .map(|(n, h)| {
            Some(
                lab.cluster
                    .speaker(n, &h.namespace, extra)
                    .expect("speaker"),
            )
        })
        .collect();
    let operator = lab.cluster.operator("solo", &[]).expect("operator");
    Setup {
        cluster: lab.cluster,
        speakers,
        _operator: operator,
        client: lab.client,
        hosts: lab.hosts,
        _network: lab.network,
    }
}

#[tokio::test]
async fn the_service_ip_follows_the_operator_choice_as_nodes_change() {
    let mut s = setup(&[]).await;
    let cluster = &s.cluster;
    let client = &s.client;
    let (ip, first) = step("a new Service is answered by one node", || {
        cluster
            .apply_ok(&service_yaml("default", "web", "", ""))
            .expect("service");
        cluster
            .wait_announced("web", Duration::from_secs(60))
            .unwrap_or_else(|e| {
                panic!(
                    "{e}\n{}",
                    s.speakers
                        .iter()
                        .flatten()
                        .map(Process::output)
                        .collect::<Vec<_>>()
                        .join("\n---\n")
                )
            });
        let ip = cluster.service_ip("web").expect("ip");
        let first = resolves_to_chosen(cluster, client, &ip, None, "first answer");
        let out = client
            .run("arping", &["-d", "-c", "3", "-i", &client.interface, &ip])
            .expect("arping -d");
        assert!(
            out.status.success(),
            "one MAC only: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        (ip, first)
    });
    let exclude = |node: usize, op: &str| {
        cluster
            .kubectl(&[
                "label",
                "node",
                NODES[node],
                &format!("node.kubernetes.io/exclude-from-external-load-balancers{op}"),
            ])
            .expect("label");
    };
    let second = step("the exclude label moves the IP", || {
        exclude(first, "=");
        let second = resolves_to_chosen(cluster, client, &ip, Some(first), "exclude label");
        exclude(first, "-");
        second
    });
    let third = step("a NotReady node loses the IP", || {
        cluster.set_ready(NODES[second], false).expect("not ready");
        let third = resolves_to_chosen(cluster, client, &ip, Some(second), "NotReady");
        cluster.set_ready(NODES[second], true).expect("ready");
        third
    });
    // MetalLB's e2e check: a Ready node whose network is not set up.
    let third = step("a node whose network is unavailable loses the IP", || {
        let unavailable = |on| {
            cluster
                .set_conditions(NODES[third], &[("Ready", true), ("NetworkUnavailable", on)])
                .expect("conditions")
        };
        unavailable(true);
        let fourth = resolves_to_chosen(cluster, client, &ip, Some(third), "NetworkUnavailable");
        unavailable(false);
        fourth
    });
    let advertise = |spec: &str| {
        cluster
            .apply_ok(&format!(
                "apiVersion: ferrolb.io/v1alpha1\nkind: L2Advertisement\nmetadata: {{name: l2}}\nspec: {{ipAddressPools: [l2]{spec}}}\n"
            ))
            .expect("L2Advertisement");
    };
    step(
        "a node selector leaving another node moves the IP there",
        || {
            let target = (third + 1) % 3;
            advertise(&format!(
                ", nodeSelectors: [{{matchLabels: {{kubernetes.io/hostname: {}}}}}]",
                NODES[target]
            ));
            let selected = resolves_to_chosen(cluster, client, &ip, Some(third), "node selector");
            assert_eq!(selected, target);
            advertise("");
            resolves_to_chosen(cluster, client, &ip, None, "every node again");
        },
    );
    step(
        "a missing interface is named; the real one answers again",
        || {
            advertise(", interfaces: [eth9]");
            let said = until(
                "the Service to name the missing interface",
                Duration::from_secs(30),
                || {
                    let (_, reason, message) = cluster.announced("web");
                    (reason == "AnnounceFailed" && message.contains("eth9"))
                        .then(|| format!("{reason}: {message}"))
                },
            )
            .expect("AnnounceFailed");
            println!("Service: {said}");
            advertise(", interfaces: [eth0]");
            resolves_to_chosen(cluster, client, &ip, None, "named interface");
            cluster
                .wait_announced("web", Duration::from_secs(30))
                .expect("announced on eth0");
            advertise("");
        },
    );
    step("a Local Service's IP follows its endpoints", || {
        cluster.local_service("", NODES[0]).expect("local service");
        let local_ip = until("the local Service's IP", Duration::from_secs(30), || {
            cluster.service_ip("local")
        })
        .expect("local IP");
        assert_eq!(
            resolves_to_chosen(cluster, client, &local_ip, None, "Local endpoint on node-a"),
            0
        );
        cluster
            .apply_ok(&local_endpoint_yaml(NODES[2]))
            .expect("slice moves");
        assert_eq!(
            resolves_to_chosen(
                cluster,
                client,
                &local_ip,
                Some(0),
                "Local endpoint moves to node-c"
            ),
            2
        );
    });
    let active = active_node(cluster, &ip).expect("active");
    let killed = s.speakers[active].take().expect("speaker");
    step(
        "the active speaker dies: its standby takes the IP, the operator agrees",
        || {
            killed.kill();
            resolves_to_chosen(cluster, client, &ip, Some(active), "speaker killed");
            cluster
                .wait_announced("web", Duration::from_secs(30))
                .expect("announced again");
        },
    );
}

#[tokio::test]
async fn figures_first_answer_and_slow_path_failover() {
    // No failover key: the slow path alone (the fast path has its own harness).
    let mut s = setup(&["--failover-secret=absent"]).await;
    let cluster = &s.cluster;
    // Creation → first ARP answer, 20 Services.
    let mut first_answers = Vec::new();
    for i in 0..20 {
        let name = format!("f{i:02}");
        let created = Instant::now();
        cluster
            .apply_ok(&service_yaml("default", &name, "", ""))
            .expect("service");
        let ip = loop {
            if let Some(ip) = cluster.service_ip(&name) {
                break ip;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        while answering_mac(&s.client, &ip).is_none() {
            assert!(
                created.elapsed() < Duration::from_secs(30),
                "{name} never answered"
            );
        }
        first_answers.push(created.elapsed());
    }
    first_answers.sort();
    println!(
        "figure: Service created → first ARP answer, 20 Services: p50 {:.2}s, max {:.2}s",
        first_answers[10].as_secs_f64(),
        first_answers[19].as_secs_f64()
    );

    let rss: Vec<String> = s
        .speakers
        .iter()
        .flatten()
        .filter_map(|p| {
            let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid())).ok()?;
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        })
        .collect();
    println!(
        "figure: speaker RSS (KiB) with 20 Services: {}",
        rss.join(", ")
    );

    // Slow-path failover, 10 times: kill the active speaker of f00, time until
    // another MAC answers, restart the dead one.
    let ip = cluster.service_ip("f00").expect("ip");
    let mut failovers = Vec::new();
    for _ in 0..10 {
        let active = loop {
            if let (Some(chosen), Some(answering)) =
                (active_node(cluster, &ip), answering_mac(&s.client, &ip))
                && chosen == answering
            {
                break chosen;
            }
        };
        let killed = Instant::now();
        s.speakers[active].take().expect("speaker").kill();
        loop {
            if let Some(now) = answering_mac(&s.client, &ip)
                && now != active
            {
                break;
            }
            assert!(killed.elapsed() < Duration::from_secs(40), "no takeover");
        }
        failovers.push(killed.elapsed());
        s.speakers[active] = Some(
            cluster
                .speaker(
                    NODES[active],
                    &s.hosts[active].namespace,
                    &["--failover-secret=absent"],
                )
                .expect("speaker"),
        );
    }
    failovers.sort();
    println!(
        "figure: slow-path failover (3 s speaker Leases), 10 kills: median {:.2}s, max {:.2}s",
        failovers[5].as_secs_f64(),
        failovers[9].as_secs_f64()
    );
}

/// Dual stack in layer 2 [IPV6, DUALSTACK]: a PreferDualStack Service gets an
/// IPv4 and an IPv6 address; the client resolves the first with `arping` and
/// the second with `ndisc6`, both to the one node the operator chose.
#[tokio::test]
async fn a_dual_stack_service_is_answered_by_arp_and_ndp_from_one_node() {
    let cluster = TestCluster::start().await.expect("cluster");
    let mut network = Network::new().expect("switch");
    let hosts: Vec<Host> = (0..3)
        .map(|i| {
            network
                .host(
                    NODES[i],
                    &mac(1, i),
                    &[
                        &format!("192.168.41.{}/24", 11 + i),
                        &format!("fd41::{}/64", 11 + i),
                    ],
                )
                .expect("node")
        })
        .collect();
    let client = network
        .host(
            "cli",
            "02:00:00:00:01:99",
            &["192.168.41.2/24", "fd41::2/64"],
        )
        .expect("client");
    for node in NODES {
        cluster.node(node).expect("node");
    }
    cluster
        .apply_ok("apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: dual}\nspec: {addresses: [192.168.41.100-192.168.41.110, 'fd41::100-fd41::110']}\n---\napiVersion: ferrolb.io/v1alpha1\nkind: L2Advertisement\nmetadata: {name: dual}\nspec: {ipAddressPools: [dual]}\n")
        .expect("pool");
    let _speakers: Vec<Process> = NODES
        .iter()
        .zip(&hosts)
        .map(|(n, h)| cluster.speaker(n, &h.namespace, &[]).expect("speaker"))
        .collect();
    let _operator = cluster.operator("solo", &[]).expect("operator");
    cluster
        .apply_ok(&service_yaml(
            "default",
            "dual",
            "",
            "  ipFamilyPolicy: PreferDualStack\n  ipFamilies: [IPv4, IPv6]\n",
        ))
        .expect("service");
    cluster
        .wait_announced("dual", Duration::from_secs(60))
        .expect("Announced");
    let ips = cluster.service_ips("dual");
    let v4 = ips
        .iter()
        .find(|ip| !ip.contains(':'))
        .expect("IPv4")
        .clone();
    let v6 = ips
        .iter()
        .find(|ip| ip.contains(':'))
        .expect("IPv6")
        .clone();
    let chosen = active_node(&cluster, &v4).expect("active for IPv4");
    assert_eq!(
        active_node(&cluster, &v6),
        Some(chosen),
        "both addresses of a Service travel together"
    );
    let arp = until(
        "the IPv4 address to resolve",
        Duration::from_secs(20),
        || answering_mac(&client, &v4),
    )
    .expect("arping");
    assert_eq!(arp, chosen);
    let ndp = until(
        "the IPv6 address to resolve",
        Duration::from_secs(20),
        || {
            let out = client
                .run("ndisc6", &["-r", "2", &v6, &client.interface])
                .ok()?;
            let said = String::from_utf8_lossy(&out.stdout).to_lowercase();
            macs().iter().position(|m| said.contains(m.as_str()))
        },
    )
    .expect("ndisc6");
    assert_eq!(ndp, chosen, "NDP answers from the same node as ARP");
}
