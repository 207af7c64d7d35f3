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
