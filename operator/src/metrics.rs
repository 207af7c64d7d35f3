//! The operator's Prometheus metrics.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::plan::allocation::pool::PoolState;

/// Labels of pool gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// The pool.
    pub pool: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
}

/// Labels by reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The condition reason.
    pub reason: String,
}

/// Labels by API write kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// What was written: `service_status`, `pool_status`, `event`.
    pub kind: String,
}

/// Labels by API write kind and class of failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// What was written.
    pub kind: String,
    /// `conflict`, `invalid`, `forbidden`, `not_found` or `transient`.
    pub error: String,
}

/// Every metric the operator exports.
pub struct Metrics {
    /// Usable addresses per pool and family.
    pub pool_total: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    /// Assigned addresses per pool and family.
    pub pool_assigned: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    /// Free addresses per pool and family.
    pub pool_available: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    /// Services that got their IPs (transitions to Allocated).
    pub allocations: Counter,
    /// Services that could not get IPs, by reason (transitions).
    pub failures: Family<ReasonLabels, Counter>,
    /// How long one reconcile pass over every Service and pool took.
    pub reconcile_seconds: Histogram,
    /// Wake-ups that needed no pass (Lease renewals that changed no liveness).
    pub passes_skipped: Counter,
    /// Writes to the API, by kind.
    pub writes: Family<WriteLabels, Counter>,
    /// Failed writes to the API, by kind and class of failure.
    pub write_errors: Family<ErrorLabels, Counter>,
    /// 1 while this replica leads.
    pub leader: Gauge,
    /// Pools with gauges exported, to remove those of a deleted pool.
    pools_exported: std::sync::Mutex<std::collections::BTreeSet<String>>,
    registry: Registry,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("ferrolb");
        ferrolb_runtime::register_unreadable(&mut registry);
        let m = Metrics {
            pool_total: Family::default(),
            pool_assigned: Family::default(),
            pool_available: Family::default(),
            allocations: Counter::default(),
            failures: Family::default(),
            reconcile_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            passes_skipped: Counter::default(),
            writes: Family::default(),
            write_errors: Family::default(),
            leader: Gauge::default(),
            pools_exported: Default::default(),
            registry: Registry::default(),
        };
        registry.register(
            "pool_addresses_total",
            "Usable addresses of a pool",
            m.pool_total.clone(),
        );
        registry.register(
            "pool_addresses_assigned",
            "Addresses of a pool held by Services",
            m.pool_assigned.clone(),
        );
        registry.register(
            "pool_addresses_available",
            "Addresses of a pool still free",
            m.pool_available.clone(),
        );
        registry.register(
            "allocations",
            "Services that got their IPs",
            m.allocations.clone(),
        );
        registry.register(
            "allocation_failures",
            "Services that could not get IPs, by reason",
            m.failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one pass over every Service and pool",
            m.reconcile_seconds.clone(),
        );
        registry.register(
            "passes_skipped",
            "Wake-ups that needed no pass: speaker Lease renewals that changed no liveness",
            m.passes_skipped.clone(),
        );
        registry.register(
            "api_writes",
            "Writes to the Kubernetes API, by kind",
            m.writes.clone(),
        );
        registry.register(
            "api_write_errors",
            "Failed writes to the Kubernetes API, by kind and class (conflict, invalid, forbidden, not_found, transient)",
            m.write_errors.clone(),
        );
        registry.register(
            "operator_leader",
            "1 while this replica is the leader",
            m.leader.clone(),
        );
        Arc::new(Metrics { registry, ..m })
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        ferrolb_runtime::encode(&self.registry)
    }

    /// Counts one write of `kind`, and its failure's class if it failed.
    pub fn wrote(&self, kind: &str, error: Option<&str>) {
        let labels = WriteLabels {
            kind: kind.to_string(),
        };
        self.writes.get_or_create(&labels).inc();
        if let Some(error) = error {
            self.write_errors
                .get_or_create(&ErrorLabels {
                    kind: kind.to_string(),
                    error: error.to_string(),
                })
                .inc();
        }
    }

    /// Sets the gauges of every pool the allocator knows, and removes those
    /// of pools that are gone.
    pub fn pools<'a>(&self, pools: impl Iterator<Item = (&'a str, &'a PoolState)>) {
        let mut exported = self.pools_exported.lock().expect("pool gauge lock");
        let mut present = std::collections::BTreeSet::new();
        for (name, state) in pools {
            present.insert(name.to_string());
            for (s, family) in [(0, "ipv4"), (1, "ipv6")] {
                let labels = PoolLabels {
                    pool: name.to_string(),
                    family: family.to_string(),
                };
                self.pool_total
                    .get_or_create(&labels)
                    .set(state.total[s] as f64);
                self.pool_assigned
                    .get_or_create(&labels)
                    .set(state.assigned[s] as f64);
                self.pool_available
                    .get_or_create(&labels)
                    .set(state.total[s].saturating_sub(state.assigned[s]) as f64);
            }
        }
        for gone in exported.difference(&present) {
            for family in ["ipv4", "ipv6"] {
                let labels = PoolLabels {
                    pool: gone.clone(),
                    family: family.to_string(),
                };
                self.pool_total.remove(&labels);
                self.pool_assigned.remove(&labels);
                self.pool_available.remove(&labels);
            }
        }
        *exported = present;
    }
}
