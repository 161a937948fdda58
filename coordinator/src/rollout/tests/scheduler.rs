//! Admission against scripted observations.

use super::*;
use crate::rollout::MaxParallel;
use crate::rollout::node::Phase;
use crate::rollout::testkit::*;
use uuid::Uuid;

fn runs(names: &[&str]) -> Vec<NodeRun> {
    names.iter().map(|name| NodeRun::new(n(name))).collect()
}

/// Marks `runs[i]` in flight, draining `instance`.
fn in_flight(runs: &mut [NodeRun], i: usize, instance: Uuid) {
    runs[i].result.old_instance = Some(instance);
    runs[i].phase = Phase::Draining {
        instance,
        since: ms(0),
    };
}

#[test]
fn admits_in_plan_order_up_to_max_parallel() {
    let [a, b, c, d] = ids();
    let s = Script::new(&[
        ("a", a, ACTIVE, 0),
        ("b", b, ACTIVE, 0),
        ("c", c, ACTIVE, 0),
        ("d", d, ACTIVE, 0),
    ]);
    let policy = Policy {
        max_parallel: MaxParallel::Count(2),
        ..Policy::default()
    };
    let mut plan = runs(&["c", "a", "b", "d"]);
    assert_eq!(
        next(&plan, &s.obs, &policy),
        Admission::Start {
            index: 0,
            active_before: 4
        }
    );
    in_flight(&mut plan, 0, c);
    assert_eq!(
        next(&plan, &s.obs, &policy),
        Admission::Start {
            index: 1,
            active_before: 3
        }
    );
    in_flight(&mut plan, 1, a);
    assert_eq!(next(&plan, &s.obs, &policy), Admission::Wait, "two out");
    plan[0].phase = Phase::Done;
    assert!(matches!(
        next(&plan, &s.obs, &policy),
        Admission::Start { index: 2, .. }
    ));
}

#[test]
fn nodes_in_flight_never_count_as_active() {
    let [a, b, c] = ids();
    // `a` is in flight but its record still says active (it has not acknowledged yet).
    let s = Script::new(&[
        ("a", a, ACTIVE, 0),
        ("b", b, ACTIVE, 0),
        ("c", c, ACTIVE, 0),
    ]);
    let policy = Policy {
        max_parallel: MaxParallel::Count(3),
        min_active: 1,
        ..Policy::default()
    };
    let mut plan = runs(&["a", "b", "c"]);
    in_flight(&mut plan, 0, a);
    assert!(matches!(
        next(&plan, &s.obs, &policy),
        Admission::Start { index: 1, .. }
    ));
    in_flight(&mut plan, 1, b);
    // Taking `c` would leave none active: wait for the others rather than abort.
    assert_eq!(next(&plan, &s.obs, &policy), Admission::Wait);
}

#[test]
fn a_limit_that_waiting_cannot_lift_stops_before_the_node_is_touched() {
    let [a, b] = ids();
    let s = Script::new(&[("a", a, ACTIVE, 10), ("b", b, DRAINED, 0)]);
    let plan = runs(&["a", "b"]);
    assert_eq!(
        next(&plan, &s.obs, &Policy::default()),
        Admission::Abort(Abort::TooFewActive {
            node: n("a"),
            have: 0,
            need: 1
        })
    );
    let s = Script::new(&[("a", a, DRAINING, 1), ("b", b, ACTIVE, 0)]);
    assert!(matches!(
        next(&plan, &s.obs, &Policy::default()),
        Admission::Abort(Abort::NotActive { .. })
    ));
    let plan = runs(&["x", "b"]);
    assert!(matches!(
        next(&plan, &s.obs, &Policy::default()),
        Admission::Abort(Abort::Missing { .. })
    ));
}

#[test]
fn headroom_counts_what_is_still_moving() {
    let [a, b, c] = ids();
    let mut s = Script::new(&[
        ("a", a, ACTIVE, 100),
        ("b", b, ACTIVE, 100),
        ("c", c, ACTIVE, 800),
    ]);
    s.capacity("c", 1000);
    s.capacity("b", 1000);
    let plan = runs(&["a", "b"]);
    // `a` (100) fits on b and c (900 + 200 room).
    assert!(matches!(
        next(&plan, &s.obs, &Policy::default()),
        Admission::Start { index: 0, .. }
    ));
    // Known capacities that cannot absorb it.
    s.set("a", a, ACTIVE, 1200);
    assert_eq!(
        next(&plan, &s.obs, &Policy::default()),
        Admission::Abort(Abort::NoHeadroom {
            node: n("a"),
            room: 1100,
            connections: 1200
        })
    );
}

#[test]
fn forged_huge_capacities_cannot_overflow_the_sum() {
    let [a, b, c] = ids();
    let mut s = Script::new(&[
        ("a", a, ACTIVE, 5),
        ("b", b, ACTIVE, 0),
        ("c", c, ACTIVE, 0),
    ]);
    s.capacity("b", u64::MAX);
    s.capacity("c", u64::MAX);
    let plan = runs(&["a"]);
    assert!(matches!(
        next(&plan, &s.obs, &Policy::default()),
        Admission::Start { .. }
    ));
}

#[test]
fn a_record_that_lapsed_this_run_is_waited_for_a_grace_then_stops_the_rollout() {
    let [a, b] = ids();
    let mut s = Script::new(&[("a", a, ACTIVE, 0), ("b", b, ACTIVE, 0)]);
    let plan = runs(&["a", "b"]);
    // (A record never seen by this run stops it at once: see the test above, node x.)
    s.obs.last_seen.insert(n("a"), ms(1000));
    s.obs.last_seen.insert(n("b"), ms(1000));
    s.remove("a");
    s.at(1000 + 14_000);
    assert_eq!(
        next(&plan, &s.obs, &Policy::default()),
        Admission::Wait,
        "a lapsed 14 s ago: a Redis failover, perhaps"
    );
    s.at(1000 + LAPSED_GRACE.as_millis() as u64);
    assert_eq!(
        next(&plan, &s.obs, &Policy::default()),
        Admission::Abort(Abort::Missing { node: n("a") })
    );
    // The other check that fails for want of a lapsed record waits the same way.
    let mut s = Script::new(&[("a", a, ACTIVE, 0), ("b", b, ACTIVE, 0)]);
    s.obs.last_seen.insert(n("b"), ms(0));
    s.remove("b");
    s.at(2000);
    assert_eq!(next(&plan, &s.obs, &Policy::default()), Admission::Wait);
    s.at(LAPSED_GRACE.as_millis() as u64);
    assert!(matches!(
        next(&plan, &s.obs, &Policy::default()),
        Admission::Abort(Abort::TooFewActive { .. })
    ));
}
