//! IP allocation end to end [ALLOC, DUALSTACK, METRICS]: the real operator
//! binary against a real kube-apiserver, driven with the real kubectl.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use ferrolb_e2e::cluster::{Allocation, TestCluster, service_yaml};
use ferrolb_e2e::process::Process;

const WAIT: Duration = Duration::from_secs(30);

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

fn pool_yaml(name: &str, addresses: &[&str], extra: &str) -> String {
    let list: Vec<String> = addresses.iter().map(|a| format!("'{a}'")).collect();
    format!(
        "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {{name: {name}}}\nspec:\n  addresses: [{}]\n{extra}",
        list.join(", ")
    )
}

async fn allocated(cluster: &TestCluster, ns: &str, name: &str) -> Allocation {
    cluster
        .wait_allocation(ns, name, WAIT, Allocation::allocated)
        .await
        .expect("allocated")
}

async fn failed_with(cluster: &TestCluster, ns: &str, name: &str, reason: &str) -> Allocation {
    cluster
        .wait_allocation(ns, name, WAIT, |a| a.is(reason))
        .await
        .unwrap_or_else(|e| panic!("{ns}/{name} should fail with {reason}: {e}"))
}

#[tokio::test]
async fn services_get_ips_exhaustion_explains_and_freed_ips_are_picked_up() {
    let cluster = TestCluster::start().await.expect("cluster");
    cluster
        .apply_ok(&pool_yaml("small", &["192.168.50.10-192.168.50.11"], ""))
        .expect("pool");
    let operator = cluster.operator("solo", &[]).expect("operator");
    for name in ["a", "b", "c"] {
        cluster
            .apply_ok(&service_yaml("default", name, "", ""))
            .expect("service");
        // Creation order decides who waits when the pool runs out.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let a = allocated(&cluster, "default", "a").await;
    let b = allocated(&cluster, "default", "b").await;
    assert_eq!(a.ips, [ip("192.168.50.10")]);
    assert_eq!(b.ips, [ip("192.168.50.11")]);
    assert_eq!(a.message, "Allocated 192.168.50.10 from pool small");
    let c = failed_with(&cluster, "default", "c", "PoolExhausted").await;
    assert!(c.ips.is_empty() && c.message.contains("(small)"), "{c:?}");

    // What users type: kubectl wait on the condition, and the events.
    cluster
        .kubectl(&[
            "wait",
            "--for=condition=ferrolb.io/IPAllocated",
            "svc/a",
            "--timeout=10s",
        ])
        .expect("kubectl wait");
    let events = cluster
        .kubectl(&["get", "events", "--field-selector", "involvedObject.name=c"])
        .expect("events");
    assert!(
        events.contains("AllocationFailed") && events.contains("PoolExhausted"),
        "{events}"
    );
    let shown = cluster.kubectl(&["get", "svc", "a"]).expect("get svc");
    assert!(
        shown.contains("192.168.50.10"),
        "EXTERNAL-IP column: {shown}"
    );

    // Pool status counts.
    let pool = cluster
        .kubectl(&["get", "ipaddresspool", "small"])
        .expect("pool");
    let row: Vec<&str> = pool
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(row[3..5], ["2", "0"], "ASSIGNED, AVAILABLE: {pool}");

    // Metrics: pool usage, allocations and failures by reason, leadership.
    let metric = |series: &str| operator.metric(series).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        metric(r#"ferrolb_pool_addresses_assigned{pool="small",family="ipv4"}"#),
        2.0
    );
    assert_eq!(
        metric(r#"ferrolb_pool_addresses_available{pool="small",family="ipv4"}"#),
        0.0
    );
    assert_eq!(metric("ferrolb_allocations_total"), 2.0);
    assert_eq!(
        metric(r#"ferrolb_allocation_failures_total{reason="PoolExhausted"}"#),
        1.0
    );
    assert_eq!(metric("ferrolb_operator_leader"), 1.0);

    // Freeing an IP gives it to the waiting Service without touching it.
    cluster.kubectl(&["delete", "svc", "a"]).expect("delete a");
    let c = allocated(&cluster, "default", "c").await;
    assert_eq!(c.ips, [ip("192.168.50.10")]);

    // A Service that stops being a LoadBalancer loses what we wrote; its IP is reused.
    cluster
        .kubectl(&[
            "patch",
            "svc",
            "b",
            "--type=merge",
            "-p",
            r#"{"spec":{"type":"ClusterIP"}}"#,
        ])
        .expect("to ClusterIP");
    cluster
        .wait_allocation("default", "b", WAIT, |a| {
            a.ips.is_empty() && a.status.is_none()
        })
        .await
        .expect("cleared");
    cluster
        .apply_ok(&service_yaml("default", "d", "", ""))
        .expect("d");
    assert_eq!(
        allocated(&cluster, "default", "d").await.ips,
        [ip("192.168.50.11")]
    );

    // Another class is left alone.
    cluster
        .apply_ok(&service_yaml(
            "default",
            "foreign",
            "",
            "  loadBalancerClass: example.com/other\n",
        ))
        .expect("foreign");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let foreign = cluster
        .allocation("default", "foreign")
        .await
        .expect("foreign");
    assert_eq!(
        foreign,
        Allocation::default(),
        "a Service of another class is not touched"
    );
}

#[tokio::test]
async fn requested_ips_restricted_pools_and_sharing() {
    let cluster = TestCluster::start().await.expect("cluster");
    for (name, addresses, extra) in [
        ("general", "10.10.0.0/29", ""),
        (
            "team",
            "10.20.0.0/29",
            "  serviceAllocation: {priority: 1, namespaces: [team-a]}\n",
        ),
        (
            "edge",
            "10.30.0.0/29",
            "  serviceAllocation: {priority: 0, serviceSelectors: [{matchLabels: {tier: edge}}]}\n",
        ),
        (
            "labelled",
            "10.35.0.0/29",
            "  serviceAllocation: {priority: 2, namespaceSelectors: [{matchLabels: {team: c}}]}\n",
        ),
        ("reserved", "10.40.0.0/29", "  autoAssign: false\n"),
    ] {
        cluster
            .apply_ok(&pool_yaml(name, &[addresses], extra))
            .expect("pool");
    }
    cluster
        .kubectl(&["create", "namespace", "team-a"])
        .expect("ns");
    cluster
        .kubectl(&["create", "namespace", "team-b"])
        .expect("ns");
    cluster
        .kubectl(&["create", "namespace", "team-c"])
        .expect("ns");
    cluster
        .kubectl(&["label", "namespace", "team-c", "team=c"])
        .expect("label");
    let _operator = cluster.operator("solo", &[]).expect("operator");

    let annotated = |key: &str, value: &str| format!("  annotations:\n    {key}: '{value}'\n");
    let cases = [
        ("team-a", "x", String::new(), "", "10.20.0.0"),
        ("team-b", "y", String::new(), "", "10.10.0.0"),
        ("team-c", "w", String::new(), "", "10.35.0.0"),
        (
            "team-a",
            "z",
            "  labels: {tier: edge}\n".to_string(),
            "",
            "10.30.0.0",
        ),
        (
            "default",
            "r",
            annotated("ferrolb.io/address-pool", "reserved"),
            "",
            "10.40.0.0",
        ),
        (
            "default",
            "req",
            annotated("ferrolb.io/loadBalancerIPs", "10.10.0.5"),
            "",
            "10.10.0.5",
        ),
        (
            "default",
            "legacy",
            annotated("metallb.io/loadBalancerIPs", "10.10.0.7"),
            "",
            "10.10.0.7",
        ),
        (
            "default",
            "spec",
            String::new(),
            "  loadBalancerIP: 10.10.0.6\n",
            "10.10.0.6",
        ),
    ];
    for (ns, name, meta, spec, _) in &cases {
        cluster
            .apply_ok(&service_yaml(ns, name, meta, spec))
            .expect("service");
    }
    for (ns, name, _, _, want) in &cases {
        assert_eq!(
            allocated(&cluster, ns, name).await.ips,
            [ip(want)],
            "{ns}/{name}"
        );
    }

    cluster
        .apply_ok(&service_yaml(
            "default",
            "taken",
            &annotated("ferrolb.io/loadBalancerIPs", "10.10.0.5"),
            "",
        ))
        .expect("taken");
    let taken = failed_with(&cluster, "default", "taken", "RequestedIPUnavailable").await;
    assert!(taken.message.contains("held by default/req"), "{taken:?}");
    cluster
        .apply_ok(&service_yaml(
            "default",
            "nowhere",
            &annotated("ferrolb.io/loadBalancerIPs", "192.0.2.1"),
            "",
        ))
        .expect("nowhere");
    failed_with(&cluster, "default", "nowhere", "RequestedIPNotInAnyPool").await;

    // Sharing: same key, other ports → one IP; the same port → a conflict.
    let shared = |name: &str, port: u16, request: Option<&str>| {
        let mut meta = "  annotations:\n    ferrolb.io/allow-shared-ip: web\n".to_string();
        if let Some(ip) = request {
            meta.push_str(&format!("    ferrolb.io/loadBalancerIPs: '{ip}'\n"));
        }
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\n{meta}spec:\n  type: LoadBalancer\n  selector: {{app: web}}\n  ports: [{{port: {port}}}]\n"
        )
    };
    cluster.apply_ok(&shared("http", 80, None)).expect("http");
    cluster
        .apply_ok(&shared("https", 443, None))
        .expect("https");
    let http = allocated(&cluster, "default", "http").await;
    let https = allocated(&cluster, "default", "https").await;
    assert_eq!(http.ips, https.ips, "same key, different ports: one IP");
    let shared_ip = http.ips[0].to_string();
    cluster
        .apply_ok(&shared("clash", 80, Some(&shared_ip)))
        .expect("clash");
    let clash = failed_with(&cluster, "default", "clash", "SharingConflict").await;
    assert!(clash.message.contains("80/TCP"), "{clash:?}");
}

#[tokio::test]
async fn dual_stack_services() {
    let cluster = TestCluster::start().await.expect("cluster");
    cluster
        .apply_ok(&pool_yaml("v4", &["10.50.0.0/30"], ""))
        .expect("v4");
    cluster
        .apply_ok(&pool_yaml("v6", &["fd00:50::/127"], ""))
        .expect("v6");
    let _operator = cluster.operator("solo", &[]).expect("operator");
    let families = |policy: &str, families: &str| {
        format!("  ipFamilyPolicy: {policy}\n  ipFamilies: {families}\n")
    };
    cluster
        .apply_ok(&service_yaml(
            "default",
            "six",
            "",
            &families("SingleStack", "[IPv6]"),
        ))
        .expect("six");
    assert_eq!(
        allocated(&cluster, "default", "six").await.ips,
        [ip("fd00:50::")]
    );
    cluster
        .apply_ok(&service_yaml(
            "default",
            "both",
            "",
            &families("RequireDualStack", "[IPv6, IPv4]"),
        ))
        .expect("both");
    assert_eq!(
        allocated(&cluster, "default", "both").await.ips,
        [ip("fd00:50::1"), ip("10.50.0.0")]
    );
    // IPv6 is full now: PreferDualStack gets IPv4 only…
    cluster
        .apply_ok(&service_yaml(
            "default",
            "prefer",
            "",
            &families("PreferDualStack", "[IPv4, IPv6]"),
        ))
        .expect("prefer");
    assert_eq!(
        allocated(&cluster, "default", "prefer").await.ips,
        [ip("10.50.0.1")]
    );
    // …RequireDualStack nothing…
    cluster
        .apply_ok(&service_yaml(
            "default",
            "strict",
            "",
            &families("RequireDualStack", "[IPv4, IPv6]"),
        ))
        .expect("strict");
    failed_with(&cluster, "default", "strict", "PoolExhausted").await;
    // …and once an IPv6 address is free, PreferDualStack gains it untouched
    // (the older Service, prefer, is served before strict).
    cluster
        .kubectl(&["delete", "svc", "six"])
        .expect("delete six");
    let prefer = cluster
        .wait_allocation("default", "prefer", WAIT, |a| a.ips.len() == 2)
        .await
        .expect("prefer gains IPv6");
    assert_eq!(prefer.ips, [ip("10.50.0.1"), ip("fd00:50::")]);
}

/// MetalLB's e2e walks a Service through the ipFamilyPolicy changes a user
/// makes; each keeps the IP of the family that stays, and gains or frees
/// the other.
#[tokio::test]
async fn ip_family_policy_transitions_keep_the_ip_that_stays() {
    let cluster = TestCluster::start().await.expect("cluster");
    cluster
        .apply_ok(&pool_yaml("v4", &["10.51.0.0/29"], ""))
        .expect("v4");
    cluster
        .apply_ok(&pool_yaml("v6", &["fd00:51::/125"], ""))
        .expect("v6");
    let _operator = cluster.operator("solo", &[]).expect("operator");
    let set = |name: &str, policy: &str, families: &str| {
        cluster
            .apply_ok(&service_yaml(
                "default",
                name,
                "",
                &format!("  ipFamilyPolicy: {policy}\n  ipFamilies: {families}\n"),
            ))
            .unwrap_or_else(|e| panic!("{name} {policy} {families}: {e}"));
    };
    let families = |a: &Allocation| -> Vec<bool> { a.ips.iter().map(IpAddr::is_ipv4).collect() };
    let wait = |name: &'static str, want: Vec<bool>| {
        let cluster = &cluster;
        async move {
            cluster
                .wait_allocation("default", name, WAIT, |a| families(a) == want)
                .await
                .unwrap_or_else(|e| panic!("{name} families {want:?}: {e}"))
        }
    };
    set("flip", "SingleStack", "[IPv4]");
    let first = wait("flip", vec![true]).await.ips[0];
    let steps: [(&str, &str, Vec<bool>); 6] = [
        ("PreferDualStack", "[IPv4, IPv6]", vec![true, false]),
        ("RequireDualStack", "[IPv4, IPv6]", vec![true, false]),
        ("PreferDualStack", "[IPv4, IPv6]", vec![true, false]),
        ("SingleStack", "[IPv4]", vec![true]),
        ("RequireDualStack", "[IPv4, IPv6]", vec![true, false]),
        ("SingleStack", "[IPv4]", vec![true]),
    ];
    let mut v6: Option<IpAddr> = None;
    for (policy, list, want) in steps {
        set("flip", policy, list);
        let now = wait("flip", want.clone()).await;
        assert_eq!(now.ips[0], first, "{policy}: the IPv4 address stays");
        if want.len() == 2 {
            // Unchanged while the policy stays dual, whichever one.
            if let Some(before) = v6 {
                assert_eq!(now.ips[1], before, "{policy}: the IPv6 address stays");
            }
            v6 = Some(now.ips[1]);
        } else {
            v6 = None;
        }
    }
    // IPv6 first: the IPv6 address stays primary, IPv4 joins behind it.
    set("six-first", "SingleStack", "[IPv6]");
    let six = wait("six-first", vec![false]).await.ips[0];
    set("six-first", "PreferDualStack", "[IPv6, IPv4]");
    let both = wait("six-first", vec![false, true]).await;
    assert_eq!(both.ips[0], six, "the IPv6 address stays first");
}

#[tokio::test]
async fn editing_or_deleting_a_pool_keeps_ips_and_explains() {
    let cluster = TestCluster::start().await.expect("cluster");
    cluster
        .apply_ok(&pool_yaml("p", &["10.60.0.0/29"], ""))
        .expect("pool");
    let operator = cluster.operator("solo", &[]).expect("operator");
    cluster
        .apply_ok(&service_yaml("default", "a", "", ""))
        .expect("a");
    assert_eq!(
        allocated(&cluster, "default", "a").await.ips,
        [ip("10.60.0.0")]
    );

    cluster
        .apply_ok(&pool_yaml("p", &["10.61.0.0/29"], ""))
        .expect("shrink");
    let a = failed_with(&cluster, "default", "a", "IPNotInAnyPool").await;
    assert_eq!(a.ips, [ip("10.60.0.0")], "the IP is kept");
    assert!(a.message.contains("add it back to a pool"), "{a:?}");
    cluster
        .apply_ok(&service_yaml("default", "b", "", ""))
        .expect("b");
    assert_eq!(
        allocated(&cluster, "default", "b").await.ips,
        [ip("10.61.0.0")]
    );

    cluster
        .apply_ok(&pool_yaml("p", &["10.60.0.0/29", "10.61.0.0/29"], ""))
        .expect("restore");
    assert_eq!(
        allocated(&cluster, "default", "a").await.ips,
        [ip("10.60.0.0")]
    );

    cluster
        .kubectl(&["delete", "ipaddresspool", "p"])
        .expect("delete pool");
    let a = failed_with(&cluster, "default", "a", "IPNotInAnyPool").await;
    assert_eq!(a.ips, [ip("10.60.0.0")]);
    // The deleted pool's gauges go with it (a dashboard must not keep showing
    // its last figures).
    let page = operator.scrape().expect("metrics");
    assert!(
        !page.contains(r#"pool="p""#),
        "gauges of a deleted pool remain: {page}"
    );
}

async fn all_ips(cluster: &TestCluster, names: &[String]) -> BTreeMap<String, Vec<IpAddr>> {
    let mut map = BTreeMap::new();
    for name in names {
        map.insert(name.clone(), allocated(cluster, "default", name).await.ips);
    }
    map
}

fn written_lines(process: &Process) -> usize {
    process
        .output()
        .lines()
        .filter(|l| l.contains("status written"))
        .count()
}

#[tokio::test]
async fn five_operator_restarts_keep_every_ip() {
    let cluster = TestCluster::start().await.expect("cluster");
    cluster
        .apply_ok(&pool_yaml("p", &["10.70.0.0/24"], ""))
        .expect("pool");
    let names: Vec<String> = (0..30).map(|i| format!("s{i:02}")).collect();
    for name in &names {
        cluster
            .apply_ok(&service_yaml("default", name, "", ""))
            .expect("service");
    }
    let mut operator = cluster.operator("first", &[]).expect("operator");
    let before = all_ips(&cluster, &names).await;
    let distinct: BTreeSet<&Vec<IpAddr>> = before.values().collect();
    assert_eq!(distinct.len(), 30);
    for round in 0..5 {
        operator.kill();
        // While it is down, one Service goes and one comes.
        cluster
            .kubectl(&["delete", "svc", &names[round]])
            .expect("delete");
        let newcomer = format!("new{round}");
        cluster
            .apply_ok(&service_yaml("default", &newcomer, "", ""))
            .expect("new");
        operator = cluster
            .operator(&format!("restart{round}"), &[])
            .expect("operator");
        let got = allocated(&cluster, "default", &newcomer).await;
        let after = all_ips(&cluster, &names[round + 1..]).await;
        for (name, ips) in &after {
            assert_eq!(
                Some(ips),
                before.get(name),
                "{name} kept its IP across restart {round}"
            );
        }
        assert!(
            !after.values().any(|ips| ips == &got.ips),
            "the newcomer got a free IP"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            written_lines(&operator),
            1,
            "only the newcomer's status was written:\n{}",
            operator.output()
        );
    }
}

#[tokio::test]
async fn two_replicas_never_both_write_and_a_leader_change_loses_nothing() {
    let cluster = TestCluster::start().await.expect("cluster");
    cluster
        .apply_ok(&pool_yaml("p", &["10.80.0.0/24"], ""))
        .expect("pool");
    let mut a = Some(cluster.operator("replica-a", &[]).expect("a"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = cluster.operator("replica-b", &[]).expect("b");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leads = |p: &Process| p.output().contains("leading=true");
    assert!(
        a.as_ref().is_some_and(leads) && !leads(&b),
        "the first replica leads, the second waits:\n--- a\n{}\n--- b\n{}",
        a.as_ref().map(Process::output).unwrap_or_default(),
        b.output()
    );

    let names: Vec<String> = (0..40).map(|i| format!("burst{i:02}")).collect();
    for (i, name) in names.iter().enumerate() {
        cluster
            .apply_ok(&service_yaml("default", name, "", ""))
            .expect("service");
        if i == 15 {
            // The leader dies mid-burst.
            a.take().expect("leader").kill();
        }
    }
    let ips = all_ips(&cluster, &names).await;
    let distinct: BTreeSet<&Vec<IpAddr>> = ips.values().collect();
    assert_eq!(distinct.len(), 40, "every Service has its own IP: {ips:?}");
    assert!(leads(&b), "the standby took over");
    // The standby only wrote after it became the leader.
    let log = b.output();
    let took_over = log.find("leading=true").expect("took over");
    let first_write = log.find("status written").expect("wrote");
    assert!(took_over < first_write, "{log}");
}

#[tokio::test]
async fn a_leader_stopped_with_sigterm_hands_the_lease_over() {
    let cluster = TestCluster::start().await.expect("cluster");
    cluster
        .apply_ok(&pool_yaml("p", &["10.90.0.0/29"], ""))
        .expect("pool");
    let a = cluster
        .operator("replica-a", &["--lease-duration-seconds=60"])
        .expect("a");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = cluster
        .operator("replica-b", &["--lease-duration-seconds=60"])
        .expect("b");
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.signal(nix::sys::signal::Signal::SIGTERM);
    // With a 60 s Lease, only a released one lets the standby lead this soon.
    cluster
        .apply_ok(&service_yaml("default", "after", "", ""))
        .expect("service");
    let got = cluster
        .wait_allocation(
            "default",
            "after",
            Duration::from_secs(30),
            Allocation::allocated,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n--- a\n{}\n--- b\n{}", a.output(), b.output()));
    assert_eq!(got.ips, [ip("10.90.0.0")]);
    assert!(
        a.output().contains("leader Lease released"),
        "{}",
        a.output()
    );
    assert!(b.output().contains("leading=true"), "{}", b.output());
}
