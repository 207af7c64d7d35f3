//! The allocation rules, case by case, and the invariants as properties.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_api::address::{Family, parse_pool_entry};
use proptest::prelude::*;

use super::selector::{Labels, Selector};
use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

fn pool(name: &str, entries: &[&str]) -> Pool {
    Pool::new(
        name,
        entries
            .iter()
            .map(|e| parse_pool_entry(e).expect(e))
            .collect(),
    )
}

fn svc(name: &str) -> ServiceRequest {
    ServiceRequest::new(ServiceKey::new("default", name))
}

fn ips(result: &Result<Vec<Assignment>, Failure>) -> Vec<IpAddr> {
    result
        .as_ref()
        .map(|a| a.iter().map(|x| x.ip).collect())
        .unwrap_or_default()
}

fn reason(result: &Result<Vec<Assignment>, Failure>) -> Option<Reason> {
    result.as_ref().err().map(|f| f.reason)
}

#[test]
fn lowest_free_address_first_and_reused_after_release() {
    let mut a = Allocator::new(vec![pool("p", &["10.0.0.0/30"])]);
    assert_eq!(ips(&a.allocate(&svc("a"))), [ip("10.0.0.0")]);
    assert_eq!(ips(&a.allocate(&svc("b"))), [ip("10.0.0.1")]);
    assert_eq!(
        a.release(&ServiceKey::new("default", "a")),
        [ip("10.0.0.0")]
    );
    assert_eq!(ips(&a.allocate(&svc("c"))), [ip("10.0.0.0")]);
    // Asking again changes nothing.
    assert_eq!(ips(&a.allocate(&svc("b"))), [ip("10.0.0.1")]);
    assert_eq!(a.pool("p").expect("pool").assigned, [2, 0]);
}

#[test]
fn exhaustion_names_the_pools_and_freeing_an_ip_fixes_it() {
    let mut a = Allocator::new(vec![pool("small", &["10.0.0.7"])]);
    a.allocate(&svc("a")).expect("first");
    let failed = a.allocate(&svc("b"));
    assert_eq!(reason(&failed), Some(Reason::PoolExhausted));
    assert!(failed.expect_err("full").message.contains("(small)"));
    a.release(&ServiceKey::new("default", "a"));
    assert_eq!(ips(&a.allocate(&svc("b"))), [ip("10.0.0.7")]);
}

#[test]
fn pool_order_priority_then_plain_pools_then_name() {
    let mut team = pool("team", &["10.1.0.0/30"]);
    team.allocation = Some(PoolAllocation {
        priority: Some(10),
        namespaces: vec!["team-a".into()],
        ..PoolAllocation::default()
    });
    let mut urgent = pool("urgent", &["10.2.0.0/30"]);
    urgent.allocation = Some(PoolAllocation {
        priority: Some(1),
        service_selectors: vec![Selector {
            labels: Labels::from([("tier".to_string(), "edge".to_string())]),
            ..Selector::default()
        }],
        ..PoolAllocation::default()
    });
    let mut a = Allocator::new(vec![
        pool("b-plain", &["10.3.0.0/30"]),
        pool("a-plain", &["10.4.0.0/30"]),
        team,
        urgent,
    ]);
    // Default namespace, no labels: only the plain pools, by name.
    assert_eq!(ips(&a.allocate(&svc("x"))), [ip("10.4.0.0")]);
    // team-a: its pool comes before the plain ones.
    let mut in_team = ServiceRequest::new(ServiceKey::new("team-a", "y"));
    assert_eq!(ips(&a.allocate(&in_team)), [ip("10.1.0.0")]);
    // Labelled edge in team-a: priority 1 beats 10.
    in_team.service.name = "z".into();
    in_team.labels.insert("tier".into(), "edge".into());
    assert_eq!(ips(&a.allocate(&in_team)), [ip("10.2.0.0")]);
}

#[test]
fn namespaces_and_namespace_selectors_widen_each_other() {
    let mut team = pool("team", &["10.1.0.0/30"]);
    team.allocation = Some(PoolAllocation {
        namespaces: vec!["team-a".into()],
        namespace_selectors: vec![Selector {
            labels: Labels::from([("team".to_string(), "a".to_string())]),
            ..Selector::default()
        }],
        ..PoolAllocation::default()
    });
    let mut a = Allocator::new(vec![team]);
    let listed = ServiceRequest::new(ServiceKey::new("team-a", "x"));
    assert_eq!(ips(&a.allocate(&listed)), [ip("10.1.0.0")]);
    let mut labelled = ServiceRequest::new(ServiceKey::new("team-a-staging", "y"));
    labelled.namespace_labels.insert("team".into(), "a".into());
    assert_eq!(ips(&a.allocate(&labelled)), [ip("10.1.0.1")]);
    let other = ServiceRequest::new(ServiceKey::new("team-b", "z"));
    assert_eq!(reason(&a.allocate(&other)), Some(Reason::NoMatchingPool));
}

#[test]
fn auto_assign_false_pools_only_when_asked_for() {
    let mut reserved = pool("reserved", &["10.9.0.0/30"]);
    reserved.auto_assign = false;
    let mut a = Allocator::new(vec![reserved]);
    let failed = a.allocate(&svc("a"));
    assert_eq!(reason(&failed), Some(Reason::NoMatchingPool));
    let mut named = svc("b");
    named.pool = Some("reserved".into());
    assert_eq!(ips(&a.allocate(&named)), [ip("10.9.0.0")]);
    let mut by_ip = svc("c");
    by_ip.requested = vec![ip("10.9.0.3")];
    assert_eq!(ips(&a.allocate(&by_ip)), [ip("10.9.0.3")]);
}

#[test]
fn requested_ips_and_their_failures() {
    let mut a = Allocator::new(vec![
        pool("p", &["10.0.0.0/29"]),
        pool("q", &["10.1.0.0/29"]),
    ]);
    let mut one = svc("one");
    one.requested = vec![ip("10.0.0.5")];
    assert_eq!(ips(&a.allocate(&one)), [ip("10.0.0.5")]);

    let mut taken = svc("two");
    taken.requested = vec![ip("10.0.0.5")];
    let failed = a.allocate(&taken);
    assert_eq!(reason(&failed), Some(Reason::RequestedIPUnavailable));
    assert!(
        failed
            .expect_err("taken")
            .message
            .contains("held by default/one")
    );

    let mut outside = svc("three");
    outside.requested = vec![ip("192.0.2.1")];
    assert_eq!(
        reason(&a.allocate(&outside)),
        Some(Reason::RequestedIPNotInAnyPool)
    );

    let mut contradictory = svc("four");
    contradictory.requested = vec![ip("10.0.0.6")];
    contradictory.pool = Some("q".into());
    assert_eq!(
        reason(&a.allocate(&contradictory)),
        Some(Reason::InvalidRequest)
    );

    let mut two_v4 = svc("five");
    two_v4.requested = vec![ip("10.0.0.1"), ip("10.0.0.2")];
    assert_eq!(reason(&a.allocate(&two_v4)), Some(Reason::InvalidRequest));

    let mut missing_pool = svc("six");
    missing_pool.pool = Some("nope".into());
    assert_eq!(
        reason(&a.allocate(&missing_pool)),
        Some(Reason::NoMatchingPool)
    );
}

#[test]
fn a_changed_request_moves_the_ip_and_a_failing_one_keeps_it() {
    let mut a = Allocator::new(vec![pool("p", &["10.0.0.0/29"])]);
    let mut s = svc("s");
    assert_eq!(ips(&a.allocate(&s)), [ip("10.0.0.0")]);
    s.requested = vec![ip("10.0.0.4")];
    assert_eq!(ips(&a.allocate(&s)), [ip("10.0.0.4")]);
    assert_eq!(
        a.holders(ip("10.0.0.0")).count(),
        0,
        "the old IP is free again"
    );
    s.requested = vec![ip("192.0.2.9")];
    assert_eq!(
        reason(&a.allocate(&s)),
        Some(Reason::RequestedIPNotInAnyPool)
    );
    assert_eq!(
        a.assignments(&s.service)
            .expect("kept")
            .iter()
            .map(|x| x.ip)
            .collect::<Vec<_>>(),
        [ip("10.0.0.4")]
    );
}

fn sharing(key: &str, ports: &[u16]) -> Option<Sharing> {
    Some(Sharing {
        key: key.into(),
        backend: String::new(),
        ports: ports.iter().map(|p| (Protocol::Tcp, *p)).collect(),
    })
}

#[test]
fn sharing_same_key_different_ports_share_one_ip() {
    let mut a = Allocator::new(vec![pool("p", &["10.0.0.0/29"])]);
    let mut web = svc("web");
    web.sharing = sharing("k", &[80]);
    let mut tls = svc("tls");
    tls.sharing = sharing("k", &[443]);
    assert_eq!(ips(&a.allocate(&web)), ips(&a.allocate(&tls)));
    assert_eq!(a.pool("p").expect("p").assigned, [1, 0]);
    // A port clash under the same key gets its own IP when none is asked for…
    let mut clash = svc("clash");
    clash.sharing = sharing("k", &[80]);
    assert_eq!(ips(&a.allocate(&clash)), [ip("10.0.0.1")]);
    // …and a SharingConflict when it asks for the shared one.
    let mut asks = svc("asks");
    asks.sharing = sharing("k", &[443]);
    asks.requested = vec![ip("10.0.0.0")];
    let failed = a.allocate(&asks);
    assert_eq!(reason(&failed), Some(Reason::SharingConflict));
    assert!(failed.expect_err("clash").message.contains("443/TCP"));
    // Another key cannot join either.
    let mut other = svc("other");
    other.sharing = sharing("other-key", &[8080]);
    other.requested = vec![ip("10.0.0.0")];
    assert_eq!(reason(&a.allocate(&other)), Some(Reason::SharingConflict));
    // The IP stays held until the last sharer goes.
    a.release(&web.service);
    assert_eq!(a.holders(ip("10.0.0.0")).count(), 1);
    a.release(&tls.service);
    assert_eq!(a.holders(ip("10.0.0.0")).count(), 0);
}

#[test]
fn dual_stack_policies() {
    let mut a = Allocator::new(vec![
        pool("v4", &["10.0.0.0/31"]),
        pool("v6", &["fd00::/127"]),
    ]);
    let mut single6 = svc("six");
    single6.families = FamilyPolicy::Single(Family::V6);
    assert_eq!(ips(&a.allocate(&single6)), [ip("fd00::")]);
    let mut require = svc("req");
    require.families = FamilyPolicy::RequireDual(Family::V6);
    assert_eq!(ips(&a.allocate(&require)), [ip("fd00::1"), ip("10.0.0.0")]);
    // IPv6 is now full: PreferDual gets IPv4 only, RequireDual nothing.
    let mut prefer = svc("prefer");
    prefer.families = FamilyPolicy::PreferDual(Family::V4);
    assert_eq!(ips(&a.allocate(&prefer)), [ip("10.0.0.1")]);
    let mut require2 = svc("req2");
    require2.families = FamilyPolicy::RequireDual(Family::V4);
    assert_eq!(reason(&a.allocate(&require2)), Some(Reason::PoolExhausted));
    // An IPv6 address is freed: PreferDual adds it, keeping its IPv4 address.
    a.release(&single6.service);
    assert_eq!(ips(&a.allocate(&prefer)), [ip("10.0.0.1"), ip("fd00::")]);
}

#[test]
fn require_dual_without_a_pool_of_one_family_says_so() {
    let mut a = Allocator::new(vec![pool("v4", &["10.0.0.0/30"])]);
    let mut require = svc("req");
    require.families = FamilyPolicy::RequireDual(Family::V4);
    let failed = a.allocate(&require);
    assert_eq!(reason(&failed), Some(Reason::DualStackUnavailable));
    assert_eq!(
        a.pool("v4").expect("v4").assigned,
        [0, 0],
        "nothing half-taken"
    );
}

#[test]
fn editing_or_deleting_a_pool_never_takes_an_ip_away() {
    let mut a = Allocator::new(vec![pool("p", &["10.0.0.0/29"])]);
    let s = svc("s");
    a.allocate(&s).expect("allocated");
    a.set_pools(vec![pool("p", &["10.0.1.0/29"])]);
    let held = a.assignments(&s.service).expect("still held");
    assert_eq!((held[0].ip, held[0].pool.clone()), (ip("10.0.0.0"), None));
    assert_eq!(
        a.orphans().keys().copied().collect::<Vec<_>>(),
        [ip("10.0.0.0")]
    );
    // Asking again keeps it: nothing is renumbered silently.
    assert_eq!(ips(&a.allocate(&s)), [ip("10.0.0.0")]);
    // The pool comes back: the IP is counted in it again.
    a.set_pools(vec![pool("p", &["10.0.0.0/29"])]);
    assert_eq!(a.pool("p").expect("p").assigned, [1, 0]);
    assert_eq!(ips(&a.allocate(&svc("t"))), [ip("10.0.0.1")]);
}

#[test]
fn restore_keeps_holders_and_refuses_a_double_claim() {
    let mut a = Allocator::new(vec![pool("p", &["10.0.0.0/29"])]);
    a.restore(&svc("a"), &[ip("10.0.0.3")]).expect("restore");
    a.restore(&svc("outside"), &[ip("192.0.2.1")])
        .expect("restore outside");
    let failed = a.restore(&svc("b"), &[ip("10.0.0.3")]);
    assert_eq!(reason(&failed), Some(Reason::RequestedIPUnavailable));
    assert_eq!(ips(&a.allocate(&svc("c"))), [ip("10.0.0.0")]);
    assert_eq!(
        ips(&a.allocate(&svc("a"))),
        [ip("10.0.0.3")],
        "restored IPs are kept"
    );
}

#[test]
fn avoid_buggy_ips_skips_dot_zero_and_dot_255() {
    let mut p = pool("p", &["10.0.0.255-10.0.1.1"]);
    p.avoid_buggy_ips = true;
    let mut a = Allocator::new(vec![p]);
    assert_eq!(ips(&a.allocate(&svc("a"))), [ip("10.0.1.1")]);
    assert_eq!(reason(&a.allocate(&svc("b"))), Some(Reason::PoolExhausted));
}

#[test]
fn ipv4_mapped_addresses_are_never_handed_out() {
    // The API never reads a mapped address as a range end, but a CIDR such as
    // ::/80 covers them; build such a range directly.
    let range = ferrolb_api::address::AddressRange::new(ip("::ffff:ffff:fffe"), ip("::1:0:0:1"))
        .expect("range");
    let mut a = Allocator::new(vec![Pool::new("odd", vec![range])]);
    let mut s = svc("s");
    s.families = FamilyPolicy::Single(Family::V6);
    // ::ffff:ffff:fffe and ::ffff:ffff:ffff are IPv4-mapped: skipped.
    assert_eq!(ips(&a.allocate(&s)), [ip("::1:0:0:0")]);
}

#[test]
fn huge_pools_cost_nothing_to_build() {
    let mut a = Allocator::new(vec![
        pool("v6", &["fd00::/64"]),
        pool("v4", &["10.0.0.0/8"]),
    ]);
    let mut s = svc("s");
    s.families = FamilyPolicy::RequireDual(Family::V4);
    assert_eq!(ips(&a.allocate(&s)), [ip("10.0.0.0"), ip("fd00::")]);
    assert_eq!(
        a.pool("v6").expect("v6").available(Family::V6),
        (1u128 << 64) - 1
    );
}

// --- Properties -----------------------------------------------------------

/// An operation on the allocator.
#[derive(Clone, Debug)]
enum Op {
    Allocate {
        service: u8,
        family: u8,
        key: Option<u8>,
        port: u16,
        request: Option<u8>,
    },
    Release {
        service: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..12, 0u8..4, proptest::option::of(0u8..2), 0u16..3, proptest::option::weighted(0.2, 0u8..12))
            .prop_map(|(service, family, key, port, request)| Op::Allocate { service, family, key, port, request }),
        1 => (0u8..12).prop_map(|service| Op::Release { service }),
    ]
}

fn small_pools() -> Vec<Pool> {
    let mut reserved = pool("reserved", &["10.0.1.0/31"]);
    reserved.auto_assign = false;
    vec![
        pool("a", &["10.0.0.0/30", "fd00::/126"]),
        pool("b", &["10.0.0.4-10.0.0.5"]),
        reserved,
    ]
}

fn request_for(op: &Op) -> Option<ServiceRequest> {
    let Op::Allocate {
        service,
        family,
        key,
        port,
        request,
    } = op
    else {
        return None;
    };
    let mut r = svc(&format!("s{service}"));
    r.families = match family {
        0 => FamilyPolicy::Single(Family::V4),
        1 => FamilyPolicy::Single(Family::V6),
        2 => FamilyPolicy::PreferDual(Family::V4),
        _ => FamilyPolicy::RequireDual(Family::V6),
    };
    r.sharing = key.map(|k| Sharing {
        key: format!("k{k}"),
        backend: String::new(),
        ports: vec![(Protocol::Tcp, 80 + port)],
    });
    if let Some(n) = request {
        r.requested = vec![ip(&format!("10.0.{}.{}", n / 8, n % 8))];
        r.families = FamilyPolicy::Single(Family::V4);
    }
    Some(r)
}

/// Checks what must hold after every operation.
fn check_invariants(
    a: &Allocator,
    requests: &BTreeMap<ServiceKey, ServiceRequest>,
) -> Result<(), TestCaseError> {
    // Every holder of an IP holds it in its assignments, and sharers are compatible.
    let mut per_ip: BTreeMap<IpAddr, Vec<&ServiceKey>> = BTreeMap::new();
    for service in a.services() {
        for assignment in a.assignments(service).unwrap_or_default() {
            per_ip.entry(assignment.ip).or_default().push(service);
        }
    }
    for (ip, holders) in &per_ip {
        prop_assert_eq!(a.holders(*ip).count(), holders.len());
        for (i, x) in holders.iter().enumerate() {
            for y in &holders[i + 1..] {
                let sx = requests.get(*x).and_then(|r| r.sharing.as_ref());
                let sy = requests.get(*y).and_then(|r| r.sharing.as_ref());
                match (sx, sy) {
                    (Some(sx), Some(sy)) => prop_assert!(
                        sx.conflict_with(sy).is_none(),
                        "{ip} shared by {x} and {y} against the rules"
                    ),
                    _ => prop_assert!(false, "{ip} held by {x} and {y}, which may not share"),
                }
            }
        }
    }
    // Pool counts match the holdings.
    for state in a.pools() {
        for family in [Family::V4, Family::V6] {
            let held = per_ip
                .keys()
                .filter(|ip| {
                    Family::of(ip) == family
                        && state.contains(family, ferrolb_api::address::to_u128(**ip))
                })
                .count() as u128;
            prop_assert_eq!(
                state.assigned[pool::slot(family)],
                held,
                "pool {} {}",
                state.pool.name,
                family
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn no_ip_is_held_by_two_services_that_may_not_share(ops in proptest::collection::vec(op(), 1..60)) {
        let mut a = Allocator::new(small_pools());
        let mut requests = BTreeMap::new();
        for op in &ops {
            match op {
                Op::Release { service } => {
                    let key = ServiceKey::new("default", format!("s{service}"));
                    a.release(&key);
                    requests.remove(&key);
                }
                _ => {
                    let r = request_for(op).expect("allocate op");
                    if a.allocate(&r).is_ok() {
                        requests.insert(r.service.clone(), r);
                    }
                }
            }
            check_invariants(&a, &requests)?;
        }
    }

    #[test]
    fn release_then_allocate_gives_the_same_ips_back(ops in proptest::collection::vec(op(), 1..40), probe in op()) {
        let mut a = Allocator::new(small_pools());
        for op in &ops {
            if let Some(r) = request_for(op) {
                let _ = a.allocate(&r);
            } else if let Op::Release { service } = op {
                a.release(&ServiceKey::new("default", format!("s{service}")));
            }
        }
        if let Some(mut r) = request_for(&probe) {
            r.service.name = "probe".into();
            if let Ok(first) = a.allocate(&r) {
                a.release(&r.service);
                prop_assert_eq!(a.allocate(&r).ok(), Some(first));
            }
        }
    }

    #[test]
    fn restoring_any_valid_set_of_assignments_succeeds(ops in proptest::collection::vec(op(), 1..60), seed in any::<u64>()) {
        let mut a = Allocator::new(small_pools());
        let mut requests = BTreeMap::new();
        for op in &ops {
            if let Some(r) = request_for(op) {
                if a.allocate(&r).is_ok() {
                    requests.insert(r.service.clone(), r);
                }
            } else if let Op::Release { service } = op {
                let key = ServiceKey::new("default", format!("s{service}"));
                a.release(&key);
                requests.remove(&key);
            }
        }
        // Restore into a fresh allocator in a shuffled order.
        let mut order: Vec<&ServiceRequest> = requests.values().collect();
        let mut state = seed | 1;
        for i in (1..order.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            order.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let mut b = Allocator::new(small_pools());
        for r in order {
            let held: Vec<IpAddr> = a.assignments(&r.service).unwrap_or_default().iter().map(|x| x.ip).collect();
            prop_assert!(b.restore(r, &held).is_ok(), "restoring {} {:?}", r.service, held);
        }
        for r in requests.values() {
            prop_assert_eq!(a.assignments(&r.service), b.assignments(&r.service));
        }
        for (x, y) in a.pools().zip(b.pools()) {
            prop_assert_eq!(x.assigned, y.assigned);
            prop_assert_eq!(&x.free, &y.free);
        }
        check_invariants(&b, &requests)?;
    }

    #[test]
    fn the_same_inputs_give_the_same_results(ops in proptest::collection::vec(op(), 1..60)) {
        let run = || {
            let mut a = Allocator::new(small_pools());
            ops.iter().map(|op| match request_for(op) {
                Some(r) => a.allocate(&r),
                None => {
                    let Op::Release { service } = op else { unreachable!() };
                    a.release(&ServiceKey::new("default", format!("s{service}")));
                    Ok(Vec::new())
                }
            }).collect::<Vec<_>>()
        };
        prop_assert_eq!(run(), run());
    }
}
