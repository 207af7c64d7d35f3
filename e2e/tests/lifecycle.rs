//! How the binaries start and stop [WEBHOOK, DEPLOY, E2E]: the webhook ends
//! on SIGTERM at any stage (it is PID 1 in its container), answers liveness
//! before its certificate is ready and readiness only after; a pool delete
//! goes through while the webhook is down (it could only warn), a pool create
//! does not; a metrics port already taken ends each binary with that error.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use ferrolb_e2e::cluster::TestCluster;
use ferrolb_e2e::process::{Process, binary};
use ferrolb_e2e::wait::until;
use nix::sys::signal::Signal;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("address")
        .port()
}

/// Waits for the process to end; how long it took.
fn stops(process: &mut Process, what: &str) -> Duration {
    let start = Instant::now();
    until(what, Duration::from_secs(10), || {
        (!process.running()).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", process.output()));
    start.elapsed()
}

#[tokio::test]
async fn the_webhook_is_live_at_once_ready_when_serving_and_stops_on_sigterm() {
    let cluster = TestCluster::start().await.expect("cluster");
    // A namespace that does not exist: the certificate Secret cannot be
    // written, so the webhook stays in its start-up.
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut stuck = Process::start(
        &binary("ferrolb-webhook").expect("binary"),
        &[
            format!("--listen=127.0.0.1:{}", free_port()),
            format!("--metrics-addr={metrics}"),
            "--namespace=not-there".to_string(),
        ],
        &cluster.plane.kubeconfig,
        cluster.plane.dir().join("webhook-stuck.log"),
    )
    .expect("webhook");
    stuck.metrics = Some(metrics.parse().expect("address"));
    let health = until("/healthz", Duration::from_secs(10), || {
        stuck.get("/healthz").ok()
    })
    .expect("liveness answers before the certificate");
    assert!(health.0.contains(" 200"), "{health:?}");
    let ready = stuck.get("/readyz").expect("readyz");
    assert!(
        ready.0.contains(" 503"),
        "not ready without a certificate: {ready:?}"
    );
    stuck.signal(Signal::SIGTERM);
    let took = stops(&mut stuck, "the webhook to stop in its start-up");
    println!("FIGURE webhook stuck in start-up: SIGTERM → exit in {took:?}");

    let mut webhook = cluster.webhook(&[]).await.expect("webhook");
    assert!(webhook.ready(), "ready once serving");
    cluster
        .apply_ok("apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: a}\nspec: {addresses: [192.168.74.0/28]}\n")
        .expect("pool");
    webhook.signal(Signal::SIGTERM);
    let took = stops(&mut webhook, "the webhook to stop");
    println!("FIGURE webhook serving: SIGTERM → exit in {took:?}");

    // Down: deletes go through (they could only warn), creates do not.
    cluster
        .kubectl(&["delete", "ipaddresspool", "a", "--timeout=20s"])
        .expect("a pool delete with the webhook down");
    let refused = cluster
        .apply("apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: b}\nspec: {addresses: [192.168.74.16/28]}\n")
        .expect("apply");
    assert!(!refused.status.success(), "a create needs the webhook");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("failed calling webhook"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[tokio::test]
async fn a_metrics_port_already_taken_ends_each_binary_with_the_reason() {
    let cluster = TestCluster::start().await.expect("cluster");
    let taken = TcpListener::bind("127.0.0.1:0").expect("listener");
    let address = taken.local_addr().expect("address");
    for (name, extra) in [
        ("ferrolb-operator", vec!["--leader-elect=false"]),
        ("ferrolb-webhook", vec![]),
        ("ferrolb-speaker", vec!["--node=node-a"]),
    ] {
        let mut args = vec![format!("--metrics-addr={address}")];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut process = Process::start(
            &binary(name).expect("binary"),
            &args,
            &cluster.plane.kubeconfig,
            cluster.plane.dir().join(format!("{name}-port.log")),
        )
        .expect("start");
        stops(&mut process, &format!("{name} to give up"));
        let output = process.output();
        assert!(
            output.contains(&format!(
                "cannot listen on {address} for metrics and health"
            )),
            "{name}: {output}"
        );
    }
}
