//! The cluster layer: the watches the operator keeps, and one [`Snapshot`]
//! per pass — every watched object read into the plain values the planner
//! takes. Reading only; no decision is made here.

pub mod convert;
pub mod read;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_api::constants::manager;
use ferrolb_api::{
    BFDProfile, BGPAdvertisement, BGPPeer, IPAddressPool, L2Advertisement, NodeAnnouncement,
    PrefixSet,
};
use ferrolb_runtime::{Heard, watch_store, watch_store_lenient};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};

use crate::plan::allocation::selector::Labels;
use crate::plan::allocation::{Failure, Pool, ServiceKey, ServiceRequest};
use crate::plan::announce::{self, bgp};
use crate::plan::conditions::Takeovers;

/// The stores the operator reads, each fed by one watch.
pub struct Stores {
    pub services: Store<Service>,
    pub pools: Store<IPAddressPool>,
    pub namespaces: Store<Namespace>,
    pub nodes: Store<Node>,
    pub leases: Store<Lease>,
    pub l2: Store<L2Advertisement>,
    pub peers: Store<BGPPeer>,
    pub bgp: Store<BGPAdvertisement>,
    pub slices: Store<EndpointSlice>,
    pub announcements: Store<NodeAnnouncement>,
    pub prefix_sets: Store<PrefixSet>,
    pub bfd_profiles: Store<BFDProfile>,
    /// Services read in earlier passes.
    reads: std::sync::Mutex<Reads>,
}

/// Services already read, by object: a Service whose object is the one read
/// last pass (the stores hand out the same `Arc` until it changes) is not
/// read again, unless namespace labels changed.
#[derive(Debug, Default)]
pub struct Reads {
    labels: HashMap<String, Labels>,
    ours: HashMap<usize, Arc<Ours>>,
    /// The EndpointSlices read last (held, so their addresses stay theirs)
    /// and what they gave.
    slices: Vec<Arc<EndpointSlice>>,
    endpoints: Arc<BTreeMap<ServiceKey, BTreeSet<String>>>,
}

impl Stores {
    /// Starts every watch (ferrolb's own kinds leniently: an object that does
    /// not read is skipped and named in the log and in an `events` Event,
    /// never stalls the watch). `wake` is called on each change; speaker Lease
    /// changes call `lease_wake` instead, told whether the watch brought news
    /// or failed (renewals are frequent and rarely change anything, and a
    /// failed watch is not news that nobody renewed). Leases are read in
    /// `namespace` only.
    pub fn watch(
        client: &Client,
        namespace: &str,
        wake: impl Fn() + Clone + Send + 'static,
        lease_wake: impl Fn(Heard) + Send + 'static,
        events: kube::runtime::events::Recorder,
    ) -> Stores {
        let wake = move |_: Heard| wake();
        Stores {
            services: watch_store(Api::all(client.clone()), wake.clone()),
            pools: watch_store_lenient(client.clone(), None, wake.clone(), Some(events.clone())),
            namespaces: watch_store(Api::all(client.clone()), wake.clone()),
            nodes: watch_store(Api::all(client.clone()), wake.clone()),
            leases: watch_store(Api::namespaced(client.clone(), namespace), lease_wake),
            l2: watch_store_lenient(client.clone(), None, wake.clone(), Some(events.clone())),
            peers: watch_store_lenient(client.clone(), None, wake.clone(), Some(events.clone())),
            bgp: watch_store_lenient(client.clone(), None, wake.clone(), Some(events.clone())),
            slices: watch_store(Api::all(client.clone()), wake.clone()),
            announcements: watch_store_lenient(
                client.clone(),
                None,
                wake.clone(),
                Some(events.clone()),
            ),
            prefix_sets: watch_store_lenient(
                client.clone(),
                None,
                wake.clone(),
                Some(events.clone()),
            ),
            bfd_profiles: watch_store_lenient(client.clone(), None, wake, Some(events)),
            reads: Default::default(),
        }
    }

    /// Waits until every store has its first list.
    pub async fn ready(&self) -> anyhow::Result<()> {
        self.services.wait_until_ready().await?;
        self.pools.wait_until_ready().await?;
        self.namespaces.wait_until_ready().await?;
        self.nodes.wait_until_ready().await?;
        self.leases.wait_until_ready().await?;
        self.l2.wait_until_ready().await?;
        self.peers.wait_until_ready().await?;
        self.bgp.wait_until_ready().await?;
        self.slices.wait_until_ready().await?;
        self.announcements.wait_until_ready().await?;
        self.prefix_sets.wait_until_ready().await?;
        self.bfd_profiles.wait_until_ready().await?;
        Ok(())
    }

    /// Everything a pass needs, read once. `live` are the speaker Leases
    /// alive now (see [`crate::plan::liveness`]).
    pub fn snapshot(&self, options: &Options, live: &BTreeSet<String>) -> Snapshot {
        let mut reads = self.reads.lock().expect("reads lock");
        Snapshot::read_with(
            Objects {
                services: self.services.state(),
                pools: self.pools.state(),
                namespaces: self.namespaces.state(),
                nodes: self.nodes.state(),
                l2: self.l2.state(),
                peers: self.peers.state(),
                bgp: self.bgp.state(),
                slices: self.slices.state(),
                announcements: self.announcements.state(),
                prefix_sets: self.prefix_sets.state(),
                bfd_profiles: self.bfd_profiles.state(),
            },
            options,
            live,
            &mut reads,
        )
    }
}

/// The watched objects of every kind a pass reads (speaker Leases come in
/// as the set of live ones).
#[derive(Clone, Debug, Default)]
pub struct Objects {
    pub services: Vec<Arc<Service>>,
    pub pools: Vec<Arc<IPAddressPool>>,
    pub namespaces: Vec<Arc<Namespace>>,
    pub nodes: Vec<Arc<Node>>,
    pub l2: Vec<Arc<L2Advertisement>>,
    pub peers: Vec<Arc<BGPPeer>>,
    pub bgp: Vec<Arc<BGPAdvertisement>>,
    pub slices: Vec<Arc<EndpointSlice>>,
    pub announcements: Vec<Arc<NodeAnnouncement>>,
    pub prefix_sets: Vec<Arc<PrefixSet>>,
    pub bfd_profiles: Vec<Arc<BFDProfile>>,
}

impl Snapshot {
    /// Reads the objects into plain values.
    pub fn read(objects: Objects, options: &Options, live: &BTreeSet<String>) -> Snapshot {
        Snapshot::read_with(objects, options, live, &mut Reads::default())
    }

    /// Reads the objects into plain values, Services unchanged since the
    /// last read taken from `reads`.
    pub fn read_with(
        objects: Objects,
        options: &Options,
        live: &BTreeSet<String>,
        reads: &mut Reads,
    ) -> Snapshot {
        let pool_objects = sorted(objects.pools);
        let announcements: BTreeMap<String, Arc<NodeAnnouncement>> = objects
            .announcements
            .into_iter()
            .map(|a| (a.name_any(), a))
            .collect();
        let takeovers = read::takeovers(&announcements, live);
        let (ours, others): (Vec<_>, Vec<_>) = objects
            .services
            .into_iter()
            .partition(|s| convert::is_ours(s, &options.lb_class));
        let namespace_labels: HashMap<String, Labels> = objects
            .namespaces
            .iter()
            .map(|ns| (ns.name_any(), ns.labels().clone()))
            .collect();
        if reads.labels != namespace_labels {
            reads.ours.clear();
            reads.labels = namespace_labels;
        }
        let mut before = std::mem::take(&mut reads.ours);
        let mut ours: Vec<Arc<Ours>> = ours
            .into_iter()
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .map(|s| {
                let at = Arc::as_ptr(&s) as usize;
                let read = before
                    .remove(&at)
                    .unwrap_or_else(|| Arc::new(Ours::read(s, &reads.labels)));
                reads.ours.insert(at, read.clone());
                read
            })
            .collect();
        // Oldest first: when two want the last IP, the one that asked first
        // gets it.
        ours.sort_by(|a, b| {
            let created = |s: &Ours| s.object.metadata.creation_timestamp.as_ref().map(|t| t.0);
            created(a).cmp(&created(b)).then_with(|| a.key.cmp(&b.key))
        });
        let peer_objects = sorted(objects.peers);
        Snapshot {
            pools: pool_objects.iter().map(|p| convert::pool(p)).collect(),
            ours,
            others,
            nodes: read::nodes(&objects.nodes, live, options.ignore_exclude_lb),
            l2: read::advertisements(&objects.l2, &pool_objects),
            bgp: read::bgp_advertisements(&objects.bgp, &pool_objects),
            peers: read::bgp_peers(&peer_objects, &objects.bfd_profiles),
            peer_objects,
            endpoints: {
                let same = objects.slices.len() == reads.slices.len()
                    && objects
                        .slices
                        .iter()
                        .zip(&reads.slices)
                        .all(|(a, b)| Arc::ptr_eq(a, b));
                if !same {
                    reads.endpoints = Arc::new(read::endpoint_nodes(&objects.slices));
                    reads.slices = objects.slices.clone();
                }
                reads.endpoints.clone()
            },
            current: read::current_active(&announcements),
            standbys: read::current_standby(&announcements),
            standing_by: read::standing_by(&announcements),
            failover_settled: read::failover_settled(&announcements),
            probes: read::probe_addresses(&announcements),
            takeovers,
            announcements,
            prefix_sets: objects
                .prefix_sets
                .into_iter()
                .map(|s| (s.name_any(), s))
                .collect(),
            pool_objects,
        }
    }
}

fn sorted<K: ResourceExt>(mut objects: Vec<Arc<K>>) -> Vec<Arc<K>> {
    objects.sort_by_key(|o| o.name_any());
    objects
}

/// What the operator is told to do, as far as reading goes.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The `loadBalancerClass` handled besides Services without one.
    pub lb_class: String,
    /// Use nodes labelled `node.kubernetes.io/exclude-from-external-load-balancers`.
    pub ignore_exclude_lb: bool,
}

/// The cluster as one pass sees it: plain values, read once.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Pools as the allocator takes them, by name.
    pub pools: Vec<Pool>,
    /// The pool objects (for their status), by name.
    pub pool_objects: Vec<Arc<IPAddressPool>>,
    /// Our LoadBalancer Services not being deleted, oldest first.
    pub ours: Vec<Arc<Ours>>,
    /// Every other Service (ours before a type or class change, maybe).
    pub others: Vec<Arc<Service>>,
    /// Nodes as the planner sees them.
    pub nodes: Vec<announce::Node>,
    /// L2Advertisements, pools resolved.
    pub l2: Vec<announce::L2Advertisement>,
    /// BGPAdvertisements, pools resolved.
    pub bgp: Vec<bgp::Advertisement>,
    /// BGPPeers as session templates, by name.
    pub peers: Vec<bgp::Peer>,
    /// The BGPPeer objects (for their status), by name.
    pub peer_objects: Vec<Arc<BGPPeer>>,
    /// Per Service, the nodes holding a ready endpoint (the same `Arc` while
    /// no EndpointSlice changed).
    pub endpoints: Arc<BTreeMap<ServiceKey, BTreeSet<String>>>,
    /// NodeAnnouncements by node: what was asked and what the speakers report.
    pub announcements: BTreeMap<String, Arc<NodeAnnouncement>>,
    /// Failovers the speakers report.
    pub takeovers: Takeovers,
    /// Per IP, the node whose spec makes it active now.
    pub current: BTreeMap<IpAddr, String>,
    /// Per IP, the node whose spec makes it stand by now.
    pub standbys: BTreeMap<IpAddr, String>,
    /// Per IP, the node standing by now and the active node it stands by
    /// for (arming standbys aside).
    pub standing_by: BTreeMap<IpAddr, (String, String)>,
    /// (standby, active) pairs whose standby heard the active node, or
    /// reports it cannot.
    pub failover_settled: BTreeSet<(String, String)>,
    /// Per node, where its speaker answers failover probes.
    pub probes: BTreeMap<String, std::net::SocketAddr>,
    /// PrefixSets by name.
    pub prefix_sets: BTreeMap<String, Arc<PrefixSet>>,
}

/// One of our Services, read.
#[derive(Clone, Debug)]
pub struct Ours {
    /// The object (its status is compared with what the plan wants).
    pub object: Arc<Service>,
    /// Namespace and name.
    pub key: ServiceKey,
    /// What it asks of the allocator, or why the ask cannot be read.
    pub request: Result<ServiceRequest, Failure>,
    /// `externalTrafficPolicy: Local`.
    pub local: bool,
    /// The IPs its status shows now.
    pub shown: Vec<IpAddr>,
    /// Field managers other than ours that wrote its ingress.
    pub other_writers: Vec<String>,
    /// Its resourceVersion.
    pub version: Option<u64>,
}

impl Ours {
    /// Reads a Service with the labels of every namespace.
    pub fn read(object: Arc<Service>, namespace_labels: &HashMap<String, Labels>) -> Ours {
        let key = convert::service_key(&object);
        let labels = namespace_labels
            .get(&key.namespace)
            .cloned()
            .unwrap_or_default();
        Ours {
            request: convert::request(&object, &labels),
            local: object
                .spec
                .as_ref()
                .and_then(|s| s.external_traffic_policy.as_deref())
                == Some("Local"),
            shown: object
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .map(|list| {
                    list.iter()
                        .filter_map(|i| i.ip.as_deref()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default(),
            other_writers: convert::other_ingress_writers(&object, manager::OPERATOR),
            version: version(object.as_ref()),
            key,
            object,
        }
    }
}

/// An object's resourceVersion as a number (they grow with etcd's revision).
pub fn version(object: &impl Resource) -> Option<u64> {
    object.meta().resource_version.as_deref()?.parse().ok()
}
