//! Chaos on the real-cluster tier [REAL, CHAOS, FAULTS, L2, BGP, FAILOVER]:
//! three kubelet nodes with ferrolb installed from `config/local`, FRR
//! peering with every node (BFD 300 ms × 3), and three Services in front of
//! a 4-replica echo Deployment: layer 2 with externalTrafficPolicy Cluster
//! (`echo`), layer 2 Local (`echo-local`) and BGP Local (`shop`, reached
//! through FRR). A client on the LAN sends each of them a request every
//! 20 ms all through a seeded schedule of faults (`ferrolb_e2e::chaos`),
//! and after each fault the cluster must come back whole. Checked:
//! - every Service keeps its IP;
//! - never two MACs answering for one IP (beyond a takeover's crossing);
//! - no BGP session of a node the fault did not hurt is reset;
//! - no request fails outside a fault's window, none fails at all for a
//!   fault of the control plane, and none of the others leaves a client
//!   without any answer for longer than the fault's bound;
//! - no ferrolb Pod restarts but those the fault killed.
//!
//! `FERROLB_CHAOS_SEED` replays a schedule (the run prints its seed; `make
//! test` runs seed 1: each kind of fault once); `FERROLB_CHAOS_FAULTS` sets
//! the number of faults, or `FERROLB_CHAOS_MINUTES` runs faults until that
//! time is up (a fresh seed unless one is given). Findings keep every
//! ferrolb Pod's log and the control plane's in `target/chaos/`. A clock
//! Packet loss is dropped by nft (`numgen random`) on the node's link: the
//! kernel here has no `sch_netem`, so added delay is not among the faults
//! either. A clock step is not among the faults: a network namespace has no clock of its
//! own (time namespaces offset only the monotonic and boot clocks), and
//! stepping the machine's clock steps every node at once; the no-clock
//! rules are proven in the operator's and the speaker's unit tests.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use ferrolb_e2e::chaos::{
    CROSSINGS_PER_WINDOW, Fault, KINDS, PodState, Request, Tally, Window, moves, schedule, tally,
    two_macs, unexplained,
};
use ferrolb_e2e::controlplane::workspace_root;
use ferrolb_e2e::image::TAG;
use ferrolb_e2e::probe::{Prober, Samples};
use ferrolb_e2e::routers::{Frr, Router, frr_config};
use ferrolb_e2e::tier::{ECHO, Real, bgp_objects, installed};
use ferrolb_e2e::wait::until;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const SERVICES: [&str; 3] = ["echo", "echo-local", "shop"];
const ROUTER_ASN: u32 = 64513;

/// Continues the apiserver when dropped, so a failing run leaves it running.
struct Frozen(i32);

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGCONT);
    }
}

/// What a fault was done to, and which Pods it may restart.
struct Done {
    target: String,
    /// A Pod (by name) or a node (by name) whose Pods may restart.
    killed_pod: Option<String>,
    crashed_node: Option<String>,
    /// The speaker whose restart the recovery waits for: (node, the start
    /// time of its container before the fault).
    speaker: Option<(String, Option<String>)>,
    /// The killed Pod whose new container the recovery waits for, with its
    /// container's start before.
    pod_back: Option<(String, Option<String>)>,
}

struct Chaos {
    real: Real,
    frr: Frr,
}

impl Chaos {
    fn node_name(&self, node: usize) -> String {
        self.real.cluster.nodes[node - 1].name.clone()
    }

    /// ferrolb's Pods.
    fn pods(&self) -> Vec<PodState> {
        let list = until("ferrolb's Pods", Duration::from_secs(120), || {
            let list = self.real.json(&["-n", "ferrolb-system", "get", "pods"]);
            list["items"].as_array().cloned()
        })
        .expect("the Pods");
        list.iter()
            .map(|p| PodState {
                name: p["metadata"]["name"].as_str().unwrap_or_default().into(),
                node: p["spec"]["nodeName"].as_str().unwrap_or_default().into(),
                restarts: p["status"]["containerStatuses"]
                    .as_array()
                    .map(|c| c.iter().filter_map(|c| c["restartCount"].as_u64()).sum())
                    .unwrap_or(0),
            })
            .collect()
    }

    /// A running, Ready Pod of `app` (on `node` when given) with its
    /// container's process: its name, UID and container start. Waits while
    /// none is (a Pod killed before may still be in the kubelet's back-off).
    fn pod_of(&self, app: &str, node: Option<&str>) -> (String, String, Option<String>) {
        let selector = format!("app.kubernetes.io/name={app}");
        let field = node.map(|n| format!("spec.nodeName={n}"));
        until(
            &format!("a running {app} Pod"),
            Duration::from_secs(330),
            || {
                let mut args = vec!["-n", "ferrolb-system", "get", "pods", "-l", &selector];
                if let Some(field) = &field {
                    args.extend(["--field-selector", field]);
                }
                let list = self.real.json(&args);
                // The Pod restarted least first: one killed again and again
                // would come back only after the kubelet's growing back-off
                // (up to 5 minutes), which says nothing about ferrolb.
                let mut pods: Vec<(u64, String, String)> = list["items"]
                    .as_array()?
                    .iter()
                    .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                    .map(|p| {
                        (
                            p["status"]["containerStatuses"][0]["restartCount"]
                                .as_u64()
                                .unwrap_or(0),
                            p["metadata"]["name"].as_str().unwrap_or_default().into(),
                            p["metadata"]["uid"].as_str().unwrap_or_default().into(),
                        )
                    })
                    .collect();
                pods.sort();
                pods.into_iter().find_map(|(_, name, uid)| {
                    let started = self.real.pod_started(&name)?;
                    let running = !self.real.cluster.pod_pids(&uid, app).is_empty();
                    running.then_some((name, uid, Some(started)))
                })
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", self.real.diagnose()))
    }

    /// SIGKILL to the container process of `binary` in Pod `uid`.
    fn kill_in_pod(&self, uid: &str, binary: &str) {
        let pids = self.real.cluster.pod_pids(uid, binary);
        assert!(!pids.is_empty(), "no {binary} process in Pod {uid}");
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// The connections FRR saw dropped, per node name.
    fn bgp_drops(&self) -> BTreeMap<String, u64> {
        // Every neighbor counted, or FRR asked again: a missed answer is not
        // a reset.
        let neighbors = until("FRR's neighbors", Duration::from_secs(30), || {
            let neighbors = self.frr.json("show bgp neighbors json").ok()?;
            let all = self
                .real
                .cluster
                .nodes
                .iter()
                .all(|n| neighbors[&n.ip]["connectionsDropped"].is_u64());
            all.then_some(neighbors)
        })
        .expect("FRR answers");
        self.real
            .cluster
            .nodes
            .iter()
            .map(|n| {
                (
                    n.name.clone(),
                    neighbors[&n.ip]["connectionsDropped"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }

    fn ips(&self) -> Vec<String> {
        SERVICES.iter().map(|s| self.real.service_ip(s)).collect()
    }

    fn inject(&self, fault: &Fault) -> Done {
        let mut done = Done {
            target: String::new(),
            killed_pod: None,
            crashed_node: None,
            speaker: None,
            pod_back: None,
        };
        let cluster = &self.real.cluster;
        match fault {
            Fault::NodeCrash { node, down } => {
                let name = self.node_name(*node);
                done.speaker = Some((name.clone(), self.real.speaker_started(&name)));
                cluster.crash(&name).expect("crash");
                std::thread::sleep(*down);
                cluster.restart(&name).expect("restart");
                done.crashed_node = Some(name.clone());
                done.target = name;
            }
            Fault::LinkFlap { node, down } => {
                let name = self.node_name(*node);
                cluster.set_link(&name, false).expect("link down");
                std::thread::sleep(*down);
                cluster.set_link(&name, true).expect("link up");
                done.target = name;
            }
            Fault::SpeakerKill { node } => {
                let name = self.node_name(*node);
                let (pod, uid, started) = self.pod_of("ferrolb-speaker", Some(&name));
                self.kill_in_pod(&uid, "ferrolb-speaker");
                done.pod_back = Some((pod.clone(), started));
                done.target = format!("{pod} on {name}");
                done.killed_pod = Some(pod);
            }
            Fault::LeaderKill => {
                let (leader, uid) = until("the leader running", Duration::from_secs(120), || {
                    let leader = self.real.leader();
                    let pod = self
                        .real
                        .json(&["-n", "ferrolb-system", "get", "pod", &leader]);
                    let uid = pod["metadata"]["uid"].as_str()?.to_string();
                    let running = !self
                        .real
                        .cluster
                        .pod_pids(&uid, "ferrolb-operator")
                        .is_empty();
                    running.then_some((leader, uid))
                })
                .expect("a running leader");
                done.pod_back = Some((leader.clone(), self.real.pod_started(&leader)));
                self.kill_in_pod(&uid, "ferrolb-operator");
                done.target = leader.clone();
                done.killed_pod = Some(leader);
            }
            Fault::WebhookKill => {
                let (pod, uid, started) = self.pod_of("ferrolb-webhook", None);
                self.kill_in_pod(&uid, "ferrolb-webhook");
                done.pod_back = Some((pod.clone(), started));
                done.target = pod.clone();
                done.killed_pod = Some(pod);
            }
            Fault::ApiserverFreeze { hold } => {
                let pid = cluster
                    .control_plane_pid("kube-apiserver")
                    .expect("apiserver");
                kill(Pid::from_raw(pid), Signal::SIGSTOP).expect("SIGSTOP");
                let frozen = Frozen(pid);
                std::thread::sleep(*hold);
                drop(frozen);
                done.target = format!("kube-apiserver pid {pid}");
            }
            Fault::ApiserverRestart => {
                cluster
                    .restart_control_plane("kube-apiserver", Signal::SIGTERM, Duration::ZERO)
                    .expect("apiserver restart");
                until(
                    "kube-apiserver ready again",
                    Duration::from_secs(120),
                    || {
                        let ready = cluster.kubectl_ok(&["get", "--raw", "/readyz"]).ok()?;
                        (ready.trim() == "ok").then_some(())
                    },
                )
                .expect("the apiserver back");
                done.target = "kube-apiserver".into();
            }
            Fault::EtcdRestart { down } => {
                cluster
                    .restart_control_plane("etcd", Signal::SIGKILL, *down)
                    .expect("etcd restart");
                done.target = "etcd".into();
            }
            Fault::FailoverDrop { node, hold } => {
                let name = self.node_name(*node);
                cluster
                    .node_firewall(
                        &name,
                        Some(&firewall("udp dport 7473 drop\n udp sport 7473 drop")),
                    )
                    .expect("nft");
                std::thread::sleep(*hold);
                cluster.node_firewall(&name, None).expect("nft");
                done.target = name;
            }
            Fault::PacketLoss {
                node,
                percent,
                hold,
            } => {
                let name = self.node_name(*node);
                let rule = format!("numgen random mod 100 < {percent} drop");
                cluster
                    .node_firewall(&name, Some(&firewall(&rule)))
                    .expect("nft");
                std::thread::sleep(*hold);
                cluster.node_firewall(&name, None).expect("nft");
                done.target = name;
            }
        }
        done
    }

    /// Waits until the cluster is whole again: every node and Pod Ready,
    /// both layer 2 IPs announced by one node with fast failover armed, and
    /// at FRR every session Established, BFD up, and `shop`'s route through
    /// exactly the nodes with a Ready echo Pod.
    fn recover(&self, done: &Done) {
        if let Some((node, before)) = &done.speaker {
            self.real.speaker_back(node, before.clone());
        }
        if let Some((pod, before)) = &done.pod_back {
            self.real.pod_back(pod, before.clone());
        }
        until("every node Ready", Duration::from_secs(180), || {
            let nodes = self.real.json(&["get", "nodes"]);
            nodes["items"]
                .as_array()?
                .iter()
                .all(|n| {
                    n["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
                .then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", self.real.diagnose()));
        for service in ["echo", "echo-local"] {
            self.real.settled(service);
        }
        let shop = format!("{}/32", self.real.service_ip("shop"));
        until("FRR whole again", Duration::from_secs(120), || {
            let pods = self.real.ready_pod_node_ips("app=echo");
            let sessions = self.real.cluster.nodes.iter().all(|n| {
                self.frr.neighbor_state(&n.ip).ok().as_deref() == Some("Established")
                    && self.frr.bfd_state(&n.ip).as_deref() == Some("up")
            });
            let routed = self
                .frr
                .route(&shop)
                .ok()
                .flatten()
                .is_some_and(|r| r.next_hops == pods);
            (sessions && routed).then_some(())
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}: {:?}\n{}\n{}",
                self.frr.route(&shop),
                self.frr.vtysh("show bgp summary").unwrap_or_default(),
                self.real.diagnose()
            )
        });
    }
}

/// An nft ruleset applying `rules` to every packet into, out of and through
/// the node's LAN link.
fn firewall(rules: &str) -> String {
    let mut text = String::from("table inet ferrolb-chaos {\n");
    for (chain, hook, side) in [
        ("in", "input", "iifname"),
        ("out", "output", "oifname"),
        ("fwd_in", "forward", "iifname"),
        ("fwd_out", "forward", "oifname"),
    ] {
        text.push_str(&format!(
            " chain {chain} {{\n  type filter hook {hook} priority -300; policy accept;\n"
        ));
        for rule in rules.lines() {
            text.push_str(&format!("  {side} \"eth0\" {}\n", rule.trim()));
        }
        text.push_str(" }\n");
    }
    text.push_str("}\n");
    text
}

/// One fault as it ran.
struct Ran {
    fault: Fault,
    target: String,
    window: Window,
    /// Until the next fault: the fault's own time, the recovery and the
    /// quiet stretch after it (the table counts over all of it).
    stretch: Duration,
    findings: Vec<String>,
}

fn requests(samples: &Samples, origin: Instant) -> Vec<Request> {
    let mut out: Vec<Request> = samples
        .tcp
        .iter()
        .map(|r| Request {
            at: r.at.saturating_duration_since(origin),
            ok: r.answer.is_some(),
        })
        .collect();
    out.sort_by_key(|r| r.at);
    out
}

/// Keeps what explains the findings in `target/chaos/`: every ferrolb Pod's
/// log (the previous container's too) and the control plane's.
fn keep_logs(chaos: &Chaos, root: &std::path::Path, run: Duration) {
    let dir = root.join("target/chaos");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("target/chaos");
    let since = format!("--since={}s", run.as_secs() + 120);
    let pods = chaos
        .real
        .cluster
        .kubectl_ok(&["-n", "ferrolb-system", "get", "pods", "-o", "name"])
        .unwrap_or_default();
    for pod in pods.lines() {
        for (suffix, previous) in [("", false), (".previous", true)] {
            let mut args = vec!["-n", "ferrolb-system", "logs", pod, since.as_str()];
            if previous {
                args.push("--previous");
            }
            if let Ok(out) = chaos.real.cluster.kubectl(&args) {
                let name = format!("{}{suffix}.log", pod.trim_start_matches("pod/"));
                let _ = std::fs::write(dir.join(name), &out.stdout);
            }
        }
    }
    for entry in std::fs::read_dir(chaos.real.cluster.dir.join("cp"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.file_name().to_string_lossy().contains(".log") {
            let _ = std::fs::copy(entry.path(), dir.join(entry.file_name()));
        }
    }
    // The nodes' own daemons: the kubelet's sandbox and container
    // collection, containerd's CNI calls and kube-proxy's syncs.
    for node in &chaos.real.cluster.nodes {
        for daemon in ["kubelet", "containerd", "kube-proxy"] {
            let from = node.dir.join(format!("{daemon}.log"));
            let _ = std::fs::copy(&from, dir.join(format!("{}-{daemon}.log", node.name)));
        }
    }
    println!("CHAOS logs kept in {}", dir.display());
}

fn setting(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_seeded_schedule_of_faults_keeps_every_service_serving_within_its_bounds() {
    let root = workspace_root();
    let minutes = setting("FERROLB_CHAOS_MINUTES");
    // The short run of `make test` replays one schedule (every kind once),
    // so a failure there is a change, not a new draw; a long run draws a
    // fresh one unless told.
    let seed = setting("FERROLB_CHAOS_SEED").unwrap_or_else(|| match minutes {
        None => 1,
        Some(_) => SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    });
    let count = setting("FERROLB_CHAOS_FAULTS")
        .map(|c| c as usize)
        .unwrap_or(if minutes.is_some() {
            10_000
        } else {
            KINDS.len()
        });
    let planned = schedule(seed, count, 3);
    println!("CHAOS seed {seed}: replay with FERROLB_CHAOS_SEED={seed}");
    for (i, fault) in planned
        .iter()
        .enumerate()
        .take(if minutes.is_some() { 0 } else { count })
    {
        println!("CHAOS schedule {:>3}. {fault}", i + 1);
    }

    let real = installed(&root, 3, "ferrolb-chaos-");
    let slot = real.cluster.slot;
    // The client reaches the BGP pool through the router.
    let frr = real.router(|neighbors| {
        format!(
            "{}bfd\n profile fast\n  transmit-interval 300\n  receive-interval 300\n !\n!\n",
            frr_config(
                ROUTER_ASN,
                &slot.host_ip(2),
                neighbors,
                &["bfd profile fast"],
                &[],
                true
            )
        )
    });
    let objects = format!(
        "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {{name: l2}}\nspec: {{addresses: [{l2_from}-{l2_to}]}}\n---\n\
         apiVersion: ferrolb.io/v1alpha1\nkind: L2Advertisement\nmetadata: {{name: l2}}\nspec: {{ipAddressPools: [l2]}}\n---\n\
         apiVersion: ferrolb.io/v1alpha1\nkind: BFDProfile\nmetadata: {{name: fast}}\nspec: {{receiveInterval: 300, transmitInterval: 300, detectMultiplier: 3}}\n---\n{bgp}",
        l2_from = slot.host_ip(200),
        l2_to = slot.host_ip(220),
        bgp = bgp_objects(slot, ", bfdProfile: fast"),
    );
    real.admit(&objects);
    real.apply(&ECHO.replace("TAG", TAG));
    let chaos = Chaos { real, frr };
    let none = Done {
        target: String::new(),
        killed_pod: None,
        crashed_node: None,
        speaker: None,
        pod_back: None,
    };
    chaos.recover(&none);
    let ips = chaos.ips();
    println!("CHAOS Services {SERVICES:?} at {ips:?}");

    let origin = Instant::now();
    let probers: Vec<Prober> = ips
        .iter()
        .map(|ip| Prober::start_every(&chaos.real.client, ip, 80, Duration::from_millis(20)))
        .collect();
    std::thread::sleep(Duration::from_secs(5));
    let deadline = minutes.map(|m| origin + Duration::from_secs(m * 60));
    let mut ran: Vec<Ran> = Vec::new();
    for (i, fault) in planned.iter().enumerate() {
        if deadline.is_some_and(|d| Instant::now() > d) {
            break;
        }
        let pods = chaos.pods();
        let drops = chaos.bgp_drops();
        let start = origin.elapsed();
        let done = chaos.inject(fault);
        let undone = origin.elapsed();
        chaos.recover(&done);
        println!(
            "CHAOS {:>3}. {fault} ({}) at {:.1}s: undone after {:.1}s, whole again after {:.1}s",
            i + 1,
            done.target,
            start.as_secs_f64(),
            (undone - start).as_secs_f64(),
            (origin.elapsed() - start).as_secs_f64()
        );
        // A quiet stretch the fault's window may not cover.
        std::thread::sleep(fault.tail() + Duration::from_secs(3));
        let mut findings = Vec::new();
        let now_ips = chaos.ips();
        if now_ips != ips {
            findings.push(format!("Service IPs changed: {ips:?} -> {now_ips:?}"));
        }
        let hurt = fault.hurts().map(|n| chaos.node_name(n));
        for (node, after) in chaos.bgp_drops() {
            let before = drops.get(&node).copied().unwrap_or(0);
            if after != before && hurt.as_deref() != Some(node.as_str()) {
                findings.push(format!(
                    "the BGP session of healthy {node} was reset ({before} -> {after} drops)"
                ));
            }
        }
        let allowed = |p: &PodState| {
            done.killed_pod.as_deref() == Some(p.name.as_str())
                || done.crashed_node.as_deref() == Some(p.node.as_str())
        };
        findings.extend(ferrolb_e2e::chaos::unexpected_restarts(
            &pods,
            &chaos.pods(),
            allowed,
        ));
        ran.push(Ran {
            fault: fault.clone(),
            target: done.target,
            window: Window {
                start,
                undone,
                tail: fault.tail(),
            },
            stretch: origin.elapsed(),
            findings,
        });
    }
    std::thread::sleep(Duration::from_secs(2));
    let end = origin.elapsed();
    let samples: Vec<Samples> = probers.into_iter().map(Prober::stop).collect();
    let seen: Vec<Vec<Request>> = samples.iter().map(|s| requests(s, origin)).collect();
    let answers: Vec<Vec<(Duration, String)>> = samples
        .iter()
        .map(|s| {
            s.arp
                .iter()
                .map(|(t, mac)| (t.saturating_duration_since(origin), mac.clone()))
                .collect()
        })
        .collect();

    // The table, one row per fault, and the findings.
    let mut violations = Vec::new();
    println!(
        "CHAOS {:<40} {:<34} {} moves (L2)",
        "fault",
        "target",
        SERVICES
            .iter()
            .map(|s| format!("{s:<24}"))
            .collect::<String>()
    );
    for (i, run) in ran.iter().enumerate() {
        let w = run.window;
        let tallies: Vec<Tally> = seen
            .iter()
            .map(|r| tally(r, w.start, run.stretch))
            .collect();
        let cells: String = tallies
            .iter()
            .map(|t| {
                format!(
                    "{:<24}",
                    format!("{}/{} gap {:.2}s", t.failed, t.sent, t.gap.as_secs_f64())
                )
            })
            .collect();
        let moved: Vec<usize> = answers
            .iter()
            .take(2)
            .map(|a| moves(a, w.start, run.stretch))
            .collect();
        println!(
            "CHAOS {:<40} {:<34} {cells} {moved:?}",
            format!("{:>3}. {}", i + 1, run.fault),
            run.target
        );
        let mut findings = run.findings.clone();
        for (service, t) in SERVICES.iter().zip(&tallies) {
            if run.fault.control_plane() && t.failed > 0 {
                findings.push(format!(
                    "{service}: {} requests failed in a fault of the control plane",
                    t.failed
                ));
            } else if t.gap > run.fault.gap() {
                findings.push(format!(
                    "{service}: {:.2}s without an answer, over the bound {:?}",
                    t.gap.as_secs_f64(),
                    run.fault.gap()
                ));
            }
        }
        for (service, answers) in SERVICES.iter().zip(&answers).take(2) {
            let crossings = two_macs(answers, w.start, w.end());
            if crossings > 0 {
                println!(
                    "CHAOS {}. {service}: {crossings} crossings of two MACs",
                    i + 1
                );
            }
            if crossings > CROSSINGS_PER_WINDOW {
                findings.push(format!(
                    "{service}: two MACs answered for its IP ({crossings} crossings)"
                ));
            }
        }
        for finding in findings {
            violations.push(format!("{}. {}: {finding}", i + 1, run.fault));
        }
    }
    let windows: Vec<Window> = ran.iter().map(|r| r.window).collect();
    for (service, requests) in SERVICES.iter().zip(&seen) {
        let whole = tally(requests, Duration::ZERO, end);
        let lost = unexplained(requests, &windows);
        println!(
            "CHAOS {service}: {} of {} requests failed over {:.0}s, {} outside every fault's window",
            whole.failed,
            whole.sent,
            end.as_secs_f64(),
            lost.len()
        );
        for at in &lost {
            let why = samples[SERVICES.iter().position(|s| s == service).unwrap_or(0)]
                .tcp
                .iter()
                .find(|r| r.at.saturating_duration_since(origin) == *at)
                .and_then(|r| r.error.clone())
                .unwrap_or_default();
            println!("CHAOS {service}: failed at {:.2}s: {why}", at.as_secs_f64());
        }
        if let Some(first) = lost.first() {
            violations.push(format!(
                "{service}: {} requests failed outside every fault's window, the first at {:.2}s",
                lost.len(),
                first.as_secs_f64()
            ));
        }
    }
    for (service, answers) in SERVICES.iter().zip(&answers).take(2) {
        let mut quiet = Vec::new();
        let mut from = Duration::ZERO;
        for w in &windows {
            quiet.push((from, w.start));
            from = w.end();
        }
        quiet.push((from, end));
        let crossings: usize = quiet
            .iter()
            .map(|(from, to)| two_macs(answers, *from, *to))
            .sum();
        if crossings > 0 {
            violations.push(format!(
                "{service}: two MACs answered for its IP outside every fault ({crossings} crossings)"
            ));
        }
    }
    println!(
        "CHAOS seed {seed}: {} faults in {:.0}s, {} findings",
        ran.len(),
        end.as_secs_f64(),
        violations.len()
    );
    keep_logs(&chaos, &root, end);
    assert!(
        violations.is_empty(),
        "seed {seed} (replay: FERROLB_CHAOS_SEED={seed}):\n{}\n{}",
        violations.join("\n"),
        chaos.real.logs(
            |p| p.contains("operator") || p.contains("speaker"),
            "--tail=40"
        )
    );
}
