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
use netgauze_bgp_pkt::notification::{
    BgpNotificationMessage, CeaseError, FiniteStateMachineError, HoldTimerExpiredError,
};
use netgauze_bgp_pkt::wire::deserializer::BgpParsingIgnoredErrors;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::Framed;

use ferrolb_api::nodeannouncement::BfdSettings;

use crate::bfd::socket::Status as BfdStatus;

use super::config::{Attributes, Peer, Routes};
use super::md5;
use super::message::{self, Family, Local, Negotiated, Sender};

/// How long to wait for the peer's OPEN (RFC 4271 suggests 4 minutes).
const OPEN_HOLD: Duration = Duration::from_secs(240);
/// The first wait after a failure; doubled up to the session's connect time.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Why a session ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Removed from the NodeAnnouncement: Cease / Peer De-configured.
    Deconfigured,
    /// The speaker stops: Cease / Administrative Shutdown, or with graceful
    /// restart negotiated, a silent close so the peer keeps the routes.
    Shutdown,
}

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

/// How an attempt ended.
enum Ended {
    /// Asked to stop.
    Stopped,
    /// Failed; reconnect. `true` when the session had been Established.
    Failed(String, bool),
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

    fn state(&self, state: BgpState) {
        self.update(|s| {
            if s.state != state {
                s.state = state;
                s.since = std::time::SystemTime::now();
            }
            if state != BgpState::Established {
                s.prefixes = 0;
            }
        });
    }
}

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
    let mut backoff = FIRST_BACKOFF;
    loop {
        if stop.borrow().is_some() {
            break;
        }
        match attempt(&peer, &mut routes, &mut stop, &mut bfd, &reporter, &context).await {
            Ended::Stopped => break,
            Ended::Failed(why, established) => {
                tracing::warn!(session = %peer.name, peer = %peer.address, error = %why, "BGP session down");
                if established {
                    backoff = FIRST_BACKOFF;
                }
                reporter.update(|s| s.last_error = Some(why));
                reporter.state(BgpState::Active);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => break,
                }
                backoff = (backoff * 2).min(peer.connect_retry.max(FIRST_BACKOFF));
            }
        }
    }
    reporter.state(BgpState::Idle);
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

/// Sends a NOTIFICATION (best effort) and says why the session ends.
async fn refuse(
    framed: &mut Connection,
    reporter: &Reporter,
    notification: BgpNotificationMessage,
    why: String,
    established: bool,
) -> Ended {
    let text = message::describe(&notification);
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        send(framed, reporter, BgpMessage::Notification(notification)),
    )
    .await;
    Ended::Failed(format!("sent NOTIFICATION {text}: {why}"), established)
}

/// What reading one message gave.
enum Read {
    Message(BgpMessage),
    Ended(Ended),
}

/// Reads the next message before `deadline`; every failure is turned into
/// the right goodbye.
async fn read(
    framed: &mut Connection,
    reporter: &Reporter,
    deadline: Option<Instant>,
    established: bool,
) -> Read {
    let next = async {
        match deadline {
            Some(at) => tokio::time::timeout_at(at, framed.next()).await.ok(),
            None => Some(framed.next().await),
        }
    };
    match next.await {
        None => Read::Ended(
            refuse(
                framed,
                reporter,
                BgpNotificationMessage::HoldTimerExpiredError(HoldTimerExpiredError::Unspecific {
                    sub_code: 0,
                    value: Box::new([]),
                }),
                "nothing heard from the peer within the hold time".into(),
                established,
            )
            .await,
        ),
        Some(None) => Read::Ended(Ended::Failed(
            "the peer closed the connection".into(),
            established,
        )),
        Some(Some(item)) => match classify(item) {
            Inbound::Message(message, attribute_errors) => {
                if attribute_errors {
                    reporter.update(|s| s.attribute_errors += 1);
                }
                Read::Message(message)
            }
            Inbound::Received(notification) => {
                reporter.update(|s| s.notifications_received += 1);
                Read::Ended(Ended::Failed(
                    format!("received NOTIFICATION {}", message::describe(&notification)),
                    established,
                ))
            }
            Inbound::Close(Some(notification), why) => {
                Read::Ended(refuse(framed, reporter, notification, why, established).await)
            }
            Inbound::Close(None, why) => Read::Ended(Ended::Failed(why, established)),
        },
    }
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

fn fsm_error(state: BgpState) -> BgpNotificationMessage {
    let value = Box::new([]);
    BgpNotificationMessage::FiniteStateMachineError(match state {
        BgpState::OpenSent => {
            FiniteStateMachineError::ReceiveUnexpectedMessageInOpenSentState { value }
        }
        BgpState::OpenConfirm => {
            FiniteStateMachineError::ReceiveUnexpectedMessageInOpenConfirmState { value }
        }
        _ => FiniteStateMachineError::ReceiveUnexpectedMessageInEstablishedState { value },
    })
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

async fn attempt(
    peer: &Peer,
    routes: &mut watch::Receiver<Routes>,
    stop: &mut watch::Receiver<Option<Stop>>,
    bfd: &mut watch::Receiver<Option<BfdStatus>>,
    reporter: &Reporter,
    context: &Context,
) -> Ended {
    let key = match &peer.password {
        Some(reference) => match (context.passwords)(reference.clone()).await {
            Ok(key) => Some(key),
            Err(why) => return Ended::Failed(format!("TCP-MD5 password: {why}"), false),
        },
        None => None,
    };
    reporter.state(BgpState::Connect);
    let timeout = peer
        .connect_retry
        .clamp(Duration::from_secs(3), Duration::from_secs(30));
    let stream = tokio::select! {
        result = tokio::time::timeout(timeout, connect(peer, key.clone(), context)) => match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Ended::Failed(format!("cannot connect to {}:{}: {e}", peer.address, peer.port), false),
            Err(_) => {
                let hint = if key.is_some() {
                    " (a TCP-MD5 password the peer does not share looks exactly like this)"
                } else {
                    " (if the peer requires a TCP-MD5 password, set passwordSecretRef)"
                };
                return Ended::Failed(format!("no answer from {}:{} within {}s{hint}", peer.address, peer.port, timeout.as_secs()), false);
            }
        },
        _ = stop.changed() => return Ended::Stopped,
    };
    let local_address = match stream.local_addr() {
        Ok(a) => a.ip(),
        Err(e) => return Ended::Failed(format!("connection error: {e}"), false),
    };
    let families: Vec<Family> = match peer.address {
        IpAddr::V4(_) => vec![Family::V4],
        IpAddr::V6(_) => vec![Family::V6],
    };
    let local = Local {
        asn: peer.my_asn,
        router_id: router_id(peer, local_address),
        hold_time: u16::try_from(peer.hold_time.as_secs()).unwrap_or(u16::MAX),
        families,
        graceful_restart: peer.graceful_restart,
    };
    let mut framed = Framed::new(stream, BgpCodec::new(true));
    if let Err(e) = send(&mut framed, reporter, message::open(&local)).await {
        return Ended::Failed(e, false);
    }
    reporter.state(BgpState::OpenSent);
    let message = tokio::select! {
        read = read(&mut framed, reporter, Some(Instant::now() + OPEN_HOLD), false) => match read {
            Read::Message(m) => m,
            Read::Ended(ended) => return ended,
        },
        _ = stop.changed() => {
            let why = *stop.borrow();
            return goodbye(&mut framed, reporter, why, false).await;
        }
    };
    let negotiated = match message {
        BgpMessage::Open(open) => match message::check_open(peer, &local, peer.keepalive, &open) {
            Ok(n) => n,
            Err((notification, why)) => {
                return refuse(&mut framed, reporter, notification, why, false).await;
            }
        },
        other => {
            let why = format!("unexpected {:?} before OPEN", other.get_type());
            let error = fsm_error(BgpState::OpenSent);
            return refuse(&mut framed, reporter, error, why, false).await;
        }
    };
    if let Err(e) = send(&mut framed, reporter, BgpMessage::KeepAlive).await {
        return Ended::Failed(e, false);
    }
    reporter.state(BgpState::OpenConfirm);
    let hold = (!negotiated.hold_time.is_zero()).then_some(negotiated.hold_time);
    let deadline = Some(Instant::now() + hold.unwrap_or(OPEN_HOLD));
    let message = tokio::select! {
        read = read(&mut framed, reporter, deadline, false) => match read {
            Read::Message(m) => m,
            Read::Ended(ended) => return ended,
        },
        _ = stop.changed() => {
            let why = *stop.borrow();
            return goodbye(&mut framed, reporter, why, false).await;
        }
    };
    if !matches!(message, BgpMessage::KeepAlive) {
        let why = format!("unexpected {:?} before KEEPALIVE", message.get_type());
        let error = fsm_error(BgpState::OpenConfirm);
        return refuse(&mut framed, reporter, error, why, false).await;
    }
    let (next_hop_v4, next_hop_v6) = Sender::next_hops(local_address);
    let sender = Sender {
        asn: peer.my_asn,
        ibgp: peer.is_ibgp(),
        asn4: negotiated.asn4,
        next_hop_v4,
        next_hop_v6,
    };
    established(
        peer,
        &negotiated,
        &sender,
        framed,
        routes,
        stop,
        bfd,
        reporter,
        hold,
    )
    .await
}

/// Says goodbye as `why` asks: a Cease NOTIFICATION, or for a shutdown with
/// graceful restart negotiated nothing at all (the peer keeps our routes as
/// stale until we are back).
async fn goodbye(
    framed: &mut Connection,
    reporter: &Reporter,
    why: Option<Stop>,
    graceful: bool,
) -> Ended {
    let value = Box::new([]);
    let cease = match why {
        Some(Stop::Shutdown) if graceful => return Ended::Stopped,
        Some(Stop::Shutdown) => CeaseError::AdministrativeShutdown { value },
        _ => CeaseError::PeerDeConfigured { value },
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        send(
            framed,
            reporter,
            BgpMessage::Notification(BgpNotificationMessage::CeaseError(cease)),
        ),
    )
    .await;
    Ended::Stopped
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

#[allow(clippy::too_many_arguments)]
async fn established(
    peer: &Peer,
    negotiated: &Negotiated,
    sender: &Sender,
    mut framed: Connection,
    routes: &mut watch::Receiver<Routes>,
    stop: &mut watch::Receiver<Option<Stop>>,
    bfd: &mut watch::Receiver<Option<BfdStatus>>,
    reporter: &Reporter,
    hold: Option<Duration>,
) -> Ended {
    reporter.update(|s| s.last_error = None);
    reporter.state(BgpState::Established);
    tracing::info!(session = %peer.name, peer = %peer.address, peer_asn = negotiated.peer_asn, families = ?negotiated.families, "BGP session established");
    let graceful = peer.graceful_restart && negotiated.peer_graceful_restart;
    let mut sent = Routes::new();
    let mut wanted = sendable(&routes.borrow_and_update(), negotiated, sender);
    for message in changes(sender, &sent, &wanted) {
        if let Err(e) = send(&mut framed, reporter, message).await {
            return Ended::Failed(e, true);
        }
    }
    sent = wanted.clone();
    reporter.update(|s| s.prefixes = sent.len());
    for family in &negotiated.families {
        if let Err(e) = send(&mut framed, reporter, message::end_of_rib(*family)).await {
            return Ended::Failed(e, true);
        }
    }
    // Only a BFD failure from now on takes the session down (RFC 5882: a
    // BFD session that was never up, or is AdminDown, does not).
    let mut bfd_before = bfd.borrow_and_update().as_ref().map(|s| s.state);
    let keepalive_every = negotiated.keepalive.unwrap_or(Duration::from_secs(3600));
    let mut keepalive = tokio::time::interval_at(Instant::now() + keepalive_every, keepalive_every);
    let mut heard = Instant::now();
    loop {
        let deadline = hold.map(|h| heard + h);
        tokio::select! {
            read = read(&mut framed, reporter, deadline, true) => match read {
                Read::Message(BgpMessage::KeepAlive) => heard = Instant::now(),
                Read::Message(BgpMessage::Update(_)) => {
                    heard = Instant::now();
                    reporter.update(|s| s.updates_received += 1);
                }
                Read::Message(BgpMessage::RouteRefresh(refresh)) => {
                    heard = Instant::now();
                    if let Some(family) = message::refresh_family(refresh.address_type()) {
                        let again: Routes = sent.iter().filter(|(p, _)| Family::of(p) == family).map(|(p, a)| (*p, a.clone())).collect();
                        for message in changes(sender, &Routes::new(), &again) {
                            if let Err(e) = send(&mut framed, reporter, message).await {
                                return Ended::Failed(e, true);
                            }
                        }
                        if let Err(e) = send(&mut framed, reporter, message::end_of_rib(family)).await {
                            return Ended::Failed(e, true);
                        }
                    }
                }
                Read::Message(BgpMessage::Open(_)) => {
                    return refuse(&mut framed, reporter, fsm_error(BgpState::Established), "OPEN on an established session".into(), true).await;
                }
                Read::Message(BgpMessage::Notification(_)) => unreachable!("read turns NOTIFICATIONs into an end"),
                Read::Ended(ended) => return ended,
            },
            _ = keepalive.tick() => {
                if let Err(e) = send(&mut framed, reporter, BgpMessage::KeepAlive).await {
                    return Ended::Failed(e, true);
                }
            }
            changed = routes.changed() => {
                if changed.is_err() {
                    return goodbye(&mut framed, reporter, Some(Stop::Deconfigured), graceful).await;
                }
                wanted = sendable(&routes.borrow_and_update(), negotiated, sender);
                for message in changes(sender, &sent, &wanted) {
                    if let Err(e) = send(&mut framed, reporter, message).await {
                        return Ended::Failed(e, true);
                    }
                }
                sent = wanted.clone();
                reporter.update(|s| s.prefixes = sent.len());
            }
            Ok(()) = bfd.changed() => {
                let now = bfd.borrow_and_update().clone();
                let down = now.as_ref().and_then(|s| crate::bgp::bfd::failure(bfd_before, s));
                bfd_before = now.map(|s| s.state);
                if let Some(why) = down {
                    let cease = BgpNotificationMessage::CeaseError(CeaseError::BfdDown { value: Box::new([]) });
                    return refuse(&mut framed, reporter, cease, why, true).await;
                }
            }
            _ = stop.changed() => {
                let why = *stop.borrow();
                return goodbye(&mut framed, reporter, why, graceful).await;
            }
        }
    }
}
