//! Placing again: everything (after a change to the world) or the Services
//! that changed and the groups they share IPs with.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use crate::cluster::Snapshot;
use crate::plan::allocation::ServiceKey;
use crate::plan::announce::bgp::plan_bgp;
use crate::plan::announce::{self, Announced, plan_l2_from};
use crate::plan::conditions;

use super::Memory;

impl Memory {
    /// Plans every Service; returns every node.
    pub(super) fn plan_whole(&mut self, snapshot: &Snapshot) -> BTreeSet<String> {
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
        self.sets.clear();
        self.share_sets(None);
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
    pub(super) fn plan_changed(
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
            self.sets.clear();
            self.share_sets(None);
        } else if !snapshot.bgp.is_empty() {
            let sub = plan_bgp(&snapshot.nodes, &snapshot.peers, &snapshot.bgp, &now);
            for key in &affected {
                self.bgp.services.remove(key);
            }
            self.bgp.services.extend(sub.services);
            self.share_sets(Some(&affected));
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
            self.share_sets(Some(&affected));
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

    /// Makes the Services of `only` (every Service when `None`) that are
    /// advertised on equal sets of sessions share one set: a set of a
    /// thousand sessions planned anew for each changed Service would
    /// otherwise be held once per Service. `self.sets` holds each distinct
    /// set once.
    pub(super) fn share_sets(&mut self, only: Option<&BTreeSet<ServiceKey>>) {
        let sets = &mut self.sets;
        for (key, outcome) in self.bgp.services.iter_mut() {
            if only.is_some_and(|o| !o.contains(key)) {
                continue;
            }
            if let announce::bgp::Outcome::Advertised(set) = outcome {
                match sets.iter().find(|s| Arc::ptr_eq(s, set) || ***s == **set) {
                    Some(shared) => *set = shared.clone(),
                    None => sets.push(set.clone()),
                }
            }
        }
        sets.retain(|s| Arc::strong_count(s) > 1);
    }

    /// Records the IPs a planned Service uses.
    pub(super) fn remember(&mut self, a: &Announced) {
        for (ip, _) in &a.ips {
            self.users.entry(*ip).or_default().insert(a.service.clone());
        }
        self.planned.insert(
            a.service.clone(),
            (a.ips.iter().map(|(ip, _)| *ip).collect(), a.local),
        );
    }
}
