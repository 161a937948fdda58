//! Balance measure and shed plans.

use super::*;
use crate::rollout::testkit::*;

fn fleet(loads: &[(&str, u64)]) -> Vec<(NodeName, NodeView)> {
    let s = Script::new(&[]);
    loads
        .iter()
        .map(|(name, c)| {
            let mut v = s.view(uuid::Uuid::new_v4(), ACTIVE, *c);
            v.url = format!("ws://{name}:8080/ws");
            (n(name), v)
        })
        .collect()
}

#[test]
fn imbalance_is_max_over_mean() {
    assert_eq!(imbalance(&[]), 1.0);
    assert_eq!(imbalance(&[0, 0]), 1.0);
    assert_eq!(imbalance(&[100, 100, 100]), 1.0);
    // The demo before: 2,518 clients over three nodes, the most on one 1,655.
    assert!((imbalance(&[1655, 863, 0]) - 1.972).abs() < 0.01);
}

#[test]
fn the_overloaded_shed_to_the_underloaded_in_proportion_to_what_they_lack() {
    let nodes = fleet(&[("a", 2000), ("b", 1000), ("c", 0)]);
    let plan = plan(&nodes, 0.10, 200);
    assert_eq!(plan.len(), 1);
    let (name, shed) = &plan[0];
    assert_eq!(name.as_str(), "a");
    assert_eq!((shed.count, shed.rate_per_s), (1000, 200));
    let targets: Vec<(&str, u64)> = shed
        .targets
        .iter()
        .map(|t| (t.url.as_str(), t.weight))
        .collect();
    assert_eq!(targets, [("ws://c:8080/ws", 1000)]);
}

#[test]
fn nothing_to_do_within_the_tolerance_or_without_anywhere_to_send() {
    assert!(plan(&fleet(&[("a", 110), ("b", 90), ("c", 100)]), 0.15, 100).is_empty());
    assert!(plan(&fleet(&[("a", 5000)]), 0.10, 100).is_empty());
    let mut full = fleet(&[("a", 2000), ("b", 100)]);
    full[1].1.capacity = Some(100);
    assert!(plan(&full, 0.10, 100).is_empty(), "b has no room");
}
