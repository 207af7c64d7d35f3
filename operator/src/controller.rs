//! The controller: watches Services, IPAddressPools, Namespaces, Nodes, speaker
//! Leases, L2Advertisements, EndpointSlices and NodeAnnouncements into
//! in-memory stores, and on every change (coalesced) makes one pass over all of
//! them: the allocator gives IPs, the planner picks the nodes that announce
//! them, and only what differs is written (Service status, pool status,
//! NodeAnnouncements). Only the leader passes and writes; a new leader first
//! rebuilds the allocator from the IPs Services already show, so no IP is ever
//! handed out twice or renumbered.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrolb_api::bgppeer::BGPPeerStatus;
use ferrolb_api::constants::{condition, manager};
use ferrolb_api::{
    BGPAdvertisement, BGPPeer, IPAddressPool, IPAddressPoolStatus, L2Advertisement,
    NodeAnnouncement, NodeAnnouncementSpec, PrefixSet, PrefixSetSpec,
};
use ferrolb_runtime::watch_store;
use futures::{StreamExt, stream};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::{Notify, watch};

use crate::allocation::selector::Labels;
use crate::allocation::{Allocator, Assignment, Pool, ServiceKey, ServiceRequest};
use crate::announce::bgp::{plan_bgp, prefix_set_changes};
use crate::announce::plan_l2;
use crate::metrics::{Metrics, PoolLabels, ReasonLabels};
use crate::status::{self, Desired, Verdict};
use crate::written::Memo;
use crate::{announcing, convert};

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The `loadBalancerClass` handled besides Services without one.
    pub lb_class: String,
    /// This replica's name, in Events and the leader Lease.
    pub identity: String,
    /// Concurrent API writes.
    pub write_concurrency: usize,
    /// The namespace ferrolb runs in (speaker Leases, the failover Secret).
    pub namespace: String,
    /// Use nodes labelled `node.kubernetes.io/exclude-from-external-load-balancers`.
    pub ignore_exclude_lb: bool,
}

/// The stores the controller reads.
struct Stores {
    services: Store<Service>,
    pools: Store<IPAddressPool>,
    namespaces: Store<Namespace>,
    nodes: Store<Node>,
    leases: Store<Lease>,
    l2: Store<L2Advertisement>,
    peers: Store<BGPPeer>,
    bgp: Store<BGPAdvertisement>,
    slices: Store<EndpointSlice>,
    announcements: Store<NodeAnnouncement>,
    prefix_sets: Store<PrefixSet>,
}

impl Stores {
    fn namespace_labels(&self) -> HashMap<String, Labels> {
        self.namespaces
            .state()
            .iter()
            .map(|ns| (ns.name_any(), ns.labels().clone()))
            .collect()
    }

    fn pools(&self) -> Vec<Pool> {
        let mut pools: Vec<Pool> = self
            .pools
            .state()
            .iter()
            .map(|p| convert::pool(p))
            .collect();
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        pools
    }

    /// Our LoadBalancer Services, oldest first: when two want the last IP, the
    /// one that asked first gets it.
    fn ours(&self, lb_class: &str) -> Vec<Arc<Service>> {
        let mut services: Vec<Arc<Service>> = self
            .services
            .state()
            .into_iter()
            .filter(|s| convert::is_ours(s, lb_class) && s.metadata.deletion_timestamp.is_none())
            .collect();
        services.sort_by(|a, b| {
            let key = |s: &Service| {
                (
                    s.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    s.metadata.namespace.clone(),
                    s.metadata.name.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        services
    }
}

/// Whether a delete left the object gone (deleted now, or already).
fn gone<T>(result: &Result<T, kube::Error>) -> bool {
    match result {
        Ok(_) => true,
        Err(kube::Error::Api(e)) => e.code == 404,
        Err(_) => false,
    }
}

fn resource_version(object: &impl Resource) -> Option<u64> {
    object.meta().resource_version.as_deref()?.parse().ok()
}

/// One write the pass decided on.
enum Write {
    /// Apply a Service's status.
    Service {
        key: ServiceKey,
        service: Arc<Service>,
        desired: Desired,
        events: Vec<Event>,
        /// The allocation outcome to count once written, when it changed.
        allocation: Option<Verdict>,
    },
    /// Apply a node's NodeAnnouncement spec.
    Announcement {
        node: String,
        spec: NodeAnnouncementSpec,
    },
    /// Delete the NodeAnnouncement of a node that is gone.
    Retire { node: String },
    /// Apply one shard of an advertisement's shared prefixes.
    PrefixSet { name: String, spec: PrefixSetSpec },
    /// Delete a shard no longer wanted.
    DropPrefixSet { name: String },
    /// Take back what we wrote on a Service no longer ours.
    Clear {
        key: ServiceKey,
        service: Arc<Service>,
    },
    /// Apply a pool's status.
    Pool {
        name: String,
        status: IPAddressPoolStatus,
    },
    /// Apply a BGPPeer's status.
    Peer { name: String, status: BGPPeerStatus },
}

/// The leader's memory between passes.
struct State {
    allocator: Allocator,
    pools: Vec<Pool>,
    /// What we last wrote per Service, and the resourceVersion it produced: a
    /// store older than that has not seen our write yet.
    written: Memo<ServiceKey, Desired>,
    pools_written: Memo<String, IPAddressPoolStatus>,
    peers_written: Memo<String, BGPPeerStatus>,
    announcements_written: Memo<String, NodeAnnouncementSpec>,
    sets_written: Memo<String, PrefixSetSpec>,
    /// Pools with gauges exported, to remove those of a deleted pool.
    pools_exported: BTreeSet<String>,
    /// Other controllers seen writing a Service's ingress, and when last:
    /// once our write takes the field back their mark is gone from
    /// managedFields, so the sighting is remembered for a while.
    other_writers: HashMap<ServiceKey, (Vec<String>, std::time::Instant)>,
}

/// How long a sighting of another controller writing a Service's ingress is
/// reported after the last one.
const OTHER_WRITER_MEMORY: std::time::Duration = std::time::Duration::from_secs(600);

/// An Event for a condition that changed reason. `NotYetApplied` gets none:
/// every new Service passes through it for a moment, and people alert on
/// Warning events; a Service stuck there says so in its condition.
fn transition(kind: &str, previous: Option<&str>, verdict: &Verdict) -> Option<Event> {
    if previous == Some(verdict.reason.as_str())
        || verdict.reason == condition::reason::NOT_YET_APPLIED
    {
        return None;
    }
    let (ok, bad, action) = if kind == condition::IP_ALLOCATED {
        ("IPAllocated", "AllocationFailed", "Allocate")
    } else {
        ("Announced", "NotAnnounced", "Announce")
    };
    let note = if verdict.is_true() {
        verdict.message.clone()
    } else {
        format!("{}: {}", verdict.reason, verdict.message)
    };
    Some(Event {
        type_: if verdict.is_true() {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason: if verdict.is_true() { ok } else { bad }.to_string(),
        note: Some(note.chars().take(1000).collect()),
        action: action.to_string(),
        secondary: None,
    })
}

impl State {
    /// Rebuilds the allocator from the pools and the IPs Services already show.
    fn rebuild(stores: &Stores, config: &Config) -> State {
        let pools = stores.pools();
        let mut allocator = Allocator::new(pools.clone());
        let labels = stores.namespace_labels();
        let mut restored = 0;
        for service in stores.ours(&config.lb_class) {
            let (ingress, _) = status::current(&service);
            let ips: Vec<IpAddr> = ingress.iter().filter_map(|ip| ip.parse().ok()).collect();
            if ips.is_empty() {
                continue;
            }
            let ns_labels = labels
                .get(service.namespace().as_deref().unwrap_or_default())
                .cloned()
                .unwrap_or_default();
            let request = convert::request(&service, &ns_labels)
                .unwrap_or_else(|_| ServiceRequest::new(convert::service_key(&service)));
            match allocator.restore(&request, &ips) {
                Ok(_) => restored += 1,
                Err(failure) => {
                    tracing::warn!(service = %request.service, %failure, "cannot restore the IPs this Service shows; it will get new ones")
                }
            }
        }
        tracing::info!(
            restored,
            pools = pools.len(),
            "allocator rebuilt from Service status"
        );
        State {
            allocator,
            pools,
            written: Memo::default(),
            pools_written: Memo::default(),
            peers_written: Memo::default(),
            announcements_written: Memo::default(),
            sets_written: Memo::default(),
            pools_exported: BTreeSet::new(),
            other_writers: HashMap::new(),
        }
    }

    /// One pass: decide every Service's and pool's status; returns the writes.
    fn plan(&mut self, stores: &Stores, config: &Config, metrics: &Metrics) -> Vec<Write> {
        let pools = stores.pools();
        if pools != self.pools {
            self.allocator.set_pools(pools.clone());
            self.pools = pools;
        }
        let labels = stores.namespace_labels();
        let ours = stores.ours(&config.lb_class);
        let live: HashSet<ServiceKey> = ours.iter().map(|s| convert::service_key(s)).collect();
        let gone: Vec<ServiceKey> = self
            .allocator
            .services()
            .filter(|k| !live.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            let released = self.allocator.release(&key);
            self.written.forget(&key);
            tracing::info!(service = %key, ?released, "released");
        }

        // Allocation first, for every Service.
        let mut allocated = Vec::new();
        for service in ours {
            let key = convert::service_key(&service);
            let ns_labels = labels.get(&key.namespace).cloned().unwrap_or_default();
            let result =
                convert::request(&service, &ns_labels).and_then(|r| self.allocator.allocate(&r));
            let held: Vec<Assignment> = self.allocator.assignments(&key).unwrap_or_default();
            allocated.push((service, key, status::desired(&result, &held), held));
        }

        // Then who announces what.
        let pools_now = stores.pools.state();
        let endpoints = announcing::endpoint_nodes(&stores.slices.state());
        let announcements: BTreeMap<String, Arc<NodeAnnouncement>> = stores
            .announcements
            .state()
            .into_iter()
            .map(|a| (a.name_any(), a))
            .collect();
        let takeovers = announcing::takeovers(&announcements);
        let current = announcing::current_active(&announcements);
        let probes = announcing::probe_addresses(&announcements);
        let announced: Vec<_> = allocated
            .iter()
            .filter(|(_, _, _, held)| !held.is_empty())
            .map(|(service, _, _, held)| {
                announcing::announced(service, held, &endpoints, &current, &takeovers)
            })
            .collect();
        let planned_nodes = announcing::nodes(
            &stores.nodes.state(),
            &stores.leases.state(),
            &takeovers,
            config.ignore_exclude_lb,
        );
        let plan = plan_l2(
            &planned_nodes,
            &announcing::advertisements(&stores.l2.state(), &pools_now),
            &announced,
        );
        let bgp_plan = plan_bgp(
            &planned_nodes,
            &announcing::bgp_peers(&stores.peers.state()),
            &announcing::bgp_advertisements(&stores.bgp.state(), &pools_now),
            &announced,
        );

        let mut writes = Vec::new();
        let standbys = announcing::standbys(&plan);
        for (node, entries) in &plan.nodes {
            let sessions = bgp_plan
                .nodes
                .get(node)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let spec = announcing::spec(node, entries, sessions, &probes, &standbys);
            let current = announcements.get(node);
            if !self.announcements_written.needs(
                node,
                &spec,
                current.is_some_and(|a| a.spec == spec),
                current.and_then(|a| resource_version(a.as_ref())),
            ) {
                continue;
            }
            writes.push(Write::Announcement {
                node: node.clone(),
                spec,
            });
        }
        for node in announcements
            .keys()
            .filter(|n| !plan.nodes.contains_key(*n))
        {
            writes.push(Write::Retire { node: node.clone() });
        }

        // The prefixes many nodes share, one PrefixSet per shard.
        let sets_now: BTreeMap<String, Arc<PrefixSet>> = stores
            .prefix_sets
            .state()
            .into_iter()
            .map(|s| (s.name_any(), s))
            .collect();
        let specs_now: BTreeMap<String, PrefixSetSpec> = sets_now
            .iter()
            .map(|(name, set)| (name.clone(), set.spec.clone()))
            .collect();
        let changes = prefix_set_changes(&bgp_plan.shared, &specs_now);
        for (name, spec) in changes.apply {
            let seen = sets_now.get(&name);
            if self.sets_written.needs(
                &name,
                &spec,
                false,
                seen.and_then(|s| resource_version(s.as_ref())),
            ) {
                writes.push(Write::PrefixSet { name, spec });
            }
        }
        for name in changes.delete {
            self.sets_written.forget(&name);
            writes.push(Write::DropPrefixSet { name });
        }

        let summaries = announcing::Summaries::default();
        let now = std::time::Instant::now();
        self.other_writers
            .retain(|_, (_, seen)| now.duration_since(*seen) < OTHER_WRITER_MEMORY);
        for (service, key, mut desired, held) in allocated {
            let others = convert::other_ingress_writers(&service, manager::OPERATOR);
            if !others.is_empty() {
                tracing::warn!(service = %key, managers = ?others, "another controller writes this Service's status.loadBalancer");
                self.other_writers.insert(key.clone(), (others, now));
            }
            if !held.is_empty() {
                let ips: Vec<IpAddr> = held.iter().map(|a| a.ip).collect();
                let pools: BTreeSet<String> = held.iter().filter_map(|a| a.pool.clone()).collect();
                desired.announced = Some(match self.other_writers.get(&key) {
                    Some((others, _)) => Verdict::no(
                        condition::reason::OTHER_CONTROLLER,
                        convert::other_controller_message(others),
                    ),
                    None => announcing::verdict(
                        plan.services.get(&key),
                        bgp_plan.services.get(&key),
                        &ips,
                        &pools,
                        &announcements,
                        &summaries,
                    ),
                });
            }
            if !self.written.needs(
                &key,
                &desired,
                status::up_to_date(&service, &desired),
                resource_version(service.as_ref()),
            ) {
                continue;
            }
            let mut events = Vec::new();
            let previous = |kind: &str| status::condition(&service, kind).map(|c| c.reason.clone());
            // Counted once the write lands (a retried write counts once).
            let allocation = (previous(condition::IP_ALLOCATED).as_deref()
                != Some(desired.allocated.reason.as_str()))
            .then(|| desired.allocated.clone());
            events.extend(transition(
                condition::IP_ALLOCATED,
                previous(condition::IP_ALLOCATED).as_deref(),
                &desired.allocated,
            ));
            if let Some(verdict) = &desired.announced {
                events.extend(transition(
                    condition::ANNOUNCED,
                    previous(condition::ANNOUNCED).as_deref(),
                    verdict,
                ));
            }
            let ips: Vec<IpAddr> = held.iter().map(|a| a.ip).collect();
            if let Some(note) = announcing::moved(
                &ips,
                plan.services.get(&key),
                &current,
                &takeovers,
                &planned_nodes,
            ) {
                events.push(Event {
                    type_: EventType::Normal,
                    reason: "IPMoved".to_string(),
                    note: Some(note.chars().take(1000).collect()),
                    action: "Announce".to_string(),
                    secondary: None,
                });
            }
            writes.push(Write::Service {
                key,
                service,
                desired,
                events,
                allocation,
            });
        }

        // Services we wrote on that are no longer ours (type or class changed).
        for service in stores.services.state() {
            if convert::is_ours(&service, &config.lb_class) {
                continue;
            }
            if status::current(&service).1.is_some() {
                let key = convert::service_key(&service);
                writes.push(Write::Clear { key, service });
            }
        }

        for peer in stores.peers.state() {
            let name = peer.name_any();
            let status = announcing::peer_status(&peer, &bgp_plan, &announcements);
            if !self.peers_written.needs(
                &name,
                &status,
                peer.status.as_ref() == Some(&status),
                resource_version(peer.as_ref()),
            ) {
                continue;
            }
            writes.push(Write::Peer { name, status });
        }

        let pools_present: BTreeSet<String> =
            stores.pools.state().iter().map(|p| p.name_any()).collect();
        for gone in self.pools_exported.difference(&pools_present) {
            for family in ["ipv4", "ipv6"] {
                let labels = PoolLabels {
                    pool: gone.clone(),
                    family: family.to_string(),
                };
                metrics.pool_total.remove(&labels);
                metrics.pool_assigned.remove(&labels);
                metrics.pool_available.remove(&labels);
            }
        }
        self.pools_exported = pools_present;
        for pool in stores.pools.state() {
            let name = pool.name_any();
            let Some(state) = self.allocator.pool(&name) else {
                continue;
            };
            for (s, family) in [(0, "ipv4"), (1, "ipv6")] {
                let labels = PoolLabels {
                    pool: name.clone(),
                    family: family.to_string(),
                };
                metrics
                    .pool_total
                    .get_or_create(&labels)
                    .set(state.total[s] as f64);
                metrics
                    .pool_assigned
                    .get_or_create(&labels)
                    .set(state.assigned[s] as f64);
                metrics
                    .pool_available
                    .get_or_create(&labels)
                    .set(state.total[s].saturating_sub(state.assigned[s]) as f64);
            }
            let status = status::pool_status(
                pool.metadata.generation,
                pool.status.as_ref(),
                state,
                Time(Timestamp::now()),
            );
            if !self.pools_written.needs(
                &name,
                &status,
                pool.status.as_ref() == Some(&status),
                resource_version(pool.as_ref()),
            ) {
                continue;
            }
            writes.push(Write::Pool { name, status });
        }
        writes
    }
}

/// The first wait before retrying failed writes.
const RETRY_FIRST: Duration = Duration::from_secs(2);
/// The longest wait between retries.
const RETRY_LONGEST: Duration = Duration::from_secs(60);

/// The outcome of one write, fed back into the state.
enum Written {
    Service(ServiceKey, Desired, Option<u64>),
    Announcement(String, NodeAnnouncementSpec, Option<u64>),
    PrefixSet(String, PrefixSetSpec, Option<u64>),
    Pool(String, IPAddressPoolStatus, Option<u64>),
    Peer(String, BGPPeerStatus, Option<u64>),
    Failed,
    Cleared,
}

async fn execute(
    client: Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    write: Write,
) -> Written {
    let apply = PatchParams::apply(manager::OPERATOR).force();
    match write {
        Write::Service {
            key,
            service,
            desired,
            events,
            allocation,
        } => {
            let api: Api<Service> = Api::namespaced(client, &key.namespace);
            let body = status::apply_body(&service, &desired, Time(Timestamp::now()));
            let result = api
                .patch_status(&key.name, &apply, &Patch::Apply(body))
                .await;
            metrics.wrote("service_status", result.is_ok());
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
                        let reference = service.object_ref(&());
                        let published = recorder.publish(&event, &reference).await;
                        metrics.wrote("event", published.is_ok());
                        if let Err(e) = published {
                            tracing::warn!(service = %key, error = %e, "cannot publish event");
                        }
                    }
                    tracing::info!(service = %key, reason = %desired.allocated.reason, announced = ?desired.announced.as_ref().map(|v| &v.reason), ingress = ?desired.ingress, "status written");
                    Written::Service(key, desired, resource_version(&updated))
                }
                Err(e) => {
                    tracing::warn!(service = %key, error = %e, "cannot write Service status");
                    Written::Failed
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
            metrics.wrote("service_status", result.is_ok());
            match result {
                Ok(_) => {
                    tracing::info!(service = %key, "no longer ours: status cleared");
                    Written::Cleared
                }
                Err(e) => {
                    tracing::warn!(service = %key, error = %e, "cannot clear Service status");
                    Written::Failed
                }
            }
        }
        Write::Announcement { node, spec } => {
            let api: Api<NodeAnnouncement> = Api::all(client);
            // `spec.node` is always there: an apply whose spec has no field
            // left (a node that loses its last IP) would drop the spec, which
            // the schema requires.
            let body = json!({
                "apiVersion": "ferrolb.io/v1alpha1",
                "kind": "NodeAnnouncement",
                "metadata": { "name": node },
                "spec": spec,
            });
            let result = api.patch(&node, &apply, &Patch::Apply(body)).await;
            metrics.wrote("node_announcement", result.is_ok());
            match result {
                Ok(updated) => {
                    tracing::info!(%node, l2 = spec.l2.len(), "NodeAnnouncement written");
                    Written::Announcement(node, spec, resource_version(&updated))
                }
                Err(e) => {
                    tracing::warn!(%node, error = %e, "cannot write NodeAnnouncement");
                    Written::Failed
                }
            }
        }
        Write::Retire { node } => {
            let api: Api<NodeAnnouncement> = Api::all(client);
            let result = api.delete(&node, &DeleteParams::default()).await;
            metrics.wrote("node_announcement_delete", gone(&result));
            match result {
                Ok(_) => {
                    tracing::info!(%node, "node gone: NodeAnnouncement deleted");
                    Written::Cleared
                }
                Err(kube::Error::Api(e)) if e.code == 404 => Written::Cleared,
                Err(e) => {
                    tracing::warn!(%node, error = %e, "cannot delete NodeAnnouncement");
                    Written::Failed
                }
            }
        }
        Write::PrefixSet { name, spec } => {
            let api: Api<PrefixSet> = Api::all(client);
            let body = json!({
                "apiVersion": "ferrolb.io/v1alpha1",
                "kind": "PrefixSet",
                "metadata": {
                    "name": name,
                    "labels": { ferrolb_api::prefixset::ADVERTISEMENT_LABEL: spec.advertisement },
                },
                "spec": spec,
            });
            let result = api.patch(&name, &apply, &Patch::Apply(body)).await;
            metrics.wrote("prefix_set", result.is_ok());
            match result {
                Ok(updated) => {
                    tracing::info!(prefix_set = %name, prefixes = spec.count, "PrefixSet written");
                    Written::PrefixSet(name, spec, resource_version(&updated))
                }
                Err(e) => {
                    tracing::warn!(prefix_set = %name, error = %e, "cannot write PrefixSet");
                    Written::Failed
                }
            }
        }
        Write::DropPrefixSet { name } => {
            let api: Api<PrefixSet> = Api::all(client);
            let result = api.delete(&name, &DeleteParams::default()).await;
            metrics.wrote("prefix_set_delete", gone(&result));
            match result {
                Ok(_) => {
                    tracing::info!(prefix_set = %name, "PrefixSet no longer wanted: deleted");
                    Written::Cleared
                }
                Err(kube::Error::Api(e)) if e.code == 404 => Written::Cleared,
                Err(e) => {
                    tracing::warn!(prefix_set = %name, error = %e, "cannot delete PrefixSet");
                    Written::Failed
                }
            }
        }
        Write::Pool { name, status } => {
            let api: Api<IPAddressPool> = Api::all(client);
            let body = json!({
                "apiVersion": "ferrolb.io/v1alpha1",
                "kind": "IPAddressPool",
                "metadata": { "name": name },
                "status": status,
            });
            let result = api.patch_status(&name, &apply, &Patch::Apply(body)).await;
            metrics.wrote("pool_status", result.is_ok());
            match result {
                Ok(updated) => Written::Pool(name, status, resource_version(&updated)),
                Err(e) => {
                    tracing::warn!(pool = %name, error = %e, "cannot write pool status");
                    Written::Failed
                }
            }
        }
        Write::Peer { name, status } => {
            let api: Api<BGPPeer> = Api::all(client);
            let body = json!({
                "apiVersion": "ferrolb.io/v1alpha1",
                "kind": "BGPPeer",
                "metadata": { "name": name },
                "status": status,
            });
            let result = api.patch_status(&name, &apply, &Patch::Apply(body)).await;
            metrics.wrote("peer_status", result.is_ok());
            match result {
                Ok(updated) => Written::Peer(name, status, resource_version(&updated)),
                Err(e) => {
                    tracing::warn!(peer = %name, error = %e, "cannot write BGPPeer status");
                    Written::Failed
                }
            }
        }
    }
}

/// Runs the controller until the process ends.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    mut leading: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let notify = Arc::new(Notify::new());
    // Every watch wakes the pass loop.
    let wake = || {
        let notify = notify.clone();
        move || notify.notify_one()
    };
    // Lease renewals (every speaker, every few seconds) wake the loop on
    // their own: a pass follows only when the set of live speakers changed,
    // or when the first live Lease may have run out.
    let lease_events = Arc::new(Notify::new());
    let stores = Stores {
        services: watch_store(Api::<Service>::all(client.clone()), wake()),
        pools: watch_store(Api::<IPAddressPool>::all(client.clone()), wake()),
        namespaces: watch_store(Api::<Namespace>::all(client.clone()), wake()),
        nodes: watch_store(Api::<Node>::all(client.clone()), wake()),
        leases: watch_store(
            Api::<Lease>::namespaced(client.clone(), &config.namespace),
            {
                let lease_events = lease_events.clone();
                move || lease_events.notify_one()
            },
        ),
        l2: watch_store(Api::<L2Advertisement>::all(client.clone()), wake()),
        peers: watch_store(Api::<BGPPeer>::all(client.clone()), wake()),
        bgp: watch_store(Api::<BGPAdvertisement>::all(client.clone()), wake()),
        slices: watch_store(Api::<EndpointSlice>::all(client.clone()), wake()),
        announcements: watch_store(Api::<NodeAnnouncement>::all(client.clone()), wake()),
        prefix_sets: watch_store(Api::<PrefixSet>::all(client.clone()), wake()),
    };
    stores.services.wait_until_ready().await?;
    stores.pools.wait_until_ready().await?;
    stores.namespaces.wait_until_ready().await?;
    stores.nodes.wait_until_ready().await?;
    stores.leases.wait_until_ready().await?;
    stores.l2.wait_until_ready().await?;
    stores.peers.wait_until_ready().await?;
    stores.bgp.wait_until_ready().await?;
    stores.slices.wait_until_ready().await?;
    stores.announcements.wait_until_ready().await?;
    stores.prefix_sets.wait_until_ready().await?;
    tracing::info!("caches synced");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: manager::OPERATOR.to_string(),
            instance: Some(config.identity.clone()),
        },
    );

    let mut state: Option<State> = None;
    let mut retry: Option<Instant> = None;
    // Failed writes are retried after 2 s, doubling while they keep failing
    // (up to a minute), so a persistent failure does not flood the API or the log.
    let mut backoff = RETRY_FIRST;
    let mut live_at_pass: Option<BTreeSet<String>> = None;
    let mut first_expiry: Option<Instant> = None;
    let mut forget_at: Option<Instant> = None;
    loop {
        let retry_in = retry.map(|at| at.saturating_duration_since(Instant::now()));
        let expiry_in = first_expiry.map(|at| at.saturating_duration_since(Instant::now()));
        let forget_in = forget_at.map(|at| at.saturating_duration_since(Instant::now()));
        let mut only_leases = false;
        tokio::select! {
            _ = notify.notified() => {}
            _ = lease_events.notified() => only_leases = true,
            _ = tokio::time::sleep(expiry_in.unwrap_or_default()), if expiry_in.is_some() => {
                first_expiry = None;
                only_leases = true;
            }
            _ = tokio::time::sleep(forget_in.unwrap_or_default()), if forget_in.is_some() => {
                forget_at = None;
            }
            changed = leading.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the leader election stopped");
                }
            }
            _ = tokio::time::sleep(retry_in.unwrap_or(Duration::from_secs(3600))), if retry_in.is_some() => {}
        }
        if only_leases {
            // Renewals, or the first Lease's end come: a pass only if the
            // live speakers are not those of the last pass (a pass longer
            // than a renewal period must not start the next one by itself).
            let (live, until) = announcing::liveness(&stores.leases.state(), Timestamp::now());
            if live_at_pass.as_ref() == Some(&live) {
                first_expiry = until.map(|d| Instant::now() + d.max(Duration::from_millis(100)));
                metrics.passes_skipped.inc();
                continue;
            }
        }
        // Let a burst of events land before one pass over all of them.
        tokio::time::sleep(Duration::from_millis(50)).await;
        if !*leading.borrow() {
            if state.take().is_some() {
                tracing::info!("no longer the leader: stopped writing");
            }
            metrics.leader.set(0);
            continue;
        }
        metrics.leader.set(1);
        let started = Instant::now();
        let state = state.get_or_insert_with(|| State::rebuild(&stores, &config));
        let (live, until) = announcing::liveness(&stores.leases.state(), Timestamp::now());
        live_at_pass = Some(live);
        first_expiry = until.map(|d| Instant::now() + d.max(Duration::from_millis(100)));
        let writes = state.plan(&stores, &config, &metrics);
        // A remembered sighting of another controller ending is a change too.
        forget_at = state
            .other_writers
            .values()
            .map(|(_, seen)| *seen + OTHER_WRITER_MEMORY)
            .min();
        let planned = writes.len();
        let results: Vec<Written> = stream::iter(writes)
            .map(|w| execute(client.clone(), recorder.clone(), metrics.clone(), w))
            .buffer_unordered(config.write_concurrency.max(1))
            .collect()
            .await;
        let mut failed = 0;
        for result in results {
            match result {
                Written::Service(key, desired, Some(rv)) => {
                    state.written.record(key, desired, rv);
                }
                Written::Pool(name, status, Some(rv)) => {
                    state.pools_written.record(name, status, rv);
                }
                Written::Peer(name, status, Some(rv)) => {
                    state.peers_written.record(name, status, rv);
                }
                Written::Announcement(node, spec, Some(rv)) => {
                    state.announcements_written.record(node, spec, rv);
                }
                Written::PrefixSet(name, spec, Some(rv)) => {
                    state.sets_written.record(name, spec, rv);
                }
                Written::Failed => failed += 1,
                _ => {}
            }
        }
        metrics
            .reconcile_seconds
            .observe(started.elapsed().as_secs_f64());
        if planned > 0 {
            tracing::debug!(planned, failed, elapsed = ?started.elapsed(), "pass done");
        }
        retry = (failed > 0).then(|| Instant::now() + backoff);
        backoff = if failed > 0 {
            (backoff * 2).min(RETRY_LONGEST)
        } else {
            RETRY_FIRST
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scripted::{Reply, client, status};

    #[tokio::test]
    async fn a_failed_status_write_is_counted_and_reported_for_retry() {
        let (client, server) = client(vec![Reply {
            method: "PATCH",
            path: "/api/v1/namespaces/default/services/web/status",
            status: 500,
            body: status(500, "InternalError"),
        }]);
        let metrics = Metrics::new();
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "test".into(),
                instance: None,
            },
        );
        let service: Service = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer"},
        }))
        .expect("service");
        let desired = Desired {
            ingress: vec!["10.0.0.1".into()],
            allocated: Verdict::yes("Allocated", "Allocated 10.0.0.1 from pool p"),
            announced: None,
        };
        let write = Write::Service {
            key: ServiceKey::new("default", "web"),
            service: Arc::new(service),
            allocation: Some(desired.allocated.clone()),
            desired,
            events: Vec::new(),
        };
        let written = execute(client, recorder, metrics.clone(), write).await;
        server.await.expect("the write was attempted");
        assert!(matches!(written, Written::Failed));
        let page = metrics.encode();
        assert!(
            page.contains(r#"ferrolb_api_write_errors_total{kind="service_status"} 1"#),
            "{page}"
        );
        assert!(
            page.contains("ferrolb_allocations_total 0"),
            "a refused write allocated nothing: {page}"
        );
    }

    #[test]
    fn a_passing_not_yet_applied_raises_no_warning_but_a_real_problem_does() {
        let pending = Verdict::no("NotYetApplied", "the speaker has not applied it yet");
        assert!(transition(condition::ANNOUNCED, None, &pending).is_none());
        let stuck = Verdict::no("NoEligibleNode", "no node may announce 10.0.0.1");
        let event = transition(condition::ANNOUNCED, Some("NotYetApplied"), &stuck).unwrap();
        assert_eq!(event.type_, EventType::Warning);
        assert_eq!(event.reason, "NotAnnounced");
        let fine = Verdict::yes("Announced", "L2: 10.0.0.1 answered by node a");
        let event = transition(condition::ANNOUNCED, Some("NotYetApplied"), &fine).unwrap();
        assert_eq!(event.type_, EventType::Normal);
        assert!(transition(condition::ANNOUNCED, Some("Announced"), &fine).is_none());
    }
}
