//! The plan layer: pure. From a [`Snapshot`] of the cluster and the
//! allocator's memory, one pass decides every Service's IPs and conditions,
//! which node answers for each layer 2 IP, which sessions carry each BGP
//! prefix, and every NodeAnnouncement, PrefixSet, pool and BGPPeer status.
//! No client, no clock (the time is an input), no I/O: what to write comes
//! out as [`Write`]s, and the write layer decides what is already written.

pub mod allocation;
pub mod announce;
pub mod conditions;
pub mod status;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ferrolb_api::bgppeer::BGPPeerStatus;
use ferrolb_api::constants::condition;
use ferrolb_api::{IPAddressPoolStatus, NodeAnnouncementSpec, PrefixSetSpec};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::{Event, EventType};

use crate::cluster::{Snapshot, version};
use allocation::{Allocator, Assignment, Pool, ServiceKey, ServiceRequest};
use announce::Announced;
use announce::bgp::{plan_bgp, prefix_set_changes};
use announce::{Placements, plan_l2_from};
use status::{Desired, Verdict};

/// What the store shows of an object the plan wants written: whether it
/// already says what the plan wants, and its resourceVersion (a store older
/// than our last write of the same value has simply not caught up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// The stored object already says it.
    pub up_to_date: bool,
    /// The stored object's resourceVersion.
    pub version: Option<u64>,
}

/// One write the plan wants.
pub enum Write {
    /// Apply a Service's status.
    Service {
        key: ServiceKey,
        service: Arc<Service>,
        desired: Desired,
        seen: Seen,
        /// Events to publish once the status is written.
        events: Vec<Event>,
        /// The allocation outcome to count once written, when it changed.
        allocation: Option<Verdict>,
    },
    /// Take back what we wrote on a Service no longer ours.
    Clear {
        key: ServiceKey,
        service: Arc<Service>,
    },
    /// Apply a node's NodeAnnouncement spec.
    Announcement {
        node: String,
        spec: NodeAnnouncementSpec,
        seen: Seen,
    },
    /// Delete the NodeAnnouncement of a node that is gone.
    Retire { node: String },
    /// Apply one shard of an advertisement's shared prefixes.
    PrefixSet {
        name: String,
        spec: PrefixSetSpec,
        seen: Seen,
    },
    /// Delete a shard no longer wanted.
    DropPrefixSet { name: String },
    /// Apply a pool's status.
    Pool {
        name: String,
        status: IPAddressPoolStatus,
        seen: Seen,
    },
    /// Apply a BGPPeer's status.
    Peer {
        name: String,
        status: BGPPeerStatus,
        seen: Seen,
    },
}

/// What one pass decided.
#[derive(Default)]
pub struct Pass {
    /// Everything that should be so; the writer skips what already is.
    pub writes: Vec<Write>,
    /// Services gone since the last pass (their IPs were released).
    pub released: Vec<ServiceKey>,
}

/// How long a sighting of another controller writing a Service's ingress is
/// reported after the last one: once our write takes the field back their
/// mark is gone from managedFields.
pub const OTHER_WRITER_MEMORY: Duration = Duration::from_secs(600);

/// Everything but the Services a plan depends on. While it stays the same,
/// a pass re-plans only the Services that changed (and the groups they share
/// IPs with); when it changes, a pass re-plans everything.
#[derive(Clone, Debug, PartialEq)]
struct World {
    nodes: Vec<announce::Node>,
    l2: Vec<announce::L2Advertisement>,
    bgp: Vec<announce::bgp::Advertisement>,
    peers: Vec<announce::bgp::Peer>,
    probes: BTreeMap<String, String>,
}

/// What the last pass decided for one Service, and from what.
#[derive(Clone, Debug)]
struct Kept {
    /// The Service as read in the last pass.
    ours: Arc<crate::cluster::Ours>,
    /// The last pass that saw it.
    seen: u64,
    /// What it asked of the allocator.
    request: Result<ServiceRequest, allocation::Failure>,
    /// Whether the allocator gave it all it asked (else it is asked again
    /// when an address may have been freed).
    allocated: bool,
    /// Its IPs.
    held: Vec<Assignment>,
    /// Its status, the Announced verdict included.
    desired: Desired,
    /// What went to the planners (with IPs only).
    announced: Option<Announced>,
    /// What its Announced verdict was worked out from.
    inputs: Option<Inputs>,
    /// The object its status was last compared with, and whether it showed
    /// `desired`.
    compared: Option<(Arc<Service>, bool)>,
    /// `desired` changed since it was last compared.
    fresh: bool,
}

/// The inputs of a Service's Announced verdict: when they are the same as in
/// the last pass, so is the verdict.
#[derive(Clone, Debug, PartialEq)]
struct Inputs {
    l2: Option<announce::Outcome>,
    bgp: Option<announce::bgp::Outcome>,
    /// The NodeAnnouncements of the active and standby node (by address:
    /// any change to one is a new object).
    reports: [usize; 2],
    kernel: Arc<str>,
    summary: Option<Arc<conditions::Summary>>,
    others: Option<Vec<String>>,
}

/// The leader's memory between passes.
#[derive(Debug, Default)]
pub struct Memory {
    allocator: Allocator,
    pools: Vec<Pool>,
    /// Where the last pass placed each layer 2 group.
    placements: Placements,
    /// Other controllers seen writing a Service's ingress, and when last.
    other_writers: HashMap<ServiceKey, (Vec<String>, Timestamp)>,
    /// The world of the last pass (none before the first).
    world: Option<World>,
    /// Per Service, what the last pass decided.
    kept: HashMap<ServiceKey, Kept>,
    /// The layer 2 plan, kept between passes and patched.
    l2: announce::Plan,
    /// The BGP plan, kept between passes and patched.
    bgp: announce::bgp::Plan,
    /// Per IP, the Services using it.
    users: HashMap<IpAddr, BTreeSet<ServiceKey>>,
    /// Per Service, the IPs it was planned with and whether it is Local.
    planned: HashMap<ServiceKey, (Vec<IpAddr>, bool)>,
    /// Per IP, its standby node.
    standbys: BTreeMap<IpAddr, String>,
    /// Nodes whose NodeAnnouncement did not show the planned spec last time
    /// it was compared, with the object compared.
    nodes_compared: HashMap<String, (Option<Arc<ferrolb_api::NodeAnnouncement>>, bool)>,
    /// A Service's holdings changed last pass: the failing ones try again.
    retry_failing: bool,
    /// Re-plan everything every pass (to check the incremental passes).
    always_whole: bool,
    /// Passes made.
    passes: u64,
    /// The endpoints of the last pass.
    endpoints: Option<Arc<BTreeMap<ServiceKey, BTreeSet<String>>>>,
    /// Per IP, the active node by spec, and by takeover, in the last pass.
    current: BTreeMap<IpAddr, String>,
    taken: BTreeMap<IpAddr, String>,
    /// Per node, its NodeAnnouncement object in the last pass.
    reports: BTreeMap<String, Same<ferrolb_api::NodeAnnouncement>>,
    /// The kernel-answers-ARP note of the last pass.
    kernel: Option<String>,
    /// Per set of BGP sessions, how it stood in the last pass.
    summaries: Vec<(Sessions, Arc<conditions::Summary>)>,
}

/// A set of (node, peer) BGP sessions, shared by the Services it carries.
type Sessions = Arc<BTreeSet<(String, String)>>;

/// An object compared by address: the stores hand out a new one on every
/// change, and holding it keeps its address from being reused.
#[derive(Clone, Debug)]
struct Same<T>(Arc<T>);

impl<T> PartialEq for Same<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Adds to `into` the keys whose value differs between two sorted maps.
fn differing<K: Ord + Clone, V: PartialEq>(
    before: &BTreeMap<K, V>,
    now: &BTreeMap<K, V>,
    into: &mut BTreeSet<K>,
) {
    let mut a = before.iter().peekable();
    let mut b = now.iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((k, _)), None) => {
                into.insert((*k).clone());
                a.next();
            }
            (None, Some((k, _))) => {
                into.insert((*k).clone());
                b.next();
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    into.insert((*ka).clone());
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    into.insert((*kb).clone());
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    if va != vb {
                        into.insert((*ka).clone());
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
}

/// An Event for a condition that changed reason. `NotYetApplied` gets none:
/// every new Service passes through it for a moment, and people alert on
/// Warning events; a Service stuck there says so in its condition.
pub fn transition(kind: &str, previous: Option<&str>, verdict: &Verdict) -> Option<Event> {
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

fn ptr<T>(object: Option<&Arc<T>>) -> usize {
    object.map_or(0, |o| Arc::as_ptr(o) as usize)
}

impl Memory {
    /// Rebuilds the allocator from the pools and the IPs Services already
    /// show, so no IP is handed out twice or renumbered.
    pub fn rebuild(snapshot: &Snapshot) -> Memory {
        let mut allocator = Allocator::new(snapshot.pools.clone());
        let mut restored = 0;
        for service in snapshot.ours.iter().filter(|s| !s.shown.is_empty()) {
            let request = service
                .request
                .clone()
                .unwrap_or_else(|_| ServiceRequest::new(service.key.clone()));
            match allocator.restore(&request, &service.shown) {
                Ok(_) => restored += 1,
                Err(failure) => {
                    tracing::warn!(service = %request.service, %failure, "cannot restore the IPs this Service shows; it will get new ones")
                }
            }
        }
        tracing::info!(
            restored,
            pools = snapshot.pools.len(),
            "allocator rebuilt from Service status"
        );
        Memory {
            allocator,
            pools: snapshot.pools.clone(),
            ..Memory::default()
        }
    }

    /// The same memory, re-planning everything on every pass: what each
    /// incremental pass must agree with.
    pub fn whole_every_pass(mut self) -> Memory {
        self.always_whole = true;
        self
    }

    /// The allocator, for the pool gauges.
    pub fn allocator(&self) -> &Allocator {
        &self.allocator
    }

    /// When the first remembered sighting of another controller ends (a
    /// change to pass on, though nothing in the cluster changed).
    pub fn next_forget(&self) -> Option<Timestamp> {
        self.other_writers
            .values()
            .map(|(_, seen)| *seen + OTHER_WRITER_MEMORY)
            .min()
    }

    /// One pass: what every object the operator writes should say. The
    /// first pass, and any pass after a change to nodes, speakers,
    /// advertisements, peers or pools, plans everything; otherwise only the
    /// Services that changed are allocated and placed again, and a Service
    /// whose verdict inputs and object are as before costs a few
    /// comparisons.
    pub fn pass(&mut self, snapshot: &Snapshot, now: Timestamp) -> Pass {
        let world = World {
            nodes: snapshot.nodes.clone(),
            l2: snapshot.l2.clone(),
            bgp: snapshot.bgp.clone(),
            peers: snapshot.peers.clone(),
            probes: snapshot.probes.clone(),
        };
        let pools_changed = snapshot.pools != self.pools;
        let whole = self.always_whole || pools_changed || self.world.as_ref() != Some(&world);
        if pools_changed {
            self.allocator.set_pools(snapshot.pools.clone());
            self.pools = snapshot.pools.clone();
        }

        self.passes += 1;
        let pass = self.passes;
        let mut changed: BTreeSet<ServiceKey> = BTreeSet::new();

        // Which Services are as in the last pass (the same object read), and
        // which failed to get IPs: one look each.
        let mut todo: Vec<usize> = Vec::new();
        let mut failing: Vec<usize> = Vec::new();
        let mut reread: Vec<usize> = Vec::new();
        for (i, service) in snapshot.ours.iter().enumerate() {
            match self.kept.get_mut(&service.key) {
                Some(kept) => {
                    kept.seen = pass;
                    if !Arc::ptr_eq(&kept.ours, service) {
                        reread.push(i);
                        if kept.request != service.request {
                            todo.push(i);
                        }
                    }
                    if !kept.allocated {
                        failing.push(i);
                    }
                    kept.ours = service.clone();
                }
                None => todo.push(i),
            }
        }
        // Services gone: their IPs are free.
        let gone: Vec<ServiceKey> = self
            .kept
            .iter()
            .filter(|(_, k)| k.seen != pass)
            .map(|(key, _)| key.clone())
            .collect();
        let mut released: Vec<ServiceKey> = Vec::new();
        for key in gone {
            self.kept.remove(&key);
            let ips = self.allocator.release(&key);
            tracing::info!(service = %key, ?ips, "released");
            changed.insert(key.clone());
            released.push(key);
        }

        // Allocation, oldest first: a Service is asked again when its
        // request changed, the pools changed, or it failed and something
        // may have been freed before it.
        let mut freed = !released.is_empty() || pools_changed || self.retry_failing;
        let mut reallocated = false;
        let everyone = pools_changed || self.always_whole;
        let order: Vec<usize> = if everyone {
            (0..snapshot.ours.len()).collect()
        } else {
            let mut order = todo;
            order.extend(failing);
            order.sort_unstable();
            order.dedup();
            order
        };
        let mut replanned: Vec<usize> = Vec::new();
        for i in order {
            let service = &snapshot.ours[i];
            let kept = self.kept.get(&service.key);
            let asked_again = kept.is_none_or(|k| k.request != service.request);
            if !(asked_again || everyone || kept.is_some_and(|k| !k.allocated && freed)) {
                continue;
            }
            let result = service
                .request
                .clone()
                .and_then(|r| self.allocator.allocate(&r));
            let held = self.allocator.assignments(&service.key).unwrap_or_default();
            let before = kept.map(|k| k.held.clone());
            if kept.is_some() && asked_again {
                freed = true;
                reallocated = true;
            }
            let desired = status::desired(&result, &held);
            if before.as_ref() != Some(&held) {
                changed.insert(service.key.clone());
            }
            replanned.push(i);
            let kept = self.kept.entry(service.key.clone()).or_insert(Kept {
                ours: service.clone(),
                seen: pass,
                request: service.request.clone(),
                allocated: false,
                held: Vec::new(),
                desired: desired.clone(),
                announced: None,
                inputs: None,
                compared: None,
                fresh: true,
            });
            kept.request = service.request.clone();
            kept.held = held;
            // A PreferDualStack Service holding one family may gain the
            // other once an address is freed: it is retried as a failure is.
            let partial = matches!(
                &service.request,
                Ok(r) if matches!(r.families, allocation::FamilyPolicy::PreferDual(_)) && kept.held.len() < 2
            );
            kept.allocated = result.is_ok() && !partial;
            if kept.desired.allocated != desired.allocated
                || kept.desired.ingress != desired.ingress
            {
                kept.desired = desired;
                kept.inputs = None;
                kept.fresh = true;
            }
        }
        self.retry_failing = reallocated;

        // What goes to the planners: a Service whose IPs, endpoints or
        // current node changed is planned again. Endpoints and current
        // nodes are looked at per Service only when they changed at all.
        let endpoints_changed = self
            .endpoints
            .as_ref()
            .is_none_or(|e| !Arc::ptr_eq(e, &snapshot.endpoints));
        let mut moved_ips: BTreeSet<IpAddr> = BTreeSet::new();
        differing(&self.current, &snapshot.current, &mut moved_ips);
        differing(&self.taken, &snapshot.takeovers.by, &mut moved_ips);
        let mut recheck: BTreeSet<usize> = replanned.into_iter().chain(reread).collect();
        if whole || endpoints_changed {
            recheck.extend(0..snapshot.ours.len());
        } else if !moved_ips.is_empty() {
            let position: HashMap<&ServiceKey, usize> = if moved_ips.len() > 64 {
                snapshot
                    .ours
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (&s.key, i))
                    .collect()
            } else {
                HashMap::new()
            };
            for ip in &moved_ips {
                for user in self.users.get(ip).into_iter().flatten() {
                    let at = position
                        .get(user)
                        .copied()
                        .or_else(|| snapshot.ours.iter().position(|s| &s.key == user));
                    recheck.extend(at);
                }
            }
        }
        if endpoints_changed {
            self.endpoints = Some(snapshot.endpoints.clone());
        }
        if !moved_ips.is_empty() {
            self.current = snapshot.current.clone();
            self.taken = snapshot.takeovers.by.clone();
        }
        let empty = BTreeSet::new();
        for i in recheck {
            let service = &snapshot.ours[i];
            let Some(kept) = self.kept.get_mut(&service.key) else {
                continue;
            };
            if kept.held.is_empty() {
                if kept.announced.take().is_some() {
                    changed.insert(service.key.clone());
                }
                continue;
            }
            let endpoints = snapshot.endpoints.get(&service.key).unwrap_or(&empty);
            let first = kept.held[0].ip;
            let current = snapshot
                .takeovers
                .by
                .get(&first)
                .or_else(|| snapshot.current.get(&first));
            let same = kept.announced.as_ref().is_some_and(|a| {
                a.local == service.local
                    && a.endpoint_nodes == *endpoints
                    && a.current.as_ref() == current
                    && a.ips.len() == kept.held.len()
                    && a.ips
                        .iter()
                        .zip(&kept.held)
                        .all(|((ip, pool), h)| *ip == h.ip && *pool == h.pool)
            });
            if !same {
                kept.announced = Some(conditions::announced(
                    service,
                    &kept.held,
                    &snapshot.endpoints,
                    &snapshot.current,
                    &snapshot.takeovers,
                ));
                changed.insert(service.key.clone());
            }
        }

        let (touched, replanned) = if whole {
            (self.plan_whole(snapshot), BTreeSet::new())
        } else {
            self.plan_changed(snapshot, &changed)
        };
        self.world = Some(world);

        let mut writes = Vec::new();
        self.announcements(snapshot, whole, &touched, &mut writes);
        if whole || !changed.is_empty() {
            self.prefix_sets(snapshot, &mut writes);
        }
        self.services(snapshot, now, whole, &replanned, &mut writes);

        // Services we wrote on that are no longer ours (type or class changed).
        for service in &snapshot.others {
            if status::current(service).1.is_some() {
                writes.push(Write::Clear {
                    key: crate::cluster::convert::service_key(service),
                    service: service.clone(),
                });
            }
        }
        self.statuses(snapshot, now, &mut writes);
        Pass { writes, released }
    }

    /// Plans every Service; returns every node.
    fn plan_whole(&mut self, snapshot: &Snapshot) -> BTreeSet<String> {
        let announced: Vec<Announced> = snapshot
            .ours
            .iter()
            .filter_map(|s| self.kept.get(&s.key)?.announced.clone())
            .collect();
        self.l2 = plan_l2_from(
            &mut self.placements,
            &snapshot.nodes,
            &snapshot.l2,
            &announced,
            true,
        );
        self.bgp = plan_bgp(&snapshot.nodes, &snapshot.peers, &snapshot.bgp, &announced);
        self.users.clear();
        self.planned.clear();
        for a in &announced {
            self.remember(a);
        }
        self.standbys = conditions::standbys(&self.l2);
        self.nodes_compared.clear();
        self.l2.nodes.keys().cloned().collect()
    }

    /// Plans again the Services in `changed` and every Service they share
    /// an IP with (the world being as in the last pass); returns the nodes
    /// whose layer 2 entries or BGP sessions changed.
    fn plan_changed(
        &mut self,
        snapshot: &Snapshot,
        changed: &BTreeSet<ServiceKey>,
    ) -> (BTreeSet<String>, BTreeSet<ServiceKey>) {
        let mut touched = BTreeSet::new();
        if changed.is_empty() {
            return (touched, BTreeSet::new());
        }
        // The groups of the changed Services: everything sharing an IP with
        // them in the last plan, transitively (a Service that takes an IP now
        // changed itself).
        let mut affected: BTreeSet<ServiceKey> = BTreeSet::new();
        let mut old_ips: BTreeSet<IpAddr> = BTreeSet::new();
        let mut queue: Vec<ServiceKey> = changed.iter().cloned().collect();
        while let Some(key) = queue.pop() {
            if !affected.insert(key.clone()) {
                continue;
            }
            let mut ips: Vec<IpAddr> = self
                .planned
                .get(&key)
                .map(|(ips, _)| ips.clone())
                .unwrap_or_default();
            if let Some(a) = self.kept.get(&key).and_then(|k| k.announced.as_ref()) {
                ips.extend(a.ips.iter().map(|(ip, _)| *ip));
            }
            for ip in ips {
                if self
                    .planned
                    .get(&key)
                    .is_some_and(|(old, _)| old.contains(&ip))
                {
                    old_ips.insert(ip);
                }
                for user in self.users.get(&ip).into_iter().flatten() {
                    if !affected.contains(user) {
                        queue.push(user.clone());
                    }
                }
            }
        }
        let now: Vec<Announced> = affected
            .iter()
            .filter_map(|k| self.kept.get(k)?.announced.clone())
            .collect();

        // Layer 2: take the groups' entries out, place them again.
        for key in &affected {
            if let Some(announce::Outcome::Announced { node, standby }) =
                self.l2.services.remove(key)
            {
                for node in std::iter::once(node).chain(standby) {
                    if let Some(entries) = self.l2.nodes.get_mut(&node) {
                        entries.retain(|e| !old_ips.contains(&e.ip));
                    }
                    touched.insert(node);
                }
            }
        }
        self.placements.forget(&old_ips);
        for ip in &old_ips {
            self.standbys.remove(ip);
        }
        let sub = plan_l2_from(
            &mut self.placements,
            &snapshot.nodes,
            &snapshot.l2,
            &now,
            false,
        );
        self.standbys.extend(conditions::standbys(&sub));
        for (node, entries) in sub.nodes {
            if entries.is_empty() {
                continue;
            }
            let list = self.l2.nodes.entry(node.clone()).or_default();
            list.extend(entries);
            list.sort();
            touched.insert(node);
        }
        self.l2.services.extend(sub.services);

        // BGP: prefixes of one IP each (no aggregation) and no Local Service
        // among them: only the shared prefixes of these IPs change.
        let aggregated = snapshot
            .bgp
            .iter()
            .any(|a| a.aggregation_v4 < 32 || a.aggregation_v6 < 128);
        let local = affected.iter().any(|k| {
            self.planned.get(k).is_some_and(|(_, local)| *local)
                || self
                    .kept
                    .get(k)
                    .and_then(|k| k.announced.as_ref())
                    .is_some_and(|a| a.local)
        });
        if aggregated || local {
            let all: Vec<Announced> = snapshot
                .ours
                .iter()
                .filter_map(|s| self.kept.get(&s.key)?.announced.clone())
                .collect();
            let bgp = plan_bgp(&snapshot.nodes, &snapshot.peers, &snapshot.bgp, &all);
            for (node, sessions) in &bgp.nodes {
                if self.bgp.nodes.get(node) != Some(sessions) {
                    touched.insert(node.clone());
                }
            }
            self.bgp = bgp;
        } else if !snapshot.bgp.is_empty() {
            let sub = plan_bgp(&snapshot.nodes, &snapshot.peers, &snapshot.bgp, &now);
            for key in &affected {
                self.bgp.services.remove(key);
            }
            self.bgp.services.extend(sub.services);
            for advertisement in &snapshot.bgp {
                let Some(shared) = self.bgp.shared.get_mut(&advertisement.name) else {
                    continue;
                };
                for ip in &old_ips {
                    shared
                        .prefixes
                        .remove(&announce::bgp::prefix(*ip, advertisement));
                }
                if let Some(added) = sub.shared.get(&advertisement.name) {
                    shared.prefixes.extend(added.prefixes.iter().cloned());
                }
            }
        } else {
            for key in &affected {
                self.bgp.services.remove(key);
            }
            let sub = plan_bgp(&snapshot.nodes, &snapshot.peers, &snapshot.bgp, &now);
            self.bgp.services.extend(sub.services);
        }

        // Who uses which IP now.
        for ip in &old_ips {
            if let Some(users) = self.users.get_mut(ip) {
                users.retain(|k| !affected.contains(k));
                if users.is_empty() {
                    self.users.remove(ip);
                }
            }
        }
        for key in &affected {
            self.planned.remove(key);
        }
        for a in &now {
            self.remember(a);
        }
        (touched, affected)
    }

    /// Records the IPs a planned Service uses.
    fn remember(&mut self, a: &Announced) {
        for (ip, _) in &a.ips {
            self.users.entry(*ip).or_default().insert(a.service.clone());
        }
        self.planned.insert(
            a.service.clone(),
            (a.ips.iter().map(|(ip, _)| *ip).collect(), a.local),
        );
    }

    /// The NodeAnnouncement specs: every node after a whole plan; else the
    /// nodes whose entries changed, whose object changed, or that did not
    /// show their spec yet. Nodes gone lose theirs.
    fn announcements(
        &mut self,
        snapshot: &Snapshot,
        whole: bool,
        touched: &BTreeSet<String>,
        writes: &mut Vec<Write>,
    ) {
        for (node, entries) in &self.l2.nodes {
            let stored = snapshot.announcements.get(node);
            let again = whole
                || touched.contains(node)
                || match self.nodes_compared.get(node) {
                    Some((seen, up_to_date)) => !*up_to_date || ptr(seen.as_ref()) != ptr(stored),
                    None => true,
                };
            if !again {
                continue;
            }
            let sessions = self
                .bgp
                .nodes
                .get(node)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let spec = conditions::spec(node, entries, sessions, &snapshot.probes, &self.standbys);
            let up_to_date = stored.is_some_and(|a| a.spec == spec);
            self.nodes_compared
                .insert(node.clone(), (stored.cloned(), up_to_date));
            writes.push(Write::Announcement {
                seen: Seen {
                    up_to_date,
                    version: stored.and_then(|a| version(a.as_ref())),
                },
                node: node.clone(),
                spec,
            });
        }
        for node in snapshot
            .announcements
            .keys()
            .filter(|n| !self.l2.nodes.contains_key(*n))
        {
            self.nodes_compared.remove(node);
            writes.push(Write::Retire { node: node.clone() });
        }
    }

    /// The PrefixSets of the shared prefixes.
    fn prefix_sets(&self, snapshot: &Snapshot, writes: &mut Vec<Write>) {
        let specs_now: BTreeMap<String, PrefixSetSpec> = snapshot
            .prefix_sets
            .iter()
            .map(|(name, set)| (name.clone(), set.spec.clone()))
            .collect();
        let changes = prefix_set_changes(&self.bgp.shared, &specs_now);
        for (name, spec) in changes.apply {
            let seen = Seen {
                // `prefix_set_changes` lists only shards that differ.
                up_to_date: false,
                version: snapshot
                    .prefix_sets
                    .get(&name)
                    .and_then(|s| version(s.as_ref())),
            };
            writes.push(Write::PrefixSet { name, spec, seen });
        }
        for name in changes.delete {
            writes.push(Write::DropPrefixSet { name });
        }
    }

    /// Every Service's status: its Announced verdict worked out again only
    /// when what it depends on changed, and a write wanted only when the
    /// status or the object changed, or the object did not show it yet.
    fn services(
        &mut self,
        snapshot: &Snapshot,
        now: Timestamp,
        whole: bool,
        replanned: &BTreeSet<ServiceKey>,
        writes: &mut Vec<Write>,
    ) {
        let summaries = conditions::Summaries::default();
        let others_before = self.other_writers.len();
        self.other_writers
            .retain(|_, (_, seen)| now.duration_since(*seen).unsigned_abs() < OTHER_WRITER_MEMORY);
        let others_forgotten = others_before != self.other_writers.len();
        // What changed for every Service at once: the speakers' reports
        // (NodeAnnouncement objects), the kernel-answers-ARP note, the
        // state of each set of BGP sessions.
        let mut reported: BTreeSet<&str> = BTreeSet::new();
        let reports: BTreeMap<String, Same<ferrolb_api::NodeAnnouncement>> = snapshot
            .announcements
            .iter()
            .map(|(node, a)| (node.clone(), Same(a.clone())))
            .collect();
        let mut differ: BTreeSet<String> = BTreeSet::new();
        differing(&self.reports, &reports, &mut differ);
        for node in &differ {
            if let Some((name, _)) = snapshot.announcements.get_key_value(node) {
                reported.insert(name.as_str());
            }
        }
        let kernel = summaries.kernel_note(&snapshot.announcements);
        let kernel_changed = self.kernel.as_deref() != Some(&*kernel);
        let mut sets_changed: Vec<usize> = Vec::new();
        if !differ.is_empty() {
            let mut sets: Vec<Sessions> = Vec::new();
            for outcome in self.bgp.services.values() {
                if let announce::bgp::Outcome::Advertised(set) = outcome
                    && !sets.iter().any(|s| Arc::ptr_eq(s, set))
                {
                    sets.push(set.clone());
                }
            }
            let now_summaries: Vec<(Sessions, Arc<conditions::Summary>)> = sets
                .into_iter()
                .map(|set| {
                    let summary = summaries.of(&set, &snapshot.announcements);
                    (set, summary)
                })
                .collect();
            for (set, summary) in &now_summaries {
                let before = self
                    .summaries
                    .iter()
                    .find(|(s, _)| Arc::ptr_eq(s, set))
                    .map(|(_, summary)| summary);
                if before != Some(summary) {
                    sets_changed.push(Arc::as_ptr(set) as usize);
                }
            }
            self.summaries = now_summaries;
        }
        self.reports = reports;
        self.kernel = Some(kernel.to_string());
        let everything = whole || self.always_whole || others_forgotten;
        for service in &snapshot.ours {
            let key = &service.key;
            if !service.other_writers.is_empty() {
                tracing::warn!(service = %key, managers = ?service.other_writers, "another controller writes this Service's status.loadBalancer");
                self.other_writers
                    .insert(key.clone(), (service.other_writers.clone(), now));
            }
            let Some(kept) = self.kept.get_mut(key) else {
                continue;
            };
            // Nothing it depends on changed: its status stands.
            if !everything
                && !kept.fresh
                && service.other_writers.is_empty()
                && kept.inputs.as_ref().is_some_and(|i| i.others.is_none())
                && kept
                    .compared
                    .as_ref()
                    .is_some_and(|(seen, up)| *up && Arc::ptr_eq(seen, &service.object))
                && !replanned.contains(key)
                && kept.inputs.as_ref().is_some_and(|i| {
                    let l2_same = match &i.l2 {
                        Some(announce::Outcome::Announced { node, standby }) => {
                            !kernel_changed
                                && !reported.contains(node.as_str())
                                && standby
                                    .as_ref()
                                    .is_none_or(|s| !reported.contains(s.as_str()))
                        }
                        _ => true,
                    };
                    let bgp_same = match &i.bgp {
                        Some(announce::bgp::Outcome::Advertised(set)) => {
                            !sets_changed.contains(&(Arc::as_ptr(set) as usize))
                        }
                        _ => true,
                    };
                    l2_same && bgp_same
                })
            {
                continue;
            }
            if kept.held.is_empty() {
                if kept.desired.announced.take().is_some() {
                    kept.fresh = true;
                }
                kept.inputs = None;
            } else {
                let l2 = self.l2.services.get(key);
                let bgp = self.bgp.services.get(key);
                let reports = match l2 {
                    Some(announce::Outcome::Announced { node, standby }) => [
                        ptr(snapshot.announcements.get(node)),
                        ptr(standby.as_ref().and_then(|s| snapshot.announcements.get(s))),
                    ],
                    _ => [0, 0],
                };
                let kernel = if l2.is_some() {
                    summaries.kernel_note(&snapshot.announcements)
                } else {
                    Arc::from("")
                };
                let summary = match bgp {
                    Some(announce::bgp::Outcome::Advertised(sessions)) => {
                        Some(summaries.of(sessions, &snapshot.announcements))
                    }
                    _ => None,
                };
                let others = self.other_writers.get(key).map(|(o, _)| o);
                // Compared in place: cloning them for every Service would
                // cost more than the comparison saves.
                let same = kept.inputs.as_ref().is_some_and(|i| {
                    i.l2.as_ref() == l2
                        && i.bgp.as_ref() == bgp
                        && i.reports == reports
                        && i.kernel == kernel
                        && i.summary == summary
                        && i.others.as_ref() == others
                });
                if same && let Some(inputs) = kept.inputs.as_mut() {
                    // Equal, but keep this pass's objects: later passes
                    // recognise a changed set of sessions by its address.
                    inputs.bgp = bgp.cloned();
                    inputs.summary = summary.clone();
                }
                if !same || kept.desired.announced.is_none() {
                    let ips: Vec<IpAddr> = kept.held.iter().map(|a| a.ip).collect();
                    let pools: BTreeSet<String> =
                        kept.held.iter().filter_map(|a| a.pool.clone()).collect();
                    let verdict = match others {
                        Some(others) => Verdict::no(
                            condition::reason::OTHER_CONTROLLER,
                            conditions::other_controller_message(others),
                        ),
                        None => conditions::verdict(
                            l2,
                            bgp,
                            &ips,
                            &pools,
                            &snapshot.announcements,
                            &summaries,
                        ),
                    };
                    if kept.desired.announced.as_ref() != Some(&verdict) {
                        kept.desired.announced = Some(verdict);
                        kept.fresh = true;
                    }
                    kept.inputs = Some(Inputs {
                        l2: l2.cloned(),
                        bgp: bgp.cloned(),
                        reports,
                        kernel,
                        summary,
                        others: others.cloned(),
                    });
                }
            }
            let same_object = kept
                .compared
                .as_ref()
                .is_some_and(|(seen, up)| *up && Arc::ptr_eq(seen, &service.object));
            if same_object && !kept.fresh && !self.always_whole {
                continue;
            }
            kept.fresh = false;
            let desired = kept.desired.clone();
            let up_to_date = status::up_to_date(&service.object, &desired);
            kept.compared = Some((service.object.clone(), up_to_date));
            let mut events = Vec::new();
            let mut allocation = None;
            if !up_to_date {
                let previous =
                    |kind: &str| status::condition(&service.object, kind).map(|c| c.reason.clone());
                // Counted once the write lands (a retried write counts once).
                allocation = (previous(condition::IP_ALLOCATED).as_deref()
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
                let ips: Vec<IpAddr> = kept.held.iter().map(|a| a.ip).collect();
                if let Some(note) = conditions::moved(
                    &ips,
                    self.l2.services.get(key),
                    &snapshot.current,
                    &snapshot.takeovers,
                    &snapshot.nodes,
                ) {
                    events.push(Event {
                        type_: EventType::Normal,
                        reason: "IPMoved".to_string(),
                        note: Some(note.chars().take(1000).collect()),
                        action: "Announce".to_string(),
                        secondary: None,
                    });
                }
            }
            writes.push(Write::Service {
                key: key.clone(),
                service: service.object.clone(),
                desired,
                seen: Seen {
                    up_to_date,
                    version: service.version,
                },
                events,
                allocation,
            });
        }
    }

    /// What the plan holds, to compare an incremental pass with a whole one.
    #[cfg(test)]
    pub(crate) fn digest(&self) -> String {
        let mut desired: Vec<(&ServiceKey, &Desired)> =
            self.kept.iter().map(|(k, v)| (k, &v.desired)).collect();
        desired.sort_by_key(|(k, _)| *k);
        let mut shared: Vec<(&String, &BTreeSet<String>)> = self
            .bgp
            .shared
            .iter()
            .map(|(a, s)| (a, &s.prefixes))
            .collect();
        shared.sort();
        format!(
            "l2 {:#?}\nbgp services {:#?}\nbgp nodes {:#?}\nshared {:#?}\nstandbys {:#?}\ndesired {:#?}",
            self.l2, self.bgp.services, self.bgp.nodes, shared, self.standbys, desired
        )
    }

    /// BGPPeer and pool status.
    fn statuses(&self, snapshot: &Snapshot, now: Timestamp, writes: &mut Vec<Write>) {
        let now_time = Time(now);
        for peer in &snapshot.peer_objects {
            let status =
                conditions::peer_status(peer, &self.bgp, &snapshot.announcements, &now_time);
            writes.push(Write::Peer {
                name: peer.name_any(),
                seen: Seen {
                    up_to_date: peer.status.as_ref() == Some(&status),
                    version: version(peer.as_ref()),
                },
                status,
            });
        }
        for pool in &snapshot.pool_objects {
            let name = pool.name_any();
            let Some(state) = self.allocator.pool(&name) else {
                continue;
            };
            let status = status::pool_status(
                pool.metadata.generation,
                pool.status.as_ref(),
                state,
                now_time.clone(),
            );
            writes.push(Write::Pool {
                name,
                seen: Seen {
                    up_to_date: pool.status.as_ref() == Some(&status),
                    version: version(pool.as_ref()),
                },
                status,
            });
        }
    }
}

#[cfg(test)]
mod tests;
