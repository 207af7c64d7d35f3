//! The real-cluster tier's shared handle: a [`RealCluster`] with ferrolb
//! installed as users install it (`kubectl apply -k config/local`), a client
//! on the nodes' LAN, and the reads the scenarios judge by (a Service's IP,
//! the node answering for it, fast failover armed, every Pod Ready).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::image::{FERROLB, PAUSE, TAG, build_all};
use crate::netns::Host;
use crate::real::{Options, ProxyMode, RealCluster};
use crate::routers::Frr;
use crate::wait::until;

/// The client's MAC on the nodes' LAN.
pub const CLIENT_MAC: &str = "02:00:00:00:0e:99";
/// The router's MAC on the nodes' LAN ([`Real::router`]).
pub const ROUTER_MAC: &str = "02:00:00:00:0e:02";
/// The nodes' AS toward the router (`myASN` in [`bgp_objects`]).
pub const NODE_ASN: u32 = 64512;

/// A 4-replica echo Deployment (`TAG` stands for the image tag) behind two
/// layer 2 Services, `echo` (externalTrafficPolicy Cluster) and
/// `echo-local` (Local).
pub const ECHO: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: default}
spec:
  replicas: 4
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: echo
        image: localhost/echo:TAG
        imagePullPolicy: Never
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        ports: [{containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  type: LoadBalancer
  selector: {app: echo}
  ports:
  - {name: http, protocol: TCP, port: 80, targetPort: 8080}
  - {name: udp, protocol: UDP, port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata: {name: echo-local, namespace: default}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
";

/// The BGP side the scenarios share: a BGPPeer `router` (AS 64512 to
/// 64513 at the slot's `.2`, `peer_extra` added to its spec), a pool `bgp`
/// of `10.213.N.10-50` that nothing takes unasked, its BGPAdvertisement,
/// and the Service `shop` (externalTrafficPolicy Local) from that pool in
/// front of the echo Pods.
pub fn bgp_objects(slot: crate::real::Slot, peer_extra: &str) -> String {
    format!(
        "apiVersion: ferrolb.io/v1alpha1\nkind: BGPPeer\nmetadata: {{name: router}}\nspec: {{myASN: {NODE_ASN}, peerASN: 64513, peerAddress: {router_ip}{peer_extra}}}\n---\napiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {{name: bgp}}\nspec: {{addresses: ['10.213.{n}.10-10.213.{n}.50'], autoAssign: false}}\n---\napiVersion: ferrolb.io/v1alpha1\nkind: BGPAdvertisement\nmetadata: {{name: bgp}}\nspec: {{ipAddressPools: [bgp]}}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: shop\n  namespace: default\n  annotations: {{ferrolb.io/address-pool: bgp}}\nspec:\n  type: LoadBalancer\n  externalTrafficPolicy: Local\n  selector: {{app: echo}}\n  ports: [{{port: 80, targetPort: 8080}}]\n",
        router_ip = slot.host_ip(2),
        n = slot.0
    )
}

/// A real cluster of `nodes` nodes with ferrolb installed from
/// `config/local` and every ferrolb Pod rolled out; the client is `.3` on
/// the nodes' LAN. Prints how long each step took. The image holds the
/// binaries of [`crate::process::bin_dir`] (`FERROLB_BIN_DIR` measures
/// another build).
pub fn installed(root: &Path, nodes: usize, prefix: &str) -> Real {
    installed_by(root, nodes, prefix, Install::Kustomize)
}

/// How ferrolb goes onto the cluster.
#[derive(Clone, Copy, Debug)]
pub enum Install<'a> {
    /// `kubectl apply -k config/local`.
    Kustomize,
    /// `helm install ferrolb charts/ferrolb -n ferrolb-system
    /// --create-namespace` with the image built here and these `--set`s.
    Helm(&'a [&'a str]),
}

/// [`installed`], by kubectl or by Helm.
pub fn installed_by(root: &Path, nodes: usize, prefix: &str, how: Install) -> Real {
    let real = started(root, nodes, prefix, &[]);
    real.install(root, how, TAG);
    real
}

/// A real cluster of `nodes` nodes with the images built here and the
/// archives `extra` (an earlier build's image, say) in every node's
/// containerd, and nothing installed yet; the client is `.3` on the nodes'
/// LAN.
pub fn started(root: &Path, nodes: usize, prefix: &str, extra: &[PathBuf]) -> Real {
    let built = build_all(&crate::process::bin_dir(), &root.join(".cache/images")).expect("images");
    let local =
        std::fs::read_to_string(root.join("config/local/kustomization.yaml")).expect("overlay");
    assert!(
        local.contains(&format!("newTag: {TAG}")),
        "config/local names the tag make image builds ({TAG})"
    );
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("dir")
        .keep();
    let mut images: Vec<PathBuf> = built.archives.iter().map(|(_, p)| p.clone()).collect();
    images.extend(extra.iter().cloned());
    let cluster = RealCluster::start(Options {
        nodes,
        proxy: ProxyMode::Iptables,
        images,
        sandbox_image: format!("{PAUSE}:{TAG}"),
        dir,
    })
    .expect("a real cluster");
    println!(
        "FIGURE REAL cluster: {nodes} nodes Ready after {:?}",
        cluster.ready_after
    );
    let client = cluster.client(3, CLIENT_MAC).expect("client");
    Real { cluster, client }
}

/// A real cluster with ferrolb installed, and a client on its LAN.
pub struct Real {
    /// The cluster.
    pub cluster: RealCluster,
    /// A machine on the nodes' LAN.
    pub client: Host,
}

impl Real {
    /// Installs (or upgrades to) ferrolb from the source tree `source` (this
    /// one, or an earlier commit's) with the image `localhost/ferrolb:tag`
    /// (the nodes hold it, never pull it), then waits until every ferrolb
    /// workload has rolled out. Kustomize applies `config/local` when that is
    /// what `source` and `tag` name, else an overlay of `config/default`
    /// written for them; Helm installs the release `ferrolb`, or upgrades it
    /// when it is there.
    pub fn install(&self, source: &Path, how: Install, tag: &str) {
        let started = Instant::now();
        match how {
            Install::Kustomize => {
                let local = source.join("config/local");
                let kustomization =
                    std::fs::read_to_string(local.join("kustomization.yaml")).unwrap_or_default();
                let dir = if kustomization.contains(&format!("newTag: {tag}")) {
                    local
                } else {
                    // Beside config/default: kustomize takes relative paths only.
                    let overlay = source.join(format!("config/overlay-{tag}"));
                    std::fs::create_dir_all(&overlay).expect("overlay");
                    std::fs::write(
                        overlay.join("kustomization.yaml"),
                        format!(
                            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- ../default\nimages:\n- name: ghcr.io/ferrolb/ferrolb\n  newName: {FERROLB}\n  newTag: {tag}\n"
                        ),
                    )
                    .expect("overlay");
                    overlay
                };
                self.kubectl(&["apply", "-k", &dir.display().to_string()]);
            }
            Install::Helm(sets) => {
                let chart = source.join("charts/ferrolb").display().to_string();
                let mut args = vec![
                    "upgrade",
                    "--install",
                    "ferrolb",
                    &chart,
                    "--create-namespace",
                ];
                let image = format!("image.repository={FERROLB}");
                let tag = format!("image.tag={tag}");
                args.extend(["--set", &image, "--set", &tag]);
                for set in sets {
                    args.extend(["--set", set]);
                }
                self.helm(&args);
            }
        }
        self.rolled_out(&[
            "deploy/ferrolb-webhook",
            "deploy/ferrolb-operator",
            "ds/ferrolb-speaker",
        ]);
        println!(
            "FIGURE REAL install: every ferrolb Pod Ready {:?} after {} ({tag})",
            started.elapsed(),
            match how {
                Install::Kustomize => "kubectl apply -k",
                Install::Helm(_) => "helm upgrade --install",
            }
        );
    }

    /// FRR as the nodes' router, `.2` on their LAN (forwarding on, ECMP
    /// hashed on ports too), its `frr.conf` made by `config` from the nodes'
    /// addresses with their AS ([`NODE_ASN`], as in [`bgp_objects`]); the
    /// client reaches the BGP pools through it.
    pub fn router(&self, config: impl FnOnce(&[(String, u32)]) -> String) -> Frr {
        let slot = self.cluster.slot;
        let router = self.cluster.client(2, ROUTER_MAC).expect("router");
        for setting in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.fib_multipath_hash_policy=1",
        ] {
            router.run("sysctl", &["-qw", setting]).expect("sysctl");
        }
        let neighbors: Vec<(String, u32)> = self
            .cluster
            .nodes
            .iter()
            .map(|n| (n.ip.clone(), NODE_ASN))
            .collect();
        let frr = Frr::start(&router, &config(&neighbors)).expect("FRR");
        self.client
            .run(
                "ip",
                &["route", "replace", &slot.spare(), "via", &slot.host_ip(2)],
            )
            .expect("client route");
        frr
    }

    /// Applies `objects` until they are admitted (90 s at most): the
    /// webhook may still be coming up, and a GitOps tool retries too.
    pub fn admit(&self, objects: &str) {
        until(
            "the objects to be admitted",
            Duration::from_secs(90),
            || self.apply(objects).status.success().then_some(()),
        )
        .expect("objects applied");
    }

    /// Helm as admin in ferrolb-system; panics with its output when it
    /// fails.
    pub fn helm(&self, args: &[&str]) -> String {
        let helm = crate::chart::helm().expect("helm");
        let kubeconfig = self.cluster.kubeconfig.display().to_string();
        crate::chart::run(
            std::process::Command::new(helm)
                .args(["--kubeconfig", &kubeconfig, "--namespace", "ferrolb-system"])
                .args(args),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits (3 minutes at most each) until these ferrolb workloads
    /// (`deploy/NAME`, `ds/NAME`) have rolled out.
    pub fn rolled_out(&self, workloads: &[&str]) {
        for workload in workloads {
            self.kubectl(&[
                "-n",
                "ferrolb-system",
                "rollout",
                "status",
                workload,
                "--timeout=180s",
            ]);
        }
    }

    /// kubectl as admin; panics with its output when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.cluster
            .kubectl_ok(args)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// kubectl's output for `args` with `-o json`; `null` (the error
    /// printed) while the apiserver does not answer, so the waits that read
    /// it go on waiting through a control-plane fault.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        match self.cluster.kubectl_ok(&all) {
            Ok(text) => serde_json::from_str(&text).unwrap_or(Value::Null),
            Err(e) => {
                eprintln!("{e}");
                Value::Null
            }
        }
    }

    /// `kubectl apply` of `yaml`, whatever the outcome.
    pub fn apply(&self, yaml: &str) -> std::process::Output {
        let path = self.cluster.dir.join("apply.yaml");
        std::fs::write(&path, yaml).expect("write");
        self.cluster
            .kubectl(&["apply", "-f", &path.display().to_string()])
            .expect("kubectl")
    }

    /// The Service's IP once it has one.
    pub fn service_ip(&self, name: &str) -> String {
        until(
            &format!("{name} to get an IP"),
            Duration::from_secs(60),
            || {
                let ip = self
                    .cluster
                    .kubectl_ok(&[
                        "get",
                        "svc",
                        name,
                        "-o",
                        "jsonpath={.status.loadBalancer.ingress[0].ip}",
                    ])
                    .ok()?;
                (!ip.trim().is_empty()).then(|| ip.trim().to_string())
            },
        )
        .expect("an IP")
    }

    /// The node the operator made active for `ip`, once its speaker has
    /// applied that and answers — and no other node says it answers.
    pub fn active(&self, ip: &str) -> Option<String> {
        let list = self.json(&["get", "nodeannouncements"]);
        let answering: Vec<&Value> = list["items"]
            .as_array()?
            .iter()
            .filter(|item| {
                item["status"]["l2"].as_array().is_some_and(|l2| {
                    l2.iter()
                        .any(|s| crate::lab::holds(&s["ips"], ip) && s["state"] == "Announcing")
                })
            })
            .collect();
        let [item] = answering.as_slice() else {
            return None;
        };
        let chosen = item["spec"]["l2"]
            .as_array()?
            .iter()
            .any(|e| crate::lab::holds(&e["ips"], ip) && e["role"] == "active");
        let applied = item["status"]["observedGeneration"] == item["metadata"]["generation"];
        (chosen && applied).then(|| item["metadata"]["name"].as_str().map(str::to_string))?
    }

    /// The MAC of `node`'s LAN interface.
    pub fn mac_of(&self, node: &str) -> String {
        let ns = self.cluster.slot.namespace(node);
        let out = std::process::Command::new("ip")
            .args(["-n", &ns, "-o", "link", "show", "dev", "eth0"])
            .output()
            .expect("ip link");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_default()
            .to_lowercase()
    }

    /// Waits until every Pod in the cluster is Ready and the Service is
    /// announced and answering.
    pub fn settled(&self, service: &str) -> (String, String) {
        let ip = self.service_ip(service);
        until("every Pod Ready", Duration::from_secs(180), || {
            let pods = self.json(&["get", "pods", "-A"]);
            let all = pods["items"].as_array()?;
            all.iter()
                .all(|p| {
                    p["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
                .then_some(())
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}\n{}",
                self.kubectl(&["get", "pods", "-A", "-o", "wide"])
            )
        });
        until("the IP to be announced", Duration::from_secs(60), || {
            self.active(&ip)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", self.diagnose()));
        // Every speaker has caught up with its spec, and each standby of this
        // IP hears the active node: the fast path is armed for this IP. The
        // active node is read anew each time: right after a failure the
        // status of the node that lost the IP can still say it answers.
        let active = until("fast failover to be armed", Duration::from_secs(60), || {
            let list = self.json(&["get", "nodeannouncements"]);
            let items = list["items"].as_array()?;
            let caught_up = items
                .iter()
                .all(|i| i["status"]["observedGeneration"] == i["metadata"]["generation"]);
            let active = self.active(&ip)?;
            let standbys: Vec<&Value> = items
                .iter()
                .filter(|i| {
                    i["spec"]["l2"].as_array().is_some_and(|l2| {
                        l2.iter().any(|e| {
                            crate::lab::holds(&e["ips"], &ip)
                                && e["role"] == "standby"
                                && e["standbyFor"] == active.as_str()
                        })
                    })
                })
                .collect();
            let armed = !standbys.is_empty()
                && standbys.iter().all(|i| {
                    i["status"]["failover"].as_array().is_some_and(|f| {
                        f.iter()
                            .any(|f| f["node"] == active.as_str() && f["state"] == "Armed")
                    })
                });
            (caught_up && armed).then_some(active)
        })
        .unwrap_or_else(|e| panic!("{e} ({ip})\n{}", self.diagnose()));
        until("the client to be answered", Duration::from_secs(30), || {
            let out = self
                .client
                .run("curl", &["-s", "-m", "1", &format!("http://{ip}/")])
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .contains("pod=")
                .then_some(())
        })
        .expect("HTTP through the Service IP");
        (ip, active)
    }

    /// What the cluster looks like, for a failure message.
    pub fn diagnose(&self) -> String {
        let mut text = String::new();
        for args in [
            vec!["get", "nodes", "-o", "wide"],
            vec!["get", "pods", "-A", "-o", "wide"],
            vec!["get", "svc", "-o", "wide"],
            vec![
                "get",
                "nodeannouncements",
                "-o",
                "custom-columns=NODE:.metadata.name,GEN:.metadata.generation,SEEN:.status.observedGeneration,SPEC:.spec.l2,L2:.status.l2,FAILOVER:.status.failover",
            ],
        ] {
            text.push_str(&format!("--- kubectl {}\n", args.join(" ")));
            if let Ok(out) = self.cluster.kubectl(&args) {
                text.push_str(&String::from_utf8_lossy(&out.stdout));
            }
        }
        text.push_str(&self.logs(|pod| !pod.contains("webhook"), "--tail=25"));
        text
    }

    /// The logs of ferrolb's Pods whose name passes `which`, each limited
    /// by `limit` (a `kubectl logs` flag).
    pub fn logs(&self, which: impl Fn(&str) -> bool, limit: &str) -> String {
        let pods = self
            .cluster
            .kubectl_ok(&["-n", "ferrolb-system", "get", "pods", "-o", "name"])
            .unwrap_or_default();
        let mut text = String::new();
        for pod in pods.lines().filter(|p| which(p)) {
            if let Ok(out) = self
                .cluster
                .kubectl(&["-n", "ferrolb-system", "logs", pod, limit])
            {
                text.push_str(&format!(
                    "--- {pod}\n{}",
                    String::from_utf8_lossy(&out.stdout)
                ));
            }
        }
        text
    }

    /// When the speaker container on `node` started, if it runs and is
    /// Ready.
    pub fn speaker_started(&self, node: &str) -> Option<String> {
        let selector = format!("spec.nodeName={node}");
        let pods = self.json(&[
            "-n",
            "ferrolb-system",
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=ferrolb-speaker",
            "--field-selector",
            &selector,
        ]);
        pods["items"].as_array()?.iter().find_map(|pod| {
            let status = pod["status"]["containerStatuses"].as_array()?.first()?;
            let started = status["state"]["running"]["startedAt"].as_str()?;
            (status["ready"] == true).then(|| started.to_string())
        })
    }

    /// After a crash and restart of `node`: waits until its speaker runs
    /// anew and is Ready (its Pod's status as the restarted kubelet writes
    /// it). Until then the apiserver still shows what the dead speaker last
    /// wrote — Ready, fast failover Armed — and the next scenario would
    /// measure with a standby that is not there.
    pub fn speaker_back(&self, node: &str, before: Option<String>) {
        until(
            &format!("the speaker on {node} to run again"),
            Duration::from_secs(180),
            || {
                self.speaker_started(node)
                    .filter(|s| Some(s) != before.as_ref())
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", self.diagnose()));
    }

    /// When the container of ferrolb Pod `pod` started, if it runs and is
    /// Ready.
    pub fn pod_started(&self, pod: &str) -> Option<String> {
        let pod = self.json(&["-n", "ferrolb-system", "get", "pod", pod]);
        let status = pod["status"]["containerStatuses"].as_array()?.first()?;
        let started = status["state"]["running"]["startedAt"].as_str()?;
        (status["ready"] == true).then(|| started.to_string())
    }

    /// After a kill: waits until ferrolb Pod `pod` runs a new container
    /// (started other than `before`) and is Ready; the kubelet's restart
    /// back-off (10 s, doubling) counts in.
    pub fn pod_back(&self, pod: &str, before: Option<String>) {
        until(
            &format!("{pod} to run again"),
            Duration::from_secs(330),
            || self.pod_started(pod).filter(|s| Some(s) != before.as_ref()),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", self.diagnose()));
    }

    /// The node IPs, sorted, with a Ready Pod matching `selector` that is
    /// not being deleted.
    pub fn ready_pod_node_ips(&self, selector: &str) -> Vec<String> {
        let pods = self.json(&["get", "pods", "-l", selector]);
        let mut ips: Vec<String> = pods["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|p| {
                p["metadata"]["deletionTimestamp"].is_null()
                    && p["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
            })
            .filter_map(|p| p["spec"]["nodeName"].as_str())
            .filter_map(|n| self.cluster.node_named(n).map(|n| n.ip.clone()))
            .collect();
        ips.sort();
        ips.dedup();
        ips
    }

    /// The name of the operator Pod holding the leader Lease.
    pub fn leader(&self) -> String {
        self.kubectl(&[
            "-n",
            "ferrolb-system",
            "get",
            "lease",
            "ferrolb-operator",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
        .trim()
        .to_string()
    }

    /// The resident memory (kB) of each process running `binary`.
    pub fn rss_of(&self, binary: &str) -> Vec<u64> {
        let out = std::process::Command::new("pgrep")
            .args(["-f", &format!("^/{binary}")])
            .output()
            .expect("pgrep");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|pid| crate::process::rss_kib(pid.trim().parse().ok()?))
            .collect()
    }
}

/// Every ferrolb Pod's log, followed from now on into `dir/POD.log` with
/// timestamps, Pods that start later included: what a rollout's replaced
/// Pods said is kept after they are gone. Stops when dropped.
pub struct LogTap {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LogTap {
    /// Starts following the logs of `real`'s ferrolb Pods into `dir`.
    pub fn start(real: &Real, dir: &Path) -> LogTap {
        use std::sync::atomic::Ordering;
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("log dir");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (kubectl, kubeconfig) = (
            real.cluster.kubectl_bin.clone(),
            real.cluster.kubeconfig.clone(),
        );
        let (dir, flag) = (dir.to_path_buf(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut followed: Vec<(String, std::process::Child)> = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let pods = std::process::Command::new(&kubectl)
                    .arg(format!("--kubeconfig={}", kubeconfig.display()))
                    .args(["-n", "ferrolb-system", "get", "pods", "-o", "name"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                for pod in pods.lines().map(|p| p.trim_start_matches("pod/")) {
                    if followed.iter().any(|(name, _)| name == pod) {
                        continue;
                    }
                    let Ok(file) = std::fs::File::create(dir.join(format!("{pod}.log"))) else {
                        continue;
                    };
                    let child = std::process::Command::new(&kubectl)
                        .arg(format!("--kubeconfig={}", kubeconfig.display()))
                        .args(["-n", "ferrolb-system", "logs", "-f", "--timestamps", pod])
                        .stdout(file)
                        .stderr(std::process::Stdio::null())
                        .spawn();
                    if let Ok(child) = child {
                        followed.push((pod.to_string(), child));
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            for (_, mut child) in followed {
                let _ = child.kill();
                let _ = child.wait();
            }
        });
        LogTap {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for LogTap {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
