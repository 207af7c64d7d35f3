//! The write layer: the one place the operator writes to the API.
//!
//! - [`Tracker`] answers "already written?" for every kind, so a pass right
//!   after a write (whose watch event has not arrived) does not write again,
//!   and a write the apiserver refused is not repeated until the plan wants
//!   something else.
//! - The leader gate: nothing is written unless this replica leads, checked
//!   before each write, not only before the pass.
//! - [`Failure`] classifies what the apiserver answered, with the retry each
//!   deserves.
//! - Events and counters are emitted only after the write they describe
//!   landed.

pub mod memo;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrolb_api::bgppeer::BGPPeerStatus;
use ferrolb_api::constants::manager;
use ferrolb_api::{
    BGPPeer, IPAddressPool, IPAddressPoolStatus, NodeAnnouncement, NodeAnnouncementSpec, PrefixSet,
    PrefixSetSpec,
};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource};
use serde_json::json;

use crate::cluster::version;
use crate::leader::Term;
use crate::metrics::{Metrics, ReasonLabels};
use crate::plan::allocation::ServiceKey;
use crate::plan::status::{self, Desired};
use crate::plan::{Seen, Write};
use memo::Memo;

/// Why a write did not land, as far as retrying goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// 409: someone else changed the object; the next pass sees the new one.
    Conflict,
    /// 422, 400 or 413: the apiserver (schema, webhook, admission, size)
    /// refuses this value. Writing it again would be refused again: not retried until the
    /// plan wants something else.
    Invalid(String),
    /// 401/403: not allowed (RBAC, a policy). Retried slowly: an operator may
    /// fix the role.
    Forbidden(String),
    /// 404: the object is gone; its watch event will follow.
    NotFound,
    /// Anything else (5xx, 429, timeouts, connection errors): retried with
    /// a growing backoff.
    Transient(String),
}

/// When a failed write is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// With the next pass, whatever wakes it.
    NextPass,
    /// Only once the plan wants another value.
    WhenChanged,
    /// After the backoff, doubling while failures go on.
    Backoff,
    /// After a long wait.
    Slowly,
}

impl Failure {
    /// Classifies an error from the API client.
    pub fn of(error: &kube::Error) -> Failure {
        match error {
            kube::Error::Api(e) => match e.code {
                409 => Failure::Conflict,
                // 413: too large to store; the same value stays too large.
                400 | 413 | 422 => Failure::Invalid(e.message.clone()),
                401 | 403 => Failure::Forbidden(e.message.clone()),
                404 => Failure::NotFound,
                _ => Failure::Transient(format!("{} ({})", e.message, e.code)),
            },
            other => Failure::Transient(other.to_string()),
        }
    }

    /// The retry this failure deserves.
    pub fn retry(&self) -> Retry {
        match self {
            Failure::Conflict | Failure::NotFound => Retry::NextPass,
            Failure::Invalid(_) => Retry::WhenChanged,
            Failure::Forbidden(_) => Retry::Slowly,
            Failure::Transient(_) => Retry::Backoff,
        }
    }

    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Conflict => "conflict",
            Failure::Invalid(_) => "invalid",
            Failure::Forbidden(_) => "forbidden",
            Failure::NotFound => "not_found",
            Failure::Transient(_) => "transient",
        }
    }
}

/// "Already written?" for every kind the operator writes.
#[derive(Debug, Default)]
pub struct Tracker {
    services: Memo<ServiceKey, Desired>,
    announcements: Memo<String, NodeAnnouncementSpec>,
    prefix_sets: Memo<String, PrefixSetSpec>,
    pools: Memo<String, IPAddressPoolStatus>,
    peers: Memo<String, BGPPeerStatus>,
}

impl Tracker {
    /// Whether a write the plan wants must be made.
    pub fn needs(&mut self, write: &Write) -> bool {
        let check = |seen: &Seen| (seen.up_to_date, seen.version);
        match write {
            Write::Service {
                key, desired, seen, ..
            } => {
                let (up, rv) = check(seen);
                self.services.needs(key, desired, up, rv)
            }
            Write::Announcement { node, spec, seen } => {
                let (up, rv) = check(seen);
                self.announcements.needs(node, spec, up, rv)
            }
            Write::PrefixSet { name, spec, seen } => {
                let (up, rv) = check(seen);
                self.prefix_sets.needs(name, spec, up, rv)
            }
            Write::Pool { name, status, seen } => {
                let (up, rv) = check(seen);
                self.pools.needs(name, status, up, rv)
            }
            Write::Peer { name, status, seen } => {
                let (up, rv) = check(seen);
                self.peers.needs(name, status, up, rv)
            }
            Write::Clear { .. } | Write::Retire { .. } | Write::DropPrefixSet { .. } => true,
        }
    }

    /// Forgets what was written on objects that are gone.
    pub fn forget_service(&mut self, key: &ServiceKey) {
        self.services.forget(key);
    }

    fn landed(&mut self, outcome: Landed) {
        match outcome {
            Landed::Service(key, desired, rv) => self.services.record(key, desired, rv),
            Landed::Announcement(node, spec, rv) => self.announcements.record(node, spec, rv),
            Landed::PrefixSet(name, spec, rv) => self.prefix_sets.record(name, spec, rv),
            Landed::Pool(name, status, rv) => self.pools.record(name, status, rv),
            Landed::Peer(name, status, rv) => self.peers.record(name, status, rv),
            Landed::Retired(node) => self.announcements.forget(&node),
            Landed::Dropped(name) => self.prefix_sets.forget(&name),
            Landed::Cleared => {}
        }
    }

    /// A value the apiserver refused: not written again until the plan
    /// wants another.
    fn refused(&mut self, write: Write) {
        match write {
            Write::Service { key, desired, .. } => self.services.refuse(key, desired),
            Write::Announcement { node, spec, .. } => self.announcements.refuse(node, spec),
            Write::PrefixSet { name, spec, .. } => self.prefix_sets.refuse(name, spec),
            Write::Pool { name, status, .. } => self.pools.refuse(name, status),
            Write::Peer { name, status, .. } => self.peers.refuse(name, status),
            Write::Clear { .. } | Write::Retire { .. } | Write::DropPrefixSet { .. } => {}
        }
    }
}

/// A write that landed, with the resourceVersion it produced.
enum Landed {
    Service(ServiceKey, Desired, u64),
    Announcement(String, NodeAnnouncementSpec, u64),
    PrefixSet(String, PrefixSetSpec, u64),
    Pool(String, IPAddressPoolStatus, u64),
    Peer(String, BGPPeerStatus, u64),
    Retired(String),
    Dropped(String),
    Cleared,
}

/// One write's end.
enum Done {
    Landed(Landed),
    Failed(Write, Failure),
    /// No answer within [`WRITE_TIMEOUT`]: retried with the backoff.
    TimedOut,
    NotLeading,
}

/// A write with no answer for this long is given up (and retried with the
/// backoff), so one hung call never holds a pass, or the next leader's
/// start, behind it.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a batch of writes came to.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Writes made.
    pub written: usize,
    /// Writes skipped: already written.
    pub skipped: usize,
    /// Writes not made: this replica stopped leading, or its term ended.
    pub not_leading: usize,
    /// Writes that got no answer or a server-side error (timeouts, 5xx,
    /// connection failures): what says this replica cannot write.
    pub unanswered: usize,
    /// The soonest retry the failures ask for, if any failed.
    pub retry: Option<Retry>,
}

/// The one writer.
pub struct Writer {
    client: Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    term: Term,
    concurrency: usize,
    tracker: Tracker,
}

impl Writer {
    /// A writer that writes only during `term`, each write given up when
    /// the term ends (or after [`WRITE_TIMEOUT`]).
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        term: Term,
        concurrency: usize,
    ) -> Writer {
        Writer {
            client,
            recorder,
            metrics,
            term,
            concurrency: concurrency.max(1),
            tracker: Tracker::default(),
        }
    }

    /// Forgets everything written (a new term as leader starts afresh).
    pub fn reset(&mut self) {
        self.tracker = Tracker::default();
    }

    /// The tracker, for what a pass released.
    pub fn tracker(&mut self) -> &mut Tracker {
        &mut self.tracker
    }

    /// Writes what is not written yet, `concurrency` at a time.
    pub async fn write(&mut self, writes: Vec<Write>) -> Outcome {
        let mut outcome = Outcome::default();
        let total = writes.len();
        let wanted: Vec<Write> = writes
            .into_iter()
            .filter(|w| self.tracker.needs(w))
            .collect();
        outcome.skipped = total - wanted.len();
        let results: Vec<Done> = stream::iter(wanted)
            .map(|w| {
                // Fenced: a write starts only while the term lasts, and
                // is given up when it ends.
                let budget = self.term.budget(Instant::now(), WRITE_TIMEOUT);
                let client = self.client.clone();
                let recorder = self.recorder.clone();
                let metrics = self.metrics.clone();
                async move {
                    let Some(budget) = budget else {
                        return Done::NotLeading;
                    };
                    let kind = w.kind();
                    match tokio::time::timeout(budget, execute(client, recorder, metrics.clone(), w))
                    .await
                    {
                        Ok(done) => done,
                        Err(_) => {
                            metrics.wrote(kind, Some("timeout"));
                            tracing::warn!(kind, timeout = ?budget, "a write got no answer; retried with the backoff");
                            Done::TimedOut
                        }
                    }
                }
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        for done in results {
            match done {
                Done::NotLeading => outcome.not_leading += 1,
                Done::TimedOut => {
                    outcome.unanswered += 1;
                    outcome.retry = Some(match outcome.retry {
                        Some(Retry::NextPass) => Retry::NextPass,
                        _ => Retry::Backoff,
                    });
                }
                Done::Landed(landed) => {
                    outcome.written += 1;
                    self.tracker.landed(landed);
                }
                Done::Failed(write, failure) => {
                    let retry = failure.retry();
                    if retry == Retry::Backoff {
                        outcome.unanswered += 1;
                    }
                    if retry == Retry::WhenChanged {
                        self.tracker.refused(write);
                    }
                    outcome.retry = Some(match (outcome.retry, retry) {
                        (Some(Retry::NextPass), _) | (_, Retry::NextPass) => Retry::NextPass,
                        (Some(Retry::Backoff), _) | (_, Retry::Backoff) => Retry::Backoff,
                        (Some(Retry::Slowly), _) | (_, Retry::Slowly) => Retry::Slowly,
                        _ => Retry::WhenChanged,
                    });
                }
            }
        }
        outcome
    }
}

/// How long [`Retry::Slowly`] waits.
pub const SLOW_RETRY: Duration = Duration::from_secs(60);

/// What is said about a refused write: a log line always, a Warning Event on
/// the object for a value the apiserver will not take (someone must change
/// something), and the failure counter by kind and class.
async fn refused(
    recorder: &Recorder,
    metrics: &Metrics,
    kind: &str,
    reference: ObjectReference,
    failure: &Failure,
) {
    let text = match failure {
        Failure::Invalid(why) | Failure::Forbidden(why) | Failure::Transient(why) => why.clone(),
        Failure::Conflict => "conflict".to_string(),
        Failure::NotFound => "not found".to_string(),
    };
    tracing::warn!(kind, object = ?reference.name, error = %text, class = failure.label(), "write refused");
    if matches!(failure, Failure::Invalid(_) | Failure::Forbidden(_)) {
        let event = Event {
            type_: EventType::Warning,
            reason: "WriteRefused".to_string(),
            note: Some(
                format!(
                    "ferrolb-operator could not write this {kind}: {text} (not retried until the desired value changes{})",
                    if matches!(failure, Failure::Forbidden(_)) {
                        "; retried every minute while forbidden"
                    } else {
                        ""
                    }
                )
                .chars()
                .take(1000)
                .collect(),
            ),
            action: "Write".to_string(),
            secondary: None,
        };
        let published = recorder.publish(&event, &reference).await;
        metrics.wrote("event", published.as_ref().err().map(|_| "transient"));
    }
}

/// A reference to a cluster-scoped object of ours, for its Events.
fn reference<K: Resource<DynamicType = ()>>(name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: Some(name.to_string()),
        ..Default::default()
    }
}

fn landed_version(object: &impl Resource) -> u64 {
    // An apply always answers with the stored object; a missing version
    // only means the store decides next time.
    version(object).unwrap_or(0)
}

async fn execute(client: Client, recorder: Recorder, metrics: Arc<Metrics>, write: Write) -> Done {
    let to = To {
        client: client.clone(),
        recorder: recorder.clone(),
        metrics: metrics.clone(),
    };
    let apply = PatchParams::apply(manager::OPERATOR).force();
    match write {
        Write::Service {
            key,
            service,
            desired,
            seen,
            events,
            allocation,
        } => {
            let api: Api<Service> = Api::namespaced(client, &key.namespace);
            let body = status::apply_body(&service, &desired, Time(Timestamp::now()));
            let result = api
                .patch_status(&key.name, &apply, &Patch::Apply(body))
                .await;
            metrics.wrote(
                "service_status",
                result.as_ref().err().map(|e| Failure::of(e).label()),
            );
            let reference = service.object_ref(&());
            match result {
                Ok(updated) => {
                    match &allocation {
                        Some(verdict) if verdict.is_true() => {
                            metrics.allocations.inc();
                        }
                        Some(verdict) => {
                            metrics
                                .failures
                                .get_or_create(&ReasonLabels {
                                    reason: verdict.reason.clone(),
                                })
                                .inc();
                        }
                        None => {}
                    }
                    for event in events {
                        let published = recorder.publish(&event, &reference).await;
                        metrics.wrote("event", published.as_ref().err().map(|_| "transient"));
                        if let Err(e) = published {
                            tracing::warn!(service = %key, error = %e, "cannot publish event");
                        }
                    }
                    tracing::info!(service = %key, reason = %desired.allocated.reason, announced = ?desired.announced.as_ref().map(|v| &v.reason), ingress = ?desired.ingress, "status written");
                    let rv = landed_version(&updated);
                    Done::Landed(Landed::Service(key, desired, rv))
                }
                Err(e) => {
                    let failure = Failure::of(&e);
                    refused(&recorder, &metrics, "Service status", reference, &failure).await;
                    let write = Write::Service {
                        key,
                        service,
                        desired,
                        seen,
                        events: Vec::new(),
                        allocation: None,
                    };
                    Done::Failed(write, failure)
                }
            }
        }
        Write::Clear { key, service } => {
            let api: Api<Service> = Api::namespaced(client, &key.namespace);
            let result = api
                .patch_status(
                    &key.name,
                    &apply,
                    &Patch::Apply(status::clear_body(&service)),
                )
                .await;
            metrics.wrote(
                "service_status",
                result.as_ref().err().map(|e| Failure::of(e).label()),
            );
            match result {
                Ok(_) => {
                    tracing::info!(service = %key, "no longer ours: status cleared");
                    Done::Landed(Landed::Cleared)
                }
                Err(e) => {
                    let failure = Failure::of(&e);
                    let reference = service.object_ref(&());
                    refused(&recorder, &metrics, "Service status", reference, &failure).await;
                    Done::Failed(Write::Clear { key, service }, failure)
                }
            }
        }
        Write::Announcement { node, spec, seen } => {
            // `spec.node` is always there: an apply whose spec has no field
            // left (a node that loses its last IP) would drop the spec, which
            // the schema requires.
            let body = json!({ "spec": spec });
            match put::<NodeAnnouncement>(&to, "node_announcement", &node, body, false).await {
                Ok(rv) => {
                    tracing::info!(%node, l2_groups = spec.l2.len(), "NodeAnnouncement written");
                    Done::Landed(Landed::Announcement(node, spec, rv))
                }
                Err(failure) => Done::Failed(Write::Announcement { node, spec, seen }, failure),
            }
        }
        Write::Retire { node } => {
            match remove::<NodeAnnouncement>(&to, "node_announcement_delete", &node).await {
                Ok(()) => {
                    tracing::info!(%node, "node gone: NodeAnnouncement deleted");
                    Done::Landed(Landed::Retired(node))
                }
                Err(failure) => Done::Failed(Write::Retire { node }, failure),
            }
        }
        Write::PrefixSet { name, spec, seen } => {
            let body = json!({
                "metadata": {
                    "labels": { ferrolb_api::prefixset::ADVERTISEMENT_LABEL: spec.advertisement },
                },
                "spec": spec,
            });
            match put::<PrefixSet>(&to, "prefix_set", &name, body, false).await {
                Ok(rv) => {
                    tracing::info!(prefix_set = %name, prefixes = spec.count, "PrefixSet written");
                    Done::Landed(Landed::PrefixSet(name, spec, rv))
                }
                Err(failure) => Done::Failed(Write::PrefixSet { name, spec, seen }, failure),
            }
        }
        Write::DropPrefixSet { name } => {
            match remove::<PrefixSet>(&to, "prefix_set_delete", &name).await {
                Ok(()) => {
                    tracing::info!(prefix_set = %name, "PrefixSet no longer wanted: deleted");
                    Done::Landed(Landed::Dropped(name))
                }
                Err(failure) => Done::Failed(Write::DropPrefixSet { name }, failure),
            }
        }
        Write::Pool { name, status, seen } => {
            let body = json!({ "status": status });
            match put::<IPAddressPool>(&to, "pool_status", &name, body, true).await {
                Ok(rv) => Done::Landed(Landed::Pool(name, status, rv)),
                Err(failure) => Done::Failed(Write::Pool { name, status, seen }, failure),
            }
        }
        Write::Peer { name, status, seen } => {
            let body = json!({ "status": status });
            match put::<BGPPeer>(&to, "peer_status", &name, body, true).await {
                Ok(rv) => Done::Landed(Landed::Peer(name, status, rv)),
                Err(failure) => Done::Failed(Write::Peer { name, status, seen }, failure),
            }
        }
    }
}

/// Where writes go and what is told about them.
struct To {
    client: Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
}

/// A cluster-scoped kind of ours.
trait Ours:
    Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> Ours for K where
    K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
{
}

/// Applies `body` (the fields to own; kind and name are added) to an object
/// of ours, or to its status; counts the write and reports a failure.
/// Returns the resourceVersion written.
async fn put<K: Ours>(
    to: &To,
    metric: &str,
    name: &str,
    mut body: serde_json::Value,
    status: bool,
) -> Result<u64, Failure> {
    body["apiVersion"] = K::api_version(&()).into();
    body["kind"] = K::kind(&()).into();
    body["metadata"]["name"] = name.into();
    let api: Api<K> = Api::all(to.client.clone());
    let apply = PatchParams::apply(manager::OPERATOR).force();
    let result = if status {
        api.patch_status(name, &apply, &Patch::Apply(body)).await
    } else {
        api.patch(name, &apply, &Patch::Apply(body)).await
    };
    let result = result.map_err(|e| Failure::of(&e));
    to.metrics
        .wrote(metric, result.as_ref().err().map(Failure::label));
    match result {
        Ok(written) => Ok(landed_version(&written)),
        Err(failure) => {
            let what = format!("{}{}", K::kind(&()), if status { " status" } else { "" });
            refused(
                &to.recorder,
                &to.metrics,
                &what,
                reference::<K>(name),
                &failure,
            )
            .await;
            Err(failure)
        }
    }
}

/// Deletes an object of ours (gone already is as good); counts it and
/// reports a failure.
async fn remove<K: Ours>(to: &To, metric: &str, name: &str) -> Result<(), Failure> {
    let api: Api<K> = Api::all(to.client.clone());
    match api
        .delete(name, &DeleteParams::default())
        .await
        .map_err(|e| Failure::of(&e))
    {
        Ok(_) | Err(Failure::NotFound) => {
            to.metrics.wrote(metric, None);
            Ok(())
        }
        Err(failure) => {
            to.metrics.wrote(metric, Some(failure.label()));
            let what = K::kind(&()).into_owned();
            refused(
                &to.recorder,
                &to.metrics,
                &what,
                reference::<K>(name),
                &failure,
            )
            .await;
            Err(failure)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::status::Verdict;
    use crate::scripted::{Reply, client, status};
    use kube::runtime::events::Reporter;

    fn service_write(ip: &str) -> Write {
        let service: Service = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "5"},
            "spec": {"type": "LoadBalancer"},
        }))
        .expect("service");
        let desired = Desired {
            ingress: vec![ip.into()],
            allocated: Verdict::yes("Allocated", format!("Allocated {ip} from pool p")),
            announced: None,
        };
        Write::Service {
            key: ServiceKey::new("default", "web"),
            service: Arc::new(service),
            allocation: Some(desired.allocated.clone()),
            desired,
            seen: Seen {
                up_to_date: false,
                version: Some(5),
            },
            events: Vec::new(),
        }
    }

    fn writer(replies: Vec<Reply>) -> (Writer, Arc<Metrics>, tokio::task::JoinHandle<()>) {
        let (client, server) = client(replies);
        let metrics = Metrics::new();
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "test".into(),
                instance: None,
            },
        );
        let writer = Writer::new(client, recorder, metrics.clone(), Term::always(), 1);
        (writer, metrics, server)
    }

    #[tokio::test]
    async fn a_server_error_is_counted_and_retried_with_backoff() {
        let (mut writer, metrics, server) = writer(vec![Reply {
            method: "PATCH",
            path: "/api/v1/namespaces/default/services/web/status",
            status: 500,
            body: status(500, "InternalError"),
        }]);
        let outcome = writer.write(vec![service_write("10.0.0.1")]).await;
        server.await.expect("the write was attempted");
        assert_eq!(outcome.retry, Some(Retry::Backoff));
        assert_eq!(outcome.written, 0);
        assert_eq!(
            outcome.unanswered, 1,
            "a server error says the write got no answer"
        );
        let page = metrics.encode();
        assert!(
            page.contains(
                r#"ferrolb_api_write_errors_total{kind="service_status",error="transient"} 1"#
            ),
            "{page}"
        );
        assert!(
            page.contains("ferrolb_allocations_total 0"),
            "a refused write allocated nothing: {page}"
        );
    }

    #[tokio::test]
    async fn a_refused_value_is_reported_once_and_not_written_again_until_it_changes() {
        let (mut writer, metrics, server) = writer(vec![
            Reply {
                method: "PATCH",
                path: "/api/v1/namespaces/default/services/web/status",
                status: 422,
                body: status(422, "Invalid"),
            },
            Reply {
                method: "POST",
                path: "/apis/events.k8s.io/v1/namespaces/default/events",
                status: 201,
                body: serde_json::json!({}),
            },
        ]);
        let first = writer.write(vec![service_write("10.0.0.1")]).await;
        server.await.expect("the write and its event were sent");
        assert_eq!(first.retry, Some(Retry::WhenChanged));
        // The same value again: no request (the scripted server is done, so
        // one would fail and be counted).
        let again = writer.write(vec![service_write("10.0.0.1")]).await;
        assert_eq!((again.written, again.skipped, again.retry), (0, 1, None));
        let page = metrics.encode();
        assert!(
            page.contains(
                r#"ferrolb_api_write_errors_total{kind="service_status",error="invalid"} 1"#
            ),
            "{page}"
        );
        assert!(
            page.contains(r#"ferrolb_api_writes_total{kind="event"} 1"#),
            "{page}"
        );
        // Another value is tried.
        let changed = writer.write(vec![service_write("10.0.0.2")]).await;
        assert_eq!(changed.skipped, 0);
    }

    #[tokio::test]
    async fn nothing_is_written_by_a_replica_that_does_not_lead() {
        let (client, server) = client(Vec::new());
        let metrics = Metrics::new();
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "test".into(),
                instance: None,
            },
        );
        let mut writer = Writer::new(client, recorder, metrics, Term::elected(), 1);
        let outcome = writer.write(vec![service_write("10.0.0.1")]).await;
        server.await.expect("no request");
        assert_eq!((outcome.written, outcome.not_leading), (0, 1));
    }

    #[test]
    fn failures_are_classified_with_their_retry() {
        let api = |code: u16| {
            kube::Error::Api(
                kube::core::Status::failure("m", "r")
                    .with_code(code)
                    .boxed(),
            )
        };
        let table = [
            (409, "conflict", Retry::NextPass),
            (422, "invalid", Retry::WhenChanged),
            (400, "invalid", Retry::WhenChanged),
            (413, "invalid", Retry::WhenChanged),
            (403, "forbidden", Retry::Slowly),
            (404, "not_found", Retry::NextPass),
            (500, "transient", Retry::Backoff),
            (429, "transient", Retry::Backoff),
        ];
        for (code, label, retry) in table {
            let failure = Failure::of(&api(code));
            assert_eq!((failure.label(), failure.retry()), (label, retry), "{code}");
        }
    }
}
