//! Admission end to end [WEBHOOK]: the real webhook binary registered by URL on
//! loopback with the certificate it manages itself, called by a real
//! kube-apiserver, driven with the real kubectl.

use std::time::{Duration, Instant};

use ferrolb_e2e::cluster::{TestCluster, text};

fn denied(cluster: &TestCluster, yaml: &str, fragments: &[&str]) {
    let out = cluster.apply(yaml).expect("kubectl");
    let said = text(&out);
    assert!(
        !out.status.success(),
        "accepted, should be denied:\n{yaml}\n{said}"
    );
    assert!(
        said.contains("admission webhook"),
        "denied by the webhook: {said}"
    );
    for fragment in fragments {
        assert!(said.contains(fragment), "wanted `{fragment}` in:\n{said}");
    }
}

const HEAD: &str = "apiVersion: ferrolb.io/v1alpha1\n";

#[tokio::test]
async fn invalid_objects_are_denied_with_their_reason_and_warnings_show() {
    let cluster = TestCluster::start().await.expect("cluster");
    let webhook = cluster.webhook(&[]).await.expect("webhook");
    cluster
        .apply_ok(&format!(
            "{HEAD}kind: IPAddressPool\nmetadata: {{name: main}}\nspec: {{addresses: [10.0.0.0/24, 'fd00::/64']}}\n---\n\
             {HEAD}kind: BGPPeer\nmetadata: {{name: router}}\nspec: {{myASN: 64512, peerASN: 64513, peerAddress: 192.168.10.254, nodeSelectors: [{{matchLabels: {{rack: a}}}}]}}\n---\n\
             {HEAD}kind: BGPAdvertisement\nmetadata: {{name: to-router}}\nspec: {{ipAddressPools: [main], peers: [router], localPref: 100}}\n"
        ))
        .expect("base objects");

    denied(
        &cluster,
        &format!(
            "{HEAD}kind: IPAddressPool\nmetadata: {{name: second}}\nspec: {{addresses: [10.0.0.128/25]}}\n"
        ),
        &[
            "spec.addresses[0]",
            "IPAddressPool 'main'",
            "10.0.0.128-10.0.0.255",
        ],
    );
    denied(
        &cluster,
        &format!(
            "{HEAD}kind: IPAddressPool\nmetadata: {{name: second}}\nspec: {{addresses: [10.1.0.0/24, 10.1.0.7]}}\n"
        ),
        &["spec.addresses[1]", "overlaps spec.addresses[0]"],
    );
    denied(
        &cluster,
        &format!(
            "{HEAD}kind: BGPPeer\nmetadata: {{name: router2}}\nspec: {{myASN: 64512, peerASN: 64999, peerAddress: 192.168.10.254}}\n"
        ),
        &["spec.peerAddress", "BGPPeer 'router'"],
    );
    denied(
        &cluster,
        &format!(
            "{HEAD}kind: BGPAdvertisement\nmetadata: {{name: wide}}\nspec: {{ipAddressPools: [main], aggregationLength: 16}}\n"
        ),
        &["aggregationLength 16", "IPAddressPool 'main'"],
    );
    denied(
        &cluster,
        &format!(
            "{HEAD}kind: BGPAdvertisement\nmetadata: {{name: other-pref}}\nspec: {{ipAddressPools: [main], localPref: 300}}\n"
        ),
        &["spec.localPref", "BGPAdvertisement 'to-router'"],
    );
    denied(
        &cluster,
        &format!(
            "{HEAD}kind: L2Advertisement\nmetadata: {{name: dup}}\nspec: {{nodeSelectors: [{{matchLabels: {{a: b}}}}, {{matchLabels: {{a: b}}}}]}}\n"
        ),
        &["spec.nodeSelectors[1]: duplicate of spec.nodeSelectors[0]"],
    );
    // Disjoint node selectors on the same router are fine.
    cluster
        .apply_ok(&format!(
            "{HEAD}kind: BGPPeer\nmetadata: {{name: router-b}}\nspec: {{myASN: 64512, peerASN: 64513, peerAddress: 192.168.10.254, nodeSelectors: [{{matchLabels: {{rack: b}}}}]}}\n"
        ))
        .expect("disjoint selectors");

    // Warnings: a reference to a pool that is not there yet…
    let out = cluster
        .apply_ok(&format!("{HEAD}kind: L2Advertisement\nmetadata: {{name: early}}\nspec: {{ipAddressPools: [later]}}\n"))
        .expect("allowed with a warning");
    assert!(
        out.contains("Warning: spec.ipAddressPools: IPAddressPool 'later' does not exist yet"),
        "{out}"
    );
    // …and a pool edit that strands an IP a Service holds.
    cluster
        .apply_ok("apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\n")
        .expect("service");
    cluster
        .kubectl(&[
            "patch",
            "svc",
            "web",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"loadBalancer":{"ingress":[{"ip":"10.0.0.5","ipMode":"VIP"}]}}}"#,
        ])
        .expect("status");
    // The webhook's watch must have seen the status first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = cluster
        .apply_ok(&format!("{HEAD}kind: IPAddressPool\nmetadata: {{name: main}}\nspec: {{addresses: [10.0.0.128/25, 'fd00::/64']}}\n"))
        .expect("shrink allowed");
    assert!(
        out.contains("Warning:") && out.contains("default/web (10.0.0.5)"),
        "{out}"
    );
    // Deleting the pool strands what is still in it.
    cluster
        .kubectl(&[
            "patch",
            "svc",
            "web",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"loadBalancer":{"ingress":[{"ip":"10.0.0.200","ipMode":"VIP"}]}}}"#,
        ])
        .expect("status");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = cluster
        .kubectl(&["delete", "ipaddresspool", "main"])
        .expect("delete allowed");
    assert!(
        out.contains("default/web (10.0.0.200)"),
        "deleting warns too: {out}"
    );

    // Admissions by kind and verdict.
    let metric = |series: &str| webhook.metric(series).unwrap_or_else(|e| panic!("{e}"));
    assert!(metric(r#"ferrolb_webhook_admissions_total{kind="bgppeers",verdict="denied"}"#) >= 1.0);
    assert!(
        metric(r#"ferrolb_webhook_admissions_total{kind="ipaddresspools",verdict="warned"}"#)
            >= 2.0
    );
    assert!(
        metric(r#"ferrolb_webhook_admissions_total{kind="bgppeers",verdict="allowed"}"#) >= 2.0
    );

    // A BFDProfile a peer uses is not deleted (MetalLB's e2e checks the
    // same); once no peer names it, it is.
    cluster
        .apply_ok(&format!(
            "{HEAD}kind: BFDProfile\nmetadata: {{name: fast}}\nspec: {{receiveInterval: 100, transmitInterval: 100}}\n---\n\
             {HEAD}kind: BGPPeer\nmetadata: {{name: router}}\nspec: {{myASN: 64512, peerASN: 64513, peerAddress: 192.168.10.254, nodeSelectors: [{{matchLabels: {{rack: a}}}}], bfdProfile: fast}}\n"
        ))
        .expect("a peer with BFD");
    let out = cluster
        .kubectl(&["delete", "bfdprofile", "fast"])
        .expect_err("deleting a BFDProfile in use is refused");
    let said = out.to_string();
    assert!(
        said.contains("admission webhook")
            && said.contains("BFDProfile 'fast' is used by BGPPeer 'router'")
            && said.contains("remove spec.bfdProfile"),
        "{said}"
    );
    cluster
        .kubectl(&["get", "bfdprofile", "fast"])
        .expect("the profile is still there");
    cluster
        .kubectl(&["delete", "bgppeer", "router"])
        .expect("the peer goes");
    cluster
        .kubectl(&["delete", "bfdprofile", "fast"])
        .expect("an unused profile is deleted");
}

/// Valid objects that reference each other, one per file.
const FOLDER: &[(&str, &str)] = &[
    (
        "pool",
        "kind: IPAddressPool\nmetadata: {name: gitops-pool}\nspec: {addresses: [172.30.0.0/24]}\n",
    ),
    (
        "pool6",
        "kind: IPAddressPool\nmetadata: {name: gitops-pool6, labels: {family: v6}}\nspec: {addresses: ['fd30::/120']}\n",
    ),
    (
        "l2",
        "kind: L2Advertisement\nmetadata: {name: gitops-l2}\nspec: {ipAddressPools: [gitops-pool], interfaces: [eth0]}\n",
    ),
    (
        "peer",
        "kind: BGPPeer\nmetadata: {name: gitops-router}\nspec: {myASN: 64512, peerASN: 64513, peerAddress: 192.168.30.1, passwordSecretRef: {name: gitops-bgp}}\n",
    ),
    (
        "adv",
        "kind: BGPAdvertisement\nmetadata: {name: gitops-adv}\nspec: {ipAddressPools: [gitops-pool], peers: [gitops-router], aggregationLength: 24, communities: ['64512:7']}\n",
    ),
    (
        "adv6",
        "kind: BGPAdvertisement\nmetadata: {name: gitops-adv6}\nspec: {ipAddressPoolSelectors: [{matchLabels: {family: v6}}], peers: [gitops-router]}\n",
    ),
];

#[tokio::test]
async fn a_folder_of_valid_objects_applies_in_any_order() {
    let cluster = TestCluster::start().await.expect("cluster");
    let _webhook = cluster.webhook(&[]).await.expect("webhook");
    // Three orders, each applied in one `kubectl apply -f DIR` (file name order).
    for (round, order) in [[5, 4, 3, 2, 1, 0], [2, 4, 0, 5, 3, 1], [0, 1, 2, 3, 4, 5]]
        .iter()
        .enumerate()
    {
        let dir = tempfile::tempdir().expect("dir");
        for (position, index) in order.iter().enumerate() {
            let (name, body) = FOLDER[*index];
            std::fs::write(
                dir.path().join(format!("{position:02}-{name}.yaml")),
                format!("{HEAD}{body}"),
            )
            .expect("write");
        }
        let path = dir.path().to_str().expect("path");
        let out = cluster
            .kubectl(&["apply", "-f", path])
            .unwrap_or_else(|e| panic!("order {order:?} refused: {e}"));
        assert_eq!(
            out.matches(" created").count(),
            FOLDER.len(),
            "round {round}: {out}"
        );
        cluster.kubectl(&["delete", "-f", path]).expect("clean up");
    }
}

#[tokio::test]
async fn certificate_rotation_while_in_use_fails_no_admission() {
    let cluster = TestCluster::start().await.expect("cluster");
    // A 6 s certificate is replaced every ~4 s.
    let webhook = cluster
        .webhook(&["--cert-validity-seconds=6"])
        .await
        .expect("webhook");
    let started = Instant::now();
    let mut calls = 0;
    let mut failures = Vec::new();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(16) {
        i += 1;
        let pool = format!(
            "{HEAD}kind: IPAddressPool\nmetadata: {{name: rotation-{i}}}\nspec: {{addresses: [198.19.{}.0/24]}}\n",
            i % 250
        );
        let out = cluster
            .apply_with(&pool, &["--dry-run=server"])
            .expect("kubectl");
        calls += 1;
        if !out.status.success() {
            failures.push(text(&out));
        }
    }
    let issued = webhook
        .output()
        .matches("serving certificate issued")
        .count();
    assert!(
        issued >= 3,
        "rotations happened during the calls ({issued} certificates):\n{}",
        webhook.output()
    );
    assert!(
        failures.is_empty(),
        "{} of {calls} admissions failed during rotation: {failures:#?}",
        failures.len()
    );
    assert!(calls > 20, "the apiserver kept calling ({calls} calls)");
}

#[tokio::test]
async fn the_webhook_manifests_are_accepted_by_the_apiserver() {
    let cluster = TestCluster::start().await.expect("cluster");
    let dir = ferrolb_e2e::controlplane::workspace_root().join("config/webhook");
    let out = cluster
        .kubectl(&[
            "apply",
            "--dry-run=server",
            "-k",
            dir.to_str().expect("path"),
        ])
        .expect("kustomize dry run");
    for object in [
        "deployment.apps/ferrolb-webhook created",
        "validatingwebhookconfiguration.admissionregistration.k8s.io/ferrolb-webhook created",
        "clusterrole.rbac.authorization.k8s.io/ferrolb-webhook created",
    ] {
        assert!(out.contains(object), "{object} in:\n{out}");
    }
}

#[tokio::test]
async fn a_mounted_certificate_is_served_and_reloaded_when_the_files_change() {
    let cluster = TestCluster::start().await.expect("cluster");
    let ca = ferrolb_e2e::pki::Authority::new("cert-manager-like").expect("ca");
    let dir = tempfile::tempdir().expect("dir");
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let write = |round: u32| {
        let (cert, key) = ca
            .issue(&format!("webhook-{round}"), None, &["127.0.0.1"], true)
            .expect("issue");
        // Write the key first and the certificate last, as a rotating mount does.
        std::fs::write(&key_path, key).expect("key");
        std::fs::write(&cert_path, cert).expect("cert");
    };
    write(0);
    let args = [
        format!("--tls-cert-file={}", cert_path.display()),
        format!("--tls-key-file={}", key_path.display()),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let webhook = cluster
        .webhook_trusting(&args, Some(ca.pem()))
        .await
        .expect("webhook");
    let probe = |i: u32| {
        format!(
            "{HEAD}kind: IPAddressPool\nmetadata: {{name: m{i}}}\nspec: {{addresses: [198.20.{i}.0/24]}}\n"
        )
    };
    for round in 1..=2 {
        write(round);
        let deadline = Instant::now() + Duration::from_secs(15);
        while webhook
            .output()
            .matches("certificate (re)loaded from files")
            .count()
            < round as usize
        {
            assert!(
                Instant::now() < deadline,
                "never reloaded:\n{}",
                webhook.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let out = cluster
            .apply_with(&probe(round), &["--dry-run=server"])
            .expect("kubectl");
        assert!(
            out.status.success(),
            "admission after reload {round}: {}",
            text(&out)
        );
    }
    assert!(
        !webhook.output().contains("ferrolb-webhook-tls"),
        "no self-managed Secret in this mode"
    );
}
