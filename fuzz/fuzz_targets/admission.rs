//! The admission handler's JSON input: whatever arrives, every endpoint answers
//! with an AdmissionReview that serializes, and never panics.

#![no_main]

use std::sync::{Arc, OnceLock};

use ferrolb_webhook::admission::{Fixed, Handler};
use ferrolb_webhook::metrics::Metrics;
use ferrolb_webhook::rules::Snapshot;
use libfuzzer_sys::fuzz_target;

fn world() -> &'static (tokio::runtime::Runtime, Handler) {
    static WORLD: OnceLock<(tokio::runtime::Runtime, Handler)> = OnceLock::new();
    WORLD.get_or_init(|| {
        let pool = |name: &str, addresses: &str| {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "ferrolb.io/v1alpha1", "kind": "IPAddressPool",
                "metadata": {"name": name}, "spec": {"addresses": [addresses]},
            }))
            .expect("pool")
        };
        let snapshot = Snapshot {
            pools: vec![pool("a", "10.0.0.0/24"), pool("b", "fd00::/64")],
            ..Snapshot::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        (runtime, Handler::new(Arc::new(Fixed(snapshot)), Metrics::new()))
    })
}

fuzz_target!(|data: &[u8]| {
    let (runtime, handler) = world();
    let kinds = ["ipaddresspools", "l2advertisements", "bgppeers", "bgpadvertisements"];
    let kind = kinds[data.first().map_or(0, |b| usize::from(*b) % kinds.len())];
    let review = runtime.block_on(handler.review(kind, data.get(1..).unwrap_or_default()));
    serde_json::to_vec(&review).expect("the answer serializes");
});
