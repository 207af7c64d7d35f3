//! The fast failover path, speaker to speaker, with no apiserver in the way:
//!
//! - The standby for an IP probes the active node's speaker over UDP every
//!   `interval`; after `misses` intervals without a signed answer it takes the
//!   IPs itself (announced at once) and reports them as `TakenOver` for the
//!   operator to make official.
//! - Its probes say which IPs it has taken; an active speaker that hears that
//!   (say, it comes back after a crash with the operator down) stops answering
//!   for them, so two MACs never answer for long.
//! - On a planned stop the active speaker hands its IPs to the standbys that
//!   probe it and waits for their acknowledgement before it goes silent.
//!
//! Every message is signed with the cluster's failover key (see [`wire`]),
//! and none relies on a clock: a reply must echo the nonce of a probe this
//! node sent a moment ago and come from the address it was sent to; a
//! probe's takeover claims count only with a challenge the active node
//! itself sent in a reply within the last 3 s (by its own monotonic clock),
//! once per probe; a hand-off must echo a recent probe of the receiver's.
//! A replayed datagram is therefore refused for as long as what it echoes
//! could still be accepted, and a clock step on any node changes nothing.

pub mod tracker;
pub mod wire;
pub mod yields;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use tracker::{Reach, Tracker};
pub use tracker::{Settings, Taken};
use wire::{Key, Kind, Message};
use yields::Yields;

/// A new challenge for a standby at most this often.
const CHALLENGE_EVERY: Duration = Duration::from_secs(1);
/// How long a challenge may be echoed: the takeover claims of a probe
/// echoing an older one are not honoured (the probes after it echo a newer).
const CHALLENGE_LASTS: Duration = Duration::from_secs(3);
/// Probe nonces remembered per peer (sent to an active node, or received
/// from a standby), to refuse a datagram seen before.
const REMEMBERED: usize = 64;
/// Hand-off nonces remembered per sender: more than the messages of any
/// hand-off echoing the probes still remembered.
const HANDOFFS_REMEMBERED: usize = 4096;

/// An active node this node stands by for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The active node.
    pub node: String,
    /// Where its speaker answers probes.
    pub address: SocketAddr,
    /// The IPs this node stands by for on it.
    pub ips: BTreeSet<IpAddr>,
}

/// How the fast path stands towards one active node this node stands by for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Towards {
    /// The active node.
    pub node: String,
    /// Where its speaker is probed.
    pub address: SocketAddr,
    /// How it stands.
    pub reach: Reach,
}

struct Shared {
    /// IPs this node answers for now.
    answering: BTreeSet<IpAddr>,
    /// IPs the NodeAnnouncement makes this node active for (answered or not:
    /// a starting speaker holds them back for a moment).
    spec_active: BTreeSet<IpAddr>,
    /// The takeover decisions: which active nodes are followed, what was
    /// heard from them, what was taken.
    tracker: Tracker,
    /// Where each followed node's speaker is probed.
    addresses: BTreeMap<String, SocketAddr>,
    /// The last probes sent to each followed node.
    sent: BTreeMap<String, VecDeque<Sent>>,
    /// The latest challenge each followed node sent, for the next probes.
    challenge_from: BTreeMap<String, u64>,
    /// Challenges sent to each standby in replies, newest last.
    challenges: BTreeMap<String, VecDeque<Challenge>>,
    /// Probe nonces received from each standby, newest last.
    probed: BTreeMap<String, VecDeque<u64>>,
    /// Hand-off nonces received from each active node, newest last.
    handoffs: BTreeMap<String, VecDeque<u64>>,
    /// IPs a standby told us it took: not answered for while it keeps
    /// saying so, until the operator moves them.
    yielded: Yields,
    /// Standbys probing us: node → (address, its last probe's nonce, when).
    standbys: BTreeMap<String, (SocketAddr, u64, Instant)>,
    /// The standbys this node's NodeAnnouncement names, and the address
    /// each answers at: a probe's takeover claims count only from the
    /// address of the standby it names (a node cannot claim as another).
    named_standbys: BTreeMap<String, IpAddr>,
    /// Hand-off nonces acknowledged.
    acknowledged: BTreeSet<u64>,
}

/// A challenge sent to a standby, and the probes whose claims echoed it:
/// each probe's claims count once.
#[derive(Clone, Debug)]
struct Challenge {
    value: u64,
    at: std::time::Instant,
    used: BTreeSet<u64>,
}

/// The challenge to send a standby now: the current one, or a new one when
/// it is a second old; those past [`CHALLENGE_LASTS`] are forgotten.
fn challenge(issued: &mut VecDeque<Challenge>, now: std::time::Instant) -> u64 {
    issued.retain(|c| now.saturating_duration_since(c.at) < CHALLENGE_LASTS);
    match issued.back() {
        Some(c) if now.saturating_duration_since(c.at) < CHALLENGE_EVERY => c.value,
        _ => {
            let value = nonce();
            issued.push_back(Challenge {
                value,
                at: now,
                used: BTreeSet::new(),
            });
            value
        }
    }
}

/// Whether a probe's claims count: it echoes a challenge still lasting, and
/// no probe with its nonce echoed it before.
fn challenged(
    issued: &mut VecDeque<Challenge>,
    echo: u64,
    nonce: u64,
    now: std::time::Instant,
) -> bool {
    issued
        .iter_mut()
        .find(|c| c.value == echo && now.saturating_duration_since(c.at) < CHALLENGE_LASTS)
        .is_some_and(|c| c.used.insert(nonce))
}

/// A probe sent, and whether its reply came.
#[derive(Clone, Copy, Debug)]
struct Sent {
    nonce: u64,
    replied: bool,
}

/// Pushes onto a bounded queue, dropping the oldest.
fn remember<T>(queue: &mut VecDeque<T>, item: T, limit: usize) {
    queue.push_back(item);
    while queue.len() > limit {
        queue.pop_front();
    }
}

/// Whether two socket addresses are the same, an IPv4 one and its
/// IPv4-mapped IPv6 form alike.
fn same_address(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

/// Counters for /metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Probes sent.
    pub probes_sent: Counter,
    /// Replies received in time.
    pub replies: Counter,
    /// Takeovers after missed probes.
    pub takeovers: Counter,
    /// Times fast failover towards an active node turned unavailable.
    pub unavailable: Counter,
    /// Active nodes the fast path is unavailable towards now (a gauge).
    pub unavailable_now: Gauge,
    /// IPs received by planned hand-off.
    pub handoffs_received: Counter,
    /// Datagrams refused (bad signature, malformed, stale or replayed).
    pub refused: Counter,
}

impl Counters {
    /// Counts and logs what the tracker decided.
    fn record(&self, decision: &tracker::Decision) {
        for (ip, taken) in &decision.take {
            tracing::warn!(%ip, from = %taken.from, why = %taken.why, "active node silent: taking over");
        }
        for node in &decision.became_unavailable {
            tracing::warn!(active = %node, "fast failover unavailable: no takeover from this node until it answers probes");
        }
        self.takeovers.inc_by(decision.take.len() as u64);
        self.unavailable
            .inc_by(decision.became_unavailable.len() as u64);
    }
}

/// The fast path of one speaker.
pub struct Failover {
    node: String,
    key: Key,
    settings: Settings,
    socket: Arc<UdpSocket>,
    v6: bool,
    shared: Arc<Mutex<Shared>>,
    changed: Arc<Notify>,
    /// Counters.
    pub counters: Arc<Counters>,
    /// Where this speaker answers probes (`ip:port`), for the operator.
    pub address: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Failover {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn nonce() -> u64 {
    let mut bytes = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("system randomness");
    u64::from_be_bytes(bytes)
}

/// Binds the probe socket on every address of the node, IPv6 and IPv4 alike
/// (an IPv6 socket that also takes IPv4), inside `netns` when given; a node
/// with IPv6 turned off gets an IPv4 one. Returns whether it is IPv6.
fn bind(netns: Option<PathBuf>, port: u16) -> io::Result<(std::net::UdpSocket, bool)> {
    crate::netns::run_in(netns, move || {
        let dual = || -> io::Result<std::net::UdpSocket> {
            let socket = socket2::Socket::new(
                socket2::Domain::IPV6,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )?;
            socket.set_only_v6(false)?;
            socket.bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)).into())?;
            Ok(socket.into())
        };
        let (socket, v6) = match dual() {
            Ok(socket) => (socket, true),
            Err(_) => (std::net::UdpSocket::bind(("0.0.0.0", port))?, false),
        };
        socket.set_nonblocking(true)?;
        Ok((socket, v6))
    })
}

/// Where to send to `address` on a socket of the given family: an IPv4
/// address through an IPv6 socket is written as IPv4-mapped.
fn destination(address: SocketAddr, v6: bool) -> SocketAddr {
    match address {
        SocketAddr::V4(v4) if v6 => SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port())),
        other => other,
    }
}

impl Failover {
    /// Starts answering probes on `address` (its port is bound on every
    /// address of the node) and probing the targets set later. `changed` is
    /// poked whenever IPs are taken or yielded.
    pub fn start(
        node: String,
        netns: Option<PathBuf>,
        address: SocketAddr,
        key: Key,
        settings: Settings,
        changed: Arc<Notify>,
        counters: Arc<Counters>,
    ) -> io::Result<Failover> {
        let (socket, v6) = bind(netns, address.port())?;
        let socket = Arc::new(UdpSocket::from_std(socket)?);
        let shared = Shared {
            answering: BTreeSet::new(),
            spec_active: BTreeSet::new(),
            tracker: Tracker::new(settings),
            addresses: BTreeMap::new(),
            sent: BTreeMap::new(),
            challenge_from: BTreeMap::new(),
            challenges: BTreeMap::new(),
            probed: BTreeMap::new(),
            handoffs: BTreeMap::new(),
            yielded: Yields::new(settings),
            standbys: BTreeMap::new(),
            named_standbys: BTreeMap::new(),
            acknowledged: BTreeSet::new(),
        };
        let mut failover = Failover {
            node,
            key,
            settings,
            socket,
            v6,
            shared: Arc::new(Mutex::new(shared)),
            changed,
            counters,
            address,
            tasks: Vec::new(),
        };
        let receive = tokio::spawn(failover.clone_parts().receive());
        let probe = tokio::spawn(failover.clone_parts().probe());
        failover.tasks = vec![receive, probe];
        Ok(failover)
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn clone_parts(&self) -> Parts {
        Parts {
            node: self.node.clone(),
            key: self.key.clone(),
            settings: self.settings,
            socket: self.socket.clone(),
            v6: self.v6,
            shared: self.shared.clone(),
            changed: self.changed.clone(),
            counters: self.counters.clone(),
        }
    }

    /// The active nodes to follow, from the NodeAnnouncement's standby
    /// entries. Taken IPs this node no longer stands by for (the operator made
    /// them official, or moved them elsewhere) are forgotten.
    pub fn set_targets(&self, targets: &[Target]) {
        let mut guard = self.shared.lock().expect("failover lock");
        let shared = &mut *guard;
        let wanted: BTreeMap<String, BTreeSet<IpAddr>> = targets
            .iter()
            .map(|t| (t.node.clone(), t.ips.clone()))
            .collect();
        let moved: BTreeSet<String> = targets
            .iter()
            .filter(|t| {
                shared
                    .addresses
                    .get(&t.node)
                    .is_some_and(|a| *a != t.address)
            })
            .map(|t| t.node.clone())
            .collect();
        shared
            .tracker
            .follow(&wanted, &moved, std::time::Instant::now());
        shared.addresses = targets
            .iter()
            .map(|t| (t.node.clone(), t.address))
            .collect();
        shared.sent.retain(|node, _| wanted.contains_key(node));
        shared
            .challenge_from
            .retain(|node, _| wanted.contains_key(node) && !moved.contains(node));
    }

    /// The Lease renewal time of an active node this node stands by for, as
    /// the apiserver shows it (looked at while the node is silent). Pokes
    /// `changed` when the node turns out alive (the status says so).
    pub fn lease_seen(&self, node: &str, renew: &str) {
        let decision = self
            .shared
            .lock()
            .expect("failover lock")
            .tracker
            .lease_seen(node, renew, std::time::Instant::now());
        self.counters.record(&decision);
        if !decision.is_empty() {
            self.changed.notify_one();
        }
    }

    /// Active nodes heard once and silent now: their Leases tell a dead node
    /// from a cut probe path.
    pub fn suspects(&self) -> Vec<String> {
        self.shared
            .lock()
            .expect("failover lock")
            .tracker
            .suspects(std::time::Instant::now())
    }

    /// How the fast path stands towards each active node this node stands
    /// by for.
    pub fn towards(&self) -> Vec<Towards> {
        let shared = self.shared.lock().expect("failover lock");
        shared
            .tracker
            .reports(std::time::Instant::now())
            .into_iter()
            .filter_map(|report| {
                Some(Towards {
                    address: *shared.addresses.get(&report.node)?,
                    node: report.node,
                    reach: report.reach,
                })
            })
            .collect()
    }

    /// The IPs this node answers for now, and the ones its NodeAnnouncement
    /// makes it active for (a yielded IP is forgotten once the spec drops it).
    pub fn set_answering(&self, answering: &BTreeSet<IpAddr>, spec_active: &BTreeSet<IpAddr>) {
        let mut shared = self.shared.lock().expect("failover lock");
        shared.answering = answering.clone();
        shared.spec_active = spec_active.clone();
        shared.yielded.keep_only(spec_active);
    }

    /// Another node announced `ip` with a gratuitous ARP from `mac`: a
    /// standby took it over. Yielded as a claim in its probes is, when this
    /// node is active for it and did not take it itself (a taker never
    /// yields to the node it took from); returns whether that is new.
    pub fn claimed_on_wire(&self, ip: IpAddr, mac: &str) -> bool {
        let mut guard = self.shared.lock().expect("failover lock");
        let shared = &mut *guard;
        let ours = (shared.answering.contains(&ip) || shared.spec_active.contains(&ip))
            && !shared.tracker.taken().contains_key(&ip);
        let by = format!("the node at {mac}");
        let new = shared
            .yielded
            .claimed(ip, &by, ours, std::time::Instant::now());
        if new {
            tracing::warn!(%ip, %by, "another node announced this IP (a takeover this node's fast failover did not hear): yielding it while it says so");
        }
        new
    }

    /// The standbys the NodeAnnouncement names for this node's active IPs,
    /// with where each answers (its probe address).
    pub fn set_standbys(&self, standbys: &BTreeMap<String, SocketAddr>) {
        self.shared.lock().expect("failover lock").named_standbys = standbys
            .iter()
            .map(|(node, address)| (node.clone(), address.ip().to_canonical()))
            .collect();
    }

    /// IPs taken over and not yet made official.
    pub fn taken(&self) -> BTreeMap<IpAddr, Taken> {
        self.shared
            .lock()
            .expect("failover lock")
            .tracker
            .taken()
            .clone()
    }

    /// IPs yielded to the standby that took them.
    pub fn yielded(&self) -> BTreeMap<IpAddr, String> {
        self.shared.lock().expect("failover lock").yielded.view()
    }

    /// Hands `ips` to their standbys at the addresses the NodeAnnouncement
    /// gives (`named`), in messages of at most [`wire::CHUNK`] IPs, each
    /// echoing the standby's latest probe, waiting at most `wait` for them to
    /// acknowledge; returns the IPs acknowledged.
    pub async fn handoff(
        &self,
        ips: &BTreeSet<IpAddr>,
        named: &BTreeMap<IpAddr, SocketAddr>,
        wait: Duration,
    ) -> BTreeSet<IpAddr> {
        let mut by_address: BTreeMap<SocketAddr, BTreeSet<IpAddr>> = BTreeMap::new();
        for (ip, address) in named {
            if ips.contains(ip) {
                by_address.entry(*address).or_default().insert(*ip);
            }
        }
        // What each standby probed with last: a hand-off echoes it.
        let echoes: Vec<(SocketAddr, u64)> = {
            let shared = self.shared.lock().expect("failover lock");
            shared
                .standbys
                .values()
                .filter(|(_, _, heard)| heard.elapsed() < Duration::from_secs(5))
                .map(|(address, nonce, _)| (*address, *nonce))
                .collect()
        };
        let mut recipients: Vec<(SocketAddr, Vec<IpAddr>, u64, u64)> = Vec::new();
        for (address, theirs) in by_address {
            let Some(echo) = echoes
                .iter()
                .find(|(from, _)| same_address(*from, address))
                .map(|(_, nonce)| *nonce)
            else {
                tracing::info!(%address, "no recent probe from this standby: no hand-off to it");
                continue;
            };
            let theirs: Vec<IpAddr> = theirs.into_iter().collect();
            for part in wire::chunks(&theirs) {
                if !part.is_empty() {
                    recipients.push((address, part, nonce(), echo));
                }
            }
        }
        let deadline = Instant::now() + wait;
        let mut handed = BTreeSet::new();
        let mut pending = recipients;
        while !pending.is_empty() && Instant::now() < deadline {
            for (address, ips, nonce, echo) in &pending {
                let message = Message {
                    kind: Kind::Handoff,
                    nonce: *nonce,
                    echo: *echo,
                    node: self.node.clone(),
                    ips: ips.clone(),
                    taken: Vec::new(),
                };
                let _ = self
                    .socket
                    .send_to(
                        &wire::encode(&self.key, &message),
                        destination(*address, self.v6),
                    )
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            let acknowledged = self
                .shared
                .lock()
                .expect("failover lock")
                .acknowledged
                .clone();
            pending.retain(|(_, ips, nonce, _)| {
                if acknowledged.contains(nonce) {
                    handed.extend(ips.iter().copied());
                    false
                } else {
                    true
                }
            });
            // Done once every IP is with someone (a node that probed us
            // earlier but stands by for nothing of ours now never answers).
            pending.retain(|(_, ips, _, _)| ips.iter().any(|ip| !handed.contains(ip)));
        }
        handed
    }
}

/// What the background tasks share.
struct Parts {
    node: String,
    key: Key,
    settings: Settings,
    socket: Arc<UdpSocket>,
    v6: bool,
    shared: Arc<Mutex<Shared>>,
    changed: Arc<Notify>,
    counters: Arc<Counters>,
}

impl Parts {
    fn send(
        &self,
        kind: Kind,
        nonce: u64,
        echo: u64,
        ips: Vec<IpAddr>,
        taken: Vec<IpAddr>,
    ) -> Vec<u8> {
        wire::encode(
            &self.key,
            &Message {
                kind,
                nonce,
                echo,
                node: self.node.clone(),
                ips,
                taken,
            },
        )
    }

    async fn receive(self) {
        let mut buffer = vec![0u8; wire::MAX];
        loop {
            let Ok((len, from)) = self.socket.recv_from(&mut buffer).await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let message = match wire::decode(&self.key, &buffer[..len]) {
                Ok(m) if m.node != self.node => m,
                Ok(_) => continue,
                Err(why) => {
                    self.counters.refused.inc();
                    tracing::debug!(%from, ?why, "failover datagram refused");
                    continue;
                }
            };
            let mut answer = None;
            let mut changed = false;
            {
                let mut guard = self.shared.lock().expect("failover lock");
                let shared = &mut *guard;
                let refused = match message.kind {
                    Kind::Probe => {
                        let probed = shared.probed.entry(message.node.clone()).or_default();
                        if probed.contains(&message.nonce) {
                            true
                        } else {
                            remember(probed, message.nonce, REMEMBERED);
                            false
                        }
                    }
                    // A reply comes from where the probe went and answers a
                    // probe of ours not answered yet.
                    Kind::Reply => {
                        let from_target = shared
                            .addresses
                            .get(&message.node)
                            .is_some_and(|a| same_address(*a, from));
                        let probe = shared.sent.get_mut(&message.node).and_then(|sent| {
                            sent.iter_mut()
                                .find(|s| s.nonce == message.nonce && !s.replied)
                        });
                        match probe {
                            Some(probe) if from_target => {
                                probe.replied = true;
                                false
                            }
                            _ => true,
                        }
                    }
                    // A hand-off echoes one of our recent probes to its
                    // sender, and each is taken once.
                    Kind::Handoff => {
                        let recent = shared
                            .sent
                            .get(&message.node)
                            .is_some_and(|sent| sent.iter().any(|s| s.nonce == message.echo));
                        let seen = shared.handoffs.entry(message.node.clone()).or_default();
                        if !recent || seen.contains(&message.nonce) {
                            true
                        } else {
                            remember(seen, message.nonce, HANDOFFS_REMEMBERED);
                            false
                        }
                    }
                    Kind::HandoffAck => false,
                };
                if refused {
                    self.counters.refused.inc();
                    tracing::debug!(%from, kind = ?message.kind, node = %message.node, "failover datagram refused: a replay, or not an answer to anything sent");
                    continue;
                }
                match message.kind {
                    Kind::Probe => {
                        shared
                            .standbys
                            .insert(message.node.clone(), (from, message.nonce, Instant::now()));
                        // Its takeover claims count only with a challenge we
                        // sent it lately (each usable once).
                        // From the address of the standby it names: one
                        // node cannot claim as another.
                        let bound = shared
                            .named_standbys
                            .get(&message.node)
                            .is_some_and(|ip| *ip == from.ip().to_canonical());
                        if !message.taken.is_empty() && !bound {
                            tracing::debug!(by = %message.node, %from, "takeover claims from an address that is not this standby's: answered, not honoured");
                        }
                        let challenged = !message.taken.is_empty()
                            && bound
                            && shared.challenges.get_mut(&message.node).is_some_and(|c| {
                                challenged(
                                    c,
                                    message.echo,
                                    message.nonce,
                                    std::time::Instant::now(),
                                )
                            });
                        if !message.taken.is_empty() && !challenged {
                            tracing::debug!(by = %message.node, "takeover claims without a fresh challenge: answered, not yet honoured");
                        }
                        let now = std::time::Instant::now();
                        for ip in message.taken.iter().filter(|_| challenged) {
                            let ours = (shared.answering.contains(ip)
                                || shared.spec_active.contains(ip))
                                && !shared.tracker.taken().contains_key(ip);
                            if shared.yielded.claimed(*ip, &message.node, ours, now) {
                                tracing::warn!(%ip, by = %message.node, "a standby took this IP over: yielding it while it says so");
                                changed = true;
                            }
                        }
                        let challenge = challenge(
                            shared.challenges.entry(message.node.clone()).or_default(),
                            std::time::Instant::now(),
                        );
                        answer = Some(self.send(
                            Kind::Reply,
                            message.nonce,
                            challenge,
                            Vec::new(),
                            Vec::new(),
                        ));
                    }
                    Kind::Reply => {
                        shared
                            .challenge_from
                            .insert(message.node.clone(), message.echo);
                        changed |= shared
                            .tracker
                            .answered(&message.node, std::time::Instant::now());
                        self.counters.replies.inc();
                    }
                    Kind::Handoff => {
                        // Acknowledge only what this node can take: an
                        // unacknowledged hand-off leaves the IP with the
                        // sender until the probes find it gone.
                        let acknowledge = shared.tracker.stands_by(&message.node, &message.ips);
                        for ip in shared.tracker.handed_over(&message.node, &message.ips) {
                            tracing::info!(%ip, from = %message.node, "handed over: taking it");
                            self.counters.handoffs_received.inc();
                            changed = true;
                        }
                        if acknowledge {
                            answer = Some(self.send(
                                Kind::HandoffAck,
                                message.nonce,
                                0,
                                Vec::new(),
                                Vec::new(),
                            ));
                        }
                    }
                    Kind::HandoffAck => {
                        shared.acknowledged.insert(message.nonce);
                    }
                }
            }
            if changed {
                self.changed.notify_one();
            }
            if let Some(bytes) = answer {
                let _ = self.socket.send_to(&bytes, from).await;
            }
        }
    }

    async fn probe(self) {
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Whether the last probes went out: when this node's own link is
        // down they cannot, and the silence of the others means nothing.
        let mut network_ok = true;
        loop {
            tick.tick().await;
            let mut outgoing = Vec::new();
            let changed;
            {
                let mut guard = self.shared.lock().expect("failover lock");
                let shared = &mut *guard;
                if !network_ok {
                    shared.tracker.own_network_down(std::time::Instant::now());
                }
                let now = std::time::Instant::now();
                let decision = shared.tracker.tick(now);
                self.counters.record(&decision);
                let given_back = shared.yielded.lapse(now);
                for ip in &given_back {
                    tracing::warn!(%ip, "the node that took this IP over no longer claims it: answering again");
                }
                changed = !decision.is_empty() || !given_back.is_empty();
                self.counters
                    .unavailable_now
                    .set(shared.tracker.unavailable() as i64);
                for (node, _, taken) in shared.tracker.probes() {
                    let Some(address) = shared.addresses.get(&node).copied() else {
                        continue;
                    };
                    let echo = shared.challenge_from.get(&node).copied().unwrap_or(0);
                    let taken: Vec<IpAddr> = taken.into_iter().collect();
                    // Any number of taken IPs: one probe per chunk.
                    for part in wire::chunks(&taken) {
                        let n = nonce();
                        remember(
                            shared.sent.entry(node.clone()).or_default(),
                            Sent {
                                nonce: n,
                                replied: false,
                            },
                            REMEMBERED,
                        );
                        outgoing.push((address, self.send(Kind::Probe, n, echo, Vec::new(), part)));
                    }
                }
            }
            if changed {
                self.changed.notify_one();
            }
            let mut sent_all = true;
            for (address, bytes) in outgoing {
                match self
                    .socket
                    .send_to(&bytes, destination(address, self.v6))
                    .await
                {
                    Ok(_) => {
                        self.counters.probes_sent.inc();
                    }
                    // Our own link down (no route, network down), not a
                    // silent peer (host unreachable is its problem).
                    Err(e)
                        if matches!(e.raw_os_error(), Some(libc::ENETDOWN | libc::ENETUNREACH)) =>
                    {
                        if network_ok {
                            tracing::warn!(error = %e, "cannot send probes: this node's network is down; no takeover until it is back");
                        }
                        sent_all = false;
                    }
                    Err(e) => tracing::debug!(error = %e, %address, "probe not sent"),
                }
            }
            network_ok = sent_all;
        }
    }
}
