//! The deploy manifests [DEPLOY, RBAC]: `kubectl apply --dry-run=server -k
//! config/default` against the real apiserver, then the real RBAC applied and
//! a `kubectl auth can-i` matrix of what each component may and may not do,
//! and the policies that keep a speaker to its own node's Lease and
//! NodeAnnouncement status (with an impersonated node and a real bound token).

use ferrolb_e2e::cluster::TestCluster;

const OPERATOR: &str = "system:serviceaccount:ferrolb-system:ferrolb-operator";
const SPEAKER: &str = "system:serviceaccount:ferrolb-system:ferrolb-speaker";
const WEBHOOK: &str = "system:serviceaccount:ferrolb-system:ferrolb-webhook";

fn config(dir: &str) -> String {
    ferrolb_e2e::controlplane::workspace_root()
        .join("config")
        .join(dir)
        .to_string_lossy()
        .into_owned()
}

fn can(cluster: &TestCluster, who: &str, args: &str) -> bool {
    let mut list = vec!["auth", "can-i"];
    list.extend(args.split_whitespace());
    let as_flag = format!("--as={who}");
    list.push(&as_flag);
    // `can-i` exits 1 for "no": read the answer, not the status.
    let out = cluster.plane.kubectl(&list).expect("kubectl auth can-i");
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

#[tokio::test]
async fn the_manifests_apply_and_each_component_can_do_only_its_job() {
    let cluster = TestCluster::start().await.expect("cluster");
    let dry = cluster
        .kubectl(&["apply", "--dry-run=server", "-k", &config("default")])
        .expect("dry run of config/default");
    for kind in [
        "customresourcedefinition.apiextensions.k8s.io/ipaddresspools.ferrolb.io",
        "deployment.apps/ferrolb-operator",
        "daemonset.apps/ferrolb-speaker",
        "deployment.apps/ferrolb-webhook",
        "validatingwebhookconfiguration.admissionregistration.k8s.io/ferrolb-webhook",
        "clusterrole.rbac.authorization.k8s.io/ferrolb-speaker",
    ] {
        assert!(dry.contains(kind), "{kind} in:\n{dry}");
    }
    // No apply prints a warning (an unknown schema format, a deprecated
    // field): users read them as something wrong, and GitOps tools show
    // them. The one kubectl prints here because this harness made the
    // namespace without apply is not the manifests'.
    let warnings = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.contains("Warning") && !l.contains("last-applied-configuration"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(warnings(&dry), Vec::<String>::new(), "config/default");
    for component in ["operator", "speaker", "webhook"] {
        let out = cluster
            .kubectl(&["apply", "-k", &config(component)])
            .unwrap_or_else(|e| panic!("config/{component}: {e}"));
        assert_eq!(warnings(&out), Vec::<String>::new(), "config/{component}");
    }
    let matrix: &[(&str, &str, bool)] = &[
        (
            OPERATOR,
            "patch services --subresource=status -n default",
            true,
        ),
        (OPERATOR, "list nodes", true),
        (OPERATOR, "watch bfdprofiles.ferrolb.io", true),
        (OPERATOR, "watch endpointslices.discovery.k8s.io -A", true),
        (OPERATOR, "create nodeannouncements.ferrolb.io", true),
        (OPERATOR, "delete nodeannouncements.ferrolb.io", true),
        (
            OPERATOR,
            "patch ipaddresspools.ferrolb.io --subresource=status",
            true,
        ),
        (
            OPERATOR,
            "patch bgppeers.ferrolb.io --subresource=status",
            true,
        ),
        (OPERATOR, "create events.events.k8s.io -n default", true),
        (
            OPERATOR,
            "list leases.coordination.k8s.io -n ferrolb-system",
            true,
        ),
        (
            OPERATOR,
            "update leases.coordination.k8s.io/ferrolb-operator -n ferrolb-system",
            true,
        ),
        (OPERATOR, "create secrets -n ferrolb-system", true),
        (OPERATOR, "get secrets -n ferrolb-system", false),
        (OPERATOR, "list secrets -A", false),
        (OPERATOR, "update services -n default", false),
        (OPERATOR, "delete services -n default", false),
        (OPERATOR, "patch nodes", false),
        (
            OPERATOR,
            "patch nodeannouncements.ferrolb.io --subresource=status",
            false,
        ),
        (
            OPERATOR,
            "update leases.coordination.k8s.io/speaker-node-a -n ferrolb-system",
            false,
        ),
        (OPERATOR, "patch ipaddresspools.ferrolb.io", false),
        (SPEAKER, "watch nodeannouncements.ferrolb.io", true),
        (
            SPEAKER,
            "patch nodeannouncements.ferrolb.io --subresource=status",
            true,
        ),
        (
            SPEAKER,
            "patch leases.coordination.k8s.io -n ferrolb-system",
            true,
        ),
        (
            SPEAKER,
            "get secrets/ferrolb-failover -n ferrolb-system",
            true,
        ),
        (
            SPEAKER,
            "get secrets/ferrolb-bgp-passwords -n ferrolb-system",
            true,
        ),
        (
            SPEAKER,
            "get secrets/ferrolb-webhook-tls -n ferrolb-system",
            false,
        ),
        (
            SPEAKER,
            "get leases.coordination.k8s.io/speaker-node-b -n ferrolb-system",
            true,
        ),
        (SPEAKER, "patch nodeannouncements.ferrolb.io", false),
        (SPEAKER, "create nodeannouncements.ferrolb.io", false),
        (SPEAKER, "list secrets -n ferrolb-system", false),
        (SPEAKER, "get secrets -n default", false),
        (SPEAKER, "list services -A", false),
        (SPEAKER, "list nodes", false),
        (SPEAKER, "list ipaddresspools.ferrolb.io", false),
        (
            SPEAKER,
            "patch leases.coordination.k8s.io -n default",
            false,
        ),
        (WEBHOOK, "list ipaddresspools.ferrolb.io", true),
        (WEBHOOK, "list bgppeers.ferrolb.io", true),
        (WEBHOOK, "list bfdprofiles.ferrolb.io", true),
        (
            WEBHOOK,
            "patch validatingwebhookconfigurations.admissionregistration.k8s.io/ferrolb-webhook",
            true,
        ),
        (
            WEBHOOK,
            "patch validatingwebhookconfigurations.admissionregistration.k8s.io/other",
            false,
        ),
        (WEBHOOK, "update services -n default", false),
        (
            WEBHOOK,
            "patch ipaddresspools.ferrolb.io --subresource=status",
            false,
        ),
        (WEBHOOK, "list secrets -A", false),
        (
            WEBHOOK,
            "get secrets/ferrolb-webhook-tls -n ferrolb-system",
            true,
        ),
        (
            WEBHOOK,
            "get secrets/ferrolb-failover -n ferrolb-system",
            false,
        ),
        (WEBHOOK, "get secrets/some-password -n default", false),
    ];
    let mut wrong = Vec::new();
    for (who, what, expected) in matrix {
        if can(&cluster, who, what) != *expected {
            wrong.push(format!("{who} {what}: expected {expected}"));
        }
    }
    assert!(wrong.is_empty(), "RBAC differs:\n{}", wrong.join("\n"));
    // RBAC lets the speaker write Leases in its namespace; the policy keeps it
    // to speaker-* ones.
    let lease = |name: &str| {
        format!(
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: {name}, namespace: ferrolb-system}}\nspec: {{holderIdentity: x}}\n"
        )
    };
    let as_speaker = format!("--as={SPEAKER}");
    let on_node_a = "--as-user-extra=authentication.kubernetes.io/node-name=node-a";
    // The policies take effect a moment after they are created: wait until
    // one refuses (30 s at most) before judging them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let probe = cluster
            .apply_with(
                &lease("speaker-node-b"),
                &["--dry-run=server", &as_speaker, on_node_a],
            )
            .expect("apply");
        if !probe.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let own = cluster
        .apply_with(
            &lease("speaker-node-a"),
            &["--dry-run=server", &as_speaker, on_node_a],
        )
        .expect("apply");
    assert!(
        own.status.success(),
        "{}",
        String::from_utf8_lossy(&own.stderr)
    );
    for (name, extra, says) in [
        (
            "ferrolb-operator",
            on_node_a,
            "the ferrolb speaker on node-a may write only its own Lease speaker-node-a, not ferrolb-operator",
        ),
        (
            "speaker-node-b",
            on_node_a,
            "may write only its own Lease speaker-node-a, not speaker-node-b",
        ),
        ("speaker-node-a", "", "token names no node"),
    ] {
        let mut args = vec!["--dry-run=server", as_speaker.as_str()];
        if !extra.is_empty() {
            args.push(extra);
        }
        let other = cluster.apply_with(&lease(name), &args).expect("apply");
        let stderr = String::from_utf8_lossy(&other.stderr);
        assert!(!other.status.success(), "{name} {extra}");
        assert!(stderr.contains(says), "{name} {extra}: {stderr}");
    }
}

/// The policy on NodeAnnouncement status with the speaker's real token: the
/// apiserver puts the node of the Pod a token is bound to in the request, so
/// a speaker can write its own node's status and no other.
#[tokio::test]
async fn a_speaker_token_writes_its_own_nodes_status_only() {
    let cluster = TestCluster::start().await.expect("cluster");
    cluster
        .kubectl(&["apply", "-k", &config("speaker")])
        .expect("config/speaker");
    for node in ["node-a", "node-b"] {
        cluster.node(node).expect("node");
        cluster
            .apply_ok(&format!(
                "apiVersion: ferrolb.io/v1alpha1\nkind: NodeAnnouncement\nmetadata: {{name: {node}}}\nspec: {{}}\n"
            ))
            .expect("NodeAnnouncement");
    }
    // A speaker Pod on node-a (nothing runs it: only its token matters).
    cluster
        .apply_ok(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: speaker-on-a, namespace: ferrolb-system}\n\
             spec:\n  nodeName: node-a\n  serviceAccountName: ferrolb-speaker\n  containers: [{name: speaker, image: ferrolb:test}]\n",
        )
        .expect("pod");
    let token = cluster
        .kubectl(&[
            "create",
            "token",
            "ferrolb-speaker",
            "-n",
            "ferrolb-system",
            "--bound-object-kind=Pod",
            "--bound-object-name=speaker-on-a",
        ])
        .expect("a bound token");
    // A kubeconfig with that token only (the admin's certificate would win).
    let admin =
        std::fs::read_to_string(cluster.plane.dir().join("kubeconfig")).expect("kubeconfig");
    let field = |name: &str| {
        admin
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("{name} in the kubeconfig"))
    };
    let kubeconfig = cluster.plane.dir().join("speaker-on-a.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: '{}', certificate-authority: '{}'}}\n\
             users:\n- name: speaker\n  user: {{token: '{}'}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: speaker}}\ncurrent-context: c\n",
            field("server:"),
            field("certificate-authority:"),
            token.trim()
        ),
    )
    .expect("write");
    // As the speaker writes it: server-side apply on the status.
    let patch = |node: &str| {
        let mut kubectl = std::process::Command::new(cluster.plane.kubectl_path())
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args([
                "apply",
                "--server-side",
                "--subresource=status",
                "--field-manager=ferrolb-speaker",
                "-f",
                "-",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl");
        use std::io::Write as _;
        kubectl
            .stdin
            .take()
            .expect("stdin")
            .write_all(
                format!(
                    "apiVersion: ferrolb.io/v1alpha1\nkind: NodeAnnouncement\nmetadata: {{name: {node}}}\nstatus: {{observedGeneration: 1}}\n"
                )
                .as_bytes(),
            )
            .expect("write");
        kubectl.wait_with_output().expect("kubectl")
    };
    // A new policy takes effect a moment after it is created (the
    // apiserver loads it asynchronously): ask until it refuses, 30 s at most.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let other = loop {
        let other = patch("node-b");
        if !other.status.success() || std::time::Instant::now() > deadline {
            break other;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let own = patch("node-a");
    assert!(
        own.status.success(),
        "{}",
        String::from_utf8_lossy(&own.stderr)
    );
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(
        !other.status.success(),
        "the speaker on node-a wrote node-b's status"
    );
    assert!(
        stderr.contains("the ferrolb speaker on node-a may write only the status of NodeAnnouncement node-a, not node-b"),
        "{stderr}"
    );
}
