//! Golden tests: each `tests/golden/NAME.yaml` converts to `NAME.out.yaml`,
//! with the warnings of `NAME.err`, through the real binary (exit code 0).
//! `UPDATE_GOLDEN=1 cargo test -p kubectl-ferrolb` rewrites them after a
//! deliberate change; read the diff before committing it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn convert(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubectl-ferrolb"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl-ferrolb");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn every_golden_input_converts_to_its_output() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && !p.to_string_lossy().ends_with(".out.yaml")
        })
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 2, "{inputs:?}");
    for input in inputs {
        let (code, stdout, stderr) = convert(&["convert", "-f", input.to_str().unwrap()], None);
        assert_eq!(code, 0, "{}: {stderr}", input.display());
        let out = input.with_extension("out.yaml");
        let err = input.with_extension("err");
        if update {
            std::fs::write(&out, &stdout).unwrap();
            std::fs::write(&err, &stderr).unwrap();
            continue;
        }
        assert_eq!(
            stdout,
            std::fs::read_to_string(&out).unwrap(),
            "{}",
            out.display()
        );
        assert_eq!(
            stderr,
            std::fs::read_to_string(&err).unwrap(),
            "{}",
            err.display()
        );
        // The same input gives the same output, from stdin too.
        let text = std::fs::read_to_string(&input).unwrap();
        assert_eq!(convert(&["convert"], Some(&text)).1, stdout);
    }
}

#[test]
fn an_unreadable_configuration_is_an_error_with_no_output() {
    let (code, stdout, stderr) = convert(
        &["convert", "-f", "-"],
        Some("address-pools:\n- name: a\n  protocol: layer2\n  adresses: [10.0.0.0/24]\n"),
    );
    assert_eq!(code, 1);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("unknown field `adresses`"), "{stderr}");
    let (code, stdout, stderr) = convert(&["convert", "-f", "/nonexistent/config.yaml"], None);
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("cannot read /nonexistent/config.yaml"),
        "{stderr}"
    );
}

#[test]
fn a_range_ferrolb_cannot_read_is_refused_without_check_and_nothing_is_written() {
    // The legacy ConfigMap as some users wrote it, a tilde between the ends.
    let config = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config, namespace: metallb-system}\ndata:\n  config: |\n    address-pools:\n    - name: lan\n      protocol: layer2\n      addresses:\n      - 172.17.30.171 ~ 172.17.30.179\n";
    let (code, stdout, stderr) = convert(&["convert", "-f", "-"], Some(config));
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("address-pools[0] (lan).addresses[0] (line 10 of the input)")
            && stderr.contains("here that is 172.17.30.171-172.17.30.179"),
        "{stderr}"
    );
}

#[test]
fn every_verb_has_help() {
    for (verb, says) in [
        ("convert", "legacy configuration"),
        ("status", "active and standby"),
        ("doctor", "strictARP"),
    ] {
        let (code, stdout, _) = convert(&[verb, "--help"], None);
        assert_eq!(code, 0, "{verb}");
        assert!(stdout.contains(says), "{verb}: {stdout}");
        for flag in ["--kubeconfig", "--context", "--namespace"] {
            assert!(
                stdout.contains(flag),
                "{verb} --help names {flag}: {stdout}"
            );
        }
    }
    let (code, stdout, _) = convert(&["--help"], None);
    assert_eq!(code, 0);
    assert!(
        ["convert", "status", "doctor"]
            .iter()
            .all(|verb| stdout.contains(verb)),
        "{stdout}"
    );
}

#[test]
fn a_context_the_kubeconfig_lacks_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("kubeconfig");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: here, context: {cluster: c, user: u}}]\ncurrent-context: here\n",
    )
    .expect("write");
    let kubeconfig = format!("--kubeconfig={}", file.display());
    let (code, stdout, stderr) = convert(&[&kubeconfig, "--context", "elsewhere", "doctor"], None);
    assert_eq!(code, 1);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("elsewhere"), "{stderr}");
}
