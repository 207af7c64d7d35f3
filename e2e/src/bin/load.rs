//! `ferrolb-load`: the allocation load driver. Starts a fresh control plane and
//! the operator, creates N LoadBalancer Services, and prints how long until all
//! have `IPAllocated=True`, the per-Service latency (p50/p99), the operator's RSS
//! at idle and at its peak, and the API writes it made. With `--bgp-nodes N`
//! it also simulates N nodes in BGP mode (Ready Nodes, speaker Leases renewed
//! every 5 s, one BGPPeer and one BGPAdvertisement) and prints the size of the
//! desired state (NodeAnnouncements, PrefixSets), when it held every prefix,
//! and what one more Service costs: the objects rewritten, their bytes and the
//! time until its prefix was in the desired state. Figures only: nothing here
//! asserts a time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use ferrolb_api::{NodeAnnouncement, PrefixSet};
use ferrolb_e2e::cluster::TestCluster;
use ferrolb_e2e::process::{Process, binary};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Mutex;

#[derive(Parser)]
#[command(about = "Create N LoadBalancer Services and measure the operator")]
struct Cli {
    /// How many Services.
    #[arg(long, default_value_t = 5000)]
    services: usize,
    /// Concurrent creates.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Simulate this many nodes in BGP mode (0: allocation only).
    #[arg(long, default_value_t = 0)]
    bgp_nodes: usize,
}

/// Resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU time of a process (user + system), in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: utime, stime are
    // the 14th and 15th fields of the line.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn operator_writes(process: &Process) -> usize {
    process
        .output()
        .lines()
        .filter(|l| l.contains("status written"))
        .count()
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let operator_binary = binary("ferrolb-operator")?;
    eprintln!(
        "measuring {} (FERROLB_BIN_DIR=target/release for release figures)",
        operator_binary.display()
    );
    let cluster = TestCluster::start().await?;
    cluster.apply_ok(
        "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: load}\nspec:\n  addresses: [10.0.0.0/8]\n",
    )?;
    cluster.kubectl(&["create", "namespace", "load"])?;
    let renewing = if cli.bgp_nodes > 0 {
        Some(simulate_bgp_nodes(&cluster, cli.bgp_nodes).await?)
    } else {
        None
    };
    let operator = cluster.operator("load", &["--log-json"])?;
    let pid = operator.pid();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_kib = rss_kib(pid).context("operator RSS")?;

    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let allocated: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();

    // Watch for the condition as a user's tooling would.
    let api: Api<Service> = Api::namespaced(cluster.client.clone(), "load");
    let watch_allocated = allocated.clone();
    let total = cli.services;
    let watching = tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Ok(Some(service)) = events.try_next().await {
            let done = service
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "ferrolb.io/IPAllocated" && c.status == "True")
                });
            if done {
                let mut map = watch_allocated.lock().await;
                map.entry(service.metadata.name.unwrap_or_default())
                    .or_insert_with(Instant::now);
                if map.len() >= total {
                    break;
                }
            }
        }
    });

    let peak = Arc::new(std::sync::atomic::AtomicU64::new(idle_kib));
    let sampling = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let started = Instant::now();
    let api: Api<Service> = Api::namespaced(cluster.client.clone(), "load");
    stream::iter(0..cli.services)
        .map(|i| {
            let api = api.clone();
            let created = created.clone();
            async move {
                let name = format!("svc-{i:05}");
                let service: Service = serde_json::from_value(serde_json::json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": name, "namespace": "load"},
                    // No NodePorts: the range holds 2,768 and the load exceeds it.
                    "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
                             "selector": {"app": name}, "ports": [{"port": 80}]},
                }))?;
                api.create(&PostParams::default(), &service).await?;
                created.lock().await.insert(name, Instant::now());
                anyhow::Ok(())
            }
        })
        .buffer_unordered(cli.concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    let created_in = started.elapsed();

    let deadline = Duration::from_secs(cli.timeout);
    if tokio::time::timeout(deadline.saturating_sub(started.elapsed()), watching)
        .await
        .is_err()
    {
        bail!(
            "only {} of {} Services allocated after {deadline:?}",
            allocated.lock().await.len(),
            cli.services
        );
    }
    let all_in = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    sampling.abort();

    let created = created.lock().await;
    let allocated = allocated.lock().await;
    let mut latencies: Vec<Duration> = created
        .iter()
        .filter_map(|(name, at)| {
            allocated
                .get(name)
                .map(|done| done.saturating_duration_since(*at))
        })
        .collect();
    latencies.sort();
    println!("services:            {}", cli.services);
    println!(
        "created in:          {:.2}s ({} concurrent creates)",
        created_in.as_secs_f64(),
        cli.concurrency
    );
    println!(
        "all IPAllocated in:  {:.2}s from the first create",
        all_in.as_secs_f64()
    );
    println!(
        "latency p50:         {} ms",
        percentile(&latencies, 50.0).as_millis()
    );
    println!(
        "latency p99:         {} ms",
        percentile(&latencies, 99.0).as_millis()
    );
    println!(
        "latency max:         {} ms",
        latencies.last().copied().unwrap_or_default().as_millis()
    );
    println!("operator RSS idle:   {} MiB", idle_kib / 1024);
    println!(
        "operator RSS peak:   {} MiB",
        peak.load(std::sync::atomic::Ordering::Relaxed) / 1024
    );
    println!(
        "operator API writes: {} Service status writes (+ pool status, events), 3 watches",
        operator_writes(&operator)
    );
    if renewing.is_some() {
        bgp_figures(&cluster, cli.services, deadline).await?;
        // Idle: nothing changes but the speaker Leases, renewed as speakers do.
        let before = cpu_ticks(pid).context("operator CPU")?;
        tokio::time::sleep(Duration::from_secs(30)).await;
        let used = cpu_ticks(pid).context("operator CPU")? - before;
        println!(
            "idle operator CPU:   {:.1} % of a core over 30 s (Leases of {} nodes renewed every 5 s)",
            used as f64 / 100.0 / 30.0 * 100.0,
            cli.bgp_nodes
        );
    }
    Ok(())
}

/// `count` Ready Nodes with live speaker Leases (renewed every 5 s, as the
/// speakers do), one BGPPeer and one BGPAdvertisement for the load pool.
async fn simulate_bgp_nodes(
    cluster: &TestCluster,
    count: usize,
) -> Result<tokio::task::JoinHandle<()>> {
    let _ = cluster.kubectl(&["create", "namespace", "ferrolb-system"]);
    for i in 0..count {
        cluster.node(&format!("node-{i:04}"))?;
    }
    cluster.apply_ok(
        "apiVersion: ferrolb.io/v1alpha1\nkind: BGPPeer\nmetadata: {name: router}\nspec: {myASN: 64512, peerASN: 64513, peerAddress: 192.0.2.1}\n---\napiVersion: ferrolb.io/v1alpha1\nkind: BGPAdvertisement\nmetadata: {name: load}\nspec: {ipAddressPools: [load]}\n",
    )?;
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), "ferrolb-system");
    let renew = move |leases: Api<Lease>| async move {
        let now = serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            k8s_openapi::jiff::Timestamp::now(),
        ))
        .unwrap_or_default();
        stream::iter(0..count)
            .map(|i| {
                let leases = leases.clone();
                let now = now.clone();
                async move {
                    let name = ferrolb_api::constants::speaker_lease(&format!("node-{i:04}"));
                    let body = serde_json::json!({
                        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": name},
                        "spec": {"holderIdentity": name, "leaseDurationSeconds": 15,
                                 "renewTime": now},
                    });
                    leases
                        .patch(
                            &name,
                            &PatchParams::apply("ferrolb-load").force(),
                            &Patch::Apply(body),
                        )
                        .await
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await
    };
    for result in renew(leases.clone()).await {
        result.context("speaker Lease")?;
    }
    eprintln!("{count} simulated nodes Ready with live speaker Leases");
    Ok(tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let _ = renew(leases.clone()).await;
        }
    }))
}

fn bytes(object: &impl serde::Serialize) -> usize {
    serde_json::to_vec(object).map(|v| v.len()).unwrap_or(0)
}

/// The desired state once every prefix is in it, and what one more Service
/// costs.
async fn bgp_figures(cluster: &TestCluster, services: usize, deadline: Duration) -> Result<()> {
    let sets: Api<PrefixSet> = Api::all(cluster.client.clone());
    let announcements: Api<NodeAnnouncement> = Api::all(cluster.client.clone());
    let started = Instant::now();
    let listed = loop {
        let listed = sets.list(&ListParams::default()).await?;
        // Distinct prefixes, in exactly one shard each: the old shards of a
        // re-shard are gone.
        let held: std::collections::BTreeSet<&String> =
            listed.items.iter().flat_map(|s| &s.spec.prefixes).collect();
        let total: usize = listed.items.iter().map(|s| s.spec.prefixes.len()).sum();
        let held = held.len();
        if held >= services && total == held {
            break listed;
        }
        if started.elapsed() > deadline {
            bail!("the PrefixSets hold {held} of {services} prefixes after {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let nas = announcements.list(&ListParams::default()).await?;
    let largest_na = nas.items.iter().map(bytes).max().unwrap_or(0);
    let largest_set = listed.items.iter().map(bytes).max().unwrap_or(0);
    let set_bytes: usize = listed.items.iter().map(bytes).sum();
    println!(
        "bgp desired state:   {} NodeAnnouncements (largest {} B), {} PrefixSets holding {} prefixes ({} B in all, largest {} B); complete {:.2}s after all IPAllocated",
        nas.items.len(),
        largest_na,
        listed.items.len(),
        services,
        set_bytes,
        largest_set,
        started.elapsed().as_secs_f64()
    );

    // One more Service: which objects change, how big, how fast.
    let changes: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let watch = |kind: &'static str| {
        let changes = changes.clone();
        let client = cluster.client.clone();
        async move {
            let seen = |name: String, size: usize| {
                let changes = changes.clone();
                async move { changes.lock().await.push((name, size)) }
            };
            if kind == "PrefixSet" {
                let api: Api<PrefixSet> = Api::all(client);
                let mut events = watcher(api, watcher::Config::default()).boxed();
                while let Ok(Some(event)) = events.try_next().await {
                    if let watcher::Event::Apply(o) = event {
                        seen(
                            format!("PrefixSet/{}", o.metadata.name.clone().unwrap_or_default()),
                            bytes(&o),
                        )
                        .await;
                    }
                }
            } else {
                let api: Api<NodeAnnouncement> = Api::all(client);
                let mut events = watcher(api, watcher::Config::default()).boxed();
                while let Ok(Some(event)) = events.try_next().await {
                    if let watcher::Event::Apply(o) = event {
                        seen(
                            format!(
                                "NodeAnnouncement/{}",
                                o.metadata.name.clone().unwrap_or_default()
                            ),
                            bytes(&o),
                        )
                        .await;
                    }
                }
            }
        }
    };
    let watchers = [
        tokio::spawn(watch("PrefixSet")),
        tokio::spawn(watch("NodeAnnouncement")),
    ];
    tokio::time::sleep(Duration::from_secs(3)).await;
    changes.lock().await.clear();
    let api: Api<Service> = Api::namespaced(cluster.client.clone(), "load");
    let service: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "one-more", "namespace": "load"},
        "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
                 "selector": {"app": "one-more"}, "ports": [{"port": 80}]},
    }))?;
    let created = Instant::now();
    api.create(&PostParams::default(), &service).await?;
    let ip = loop {
        let ip = api
            .get("one-more")
            .await?
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .and_then(|i| i.first().and_then(|i| i.ip.clone()));
        if let Some(ip) = ip {
            break ip;
        }
        if created.elapsed() > deadline {
            bail!("one-more got no IP");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let to_ip = created.elapsed();
    let prefix = format!("{ip}/32");
    let to_state = loop {
        let listed = sets.list(&ListParams::default()).await?;
        if listed
            .items
            .iter()
            .any(|s| s.spec.prefixes.contains(&prefix))
        {
            break created.elapsed();
        }
        if created.elapsed() > deadline {
            bail!("{prefix} never reached a PrefixSet");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    for w in watchers {
        w.abort();
    }
    let after = sets.list(&ListParams::default()).await?;
    let changes = changes.lock().await;
    let rewritten: usize = changes.iter().map(|(_, size)| size).sum();
    let names: std::collections::BTreeSet<&str> = changes.iter().map(|(n, _)| n.as_str()).collect();
    println!(
        "PrefixSets now:      {} holding {} prefixes",
        after.items.len(),
        after
            .items
            .iter()
            .map(|s| s.spec.prefixes.len())
            .sum::<usize>()
    );
    println!(
        "one more Service:    IP in {} ms, prefix in the desired state in {} ms; {} object writes ({} B) to {:?}",
        to_ip.as_millis(),
        to_state.as_millis(),
        changes.len(),
        rewritten,
        names
    );
    Ok(())
}
