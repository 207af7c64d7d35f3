//! Test networks of Linux network namespaces: a switch (a bridge in its own
//! namespace), nodes and a client plugged into it with veth pairs and fixed
//! MACs. Everything is named with this process's ID and removed on drop.
//!
//! No test address can leave the machine: these namespaces have no link to
//! the host's, and on top of that every subnet a host here is given, and
//! every range the tests announce from one ([`ANNOUNCED`]), is routed
//! `unreachable` in the host namespace before the address is assigned. The
//! routes go with the last switch.

use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

/// Runs `ip ARGS`, failing with its output.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The ranges the process-tier tests announce (BGP prefixes and pools that
/// no interface carries) and send to through a router namespace.
pub const ANNOUNCED: [&str; 6] = [
    "172.20.0.0/16",
    "172.30.0.0/15",
    "10.99.0.0/16",
    "fd20::/16",
    "fd31::/16",
    "fd73::/16",
];
/// The metric of the host's `unreachable` routes for these networks (so they
/// are told from the real-cluster tier's and removed with the last switch).
const FENCE_METRIC: &str = "4211";
/// Fencing and unfencing one at a time within the process: a switch created
/// while the last other one goes must keep its routes.
static FENCE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The network of `address` (CIDR), such as `10.77.0.0/24` for
/// `10.77.0.11/24`; a bare address is its own /32 or /128.
fn subnet(address: &str) -> Result<ipnet::IpNet> {
    let net: ipnet::IpNet = match address.parse() {
        Ok(net) => net,
        Err(_) => ipnet::IpNet::from(
            address
                .parse::<std::net::IpAddr>()
                .with_context(|| format!("address {address}"))?,
        ),
    };
    Ok(net.trunc())
}

/// Routes `range` `unreachable` in the host namespace (idempotent).
fn fence(range: &str) -> Result<()> {
    let out = Command::new("ip")
        .args(["route", "add", "unreachable", range, "metric", FENCE_METRIC])
        .output()
        .context("running ip")?;
    let error = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && !error.contains("File exists") {
        bail!("ip route add unreachable {range}: {error}");
    }
    Ok(())
}

/// Removes every fence route when no switch of this harness is left.
fn unfence_if_last() {
    let namespaces = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if namespaces.lines().any(|l| l.starts_with("fl-sw")) {
        return;
    }
    for family in ["-4", "-6"] {
        let routes = Command::new("ip")
            .args([family, "route", "show", "type", "unreachable"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for line in routes.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let ours = words
                .windows(2)
                .any(|w| w[0] == "metric" && w[1] == FENCE_METRIC);
            let range = words
                .iter()
                .find(|w| w.contains('/') || w.contains('.') || w.contains(':'));
            if let (true, Some(range)) = (ours, range) {
                let _ = ip(&[
                    family,
                    "route",
                    "del",
                    "unreachable",
                    range,
                    "metric",
                    FENCE_METRIC,
                ]);
            }
        }
    }
}

/// A host on the test network.
#[derive(Clone, Debug)]
pub struct Host {
    /// The namespace's name.
    pub namespace: String,
    /// The interface inside it.
    pub interface: String,
    /// Its MAC address.
    pub mac: String,
}

impl Host {
    /// A command run inside the host's namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.namespace, program]);
        command
    }

    /// Starts a small HTTP server on port 8080 answering with `name`: it
    /// stands in for kube-proxy and the Service's pods on a node.
    pub fn http_stand_in(&self, name: &str) -> Result<std::process::Child> {
        self.command("python3")
            .args([
                "-c",
                &format!(
                    "import http.server\nclass H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        b=b'{name}\\n'\n        self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)\n    def log_message(self, *a): pass\nhttp.server.ThreadingHTTPServer(('0.0.0.0', 8080), H).serve_forever()\n"
                ),
            ])
            .stdin(Stdio::null())
            .spawn()
            .context("starting python3")
    }

    /// Accepts traffic for `ip` as kube-proxy in IPVS mode does: the IP on
    /// `lo`, and the kernel told not to answer ARP for it (`arp_ignore=1`,
    /// `arp_announce=2`): the speaker answers instead.
    pub fn accept_service_ip(&self, ip: &str) -> Result<()> {
        for setting in [
            "net.ipv4.conf.all.arp_ignore=1",
            "net.ipv4.conf.all.arp_announce=2",
        ] {
            self.run("sysctl", &["-qw", setting])?;
        }
        let out = self.run("ip", &["addr", "add", &format!("{ip}/32"), "dev", "lo"])?;
        if !out.status.success() {
            bail!("ip addr add {ip}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Runs a program in the namespace and returns what it printed.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<Output> {
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {program} in {}", self.namespace))
    }
}

/// A switch with hosts on it.
pub struct Network {
    switch: String,
    hosts: Vec<Host>,
    tag: String,
}

impl Network {
    /// An empty switch.
    pub fn new() -> Result<Network> {
        // Unique per process and per network, short enough for interface names.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("{}{n}", std::process::id() % 10_000);
        let switch = format!("fl-sw{tag}");
        let _fencing = FENCE.lock().unwrap_or_else(|e| e.into_inner());
        ip(&["netns", "add", &switch])?;
        for range in ANNOUNCED {
            fence(range)?;
        }
        let network = Network {
            switch,
            hosts: Vec::new(),
            tag,
        };
        ip(&[
            "-n",
            &network.switch,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
        ])?;
        ip(&["-n", &network.switch, "link", "set", "dev", "br0", "up"])?;
        Ok(network)
    }

    /// Plugs in a host `name` with `mac` and the given addresses (CIDR).
    pub fn host(&mut self, name: &str, mac: &str, addresses: &[&str]) -> Result<Host> {
        let namespace = format!("fl-{name}{}", self.tag);
        let inside = "eth0";
        let port = format!("p{}{}", name.chars().take(6).collect::<String>(), self.tag);
        ip(&["netns", "add", &namespace])?;
        let host = Host {
            namespace: namespace.clone(),
            interface: inside.to_string(),
            mac: mac.to_string(),
        };
        self.hosts.push(host.clone());
        let temp = format!("t{}{}", name.chars().take(6).collect::<String>(), self.tag);
        ip(&["link", "add", &temp, "type", "veth", "peer", "name", &port])?;
        ip(&["link", "set", "dev", &temp, "netns", &namespace])?;
        ip(&["link", "set", "dev", &port, "netns", &self.switch])?;
        ip(&[
            "-n", &namespace, "link", "set", "dev", &temp, "name", inside,
        ])?;
        ip(&[
            "-n", &namespace, "link", "set", "dev", inside, "address", mac,
        ])?;
        for address in addresses {
            fence(&subnet(address)?.to_string())?;
            let mut args = vec![
                "-n",
                namespace.as_str(),
                "addr",
                "add",
                address,
                "dev",
                inside,
            ];
            if address.contains(':') {
                args.push("nodad");
            }
            ip(&args)?;
        }
        ip(&["-n", &namespace, "link", "set", "dev", inside, "up"])?;
        ip(&["-n", &namespace, "link", "set", "dev", "lo", "up"])?;
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            "dev",
            &port,
            "master",
            "br0",
        ])?;
        ip(&["-n", &self.switch, "link", "set", "dev", &port, "up"])?;
        Ok(host)
    }
}

impl Network {
    /// A host `name` behind `via` on a point-to-point link (`via` gets a second
    /// interface, `eth1`, with `via_addresses`): a client behind a router.
    pub fn behind(
        &mut self,
        via: &Host,
        via_addresses: &[&str],
        name: &str,
        addresses: &[&str],
    ) -> Result<Host> {
        let namespace = format!("fl-{name}{}", self.tag);
        ip(&["netns", "add", &namespace])?;
        let host = Host {
            namespace: namespace.clone(),
            interface: "eth0".to_string(),
            mac: String::new(),
        };
        self.hosts.push(host.clone());
        let a = format!("u{}{}", name.chars().take(6).collect::<String>(), self.tag);
        let b = format!("v{}{}", name.chars().take(6).collect::<String>(), self.tag);
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
        ip(&["link", "set", "dev", &a, "netns", &via.namespace])?;
        ip(&["link", "set", "dev", &b, "netns", &namespace])?;
        ip(&[
            "-n",
            &via.namespace,
            "link",
            "set",
            "dev",
            &a,
            "name",
            "eth1",
        ])?;
        ip(&["-n", &namespace, "link", "set", "dev", &b, "name", "eth0"])?;
        for (ns, dev, list) in [
            (via.namespace.as_str(), "eth1", via_addresses),
            (namespace.as_str(), "eth0", addresses),
        ] {
            for address in list {
                fence(&subnet(address)?.to_string())?;
                let mut args = vec!["-n", ns, "addr", "add", address, "dev", dev];
                if address.contains(':') {
                    args.push("nodad");
                }
                ip(&args)?;
            }
            ip(&["-n", ns, "link", "set", "dev", dev, "up"])?;
        }
        ip(&["-n", &namespace, "link", "set", "dev", "lo", "up"])?;
        Ok(host)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for host in &self.hosts {
            let _ = ip(&["netns", "del", &host.namespace]);
        }
        let _fencing = FENCE.lock().unwrap_or_else(|e| e.into_inner());
        let _ = ip(&["netns", "del", &self.switch]);
        unfence_if_last();
    }
}
