//! MetalLB's custom resources (`metallb.io`: IPAddressPool, L2Advertisement,
//! BGPAdvertisement, BGPPeer v1beta1/v1beta2, Community, BFDProfile) →
//! `ferrolb.io`. ferrolb kept MetalLB's field names, so most fields copy as
//! they are; the rest is mapped or named in a warning.

use std::collections::BTreeMap;

use ferrolb_api::constants::{BGP_PASSWORDS_SECRET, NAMESPACE};
use serde_json::{Map, Value, json};

/// Fields that copy unchanged, per kind.
fn same_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "IPAddressPool" => &[
            "addresses",
            "autoAssign",
            "avoidBuggyIPs",
            "serviceAllocation",
        ],
        "L2Advertisement" => &[
            "ipAddressPools",
            "ipAddressPoolSelectors",
            "nodeSelectors",
            "serviceSelectors",
            "interfaces",
        ],
        "BGPAdvertisement" => &[
            "aggregationLength",
            "aggregationLengthV6",
            "localPref",
            "ipAddressPools",
            "ipAddressPoolSelectors",
            "nodeSelectors",
            "serviceSelectors",
            "peers",
        ],
        "BGPPeer" => &[
            "myASN",
            "peerASN",
            "peerAddress",
            "sourceAddress",
            "peerPort",
            "holdTime",
            "keepaliveTime",
            "connectTime",
            "routerID",
            "nodeSelectors",
            "ebgpMultiHop",
            "enableGracefulRestart",
            "dynamicASN",
            "dualStackAddressFamily",
            "bfdProfile",
        ],
        "BFDProfile" => &[
            "receiveInterval",
            "transmitInterval",
            "detectMultiplier",
            "passiveMode",
            "minimumTtl",
        ],
        _ => &[],
    }
}

/// The Community aliases (`name` → value) of the Community objects in a stream.
pub fn aliases(docs: &[Value]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for doc in docs.iter().filter(|d| d["kind"] == "Community") {
        for entry in doc["spec"]["communities"].as_array().into_iter().flatten() {
            if let (Some(name), Some(value)) = (entry["name"].as_str(), entry["value"].as_str()) {
                out.insert(name.to_string(), value.to_string());
            }
        }
    }
    out
}

/// One converted object: notes, the object, and a BGP password to keep.
pub struct One {
    pub notes: Vec<String>,
    pub warnings: Vec<String>,
    pub object: Option<Value>,
    pub password: Option<(String, String)>,
}

/// Converts one `metallb.io` object.
pub fn convert(
    doc: &Value,
    aliases: &BTreeMap<String, String>,
    source: &str,
) -> Result<One, String> {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let name = doc["metadata"]["name"]
        .as_str()
        .ok_or_else(|| format!("a metallb.io {kind} without metadata.name"))?;
    let at = format!("{kind} {name}");
    let mut one = One {
        notes: vec![format!(
            "from {} {kind} {name}",
            doc["apiVersion"].as_str().unwrap_or_default()
        )],
        warnings: Vec::new(),
        object: None,
        password: None,
    };
    let warn = |one: &mut One, text: String| {
        one.warnings.push(text.clone());
        one.notes.push(text);
    };
    match kind {
        "Community" => {
            one.notes.clear();
            return Ok(one);
        }
        "IPAddressPool" | "L2Advertisement" | "BGPAdvertisement" | "BGPPeer" | "BFDProfile" => {}
        other => {
            return Err(format!(
                "{at}: metallb.io/{other} is not a kind kubectl ferrolb converts"
            ));
        }
    }
    let empty = Map::new();
    let spec = doc["spec"].as_object().unwrap_or(&empty);
    let mut out = Map::new();
    for (field, value) in spec {
        if (kind, field.as_str()) == ("IPAddressPool", "addresses") {
            let mut list = Vec::new();
            for (j, entry) in value.as_array().into_iter().flatten().enumerate() {
                let entry = entry.as_str().unwrap_or_default();
                let at = format!("{at}: spec.addresses[{j}]");
                list.push(json!(crate::convert::pool_address(entry, &at, source)?));
            }
            out.insert(field.clone(), Value::Array(list));
            continue;
        }
        if same_fields(kind).contains(&field.as_str()) {
            out.insert(field.clone(), value.clone());
            continue;
        }
        match (kind, field.as_str()) {
            ("BGPAdvertisement", "communities") => {
                let mut list = Vec::new();
                for (k, community) in value.as_array().into_iter().flatten().enumerate() {
                    let text = community.as_str().unwrap_or_default();
                    let resolved = aliases.get(text).map(String::as_str).unwrap_or(text);
                    if ferrolb_api::community::Community::parse(resolved).is_err() {
                        return Err(format!(
                            "{at}: spec.communities[{k}]: `{text}` is neither a community nor a name in a Community object given with it"
                        ));
                    }
                    list.push(json!(resolved));
                }
                out.insert("communities".into(), Value::Array(list));
            }
            ("BGPPeer", "password") => {
                let key = name.to_string();
                one.password = Some((key.clone(), value.as_str().unwrap_or_default().to_string()));
                out.insert(
                    "passwordSecretRef".into(),
                    json!({"name": BGP_PASSWORDS_SECRET, "key": key}),
                );
                one.notes.push(format!(
                    "its password is in Secret {NAMESPACE}/{BGP_PASSWORDS_SECRET}, key {name}"
                ));
            }
            ("BGPPeer", "passwordSecret") => {
                let secret = value["name"].as_str().unwrap_or_default();
                out.insert(
                    "passwordSecretRef".into(),
                    json!({"name": BGP_PASSWORDS_SECRET, "key": name}),
                );
                warn(
                    &mut one,
                    format!(
                        "{at}: spec.passwordSecret `{secret}`: speakers read only Secret {NAMESPACE}/{BGP_PASSWORDS_SECRET}; copy the password there under key {name}"
                    ),
                );
            }
            // Applied after the loop: it wins over myASN.
            ("BGPPeer", "localASN") => {}
            ("BFDProfile", "echoMode" | "echoInterval") => {
                if value != &json!(false) {
                    warn(
                        &mut one,
                        format!("{at}: spec.{field}: {}; left out", crate::convert::NO_ECHO),
                    );
                }
            }
            _ => warn(
                &mut one,
                format!("{at}: spec.{field} has no ferrolb equivalent; left out"),
            ),
        }
    }
    if kind == "BGPPeer"
        && let Some(local) = spec.get("localASN")
    {
        // MetalLB's per-peer override of the one router-wide myASN; ferrolb's
        // myASN is per peer already.
        out.insert("myASN".into(), local.clone());
        one.notes.push(format!(
            "spec.localASN {local} is this peer's myASN (myASN is per peer in ferrolb)"
        ));
    }
    one.object = Some(json!({
        "apiVersion": "ferrolb.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": out,
    }));
    Ok(one)
}
