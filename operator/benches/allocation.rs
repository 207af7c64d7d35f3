//! Allocation speed and memory: allocate + release in a /8 holding 100k
//! allocations, the same in an IPv6 /64, and choosing among 1,000 pools.
//! Run with `make bench` (or `cargo bench -p ferrolb-operator`); it prints
//! criterion's ns per operation and, first, the heap bytes per allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use ferrolb_api::address::{Family, parse_pool_entry};
use ferrolb_operator::plan::allocation::{
    Allocator, FamilyPolicy, Pool, PoolAllocation, ServiceKey, ServiceRequest,
};

/// Counts live heap bytes, to report memory per allocation.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only adds bookkeeping.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const HELD: usize = 100_000;

fn request(i: usize, family: Family) -> ServiceRequest {
    let mut r = ServiceRequest::new(ServiceKey::new("default", format!("svc-{i}")));
    r.families = FamilyPolicy::Single(family);
    r
}

/// An allocator over one pool with `HELD` allocations, every tenth released
/// again so the free space is fragmented (10,000 holes).
fn filled(entry: &str, family: Family) -> Allocator {
    let range = parse_pool_entry(entry).expect("bench pool");
    let mut allocator = Allocator::new(vec![Pool::new("big", vec![range])]);
    for i in 0..HELD {
        allocator.allocate(&request(i, family)).expect("room");
    }
    for i in (0..HELD).step_by(10) {
        allocator.release(&request(i, family).service);
    }
    allocator
}

fn report_memory(entry: &str, family: Family) {
    let range = parse_pool_entry(entry).expect("bench pool");
    let requests: Vec<ServiceRequest> = (0..HELD).map(|i| request(i, family)).collect();
    let mut allocator = Allocator::new(vec![Pool::new("big", vec![range])]);
    let before = LIVE.load(Ordering::Relaxed);
    for r in &requests {
        allocator.allocate(r).expect("room");
    }
    let after = LIVE.load(Ordering::Relaxed);
    println!(
        "memory: {entry}: {:.0} heap bytes per allocation ({HELD} allocations, Service keys included)",
        (after - before) as f64 / HELD as f64
    );
    black_box(allocator);
}

fn allocate_release(c: &mut Criterion, name: &str, entry: &str, family: Family) {
    let mut allocator = filled(entry, family);
    let probe = request(HELD + 1, family);
    c.bench_function(name, |b| {
        b.iter(|| {
            let got = allocator.allocate(black_box(&probe)).expect("room");
            allocator.release(&probe.service);
            got
        })
    });
}

fn benches(c: &mut Criterion) {
    report_memory("10.0.0.0/8", Family::V4);
    report_memory("fd00::/64", Family::V6);
    allocate_release(
        c,
        "allocate+release /8 with 100k held",
        "10.0.0.0/8",
        Family::V4,
    );
    allocate_release(
        c,
        "allocate+release IPv6 /64 with 100k held",
        "fd00::/64",
        Family::V6,
    );

    // 1,000 pools, each serving one namespace; the Service's namespace matches
    // the last one in pool order, so every pool is considered.
    let pools: Vec<Pool> = (0..1000)
        .map(|i| {
            let mut pool = Pool::new(
                format!("pool-{i:04}"),
                vec![parse_pool_entry(&format!("10.{}.{}.0/24", i / 256, i % 256)).expect("pool")],
            );
            pool.allocation = Some(PoolAllocation {
                priority: Some(i),
                namespaces: vec![format!("ns-{i}")],
                ..PoolAllocation::default()
            });
            pool
        })
        .collect();
    let mut allocator = Allocator::new(pools);
    let probe = ServiceRequest::new(ServiceKey::new("ns-999", "svc"));
    c.bench_function("allocate+release choosing among 1,000 pools", |b| {
        b.iter(|| {
            let got = allocator.allocate(black_box(&probe)).expect("room");
            allocator.release(&probe.service);
            got
        })
    });
}

criterion_group!(allocation, benches);
criterion_main!(allocation);
