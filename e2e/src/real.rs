//! A real multi-node Kubernetes cluster on one machine, for deploying ferrolb
//! as users do: a control plane (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler) in the host namespace on a bridge address, and nodes that
//! are network namespaces on that bridge, each running its own containerd,
//! kubelet and kube-proxy, with CNI bridge networking and pod routes between
//! nodes. Images come from OCI archives imported into each node's containerd
//! (no registry). Built from the same Go module pin as the test control plane
//! (`e2e/scripts/build-controlplane.sh`, `build-nodes.sh`).
//!
//! Every name carries the cluster's slot `N` (0–9): bridge `flrbrN`,
//! namespaces `flrN-NODE`, cgroups `/flrN-NODE`, node network
//! `10.210.N.0/24`, pods `10.211.(16N+i).0/24`, Services `10.212.16N.0/20`;
//! two clusters run side by side in different slots. Before any daemon
//! starts, the host gets `unreachable` routes for all of `10.210.0.0/15`,
//! `10.212.0.0/14` (every range a cluster or its tests use: nodes, pods,
//! Services, pools, routers, clients), then specific routes into the bridge:
//! nothing a cluster sends can leave the machine. [`sweep`] removes a slot
//! whatever state a killed run left — by cgroup, namespace prefix and mount
//! point, not only by pid files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::controlplane::{binaries, built_by, etcd_args, spawn_logged};
use crate::netns::ip;
use crate::pki::Authority;

/// The covering ranges routed `unreachable` in the host namespace: node
/// networks and pods (10.210–211), Services, pools, routers and clients
/// (10.212–215).
pub const HOST_UNREACHABLE: [&str; 2] = ["10.210.0.0/15", "10.212.0.0/14"];
/// The metric of those routes (so they are recognised and removed with the
/// last cluster).
const UNREACHABLE_METRIC: &str = "4210";
/// Slots, so several clusters can run at once.
const SLOTS: u8 = 10;

/// kube-proxy's mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// iptables rules (the default of most distributions).
    Iptables,
    /// nftables rules.
    Nftables,
}

impl ProxyMode {
    fn name(self) -> &'static str {
        match self {
            ProxyMode::Iptables => "iptables",
            ProxyMode::Nftables => "nftables",
        }
    }
}

/// What to start.
#[derive(Clone, Debug)]
pub struct Options {
    /// Node count.
    pub nodes: usize,
    /// kube-proxy's mode.
    pub proxy: ProxyMode,
    /// OCI archives imported into every node (the pause image among them).
    pub images: Vec<PathBuf>,
    /// The sandbox image reference.
    pub sandbox_image: String,
    /// Where to keep state, certificates and logs (created; removed on down).
    pub dir: PathBuf,
}

/// The addresses of one slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(pub u8);

impl Slot {
    /// The bridge in the host namespace.
    pub fn bridge(self) -> String {
        format!("flrbr{}", self.0)
    }
    /// The bridge's (and the apiserver's) address.
    pub fn api_ip(self) -> String {
        format!("10.210.{}.1", self.0)
    }
    /// Node `i`'s (1-based) address.
    pub fn node_ip(self, i: usize) -> String {
        format!("10.210.{}.{}", self.0, 10 + i)
    }
    /// Another host on the node network (router, client): `.host`.
    pub fn host_ip(self, host: u8) -> String {
        format!("10.210.{}.{host}", self.0)
    }
    /// The node network.
    pub fn node_net(self) -> String {
        format!("10.210.{}.0/24", self.0)
    }
    /// Node `i`'s pod range.
    pub fn pod_cidr(self, i: usize) -> String {
        format!("10.211.{}.0/24", usize::from(self.0) * 16 + i)
    }
    /// All pods.
    pub fn cluster_cidr(self) -> String {
        format!("10.211.{}.0/20", usize::from(self.0) * 16)
    }
    /// Services.
    pub fn service_cidr(self) -> String {
        format!("10.212.{}.0/20", usize::from(self.0) * 16)
    }
    /// The `kubernetes` Service's ClusterIP.
    pub fn kubernetes_ip(self) -> String {
        format!("10.212.{}.1", usize::from(self.0) * 16)
    }
    /// A range for test pools and router networks: `10.213.N.0/24`.
    pub fn spare(self) -> String {
        format!("10.213.{}.0/24", self.0)
    }
    /// The network namespace of node `name`.
    pub fn namespace(self, name: &str) -> String {
        format!("flr{}-{name}", self.0)
    }
    /// The prefix of everything in this slot.
    pub fn prefix(self) -> String {
        format!("flr{}-", self.0)
    }
}

/// A node of the cluster.
#[derive(Clone, Debug)]
pub struct RealNode {
    /// Its name (the Node object's).
    pub name: String,
    /// Its network namespace.
    pub namespace: String,
    /// Its address on the bridge.
    pub ip: String,
    /// Its pod range.
    pub pod_cidr: String,
    /// Its folder.
    pub dir: PathBuf,
}

/// A running cluster; dropping it takes it down.
pub struct RealCluster {
    /// Its slot.
    pub slot: Slot,
    /// Its folder.
    pub dir: PathBuf,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// kubectl's path.
    pub kubectl_bin: PathBuf,
    /// The nodes.
    pub nodes: Vec<RealNode>,
    /// Time to all nodes Ready.
    pub ready_after: Duration,
    node_bin: PathBuf,
    cp_bin: PathBuf,
    options: Options,
    detached: bool,
}

/// The folder with kubelet, kube-proxy and kube-scheduler
/// (`$FERROLB_NODE_BIN`, or what `e2e/scripts/build-nodes.sh` prints).
pub fn node_binaries() -> Result<PathBuf> {
    built_by("FERROLB_NODE_BIN", "build-nodes.sh")
}

fn run(program: &str, args: &[&str]) -> Result<Output> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))
}

fn run_ok(program: &str, args: &[&str]) -> Result<String> {
    let out = run(program, args)?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The cgroup v1 hierarchies (or the single v2 one) a node's cgroups live in.
fn hierarchies() -> Vec<PathBuf> {
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if unified {
        return vec![PathBuf::from("/sys/fs/cgroup")];
    }
    fs::read_dir("/sys/fs/cgroup")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n != "unified"))
                .collect()
        })
        .unwrap_or_default()
}

/// Every process in cgroups named with `prefix`, in every hierarchy.
fn cgroup_pids(prefix: &str) -> Vec<i32> {
    fn walk(dir: &Path, out: &mut Vec<i32>) {
        if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.path().is_dir() {
                    walk(&entry.path(), out);
                }
            }
        }
    }
    let mut pids = Vec::new();
    for hierarchy in hierarchies() {
        if let Ok(entries) = fs::read_dir(&hierarchy) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(prefix) {
                    walk(&entry.path(), &mut pids);
                }
            }
        }
    }
    pids.sort();
    pids.dedup();
    pids
}

/// Removes cgroups named with `prefix`, deepest first.
fn remove_cgroups(prefix: &str) {
    fn remove(dir: &Path) {
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.path().is_dir() {
                    remove(&entry.path());
                }
            }
        }
        let _ = fs::remove_dir(dir);
    }
    for hierarchy in hierarchies() {
        if let Ok(entries) = fs::read_dir(&hierarchy) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(prefix) {
                    remove(&entry.path());
                }
            }
        }
    }
}

/// Creates cgroup `name` in every hierarchy (cpuset needs its cpus and mems
/// filled in before a process may join).
fn make_cgroup(name: &str) -> Result<()> {
    for hierarchy in hierarchies() {
        let dir = hierarchy.join(name.trim_start_matches('/'));
        fs::create_dir_all(&dir)?;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let parent = dir.parent().unwrap_or(&hierarchy).join(file);
            if let Ok(value) = fs::read_to_string(&parent) {
                let _ = fs::write(dir.join(file), value.trim());
            }
        }
    }
    Ok(())
}

/// Moves `pid` into cgroup `name` in every hierarchy.
fn join_cgroup(name: &str, pid: u32) {
    for hierarchy in hierarchies() {
        let _ = fs::write(
            hierarchy
                .join(name.trim_start_matches('/'))
                .join("cgroup.procs"),
            pid.to_string(),
        );
    }
}

/// Removes everything of slot `slot` — processes (by cgroup and by the pid
/// files under `dir`), mounts under `dir`, namespaces, CNI state, the
/// bridge, routes, cgroups — whatever a killed run left behind. Then the
/// host's `unreachable` routes go too when no other cluster runs.
pub fn sweep(slot: Slot, dir: Option<&Path>) {
    let prefix = slot.prefix();
    if let Some(dir) = dir {
        for pid_file in glob_pids(dir) {
            if let Ok(pid) = fs::read_to_string(&pid_file)
                .unwrap_or_default()
                .trim()
                .parse::<i32>()
            {
                let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
    for _ in 0..50 {
        let pids = cgroup_pids(&prefix);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(dir) = dir {
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| Path::new(m).starts_with(dir))
            .collect();
        under.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in under {
            let _ = nix::mount::umount2(mount, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let namespaces = run_ok("ip", &["netns", "list"]).unwrap_or_default();
    for line in namespaces.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let orphan_pod = name.starts_with("cni-")
            && run_ok("ip", &["netns", "pids", name]).is_ok_and(|p| p.trim().is_empty());
        if name.starts_with(&prefix) || orphan_pod {
            let _ = ip(&["netns", "del", name]);
        }
    }
    if let Ok(entries) = fs::read_dir("/var/lib/cni/results") {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    // Host ends of veths whose namespace lingers (the kernel keeps a
    // namespace while orphaned sockets in it still retransmit): deleting
    // the host end removes the pair.
    let links = run_ok("ip", &["-o", "link", "show"]).unwrap_or_default();
    let ours = format!("flr{}", slot.0);
    for line in links.lines() {
        let name = line
            .split(':')
            .nth(1)
            .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
            .unwrap_or_default();
        let veth = name
            .strip_prefix(&ours)
            .is_some_and(|rest| rest.starts_with('v') || rest.starts_with('c'));
        if veth {
            let _ = ip(&["link", "del", &name]);
        }
    }
    let _ = ip(&["link", "del", &slot.bridge()]);
    remove_cgroups(&prefix);
    if let Some(dir) = dir {
        let _ = fs::remove_dir_all(dir);
    }
    let others = run_ok("ip", &["-o", "link", "show", "type", "bridge"]).unwrap_or_default();
    if !others.contains("flrbr") {
        for range in HOST_UNREACHABLE {
            let _ = ip(&[
                "route",
                "del",
                "unreachable",
                range,
                "metric",
                UNREACHABLE_METRIC,
            ]);
        }
    }
}

fn glob_pids(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        if let Ok(entries) = fs::read_dir(&folder) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir()
                    && !path.is_symlink()
                    && path.file_name() != Some("containerd".as_ref())
                {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "pid") {
                    found.push(path);
                }
            }
        }
    }
    found
}

/// Adds the host's `unreachable` routes (idempotent).
fn fence_host() -> Result<()> {
    for range in HOST_UNREACHABLE {
        let out = run(
            "ip",
            &[
                "route",
                "add",
                "unreachable",
                range,
                "metric",
                UNREACHABLE_METRIC,
            ],
        )?;
        let error = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && !error.contains("File exists") {
            bail!("ip route add unreachable {range}: {error}");
        }
    }
    Ok(())
}

fn kubeconfig(path: &Path, server: &str, ca: &Path, cert: &Path, key: &Path) -> Result<()> {
    fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: real\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: user\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: real\n  context: {{cluster: real, user: user}}\ncurrent-context: real\n",
            ca.display(),
            cert.display(),
            key.display()
        ),
    )?;
    Ok(())
}

/// Starts a daemon in its own process group, logging to `dir/NAME.log`, its
/// pid in `dir/NAME.pid`, inside network namespace `netns` (by `nsenter
/// --net`: `ip netns exec` would also give it a private mount namespace with
/// a fresh /sys, hiding the cgroup mounts) and cgroup `cgroup` when given.
fn daemon(
    dir: &Path,
    name: &str,
    program: &Path,
    args: &[String],
    netns: Option<&str>,
    cgroup: Option<&str>,
) -> Result<u32> {
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/var/run/netns/{ns}")).arg(program);
            c
        }
        None => Command::new(program),
    };
    command.args(args);
    let child = spawn_logged(command, &dir.join(format!("{name}.log")))?;
    let pid = child.id();
    if let Some(cgroup) = cgroup {
        join_cgroup(cgroup, pid);
    }
    fs::write(dir.join(format!("{name}.pid")), pid.to_string())?;
    // Reaped by init once we exit; stopped by pid file or cgroup.
    std::mem::forget(child);
    Ok(pid)
}

fn stop_pid_file(path: &Path, grace: Duration) {
    let Ok(pid) = fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .parse::<i32>()
    else {
        return;
    };
    let _ = kill(Pid::from_raw(-pid), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && kill(Pid::from_raw(pid), None).is_ok() {
        if fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
    let _ = fs::remove_file(path);
}

impl RealCluster {
    /// Starts a cluster in the first free slot and waits until every node is
    /// Ready.
    pub fn start(options: Options) -> Result<RealCluster> {
        let cp_bin = binaries()?;
        let node_bin = node_binaries()?;
        fence_host()?;
        // Claiming a slot (its bridge), sweeping what a killed run left in it
        // and making the bridge again is one step under a host-wide lock:
        // another cluster starting meanwhile, in this process or another,
        // would otherwise claim the slot while its bridge is briefly gone.
        let claim = fs::File::create("/run/ferrolb-realcluster.lock")?;
        let claim = nix::fcntl::Flock::lock(claim, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .context("lock /run/ferrolb-realcluster.lock")?;
        let slot = (0..SLOTS)
            .map(Slot)
            .find(|slot| ip(&["link", "add", &slot.bridge(), "type", "bridge"]).is_ok())
            .context("no free slot: ten clusters run already (ferrolb-realcluster down)")?;
        sweep(slot, options.dir.exists().then_some(options.dir.as_path()));
        fence_host()?;
        ip(&["link", "add", &slot.bridge(), "type", "bridge"])?;
        drop(claim);
        fs::create_dir_all(&options.dir)?;
        let dir = options.dir.canonicalize()?;
        fs::write(dir.join("slot"), slot.0.to_string())?;
        let mut cluster = RealCluster {
            slot,
            kubeconfig: dir.join("admin.kubeconfig"),
            kubectl_bin: cp_bin.join("kubectl"),
            dir,
            nodes: Vec::new(),
            ready_after: Duration::ZERO,
            node_bin,
            cp_bin,
            options,
            detached: false,
        };
        let started = Instant::now();
        cluster.network()?;
        cluster.control_plane()?;
        for i in 1..=cluster.options.nodes {
            cluster.node(i)?;
        }
        cluster.wait_nodes_ready(Duration::from_secs(180))?;
        cluster.ready_after = started.elapsed();
        Ok(cluster)
    }

    fn network(&self) -> Result<()> {
        let bridge = self.slot.bridge();
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.slot.api_ip()),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", "dev", &bridge, "up"])?;
        Ok(())
    }

    fn control_plane(&mut self) -> Result<()> {
        let pki = self.dir.join("pki");
        fs::create_dir_all(&pki)?;
        let ca = Authority::new("ferrolb-real-ca")?;
        let put = |name: &str, text: &str| -> Result<PathBuf> {
            let path = pki.join(name);
            fs::write(&path, text)?;
            Ok(path)
        };
        let ca_crt = put("ca.crt", ca.pem())?;
        let ca_key = put("ca.key", &ca.key_pem())?;
        let issue = |name: &str, cn: &str, org: Option<&str>, sans: &[&str], server: bool| {
            let (cert, key) = ca.issue(cn, org, sans, server)?;
            Ok::<_, anyhow::Error>((
                put(&format!("{name}.crt"), &cert)?,
                put(&format!("{name}.key"), &key)?,
            ))
        };
        let api_ip = self.slot.api_ip();
        let kubernetes_ip = self.slot.kubernetes_ip();
        let serving = issue(
            "apiserver",
            "kube-apiserver",
            None,
            &[
                &api_ip,
                &kubernetes_ip,
                "127.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            true,
        )?;
        let admin = issue("admin", "admin", Some("system:masters"), &[], false)?;
        let kubelet_client = issue(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            Some("system:masters"),
            &[],
            false,
        )?;
        let controller_manager = issue(
            "controller-manager",
            "system:kube-controller-manager",
            None,
            &[],
            false,
        )?;
        let scheduler = issue("scheduler", "system:kube-scheduler", None, &[], false)?;
        let proxy = issue(
            "kube-proxy",
            "system:kube-proxy",
            Some("system:node-proxier"),
            &[],
            false,
        )?;
        for i in 1..=self.options.nodes {
            let name = node_name(i);
            issue(
                &format!("node-{name}"),
                &format!("system:node:{name}"),
                Some("system:nodes"),
                &[],
                false,
            )?;
        }
        let sa = rcgen::KeyPair::generate()?;
        let sa_key = put("sa.key", &sa.serialize_pem())?;
        let sa_pub = put("sa.pub", &sa.public_key_pem())?;
        let server = format!("https://{api_ip}:6443");
        kubeconfig(&self.kubeconfig, &server, &ca_crt, &admin.0, &admin.1)?;
        for (name, (cert, key)) in [
            ("controller-manager", &controller_manager),
            ("scheduler", &scheduler),
            ("kube-proxy", &proxy),
        ] {
            kubeconfig(
                &self.dir.join(format!("{name}.kubeconfig")),
                &server,
                &ca_crt,
                cert,
                key,
            )?;
        }
        let etcd_port = free_port()?;
        let peer_port = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let cp = self.dir.join("cp");
        fs::create_dir_all(&cp)?;
        let cgroup = format!("/{}control-plane", self.slot.prefix());
        make_cgroup(&cgroup)?;
        let s = |p: &Path| p.display().to_string();
        daemon(
            &cp,
            "etcd",
            &self.cp_bin.join("etcd"),
            &etcd_args(&cp, etcd_port, peer_port),
            None,
            Some(&cgroup),
        )?;
        daemon(
            &cp,
            "kube-apiserver",
            &self.cp_bin.join("kube-apiserver"),
            &[
                format!("--etcd-servers={etcd_url}"),
                format!("--bind-address={api_ip}"),
                format!("--advertise-address={api_ip}"),
                "--secure-port=6443".into(),
                format!("--cert-dir={}", cp.display()),
                format!("--tls-cert-file={}", s(&serving.0)),
                format!("--tls-private-key-file={}", s(&serving.1)),
                format!("--client-ca-file={}", s(&ca_crt)),
                format!("--kubelet-client-certificate={}", s(&kubelet_client.0)),
                format!("--kubelet-client-key={}", s(&kubelet_client.1)),
                "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
                format!("--service-account-key-file={}", s(&sa_pub)),
                format!("--service-account-signing-key-file={}", s(&sa_key)),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-cluster-ip-range={}", self.slot.service_cidr()),
                "--authorization-mode=Node,RBAC".into(),
                "--enable-admission-plugins=NodeRestriction".into(),
                // Webhooks are dialled at their endpoints (pod IPs, routed to
                // their node), not at ClusterIPs the host has no rules for.
                "--enable-aggregator-routing=true".into(),
                "--allow-privileged=true".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ],
            None,
            Some(&cgroup),
        )?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = self.kubectl(&["get", "--raw", "/readyz"])?;
            if String::from_utf8_lossy(&out.stdout).trim() == "ok" {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "kube-apiserver not ready: {}",
                    tail(&cp.join("kube-apiserver.log"))
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // What kube-controller-manager and kube-scheduler share: their
        // identity, and no serving port or leader election of their own.
        let component = |kubeconfig: &Path| -> Vec<String> {
            vec![
                format!("--kubeconfig={}", s(kubeconfig)),
                format!("--authentication-kubeconfig={}", s(kubeconfig)),
                format!("--authorization-kubeconfig={}", s(kubeconfig)),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=0".into(),
                "--leader-elect=false".into(),
                "--v=1".into(),
            ]
        };
        let cm = self.dir.join("controller-manager.kubeconfig");
        daemon(
            &cp,
            "kube-controller-manager",
            &self.cp_bin.join("kube-controller-manager"),
            &[
                component(&cm),
                vec![
                    "--use-service-account-credentials=true".into(),
                    format!("--service-account-private-key-file={}", s(&sa_key)),
                    format!("--root-ca-file={}", s(&ca_crt)),
                    format!("--cluster-signing-cert-file={}", s(&ca_crt)),
                    format!("--cluster-signing-key-file={}", s(&ca_key)),
                    format!("--cluster-cidr={}", self.slot.cluster_cidr()),
                    format!("--service-cluster-ip-range={}", self.slot.service_cidr()),
                    "--allocate-node-cidrs=false".into(),
                ],
            ]
            .concat(),
            None,
            Some(&cgroup),
        )?;
        let sched = self.dir.join("scheduler.kubeconfig");
        daemon(
            &cp,
            "kube-scheduler",
            &self.node_bin.join("kube-scheduler"),
            &component(&sched),
            None,
            Some(&cgroup),
        )?;
        Ok(())
    }

    fn node(&mut self, i: usize) -> Result<()> {
        let slot = self.slot;
        let name = node_name(i);
        let ns = slot.namespace(&name);
        let dir = self.dir.join(&name);
        fs::create_dir_all(&dir)?;
        let node_ip = slot.node_ip(i);
        let pod_cidr = slot.pod_cidr(i);
        let veth = format!("flr{}v{i}", slot.0);
        // The network: a namespace on the bridge; routes to the other nodes'
        // pods and to the Services (kube-proxy rewrites those), and no
        // default route, so nothing from a node or a pod can leave.
        ip(&["netns", "add", &ns])?;
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["link", "set", "dev", &veth, "master", &slot.bridge(), "up"])?;
        let in_ns = |args: &[&str]| -> Result<()> {
            let mut all = vec!["-n", ns.as_str()];
            all.extend_from_slice(args);
            ip(&all)
        };
        in_ns(&["link", "set", "dev", "lo", "up"])?;
        in_ns(&["addr", "add", &format!("{node_ip}/24"), "dev", "eth0"])?;
        in_ns(&["link", "set", "dev", "eth0", "up"])?;
        self.node_routes(i)?;
        for setting in [
            "net.ipv4.ip_forward=1",
            "net.bridge.bridge-nf-call-iptables=1",
            "net.ipv4.conf.all.rp_filter=0",
        ] {
            let _ = run("ip", &["netns", "exec", &ns, "sysctl", "-qw", setting]);
        }
        // The host reaches pods (the apiserver calls webhooks at pod IPs).
        ip(&["route", "replace", &pod_cidr, "via", &node_ip])?;
        if i == 1 {
            ip(&["route", "replace", &slot.service_cidr(), "via", &node_ip])?;
        }

        let cgroup = format!("/{}", ns);
        make_cgroup(&cgroup)?;
        let daemons = format!("{cgroup}/daemons");
        make_cgroup(&daemons)?;

        // containerd with its own root, state, socket and CNI configuration.
        let cni = dir.join("cni");
        fs::create_dir_all(&cni)?;
        fs::write(
            cni.join("10-bridge.conflist"),
            serde_json::to_string_pretty(&serde_json::json!({
                "cniVersion": "0.4.0",
                "name": ns,
                "plugins": [
                    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
                     "hairpinMode": true,
                     "ipam": {"type": "host-local", "dataDir": dir.join("cni-ipam"),
                              "ranges": [[{"subnet": pod_cidr}]],
                              "routes": [{"dst": "0.0.0.0/0"}]}},
                    {"type": "portmap", "capabilities": {"portMappings": true}}
                ]
            }))?,
        )?;
        let socket = dir.join("containerd.sock");
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox}"
  # root here may lack CAP_SYS_RESOURCE: runc cannot lower oom_score_adj
  # below containerd's own ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
            root = dir.join("containerd/root").display(),
            state = dir.join("containerd/state").display(),
            socket = socket.display(),
            opt = dir.join("containerd/opt").display(),
            sandbox = self.options.sandbox_image,
            cni = cni.display(),
        );
        fs::write(dir.join("containerd.toml"), config)?;
        self.start_containerd(&name, &ns, &dir)?;
        for image in &self.options.images {
            run_ok(
                "ctr",
                &[
                    "--address",
                    &socket.display().to_string(),
                    "-n",
                    "k8s.io",
                    "images",
                    "import",
                    &image.display().to_string(),
                ],
            )
            .with_context(|| format!("importing {} into {name}", image.display()))?;
        }

        // kubelet.
        let pki = self.dir.join("pki");
        let server = format!("https://{}:6443", slot.api_ip());
        kubeconfig(
            &dir.join("kubelet.kubeconfig"),
            &server,
            &pki.join("ca.crt"),
            &pki.join(format!("node-{name}.crt")),
            &pki.join(format!("node-{name}.key")),
        )?;
        fs::write(
            dir.join("kubelet.yaml"),
            format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: {cgroup}/pods
containerRuntimeEndpoint: unix://{socket}
address: {node_ip}
port: 10250
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
clusterDomain: cluster.local
resolvConf: /dev/null
failSwapOn: false
podLogsDir: {logs}
nodeStatusUpdateFrequency: 4s
evictionHard: {{memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
",
                socket = socket.display(),
                ca = pki.join("ca.crt").display(),
                logs = dir.join("pod-logs").display(),
            ),
        )?;
        make_cgroup(&format!("{cgroup}/pods"))?;
        // kube-proxy.
        fs::write(
            dir.join("kube-proxy.yaml"),
            format!(
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: {kubeconfig}}}
hostnameOverride: {name}
bindAddress: {node_ip}
clusterCIDR: {cluster}
mode: {mode}
conntrack: {{maxPerCore: 0, min: 0}}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
",
                kubeconfig = self.dir.join("kube-proxy.kubeconfig").display(),
                cluster = slot.cluster_cidr(),
                mode = self.options.proxy.name(),
            ),
        )?;
        self.start_node_daemons(&name, &ns, &dir, &node_ip)?;
        self.nodes.push(RealNode {
            name,
            namespace: ns,
            ip: node_ip,
            pod_cidr,
            dir,
        });
        Ok(())
    }

    /// Node `i`'s routes: the other nodes' pods, and the Services (which
    /// kube-proxy rewrites). A link going down takes them; [`Self::set_link`]
    /// puts them back, as a machine's network configuration would.
    fn node_routes(&self, i: usize) -> Result<()> {
        let ns = self.slot.namespace(&node_name(i));
        for other in 1..=self.options.nodes {
            if other != i {
                ip(&[
                    "-n",
                    &ns,
                    "route",
                    "replace",
                    &self.slot.pod_cidr(other),
                    "via",
                    &self.slot.node_ip(other),
                ])?;
            }
        }
        ip(&[
            "-n",
            &ns,
            "route",
            "replace",
            &self.slot.service_cidr(),
            "dev",
            "eth0",
        ])
    }

    /// Cuts (`up` false) or restores a node's link to the others.
    pub fn set_link(&self, name: &str, up: bool) -> Result<()> {
        let i = self
            .nodes
            .iter()
            .position(|n| n.name == name)
            .with_context(|| format!("no node {name}"))?
            + 1;
        let ns = self.slot.namespace(name);
        ip(&[
            "-n",
            &ns,
            "link",
            "set",
            "dev",
            "eth0",
            if up { "up" } else { "down" },
        ])?;
        if up {
            self.node_routes(i)?;
        }
        Ok(())
    }

    fn start_containerd(&self, name: &str, ns: &str, dir: &Path) -> Result<()> {
        let daemons = format!("/{ns}/daemons");
        let socket = dir.join("containerd.sock");
        let _ = fs::remove_file(&socket);
        let containerd = which("containerd")?;
        daemon(
            dir,
            "containerd",
            &containerd,
            &[format!(
                "--config={}",
                dir.join("containerd.toml").display()
            )],
            Some(ns),
            Some(&daemons),
        )?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            if Instant::now() > deadline {
                bail!(
                    "containerd of {name} did not start: {}",
                    tail(&dir.join("containerd.log"))
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// kubelet and kube-proxy of a node, with the configuration written.
    fn start_node_daemons(&self, name: &str, ns: &str, dir: &Path, node_ip: &str) -> Result<()> {
        let daemons = format!("/{ns}/daemons");
        daemon(
            dir,
            "kubelet",
            &self.node_bin.join("kubelet"),
            &[
                format!("--config={}", dir.join("kubelet.yaml").display()),
                format!("--kubeconfig={}", dir.join("kubelet.kubeconfig").display()),
                format!("--root-dir={}", dir.join("kubelet").display()),
                format!("--cert-dir={}", dir.join("kubelet-pki").display()),
                format!("--hostname-override={name}"),
                format!("--node-ip={node_ip}"),
                "--v=1".into(),
            ],
            Some(ns),
            Some(&daemons),
        )?;
        daemon(
            dir,
            "kube-proxy",
            &self.node_bin.join("kube-proxy"),
            &[
                format!("--config={}", dir.join("kube-proxy.yaml").display()),
                "--v=1".into(),
            ],
            Some(ns),
            Some(&daemons),
        )?;
        Ok(())
    }

    /// Starts a crashed node's containerd, kubelet and kube-proxy again (as
    /// a machine coming back from a power cut); its images are still there.
    pub fn restart(&self, name: &str) -> Result<()> {
        let node = self
            .node_named(name)
            .with_context(|| format!("no node {name}"))?
            .clone();
        self.start_containerd(&node.name, &node.namespace, &node.dir)?;
        self.start_node_daemons(&node.name, &node.namespace, &node.dir, &node.ip)
    }

    fn wait_nodes_ready(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let out = self.kubectl(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
            ])?;
            let text = String::from_utf8_lossy(&out.stdout);
            let ready = text.lines().filter(|l| l.ends_with("=True")).count();
            if ready == self.nodes.len() {
                break;
            }
            if Instant::now() > deadline {
                let logs: String = self
                    .nodes
                    .iter()
                    .map(|n| {
                        format!(
                            "--- {} kubelet\n{}",
                            n.name,
                            tail(&n.dir.join("kubelet.log"))
                        )
                    })
                    .collect();
                bail!(
                    "{ready} of {} nodes Ready after {limit:?}\n{logs}",
                    self.nodes.len()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        for node in &self.nodes {
            let patch = format!(
                "{{\"spec\":{{\"podCIDR\":\"{0}\",\"podCIDRs\":[\"{0}\"]}}}}",
                node.pod_cidr
            );
            self.kubectl_ok(&["patch", "node", &node.name, "--type=merge", "-p", &patch])?;
        }
        Ok(())
    }

    /// Runs kubectl against the cluster as admin.
    pub fn kubectl(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.kubectl_bin)
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running kubectl")
    }

    /// Like [`kubectl`](Self::kubectl), failing with its output when it fails.
    pub fn kubectl_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.kubectl(args)?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A client namespace on the node network (`10.210.N.HOST`, MAC `mac`),
    /// as a machine on the same LAN as the nodes: it resolves Service IPs
    /// announced in layer 2 with ARP.
    pub fn client(&self, host: u8, mac: &str) -> Result<crate::netns::Host> {
        let ns = self.slot.namespace(&format!("client{host}"));
        let veth = format!("flr{}c{host}", self.slot.0);
        ip(&["netns", "add", &ns])?;
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&[
            "link",
            "set",
            "dev",
            &veth,
            "master",
            &self.slot.bridge(),
            "up",
        ])?;
        ip(&["-n", &ns, "link", "set", "dev", "eth0", "address", mac])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", self.slot.host_ip(host)),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "dev", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "dev", "lo", "up"])?;
        Ok(crate::netns::Host {
            namespace: ns,
            interface: "eth0".into(),
            mac: mac.into(),
        })
    }

    /// Node `name`.
    pub fn node_named(&self, name: &str) -> Option<&RealNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Stops a node's kubelet, containerd (with every container) and
    /// kube-proxy at once, as a crash would: SIGKILL to everything in its
    /// cgroups.
    pub fn crash(&self, name: &str) -> Result<()> {
        let prefix = self.slot.namespace(name);
        for _ in 0..50 {
            let pids = cgroup_pids(&prefix);
            if pids.is_empty() {
                return Ok(());
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("processes of {name} survive SIGKILL")
    }

    /// The pid of control-plane daemon `name` (`etcd`, `kube-apiserver`, …).
    pub fn control_plane_pid(&self, name: &str) -> Result<i32> {
        let path = self.dir.join("cp").join(format!("{name}.pid"));
        fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .parse()
            .with_context(|| format!("a pid in {}", path.display()))
    }

    /// Stops control-plane daemon `name` with `signal` (SIGKILL for a
    /// crash, SIGTERM for a static Pod's restart; SIGKILL after 30 s, the
    /// kubelet's grace period),
    /// waits `down`, and starts it again with the same command line. Its
    /// earlier log is kept as `NAME.log.1`.
    pub fn restart_control_plane(&self, name: &str, signal: Signal, down: Duration) -> Result<()> {
        let pid = self.control_plane_pid(name)?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
            .with_context(|| format!("{name} (pid {pid}) is not running"))?;
        let mut args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let program = PathBuf::from(args.remove(0));
        let _ = kill(Pid::from_raw(pid), signal);
        let deadline = Instant::now() + Duration::from_secs(30);
        while fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split_whitespace().nth(2) != Some("Z"))
        {
            if Instant::now() > deadline {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(down);
        let cp = self.dir.join("cp");
        let _ = fs::rename(
            cp.join(format!("{name}.log")),
            cp.join(format!("{name}.log.1")),
        );
        let cgroup = format!("/{}control-plane", self.slot.prefix());
        daemon(&cp, name, &program, &args, None, Some(&cgroup))?;
        Ok(())
    }

    /// The pids of the processes running `binary` in the Pod whose UID is
    /// `uid` (found by the Pod's cgroup, whichever cgroup driver).
    pub fn pod_pids(&self, uid: &str, binary: &str) -> Vec<i32> {
        let underscored = uid.replace('-', "_");
        let mut pids = Vec::new();
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cgroup = fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
            if !cgroup.contains(uid) && !cgroup.contains(&underscored) {
                continue;
            }
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let program = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            if String::from_utf8_lossy(program).ends_with(binary) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Loads `ruleset` (nft syntax) into node `name`'s namespace, or with
    /// `None` removes the table `inet ferrolb-chaos` a ruleset made there.
    pub fn node_firewall(&self, name: &str, ruleset: Option<&str>) -> Result<()> {
        let ns = self.slot.namespace(name);
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &ns, "nft"]);
        match ruleset {
            Some(_) => command.args(["-f", "-"]),
            None => command.args(["delete", "table", "inet", "ferrolb-chaos"]),
        };
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("nft")?;
        if let Some(text) = ruleset {
            use std::io::Write;
            child
                .stdin
                .take()
                .context("stdin")?
                .write_all(text.as_bytes())?;
        }
        drop(child.stdin.take());
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("nft in {ns}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// The running cluster whose folder is `dir` (started with `up`), to act
    /// on; dropping it leaves the cluster running.
    pub fn attach(dir: &Path) -> Result<RealCluster> {
        let slot = fs::read_to_string(dir.join("slot"))
            .ok()
            .and_then(|s| s.trim().parse::<u8>().ok())
            .with_context(|| format!("no cluster in {}", dir.display()))?;
        let slot = Slot(slot);
        let mut nodes = Vec::new();
        for i in 1.. {
            let name = node_name(i);
            let node_dir = dir.join(&name);
            if !node_dir.exists() {
                break;
            }
            nodes.push(RealNode {
                namespace: slot.namespace(&name),
                ip: slot.node_ip(i),
                pod_cidr: slot.pod_cidr(i),
                dir: node_dir,
                name,
            });
        }
        Ok(RealCluster {
            slot,
            dir: dir.to_path_buf(),
            kubeconfig: dir.join("admin.kubeconfig"),
            kubectl_bin: binaries()?.join("kubectl"),
            options: Options {
                nodes: nodes.len(),
                proxy: ProxyMode::Iptables,
                images: Vec::new(),
                sandbox_image: String::new(),
                dir: dir.to_path_buf(),
            },
            nodes,
            ready_after: Duration::ZERO,
            node_bin: node_binaries()?,
            cp_bin: binaries()?,
            detached: true,
        })
    }

    /// Leaves the cluster running when this value is dropped (`make demo`).
    pub fn detach(mut self) -> PathBuf {
        self.detached = true;
        self.dir.clone()
    }

    /// Takes the cluster down in order: kubelets and kube-proxies, then every
    /// container and containerd, then the control plane; then [`sweep`].
    pub fn down(&mut self) {
        down_dir(&self.dir);
    }
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        if !self.detached {
            self.down();
        }
    }
}

/// Takes down the cluster whose folder is `dir` (left by [`RealCluster::detach`]
/// or by a killed run). Returns whether there was one.
pub fn down_dir(dir: &Path) -> bool {
    let Some(slot) = fs::read_to_string(dir.join("slot"))
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok())
    else {
        return false;
    };
    let slot = Slot(slot);
    // Kubelets and kube-proxies first (no Pod is restarted meanwhile), the
    // control plane last; containers and containerd go with the sweep.
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        stop_pid_file(&path.join("kube-proxy.pid"), Duration::from_secs(2));
        stop_pid_file(&path.join("kubelet.pid"), Duration::from_secs(2));
    }
    for name in [
        "kube-scheduler",
        "kube-controller-manager",
        "kube-apiserver",
        "etcd",
    ] {
        stop_pid_file(
            &dir.join("cp").join(format!("{name}.pid")),
            Duration::from_secs(5),
        );
    }
    sweep(slot, Some(dir));
    true
}

/// The name of node `i` (1-based).
pub fn node_name(i: usize) -> String {
    format!("node{i}")
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn which(program: &str) -> Result<PathBuf> {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let path = Path::new(dir).join(program);
        if path.is_file() {
            return Ok(path);
        }
    }
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin"] {
        let path = Path::new(dir).join(program);
        if path.is_file() {
            return Ok(path);
        }
    }
    bail!("{program} not found: e2e/scripts/need-packages.sh installs it")
}

/// The last lines of a log, for errors.
pub fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
