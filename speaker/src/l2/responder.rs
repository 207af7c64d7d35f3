//! Answers ARP and NDP on one interface for the IPs this node holds now, and
//! announces an IP it takes with gratuitous ARP / unsolicited NA, repeated for a
//! few seconds. An IP removed from the set is not answered for from the next
//! frame on.

use prometheus_client::metrics::counter::Counter;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// How long a node whose link was down stays silent for its IPs once the
/// link is back, unless a new set of IPs comes first: while it was cut off,
/// a standby may have taken them over (fast failover moves an IP after
/// 300 ms of silence) and the operator made that official, but this node's
/// spec still says the IPs are its own until the new one arrives (a chaos run
/// saw it answer for 120 ms beside the new holder, each client flipping
/// between the two MACs). Clients keep their ARP entries meanwhile, so an IP
/// nobody took loses nothing.
pub const REJOIN_QUIET: Duration = Duration::from_secs(2);

/// Whether the responder stays silent after its link came back (see
/// [`REJOIN_QUIET`]). Pure: the time and whether the IP set changed since
/// are inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rejoin {
    quiet_until: Option<Instant>,
}

impl Rejoin {
    /// The link works again at `now`.
    pub fn link_back(&mut self, now: Instant) {
        self.quiet_until = Some(now + REJOIN_QUIET);
    }

    /// Whether to stay silent at `now`; `new_ips` says a new IP set arrived
    /// since the link came back (the spec read after the gap), which ends
    /// the silence.
    pub fn quiet(&mut self, now: Instant, new_ips: bool) -> bool {
        match self.quiet_until {
            Some(until) if now < until && !new_ips => true,
            _ => {
                self.quiet_until = None;
                false
            }
        }
    }
}

/// Answers requests for the IPs in `ips` (minus `own`) on `socket` as `mac`,
/// until `ips` is dropped; a gratuitous ARP from another MAC for one of them
/// goes to `claims`, unanswered.
pub async fn answer(
    socket: Arc<PacketSocket>,
    mac: Mac,
    mut ips: watch::Receiver<BTreeSet<IpAddr>>,
    own: BTreeSet<IpAddr>,
    counters: Arc<Counters>,
    claims: Arc<WireClaims>,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; 65536];
    let mut failing = false;
    let mut rejoin = Rejoin::default();
    loop {
        // The link going down (a cut cable, `ip link set down`) makes the
        // socket fail with ENETDOWN until it comes back: wait it out, never
        // stop answering for good.
        let len = match socket.receive(&mut buffer).await {
            Ok(len) => {
                if failing {
                    tracing::info!(
                        quiet = ?REJOIN_QUIET,
                        "the interface works again: answering once the spec is fresh"
                    );
                    failing = false;
                    ips.mark_unchanged();
                    rejoin.link_back(Instant::now());
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
        let quiet = rejoin.quiet(Instant::now(), ips.has_changed().unwrap_or(true));
        let ours = |ip: IpAddr| !own.contains(&ip) && ips.borrow().contains(&ip);
        let holds = |ip: IpAddr| !quiet && ours(ip);
        match packet::parse(frame) {
            Ok(Request::Arp(request))
                if request.sender_mac != mac
                    && request.sender_ip == request.target_ip
                    && ours(request.target_ip.into()) =>
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_back_from_a_cut_link_stays_silent_until_its_spec_is_new_or_the_quiet_ends() {
        let start = Instant::now();
        let mut rejoin = Rejoin::default();
        assert!(
            !rejoin.quiet(start, false),
            "answering while nothing happened"
        );
        rejoin.link_back(start);
        assert!(rejoin.quiet(start + Duration::from_millis(120), false));
        assert!(
            !rejoin.quiet(start + Duration::from_millis(150), true),
            "the spec read after the gap ends the silence"
        );
        assert!(
            !rejoin.quiet(start + Duration::from_millis(160), false),
            "and it stays ended"
        );
        rejoin.link_back(start + Duration::from_secs(10));
        assert!(rejoin.quiet(start + Duration::from_millis(11_999), false));
        assert!(
            !rejoin.quiet(start + Duration::from_secs(12), false),
            "an IP nobody moved is answered again after the quiet"
        );
    }
}
