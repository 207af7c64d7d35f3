//! The clusters people run [L2, FAILOVER, IPV6, E2E]: what kubeadm, k3s,
//! kind and Talos do by default, in node namespaces against the real
//! apiserver, operator and speakers — a host firewall on the probe port,
//! kube-proxy in IPVS mode without strictARP, CNI and container bridges
//! beside the node's NIC, a single node labelled
//! exclude-from-external-load-balancers, IPv6-only nodes, and another
//! load-balancer controller writing the same Services. Figures are printed,
//! never asserted.

use std::time::{Duration, Instant};

use ferrolb_api::constants::condition::ANNOUNCED;
use ferrolb_e2e::cluster::{TestCluster, service_yaml};
use ferrolb_e2e::netns::{Host, Network};
use ferrolb_e2e::process::Process;
use ferrolb_e2e::wait::until;
use nix::sys::signal::Signal;
use serde_json::Value;

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
const MACS: [&str; 3] = [
    "02:00:00:00:07:0a",
    "02:00:00:00:07:0b",
    "02:00:00:00:07:0c",
];

/// One control plane at a time: the machine has two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Three nodes, a client, the operator and a speaker per node, one pool and
/// its L2Advertisement, and Service `web` asking for `ip`.
struct Lab {
    cluster: TestCluster,
    hosts: Vec<Host>,
    client: Host,
    speakers: Vec<Option<Process>>,
    operator: Option<Process>,
    ip: String,
    _network: Network,
}

/// How a lab's nodes are addressed.
struct Addressing {
    /// Node `i`'s address (CIDR).
    node: fn(usize) -> String,
    /// The client's.
    client: &'static str,
    /// The pool.
    pool: &'static str,
    /// The Service's IP.
    ip: &'static str,
    /// Extra Service spec lines.
    spec: &'static str,
}

const V4: Addressing = Addressing {
    node: |i| format!("192.168.70.{}/24", 11 + i),
    client: "192.168.70.2/24",
    pool: "192.168.70.100-192.168.70.110",
    ip: "192.168.70.100",
    spec: "",
};

impl Lab {
    /// `before_speakers` runs on each node host before its speaker starts.
    async fn start(addressing: &Addressing, before_speakers: impl Fn(&Host)) -> Lab {
        let cluster = TestCluster::start().await.expect("cluster");
        let mut network = Network::new().expect("switch");
        let hosts: Vec<Host> = (0..3)
            .map(|i| {
                network
                    .host(NODES[i], MACS[i], &[&(addressing.node)(i)])
                    .expect("node")
            })
            .collect();
        let client = network
            .host("cli", "02:00:00:00:07:99", &[addressing.client])
            .expect("client");
        for (i, host) in hosts.iter().enumerate() {
            if !addressing.ip.contains(':') {
                host.accept_service_ip(addressing.ip).expect("service IP");
            }
            before_speakers(host);
            cluster.node(NODES[i]).expect("node");
        }
        cluster
            .apply_ok(&format!(
                "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {{name: lab}}\nspec: {{addresses: ['{}']}}\n---\napiVersion: ferrolb.io/v1alpha1\nkind: L2Advertisement\nmetadata: {{name: lab}}\nspec: {{ipAddressPools: [lab]}}\n",
                addressing.pool
            ))
            .expect("pool");
        let mut lab = Lab {
            cluster,
            hosts,
            client,
            speakers: vec![None, None, None],
            operator: None,
            ip: addressing.ip.to_string(),
            _network: network,
        };
        for i in 0..3 {
            lab.start_speaker(i);
        }
        lab.operator = Some(lab.cluster.operator("solo", &[]).expect("operator"));
        lab.cluster
            .apply_ok(&service_yaml(
                "default",
                "web",
                &format!(
                    "  annotations: {{ferrolb.io/loadBalancerIPs: '{}'}}\n",
                    lab.ip
                ),
                addressing.spec,
            ))
            .expect("service");
        lab
    }

    fn start_speaker(&mut self, i: usize) {
        self.speakers[i] = Some(
            self.cluster
                .speaker(NODES[i], &self.hosts[i].namespace, &[])
                .expect("speaker"),
        );
    }

    fn announcements(&self) -> Vec<Value> {
        self.cluster
            .kubectl(&["get", "nodeannouncements", "-o", "json"])
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["items"].as_array().cloned())
            .unwrap_or_default()
    }

    /// (active, standby) as the operator wrote them.
    fn roles(&self) -> Option<(usize, usize)> {
        let (mut active, mut standby) = (None, None);
        for item in self.announcements() {
            let node = NODES.iter().position(|n| item["metadata"]["name"] == *n)?;
            for entry in item["spec"]["l2"].as_array().cloned().unwrap_or_default() {
                if ferrolb_e2e::lab::holds(&entry["ips"], &self.ip) {
                    match entry["role"].as_str() {
                        Some("active") => active = Some(node),
                        Some("standby") => standby = Some(node),
                        _ => {}
                    }
                }
            }
        }
        Some((active?, standby?))
    }

    /// How the standby's fast path towards the active node stands.
    fn failover_state(&self, standby: usize, active: usize) -> Option<String> {
        self.announcements()
            .into_iter()
            .find(|i| i["metadata"]["name"] == NODES[standby])?["status"]["failover"]
            .as_array()?
            .iter()
            .find(|f| f["node"] == NODES[active])?["state"]
            .as_str()
            .map(str::to_string)
    }

    fn announced(&self) -> Option<(String, String, String)> {
        self.cluster.service_condition("web", ANNOUNCED)
    }

    /// The nodes whose MAC answers ARP (or NDP) for the IP, from five requests.
    fn answering(&self) -> Vec<usize> {
        let text = if self.ip.contains(':') {
            let out = self
                .client
                .run("ndisc6", &["-r", "3", &self.ip, &self.client.interface]);
            out.map(|o| String::from_utf8_lossy(&o.stdout).to_lowercase())
        } else {
            let out = self.client.run(
                "arping",
                &["-d", "-c", "5", "-i", &self.client.interface, &self.ip],
            );
            out.map(|o| String::from_utf8_lossy(&o.stdout).to_lowercase())
        }
        .unwrap_or_default();
        (0..3).filter(|i| text.contains(MACS[*i])).collect()
    }

    /// The node whose MAC answers one ARP (or NDP) request, within a second.
    fn first_answer(&self) -> Option<usize> {
        let out = if self.ip.contains(':') {
            self.client.run(
                "ndisc6",
                &["-r", "1", "-w", "300", &self.ip, &self.client.interface],
            )
        } else {
            self.client.run(
                "arping",
                &["-c", "1", "-w", "1", "-i", &self.client.interface, &self.ip],
            )
        }
        .ok()?;
        let said = String::from_utf8_lossy(&out.stdout).to_lowercase();
        MACS.iter().position(|m| said.contains(*m))
    }

    fn iptables_on_all(&self, action: &str) {
        for host in &self.hosts {
            let out = host
                .run(
                    "iptables",
                    &[
                        action, "INPUT", "-p", "udp", "--dport", "7473", "-j", "DROP",
                    ],
                )
                .expect("iptables");
            assert!(
                out.status.success(),
                "iptables {action}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The firewall scenario: UDP 7473 dropped on every node. No IP moves while
/// its node is alive, one MAC answers, the Service's condition names the port
/// and the fix; a node that really dies still hands its IP on through its
/// Lease (the slow path); opening the port arms fast failover again.
#[tokio::test]
async fn a_firewall_on_the_probe_port_moves_no_ip_and_says_how_to_fix_it() {
    let _one = SERIAL.lock().await;
    let mut lab = Lab::start(&V4, |host| {
        let out = host
            .run(
                "iptables",
                &["-A", "INPUT", "-p", "udp", "--dport", "7473", "-j", "DROP"],
            )
            .expect("iptables");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await;
    let (active, standby) =
        until("the roles", Duration::from_secs(60), || lab.roles()).expect("active and standby");
    let expected = format!(
        "fast failover unavailable between {} and {}: no answer on UDP 7473 — open it between nodes",
        NODES[active], NODES[standby]
    );
    let (status, _, message) = until(
        "the condition to name the blocked port",
        Duration::from_secs(30),
        || lab.announced().filter(|(_, _, m)| m.contains(&expected)),
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", lab.announced()));
    assert_eq!(status, "True", "the IP is still answered: {message}");
    assert_eq!(
        lab.failover_state(standby, active).as_deref(),
        Some("Unavailable")
    );
    let unavailable = lab.speakers[standby]
        .as_ref()
        .expect("standby speaker")
        .metric("ferrolb_speaker_failover_unavailable_nodes")
        .expect("metric");
    assert_eq!(unavailable, 1.0);
    // Before this fix the IP moved between the two every 2–8 s: watch it.
    let watch_until = Instant::now() + Duration::from_secs(8);
    let mut moves = 0;
    let mut macs_seen = std::collections::BTreeSet::new();
    while Instant::now() < watch_until {
        if lab.roles().map(|r| r.0) != Some(active) {
            moves += 1;
        }
        let answering = lab.answering();
        assert!(
            answering.len() <= 1,
            "two MACs answered for {}: {answering:?}",
            lab.ip
        );
        macs_seen.extend(answering);
    }
    println!(
        "FIGURE firewall on UDP 7473: 8 s watched, IP moved {moves} time(s), MACs seen {:?}",
        macs_seen.iter().map(|i| MACS[*i]).collect::<Vec<_>>()
    );
    assert_eq!(moves, 0, "the IP stays with its live node");
    assert_eq!(macs_seen.into_iter().collect::<Vec<_>>(), vec![active]);

    // The active node dies (link cut, speaker frozen: it renews nothing
    // more): the slow path moves the IP once its 3 s Lease runs out.
    let cut = Instant::now();
    lab.hosts[active]
        .run("ip", &["link", "set", "dev", "eth0", "down"])
        .expect("link down");
    lab.speakers[active]
        .as_ref()
        .expect("active speaker")
        .signal(Signal::SIGSTOP);
    let taker = until(
        "another node to answer (slow path)",
        Duration::from_secs(30),
        || lab.first_answer().filter(|n| *n != active),
    )
    .expect("the IP moves when its node dies");
    println!(
        "FIGURE firewall on UDP 7473, active node dead: another node answers after {:?} (speaker Lease 3 s)",
        cut.elapsed()
    );
    assert_ne!(taker, active);

    // The node comes back, the rule goes: fast failover is armed again
    // between whichever nodes now hold the roles.
    lab.speakers[active]
        .as_ref()
        .expect("active speaker")
        .signal(Signal::SIGCONT);
    lab.hosts[active]
        .run("ip", &["link", "set", "dev", "eth0", "up"])
        .expect("link up");
    lab.iptables_on_all("-D");
    let (now_active, now_standby) = until("fast failover armed", Duration::from_secs(30), || {
        let (a, s) = lab.roles()?;
        (lab.failover_state(s, a).as_deref() == Some("Armed")).then_some((a, s))
    })
    .unwrap_or_else(|e| panic!("{e}: {:#?}", lab.announcements()));
    until("the condition to clear", Duration::from_secs(30), || {
        lab.announced()
            .filter(|(s, _, m)| s == "True" && !m.contains("unavailable"))
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", lab.announced()));
    // And it works: the active speaker dies, the standby takes over at once.
    let killed = Instant::now();
    if let Some(p) = lab.speakers[now_active].take() {
        p.kill();
    }
    until("the standby to take over", Duration::from_secs(20), || {
        (lab.first_answer() == Some(now_standby)).then_some(())
    })
    .expect("fast failover");
    println!(
        "FIGURE firewall removed, active speaker killed: the standby answers after {:?}",
        killed.elapsed()
    );
    let takeovers = lab.speakers[now_standby]
        .as_ref()
        .expect("standby speaker")
        .metric("ferrolb_speaker_failover_takeovers_total")
        .expect("metric");
    assert!(
        takeovers >= 1.0,
        "the fast path took it over, not the Lease"
    );
}

/// kube-proxy in IPVS mode without strictARP: the Service IP on a node's
/// `kube-ipvs0` and `arp_ignore=0` make that node's kernel answer ARP too
/// (two MACs), and the condition says which node and what to set; with
/// `arp_ignore=1` one MAC answers and the warning goes.
#[tokio::test]
async fn a_kernel_answering_arp_for_service_ips_is_named_with_strict_arp() {
    let _one = SERIAL.lock().await;
    let lab = Lab::start(&V4, |_| {}).await;
    let (active, _) =
        until("the roles", Duration::from_secs(60), || lab.roles()).expect("active and standby");
    until("one node to answer", Duration::from_secs(30), || {
        (lab.answering() == vec![active]).then_some(())
    })
    .expect("the active node answers");
    // Another node gets kube-proxy's dummy device (a bridge with no ports
    // stands in: this kernel has no dummy driver) holding the Service IP,
    // and the kernel default arp_ignore=0.
    let other = (0..3).find(|i| *i != active).expect("another node");
    let host = &lab.hosts[other];
    for args in [
        vec!["link", "add", "kube-ipvs0", "type", "bridge"],
        vec![
            "addr",
            "add",
            &format!("{}/32", lab.ip),
            "dev",
            "kube-ipvs0",
        ],
    ] {
        let out = host.run("ip", &args).expect("ip");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let set = |value: &str| {
        for scope in ["all", "eth0"] {
            host.run(
                "sysctl",
                &["-qw", &format!("net.ipv4.conf.{scope}.arp_ignore={value}")],
            )
            .expect("sysctl");
        }
    };
    set("0");
    let both = until("two MACs", Duration::from_secs(10), || {
        let answering = lab.answering();
        (answering.len() == 2).then_some(answering)
    })
    .expect("the kernel answers too");
    assert!(both.contains(&active) && both.contains(&other));
    let named = format!(
        "the kernel of node {} answers ARP for Service IPs too",
        NODES[other]
    );
    let (status, _, message) = until("the condition to say why", Duration::from_secs(30), || {
        lab.announced().filter(|(_, _, m)| m.contains(&named))
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", lab.announced()));
    assert!(message.contains("strictARP: true"), "{message}");
    println!("Announced {status}: {message}");
    let gauge = lab.speakers[other]
        .as_ref()
        .expect("speaker")
        .metric("ferrolb_speaker_kernel_answers_arp")
        .expect("metric");
    assert_eq!(gauge, 1.0);

    set("1");
    until("one MAC again", Duration::from_secs(10), || {
        (lab.answering() == vec![active]).then_some(())
    })
    .expect("strict ARP");
    until("the warning to go", Duration::from_secs(30), || {
        lab.announced()
            .filter(|(s, _, m)| s == "True" && !m.contains("kernel"))
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", lab.announced()));
}

/// Nodes that carry CNI and container bridges with addresses whose names
/// sort before `eth0` (`br-…`, `cni0`, `docker0`): the speaker answers on
/// the interface holding the node's address (the DaemonSet passes it as
/// NODE_IP), or, without it, on the default route's.
#[tokio::test]
async fn the_speaker_answers_on_the_node_address_interface_not_on_bridges() {
    let _one = SERIAL.lock().await;
    let cluster = TestCluster::start().await.expect("cluster");
    let mut network = Network::new().expect("switch");
    let client = network
        .host("cli", "02:00:00:00:07:99", &["192.168.71.2/24"])
        .expect("client");
    let mut speakers = Vec::new();
    for (i, node) in ["node-a", "node-b"].into_iter().enumerate() {
        let host = network
            .host(node, MACS[i], &[&format!("192.168.71.{}/24", 11 + i)])
            .expect("node");
        for (bridge, address) in [
            ("br-3f2a9c", "172.19.0.1/16"),
            ("cni0", "10.244.9.1/24"),
            ("docker0", "172.17.0.1/16"),
        ] {
            for args in [
                vec!["link", "add", bridge, "type", "bridge"],
                vec!["addr", "add", address, "dev", bridge],
                vec!["link", "set", "dev", bridge, "up"],
            ] {
                let out = host.run("ip", &args).expect("ip");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        cluster.node(node).expect("node");
        let ip = format!("192.168.71.{}", 100 + i);
        host.accept_service_ip(&ip).expect("service IP");
        cluster
            .apply_ok(&format!(
                "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {{name: {node}}}\nspec: {{addresses: [{ip}/32]}}\n---\napiVersion: ferrolb.io/v1alpha1\nkind: L2Advertisement\nmetadata: {{name: {node}}}\nspec: {{ipAddressPools: [{node}], nodeSelectors: [{{matchLabels: {{kubernetes.io/hostname: {node}}}}}]}}\n"
            ))
            .expect("pool");
        let speaker = if i == 0 {
            // As the DaemonSet runs it: the node's InternalIP from the downward API.
            cluster.speaker_choosing(node, &host.namespace, &["--node-ip=192.168.71.11"])
        } else {
            // No address given: the default route names the interface.
            host.run(
                "ip",
                &[
                    "route",
                    "add",
                    "default",
                    "via",
                    "192.168.71.1",
                    "dev",
                    "eth0",
                ],
            )
            .expect("route");
            cluster.speaker_choosing(node, &host.namespace, &[])
        };
        speakers.push(speaker.expect("speaker"));
        cluster
            .apply_ok(&service_yaml(
                "default",
                node,
                &format!("  annotations: {{ferrolb.io/address-pool: {node}}}\n"),
                "",
            ))
            .expect("service");
    }
    let _operator = cluster.operator("solo", &[]).expect("operator");
    for (i, node) in ["node-a", "node-b"].into_iter().enumerate() {
        let ip = format!("192.168.71.{}", 100 + i);
        let mac = until(
            &format!("{ip} to be answered"),
            Duration::from_secs(40),
            || {
                let out = client
                    .run(
                        "arping",
                        &["-c", "1", "-w", "1", "-i", &client.interface, &ip],
                    )
                    .ok()?;
                let said = String::from_utf8_lossy(&out.stdout).to_lowercase();
                MACS.iter().position(|m| said.contains(*m))
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", speakers[i].output()));
        assert_eq!(mac, i, "{ip} answered by {node}");
        let interfaces = cluster
            .kubectl(&[
                "get",
                "nodeannouncement",
                node,
                "-o",
                "jsonpath={.status.l2[0].interfaces}",
            ])
            .expect("status");
        assert_eq!(interfaces.trim(), "[\"eth0\"]", "{node}");
    }
}

/// A single-node cluster whose node carries
/// `node.kubernetes.io/exclude-from-external-load-balancers` (kind,
/// single-node kubeadm, Talos): the condition names the label and the flag;
/// with `--ignore-exclude-lb` the node announces.
#[tokio::test]
async fn a_single_excluded_node_is_explained_and_used_with_ignore_exclude_lb() {
    let _one = SERIAL.lock().await;
    let cluster = TestCluster::start().await.expect("cluster");
    let mut network = Network::new().expect("switch");
    let host = network
        .host("solo", MACS[0], &["192.168.72.11/24"])
        .expect("node");
    let client = network
        .host("cli", "02:00:00:00:07:99", &["192.168.72.2/24"])
        .expect("client");
    cluster.node("solo").expect("node");
    cluster
        .kubectl(&[
            "label",
            "node",
            "solo",
            "node.kubernetes.io/exclude-from-external-load-balancers=",
        ])
        .expect("label");
    host.accept_service_ip("192.168.72.100")
        .expect("service IP");
    cluster
        .apply_ok("apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: solo}\nspec: {addresses: [192.168.72.100/32]}\n---\napiVersion: ferrolb.io/v1alpha1\nkind: L2Advertisement\nmetadata: {name: solo}\nspec: {ipAddressPools: [solo]}\n")
        .expect("pool");
    let _speaker = cluster
        .speaker("solo", &host.namespace, &[])
        .expect("speaker");
    let operator = cluster.operator("solo", &[]).expect("operator");
    cluster
        .apply_ok(&service_yaml("default", "web", "", ""))
        .expect("service");
    let (status, reason, message) = until("NoEligibleNode", Duration::from_secs(30), || {
        cluster
            .service_condition("web", ANNOUNCED)
            .filter(|(_, r, _)| r == "NoEligibleNode")
    })
    .expect("the condition");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "NoEligibleNode")
    );
    assert!(
        message.contains("node.kubernetes.io/exclude-from-external-load-balancers")
            && message.contains("--ignore-exclude-lb"),
        "{message}"
    );
    drop(operator);
    let _operator = cluster
        .operator("solo-2", &["--ignore-exclude-lb"])
        .expect("operator");
    cluster
        .wait_announced("web", Duration::from_secs(60))
        .expect("Announced with --ignore-exclude-lb");
    let out = client
        .run(
            "arping",
            &[
                "-c",
                "2",
                "-w",
                "3",
                "-i",
                &client.interface,
                "192.168.72.100",
            ],
        )
        .expect("arping");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .to_lowercase()
            .contains(MACS[0])
    );
}

/// IPv6-only nodes: no IPv4 address anywhere on the node network. The
/// speakers probe each other over IPv6, are ready, and the standby takes the
/// IP over when the active speaker dies, answering NDP.
#[tokio::test]
async fn ipv6_only_nodes_are_ready_and_fail_over_fast() {
    let _one = SERIAL.lock().await;
    const V6: Addressing = Addressing {
        node: |i| format!("fd73::{}/64", 11 + i),
        client: "fd73::2/64",
        pool: "fd73::100-fd73::110",
        ip: "fd73::100",
        spec: "  ipFamilyPolicy: SingleStack\n  ipFamilies: [IPv6]\n",
    };
    let mut lab = Lab::start(&V6, |_| {}).await;
    let (active, standby) = until("fast failover armed", Duration::from_secs(60), || {
        let (a, s) = lab.roles()?;
        (lab.failover_state(s, a).as_deref() == Some("Armed")).then_some((a, s))
    })
    .unwrap_or_else(|e| panic!("{e}: {:#?}", lab.announcements()));
    for (i, speaker) in lab.speakers.iter().enumerate() {
        let speaker = speaker.as_ref().expect("speaker");
        until("the speaker to be ready", Duration::from_secs(20), || {
            speaker.ready().then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", NODES[i], speaker.output()));
    }
    let probe = lab.announcements()[standby]["status"]["probeAddress"].clone();
    assert!(
        probe.as_str().is_some_and(|p| p.starts_with("[fd73::")),
        "probes over IPv6: {probe}"
    );
    until(
        "NDP answered by the active node",
        Duration::from_secs(20),
        || (lab.answering() == vec![active]).then_some(()),
    )
    .expect("NDP");
    let killed = Instant::now();
    if let Some(p) = lab.speakers[active].take() {
        p.kill();
    }
    until("the standby to answer NDP", Duration::from_secs(20), || {
        (lab.first_answer() == Some(standby)).then_some(())
    })
    .expect("fast failover over IPv6");
    println!(
        "FIGURE IPv6-only nodes, active speaker killed: the standby answers NDP after {:?}",
        killed.elapsed()
    );
    let takeovers = lab.speakers[standby]
        .as_ref()
        .expect("standby speaker")
        .metric("ferrolb_speaker_failover_takeovers_total")
        .expect("metric");
    assert!(takeovers >= 1.0, "taken over by the fast path over IPv6");
    assert!(lab.operator.is_some());
}

/// Another load-balancer controller (k3s ServiceLB, MetalLB mid-migration)
/// writes `status.loadBalancer` of a Service ferrolb manages: the condition
/// names its field manager and how to stop it.
#[tokio::test]
async fn another_controller_writing_the_service_status_is_named() {
    let _one = SERIAL.lock().await;
    let cluster = TestCluster::start().await.expect("cluster");
    cluster
        .apply_ok("apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {addresses: [192.168.73.100-192.168.73.110]}\n")
        .expect("pool");
    let _operator = cluster.operator("solo", &[]).expect("operator");
    cluster
        .apply_ok(&service_yaml("default", "web", "", ""))
        .expect("service");
    cluster
        .kubectl(&[
            "wait",
            "--for=condition=ferrolb.io/IPAllocated",
            "svc/web",
            "--timeout=60s",
        ])
        .expect("allocated");
    let (_, reason, _) = cluster
        .service_condition("web", ANNOUNCED)
        .expect("Announced");
    assert_ne!(reason, "OtherController", "no other writer yet");
    // What klipper-lb does: node addresses into the ingress, as its own manager.
    cluster
        .kubectl(&[
            "patch",
            "svc",
            "web",
            "--subresource=status",
            "--type=merge",
            "--field-manager=svclb-controller",
            "-p",
            r#"{"status":{"loadBalancer":{"ingress":[{"ip":"10.0.0.5"}]}}}"#,
        ])
        .expect("second writer");
    let (status, _, message) = until("OtherController", Duration::from_secs(30), || {
        cluster
            .service_condition("web", ANNOUNCED)
            .filter(|(_, r, _)| r == "OtherController")
    })
    .expect("the condition names the other controller");
    assert_eq!(status, "False");
    assert!(
        message.contains("\"svclb-controller\"") && message.contains("--disable servicelb"),
        "{message}"
    );
    // ferrolb's address is back in the status.
    let ips = cluster.service_ips("web");
    assert!(
        ips.iter().all(|ip| ip.starts_with("192.168.73.")),
        "{ips:?}"
    );
}
