//! The test control plane: a real etcd and kube-apiserver on loopback, built from
//! the Go module proxy by `e2e/scripts/build-controlplane.sh`.
//!
//! [`ControlPlane::start`] brings both up in a fresh temporary folder with its own
//! PKI and kubeconfig and waits for `/readyz`; dropping it stops both and removes
//! the folder. [`ControlPlane::detach`] leaves them running for `make cluster-up`;
//! [`stop_detached`] ends them.

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::pki::write_pki;

/// The Service CIDRs of the test cluster: dual stack, IPv4 first.
pub const SERVICE_CIDRS: &str = "10.96.0.0/16,fd00:10:96::/112";

/// The workspace root (the folder holding `Cargo.toml` and `Makefile`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The folder holding kube-apiserver, etcd and kubectl: `$FERROLB_CONTROLPLANE_BIN`
/// if set, else what the build script prints (it builds once per pin).
pub fn binaries() -> Result<PathBuf> {
    built_by("FERROLB_CONTROLPLANE_BIN", "build-controlplane.sh")
}

/// The folder `$env` names, else the one `e2e/scripts/<script>` prints on its
/// last line (it builds once per pin).
pub fn built_by(env: &str, script: &str) -> Result<PathBuf> {
    if let Ok(dir) = std::env::var(env) {
        return Ok(PathBuf::from(dir));
    }
    let script = workspace_root().join("e2e/scripts").join(script);
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}); see its output above",
            script.display(),
            out.status
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout.lines().last().unwrap_or_default().trim().to_string();
    if dir.is_empty() {
        bail!("{} printed no folder", script.display());
    }
    Ok(PathBuf::from(dir))
}

/// Starts `command` in the background, its output into `log`, in its own
/// process group: Ctrl-C in a terminal does not reach it, and stopping the
/// group takes everything it started.
pub fn spawn_logged(mut command: Command, log: &Path) -> Result<Child> {
    let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {:?}", command.get_program()))
}

/// etcd's flags for a single throwaway member keeping its data in
/// `dir/etcd`, serving clients on loopback port `client`.
pub fn etcd_args(dir: &Path, client: u16, peer: u16) -> Vec<String> {
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    vec![
        "--name=default".into(),
        format!("--data-dir={}", dir.join("etcd").display()),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=default={peer_url}"),
        // A throwaway cluster: durability costs seconds per test.
        "--unsafe-no-fsync=true".into(),
        "--log-level=warn".into(),
    ]
}

/// `N` distinct free ports (all held while they are picked, so none repeats;
/// another process may still take one before we bind it: see `start`).
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut ports = [0u16; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// A running etcd + kube-apiserver.
pub struct ControlPlane {
    dir: PathBuf,
    bin: PathBuf,
    children: Vec<Child>,
    /// The kubeconfig of the `system:masters` admin user.
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// How long the apiserver took from spawn to `/readyz` answering `ok`.
    pub ready_after: Duration,
    detached: bool,
    /// kube-apiserver's flags, for [`ControlPlane::restart_apiserver`].
    apiserver_args: Vec<String>,
}

impl ControlPlane {
    /// Starts a control plane in a new temporary folder. Its ports are picked
    /// free and then bound by etcd and the apiserver; a test starting at the
    /// same moment can take one in between, so a start that fails on a port
    /// in use is tried again with new ports (twice at most).
    pub fn start() -> Result<ControlPlane> {
        let mut tries = 0;
        loop {
            let dir = tempfile::Builder::new()
                .prefix("ferrolb-cp-")
                .tempdir()?
                .keep();
            match Self::start_in(&dir) {
                Err(e) if tries < 2 && e.to_string().contains("address already in use") => {
                    tries += 1;
                    eprintln!(
                        "control plane: a port was taken before it was bound; again with new ports"
                    );
                }
                result => return result,
            }
        }
    }

    /// Starts a control plane keeping its state, certificates, kubeconfig and logs
    /// in `dir` (created if missing).
    pub fn start_in(dir: &Path) -> Result<ControlPlane> {
        let bin = binaries()?;
        fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let pki = write_pki(&dir)?;
        let [etcd_port, peer_port, api_port] = free_ports()?;
        let server = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = dir.join("kubeconfig");
        fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: ferrolb-test\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: ferrolb-test\n  context:\n    cluster: ferrolb-test\n    user: admin\ncurrent-context: ferrolb-test\n",
                ca = pki.ca_cert.display(),
                cert = pki.admin_cert.display(),
                key = pki.admin_key.display(),
            ),
        )?;
        let mut plane = ControlPlane {
            dir: dir.clone(),
            bin: bin.clone(),
            children: Vec::new(),
            kubeconfig,
            server,
            ready_after: Duration::ZERO,
            detached: false,
            apiserver_args: Vec::new(),
        };
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        plane.spawn("etcd", &etcd_args(&dir, etcd_port, peer_port))?;
        let started = Instant::now();
        plane.apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            // The kubernetes Service endpoints may not be loopback; nothing
            // here needs them.
            "--endpoint-reconciler-type=none".into(),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", dir.display()),
            format!("--tls-cert-file={}", pki.serving_cert.display()),
            format!("--tls-private-key-file={}", pki.serving_key.display()),
            format!("--client-ca-file={}", pki.ca_cert.display()),
            format!(
                "--service-account-key-file={}",
                pki.service_account_pub.display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                pki.service_account_key.display()
            ),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-cluster-ip-range={SERVICE_CIDRS}"),
            "--authorization-mode=RBAC".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
            "--v=1".into(),
        ];
        plane.spawn("kube-apiserver", &plane.apiserver_args.clone())?;
        plane.wait_ready(Duration::from_secs(120))?;
        plane.ready_after = started.elapsed();
        Ok(plane)
    }

    /// Stops kube-apiserver (SIGTERM, as a static Pod's restart does), keeps
    /// it down for `down` (clients get connection refused: their watches
    /// fail and retry), starts it again with the same flags and waits until
    /// it is ready. Its earlier log is kept as `kube-apiserver.log.1`.
    pub fn restart_apiserver(&mut self, down: Duration) -> Result<()> {
        let pid = self
            .pid("kube-apiserver")
            .context("no kube-apiserver pid")?;
        let index = self
            .children
            .iter()
            .position(|c| c.id() == pid)
            .context("kube-apiserver is not ours")?;
        let mut child = self.children.remove(index);
        stop(pid);
        child.wait()?;
        let log = self.dir.join("kube-apiserver.log");
        fs::rename(&log, log.with_extension("log.1"))?;
        std::thread::sleep(down);
        let args = self.apiserver_args.clone();
        self.spawn("kube-apiserver", &args)?;
        self.wait_ready(Duration::from_secs(120))
    }

    /// The process ID of one of its processes (`etcd`, `kube-apiserver`).
    pub fn pid(&self, name: &str) -> Option<u32> {
        fs::read_to_string(self.dir.join(format!("{name}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn spawn(&mut self, name: &str, args: &[String]) -> Result<()> {
        let mut command = Command::new(self.bin.join(name));
        command.args(args);
        let child = spawn_logged(command, &self.dir.join(format!("{name}.log")))?;
        fs::write(self.dir.join(format!("{name}.pid")), child.id().to_string())?;
        self.children.push(child);
        Ok(())
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            for child in &mut self.children {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "a control plane process exited early ({status}):\n{}",
                        self.log_tails()
                    );
                }
            }
            let out = self.kubectl(&["get", "--raw", "/readyz"])?;
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "kube-apiserver not ready after {limit:?}: {}\n{}",
                    String::from_utf8_lossy(&out.stderr).trim(),
                    self.log_tails()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of each process's log, for error messages (the folder is
    /// removed when a failed start drops this value).
    fn log_tails(&self) -> String {
        let mut text = String::new();
        for name in ["etcd", "kube-apiserver"] {
            let log = fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            text.push_str(&format!("--- {name}.log (last lines)\n"));
            for line in &lines[lines.len().saturating_sub(15)..] {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// The folder holding state, certificates and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of the real kubectl built with the control plane.
    pub fn kubectl_path(&self) -> PathBuf {
        self.bin.join("kubectl")
    }

    /// A kubectl command aimed at this control plane.
    pub fn kubectl_command(&self) -> Command {
        let mut command = Command::new(self.kubectl_path());
        command.arg(format!("--kubeconfig={}", self.kubeconfig.display()));
        command
    }

    /// Runs kubectl with `args` and returns what it printed.
    pub fn kubectl(&self, args: &[&str]) -> Result<Output> {
        self.kubectl_command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running kubectl")
    }

    /// A kube client for the admin user.
    pub async fn client(&self) -> Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Leaves the processes running after this value is dropped; their PIDs stay
    /// in the folder for [`stop_detached`].
    pub fn detach(mut self) -> PathBuf {
        self.detached = true;
        self.dir.clone()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        // The apiserver first, so it does not log etcd going away.
        for child in self.children.iter_mut().rev() {
            stop(child.id());
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// SIGTERM to the process group, then SIGKILL if it is still there after 10 s.
fn stop(pid: u32) {
    let group = Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) && Instant::now() < deadline {
        // A child of ours stays a zombie until waited for; `alive` sees it as
        // gone only after the caller's wait, so poll briefly and move on.
        if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat"))
            && stat.split_whitespace().nth(2) == Some("Z")
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid) {
        let _ = killpg(group, Signal::SIGKILL);
    }
}

/// Stops a control plane left running by [`ControlPlane::detach`] in `dir` and
/// removes the folder. Returns whether one was running.
pub fn stop_detached(dir: &Path) -> Result<bool> {
    let mut found = false;
    for name in ["kube-apiserver", "etcd"] {
        let pid_file = dir.join(format!("{name}.pid"));
        if let Ok(text) = fs::read_to_string(&pid_file)
            && let Ok(pid) = text.trim().parse::<u32>()
            && alive(pid)
        {
            found = true;
            stop(pid);
        }
    }
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(found)
}
