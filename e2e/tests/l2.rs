//! Layer 2 in network namespaces [L2, IPV4, IPV6]: the real speaker binary,
//! run with `--from-file` in three node namespaces on one switch, answers the
//! real `arping` and `ndisc6` of a client namespace.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use ferrolb_e2e::netns::{Host, Network};
use ferrolb_e2e::process::binary;
use ferrolb_e2e::wait::until;

const MACS: [&str; 3] = [
    "02:00:00:00:00:0a",
    "02:00:00:00:00:0b",
    "02:00:00:00:00:0c",
];

/// A speaker running in a node namespace; killed on drop.
struct Speaker {
    child: Child,
    file: PathBuf,
}

impl Speaker {
    fn start(node: &Host, dir: &Path, name: &str, active: &[&str]) -> Speaker {
        let file = dir.join(format!("{name}.yaml"));
        write_announcement(&file, name, active);
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log");
        let child = node
            .command(
                binary("ferrolb-speaker")
                    .expect("speaker built")
                    .to_str()
                    .expect("path"),
            )
            .args(["--from-file", file.to_str().expect("path")])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("speaker");
        Speaker { child, file }
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_announcement(file: &Path, name: &str, active: &[&str]) {
    let ips: Vec<String> = active.iter().map(|ip| format!("'{ip}'")).collect();
    let l2 = if active.is_empty() {
        "  l2: []\n".to_string()
    } else {
        format!("  l2:\n  - {{role: active, ips: [{}]}}\n", ips.join(", "))
    };
    // Write then rename: the speaker never reads half a file.
    let temp = file.with_extension("tmp");
    std::fs::write(&temp, format!("apiVersion: ferrolb.io/v1alpha1\nkind: NodeAnnouncement\nmetadata: {{name: {name}}}\nspec:\n{l2}")).expect("write");
    std::fs::rename(&temp, file).expect("rename");
}

/// The MACs that answered `arping` for `ip`.
fn arping(client: &Host, ip: &str) -> (bool, String) {
    let out = client
        .run(
            "arping",
            &["-c", "2", "-w", "3", "-i", &client.interface, ip],
        )
        .expect("arping");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_lowercase(),
    )
}

#[test]
fn one_node_answers_arp_and_ndp_for_its_ips_and_nobody_else_does() {
    let dir = tempfile::tempdir().expect("dir");
    let mut network = Network::new().expect("switch");
    let nodes: Vec<Host> = (0..3)
        .map(|i| {
            let name = ["node-a", "node-b", "node-c"][i];
            network
                .host(
                    name,
                    MACS[i],
                    &[
                        &format!("192.168.35.{}/24", 10 + i),
                        &format!("fd00:35::{}/64", 10 + i),
                    ],
                )
                .expect("node")
        })
        .collect();
    let client = network
        .host(
            "client",
            "02:00:00:00:00:99",
            &["192.168.35.2/24", "fd00:35::2/64"],
        )
        .expect("client");
    let _a = Speaker::start(
        &nodes[0],
        dir.path(),
        "node-a",
        &["192.168.35.100", "fd00:35::100"],
    );
    let _b = Speaker::start(&nodes[1], dir.path(), "node-b", &["192.168.35.101"]);
    let _c = Speaker::start(&nodes[2], dir.path(), "node-c", &[]);

    until("node-a answers ARP", Duration::from_secs(15), || {
        let (ok, out) = arping(&client, "192.168.35.100");
        if ok && out.contains(MACS[0]) {
            Ok(())
        } else {
            Err(out)
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    // Only one MAC ever answers (-d fails on a duplicate answer).
    let out = client
        .run(
            "arping",
            &["-d", "-c", "3", "-i", &client.interface, "192.168.35.100"],
        )
        .expect("arping -d");
    assert!(
        out.status.success(),
        "two MACs answered: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout)
            .to_lowercase()
            .contains(MACS[1])
    );
    // Each node answers only for its own IPs; an unlisted one gets nothing,
    // and a node's own address is left to its kernel.
    let (_, out) = arping(&client, "192.168.35.101");
    assert!(out.contains(MACS[1]) && !out.contains(MACS[0]), "{out}");
    let (ok, out) = arping(&client, "192.168.35.150");
    assert!(!ok, "nobody answers for an unlisted IP: {out}");
    // IPv6 neighbor resolution.
    let out = client
        .run("ndisc6", &["-r", "3", "fd00:35::100", &client.interface])
        .expect("ndisc6");
    let said = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(out.status.success() && said.contains(MACS[0]), "{said}");
}

#[test]
fn a_takeover_updates_the_client_without_a_new_request_and_junk_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let mut network = Network::new().expect("switch");
    let a = network
        .host("ta", MACS[0], &["192.168.36.10/24"])
        .expect("node a");
    let b = network
        .host("tb", MACS[1], &["192.168.36.11/24"])
        .expect("node b");
    let client = network
        .host("tclient", "02:00:00:00:00:98", &["192.168.36.2/24"])
        .expect("client");
    let speaker_a = Speaker::start(&a, dir.path(), "node-a", &["192.168.36.100"]);
    let speaker_b = Speaker::start(&b, dir.path(), "node-b", &[]);

    // The client's kernel learns node-a's MAC: a UDP datagram to the IP makes
    // it resolve the address (nothing listens; only the resolution matters).
    let poke = "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('192.168.36.100', 9))";
    until(
        "the client resolves the IP to node-a",
        Duration::from_secs(15),
        || {
            let _ = client.run("python3", &["-c", poke]);
            let out = client
                .run("ip", &["neigh", "show", "192.168.36.100"])
                .expect("neigh");
            let said = String::from_utf8_lossy(&out.stdout).to_lowercase();
            if said.contains(MACS[0]) {
                Ok(())
            } else {
                Err(said)
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // Junk at the speaker: truncated ARP, a mangled Neighbor Solicitation.
    let junk = "import socket\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind(('eth0',0))\n\
        b=bytes.fromhex('ffffffffffff02000000009808060001080006040001')\n\
        v=bytes.fromhex('333300000001020000000098' + '86dd' + '6000000000203aff' + 'fd00'+'00'*14 + 'ff02'+'00'*13+'01' + '8700ffff' + '00'*28)\n\
        [s.send(x) for x in (b, v, b'\\x00'*14, b'\\xff'*60)]\n";
    let out = client.run("python3", &["-c", junk]).expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, said) = arping(&client, "192.168.36.100");
    assert!(
        ok && said.contains(MACS[0]),
        "still answering after junk: {said}"
    );

    // Takeover: node-b takes the IP, node-a lets it go. The client's entry
    // moves to node-b's MAC from the gratuitous ARP alone.
    write_announcement(&speaker_b.file, "node-b", &["192.168.36.100"]);
    write_announcement(&speaker_a.file, "node-a", &[]);
    until(
        "the client's neighbor entry moves to node-b",
        Duration::from_secs(15),
        || {
            let out = client
                .run("ip", &["neigh", "show", "192.168.36.100"])
                .expect("neigh");
            let said = String::from_utf8_lossy(&out.stdout).to_lowercase();
            if said.contains(MACS[1]) {
                Ok(())
            } else {
                Err(said)
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (ok, said) = arping(&client, "192.168.36.100");
    assert!(
        ok && said.contains(MACS[1]) && !said.contains(MACS[0]),
        "only node-b answers now: {said}"
    );
    drop(speaker_a);
    drop(speaker_b);
}
