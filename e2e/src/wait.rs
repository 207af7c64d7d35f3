//! The one way e2e tests wait for something: poll a check until it holds or
//! a time limit passes, then fail naming what was awaited and the last thing
//! seen. Sync and async checks share the same policy.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// How often a check is run.
const EVERY: Duration = Duration::from_millis(100);

/// What a check answers: `Some`/`Ok` when done; `None` or `Err(what is seen
/// instead)` when not yet.
pub trait Check<T> {
    /// Done with a value, or not yet with what is seen.
    fn done(self) -> std::result::Result<T, String>;
}

impl<T> Check<T> for Option<T> {
    fn done(self) -> std::result::Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T> Check<T> for std::result::Result<T, String> {
    fn done(self) -> std::result::Result<T, String> {
        self
    }
}

fn timed_out<T>(what: &str, limit: Duration, last: &str) -> Result<T> {
    if last.is_empty() {
        bail!("timed out after {limit:?} waiting for {what}")
    }
    bail!("timed out after {limit:?} waiting for {what}; last seen: {last}")
}

/// Runs `check` every 100 ms until it is done or `limit` passed.
pub fn until<T, C: Check<T>>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> C,
) -> Result<T> {
    let start = Instant::now();
    loop {
        match check().done() {
            Ok(value) => return Ok(value),
            Err(last) if start.elapsed() > limit => return timed_out(what, limit, &last),
            Err(_) => std::thread::sleep(EVERY),
        }
    }
}

/// [`until`] for a check that awaits (the typed API client).
pub async fn until_async<T, C, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T>
where
    C: Check<T>,
    F: FnMut() -> Fut,
    Fut: Future<Output = C>,
{
    let start = Instant::now();
    loop {
        match check().await.done() {
            Ok(value) => return Ok(value),
            Err(last) if start.elapsed() > limit => return timed_out(what, limit, &last),
            Err(_) => tokio::time::sleep(EVERY).await,
        }
    }
}

/// Runs one named step of a scenario test: prints its name and time, and a
/// failure inside it fails the test naming the step.
pub fn step<T>(name: &str, body: impl FnOnce() -> T) -> T {
    println!("STEP {name}");
    let started = Instant::now();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(value) => {
            println!("STEP {name}: done in {:?}", started.elapsed());
            value
        }
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("step `{name}` failed: {why}")
        }
    }
}
