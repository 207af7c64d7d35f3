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

#[tokio::test]
async fn a_frozen_apiserver_withdraws_no_route_during_the_outage_or_after_it() {
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
    let _speakers: Vec<Process> = NODES
        .iter()
        .zip(&hosts)
        .map(|(n, h)| cluster.speaker(n, &h.namespace, &[]).expect("speaker"))
        .collect();
    let operator = cluster.operator("solo", &[]).expect("operator");
    cluster
        .apply_ok(&service_yaml("default", "shop", "", ""))
        .expect("service");
    let ip = until("an IP", Duration::from_secs(60), || {
        cluster.service_ip("shop")
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let prefix = format!("{ip}/32");
    until("both next hops at FRR", Duration::from_secs(60), || {
        (next_hops(&frr, &prefix) == 2).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", operator.output()));
    // Settled: a few renewals seen.
    std::thread::sleep(Duration::from_secs(6));

    let pid = cluster.plane.pid("kube-apiserver").expect("apiserver pid");
    let start = Instant::now();
    let frozen = Frozen::freeze(pid);
    let during = watch_route(&frr, &prefix, 2, Duration::from_secs(30), start);
    drop(frozen);
    let thawed = start.elapsed();
    // The first passes after the outage are where routes used to go.
    let after = watch_route(&frr, &prefix, 2, Duration::from_secs(25), start);
    println!(
        "FIGURE apiserver frozen 30 s: next hops short during the outage {}, after it {} (thawed at {:.1}s)",
        during.len(),
        after.len(),
        thawed.as_secs_f64()
    );
    assert!(
        during.is_empty() && after.is_empty(),
        "FRR lost next hops of {prefix}: during {during:?}, after {after:?}\noperator:\n{}",
        operator.output()
    );
    // The control plane is back and still right: both nodes carry the session.
    let sessions = until(
        "both NodeAnnouncements Established",
        Duration::from_secs(30),
        || {
            let out = cluster
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
