//! A test cluster: the control plane with ferrolb's CRDs installed, the
//! `ferrolb-system` namespace, a kube client, and helpers to run the operator
//! and wait for what users wait for.

use std::io::Write;
use std::net::{IpAddr, TcpListener};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferrolb_api::constants::{NAMESPACE, condition};
use k8s_openapi::api::core::v1::Service;
use kube::Api;

use crate::controlplane::{ControlPlane, workspace_root};
use crate::process::{Process, binary};

/// The control plane with the CRDs applied.
pub struct TestCluster {
    /// The control plane.
    pub plane: ControlPlane,
    /// An admin client.
    pub client: kube::Client,
}

/// Output of a command as one string.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl TestCluster {
    /// Starts a control plane, installs the CRDs and creates `ferrolb-system`.
    pub async fn start() -> Result<TestCluster> {
        let plane = ControlPlane::start()?;
        let crds = workspace_root().join("config").join("crd");
        let cluster = TestCluster {
            client: plane.client().await?,
            plane,
        };
        let applied = cluster.kubectl(&["apply", "-k", crds.to_str().unwrap_or("config/crd")])?;
        // The apiserver warns about every schema format it does not know, at
        // every apply a user makes: the CRDs carry none.
        if applied.contains("Warning") {
            bail!("kubectl apply -k config/crd warned: {applied}");
        }
        cluster.kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ])?;
        cluster.kubectl(&["create", "namespace", NAMESPACE])?;
        Ok(cluster)
    }

    /// Runs kubectl; fails with its output when it fails.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = self.plane.kubectl(args)?;
        if !out.status.success() {
            bail!("kubectl {}: {}", args.join(" "), text(&out));
        }
        Ok(text(&out))
    }

    /// `kubectl apply -f -` with `yaml`; returns kubectl's output, success or not.
    pub fn apply(&self, yaml: &str) -> Result<Output> {
        self.apply_with(yaml, &[])
    }

    /// Like [`apply`](Self::apply), failing when kubectl fails.
    pub fn apply_ok(&self, yaml: &str) -> Result<String> {
        let out = self.apply(yaml)?;
        if !out.status.success() {
            bail!("kubectl apply failed: {}\n{yaml}", text(&out));
        }
        Ok(text(&out))
    }

    /// Starts an operator replica named `identity` (see [`binary`] for which build).
    pub fn operator(&self, identity: &str, extra: &[&str]) -> Result<Process> {
        let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mut args = vec![
            format!("--metrics-addr={metrics}"),
            format!("--identity={identity}"),
            "--lease-duration-seconds=3".to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut process = Process::start(
            &binary("ferrolb-operator")?,
            &args,
            &self.plane.kubeconfig,
            self.plane.dir().join(format!("operator-{identity}.log")),
        )?;
        process.metrics = Some(metrics);
        Ok(process)
    }

    /// Starts a speaker for `node` answering inside network namespace
    /// `namespace` on its `eth0`, with 3 s Leases; `extra` flags appended.
    /// Each start logs to a file of its own.
    pub fn speaker(&self, node: &str, namespace: &str, extra: &[&str]) -> Result<Process> {
        let mut args = vec!["--interface=eth0"];
        args.extend(extra);
        self.speaker_choosing(node, namespace, &args)
    }

    /// Like [`speaker`](Self::speaker), with no `--interface`: the speaker
    /// chooses the interface itself, as in a DaemonSet.
    pub fn speaker_choosing(&self, node: &str, namespace: &str, extra: &[&str]) -> Result<Process> {
        static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mut args = vec![
            format!("--node={node}"),
            format!("--netns=/run/netns/{namespace}"),
            "--lease-seconds=3".to_string(),
            format!("--metrics-addr={metrics}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut process = Process::start(
            &binary("ferrolb-speaker")?,
            &args,
            &self.plane.kubeconfig,
            self.plane.dir().join(format!("speaker-{node}-{n}.log")),
        )?;
        process.metrics = Some(metrics);
        Ok(process)
    }

    /// Starts the webhook on a free loopback port with a self-managed certificate
    /// for 127.0.0.1, registers it by URL in the ValidatingWebhookConfiguration
    /// `ferrolb-webhook` (failurePolicy Fail), and waits until the apiserver calls
    /// it (the webhook writes the caBundle itself).
    pub async fn webhook(&self, extra: &[&str]) -> Result<Process> {
        self.webhook_trusting(extra, None).await
    }

    /// Like [`webhook`](Self::webhook), with the configuration's caBundle set to
    /// `ca_pem` up front (for certificates the webhook does not manage).
    pub async fn webhook_trusting(&self, extra: &[&str], ca_pem: Option<&str>) -> Result<Process> {
        let port = free_port()?;
        let bundle = match ca_pem {
            Some(pem) => format!(
                ", caBundle: {}",
                serde_json::to_string(&k8s_openapi::ByteString(pem.as_bytes().to_vec()))?
            ),
            None => String::new(),
        };
        let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let base = format!("https://127.0.0.1:{port}/validate");
        // As config/webhook has it: Fail on create and update, Ignore on
        // the one entry for deletes (pools, BFDProfiles).
        let hook = |name: &str, path: &str, operations: &str, policy: &str| {
            let resources = if path == "deletes" {
                "ipaddresspools, bfdprofiles"
            } else {
                path
            };
            format!(
                "- name: {name}.ferrolb.io\n  clientConfig: {{url: '{base}/{path}'{bundle}}}\n  rules: [{{apiGroups: [ferrolb.io], apiVersions: [v1alpha1], operations: [{operations}], resources: [{resources}]}}]\n  failurePolicy: {policy}\n  sideEffects: None\n  admissionReviewVersions: [v1]\n  timeoutSeconds: 10\n"
            )
        };
        let config = format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: ferrolb-webhook}}\nwebhooks:\n{}{}{}{}{}",
            hook("ipaddresspools", "ipaddresspools", "CREATE, UPDATE", "Fail"),
            hook("ipaddresspool-deletes", "deletes", "DELETE", "Ignore"),
            hook(
                "l2advertisements",
                "l2advertisements",
                "CREATE, UPDATE",
                "Fail"
            ),
            hook("bgppeers", "bgppeers", "CREATE, UPDATE", "Fail"),
            hook(
                "bgpadvertisements",
                "bgpadvertisements",
                "CREATE, UPDATE",
                "Fail"
            ),
        );
        self.apply_ok(&config)?;
        let mut args = vec![
            format!("--listen=127.0.0.1:{port}"),
            format!("--metrics-addr={metrics}"),
            "--ip-sans=127.0.0.1".to_string(),
            "--dns-names=localhost".to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut process = Process::start(
            &binary("ferrolb-webhook")?,
            &args,
            &self.plane.kubeconfig,
            self.plane.dir().join("webhook.log"),
        )?;
        process.metrics = Some(metrics);
        // Ready when a dry-run create goes through the webhook.
        let probe = "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: webhook-probe}\nspec: {addresses: [198.18.0.0/32]}\n";
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.apply_with(probe, &["--dry-run=server"])?;
            if out.status.success() {
                return Ok(process);
            }
            if Instant::now() > deadline || !process.running() {
                bail!(
                    "the webhook never answered: {}\n{}",
                    text(&out),
                    process.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `kubectl apply -f - ARGS` with `yaml`.
    pub fn apply_with(&self, yaml: &str, args: &[&str]) -> Result<Output> {
        let mut child = self
            .plane
            .kubectl_command()
            .args(["apply", "-f", "-"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(yaml.as_bytes())?;
        Ok(child.wait_with_output()?)
    }

    /// Creates a Node (no kubelet runs: the object alone, labelled with its
    /// hostname) and marks it Ready.
    pub fn node(&self, name: &str) -> Result<()> {
        self.apply_ok(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}, labels: {{kubernetes.io/hostname: {name}}}}}\n"
        ))?;
        self.set_ready(name, true)
    }

    /// The ingress IPs of Service `default/name`.
    pub fn service_ips(&self, name: &str) -> Vec<String> {
        self.kubectl(&[
            "get",
            "svc",
            name,
            "-o",
            "jsonpath={.status.loadBalancer.ingress[*].ip}",
        ])
        .map(|out| out.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
    }

    /// A condition of Service `default/name`: (status, reason, message).
    pub fn service_condition(&self, name: &str, kind: &str) -> Option<(String, String, String)> {
        let out = self.kubectl(&["get", "svc", name, "-o", "json"]).ok()?;
        let service: serde_json::Value = serde_json::from_str(&out).ok()?;
        let found = service["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == kind)?
            .clone();
        let text = |key: &str| found[key].as_str().unwrap_or_default().to_string();
        Some((text("status"), text("reason"), text("message")))
    }

    /// The `ferrolb.io/Announced` condition of Service `default/name`:
    /// (status, reason, message), empty while it has none.
    pub fn announced(&self, name: &str) -> (String, String, String) {
        self.service_condition(name, "ferrolb.io/Announced")
            .unwrap_or_default()
    }

    /// Waits until Service `default/name` is `Announced=True`; returns its
    /// message.
    pub fn wait_announced(&self, name: &str, limit: std::time::Duration) -> Result<String> {
        self.kubectl(&[
            "wait",
            "--for=condition=ferrolb.io/Announced",
            &format!("svc/{name}"),
            &format!("--timeout={}s", limit.as_secs()),
        ])?;
        Ok(self.announced(name).2)
    }

    /// The first ingress IP of Service `default/name`, once it has one.
    pub fn service_ip(&self, name: &str) -> Option<String> {
        self.service_ips(name).into_iter().next()
    }

    /// Creates Service `default/local` with `externalTrafficPolicy: Local`
    /// (and `extra_spec`), and its one endpoint on `node`.
    pub fn local_service(&self, extra_spec: &str, node: &str) -> Result<()> {
        self.apply_ok(&service_yaml(
            "default",
            "local",
            "",
            &format!("{extra_spec}  externalTrafficPolicy: Local\n"),
        ))?;
        self.apply_ok(&local_endpoint_yaml(node))?;
        Ok(())
    }

    /// Sets a Node's Ready condition through the status subresource.
    pub fn set_ready(&self, node: &str, ready: bool) -> Result<()> {
        self.set_conditions(node, &[("Ready", ready)])
    }

    /// Sets a Node's conditions (type, true or not) through the status
    /// subresource; those not named are removed.
    pub fn set_conditions(&self, node: &str, conditions: &[(&str, bool)]) -> Result<()> {
        let listed: Vec<String> = conditions
            .iter()
            .map(|(kind, on)| {
                format!(
                    r#"{{"type":"{kind}","status":"{}","reason":"Test","message":"set by the test","lastHeartbeatTime":"2026-01-01T00:00:00Z","lastTransitionTime":"2026-01-01T00:00:00Z"}}"#,
                    if *on { "True" } else { "False" }
                )
            })
            .collect();
        let patch = format!(r#"{{"status":{{"conditions":[{}]}}}}"#, listed.join(","));
        self.kubectl(&[
            "patch",
            "node",
            node,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ])?;
        Ok(())
    }

    /// A Service's ingress IPs and its IPAllocated condition (status, reason,
    /// message), if it has one.
    pub async fn allocation(&self, namespace: &str, name: &str) -> Result<Allocation> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        let service = api.get(name).await?;
        let status = service.status.unwrap_or_default();
        let ips = status
            .load_balancer
            .and_then(|lb| lb.ingress)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| i.ip?.parse().ok())
            .collect();
        let condition = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == condition::IP_ALLOCATED);
        Ok(Allocation {
            ips,
            status: condition.as_ref().map(|c| c.status.clone()),
            reason: condition.as_ref().map(|c| c.reason.clone()),
            message: condition.map(|c| c.message).unwrap_or_default(),
        })
    }

    /// Waits until a Service's allocation satisfies `check`; fails after
    /// `limit` with the last allocation seen.
    pub async fn wait_allocation(
        &self,
        namespace: &str,
        name: &str,
        limit: Duration,
        check: impl Fn(&Allocation) -> bool,
    ) -> Result<Allocation> {
        let deadline = Instant::now() + limit;
        loop {
            let seen = self.allocation(namespace, name).await;
            if let Ok(allocation) = &seen
                && check(allocation)
            {
                return Ok(allocation.clone());
            }
            if Instant::now() > deadline {
                bail!("{namespace}/{name} never got there; last seen: {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What a Service's status says about its IPs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allocation {
    /// `status.loadBalancer.ingress[].ip`.
    pub ips: Vec<IpAddr>,
    /// The condition's status, `True` or `False`.
    pub status: Option<String>,
    /// The condition's reason.
    pub reason: Option<String>,
    /// The condition's message.
    pub message: String,
}

impl Allocation {
    /// Whether the condition is True/Allocated.
    pub fn allocated(&self) -> bool {
        self.status.as_deref() == Some("True")
    }

    /// Whether the condition has `reason`.
    pub fn is(&self, reason: &str) -> bool {
        self.reason.as_deref() == Some(reason)
    }
}

/// An EndpointSlice `local-1` of Service `default/local` with one ready
/// endpoint on `node`: what `externalTrafficPolicy: Local` planning reads.
pub fn local_endpoint_yaml(node: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: local-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: local}}\naddressType: IPv4\nendpoints:\n- addresses: [10.244.0.9]\n  nodeName: {node}\n  conditions: {{ready: true}}\nports: [{{port: 8080}}]\n"
    )
}

/// A LoadBalancer Service manifest.
pub fn service_yaml(namespace: &str, name: &str, extra_metadata: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: '{name}'\n  namespace: '{namespace}'\n{extra_metadata}spec:\n  type: LoadBalancer\n  selector: {{app: '{name}'}}\n  ports: [{{port: 80, targetPort: 8080}}]\n{extra_spec}"
    )
}
