//! The fast path between two speakers on loopback: the standby takes an IP
//! after missed probes, a speaker that comes back yields it, a planned stop
//! hands it over, forged or replayed datagrams change nothing, and
//! thousands of IPs go through as well as one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ferrolb_speaker::failover::tracker::{Reach, Unavailable};
use ferrolb_speaker::failover::wire::{self, Key, Kind, Message};
use ferrolb_speaker::failover::{Failover, Settings, Target};
use tokio::sync::Notify;

const SETTINGS: Settings = Settings {
    interval: Duration::from_millis(50),
    misses: 3,
};

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(node: &str, port: u16, key: &[u8]) -> Failover {
    start_at(node, SocketAddr::from(([127, 0, 0, 1], port)), key)
}

fn start_at(node: &str, address: SocketAddr, key: &[u8]) -> Failover {
    Failover::start(
        node.to_string(),
        None,
        address,
        Key::new(key),
        SETTINGS,
        Arc::new(Notify::new()),
        Arc::default(),
    )
    .unwrap()
}

/// Names `node` this node's standby, answering on loopback (only the
/// address counts, not the port).
fn names_standby(failover: &Failover, node: &str) {
    failover.set_standbys(&BTreeMap::from([(
        node.to_string(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )]));
}

fn ip() -> IpAddr {
    "192.0.2.10".parse().unwrap()
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    within(what, Duration::from_secs(2), check).await
}

async fn within(what: &str, wait: Duration, check: impl Fn() -> bool) {
    for _ in 0..wait.as_millis() / 20 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never: {what}");
}

/// An active speaker `a` answering for `ip()` and a standby `b` probing it,
/// each signing with its key.
fn pair(active_key: &[u8], standby_key: &[u8]) -> (Failover, Failover, BTreeSet<IpAddr>, u16) {
    let (pa, pb) = (free_port(), free_port());
    let set: BTreeSet<IpAddr> = [ip()].into();
    let active = start("a", pa, active_key);
    active.set_answering(&set, &set);
    let standby = start("b", pb, standby_key);
    standby.set_targets(&[Target {
        node: "a".into(),
        address: SocketAddr::from(([127, 0, 0, 1], pa)),
        ips: set.clone(),
    }]);
    (active, standby, set, pa)
}

#[tokio::test]
async fn takeover_yield_and_handoff_between_two_speakers() {
    let (pa, pb) = (free_port(), free_port());
    let set: BTreeSet<IpAddr> = [ip()].into();
    let active = start("a", pa, b"key");
    active.set_answering(&set, &set);
    let standby = start("b", pb, b"key");
    let target = Target {
        node: "a".into(),
        address: SocketAddr::from(([127, 0, 0, 1], pa)),
        ips: set.clone(),
    };
    standby.set_targets(std::slice::from_ref(&target));
    // The active answers: nothing is taken.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(standby.taken().is_empty());
    assert!(standby.counters.replies.get() > 5);
    // The active dies: the standby takes the IP after its misses.
    drop(active);
    eventually("the standby takes over", || {
        standby.taken().contains_key(&ip())
    })
    .await;
    assert_eq!(standby.taken()[&ip()].from, "a");
    // The active comes back (its spec still says active): it yields.
    let back = start("a", pa, b"key");
    back.set_answering(&BTreeSet::new(), &set);
    names_standby(&back, "b");
    eventually("the returning speaker yields", || {
        back.yielded().contains_key(&ip())
    })
    .await;
    assert_eq!(back.yielded()[&ip()], "b");
    // The operator makes the takeover official: the standby forgets it took it.
    standby.set_targets(&[]);
    assert!(standby.taken().is_empty());
    drop(back);

    // A planned stop hands the IP over, acknowledged.
    let (pc, pd) = (free_port(), free_port());
    let leaving = start("c", pc, b"key");
    leaving.set_answering(&set, &set);
    let heir = start("d", pd, b"key");
    heir.set_targets(&[Target {
        node: "c".into(),
        address: SocketAddr::from(([127, 0, 0, 1], pc)),
        ips: set.clone(),
    }]);
    eventually("the heir probes", || {
        heir.towards().first().map(|t| t.reach.clone()) == Some(Reach::Armed)
    })
    .await;
    let named: BTreeMap<IpAddr, SocketAddr> =
        [(ip(), SocketAddr::from(([127, 0, 0, 1], pd)))].into();
    let handed = leaving
        .handoff(&set, &named, Duration::from_millis(500))
        .await;
    assert_eq!(handed, set);
    assert!(heir.taken()[&ip()].why.contains("handed over"));
}

#[tokio::test]
async fn a_yielded_ip_is_answered_again_once_the_node_that_took_it_is_gone() {
    let (active, standby, set, pa) = pair(b"key", b"key");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(active);
    eventually("the standby takes over", || {
        standby.taken().contains_key(&ip())
    })
    .await;
    let back = start("a", pa, b"key");
    back.set_answering(&BTreeSet::new(), &set);
    names_standby(&back, "b");
    eventually("the returning speaker yields", || {
        back.yielded().contains_key(&ip())
    })
    .await;
    // While the taker keeps claiming it, the yield holds.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(back.yielded().get(&ip()).map(String::as_str), Some("b"));
    // The taker dies before the operator made anything official, and the
    // operator leaves the IP where its spec had it: the returning speaker
    // must answer again rather than leave the IP with nobody.
    drop(standby);
    within("the yield lapses", Duration::from_secs(10), || {
        back.yielded().is_empty()
    })
    .await;
}

#[tokio::test]
async fn forged_and_replayed_datagrams_change_nothing() {
    let port = free_port();
    let set: BTreeSet<IpAddr> = [ip()].into();
    let active = start("a", port, b"the key");
    active.set_answering(&set, &set);
    names_standby(&active, "mallory");
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let probe = |key: &[u8], nonce: u64, echo: u64, taken: Vec<IpAddr>| {
        wire::encode(
            &Key::new(key),
            &Message {
                kind: Kind::Probe,
                nonce,
                echo,
                node: "mallory".into(),
                ips: Vec::new(),
                taken,
            },
        )
    };
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    // Signed with another key: refused.
    socket
        .send_to(&probe(b"a guess", 1, 0, vec![ip()]), target)
        .await
        .unwrap();
    socket.send_to(b"FLB2 junk", target).await.unwrap();
    eventually("both refused", || active.counters.refused.get() == 2).await;
    assert!(active.yielded().is_empty(), "a forged takeover is ignored");
    // Signed right but echoing no challenge of the active's: answered (with
    // a challenge), its claim not honoured.
    socket
        .send_to(&probe(b"the key", 2, 12345, vec![ip()]), target)
        .await
        .unwrap();
    let mut buffer = vec![0u8; wire::MAX];
    let (len, _) = socket.recv_from(&mut buffer).await.unwrap();
    let reply = wire::decode(&Key::new(b"the key"), &buffer[..len]).unwrap();
    assert_eq!((reply.kind, reply.nonce), (Kind::Reply, 2));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(active.yielded().is_empty(), "a claim without a challenge");
    // With the challenge: the claim counts.
    let good = probe(b"the key", 3, reply.echo, vec![ip()]);
    socket.send_to(&good, target).await.unwrap();
    eventually("the real one is heard", || !active.yielded().is_empty()).await;
    active.set_answering(&set, &BTreeSet::new());
    active.set_answering(&set, &set);
    assert!(active.yielded().is_empty());
    // The same datagram again, at once or later: refused.
    socket.send_to(&good, target).await.unwrap();
    eventually("the replay refused", || active.counters.refused.get() == 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        active.yielded().is_empty(),
        "a replayed takeover is ignored"
    );
    // Signed right, with a fresh challenge, but from an address that is not
    // the named standby's (another node claiming as mallory): answered, its
    // claim not honoured.
    let elsewhere = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    elsewhere
        .send_to(&probe(b"the key", 4, 0, Vec::new()), target)
        .await
        .unwrap();
    let (len, _) = elsewhere.recv_from(&mut buffer).await.unwrap();
    let reply = wire::decode(&Key::new(b"the key"), &buffer[..len]).unwrap();
    elsewhere
        .send_to(&probe(b"the key", 5, reply.echo, vec![ip()]), target)
        .await
        .unwrap();
    let (len, _) = elsewhere.recv_from(&mut buffer).await.unwrap();
    assert_eq!(
        wire::decode(&Key::new(b"the key"), &buffer[..len])
            .unwrap()
            .nonce,
        5,
        "answered"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        active.yielded().is_empty(),
        "a claim from another node's address is ignored"
    );
}

#[tokio::test]
async fn two_thousand_ips_are_taken_yielded_and_handed_over() {
    // Above 1,790 IPv4 addresses a single probe no longer fit the receive
    // buffer: the fast path stopped silently.
    let many: BTreeSet<IpAddr> = (0..2_000u32)
        .map(|i| IpAddr::V4(std::net::Ipv4Addr::from(0xc633_0000 + i * 2)))
        .collect();
    let (pa, pb) = (free_port(), free_port());
    let active = start("a", pa, b"key");
    active.set_answering(&many, &many);
    let standby = start("b", pb, b"key");
    standby.set_targets(&[Target {
        node: "a".into(),
        address: SocketAddr::from(([127, 0, 0, 1], pa)),
        ips: many.clone(),
    }]);
    eventually("armed", || {
        standby.towards().first().map(|t| t.reach.clone()) == Some(Reach::Armed)
    })
    .await;
    drop(active);
    eventually("all taken", || standby.taken().len() == many.len()).await;
    let back = start("a", pa, b"key");
    back.set_answering(&BTreeSet::new(), &many);
    names_standby(&back, "b");
    within("all yielded", Duration::from_secs(5), || {
        back.yielded().len() == many.len()
    })
    .await;
    drop((back, standby));

    // A planned stop hands all of them over.
    let (pc, pd) = (free_port(), free_port());
    let leaving = start("c", pc, b"key");
    leaving.set_answering(&many, &many);
    let heir = start("d", pd, b"key");
    heir.set_targets(&[Target {
        node: "c".into(),
        address: SocketAddr::from(([127, 0, 0, 1], pc)),
        ips: many.clone(),
    }]);
    eventually("the heir probes", || {
        heir.towards().first().map(|t| t.reach.clone()) == Some(Reach::Armed)
    })
    .await;
    let named: BTreeMap<IpAddr, SocketAddr> = many
        .iter()
        .map(|ip| (*ip, SocketAddr::from(([127, 0, 0, 1], pd))))
        .collect();
    let handed = leaving.handoff(&many, &named, Duration::from_secs(2)).await;
    assert_eq!(handed.len(), many.len());
    assert_eq!(heir.taken().len(), many.len());
}

#[tokio::test]
async fn a_standby_that_never_hears_the_active_leaves_its_ips_alone_and_says_so() {
    // The active signs with another key: its answers never count, as with a
    // firewall dropping them.
    let (active, standby, _, _) = pair(b"one key", b"another key");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(standby.taken().is_empty(), "no takeover without evidence");
    assert!(active.yielded().is_empty());
    let towards = standby.towards();
    assert_eq!(towards.len(), 1);
    assert_eq!(
        towards[0].reach,
        Reach::Unavailable(Unavailable::NeverHeard)
    );
    assert_eq!(standby.counters.unavailable.get(), 1);
    assert_eq!(standby.counters.unavailable_now.get(), 1);
    // The active goes away: still nothing (the slow path is the operator's).
    drop(active);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(standby.taken().is_empty());
}

#[tokio::test]
async fn the_fast_path_works_over_ipv6_alone() {
    let (pa, pb) = (free_port(), free_port());
    let set: BTreeSet<IpAddr> = ["2001:db8::10".parse().unwrap()].into();
    let loopback6 = |port| SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    let active = start_at("a", loopback6(pa), b"key");
    active.set_answering(&set, &set);
    let standby = start_at("b", loopback6(pb), b"key");
    standby.set_targets(&[Target {
        node: "a".into(),
        address: loopback6(pa),
        ips: set.clone(),
    }]);
    eventually("the active is heard over IPv6", || {
        standby.towards().first().map(|t| t.reach.clone()) == Some(Reach::Armed)
    })
    .await;
    drop(active);
    eventually("the standby takes over", || standby.taken().len() == 1).await;
}

/// A standby whose fast failover messages cannot reach the active (UDP 7473
/// dropped one way) takes the IP over and announces it with gratuitous
/// ARP: the active sees that on the wire and yields, so two nodes do not
/// both answer until the operator makes the move official. The yield lapses
/// when the claims stop, and a taker never yields to the node it took from.
#[tokio::test]
async fn another_nodes_gratuitous_arp_makes_the_active_yield_and_never_the_taker() {
    let (active, standby, _set, _pa) = pair(b"key", b"key");
    assert!(active.claimed_on_wire(ip(), "02:00:00:00:00:0b"));
    assert_eq!(
        active.yielded().get(&ip()).map(String::as_str),
        Some("the node at 02:00:00:00:00:0b")
    );
    assert!(
        !active.claimed_on_wire(ip(), "02:00:00:00:00:0b"),
        "a repeated announcement is not a new yield"
    );
    within("the yield lapses", Duration::from_secs(10), || {
        active.yielded().is_empty()
    })
    .await;
    drop(active);
    eventually("the standby takes over", || {
        standby.taken().contains_key(&ip())
    })
    .await;
    assert!(!standby.claimed_on_wire(ip(), "02:00:00:00:00:0a"));
    assert!(standby.yielded().is_empty());
}

/// Make-before-break: a new standby arms (hears the active node) while it
/// takes nothing, so the standby it replaces can let go only once the new
/// one could take over; made a full standby, it takes over on silence at
/// once, with what it heard while arming.
#[tokio::test]
async fn an_arming_standby_is_heard_but_takes_nothing_until_it_stands_by() {
    let (pa, pb) = (free_port(), free_port());
    let set: BTreeSet<IpAddr> = [ip()].into();
    let active = start("a", pa, b"key");
    active.set_answering(&set, &set);
    let arming = start("b", pb, b"key");
    let target = |ips: &BTreeSet<IpAddr>| Target {
        node: "a".into(),
        address: SocketAddr::from(([127, 0, 0, 1], pa)),
        ips: ips.clone(),
    };
    arming.set_targets(&[target(&BTreeSet::new())]);
    eventually("the arming standby hears the active node", || {
        arming.towards().first().map(|t| t.reach.clone()) == Some(Reach::Armed)
    })
    .await;
    // Stands by in full now: what it heard while arming counts.
    arming.set_targets(&[target(&set)]);
    assert_eq!(
        arming.towards().first().map(|t| t.reach.clone()),
        Some(Reach::Armed)
    );
    drop(active);
    eventually("the standby takes over", || {
        arming.taken().contains_key(&ip())
    })
    .await;

    // While arming, the active node's silence takes nothing.
    let (pc, pd) = (free_port(), free_port());
    let other = start("c", pc, b"key");
    other.set_answering(&set, &set);
    let waiting = start("d", pd, b"key");
    waiting.set_targets(&[Target {
        node: "c".into(),
        address: SocketAddr::from(([127, 0, 0, 1], pc)),
        ips: BTreeSet::new(),
    }]);
    eventually("armed", || {
        waiting.towards().first().map(|t| t.reach.clone()) == Some(Reach::Armed)
    })
    .await;
    drop(other);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        waiting.taken().is_empty(),
        "an arming standby takes nothing"
    );
}
