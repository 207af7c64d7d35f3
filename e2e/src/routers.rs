//! Real BGP peers in network namespaces, from Debian's packages: FRR (bgpd and
//! zebra, so routes reach the namespace's kernel table), GoBGP and BIRD 2.
//! Each is configured from text, queried the way an operator would (vtysh and
//! gobgp JSON, birdc text), and stopped with its files removed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait::until;
use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::netns::Host;

/// A route as a peer shows it, reduced to what the tests check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// Next hops, sorted.
    pub next_hops: Vec<String>,
    /// Standard communities as `high:low`, sorted.
    pub communities: Vec<String>,
    /// Large communities as `a:b:c`, sorted.
    pub large_communities: Vec<String>,
    /// LOCAL_PREF, when the peer shows one.
    pub local_pref: Option<u32>,
    /// AS path as numbers.
    pub as_path: Vec<u32>,
    /// Marked stale (graceful restart), where the peer shows it.
    pub stale: bool,
}

/// What the tests ask of any peer.
pub trait Router {
    /// The route for `prefix` (such as `172.20.0.5/32`), if the peer has one.
    fn route(&self, prefix: &str) -> Result<Option<Route>>;
    /// Whether the session with `neighbor` is Established.
    fn established(&self, neighbor: &str) -> Result<bool>;
    /// The peer's name, for messages.
    fn kind(&self) -> &'static str;
}

fn words(text: &str) -> Vec<String> {
    let mut list: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    list.sort();
    list
}

fn run(command: &mut Command) -> Result<String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An `frr.conf` for a router in AS `asn`: one `neighbor` per (address, AS),
/// each also given the `every` options (such as `password s3cret`); IPv6
/// neighbors activated in the IPv6 family; `global` lines under
/// `router bgp`; `maximum-paths 8` in both families with `multipath`.
pub fn frr_config(
    asn: u32,
    router_id: &str,
    neighbors: &[(String, u32)],
    every: &[&str],
    global: &[&str],
    multipath: bool,
) -> String {
    let mut text = format!(
        "frr defaults traditional\nhostname r\nrouter bgp {asn}\n bgp router-id {router_id}\n no bgp ebgp-requires-policy\n"
    );
    for line in global {
        text.push_str(&format!(" {line}\n"));
    }
    for (address, remote) in neighbors {
        text.push_str(&format!(" neighbor {address} remote-as {remote}\n"));
        for option in every {
            text.push_str(&format!(" neighbor {address} {option}\n"));
        }
    }
    let paths = if multipath { "  maximum-paths 8\n" } else { "" };
    text.push_str(&format!(
        " address-family ipv4 unicast\n{paths} exit-address-family\n"
    ));
    let v6: Vec<&String> = neighbors
        .iter()
        .map(|(a, _)| a)
        .filter(|a| a.contains(':'))
        .collect();
    if !v6.is_empty() {
        text.push_str(" address-family ipv6 unicast\n");
        for address in v6 {
            text.push_str(&format!("  neighbor {address} activate\n"));
        }
        text.push_str(&format!("{paths} exit-address-family\n"));
    }
    text
}

/// FRR in a namespace: watchfrr, zebra, bgpd and staticd.
pub struct Frr {
    host: Host,
    dir: PathBuf,
}

impl Frr {
    /// Starts FRR in `host`'s namespace with `config` (frr.conf text).
    pub fn start(host: &Host, config: &str) -> Result<Frr> {
        let dir = PathBuf::from("/etc/frr").join(&host.namespace);
        std::fs::create_dir_all(&dir)?;
        let daemons = std::fs::read_to_string("/etc/frr/daemons")
            .context("reading /etc/frr/daemons (is the frr package installed?)")?
            .replace("bgpd=no", "bgpd=yes")
            .replace("bfdd=no", "bfdd=yes");
        std::fs::write(dir.join("daemons"), daemons)?;
        std::fs::write(dir.join("frr.conf"), config)?;
        std::fs::write(dir.join("vtysh.conf"), "")?;
        run(Command::new("chown").args(["-R", "frr:frr"]).arg(&dir))?;
        let frr = Frr {
            host: host.clone(),
            dir,
        };
        frr.init("start")?;
        until("FRR to answer vtysh", Duration::from_secs(20), || {
            frr.json("show bgp summary json").ok()
        })?;
        Ok(frr)
    }

    fn init(&self, verb: &str) -> Result<()> {
        run(self
            .host
            .command("/usr/lib/frr/frrinit.sh")
            .args([verb, &self.host.namespace]))?;
        Ok(())
    }

    /// Stops and starts FRR again (the peer restarting).
    pub fn restart(&self) -> Result<()> {
        self.init("stop")?;
        self.init("start")?;
        until("FRR to answer vtysh", Duration::from_secs(20), || {
            self.json("show bgp summary json").ok()
        })?;
        Ok(())
    }

    /// Runs a vtysh command.
    pub fn vtysh(&self, command: &str) -> Result<String> {
        run(Command::new("vtysh").args(["-N", &self.host.namespace, "-c", command]))
    }

    /// Runs vtysh commands in one session (`configure terminal`, …).
    pub fn configure(&self, commands: &[String]) -> Result<String> {
        let mut command = Command::new("vtysh");
        command.args(["-N", &self.host.namespace]);
        for line in commands {
            command.args(["-c", line]);
        }
        run(&mut command)
    }

    /// Runs a vtysh command that prints JSON.
    pub fn json(&self, command: &str) -> Result<Value> {
        let text = self.vtysh(command)?;
        serde_json::from_str(&text).with_context(|| format!("{command} printed {text}"))
    }

    /// bfdd's view of the session with `peer`: `up`, `down`, `init` (None
    /// when bfdd has no such peer).
    pub fn bfd_state(&self, peer: &str) -> Option<String> {
        let peers = self.json("show bfd peers json").ok()?;
        peers.as_array()?.iter().find_map(|p| {
            (p["peer"].as_str() == Some(peer))
                .then(|| p["status"].as_str().unwrap_or("").to_string())
        })
    }

    /// The neighbor's state as FRR names it (`Established`, `Active`, ...).
    pub fn neighbor_state(&self, neighbor: &str) -> Result<String> {
        let value = self.json(&format!("show bgp neighbors {neighbor} json"))?;
        Ok(value[neighbor]["bgpState"]
            .as_str()
            .unwrap_or("unknown")
            .to_string())
    }

    /// The namespace's kernel routes for `prefix` (`ip route show`).
    pub fn kernel_route(&self, prefix: &str) -> Result<String> {
        let family = if prefix.contains(':') { "-6" } else { "-4" };
        run(self
            .host
            .command("ip")
            .args([family, "route", "show", prefix]))
    }
}

impl Router for Frr {
    fn route(&self, prefix: &str) -> Result<Option<Route>> {
        let family = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        let value = self.json(&format!("show bgp {family} unicast {prefix} json"))?;
        let Some(paths) = value["paths"].as_array() else {
            return Ok(None);
        };
        let Some(path) = paths
            .iter()
            .find(|p| p["bestpath"]["overall"].as_bool() == Some(true))
            .or(paths.first())
        else {
            return Ok(None);
        };
        let mut next_hops: Vec<String> = paths
            .iter()
            .flat_map(|p| p["nexthops"].as_array().cloned().unwrap_or_default())
            .filter(|n| n["scope"].as_str() != Some("link-local"))
            .filter_map(|n| n["ip"].as_str().map(str::to_string))
            .collect();
        next_hops.sort();
        next_hops.dedup();
        Ok(Some(Route {
            next_hops,
            communities: words(path["community"]["string"].as_str().unwrap_or("")),
            large_communities: words(path["largeCommunity"]["string"].as_str().unwrap_or("")),
            local_pref: path["locPrf"].as_u64().map(|v| v as u32),
            as_path: path["aspath"]["string"]
                .as_str()
                .unwrap_or("")
                .split_whitespace()
                .filter_map(|a| a.parse().ok())
                .collect(),
            stale: path["stale"].as_bool().unwrap_or(false),
        }))
    }

    fn established(&self, neighbor: &str) -> Result<bool> {
        Ok(self.neighbor_state(neighbor)? == "Established")
    }

    fn kind(&self) -> &'static str {
        "FRR"
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        let _ = self.init("stop");
        // Whatever is left (the namespace may be gone already, so frrinit could
        // not run in it): the daemons by their pid files, watchfrr first.
        let run = PathBuf::from("/var/run/frr").join(&self.host.namespace);
        for daemon in ["watchfrr", "bgpd", "bfdd", "zebra", "staticd", "mgmtd"] {
            if let Ok(pid) = std::fs::read_to_string(run.join(format!("{daemon}.pid")))
                && let Ok(pid) = pid.trim().parse::<i32>()
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&run);
    }
}

/// A daemon child process in a namespace, killed on drop.
struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn daemon(host: &Host, program: &str, args: &[&str], dir: tempfile::TempDir) -> Result<Daemon> {
    let log = std::fs::File::create(dir.path().join("daemon.log"))?;
    let child = host
        .command(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    Ok(Daemon { child, dir })
}

/// GoBGP (`gobgpd`) in a namespace, queried with `gobgp -j`.
pub struct GoBgp {
    host: Host,
    _daemon: Daemon,
}

impl GoBgp {
    /// Starts gobgpd in `host`'s namespace with `config` (TOML).
    pub fn start(host: &Host, config: &str) -> Result<GoBgp> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("gobgpd.toml");
        std::fs::write(&file, config)?;
        let file = file.to_str().context("path")?.to_string();
        let daemon = daemon(host, "gobgpd", &["-f", &file, "-t", "toml"], dir)?;
        let gobgp = GoBgp {
            host: host.clone(),
            _daemon: daemon,
        };
        until("gobgpd to answer", Duration::from_secs(20), || {
            gobgp.json(&["neighbor"]).ok()
        })?;
        Ok(gobgp)
    }

    /// Runs `gobgp -j ARGS`.
    pub fn json(&self, args: &[&str]) -> Result<Value> {
        let text = run(self.host.command("gobgp").arg("-j").args(args))?;
        serde_json::from_str(&text).with_context(|| format!("gobgp {args:?} printed {text}"))
    }
}

impl Router for GoBgp {
    fn route(&self, prefix: &str) -> Result<Option<Route>> {
        let family = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        let rib = self.json(&["global", "rib", "-a", family])?;
        let Some(paths) = rib[prefix].as_array() else {
            return Ok(None);
        };
        let Some(path) = paths.first() else {
            return Ok(None);
        };
        let mut route = Route::default();
        for path in paths {
            for attribute in path["attrs"].as_array().cloned().unwrap_or_default() {
                if let Some(hop) = attribute["nexthop"].as_str() {
                    route.next_hops.push(hop.to_string());
                }
            }
        }
        route.next_hops.sort();
        route.next_hops.dedup();
        for attribute in path["attrs"].as_array().cloned().unwrap_or_default() {
            match attribute["type"].as_u64() {
                Some(2) => {
                    for segment in attribute["as_paths"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                    {
                        for asn in segment["asns"].as_array().cloned().unwrap_or_default() {
                            if let Some(asn) = asn.as_u64() {
                                route.as_path.push(asn as u32);
                            }
                        }
                    }
                }
                Some(5) => route.local_pref = attribute["value"].as_u64().map(|v| v as u32),
                Some(8) => {
                    for c in attribute["communities"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                    {
                        if let Some(c) = c.as_u64() {
                            route
                                .communities
                                .push(format!("{}:{}", c >> 16, c & 0xffff));
                        }
                    }
                }
                Some(32) => {
                    for c in attribute["value"].as_array().cloned().unwrap_or_default() {
                        route.large_communities.push(format!(
                            "{}:{}:{}",
                            c["ASN"], c["LocalData1"], c["LocalData2"]
                        ));
                    }
                }
                _ => {}
            }
        }
        route.communities.sort();
        route.large_communities.sort();
        route.stale = path["stale"].as_bool().unwrap_or(false);
        Ok(Some(route))
    }

    fn established(&self, neighbor: &str) -> Result<bool> {
        let value = self.json(&["neighbor", neighbor])?;
        Ok(value["state"]["session_state"].as_u64() == Some(6)
            || value["state"]["session_state"].as_str() == Some("established"))
    }

    fn kind(&self) -> &'static str {
        "GoBGP"
    }
}

/// BIRD 2 in a namespace, queried with `birdc`.
pub struct Bird {
    host: Host,
    socket: String,
    daemon: Daemon,
}

impl Bird {
    /// Starts bird in `host`'s namespace with `config`.
    pub fn start(host: &Host, config: &str) -> Result<Bird> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("bird.conf");
        std::fs::write(&file, config)?;
        let socket = dir
            .path()
            .join("bird.ctl")
            .to_str()
            .context("path")?
            .to_string();
        let file = file.to_str().context("path")?.to_string();
        let daemon = daemon(host, "bird", &["-f", "-c", &file, "-s", &socket], dir)?;
        let bird = Bird {
            host: host.clone(),
            socket,
            daemon,
        };
        until("bird to answer", Duration::from_secs(20), || {
            bird.birdc("show status").ok()
        })?;
        Ok(bird)
    }

    /// Runs a birdc command.
    pub fn birdc(&self, command: &str) -> Result<String> {
        let mut args = vec!["-s", self.socket.as_str()];
        args.extend(command.split_whitespace());
        run(self.host.command("birdc").args(&args))
    }

    /// The daemon's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.daemon.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// The BFD session state with `peer` as `show bfd sessions` prints it
    /// (`Up`, `Down`, `Init`); None when there is no such session.
    pub fn bfd_state(&self, peer: &str) -> Option<String> {
        let text = self.birdc("show bfd sessions").ok()?;
        text.lines().find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(peer)).then(|| words.nth(1).unwrap_or("").to_string())
        })
    }
}

impl Router for Bird {
    fn route(&self, prefix: &str) -> Result<Option<Route>> {
        let out = self
            .host
            .command("birdc")
            .args(["-s", &self.socket, "show", "route", prefix, "all"])
            .stdin(Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("Network not found") {
            return Ok(None);
        }
        if !out.status.success() {
            bail!("birdc show route {prefix}: {text}");
        }
        let mut route = Route::default();
        for line in text.lines() {
            let line = line.trim();
            let value = |key: &str| line.strip_prefix(key).map(str::trim);
            if let Some(v) = value("BGP.next_hop:") {
                route.next_hops.extend(
                    v.split_whitespace()
                        .filter(|h| !h.starts_with("fe80"))
                        .map(str::to_string),
                );
            } else if let Some(v) = value("BGP.local_pref:") {
                route.local_pref = v.parse().ok();
            } else if let Some(v) = value("BGP.as_path:") {
                route.as_path = v
                    .split_whitespace()
                    .filter_map(|a| a.parse().ok())
                    .collect();
            } else if let Some(v) = value("BGP.community:") {
                // (65000,1) (65000,2)
                route.communities = v
                    .split(')')
                    .filter_map(|c| c.trim().strip_prefix('('))
                    .map(|c| c.replace(',', ":").replace(' ', ""))
                    .collect();
            } else if let Some(v) = value("BGP.large_community:") {
                route.large_communities = v
                    .split(')')
                    .filter_map(|c| c.trim().strip_prefix('('))
                    .map(|c| c.replace(',', ":").replace(' ', ""))
                    .collect();
            }
        }
        route.next_hops.sort();
        route.next_hops.dedup();
        route.communities.sort();
        route.large_communities.sort();
        Ok(Some(route))
    }

    fn established(&self, neighbor: &str) -> Result<bool> {
        let text = self.birdc("show protocols all")?;
        // Each protocol block starts with its name line; find the one for the
        // neighbor and its BGP state.
        Ok(text.split("\n\n").any(|block| {
            block.contains(&format!("Neighbor address: {neighbor}"))
                && block.contains("BGP state:          Established")
        }))
    }

    fn kind(&self) -> &'static str {
        "BIRD"
    }
}
