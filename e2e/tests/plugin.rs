//! `kubectl ferrolb` against a real apiserver [MIGRATE, PLUGIN]: moving from
//! MetalLB keeps every IP (convert --from-cluster --check, apply, start the
//! operator), `status` explains a Service, `doctor` finds each staged problem.

use std::net::IpAddr;
use std::process::Output;
use std::time::Duration;

use ferrolb_e2e::cluster::{TestCluster, service_yaml, text};
use ferrolb_e2e::controlplane::workspace_root;
use ferrolb_e2e::lab::ThreeNodes;
use ferrolb_e2e::process::binary;

const WAIT: Duration = Duration::from_secs(30);

/// Runs `kubectl ferrolb ARGS` against the cluster, `stdin` piped in.
fn plugin(cluster: &TestCluster, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(binary("kubectl-ferrolb").expect("plugin built"));
    command
        .arg(format!(
            "--kubeconfig={}",
            cluster.plane.kubeconfig.display()
        ))
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
    let staged: [(&str, &str, &str); 6] = [
        ("web", "", "192.168.10.5"),
        ("pinned", "loadBalancerIPs: 192.168.10.9", "192.168.10.9"),
        ("shared-a", "allow-shared-ip: k", "192.168.10.7"),
        ("shared-b", "allow-shared-ip: k", "192.168.10.7"),
        ("reserved", "address-pool: reserved", "192.168.20.3"),
        ("outside", "", "10.99.0.1"),
    ];
    for (name, annotation, address) in &staged {
        let metadata = if annotation.is_empty() {
            String::new()
        } else {
            format!("  annotations: {{metallb.universe.tf/{annotation}}}\n")
        };
        let mut yaml = service_yaml("default", name, &metadata, "");
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
    for (name, _, address) in &staged {
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
    for (name, _, address) in &staged {
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

/// Service `default/wants`, asking for an IP in no pool.
fn wants(cluster: &TestCluster) {
    cluster
        .apply_ok(&service_yaml(
            "default",
            "wants",
            "  annotations: {ferrolb.io/loadBalancerIPs: 10.250.0.1}\n",
            "",
        ))
        .expect("wants");
}

/// `kubectl ferrolb doctor -o json`: (exit code, findings by check).
fn doctor(cluster: &TestCluster) -> (i32, Vec<serde_json::Value>) {
    let out = plugin(cluster, &["doctor", "-o", "json"]);
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor -o json: {e}: {}", text(&out)));
    (out.status.code().unwrap_or(-1), findings)
}

/// The findings of `check` with `severity`, as text.
fn findings(all: &[serde_json::Value], check: &str, severity: &str) -> Vec<String> {
    all.iter()
        .filter(|f| f["check"] == check && f["severity"] == severity)
        .map(|f| {
            format!(
                "{} | fix: {}",
                f["what"].as_str().unwrap_or_default(),
                f["fix"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test]
async fn status_explains_a_service_and_doctor_finds_each_staged_problem() {
    let lab = ThreeNodes::start("192.168.42", 4, "192.168.42.100-192.168.42.110")
        .await
        .expect("lab");
    let cluster = &lab.cluster;
    cluster
        .kubectl(&[
            "label",
            "namespace",
            "ferrolb-system",
            "pod-security.kubernetes.io/enforce=privileged",
        ])
        .expect("label");
    let mut speakers: Vec<_> = ferrolb_e2e::lab::NODES
        .iter()
        .zip(&lab.hosts)
        .map(|(node, host)| {
            cluster
                .speaker(node, &host.namespace, &[])
                .expect("speaker")
        })
        .collect();
    let _operator = cluster.operator("solo", &[]).expect("operator");
    let webhook = cluster.webhook(&[]).await.expect("webhook");
    cluster
        .apply_ok(&service_yaml("default", "web", "", ""))
        .expect("web");
    cluster.wait_announced("web", WAIT).expect("web announced");

    // status of one Service, as JSON: the active node answers, one stands by.
    let out = plugin(cluster, &["status", "svc/web", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let ip = report["ips"][0]["ip"].as_str().expect("an IP").to_string();
    assert_eq!(cluster.service_ips("web"), std::slice::from_ref(&ip));
    assert_eq!(report["ips"][0]["pools"], serde_json::json!(["l2"]));
    let layer2 = report["ips"][0]["layer2"]
        .as_array()
        .expect("layer2")
        .clone();
    let active: Vec<_> = layer2.iter().filter(|l| l["role"] == "active").collect();
    let standby: Vec<_> = layer2.iter().filter(|l| l["role"] == "standby").collect();
    assert_eq!(active.len(), 1, "{layer2:?}");
    assert_eq!(active[0]["state"], "Announcing", "{layer2:?}");
    assert_eq!(standby.len(), 1, "{layer2:?}");
    assert_eq!(active[0]["standby"], standby[0]["node"], "{layer2:?}");
    let conditions: Vec<_> = report["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap_or_default(),
                c["status"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        conditions,
        [
            ("ferrolb.io/IPAllocated", "True"),
            ("ferrolb.io/Announced", "True")
        ]
    );
    assert!(
        report["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["reason"] == "IPAllocated")),
        "{report}"
    );
    // The same as text, and the table.
    let out = plugin(cluster, &["status", "web"]);
    let shown = stdout(&out);
    let active_node = active[0]["node"].as_str().unwrap_or_default();
    assert!(
        shown.contains(&format!("IP {ip} (pool l2)"))
            && shown.lines().any(|l| l.contains("active")
                && l.contains(active_node)
                && l.contains("Announcing")),
        "{shown}"
    );
    let out = plugin(cluster, &["status", "-A"]);
    let row = stdout(&out)
        .lines()
        .find(|l| l.starts_with("default") && l.contains(" web "))
        .unwrap_or_default()
        .to_string();
    assert!(
        row.contains(&ip) && row.contains(&format!("L2 {active_node}")),
        "{}",
        stdout(&out)
    );
    // A Service that cannot get an IP says why.
    wants(cluster);
    cluster
        .wait_allocation("default", "wants", WAIT, |a| {
            a.is("RequestedIPNotInAnyPool")
        })
        .await
        .expect("wants fails");
    let out = plugin(cluster, &["status", "svc/wants"]);
    assert!(
        stdout(&out).contains("IPs: none") && stdout(&out).contains("RequestedIPNotInAnyPool"),
        "{}",
        stdout(&out)
    );
    cluster
        .kubectl(&["delete", "svc", "wants"])
        .expect("delete wants");

    // A healthy cluster: doctor exits 0 and says what it checked.
    let (code, healthy) = doctor(cluster);
    let problems: Vec<_> = healthy.iter().filter(|f| f["severity"] != "ok").collect();
    assert!(code == 0 && problems.is_empty(), "{problems:?}");
    for check in ["operator", "webhook", "speakers", "pools", "services"] {
        assert_eq!(
            findings(&healthy, check, "ok").len(),
            1,
            "{check}: {healthy:?}"
        );
    }

    // Stage every problem at once.
    cluster
        .apply_ok(
            "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: lonely}\nspec: {addresses: [10.219.0.0/30]}\n",
        )
        .expect("a pool nothing advertises");
    drop(speakers.pop()); // node-c's speaker dies; its Lease runs out in 3 s
    drop(webhook);
    cluster
        .kubectl(&[
            "label",
            "node",
            "node-b",
            "node.kubernetes.io/exclude-from-external-load-balancers=true",
        ])
        .expect("exclude");
    cluster
        .kubectl(&[
            "label",
            "namespace",
            "ferrolb-system",
            "pod-security.kubernetes.io/enforce=baseline",
            "--overwrite",
        ])
        .expect("baseline");
    cluster
        .apply_ok(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kube-proxy, namespace: kube-system}\ndata:\n  config.conf: |\n    kind: KubeProxyConfiguration\n    mode: ipvs\n    ipvs: {strictARP: false}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: default, namespace: kube-system}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: svclb-web-x1\n  namespace: kube-system\n  labels: {svccontroller.k3s.cattle.io/svcname: web}\nspec:\n  containers: [{name: lb, image: rancher/klipper-lb:v0.4.9}]\n",
        )
        .expect("kube-proxy and svclb");
    // What the webhook being down does to users: pool changes are refused.
    let out = cluster.apply(
        "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: refused}\nspec: {addresses: [10.219.1.0/30]}\n",
    );
    let refused = text(&out.expect("apply"));
    assert!(refused.contains("failed calling webhook"), "{refused}");
    wants(cluster);
    tokio::time::sleep(Duration::from_secs(4)).await;

    let (code, found) = doctor(cluster);
    assert_eq!(code, 1, "{found:?}");
    let expect = |check: &str, severity: &str, words: &[&str]| {
        let hits = findings(&found, check, severity);
        assert!(
            hits.iter().any(|h| words.iter().all(|w| h.contains(w))),
            "{check}/{severity} with {words:?}: {hits:?}\nall: {found:?}"
        );
    };
    for (check, severity, words) in [
        (
            "webhook",
            "error",
            &["does not answer", "failed calling webhook"][..],
        ),
        ("pod-security", "error", &["baseline", "enforce=privileged"]),
        ("kube-proxy", "error", &["IPVS", "strictARP: true"]),
        ("excluded-nodes", "warning", &["node-b", "label node"]),
        (
            "other-lb",
            "error",
            &["k3s ServiceLB", "--disable servicelb"],
        ),
        ("speakers", "warning", &["node-c", "ferrolb-speaker"]),
        ("pools", "warning", &["lonely", "L2Advertisement"]),
        (
            "services",
            "error",
            &["default/wants", "RequestedIPNotInAnyPool"],
        ),
    ] {
        expect(check, severity, words);
    }
    // The text form says the same, problems first.
    let out = plugin(cluster, &["doctor"]);
    let shown = stdout(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(shown.starts_with("ERROR"), "{shown}");
    assert!(shown.trim_end().ends_with("warning(s)"), "{shown}");
}

/// `kubectl ferrolb convert -f FILE --check` of `text` written as `name`.
fn convert_and_check(cluster: &TestCluster, name: &str, text: &str) -> Output {
    let file = cluster.plane.dir().join(name);
    std::fs::write(&file, text).expect("write");
    plugin(
        cluster,
        &["convert", "-f", &file.to_string_lossy(), "--check"],
    )
}

#[tokio::test]
async fn every_golden_conversion_is_accepted_by_the_schema_and_the_webhook() {
    let cluster = TestCluster::start().await.expect("cluster");
    let _webhook = cluster.webhook(&[]).await.expect("webhook");
    let dir = workspace_root().join("plugin/tests/golden");
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .expect("golden dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let name = p.to_string_lossy();
            name.ends_with(".yaml") && !name.ends_with(".out.yaml")
        })
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 6, "{inputs:?}");
    for input in inputs {
        let path = input.to_string_lossy().into_owned();
        // Dry runs: the inputs need not agree with each other (overlapping
        // pools across files), each is judged on its own.
        let out = plugin(&cluster, &["convert", "-f", &path, "--check"]);
        assert!(out.status.success(), "{path}: {}", text(&out));
        let objects = stdout(&out).matches("\nkind: ").count();
        let accepted = stderr(&out).matches(": accepted (dry run)").count();
        assert_eq!(accepted, objects, "{path}: {}", stderr(&out));
    }
    // The webhook's warnings are shown, less those a dry run alone causes:
    // the L2Advertisement's pool is in the same output (stored once
    // applied), the BGPPeer's BFDProfile is nowhere.
    let out = convert_and_check(
        &cluster,
        "dangling.yaml",
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: lab}\nspec: {addresses: [10.1.2.0/28]}\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: lab}\nspec: {ipAddressPools: [lab]}\n---\napiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: tor}\nspec: {myASN: 64512, peerASN: 64513, peerAddress: 10.1.3.1, bfdProfile: missing}\n",
    );
    assert!(
        out.status.success(),
        "a warning is not a refusal: {}",
        text(&out)
    );
    let said = stderr(&out);
    assert!(
        said.contains(
            "check: BGPPeer tor: warning: spec.bfdProfile: BFDProfile 'missing' does not exist yet"
        ),
        "{said}"
    );
    assert_eq!(said.matches(": warning: ").count(), 1, "{said}");

    // A conversion the webhook refuses (a pool overlapping one already
    // stored) fails --check with the webhook's reason.
    cluster
        .apply_ok(
            "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: a}\nspec: {addresses: [10.1.0.0/24]}\n",
        )
        .expect("pool a stored");
    let out = convert_and_check(
        &cluster,
        "overlapping.yaml",
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: b}\nspec: {addresses: [10.1.0.128/25]}\n",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("check: IPAddressPool b: REFUSED")
            && stderr(&out).contains("denied the request"),
        "{}",
        stderr(&out)
    );
}

/// A stand-in for one of MetalLB's CRDs: its group, kind and versions, any
/// spec (the conversion, not this schema, reads the fields).
fn metallb_crd(kind: &str, plural: &str, versions: &[&str]) -> String {
    let mut yaml = format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: {plural}.metallb.io}}\nspec:\n  group: metallb.io\n  scope: Namespaced\n  names: {{kind: {kind}, plural: {plural}, singular: {}, listKind: {kind}List}}\n  versions:\n",
        kind.to_lowercase()
    );
    for (i, version) in versions.iter().enumerate() {
        yaml.push_str(&format!(
            "  - name: {version}\n    served: true\n    storage: {}\n    schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n",
            i + 1 == versions.len()
        ));
    }
    yaml
}

#[tokio::test]
async fn convert_from_the_cluster_reads_metallb_objects_and_their_password_secrets() {
    let cluster = TestCluster::start().await.expect("cluster");
    for (kind, plural, versions) in [
        ("IPAddressPool", "ipaddresspools", &["v1beta1"][..]),
        ("BGPPeer", "bgppeers", &["v1beta1", "v1beta2"][..]),
        ("BGPAdvertisement", "bgpadvertisements", &["v1beta1"][..]),
        ("Community", "communities", &["v1beta1"][..]),
    ] {
        cluster
            .apply_ok(&metallb_crd(kind, plural, versions))
            .expect("crd");
    }
    cluster
        .kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ])
        .expect("established");
    cluster
        .kubectl(&["create", "namespace", "lb"])
        .expect("namespace");
    cluster
        .apply_ok(
            r#"apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: prod, namespace: lb}
spec: {addresses: [192.168.30.0/28]}
---
apiVersion: metallb.io/v1beta1
kind: Community
metadata: {name: aliases, namespace: lb}
spec:
  communities: [{name: no-export, value: "65535:65281"}]
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: prod, namespace: lb}
spec: {ipAddressPools: [prod], communities: [no-export]}
---
apiVersion: v1
kind: Secret
metadata: {name: tor-password, namespace: lb}
type: kubernetes.io/basic-auth
stringData: {password: s3cret-tor}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: tor, namespace: lb}
spec: {myASN: 64500, peerASN: 64501, peerAddress: 10.0.0.1, passwordSecret: {name: tor-password}}
"#,
        )
        .expect("MetalLB objects");
    // Nothing in the default namespace: the error says where to look.
    let out = plugin(&cluster, &["convert", "--from-cluster"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no MetalLB configuration in namespace metallb-system")
            && stdout(&out).is_empty(),
        "{}",
        text(&out)
    );

    let out = plugin(
        &cluster,
        &["convert", "--from-cluster", "-n", "lb", "--check"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let converted = stdout(&out);
    let objects: Vec<serde_json::Value> = converted
        .split("\n---\n")
        .filter_map(|doc| serde_yaml::from_str::<serde_json::Value>(doc).ok())
        .filter(|v| v.is_object())
        .collect();
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name} in {converted}"))
            .clone()
    };
    assert_eq!(
        find("IPAddressPool", "prod")["spec"]["addresses"][0],
        "192.168.30.0/28"
    );
    assert_eq!(
        find("BGPAdvertisement", "prod")["spec"]["communities"][0],
        "65535:65281",
        "the alias is resolved"
    );
    let peer = find("BGPPeer", "tor");
    assert_eq!(
        peer["spec"]["passwordSecretRef"],
        serde_json::json!({"name": "ferrolb-bgp-passwords", "key": "tor"})
    );
    let secret = find("Secret", "ferrolb-bgp-passwords");
    assert_eq!(secret["metadata"]["namespace"], "ferrolb-system");
    assert_eq!(
        secret["stringData"]["tor"], "s3cret-tor",
        "read from the Secret"
    );
    assert!(
        stderr(&out).contains("password read from Secret lb/tor-password"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("REFUSED"), "{}", stderr(&out));
}
