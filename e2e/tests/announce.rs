//! Announcement planning end to end [L2]: the real operator against a real
//! kube-apiserver writes one NodeAnnouncement per node and the
//! `ferrolb.io/Announced` condition. Nodes, their Ready condition, speaker Leases
//! and EndpointSlices are created by hand (no kubelet or controller-manager
//! runs). The speaker's report is stood in for by patching NodeAnnouncement
//! status, which is all this test checks the operator reads.

use std::time::Duration;

use ferrolb_api::NodeAnnouncement;
use ferrolb_e2e::cluster::{TestCluster, service_yaml};
use ferrolb_e2e::wait::until_async;
use k8s_openapi::jiff::Timestamp;
use kube::Api;

const WAIT: Duration = Duration::from_secs(30);

/// A speaker Lease renewed `ago` seconds ago, lasting `duration` seconds.
fn lease(cluster: &TestCluster, node: &str, ago: i64, duration: i64) {
    let renewed = Timestamp::from_second(Timestamp::now().as_second() - ago).expect("time");
    cluster
        .apply_ok(&format!(
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: speaker-{node}, namespace: ferrolb-system}}\nspec:\n  holderIdentity: {node}\n  leaseDurationSeconds: {duration}\n  renewTime: '{}'\n",
            renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        ))
        .expect("lease");
}

/// Which node is active for `ip`, and which stands by, per the NodeAnnouncements.
async fn holders(cluster: &TestCluster, ip: &str) -> (Vec<String>, Vec<(String, String)>) {
    let api: Api<NodeAnnouncement> = Api::all(cluster.client.clone());
    let mut active = Vec::new();
    let mut standby = Vec::new();
    for na in api.list(&Default::default()).await.expect("list").items {
        let node = na.metadata.name.clone().unwrap_or_default();
        let ip: std::net::IpAddr = ip.parse().expect("ip");
        for entry in na.spec.l2.iter().filter(|e| e.ips.contains(&ip)) {
            match &entry.standby_for {
                None => active.push(node.clone()),
                Some(of) => standby.push((node.clone(), of.clone())),
            }
        }
    }
    (active, standby)
}

/// The Events `kubectl get events` lists for a field selector.
fn events(cluster: &TestCluster, selector: &str) -> String {
    cluster
        .kubectl(&["get", "events", "--field-selector", selector])
        .unwrap_or_default()
}

async fn active_for(cluster: &TestCluster, ip: &str) -> String {
    let (active, _) = holders(cluster, ip).await;
    active.first().cloned().unwrap_or_default()
}

#[tokio::test]
async fn one_node_announces_each_ip_and_the_ip_moves_when_the_node_cannot() {
    let cluster = TestCluster::start().await.expect("cluster");
    cluster
        .apply_ok("apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: l2}\nspec: {addresses: [10.100.0.0/29]}\n---\napiVersion: ferrolb.io/v1alpha1\nkind: L2Advertisement\nmetadata: {name: l2}\nspec: {ipAddressPools: [l2]}\n")
        .expect("pool and advertisement");
    for node in ["node-a", "node-b", "node-c"] {
        cluster.node(node).expect("node");
        lease(&cluster, node, 0, 3600);
    }
    let _operator = cluster.operator("solo", &[]).expect("operator");
    cluster
        .apply_ok(&service_yaml("default", "web", "", ""))
        .expect("service");
    let ip = "10.100.0.0";

    // One active node and one standby standing by for it.
    until_async("an active and a standby node", WAIT, || async {
        let (active, standby) = holders(&cluster, ip).await;
        match (active.as_slice(), standby.as_slice()) {
            ([a], [(s, of)]) if s != a && of == a => Ok(()),
            _ => Err(format!("active {active:?}, standby {standby:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let first = active_for(&cluster, ip).await;
    // The Service's status is written in the same pass as the
    // NodeAnnouncements, not necessarily before this look.
    until_async("the Service to wait for its speaker", WAIT, || async {
        match cluster.announced("web") {
            (status, reason, _) if status == "False" && reason == "NotYetApplied" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // The node's speaker reports the IP (stood in for by a status patch).
    let report = format!(
        r#"{{"status":{{"observedGeneration":1,"l2":[{{"ips":["{ip}"],"state":"Announcing"}}]}}}}"#
    );
    cluster
        .kubectl(&[
            "patch",
            "nodeannouncement",
            &first,
            "--subresource=status",
            "--type=merge",
            "-p",
            &report,
        ])
        .expect("report");
    cluster
        .wait_announced("web", Duration::from_secs(30))
        .expect("kubectl wait for Announced");
    let (_, _, message) = cluster.announced("web");
    assert!(
        message.contains(&format!("answered by node {first}")),
        "{message}"
    );

    // Not Ready → the IP moves.
    cluster.set_ready(&first, false).expect("node status");
    until_async("the IP leaves a NotReady node", WAIT, || async {
        let now = active_for(&cluster, ip).await;
        if !now.is_empty() && now != first {
            Ok(())
        } else {
            Err(now)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let second = active_for(&cluster, ip).await;
    until_async("the new node has not reported yet", WAIT, || async {
        match cluster.announced("web") {
            (status, reason, _) if status == "False" && reason == "NotYetApplied" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // The move is told as an Event, with both nodes and why; the moment the
    // new node had not applied it yet raised no Warning.
    let expected = format!("{ip} moved from {first} to {second}: {first}: not Ready");
    until_async("an IPMoved Event", WAIT, || async {
        let events = events(&cluster, "involvedObject.name=web");
        (events.contains("IPMoved") && events.contains(&expected))
            .then_some(())
            .ok_or(events)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let events = events(&cluster, "involvedObject.name=web,type=Warning");
    assert!(!events.contains("NotYetApplied"), "{events}");

    // The exclude label → it moves again, to the last node.
    cluster
        .kubectl(&[
            "label",
            "node",
            &second,
            "node.kubernetes.io/exclude-from-external-load-balancers=",
        ])
        .expect("label");
    until_async("the IP leaves an excluded node", WAIT, || async {
        let now = active_for(&cluster, ip).await;
        if !now.is_empty() && now != first && now != second {
            Ok(())
        } else {
            Err(now)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let third = active_for(&cluster, ip).await;

    // Its speaker's Lease expires → no node is left, and the condition says why.
    lease(&cluster, &third, 600, 10);
    until_async("no eligible node", WAIT, || async {
        let (status, reason, message) = cluster.announced("web");
        if reason == "NoEligibleNode"
            && status == "False"
            && message.contains("not Ready")
            && message.contains("exclude-from-external-load-balancers")
            && message.contains("its speaker is not running")
        {
            Ok(())
        } else {
            Err(format!("{status} {reason} {message}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // A node that goes away takes its NodeAnnouncement with it.
    cluster
        .kubectl(&["delete", "node", &first])
        .expect("delete node");
    until_async(
        "the NodeAnnouncement of a deleted node goes",
        WAIT,
        || async {
            let out = cluster
                .kubectl(&["get", "nodeannouncements", "-o", "name"])
                .unwrap_or_default();
            if out.contains(&first) {
                Err(out)
            } else {
                Ok(())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn local_traffic_policy_follows_the_endpoints_and_missing_advertisements_are_named() {
    let cluster = TestCluster::start().await.expect("cluster");
    cluster
        .apply_ok("apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: l2}\nspec: {addresses: [10.101.0.0/29]}\n---\napiVersion: ferrolb.io/v1alpha1\nkind: L2Advertisement\nmetadata: {name: l2}\nspec: {ipAddressPools: [l2], interfaces: [eth1]}\n---\napiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: dark}\nspec: {addresses: [10.102.0.0/29], autoAssign: false}\n")
        .expect("pools");
    for node in ["node-a", "node-b", "node-c"] {
        cluster.node(node).expect("node");
        lease(&cluster, node, 0, 3600);
    }
    let _operator = cluster.operator("solo", &[]).expect("operator");
    cluster
        .apply_ok(&service_yaml(
            "default",
            "local",
            "",
            "  externalTrafficPolicy: Local\n",
        ))
        .expect("service");
    until_async("no local endpoints", WAIT, || async {
        let (_, reason, _) = cluster.announced("local");
        if reason == "NoLocalEndpoints" {
            Ok(())
        } else {
            Err(reason)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // An endpoint appears on node-c: it announces, on the advertised interface.
    cluster
        .apply_ok("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: local-1\n  namespace: default\n  labels: {kubernetes.io/service-name: local}\naddressType: IPv4\nendpoints:\n- addresses: [10.244.2.7]\n  nodeName: node-c\n  conditions: {ready: true}\nports: [{port: 8080}]\n")
        .expect("endpoint slice");
    until_async("node-c announces", WAIT, || async {
        let active = active_for(&cluster, "10.101.0.0").await;
        if active == "node-c" {
            Ok(())
        } else {
            Err(active)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let api: Api<NodeAnnouncement> = Api::all(cluster.client.clone());
    let c = api.get("node-c").await.expect("node-c");
    assert_eq!(c.spec.l2[0].interfaces, ["eth1"]);
    assert_eq!(c.spec.l2[0].ips.to_string(), "10.101.0.0");
    // The interface changed at run time (MetalLB's e2e checks the same):
    // node-c is told to answer on the new one, and stays the one answering.
    cluster
        .kubectl(&[
            "patch",
            "l2advertisement",
            "l2",
            "--type=merge",
            "-p",
            r#"{"spec":{"interfaces":["eth2"]}}"#,
        ])
        .expect("patch");
    until_async("node-c answers on eth2", WAIT, || async {
        let c = api.get("node-c").await.map_err(|e| e.to_string())?;
        match c.spec.l2.first() {
            Some(entry) if entry.interfaces == ["eth2"] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(active_for(&cluster, "10.101.0.0").await, "node-c");

    // A pool no L2Advertisement covers.
    cluster
        .apply_ok(&service_yaml(
            "default",
            "dark",
            "  annotations: {ferrolb.io/address-pool: dark}\n",
            "",
        ))
        .expect("dark");
    until_async("no advertisement", WAIT, || async {
        let (status, reason, message) = cluster.announced("dark");
        if status == "False" && reason == "NoAdvertisement" && message.contains("pool dark") {
            Ok(())
        } else {
            Err(format!("{reason} {message}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let events = events(&cluster, "involvedObject.name=dark");
    assert!(
        events.contains("NotAnnounced") && events.contains("NoAdvertisement"),
        "{events}"
    );
}

#[tokio::test]
async fn node_selectors_pick_the_nodes_and_a_node_added_later_joins() {
    let cluster = TestCluster::start().await.expect("cluster");
    cluster
        .apply_ok("apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: l2}\nspec: {addresses: [10.103.0.0/29]}\n---\napiVersion: ferrolb.io/v1alpha1\nkind: L2Advertisement\nmetadata: {name: l2}\nspec:\n  ipAddressPools: [l2]\n  nodeSelectors:\n  - matchLabels: {zone: b}\n  - matchLabels: {zone: c}\n")
        .expect("pool and advertisement");
    let add = |node: &str, zone: &str| {
        cluster.node(node).expect("node");
        cluster
            .kubectl(&["label", "node", node, &format!("zone={zone}")])
            .expect("label");
        lease(&cluster, node, 0, 3600);
    };
    add("node-a", "a");
    let _operator = cluster.operator("solo", &[]).expect("operator");
    cluster
        .apply_ok(&service_yaml("default", "web", "", ""))
        .expect("service");
    let ip = "10.103.0.0";
    until_async("the Service to say no node is selected", WAIT, || async {
        let (_, reason, message) = cluster.announced("web");
        if reason == "NoEligibleNode"
            && message.contains("node-a: not selected by an L2Advertisement")
        {
            Ok(())
        } else {
            Err(format!("{reason}: {message}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // A node matching the first selector arrives: it takes the IP, alone.
    add("node-b", "b");
    until_async("node-b active, no standby", WAIT, || async {
        match holders(&cluster, ip).await {
            (active, standby) if active == ["node-b"] && standby.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // One matching the second selector arrives later: it stands by; the IP stays.
    add("node-c", "c");
    until_async("node-c standing by for node-b", WAIT, || async {
        match holders(&cluster, ip).await {
            (active, standby)
                if active == ["node-b"]
                    && standby == [("node-c".to_string(), "node-b".to_string())] =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // node-b leaves the selection: the IP moves to node-c.
    cluster
        .kubectl(&["label", "node", "node-b", "zone-"])
        .expect("unlabel");
    until_async("node-c active", WAIT, || async {
        match holders(&cluster, ip).await {
            (active, _) if active == ["node-c"] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn service_selectors_on_advertisements_pick_the_services_and_name_the_skipping_ones() {
    let cluster = TestCluster::start().await.expect("cluster");
    // One pool, announced in layer 2 for frontends only and over BGP for
    // nothing it holds: a backend Service gets an IP and is told why no
    // node announces it.
    cluster
        .apply_ok("apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: shared}\nspec: {addresses: [10.104.0.0/29]}\n---\napiVersion: ferrolb.io/v1alpha1\nkind: L2Advertisement\nmetadata: {name: frontends}\nspec:\n  ipAddressPools: [shared]\n  serviceSelectors:\n  - matchLabels: {tier: frontend}\n---\napiVersion: ferrolb.io/v1alpha1\nkind: BGPAdvertisement\nmetadata: {name: data-tier}\nspec:\n  ipAddressPools: [shared]\n  serviceSelectors:\n  - matchExpressions:\n    - {key: tier, operator: In, values: [data]}\n")
        .expect("pool and advertisements");
    for node in ["node-a", "node-b"] {
        cluster.node(node).expect("node");
        lease(&cluster, node, 0, 3600);
    }
    let _operator = cluster.operator("solo", &[]).expect("operator");
    for (name, tier) in [("web", "frontend"), ("api", "backend")] {
        cluster
            .apply_ok(&service_yaml(
                "default",
                name,
                &format!("  labels: {{tier: {tier}}}\n"),
                "",
            ))
            .expect("service");
    }
    until_async(
        "web is to be announced, api is not selected",
        WAIT,
        || async {
            let web = cluster.announced("web");
            let api = cluster.announced("api");
            let web_ok = web.2.contains("L2:") && web.1 != "NotSelected";
            let api_ok = api.0 == "False"
                && api.1 == "NotSelected"
                && api.2.contains("L2Advertisement 'frontends'")
                && api.2.contains("BGPAdvertisement 'data-tier'")
                && api.2.contains("pool shared");
            if web_ok && api_ok {
                Ok(())
            } else {
                Err(format!("web: {web:?}; api: {api:?}"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let web = cluster.service_ip("web").expect("web's IP");
    let api = cluster.service_ip("api").expect("api's IP");
    let (active, _) = holders(&cluster, &web).await;
    assert_eq!(active.len(), 1, "one node answers for web: {active:?}");
    let (active, standby) = holders(&cluster, &api).await;
    assert!(
        active.is_empty() && standby.is_empty(),
        "nobody answers for api"
    );
    // Labelled as the advertisement wants, api is announced too.
    cluster
        .kubectl(&["label", "svc", "api", "tier=frontend", "--overwrite"])
        .expect("label");
    until_async("api announced once selected", WAIT, || async {
        let (active, _) = holders(&cluster, &api).await;
        if active.len() == 1 {
            Ok(())
        } else {
            Err(format!("{active:?} {:?}", cluster.announced("api")))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}
