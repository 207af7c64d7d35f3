//! Single-object validation in Rust: the same rules the CRD schema gives the
//! apiserver (see [`crate::cel`]), with the same messages, so the webhook and the
//! operator can check an object the way admission did.
//!
//! Paths are the API's own (`spec.addresses[2]`, `spec.holdTime`), never Rust
//! field names, because users read them.

use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;

/// The message tail for a bad object name, shared with the CRD schema.
pub const NOT_A_NAME: &str = "is not an object name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit";
/// The message tail for a bad namespace name.
pub const NOT_A_NAMESPACE: &str = "is not a namespace name: at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit";
/// The message tail for a bad interface name.
pub const NOT_AN_INTERFACE: &str =
    "is not a network interface name: 1-15 characters without '/', ':' or spaces";

/// Whether `name` is a valid Kubernetes object name (DNS-1123 subdomain).
pub fn is_object_name(name: &str) -> bool {
    name.len() <= 253 && selector::is_dns_subdomain(name)
}

/// Whether `name` is a valid Linux interface name.
pub fn is_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// One broken rule: where, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The API path of the field, such as `spec.addresses[0]`.
    pub path: String,
    /// What is wrong with it and what to write instead.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Collects the errors of one object while walking it.
#[derive(Debug, Default)]
pub struct Errors {
    errors: Vec<FieldError>,
}

impl Errors {
    /// An empty collection.
    pub fn new() -> Errors {
        Errors::default()
    }

    /// Records an error at `path`.
    pub fn add(&mut self, path: impl Into<String>, message: impl fmt::Display) {
        self.errors.push(FieldError {
            path: path.into(),
            message: message.to_string(),
        });
    }

    /// Records a `Result`'s error at `path`, passing the value on.
    pub fn check<T, E: fmt::Display>(&mut self, path: &str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                self.add(path, e);
                None
            }
        }
    }

    /// Records an error for each repeated entry of a list.
    pub fn no_duplicates<T: Eq + Hash + fmt::Debug>(&mut self, path: &str, items: &[T]) {
        let mut seen = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            if !seen.insert(item) {
                self.add(format!("{path}[{i}]"), format!("Duplicate value: {item:?}"));
            }
        }
    }

    /// The errors, in the order they were found.
    pub fn into_vec(self) -> Vec<FieldError> {
        self.errors
    }
}

/// Single-object validation of an API type.
pub trait Validate {
    /// Every broken rule; empty when the object is valid.
    fn validate(&self) -> Vec<FieldError>;
}

/// Label selectors as the apiserver would check them for a Pod's node selector:
/// valid keys and values, and `values` present exactly for `In`/`NotIn`.
pub mod selector {
    use super::Errors;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    /// Why a label key or value was refused.
    pub const KEY_RULE: &str = "is not a label key: an optional DNS subdomain prefix and '/', then 1-63 characters of [A-Za-z0-9-_.] starting and ending with an alphanumeric";
    /// The value rule.
    pub const VALUE_RULE: &str = "is not a label value: at most 63 characters of [A-Za-z0-9-_.], starting and ending with an alphanumeric";
    /// The operator rule.
    pub const OPERATOR_RULE: &str = "operator must be one of In, NotIn, Exists, DoesNotExist";
    /// The values rule.
    pub const VALUES_RULE: &str =
        "In and NotIn need at least one value; Exists and DoesNotExist take none";

    fn name_part_ok(s: &str) -> bool {
        let bytes = s.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 63
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    }

    /// Whether `s` is a DNS-1123 subdomain: dot-separated parts of lower-case
    /// letters, digits and '-', each starting and ending with a letter or digit.
    /// (Length limits are the caller's: they differ by use.)
    pub fn is_dns_subdomain(s: &str) -> bool {
        let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        !s.is_empty()
            && s.split('.').all(|part| {
                let b = part.as_bytes();
                !b.is_empty()
                    && alnum(&b[0])
                    && alnum(&b[b.len() - 1])
                    && b.iter().all(|c| alnum(c) || *c == b'-')
            })
    }

    /// Whether `s` is a DNS-1123 label: what a namespace name must be.
    pub fn is_dns_label(s: &str) -> bool {
        s.len() <= 63 && !s.contains('.') && is_dns_subdomain(s)
    }

    /// Whether `s` is a label key such as `kubernetes.io/hostname`.
    pub fn is_label_key(s: &str) -> bool {
        match s.rsplit_once('/') {
            Some((prefix, name)) => {
                prefix.len() <= 253 && is_dns_subdomain(prefix) && name_part_ok(name)
            }
            None => name_part_ok(s),
        }
    }

    /// Whether `s` is a label value (possibly empty).
    pub fn is_label_value(s: &str) -> bool {
        s.is_empty() || name_part_ok(s)
    }

    /// Checks one selector found at `path`.
    pub fn check(errors: &mut Errors, path: &str, selector: &LabelSelector) {
        for (key, value) in selector.match_labels.iter().flatten() {
            if !is_label_key(key) {
                errors.add(format!("{path}.matchLabels"), format!("'{key}' {KEY_RULE}"));
            }
            if !is_label_value(value) {
                errors.add(
                    format!("{path}.matchLabels"),
                    format!("'{value}' {VALUE_RULE}"),
                );
            }
        }
        for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
            let at = format!("{path}.matchExpressions[{i}]");
            if !is_label_key(&expr.key) {
                errors.add(format!("{at}.key"), format!("'{}' {KEY_RULE}", expr.key));
            }
            let values = expr.values.as_deref().unwrap_or_default();
            match expr.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    errors.add(format!("{at}.values"), VALUES_RULE)
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    errors.add(format!("{at}.values"), VALUES_RULE)
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                _ => errors.add(format!("{at}.operator"), OPERATOR_RULE),
            }
            for value in values {
                if !is_label_value(value) {
                    errors.add(format!("{at}.values"), format!("'{value}' {VALUE_RULE}"));
                }
            }
        }
    }

    /// Checks a list of selectors found at `path`.
    pub fn check_all(errors: &mut Errors, path: &str, selectors: &[LabelSelector]) {
        for (i, selector) in selectors.iter().enumerate() {
            check(errors, &format!("{path}[{i}]"), selector);
        }
    }
}
