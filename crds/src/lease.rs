//! One reading of "is this Lease alive?" for every ferrolb process: the
//! operator's liveness of speakers, its leader election, and `kubectl
//! ferrolb doctor`.
//!
//! - A Lease is **renewed** when its renewal (holder and renew time, as
//!   text) changes. A Lease whose holder is empty was released and is never
//!   alive. One written without a holder (an older speaker) renews by its
//!   time alone.
//! - It holds for `leaseDurationSeconds` after a renewal; a Lease without a
//!   duration holds for none.
//! - A process that watches the Lease over time ([`Sighting`]) counts that
//!   duration from when it *saw* the renewal, by its own monotonic clock:
//!   the holder's `renewTime` is never compared with the local clock, so a
//!   reader whose clock runs ahead does not expire a live holder, nor one
//!   behind keep a dead one.
//! - A one-shot reader ([`alive_at`], for the plugin, which sees the Lease
//!   once) has only the written time: alive when `renewTime` plus the
//!   duration is not before its `now`. It says so where it reports.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::jiff::Timestamp;

/// What changes at each renewal, or `None` for a released Lease (empty
/// holder, or no time at all).
pub fn renewal(spec: &LeaseSpec) -> Option<String> {
    let at = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?;
    match spec.holder_identity.as_deref() {
        Some("") => None,
        Some(holder) => Some(format!("{holder} {}", at.0)),
        None => Some(at.0.to_string()),
    }
}

/// How long the Lease holds after a renewal.
pub fn duration(spec: &LeaseSpec) -> Duration {
    Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64)
}

/// The last renewal a watching process saw, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sighting {
    renewal: String,
    at: Instant,
}

impl Sighting {
    /// A renewal first seen at `now`.
    pub fn new(renewal: &str, now: Instant) -> Sighting {
        Sighting {
            renewal: renewal.to_string(),
            at: now,
        }
    }

    /// Records `renewal` as seen at `now`: one this reader has not seen
    /// before starts the duration afresh. Returns when the renewal in force
    /// was first seen.
    pub fn see(&mut self, renewal: &str, now: Instant) -> Instant {
        if self.renewal != renewal {
            *self = Sighting::new(renewal, now);
        }
        self.at
    }
}

/// The watching reader's verdict: the Lease in `spec`, last seen as
/// `last`, is still alive at `now` (and `last` records this sighting). A
/// released Lease is not, and is forgotten.
pub fn alive_seen(last: &mut Option<Sighting>, spec: &LeaseSpec, now: Instant) -> bool {
    let Some(renewal) = renewal(spec) else {
        *last = None;
        return false;
    };
    let at = last
        .get_or_insert_with(|| Sighting::new(&renewal, now))
        .see(&renewal, now);
    now.saturating_duration_since(at) < duration(spec)
}

/// The one-shot reader's verdict: held, and its written renewal time plus
/// the duration is not before `now`.
pub fn alive_at(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(at) = renewal(spec).and(spec.renew_time.as_ref().or(spec.acquire_time.as_ref()))
    else {
        return false;
    };
    let seconds = spec.lease_duration_seconds.unwrap_or(0).max(0);
    at.0.as_second() + i64::from(seconds) >= now.as_second()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn spec(holder: Option<&str>, renewed_second: Option<i64>, seconds: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: renewed_second.map(|s| MicroTime(Timestamp::from_second(s).unwrap())),
            lease_duration_seconds: seconds,
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_renewal_is_the_holder_and_time_and_a_released_lease_has_none() {
        assert_eq!(
            renewal(&spec(Some("a"), Some(0), Some(15))).as_deref(),
            Some("a 1970-01-01T00:00:00Z")
        );
        assert_eq!(
            renewal(&spec(None, Some(0), Some(15))).as_deref(),
            Some("1970-01-01T00:00:00Z"),
            "an older speaker's Lease renews by its time alone"
        );
        assert_eq!(
            renewal(&spec(Some(""), Some(0), Some(15))),
            None,
            "released"
        );
        assert_eq!(
            renewal(&spec(Some("a"), None, Some(15))),
            None,
            "never renewed"
        );
        assert_ne!(
            renewal(&spec(Some("a"), Some(0), Some(15))),
            renewal(&spec(Some("b"), Some(0), Some(15))),
            "another holder at the same second is a renewal"
        );
    }

    #[test]
    fn a_watched_lease_lives_one_duration_from_the_renewal_seen_whatever_its_clock_says() {
        let start = Instant::now();
        let mut last = None;
        // renewTime an hour in the future or past changes nothing: only
        // when this reader saw it counts.
        for renewed in [3_600, -3_600] {
            last = None;
            let lease = spec(Some("a"), Some(renewed), Some(15));
            assert!(alive_seen(&mut last, &lease, start));
            assert!(alive_seen(
                &mut last,
                &lease,
                start + Duration::from_secs(14)
            ));
            assert!(!alive_seen(
                &mut last,
                &lease,
                start + Duration::from_secs(15)
            ));
        }
        // A renewal seen late starts the duration again.
        let renewed = spec(Some("a"), Some(7), Some(15));
        assert!(alive_seen(
            &mut last,
            &renewed,
            start + Duration::from_secs(20)
        ));
        assert!(alive_seen(
            &mut last,
            &renewed,
            start + Duration::from_secs(34)
        ));
        assert!(!alive_seen(
            &mut last,
            &renewed,
            start + Duration::from_secs(35)
        ));
        // Released: dead at once, and forgotten.
        assert!(!alive_seen(
            &mut last,
            &spec(Some(""), Some(8), Some(15)),
            start
        ));
        assert_eq!(last, None);
        // No duration: never alive.
        let mut last = None;
        assert!(!alive_seen(
            &mut last,
            &spec(Some("a"), Some(0), None),
            start
        ));
    }

    #[test]
    fn a_lease_read_once_is_alive_until_its_written_time_plus_duration() {
        let now = Timestamp::from_second(100).unwrap();
        assert!(alive_at(&spec(Some("a"), Some(90), Some(15)), now));
        assert!(alive_at(&spec(Some("a"), Some(85), Some(15)), now));
        assert!(!alive_at(&spec(Some("a"), Some(84), Some(15)), now));
        assert!(
            !alive_at(&spec(Some(""), Some(99), Some(15)), now),
            "released"
        );
        assert!(
            !alive_at(&spec(Some("a"), Some(99), None), now),
            "no duration"
        );
    }
}
