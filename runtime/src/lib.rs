//! What every ferrolb binary runs on: logs, watched stores of Kubernetes
//! objects, and the plain-HTTP endpoint for metrics and health.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::StreamExt;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use prometheus_client::registry::Registry;

/// Starts logging: JSON lines with `json`, else text, coloured only on a
/// terminal so logs in files stay greppable. `RUST_LOG` filters (default info).
pub fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        tracing_subscriber::fmt()
            .with_ansi(ansi)
            .with_env_filter(filter)
            .init();
    }
}

/// Watches `api` into a store that follows the cluster; `on_event` runs after
/// every event (to wake a controller). Watch errors are logged and retried
/// with back-off.
pub fn watch_store<K>(api: Api<K>, on_event: impl Fn() + Send + 'static) -> Store<K>
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    tokio::spawn(stream.for_each(move |event| {
        if let Err(e) = event {
            tracing::warn!(error = %e, "watch error; retrying");
        }
        on_event();
        futures::future::ready(())
    }));
    reader
}

/// The text exposition of a registry.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

/// Serves `/metrics` (from `metrics`), `/healthz` and `/readyz` (true while
/// `ready` says so) over plain HTTP until the process ends.
pub fn serve<M, R>(
    addr: SocketAddr,
    metrics: M,
    ready: R,
) -> impl Future<Output = std::io::Result<()>>
where
    M: Fn() -> String + Clone + Send + Sync + 'static,
    R: Fn() -> bool + Clone + Send + Sync + 'static,
{
    let metrics = Arc::new(metrics);
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let page = metrics();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        page,
                    )
                        .into_response()
                }
            }),
        )
        .route("/healthz", get(|| async { (StatusCode::OK, "ok") }))
        .route(
            "/readyz",
            get(move || {
                let ok = ready();
                async move {
                    if ok {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        );
    async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        axum::serve(listener, app).await
    }
}
