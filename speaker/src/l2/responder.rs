//! Answers ARP and NDP on one interface for the IPs this node holds now, and
//! announces an IP it takes with gratuitous ARP / unsolicited NA, repeated for a
//! few seconds. An IP removed from the set is not answered for from the next
//! frame on.

use prometheus_client::metrics::counter::Counter;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::packet::{self, Mac, Request};
use super::socket::PacketSocket;

/// Frame counters of one responder.
#[derive(Debug, Default)]
pub struct Counters {
    /// ARP requests for one of our IPs.
    pub arp_requests: Counter,
    /// ARP replies sent.
    pub arp_replies: Counter,
    /// Neighbor Solicitations for one of our IPs.
    pub ndp_requests: Counter,
    /// Neighbor Advertisements sent in reply.
    pub ndp_replies: Counter,
    /// Gratuitous ARPs and unsolicited NAs sent.
    pub gratuitous: Counter,
    /// Frames dropped as malformed.
    pub malformed: Counter,
    /// Gratuitous ARPs from another MAC for an IP answered here.
    pub claims_seen: Counter,
}

/// Gratuitous ARPs from another MAC for an IP this node answers for: the
/// standby that took the IP over says so on the wire, even when its fast
/// failover messages cannot reach this node. The speaker yields such an IP
/// as it yields one a standby claims in its probes, so that two nodes never
/// answer for one IP longer than it takes the claim to arrive.
#[derive(Debug, Default)]
pub struct WireClaims {
    seen: Mutex<Vec<(IpAddr, Mac)>>,
    wake: Mutex<Option<Arc<Notify>>>,
}

impl WireClaims {
    /// Whom to wake when a claim is seen.
    pub fn wake(&self, notify: Arc<Notify>) {
        *self.wake.lock().expect("claims lock") = Some(notify);
    }

    /// Records that `mac` claimed `ip`.
    pub fn push(&self, ip: IpAddr, mac: Mac) {
        self.seen.lock().expect("claims lock").push((ip, mac));
        if let Some(notify) = &*self.wake.lock().expect("claims lock") {
            notify.notify_one();
        }
    }

    /// The claims seen since the last call.
    pub fn take(&self) -> Vec<(IpAddr, Mac)> {
        std::mem::take(&mut *self.seen.lock().expect("claims lock"))
    }
}

/// When announcements of a taken IP go out, from the moment it is taken.
const REPEATS: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(3),
];

/// Answers requests for the IPs in `ips` (minus `own`) on `socket` as `mac`,
/// until `ips` is dropped; a gratuitous ARP from another MAC for one of them
/// goes to `claims`, unanswered.
pub async fn answer(
    socket: Arc<PacketSocket>,
    mac: Mac,
    ips: watch::Receiver<BTreeSet<IpAddr>>,
    own: BTreeSet<IpAddr>,
    counters: Arc<Counters>,
    claims: Arc<WireClaims>,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; 65536];
    let mut failing = false;
    loop {
        // The link going down (a cut cable, `ip link set down`) makes the
        // socket fail with ENETDOWN until it comes back: wait it out, never
        // stop answering for good.
        let len = match socket.receive(&mut buffer).await {
            Ok(len) => {
                if failing {
                    tracing::info!("the interface works again: answering");
                    failing = false;
                }
                len
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot receive on the interface; retrying");
                    failing = true;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let frame = &buffer[..len];
        let holds = |ip: IpAddr| !own.contains(&ip) && ips.borrow().contains(&ip);
        match packet::parse(frame) {
            Ok(Request::Arp(request))
                if request.sender_mac != mac
                    && request.sender_ip == request.target_ip
                    && holds(request.target_ip.into()) =>
            {
                counters.claims_seen.inc();
                claims.push(request.target_ip.into(), request.sender_mac);
            }
            Ok(Request::Arp(request))
                if request.sender_mac != mac && holds(request.target_ip.into()) =>
            {
                counters.arp_requests.inc();
                if socket.send(&packet::arp_reply(mac, &request)).await.is_ok() {
                    counters.arp_replies.inc();
                }
            }
            Ok(Request::Ndp(solicitation))
                if solicitation.source_mac != mac && holds(solicitation.target.into()) =>
            {
                counters.ndp_requests.inc();
                if socket
                    .send(&packet::neighbor_reply(mac, &solicitation))
                    .await
                    .is_ok()
                {
                    counters.ndp_replies.inc();
                }
            }
            Ok(_) => {}
            Err(why) => {
                counters.malformed.inc();
                tracing::debug!(?why, len, "malformed frame dropped");
            }
        }
    }
}

/// Announces newly taken IPs: each IP that enters `ips` gets gratuitous ARP or
/// unsolicited NA at the [`REPEATS`] offsets, stopping early if it leaves.
pub async fn announce(
    socket: Arc<PacketSocket>,
    mac: Mac,
    mut ips: watch::Receiver<BTreeSet<IpAddr>>,
    counters: Arc<Counters>,
) {
    let mut known: BTreeSet<IpAddr> = BTreeSet::new();
    loop {
        let now: BTreeSet<IpAddr> = ips.borrow_and_update().clone();
        for ip in now.difference(&known).copied() {
            let socket = socket.clone();
            let counters = counters.clone();
            let watch = ips.clone();
            tokio::spawn(async move {
                let start = tokio::time::Instant::now();
                for offset in REPEATS {
                    tokio::time::sleep_until(start + offset).await;
                    if !watch.borrow().contains(&ip) {
                        return;
                    }
                    let frame = match ip {
                        IpAddr::V4(v4) => packet::gratuitous_arp(mac, v4),
                        IpAddr::V6(v6) => packet::unsolicited_advertisement(mac, v6),
                    };
                    match socket.send(&frame).await {
                        Ok(_) => {
                            counters.gratuitous.inc();
                        }
                        // The link may be back for the next one.
                        Err(e) => tracing::warn!(%ip, error = %e, "cannot announce"),
                    }
                }
            });
            tracing::info!(%ip, "taken: announcing");
        }
        for ip in known.difference(&now) {
            tracing::info!(%ip, "released: silent from now on");
        }
        known = now;
        if ips.changed().await.is_err() {
            return;
        }
    }
}
