//! Upgrades under traffic [REAL, UPGRADE, DEPLOY, L2, BGP]: ferrolb built
//! from an earlier commit of this repository ([`FROM`], built once into the
//! cache by `e2e/scripts/build-earlier.sh`) is installed on three kubelet
//! nodes, with two layer 2 Services and a BGP Service through FRR, a client
//! sending a request every 20 ms through each. It is upgraded to this tree's
//! build and rolled back, once with `kubectl apply -k` and once with
//! `helm upgrade` / `helm rollback`. Every Service keeps its IP; the
//! objects the earlier version stored still read and pass admission; no
//! request fails beyond a planned speaker hand-off (the one open when an IP
//! moves). A change to a CRD must pass this test.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferrolb_e2e::controlplane::workspace_root;
use ferrolb_e2e::image::{FERROLB, TAG, ferrolb_image};
use ferrolb_e2e::probe::{Prober, Samples};
use ferrolb_e2e::routers::frr_config;
use ferrolb_e2e::tier::{ECHO, Install, LogTap, Real, bgp_objects, started};
use ferrolb_e2e::wait::until;

/// The commit upgraded from: the first with the Helm chart and the release
/// folder (stop 30), before the Lease-watch liveness fix.
const FROM: &str = "f68c9835d7d5ee167a2b9a5232ec13afd6da6969";
const ROUTER_ASN: u32 = 64513;
const SERVICES: [&str; 3] = ["echo", "echo-local", "shop"];
/// ferrolb's kinds whose stored objects must still pass admission.
const KINDS: &str = "ipaddresspools,l2advertisements,bgppeers,bgpadvertisements,bfdprofiles";

/// The earlier build: its source tree, its image archive and the image's tag.
struct Earlier {
    source: PathBuf,
    archive: PathBuf,
    tag: String,
}

fn earlier() -> Earlier {
    let root = workspace_root();
    let script = root.join("e2e/scripts/build-earlier.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(FROM)
        .stderr(Stdio::inherit())
        .output()
        .expect("build-earlier.sh");
    assert!(out.status.success(), "{} failed", script.display());
    let dir = PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim(),
    );
    let tag = format!("{TAG}-{}", &FROM[..7]);
    let archive = ferrolb_image(
        &dir.join("bin"),
        &dir.join("image"),
        &format!("{FERROLB}:{tag}"),
    )
    .expect("the earlier image");
    Earlier {
        source: dir.join("src"),
        archive,
        tag,
    }
}

/// Every ferrolb container's image, once each.
fn images(real: &Real) -> Vec<String> {
    let pods = real.json(&["-n", "ferrolb-system", "get", "pods"]);
    let mut images: Vec<String> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| {
            p["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|c| c["image"].as_str().map(str::to_string))
        .collect();
    images.sort();
    images.dedup();
    images
}

/// The user's stored objects of ferrolb's kinds, as they would write them
/// again (no server fields), sent to the apiserver as a server-side dry
/// run: the CRDs' schemas and CEL rules and the webhook see each one as an
/// update. Returns kubectl's output; panics when it refuses one.
fn stored_objects_pass_admission(real: &Real) -> String {
    let mut list = real.json(&["get", KINDS]);
    let items = list["items"].as_array_mut().expect("items");
    assert!(items.len() >= 5, "the user's objects are there: {items:?}");
    for item in items.iter_mut() {
        item.as_object_mut().map(|o| o.remove("status"));
        if let Some(meta) = item["metadata"].as_object_mut() {
            for field in [
                "resourceVersion",
                "uid",
                "managedFields",
                "creationTimestamp",
                "generation",
            ] {
                meta.remove(field);
            }
        }
    }
    let path = real.cluster.dir.join("stored.json");
    std::fs::write(&path, list.to_string()).expect("write");
    let out = real
        .cluster
        .kubectl(&[
            "apply",
            "--dry-run=server",
            "-f",
            &path.display().to_string(),
        ])
        .expect("kubectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "objects stored by the earlier version are refused now:\n{text}"
    );
    text
}

/// A request every 20 ms through each Service while `act` runs (and 3 s
/// after); prints and returns (IP, failed, sent) per Service.
fn under_traffic(real: &Real, ips: &[String], what: &str, act: impl FnOnce()) -> Vec<usize> {
    let probers: Vec<Prober> = ips
        .iter()
        .map(|ip| Prober::start_every(&real.client, ip, 80, Duration::from_millis(20)))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    println!(
        "UPGRADE {what}: starts at {} (the logs' clock)",
        String::from_utf8_lossy(
            &Command::new("date")
                .args(["-u", "+%H:%M:%S.%3N"])
                .output()
                .map(|o| o.stdout)
                .unwrap_or_default()
        )
        .trim()
    );
    act();
    std::thread::sleep(Duration::from_secs(3));
    let end = Instant::now();
    SERVICES
        .iter()
        .zip(ips)
        .zip(probers)
        .map(|((service, ip), prober)| {
            let samples = prober.stop();
            let outage = samples.outage(start, end);
            if outage.failed > 0 {
                println!(
                    "UPGRADE {what} {service}: failed at {:?} ms; ARP answers changed to {:?}",
                    samples
                        .tcp
                        .iter()
                        .filter(|r| r.at >= start && r.at <= end && r.answer.is_none())
                        .map(|r| format!(
                            "{} {}",
                            (r.at - start).as_millis(),
                            r.error.as_deref().unwrap_or_default()
                        ))
                        .collect::<Vec<_>>(),
                    macs_over(&samples, start, end),
                );
            }
            println!(
                "FIGURE UPGRADE {what} {service} {ip}: {}/{} failed, longest gap {:?}, in {:?}",
                outage.failed,
                outage.sent,
                outage.tcp_gap,
                end - start
            );
            outage.failed
        })
        .collect()
}

/// Which MAC answered ARP from when on (ms after `from`), changes only.
fn macs_over(samples: &Samples, from: Instant, to: Instant) -> Vec<(u128, String)> {
    let mut changes: Vec<(u128, String)> = Vec::new();
    for (at, mac) in samples.arp.iter().filter(|(t, _)| *t >= from && *t <= to) {
        if changes.last().is_none_or(|(_, last)| last != mac) {
            changes.push(((*at - from).as_millis(), mac.clone()));
        }
    }
    changes
}

/// One lane: install the earlier build `how`, upgrade to this tree's, roll
/// back.
fn lane(how: Install, name: &str) {
    let root = workspace_root();
    let from = earlier();
    let real = started(
        &root,
        3,
        &format!("ferrolb-upgrade-{name}-"),
        std::slice::from_ref(&from.archive),
    );
    real.install(&from.source, how, &from.tag);
    let want = format!("{FERROLB}:{}", from.tag);
    until(
        "only the earlier build running",
        Duration::from_secs(120),
        || (images(&real) == [want.clone()]).then_some(()),
    )
    .expect("the earlier build runs");

    let slot = real.cluster.slot;
    // Graceful restart on both sides, as for any BGP peer whose speakers are
    // upgraded in place: a stopping speaker closes its session silently and
    // FRR keeps forwarding to that node (kube-proxy there still serves)
    // until the new speaker is back.
    let _frr = real.router(|neighbors| {
        frr_config(
            ROUTER_ASN,
            &slot.host_ip(2),
            neighbors,
            &[],
            &["bgp graceful-restart"],
            true,
        )
    });
    let objects = format!(
        "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {{name: l2}}\nspec: {{addresses: [{}-{}]}}\n---\n\
         apiVersion: ferrolb.io/v1alpha1\nkind: L2Advertisement\nmetadata: {{name: l2}}\nspec: {{ipAddressPools: [l2]}}\n---\n\
         apiVersion: ferrolb.io/v1alpha1\nkind: BFDProfile\nmetadata: {{name: slow}}\nspec: {{receiveInterval: 300, transmitInterval: 300, detectMultiplier: 5}}\n---\n{}",
        slot.host_ip(200),
        slot.host_ip(220),
        bgp_objects(slot, ", enableGracefulRestart: true"),
    );
    real.admit(&objects);
    real.apply(&ECHO.replace("TAG", TAG));
    // The layer 2 Services settle (announced, fast failover armed); the BGP
    // one answers through FRR below.
    real.settled("echo");
    real.settled("echo-local");
    let ips: Vec<String> = SERVICES.iter().map(|s| real.service_ip(s)).collect();
    for ip in &ips {
        until(&format!("{ip} to answer"), Duration::from_secs(90), || {
            let out = real
                .client
                .run("curl", &["-sS", "-m", "1", &format!("http://{ip}/")])
                .ok()?;
            out.status.success().then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }
    println!("UPGRADE {name}: {SERVICES:?} at {ips:?} on {}", from.tag);
    // What every ferrolb Pod said, the replaced ones included, for when a
    // step loses requests.
    let logs = root.join(format!("target/upgrade/{name}"));
    let _tap = LogTap::start(&real, &logs);

    let check = |step: &str, failed: Vec<usize>, image: &str| {
        let running = until(
            &format!("{step}: only {image} running"),
            Duration::from_secs(120),
            || {
                let now = images(&real);
                (now == [image.to_string()]).then_some(())
            },
        );
        assert!(running.is_ok(), "{running:?}: {:?}", images(&real));
        let now: Vec<String> = SERVICES.iter().map(|s| real.service_ip(s)).collect();
        assert_eq!(now, ips, "{step}: every Service keeps its IP");
        for (service, failed) in SERVICES.iter().zip(failed) {
            // The speaker's rolling update hands each IP over once: the
            // request open at that instant can break, nothing more.
            assert!(
                failed <= 2,
                "{step} loses at most the requests open when an IP moved, through {service}: {failed} (every ferrolb Pod's log is in {})",
                logs.display()
            );
        }
        println!("{}", stored_objects_pass_admission(&real));
    };
    let up = under_traffic(&real, &ips, &format!("{name} upgrade"), || {
        real.install(&root, how, TAG)
    });
    check("the upgrade", up, &format!("{FERROLB}:{TAG}"));
    let back = under_traffic(&real, &ips, &format!("{name} rollback"), || match how {
        Install::Kustomize => real.install(&from.source, how, &from.tag),
        Install::Helm(_) => {
            real.helm(&["rollback", "ferrolb"]);
            real.rolled_out(&[
                "deploy/ferrolb-webhook",
                "deploy/ferrolb-operator",
                "ds/ferrolb-speaker",
            ]);
        }
    });
    check("the rollback", back, &want);
}

/// One lane at a time: two clusters rolling out side by side on two cores
/// starve each other's echo servers and fast-failover probes, and the
/// figures would measure that instead of the upgrade.
static ONE_LANE: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn kubectl_apply_k_upgrade_and_rollback_under_traffic_keep_every_ip_and_every_stored_object() {
    let _one = ONE_LANE.lock().unwrap_or_else(|e| e.into_inner());
    lane(Install::Kustomize, "kustomize");
}

#[test]
fn helm_upgrade_and_rollback_under_traffic_keep_every_ip_and_every_stored_object() {
    let _one = ONE_LANE.lock().unwrap_or_else(|e| e.into_inner());
    lane(Install::Helm(&[]), "helm");
}
