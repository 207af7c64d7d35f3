//! `BFDProfile`: BFD timers (and authentication) a BGPPeer's sessions run
//! with, in MetalLB's field names. BFD takes a BGP session down within the
//! detection time (`detectMultiplier` × the slower interval) of a node or
//! link failure, instead of the hold time.

use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::bgppeer::SecretKeyRef;
use crate::cel::{push_rules, rule_at};
use crate::validation::{Errors, FieldError, NOT_A_NAME, Validate, is_object_name};

/// The message for `echoMode: true` or an `echoInterval`.
pub const NO_ECHO: &str = "echo mode is not supported: ferrolb runs BFD in asynchronous mode only (leave echoMode false and echoInterval unset)";

/// Interval bounds in milliseconds (as MetalLB and FRR take them).
pub const INTERVAL_MS: (u32, u32) = (10, 60_000);
/// Detect multiplier bounds.
pub const MULTIPLIER: (u8, u8) = (2, 255);

fn default_interval() -> u32 {
    300
}

fn default_multiplier() -> u8 {
    3
}

fn default_minimum_ttl() -> u8 {
    254
}

/// BFD settings for the BGP sessions of the BGPPeers naming this profile.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1alpha1",
    kind = "BFDProfile",
    plural = "bfdprofiles",
    category = "ferrolb",
    doc = "BFD timers and authentication for the BGP sessions of the BGPPeers that name it.",
    printcolumn(
        name = "TX ms",
        type_ = "integer",
        json_path = ".spec.transmitInterval"
    ),
    printcolumn(name = "RX ms", type_ = "integer", json_path = ".spec.receiveInterval"),
    printcolumn(
        name = "Multiplier",
        type_ = "integer",
        json_path = ".spec.detectMultiplier"
    ),
    printcolumn(name = "Passive", type_ = "boolean", json_path = ".spec.passiveMode"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = profile_rules)]
pub struct BFDProfileSpec {
    /// The slowest interval, in milliseconds, at which this node wants to
    /// receive control packets (Required Min RX), 10-60000.
    #[serde(default = "default_interval")]
    #[schemars(schema_with = "interval")]
    pub receive_interval: u32,

    /// The interval, in milliseconds, at which this node wants to send control
    /// packets (Desired Min TX), 10-60000. The slower of this and the peer's
    /// receive interval is used.
    #[serde(default = "default_interval")]
    #[schemars(schema_with = "interval")]
    pub transmit_interval: u32,

    /// How many packets in a row may be missed before the session is declared
    /// down, 2-255: the detection time is this times the peer's transmit
    /// interval (or our receive interval, whichever is slower).
    #[serde(default = "default_multiplier")]
    #[schemars(schema_with = "multiplier")]
    pub detect_multiplier: u8,

    /// Send nothing until the router sends first.
    #[serde(default)]
    pub passive_mode: bool,

    /// For multihop sessions (`ebgpMultiHop` peers): the lowest TTL an
    /// incoming packet may arrive with, 1-254. Single-hop packets must arrive
    /// with 255 (RFC 5881).
    #[serde(default = "default_minimum_ttl")]
    #[schemars(schema_with = "ttl")]
    pub minimum_ttl: u8,

    /// Not supported (MetalLB's field, kept so its profiles convert and are
    /// refused with a reason): must be false.
    #[serde(default)]
    pub echo_mode: bool,

    /// Not supported: must be unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_interval: Option<u32>,

    /// Authenticate control packets (RFC 5880 section 6.7) with a key from a
    /// Secret the speakers read: `ferrolb-system/ferrolb-bgp-passwords`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<BfdAuthentication>,
}

/// Keyed authentication of BFD control packets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BfdAuthentication {
    /// The algorithm.
    #[serde(rename = "type")]
    pub kind: BfdAuthType,
    /// The key ID both sides use, 0-255.
    #[serde(rename = "keyID", default)]
    pub key_id: u8,
    /// The key (1-20 bytes), in a Secret key.
    pub secret_key_ref: SecretKeyRef,
}

/// BFD authentication algorithms.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BfdAuthType {
    /// Keyed SHA1: the sequence number may repeat.
    KeyedSHA1,
    /// Meticulous keyed SHA1: every packet's sequence number grows (BIRD's
    /// `meticulous keyed sha1`).
    MeticulousKeyedSHA1,
    /// Keyed MD5.
    KeyedMD5,
    /// Meticulous keyed MD5.
    MeticulousKeyedMD5,
}

fn interval(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "type": "integer", "format": "int32",
        "minimum": INTERVAL_MS.0, "maximum": INTERVAL_MS.1, "default": 300,
    })
}

fn multiplier(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "type": "integer", "format": "int32",
        "minimum": MULTIPLIER.0, "maximum": MULTIPLIER.1, "default": 3,
    })
}

fn ttl(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "type": "integer", "format": "int32", "minimum": 1, "maximum": 254, "default": 254,
    })
}

fn profile_rules(schema: &mut Schema) {
    push_rules(
        schema,
        [
            rule_at(
                "!has(self.echoMode) || !self.echoMode",
                NO_ECHO,
                ".echoMode",
            ),
            rule_at("!has(self.echoInterval)", NO_ECHO, ".echoInterval"),
        ],
    );
}

impl Validate for BFDProfileSpec {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Errors::new();
        for (path, value) in [
            ("spec.receiveInterval", self.receive_interval),
            ("spec.transmitInterval", self.transmit_interval),
        ] {
            if !(INTERVAL_MS.0..=INTERVAL_MS.1).contains(&value) {
                errors.add(path, "an interval is 10-60000 milliseconds");
            }
        }
        if self.detect_multiplier < MULTIPLIER.0 {
            errors.add("spec.detectMultiplier", "the detect multiplier is 2-255");
        }
        if self.minimum_ttl == 0 || self.minimum_ttl == 255 {
            errors.add("spec.minimumTtl", "the minimum TTL is 1-254");
        }
        if self.echo_mode {
            errors.add("spec.echoMode", NO_ECHO);
        }
        if self.echo_interval.is_some() {
            errors.add("spec.echoInterval", NO_ECHO);
        }
        if let Some(auth) = &self.authentication {
            let secret = &auth.secret_key_ref;
            for (path, name) in [
                (
                    "spec.authentication.secretKeyRef.namespace",
                    &secret.namespace,
                ),
                ("spec.authentication.secretKeyRef.name", &secret.name),
            ] {
                if !is_object_name(name) {
                    errors.add(path, format!("'{name}' {NOT_A_NAME}"));
                }
            }
        }
        errors.into_vec()
    }
}

impl BFDProfileSpec {
    /// The detection time this node applies to a peer sending at our
    /// receive interval, in milliseconds (for messages).
    pub fn detect_ms(&self) -> u64 {
        u64::from(self.detect_multiplier)
            * u64::from(self.receive_interval.max(self.transmit_interval))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> BFDProfileSpec {
        serde_yaml::from_str(yaml).expect("spec")
    }

    #[test]
    fn defaults_are_metallbs_and_echo_is_refused_naming_the_field() {
        let s = spec("{}");
        assert_eq!(
            (
                s.receive_interval,
                s.transmit_interval,
                s.detect_multiplier,
                s.minimum_ttl
            ),
            (300, 300, 3, 254)
        );
        assert!(s.validate().is_empty());
        let errors =
            spec("{echoMode: true, echoInterval: 50, detectMultiplier: 1, transmitInterval: 5}")
                .validate();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.transmitInterval",
                "spec.detectMultiplier",
                "spec.echoMode",
                "spec.echoInterval"
            ]
        );
        assert!(errors[2].message.contains("echo mode is not supported"));
    }

    #[test]
    fn authentication_reads_its_type_key_id_and_secret() {
        let s = spec(
            "{authentication: {type: MeticulousKeyedSHA1, keyID: 7, secretKeyRef: {name: ferrolb-bgp-passwords, key: bfd}}}",
        );
        let auth = s.authentication.expect("auth");
        assert_eq!(
            (auth.kind, auth.key_id),
            (BfdAuthType::MeticulousKeyedSHA1, 7)
        );
        assert_eq!(auth.secret_key_ref.namespace, "ferrolb-system");
        assert!(
            serde_yaml::from_str::<BFDProfileSpec>(
                "{authentication: {type: SimplePassword, secretKeyRef: {name: x}}}"
            )
            .is_err()
        );
    }
}
