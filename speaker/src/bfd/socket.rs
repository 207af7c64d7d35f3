//! BFD's sockets and timers: one listener per port (3784 single hop, 4784
//! multihop) in the node's namespace, handing each datagram with its TTL to
//! the session of its source address; one task per session that sends from
//! its own port, sleeps until the session's next deadline and publishes its
//! state. Every decision is the pure [`Session`]'s.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::packet::{Diag, State};
use super::session::{Action, Micros, Params, Session};
use super::{MULTIHOP_PORT, SINGLE_HOP_PORT};

/// The TTL every packet is sent with, and single-hop packets must arrive with.
pub const TTL: u8 = 255;

/// What a session reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub state: State,
    /// Why it last went Down (or AdminDown).
    pub diag: Diag,
    /// The state the peer last sent.
    pub remote: State,
    /// Datagrams dropped (malformed, wrong TTL, unknown discriminator,
    /// authentication).
    pub dropped: u64,
    /// The last drop, for people.
    pub last_drop: Option<String>,
    /// Times it went Up.
    pub ups: u64,
}

impl Default for Status {
    fn default() -> Status {
        Status {
            state: State::Down,
            diag: Diag::None,
            remote: State::Down,
            dropped: 0,
            last_drop: None,
            ups: 0,
        }
    }
}

impl Status {
    /// Whether the session went Down for a reason its BGP session must
    /// follow: not a peer's AdminDown (RFC 5882 section 3.2).
    pub fn failed(&self) -> bool {
        self.state == State::Down && self.ups > 0 && self.remote != State::AdminDown
    }
}

type Inbox = mpsc::Sender<(Vec<u8>, u8)>;

/// The sessions of one node, by (peer address, multihop).
#[derive(Clone, Default)]
pub struct Bfd {
    netns: Option<PathBuf>,
    routes: Arc<Mutex<HashMap<(IpAddr, bool), Inbox>>>,
    listeners: Arc<tokio::sync::Mutex<HashMap<(bool, bool), ()>>>,
}

/// One running session; dropping it holds the session AdminDown and ends it.
pub struct Handle {
    status: watch::Receiver<Status>,
    params: watch::Sender<Params>,
    /// The lowest TTL accepted: 255 single hop, `minimumTtl` multihop.
    minimum_ttl: watch::Sender<u8>,
    multihop: bool,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    key: (IpAddr, bool),
    routes: Arc<Mutex<HashMap<(IpAddr, bool), Inbox>>>,
}

impl Handle {
    /// Follows the session's status.
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// The status now.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Changes the parameters (polled while Up) and, multihop, the lowest
    /// TTL accepted (a local rule: it takes effect with the next packet).
    pub fn configure(&self, params: Params, minimum_ttl: u8) {
        self.params.send_if_modified(|p| {
            let changed = *p != params;
            *p = params;
            changed
        });
        if self.multihop {
            self.minimum_ttl.send_if_modified(|m| {
                let changed = *m != minimum_ttl;
                *m = minimum_ttl;
                changed
            });
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.routes.lock().expect("bfd routes").remove(&self.key);
    }
}

fn bind(
    netns: Option<PathBuf>,
    address: SocketAddr,
    recv_ttl: bool,
) -> io::Result<std::net::UdpSocket> {
    crate::netns::run_in(netns, move || {
        let domain = socket2::Domain::for_address(address);
        let socket =
            socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        socket.set_nonblocking(true)?;
        // IPv4 peers have a listener of their own on the same port: the
        // IPv6 one takes IPv6 only, so each datagram has one place to go.
        if address.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        match address {
            SocketAddr::V4(_) => socket.set_ttl_v4(u32::from(TTL))?,
            SocketAddr::V6(_) => socket.set_unicast_hops_v6(u32::from(TTL))?,
        }
        socket.set_reuse_address(true)?;
        socket.bind(&address.into())?;
        let socket = std::net::UdpSocket::from(socket);
        if recv_ttl {
            setsockopt(&socket, sockopt::Ipv4RecvTtl, &true).map_err(io::Error::from)?;
            if address.is_ipv6() {
                setsockopt(&socket, sockopt::Ipv6RecvHopLimit, &true).map_err(io::Error::from)?;
            }
        }
        Ok(socket)
    })
}

/// Reads one datagram with its TTL (hop limit).
fn receive(fd: std::os::fd::RawFd, buffer: &mut [u8]) -> io::Result<(usize, SocketAddr, u8)> {
    let mut space = nix::cmsg_space!(libc::c_int, libc::c_int);
    let mut iov = [io::IoSliceMut::new(buffer)];
    let message = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut space), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let mut ttl = 0u8;
    for cmsg in message.cmsgs().map_err(io::Error::from)? {
        match cmsg {
            ControlMessageOwned::Ipv4Ttl(t) => ttl = u8::try_from(t).unwrap_or(0),
            ControlMessageOwned::Ipv6HopLimit(t) => ttl = u8::try_from(t).unwrap_or(0),
            _ => {}
        }
    }
    let from = message
        .address
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
                .or_else(|| {
                    a.as_sockaddr_in6()
                        .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
                })
        })
        .ok_or_else(|| io::Error::other("a datagram without a source address"))?;
    let bytes = message.bytes;
    Ok((bytes, from, ttl))
}

/// An IPv4 peer seen through a dual-stack socket arrives as `::ffff:a.b.c.d`.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Bfd {
    /// The sessions of a node whose sockets live in `netns` (None: here).
    pub fn new(netns: Option<PathBuf>) -> Bfd {
        Bfd {
            netns,
            ..Bfd::default()
        }
    }

    async fn listen(&self, multihop: bool, v6: bool) -> io::Result<()> {
        let mut listeners = self.listeners.lock().await;
        if listeners.contains_key(&(multihop, v6)) {
            return Ok(());
        }
        let port = if multihop {
            MULTIHOP_PORT
        } else {
            SINGLE_HOP_PORT
        };
        let address: SocketAddr = if v6 {
            (std::net::Ipv6Addr::UNSPECIFIED, port).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, port).into()
        };
        let socket = UdpSocket::from_std(bind(self.netns.clone(), address, true)?)?;
        let routes = self.routes.clone();
        tokio::spawn(async move {
            let mut buffer = [0u8; 512];
            loop {
                let fd = socket.as_raw_fd();
                match socket
                    .async_io(Interest::READABLE, || receive(fd, &mut buffer))
                    .await
                {
                    Ok((len, from, ttl)) => {
                        let inbox = routes
                            .lock()
                            .expect("bfd routes")
                            .get(&(unmapped(from.ip()), multihop))
                            .cloned();
                        match inbox {
                            Some(inbox) => {
                                let _ = inbox.try_send((buffer[..len].to_vec(), ttl));
                            }
                            None => tracing::debug!(%from, "BFD datagram for no session"),
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "BFD receive failed"),
                }
            }
        });
        listeners.insert((multihop, v6), ());
        Ok(())
    }

    /// Starts a session with `peer` (from `local` when set), single hop or
    /// multihop; a multihop packet must arrive with a TTL of at least
    /// `minimum_ttl`, a single-hop one with 255.
    pub async fn start(
        &self,
        peer: IpAddr,
        local: Option<IpAddr>,
        multihop: bool,
        minimum_ttl: u8,
        params: Params,
    ) -> io::Result<Handle> {
        self.listen(multihop, peer.is_ipv6()).await?;
        let port = if multihop {
            MULTIHOP_PORT
        } else {
            SINGLE_HOP_PORT
        };
        // RFC 5881: the source port is in 49152-65535.
        let mut socket = None;
        let mut last_error = None;
        for _ in 0..32 {
            let source = SocketAddr::new(
                local.unwrap_or(if peer.is_ipv6() {
                    IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                } else {
                    IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
                }),
                fastrand::u16(49152..=65535),
            );
            match bind(self.netns.clone(), source, false) {
                Ok(s) => {
                    socket = Some(s);
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let socket = match socket {
            Some(s) => UdpSocket::from_std(s)?,
            None => return Err(last_error.unwrap_or_else(|| io::Error::other("no source port"))),
        };
        let (inbox, rx) = mpsc::channel(64);
        let key = (peer, multihop);
        self.routes.lock().expect("bfd routes").insert(key, inbox);
        let (status_tx, status_rx) = watch::channel(Status::default());
        let (params_tx, params_rx) = watch::channel(params.clone());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let minimum = if multihop { minimum_ttl } else { TTL };
        let (minimum_tx, minimum_rx) = watch::channel(minimum);
        tokio::spawn(run(
            socket,
            SocketAddr::new(peer, port),
            minimum_rx,
            params,
            rx,
            params_rx,
            stop_rx,
            status_tx,
        ));
        Ok(Handle {
            status: status_rx,
            params: params_tx,
            minimum_ttl: minimum_tx,
            multihop,
            stop: Some(stop_tx),
            key,
            routes: self.routes.clone(),
        })
    }
}

/// Why a packet with `ttl` was dropped, and what to change: single hop
/// takes TTL 255 only (RFC 5881), multihop at least the profile's
/// `minimumTtl`.
fn ttl_drop(ttl: u8, minimum_ttl: u8) -> String {
    if minimum_ttl == TTL {
        format!(
            "a packet arrived with TTL {ttl}; single-hop BFD takes only TTL 255: the peer is not a direct neighbor, or it is multihop (set ebgpMultiHop on the BGPPeer)"
        )
    } else {
        format!(
            "a packet arrived with TTL {ttl}, below the BFDProfile's minimumTtl {minimum_ttl}: lower minimumTtl to the TTL the router sends with, less the hops between (BIRD sends multihop BFD with TTL 64, FRR with 255)"
        )
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    socket: UdpSocket,
    peer: SocketAddr,
    minimum_ttl: watch::Receiver<u8>,
    params: Params,
    mut inbox: mpsc::Receiver<(Vec<u8>, u8)>,
    mut params_rx: watch::Receiver<Params>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    status: watch::Sender<Status>,
) {
    let start = Instant::now();
    let now = || start.elapsed().as_micros() as Micros;
    let mut session = Session::new(params, fastrand::u32(1..), now(), fastrand::u64(..));
    let mut ttl_drops = 0u64;
    let mut last_ttl_drop: Option<String> = None;
    loop {
        let deadline = session.deadline();
        let sleep = if deadline == Micros::MAX {
            Duration::from_secs(3600)
        } else {
            Duration::from_micros(deadline.saturating_sub(now()))
        };
        let actions = tokio::select! {
            _ = tokio::time::sleep(sleep) => session.tick(now()),
            received = inbox.recv() => match received {
                None => return,
                Some((bytes, ttl)) if ttl < *minimum_ttl.borrow() => {
                    ttl_drops += 1;
                    last_ttl_drop = Some(ttl_drop(ttl, *minimum_ttl.borrow()));
                    let _ = bytes;
                    Vec::new()
                }
                Some((bytes, _)) => session.receive(&bytes, now()).unwrap_or_default(),
            },
            changed = params_rx.changed() => {
                if changed.is_err() { return; }
                let next = params_rx.borrow_and_update().clone();
                session.configure(next, now())
            }
            _ = &mut stop => {
                // Tell the peer this is no failure, a few times in case one is lost.
                for action in session.admin_down(now()) {
                    if let Action::Send(bytes) = action {
                        for _ in 0..3 {
                            let _ = socket.send_to(&bytes, peer).await;
                        }
                    }
                }
                return;
            }
        };
        for action in actions {
            match action {
                Action::Send(bytes) => {
                    if let Err(e) = socket.send_to(&bytes, peer).await {
                        tracing::debug!(%peer, error = %e, "BFD send failed");
                    }
                }
                Action::Changed {
                    from,
                    to,
                    diag,
                    remote,
                } => {
                    tracing::info!(%peer, %from, %to, diag = %diag.describe(), %remote, "BFD session state");
                }
            }
        }
        let counters = session.counters.clone();
        let next = Status {
            state: session.state(),
            diag: session.diag(),
            remote: session.remote_state(),
            dropped: counters.dropped + ttl_drops,
            last_drop: session
                .last_drop
                .as_ref()
                .map(ToString::to_string)
                .or_else(|| last_ttl_drop.clone()),
            ups: counters.ups,
        };
        status.send_if_modified(|s| {
            let changed = *s != next;
            *s = next;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_drop_says_which_rule_and_what_to_change() {
        let single = ttl_drop(254, TTL);
        assert!(
            single.contains("TTL 254") && single.contains("only TTL 255"),
            "{single}"
        );
        assert!(single.contains("ebgpMultiHop"), "{single}");
        let multi = ttl_drop(64, 254);
        assert!(
            multi.contains("TTL 64") && multi.contains("minimumTtl 254"),
            "{multi}"
        );
        assert!(multi.contains("lower minimumTtl"), "{multi}");
    }
}
