//! The wiring: watches feed the [`cluster`] stores; on a change (coalesced)
//! the leader takes one [`Snapshot`], the [`plan`] decides what every object
//! should say, and the [`write`] layer writes what differs. Only the leader
//! passes and writes; a new leader first rebuilds the allocator from the IPs
//! Services already show, so no IP is ever handed out twice or renumbered.
//!
//! [`Snapshot`]: crate::cluster::Snapshot

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrolb_api::constants::manager;
use ferrolb_runtime::Heard;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use tokio::sync::{Notify, watch};

use crate::cluster::{self, Stores, read};
use crate::leader::Term;
use crate::metrics::Metrics;
use crate::plan::Memory;
use crate::plan::liveness::{Liveness, News};
use crate::write::{Outcome, Retry, SLOW_RETRY, Writer};

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The `loadBalancerClass` handled besides Services without one.
    pub lb_class: String,
    /// This replica's name, in Events and the leader Lease.
    pub identity: String,
    /// Concurrent API writes.
    pub write_concurrency: usize,
    /// The namespace ferrolb runs in (speaker Leases, the failover Secret).
    pub namespace: String,
    /// Use nodes labelled `node.kubernetes.io/exclude-from-external-load-balancers`.
    pub ignore_exclude_lb: bool,
}

/// The first wait before retrying failed writes.
const RETRY_FIRST: Duration = Duration::from_secs(2);
/// The longest wait between retries.
const RETRY_LONGEST: Duration = Duration::from_secs(60);

/// How long a leader goes on with every write failing (timeouts, 5xx,
/// connection errors) before it steps down: longer than an apiserver restart
/// takes, so the leader does not change for every outage it would serve
/// through anyway.
pub const STEP_DOWN_AFTER: Duration = Duration::from_secs(30);

/// Whether the leader cannot write: passes whose writes all failed for the
/// server's reasons, without one landing, for [`STEP_DOWN_AFTER`]. A write
/// the apiserver refuses on its merits (invalid, forbidden, a conflict)
/// says nothing about this replica and does not count.
#[derive(Debug, Default)]
pub struct Unwritable {
    since: Option<Instant>,
}

impl Unwritable {
    /// Takes a pass's outcome in; true when it is time to step down (and
    /// starts counting afresh).
    pub fn after(&mut self, outcome: &Outcome, now: Instant) -> bool {
        if outcome.written > 0 || outcome.unanswered == 0 {
            self.since = None;
            return false;
        }
        let since = *self.since.get_or_insert(now);
        if now.saturating_duration_since(since) >= STEP_DOWN_AFTER {
            self.since = None;
            return true;
        }
        false
    }
}

/// Runs the controller until the process ends.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    mut leading: watch::Receiver<bool>,
    term: Term,
) -> anyhow::Result<()> {
    let notify = Arc::new(Notify::new());
    // Lease renewals (every speaker, every few seconds) wake the loop on
    // their own: a pass follows only when the set of live speakers changed,
    // or when the first live Lease may have run out.
    let lease_events = Arc::new(Notify::new());
    // When Lease news last came (stamped as it arrives, so a long pass is
    // not taken for silence), for the no-news rule of `plan::liveness`.
    let news = Arc::new(Mutex::new(News::default()));
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: manager::OPERATOR.to_string(),
            instance: Some(config.identity.clone()),
        },
    );
    let stores = Stores::watch(
        &client,
        &config.namespace,
        {
            let notify = notify.clone();
            move || notify.notify_one()
        },
        {
            let (lease_events, news) = (lease_events.clone(), news.clone());
            move |heard: Heard| {
                {
                    let mut news = news.lock().expect("news lock");
                    match heard {
                        Heard::News => news.heard(Instant::now()),
                        Heard::Listing | Heard::Failed => news.failed(),
                        Heard::Listed => {}
                    }
                }
                lease_events.notify_one();
            }
        },
        recorder.clone(),
    );
    stores.ready().await?;
    tracing::info!("caches synced");
    let options = cluster::Options {
        lb_class: config.lb_class.clone(),
        ignore_exclude_lb: config.ignore_exclude_lb,
    };
    let mut writer = Writer::new(
        client.clone(),
        recorder,
        metrics.clone(),
        term.clone(),
        config.write_concurrency,
    );
    let mut unwritable = Unwritable::default();

    let mut memory: Option<Memory> = None;
    let mut retry: Option<Instant> = None;
    // Failed writes are retried after 2 s, doubling while they keep failing
    // (up to a minute), so a persistent failure does not flood the API or the log.
    let mut backoff = RETRY_FIRST;
    let mut live_at_pass: Option<BTreeSet<String>> = None;
    let mut liveness = Liveness::default();
    let mut holding: Option<&'static str> = None;
    let mut judge = |liveness: &mut Liveness| {
        let news = *news.lock().expect("news lock");
        let judged = liveness.judge(
            &read::lease_views(&stores.leases.state()),
            &news,
            Instant::now(),
        );
        if judged.holding != holding {
            match judged.holding {
                Some(why) => tracing::warn!(why, "speaker expiries on hold"),
                None => tracing::info!("Lease news flowing again: speaker expiries resume"),
            }
            holding = judged.holding;
        }
        judged
    };
    let mut first_expiry: Option<Instant> = None;
    let mut forget_at: Option<Instant> = None;
    // A NodeAnnouncement write held back by the pacing is due.
    let mut announce_at: Option<Instant> = None;
    let until = |at: Option<Instant>| at.map(|at| at.saturating_duration_since(Instant::now()));
    loop {
        let (retry_in, expiry_in, forget_in, announce_in) = (
            until(retry),
            until(first_expiry),
            until(forget_at),
            until(announce_at),
        );
        let mut only_leases = false;
        tokio::select! {
            _ = notify.notified() => {}
            _ = lease_events.notified() => only_leases = true,
            _ = tokio::time::sleep(expiry_in.unwrap_or_default()), if expiry_in.is_some() => {
                first_expiry = None;
                only_leases = true;
            }
            _ = tokio::time::sleep(forget_in.unwrap_or_default()), if forget_in.is_some() => {
                forget_at = None;
            }
            _ = tokio::time::sleep(announce_in.unwrap_or_default()), if announce_in.is_some() => {
                announce_at = None;
            }
            changed = leading.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the leader election stopped");
                }
            }
            _ = tokio::time::sleep(retry_in.unwrap_or_default()), if retry_in.is_some() => {
                retry = None;
            }
        }
        if only_leases {
            // Renewals, or the first Lease's end come: a pass only if the
            // live speakers are not those of the last pass (a pass longer
            // than a renewal period must not start the next one by itself).
            let judged = judge(&mut liveness);
            if live_at_pass.as_ref() == Some(&judged.alive) {
                first_expiry = judged
                    .next
                    .map(|d| Instant::now() + d.max(Duration::from_millis(100)));
                metrics.passes_skipped.inc();
                continue;
            }
        }
        // No wait before a pass: a lone change is planned and written at
        // once, and the events that land while a pass runs (its writes are
        // awaited) leave one permit on `notify`, so the next pass takes them
        // all together.
        if !*leading.borrow() {
            unwritable = Unwritable::default();
            if memory.take().is_some() {
                writer.reset();
                tracing::info!("no longer the leader: stopped writing");
            }
            metrics.leader.set(0);
            continue;
        }
        metrics.leader.set(1);
        let started = Instant::now();
        let now = Timestamp::now();
        let judged = judge(&mut liveness);
        first_expiry = judged
            .next
            .map(|d| Instant::now() + d.max(Duration::from_millis(100)));
        let snapshot = stores.snapshot(&options, &judged.alive);
        live_at_pass = Some(judged.alive);
        let memory = memory
            .get_or_insert_with(|| Memory::rebuild(&snapshot).paced(crate::plan::pacing::RATE));
        let pass = memory.pass(&snapshot, now);
        for key in &pass.released {
            writer.tracker().forget_service(key);
        }
        metrics.pools(
            memory
                .allocator()
                .pools()
                .map(|p| (p.pool.name.as_str(), p)),
        );
        // A remembered sighting of another controller ending is a change too.
        let instant = |at: Timestamp| {
            let wait = at.duration_since(now);
            Instant::now()
                + if wait.is_negative() {
                    Duration::ZERO
                } else {
                    wait.unsigned_abs()
                }
        };
        forget_at = memory.next_forget().map(instant);
        announce_at = memory.next_announcement().map(instant);
        let outcome = writer.write(pass.writes).await;
        if unwritable.after(&outcome, Instant::now()) {
            tracing::error!(after = ?STEP_DOWN_AFTER, "no write has landed for this long while the apiserver answers the leader Lease: stepping down for another replica");
            term.step_down();
        }
        metrics
            .reconcile_seconds
            .observe(started.elapsed().as_secs_f64());
        if outcome.written > 0 || outcome.retry.is_some() {
            tracing::debug!(written = outcome.written, skipped = outcome.skipped, retry = ?outcome.retry, elapsed = ?started.elapsed(), "pass done");
        }
        retry = match outcome.retry {
            None | Some(Retry::WhenChanged) => {
                backoff = RETRY_FIRST;
                None
            }
            Some(Retry::NextPass) => Some(Instant::now() + Duration::from_millis(200)),
            Some(Retry::Backoff) => {
                let at = Instant::now() + backoff;
                backoff = (backoff * 2).min(RETRY_LONGEST);
                Some(at)
            }
            Some(Retry::Slowly) => Some(Instant::now() + SLOW_RETRY),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(written: usize, unanswered: usize) -> Outcome {
        Outcome {
            written,
            unanswered,
            ..Outcome::default()
        }
    }

    #[test]
    fn a_leader_steps_down_only_after_writes_fail_for_the_servers_reasons_for_long() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut unwritable = Unwritable::default();
        assert!(!unwritable.after(&outcome(0, 3), at(0)));
        assert!(!unwritable.after(&outcome(0, 1), at(20)));
        // One write landing says the replica can write: start again.
        assert!(!unwritable.after(&outcome(1, 2), at(25)));
        assert!(!unwritable.after(&outcome(0, 2), at(40)));
        assert!(!unwritable.after(&outcome(0, 2), at(69)));
        assert!(
            unwritable.after(&outcome(0, 2), at(70)),
            "30 s of nothing but failures"
        );
        assert!(
            !unwritable.after(&outcome(0, 2), at(71)),
            "counted afresh after"
        );
        // Writes the apiserver refused on their merits, or nothing to write,
        // say nothing about this replica.
        let mut refused = Unwritable::default();
        assert!(!refused.after(&outcome(0, 0), at(0)));
        assert!(!refused.after(&outcome(0, 0), at(100)));
    }
}
