//! The data plane outlives the control plane [FAULTS, BGP, E2E]: kube-apiserver,
//! the operator and two speakers peering from node namespaces with FRR in a
//! router namespace. The apiserver is frozen (SIGSTOP) for 30 s, as a
//! control-plane reboot or a partition looks to clients; FRR must keep both
//! next hops of the Service all through the outage and after it: no
//! speaker counts as dead for the operator's own lack of news.

use std::time::{Duration, Instant};

use ferrolb_e2e::cluster::{TestCluster, service_yaml};
use ferrolb_e2e::netns::{Host, Network};
use ferrolb_e2e::process::Process;
use ferrolb_e2e::routers::{Frr, Router, frr_config};
use ferrolb_e2e::wait::until;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const NODES: [&str; 2] = ["node-a", "node-b"];

fn node_ip(i: usize) -> String {
    format!("192.168.51.{}", 11 + i)
}

/// Thaws the apiserver when dropped, so a failing test leaves it running.
struct Frozen(u32);

impl Frozen {
    fn freeze(pid: u32) -> Frozen {
        kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).expect("SIGSTOP");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGCONT);
    }
}

/// How many next hops FRR has for `prefix` now.
fn next_hops(frr: &Frr, prefix: &str) -> usize {
    frr.route(prefix)
        .ok()
        .flatten()
        .map_or(0, |r| r.next_hops.len())
}

/// Watches FRR's route for `prefix` for `span`: the times (since `from`)
/// at which it had fewer than `want` next hops.
fn watch_route(frr: &Frr, prefix: &str, want: usize, span: Duration, from: Instant) -> Vec<String> {
    let end = Instant::now() + span;
    let mut short = Vec::new();
    while Instant::now() < end {
        let hops = next_hops(frr, prefix);
        if hops < want {
            short.push(format!("{:.1}s: {hops}", from.elapsed().as_secs_f64()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    short
}

/// Two nodes peering with FRR over BGP and one Service announced from both.
struct Lab {
    cluster: TestCluster,
    frr: Frr,
    prefix: String,
    _network: Network,
    _hosts: Vec<Host>,
    _speakers: Vec<Process>,
}

/// The lab with operator replicas named `operators` running, once FRR has
/// both next hops of the Service and a few renewals were seen.
async fn lab(operators: &[&str]) -> (Lab, Vec<Process>) {
    let cluster = TestCluster::start().await.expect("cluster");
    let mut network = Network::new().expect("switch");
    let router_host = network
        .host("rtr", "02:00:00:00:05:01", &["192.168.51.1/24"])
        .expect("router");
    let hosts: Vec<Host> = (0..NODES.len())
        .map(|i| {
            network
                .host(
                    NODES[i],
                    &format!("02:00:00:00:05:1{i}"),
                    &[&format!("{}/24", node_ip(i))],
                )
                .expect("node")
        })
        .collect();
    let neighbors: Vec<(String, u32)> = (0..NODES.len()).map(|i| (node_ip(i), 64512)).collect();
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
            "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: bgp}\nspec: {addresses: [172.31.0.0/24]}\n---\n\
             apiVersion: ferrolb.io/v1alpha1\nkind: BGPPeer\nmetadata: {name: router}\nspec:\n  myASN: 64512\n  peerASN: 64500\n  peerAddress: 192.168.51.1\n  connectTime: 2s\n---\n\
             apiVersion: ferrolb.io/v1alpha1\nkind: BGPAdvertisement\nmetadata: {name: bgp}\nspec: {ipAddressPools: [bgp]}\n",
        )
        .expect("config");
    let speakers: Vec<Process> = NODES
        .iter()
        .zip(&hosts)
        .map(|(n, h)| cluster.speaker(n, &h.namespace, &[]).expect("speaker"))
        .collect();
    let replicas: Vec<Process> = operators
        .iter()
        .map(|name| cluster.operator(name, &[]).expect("operator"))
        .collect();
    let logs = || {
        replicas
            .iter()
            .map(Process::output)
            .collect::<Vec<_>>()
            .join("\n")
    };
    cluster
        .apply_ok(&service_yaml("default", "shop", "", ""))
        .expect("service");
    let ip = until("an IP", Duration::from_secs(60), || {
        cluster.service_ip("shop")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    let prefix = format!("{ip}/32");
    until("both next hops at FRR", Duration::from_secs(60), || {
        (next_hops(&frr, &prefix) == 2).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    // Settled: a few renewals seen.
    std::thread::sleep(Duration::from_secs(6));
    let lab = Lab {
        cluster,
        frr,
        prefix,
        _network: network,
        _hosts: hosts,
        _speakers: speakers,
    };
    (lab, replicas)
}

impl Lab {
    /// Waits until both NodeAnnouncements show the session Established: the
    /// control plane is back and still right.
    fn both_established(&self) {
        let sessions = until(
            "both NodeAnnouncements Established",
            Duration::from_secs(30),
            || {
                let out = self
                    .cluster
                    .kubectl(&[
                        "get",
                        "nodeannouncements",
                        "-o",
                        "jsonpath={.items[*].status.bgp[*].state}",
                    ])
                    .ok()?;
                (out.split_whitespace()
                    .filter(|s| *s == "Established")
                    .count()
                    == 2)
                    .then_some(out)
            },
        );
        assert!(sessions.is_ok(), "{sessions:?}");
    }
}

#[tokio::test]
async fn a_frozen_apiserver_withdraws_no_route_during_the_outage_or_after_it() {
    let (lab, operators) = lab(&["solo"]).await;
    let operator = &operators[0];
    let pid = lab
        .cluster
        .plane
        .pid("kube-apiserver")
        .expect("apiserver pid");
    let start = Instant::now();
    let frozen = Frozen::freeze(pid);
    let during = watch_route(&lab.frr, &lab.prefix, 2, Duration::from_secs(30), start);
    drop(frozen);
    let thawed = start.elapsed();
    // The first passes after the outage are where routes used to go.
    let after = watch_route(&lab.frr, &lab.prefix, 2, Duration::from_secs(25), start);
    println!(
        "FIGURE apiserver frozen 30 s: next hops short during the outage {}, after it {} (thawed at {:.1}s)",
        during.len(),
        after.len(),
        thawed.as_secs_f64()
    );
    assert!(
        during.is_empty() && after.is_empty(),
        "FRR lost next hops of {}: during {during:?}, after {after:?}\noperator:\n{}",
        lab.prefix,
        operator.output()
    );
    lab.both_established();
}

/// What a chaos run found: kube-apiserver restarted (down, so every watch
/// fails with connection refused and retries), the leader's term ran out
/// meanwhile, and the other replica, elected when the apiserver was back,
/// expired every speaker and withdrew every route: it had counted its
/// Lease watch's errors as news, so the grace after the outage began during
/// it and ended before any speaker could renew. Here the leader is killed
/// during a 30 s outage, so the standby is the one that takes over.
#[tokio::test]
async fn a_leader_change_across_an_apiserver_restart_withdraws_no_route() {
    let (mut lab, mut operators) = lab(&["one", "two"]).await;
    let holder = |lab: &Lab| {
        lab.cluster
            .kubectl(&[
                "-n",
                "ferrolb-system",
                "get",
                "lease",
                ferrolb_api::constants::LEADER_LEASE,
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ])
            .unwrap_or_default()
    };
    let leader = holder(&lab);
    let index = ["one", "two"]
        .iter()
        .position(|n| *n == leader)
        .unwrap_or_else(|| panic!("the leader is {leader:?}"));
    let standby = operators.remove(1 - index);
    let killed = operators.remove(0);
    let start = Instant::now();
    let (frr, prefix, plane) = (&lab.frr, &lab.prefix, &mut lab.cluster.plane);
    let (short, back) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| watch_route(frr, prefix, 2, Duration::from_secs(75), start));
        std::thread::sleep(Duration::from_secs(2));
        // Down for 30 s; the leader dies 10 s in.
        scope.spawn(move || {
            std::thread::sleep(Duration::from_secs(10));
            killed.kill();
        });
        plane
            .restart_apiserver(Duration::from_secs(30))
            .expect("apiserver restart");
        let back = start.elapsed();
        (watcher.join().expect("watch"), back)
    });
    let now_leading = holder(&lab);
    println!(
        "FIGURE apiserver down 30 s, leader killed meanwhile: next hops short {} (back at {:.1}s, leader now {now_leading})",
        short.len(),
        back.as_secs_f64()
    );
    assert!(
        short.is_empty(),
        "FRR lost next hops of {}: {short:?}\nthe new leader:\n{}",
        lab.prefix,
        standby.output()
    );
    let other = ["one", "two"][1 - index];
    assert_eq!(now_leading, other, "the standby took over");
    lab.both_established();
}

/// A NodeAnnouncement whose status passes the CRD's schema but not the
/// operator's types (an IP written `aa`: a newer or compromised speaker) is
/// read without its status, counted and reported in a Warning Event on the
/// object; it used to fail the whole initial list, so the operator never
/// passed at all.
#[tokio::test]
async fn an_unreadable_status_is_skipped_and_counted_and_stalls_nothing() {
    let cluster = TestCluster::start().await.expect("cluster");
    cluster.node("node-a").expect("node");
    cluster
        .apply_ok("apiVersion: ferrolb.io/v1alpha1\nkind: NodeAnnouncement\nmetadata: {name: node-a}\nspec: {}\n")
        .expect("NodeAnnouncement");
    let status = cluster
        .apply_with(
            "apiVersion: ferrolb.io/v1alpha1\nkind: NodeAnnouncement\nmetadata: {name: node-a}\nstatus:\n  l2: [{state: TakenOver, takenFrom: node-b, ips: [aa]}]\n",
            &["--server-side", "--subresource=status", "--field-manager=ferrolb-speaker"],
        )
        .expect("kubectl");
    assert!(
        status.status.success(),
        "the schema lets it through: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let operator = cluster.operator("solo", &[]).expect("operator");
    cluster
        .apply_ok(&format!(
            "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {{name: main}}\nspec: {{addresses: [172.31.1.0/24]}}\n---\n{}",
            service_yaml("default", "web", "", "")
        ))
        .expect("pool and Service");
    let ip = until("an IP for web", Duration::from_secs(60), || {
        cluster.service_ip("web")
    });
    assert!(ip.is_ok(), "{ip:?}\n{}", operator.output());
    let counted = operator
        .metric("ferrolb_unreadable_objects_total{kind=\"NodeAnnouncement\"}")
        .expect("the metric");
    assert!(counted >= 1.0, "{counted}");
    assert!(
        operator.output().contains("object read without its status"),
        "{}",
        operator.output()
    );
    // And where users look: a Warning Event on the object, naming what was
    // left out and why.
    let event = until("an Unreadable event", Duration::from_secs(30), || {
        let out = cluster
            .kubectl(&[
                "get",
                "events",
                "-A",
                "--field-selector",
                "reason=Unreadable,involvedObject.name=node-a",
                "-o",
                "jsonpath={range .items[*]}{.type} {.involvedObject.kind}: {.message}{\"\\n\"}{end}",
            ])
            .ok()?;
        (!out.trim().is_empty()).then_some(out)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", operator.output()));
    println!("{event}");
    assert!(
        event.starts_with("Warning NodeAnnouncement: ferrolb could not read this NodeAnnouncement")
            && event.contains("status was left out"),
        "{event}"
    );
}
