//! The IPs an active speaker stopped answering for because a standby said it
//! took them over (its probes list them as taken).
//!
//! A yield lasts while the taker keeps saying so. The taker repeats it in
//! every probe until the operator makes the move official (then this node's
//! NodeAnnouncement drops the IP and the yield is forgotten with it). When the
//! taker falls silent instead — it crashed, or its IP went back to this node
//! with no spec change here — the yield lapses after [`Yields::lasts`] and this
//! node answers again: an IP is never left with nobody answering because the
//! node that took it is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::tracker::Settings;

/// One yielded IP: to whom, and when they last claimed it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Yield {
    to: String,
    claimed: Instant,
}

/// The yields of one speaker. Pure: time is an input.
#[derive(Clone, Debug)]
pub struct Yields {
    lasts: Duration,
    yields: BTreeMap<IpAddr, Yield>,
}

impl Yields {
    /// Yields lasting ten probe intervals (and at least two seconds) past the
    /// taker's last claim: long enough for the operator to write both
    /// nodes' NodeAnnouncements after it made a takeover official, short
    /// enough that a taker's crash does not leave the IP dark for long.
    pub fn new(settings: Settings) -> Yields {
        Yields {
            lasts: (settings.interval * 10).max(Duration::from_secs(2)),
            yields: BTreeMap::new(),
        }
    }

    /// How long a yield lasts after the taker's last claim.
    pub fn lasts(&self) -> Duration {
        self.lasts
    }

    /// `by` says it took `ip`; `ours` is whether this node is active for it.
    /// Returns whether this is a new yield (this node must stop answering).
    pub fn claimed(&mut self, ip: IpAddr, by: &str, ours: bool, now: Instant) -> bool {
        match self.yields.get_mut(&ip) {
            Some(y) if y.to == by => {
                y.claimed = now;
                false
            }
            // Another taker since: the latest claim is the one that counts.
            Some(y) => {
                *y = Yield {
                    to: by.to_string(),
                    claimed: now,
                };
                false
            }
            None if ours => {
                self.yields.insert(
                    ip,
                    Yield {
                        to: by.to_string(),
                        claimed: now,
                    },
                );
                true
            }
            None => false,
        }
    }

    /// Forgets the yields the taker stopped claiming; returns the IPs given
    /// back (this node answers for them again if its spec still says so).
    pub fn lapse(&mut self, now: Instant) -> Vec<IpAddr> {
        let lasts = self.lasts;
        let gone: Vec<IpAddr> = self
            .yields
            .iter()
            .filter(|(_, y)| now.saturating_duration_since(y.claimed) > lasts)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in &gone {
            self.yields.remove(ip);
        }
        gone
    }

    /// Keeps only the yields of IPs the NodeAnnouncement still makes this
    /// node active for.
    pub fn keep_only(&mut self, active: &BTreeSet<IpAddr>) {
        self.yields.retain(|ip, _| active.contains(ip));
    }

    /// Whether `ip` is yielded.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.yields.contains_key(ip)
    }

    /// The yielded IPs and to whom.
    pub fn view(&self) -> BTreeMap<IpAddr, String> {
        self.yields
            .iter()
            .map(|(ip, y)| (*ip, y.to.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 168, 1, last])
    }

    fn yields() -> Yields {
        Yields::new(Settings {
            interval: Duration::from_millis(100),
            misses: 3,
        })
    }

    fn after(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_yield_lasts_while_the_taker_keeps_claiming() {
        let t0 = Instant::now();
        let mut y = yields();
        assert!(y.claimed(ip(10), "node-b", true, t0));
        // The taker repeats it in every probe: never given back.
        for step in 1..100 {
            assert!(!y.claimed(ip(10), "node-b", true, after(t0, step * 100)));
            assert!(y.lapse(after(t0, step * 100 + 50)).is_empty());
        }
        assert_eq!(y.view()[&ip(10)], "node-b");
    }

    #[test]
    fn a_taker_that_falls_silent_gives_the_ip_back() {
        let t0 = Instant::now();
        let mut y = yields();
        y.claimed(ip(10), "node-b", true, t0);
        y.claimed(ip(10), "node-b", true, after(t0, 100));
        // Silent from then on: still yielded within two seconds…
        assert!(y.lapse(after(t0, 2_000)).is_empty());
        assert!(y.contains(&ip(10)));
        // …and answered for again after.
        assert_eq!(y.lapse(after(t0, 2_200)), vec![ip(10)]);
        assert!(!y.contains(&ip(10)));
        // Claimed again later: yielded again.
        assert!(y.claimed(ip(10), "node-b", true, after(t0, 5_000)));
    }

    #[test]
    fn a_claim_on_an_ip_not_ours_yields_nothing() {
        let t0 = Instant::now();
        let mut y = yields();
        assert!(!y.claimed(ip(11), "node-b", false, t0));
        assert!(y.view().is_empty());
    }

    #[test]
    fn the_spec_dropping_the_ip_forgets_the_yield() {
        let t0 = Instant::now();
        let mut y = yields();
        y.claimed(ip(10), "node-b", true, t0);
        y.claimed(ip(11), "node-b", true, t0);
        y.keep_only(&BTreeSet::from([ip(11)]));
        assert_eq!(y.view().keys().copied().collect::<Vec<_>>(), vec![ip(11)]);
    }

    #[test]
    fn the_latest_taker_is_the_one_named() {
        let t0 = Instant::now();
        let mut y = yields();
        y.claimed(ip(10), "node-b", true, t0);
        assert!(!y.claimed(ip(10), "node-c", true, after(t0, 1_000)));
        assert_eq!(y.view()[&ip(10)], "node-c");
        assert!(y.lapse(after(t0, 2_500)).is_empty());
    }

    #[test]
    fn slower_probes_make_a_yield_last_longer() {
        let y = Yields::new(Settings {
            interval: Duration::from_secs(1),
            misses: 3,
        });
        assert_eq!(y.lasts(), Duration::from_secs(10));
    }
}
