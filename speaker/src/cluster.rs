//! The speaker in a cluster: it renews its Lease (its sign of life for the
//! operator), watches only its own NodeAnnouncement, applies it, and reports
//! back in its status with its own field manager.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use ferrolb_api::NodeAnnouncement;
use ferrolb_api::address::format_ip;
use ferrolb_api::bgppeer::SecretKeyRef;
use ferrolb_api::constants::{condition, manager};
use ferrolb_api::nodeannouncement::{L2Phase, L2State, NodeAnnouncementStatus};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;

use crate::bgp::Bgp;
use crate::bgp::session::Passwords;
use crate::node::{Layer2, Wanted};

/// How the speaker runs in a cluster.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's name.
    pub node: String,
    /// The namespace of the speaker Lease.
    pub namespace: String,
    /// Seconds the Lease lasts without renewal; renewed every third of it.
    pub lease_seconds: u64,
}

/// Renews `speaker-<node>` until the process ends.
async fn renew(client: Client, config: Config) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let name = format!("speaker-{}", config.node);
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
        if let Err(e) = api
            .patch(
                &name,
                &PatchParams::apply(manager::SPEAKER).force(),
                &Patch::Apply(body),
            )
            .await
        {
            tracing::warn!(error = %e, "cannot renew the speaker Lease");
        }
        tokio::time::sleep(every).await;
    }
}

/// What the speaker reports for an applied announcement.
fn status(
    announcement: &NodeAnnouncement,
    wanted: &Wanted,
    layer2: &Layer2,
    failed: &BTreeMap<Option<String>, String>,
    bgp: &Bgp,
) -> NodeAnnouncementStatus {
    let now = Time(Timestamp::now());
    let previous = announcement.status.clone().unwrap_or_default();
    let since = |ip: &str, state: L2Phase| {
        previous
            .l2
            .iter()
            .find(|s| s.ip == ip && s.state == state)
            .and_then(|s| s.since.clone())
            .or_else(|| Some(now.clone()))
    };
    let mut l2 = Vec::new();
    for ip in wanted.active_ips() {
        let text = format_ip(ip);
        let interfaces = layer2.interfaces_for(ip);
        let (state, message) = if interfaces.is_empty() {
            let why = failed.values().cloned().collect::<Vec<_>>().join("; ");
            (L2Phase::Failed, Some(why))
        } else {
            (L2Phase::Announcing, None)
        };
        l2.push(L2State {
            since: since(&text, state),
            ip: text,
            state,
            interfaces,
            message,
        });
    }
    for ip in &wanted.standby {
        let text = format_ip(*ip);
        l2.push(L2State {
            since: since(&text, L2Phase::Standby),
            ip: text,
            state: L2Phase::Standby,
            interfaces: Vec::new(),
            message: None,
        });
    }
    let announcing: Vec<String> = l2
        .iter()
        .filter(|s| s.state == L2Phase::Announcing)
        .map(|s| s.ip.clone())
        .collect();
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
                format!("{} IPs answered for", announcing.len())
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
        bgp: bgp.states(),
        l2_active: (!announcing.is_empty()).then(|| announcing.join(",")),
        bgp_sessions: Some(bgp.summary()),
    }
}

/// Reads TCP-MD5 passwords from Secrets.
pub fn secret_passwords(client: Client) -> Passwords {
    Arc::new(move |reference: SecretKeyRef| {
        let api: Api<Secret> = Api::namespaced(client.clone(), &reference.namespace);
        Box::pin(async move {
            let secret = api
                .get_opt(&reference.name)
                .await
                .map_err(|e| {
                    format!(
                        "cannot read Secret {}/{}: {e}",
                        reference.namespace, reference.name
                    )
                })?
                .ok_or_else(|| {
                    format!(
                        "Secret {}/{} does not exist",
                        reference.namespace, reference.name
                    )
                })?;
            secret
                .data
                .and_then(|mut data| data.remove(&reference.key))
                .map(|bytes| bytes.0)
                .ok_or_else(|| {
                    format!(
                        "Secret {}/{} has no key {}",
                        reference.namespace, reference.name, reference.key
                    )
                })
        })
    })
}

/// Runs the speaker in the cluster until `stopping` turns true; then ends
/// the BGP sessions as a stopping speaker should.
pub async fn run(
    client: Client,
    config: Config,
    mut layer2: Layer2,
    mut bgp: Bgp,
    mut stopping: watch::Receiver<bool>,
) -> Result<()> {
    tokio::spawn(renew(client.clone(), config.clone()));
    let api: Api<NodeAnnouncement> = Api::all(client);
    let own = watcher::Config::default().fields(&format!("metadata.name={}", config.node));
    let mut events = watcher(api.clone(), own).default_backoff().boxed();
    let changed = bgp.changed();
    let mut current: Option<(NodeAnnouncement, Wanted, BTreeMap<Option<String>, String>)> = None;
    loop {
        let event = tokio::select! {
            event = events.next() => match event {
                Some(event) => Some(event),
                None => break,
            },
            _ = changed.notified() => None,
            _ = stopping.wait_for(|s| *s) => {
                bgp.shutdown().await;
                return Ok(());
            }
        };
        if let Some(event) = event {
            let announcement = match event {
                Ok(watcher::Event::Apply(a) | watcher::Event::InitApply(a)) => a,
                Ok(watcher::Event::Delete(_)) => {
                    layer2.apply(&Wanted::default());
                    bgp.apply(&[]);
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
            let wanted = Wanted::from_spec(&announcement.spec);
            let failed = layer2.apply(&wanted);
            bgp.apply(&announcement.spec.bgp);
            current = Some((announcement, wanted, failed));
        }
        let Some((announcement, wanted, failed)) = &mut current else {
            continue;
        };
        let report = status(announcement, wanted, &layer2, failed, &bgp);
        if announcement.status.as_ref() == Some(&report) {
            continue;
        }
        let body = json!({
            "apiVersion": "ferrolb.io/v1alpha1",
            "kind": "NodeAnnouncement",
            "metadata": { "name": config.node },
            "status": report,
        });
        match api
            .patch_status(
                &config.node,
                &PatchParams::apply(manager::SPEAKER).force(),
                &Patch::Apply(body),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(active = ?wanted.active_ips(), bgp = %bgp.summary(), generation = ?announcement.metadata.generation, "applied and reported");
                // The next comparison is against what was just written.
                announcement.status = Some(report);
            }
            Err(e) => tracing::warn!(error = %e, "cannot write NodeAnnouncement status"),
        }
    }
    Ok(())
}
