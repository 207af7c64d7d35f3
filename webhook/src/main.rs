//! `ferrolb-webhook`: validating admission for IPAddressPools, L2Advertisements,
//! BGPPeers and BGPAdvertisements.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use ferrolb_api::constants::NAMESPACE;
use ferrolb_webhook::admission::{Handler, router};
use ferrolb_webhook::metrics::Metrics;
use ferrolb_webhook::source::Watched;
use ferrolb_webhook::tls::{CertStore, Mounted, SelfManaged};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "ferrolb webhook: validating admission for ferrolb objects"
)]
struct Cli {
    /// Where to serve admission over HTTPS.
    #[arg(long, env = "FERROLB_LISTEN", default_value = "[::]:9443")]
    listen: SocketAddr,
    /// Where to serve /metrics, /healthz and /readyz over plain HTTP.
    #[arg(long, env = "FERROLB_METRICS_ADDR", default_value = "[::]:9091")]
    metrics_addr: SocketAddr,
    /// Log as JSON lines.
    #[arg(long, env = "FERROLB_LOG_JSON")]
    log_json: bool,
    /// The namespace of the certificate Secret.
    #[arg(long, env = "POD_NAMESPACE", default_value = NAMESPACE)]
    namespace: String,
    /// The Secret holding the self-managed CA and serving certificate.
    #[arg(long, default_value = "ferrolb-webhook-tls")]
    secret: String,
    /// The ValidatingWebhookConfiguration whose caBundle this webhook keeps.
    #[arg(long, default_value = "ferrolb-webhook")]
    webhook_config: String,
    /// The webhook's Service (in `--namespace`): the serving certificate is
    /// made for its DNS names unless `--dns-names` says otherwise.
    #[arg(long, default_value = "ferrolb-webhook")]
    service: String,
    /// DNS names for the serving certificate (comma-separated; default: the
    /// Service's `NAME.NAMESPACE.svc` and `NAME.NAMESPACE.svc.cluster.local`).
    #[arg(long, value_delimiter = ',')]
    dns_names: Vec<String>,
    /// IP addresses for the serving certificate (comma-separated).
    #[arg(long, value_delimiter = ',')]
    ip_sans: Vec<IpAddr>,
    /// Seconds a serving certificate lives; it is replaced with a third left.
    #[arg(long, default_value_t = 90 * 24 * 3600)]
    cert_validity_seconds: u64,
    /// Seconds the self-managed CA lives.
    #[arg(long, default_value_t = 10 * 365 * 24 * 3600)]
    ca_validity_seconds: u64,
    /// Serve this certificate (cert-manager) instead of managing one; reloaded
    /// when the file changes.
    #[arg(long, requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// The key of `--tls-cert-file`.
    #[arg(long, requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
}

/// The serving certificate's DNS names: those given, else the Service's.
fn dns_names(cli: &Cli) -> Vec<String> {
    if !cli.dns_names.is_empty() {
        return cli.dns_names.clone();
    }
    let short = format!("{}.{}.svc", cli.service, cli.namespace);
    vec![short.clone(), format!("{short}.cluster.local")]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ferrolb_runtime::init_logs(cli.log_json);
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Liveness answers from the start; readiness once the certificate is in
    // place, the caches are synced and admission is served.
    let metrics = Metrics::new();
    let store = Arc::new(CertStore::default());
    let serving = Arc::new(AtomicBool::new(false));
    let health = {
        let (metrics, store, serving) = (metrics.clone(), store.clone(), serving.clone());
        ferrolb_runtime::serve(
            cli.metrics_addr,
            move || metrics.encode(),
            move || serving.load(Ordering::Relaxed) && store.ready(),
        )?
    };
    let listener = ferrolb_runtime::listen(cli.listen, "admission (HTTPS)")?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // PID 1 in its container: SIGTERM must end it, whatever stage it is in.
    tokio::select! {
        result = run(cli, metrics, store, serving, listener) => result,
        served = health => Err(anyhow::anyhow!("the health server stopped: {served:?}")),
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted; stopping");
            Ok(())
        }
        _ = terminate.recv() => {
            tracing::info!("terminated; stopping");
            Ok(())
        }
    }
}

async fn run(
    cli: Cli,
    metrics: Arc<Metrics>,
    store: Arc<CertStore>,
    serving: Arc<AtomicBool>,
    listener: std::net::TcpListener,
) -> anyhow::Result<()> {
    let client = ferrolb_runtime::client()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the apiserver: {e}"))?;
    match (&cli.tls_cert_file, &cli.tls_key_file) {
        (Some(cert), Some(key)) => {
            let mounted = Mounted {
                cert: cert.clone(),
                key: key.clone(),
                store: store.clone(),
            };
            mounted.load()?;
            tokio::spawn(mounted.run());
        }
        _ => {
            let managed = SelfManaged {
                client: client.clone(),
                namespace: cli.namespace.clone(),
                secret: cli.secret.clone(),
                webhook_config: cli.webhook_config.clone(),
                dns_names: dns_names(&cli),
                ips: cli.ip_sans.clone(),
                validity: Duration::from_secs(cli.cert_validity_seconds),
                ca_validity: Duration::from_secs(cli.ca_validity_seconds),
                store: store.clone(),
                metrics: metrics.clone(),
            };
            // The first certificate before serving; then keep it fresh.
            while let Err(e) = managed.ensure().await {
                tracing::warn!(error = %e, "cannot set up the serving certificate yet");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            tokio::spawn(managed.run());
        }
    }

    let watched = Watched::start(client);
    watched.ready().await?;
    tracing::info!("caches synced");
    let handler = Handler::new(Arc::new(watched), metrics.clone());

    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
    tracing::info!(listen = %cli.listen, "ferrolb-webhook serving");
    let server =
        axum_server::from_tcp_rustls(listener, tls)?.serve(router(handler).into_make_service());
    serving.store(true, Ordering::Relaxed);
    server.await?;
    Ok(())
}
