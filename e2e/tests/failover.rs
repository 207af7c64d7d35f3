//! Failover as a client sees it [FAILOVER, L2, E2E]: kube-apiserver, the
//! operator, three speakers in node namespaces with HTTP stand-ins, and a
//! client sending an ARP request every 10 ms and a TCP request every 50 ms to
//! the Service IP while, in turn: (a) the active speaker is SIGKILLed; (b) the
//! active node's link is cut; (c) every speaker is restarted one by one with
//! SIGTERM; (d) the operator and the active speaker are killed together. Each
//! scenario prints the median and longest time without an answer and the
//! failed requests; the test checks only that each ends with exactly one node
//! answering. `FERROLB_FAILOVER_RUNS` sets the runs per scenario (default 10),
//! `FERROLB_FAILOVER_SCENARIOS` (such as `Kill,Rolling`) which ones run.

use std::time::{Duration, Instant};

use ferrolb_e2e::cluster::{TestCluster, service_yaml};
use ferrolb_e2e::lab::{NODES, ThreeNodes, mac};
use ferrolb_e2e::netns::{Host, Network};
use ferrolb_e2e::probe::{Outage, Prober, median_and_max};
use ferrolb_e2e::process::Process;
use ferrolb_e2e::wait::until;
use serde_json::Value;

const IP: &str = "192.168.60.100";

struct Setup {
    cluster: TestCluster,
    speakers: Vec<Option<Process>>,
    operator: Option<Process>,
    client: Host,
    hosts: Vec<Host>,
    _servers: Vec<std::process::Child>,
    _network: Network,
}

impl Drop for Setup {
    fn drop(&mut self) {
        for server in &mut self._servers {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

impl Setup {
    fn start_speaker(&mut self, i: usize) {
        self.speakers[i] = Some(
            self.cluster
                .speaker(NODES[i], &self.hosts[i].namespace, &[])
                .expect("speaker"),
        );
    }

    fn start_operator(&mut self) {
        self.operator = Some(self.cluster.operator("solo", &[]).expect("operator"));
    }

    /// The settled state: one node active for the IP and answering, one
    /// standing by with the active node's probe address, no takeover
    /// pending. Returns (active, standby).
    fn settled(&self) -> Option<(usize, usize)> {
        let text = self
            .cluster
            .kubectl(&["get", "nodeannouncements", "-o", "json"])
            .ok()?;
        let list: Value = serde_json::from_str(&text).ok()?;
        let mut active = None;
        let mut standby = None;
        for item in list["items"].as_array()? {
            let node = NODES.iter().position(|n| item["metadata"]["name"] == *n)?;
            for entry in item["spec"]["l2"].as_array().cloned().unwrap_or_default() {
                if !ferrolb_e2e::lab::holds(&entry["ips"], IP) {
                    continue;
                }
                match entry["role"].as_str() {
                    Some("active") if entry["probe"].is_string() => active = Some(node),
                    // Its fast path runs: it reports a probe address of its own.
                    Some("standby")
                        if entry["probe"].is_string()
                            && item["status"]["probeAddress"].is_string() =>
                    {
                        standby = Some(node)
                    }
                    _ => {}
                }
            }
            let generation = &item["metadata"]["generation"];
            if item["status"]["observedGeneration"] != *generation {
                return None;
            }
            for state in item["status"]["l2"].as_array().cloned().unwrap_or_default() {
                if state["state"] == "TakenOver" {
                    return None;
                }
                if ferrolb_e2e::lab::holds(&state["ips"], IP)
                    && state["state"] == "Announcing"
                    && Some(node) != active
                {
                    return None;
                }
            }
        }
        let active = active?;
        let standby = standby?;
        let status = list["items"]
            .as_array()?
            .iter()
            .find(|i| i["metadata"]["name"] == NODES[active])?;
        let answering = status["status"]["l2"]
            .as_array()?
            .iter()
            .any(|s| ferrolb_e2e::lab::holds(&s["ips"], IP) && s["state"] == "Announcing");
        answering.then_some((active, standby))
    }

    fn wait_settled(&self, what: &str) -> (usize, usize) {
        until(
            &format!("the IP to settle ({what})"),
            Duration::from_secs(60),
            || self.settled(),
        )
        .unwrap_or_else(|e| {
            panic!(
                "{e}\n{}",
                self.cluster
                    .kubectl(&["get", "nodeannouncements", "-o", "yaml"])
                    .unwrap_or_default()
            )
        })
    }

    /// Exactly one MAC answers ARP for the IP.
    fn one_node_answers(&self) -> bool {
        let out = self
            .client
            .run(
                "arping",
                &["-d", "-c", "5", "-i", &self.client.interface, IP],
            )
            .expect("arping -d");
        let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
        out.status.success() && (0..3).filter(|i| text.contains(&mac(3, *i))).count() == 1
    }
}

async fn setup() -> Setup {
    let lab = ThreeNodes::start("192.168.60", 3, "192.168.60.100-192.168.60.110")
        .await
        .expect("lab");
    let mut servers = Vec::new();
    for (i, host) in lab.hosts.iter().enumerate() {
        host.accept_service_ip(IP).expect("service IP");
        servers.push(host.http_stand_in(NODES[i]).expect("http"));
    }
    let ThreeNodes {
        cluster,
        hosts,
        client,
        network,
    } = lab;
    let mut setup = Setup {
        cluster,
        speakers: vec![None, None, None],
        operator: None,
        client,
        hosts,
        _servers: servers,
        _network: network,
    };
    for i in 0..3 {
        setup.start_speaker(i);
    }
    setup.start_operator();
    setup
        .cluster
        .apply_ok(&service_yaml(
            "default",
            "web",
            &format!("  annotations: {{ferrolb.io/loadBalancerIPs: '{IP}'}}\n"),
            "",
        ))
        .expect("service");
    setup.wait_settled("first");
    setup
}

#[derive(Clone, Copy, Debug)]
enum Scenario {
    Kill,
    LinkCut,
    Rolling,
    OperatorAndActive,
}

/// Waits until a MAC other than `old` answers ARP in the samples.
fn new_mac_answers(prober: &Prober, old: &str) {
    let _ = until("another node to answer", Duration::from_secs(20), || {
        let samples = prober.samples();
        samples.last_mac().filter(|m| m != old).map(|_| ())
    });
}

fn run(s: &mut Setup, scenario: Scenario) -> Outage {
    let (active, _) = s.wait_settled("before a run");
    let prober = Prober::start(&s.client, IP, 8080);
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    match scenario {
        Scenario::Kill => {
            if let Some(p) = s.speakers[active].take() {
                p.kill();
            }
            new_mac_answers(&prober, &mac(3, active));
        }
        Scenario::LinkCut => {
            s.hosts[active]
                .run("ip", &["link", "set", "dev", "eth0", "down"])
                .expect("link down");
            new_mac_answers(&prober, &mac(3, active));
        }
        Scenario::OperatorAndActive => {
            if let Some(p) = s.operator.take() {
                p.kill();
            }
            if let Some(p) = s.speakers[active].take() {
                p.kill();
            }
            new_mac_answers(&prober, &mac(3, active));
        }
        Scenario::Rolling => {
            for i in 0..3 {
                if let Some(p) = s.speakers[i].take() {
                    p.signal(nix::sys::signal::Signal::SIGTERM);
                    let mut p = p;
                    let _ = until("the speaker to stop", Duration::from_secs(10), || {
                        (!p.running()).then_some(())
                    });
                }
                s.start_speaker(i);
                s.wait_settled("rolling restart");
            }
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let end = Instant::now();
    let samples = prober.stop();
    let outage = samples.outage(start, end);
    if std::env::var("FERROLB_DEBUG").is_ok() {
        let wall = std::time::SystemTime::now();
        let mut last = start;
        for (t, mac) in samples.arp.iter().filter(|(t, _)| *t >= start) {
            if *t - last > Duration::from_millis(100) {
                let at = wall - (end - last);
                println!(
                    "ARP gap {:?} from {:?} (unix ms {}), then {mac}",
                    *t - last,
                    last - start,
                    at.duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis()
                );
            }
            last = *t;
        }
    }
    // Put things back.
    match scenario {
        Scenario::Kill => s.start_speaker(active),
        Scenario::LinkCut => {
            s.hosts[active]
                .run("ip", &["link", "set", "dev", "eth0", "up"])
                .expect("link up");
        }
        Scenario::OperatorAndActive => {
            s.start_operator();
            s.start_speaker(active);
        }
        Scenario::Rolling => {}
    }
    s.wait_settled("after a run");
    outage
}

#[tokio::test]
async fn failover_scenarios_print_figures_and_end_with_one_node_answering() {
    let runs: usize = std::env::var("FERROLB_FAILOVER_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let mut s = setup().await;
    assert!(s.one_node_answers(), "one node answers at the start");
    for speaker in s.speakers.iter().flatten() {
        assert!(
            speaker.ready(),
            "a speaker that applied its announcement with the fast path on is ready"
        );
    }
    let only = std::env::var("FERROLB_FAILOVER_SCENARIOS").unwrap_or_default();
    for scenario in [
        Scenario::Kill,
        Scenario::LinkCut,
        Scenario::Rolling,
        Scenario::OperatorAndActive,
    ] {
        if !only.is_empty() && !only.split(',').any(|o| o == format!("{scenario:?}")) {
            continue;
        }
        let outages: Vec<Outage> = (0..runs).map(|_| run(&mut s, scenario)).collect();
        let (arp_median, arp_max) = median_and_max(outages.iter().map(|o| o.arp_gap).collect());
        let (tcp_median, tcp_max) = median_and_max(outages.iter().map(|o| o.tcp_gap).collect());
        let failed: usize = outages.iter().map(|o| o.failed).sum();
        let sent: usize = outages.iter().map(|o| o.sent).sum();
        println!(
            "FIGURE {scenario:?} ({runs} runs): longest time without an ARP answer median {arp_median:?} max {arp_max:?}; without a TCP answer median {tcp_median:?} max {tcp_max:?}; TCP requests failed {failed} of {sent}"
        );
        assert!(
            s.one_node_answers(),
            "{scenario:?}: exactly one node answers at the end"
        );
    }
}

/// Whether, in the NodeAnnouncements `latest` (by node), some node stands by
/// for [`IP`] towards `active` and reports in its status that it hears it.
fn armed_standby(latest: &std::collections::BTreeMap<String, Value>, active: &str) -> bool {
    latest.iter().any(|(node, item)| {
        let stands_by = item["spec"]["l2"].as_array().is_some_and(|groups| {
            groups.iter().any(|g| {
                g["role"] == "standby"
                    && g["standbyFor"] == active
                    && ferrolb_e2e::lab::holds(&g["ips"], IP)
            })
        });
        let hears = item["status"]["failover"].as_array().is_some_and(|f| {
            f.iter()
                .any(|f| f["node"] == active && f["state"] == "Armed")
        });
        stands_by && hears && node != active
    })
}

/// Make-before-break (issue 22 point 5): the standby's node is excluded
/// while its speaker is fine. Every version of every NodeAnnouncement the
/// apiserver held meanwhile (read from a watch, in order) shows a node
/// standing by for the IP that hears the active node: the new standby arms
/// first, and the old one lets go only then. Before, both specs changed in
/// one pass and the IP was left with a standby that had heard nothing.
#[tokio::test]
async fn a_replaced_standby_lets_go_only_once_the_new_one_hears_the_active_node() {
    let s = setup().await;
    let (active, standby) = s.wait_settled("start");
    let third = 3 - active - standby;
    let mut watch = s
        .cluster
        .plane
        .kubectl_command()
        .args(["get", "nodeannouncements", "--watch", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl --watch");
    let stdout = watch.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(stdout), &mut text);
        text
    });
    std::thread::sleep(Duration::from_secs(1));
    s.cluster
        .kubectl(&[
            "label",
            "node",
            NODES[standby],
            "node.kubernetes.io/exclude-from-external-load-balancers=",
        ])
        .expect("label");
    let moved = until(
        "the third node to stand by",
        Duration::from_secs(30),
        || {
            let (now_active, now_standby) = s.settled()?;
            (now_active == active && now_standby == third).then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    let _ = watch.kill();
    let _ = watch.wait();
    let text = reader.join().expect("reader");
    moved.unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            s.cluster
                .kubectl(&[
                    "get",
                    "nodeannouncements",
                    "-o",
                    "custom-columns=NODE:.metadata.name,SPEC:.spec.l2,FAILOVER:.status.failover",
                ])
                .unwrap_or_default()
                + &s.cluster
                    .kubectl(&["get", "nodes", "--show-labels"])
                    .unwrap_or_default()
                + &s.operator.as_ref().map(|o| o.output()).unwrap_or_default()
        )
    });
    let mut latest = std::collections::BTreeMap::new();
    let mut versions = 0;
    let mut arming_seen = false;
    for item in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
        let item = item.expect("a NodeAnnouncement");
        let node = item["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        arming_seen |= node == NODES[third]
            && item["spec"]["l2"]
                .as_array()
                .is_some_and(|g| g.iter().any(|g| g["arming"] == true));
        latest.insert(node, item);
        versions += 1;
        if latest.len() == 3 {
            assert!(
                armed_standby(&latest, NODES[active]),
                "version {versions}: no node standing by for {IP} hears {}:\n{latest:#?}",
                NODES[active]
            );
        }
    }
    println!(
        "{versions} NodeAnnouncement versions watched, every one with an armed standby; {} armed first",
        NODES[third]
    );
    assert!(arming_seen, "{} first only armed", NODES[third]);
}
