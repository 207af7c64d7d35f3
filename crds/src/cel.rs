//! The single-object rules as CRD schema: OpenAPI limits plus CEL
//! `x-kubernetes-validations`, so the apiserver rejects a bad object with no
//! webhook running. Each rule here has a twin in Rust ([`crate::validation`] and
//! the `validate` of each kind) with the same message text.
//!
//! The functions are schemars `transform`s and `schema_with`s used by the types.
//! Rule bodies guard their own preconditions (`isIP(x) && …`), so one broken rule
//! never shows up as a CEL evaluation error of another.

use schemars::{Schema, SchemaGenerator, json_schema};
use serde_json::{Value, json};

use crate::address::{HOST_BITS, MIXED, NOT_AN_ADDRESS, NOT_AN_IP, REVERSED};
use crate::community::COMMUNITY_RULE;
use crate::validation::selector::{KEY_RULE, OPERATOR_RULE, VALUE_RULE, VALUES_RULE};

/// The longest address or CIDR string we accept: an IPv6 range is at most
/// 2 × 39 characters plus ` - `.
pub const MAX_ADDRESS_LEN: u64 = 90;
/// The most entries of one address list (the range-order rule is costly; more
/// entries would exceed the apiserver's CEL budget).
pub const MAX_ADDRESSES: u64 = 64;
/// The most entries of a list of names (pools, peers, namespaces, interfaces).
pub const MAX_NAMES: u64 = 64;
/// The most selectors in one list.
pub const MAX_SELECTORS: u64 = 16;
/// Labels in one selector, and values in one expression.
pub const MAX_LABELS: u64 = 32;

/// The regular expression for a Kubernetes object name (DNS-1123 subdomain).
pub const SUBDOMAIN_RE: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// The regular expression for a namespace name (DNS-1123 label).
pub const LABEL_NAME_RE: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A label key: optional subdomain prefix, then the name part.
pub const LABEL_KEY_RE: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";
/// A label value (may be empty).
pub const LABEL_VALUE_RE: &str = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$";
/// A Linux interface name: 1-15 bytes, no `/`, `:` or whitespace.
pub const INTERFACE_RE: &str = r"^[^/:\s]{1,15}$";
/// A BGP timer as a whole number of seconds in Go duration syntax.
pub const TIMER_RE: &str = r"^(0|([0-9]+h)?([0-9]+m)?([0-9]+s)?)$";

/// Appends CEL rules to a schema.
pub fn push_rules(schema: &mut Schema, rules: impl IntoIterator<Item = Value>) {
    let object = schema.ensure_object();
    let list = object
        .entry("x-kubernetes-validations")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(list) = list {
        list.extend(rules);
    }
}

/// A rule with a fixed message.
pub fn rule(rule: impl Into<String>, message: impl Into<String>) -> Value {
    json!({ "rule": rule.into(), "message": message.into() })
}

/// A rule whose message is computed from the value: `messageExpression`.
pub fn rule_expr(rule: impl Into<String>, message_expression: impl Into<String>) -> Value {
    json!({ "rule": rule.into(), "messageExpression": message_expression.into() })
}

/// A rule reported at a field below the schema it sits on (`fieldPath`).
pub fn rule_at(rule: impl Into<String>, message: impl Into<String>, field_path: &str) -> Value {
    json!({ "rule": rule.into(), "message": message.into(), "fieldPath": field_path })
}

/// A CEL string literal holding `text`.
pub fn lit(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `"'" + value + "' " + tail` as a CEL message expression.
fn quoted_then(value: &str, tail: &str) -> String {
    format!("\"'\" + {value} + \"' \" + {}", lit(tail))
}

/// CEL that is true when the IP string expression `a` is at or below `b` (both
/// known to be valid IPs of one family). CEL cannot compare IPs, and the cost
/// estimator charges strings made by `string(..)` as unbounded, so the order comes
/// from prefixes: `k`, the number of leading bits `a` and `b` share, is how many
/// of `a`'s blocks /1, /2, … contain `b`; then `a < b` exactly when bit `k` of `a`
/// is 0, that is when `a`'s /k+1 block starts where its /k block does.
pub fn ip_at_or_below(a: &str, b: &str) -> String {
    // Prefix suffixes as literals, `['/1', '/2', …]`.
    let suffixes = |from: u32, to: u32| -> String {
        let list: Vec<String> = (from..=to).map(|k| format!("'/{k}'")).collect();
        format!("[{}]", list.join(", "))
    };
    let shared = format!(
        "(ip({a}).family() == 4 ? {v4} : {v6}).filter(p, cidr({a} + p).containsIP({b})).size()",
        v4 = suffixes(1, 32),
        v6 = suffixes(1, 128),
    );
    let all = suffixes(0, 128);
    format!(
        "ip({a}) == ip({b}) || cidr({a} + {all}[{shared} + 1]).masked().ip() \
         == cidr({a} + {all}[{shared}]).masked().ip()"
    )
}

/// The rules for one pool entry (`self` is the string): syntax, host bits,
/// one family per range, start ≤ end.
pub fn pool_entry_rules() -> Vec<Value> {
    let a = "self.split('-')[0].trim()";
    let b = "self.split('-')[1].trim()";
    let is_range = format!("(self.split('-').size() == 2 && isIP({a}) && isIP({b}))");
    let same_family = format!("{is_range} && ip({a}).family() == ip({b}).family()");
    vec![
        rule_expr(
            format!("isCIDR(self) || isIP(self) || {is_range}"),
            quoted_then("self", NOT_AN_ADDRESS),
        ),
        host_bits_rule(),
        rule_expr(
            format!("!{is_range} || ip({a}).family() == ip({b}).family()"),
            format!("'range ' + {}", quoted_then("self", MIXED)),
        ),
        rule_expr(
            format!("!({same_family}) || {}", ip_at_or_below(a, b)),
            format!("'range ' + {}", quoted_then("self", REVERSED)),
        ),
    ]
}

/// A CIDR (`self`) must start at its network address.
fn host_bits_rule() -> Value {
    rule_expr(
        "!isCIDR(self) || cidr(self).masked().ip() == cidr(self).ip()",
        quoted_then("self", HOST_BITS),
    )
}

/// `IPAddressPool.spec.addresses`: 1..=128 unique entries, each checked.
pub fn pool_addresses(_: &mut SchemaGenerator) -> Schema {
    let mut item = json_schema!({ "type": "string", "maxLength": MAX_ADDRESS_LEN });
    push_rules(&mut item, pool_entry_rules());
    json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_ADDRESSES,
        "x-kubernetes-list-type": "set",
        "items": item,
    })
}

/// One IP address of either family (`self` is the string).
pub fn ip_rules() -> Vec<Value> {
    vec![rule_expr("isIP(self)", quoted_then("self", NOT_AN_IP))]
}

/// A string holding one IP address.
pub fn ip_string(_: &mut SchemaGenerator) -> Schema {
    let mut schema = json_schema!({ "type": "string", "maxLength": 45 });
    push_rules(&mut schema, ip_rules());
    schema
}

/// A string holding one IPv4 address (a BGP router ID).
pub fn ipv4_string(_: &mut SchemaGenerator) -> Schema {
    let mut schema = json_schema!({ "type": "string", "maxLength": 15 });
    push_rules(
        &mut schema,
        [rule_expr(
            "isIP(self) && ip(self).family() == 4",
            quoted_then("self", crate::address::NOT_AN_IPV4),
        )],
    );
    schema
}

/// A string holding one CIDR with no host bits set.
pub fn cidr_string(_: &mut SchemaGenerator) -> Schema {
    let mut schema = json_schema!({ "type": "string", "maxLength": 49 });
    push_rules(
        &mut schema,
        [
            rule_expr(
                "isCIDR(self)",
                quoted_then("self", crate::address::NOT_A_CIDR),
            ),
            host_bits_rule(),
        ],
    );
    schema
}

/// An AS number: 1..=4294967295.
pub fn asn(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "format": "int64", "minimum": 1, "maximum": 4294967295u64 })
}

/// An optional AS number.
pub fn optional_asn(generator: &mut SchemaGenerator) -> Schema {
    asn(generator)
}

/// A TCP port: 1..=65535.
pub fn port(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "format": "int32", "minimum": 1, "maximum": 65535, "default": 179 })
}

/// A BGP LOCAL_PREF value: 0..=4294967295.
pub fn local_pref(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295u64 })
}

/// A BGP timer string, whole seconds in Go duration syntax, within `min..=max`
/// seconds (or exactly zero when `zero_ok`).
fn timer(min: u64, max: u64, zero_ok: bool, what: &str) -> Schema {
    let mut schema = json_schema!({ "type": "string", "maxLength": 16 });
    let range =
        format!("(duration(self) >= duration('{min}s') && duration(self) <= duration('{max}s'))");
    let (bounds, message) = if zero_ok {
        (
            format!("duration(self) == duration('0s') || {range}"),
            format!("{what} must be 0s (no keepalives) or between {min}s and {max}s"),
        )
    } else {
        (range, format!("{what} must be between {min}s and {max}s"))
    };
    push_rules(
        &mut schema,
        [
            rule_expr(
                format!("self.matches({})", lit(TIMER_RE)),
                quoted_then("self", crate::timer::TIMER_SYNTAX),
            ),
            rule(
                format!("!self.matches({}) || {bounds}", lit(TIMER_RE)),
                message,
            ),
        ],
    );
    schema
}

/// `holdTime`: 0s, or 3s..=65535s (RFC 4271 §4.2).
pub fn hold_time(_: &mut SchemaGenerator) -> Schema {
    timer(3, 65535, true, "holdTime")
}

/// `keepaliveTime`: 0s..=21845s; its relation to holdTime is a rule on the peer.
pub fn keepalive_time(_: &mut SchemaGenerator) -> Schema {
    timer(0, 21845, false, "keepaliveTime")
}

/// `connectTime`: 1s..=65535s.
pub fn connect_time(_: &mut SchemaGenerator) -> Schema {
    timer(1, 65535, false, "connectTime")
}

/// One community string (`self`).
pub fn community_rules() -> Vec<Value> {
    let part = |i: usize| format!("int(self.split(':')[{i}])");
    let standard = format!(
        "(self.matches('^[0-9]{{1,5}}:[0-9]{{1,5}}$') && {} <= 65535 && {} <= 65535)",
        part(0),
        part(1)
    );
    let large = format!(
        "(self.matches('^large:[0-9]{{1,10}}:[0-9]{{1,10}}:[0-9]{{1,10}}$') \
         && {} <= 4294967295 && {} <= 4294967295 && {} <= 4294967295)",
        part(1),
        part(2),
        part(3)
    );
    let names: Vec<String> = crate::community::WELL_KNOWN
        .iter()
        .map(|(name, _)| lit(name))
        .collect();
    vec![rule_expr(
        format!("self in [{}] || {standard} || {large}", names.join(", ")),
        quoted_then("self", COMMUNITY_RULE),
    )]
}

/// `BGPAdvertisement.spec.communities`: a set of community strings.
pub fn communities(_: &mut SchemaGenerator) -> Schema {
    let mut item = json_schema!({ "type": "string", "maxLength": 40 });
    push_rules(&mut item, community_rules());
    json_schema!({
        "type": "array",
        "maxItems": MAX_NAMES,
        "x-kubernetes-list-type": "set",
        "items": item,
    })
}

/// A set of object names (pools, peers).
pub fn name_set(_: &mut SchemaGenerator) -> Schema {
    let mut item = json_schema!({ "type": "string", "maxLength": 253 });
    push_rules(&mut item, [name_rule()]);
    json_schema!({
        "type": "array",
        "maxItems": MAX_NAMES,
        "x-kubernetes-list-type": "set",
        "items": item,
    })
}

/// The rule for an object name.
pub fn name_rule() -> Value {
    rule_expr(
        format!("self.matches({})", lit(SUBDOMAIN_RE)),
        quoted_then("self", crate::validation::NOT_A_NAME),
    )
}

/// A single object name.
pub fn name_string(_: &mut SchemaGenerator) -> Schema {
    let mut schema = json_schema!({ "type": "string", "maxLength": 253 });
    push_rules(&mut schema, [name_rule()]);
    schema
}

/// A set of namespace names.
pub fn namespace_set(_: &mut SchemaGenerator) -> Schema {
    let mut item = json_schema!({ "type": "string", "maxLength": 63 });
    push_rules(
        &mut item,
        [rule_expr(
            format!("self.matches({})", lit(LABEL_NAME_RE)),
            quoted_then("self", crate::validation::NOT_A_NAMESPACE),
        )],
    );
    json_schema!({
        "type": "array",
        "maxItems": MAX_NAMES,
        "x-kubernetes-list-type": "set",
        "items": item,
    })
}

/// A set of network interface names.
pub fn interface_set(_: &mut SchemaGenerator) -> Schema {
    let mut item = json_schema!({ "type": "string", "maxLength": 15 });
    push_rules(
        &mut item,
        [rule_expr(
            format!(
                "self.matches({}) && self != '.' && self != '..'",
                lit(INTERFACE_RE)
            ),
            quoted_then("self", crate::validation::NOT_AN_INTERFACE),
        )],
    );
    json_schema!({
        "type": "array",
        "maxItems": MAX_NAMES,
        "x-kubernetes-list-type": "set",
        "items": item,
    })
}

/// A label selector, with its keys, values and operators checked as the
/// apiserver checks a Deployment's selector.
pub fn selector_schema() -> Schema {
    let key = json!({ "type": "string", "maxLength": 317 });
    let value = json!({ "type": "string", "maxLength": 63 });
    let key_ok = |k: &str| {
        format!(
            "({k}.matches({}) && ({k}.indexOf('/') < 0 || {k}.indexOf('/') <= 253))",
            lit(LABEL_KEY_RE)
        )
    };
    let value_ok = |v: &str| format!("{v}.matches({})", lit(LABEL_VALUE_RE));
    let mut labels = json_schema!({
        "type": "object",
        "maxProperties": MAX_LABELS,
        "additionalProperties": value,
        "description": "Labels that must all be present with these values.",
    });
    push_rules(
        &mut labels,
        [
            rule(
                format!("self.all(k, {})", key_ok("k")),
                format!("a key {KEY_RULE}"),
            ),
            rule(
                format!("self.all(k, {})", value_ok("self[k]")),
                format!("a value {VALUE_RULE}"),
            ),
        ],
    );
    let mut values = json_schema!({
        "type": "array",
        "maxItems": MAX_LABELS,
        "items": value,
        "description": "The values for In and NotIn; empty for Exists and DoesNotExist.",
    });
    push_rules(
        &mut values,
        [rule(
            format!("self.all(v, {})", value_ok("v")),
            format!("a value {VALUE_RULE}"),
        )],
    );
    let mut key_schema = Schema::try_from(key).unwrap_or_default();
    key_schema.insert("description".into(), json!("The label key."));
    push_rules(
        &mut key_schema,
        [rule_expr(key_ok("self"), quoted_then("self", KEY_RULE))],
    );
    let mut expression = json_schema!({
        "type": "object",
        "required": ["key", "operator"],
        "properties": {
            "key": key_schema,
            "operator": {
                "type": "string",
                "description": "One of In, NotIn, Exists, DoesNotExist.",
                "maxLength": 12,
            },
            "values": values,
        },
    });
    push_rules(
        &mut expression,
        [
            rule_at(
                "self.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist']",
                OPERATOR_RULE,
                ".operator",
            ),
            rule_at(
                "!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)",
                VALUES_RULE,
                ".values",
            ),
            rule_at(
                "!(self.operator in ['Exists', 'DoesNotExist']) || !has(self.values) || size(self.values) == 0",
                VALUES_RULE,
                ".values",
            ),
        ],
    );
    json_schema!({
        "type": "object",
        "description": "A label selector: matchLabels and matchExpressions must all match. An empty selector matches everything.",
        "properties": {
            "matchLabels": labels,
            "matchExpressions": {
                "type": "array",
                "maxItems": MAX_LABELS,
                "description": "Label requirements that must all hold.",
                "items": expression,
            },
        },
        "x-kubernetes-map-type": "atomic",
    })
}

/// A list of label selectors; an object matches when any selector matches.
pub fn selector_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": MAX_SELECTORS,
        "items": selector_schema(),
    })
}

/// A single label selector.
pub fn selector(_: &mut SchemaGenerator) -> Schema {
    selector_schema()
}

/// Status conditions: merged by `type` under server-side apply (k8s-openapi's
/// `Condition` schema lacks these markers).
pub fn conditions(generator: &mut SchemaGenerator) -> Schema {
    let item =
        generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>();
    json_schema!({
        "type": "array",
        "maxItems": 32,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": item,
    })
}

/// Marks an array schema as a list map keyed by `keys`.
pub fn list_map(schema: &mut Schema, keys: &[&str]) {
    schema.insert("x-kubernetes-list-type".into(), json!("map"));
    schema.insert("x-kubernetes-list-map-keys".into(), json!(keys));
}
