//! What a Service's status should say: the ingress IPs, the
//! `ferrolb.io/IPAllocated` condition from the allocator's answer, and the
//! `ferrolb.io/Announced` condition from the announcement plan, each with a
//! message a person can act on.

use ferrolb_api::constants::condition::reason::IP_NOT_IN_ANY_POOL;
use ferrolb_api::constants::condition::{ANNOUNCED, IP_ALLOCATED, READY, reason};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::{Value, json};

use crate::plan::allocation::pool::PoolState;
use crate::plan::allocation::{Assignment, Failure};

/// One condition as the operator wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// `True` or `False`.
    pub status: &'static str,
    /// The condition reason.
    pub reason: String,
    /// The condition message.
    pub message: String,
}

impl Verdict {
    /// A True condition.
    pub fn yes(reason: &str, message: impl Into<String>) -> Verdict {
        Verdict {
            status: "True",
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    /// A False condition.
    pub fn no(reason: &str, message: impl Into<String>) -> Verdict {
        Verdict {
            status: "False",
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    /// Whether the condition is True.
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// The operator's part of a Service's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// `status.loadBalancer.ingress[].ip`, primary family first.
    pub ingress: Vec<String>,
    /// `ferrolb.io/IPAllocated`.
    pub allocated: Verdict,
    /// `ferrolb.io/Announced`, once the Service has IPs.
    pub announced: Option<Verdict>,
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
                    allocated: Verdict::yes(
                        reason::ALLOCATED,
                        format!("Allocated {}", describe(assignments)),
                    ),
                    announced: None,
                }
            } else {
                Desired {
                    ingress,
                    allocated: Verdict::no(
                        IP_NOT_IN_ANY_POOL,
                        format!(
                            "keeps {} so traffic keeps flowing, but no IPAddressPool holds it any more (its pool was edited or deleted): add it back to a pool, or name a pool with the annotation ferrolb.io/address-pool to move the Service to a new address",
                            orphans.join(" and ")
                        ),
                    ),
                    announced: None,
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
                allocated: Verdict::no(failure.reason.as_str(), message),
                announced: None,
            }
        }
    }
}

/// A condition of a Service, by type.
pub fn condition<'a>(service: &'a Service, kind: &str) -> Option<&'a Condition> {
    service
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == kind))
}

/// The ingress IPs and the IPAllocated condition a Service has now.
pub fn current(service: &Service) -> (Vec<String>, Option<&Condition>) {
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|list| list.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default();
    (ingress, condition(service, IP_ALLOCATED))
}

/// Whether a condition says what a verdict says.
fn matches(
    condition: Option<&Condition>,
    verdict: Option<&Verdict>,
    generation: Option<i64>,
) -> bool {
    match (condition, verdict) {
        (None, None) => true,
        (Some(c), Some(v)) => {
            c.status == v.status
                && c.reason == v.reason
                && c.message == v.message
                && c.observed_generation == generation
        }
        _ => false,
    }
}

/// A condition for the apply body; its transition time is kept while its
/// status is unchanged.
fn condition_body(service: &Service, kind: &str, verdict: &Verdict, now: &Time) -> Value {
    let since = match condition(service, kind) {
        Some(c) if c.status == verdict.status => c.last_transition_time.clone(),
        _ => now.clone(),
    };
    json!({
        "type": kind,
        "status": verdict.status,
        "reason": verdict.reason,
        "message": verdict.message,
        "observedGeneration": service.metadata.generation,
        "lastTransitionTime": since,
    })
}

/// Whether a Service's status already says what `desired` says.
pub fn up_to_date(service: &Service, desired: &Desired) -> bool {
    let generation = service.metadata.generation;
    current(service).0 == desired.ingress
        && matches(
            condition(service, IP_ALLOCATED),
            Some(&desired.allocated),
            generation,
        )
        && matches(
            condition(service, ANNOUNCED),
            desired.announced.as_ref(),
            generation,
        )
}

/// The server-side apply body for a Service's status: everything the operator
/// owns on it, since what an apply leaves out is removed.
pub fn apply_body(service: &Service, desired: &Desired, now: Time) -> Value {
    let ingress: Vec<Value> = desired
        .ingress
        .iter()
        .map(|ip| json!({ "ip": ip, "ipMode": "VIP" }))
        .collect();
    let mut conditions = vec![condition_body(
        service,
        IP_ALLOCATED,
        &desired.allocated,
        &now,
    )];
    if let Some(announced) = &desired.announced {
        conditions.push(condition_body(service, ANNOUNCED, announced, &now));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service.metadata.name,
            "namespace": service.metadata.namespace,
        },
        "status": {
            "loadBalancer": { "ingress": ingress },
            "conditions": conditions,
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

/// A pool's status: `Ready`, and how many addresses it holds and has left,
/// per family. `previous` keeps the condition's transition time; `now` is
/// used when there is none.
pub fn pool_status(
    generation: Option<i64>,
    previous: Option<&ferrolb_api::IPAddressPoolStatus>,
    state: &PoolState,
    now: Time,
) -> ferrolb_api::IPAddressPoolStatus {
    let family_counts = |s: usize| {
        (state.total[s] > 0).then(|| ferrolb_api::ipaddresspool::AddressCounts {
            total: state.total[s].to_string(),
            assigned: i64::try_from(state.assigned[s]).unwrap_or(i64::MAX),
            available: state.total[s].saturating_sub(state.assigned[s]).to_string(),
        })
    };
    let assigned = state.assigned[0] + state.assigned[1];
    let available = state.total[0]
        .saturating_sub(state.assigned[0])
        .saturating_add(state.total[1].saturating_sub(state.assigned[1]));
    let since = previous
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
        .filter(|c| c.status == "True")
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(now);
    ferrolb_api::IPAddressPoolStatus {
        observed_generation: generation,
        conditions: vec![Condition {
            type_: READY.to_string(),
            status: "True".to_string(),
            reason: "Valid".to_string(),
            message: "the pool hands out addresses".to_string(),
            observed_generation: generation,
            last_transition_time: since,
        }],
        assigned: i64::try_from(assigned).unwrap_or(i64::MAX),
        available: Some(available.to_string()),
        ipv4: family_counts(0),
        ipv6: family_counts(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::allocation::Reason;

    fn assignment(ip: &str, pool: Option<&str>) -> Assignment {
        Assignment {
            ip: ip.parse().expect("ip"),
            pool: pool.map(str::to_string),
            was_in: None,
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
        assert_eq!(
            (d.allocated.status, d.allocated.reason.as_str()),
            ("True", "Allocated")
        );
        assert_eq!(
            d.allocated.message,
            "Allocated 10.0.0.1 from pool a, fd00::1 from pool b"
        );
        assert_eq!(d.ingress, ["10.0.0.1", "fd00::1"]);
    }

    #[test]
    fn an_ip_outside_every_pool_is_kept_and_explained() {
        let d = desired(&Ok(vec![assignment("10.0.0.1", None)]), &[]);
        assert_eq!(
            (d.allocated.status, d.allocated.reason.as_str()),
            ("False", IP_NOT_IN_ANY_POOL)
        );
        assert_eq!(d.ingress, ["10.0.0.1"]);
        assert!(d.allocated.message.contains("add it back to a pool"));
    }

    #[test]
    fn a_failure_keeps_what_is_held() {
        let failure = Failure {
            reason: Reason::RequestedIPUnavailable,
            message: "10.0.0.9 is held by d/x".into(),
        };
        let d = desired(&Err(failure.clone()), &[assignment("10.0.0.1", Some("a"))]);
        assert_eq!(
            (d.allocated.status, d.allocated.reason.as_str()),
            ("False", "RequestedIPUnavailable")
        );
        assert_eq!(d.ingress, ["10.0.0.1"]);
        assert!(
            d.allocated
                .message
                .ends_with("until then it keeps 10.0.0.1 from pool a")
        );
        assert!(desired(&Err(failure), &[]).ingress.is_empty());
    }

    #[test]
    fn a_pool_status_counts_per_family_and_keeps_its_ready_time() {
        use crate::plan::allocation::{Allocator, Pool, ServiceKey, ServiceRequest};
        use ferrolb_api::address::parse_pool_entry;
        let pool = Pool::new(
            "p",
            ["10.0.0.0/30", "fd00::/126"]
                .iter()
                .map(|e| parse_pool_entry(e).unwrap())
                .collect(),
        );
        let mut allocator = Allocator::new(vec![pool]);
        allocator
            .allocate(&ServiceRequest::new(ServiceKey::new("default", "a")))
            .unwrap();
        let state = allocator.pool("p").unwrap();
        let earlier = Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap());
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(2_000).unwrap());
        let first = pool_status(Some(3), None, state, earlier.clone());
        assert_eq!(first.assigned, 1);
        assert_eq!(first.available.as_deref(), Some("7"));
        let v4 = first.ipv4.as_ref().unwrap();
        assert_eq!(
            (v4.total.as_str(), v4.assigned, v4.available.as_str()),
            ("4", 1, "3")
        );
        assert_eq!(first.ipv6.as_ref().unwrap().available, "4");
        assert_eq!(first.conditions[0].observed_generation, Some(3));
        let again = pool_status(Some(4), Some(&first), state, now);
        assert_eq!(
            again.conditions[0].last_transition_time, earlier,
            "Ready since it first was"
        );
    }
}
