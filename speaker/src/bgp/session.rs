//! One BGP session: connect (with TCP-MD5, TTL and source address as set),
//! exchange OPENs, keep the session alive, advertise the session's routes and
//! follow their changes, and reconnect with back-off when anything fails. Routes
//! the peer sends are ignored. Malformed input from the peer closes only this
//! session, after the NOTIFICATION its error calls for.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferrolb_api::nodeannouncement::BgpState;
use futures::{SinkExt, StreamExt};
use ipnet::IpNet;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::codec::{BgpCodec, BgpCodecDecoderError};
use netgauze_bgp_pkt::notification::BgpNotificationMessage;
use netgauze_bgp_pkt::wire::deserializer::BgpParsingIgnoredErrors;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::Framed;

use ferrolb_api::nodeannouncement::BfdSettings;

use crate::bfd::socket::Status as BfdStatus;

use super::config::{Attributes, Peer, Routes};
use super::fsm::{Action, Event, Fsm};
use super::md5;
use super::message::{self, Family, Local, Negotiated, Sender};

pub use super::fsm::Stop;

/// What a session reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// RFC 4271 state.
    pub state: BgpState,
    /// When `state` was entered.
    pub since: std::time::SystemTime,
    /// Prefixes the peer holds from us.
    pub prefixes: usize,
    /// The last failure, for people.
    pub last_error: Option<String>,
    /// While established: the families this session carries but does not
    /// send, and why (the peer does not offer one, or no next hop of it).
    pub unsent: Option<String>,
    /// UPDATEs sent.
    pub updates_sent: u64,
    /// UPDATEs received (and ignored).
    pub updates_received: u64,
    /// NOTIFICATIONs sent.
    pub notifications_sent: u64,
    /// NOTIFICATIONs received.
    pub notifications_received: u64,
    /// Received UPDATEs with a malformed attribute handled as RFC 7606's
    /// treat-as-withdraw (received routes are ignored anyway).
    pub attribute_errors: u64,
}

impl Default for Status {
    fn default() -> Status {
        Status {
            state: BgpState::Idle,
            since: std::time::SystemTime::now(),
            prefixes: 0,
            last_error: None,
            unsent: None,
            updates_sent: 0,
            updates_received: 0,
            notifications_sent: 0,
            notifications_received: 0,
            attribute_errors: 0,
        }
    }
}

/// Looks up a TCP-MD5 password.
pub type Passwords = Arc<
    dyn Fn(
            ferrolb_api::bgppeer::SecretKeyRef,
        ) -> futures::future::BoxFuture<'static, Result<Vec<u8>, String>>
        + Send
        + Sync,
>;

/// What every session on a node shares.
#[derive(Clone)]
pub struct Context {
    /// The node's network namespace, for tests that run nodes as namespaces.
    pub netns: Option<PathBuf>,
    /// Reads passwords.
    pub passwords: Passwords,
    /// Poked whenever any session's status changes.
    pub changed: Arc<Notify>,
    /// The node's BFD sockets.
    pub bfd: crate::bfd::socket::Bfd,
}

/// A running session.
pub struct Handle {
    /// How it connects.
    pub peer: Peer,
    routes: watch::Sender<Routes>,
    bfd: watch::Sender<Option<BfdSettings>>,
    bfd_status: watch::Receiver<Option<BfdStatus>>,
    status: watch::Receiver<Status>,
    stop: watch::Sender<Option<Stop>>,
    task: JoinHandle<()>,
}

impl Handle {
    /// Starts a session.
    pub fn start(peer: Peer, routes: Routes, bfd: Option<BfdSettings>, context: Context) -> Handle {
        let (routes_tx, routes_rx) = watch::channel(routes);
        let (status_tx, status_rx) = watch::channel(Status::default());
        let (stop_tx, stop_rx) = watch::channel(None);
        let (bfd_tx, bfd_rx) = watch::channel(bfd);
        let (bfd_status_tx, bfd_status_rx) = watch::channel(None);
        tokio::spawn(crate::bgp::bfd::guard(
            peer.clone(),
            bfd_rx,
            bfd_status_tx,
            context.clone(),
        ));
        let task = tokio::spawn(run(
            peer.clone(),
            routes_rx,
            stop_rx,
            status_tx,
            bfd_status_rx.clone(),
            context,
        ));
        Handle {
            peer,
            routes: routes_tx,
            bfd: bfd_tx,
            bfd_status: bfd_status_rx,
            status: status_rx,
            stop: stop_tx,
            task,
        }
    }

    /// Changes what the session advertises.
    pub fn set_routes(&self, routes: Routes) {
        self.routes.send_if_modified(|current| {
            let changed = *current != routes;
            *current = routes;
            changed
        });
    }

    /// Changes the BFD settings: a profile's timers change on the running
    /// BFD session (a Poll Sequence), anything else starts it again.
    pub fn set_bfd(&self, bfd: Option<BfdSettings>) {
        self.bfd.send_if_modified(|current| {
            let changed = *current != bfd;
            *current = bfd;
            changed
        });
    }

    /// The BFD session's state, when the session has one.
    pub fn bfd_status(&self) -> Option<BfdStatus> {
        self.bfd_status.borrow().clone()
    }

    /// Follows the session's status.
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// The session's status now.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Ends the session (dropping a handle ends it too, as de-configured) and waits (at most `grace`) for its goodbye to be sent.
    pub async fn stop(self, why: Stop, grace: Duration) {
        let _ = self.stop.send(Some(why));
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
        }
    }
}

struct Reporter {
    status: watch::Sender<Status>,
    changed: Arc<Notify>,
}

impl Reporter {
    fn update(&self, f: impl FnOnce(&mut Status)) {
        let mut changed = false;
        self.status.send_modify(|s| {
            let before = s.clone();
            f(s);
            changed = *s != before;
        });
        if changed {
            self.changed.notify_one();
        }
    }
}

/// Opens the TCP connection, inside the node's namespace when set.
async fn connect(peer: &Peer, key: Option<Vec<u8>>, context: &Context) -> io::Result<TcpStream> {
    let target = SocketAddr::new(peer.address, peer.port);
    let ebgp_ttl = if peer.is_ibgp() {
        None
    } else if peer.multihop {
        Some(255)
    } else {
        Some(1)
    };
    let (source, netns) = (peer.source, context.netns.clone());
    let make = move || -> io::Result<socket2::Socket> {
        let domain = socket2::Domain::for_address(target);
        let socket =
            socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        if let Some(key) = &key {
            md5::set_key(&socket, target.ip(), key)?;
        }
        if let Some(ttl) = ebgp_ttl {
            match target {
                SocketAddr::V4(_) => socket.set_ttl_v4(ttl)?,
                SocketAddr::V6(_) => socket.set_unicast_hops_v6(ttl)?,
            }
        }
        if let Some(source) = source {
            socket.bind(&SocketAddr::new(source, 0).into())?;
        }
        Ok(socket)
    };
    let socket = if netns.is_some() {
        crate::netns::run_in(netns, make)?
    } else {
        make()?
    };
    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
    socket.connect(target).await
}

type Connection = Framed<TcpStream, BgpCodec>;

/// Sends one message, counting it.
async fn send(
    framed: &mut Connection,
    reporter: &Reporter,
    message: BgpMessage,
) -> Result<(), String> {
    let kind = match &message {
        BgpMessage::Update(_) => 1,
        BgpMessage::Notification(_) => 2,
        _ => 0,
    };
    framed
        .send(message)
        .await
        .map_err(|e| format!("cannot send to the peer: {e}"))?;
    match kind {
        1 => reporter.update(|s| s.updates_sent += 1),
        2 => reporter.update(|s| s.notifications_sent += 1),
        _ => {}
    }
    Ok(())
}

/// What one item read from the peer means for the session.
#[derive(Debug)]
pub enum Inbound {
    /// A message to act on; `true` when it carried malformed attributes that
    /// RFC 7606 says to treat as a withdrawal.
    Message(BgpMessage, bool),
    /// The peer sent a NOTIFICATION: the session ends.
    Received(BgpNotificationMessage),
    /// The session must end, after this NOTIFICATION when there is one.
    Close(Option<BgpNotificationMessage>, String),
}

/// Decides what a decoded item (or decoding error) from the peer means.
pub fn classify(
    item: Result<(BgpMessage, BgpParsingIgnoredErrors), BgpCodecDecoderError>,
) -> Inbound {
    match item {
        Err(BgpCodecDecoderError::IoError(e)) => {
            Inbound::Close(None, format!("connection error: {e}"))
        }
        Err(BgpCodecDecoderError::Incomplete(_)) => {
            Inbound::Close(None, "the peer closed the connection mid-message".into())
        }
        Err(BgpCodecDecoderError::BgpMessageParsingError(e)) => {
            let why = format!("malformed message from the peer: {e}");
            Inbound::Close(Some(e.into()), why)
        }
        Ok((BgpMessage::Notification(n), _)) => Inbound::Received(n),
        Ok((message, ignored)) => {
            let attribute_errors = ignored != BgpParsingIgnoredErrors::default();
            if attribute_errors {
                tracing::warn!(errors = ?ignored, "malformed attributes in a received UPDATE: treated as withdraw (RFC 7606)");
            }
            Inbound::Message(message, attribute_errors)
        }
    }
}

/// Runs bytes from a peer through the session's input path — the codec, the
/// classification, the OPEN checks — and returns what the session would do
/// with each item, with the NOTIFICATIONs it would send already encoded. For
/// fuzzing; the session itself does the same one item at a time.
pub fn feed(peer: &Peer, local: &Local, bytes: &[u8]) -> Vec<(Inbound, Vec<u8>)> {
    use tokio_util::codec::{Decoder, Encoder};
    let mut codec = BgpCodec::new(true);
    let mut buffer = bytes::BytesMut::from(bytes);
    let mut out = Vec::new();
    loop {
        let item = match codec.decode(&mut buffer) {
            Ok(None) => break,
            Ok(Some(item)) => Ok(item),
            Err(e) => Err(e),
        };
        let failed = item.is_err();
        let mut inbound = classify(item);
        if let Inbound::Message(BgpMessage::Open(open), _) = &inbound
            && let Err((notification, why)) = message::check_open(peer, local, peer.keepalive, open)
        {
            inbound = Inbound::Close(Some(notification), why);
        }
        let mut encoded = bytes::BytesMut::new();
        if let Inbound::Close(Some(notification), _) = &inbound {
            let _ = message::describe(notification);
            codec
                .encode(BgpMessage::Notification(notification.clone()), &mut encoded)
                .expect("a NOTIFICATION we build always encodes");
        }
        out.push((inbound, encoded.to_vec()));
        if failed || out.len() > 64 {
            break;
        }
    }
    out
}

fn router_id(peer: &Peer, local: IpAddr) -> Ipv4Addr {
    if let Some(id) = peer.router_id {
        return id;
    }
    match local {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => {
            let o = v6.octets();
            Ipv4Addr::new(o[12], o[13], o[14], o[15])
        }
    }
}

/// Each interface's addresses in this network namespace (none on error).
fn interface_addresses() -> Vec<(String, IpAddr)> {
    let Ok(entries) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let address = entry.address?;
            let ip = if let Some(v4) = address.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else {
                IpAddr::V6(address.as_sockaddr_in6()?.ip())
            };
            Some((entry.interface_name, ip))
        })
        .collect()
}

/// Which families an established session carries but cannot send, and why,
/// for the session's status: with `dual_stack` both are wanted, otherwise
/// the session's own (`over_v6`); a family goes unsent when the peer did not
/// offer it in its OPEN, or when the node has no address of it on the
/// session's interface for a next hop.
pub fn unsent_families(
    dual_stack: bool,
    over_v6: bool,
    negotiated: &std::collections::BTreeSet<Family>,
    next_hops: (bool, bool),
) -> Option<String> {
    let wanted: &[Family] = match (dual_stack, over_v6) {
        (true, _) => &[Family::V4, Family::V6],
        (false, false) => &[Family::V4],
        (false, true) => &[Family::V6],
    };
    let reasons: Vec<String> = wanted
        .iter()
        .filter_map(|family| {
            let (name, hop) = match family {
                Family::V4 => ("IPv4", next_hops.0),
                Family::V6 => ("IPv6", next_hops.1),
            };
            if !negotiated.contains(family) {
                Some(format!(
                    "the peer does not offer {name} unicast on this session: its {name} prefixes are not sent"
                ))
            } else if !hop {
                Some(format!(
                    "no {name} address on the session's interface for a next hop: its {name} prefixes are not sent"
                ))
            } else {
                None
            }
        })
        .collect();
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

/// The routes that can go to this peer: negotiated families with a next hop.
fn sendable(routes: &Routes, negotiated: &Negotiated, sender: &Sender) -> Routes {
    routes
        .iter()
        .filter(|(prefix, _)| {
            let family = Family::of(prefix);
            negotiated.families.contains(&family) && sender.can_send(family)
        })
        .map(|(p, a)| (*p, a.clone()))
        .collect()
}

/// The UPDATEs that take the peer from `sent` to `wanted`: withdrawals first.
pub fn changes(sender: &Sender, sent: &Routes, wanted: &Routes) -> Vec<BgpMessage> {
    let gone: Vec<IpNet> = sent
        .keys()
        .filter(|p| !wanted.contains_key(p))
        .copied()
        .collect();
    let mut messages = sender.withdraw(&gone);
    let mut groups: BTreeMap<(Family, &Attributes), Vec<IpNet>> = BTreeMap::new();
    for (prefix, attributes) in wanted {
        if sent.get(prefix) != Some(attributes) {
            groups
                .entry((Family::of(prefix), attributes))
                .or_default()
                .push(*prefix);
        }
    }
    for ((_, attributes), prefixes) in groups {
        messages.extend(sender.announce(attributes, &prefixes));
    }
    messages
}

/// Runs one session until it is stopped: the pure [`Fsm`] decides, this
/// moves bytes, sleeps until its deadline and sends the routes.
async fn run(
    peer: Peer,
    mut routes: watch::Receiver<Routes>,
    mut stop: watch::Receiver<Option<Stop>>,
    status: watch::Sender<Status>,
    mut bfd: watch::Receiver<Option<BfdStatus>>,
    context: Context,
) {
    let reporter = Reporter {
        status,
        changed: context.changed.clone(),
    };
    let start = Instant::now();
    let now = || start.elapsed();
    let mut fsm = Fsm::new(peer.clone());
    let mut connection: Option<Connection> = None;
    let mut connecting: Option<futures::future::BoxFuture<'static, Result<TcpStream, String>>> =
        None;
    let mut session = Established::default();
    let mut pending = if stop.borrow().is_some() {
        Vec::new()
    } else {
        fsm.handle(Event::Start, now())
    };
    loop {
        // Carry out what the machine asked, in order; a send that fails is
        // the TCP connection failing.
        let mut failed = None;
        for action in std::mem::take(&mut pending) {
            match action {
                Action::Connect => {
                    let (peer, context) = (peer.clone(), context.clone());
                    connecting = Some(Box::pin(async move {
                        let key = match &peer.password {
                            Some(reference) => Some(
                                (context.passwords)(reference.clone())
                                    .await
                                    .map_err(|why| format!("TCP-MD5 password: {why}"))?,
                            ),
                            None => None,
                        };
                        connect(&peer, key, &context).await.map_err(|e| {
                            format!("cannot connect to {}:{}: {e}", peer.address, peer.port)
                        })
                    }));
                }
                Action::Close => {
                    connection = None;
                    connecting = None;
                    session = Established::default();
                }
                Action::SendNotification(notification) => {
                    if let Some(framed) = connection.as_mut() {
                        let message = BgpMessage::Notification(notification);
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            send(framed, &reporter, message),
                        )
                        .await;
                    }
                }
                Action::SendOpen(local) => {
                    failed =
                        failed.or(send_on(&mut connection, &reporter, message::open(&local)).await);
                }
                Action::SendKeepalive => {
                    failed =
                        failed.or(send_on(&mut connection, &reporter, BgpMessage::KeepAlive).await);
                }
                Action::Established(negotiated) => {
                    tracing::info!(session = %peer.name, peer = %peer.address, peer_asn = negotiated.peer_asn, families = ?negotiated.families, "BGP session established");
                    let local = connection
                        .as_ref()
                        .and_then(|f| f.get_ref().local_addr().ok())
                        .map(|a| a.ip());
                    if let (Some(framed), Some(local)) = (connection.as_mut(), local) {
                        let addresses = if peer.dual_stack {
                            interface_addresses()
                        } else {
                            Vec::new()
                        };
                        let (next_hop_v4, next_hop_v6) =
                            Sender::next_hops_on(local, peer.dual_stack, &addresses);
                        let unsent = unsent_families(
                            peer.dual_stack,
                            local.is_ipv6(),
                            &negotiated.families,
                            (next_hop_v4.is_some(), next_hop_v6.is_some()),
                        );
                        if let Some(why) = &unsent {
                            tracing::warn!(session = %peer.name, families = ?negotiated.families, "{why}");
                        }
                        reporter.update(|s| s.unsent = unsent);
                        session = Established {
                            sender: Some(Sender {
                                asn: peer.my_asn,
                                ibgp: peer.is_ibgp(),
                                asn4: negotiated.asn4,
                                next_hop_v4,
                                next_hop_v6,
                            }),
                            negotiated: Some(negotiated),
                            sent: Routes::new(),
                            // Only a BFD failure from now on counts.
                            bfd_before: bfd.borrow_and_update().as_ref().map(|s| s.state),
                        };
                        let wanted = routes.borrow_and_update().clone();
                        failed = failed.or(session.update(framed, &reporter, &wanted).await.err());
                        for family in session.families() {
                            failed =
                                failed.or(send(framed, &reporter, message::end_of_rib(family))
                                    .await
                                    .err());
                        }
                    }
                }
                Action::Resend(family) => {
                    if let Some(framed) = connection.as_mut() {
                        failed = failed.or(session.resend(framed, &reporter, family).await.err());
                    }
                }
            }
        }
        reporter.update(|s| {
            if s.state != fsm.state() {
                s.state = fsm.state();
                s.since = std::time::SystemTime::now();
            }
            s.prefixes = if fsm.state() == BgpState::Established {
                session.sent.len()
            } else {
                0
            };
            if let Some(why) = fsm.last_error() {
                s.last_error = Some(why.to_string());
            } else if fsm.state() == BgpState::Established {
                s.last_error = None;
            }
            if fsm.state() != BgpState::Established {
                s.unsent = None;
            }
        });
        if let Some(why) = failed {
            pending = fsm.handle(Event::TcpConnectionFails(why), now());
            continue;
        }
        if fsm.stopped() {
            return;
        }
        let deadline = fsm.deadline().map(|d| start + d);
        let established = fsm.state() == BgpState::Established;
        let event = tokio::select! {
            result = async { connecting.as_mut().expect("connecting").await }, if connecting.is_some() => {
                connecting = None;
                match result {
                    Err(why) => Event::TcpConnectionFails(why),
                    Ok(stream) => match stream.local_addr() {
                        Err(e) => Event::TcpConnectionFails(format!("connection error: {e}")),
                        Ok(address) => {
                            let local = Local {
                                asn: peer.my_asn,
                                router_id: router_id(&peer, address.ip()),
                                hold_time: u16::try_from(peer.hold_time.as_secs()).unwrap_or(u16::MAX),
                                families: match (peer.dual_stack, peer.address) {
                                    (true, _) => vec![Family::V4, Family::V6],
                                    (false, IpAddr::V4(_)) => vec![Family::V4],
                                    (false, IpAddr::V6(_)) => vec![Family::V6],
                                },
                                graceful_restart: peer.graceful_restart,
                            };
                            connection = Some(Framed::new(stream, BgpCodec::new(true)));
                            Event::TcpConnectionConfirmed(local)
                        }
                    },
                }
            }
            item = async { connection.as_mut().expect("connected").next().await }, if connection.is_some() => {
                match item {
                    None => Event::TcpConnectionFails("the peer closed the connection".into()),
                    Some(item) => inbound(classify(item), &reporter),
                }
            }
            () = async { tokio::time::sleep_until(deadline.expect("deadline")).await }, if deadline.is_some() => {
                pending = fsm.tick(now());
                continue;
            }
            _ = stop.changed() => Event::Stop(stop.borrow().unwrap_or(Stop::Deconfigured)),
            changed = routes.changed(), if established => {
                if changed.is_err() {
                    Event::Stop(Stop::Deconfigured)
                } else {
                    let wanted = routes.borrow_and_update().clone();
                    if let Some(framed) = connection.as_mut()
                        && let Err(why) = session.update(framed, &reporter, &wanted).await
                    {
                        Event::TcpConnectionFails(why)
                    } else {
                        reporter.update(|s| s.prefixes = session.sent.len());
                        continue;
                    }
                }
            }
            Ok(()) = bfd.changed(), if established => {
                let before = session.bfd_before;
                let now_status = bfd.borrow_and_update().clone();
                session.bfd_before = now_status.as_ref().map(|s| s.state);
                match now_status.as_ref().and_then(|s| crate::bgp::bfd::failure(before, s)) {
                    Some(why) => Event::BfdDown(why),
                    None => continue,
                }
            }
        };
        if let Event::TcpConnectionFails(why) | Event::Malformed(_, why) = &event {
            tracing::warn!(session = %peer.name, peer = %peer.address, error = %why, "BGP session down");
        }
        pending = fsm.handle(event, now());
    }
}

/// What a classified item from the peer is for the state machine.
fn inbound(item: Inbound, reporter: &Reporter) -> Event {
    match item {
        Inbound::Message(message, attribute_errors) => {
            if attribute_errors {
                reporter.update(|s| s.attribute_errors += 1);
            }
            match message {
                BgpMessage::Open(open) => Event::Open(Box::new(open)),
                BgpMessage::KeepAlive => Event::Keepalive,
                BgpMessage::Update(_) => {
                    reporter.update(|s| s.updates_received += 1);
                    Event::Update
                }
                BgpMessage::RouteRefresh(refresh) => {
                    Event::RouteRefresh(message::refresh_family(refresh.address_type()))
                }
                BgpMessage::Notification(n) => Event::Notification(n),
            }
        }
        Inbound::Received(notification) => {
            reporter.update(|s| s.notifications_received += 1);
            Event::Notification(notification)
        }
        Inbound::Close(notification, why) => Event::Malformed(notification, why),
    }
}

/// Sends on the connection, if there is one; the error when sending fails.
async fn send_on(
    connection: &mut Option<Connection>,
    reporter: &Reporter,
    message: BgpMessage,
) -> Option<String> {
    let framed = connection.as_mut()?;
    send(framed, reporter, message).await.err()
}

/// What an Established session keeps: how to build UPDATEs and what the
/// peer holds from us.
#[derive(Default)]
struct Established {
    sender: Option<Sender>,
    negotiated: Option<Negotiated>,
    sent: Routes,
    bfd_before: Option<crate::bfd::packet::State>,
}

impl Established {
    fn families(&self) -> Vec<Family> {
        self.negotiated
            .as_ref()
            .map(|n| n.families.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Sends what takes the peer from what it holds to `wanted`.
    async fn update(
        &mut self,
        framed: &mut Connection,
        reporter: &Reporter,
        wanted: &Routes,
    ) -> Result<(), String> {
        let (Some(sender), Some(negotiated)) = (&self.sender, &self.negotiated) else {
            return Ok(());
        };
        let wanted = sendable(wanted, negotiated, sender);
        for message in changes(sender, &self.sent, &wanted) {
            send(framed, reporter, message).await?;
        }
        self.sent = wanted;
        reporter.update(|s| s.prefixes = self.sent.len());
        Ok(())
    }

    /// A family's routes again and its End-of-RIB (route refresh).
    async fn resend(
        &mut self,
        framed: &mut Connection,
        reporter: &Reporter,
        family: Family,
    ) -> Result<(), String> {
        let Some(sender) = &self.sender else {
            return Ok(());
        };
        let again: Routes = self
            .sent
            .iter()
            .filter(|(p, _)| Family::of(p) == family)
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        for message in changes(sender, &Routes::new(), &again) {
            send(framed, reporter, message).await?;
        }
        send(framed, reporter, message::end_of_rib(family)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn a_session_says_which_families_it_carries_but_does_not_send() {
        let both: BTreeSet<Family> = [Family::V4, Family::V6].into();
        let v4: BTreeSet<Family> = [Family::V4].into();
        let v6: BTreeSet<Family> = [Family::V6].into();
        let cases = [
            // dual stack, over IPv6, negotiated, next hops (v4, v6), says
            (true, false, &both, (true, true), None),
            (false, false, &v4, (true, false), None),
            (false, true, &v6, (false, true), None),
            (
                true,
                false,
                &v4,
                (true, true),
                Some(
                    "the peer does not offer IPv6 unicast on this session: its IPv6 prefixes are not sent",
                ),
            ),
            (
                true,
                true,
                &both,
                (false, true),
                Some(
                    "no IPv4 address on the session's interface for a next hop: its IPv4 prefixes are not sent",
                ),
            ),
            (
                true,
                true,
                &v4,
                (false, true),
                Some(
                    "no IPv4 address on the session's interface for a next hop: its IPv4 prefixes are not sent; the peer does not offer IPv6 unicast on this session: its IPv6 prefixes are not sent",
                ),
            ),
        ];
        for (dual, over_v6, negotiated, hops, says) in cases {
            assert_eq!(
                unsent_families(dual, over_v6, negotiated, hops).as_deref(),
                says,
                "dual stack {dual}, over IPv6 {over_v6}, {negotiated:?}, {hops:?}"
            );
        }
    }
}
