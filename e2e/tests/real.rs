//! The real-cluster tier [REAL, DEPLOY, RBAC, L2, FAILOVER, WEBHOOK]: three
//! kubelet nodes (containerd, kube-proxy in iptables mode, CNI bridge) and
//! ferrolb installed as users install it, `kubectl apply -k config/local`
//! (config/default with the image built here): two operator replicas with
//! leader election, the webhook behind its Service with its self-managed
//! certificate, the speaker DaemonSet — each binary with only its own
//! ServiceAccount, so RBAC is proven by use. A 4-replica echo Deployment
//! sits behind two layer 2 Services (externalTrafficPolicy Cluster and
//! Local), and a client on the nodes' LAN sends a request every 20 ms through
//! the Service IP during each scenario. Figures are printed, not asserted,
//! except for planned operations (rolling update, leader change, drain):
//! nothing lost, but a request open when one moves the IP. Then BGP: FRR on the nodes' LAN peers with every node, and a
//! Service with externalTrafficPolicy Local is routed only to the nodes with
//! an echo Pod, following the Pods when they move. `FERROLB_REAL_RUNS` sets the runs of the failure scenarios
//! (default 2).

use std::time::{Duration, Instant};

use ferrolb_e2e::controlplane::workspace_root;
use ferrolb_e2e::image::TAG;
use ferrolb_e2e::probe::{Prober, median_and_max};
use ferrolb_e2e::routers::{Router, frr_config};
use ferrolb_e2e::tier::{ECHO, Real, bgp_objects, installed};
use ferrolb_e2e::wait::until;

/// What a client saw during one scenario.
#[derive(Debug)]
struct Seen {
    /// From the event to the first ARP answer from another node (None: no
    /// other node had to answer).
    gap: Option<Duration>,
    /// Longest time without a successful request.
    tcp_gap: Duration,
    /// Requests failed after another node answered (or over the whole
    /// window when none had to), and sent.
    failed_after: usize,
    failed: usize,
    sent: usize,
}

/// Probes `ip` from the client while `act` runs, then `settle` more.
fn measure(real: &Real, ip: &str, old_mac: &str, settle: Duration, act: impl FnOnce()) -> Seen {
    let prober = Prober::start_every(&real.client, ip, 80, Duration::from_millis(20));
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    act();
    std::thread::sleep(settle);
    let end = Instant::now();
    let samples = prober.stop();
    let outage = samples.outage(start, end);
    let moved = samples.first_other_mac(old_mac, start);
    let (failed_after, _) = samples.failed_between(moved.unwrap_or(start), end);
    Seen {
        gap: moved.map(|t| t - start),
        tcp_gap: outage.tcp_gap,
        failed_after,
        failed: outage.failed,
        sent: outage.sent,
    }
}

fn report(what: &str, seen: &[Seen]) {
    let gaps: Vec<Duration> = seen.iter().filter_map(|s| s.gap).collect();
    let (gap_median, gap_max) = median_and_max(gaps.clone());
    let (tcp_median, tcp_max) = median_and_max(seen.iter().map(|s| s.tcp_gap).collect());
    let failed: usize = seen.iter().map(|s| s.failed).sum();
    let after: usize = seen.iter().map(|s| s.failed_after).sum();
    let sent: usize = seen.iter().map(|s| s.sent).sum();
    println!(
        "FIGURE REAL {what} ({} runs): announcement gap median {gap_median:?} max {gap_max:?} ({} of {} runs moved the IP); longest without an answer median {tcp_median:?} max {tcp_max:?}; requests failed {failed} of {sent}, {after} of them after another node answered",
        seen.len(),
        gaps.len(),
        seen.len()
    );
}

/// For a failover much slower than the fast path: what each speaker
/// logged over the last `seconds` (printed, never asserted: a figure).
fn explain_slow(real: &Real, what: &str, seen: &Seen, seconds: u32) {
    if seen.gap.is_none_or(|gap| gap < Duration::from_secs(2)) {
        return;
    }
    println!(
        "SLOW {what}: {seen:?}\n{}",
        real.logs(
            |pod| pod.contains("speaker"),
            &format!("--since={seconds}s")
        )
    );
}

/// A planned change (rolling update, leader change, drain) loses nothing,
/// except, when it moves the IP, a request open at that instant: its later
/// packets reach the new node, which holds no connection-tracking entry for
/// it (layer 2 moves MACs, not connections). At most two such (a request is
/// sent every 20 ms), and none once the new node answers.
fn assert_planned(what: &str, seen: &Seen) {
    if seen.gap.is_some() {
        assert_eq!(
            seen.failed_after, 0,
            "{what} loses nothing once the new node answers: {seen:?}"
        );
        assert!(
            seen.failed <= 2,
            "{what} loses at most the requests open when the IP moved: {seen:?}"
        );
    } else {
        assert_eq!(seen.failed, 0, "{what} loses nothing: {seen:?}");
    }
}

#[test]
fn ferrolb_installed_from_config_default_serves_and_fails_over_on_real_nodes() {
    let root = workspace_root();
    let runs: usize = std::env::var("FERROLB_REAL_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2);
    let real = installed(&root, 3, "ferrolb-real-");

    // The webhook through its Service, with its own certificate.
    let slot = real.cluster.slot;
    let pool = format!(
        "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {{name: l2}}\nspec: {{addresses: [{}-{}]}}\n---\napiVersion: ferrolb.io/v1alpha1\nkind: L2Advertisement\nmetadata: {{name: l2}}\nspec: {{ipAddressPools: [l2]}}\n",
        slot.host_ip(200),
        slot.host_ip(220)
    );
    let out = until("the pool to be admitted", Duration::from_secs(60), || {
        let out = real.apply(&pool);
        out.status.success().then_some(out)
    })
    .expect("a good pool is accepted");
    assert!(out.status.success());
    let overlapping = format!(
        "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {{name: overlap}}\nspec: {{addresses: [{}/32]}}\n",
        slot.host_ip(210)
    );
    let refused = real.apply(&overlapping);
    let said = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(!refused.status.success(), "an overlapping pool is refused");
    assert!(
        said.contains("admission webhook") && said.contains("l2"),
        "the webhook names the pool it overlaps: {said}"
    );

    real.apply(&ECHO.replace("TAG", TAG));
    let (ip, active) = real.settled("echo");
    let (local_ip, _) = real.settled("echo-local");
    let condition = real.kubectl(&[
        "get",
        "svc",
        "echo",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"ferrolb.io/Announced\")].message}",
    ]);
    println!("Service echo: {ip}, {condition}");
    for binary in ["ferrolb-operator", "ferrolb-webhook", "ferrolb-speaker"] {
        println!("FIGURE REAL RSS {binary}: {:?} kB", real.rss_of(binary));
    }
    // Pods on several nodes answer through the one IP. A Pod Ready a moment
    // ago can still be missing from kube-proxy's rules, so the requests go on
    // (for a bounded time) until two nodes have answered; a failed request is
    // counted and shown, never skipped silently.
    let mut nodes = std::collections::BTreeSet::new();
    let (mut sent, mut failed, mut last_error) = (0, 0, String::new());
    let asking = Instant::now();
    while nodes.len() < 2 && asking.elapsed() < Duration::from_secs(60) {
        sent += 1;
        match real
            .client
            .run("curl", &["-sS", "-m", "1", &format!("http://{ip}/")])
        {
            Ok(out) if out.status.success() => {
                let body = String::from_utf8_lossy(&out.stdout).to_string();
                if let Some(node) = body.split("node=").nth(1) {
                    nodes.insert(node.trim().to_string());
                }
            }
            Ok(out) => {
                failed += 1;
                last_error = String::from_utf8_lossy(&out.stderr).to_string();
            }
            Err(e) => {
                failed += 1;
                last_error = e.to_string();
            }
        }
    }
    println!(
        "echo answered from nodes {nodes:?} through {ip} (answered by {active}) after {sent} requests, {failed} failed, in {:?}",
        asking.elapsed()
    );
    assert!(
        nodes.len() >= 2,
        "Pods on several nodes serve the Service: only {nodes:?} answered {sent} requests ({failed} failed, last: {last_error})\n{}\n{}",
        real.diagnose(),
        real.kubectl(&["get", "endpointslices", "-o", "wide"])
    );

    // One port, two protocols (MetalLB's e2e checks it in layer 2): the
    // Service's UDP port 80 is answered through the same IP and node.
    let (mut asked, mut answer) = (0, Err(String::new()));
    while asked < 30 && answer.is_err() {
        asked += 1;
        answer = ferrolb_e2e::probe::udp_ask(&real.client, &ip, 80);
    }
    println!("echo over UDP through {ip}: {answer:?} after {asked} datagrams");
    assert!(
        answer.as_ref().is_ok_and(|a| a.contains("node=")),
        "UDP on the TCP Service's port is answered through {ip}: {answer:?}\n{}",
        real.diagnose()
    );

    // (c) A rolling update of the speaker DaemonSet: nothing lost.
    let mac = real.mac_of(&active);
    let seen = measure(&real, &ip, &mac, Duration::from_secs(2), || {
        real.kubectl(&[
            "-n",
            "ferrolb-system",
            "rollout",
            "restart",
            "ds/ferrolb-speaker",
        ]);
        real.kubectl(&[
            "-n",
            "ferrolb-system",
            "rollout",
            "status",
            "ds/ferrolb-speaker",
            "--timeout=180s",
        ]);
    });
    report(
        "(c) speaker DaemonSet rolling update",
        std::slice::from_ref(&seen),
    );
    assert_planned("a rolling update", &seen);

    // (d) The operator's leader Pod deleted: nothing lost.
    let (ip, active) = real.settled("echo");
    let leader = real.leader();
    let mac = real.mac_of(&active);
    let seen = measure(&real, &ip, &mac, Duration::from_secs(5), || {
        real.kubectl(&[
            "-n",
            "ferrolb-system",
            "delete",
            "pod",
            &leader,
            "--wait=false",
        ]);
    });
    report(
        "(d) operator leader Pod deleted",
        std::slice::from_ref(&seen),
    );
    assert_planned("a leader change", &seen);

    // (e) kubectl drain of the active node: nothing lost.
    let (ip, active) = real.settled("echo");
    let mac = real.mac_of(&active);
    let seen = measure(&real, &ip, &mac, Duration::from_secs(3), || {
        real.kubectl(&[
            "drain",
            &active,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=120s",
        ]);
    });
    real.kubectl(&["uncordon", &active]);
    report(
        "(e) kubectl drain of the active node",
        std::slice::from_ref(&seen),
    );
    assert_planned("a drain", &seen);
    // Spread the echo Pods over every node again, the drained one too: the
    // failures below are measured with Pods on the failing node.
    real.kubectl(&["rollout", "restart", "deploy/echo"]);
    real.kubectl(&["rollout", "status", "deploy/echo", "--timeout=120s"]);

    // (a) The active node's link cut, (b) the active node crashed — with
    // externalTrafficPolicy Cluster and Local.
    for service in ["echo", "echo-local"] {
        let mut cut = Vec::new();
        for _ in 0..runs {
            let (ip, active) = real.settled(service);
            let mac = real.mac_of(&active);
            let seen = measure(&real, &ip, &mac, Duration::from_secs(6), || {
                real.cluster.set_link(&active, false).expect("link down");
                until("another node to answer", Duration::from_secs(30), || {
                    let out = real
                        .client
                        .run("arping", &["-c", "1", "-w", "1", "-i", "eth0", &ip])
                        .ok()?;
                    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
                    (text.contains("bytes from") && !text.contains(&mac)).then_some(())
                })
                .unwrap_or_else(|e| panic!("{e} (cut {active}, MAC {mac})\n{}", real.diagnose()));
            });
            explain_slow(
                &real,
                &format!("link cut of {active}, {service}"),
                &seen,
                30,
            );
            cut.push(seen);
            real.cluster.set_link(&active, true).expect("link up");
        }
        report(&format!("(a) active node link cut, {service}"), &cut);
        let mut crashed = Vec::new();
        for _ in 0..runs {
            let (ip, active) = real.settled(service);
            let mac = real.mac_of(&active);
            let before = real.speaker_started(&active);
            let seen = measure(&real, &ip, &mac, Duration::from_secs(6), || {
                real.cluster.crash(&active).expect("crash");
            });
            explain_slow(&real, &format!("crash of {active}, {service}"), &seen, 30);
            crashed.push(seen);
            real.cluster.restart(&active).expect("restart");
            real.speaker_back(&active, before);
        }
        report(&format!("(b) active node crashed, {service}"), &crashed);
    }
    let _ = local_ip;

    // (f) BGP with FRR and externalTrafficPolicy Local: the route's next
    // hops are the nodes with a ready echo Pod, and follow the Pods.
    let frr =
        real.router(|neighbors| frr_config(64513, &slot.host_ip(2), neighbors, &[], &[], true));
    let bgp = format!(
        "{}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: catalog\n  namespace: default\n  annotations: {{ferrolb.io/address-pool: bgp}}\nspec:\n  type: LoadBalancer\n  selector: {{app: echo}}\n  ports: [{{port: 80, targetPort: 8080}}]\n",
        bgp_objects(slot, "")
    );
    // After the crashes a webhook endpoint may be one that is still coming
    // back: retried as a GitOps tool would.
    until(
        "the BGP objects to be admitted",
        Duration::from_secs(90),
        || real.apply(&bgp).status.success().then_some(()),
    )
    .expect("BGP objects applied");
    let shop = real.service_ip("shop");
    let prefix = format!("{shop}/32");
    let pod_nodes = |real: &Real| real.ready_pod_node_ips("app=echo");
    let routed = |expected: &[String]| {
        frr.route(&prefix)
            .ok()
            .flatten()
            .filter(|r| r.next_hops == expected)
            .map(|_| ())
    };
    let expected = pod_nodes(&real);
    until(
        "the route to the nodes with Pods",
        Duration::from_secs(90),
        || routed(&expected),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {:?} vs {expected:?}\n{}",
            frr.route(&prefix),
            real.diagnose()
        )
    });
    println!("BGP: {prefix} next hops {expected:?}");
    // externalTrafficPolicy Cluster: every node advertises the prefix, which
    // reaches the speakers through a shared PrefixSet, not each node's
    // NodeAnnouncement.
    let catalog = format!("{}/32", real.service_ip("catalog"));
    let mut all_nodes: Vec<String> = real.cluster.nodes.iter().map(|n| n.ip.clone()).collect();
    all_nodes.sort();
    until(
        "the Cluster Service's route from every node",
        Duration::from_secs(60),
        || {
            frr.route(&catalog)
                .ok()
                .flatten()
                .filter(|r| r.next_hops == all_nodes)
                .map(|_| ())
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {:?}\n{}\n{}",
            frr.route(&catalog),
            real.kubectl(&["get", "prefixsets", "-o", "yaml"]),
            real.diagnose()
        )
    });
    let announcements = real.json(&["get", "nodeannouncements"]);
    for item in announcements["items"].as_array().expect("items") {
        let copied = item["spec"]["bgp"].as_array().is_some_and(|sessions| {
            sessions.iter().any(|s| {
                s["prefixes"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["prefix"] == catalog.as_str()))
            })
        });
        assert!(
            !copied,
            "a Cluster prefix is shared, not copied per node: {item}"
        );
    }
    println!(
        "BGP: {catalog} next hops {all_nodes:?}\n{}",
        real.kubectl(&["get", "prefixsets"])
    );
    // Empty one node of echo Pods: they are scheduled elsewhere and the route
    // leaves that node.
    let emptied = expected.first().cloned().expect("a node with Pods");
    let emptied_name = real
        .cluster
        .nodes
        .iter()
        .find(|n| n.ip == emptied)
        .map(|n| n.name.clone())
        .expect("node");
    let moved = Instant::now();
    real.kubectl(&["cordon", &emptied_name]);
    real.kubectl(&[
        "delete",
        "pods",
        "-l",
        "app=echo",
        "--field-selector",
        &format!("spec.nodeName={emptied_name}"),
        "--wait=false",
    ]);
    // The Pods land and turn Ready one by one: the route is compared with
    // the nodes holding a Ready Pod at each look, not with a snapshot taken
    // while one was still starting.
    let after = until(
        "the Pods to move and the route to follow them",
        Duration::from_secs(150),
        || {
            let now = pod_nodes(&real);
            (!now.contains(&emptied)
                && real.json(&["get", "deploy", "echo"])["status"]["readyReplicas"] == 4
                && routed(&now).is_some())
            .then_some(now)
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {:?} vs Pods on {:?}",
            frr.route(&prefix),
            pod_nodes(&real)
        )
    });
    println!(
        "FIGURE REAL (f) BGP Local: echo Pods moved off {emptied_name}; the router's next hops went from {expected:?} to {after:?} {:?} after the delete",
        moved.elapsed()
    );
    real.kubectl(&["uncordon", &emptied_name]);
    drop(frr);

    // (h) Uninstall leaves nothing of ferrolb behind.
    real.kubectl(&["delete", "svc", "echo", "echo-local", "shop", "catalog"]);
    real.kubectl(&[
        "delete",
        "-k",
        &root.join("config/local").display().to_string(),
        "--timeout=180s",
    ]);
    until("ferrolb-system to go", Duration::from_secs(120), || {
        real.cluster
            .kubectl(&["get", "namespace", "ferrolb-system"])
            .ok()
            .filter(|o| !o.status.success())
            .map(|_| ())
    })
    .expect("the namespace goes");
    let crds = real.kubectl(&["get", "crd", "-o", "name"]);
    assert!(!crds.contains("ferrolb.io"), "{crds}");
    let leases = real.kubectl(&["get", "lease", "-A", "-o", "name"]);
    assert!(
        !leases.contains("speaker-") && !leases.contains("ferrolb"),
        "{leases}"
    );
    let webhooks = real.kubectl(&[
        "get",
        "validatingwebhookconfigurations,validatingadmissionpolicies",
        "-o",
        "name",
    ]);
    assert!(!webhooks.contains("ferrolb"), "{webhooks}");
    let pods = real.kubectl(&["get", "pods", "-A", "-o", "name"]);
    assert!(!pods.contains("ferrolb"), "{pods}");
    let roles = real.kubectl(&["get", "clusterroles,clusterrolebindings", "-o", "name"]);
    assert!(!roles.contains("ferrolb"), "{roles}");
}
