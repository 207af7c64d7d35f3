//! The leader's memory between passes, and the pass itself: what changed
//! since the last pass is found here; [`replan`] places again what it
//! touches; [`outputs`] turns the plan into writes.

mod outputs;
pub mod pacing;
mod replan;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;

use crate::cluster::Snapshot;
use crate::plan::allocation::{self, Allocator, Assignment, Pool, ServiceKey, ServiceRequest};
use crate::plan::announce::{self, Announced, Placements};
use crate::plan::status::{self, Desired};
use crate::plan::{OTHER_WRITER_MEMORY, Pass, Write, conditions};

/// Everything but the Services a plan depends on. While it stays the same,
/// a pass re-plans only the Services that changed (and the groups they share
/// IPs with); when it changes, a pass re-plans everything.
#[derive(Clone, Debug, PartialEq)]
struct World {
    nodes: Vec<announce::Node>,
    l2: Vec<announce::L2Advertisement>,
    bgp: Vec<announce::bgp::Advertisement>,
    peers: Vec<announce::bgp::Peer>,
    probes: BTreeMap<String, std::net::SocketAddr>,
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
    /// The nodes of the standby changes in progress at the last pass.
    arming_nodes: BTreeSet<String>,
    /// Nodes whose NodeAnnouncement did not show the planned spec last time
    /// it was compared, with the object compared.
    nodes_compared: HashMap<String, (Option<Arc<ferrolb_api::NodeAnnouncement>>, bool)>,
    /// The PrefixSets last compared with the plan, when they did not show it
    /// (a write failed or has not landed, or someone changed one): compared
    /// again next pass.
    prefix_sets_compared: Option<BTreeMap<String, Same<ferrolb_api::PrefixSet>>>,
    /// How often each node's NodeAnnouncement may be written.
    pacing: pacing::Pacing,
    /// The same for PrefixSet shards.
    set_pacing: pacing::Pacing,
    /// Pool and BGPPeer status writes, once a second while they change.
    status_pacing: pacing::Pacing,
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
    /// Per IP, the standby node by spec in the last pass.
    standing_by: BTreeMap<IpAddr, String>,
    /// Per node, its NodeAnnouncement object in the last pass.
    reports: BTreeMap<String, Same<ferrolb_api::NodeAnnouncement>>,
    /// The kernel-answers-ARP note of the last pass.
    kernel: Option<String>,
    /// Every distinct set of BGP sessions Services are advertised on, once.
    sets: Vec<Sessions>,
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

    /// Writes of a node's NodeAnnouncement paced by its size (and at most
    /// every 250 ms), of a PrefixSet shard every 250 ms and of pool and
    /// BGPPeer status once a second while they keep changing (see
    /// [`pacing`]); off unless asked for.
    pub fn paced(mut self, bytes_per_second: u64) -> Memory {
        self.pacing = pacing::Pacing::new(bytes_per_second);
        self.set_pacing = pacing::Pacing::every(pacing::BURST_EVERY);
        self.status_pacing = pacing::Pacing::every(pacing::STATUS_EVERY);
        self
    }

    /// When a NodeAnnouncement, PrefixSet or status write held back by the
    /// pacing is due: a pass is wanted then, though nothing in the cluster
    /// changed.
    pub fn next_announcement(&self) -> Option<Timestamp> {
        [
            self.pacing.next_due(),
            self.set_pacing.next_due(),
            self.status_pacing.next_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// When the first NodeAnnouncement write held back is due.
    #[cfg(test)]
    pub(crate) fn next_node_announcement(&self) -> Option<Timestamp> {
        self.pacing.next_due()
    }

    /// When the first PrefixSet write held back is due.
    #[cfg(test)]
    pub(crate) fn next_prefix_set(&self) -> Option<Timestamp> {
        self.set_pacing.next_due()
    }

    /// Per IP, the node active for it: as the stored NodeAnnouncements show,
    /// else as this memory last planned it. A write the operator's store
    /// does not show yet (its watch lags the apiserver) must not look like an
    /// IP with no node: placing it afresh could move it.
    fn current_active<'a>(&self, snapshot: &'a Snapshot) -> Cow<'a, BTreeMap<IpAddr, String>> {
        self.by_spec(&snapshot.current, true)
    }

    /// Per IP, the node standing by for it now, read as [`Self::current_active`].
    fn current_standby<'a>(&self, snapshot: &'a Snapshot) -> Cow<'a, BTreeMap<IpAddr, String>> {
        self.by_spec(&snapshot.standbys, false)
    }

    /// `stored` (per IP, a node by the specs in the store), with what this
    /// memory last planned in the role (active or standby) for IPs it lacks.
    fn by_spec<'a>(
        &self,
        stored: &'a BTreeMap<IpAddr, String>,
        active: bool,
    ) -> Cow<'a, BTreeMap<IpAddr, String>> {
        let mut missing: Vec<(IpAddr, String)> = Vec::new();
        for (node, entries) in &self.l2.nodes {
            for entry in entries {
                if (entry.role == announce::Role::Active) == active
                    && !stored.contains_key(&entry.ip)
                {
                    missing.push((entry.ip, node.clone()));
                }
            }
        }
        if missing.is_empty() {
            Cow::Borrowed(stored)
        } else {
            let mut found = stored.clone();
            found.extend(missing);
            Cow::Owned(found)
        }
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
            // A Service that let go of an address (asked for another, or a
            // failing one that got what it asked for) frees it for the
            // failing ones: those after it now, those before it next pass.
            let let_go = before
                .as_ref()
                .is_some_and(|b| b.iter().any(|ip| !held.contains(ip)));
            if kept.is_some() && (asked_again || let_go) {
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
        let active_now = self.current_active(snapshot);
        let standby_now = self.current_standby(snapshot);
        let mut moved_ips: BTreeSet<IpAddr> = BTreeSet::new();
        differing(&self.current, &active_now, &mut moved_ips);
        differing(&self.standing_by, &standby_now, &mut moved_ips);
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
            self.current = active_now.clone().into_owned();
            self.standing_by = standby_now.clone().into_owned();
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
                .or_else(|| active_now.get(&first));
            let same = kept.announced.as_ref().is_some_and(|a| {
                a.local == service.local
                    && service
                        .object
                        .metadata
                        .labels
                        .as_ref()
                        .map_or(a.labels.is_empty(), |l| *l == a.labels)
                    && a.endpoint_nodes == *endpoints
                    && a.current.as_ref() == current
                    && a.avoid.as_ref() == snapshot.takeovers.from.get(&first)
                    && a.standby.as_ref() == standby_now.get(&first)
                    && a.ips.len() == kept.held.len()
                    && a.ips
                        .iter()
                        .zip(&kept.held)
                        .all(|((ip, pool), h)| *ip == h.ip && *pool == h.announced_as())
            });
            if !same {
                kept.announced = Some(conditions::announced(
                    service,
                    &kept.held,
                    &snapshot.endpoints,
                    &active_now,
                    &standby_now,
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
        self.announcements(snapshot, now, whole, &touched, &mut writes);
        let stored: BTreeMap<String, Same<ferrolb_api::PrefixSet>> = snapshot
            .prefix_sets
            .iter()
            .map(|(name, set)| (name.clone(), Same(set.clone())))
            .collect();
        let unsettled = self.prefix_sets_compared.as_ref() != Some(&stored);
        if whole || !changed.is_empty() || unsettled {
            let settled = self.prefix_sets(snapshot, now, &mut writes);
            // Settled: nothing to compare again until a Service, the world
            // or a stored PrefixSet changes.
            self.prefix_sets_compared = settled.then_some(stored);
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
}
