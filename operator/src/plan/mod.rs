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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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

/// The leader's memory between passes.
#[derive(Debug)]
pub struct Memory {
    allocator: Allocator,
    pools: Vec<Pool>,
    /// Where the last pass placed each layer 2 group.
    placements: Placements,
    /// Other controllers seen writing a Service's ingress, and when last.
    other_writers: HashMap<ServiceKey, (Vec<String>, Timestamp)>,
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
            placements: Placements::default(),
            other_writers: HashMap::new(),
        }
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

    /// One pass over everything: what every object the operator writes
    /// should say.
    pub fn pass(&mut self, snapshot: &Snapshot, now: Timestamp) -> Pass {
        if snapshot.pools != self.pools {
            self.allocator.set_pools(snapshot.pools.clone());
            self.pools = snapshot.pools.clone();
        }
        let live: HashSet<&ServiceKey> = snapshot.ours.iter().map(|s| &s.key).collect();
        let released: Vec<ServiceKey> = self
            .allocator
            .services()
            .filter(|k| !live.contains(k))
            .cloned()
            .collect();
        for key in &released {
            let ips = self.allocator.release(key);
            tracing::info!(service = %key, ?ips, "released");
        }

        // Allocation first, for every Service.
        let mut allocated = Vec::with_capacity(snapshot.ours.len());
        for service in &snapshot.ours {
            let result = service
                .request
                .clone()
                .and_then(|r| self.allocator.allocate(&r));
            let held: Vec<Assignment> =
                self.allocator.assignments(&service.key).unwrap_or_default();
            allocated.push((service, status::desired(&result, &held), held));
        }

        // Then who announces what.
        let announced: Vec<_> = allocated
            .iter()
            .filter(|(_, _, held)| !held.is_empty())
            .map(|(service, _, held)| {
                conditions::announced(
                    service,
                    held,
                    &snapshot.endpoints,
                    &snapshot.current,
                    &snapshot.takeovers,
                )
            })
            .collect();
        let plan = plan_l2_from(
            &mut self.placements,
            &snapshot.nodes,
            &snapshot.l2,
            &announced,
        );
        let bgp_plan = plan_bgp(&snapshot.nodes, &snapshot.peers, &snapshot.bgp, &announced);

        let mut writes = Vec::new();
        let standbys = conditions::standbys(&plan);
        for (node, entries) in &plan.nodes {
            let sessions = bgp_plan
                .nodes
                .get(node)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let spec = conditions::spec(node, entries, sessions, &snapshot.probes, &standbys);
            let stored = snapshot.announcements.get(node);
            writes.push(Write::Announcement {
                seen: Seen {
                    up_to_date: stored.is_some_and(|a| a.spec == spec),
                    version: stored.and_then(|a| version(a.as_ref())),
                },
                node: node.clone(),
                spec,
            });
        }
        for node in snapshot
            .announcements
            .keys()
            .filter(|n| !plan.nodes.contains_key(*n))
        {
            writes.push(Write::Retire { node: node.clone() });
        }

        // The prefixes many nodes share, one PrefixSet per shard.
        let specs_now: BTreeMap<String, PrefixSetSpec> = snapshot
            .prefix_sets
            .iter()
            .map(|(name, set)| (name.clone(), set.spec.clone()))
            .collect();
        let changes = prefix_set_changes(&bgp_plan.shared, &specs_now);
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

        let summaries = conditions::Summaries::default();
        self.other_writers
            .retain(|_, (_, seen)| now.duration_since(*seen).unsigned_abs() < OTHER_WRITER_MEMORY);
        for (service, mut desired, held) in allocated {
            let key = &service.key;
            if !service.other_writers.is_empty() {
                tracing::warn!(service = %key, managers = ?service.other_writers, "another controller writes this Service's status.loadBalancer");
                self.other_writers
                    .insert(key.clone(), (service.other_writers.clone(), now));
            }
            let ips: Vec<IpAddr> = held.iter().map(|a| a.ip).collect();
            if !held.is_empty() {
                let pools: BTreeSet<String> = held.iter().filter_map(|a| a.pool.clone()).collect();
                desired.announced = Some(match self.other_writers.get(key) {
                    Some((others, _)) => Verdict::no(
                        condition::reason::OTHER_CONTROLLER,
                        conditions::other_controller_message(others),
                    ),
                    None => conditions::verdict(
                        plan.services.get(key),
                        bgp_plan.services.get(key),
                        &ips,
                        &pools,
                        &snapshot.announcements,
                        &summaries,
                    ),
                });
            }
            let up_to_date = status::up_to_date(&service.object, &desired);
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
                if let Some(note) = conditions::moved(
                    &ips,
                    plan.services.get(key),
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

        // Services we wrote on that are no longer ours (type or class changed).
        for service in &snapshot.others {
            if status::current(service).1.is_some() {
                writes.push(Write::Clear {
                    key: crate::cluster::convert::service_key(service),
                    service: service.clone(),
                });
            }
        }

        let now_time = Time(now);
        for peer in &snapshot.peer_objects {
            let status =
                conditions::peer_status(peer, &bgp_plan, &snapshot.announcements, &now_time);
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
        Pass { writes, released }
    }
}

#[cfg(test)]
mod tests;
