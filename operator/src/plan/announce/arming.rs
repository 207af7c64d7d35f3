//! Make-before-break standbys. When the plan gives an IP a new standby while
//! the node standing by for it now could go on doing so (for the same active
//! node), the new one first only *arms* — probes the active node, takes
//! nothing — and the old one keeps standing by. The old one lets go once the
//! new one's status says it heard the active node (or that it cannot: then
//! waiting gains nothing). A cut in between therefore always finds a standby
//! that heard the active node; before, it found one that had not, and the
//! IP waited for the slow path. Pure: the planner's output and what the
//! NodeAnnouncements say in, the extra entries out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::{Entry, Plan, Role};

/// The standby changes still in progress.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Arming {
    /// Per node, the IPs it stands by for only to arm.
    pub arming: BTreeMap<String, BTreeSet<IpAddr>>,
    /// Per node, the standby entries it keeps while the new standby arms.
    pub kept: BTreeMap<String, Vec<Entry>>,
    /// Per IP, the standby its active node hands off to meanwhile (the one
    /// that heard it).
    pub standby: BTreeMap<IpAddr, String>,
}

impl Arming {
    /// Every node a change in progress involves.
    pub fn nodes(&self) -> BTreeSet<String> {
        self.arming
            .keys()
            .chain(self.kept.keys())
            .cloned()
            .collect()
    }
}

/// The changes in progress for `plan`. `standing_by` is, per IP, the node
/// whose spec has it stand by now (arming aside) and for which active node;
/// `settled` the (standby, active) pairs whose standby reports the active
/// node heard, or unreachable; `can_stand_by` whether a node's speaker may
/// go on standing by (alive, Ready, its network up).
pub fn arming(
    plan: &Plan,
    standing_by: &BTreeMap<IpAddr, (String, String)>,
    settled: &BTreeSet<(String, String)>,
    can_stand_by: impl Fn(&str) -> bool,
) -> Arming {
    let mut out = Arming::default();
    for (node, entries) in &plan.nodes {
        for entry in entries {
            let Role::Standby(active) = &entry.role else {
                continue;
            };
            let Some((old, old_active)) = standing_by.get(&entry.ip) else {
                continue;
            };
            if old == node
                || old_active != active
                || old == active
                || settled.contains(&(node.clone(), active.clone()))
                || !can_stand_by(old)
            {
                continue;
            }
            out.arming.entry(node.clone()).or_default().insert(entry.ip);
            out.kept.entry(old.clone()).or_default().push(Entry {
                role: Role::Standby(active.clone()),
                ..entry.clone()
            });
            out.standby.insert(entry.ip, old.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn entry(ip: IpAddr, role: Role) -> Entry {
        Entry {
            ip,
            role,
            interfaces: Vec::new(),
            services: vec!["default/web".into()],
        }
    }

    /// A plan with `a` active for .1 and `new` standing by.
    fn plan(new: &str) -> Plan {
        let mut plan = Plan::default();
        plan.nodes
            .insert("a".into(), vec![entry(ip(1), Role::Active)]);
        plan.nodes
            .insert(new.into(), vec![entry(ip(1), Role::Standby("a".into()))]);
        plan
    }

    fn standing(node: &str, active: &str) -> BTreeMap<IpAddr, (String, String)> {
        BTreeMap::from([(ip(1), (node.to_string(), active.to_string()))])
    }

    #[test]
    fn the_old_standby_keeps_standing_by_until_the_new_one_has_heard_the_active_node() {
        let everyone = |_: &str| true;
        let changing = arming(&plan("c"), &standing("b", "a"), &BTreeSet::new(), everyone);
        assert_eq!(changing.arming["c"], BTreeSet::from([ip(1)]));
        assert_eq!(
            changing.kept["b"],
            vec![entry(ip(1), Role::Standby("a".into()))]
        );
        assert_eq!(changing.standby[&ip(1)], "b", "the hand-off goes to b");
        assert_eq!(
            changing.nodes(),
            BTreeSet::from(["b".to_string(), "c".to_string()])
        );
        // c heard a (or reports it cannot): b lets go.
        let heard = BTreeSet::from([("c".to_string(), "a".to_string())]);
        assert_eq!(
            arming(&plan("c"), &standing("b", "a"), &heard, everyone),
            Arming::default()
        );
    }

    #[test]
    fn nothing_is_kept_that_could_not_take_over() {
        let none = BTreeSet::new();
        // The old standby's node is gone or unfit.
        assert_eq!(
            arming(&plan("c"), &standing("b", "a"), &none, |n| n != "b"),
            Arming::default()
        );
        // It stood by for another active node: it never heard this one.
        assert_eq!(
            arming(&plan("c"), &standing("b", "x"), &none, |_| true),
            Arming::default()
        );
        // The standby does not change, or there was none.
        assert_eq!(
            arming(&plan("b"), &standing("b", "a"), &none, |_| true),
            Arming::default()
        );
        assert_eq!(
            arming(&plan("c"), &BTreeMap::new(), &none, |_| true),
            Arming::default()
        );
    }
}
