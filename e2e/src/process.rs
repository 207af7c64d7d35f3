//! ferrolb binaries run as real processes against the test control plane.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::controlplane::workspace_root;

/// The path of a workspace binary built by `cargo build` (`make test` builds
/// them before the tests run).
pub fn binary(name: &str) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let path = target.join("debug").join(name);
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
}

impl Process {
    /// Starts `name` with `args`, talking to the cluster of `kubeconfig`.
    pub fn start(name: &str, args: &[String], kubeconfig: &Path, log: PathBuf) -> Result<Process> {
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(binary(name)?)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,ferrolb_operator=debug")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Process { child, log })
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
