//! From the plan to the writes: NodeAnnouncement specs, PrefixSets, every
//! Service's status (its verdict worked out again only when its inputs
//! changed), BGPPeer and pool status.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_api::PrefixSetSpec;
use ferrolb_api::constants::condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::{Event, EventType};

use crate::cluster::{Snapshot, version};
use crate::plan::allocation::ServiceKey;
use crate::plan::announce::bgp::prefix_set_changes;
use crate::plan::announce::{self};
use crate::plan::status::{self, Verdict};
use crate::plan::{OTHER_WRITER_MEMORY, Seen, Write, conditions, transition};

use super::{Inputs, Memory, Same, Sessions, differing, ptr};

impl Memory {
    /// The NodeAnnouncement specs: every node after a whole plan; else the
    /// nodes whose entries changed, whose object changed, or that did not
    /// show their spec yet. Nodes gone lose theirs.
    pub(super) fn announcements(
        &mut self,
        snapshot: &Snapshot,
        now: Timestamp,
        whole: bool,
        touched: &BTreeSet<String>,
        writes: &mut Vec<Write>,
    ) {
        let nodes = &self.l2.nodes;
        self.pacing.held.retain(|node, _| nodes.contains_key(node));
        // Standby changes in progress (make-before-break): their nodes are
        // written again at every pass until the change is done, and once
        // more after it.
        let fit: BTreeSet<&str> = snapshot
            .nodes
            .iter()
            .filter(|n| n.ready && n.speaker_alive && !n.network_unavailable)
            .map(|n| n.name.as_str())
            .collect();
        let changing = announce::arming::arming(
            &self.l2,
            &snapshot.standing_by,
            &snapshot.failover_settled,
            |node| fit.contains(node),
        );
        let involved = changing.nodes();
        let was_involved = std::mem::replace(&mut self.arming_nodes, involved.clone());
        let standbys: std::borrow::Cow<'_, BTreeMap<IpAddr, String>> =
            if changing.standby.is_empty() {
                std::borrow::Cow::Borrowed(&self.standbys)
            } else {
                let mut merged = self.standbys.clone();
                merged.extend(changing.standby.clone());
                std::borrow::Cow::Owned(merged)
            };
        let none = BTreeSet::new();
        for (node, entries) in &self.l2.nodes {
            let stored = snapshot.announcements.get(node);
            let again = whole
                || touched.contains(node)
                || involved.contains(node)
                || was_involved.contains(node)
                || self.pacing.held.contains_key(node)
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
            let kept = changing.kept.get(node);
            let with_kept: std::borrow::Cow<'_, [announce::Entry]> = match kept {
                Some(kept) => {
                    let mut all = entries.clone();
                    all.extend(kept.iter().cloned());
                    std::borrow::Cow::Owned(all)
                }
                None => std::borrow::Cow::Borrowed(entries.as_slice()),
            };
            let spec = conditions::spec(
                node,
                &with_kept,
                sessions,
                &snapshot.probes,
                &standbys,
                changing.arming.get(node).unwrap_or(&none),
            );
            let up_to_date = stored.is_some_and(|a| a.spec == spec);
            if up_to_date {
                self.pacing.held.remove(node);
            } else if !self.pacing.may_write(node, &spec, now) {
                continue;
            }
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
            self.pacing.forget(node);
            writes.push(Write::Retire { node: node.clone() });
        }
    }

    /// The PrefixSets of the shared prefixes; returns whether the stored ones
    /// already show them.
    pub(super) fn prefix_sets(
        &mut self,
        snapshot: &Snapshot,
        now: Timestamp,
        writes: &mut Vec<Write>,
    ) -> bool {
        let specs_now: BTreeMap<String, PrefixSetSpec> = snapshot
            .prefix_sets
            .iter()
            .map(|(name, set)| (name.clone(), set.spec.clone()))
            .collect();
        let changes = prefix_set_changes(&self.bgp.shared, &specs_now);
        let settled = changes.apply.is_empty() && changes.delete.is_empty();
        // A shard held back that no longer differs is due no more.
        self.set_pacing
            .held
            .retain(|name, _| changes.apply.iter().any(|(n, _)| n == name));
        for (name, spec) in changes.apply {
            if !self.set_pacing.may_write(&name, &spec, now) {
                continue;
            }
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
            self.set_pacing.forget(&name);
            writes.push(Write::DropPrefixSet { name });
        }
        settled
    }

    /// Every Service's status: its Announced verdict worked out again only
    /// when what it depends on changed, and a write wanted only when the
    /// status or the object changed, or the object did not show it yet.
    pub(super) fn services(
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
            let sets: Vec<Sessions> = self.sets.clone();
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
        let current_sets = &self.sets;
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
                        // The set it was told about is still the one its
                        // Services share (a re-plan makes new ones) and did
                        // not change state.
                        Some(announce::bgp::Outcome::Advertised(set)) => {
                            current_sets.iter().any(|s| Arc::ptr_eq(s, set))
                                && !sets_changed.contains(&(Arc::as_ptr(set) as usize))
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
        use crate::plan::status::Desired;
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
    pub(super) fn statuses(
        &mut self,
        snapshot: &Snapshot,
        now: Timestamp,
        writes: &mut Vec<Write>,
    ) {
        let now_time = Time(now);
        // Statuses that changed but wait for their pacing; the rest are due
        // no more.
        let mut waiting: BTreeSet<String> = BTreeSet::new();
        for peer in &snapshot.peer_objects {
            let status =
                conditions::peer_status(peer, &self.bgp, &snapshot.announcements, &now_time);
            let up_to_date = peer.status.as_ref() == Some(&status);
            let key = format!("BGPPeer/{}", peer.name_any());
            if !up_to_date && !self.status_pacing.may_write(&key, &(), now) {
                waiting.insert(key);
                continue;
            }
            writes.push(Write::Peer {
                name: peer.name_any(),
                seen: Seen {
                    up_to_date,
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
            let up_to_date = pool.status.as_ref() == Some(&status);
            let key = format!("IPAddressPool/{name}");
            if !up_to_date && !self.status_pacing.may_write(&key, &(), now) {
                waiting.insert(key);
                continue;
            }
            writes.push(Write::Pool {
                name,
                seen: Seen {
                    up_to_date,
                    version: version(pool.as_ref()),
                },
                status,
            });
        }
        self.status_pacing
            .held
            .retain(|key, _| waiting.contains(key));
    }
}
