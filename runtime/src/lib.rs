//! What every ferrolb binary runs on: logs, watched stores of Kubernetes
//! objects, and the plain-HTTP endpoint for metrics and health.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::StreamExt;
use kube::Api;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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

/// A request the apiserver has said nothing on for this long fails (a hung
/// call, a half-open connection): no call blocks a loop for longer.
pub const CALL_SILENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Watches are ended by the apiserver after this many seconds and started
/// again from where they were, so a watch that has gone silently dead is
/// noticed within about this time (the watcher's idle timeout follows it),
/// not after five minutes, and an idle watch never trips [`CALL_SILENCE`].
pub const WATCH_SECONDS: u32 = 25;

/// The watch settings every ferrolb watch uses (see [`WATCH_SECONDS`]).
pub fn watch_config() -> watcher::Config {
    watcher::Config::default().timeout(WATCH_SECONDS)
}

/// The client every ferrolb binary uses: the usual in-cluster or kubeconfig
/// settings, and no call waits longer than [`CALL_SILENCE`] for the
/// apiserver (kube's default is to wait for ever).
pub async fn client() -> Result<kube::Client, Box<dyn std::error::Error + Send + Sync>> {
    let mut config = kube::Config::infer().await?;
    config.read_timeout = Some(CALL_SILENCE);
    config.reset_reader_on_write = true;
    Ok(kube::Client::try_from(config)?)
}

/// What a watch just heard, for callers that must tell news from failure
/// (liveness: a watch error is not news that nobody renewed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heard {
    /// An object changed, or a (re-)list is complete: the store is current.
    News,
    /// A (re-)list began: until it completes, the store shows the last one.
    Listing,
    /// One object of a list under way (not in the store until it completes).
    Listed,
    /// The watch failed and is retried with back-off: no news.
    Failed,
}

impl Heard {
    fn of<K>(event: &Result<watcher::Event<K>, watcher::Error>) -> Heard {
        match event {
            Err(_) => Heard::Failed,
            Ok(watcher::Event::Init) => Heard::Listing,
            Ok(watcher::Event::InitApply(_)) => Heard::Listed,
            Ok(watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                Heard::News
            }
        }
    }
}

/// Watches `api` into a store that follows the cluster; `on_event` runs after
/// every event, told what it was (to wake a controller). Watch errors are
/// logged and retried with back-off.
pub fn watch_store<K>(api: Api<K>, on_event: impl Fn(Heard) + Send + 'static) -> Store<K>
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
    let stream = reflector::reflector(writer, watcher(api, watch_config()).default_backoff());
    tokio::spawn(stream.for_each(move |event| {
        if let Err(e) = &event {
            tracing::warn!(error = %e, "watch error; retrying");
        }
        on_event(Heard::of(&event));
        futures::future::ready(())
    }));
    reader
}

/// Labels of the objects a watch could not read.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct KindLabels {
    /// The object's kind.
    pub kind: String,
}

/// Objects (or their statuses) that a watch could not read, by kind; every
/// binary registers it with [`register_unreadable`].
pub static UNREADABLE: std::sync::LazyLock<Family<KindLabels, Counter>> =
    std::sync::LazyLock::new(Family::default);

/// Registers [`UNREADABLE`] in a binary's registry.
pub fn register_unreadable(registry: &mut Registry) {
    registry.register(
        "unreadable_objects",
        "Stored objects, or their statuses, that this binary could not read (skipped; the log names each)",
        UNREADABLE.clone(),
    );
}

/// Reads a watched object as `K`. One that does not read (a value its
/// schema lets through but the type refuses: written by a newer version, by
/// hand, or by a compromised node) is read without its status when that
/// is enough, and otherwise refused: the second value says what was left
/// out, the error why nothing was read.
pub fn read_lenient<K: serde::de::DeserializeOwned>(
    object: &DynamicObject,
) -> Result<(K, Option<String>), String> {
    let mut value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    let whole = match serde_json::from_value::<K>(value.clone()) {
        Ok(read) => return Ok((read, None)),
        Err(e) => e.to_string(),
    };
    match value.as_object_mut().and_then(|o| o.remove("status")) {
        Some(_) => serde_json::from_value::<K>(value)
            .map(|read| (read, Some(format!("its status was left out: {whole}"))))
            .map_err(|e| e.to_string()),
        None => Err(whole),
    }
}

/// Watches objects of `K` (of `namespace`, or everywhere) into a store like
/// [`watch_store`], but one object that does not read never stalls the
/// watch: it is read without its status when that is enough, or else left
/// out; either way the log names it, [`UNREADABLE`] counts it and, given
/// `events`, a Warning Event `Unreadable` on the object says why (once per
/// version of the object). (A typed watch fails its whole list on one such
/// object, and never gets ready.) Use it for ferrolb's own kinds, whose
/// statuses other binaries write.
pub fn watch_store_lenient<K>(
    client: kube::Client,
    namespace: Option<&str>,
    on_event: impl Fn(Heard) + Send + 'static,
    events: Option<kube::runtime::events::Recorder>,
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = match namespace {
        Some(namespace) => Api::namespaced_with(client, namespace, &resource),
        None => Api::all_with(client, &resource),
    };
    let kind = resource.kind.clone();
    let (reader, mut writer) = reflector::store::<K>();
    let mut stream = watcher(api, watch_config()).default_backoff().boxed();
    tokio::spawn(async move {
        // The object versions already reported with an Event.
        let mut reported: std::collections::BTreeSet<(String, String)> = Default::default();
        while let Some(event) = stream.next().await {
            let mut read = |object: &DynamicObject| -> Option<K> {
                let name = object.metadata.name.clone().unwrap_or_default();
                let (read, note) = match read_lenient::<K>(object) {
                    Ok((read, None)) => return Some(read),
                    Ok((read, Some(left_out))) => {
                        tracing::warn!(%kind, %name, %left_out, "object read without its status");
                        (Some(read), format!("{left_out}; the rest of it is used"))
                    }
                    Err(why) => {
                        tracing::warn!(%kind, %name, %why, "object cannot be read; left out");
                        (None, format!("it cannot be read and is left out: {why}"))
                    }
                };
                UNREADABLE
                    .get_or_create(&KindLabels { kind: kind.clone() })
                    .inc();
                let version = (
                    object.metadata.uid.clone().unwrap_or_default(),
                    object.metadata.resource_version.clone().unwrap_or_default(),
                );
                if let Some(recorder) = events.clone().filter(|_| reported.insert(version)) {
                    let reference = k8s_openapi::api::core::v1::ObjectReference {
                        api_version: Some(resource.api_version.clone()),
                        kind: Some(kind.clone()),
                        name: Some(name),
                        namespace: object.metadata.namespace.clone(),
                        uid: object.metadata.uid.clone(),
                        resource_version: object.metadata.resource_version.clone(),
                        ..Default::default()
                    };
                    let event = kube::runtime::events::Event {
                        type_: kube::runtime::events::EventType::Warning,
                        reason: "Unreadable".into(),
                        note: Some(
                            format!("ferrolb could not read this {kind} as written: {note}")
                                .chars()
                                .take(1000)
                                .collect(),
                        ),
                        action: "Read".into(),
                        secondary: None,
                    };
                    tokio::spawn(async move {
                        if let Err(e) = recorder.publish(&event, &reference).await {
                            tracing::warn!(error = %e, "cannot publish the Unreadable event");
                        }
                    });
                }
                read
            };
            let typed = match &event {
                Err(e) => {
                    tracing::warn!(error = %e, %kind, "watch error; retrying");
                    None
                }
                Ok(watcher::Event::Init) => Some(watcher::Event::Init),
                Ok(watcher::Event::InitDone) => Some(watcher::Event::InitDone),
                Ok(watcher::Event::InitApply(o)) => read(o).map(watcher::Event::InitApply),
                Ok(watcher::Event::Apply(o)) => read(o).map(watcher::Event::Apply),
                Ok(watcher::Event::Delete(o)) => read(o).map(watcher::Event::Delete),
            };
            if let Some(typed) = typed {
                writer.apply_watcher_event(&typed);
            }
            on_event(Heard::of(&event));
        }
    });
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

/// Binds a TCP listener on `addr`. `[::]` takes IPv4 too (dual-stack, so
/// the same default works on IPv4-only, IPv6-only and dual-stack nodes), and
/// falls back to `0.0.0.0` on a kernel without IPv6. The error names the
/// address and what it was for, so a port clash ends the binary with a line
/// saying so instead of running without it.
pub fn listen(addr: SocketAddr, what: &str) -> std::io::Result<std::net::TcpListener> {
    let bind = |addr: SocketAddr| -> std::io::Result<std::net::TcpListener> {
        let domain = socket2::Domain::for_address(addr);
        let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            socket.set_only_v6(false)?;
        }
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        socket.set_nonblocking(true)?;
        Ok(socket.into())
    };
    let result = match bind(addr) {
        Err(e)
            if addr.is_ipv6()
                && addr.ip().is_unspecified()
                && e.raw_os_error() == Some(97 /* EAFNOSUPPORT */) =>
        {
            bind(SocketAddr::from(([0, 0, 0, 0], addr.port())))
        }
        other => other,
    };
    result.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {addr} for {what}: {e}"))
    })
}

/// Serves `/metrics` (from `metrics`), `/healthz` (ok while the process runs)
/// and `/readyz` (ok while `ready` says so) over plain HTTP. Binds at once and
/// fails with the reason when it cannot (a port taken by another program);
/// then serves in a task whose handle is returned.
pub fn serve<M, R>(
    addr: SocketAddr,
    metrics: M,
    ready: R,
) -> std::io::Result<tokio::task::JoinHandle<std::io::Result<()>>>
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
    let listener = tokio::net::TcpListener::from_std(listen(addr, "metrics and health")?)?;
    Ok(tokio::spawn(
        async move { axum::serve(listener, app).await },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_an_error_naming_the_address() {
        let first = listen("127.0.0.1:0".parse().unwrap(), "metrics").unwrap();
        let taken = first.local_addr().unwrap();
        let error = listen(taken, "metrics and health").unwrap_err();
        assert!(
            error
                .to_string()
                .contains(&format!("cannot listen on {taken} for metrics and health")),
            "{error}"
        );
    }

    #[test]
    fn the_unspecified_ipv6_address_takes_ipv4_too() {
        let listener = listen("[::]:0".parse().unwrap(), "metrics").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("IPv4 through [::]");
    }
}

#[cfg(test)]
mod lenient {
    use super::*;
    use ferrolb_api::NodeAnnouncement;

    fn object(json: &str) -> DynamicObject {
        serde_json::from_str(json).expect("an object")
    }

    #[test]
    fn a_status_that_does_not_read_is_left_out_and_a_spec_that_does_not_read_refuses_the_object() {
        // "aa" passes the CRD's loose pattern; "Exploded" is a state from a
        // newer speaker, say.
        let bad_status = object(
            r#"{"apiVersion": "ferrolb.io/v1alpha1", "kind": "NodeAnnouncement",
                "metadata": {"name": "node-a"},
                "spec": {"l2": [{"role": "active", "ips": ["10.0.0.1"]}]},
                "status": {"l2": [{"state": "Exploded", "ips": ["aa"]}]}}"#,
        );
        let (read, left_out) = read_lenient::<NodeAnnouncement>(&bad_status).expect("read");
        assert!(read.status.is_none());
        assert_eq!(read.spec.l2.len(), 1, "the spec is kept");
        assert!(left_out.expect("said").contains("status was left out"));
        let bad_spec = object(
            r#"{"apiVersion": "ferrolb.io/v1alpha1", "kind": "NodeAnnouncement",
                "metadata": {"name": "node-b"},
                "spec": {"l2": [{"role": "leader", "ips": ["10.0.0.1"]}]}}"#,
        );
        assert!(read_lenient::<NodeAnnouncement>(&bad_spec).is_err());
        let good = object(
            r#"{"apiVersion": "ferrolb.io/v1alpha1", "kind": "NodeAnnouncement",
                "metadata": {"name": "node-c"}, "spec": {}}"#,
        );
        assert_eq!(
            read_lenient::<NodeAnnouncement>(&good).map(|(_, note)| note),
            Ok(None)
        );
    }
}
