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
//! Every message is signed with the cluster's failover key (see [`wire`]).

pub mod wire;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use wire::{Key, Kind, Message};

/// How messages older or newer than this (by the sender's clock) are refused:
/// an old signed message replayed cannot take or yield an IP.
const FRESH: Duration = Duration::from_secs(30);
/// Nonces remembered per sender, to refuse a replay inside the window.
const REMEMBERED: usize = 256;

/// Fast-path settings.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Probe every this long.
    pub interval: Duration,
    /// Take over after this many intervals without an answer.
    pub misses: u32,
}

impl Settings {
    /// How long a silent active node gets before the standby takes over.
    pub fn deadline(&self) -> Duration {
        self.interval * self.misses
    }
}

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

/// An IP this node took over before the operator made it official.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    /// The node it was taken from.
    pub from: String,
    /// Why, for people.
    pub why: String,
    /// When.
    pub since: SystemTime,
}

struct Following {
    address: SocketAddr,
    ips: BTreeSet<IpAddr>,
    heard: Instant,
    nonces: VecDeque<u64>,
}

#[derive(Default)]
struct Shared {
    /// IPs this node answers for now.
    answering: BTreeSet<IpAddr>,
    /// IPs the NodeAnnouncement makes this node active for (answered or not:
    /// a starting speaker holds them back for a moment).
    spec_active: BTreeSet<IpAddr>,
    /// Active nodes this node stands by for.
    following: BTreeMap<String, Following>,
    /// IPs taken over from a silent or departing active node.
    taken: BTreeMap<IpAddr, Taken>,
    /// IPs a standby told us it took: not answered for until the operator moves them.
    yielded: BTreeMap<IpAddr, String>,
    /// Standbys probing us: node → (address, IPs, last heard).
    standbys: BTreeMap<String, (SocketAddr, BTreeSet<IpAddr>, Instant)>,
    /// Hand-off nonces acknowledged.
    acknowledged: BTreeSet<u64>,
    /// Recent nonces per sender.
    seen: BTreeMap<String, VecDeque<u64>>,
}

/// Counters for /metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Probes sent.
    pub probes_sent: AtomicU64,
    /// Replies received in time.
    pub replies: AtomicU64,
    /// Takeovers after missed probes.
    pub takeovers: AtomicU64,
    /// IPs received by planned hand-off.
    pub handoffs_received: AtomicU64,
    /// Datagrams refused (bad signature, malformed, stale or replayed).
    pub refused: AtomicU64,
}

/// The fast path of one speaker.
pub struct Failover {
    node: String,
    key: Key,
    settings: Settings,
    socket: Arc<UdpSocket>,
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn nonce() -> u64 {
    let mut bytes = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("system randomness");
    u64::from_be_bytes(bytes)
}

/// Binds the probe socket, inside `netns` when given.
fn bind(netns: Option<PathBuf>, port: u16) -> io::Result<std::net::UdpSocket> {
    let make = move || -> io::Result<std::net::UdpSocket> {
        if let Some(path) = &netns {
            let file = std::fs::File::open(path)?;
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(io::Error::from)?;
        }
        let socket = std::net::UdpSocket::bind(("0.0.0.0", port))?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    };
    std::thread::spawn(make)
        .join()
        .map_err(|_| io::Error::other("the socket thread panicked"))?
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
    ) -> io::Result<Failover> {
        let socket = Arc::new(UdpSocket::from_std(bind(netns, address.port())?)?);
        let mut failover = Failover {
            node,
            key,
            settings,
            socket,
            shared: Arc::default(),
            changed,
            counters: Arc::default(),
            address,
            tasks: Vec::new(),
        };
        let receive = tokio::spawn(failover.clone_parts().receive());
        let probe = tokio::spawn(failover.clone_parts().probe());
        failover.tasks = vec![receive, probe];
        Ok(failover)
    }

    fn clone_parts(&self) -> Parts {
        Parts {
            node: self.node.clone(),
            key: self.key.clone(),
            settings: self.settings,
            socket: self.socket.clone(),
            shared: self.shared.clone(),
            changed: self.changed.clone(),
            counters: self.counters.clone(),
        }
    }

    /// The active nodes to follow, from the NodeAnnouncement's standby
    /// entries. Taken IPs this node no longer stands by for (the operator made
    /// them official, or moved them elsewhere) are forgotten.
    pub fn set_targets(&self, targets: &[Target]) {
        let mut shared = self.shared.lock().expect("failover lock");
        let now = Instant::now();
        let wanted: BTreeMap<&str, &Target> =
            targets.iter().map(|t| (t.node.as_str(), t)).collect();
        shared
            .following
            .retain(|node, _| wanted.contains_key(node.as_str()));
        for target in targets {
            let entry = shared
                .following
                .entry(target.node.clone())
                .or_insert_with(|| Following {
                    address: target.address,
                    ips: BTreeSet::new(),
                    heard: now,
                    nonces: VecDeque::new(),
                });
            if entry.address != target.address {
                entry.address = target.address;
                entry.heard = now;
            }
            entry.ips = target.ips.clone();
        }
        shared.taken.retain(|ip, taken| {
            wanted
                .get(taken.from.as_str())
                .is_some_and(|t| t.ips.contains(ip))
        });
    }

    /// The IPs this node answers for now, and the ones its NodeAnnouncement
    /// makes it active for (a yielded IP is forgotten once the spec drops it).
    pub fn set_answering(&self, answering: &BTreeSet<IpAddr>, spec_active: &BTreeSet<IpAddr>) {
        let mut shared = self.shared.lock().expect("failover lock");
        shared.answering = answering.clone();
        shared.spec_active = spec_active.clone();
        shared.yielded.retain(|ip, _| spec_active.contains(ip));
    }

    /// IPs taken over and not yet made official.
    pub fn taken(&self) -> BTreeMap<IpAddr, Taken> {
        self.shared.lock().expect("failover lock").taken.clone()
    }

    /// IPs yielded to the standby that took them.
    pub fn yielded(&self) -> BTreeMap<IpAddr, String> {
        self.shared.lock().expect("failover lock").yielded.clone()
    }

    /// Hands `ips` to their standbys — at the addresses the NodeAnnouncement
    /// gives (`named`), and to any standby that probed for them — waiting at
    /// most `wait` for them to acknowledge; returns the IPs acknowledged.
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
        {
            let shared = self.shared.lock().expect("failover lock");
            for (address, theirs, heard) in shared.standbys.values() {
                if heard.elapsed() < Duration::from_secs(5) {
                    by_address
                        .entry(*address)
                        .or_default()
                        .extend(theirs.intersection(ips).copied());
                }
            }
        }
        let recipients: Vec<(SocketAddr, Vec<IpAddr>, u64)> = by_address
            .into_iter()
            .filter(|(_, ips)| !ips.is_empty())
            .map(|(address, ips)| (address, ips.into_iter().collect(), nonce()))
            .collect();
        let deadline = Instant::now() + wait;
        let mut handed = BTreeSet::new();
        let mut pending = recipients;
        while !pending.is_empty() && Instant::now() < deadline {
            for (address, ips, nonce) in &pending {
                let message = Message {
                    kind: Kind::Handoff,
                    nonce: *nonce,
                    sent_ms: now_ms(),
                    node: self.node.clone(),
                    ips: ips.clone(),
                    taken: Vec::new(),
                };
                let _ = self
                    .socket
                    .send_to(&wire::encode(&self.key, &message), address)
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            let acknowledged = self
                .shared
                .lock()
                .expect("failover lock")
                .acknowledged
                .clone();
            pending.retain(|(_, ips, nonce)| {
                if acknowledged.contains(nonce) {
                    handed.extend(ips.iter().copied());
                    false
                } else {
                    true
                }
            });
            // Done once every IP is with someone (a node that probed us
            // earlier but stands by for nothing of ours now never answers).
            pending.retain(|(_, ips, _)| ips.iter().any(|ip| !handed.contains(ip)));
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
    shared: Arc<Mutex<Shared>>,
    changed: Arc<Notify>,
    counters: Arc<Counters>,
}

impl Parts {
    fn send(&self, kind: Kind, nonce: u64, ips: Vec<IpAddr>, taken: Vec<IpAddr>) -> Vec<u8> {
        wire::encode(
            &self.key,
            &Message {
                kind,
                nonce,
                sent_ms: now_ms(),
                node: self.node.clone(),
                ips,
                taken,
            },
        )
    }

    /// Whether a message is fresh and not a replay.
    fn fresh(shared: &mut Shared, message: &Message) -> bool {
        let now = now_ms();
        if now.abs_diff(message.sent_ms) > FRESH.as_millis() as u64 {
            return false;
        }
        let seen = shared.seen.entry(message.node.clone()).or_default();
        if seen.contains(&message.nonce) {
            return false;
        }
        seen.push_back(message.nonce);
        if seen.len() > REMEMBERED {
            seen.pop_front();
        }
        true
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
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%from, ?why, "failover datagram refused");
                    continue;
                }
            };
            let mut answer = None;
            let mut changed = false;
            {
                let mut shared = self.shared.lock().expect("failover lock");
                if !Self::fresh(&mut shared, &message) {
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                match message.kind {
                    Kind::Probe => {
                        let ips: BTreeSet<IpAddr> = message.ips.iter().copied().collect();
                        shared
                            .standbys
                            .insert(message.node.clone(), (from, ips.clone(), Instant::now()));
                        for ip in &message.taken {
                            let ours =
                                shared.answering.contains(ip) || shared.spec_active.contains(ip);
                            if ours
                                && !shared.yielded.contains_key(ip)
                                && !shared.taken.contains_key(ip)
                            {
                                tracing::warn!(%ip, by = %message.node, "a standby took this IP over: yielding it");
                                shared.yielded.insert(*ip, message.node.clone());
                                changed = true;
                            }
                        }
                        let held: Vec<IpAddr> = ips
                            .iter()
                            .filter(|ip| {
                                shared.answering.contains(ip) && !shared.yielded.contains_key(ip)
                            })
                            .copied()
                            .collect();
                        answer = Some(self.send(Kind::Reply, message.nonce, held, Vec::new()));
                    }
                    Kind::Reply => {
                        if let Some(following) = shared.following.get_mut(&message.node)
                            && following.nonces.contains(&message.nonce)
                        {
                            following.heard = Instant::now();
                            self.counters.replies.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Kind::Handoff => {
                        let ours: Vec<IpAddr> = shared
                            .following
                            .get(&message.node)
                            .map(|f| {
                                message
                                    .ips
                                    .iter()
                                    .filter(|ip| f.ips.contains(ip))
                                    .copied()
                                    .collect()
                            })
                            .unwrap_or_default();
                        // Acknowledge only what this node can take: an
                        // unacknowledged hand-off leaves the IP with the
                        // sender until the probes find it gone.
                        let acknowledge = !ours.is_empty();
                        for ip in ours {
                            if let std::collections::btree_map::Entry::Vacant(slot) =
                                shared.taken.entry(ip)
                            {
                                tracing::info!(%ip, from = %message.node, "handed over: taking it");
                                slot.insert(Taken {
                                    from: message.node.clone(),
                                    why: format!(
                                        "handed over by node {} as it stopped",
                                        message.node
                                    ),
                                    since: SystemTime::now(),
                                });
                                self.counters
                                    .handoffs_received
                                    .fetch_add(1, Ordering::Relaxed);
                                changed = true;
                            }
                        }
                        if acknowledge {
                            answer = Some(self.send(
                                Kind::HandoffAck,
                                message.nonce,
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
        loop {
            tick.tick().await;
            let mut outgoing = Vec::new();
            let mut changed = false;
            {
                let mut guard = self.shared.lock().expect("failover lock");
                let shared = &mut *guard;
                for (node, following) in shared.following.iter_mut() {
                    let silent = following.heard.elapsed();
                    if silent > self.settings.deadline() {
                        for ip in &following.ips {
                            if !shared.taken.contains_key(ip) {
                                tracing::warn!(%ip, from = %node, silent_ms = silent.as_millis() as u64, "active node silent: taking over");
                                shared.taken.insert(
                                    *ip,
                                    Taken {
                                        from: node.clone(),
                                        why: format!(
                                            "node {node} did not answer {} probes ({} ms)",
                                            self.settings.misses,
                                            self.settings.deadline().as_millis()
                                        ),
                                        since: SystemTime::now(),
                                    },
                                );
                                self.counters.takeovers.fetch_add(1, Ordering::Relaxed);
                                changed = true;
                            }
                        }
                    }
                    let taken: Vec<IpAddr> = following
                        .ips
                        .iter()
                        .filter(|ip| shared.taken.get(ip).is_some_and(|t| &t.from == node))
                        .copied()
                        .collect();
                    let n = nonce();
                    following.nonces.push_back(n);
                    if following.nonces.len() > 16 {
                        following.nonces.pop_front();
                    }
                    outgoing.push((
                        following.address,
                        self.send(
                            Kind::Probe,
                            n,
                            following.ips.iter().copied().collect(),
                            taken,
                        ),
                    ));
                }
            }
            if changed {
                self.changed.notify_one();
            }
            for (address, bytes) in outgoing {
                if self.socket.send_to(&bytes, address).await.is_ok() {
                    self.counters.probes_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
