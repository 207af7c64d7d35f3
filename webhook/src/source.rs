//! The cluster as the admission rules see it: watches of the config kinds and
//! of Services (for the IPs they hold), and Secret lookups on demand.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use ferrolb_api::{BFDProfile, BGPAdvertisement, BGPPeer, IPAddressPool};
use ferrolb_runtime::{watch_store, watch_store_lenient};
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::ListParams;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};

use crate::admission::{Needs, Source};
use crate::rules::{ServiceIps, Snapshot};

/// Watched stores of everything the rules read.
pub struct Watched {
    client: Client,
    pools: Store<IPAddressPool>,
    peers: Store<BGPPeer>,
    bgp: Store<BGPAdvertisement>,
    services: Store<Service>,
    bfd_profiles: Store<BFDProfile>,
}

impl Watched {
    /// Starts the watches.
    pub fn start(client: Client) -> Watched {
        Watched {
            // ferrolb's kinds leniently: one object that does not read must not
            // keep the webhook from serving (its Fail policy would then refuse
            // every pool, peer and advertisement write).
            pools: watch_store_lenient(client.clone(), None, |_| {}, None),
            peers: watch_store_lenient(client.clone(), None, |_| {}, None),
            bgp: watch_store_lenient(client.clone(), None, |_| {}, None),
            services: watch_store(Api::all(client.clone()), |_| {}),
            bfd_profiles: watch_store_lenient(client.clone(), None, |_| {}, None),
            client,
        }
    }

    /// Waits until every watch has listed once.
    pub async fn ready(&self) -> anyhow::Result<()> {
        self.pools.wait_until_ready().await?;
        self.peers.wait_until_ready().await?;
        self.bgp.wait_until_ready().await?;
        self.services.wait_until_ready().await?;
        self.bfd_profiles.wait_until_ready().await?;
        Ok(())
    }
}

fn owned<K>(store: &Store<K>) -> Vec<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store.state().iter().map(|k| (**k).clone()).collect()
}

impl Watched {
    /// Services holding IPs, from the watch (they only feed warnings).
    fn services(&self) -> Vec<ServiceIps> {
        self.services
            .state()
            .iter()
            .filter_map(|s| {
                let ips: Vec<IpAddr> = s
                    .status
                    .as_ref()?
                    .load_balancer
                    .as_ref()?
                    .ingress
                    .as_ref()?
                    .iter()
                    .filter_map(|i| i.ip.as_ref()?.parse().ok())
                    .collect();
                (!ips.is_empty()).then(|| ServiceIps {
                    name: format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()),
                    ips,
                })
            })
            .collect()
    }

    /// The config objects read from the apiserver now: a watch may lag a
    /// create made a moment ago, and two overlapping pools applied back to back
    /// must not both pass. Only the kinds the decision reads are listed.
    async fn fresh(&self, needs: Needs) -> kube::Result<Snapshot> {
        async fn list<K>(client: &Client, wanted: bool) -> kube::Result<Vec<K>>
        where
            K: kube::Resource<DynamicType = ()>
                + Clone
                + serde::de::DeserializeOwned
                + std::fmt::Debug,
        {
            if !wanted {
                return Ok(Vec::new());
            }
            Ok(Api::<K>::all(client.clone())
                .list(&ListParams::default())
                .await?
                .items)
        }
        let (pools, peers, bgp_advertisements, bfd_profiles) = futures::try_join!(
            list::<IPAddressPool>(&self.client, needs.pools),
            list::<BGPPeer>(&self.client, needs.peers),
            list::<BGPAdvertisement>(&self.client, needs.bgp_advertisements),
            list::<BFDProfile>(&self.client, needs.bfd_profiles),
        )?;
        Ok(Snapshot {
            pools,
            peers,
            bgp_advertisements,
            services: if needs.services {
                self.services()
            } else {
                Vec::new()
            },
            bfd_profiles: bfd_profiles.iter().map(|p| p.name_any()).collect(),
        })
    }
}

impl Source for Watched {
    fn snapshot(&self, needs: Needs) -> Pin<Box<dyn Future<Output = Snapshot> + Send + '_>> {
        Box::pin(async move {
            match self.fresh(needs).await {
                Ok(snapshot) => snapshot,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the config objects; deciding on the watch cache");
                    Snapshot {
                        pools: owned(&self.pools),
                        peers: owned(&self.peers),
                        bgp_advertisements: owned(&self.bgp),
                        services: self.services(),
                        bfd_profiles: owned(&self.bfd_profiles)
                            .iter()
                            .map(|p| p.name_any())
                            .collect(),
                    }
                }
            }
        })
    }

    fn secret_exists<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        key: &'a str,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
            match api.get_opt(name).await {
                Ok(Some(secret)) => secret.data.is_some_and(|d| d.contains_key(key)),
                Ok(None) => false,
                // Unknown: do not warn about what we could not check.
                Err(_) => true,
            }
        })
    }
}
