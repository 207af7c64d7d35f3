//! The allocation engine: which IPs each LoadBalancer Service gets. Pure logic,
//! no kube types: the controller turns Services and pools into the plain values
//! of [`request`] and [`pool`] and writes the results back.
//!
//! Rules (see DESIGN.md, Allocation):
//! - Pools are tried in [`Pool::order`]: matching `serviceAllocation` by priority,
//!   then pools without one, ties by name; `autoAssign: false` pools only when
//!   asked for by name or by IP. Within a pool, the lowest free address.
//! - A Service keeps what it holds as long as its request still allows it; a pool
//!   edit or deletion never takes an IP away (it shows up with `pool: None`).
//! - Sharing (`allow-shared-ip`): same key, same backend, no port in common.
//! - Free space is kept as sorted intervals, so a /8 or an IPv6 /64 costs what a
//!   /29 costs and every operation is O(log n) in the allocations.

pub mod free;
pub mod pool;
pub mod request;

/// Label selectors, shared with the API crate.
pub use ferrolb_api::selector;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ferrolb_api::address::{Family, from_u128, to_u128};

pub use pool::{Pool, PoolAllocation, PoolState};
pub use request::{
    Assignment, Failure, FamilyPolicy, Protocol, Reason, ServiceKey, ServiceRequest, Sharing,
};

use pool::slot;

/// What one Service holds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Holding {
    /// Its IPs, primary family first.
    ips: Vec<IpAddr>,
    /// The terms it shares them under.
    sharing: Option<Sharing>,
}

/// Every range of every pool, sorted by start, to find the pools holding an IP
/// in O(log n) even when pools overlap (the webhook forbids it, the apiserver
/// alone does not).
#[derive(Clone, Debug, Default)]
struct RangeIndex {
    /// (start, end, pool index) per family, sorted by start.
    entries: [Vec<(u128, u128, usize)>; 2],
    /// The largest end among `entries[..=i]`.
    max_end: [Vec<u128>; 2],
}

impl RangeIndex {
    fn new(pools: &[PoolState]) -> RangeIndex {
        let mut index = RangeIndex::default();
        for (i, state) in pools.iter().enumerate() {
            for range in &state.pool.ranges {
                index.entries[slot(range.family())].push((
                    to_u128(range.start()),
                    to_u128(range.end()),
                    i,
                ));
            }
        }
        for s in 0..2 {
            index.entries[s].sort_unstable();
            let mut max = 0;
            index.max_end[s] = index.entries[s]
                .iter()
                .map(|(_, end, _)| {
                    max = max.max(*end);
                    max
                })
                .collect();
        }
        index
    }

    /// Indices of the pools holding `ip`, ascending, without repeats.
    fn containing(&self, ip: IpAddr) -> Vec<usize> {
        let s = slot(Family::of(&ip));
        let value = to_u128(ip);
        let entries = &self.entries[s];
        let mut found = Vec::new();
        let mut i = entries.partition_point(|(start, _, _)| *start <= value);
        while i > 0 && self.max_end[s][i - 1] >= value {
            i -= 1;
            if entries[i].1 >= value {
                found.push(entries[i].2);
            }
        }
        found.sort_unstable();
        found.dedup();
        found
    }
}

/// The allocator: pools, and who holds which IP.
#[derive(Clone, Debug, Default)]
pub struct Allocator {
    /// Pools in the order they are tried.
    pools: Vec<PoolState>,
    by_name: HashMap<String, usize>,
    index: RangeIndex,
    /// IP → the Services holding it.
    held: HashMap<IpAddr, BTreeSet<ServiceKey>>,
    /// Service → what it holds.
    services: HashMap<ServiceKey, Holding>,
    /// Sharing key → the IPs held under it, to find a shareable IP quickly.
    shared: HashMap<String, BTreeSet<IpAddr>>,
    /// Held IPs in no pool now: the pool each was in last (it stays
    /// announced as that pool's advertisements say). Kept through a
    /// re-allocation of its holder; pruned when the pools change.
    was_in: HashMap<IpAddr, String>,
}

impl Allocator {
    /// An allocator over `pools`, holding nothing.
    pub fn new(pools: Vec<Pool>) -> Allocator {
        let mut allocator = Allocator::default();
        allocator.set_pools(pools);
        allocator
    }

    /// Replaces the pools. Every held IP stays held; one that lies in no pool any
    /// more is reported with `pool: None` until its Service lets it go.
    pub fn set_pools(&mut self, mut pools: Vec<Pool>) {
        let before: Vec<(IpAddr, String)> = self
            .held
            .keys()
            .filter_map(|ip| Some((*ip, self.pool_of(*ip)?.to_string())))
            .collect();
        pools.sort_by(Pool::order);
        self.pools = pools.into_iter().map(PoolState::new).collect();
        self.by_name = self
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| (p.pool.name.clone(), i))
            .collect();
        self.index = RangeIndex::new(&self.pools);
        let held: Vec<IpAddr> = self.held.keys().copied().collect();
        for ip in held {
            self.mark_used(ip);
        }
        self.was_in.extend(before);
        let in_a_pool: Vec<IpAddr> = self
            .was_in
            .keys()
            .filter(|ip| !self.held.contains_key(ip) || self.pool_of(**ip).is_some())
            .copied()
            .collect();
        for ip in in_a_pool {
            self.was_in.remove(&ip);
        }
    }

    /// The pools, in the order they are tried.
    pub fn pools(&self) -> impl Iterator<Item = &PoolState> {
        self.pools.iter()
    }

    /// One pool by name.
    pub fn pool(&self, name: &str) -> Option<&PoolState> {
        self.by_name.get(name).map(|i| &self.pools[*i])
    }

    /// The pool an IP belongs to (the first in pool order, should pools overlap).
    pub fn pool_of(&self, ip: IpAddr) -> Option<&str> {
        self.index
            .containing(ip)
            .first()
            .map(|i| self.pools[*i].pool.name.as_str())
    }

    /// What a Service holds, primary family first.
    pub fn assignments(&self, service: &ServiceKey) -> Option<Vec<Assignment>> {
        self.services.get(service).map(|h| self.describe(&h.ips))
    }

    /// The Services holding an IP.
    pub fn holders(&self, ip: IpAddr) -> impl Iterator<Item = &ServiceKey> {
        self.held.get(&ip).into_iter().flatten()
    }

    /// Every Service holding something.
    pub fn services(&self) -> impl Iterator<Item = &ServiceKey> {
        self.services.keys()
    }

    /// Held IPs that lie in no pool, with their holders.
    pub fn orphans(&self) -> BTreeMap<IpAddr, Vec<ServiceKey>> {
        self.held
            .iter()
            .filter(|(ip, _)| self.index.containing(**ip).is_empty())
            .map(|(ip, holders)| (*ip, holders.iter().cloned().collect()))
            .collect()
    }

    fn describe(&self, ips: &[IpAddr]) -> Vec<Assignment> {
        ips.iter()
            .map(|ip| Assignment {
                ip: *ip,
                pool: self.pool_of(*ip).map(str::to_string),
                was_in: self.was_in.get(ip).cloned(),
            })
            .collect()
    }

    /// Takes an IP out of the free space of every pool holding it.
    fn mark_used(&mut self, ip: IpAddr) {
        let s = slot(Family::of(&ip));
        for i in self.index.containing(ip) {
            if self.pools[i].free[s].take(to_u128(ip)) {
                self.pools[i].assigned[s] += 1;
            }
        }
    }

    /// Returns an IP to the free space of every pool holding it.
    fn mark_free(&mut self, ip: IpAddr) {
        let s = slot(Family::of(&ip));
        for i in self.index.containing(ip) {
            if !self.pools[i].free[s].contains(to_u128(ip)) {
                self.pools[i].free[s].give_back(to_u128(ip));
                self.pools[i].assigned[s] -= 1;
            }
        }
    }

    fn hold(&mut self, service: &ServiceKey, ip: IpAddr, sharing: Option<&Sharing>) {
        let holders = self.held.entry(ip).or_default();
        let first = holders.is_empty();
        holders.insert(service.clone());
        if first {
            self.mark_used(ip);
        }
        if let Some(sharing) = sharing {
            self.shared
                .entry(sharing.key.clone())
                .or_default()
                .insert(ip);
        }
    }

    fn unhold(&mut self, service: &ServiceKey, ip: IpAddr, sharing: Option<&Sharing>) {
        let Some(holders) = self.held.get_mut(&ip) else {
            return;
        };
        holders.remove(service);
        if holders.is_empty() {
            self.held.remove(&ip);
            self.mark_free(ip);
        }
        if let Some(sharing) = sharing {
            let still_shared = self.held.get(&ip).is_some_and(|holders| {
                holders.iter().any(|h| {
                    self.services
                        .get(h)
                        .and_then(|x| x.sharing.as_ref())
                        .is_some_and(|s| s.key == sharing.key)
                })
            });
            if !still_shared && let Some(ips) = self.shared.get_mut(&sharing.key) {
                ips.remove(&ip);
                if ips.is_empty() {
                    self.shared.remove(&sharing.key);
                }
            }
        }
    }

    /// Lets a Service's IPs go; returns them.
    pub fn release(&mut self, service: &ServiceKey) -> Vec<IpAddr> {
        let Some(holding) = self.services.remove(service) else {
            return Vec::new();
        };
        for ip in &holding.ips {
            self.unhold(service, *ip, holding.sharing.as_ref());
        }
        holding.ips
    }

    /// Why `request` may not join the holders of `ip`, if it may not.
    fn sharing_refusal(&self, request: &ServiceRequest, ip: IpAddr) -> Option<Failure> {
        let others: Vec<&ServiceKey> = self
            .holders(ip)
            .filter(|h| **h != request.service)
            .collect();
        for other in others {
            let theirs = self.services.get(other).and_then(|h| h.sharing.as_ref());
            match (&request.sharing, theirs) {
                (Some(ours), Some(theirs)) => {
                    if let Some(why) = ours.conflict_with(theirs) {
                        return Some(Failure::new(
                            Reason::SharingConflict,
                            format!(
                                "{ip} is held by {other}, which cannot share it with this Service: {why}"
                            ),
                        ));
                    }
                }
                (None, _) => {
                    return Some(Failure::new(
                        Reason::RequestedIPUnavailable,
                        format!(
                            "{ip} is held by {other}; to share it, give both Services the annotation ferrolb.io/allow-shared-ip with the same key, or ask for another IP"
                        ),
                    ));
                }
                (Some(_), None) => {
                    return Some(Failure::new(
                        Reason::RequestedIPUnavailable,
                        format!(
                            "{ip} is held by {other}, which does not allow sharing (no ferrolb.io/allow-shared-ip annotation)"
                        ),
                    ));
                }
            }
        }
        None
    }

    /// Restores a Service's IPs as found in its status at start-up, before any new
    /// allocation. IPs outside every pool are kept (with `pool: None`); an IP held
    /// by a Service that may not share it is refused.
    pub fn restore(
        &mut self,
        request: &ServiceRequest,
        ips: &[IpAddr],
    ) -> Result<Vec<Assignment>, Failure> {
        let mut unique: Vec<IpAddr> = Vec::new();
        for ip in ips {
            if !unique.contains(ip) {
                unique.push(*ip);
            }
        }
        for ip in &unique {
            if let Some(refusal) = self.sharing_refusal(request, *ip) {
                return Err(refusal);
            }
        }
        self.release(&request.service);
        for ip in &unique {
            self.hold(&request.service, *ip, request.sharing.as_ref());
        }
        self.services.insert(
            request.service.clone(),
            Holding {
                ips: unique.clone(),
                sharing: request.sharing.clone(),
            },
        );
        Ok(self.describe(&unique))
    }

    /// Checks the parts of a request that cannot be right whatever the pools.
    fn check_request(&self, request: &ServiceRequest) -> Result<(), Failure> {
        let invalid = |m: String| Err(Failure::new(Reason::InvalidRequest, m));
        let mut seen: Vec<Family> = Vec::new();
        for ip in &request.requested {
            let family = Family::of(ip);
            if seen.contains(&family) {
                return invalid(format!(
                    "asks for two {family} addresses ({}); ask for at most one IP per family",
                    request
                        .requested
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            seen.push(family);
            if !request.families.allows(family) {
                return invalid(format!(
                    "asks for {ip}, an {family} address, but the Service is single-stack {}: set spec.ipFamilies or ask for an address of that family",
                    request.families.families()[0]
                ));
            }
        }
        if matches!(request.families, FamilyPolicy::RequireDual(_))
            && !request.requested.is_empty()
            && seen.len() != 2
        {
            return invalid(
                "is RequireDualStack but asks for one IP only: ask for one IPv4 and one IPv6 address, or for none"
                    .to_string(),
            );
        }
        if let Some(name) = &request.pool
            && !self.by_name.contains_key(name)
        {
            return Err(Failure::new(
                Reason::NoMatchingPool,
                format!(
                    "asks for pool '{name}' (annotation ferrolb.io/address-pool), and there is no IPAddressPool of that name"
                ),
            ));
        }
        Ok(())
    }

    /// Whether a held IP still fits the request.
    fn still_fits(&self, request: &ServiceRequest, ip: IpAddr) -> bool {
        request.families.allows(Family::of(&ip))
            && (request.requested.is_empty() || request.requested.contains(&ip))
            && request.pool.as_ref().is_none_or(|name| {
                self.by_name
                    .get(name)
                    .is_some_and(|i| self.pools[*i].contains(Family::of(&ip), to_u128(ip)))
            })
            && self.sharing_refusal(request, ip).is_none()
    }

    /// The pools a Service may get a `family` address from automatically, in order.
    fn candidates(&self, request: &ServiceRequest, family: Family) -> Vec<usize> {
        (0..self.pools.len())
            .filter(|i| {
                let state = &self.pools[*i];
                state.has_family(family)
                    && state.pool.serves(request)
                    && match &request.pool {
                        Some(name) => *name == state.pool.name,
                        None => state.pool.auto_assign,
                    }
            })
            .collect()
    }

    /// Picks a `family` address for the request without taking it.
    fn pick_automatic(&self, request: &ServiceRequest, family: Family) -> Result<IpAddr, Failure> {
        let candidates = self.candidates(request, family);
        if candidates.is_empty() {
            let what = match &request.pool {
                Some(name) => format!(
                    "pool '{name}' has no {family} addresses for namespace '{}' (check its addresses and serviceAllocation)",
                    request.service.namespace
                ),
                None => format!(
                    "no IPAddressPool with autoAssign hands out {family} addresses to namespace '{}' and this Service's labels: add a pool, widen a pool's serviceAllocation, or name a pool with the annotation ferrolb.io/address-pool",
                    request.service.namespace
                ),
            };
            return Err(Failure::new(Reason::NoMatchingPool, what));
        }
        if let Some(sharing) = &request.sharing
            && let Some(ips) = self.shared.get(&sharing.key)
        {
            // Share an IP already held under the same key, in the first pool
            // (in pool order) that has a compatible one.
            for i in &candidates {
                for ip in ips {
                    if Family::of(ip) == family
                        && self.pools[*i].contains(family, to_u128(*ip))
                        && self.sharing_refusal(request, *ip).is_none()
                    {
                        return Ok(*ip);
                    }
                }
            }
        }
        for i in &candidates {
            if let Some(value) = self.pools[*i].lowest_free(family) {
                return Ok(from_u128(family, value));
            }
        }
        let names: Vec<&str> = candidates
            .iter()
            .map(|i| self.pools[*i].pool.name.as_str())
            .collect();
        Err(Failure::new(
            Reason::PoolExhausted,
            format!(
                "every pool that serves this Service is out of {family} addresses ({}): add addresses to a pool or free some; the Service gets an IP as soon as one is free",
                names.join(", ")
            ),
        ))
    }

    /// Checks that a named IP may be given to the request.
    fn check_requested(&self, request: &ServiceRequest, ip: IpAddr) -> Result<(), Failure> {
        let family = Family::of(&ip);
        let containing = self.index.containing(ip);
        if containing.is_empty() {
            return Err(Failure::new(
                Reason::RequestedIPNotInAnyPool,
                format!(
                    "asks for {ip}, which is in no IPAddressPool: add it to a pool or ask for an address of one"
                ),
            ));
        }
        if let Some(name) = &request.pool
            && !containing.iter().any(|i| self.pools[*i].pool.name == *name)
        {
            return Err(Failure::new(
                Reason::InvalidRequest,
                format!(
                    "asks for {ip} and for pool '{name}', which does not contain it: drop one of the two annotations"
                ),
            ));
        }
        let Some(i) = containing
            .iter()
            .find(|i| self.pools[**i].pool.serves(request))
        else {
            let name = &self.pools[containing[0]].pool.name;
            return Err(Failure::new(
                Reason::NoMatchingPool,
                format!(
                    "asks for {ip}, but its pool '{name}' does not serve namespace '{}' or this Service's labels (see the pool's serviceAllocation)",
                    request.service.namespace
                ),
            ));
        };
        if self.held.contains_key(&ip) {
            return self.sharing_refusal(request, ip).map_or(Ok(()), Err);
        }
        if !self.pools[*i].pool.usable(family, to_u128(ip)) {
            return Err(Failure::new(
                Reason::RequestedIPUnavailable,
                format!(
                    "asks for {ip}, but pool '{}' has avoidBuggyIPs set and skips addresses ending in .0 and .255",
                    self.pools[*i].pool.name
                ),
            ));
        }
        Ok(())
    }

    /// Gives a Service its IPs, or says why it cannot have them. A Service that
    /// already holds IPs keeps every one its request still allows, and only the
    /// missing families are filled; if the request cannot be met, it keeps what it
    /// had. Under `PreferDual` a missing family is added as soon as a pool has one.
    pub fn allocate(&mut self, request: &ServiceRequest) -> Result<Vec<Assignment>, Failure> {
        self.check_request(request)?;
        let current = self
            .services
            .get(&request.service)
            .map(|h| h.ips.clone())
            .unwrap_or_default();
        let kept: Vec<IpAddr> = current
            .iter()
            .copied()
            .filter(|ip| self.still_fits(request, *ip))
            .collect();
        let has = |ips: &[IpAddr], family: Family| ips.iter().any(|ip| Family::of(ip) == family);

        // Decide every new IP before taking any, so a failure changes nothing.
        let mut chosen: Vec<IpAddr> = kept.clone();
        let mut first_failure: Option<Failure> = None;
        if request.requested.is_empty() {
            for family in request.families.families() {
                if has(&chosen, family) {
                    continue;
                }
                match self.pick_automatic(request, family) {
                    Ok(ip) => chosen.push(ip),
                    Err(failure) => {
                        first_failure.get_or_insert(failure);
                    }
                }
            }
        } else {
            for ip in &request.requested {
                if chosen.contains(ip) {
                    continue;
                }
                match self.check_requested(request, *ip) {
                    Ok(()) => chosen.push(*ip),
                    Err(failure) => {
                        first_failure.get_or_insert(failure);
                    }
                }
            }
        }

        let complete = match request.families {
            FamilyPolicy::Single(_) => !chosen.is_empty() && first_failure.is_none(),
            FamilyPolicy::PreferDual(_) => {
                !chosen.is_empty() && (request.requested.is_empty() || first_failure.is_none())
            }
            FamilyPolicy::RequireDual(_) => first_failure.is_none() && chosen.len() == 2,
        };
        if !complete {
            let failure = first_failure.unwrap_or_else(|| {
                Failure::new(Reason::NoMatchingPool, "no pool serves this Service")
            });
            if let FamilyPolicy::RequireDual(_) = request.families
                && chosen.len() == 1
                && matches!(failure.reason, Reason::NoMatchingPool)
            {
                return Err(Failure::new(
                    Reason::DualStackUnavailable,
                    format!("the Service requires dual stack, but {}", failure.message),
                ));
            }
            return Err(failure);
        }

        // Primary family first, as Kubernetes lists ingress.
        let order = request.families.families();
        chosen.sort_by_key(|ip| order.iter().position(|f| *f == Family::of(ip)));
        let old_sharing = self
            .services
            .get(&request.service)
            .and_then(|h| h.sharing.clone());
        for ip in &current {
            self.unhold(&request.service, *ip, old_sharing.as_ref());
        }
        for ip in &chosen {
            self.hold(&request.service, *ip, request.sharing.as_ref());
        }
        self.services.insert(
            request.service.clone(),
            Holding {
                ips: chosen.clone(),
                sharing: request.sharing.clone(),
            },
        );
        Ok(self.describe(&chosen))
    }
}

#[cfg(test)]
mod tests;
