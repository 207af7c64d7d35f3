//! The release folder [DEPLOY, HELM, RELEASE]: `make release`'s script (on
//! cargo's dev profile) writes the manifest, the image archive, the chart
//! package, the kubectl plugin with its krew manifest and the checksums, and
//! each is what a user downloading it needs.

use std::fs;
use std::path::Path;
use std::process::Command;

use ferrolb_e2e::chart::{chart_dir, differences, helm, kustomize, objects, run};
use ferrolb_e2e::controlplane::{binaries, workspace_root};
use serde_yaml::Value;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn release(out: &Path) {
    let script = workspace_root().join("e2e/scripts/release.sh");
    let printed = run(Command::new("bash")
        .arg(script)
        .env("FERROLB_RELEASE_PROFILE", "dev")
        .env("FERROLB_RELEASE_DIR", out))
    .expect("the release script");
    assert_eq!(printed.lines().last(), Some(out.to_str().unwrap()));
}

#[test]
fn the_release_folder_holds_everything_an_install_needs_and_checks_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("ferrolb");
    release(&out);

    // Every file is in SHA256SUMS and matches it.
    let sums = fs::read_to_string(out.join("SHA256SUMS")).expect("SHA256SUMS");
    let mut listed: Vec<&str> = sums
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    listed.sort_unstable();
    let plugin = format!("kubectl-ferrolb-linux-{}.tar.gz", "amd64");
    let mut expected = vec![
        "ferrolb.yaml".to_string(),
        format!("ferrolb-{VERSION}.tar"),
        format!("ferrolb-{VERSION}.tgz"),
        plugin.clone(),
        "plugin.yaml".to_string(),
    ];
    expected.sort_unstable();
    assert_eq!(listed, expected);
    run(Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&out))
    .expect("sha256sum -c SHA256SUMS");

    // ferrolb.yaml is config/default, the image pinned by the version's tag.
    let kubectl = binaries().expect("control plane").join("kubectl");
    let manifest = objects(&fs::read_to_string(out.join("ferrolb.yaml")).unwrap()).unwrap();
    let config =
        objects(&kustomize(&kubectl, &workspace_root().join("config/default")).unwrap()).unwrap();
    let found = differences(&config, &manifest);
    assert!(found.is_empty(), "{}", found.join("\n"));
    let image = format!("ghcr.io/ferrolb/ferrolb:{VERSION}");
    let pinned = &manifest["DaemonSet/ferrolb-system/ferrolb-speaker"]["spec"]["template"]["spec"]
        ["containers"][0]["image"];
    assert_eq!(pinned.as_str(), Some(image.as_str()));

    // The image archive carries that name, so loading it into containerd is
    // enough for ferrolb.yaml.
    let listing = run(Command::new("tar")
        .args(["-xOf"])
        .arg(out.join(format!("ferrolb-{VERSION}.tar")))
        .arg("index.json"))
    .expect("index.json in the image archive");
    let index: serde_json::Value = serde_json::from_str(&listing).expect("index.json parses");
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        image.as_str()
    );

    // The chart package renders what the chart folder renders.
    let helm = helm().expect("helm");
    let render = |chart: &Path| {
        objects(
            &run(Command::new(&helm)
                .args(["template", "ferrolb"])
                .arg(chart)
                .args(["--namespace", "ferrolb-system"]))
            .expect("helm template"),
        )
        .expect("parses")
    };
    let packaged = render(&out.join(format!("ferrolb-{VERSION}.tgz")));
    let found = differences(&render(&chart_dir()), &packaged);
    assert!(found.is_empty(), "{}", found.join("\n"));
    assert!(
        packaged
            .keys()
            .any(|k| k.starts_with("CustomResourceDefinition/")),
        "the CRDs are packaged"
    );

    // The krew manifest names the plugin archive by its checksum, and the
    // archive holds a plugin that runs.
    let krew: Value =
        serde_yaml::from_str(&fs::read_to_string(out.join("plugin.yaml")).unwrap()).unwrap();
    let platform = &krew["spec"]["platforms"][0];
    let sum = sums
        .lines()
        .find(|l| l.ends_with(&plugin))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    assert_eq!(platform["sha256"].as_str(), Some(sum));
    assert_eq!(platform["bin"], "kubectl-ferrolb");
    assert_eq!(
        krew["spec"]["version"].as_str(),
        Some(format!("v{VERSION}").as_str())
    );
    let unpacked = dir.path().join("plugin");
    fs::create_dir_all(&unpacked).unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(out.join(&plugin))
        .arg("-C")
        .arg(&unpacked))
    .expect("untar");
    let help = run(Command::new(unpacked.join("kubectl-ferrolb")).arg("--version"))
        .expect("kubectl-ferrolb --version");
    assert!(help.contains(VERSION), "{help}");
}
