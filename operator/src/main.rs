//! `ferrolb-operator`: gives every LoadBalancer Service an IP from the
//! IPAddressPools and says so on the Service.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use ferrolb_api::constants::{LB_CLASS, NAMESPACE};
use ferrolb_operator::{controller, leader, metrics};
use tokio::sync::watch;

#[derive(Parser, Debug)]
// A flag given twice takes its last value, so wrappers can override defaults.
#[command(
    version,
    about = "ferrolb operator: IPs for LoadBalancer Services, from IPAddressPools",
    args_override_self = true
)]
struct Cli {
    /// The spec.loadBalancerClass handled, besides Services with no class.
    #[arg(long, env = "FERROLB_LB_CLASS", default_value = LB_CLASS)]
    lb_class: String,
    /// Where to serve /metrics, /healthz and /readyz.
    #[arg(long, env = "FERROLB_METRICS_ADDR", default_value = "[::]:9090")]
    metrics_addr: SocketAddr,
    /// Log as JSON lines.
    #[arg(long, env = "FERROLB_LOG_JSON")]
    log_json: bool,
    /// Elect a leader among replicas through a Lease; without it this replica
    /// always writes (run only one).
    #[arg(long, env = "FERROLB_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// The namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = NAMESPACE)]
    namespace: String,
    /// This replica's identity (default: the pod or host name and the PID).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a leader Lease lasts without renewal.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Use nodes labelled node.kubernetes.io/exclude-from-external-load-balancers
    /// (single-node and control-plane-only clusters, where every node has it).
    #[arg(long, env = "FERROLB_IGNORE_EXCLUDE_LB")]
    ignore_exclude_lb: bool,
    /// Concurrent writes to the API.
    #[arg(long, default_value_t = 16)]
    write_concurrency: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ferrolb_runtime::init_logs(cli.log_json);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let identity = cli.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let client = ferrolb_runtime::client()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the apiserver: {e}"))?;
    tokio::spawn(ferrolb_operator::failover_key::ensure(
        client.clone(),
        cli.namespace.clone(),
    ));
    let metrics = metrics::Metrics::new();
    let (leading_tx, leading_rx) = watch::channel(!cli.leader_elect);
    let term = if cli.leader_elect {
        leader::Term::elected()
    } else {
        leader::Term::always()
    };
    if cli.leader_elect {
        let term = term.clone();
        let client = client.clone();
        let (namespace, identity) = (cli.namespace.clone(), identity.clone());
        let timing = leader::Timing::from_duration(Duration::from_secs(cli.lease_duration_seconds));
        tokio::spawn(async move {
            leader::run(
                client,
                &namespace,
                ferrolb_api::constants::LEADER_LEASE,
                &identity,
                timing,
                leading_tx,
                term,
            )
            .await;
        });
    }
    let serve = {
        let metrics = metrics.clone();
        ferrolb_runtime::serve(cli.metrics_addr, move || metrics.encode(), || true)?
    };
    tracing::info!(%identity, lb_class = %cli.lb_class, metrics = %cli.metrics_addr, "ferrolb-operator starting");
    let config = controller::Config {
        lb_class: cli.lb_class.clone(),
        identity: identity.clone(),
        write_concurrency: cli.write_concurrency,
        namespace: cli.namespace.clone(),
        ignore_exclude_lb: cli.ignore_exclude_lb,
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        result = controller::run(client.clone(), config, metrics, leading_rx, term) => result,
        served = serve => Err(anyhow::anyhow!("the metrics server stopped: {served:?}")),
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = terminate.recv() => Ok(()),
    };
    if cli.leader_elect {
        match leader::release(
            client,
            &cli.namespace,
            ferrolb_api::constants::LEADER_LEASE,
            &identity,
        )
        .await
        {
            Ok(true) => tracing::info!("leader Lease released for the next replica"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot release the leader Lease; it expires by itself")
            }
        }
    }
    tracing::info!("stopped");
    result
}
