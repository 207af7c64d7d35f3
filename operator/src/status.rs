//! What a Service's status should say, from the allocator's answer: the ingress
//! IPs and the `ferrolb.io/IPAllocated` condition with a message a person can act
//! on.

use ferrolb_api::constants::condition::reason::IP_NOT_IN_ANY_POOL;
use ferrolb_api::constants::condition::{IP_ALLOCATED, reason};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::{Value, json};

use crate::allocation::{Assignment, Failure};

/// The operator's part of a Service's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// `status.loadBalancer.ingress[].ip`, primary family first.
    pub ingress: Vec<String>,
    /// `True` or `False`.
    pub status: &'static str,
    /// The condition reason.
    pub reason: String,
    /// The condition message.
    pub message: String,
}

fn describe(assignments: &[Assignment]) -> String {
    assignments
        .iter()
        .map(|a| match &a.pool {
            Some(pool) => format!("{} from pool {pool}", a.ip),
            None => format!("{} (in no pool)", a.ip),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The status for an allocation result; `held` is what the Service keeps when
/// the result is a failure.
pub fn desired(result: &Result<Vec<Assignment>, Failure>, held: &[Assignment]) -> Desired {
    match result {
        Ok(assignments) => {
            let ingress = assignments.iter().map(|a| a.ip.to_string()).collect();
            let orphans: Vec<String> = assignments
                .iter()
                .filter(|a| a.pool.is_none())
                .map(|a| a.ip.to_string())
                .collect();
            if orphans.is_empty() {
                Desired {
                    ingress,
                    status: "True",
                    reason: reason::ALLOCATED.to_string(),
                    message: format!("Allocated {}", describe(assignments)),
                }
            } else {
                Desired {
                    ingress,
                    status: "False",
                    reason: IP_NOT_IN_ANY_POOL.to_string(),
                    message: format!(
                        "keeps {} so traffic keeps flowing, but no IPAddressPool holds it any more (its pool was edited or deleted): add it back to a pool, or name a pool with the annotation ferrolb.io/address-pool to move the Service to a new address",
                        orphans.join(" and ")
                    ),
                }
            }
        }
        Err(failure) => {
            let mut message = failure.message.clone();
            if !held.is_empty() {
                message = format!("{message}; until then it keeps {}", describe(held));
            }
            Desired {
                ingress: held.iter().map(|a| a.ip.to_string()).collect(),
                status: "False",
                reason: failure.reason.as_str().to_string(),
                message,
            }
        }
    }
}

/// The ingress IPs and the IPAllocated condition a Service has now.
pub fn current(service: &Service) -> (Vec<String>, Option<&Condition>) {
    let status = service.status.as_ref();
    let ingress = status
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|list| list.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default();
    let condition = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == IP_ALLOCATED));
    (ingress, condition)
}

/// Whether a Service's status already says what `desired` says.
pub fn up_to_date(service: &Service, desired: &Desired) -> bool {
    let (ingress, condition) = current(service);
    ingress == desired.ingress
        && condition.is_some_and(|c| {
            c.status == desired.status
                && c.reason == desired.reason
                && c.message == desired.message
                && c.observed_generation == service.metadata.generation
        })
}

/// The server-side apply body for a Service's status. The transition time is
/// kept while the condition's status is unchanged.
pub fn apply_body(service: &Service, desired: &Desired, now: Time) -> Value {
    let (_, condition) = current(service);
    let since = match condition {
        Some(c) if c.status == desired.status => c.last_transition_time.clone(),
        _ => now,
    };
    let ingress: Vec<Value> = desired
        .ingress
        .iter()
        .map(|ip| json!({ "ip": ip, "ipMode": "VIP" }))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service.metadata.name,
            "namespace": service.metadata.namespace,
        },
        "status": {
            "loadBalancer": { "ingress": ingress },
            "conditions": [{
                "type": IP_ALLOCATED,
                "status": desired.status,
                "reason": desired.reason,
                "message": desired.message,
                "observedGeneration": service.metadata.generation,
                "lastTransitionTime": since,
            }],
        },
    })
}

/// The body that takes back everything the operator wrote on a Service that is
/// no longer its own: applying an empty status releases the fields it owned.
pub fn clear_body(service: &Service) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service.metadata.name,
            "namespace": service.metadata.namespace,
        },
        "status": {},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocation::Reason;

    fn assignment(ip: &str, pool: Option<&str>) -> Assignment {
        Assignment {
            ip: ip.parse().expect("ip"),
            pool: pool.map(str::to_string),
        }
    }

    #[test]
    fn allocated_names_ip_and_pool() {
        let d = desired(
            &Ok(vec![
                assignment("10.0.0.1", Some("a")),
                assignment("fd00::1", Some("b")),
            ]),
            &[],
        );
        assert_eq!((d.status, d.reason.as_str()), ("True", "Allocated"));
        assert_eq!(
            d.message,
            "Allocated 10.0.0.1 from pool a, fd00::1 from pool b"
        );
        assert_eq!(d.ingress, ["10.0.0.1", "fd00::1"]);
    }

    #[test]
    fn an_ip_outside_every_pool_is_kept_and_explained() {
        let d = desired(&Ok(vec![assignment("10.0.0.1", None)]), &[]);
        assert_eq!((d.status, d.reason.as_str()), ("False", IP_NOT_IN_ANY_POOL));
        assert_eq!(d.ingress, ["10.0.0.1"]);
        assert!(d.message.contains("add it back to a pool"));
    }

    #[test]
    fn a_failure_keeps_what_is_held() {
        let failure = Failure {
            reason: Reason::RequestedIPUnavailable,
            message: "10.0.0.9 is held by d/x".into(),
        };
        let d = desired(&Err(failure.clone()), &[assignment("10.0.0.1", Some("a"))]);
        assert_eq!(
            (d.status, d.reason.as_str()),
            ("False", "RequestedIPUnavailable")
        );
        assert_eq!(d.ingress, ["10.0.0.1"]);
        assert!(
            d.message
                .ends_with("until then it keeps 10.0.0.1 from pool a")
        );
        assert!(desired(&Err(failure), &[]).ingress.is_empty());
    }
}
