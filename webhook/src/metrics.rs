//! The webhook's Prometheus metrics.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of an admission.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// The resource (`ipaddresspools`, …).
    pub kind: String,
    /// `allowed`, `warned`, `denied` or `malformed`.
    pub verdict: String,
}

/// Labels by kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The resource.
    pub kind: String,
}

/// Every metric the webhook exports.
pub struct Metrics {
    /// Admissions by kind and verdict.
    pub admissions: Family<AdmissionLabels, Counter>,
    /// Time to decide, by kind.
    pub latency: Family<KindLabels, Histogram>,
    /// Serving certificates issued (rotations included).
    pub certificates: Counter,
    registry: Registry,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("ferrolb_webhook");
        ferrolb_runtime::register_unreadable(&mut registry);
        let latency = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.00005, 2.0, 16))
        });
        let m = Metrics {
            admissions: Family::default(),
            latency,
            certificates: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "admissions",
            "Admission reviews by kind and verdict",
            m.admissions.clone(),
        );
        registry.register(
            "admission_duration_seconds",
            "Time to decide an admission review",
            m.latency.clone(),
        );
        registry.register(
            "certificates_issued",
            "Serving certificates issued, rotations included",
            m.certificates.clone(),
        );
        Arc::new(Metrics { registry, ..m })
    }

    /// Counts one admission and its latency.
    pub fn admitted(&self, kind: &str, verdict: &str, started: Instant) {
        self.admissions
            .get_or_create(&AdmissionLabels {
                kind: kind.to_string(),
                verdict: verdict.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .observe(started.elapsed().as_secs_f64());
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        ferrolb_runtime::encode(&self.registry)
    }
}
