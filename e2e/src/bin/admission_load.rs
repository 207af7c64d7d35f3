//! `ferrolb-admission-load`: admission latency with many existing pools. Starts a
//! control plane and the webhook, creates N pools (default 1,000), then times
//! dry-run creates of one more pool through the apiserver, with the webhook and
//! then without it, and prints p50/p99 of each. Figures only.

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use ferrolb_api::IPAddressPool;
use ferrolb_e2e::cluster::TestCluster;
use futures::{StreamExt, TryStreamExt, stream};
use kube::Api;
use kube::api::{DeleteParams, PostParams};

#[derive(Parser)]
#[command(about = "Admission latency with N existing pools")]
struct Cli {
    /// Pools that exist before measuring.
    #[arg(long, default_value_t = 1000)]
    pools: usize,
    /// Timed admissions per configuration.
    #[arg(long, default_value_t = 300)]
    samples: usize,
}

fn pool(name: &str, cidr: &str) -> Result<IPAddressPool> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "ferrolb.io/v1alpha1", "kind": "IPAddressPool",
        "metadata": {"name": name}, "spec": {"addresses": [cidr]},
    }))?)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * (sorted.len().saturating_sub(1)) as f64).round() as usize;
    sorted.get(rank).copied().unwrap_or_default()
}

async fn measure(api: &Api<IPAddressPool>, samples: usize) -> Result<Vec<Duration>> {
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        let candidate = pool(&format!("probe-{i}"), &format!("172.31.{}.0/24", i % 256))?;
        let started = Instant::now();
        api.create(&dry_run, &candidate).await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times)
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let cluster = TestCluster::start().await?;
    let webhook = cluster.webhook(&[]).await?;
    let api: Api<IPAddressPool> = Api::all(cluster.client.clone());
    let started = Instant::now();
    stream::iter(0..cli.pools)
        .map(|i| {
            let api = api.clone();
            async move {
                let p = pool(
                    &format!("pool-{i:04}"),
                    &format!("10.{}.{}.0/24", i / 256, i % 256),
                )?;
                api.create(&PostParams::default(), &p).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    println!(
        "created {} pools through the webhook in {:.1}s",
        cli.pools,
        started.elapsed().as_secs_f64()
    );

    let with = measure(&api, cli.samples).await?;
    cluster.kubectl(&[
        "delete",
        "validatingwebhookconfiguration",
        "ferrolb-webhook",
    ])?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let without = measure(&api, cli.samples).await?;
    for (label, times) in [("with the webhook", &with), ("without a webhook", &without)] {
        println!(
            "admission of one pool among {} ({label}): p50 {:.1} ms, p99 {:.1} ms",
            cli.pools,
            percentile(times, 50.0).as_secs_f64() * 1000.0,
            percentile(times, 99.0).as_secs_f64() * 1000.0,
        );
    }
    let _ = api.delete("pool-0000", &DeleteParams::default()).await;
    drop(webhook);
    Ok(())
}
