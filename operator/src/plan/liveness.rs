//! Is a speaker (or the leader) still alive? Judged only on what this
//! process itself observed, on its own monotonic clock:
//!
//! - A Lease counts as renewed when this process *sees* its renewal (a new
//!   `renewTime` or holder), not at the `renewTime` it carries: that is the
//!   renewer's wall clock, and two machines' wall clocks are never compared.
//!   A Lease first seen now counts as renewed now. It expires one Lease
//!   duration after the last renewal seen. This is the rule of
//!   [`ferrolb_api::lease`], which the leader election and `kubectl ferrolb
//!   doctor` read Leases by too; what liveness adds is the next point.
//! - The operator's own lack of news never expires anybody. When no Lease
//!   event came for [`SILENCE`] (the apiserver is away, or the watch is dead),
//!   or the watch failed since its last event (a watch error is no news: it
//!   says nothing about renewals), nothing expires; when news comes back
//!   after such a gap, every Lease gets a whole duration from then to show a
//!   renewal before it may expire.
//!
//! Pure: the time is an input, so tests replay outages and clock steps.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ferrolb_api::lease::Sighting;

/// With no Lease event for this long, the operator has no news: speakers
/// renew every few seconds, so silence means the apiserver or the watch is
/// away, not that every speaker died at once.
pub const SILENCE: Duration = Duration::from_secs(10);

/// A Lease as liveness reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    /// The Lease's name.
    pub name: String,
    /// What changes with each renewal (renew time and holder, as text);
    /// `None` for a Lease never acquired or released (no holder).
    pub renewal: Option<String>,
    /// How long it holds without renewal.
    pub duration: Duration,
}

/// When the operator last heard from the apiserver about Leases, whether
/// its Lease watch has failed since, and when news came back after the last
/// gap or failure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct News {
    last: Option<Instant>,
    resumed: Option<Instant>,
    /// The watch failed (or began a re-list) since the last news: the store
    /// may be behind the cluster.
    stale: bool,
}

impl News {
    /// News arrived at `at`: a Lease changed, or a (re-)list completed. After
    /// a failure, or a silence longer than [`SILENCE`], it counts as news
    /// coming back.
    pub fn heard(&mut self, at: Instant) {
        if self.stale
            || self
                .last
                .is_some_and(|last| at.saturating_duration_since(last) > SILENCE)
        {
            self.resumed = Some(at);
        }
        self.stale = false;
        self.last = Some(self.last.map_or(at, |last| last.max(at)));
    }

    /// The Lease watch failed, or began a re-list: an error from a watch is
    /// no news (a watch failing for a minute is a minute of silence, not of
    /// speakers not renewing), and the store may be behind until news comes.
    pub fn failed(&mut self) {
        self.stale = true;
    }

    /// Why nothing may expire at `now` for lack of news, if so: the watch
    /// failed since the last news, or no news for longer than [`SILENCE`]
    /// (or none ever).
    pub fn silent(&self, now: Instant) -> Option<&'static str> {
        if self.stale {
            Some("the Lease watch failed or is re-listing: no speaker is expired until it is back")
        } else if self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) > SILENCE)
        {
            Some("no Lease news from the apiserver: no speaker is expired until it comes back")
        } else {
            None
        }
    }

    /// When news last came back after a gap or a failure.
    pub fn resumed(&self) -> Option<Instant> {
        self.resumed
    }
}

/// Which Leases are alive, remembered from pass to pass.
#[derive(Clone, Debug, Default)]
pub struct Liveness {
    seen: BTreeMap<String, Sighting>,
}

/// What [`Liveness::judge`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Judged {
    /// The Leases alive now, by name.
    pub alive: BTreeSet<String>,
    /// How long until the first of them may expire unless renewed (`None`
    /// while nothing can expire: none alive, or no news).
    pub next: Option<Duration>,
    /// Why nothing expires now, when that is so because of the operator's own
    /// lack of news (for the log).
    pub holding: Option<&'static str>,
}

impl Liveness {
    /// Records the renewals in `leases` as seen at `now`, and judges each.
    pub fn judge(&mut self, leases: &[LeaseView], news: &News, now: Instant) -> Judged {
        let names: BTreeSet<&str> = leases.iter().map(|l| l.name.as_str()).collect();
        self.seen.retain(|name, _| names.contains(name.as_str()));
        let holding = news.silent(now);
        let silent = holding.is_some();
        let mut judged = Judged {
            holding,
            ..Judged::default()
        };
        for lease in leases {
            let Some(renewal) = &lease.renewal else {
                self.seen.remove(&lease.name);
                continue;
            };
            let seen = self
                .seen
                .entry(lease.name.clone())
                .or_insert_with(|| Sighting::new(renewal, now))
                .see(renewal, now);
            // A whole duration from the last renewal seen, or from news
            // coming back after a gap, whichever is later.
            let from = news.resumed().map_or(seen, |back| back.max(seen));
            let ends = from + lease.duration;
            if silent || now < ends {
                judged.alive.insert(lease.name.clone());
                if !silent {
                    let left = ends - now;
                    judged.next = Some(judged.next.map_or(left, |n| n.min(left)));
                }
            }
        }
        if !silent
            && news
                .resumed()
                .is_some_and(|back| leases.iter().any(|l| now < back + l.duration))
        {
            judged.holding = Some(
                "Lease news came back after a gap: every speaker gets a whole Lease duration to renew",
            );
        }
        judged
    }

    /// Forgets a Lease (so that its next sighting counts as a renewal).
    pub fn forget(&mut self, name: &str) {
        self.seen.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    fn lease(name: &str, renewal: &str) -> LeaseView {
        LeaseView {
            name: name.to_string(),
            renewal: Some(renewal.to_string()),
            duration: LEASE,
        }
    }

    /// A clock: seconds after a start.
    struct Clock(Instant);
    impl Clock {
        fn at(&self, seconds: f64) -> Instant {
            self.0 + Duration::from_secs_f64(seconds)
        }
    }

    fn names(judged: &Judged) -> Vec<&str> {
        judged.alive.iter().map(String::as_str).collect()
    }

    #[test]
    fn a_lease_expires_one_duration_after_its_last_renewal_was_seen() {
        let t = Clock(Instant::now());
        let (mut live, mut news) = (Liveness::default(), News::default());
        // Both renew every 5 s until a stops at 10 s; b goes on.
        let mut last = Judged::default();
        for step in 0..=60 {
            let s = f64::from(step) * 0.5;
            news.heard(t.at(s));
            let a = format!("a-{}", (s.min(10.0) / 5.0).floor());
            let b = format!("b-{}", (s / 5.0).floor());
            last = live.judge(&[lease("a", &a), lease("b", &b)], &news, t.at(s));
            if s < 25.0 {
                assert_eq!(names(&last), ["a", "b"], "at {s} s");
            } else {
                assert_eq!(names(&last), ["b"], "at {s} s");
            }
        }
        assert!(last.holding.is_none());
    }

    #[test]
    fn the_renewers_wall_clock_is_never_read_so_a_clock_ahead_or_behind_changes_nothing() {
        // The renewal text carries a renewTime an hour off: only its change
        // counts, when it is seen.
        let t = Clock(Instant::now());
        let (mut live, mut news) = (Liveness::default(), News::default());
        news.heard(t.at(0.0));
        let judged = live.judge(
            &[
                lease("a", "2026-12-06T23:00:00Z"),
                lease("b", "1999-01-01T00:00:00Z"),
            ],
            &news,
            t.at(0.0),
        );
        assert_eq!(names(&judged), ["a", "b"]);
        assert_eq!(judged.next, Some(LEASE));
    }

    #[test]
    fn an_apiserver_outage_expires_nobody_and_news_coming_back_gives_a_whole_duration() {
        let t = Clock(Instant::now());
        let (mut live, mut news) = (Liveness::default(), News::default());
        news.heard(t.at(0.0));
        assert_eq!(
            names(&live.judge(&[lease("a", "1"), lease("b", "1")], &news, t.at(0.0))),
            ["a", "b"]
        );
        // The apiserver freezes for 30 s: no renewal is seen, no event comes.
        for s in [5.0, 14.0, 16.0, 29.0] {
            let judged = live.judge(&[lease("a", "1"), lease("b", "1")], &news, t.at(s));
            assert_eq!(names(&judged), ["a", "b"], "at {s} s");
        }
        assert!(
            live.judge(&[lease("a", "1"), lease("b", "1")], &news, t.at(29.0))
                .holding
                .is_some()
        );
        // Back at 30 s: the watch replays, but a's renewal lands only at 33 s
        // and b never renews again (it died meanwhile).
        news.heard(t.at(30.0));
        let judged = live.judge(&[lease("a", "1"), lease("b", "1")], &news, t.at(30.5));
        assert_eq!(names(&judged), ["a", "b"], "the first pass after the gap");
        assert!(judged.holding.is_some());
        for s in [33.0, 40.0, 44.9] {
            news.heard(t.at(s));
            let judged = live.judge(&[lease("a", "2"), lease("b", "1")], &news, t.at(s));
            assert_eq!(names(&judged), ["a", "b"], "at {s} s");
        }
        // 15 s after news came back, b has had its chance.
        news.heard(t.at(45.5));
        let judged = live.judge(&[lease("a", "3"), lease("b", "1")], &news, t.at(45.5));
        assert_eq!(names(&judged), ["a"]);
    }

    #[test]
    fn watch_errors_during_an_outage_are_no_news_and_the_relist_gives_a_whole_duration() {
        // What a chaos run found: the apiserver restarts for 25 s. Its watch
        // errors arrive every second or so; once they counted as news, the
        // grace began with one of them, during the outage, and ran out just
        // after the apiserver came back, before any speaker could renew: the
        // leader then expired every speaker and withdrew every IP.
        let t = Clock(Instant::now());
        let (mut live, mut news) = (Liveness::default(), News::default());
        let before = [lease("a", "1"), lease("b", "1")];
        news.heard(t.at(0.0));
        live.judge(&before, &news, t.at(0.0));
        for s in [1.0, 2.0, 4.0, 8.0, 12.0, 15.5, 20.0, 24.0] {
            news.failed();
            let judged = live.judge(&before, &news, t.at(s));
            assert_eq!(names(&judged), ["a", "b"], "at {s} s, during the outage");
            assert!(judged.holding.is_some());
            assert_eq!(judged.next, None);
        }
        // Back at 25 s: the old resource version is gone, the watch re-lists
        // (Init, the objects, InitDone) and finds the Leases as they were.
        news.failed();
        assert_eq!(names(&live.judge(&before, &news, t.at(25.0))), ["a", "b"]);
        news.heard(t.at(25.2));
        // a renews at 27 s and then every 5 s; b's node died in the outage.
        for step in 0..=29 {
            let s = 25.2 + f64::from(step) * 0.5;
            let a = if s < 27.0 {
                "1".to_string()
            } else {
                format!("2-{}", ((s - 27.0) / 5.0).floor())
            };
            news.heard(t.at(s));
            let judged = live.judge(&[lease("a", &a), lease("b", "1")], &news, t.at(s));
            if s < 40.2 {
                assert_eq!(
                    names(&judged),
                    ["a", "b"],
                    "at {s} s: b gets 15 s from the re-list"
                );
            } else {
                assert_eq!(names(&judged), ["a"], "at {s} s");
            }
        }
    }

    #[test]
    fn a_brief_watch_error_holds_expiries_until_the_next_news_and_then_grants_a_duration() {
        let t = Clock(Instant::now());
        let (mut live, mut news) = (Liveness::default(), News::default());
        news.heard(t.at(0.0));
        live.judge(&[lease("a", "1")], &news, t.at(0.0));
        // a stops renewing at 0 s; the watch fails once at 14 s.
        news.failed();
        let judged = live.judge(&[lease("a", "1")], &news, t.at(16.0));
        assert_eq!(
            names(&judged),
            ["a"],
            "no expiry while the store may be behind"
        );
        // The watch is back at 17 s (a replayed event of another Lease):
        // a gets a whole duration from then, and is expired after it.
        news.heard(t.at(17.0));
        let judged = live.judge(&[lease("a", "1")], &news, t.at(17.0));
        assert_eq!(names(&judged), ["a"]);
        assert_eq!(judged.next, Some(LEASE));
        for s in [24.0, 31.0, 32.0] {
            news.heard(t.at(s)); // other speakers' renewals
        }
        assert!(
            live.judge(&[lease("a", "1")], &news, t.at(32.0))
                .alive
                .is_empty()
        );
    }

    #[test]
    fn a_dead_watch_is_no_news_and_expires_nobody() {
        let t = Clock(Instant::now());
        let (mut live, mut news) = (Liveness::default(), News::default());
        news.heard(t.at(0.0));
        live.judge(&[lease("a", "1")], &news, t.at(0.0));
        // No event for 5 minutes (a half-open watch): a is kept.
        let judged = live.judge(&[lease("a", "1")], &news, t.at(300.0));
        assert_eq!(names(&judged), ["a"]);
        assert_eq!(
            judged.next, None,
            "nothing to wake for while there is no news"
        );
    }

    #[test]
    fn a_lease_with_no_holder_is_not_alive_and_a_new_holder_is_a_renewal() {
        let t = Clock(Instant::now());
        let (mut live, mut news) = (Liveness::default(), News::default());
        news.heard(t.at(0.0));
        let released = LeaseView {
            renewal: None,
            ..lease("a", "")
        };
        assert!(live.judge(&[released], &news, t.at(0.0)).alive.is_empty());
        news.heard(t.at(8.0));
        live.judge(&[lease("a", "node-a 1")], &news, t.at(8.0));
        news.heard(t.at(16.0));
        let judged = live.judge(&[lease("a", "node-a 1")], &news, t.at(16.0));
        assert_eq!(judged.next, Some(Duration::from_secs(7)));
    }
}
