//! Layer 2 with everything real [L2, FAILOVER]: kube-apiserver, the operator,
//! three speakers answering inside node namespaces, and a client namespace
//! resolving the Service IP with `arping`.

use std::time::{Duration, Instant};

use ferrolb_e2e::cluster::{TestCluster, service_yaml};
use ferrolb_e2e::netns::{Host, Network};
use ferrolb_e2e::process::{Process, binary};

const MACS: [&str; 3] = [
    "02:00:00:00:01:0a",
    "02:00:00:00:01:0b",
    "02:00:00:00:01:0c",
];
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

fn speaker(cluster: &TestCluster, node: &str, host: &Host) -> Process {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let args = [
        format!("--node={node}"),
        format!("--netns=/run/netns/{}", host.namespace),
        "--interface=eth0".to_string(),
        "--lease-seconds=3".to_string(),
        format!("--metrics-addr=127.0.0.1:{port}"),
    ];
    Process::start(
        &binary("ferrolb-speaker").expect("speaker built"),
        &args,
        &cluster.plane.kubeconfig,
        cluster.plane.dir().join(format!("speaker-{node}.log")),
    )
    .expect("speaker")
}

/// Which MAC answers ARP for `ip` from the client, if one does.
fn answering_mac(client: &Host, ip: &str) -> Option<String> {
    let out = client
        .run(
            "arping",
            &["-c", "1", "-w", "1", "-i", &client.interface, ip],
        )
        .ok()?;
    let said = String::from_utf8_lossy(&out.stdout).to_lowercase();
    MACS.iter()
        .find(|m| said.contains(*m))
        .map(|m| m.to_string())
}

fn active_node(cluster: &TestCluster, ip: &str) -> Option<String> {
    let out = cluster
        .kubectl(&["get", "nodeannouncements", "-o", "jsonpath={range .items[*]}{.metadata.name}={.spec.l2[?(@.role==\"active\")].ip}{\"\\n\"}{end}"])
        .ok()?;
    out.lines()
        .find(|l| {
            l.split_once('=')
                .is_some_and(|(_, ips)| ips.split_whitespace().any(|i| i == ip))
        })
        .and_then(|l| l.split_once('=').map(|(n, _)| n.to_string()))
}

#[tokio::test]
async fn the_service_ip_resolves_to_the_chosen_node_and_moves_when_its_speaker_dies() {
    let cluster = TestCluster::start().await.expect("cluster");
    let mut network = Network::new().expect("switch");
    let hosts: Vec<Host> = (0..3)
        .map(|i| {
            network
                .host(NODES[i], MACS[i], &[&format!("192.168.40.{}/24", 11 + i)])
                .expect("node")
        })
        .collect();
    let client = network
        .host("cli", "02:00:00:00:01:99", &["192.168.40.2/24"])
        .expect("client");
    for node in NODES {
        cluster
            .apply_ok(&format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {node}, labels: {{kubernetes.io/hostname: {node}}}}}\n"))
            .expect("node");
        let ready = r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"Test","message":"set by the test","lastHeartbeatTime":"2026-01-01T00:00:00Z","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#;
        cluster
            .kubectl(&[
                "patch",
                "node",
                node,
                "--subresource=status",
                "--type=merge",
                "-p",
                ready,
            ])
            .expect("ready");
    }
    cluster
        .apply_ok("apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: l2}\nspec: {addresses: [192.168.40.100-192.168.40.110]}\n---\napiVersion: ferrolb.io/v1alpha1\nkind: L2Advertisement\nmetadata: {name: l2}\nspec: {ipAddressPools: [l2]}\n")
        .expect("pool");
    let mut speakers: Vec<Option<Process>> = NODES
        .iter()
        .zip(&hosts)
        .map(|(n, h)| Some(speaker(&cluster, n, h)))
        .collect();
    let _operator = cluster.operator("solo", &[]).expect("operator");
    let created = Instant::now();
    cluster
        .apply_ok(&service_yaml("default", "web", "", ""))
        .expect("service");
    let ip = "192.168.40.100";

    cluster
        .kubectl(&[
            "wait",
            "--for=condition=ferrolb.io/Announced",
            "svc/web",
            "--timeout=60s",
        ])
        .unwrap_or_else(|e| {
            panic!(
                "{e}\n{}",
                speakers
                    .iter()
                    .flatten()
                    .map(Process::output)
                    .collect::<Vec<_>>()
                    .join("\n---\n")
            )
        });
    let first = active_node(&cluster, ip).expect("an active node");
    let index = NODES.iter().position(|n| *n == first).expect("known node");
    let deadline = Instant::now() + Duration::from_secs(20);
    while answering_mac(&client, ip).as_deref() != Some(MACS[index]) {
        assert!(
            Instant::now() < deadline,
            "the client never got {first}'s MAC"
        );
    }
    println!(
        "figure: Service created → first ARP answer: {:.2}s",
        created.elapsed().as_secs_f64()
    );
    let out = client
        .run("arping", &["-d", "-c", "3", "-i", &client.interface, ip])
        .expect("arping -d");
    assert!(
        out.status.success(),
        "one MAC only: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The active speaker dies: its Lease expires, the operator moves the IP,
    // the new node announces it.
    let killed = Instant::now();
    speakers[index].take().expect("speaker").kill();
    let deadline = Instant::now() + Duration::from_secs(40);
    let moved_to = loop {
        if let Some(mac) = answering_mac(&client, ip)
            && mac != MACS[index]
        {
            break mac;
        }
        assert!(Instant::now() < deadline, "no other node took {ip} over");
    };
    println!(
        "figure: slow-path failover, speaker killed → first answer from the new MAC: {:.2}s",
        killed.elapsed().as_secs_f64()
    );
    let now_active = active_node(&cluster, ip).expect("an active node");
    let new_index = NODES
        .iter()
        .position(|n| *n == now_active)
        .expect("known node");
    assert_eq!(
        moved_to, MACS[new_index],
        "the client reaches the node the operator chose"
    );
    cluster
        .kubectl(&[
            "wait",
            "--for=condition=ferrolb.io/Announced",
            "svc/web",
            "--timeout=30s",
        ])
        .expect("announced again");
}
