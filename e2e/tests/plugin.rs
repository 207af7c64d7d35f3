//! `kubectl ferrolb` against a real apiserver [MIGRATE, PLUGIN]: moving from
//! MetalLB keeps every IP (convert --from-cluster --check, apply, start the
//! operator), `status` explains a Service, `doctor` finds each staged problem.

use std::net::IpAddr;
use std::process::Output;
use std::time::Duration;

use ferrolb_e2e::cluster::{TestCluster, service_yaml, text};
use ferrolb_e2e::lab::ThreeNodes;
use ferrolb_e2e::process::binary;

const WAIT: Duration = Duration::from_secs(30);

/// Runs `kubectl ferrolb ARGS` against the cluster, `stdin` piped in.
fn plugin(cluster: &TestCluster, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(binary("kubectl-ferrolb").expect("plugin built"));
    command
        .arg(format!("--kubeconfig={}", cluster.plane.kubeconfig.display()))
        .args(args)
        .stdin(std::process::Stdio::null());
    command.output().expect("run kubectl-ferrolb")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

/// Writes a Service's ingress as MetalLB's controller does (its own field
/// manager, through the status subresource).
fn metallb_status(cluster: &TestCluster, name: &str, address: &str) {
    cluster
        .kubectl(&[
            "patch",
            "svc",
            name,
            "--subresource=status",
            "--type=merge",
            "--field-manager=metallb-controller",
            "-p",
            &format!(r#"{{"status":{{"loadBalancer":{{"ingress":[{{"ip":"{address}","ipMode":"VIP"}}]}}}}}}"#),
        ])
        .expect("status as MetalLB wrote it");
}

const LEGACY: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  namespace: metallb-system
  name: config
data:
  config: |
    address-pools:
    - name: default
      protocol: layer2
      addresses:
      - 192.168.10.0 - 192.168.10.20
    - name: reserved
      protocol: layer2
      auto-assign: false
      addresses:
      - 192.168.20.0/29
"#;

#[tokio::test]
async fn moving_from_metallb_keeps_every_ip_and_explains_the_one_outside_the_pools() {
    let cluster = TestCluster::start().await.expect("cluster");
    let _webhook = cluster.webhook(&[]).await.expect("webhook");
    cluster
        .kubectl(&["create", "namespace", "metallb-system"])
        .expect("namespace");
    cluster.apply_ok(LEGACY).expect("legacy ConfigMap");

    // Services as MetalLB left them: annotations in its spellings, status
    // written by its controller. None of these IPs is the first free one.
    let annotated = |pairs: &[(&str, &str)]| {
        let mut out = String::from("  annotations:\n");
        for (k, v) in pairs {
            out.push_str(&format!("    {k}: '{v}'\n"));
        }
        out
    };
    let staged: [(&str, String, &str, &str); 6] = [
        ("web", String::new(), "", "192.168.10.5"),
        (
            "pinned",
            annotated(&[("metallb.universe.tf/loadBalancerIPs", "192.168.10.9")]),
            "",
            "192.168.10.9",
        ),
        (
            "shared-a",
            annotated(&[("metallb.universe.tf/allow-shared-ip", "k")]),
            "",
            "192.168.10.7",
        ),
        (
            "shared-b",
            annotated(&[("metallb.universe.tf/allow-shared-ip", "k")]),
            "",
            "192.168.10.7",
        ),
        (
            "reserved",
            annotated(&[("metallb.universe.tf/address-pool", "reserved")]),
            "",
            "192.168.20.3",
        ),
        ("outside", String::new(), "", "10.99.0.1"),
    ];
    for (name, metadata, spec, address) in &staged {
        let mut yaml = service_yaml("default", name, metadata, spec);
        if *name == "shared-b" {
            yaml = yaml.replace("port: 80,", "port: 443,");
        }
        cluster.apply_ok(&yaml).expect("service");
        metallb_status(&cluster, name, address);
    }

    // MetalLB is stopped here. managedFields keep seconds only, and a write
    // in the same second as ferrolb's first counts as a controller still
    // running; a real migration takes longer than that.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // convert --from-cluster --check: read from the cluster, judged by the
    // schema and the webhook, nothing stored.
    let out = plugin(&cluster, &["convert", "--from-cluster", "--check"]);
    assert!(out.status.success(), "{}", text(&out));
    let converted = stdout(&out);
    assert!(
        stderr(&out).contains("check: IPAddressPool default: accepted (dry run)"),
        "{}",
        stderr(&out)
    );
    assert!(
        cluster
            .kubectl(&["get", "ipaddresspools", "-o", "name"])
            .expect("get")
            .trim()
            .is_empty(),
        "a dry run stored nothing"
    );
    cluster.apply_ok(&converted).expect("apply the conversion");

    let operator = cluster.operator("solo", &[]).expect("operator");
    for (name, _, _, address) in &staged {
        let expected = [ip(address)];
        let allocation = cluster
            .wait_allocation("default", name, WAIT, |a| a.status.is_some())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(allocation.ips, expected, "{name} kept its IP");
        if *name == "outside" {
            assert!(allocation.is("IPNotInAnyPool"), "{name}: {allocation:?}");
            assert!(allocation.message.contains("10.99.0.1"), "{allocation:?}");
        } else {
            assert!(allocation.allocated(), "{name}: {allocation:?}");
        }
    }
    // A new Service gets the first free address: the kept ones were not free.
    cluster
        .apply_ok(&service_yaml("default", "fresh", "", ""))
        .expect("fresh");
    let fresh = cluster
        .wait_allocation("default", "fresh", WAIT, |a| a.allocated())
        .await
        .expect("fresh allocated");
    assert_eq!(fresh.ips, [ip("192.168.10.0")]);

    // MetalLB is gone (stopped before the apply): its older entry in the
    // Services' managedFields must not be taken for a controller fighting
    // over the status.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, _, _, address) in &staged {
        let (_, reason, message) = cluster
            .service_condition(name, "ferrolb.io/Announced")
            .unwrap_or_default();
        assert_ne!(
            reason,
            "OtherController",
            "{name}: {message}\n{}",
            cluster
                .kubectl(&["get", "svc", name, "-o", "yaml", "--show-managed-fields"])
                .unwrap_or_default()
        );
        assert_eq!(cluster.service_ips(name), [address.to_string()], "{name}");
    }
    drop(operator);
}
