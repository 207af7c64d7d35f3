//! What one pass costs, without an apiserver: S Services on N nodes in
//! layer 2 mode, all allocated and their NodeAnnouncements written. Prints
//! the time to read a snapshot (Services read before are not read again),
//! the pass that catches up once every status and NodeAnnouncement landed
//! (each object is new: every Service is looked at), the pass after one new
//! Service (incremental), and a pass planning everything (as after a node
//! change). Run with `cargo bench -p ferrolb-operator --bench pass`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use ferrolb_api::NodeAnnouncement;
use ferrolb_api::constants::speaker_lease;
use ferrolb_operator::cluster::{Objects, Options, Reads, Snapshot};
use ferrolb_operator::plan::{Memory, Write, status};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

fn from<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> Arc<K> {
    Arc::new(serde_json::from_value(value).expect("object"))
}

fn service(i: usize) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": "default", "resourceVersion": "1",
            "creationTimestamp": Timestamp::from_second(1_700_000_000 + i as i64).unwrap().to_string()},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]},
    })
}

fn objects(nodes: usize, services: usize) -> (Objects, BTreeSet<String>) {
    let mut objects = Objects {
        pools: vec![from(serde_json::json!({
            "apiVersion": "ferrolb.io/v1alpha1", "kind": "IPAddressPool",
            "metadata": {"name": "lan"}, "spec": {"addresses": ["10.96.0.0/12"]},
        }))],
        l2: vec![from(serde_json::json!({
            "apiVersion": "ferrolb.io/v1alpha1", "kind": "L2Advertisement",
            "metadata": {"name": "all"}, "spec": {},
        }))],
        ..Default::default()
    };
    let mut live = BTreeSet::new();
    for n in 0..nodes {
        let name = format!("node-{n}");
        live.insert(speaker_lease(&name));
        objects.nodes.push(from(serde_json::json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        })));
    }
    for i in 0..services {
        objects.services.push(from(service(i)));
    }
    (objects, live)
}

fn main() {
    let options = Options {
        lb_class: "ferrolb.io/ferrolb".into(),
        ignore_exclude_lb: false,
    };
    let now = Timestamp::now();
    println!("nodes services  read_ms  pass_catching_up_ms  pass_after_one_new_ms  whole_pass_ms");
    // `PASS_REPEAT=N` repeats the last measurement N times (for a profiler).
    let repeat: usize = std::env::var("PASS_REPEAT")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    for (nodes, services) in [
        (100, 50),
        (100, 1_000),
        (100, 5_000),
        (100, 20_000),
        (1_000, 20_000),
    ] {
        let (mut objects, live) = objects(nodes, services);
        let snapshot = Snapshot::read(objects.clone(), &options, &live);
        let mut memory = Memory::rebuild(&snapshot);
        // The first pass's writes land, as they do in a cluster: the
        // NodeAnnouncements and every Service's status.
        let mut statuses = std::collections::HashMap::new();
        for write in memory.pass(&snapshot, now).writes {
            match write {
                Write::Announcement { node, spec, .. } => objects
                    .announcements
                    .push(Arc::new(NodeAnnouncement::new(&node, spec))),
                Write::Service {
                    key,
                    service,
                    desired,
                    ..
                } => {
                    let body = status::apply_body(&service, &desired, Time(now));
                    statuses.insert(key.name, body["status"].clone());
                }
                _ => {}
            }
        }
        objects.services = objects
            .services
            .iter()
            .map(|s| {
                let mut value = serde_json::to_value(s.as_ref()).expect("json");
                if let Some(status) = statuses.get(s.metadata.name.as_deref().unwrap_or_default()) {
                    value["status"] = status.clone();
                }
                from(value)
            })
            .collect();
        // One pass sees them all.
        let snapshot = Snapshot::read(objects.clone(), &options, &live);
        memory.pass(&snapshot, now);
        // Read as the stores read: Services seen before are not read again.
        let mut reads = Reads::default();
        Snapshot::read_with(objects.clone(), &options, &live, &mut reads);
        let started = Instant::now();
        let snapshot = Snapshot::read_with(objects.clone(), &options, &live, &mut reads);
        let read = started.elapsed();
        let started = Instant::now();
        let pass = memory.pass(&snapshot, now);
        let full = started.elapsed();
        std::hint::black_box(pass.writes.len());
        let objects_again = objects.clone();
        let mut more = objects;
        more.services.push(from(service(services)));
        let snapshot = Snapshot::read_with(more, &options, &live, &mut reads);
        let started = Instant::now();
        for _ in 1..repeat {
            std::hint::black_box(memory.pass(&snapshot, now).writes.len());
        }
        let pass = memory.pass(&snapshot, now);
        let one = started.elapsed() / repeat as u32;
        std::hint::black_box(pass.writes.len());
        // The same pass re-planning everything (as after a node change).
        let snapshot = Snapshot::read(objects_again, &options, &live);
        let mut whole = Memory::rebuild(&snapshot).whole_every_pass();
        whole.pass(&snapshot, now);
        let started = Instant::now();
        std::hint::black_box(whole.pass(&snapshot, now).writes.len());
        let all = started.elapsed();
        println!(
            "{nodes:>5} {services:>8} {:>8.1} {:>24.1} {:>22.1} {:>14.1}",
            read.as_secs_f64() * 1e3,
            full.as_secs_f64() * 1e3,
            one.as_secs_f64() * 1e3,
            all.as_secs_f64() * 1e3
        );
    }
}
