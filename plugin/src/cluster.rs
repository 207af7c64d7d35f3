//! The plugin's only I/O with the cluster: a client as kubectl would make
//! one, reading MetalLB's configuration, server-side dry runs, and the
//! snapshot `status` and `doctor` judge. Nothing here writes: a dry run
//! persists nothing.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use ferrolb_api::constants::NAMESPACE;
use ferrolb_api::{
    BGPAdvertisement, BGPPeer, IPAddressPool, IPAddressPoolSpec, L2Advertisement, NodeAnnouncement,
    PrefixSet,
};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Node, Pod, Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::client::{ClientBuilder, DynBody};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::{Client, Config};
use serde_json::{Value, json};
use tower::util::MapResponseLayer;

use crate::check;
use crate::snapshot::Snapshot;

/// Where to connect, as kubectl's flags say.
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// `--kubeconfig`: else `KUBECONFIG`, else `~/.kube/config`, else in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// `--context`.
    pub context: Option<String>,
    /// `-n`: else the context's namespace.
    pub namespace: Option<String>,
}

/// The field manager of the plugin's dry runs.
pub const MANAGER: &str = "kubectl-ferrolb";

/// The `Warning` headers of the apiserver's answers (admission webhooks'
/// warnings among them), as the client's stack sees them: kube's client
/// returns the objects only.
#[derive(Clone, Debug, Default)]
pub struct Warnings(Arc<Mutex<Vec<String>>>);

impl Warnings {
    /// The warnings heard since the last call, their texts unquoted.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().expect("warnings lock"))
    }

    fn hear(&self, headers: &http::HeaderMap) {
        let mut heard = self.0.lock().expect("warnings lock");
        for value in headers.get_all(http::header::WARNING) {
            heard.push(check::warning_text(&String::from_utf8_lossy(
                value.as_bytes(),
            )));
        }
    }
}

/// A client, the namespace to use (`-n`, else the context's) and the
/// warnings its answers carry.
pub struct Connection {
    /// The client.
    pub client: Client,
    /// `-n`, else the context's namespace.
    pub namespace: String,
    /// What the apiserver warned of.
    pub warnings: Warnings,
}

/// Connects as kubectl would.
pub async fn connect(target: &Target) -> Result<Connection> {
    let options = KubeConfigOptions {
        context: target.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &target.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(file, &options).await?
        }
        None if target.context.is_some() => Config::from_kubeconfig(&options).await?,
        None => Config::infer()
            .await
            .context("no kubeconfig (set KUBECONFIG or --kubeconfig) and not in a cluster")?,
    };
    let namespace = target
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let warnings = Warnings::default();
    let heard = warnings.clone();
    let client = ClientBuilder::try_from(config)?
        .with_layer(&MapResponseLayer::new(
            move |response: http::Response<Box<DynBody>>| {
                heard.hear(response.headers());
                response
            },
        ))
        .build();
    Ok(Connection {
        client,
        namespace,
        warnings,
    })
}

/// The kinds of `metallb.io` that `convert` reads, in the order they are read
/// (Community first: its aliases are resolved in the others).
const METALLB_KINDS: [&str; 6] = [
    "Community",
    "IPAddressPool",
    "L2Advertisement",
    "BGPAdvertisement",
    "BGPPeer",
    "BFDProfile",
];

/// MetalLB's configuration in namespace `namespace` as one YAML stream for
/// [`crate::convert::convert`]: every ConfigMap with a legacy `config` key
/// (any name, so Helm's too) and every `metallb.io` object of the kinds
/// converted. A BGPPeer's `passwordSecret` is read and carried as its
/// password (which the conversion moves into ferrolb's Secret); one that
/// cannot be read stays a warning. Returns the stream and notes for stderr.
pub async fn metallb_configuration(
    client: &Client,
    namespace: &str,
) -> Result<(String, Vec<String>)> {
    let mut docs: Vec<Value> = Vec::new();
    let mut notes = Vec::new();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    for map in maps.list(&ListParams::default()).await? {
        let config = map.data.as_ref().and_then(|d| d.get("config"));
        if config.is_some_and(|c| c.contains("address-pools") || c.contains("peers")) {
            let name = map.metadata.name.clone().unwrap_or_default();
            notes.push(format!("read ConfigMap {namespace}/{name}"));
            docs.push(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace},
                "data": {"config": config},
            }));
        }
    }
    match discovery::group(client, "metallb.io").await {
        Ok(group) => {
            // Each kind at its own most stable version: MetalLB serves
            // BGPPeer at v1beta2 and the rest at v1beta1 only, so the
            // group's preferred version does not hold every kind.
            let resources = group.resources_by_stability();
            for kind in METALLB_KINDS {
                let Some((resource, _)) = resources.iter().find(|(r, _)| r.kind == kind) else {
                    continue;
                };
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), namespace, resource);
                for object in api.list(&ListParams::default()).await? {
                    let name = object.metadata.name.clone().unwrap_or_default();
                    let mut spec = object.data.get("spec").cloned().unwrap_or(json!({}));
                    if kind == "BGPPeer" {
                        carry_password(client, namespace, &name, &mut spec, &mut notes).await;
                    }
                    docs.push(json!({
                        "apiVersion": resource.api_version,
                        "kind": kind,
                        "metadata": {"name": name},
                        "spec": spec,
                    }));
                }
            }
            notes.push(format!("read metallb.io objects in namespace {namespace}"));
        }
        Err(kube::Error::Discovery(_)) => {
            notes.push("no metallb.io resources in this cluster".into());
        }
        Err(e) => return Err(e.into()),
    }
    if docs.is_empty() {
        bail!(
            "no MetalLB configuration in namespace {namespace}: no ConfigMap with a legacy `config` key and no metallb.io objects (MetalLB elsewhere? name its namespace with -n)"
        );
    }
    let mut stream = String::new();
    for doc in docs {
        stream.push_str("---\n");
        stream.push_str(&serde_yaml::to_string(&doc).expect("a JSON value is YAML"));
    }
    Ok((stream, notes))
}

/// Replaces a BGPPeer's `passwordSecret` with the password it names, when
/// the Secret can be read.
async fn carry_password(
    client: &Client,
    namespace: &str,
    peer: &str,
    spec: &mut Value,
    notes: &mut Vec<String>,
) {
    let Some(name) = spec["passwordSecret"]["name"].as_str().map(str::to_string) else {
        return;
    };
    let secret_namespace = spec["passwordSecret"]["namespace"]
        .as_str()
        .unwrap_or(namespace)
        .to_string();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &secret_namespace);
    match secrets.get(&name).await {
        Ok(secret) => {
            let password = secret
                .data
                .as_ref()
                .and_then(|d| d.get("password"))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned());
            if let (Some(password), Some(object)) = (password, spec.as_object_mut()) {
                object.remove("passwordSecret");
                object.insert("password".into(), json!(password));
                notes.push(format!(
                    "BGPPeer {peer}: password read from Secret {secret_namespace}/{name}"
                ));
            }
        }
        Err(e) => notes.push(format!(
            "BGPPeer {peer}: cannot read Secret {secret_namespace}/{name} ({e}); copy its password by hand as the warning says"
        )),
    }
}

/// What the apiserver said of one object in a dry run.
pub struct Verdict {
    /// `Kind name`.
    pub object: String,
    /// None: accepted. Some: why it was refused.
    pub refused: Option<String>,
    /// What it warned of, less what applying all of `objects` settles (see
    /// [`check::moot_in_dry_run`]).
    pub warnings: Vec<String>,
}

/// Sends each object to the apiserver as a server-side apply with dry run,
/// so the CRD schema and the admission webhooks judge it and nothing is
/// stored.
pub async fn dry_run(connection: &Connection, objects: &[Value]) -> Result<Vec<Verdict>> {
    let client = &connection.client;
    let mut verdicts = Vec::new();
    for object in objects {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let label = format!("{kind} {name}");
        let (resource, capabilities) = match discovery::pinned_kind(client, &gvk).await {
            Ok(found) => found,
            Err(e) => {
                verdicts.push(Verdict {
                    object: label,
                    refused: Some(format!(
                        "{api_version} {kind} is not served ({e}); are ferrolb's CRDs installed?"
                    )),
                    warnings: Vec::new(),
                });
                continue;
            }
        };
        let api: Api<DynamicObject> = match capabilities.scope {
            Scope::Cluster => Api::all_with(client.clone(), &resource),
            Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default"),
                &resource,
            ),
        };
        let params = PatchParams::apply(MANAGER).dry_run();
        connection.warnings.take();
        let refused = match api.patch(name, &params, &Patch::Apply(object)).await {
            Ok(_) => None,
            Err(kube::Error::Api(status)) => Some(status.message.clone()),
            Err(e) => Some(e.to_string()),
        };
        let warnings = connection
            .warnings
            .take()
            .into_iter()
            .filter(|w| !check::moot_in_dry_run(w, objects))
            .collect();
        verdicts.push(Verdict {
            object: label,
            refused,
            warnings,
        });
    }
    Ok(verdicts)
}

/// ferrolb's own objects (every kind `status` and `doctor` read).
async fn ferrolb_objects(client: &Client, snapshot: &mut Snapshot) -> Result<()> {
    let lp = ListParams::default();
    snapshot.announcements = Api::<NodeAnnouncement>::all(client.clone())
        .list(&lp)
        .await
        .context("cannot list NodeAnnouncements (are ferrolb's CRDs installed?)")?
        .items;
    snapshot.prefix_sets = Api::<PrefixSet>::all(client.clone()).list(&lp).await?.items;
    snapshot.pools = Api::<IPAddressPool>::all(client.clone())
        .list(&lp)
        .await?
        .items;
    snapshot.l2_advertisements = Api::<L2Advertisement>::all(client.clone())
        .list(&lp)
        .await?
        .items;
    snapshot.bgp_advertisements = Api::<BGPAdvertisement>::all(client.clone())
        .list(&lp)
        .await?
        .items;
    snapshot.peers = Api::<BGPPeer>::all(client.clone()).list(&lp).await?.items;
    Ok(())
}

/// LoadBalancer Services in `namespace` (all namespaces: None).
async fn load_balancers(client: &Client, namespace: Option<&str>) -> Result<Vec<Service>> {
    let api: Api<Service> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let lp = ListParams::default().fields("spec.type=LoadBalancer");
    Ok(api.list(&lp).await?.items)
}

/// What `status` reads: one Service (`one`) or every LoadBalancer Service of
/// `namespace` (all namespaces: None), ferrolb's objects, and the Events of
/// the one Service.
pub async fn status_snapshot(
    client: &Client,
    namespace: Option<&str>,
    one: Option<&str>,
) -> Result<Snapshot> {
    let mut snapshot = Snapshot {
        now: Timestamp::now(),
        ..Snapshot::default()
    };
    match (one, namespace) {
        (Some(name), Some(ns)) => {
            let service = Api::<Service>::namespaced(client.clone(), ns)
                .get_opt(name)
                .await?
                .with_context(|| format!("Service {ns}/{name} not found"))?;
            snapshot.services.push(service);
            let lp = ListParams::default().fields(&format!(
                "involvedObject.kind=Service,involvedObject.name={name}"
            ));
            snapshot.events = Api::<Event>::namespaced(client.clone(), ns)
                .list(&lp)
                .await?
                .items;
        }
        _ => snapshot.services = load_balancers(client, namespace).await?,
    }
    ferrolb_objects(client, &mut snapshot).await?;
    Ok(snapshot)
}

/// The name of the pool `doctor` sends with dry run to see the webhook answer.
pub const PROBE_POOL: &str = "kubectl-ferrolb-doctor";

/// What `doctor` reads. Nothing is written: the webhook is tried with a dry run.
pub async fn doctor_snapshot(client: &Client) -> Result<Snapshot> {
    let lp = ListParams::default();
    let mut snapshot = Snapshot {
        now: Timestamp::now(),
        services: load_balancers(client, None).await?,
        nodes: Api::<Node>::all(client.clone()).list(&lp).await?.items,
        ..Snapshot::default()
    };
    snapshot.namespace = Api::<Namespace>::all(client.clone())
        .get_opt(NAMESPACE)
        .await?;
    if snapshot.namespace.is_some() {
        snapshot.leases = Api::<Lease>::namespaced(client.clone(), NAMESPACE)
            .list(&lp)
            .await?
            .items;
    }
    snapshot.kube_proxy = Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
        .get_opt("kube-proxy")
        .await?;
    for selector in [
        "svccontroller.k3s.cattle.io/svcname",
        "app=metallb",
        "app.kubernetes.io/name=metallb",
    ] {
        let pods = Api::<Pod>::all(client.clone())
            .list(&ListParams::default().labels(selector))
            .await?;
        snapshot.other_controllers.extend(pods.items);
    }
    snapshot.webhook = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get_opt("ferrolb-webhook")
        .await?;
    if let Err(e) = ferrolb_objects(client, &mut snapshot).await {
        // Without the CRDs the install check says what to do.
        eprintln!("note: {e:#}");
        return Ok(snapshot);
    }
    // A pool whose entries overlap: the schema takes it, the webhook denies it.
    let spec: IPAddressPoolSpec =
        serde_json::from_value(json!({"addresses": ["198.51.100.0/30", "198.51.100.2/32"]}))?;
    let probe = IPAddressPool::new(PROBE_POOL, spec);
    let params = PostParams {
        dry_run: true,
        field_manager: Some(MANAGER.into()),
    };
    snapshot.webhook_probe = Some(
        match Api::<IPAddressPool>::all(client.clone())
            .create(&params, &probe)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) => Err(status.message.clone()),
            Err(e) => Err(e.to_string()),
        },
    );
    Ok(snapshot)
}
