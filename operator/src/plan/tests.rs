//! The pass as a whole, from a snapshot of plain values: every condition
//! reason and message a Service can show, without an apiserver.

use super::*;

#[test]
fn a_passing_not_yet_applied_raises_no_warning_but_a_real_problem_does() {
    let pending = Verdict::no("NotYetApplied", "the speaker has not applied it yet");
    assert!(transition(condition::ANNOUNCED, None, &pending).is_none());
    let stuck = Verdict::no("NoEligibleNode", "no node may announce 10.0.0.1");
    let event = transition(condition::ANNOUNCED, Some("NotYetApplied"), &stuck).unwrap();
    assert_eq!(event.type_, EventType::Warning);
    assert_eq!(event.reason, "NotAnnounced");
    let fine = Verdict::yes("Announced", "L2: 10.0.0.1 answered by node a");
    let event = transition(condition::ANNOUNCED, Some("NotYetApplied"), &fine).unwrap();
    assert_eq!(event.type_, EventType::Normal);
    assert!(transition(condition::ANNOUNCED, Some("Announced"), &fine).is_none());
}
