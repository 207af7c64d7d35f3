//! AdmissionReview in, AdmissionReview out: one validating endpoint per config
//! kind, run on a [`Snapshot`] of the cluster. Malformed input gets an
//! `allowed: false` review saying why, never a panic.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use ferrolb_api::{BGPAdvertisement, BGPPeer, IPAddressPool, L2Advertisement};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde::de::DeserializeOwned;

use crate::metrics::Metrics;
use crate::rules::{self, Snapshot, Verdict};

/// Which kinds a decision reads; the rest of the snapshot stays empty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// IPAddressPools.
    pub pools: bool,
    /// BGPPeers.
    pub peers: bool,
    /// BGPAdvertisements.
    pub bgp_advertisements: bool,
    /// Services holding IPs.
    pub services: bool,
    /// BFDProfile names.
    pub bfd_profiles: bool,
}

impl Needs {
    /// What the rules for the resource `kind` read.
    pub fn of(kind: &str) -> Needs {
        match kind {
            "ipaddresspools" => Needs {
                pools: true,
                bgp_advertisements: true,
                services: true,
                ..Needs::default()
            },
            "bgppeers" => Needs {
                peers: true,
                bfd_profiles: true,
                ..Needs::default()
            },
            "l2advertisements" => Needs {
                pools: true,
                ..Needs::default()
            },
            "bfdprofiles" => Needs {
                peers: true,
                ..Needs::default()
            },
            _ => Needs {
                pools: true,
                peers: true,
                bgp_advertisements: true,
                ..Needs::default()
            },
        }
    }
}

/// Where the handler gets the cluster's objects from.
pub trait Source: Send + Sync + 'static {
    /// The objects as they are now, of the kinds in `needs`.
    fn snapshot(&self, needs: Needs) -> Pin<Box<dyn Future<Output = Snapshot> + Send + '_>>;

    /// Whether a Secret key exists (for the password reference warning).
    fn secret_exists<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        key: &'a str,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
}

/// A fixed snapshot, for tests and benchmarks: every Secret exists.
pub struct Fixed(pub Snapshot);

impl Source for Fixed {
    fn snapshot(&self, _: Needs) -> Pin<Box<dyn Future<Output = Snapshot> + Send + '_>> {
        Box::pin(async { self.0.clone() })
    }

    fn secret_exists<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a str,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async { true })
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct Handler {
    source: Arc<dyn Source>,
    metrics: Arc<Metrics>,
}

/// The kinds with an endpoint, by their plural resource name.
const KINDS: [&str; 5] = [
    "ipaddresspools",
    "l2advertisements",
    "bgppeers",
    "bgpadvertisements",
    "bfdprofiles",
];

fn typed<T: DeserializeOwned>(object: &Option<DynamicObject>) -> Result<Option<T>, String> {
    match object {
        None => Ok(None),
        Some(object) => serde_json::to_value(object)
            .and_then(serde_json::from_value)
            .map(Some)
            .map_err(|e| format!("the object cannot be read: {e}")),
    }
}

impl Handler {
    /// A handler over `source`.
    pub fn new(source: Arc<dyn Source>, metrics: Arc<Metrics>) -> Handler {
        Handler { source, metrics }
    }

    /// Decides one request for the resource `kind` (plural, lower case).
    pub async fn decide(
        &self,
        kind: &str,
        request: &AdmissionRequest<DynamicObject>,
    ) -> Result<Verdict, String> {
        let snapshot = self.source.snapshot(Needs::of(kind)).await;
        let new = if request.operation == Operation::Delete {
            None
        } else {
            request.object.clone()
        };
        let old = request.old_object.clone();
        match kind {
            "ipaddresspools" => {
                let new: Option<IPAddressPool> = typed(&new)?;
                let old: Option<IPAddressPool> = typed(&old)?;
                Ok(rules::pool(new.as_ref(), old.as_ref(), &snapshot))
            }
            "bfdprofiles" if request.operation == Operation::Delete => {
                Ok(rules::bfd_profile_deleted(&request.name, &snapshot))
            }
            _ if new.is_none() => Ok(Verdict::default()),
            "l2advertisements" => {
                let new: L2Advertisement = typed(&new)?.ok_or("no object")?;
                Ok(rules::l2_advertisement(&new, &snapshot))
            }
            "bgppeers" => {
                let new: BGPPeer = typed(&new)?.ok_or("no object")?;
                let missing = match &new.spec.password_secret_ref {
                    Some(s) => {
                        !self
                            .source
                            .secret_exists(&s.namespace, &s.name, &s.key)
                            .await
                    }
                    None => false,
                };
                Ok(rules::peer(&new, &snapshot, missing))
            }
            "bgpadvertisements" => {
                let new: BGPAdvertisement = typed(&new)?.ok_or("no object")?;
                Ok(rules::bgp_advertisement(&new, &snapshot))
            }
            "bfdprofiles" => Ok(Verdict::default()),
            other => Err(format!("ferrolb-webhook does not validate {other}")),
        }
    }

    /// The AdmissionReview answering `body`, for the resource `kind`.
    pub async fn review(&self, kind: &str, body: &[u8]) -> AdmissionReview<DynamicObject> {
        let started = Instant::now();
        let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
            Ok(review) => review,
            Err(e) => {
                self.metrics.admitted(kind, "malformed", started);
                return AdmissionResponse::invalid(format!("not an AdmissionReview: {e}"))
                    .into_review();
            }
        };
        let request: AdmissionRequest<DynamicObject> = match review.try_into() {
            Ok(request) => request,
            Err(e) => {
                self.metrics.admitted(kind, "malformed", started);
                return AdmissionResponse::invalid(format!(
                    "no request in the AdmissionReview: {e}"
                ))
                .into_review();
            }
        };
        let mut response = AdmissionResponse::from(&request);
        let name = request.name.clone();
        // The one delete entry (`/validate/deletes`) carries several kinds:
        // the request names its resource.
        let resource = request.resource.resource.clone();
        let kind = if kind == DELETES && KINDS.contains(&resource.as_str()) {
            resource.as_str()
        } else {
            kind
        };
        let outcome = match self.decide(kind, &request).await {
            Ok(verdict) => {
                if !verdict.warnings.is_empty() {
                    response.warnings = Some(verdict.warnings.clone());
                }
                if verdict.allowed() {
                    if verdict.warnings.is_empty() {
                        "allowed"
                    } else {
                        "warned"
                    }
                } else {
                    response = response.deny(verdict.denials.join("; "));
                    "denied"
                }
            }
            Err(message) => {
                response = response.deny(message);
                "denied"
            }
        };
        tracing::info!(kind, %name, operation = ?request.operation, outcome, message = %response.result.message, "admission");
        self.metrics.admitted(kind, outcome, started);
        response.into_review()
    }
}

/// The path of the webhook entry for deletes, of every kind that has rules
/// for them. One entry, not one per kind: the webhook writes `caBundle` into
/// each entry, so an entry a later version drops would be left half-written
/// by a server-side apply (Helm's rollback) and refused. Entries are never
/// added or removed, only their rules and paths change.
const DELETES: &str = "deletes";

async fn validate(
    State(handler): State<Handler>,
    Path(kind): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if !KINDS.contains(&kind.as_str()) && kind != DELETES {
        return (StatusCode::NOT_FOUND, format!("no endpoint for {kind}")).into_response();
    }
    Json(handler.review(&kind, &body).await).into_response()
}

/// The admission routes: `POST /validate/{ipaddresspools|l2advertisements|bgppeers|bgpadvertisements|bfdprofiles|deletes}`,
/// plus `/healthz` and `/readyz` so probes can use the TLS port too.
pub fn router(handler: Handler) -> Router {
    Router::new()
        .route("/validate/{kind}", post(validate))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .with_state(handler)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    fn pool(name: &str, addresses: &[&str]) -> Value {
        json!({"apiVersion": "ferrolb.io/v1alpha1", "kind": "IPAddressPool",
               "metadata": {"name": name}, "spec": {"addresses": addresses}})
    }

    fn review(kind: &str, operation: &str, object: Value, old: Value) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "0b9e3a6c-1", "kind": {"group": "ferrolb.io", "version": "v1alpha1", "kind": kind},
                "resource": {"group": "ferrolb.io", "version": "v1alpha1", "resource": kind.to_lowercase() + "s"},
                "name": "x", "operation": operation, "userInfo": {"username": "admin"},
                "object": object, "oldObject": old, "dryRun": false,
            }
        })
    }

    async fn post(snapshot: Snapshot, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let handler = Handler::new(Arc::new(Fixed(snapshot)), Metrics::new());
        let response = router(handler)
            .oneshot(
                Request::post(path)
                    .header("content-type", "application/json")
                    .body(Body::from(body))
                    .expect("request"),
            )
            .await
            .expect("response");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn an_overlapping_pool_is_denied_with_uid_and_message() {
        let snapshot: Snapshot = Snapshot {
            pools: vec![serde_json::from_value(pool("other", &["10.0.0.0/24"])).expect("pool")],
            ..Snapshot::default()
        };
        let body = review(
            "IPAddressPool",
            "CREATE",
            pool("new", &["10.0.0.128/25"]),
            Value::Null,
        );
        let (status, answer) = post(
            snapshot,
            "/validate/ipaddresspools",
            serde_json::to_vec(&body).expect("json"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["response"]["uid"], "0b9e3a6c-1");
        assert_eq!(answer["response"]["allowed"], false);
        let message = answer["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(message.contains("IPAddressPool 'other'"), "{answer}");
    }

    #[tokio::test]
    async fn a_deleted_pool_with_services_is_allowed_with_warnings() {
        let snapshot = Snapshot {
            pools: vec![serde_json::from_value(pool("p", &["10.0.0.0/24"])).expect("pool")],
            services: vec![rules::ServiceIps {
                name: "default/web".into(),
                ips: vec!["10.0.0.9".parse().expect("ip")],
            }],
            ..Snapshot::default()
        };
        let body = review(
            "IPAddressPool",
            "DELETE",
            Value::Null,
            pool("p", &["10.0.0.0/24"]),
        );
        let (_, answer) = post(
            snapshot,
            "/validate/ipaddresspools",
            serde_json::to_vec(&body).expect("json"),
        )
        .await;
        assert_eq!(answer["response"]["allowed"], true);
        assert!(
            answer["response"]["warnings"][0]
                .as_str()
                .unwrap_or_default()
                .contains("default/web (10.0.0.9)")
        );
    }

    #[tokio::test]
    async fn a_valid_peer_is_allowed() {
        let peer = json!({"apiVersion": "ferrolb.io/v1alpha1", "kind": "BGPPeer", "metadata": {"name": "r"},
                          "spec": {"myASN": 64512, "peerASN": 64513, "peerAddress": "192.168.10.254"}});
        let body = review("BGPPeer", "CREATE", peer, Value::Null);
        let (_, answer) = post(
            Snapshot::default(),
            "/validate/bgppeers",
            serde_json::to_vec(&body).expect("json"),
        )
        .await;
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
    }

    #[tokio::test]
    async fn garbage_gets_a_refusal_not_a_crash() {
        for body in [
            b"".to_vec(),
            b"{".to_vec(),
            b"[]".to_vec(),
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
        ] {
            let (status, answer) = post(Snapshot::default(), "/validate/bgppeers", body).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(answer["response"]["allowed"], false, "{answer}");
        }
        let wrong_object = review(
            "BGPPeer",
            "CREATE",
            json!({"apiVersion": "ferrolb.io/v1alpha1", "kind": "BGPPeer", "metadata": {"name": "r"}, "spec": {"myASN": "many"}}),
            Value::Null,
        );
        let (_, answer) = post(
            Snapshot::default(),
            "/validate/bgppeers",
            serde_json::to_vec(&wrong_object).expect("json"),
        )
        .await;
        assert_eq!(answer["response"]["allowed"], false);
        assert!(
            answer["response"]["status"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("cannot be read")
        );
        let (status, _) = post(Snapshot::default(), "/validate/services", b"{}".to_vec()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
