//! The Helm chart [DEPLOY, HELM]: `helm lint`, the chart rendering exactly
//! what `kubectl apply -k config/default` applies (object by object, so the
//! two cannot drift), each value changing what it names, and the values
//! schema refusing what it does not know.

use std::process::Command;

use ferrolb_e2e::chart::{chart_dir, differences, helm, kustomize, objects, render, run};
use ferrolb_e2e::controlplane::{binaries, workspace_root};
use serde_yaml::Value;

fn default_config() -> std::collections::BTreeMap<String, Value> {
    let kubectl = binaries().expect("control plane").join("kubectl");
    objects(&kustomize(&kubectl, &workspace_root().join("config/default")).expect("kustomize"))
        .expect("config/default parses")
}

fn rendered(sets: &[&str]) -> std::collections::BTreeMap<String, Value> {
    objects(&render(sets).expect("helm template")).expect("the chart's output parses")
}

fn args(objects: &std::collections::BTreeMap<String, Value>, key: &str) -> Vec<String> {
    let container = &objects[key]["spec"]["template"]["spec"]["containers"][0];
    container["args"]
        .as_sequence()
        .map(|list| {
            list.iter()
                .filter_map(|a| a.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn helm_lint_is_clean() {
    let out = run(Command::new(helm().expect("helm"))
        .args(["lint", "--strict"])
        .arg(chart_dir()))
    .expect("helm lint --strict");
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn the_chart_renders_what_config_default_applies() {
    let config = default_config();
    let with_namespace = rendered(&["namespace.create=true"]);
    let found = differences(&config, &with_namespace);
    assert!(
        found.is_empty(),
        "config/default (left) and the chart (right):\n{}",
        found.join("\n")
    );
    assert!(config.len() > 25, "{} objects", config.len());
    // By default Helm's --create-namespace makes the namespace: everything
    // else is the same.
    let mut without = config.clone();
    without.remove("Namespace//ferrolb-system");
    let found = differences(&without, &rendered(&[]));
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn each_value_changes_what_it_names() {
    let objects = rendered(&[
        "image.repository=registry.example/lb/ferrolb",
        "image.tag=0.1.0-rc1",
        "image.pullPolicy=Always",
        "loadBalancerClass=example.com/lb",
        "operator.replicas=3",
        "speaker.probePort=7600",
        "speaker.ignoreExcludeLB=true",
        "webhook.failurePolicy=Ignore",
        "webhook.nodeSelector.zone=a",
        "operator.tolerations[0].key=dedicated",
        "operator.tolerations[0].operator=Exists",
        "crds.enabled=false",
    ]);
    let operator = "Deployment/ferrolb-system/ferrolb-operator";
    let speaker = "DaemonSet/ferrolb-system/ferrolb-speaker";
    let webhook = "Deployment/ferrolb-system/ferrolb-webhook";
    for key in [operator, speaker, webhook] {
        let container = &objects[key]["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            container["image"], "registry.example/lb/ferrolb:0.1.0-rc1",
            "{key}"
        );
        assert_eq!(container["imagePullPolicy"], "Always", "{key}");
    }
    assert_eq!(objects[operator]["spec"]["replicas"], 3);
    let operator_args = args(&objects, operator);
    assert!(
        operator_args.contains(&"--lb-class=example.com/lb".into()),
        "{operator_args:?}"
    );
    assert!(
        operator_args.contains(&"--ignore-exclude-lb".into()),
        "{operator_args:?}"
    );
    assert_eq!(
        objects[operator]["spec"]["template"]["spec"]["tolerations"][0]["key"],
        "dedicated"
    );
    assert!(args(&objects, speaker).contains(&"--probe-port=7600".into()));
    assert_eq!(
        objects[speaker]["spec"]["template"]["spec"]["containers"][0]["ports"][1]["containerPort"],
        7600
    );
    assert_eq!(
        objects[webhook]["spec"]["template"]["spec"]["nodeSelector"]["zone"],
        "a"
    );
    let hooks = objects["ValidatingWebhookConfiguration//ferrolb-webhook"]["webhooks"]
        .as_sequence()
        .expect("webhooks")
        .clone();
    assert_eq!(hooks.len(), 5);
    for hook in hooks {
        // The deletes entry (pools, BFDProfiles) is Ignore either way: a
        // webhook that is down never blocks a delete.
        assert_eq!(hook["failurePolicy"], "Ignore", "{hook:?}");
    }
    assert!(
        !objects
            .keys()
            .any(|key| key.starts_with("CustomResourceDefinition/")),
        "crds.enabled=false renders no CRD"
    );
    // The defaults keep every CRD, with the keep policy.
    let defaults = objects_with_policy();
    assert_eq!(defaults, 7, "CRDs carrying helm.sh/resource-policy: keep");
}

fn objects_with_policy() -> usize {
    let yaml = render(&[]).expect("helm template");
    serde_yaml::Deserializer::from_str(&yaml)
        .filter_map(|doc| serde::Deserialize::deserialize(doc).ok())
        .filter(|doc: &Value| {
            doc["kind"] == "CustomResourceDefinition"
                && doc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        })
        .count()
}

#[test]
fn the_values_schema_refuses_what_it_does_not_know() {
    for (set, named) in [
        ("operatr.replicas=1", "operatr"),
        ("image.tag=latest", "tag"),
        ("webhook.failurePolicy=Sometimes", "failurePolicy"),
        ("speaker.probePort=70000", "probePort"),
        ("operator.replicas=0", "replicas"),
    ] {
        let error = render(&[set]).expect_err(set).to_string();
        assert!(error.contains(named), "{set}: {error}");
    }
}

#[test]
fn the_chart_the_image_and_the_crates_share_one_version() {
    let version = env!("CARGO_PKG_VERSION");
    let chart: Value = serde_yaml::from_str(
        &std::fs::read_to_string(chart_dir().join("Chart.yaml")).expect("Chart.yaml"),
    )
    .expect("Chart.yaml parses");
    assert_eq!(chart["version"], version);
    assert_eq!(chart["appVersion"], version);
    let default = rendered(&[]);
    let image = &default["Deployment/ferrolb-system/ferrolb-operator"]["spec"]["template"]["spec"]
        ["containers"][0]["image"];
    assert_eq!(
        image.as_str(),
        Some(format!("ghcr.io/ferrolb/ferrolb:{version}").as_str())
    );
}

#[test]
fn the_chart_installs_into_any_namespace() {
    let yaml = run(Command::new(helm().expect("helm"))
        .args(["template", "ferrolb"])
        .arg(chart_dir())
        .args(["--namespace", "lb", "--set", "crds.enabled=false"]))
    .expect("helm template -n lb");
    assert!(
        !yaml.contains("ferrolb-system"),
        "nothing names ferrolb-system:\n{yaml}"
    );
    let objects = objects(&yaml).expect("parses");
    let policy = &objects["ValidatingAdmissionPolicy//ferrolb-speaker-leases"];
    assert_eq!(
        policy["spec"]["matchConstraints"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "lb"
    );
    let hook = &objects["ValidatingWebhookConfiguration//ferrolb-webhook"]["webhooks"][0];
    assert_eq!(hook["clientConfig"]["service"]["namespace"], "lb");
}
