//! The speaker in a cluster: it renews its Lease (its sign of life for the
//! operator), watches only its own NodeAnnouncement, applies it, and reports
//! back in its status with its own field manager.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use ferrolb_api::address::to_u128;
use ferrolb_api::bgppeer::SecretKeyRef;
use ferrolb_api::constants::{condition, manager, speaker_lease};
use ferrolb_api::ipset::IpSet;
use ferrolb_api::nodeannouncement::{L2Phase, NodeAnnouncementStatus};
use ferrolb_api::{NodeAnnouncement, PrefixSet};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::{Notify, watch};

use crate::bgp::session::Passwords;
use crate::failover::Failover;
use crate::failover::wire::Key;
use crate::runner::Runner;
use ferrolb_api::prefixset::SharedPrefixes;

/// How the speaker runs in a cluster.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's name.
    pub node: String,
    /// The namespace of the speaker Lease.
    pub namespace: String,
    /// Seconds the Lease lasts without renewal; renewed every third of it.
    pub lease_seconds: u64,
    /// The Secret (in `namespace`) holding the failover key.
    pub failover_secret: String,
    /// Poked by the fast path when it takes or yields an IP.
    pub failover_changed: Arc<Notify>,
    /// Set once this speaker has applied its NodeAnnouncement and reported,
    /// with its fast path running: `/readyz` turns ok, so a rolling update
    /// moves on to the next node only when this one can take IPs over.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
}

/// The key inside the failover Secret.
pub const FAILOVER_KEY: &str = "key";

/// Renews `speaker-<node>` until the process ends.
async fn renew(client: Client, config: Config, rewatch: Arc<Notify>) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let name = speaker_lease(&config.node);
    let every = Duration::from_secs(config.lease_seconds.max(3) / 3);
    loop {
        let body = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": { "name": name, "namespace": config.namespace },
            "spec": {
                "holderIdentity": config.node,
                "leaseDurationSeconds": config.lease_seconds,
                "renewTime": MicroTime(Timestamp::now()),
            },
        });
        // A renewal that hangs must not let the Lease lapse: each try is
        // given up after a period, and a failed one is tried again a second
        // later, so a Lease lapses only when the apiserver is away for its
        // whole duration.
        let renewed = tokio::time::timeout(
            every,
            api.patch(
                &name,
                &PatchParams::apply(manager::SPEAKER).force(),
                &Patch::Apply(body),
            ),
        )
        .await;
        let failed = match renewed {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {every:?}")),
        };
        if let Some(error) = failed {
            tracing::warn!(%error, "cannot renew the speaker Lease; trying again in 1 s");
            rewatch.notify_one();
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        tokio::time::sleep(every).await;
    }
}

/// While the fast path has active nodes that went silent after answering,
/// reads their speaker Leases every second: a Lease renewed while its node
/// is silent means the node is alive and only the probes are lost (a
/// firewall), so its IPs stay where they are.
async fn watch_suspects(client: Client, namespace: String, failover: Arc<Failover>) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for node in failover.suspects() {
            match api.get_opt(&speaker_lease(&node)).await {
                Ok(Some(lease)) => {
                    let renew = lease
                        .spec
                        .and_then(|s| s.renew_time)
                        .map(|t| t.0.to_string())
                        .unwrap_or_default();
                    failover.lease_seen(&node, &renew);
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, %node, "cannot read the speaker Lease"),
            }
        }
    }
}

/// What the speaker reports for an applied announcement.
fn status(announcement: &NodeAnnouncement, runner: &Runner) -> NodeAnnouncementStatus {
    let now = Time(Timestamp::now());
    let previous = announcement.status.clone().unwrap_or_default();
    let l2 = runner.l2_states(&previous.l2);
    let announcing: IpSet = l2
        .iter()
        .filter(|s| matches!(s.state, L2Phase::Announcing | L2Phase::TakenOver))
        .flat_map(|s| s.ips.iter())
        .collect();
    let failed = &runner.failed;
    let ok = failed.is_empty();
    let applied_since = previous
        .conditions
        .iter()
        .find(|c| c.type_ == condition::APPLIED && (c.status == "True") == ok)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(now);
    NodeAnnouncementStatus {
        observed_generation: announcement.metadata.generation,
        conditions: vec![Condition {
            type_: condition::APPLIED.to_string(),
            status: if ok { "True" } else { "False" }.to_string(),
            reason: if ok {
                "Applied"
            } else {
                "InterfaceUnavailable"
            }
            .to_string(),
            message: if ok {
                format!(
                    "{} IPs answered for, {} BGP sessions",
                    announcing.len(),
                    runner.bgp.summary()
                )
            } else {
                failed
                    .iter()
                    .map(|(name, why)| {
                        format!("{}: {why}", name.as_deref().unwrap_or("default interface"))
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            },
            observed_generation: announcement.metadata.generation,
            last_transition_time: applied_since,
        }],
        l2,
        bgp: runner.bgp.states(),
        l2_active: (!announcing.is_empty()).then(|| summary(&announcing)),
        bgp_sessions: Some(runner.bgp.summary()),
        bfd_sessions: runner.bgp.bfd_summary(),
        probe_address: runner.failover().map(|f| f.address.to_string()),
        failover: runner.failover_states(&previous.failover),
        problems: runner.problems.clone(),
    }
}

/// The answered IPs for a table column: the first three entries (addresses
/// or ranges) and how many addresses more.
fn summary(ips: &IpSet) -> String {
    const SHOWN: usize = 3;
    let entries: Vec<String> = ips.entries().take(SHOWN).collect();
    let shown: u128 = ips
        .ranges()
        .iter()
        .take(SHOWN)
        .map(|(a, b)| to_u128(*b) - to_u128(*a) + 1)
        .sum();
    let more = ips.len() - shown;
    if more == 0 {
        entries.join(",")
    } else {
        format!("{} (+{more})", entries.join(","))
    }
}

/// Reads the failover key from its Secret, retrying until it exists.
pub async fn failover_key(client: Client, namespace: &str, name: &str) -> Key {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let mut warned = false;
    loop {
        match api.get_opt(name).await {
            Ok(Some(secret)) => {
                if let Some(key) = secret.data.and_then(|mut d| d.remove(FAILOVER_KEY)) {
                    return Key::new(&key.0);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read the failover Secret yet"),
        }
        if !warned {
            tracing::warn!(secret = %format!("{namespace}/{name}"), "no failover key yet: the fast path waits for it (the operator creates it)");
            warned = true;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Why a password could not be read: `definitive` when the apiserver
/// answered (no such Secret or key), not when it could not be asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unread {
    pub why: String,
    pub definitive: bool,
}

/// How long one password read may take before the last good key is used.
const PASSWORD_READ: Duration = Duration::from_secs(5);

/// Reads TCP-MD5 (and BFD) keys from Secrets, keeping the last one read of
/// each: while the apiserver cannot be asked, a session that drops comes back
/// with the key it had. Only the apiserver's own answer (the Secret or its key
/// is gone) takes a key away.
pub fn secret_passwords(client: Client) -> Passwords {
    cached(move |reference: SecretKeyRef| {
        let api: Api<Secret> = Api::namespaced(client.clone(), &reference.namespace);
        Box::pin(async move {
            let where_ = format!("Secret {}/{}", reference.namespace, reference.name);
            let read = tokio::time::timeout(PASSWORD_READ, api.get_opt(&reference.name))
                .await
                .unwrap_or_else(|_| {
                    Err(kube::Error::Service(
                        format!("no answer within {PASSWORD_READ:?}").into(),
                    ))
                });
            let secret = match read {
                Ok(Some(secret)) => secret,
                Ok(None) => {
                    return Err(Unread {
                        why: format!("{where_} does not exist"),
                        definitive: true,
                    });
                }
                // 403 and 404 are answers too; anything else is not.
                Err(kube::Error::Api(e)) if e.code == 403 || e.code == 404 => {
                    return Err(Unread {
                        why: format!("cannot read {where_}: {e}"),
                        definitive: true,
                    });
                }
                Err(e) => {
                    return Err(Unread {
                        why: format!("cannot read {where_}: {e}"),
                        definitive: false,
                    });
                }
            };
            secret
                .data
                .and_then(|mut data| data.remove(&reference.key))
                .map(|bytes| bytes.0)
                .ok_or_else(|| Unread {
                    why: format!("{where_} has no key {}", reference.key),
                    definitive: true,
                })
        })
    })
}

/// Wraps a key source with the memory of the last key read per reference.
pub fn cached<F>(read: F) -> Passwords
where
    F: Fn(SecretKeyRef) -> futures::future::BoxFuture<'static, Result<Vec<u8>, Unread>>
        + Send
        + Sync
        + 'static,
{
    let last: Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>> = Arc::default();
    Arc::new(move |reference: SecretKeyRef| {
        let key = format!(
            "{}/{}/{}",
            reference.namespace, reference.name, reference.key
        );
        let (read, last) = (read(reference), last.clone());
        Box::pin(async move {
            match read.await {
                Ok(value) => {
                    last.lock()
                        .expect("passwords lock")
                        .insert(key, value.clone());
                    Ok(value)
                }
                Err(unread) if unread.definitive => {
                    last.lock().expect("passwords lock").remove(&key);
                    Err(unread.why)
                }
                Err(unread) => match last.lock().expect("passwords lock").get(&key) {
                    Some(value) => {
                        tracing::info!(why = %unread.why, "using the last key read from the Secret");
                        Ok(value.clone())
                    }
                    None => Err(unread.why),
                },
            }
        })
    })
}

/// How the fast path starts once its key is known.
pub type StartFailover = Box<dyn FnOnce(Key) -> Option<(Arc<Failover>, Duration)> + Send>;

/// Runs the speaker in the cluster until `stopping` turns true; then hands
/// its IPs to their standbys and ends the BGP sessions as a stopping speaker
/// should.
pub async fn run(
    client: Client,
    config: Config,
    mut runner: Runner,
    start_failover: StartFailover,
    mut stopping: watch::Receiver<bool>,
) -> Result<()> {
    // A failed call means the network or the apiserver went away: the watch
    // is then started again, on a new connection (the old one may be dead
    // without either side knowing, and would never deliver another event).
    let rewatch = Arc::new(Notify::new());
    tokio::spawn(renew(client.clone(), config.clone(), rewatch.clone()));
    let (key_tx, mut key_rx) = tokio::sync::oneshot::channel();
    {
        let (client, namespace, name) = (
            client.clone(),
            config.namespace.clone(),
            config.failover_secret.clone(),
        );
        tokio::spawn(async move {
            let _ = key_tx.send(failover_key(client, &namespace, &name).await);
        });
    }
    let mut start_failover = Some(start_failover);
    let api: Api<NodeAnnouncement> = Api::all(client.clone());
    let own = ferrolb_runtime::watch_config().fields(&format!("metadata.name={}", config.node));
    // One small object: retried every few seconds at most after an outage
    // (the default backs off to 30 s, which a node coming back from a link
    // cut would spend out of date, unable to take over anything).
    let watch_own = || {
        let backoff = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times();
        watcher(api.clone(), own.clone())
            .backoff(kube::runtime::watcher::ExponentialBackoff::from(backoff))
            .boxed()
    };
    let mut events = watch_own();
    let (reports, reports_rx) = tokio::sync::watch::channel(None);
    tokio::spawn(write_status(
        api.clone(),
        config.clone(),
        reports_rx,
        rewatch.clone(),
    ));
    // The prefixes many nodes share (PrefixSets): every change is applied to
    // the sessions naming its advertisement; a new listing replaces them all
    // once complete, so a set deleted while disconnected goes too.
    let sets_api: Api<PrefixSet> = Api::all(client.clone());
    let watch_sets = || {
        watcher(sets_api.clone(), ferrolb_runtime::watch_config())
            .default_backoff()
            .boxed()
    };
    let mut sets = watch_sets();
    let mut listing: Option<SharedPrefixes> = None;
    let changed = runner.bgp.changed();
    let failover_changed = config.failover_changed.clone();
    let mut current: Option<NodeAnnouncement> = None;
    let mut check = tokio::time::interval(Duration::from_secs(5));
    let mut suspects = None;
    loop {
        let hold = runner.holding_until();
        let event = tokio::select! {
            event = events.next() => match event {
                Some(event) => Some(event),
                None => break,
            },
            Some(event) = sets.next() => {
                match event {
                    Ok(watcher::Event::Init) => listing = Some(SharedPrefixes::default()),
                    Ok(watcher::Event::InitApply(set)) => {
                        if let Some(listing) = &mut listing {
                            listing.set(&set.name_any(), set.spec);
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(listed) = listing.take()
                            && listed != runner.shared
                        {
                            runner.shared = listed;
                            tracing::info!(prefixes = runner.shared.len(), "shared prefixes listed");
                            runner.reapply_bgp();
                        }
                    }
                    Ok(watcher::Event::Apply(set)) => {
                        if runner.shared.set(&set.name_any(), set.spec) {
                            runner.reapply_bgp();
                        }
                    }
                    Ok(watcher::Event::Delete(set)) => {
                        if runner.shared.remove(&set.name_any()) {
                            runner.reapply_bgp();
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "PrefixSet watch error; retrying"),
                }
                None
            }
            _ = changed.notified() => None,
            _ = failover_changed.notified() => {
                runner.reapply();
                None
            }
            key = &mut key_rx, if start_failover.is_some() => {
                if let (Ok(key), Some(start)) = (key, start_failover.take())
                    && let Some((failover, grace)) = start(key)
                {
                    tracing::info!(address = %failover.address, "fast failover path on");
                    suspects = Some(tokio::spawn(watch_suspects(
                        client.clone(),
                        config.namespace.clone(),
                        failover.clone(),
                    )));
                    runner.set_failover(failover, grace);
                    runner.reapply();
                }
                None
            }
            _ = tokio::time::sleep_until(hold.unwrap_or_else(tokio::time::Instant::now)), if hold.is_some() => {
                runner.reapply();
                None
            }
            _ = rewatch.notified() => {
                tracing::info!("an API call failed: watching the NodeAnnouncement anew");
                events = watch_own();
                sets = watch_sets();
                listing = None;
                None
            }
            _ = check.tick() => {
                runner.check_node();
                None
            }
            _ = stopping.wait_for(|s| *s) => {
                if let Some(task) = suspects.take() {
                    task.abort();
                }
                runner.stop().await;
                return Ok(());
            }
        };
        if let Some(event) = event {
            let announcement = match event {
                Ok(watcher::Event::Apply(a) | watcher::Event::InitApply(a)) => a,
                Ok(watcher::Event::Delete(_)) => {
                    runner.apply(&Default::default());
                    current = None;
                    tracing::info!("NodeAnnouncement deleted: silent");
                    continue;
                }
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "watch error; retrying");
                    continue;
                }
            };
            runner.apply(&announcement.spec);
            current = Some(announcement);
        }
        let Some(announcement) = &mut current else {
            continue;
        };
        let report = status(announcement, &runner);
        let before = announcement
            .status
            .as_ref()
            .map(|s| s.failover.as_slice())
            .unwrap_or_default();
        for now in &report.failover {
            if !before
                .iter()
                .any(|b| b.node == now.node && b.state == now.state && b.reason == now.reason)
            {
                tracing::info!(towards = %now.node, state = ?now.state, reason = ?now.reason, "fast failover path changed");
            }
        }
        if announcement.status.as_ref() == Some(&report) {
            // Already reported as it stands (a speaker restarted on a node
            // whose status did not change): applied and reported all the same.
            if runner.failover().is_some() {
                config
                    .ready
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            continue;
        }
        // Written by its own task, the latest report winning: a status write
        // that hangs never holds a takeover, a spec change or a stop behind it.
        let (taken, yielded) = runner.failover_view();
        tracing::info!(active = ?runner.effective.active_ips(), ?taken, ?yielded, bgp = %runner.bgp.summary(), generation = ?announcement.metadata.generation, "applied; reporting");
        reports.send_replace(Some((report.clone(), runner.failover().is_some())));
        // The next comparison is against what is being written (a failed
        // write re-watches, and the stored status is compared again).
        announcement.status = Some(report);
    }
    Ok(())
}

/// How long one status write may take before it is given up and tried
/// again (with the latest report by then).
const STATUS_WRITE: Duration = Duration::from_secs(5);

/// Writes the node's NodeAnnouncement status: the latest report sent on
/// `reports` (with whether the fast path runs, for `/readyz`), each write
/// given up after [`STATUS_WRITE`] and retried a second later unless a newer
/// report came.
async fn write_status(
    api: Api<NodeAnnouncement>,
    config: Config,
    mut reports: tokio::sync::watch::Receiver<Option<(NodeAnnouncementStatus, bool)>>,
    rewatch: Arc<Notify>,
) {
    while reports.changed().await.is_ok() {
        loop {
            let Some((report, failover_on)) = reports.borrow_and_update().clone() else {
                break;
            };
            let body = json!({
                "apiVersion": "ferrolb.io/v1alpha1",
                "kind": "NodeAnnouncement",
                "metadata": { "name": config.node },
                "status": report,
            });
            let written = tokio::time::timeout(
                STATUS_WRITE,
                api.patch_status(
                    &config.node,
                    &PatchParams::apply(manager::SPEAKER).force(),
                    &Patch::Apply(body),
                ),
            )
            .await;
            let error = match written {
                Ok(Ok(_)) => {
                    tracing::info!(generation = ?report.observed_generation, "applied and reported");
                    if failover_on {
                        config
                            .ready
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    break;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {STATUS_WRITE:?}"),
            };
            tracing::warn!(%error, "cannot write NodeAnnouncement status; trying again");
            rewatch.notify_one();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                changed = reports.changed() => if changed.is_err() { return },
            }
        }
    }
}

#[cfg(test)]
mod column {
    use super::*;

    #[test]
    fn the_answered_column_shows_three_entries_and_counts_the_rest() {
        let ips = |lasts: &[u8]| -> IpSet {
            lasts
                .iter()
                .map(|l| std::net::IpAddr::from([192, 168, 1, *l]))
                .collect()
        };
        assert_eq!(summary(&ips(&[10])), "192.168.1.10");
        assert_eq!(
            summary(&ips(&[10, 11, 12, 20, 30])),
            "192.168.1.10-192.168.1.12,192.168.1.20,192.168.1.30"
        );
        assert_eq!(
            summary(&ips(&[10, 11, 12, 20, 30, 40, 41])),
            "192.168.1.10-192.168.1.12,192.168.1.20,192.168.1.30 (+2)"
        );
    }
}

#[cfg(test)]
mod passwords {
    use super::*;

    fn reference() -> SecretKeyRef {
        SecretKeyRef {
            namespace: "ferrolb-system".into(),
            name: "ferrolb-bgp-passwords".into(),
            key: "router".into(),
        }
    }

    #[tokio::test]
    async fn the_last_key_read_serves_while_the_apiserver_is_away_and_only_its_answer_takes_it() {
        // What the apiserver answers, one read at a time.
        type Answers = std::sync::Mutex<Vec<Result<Vec<u8>, Unread>>>;
        let answers: Arc<Answers> = Arc::new(std::sync::Mutex::new(vec![
            Ok(b"s3cret".to_vec()),
            Err(Unread {
                why: "no answer".into(),
                definitive: false,
            }),
            Err(Unread {
                why: "Secret gone".into(),
                definitive: true,
            }),
            Err(Unread {
                why: "no answer".into(),
                definitive: false,
            }),
        ]));
        let source = answers.clone();
        let passwords = cached(move |_| {
            let next = source.lock().unwrap().remove(0);
            Box::pin(async move { next })
        });
        assert_eq!(passwords(reference()).await, Ok(b"s3cret".to_vec()));
        assert_eq!(
            passwords(reference()).await,
            Ok(b"s3cret".to_vec()),
            "the apiserver is away: the last key read"
        );
        assert_eq!(passwords(reference()).await, Err("Secret gone".to_string()));
        assert_eq!(
            passwords(reference()).await,
            Err("no answer".to_string()),
            "a key the apiserver took away is not kept"
        );
    }
}
