//! The committed CRD YAML under `config/crd/` is what the types generate: a change to
//! the types without `make crds` fails here (and in CI).

#[test]
fn committed_crd_yaml_matches_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/crd");
    for crd in ferrolb_api::crds() {
        let path = dir.join(ferrolb_api::crd_file_name(&crd));
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run `make crds`", path.display()));
        let generated = ferrolb_api::crd_yaml(&crd).expect("render");
        assert!(
            committed == generated,
            "{} differs from what the types generate; run `make crds` and commit it",
            path.display()
        );
    }
}

#[test]
fn every_crd_is_cluster_scoped_with_status_and_described_fields() {
    for crd in ferrolb_api::crds() {
        assert_eq!(crd.spec.scope, "Cluster", "{}", crd.spec.names.kind);
        let version = &crd.spec.versions[0];
        // A PrefixSet is data the operator writes for the speakers (they
        // report on their NodeAnnouncement), a BFDProfile settings whose use
        // BGPPeers and NodeAnnouncements report: nothing to report on either.
        let has_status = version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some();
        assert_eq!(
            has_status,
            !matches!(crd.spec.names.kind.as_str(), "PrefixSet" | "BFDProfile"),
            "{} has a status subresource",
            crd.spec.names.kind
        );
        let schema = serde_json::to_value(&version.schema).expect("schema");
        let mut undocumented = Vec::new();
        find_undocumented(&schema["openAPIV3Schema"], "", &mut undocumented);
        assert!(
            undocumented.is_empty(),
            "{}: fields without a description (what `kubectl explain` prints): {undocumented:?}",
            crd.spec.names.kind
        );
    }
}

/// Collects properties that carry no description.
fn find_undocumented(schema: &serde_json::Value, path: &str, found: &mut Vec<String>) {
    if let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) {
        for (name, property) in properties {
            let here = format!("{path}.{name}");
            if property.get("description").is_none()
                && !matches!(name.as_str(), "apiVersion" | "kind" | "metadata")
            {
                found.push(here.clone());
            }
            find_undocumented(property, &here, found);
        }
    }
    if let Some(items) = schema.get("items") {
        find_undocumented(items, &format!("{path}[]"), found);
    }
}

/// Every schema `format` is one kube-apiserver knows (it warns at each
/// apply otherwise), and no 32-bit integer declares a bound outside 32 bits
/// (Kubernetes 1.36 refuses such a CRD).
#[test]
fn formats_are_known_and_bounds_fit_them() {
    fn walk(schema: &serde_json::Value, path: &str, found: &mut Vec<String>) {
        match schema {
            serde_json::Value::Object(map) => {
                if let Some(format) = map.get("format").and_then(|f| f.as_str()) {
                    if !ferrolb_api::KNOWN_FORMATS.contains(&format) {
                        found.push(format!("{path}: format {format}"));
                    }
                    if format == "int32" {
                        for bound in ["minimum", "maximum"] {
                            if let Some(v) = map.get(bound).and_then(|v| v.as_f64())
                                && (v > f64::from(i32::MAX) || v < f64::from(i32::MIN))
                            {
                                found.push(format!("{path}: int32 with {bound} {v}"));
                            }
                        }
                    }
                }
                for (key, value) in map {
                    walk(value, &format!("{path}/{key}"), found);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, &format!("{path}/{i}"), found);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    for crd in ferrolb_api::crds() {
        let value = serde_json::to_value(&crd).expect("json");
        walk(&value, &crd.spec.names.kind, &mut found);
    }
    assert!(found.is_empty(), "{found:#?}");
}
