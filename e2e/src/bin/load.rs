//! `ferrolb-load`: the allocation load driver. Starts a fresh control plane and
//! the operator, creates N LoadBalancer Services, and prints how long until all
//! have `IPAllocated=True`, the per-Service latency (p50/p99), the operator's RSS
//! at idle and at its peak, and the API writes it made. Figures only: nothing
//! here asserts a time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use ferrolb_e2e::cluster::TestCluster;
use ferrolb_e2e::process::{Process, binary};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::PostParams;
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
    Ok(())
}
