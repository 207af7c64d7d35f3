//! The deploy manifests [DEPLOY, RBAC]: `kubectl apply --dry-run=server -k
//! config/default` against the real apiserver, then the real RBAC applied and
//! a `kubectl auth can-i` matrix of what each component may and may not do,
//! and the policy that keeps the speaker to its own Leases.

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
    for component in ["operator", "speaker", "webhook"] {
        cluster
            .kubectl(&["apply", "-k", &config(component)])
            .unwrap_or_else(|e| panic!("config/{component}: {e}"));
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
    let own = cluster
        .apply_with(&lease("speaker-node-a"), &["--dry-run=server", &as_speaker])
        .expect("apply");
    assert!(
        own.status.success(),
        "{}",
        String::from_utf8_lossy(&own.stderr)
    );
    let other = cluster
        .apply_with(
            &lease("ferrolb-operator"),
            &["--dry-run=server", &as_speaker],
        )
        .expect("apply");
    assert!(!other.status.success());
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("only its own speaker-<node> Lease"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
}
