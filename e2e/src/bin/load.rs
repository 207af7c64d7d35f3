//! `ferrolb-load`: the operator's load driver. Starts a fresh control plane
//! and the operator, creates N LoadBalancer Services, and prints how long
//! until all have `IPAllocated=True`, the per-Service latency (p50/p99), the
//! RSS and CPU of the operator, kube-apiserver and etcd, and the API writes
//! the operator made. With `--nodes N` it also simulates N nodes in layer 2
//! (`--mode l2`) or BGP mode (`--mode bgp`): Ready Nodes, speaker Leases
//! renewed every 5 s, and speakers that report each NodeAnnouncement they
//! are given (answering for its IPs, sessions Established) as real ones do.
//! It then prints when every Service was `Announced`, the size of the
//! desired state, what one more Service costs (objects rewritten, their
//! bytes, the time until its IP is in every affected node's desired state
//! and until it is `Announced`), and the operator's idle CPU. Last, the
//! steady state: `--steady K` Services created one at a time, `--every` ms
//! apart, with the N Services present (create → IP p50/p99 and the
//! operator's CPU per create). Figures only: nothing here asserts a time.

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
    /// Simulate this many nodes (0: allocation only).
    #[arg(long, default_value_t = 0)]
    nodes: usize,
    /// How the simulated nodes announce: `l2` or `bgp`.
    #[arg(long, default_value = "l2")]
    mode: String,
    /// Then create this many more, one at a time (0: none).
    #[arg(long, default_value_t = 100)]
    steady: usize,
    /// Milliseconds between those single creates.
    #[arg(long, default_value_t = 200)]
    every: u64,
}

use ferrolb_e2e::process::rss_kib;

/// CPU time of a process (user + system), in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: utime, stime are
    // the 14th and 15th fields of the line.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Watches Services (as a user's tooling would) and records when each first
/// shows `IPAllocated=True`, until `total` have.
fn watch_allocated(
    api: Api<Service>,
    config: watcher::Config,
    allocated: Arc<Mutex<HashMap<String, Instant>>>,
    total: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut events = watcher(api, config).applied_objects().boxed();
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
                let mut map = allocated.lock().await;
                map.entry(service.metadata.name.unwrap_or_default())
                    .or_insert_with(Instant::now);
                if map.len() >= total {
                    break;
                }
            }
        }
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The operator's passes (count, seconds) and API writes by kind, from its
/// `/metrics`.
fn operator_counters(process: &Process) -> String {
    let Ok(page) = process.scrape() else {
        return "(no /metrics)".to_string();
    };
    page.lines()
        .filter(|l| {
            l.starts_with("ferrolb_api_writes_total")
                || l.starts_with("ferrolb_reconcile_duration_seconds_count")
                || l.starts_with("ferrolb_reconcile_duration_seconds_sum")
        })
        .map(|l| l.trim_start_matches("ferrolb_"))
        .collect::<Vec<_>>()
        .join(", ")
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
    let bgp = match cli.mode.as_str() {
        "l2" => false,
        "bgp" => true,
        other => bail!("--mode is l2 or bgp, not {other}"),
    };
    let simulated = if cli.nodes > 0 {
        Some(simulate_nodes(&cluster, cli.nodes, bgp).await?)
    } else {
        None
    };
    let plane_pids = [
        cluster
            .plane
            .pid("kube-apiserver")
            .context("kube-apiserver pid")?,
        cluster.plane.pid("etcd").context("etcd pid")?,
    ];
    let operator = cluster.operator("load", &["--log-json"])?;
    let pid = operator.pid();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_kib = rss_kib(pid).context("operator RSS")?;

    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let allocated: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();

    // Watch for the condition as a user's tooling would.
    let api: Api<Service> = Api::namespaced(cluster.client.clone(), "load");
    let watching = watch_allocated(
        api,
        watcher::Config::default(),
        allocated.clone(),
        cli.services,
    );

    // Peak RSS of the operator, kube-apiserver and etcd.
    let pids = [pid, plane_pids[0], plane_pids[1]];
    let peaks: Arc<[std::sync::atomic::AtomicU64; 3]> = Arc::new(Default::default());
    let sampling = {
        let peaks = peaks.clone();
        tokio::spawn(async move {
            loop {
                for (i, pid) in pids.iter().enumerate() {
                    if let Some(kib) = rss_kib(*pid) {
                        peaks[i].fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let cpu_before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p).unwrap_or(0)).collect();

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
    let cpu_used: Vec<f64> = pids
        .iter()
        .zip(&cpu_before)
        .map(|(p, before)| cpu_ticks(*p).unwrap_or(0).saturating_sub(*before) as f64 / 100.0)
        .collect();

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
    println!(
        "CPU until all IPs:   operator {:.1} s, kube-apiserver {:.1} s, etcd {:.1} s",
        cpu_used[0], cpu_used[1], cpu_used[2]
    );
    println!("operator RSS idle:   {} MiB", idle_kib / 1024);
    println!(
        "operator API writes: {} Service status writes (+ pool status, events)",
        operator_writes(&operator)
    );
    println!("operator after creates: {}", operator_counters(&operator));
    if simulated.is_some() {
        announced_figures(&cluster, cli.services, started, deadline).await?;
        desired_figures(&cluster, cli.services, bgp, deadline).await?;
    }
    if cli.steady > 0 {
        steady_figures(&cluster, cli.steady, Duration::from_millis(cli.every), pid).await?;
    }
    sampling.abort();
    let peak = |i: usize| peaks[i].load(std::sync::atomic::Ordering::Relaxed) / 1024;
    println!(
        "RSS peak:            operator {} MiB, kube-apiserver {} MiB, etcd {} MiB",
        peak(0),
        peak(1),
        peak(2)
    );
    if simulated.is_some() {
        // Idle: nothing changes but the speaker Leases, renewed as speakers do.
        let before = cpu_ticks(pid).context("operator CPU")?;
        tokio::time::sleep(Duration::from_secs(30)).await;
        let used = cpu_ticks(pid).context("operator CPU")? - before;
        println!(
            "idle operator CPU:   {:.1} % of a core over 30 s (Leases of {} nodes renewed every 5 s)",
            used as f64 / 100.0 / 30.0 * 100.0,
            cli.nodes
        );
    }
    Ok(())
}

/// When every Service showed `Announced=True` (the simulated speakers
/// reporting), counted from the first create.
async fn announced_figures(
    cluster: &TestCluster,
    services: usize,
    started: Instant,
    deadline: Duration,
) -> Result<()> {
    let api: Api<Service> = Api::namespaced(cluster.client.clone(), "load");
    loop {
        let listed = api.list(&ListParams::default()).await?;
        let announced = listed
            .items
            .iter()
            .filter(|s| {
                s.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c.type_ == "ferrolb.io/Announced" && c.status == "True")
                    })
            })
            .count();
        if announced >= services {
            println!(
                "all Announced in:    {:.2}s from the first create (speakers reporting)",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() > deadline {
            bail!("{announced} of {services} Services Announced after {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `count` Ready Nodes with live speaker Leases (renewed every 5 s, as the
/// speakers do), one advertisement for the load pool (an L2Advertisement,
/// or a BGPPeer and a BGPAdvertisement), and speakers that report every
/// NodeAnnouncement spec they are given. Returns the tasks doing it.
async fn simulate_nodes(
    cluster: &TestCluster,
    count: usize,
    bgp: bool,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let _ = cluster.kubectl(&["create", "namespace", "ferrolb-system"]);
    for i in 0..count {
        cluster.node(&format!("node-{i:04}"))?;
    }
    if bgp {
        cluster.apply_ok(
            "apiVersion: ferrolb.io/v1alpha1\nkind: BGPPeer\nmetadata: {name: router}\nspec: {myASN: 64512, peerASN: 64513, peerAddress: 192.0.2.1}\n---\napiVersion: ferrolb.io/v1alpha1\nkind: BGPAdvertisement\nmetadata: {name: load}\nspec: {ipAddressPools: [load]}\n",
        )?;
    } else {
        cluster.apply_ok(
            "apiVersion: ferrolb.io/v1alpha1\nkind: L2Advertisement\nmetadata: {name: load}\nspec: {ipAddressPools: [load]}\n",
        )?;
    }
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
    eprintln!(
        "{count} simulated nodes Ready with live speaker Leases, {} mode",
        if bgp { "BGP" } else { "layer 2" }
    );
    let renewing = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let _ = renew(leases.clone()).await;
        }
    });
    let reporting = tokio::spawn(report_as_speakers(cluster.client.clone()));
    Ok(vec![renewing, reporting])
}

/// Reports every NodeAnnouncement spec as the speakers would once applied:
/// each layer 2 IP answered (active) or stood by (standby), each BGP session
/// Established with its prefixes, `observedGeneration` the spec's.
async fn report_as_speakers(client: kube::Client) {
    use ferrolb_api::nodeannouncement::{
        BgpState, L2Phase, L2Role, L2State, NodeAnnouncementStatus, SessionState,
    };
    let api: Api<NodeAnnouncement> = Api::all(client);
    let reported: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let events = watcher(api.clone(), watcher::Config::default()).applied_objects();
    events
        .for_each_concurrent(16, |event| {
            let api = api.clone();
            let reported = reported.clone();
            async move {
                let Ok(announcement) = event else { return };
                let name = announcement.metadata.name.clone().unwrap_or_default();
                let generation = announcement.metadata.generation.unwrap_or(0);
                {
                    let mut seen = reported.lock().await;
                    if seen.get(&name).is_some_and(|g| *g >= generation) {
                        return;
                    }
                    seen.insert(name.clone(), generation);
                }
                let status = NodeAnnouncementStatus {
                    observed_generation: Some(generation),
                    // As a speaker groups them: every active IP answered,
                    // in one group; standby IPs are not repeated.
                    l2: {
                        let answered: ferrolb_api::ipset::IpSet = announcement
                            .spec
                            .l2
                            .iter()
                            .filter(|g| g.role == L2Role::Active)
                            .flat_map(|g| g.ips.iter())
                            .collect();
                        if answered.is_empty() {
                            Vec::new()
                        } else {
                            vec![L2State {
                                ips: answered,
                                state: L2Phase::Announcing,
                                interfaces: vec!["eth0".into()],
                                since: None,
                                message: None,
                                taken_from: None,
                            }]
                        }
                    },
                    bgp: announcement
                        .spec
                        .bgp
                        .iter()
                        .map(|s| SessionState {
                            name: s.name.clone(),
                            state: BgpState::Established,
                            since: None,
                            prefixes_advertised: 0,
                            last_error: None,
                            families_not_sent: None,
                            bfd: None,
                        })
                        .collect(),
                    ..Default::default()
                };
                let body = serde_json::json!({
                    "apiVersion": "ferrolb.io/v1alpha1", "kind": "NodeAnnouncement",
                    "metadata": {"name": name}, "status": status,
                });
                let _ = api
                    .patch_status(
                        &name,
                        &PatchParams::apply(ferrolb_api::constants::manager::SPEAKER).force(),
                        &Patch::Apply(body),
                    )
                    .await;
            }
        })
        .await;
}

fn bytes(object: &impl serde::Serialize) -> usize {
    serde_json::to_vec(object).map(|v| v.len()).unwrap_or(0)
}

/// One desired-state object written: its kind/name, size, when it was seen,
/// and the IPs (layer 2) or prefixes (PrefixSet) it holds.
type Change = (String, usize, Instant, Vec<String>);

/// The desired state once it holds every Service, and what one more
/// Service costs: the NodeAnnouncement and PrefixSet specs rewritten (status
/// reports left out), their bytes, how long until its IP is in every
/// affected node's desired state, and until it is `Announced`.
async fn desired_figures(
    cluster: &TestCluster,
    services: usize,
    bgp: bool,
    deadline: Duration,
) -> Result<()> {
    let sets: Api<PrefixSet> = Api::all(cluster.client.clone());
    let announcements: Api<NodeAnnouncement> = Api::all(cluster.client.clone());
    let started = Instant::now();
    if bgp {
        loop {
            let listed = sets.list(&ListParams::default()).await?;
            // Distinct prefixes, in exactly one shard each: the old shards of
            // a re-shard are gone.
            let held: std::collections::BTreeSet<&String> =
                listed.items.iter().flat_map(|s| &s.spec.prefixes).collect();
            let total: usize = listed.items.iter().map(|s| s.spec.prefixes.len()).sum();
            let held = held.len();
            if held >= services && total == held {
                break;
            }
            if started.elapsed() > deadline {
                bail!("the PrefixSets hold {held} of {services} prefixes after {deadline:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let listed = sets.list(&ListParams::default()).await?;
    let nas = announcements.list(&ListParams::default()).await?;
    let size = |items: &[NodeAnnouncement]| {
        let sizes: Vec<usize> = items.iter().map(bytes).collect();
        (
            sizes.iter().max().copied().unwrap_or(0),
            sizes.iter().sum::<usize>(),
        )
    };
    let (largest_na, na_bytes) = size(&nas.items);
    let largest_set = listed.items.iter().map(bytes).max().unwrap_or(0);
    let set_bytes: usize = listed.items.iter().map(bytes).sum();
    println!(
        "desired state:       {} NodeAnnouncements (largest {} B, {} B in all), {} PrefixSets ({} B in all, largest {} B)",
        nas.items.len(),
        largest_na,
        na_bytes,
        listed.items.len(),
        set_bytes,
        largest_set,
    );

    // One more Service: which desired-state objects change, how big, how
    // fast. Status reports (generation unchanged) are not counted.
    let changes: Arc<Mutex<Vec<Change>>> = Arc::default();
    let watch_sets = {
        let changes = changes.clone();
        let api = sets.clone();
        async move {
            let mut events = watcher(api, watcher::Config::default()).boxed();
            while let Ok(Some(event)) = events.try_next().await {
                if let watcher::Event::Apply(o) = event {
                    changes.lock().await.push((
                        format!("PrefixSet/{}", o.metadata.name.clone().unwrap_or_default()),
                        bytes(&o),
                        Instant::now(),
                        o.spec.prefixes.clone(),
                    ));
                }
            }
        }
    };
    let watch_nas = {
        let changes = changes.clone();
        let api = announcements.clone();
        async move {
            let mut generations: HashMap<String, i64> = HashMap::new();
            let mut events = watcher(api, watcher::Config::default()).boxed();
            while let Ok(Some(event)) = events.try_next().await {
                let o = match event {
                    watcher::Event::Apply(o) | watcher::Event::InitApply(o) => o,
                    _ => continue,
                };
                let name = o.metadata.name.clone().unwrap_or_default();
                let generation = o.metadata.generation.unwrap_or(0);
                let before = generations.insert(name.clone(), generation);
                if before.is_some_and(|g| g < generation) {
                    changes.lock().await.push((
                        format!("NodeAnnouncement/{name}"),
                        bytes(&o),
                        Instant::now(),
                        o.spec
                            .l2
                            .iter()
                            .flat_map(|e| e.ips.iter().map(ferrolb_api::address::format_ip))
                            .collect(),
                    ));
                }
            }
        }
    };
    let watchers = [tokio::spawn(watch_sets), tokio::spawn(watch_nas)];
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
    let condition = |service: &Service, kind: &str| {
        service
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
    };
    let mut to_ip = None;
    let (ip, to_announced) = loop {
        let now = api.get("one-more").await?;
        let ip = now
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .and_then(|i| i.first().and_then(|i| i.ip.clone()));
        if ip.is_some() && to_ip.is_none() {
            to_ip = Some(created.elapsed());
        }
        if let Some(ip) = ip
            && condition(&now, "ferrolb.io/Announced")
        {
            break (ip, created.elapsed());
        }
        if created.elapsed() > deadline {
            bail!("one-more was not Announced after {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    for w in watchers {
        w.abort();
    }
    let changes = changes.lock().await;
    // The IP (or its prefix) in every object that carries it.
    let wanted = if bgp { format!("{ip}/32") } else { ip.clone() };
    let reached = changes
        .iter()
        .filter(|(_, _, _, held)| held.contains(&wanted))
        .map(|(_, _, at, _)| at.saturating_duration_since(created))
        .max();
    let rewritten: usize = changes.iter().map(|(_, size, _, _)| size).sum();
    let names: std::collections::BTreeSet<&str> =
        changes.iter().map(|(n, _, _, _)| n.as_str()).collect();
    println!(
        "one more Service:    IP in {} ms, in every affected node's desired state in {} ms, Announced in {} ms; {} object writes ({} B) to {:?}",
        to_ip.unwrap_or_default().as_millis(),
        reached.map_or("(never)".to_string(), |d| d.as_millis().to_string()),
        to_announced.as_millis(),
        changes.len(),
        rewritten,
        names
    );
    Ok(())
}

/// The steady state: with the bulk present, `count` Services created one at
/// a time, `every` apart (a stream of single creates, each a lone change),
/// each timed from its create to a watch seeing `IPAllocated=True`.
async fn steady_figures(
    cluster: &TestCluster,
    count: usize,
    every: Duration,
    operator: u32,
) -> Result<()> {
    let api: Api<Service> = Api::namespaced(cluster.client.clone(), "load");
    let allocated: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watching = watch_allocated(
        api.clone(),
        watcher::Config::default().labels("load=steady"),
        allocated.clone(),
        count,
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu_before = cpu_ticks(operator).context("operator CPU")?;
    let mut created = HashMap::new();
    for i in 0..count {
        let name = format!("steady-{i:04}");
        let service: Service = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "load", "labels": {"load": "steady"}},
            "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
                     "selector": {"app": name}, "ports": [{"port": 80}]},
        }))?;
        let at = Instant::now();
        api.create(&PostParams::default(), &service).await?;
        created.insert(name, at);
        tokio::time::sleep(every).await;
    }
    if tokio::time::timeout(Duration::from_secs(60), watching)
        .await
        .is_err()
    {
        bail!(
            "only {} of {count} steady Services allocated after 60 s",
            allocated.lock().await.len()
        );
    }
    let cpu = cpu_ticks(operator).context("operator CPU")? - cpu_before;
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
    println!(
        "steady creates:      {count}, one every {} ms: create → IP p50 {} ms, p99 {} ms, max {} ms; operator CPU {:.1} ms per create (Lease renewals included)",
        every.as_millis(),
        percentile(&latencies, 50.0).as_millis(),
        percentile(&latencies, 99.0).as_millis(),
        latencies.last().copied().unwrap_or_default().as_millis(),
        cpu as f64 * 10.0 / count as f64,
    );
    Ok(())
}
