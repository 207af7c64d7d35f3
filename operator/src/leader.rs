//! Leader election on a coordination.k8s.io Lease, so that of several replicas
//! exactly one writes. A replica leads while it renews the Lease; it stops
//! counting itself leader once its last renewal is older than the renew
//! deadline, which is shorter than the Lease duration, so a stalled leader stops
//! writing before another one may take over.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

/// Lease timing.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How long a Lease holds without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews, and others retry.
    pub retry_period: Duration,
    /// The holder stops leading when it could not renew for this long.
    pub renew_deadline: Duration,
}

impl Timing {
    /// Timing derived from the Lease duration: retry every duration/7, give up
    /// leading after 2/3 of the duration without a renewal.
    pub fn from_duration(lease_duration: Duration) -> Timing {
        Timing {
            lease_duration,
            retry_period: lease_duration / 7,
            renew_deadline: lease_duration * 2 / 3,
        }
    }
}

/// This replica's term as leader, shared by the election (which extends it
/// at each renewal) and the writer (which fences every write by it): a write
/// starts only while the term lasts and is given up when it ends, so a
/// replica that lost the Lease without knowing it yet never writes after the
/// next leader may have started. The controller asks the election to step
/// down when the leader cannot write.
#[derive(Clone, Debug)]
pub struct Term(Arc<Mutex<TermState>>);

#[derive(Debug)]
struct TermState {
    /// Without leader election: leading always.
    always: bool,
    until: Option<Instant>,
    step_down: bool,
}

impl Term {
    /// The term of a replica that elects: not leading until it renews.
    pub fn elected() -> Term {
        Term::with(false)
    }

    /// The term of the only replica (no election): leading always.
    pub fn always() -> Term {
        Term::with(true)
    }

    fn with(always: bool) -> Term {
        Term(Arc::new(Mutex::new(TermState {
            always,
            until: None,
            step_down: false,
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, TermState> {
        self.0.lock().expect("term lock")
    }

    /// How long a write started at `now` may take, at most `most`: `None`
    /// once the term is over.
    pub fn budget(&self, now: Instant, most: Duration) -> Option<Duration> {
        let state = self.state();
        if state.always {
            return Some(most);
        }
        state
            .until
            .filter(|until| *until > now)
            .map(|until| (until - now).min(most))
    }

    /// The election renewed (until `until`), or lost the Lease (`None`).
    fn extend(&self, until: Option<Instant>) {
        self.state().until = until;
    }

    /// Asks the election to give the Lease up (the controller cannot write).
    pub fn step_down(&self) {
        let mut state = self.state();
        state.step_down = true;
        state.until = None;
    }

    fn stepping_down(&self) -> bool {
        std::mem::take(&mut self.state().step_down)
    }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// Another replica's hold on the Lease, as this replica saw it, by the rule
/// of [`ferrolb_api::lease`]: expired once its renewal (renew time and
/// holder) has not changed for a whole Lease duration by this replica's own
/// monotonic clock. The holder's `renewTime` is never compared with the
/// local clock, so a replica whose clock is ahead does not steal the Lease,
/// nor one behind wait longer.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    last: Option<ferrolb_api::lease::Sighting>,
}

impl Seen {
    fn expired(&mut self, spec: &LeaseSpec, now: Instant) -> bool {
        !ferrolb_api::lease::alive_seen(&mut self.last, spec, now)
    }
}

/// One attempt to take or renew the Lease; true when we hold it afterwards.
async fn try_lead(
    api: &Api<Lease>,
    name: &str,
    identity: &str,
    timing: &Timing,
    seen: &mut Seen,
) -> kube::Result<bool> {
    let duration = i32::try_from(timing.lease_duration.as_secs().max(1)).unwrap_or(15);
    let existing = api.get_opt(name).await?;
    let Some(mut lease) = existing else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(identity.to_string()),
                lease_duration_seconds: Some(duration),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_default();
    let ours = spec.holder_identity.as_deref() == Some(identity);
    // A Lease released on shutdown has no holder and is free at once.
    let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
    if !ours && !free && !seen.expired(spec, Instant::now()) {
        return Ok(false);
    }
    if !ours {
        spec.holder_identity = Some(identity.to_string());
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(duration);
    // The replace carries the resourceVersion we read: if another replica wrote
    // in between, it fails with a conflict and we are not the leader.
    match api.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up if we hold it, so another replica takes over at once
/// instead of waiting for it to expire (a rolling update, a drain).
pub async fn release(
    client: Client,
    namespace: &str,
    name: &str,
    identity: &str,
) -> kube::Result<bool> {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    release_in(&api, name, identity).await
}

async fn release_in(api: &Api<Lease>, name: &str, identity: &str) -> kube::Result<bool> {
    let Some(mut lease) = api.get_opt(name).await? else {
        return Ok(false);
    };
    let spec = lease.spec.get_or_insert_default();
    if spec.holder_identity.as_deref() != Some(identity) {
        return Ok(false);
    }
    spec.holder_identity = None;
    api.replace(name, &PostParams::default(), &lease).await?;
    Ok(true)
}

/// Runs the election until the process ends, publishing whether we lead
/// and extending `term` at each renewal. Asked to step down, it gives the
/// Lease up and sits out one Lease duration, so another replica takes it.
pub async fn run(
    client: Client,
    namespace: &str,
    name: &str,
    identity: &str,
    timing: Timing,
    leading: watch::Sender<bool>,
    term: Term,
) {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let mut last_renewal: Option<Instant> = None;
    let mut seen = Seen::default();
    loop {
        if term.stepping_down() {
            last_renewal = None;
            term.extend(None);
            publish(&leading, identity, false);
            match tokio::time::timeout(timing.retry_period, release_in(&api, name, identity)).await
            {
                Ok(Ok(true)) => {
                    tracing::warn!(identity, sit_out = ?timing.lease_duration, "writes keep failing: gave the leader Lease up for another replica")
                }
                Ok(Ok(false)) => {}
                _ => tracing::warn!(
                    identity,
                    "writes keep failing and the leader Lease cannot be given up: it runs out instead"
                ),
            }
            tokio::time::sleep(timing.lease_duration).await;
            seen = Seen::default();
            continue;
        }
        // A try that hangs is given up after a retry period, so a leader that
        // cannot renew notices and stops leading at its renew deadline.
        match tokio::time::timeout(
            timing.retry_period,
            try_lead(&api, name, identity, &timing, &mut seen),
        )
        .await
        {
            Ok(Ok(true)) => last_renewal = Some(Instant::now()),
            Ok(Ok(false)) => last_renewal = None,
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot reach the leader Lease"),
            Err(_) => tracing::warn!(
                timeout = ?timing.retry_period,
                "the leader Lease call got no answer"
            ),
        }
        let until = last_renewal
            .map(|t| t + timing.renew_deadline)
            .filter(|until| *until > Instant::now());
        term.extend(until);
        publish(&leading, identity, until.is_some());
        tokio::time::sleep(timing.retry_period).await;
    }
}

fn publish(leading: &watch::Sender<bool>, identity: &str, lead: bool) {
    leading.send_if_modified(|was| {
        if *was != lead {
            tracing::info!(identity, leading = lead, "leadership changed");
            *was = lead;
            true
        } else {
            false
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scripted::{Reply, client, status};
    use serde_json::json;

    fn lease(holder: &str, renewed_seconds_ago: i64) -> serde_json::Value {
        let renewed = Timestamp::now().as_second() - renewed_seconds_ago;
        let renewed = Timestamp::from_second(renewed).expect("time");
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "ferrolb-operator", "namespace": "ferrolb-system", "resourceVersion": "7"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                     "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()},
        })
    }

    const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/ferrolb-system/leases";
    const TIMING: Timing = Timing {
        lease_duration: Duration::from_secs(15),
        retry_period: Duration::from_secs(2),
        renew_deadline: Duration::from_secs(10),
    };

    async fn attempt_seen(replies: Vec<Reply>, seen: &mut Seen) -> kube::Result<bool> {
        let (client, server) = client(replies);
        let api: Api<Lease> = Api::namespaced(client, "ferrolb-system");
        let result = try_lead(&api, "ferrolb-operator", "me", &TIMING, seen).await;
        server.await.expect("every scripted request was made");
        result
    }

    /// An attempt by a replica that has watched the other's Lease unchanged
    /// for longer than its duration.
    async fn attempt(replies: Vec<Reply>) -> kube::Result<bool> {
        let mut seen = Seen::default();
        if let Some(Reply { body, .. }) = replies.first() {
            let lease: Lease = serde_json::from_value(body.clone()).expect("a Lease");
            let spec = lease.spec.unwrap_or_default();
            seen.expired(&spec, Instant::now() - Duration::from_secs(20));
        }
        attempt_seen(replies, &mut seen).await
    }

    #[tokio::test]
    async fn a_lease_is_judged_by_what_this_replica_saw_never_by_its_renew_time() {
        // Renewed "60 s ago" by the holder's clock (ours could be behind):
        // first seen now, so it is not taken.
        let mut seen = Seen::default();
        let get = || Reply {
            method: "GET",
            path: PATH,
            status: 200,
            body: lease("other", 60),
        };
        assert!(
            !attempt_seen(vec![get()], &mut seen)
                .await
                .expect("no error")
        );
        // Renewed "in the future" and then never again: taken once it stayed
        // unchanged for the Lease duration as seen here.
        let future = lease("other", -3600);
        let spec = serde_json::from_value::<Lease>(future.clone())
            .expect("a Lease")
            .spec
            .unwrap_or_default();
        let mut seen = Seen::default();
        assert!(!seen.expired(&spec, Instant::now() - Duration::from_secs(16)));
        assert!(seen.expired(&spec, Instant::now()));
    }

    #[tokio::test]
    async fn a_live_lease_of_another_replica_is_left_alone() {
        let led = attempt_seen(
            vec![Reply {
                method: "GET",
                path: PATH,
                status: 200,
                body: lease("other", 1),
            }],
            &mut Seen::default(),
        )
        .await;
        assert!(!led.expect("no error"));
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_unless_someone_else_was_faster() {
        let took = attempt(vec![
            Reply {
                method: "GET",
                path: PATH,
                status: 200,
                body: lease("other", 60),
            },
            Reply {
                method: "PUT",
                path: PATH,
                status: 200,
                body: lease("me", 0),
            },
        ])
        .await;
        assert!(took.expect("no error"));
        let lost = attempt(vec![
            Reply {
                method: "GET",
                path: PATH,
                status: 200,
                body: lease("other", 60),
            },
            Reply {
                method: "PUT",
                path: PATH,
                status: 409,
                body: status(409, "Conflict"),
            },
        ])
        .await;
        assert!(
            !lost.expect("a conflict is not an error"),
            "a conflicting write means not leading"
        );
    }

    #[tokio::test]
    async fn a_server_error_is_reported_not_taken_as_leadership() {
        let failed = attempt(vec![
            Reply {
                method: "GET",
                path: PATH,
                status: 200,
                body: lease("me", 1),
            },
            Reply {
                method: "PUT",
                path: PATH,
                status: 500,
                body: status(500, "InternalError"),
            },
        ])
        .await;
        assert!(failed.is_err());
    }

    #[test]
    fn writes_are_fenced_by_the_term_and_never_outlast_it() {
        let t0 = Instant::now();
        let most = Duration::from_secs(10);
        let term = Term::elected();
        assert_eq!(
            term.budget(t0, most),
            None,
            "no write before the first renewal"
        );
        term.extend(Some(t0 + Duration::from_secs(4)));
        assert_eq!(
            term.budget(t0, most),
            Some(Duration::from_secs(4)),
            "a write started now is given up when the term ends, not after the full timeout"
        );
        assert_eq!(
            term.budget(t0 + Duration::from_secs(1), Duration::from_secs(2)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(term.budget(t0 + Duration::from_secs(4), most), None);
        term.extend(Some(t0 + Duration::from_secs(30)));
        term.step_down();
        assert_eq!(
            term.budget(t0, most),
            None,
            "stepping down ends the term at once"
        );
        assert!(term.stepping_down());
        assert!(!term.stepping_down(), "asked once, done once");
        assert_eq!(Term::always().budget(t0, most), Some(most));
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_asked_to_step_down_gives_the_lease_up_at_once() {
        let reply = |method, body| Reply {
            method,
            path: PATH,
            status: 200,
            body,
        };
        let (client, server) = client(vec![
            // Renewed: leading.
            reply("GET", lease("me", 0)),
            reply("PUT", lease("me", 0)),
            // Asked to step down: the Lease is given up with no holder.
            reply("GET", lease("me", 0)),
            reply("PUT", lease("", 0)),
        ]);
        let (tx, mut rx) = watch::channel(false);
        let term = Term::elected();
        let election = tokio::spawn({
            let term = term.clone();
            async move {
                run(
                    client,
                    "ferrolb-system",
                    "ferrolb-operator",
                    "me",
                    TIMING,
                    tx,
                    term,
                )
                .await
            }
        });
        rx.wait_for(|leading| *leading).await.expect("leading");
        assert!(term.budget(Instant::now(), TIMING.renew_deadline).is_some());
        term.step_down();
        assert_eq!(
            term.budget(Instant::now(), TIMING.renew_deadline),
            None,
            "no write from now on"
        );
        rx.wait_for(|leading| !*leading)
            .await
            .expect("stepped down");
        server.await.expect("the Lease was given up");
        election.abort();
    }
}
