//! The Helm chart (`charts/ferrolb`) beside `config/default`: the Helm CLI
//! built from the Go module proxy (`e2e/scripts/build-helm.sh`), rendering,
//! and the comparison of two sets of manifests object by object.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_yaml::Value;

use crate::controlplane::{built_by, workspace_root};

/// The chart's folder in the working tree.
pub fn chart_dir() -> PathBuf {
    workspace_root().join("charts/ferrolb")
}

/// The Helm binary: `$FERROLB_HELM` if set, else the one the build script
/// prints (built once per pin).
pub fn helm() -> Result<PathBuf> {
    built_by("FERROLB_HELM", "build-helm.sh")
}

/// Runs a command and returns its stdout, or its stderr as the error.
pub fn run(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("running {:?}", command.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} {:?} failed ({}): {}",
            command.get_program(),
            command.get_args().collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `helm template ferrolb charts/ferrolb -n ferrolb-system` with `--set`
/// values.
pub fn render(sets: &[&str]) -> Result<String> {
    let mut command = Command::new(helm()?);
    command
        .args(["template", "ferrolb"])
        .arg(chart_dir())
        .args(["--namespace", "ferrolb-system"]);
    for set in sets {
        command.args(["--set", set]);
    }
    run(&mut command)
}

/// What `kubectl apply -k <dir>` would apply (`kubectl kustomize`).
pub fn kustomize(kubectl: &Path, dir: &Path) -> Result<String> {
    run(Command::new(kubectl).arg("kustomize").arg(dir))
}

/// The labels and annotations only Helm adds: its bookkeeping, and the keep
/// policy on the CRDs.
pub const HELM_ONLY: [&str; 4] = [
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "helm.sh/chart",
    "helm.sh/resource-policy",
];

/// Kinds without a namespace. kustomize's `namespace:` stamps one on the
/// kinds it does not know (the ValidatingAdmissionPolicies), which kubectl
/// then drops: the comparison drops it too.
pub const CLUSTER_SCOPED: [&str; 7] = [
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

/// The objects of a multi-document YAML stream by `kind/namespace/name`,
/// with [`HELM_ONLY`] keys (and maps they leave empty) taken out of their
/// metadata, and no namespace on [`CLUSTER_SCOPED`] kinds.
pub fn objects(yaml: &str) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let mut value = Value::deserialize(document)?;
        if value.is_null() {
            continue;
        }
        whole_numbers(&mut value);
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        if CLUSTER_SCOPED.contains(&kind.as_str())
            && let Some(metadata) = value.get_mut("metadata").and_then(Value::as_mapping_mut)
        {
            metadata.remove("namespace");
        }
        let key = format!(
            "{}/{}/{}",
            kind,
            value["metadata"]["namespace"].as_str().unwrap_or_default(),
            value["metadata"]["name"].as_str().unwrap_or_default()
        );
        if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_mapping_mut) {
            for field in ["labels", "annotations"] {
                let emptied = match metadata.get_mut(field).and_then(Value::as_mapping_mut) {
                    Some(map) => {
                        for key in HELM_ONLY {
                            map.remove(key);
                        }
                        map.is_empty()
                    }
                    None => false,
                };
                if emptied {
                    metadata.remove(field);
                }
            }
        }
        if out.insert(key.clone(), value).is_some() {
            bail!("{key} appears twice");
        }
    }
    Ok(out)
}

/// `10.0` read as `10`: YAML that reaches the apiserver as the same JSON
/// number compares equal (kustomize rewrites `minimum: 0.0` as `0`).
fn whole_numbers(value: &mut Value) {
    match value {
        Value::Number(number) => {
            if let Some(float) = number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                && number.is_f64()
            {
                *value = Value::Number((float as i64).into());
            }
        }
        Value::Sequence(list) => list.iter_mut().for_each(whole_numbers),
        Value::Mapping(map) => map.values_mut().for_each(whole_numbers),
        Value::Tagged(tagged) => whole_numbers(&mut tagged.value),
        _ => {}
    }
}

/// Where two sets of objects differ, one line per object (empty when they
/// are the same).
pub fn differences(left: &BTreeMap<String, Value>, right: &BTreeMap<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    for (key, value) in left {
        match right.get(key) {
            None => out.push(format!("{key}: only on the left")),
            Some(other) if other != value => out.push(format!(
                "{key} differs:\n--- left\n{}--- right\n{}",
                serde_yaml::to_string(value).unwrap_or_default(),
                serde_yaml::to_string(other).unwrap_or_default()
            )),
            Some(_) => {}
        }
    }
    for key in right.keys().filter(|key| !left.contains_key(*key)) {
        out.push(format!("{key}: only on the right"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_drop_helm_bookkeeping_and_tell_differences() {
        let helm = "---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n  namespace: n\n  uid: 1.0\n  labels:\n    app.kubernetes.io/managed-by: Helm\n    helm.sh/chart: ferrolb-0.1.0\n---\n# only a comment\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: n, labels: {app: x, helm.sh/chart: c}}\nspec: {ports: [{port: 443}]}\n";
        let plain = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a, namespace: n, uid: 1}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: n, labels: {app: x}}\nspec: {ports: [{port: 444}]}\n";
        let (left, right) = (objects(helm).unwrap(), objects(plain).unwrap());
        assert_eq!(left.len(), 2);
        let found = differences(&left, &right);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("Service/n/b differs"), "{}", found[0]);
        assert!(
            objects("kind: A\nmetadata: {name: x}\n---\nkind: A\nmetadata: {name: x}\n").is_err()
        );
    }
}
