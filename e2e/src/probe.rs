//! A client's view of a Service IP during a failover: from inside the client
//! namespace, an ARP request every 10 ms (the real `arping`) and a TCP request
//! every 50 ms to the node HTTP stand-ins, each timestamped here. The figures
//! come from these samples; nothing asserts on time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::Host;

/// One TCP request: when it started and the answer (the node's name), if any.
#[derive(Clone, Debug)]
pub struct Request {
    /// When it was sent.
    pub at: Instant,
    /// The body, when it succeeded.
    pub answer: Option<String>,
    /// Why it failed, when it did: the step and the error.
    pub error: Option<String>,
}

/// Everything sampled.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    /// ARP replies: when, and from which MAC.
    pub arp: Vec<(Instant, String)>,
    /// TCP requests.
    pub tcp: Vec<Request>,
}

/// What a client saw over a window.
#[derive(Clone, Debug)]
pub struct Outage {
    /// The longest time without an ARP answer.
    pub arp_gap: Duration,
    /// The longest time without a successful TCP answer.
    pub tcp_gap: Duration,
    /// TCP requests that failed.
    pub failed: usize,
    /// TCP requests sent.
    pub sent: usize,
}

impl Samples {
    /// The outage seen between `from` and `to`.
    pub fn outage(&self, from: Instant, to: Instant) -> Outage {
        let gap = |times: Vec<Instant>| {
            let mut last = from;
            let mut longest = Duration::ZERO;
            for t in times.into_iter().filter(|t| *t >= from && *t <= to) {
                longest = longest.max(t - last);
                last = t;
            }
            longest.max(to.saturating_duration_since(last))
        };
        let window: Vec<&Request> = self
            .tcp
            .iter()
            .filter(|r| r.at >= from && r.at <= to)
            .collect();
        Outage {
            arp_gap: gap(self.arp.iter().map(|(t, _)| *t).collect()),
            tcp_gap: gap(window
                .iter()
                .filter(|r| r.answer.is_some())
                .map(|r| r.at)
                .collect()),
            failed: window.iter().filter(|r| r.answer.is_none()).count(),
            sent: window.len(),
        }
    }

    /// When a MAC other than `old` first answered ARP after `from`.
    pub fn first_other_mac(&self, old: &str, from: Instant) -> Option<Instant> {
        self.arp
            .iter()
            .find(|(t, mac)| *t >= from && mac != old)
            .map(|(t, _)| *t)
    }

    /// TCP requests sent in `[from, to]`: (failed, sent).
    pub fn failed_between(&self, from: Instant, to: Instant) -> (usize, usize) {
        let window: Vec<&Request> = self
            .tcp
            .iter()
            .filter(|r| r.at >= from && r.at <= to)
            .collect();
        (
            window.iter().filter(|r| r.answer.is_none()).count(),
            window.len(),
        )
    }

    /// The MAC that answered ARP last.
    pub fn last_mac(&self) -> Option<String> {
        self.arp.last().map(|(_, mac)| mac.clone())
    }
}

/// Probes running in the client namespace until stopped.
pub struct Prober {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Samples>>,
    arping: Child,
    threads: Vec<JoinHandle<()>>,
}

fn enter(namespace: &str) {
    let file = std::fs::File::open(format!("/run/netns/{namespace}")).expect("netns");
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

/// The source ports the probes of this process take in turn, so that a
/// client never reuses a 4-tuple within a node's conntrack lifetime for an
/// unanswered SYN (`nf_conntrack_tcp_timeout_syn_sent`, 120 s).
///
/// Why: the kernel's own choice reuses a port towards one destination after
/// about 3,000 connections (60 s at 50 per second). When a crashed node's
/// Pods come back under new IPs, kube-proxy leaves the SYN_SENT entries that
/// pointed at the old endpoints (it cleans up only UDP entries), and every
/// reuse of such a tuple is DNATed to the dead endpoint again and renews the
/// entry. One client hammering one IP then fails a request a minute or two
/// after the node is back: Kubernetes' behaviour, not the load balancer's,
/// and one that many clients with their own ports do not show.
static SOURCE_PORT: AtomicU16 = AtomicU16::new(FIRST_SOURCE_PORT);
const FIRST_SOURCE_PORT: u16 = 20_000;
const LAST_SOURCE_PORT: u16 = 60_999;

fn next_source_port() -> u16 {
    SOURCE_PORT
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
            Some(if p >= LAST_SOURCE_PORT {
                FIRST_SOURCE_PORT
            } else {
                p + 1
            })
        })
        .unwrap_or(FIRST_SOURCE_PORT)
}

/// A TCP connection to `target` from the next free source port of
/// [`SOURCE_PORT`]'s rotation.
fn connect(target: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let domain = Domain::for_address(target);
    let unspecified: std::net::IpAddr = if target.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let mut last = None;
    for _ in 0..64 {
        let socket = Socket::new(domain, Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        let from = SocketAddr::new(unspecified, next_source_port());
        if let Err(e) = socket.bind(&from.into()) {
            last = Some(e);
            continue;
        }
        socket.connect_timeout(&target.into(), timeout)?;
        return Ok(socket.into());
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no source port free")))
}

fn get(target: SocketAddr) -> Result<String, String> {
    let mut stream =
        connect(target, Duration::from_secs(1)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| format!("socket: {e}"))?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: service\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().trim();
    if body.is_empty() {
        return Err(format!("empty answer ({} bytes)", response.len()));
    }
    Ok(body.to_string())
}

/// One UDP question to `ip`:`port` from `client`'s namespace: the answer, or
/// why there was none within a second.
pub fn udp_ask(client: &Host, ip: &str, port: u16) -> Result<String, String> {
    let target: SocketAddr = format!("{ip}:{port}")
        .parse()
        .map_err(|e| format!("{ip}: {e}"))?;
    let namespace = client.namespace.clone();
    std::thread::spawn(move || {
        enter(&namespace);
        let bind = if target.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let socket = std::net::UdpSocket::bind(bind).map_err(|e| format!("bind: {e}"))?;
        socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .map_err(|e| format!("socket: {e}"))?;
        socket
            .send_to(b"who?", target)
            .map_err(|e| format!("send: {e}"))?;
        let mut buffer = [0u8; 512];
        let (n, _) = socket
            .recv_from(&mut buffer)
            .map_err(|e| format!("receive: {e}"))?;
        Ok(String::from_utf8_lossy(&buffer[..n]).trim().to_string())
    })
    .join()
    .unwrap_or_else(|_| Err("the asking thread panicked".into()))
}

impl Prober {
    /// Starts probing `ip` (HTTP on `port`) from `client`, a TCP request
    /// every 50 ms.
    pub fn start(client: &Host, ip: &str, port: u16) -> Prober {
        Self::start_every(client, ip, port, Duration::from_millis(50))
    }

    /// Starts probing `ip` (HTTP on `port`) from `client`, a TCP request every
    /// `every`.
    pub fn start_every(client: &Host, ip: &str, port: u16, every: Duration) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Samples::default()));
        let mut arping = client
            .command("stdbuf")
            .args(["-oL", "arping", "-i", &client.interface, "-W", "0.01", ip])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("arping");
        let stdout = arping.stdout.take().expect("stdout");
        let arp = {
            let samples = samples.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    // "42 bytes from 02:00:00:00:01:0a (192.168.60.100): index=…"
                    if let Some(mac) = line
                        .split_whitespace()
                        .nth(3)
                        .filter(|_| line.contains(" bytes from "))
                    {
                        samples
                            .lock()
                            .expect("samples")
                            .arp
                            .push((Instant::now(), mac.to_lowercase()));
                    }
                }
            })
        };
        let target: SocketAddr = format!("{ip}:{port}").parse().expect("target");
        let tcp = {
            let (samples, stop, namespace) =
                (samples.clone(), stop.clone(), client.namespace.clone());
            std::thread::spawn(move || {
                let mut workers = Vec::new();
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let (samples, namespace) = (samples.clone(), namespace.clone());
                    workers.push(std::thread::spawn(move || {
                        enter(&namespace);
                        let at = Instant::now();
                        let (answer, error) = match get(target) {
                            Ok(body) => (Some(body), None),
                            Err(e) => (None, Some(e)),
                        };
                        samples
                            .lock()
                            .expect("samples")
                            .tcp
                            .push(Request { at, answer, error });
                    }));
                    next += every;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    workers.retain(|w| !w.is_finished());
                }
                for worker in workers {
                    let _ = worker.join();
                }
            })
        };
        Prober {
            stop,
            samples,
            arping,
            threads: vec![arp, tcp],
        }
    }

    /// What was sampled so far.
    pub fn samples(&self) -> Samples {
        self.samples.lock().expect("samples").clone()
    }

    /// Stops probing and returns every sample.
    pub fn stop(mut self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.arping.kill();
        let _ = self.arping.wait();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let mut samples = self.samples();
        samples.tcp.sort_by_key(|r| r.at);
        samples
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.arping.kill();
        let _ = self.arping.wait();
    }
}

/// Median and longest of some durations.
pub fn median_and_max(mut values: Vec<Duration>) -> (Duration, Duration) {
    values.sort();
    if values.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    (values[values.len() / 2], values[values.len() - 1])
}
