//! ferrolb binaries run as real processes against the test control plane.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::controlplane::workspace_root;

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Where the workspace binaries are: `FERROLB_BIN_DIR`, else the debug
/// build (`CARGO_TARGET_DIR` honoured).
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("FERROLB_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"))
            .join("debug"),
    }
}

/// The path of a workspace binary built by `cargo build` (`make test` builds
/// them before the tests run); `FERROLB_BIN_DIR` points elsewhere, such as
/// `target/release` for the load drivers' figures.
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = bin_dir().join(name);
    if !path.exists() {
        bail!(
            "{} is not built: run `cargo build --workspace --bins` (make test does)",
            path.display()
        );
    }
    Ok(path)
}

/// A running ferrolb process; killed when dropped. Its output goes to a log
/// file kept next to the control plane's.
pub struct Process {
    child: Child,
    /// The log file.
    pub log: PathBuf,
    /// Where it serves `/metrics`, when it does.
    pub metrics: Option<SocketAddr>,
}

impl Process {
    /// Starts the program at `path` with `args`, talking to the cluster of
    /// `kubeconfig`.
    pub fn start(path: &Path, args: &[String], kubeconfig: &Path, log: PathBuf) -> Result<Process> {
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(path)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,ferrolb_operator=debug")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;
        Ok(Process {
            child,
            log,
            metrics: None,
        })
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal.
    pub fn signal(&self, signal: Signal) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), signal);
    }

    /// Kills it at once (SIGKILL), as a crash would, and waits for it.
    pub fn kill(mut self) {
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// GET `path` on its metrics address: the status line and the body
    /// (plain HTTP/1.0 on loopback, no client library needed).
    pub fn get(&self, path: &str) -> Result<(String, String)> {
        let addr = self.metrics.context("this process serves no metrics")?;
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let (head, body) = response.split_once("\r\n\r\n").context("no HTTP body")?;
        let status = head.lines().next().unwrap_or_default().to_string();
        Ok((status, body.to_string()))
    }

    /// Whether `/readyz` answers 200.
    pub fn ready(&self) -> bool {
        self.get("/readyz")
            .is_ok_and(|(status, _)| status.contains(" 200"))
    }

    /// Its `/metrics` page.
    pub fn scrape(&self) -> Result<String> {
        Ok(self.get("/metrics")?.1)
    }

    /// The value of one sample line of `/metrics`, such as
    /// `ferrolb_operator_leader` or `ferrolb_allocations_total`.
    pub fn metric(&self, series: &str) -> Result<f64> {
        let page = self.scrape()?;
        page.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .with_context(|| format!("no {series} in:\n{page}"))?
            .trim()
            .parse()
            .with_context(|| format!("{series} is not a number"))
    }

    /// What it logged so far.
    pub fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }
}
