//! Label selectors as plain values, and matching: what `serviceAllocation`, the
//! advertisements and the peers select with. The operator's pure logic uses
//! [`Selector`]; a Kubernetes `LabelSelector` converts into one.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// One `matchExpressions` requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// The key's value is one of these.
    In(String, Vec<String>),
    /// The key is absent or its value is none of these.
    NotIn(String, Vec<String>),
    /// The key is present.
    Exists(String),
    /// The key is absent.
    DoesNotExist(String),
}

/// A label selector: every label and requirement must hold. The empty selector
/// matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// Labels that must be present with these values.
    pub labels: Labels,
    /// Requirements that must all hold.
    pub requirements: Vec<Requirement>,
}

impl Selector {
    /// Whether `labels` satisfy the selector.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.requirements.iter().all(|r| match r {
                Requirement::In(k, values) => labels.get(k).is_some_and(|v| values.contains(v)),
                Requirement::NotIn(k, values) => labels.get(k).is_none_or(|v| !values.contains(v)),
                Requirement::Exists(k) => labels.contains_key(k),
                Requirement::DoesNotExist(k) => !labels.contains_key(k),
            })
    }
}

impl From<&LabelSelector> for Selector {
    /// Operators the schema would not let through match nothing.
    fn from(selector: &LabelSelector) -> Selector {
        let requirements = selector
            .match_expressions
            .iter()
            .flatten()
            .map(|e| {
                let values = e.values.clone().unwrap_or_default();
                match e.operator.as_str() {
                    "In" => Requirement::In(e.key.clone(), values),
                    "NotIn" => Requirement::NotIn(e.key.clone(), values),
                    "Exists" => Requirement::Exists(e.key.clone()),
                    "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                    // Unknown operator: a value set nothing can be in.
                    _ => Requirement::In(e.key.clone(), Vec::new()),
                }
            })
            .collect();
        Selector {
            labels: selector.match_labels.clone().unwrap_or_default(),
            requirements,
        }
    }
}

/// Whether a Kubernetes label selector matches a set of labels.
pub fn label_selector_matches(selector: &LabelSelector, labels: &Labels) -> bool {
    Selector::from(selector).matches(labels)
}

/// Whether any selector of a list matches; an empty list matches everything.
pub fn any_matches(selectors: &[Selector], labels: &Labels) -> bool {
    selectors.is_empty() || selectors.iter().any(|s| s.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn labels_and_requirements_must_all_hold() {
        let selector = Selector {
            labels: labels(&[("team", "a")]),
            requirements: vec![
                Requirement::In("tier".into(), vec!["web".into(), "api".into()]),
                Requirement::NotIn("env".into(), vec!["dev".into()]),
                Requirement::DoesNotExist("legacy".into()),
            ],
        };
        assert!(selector.matches(&labels(&[("team", "a"), ("tier", "web")])));
        assert!(selector.matches(&labels(&[("team", "a"), ("tier", "api"), ("env", "prod")])));
        assert!(!selector.matches(&labels(&[("team", "a"), ("tier", "db")])));
        assert!(!selector.matches(&labels(&[("team", "a"), ("tier", "web"), ("env", "dev")])));
        assert!(!selector.matches(&labels(&[("team", "a"), ("tier", "web"), ("legacy", "")])));
        assert!(!selector.matches(&labels(&[("tier", "web")])));
    }

    #[test]
    fn an_empty_list_matches_everything() {
        assert!(any_matches(&[], &Labels::new()));
        let exists = Selector {
            requirements: vec![Requirement::Exists("x".into())],
            ..Selector::default()
        };
        assert!(!any_matches(std::slice::from_ref(&exists), &Labels::new()));
        assert!(any_matches(&[exists, Selector::default()], &Labels::new()));
    }
}
