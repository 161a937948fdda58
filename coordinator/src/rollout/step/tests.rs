//! The step function against scripted observations: no Redis, no clock.

use super::*;
use crate::rollout::observe::{DrainedInfo, NodeView};

const ACTIVE: NodeState = NodeState::Active;
const DRAINING: NodeState = NodeState::Draining;
const DRAINED: NodeState = NodeState::Drained;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn n(name: &str) -> NodeName {
    NodeName::parse(name).unwrap()
}

/// A scripted cluster.
struct Script {
    obs: Observation,
}

impl Script {
    fn new(nodes: &[(&str, Uuid, NodeState, u64)]) -> Self {
        let mut s = Script {
            obs: Observation::default(),
        };
        for &(name, instance, state, connections) in nodes {
            s.set(name, instance, state, connections);
        }
        s
    }
    fn set(&mut self, name: &str, instance: Uuid, state: NodeState, connections: u64) {
        self.obs.nodes.insert(
            n(name),
            NodeView {
                instance,
                state,
                connections,
                capacity: None,
                at_ms: 0,
            },
        );
    }
    fn remove(&mut self, name: &str) {
        self.obs.nodes.remove(&n(name));
    }
    fn at(&mut self, t: u64) -> &Observation {
        self.obs.now = ms(t);
        &self.obs
    }
}

fn ids() -> [Uuid; 6] {
    std::array::from_fn(|_| Uuid::new_v4())
}

fn plan(names: &[&str]) -> Rollout {
    Rollout::new("r1".into(), names.iter().map(|name| n(name)).collect())
}

/// Drives node `name` (instance `old`) through a whole restart to `new`, from time `t`.
fn restart_one(
    r: &mut Rollout,
    s: &mut Script,
    policy: &Policy,
    name: &str,
    old: Uuid,
    new: Uuid,
    t: u64,
) {
    assert_eq!(
        r.step(s.at(t), policy, None),
        Action::SendDrain {
            node: n(name),
            instance: old,
            attempt: 1
        }
    );
    assert_eq!(
        r.step(s.at(t + 10), policy, None),
        Action::Wait,
        "not acked yet"
    );
    s.set(name, old, DRAINING, 7);
    assert_eq!(r.step(s.at(t + 20), policy, None), Action::Wait, "draining");
    assert!(matches!(r.phase, Phase::Draining { .. }));
    s.set(name, old, DRAINING, 0);
    assert_eq!(r.step(s.at(t + 120), policy, None), Action::Wait, "exiting");
    assert!(matches!(r.phase, Phase::Exiting { .. }));
    s.set(name, old, DRAINED, 0);
    s.remove(name);
    assert_eq!(
        r.step(s.at(t + 150), policy, None),
        Action::Wait,
        "replacing"
    );
    s.set(name, new, ACTIVE, 0);
    assert_eq!(r.step(s.at(t + 400), policy, None), Action::NodeDone);
}

#[test]
fn a_rollout_restarts_every_node_in_order() {
    let [a, b, c, a2, b2, c2] = ids();
    let mut s = Script::new(&[
        ("a", a, ACTIVE, 7),
        ("b", b, ACTIVE, 5),
        ("c", c, ACTIVE, 3),
    ]);
    s.obs.drained.insert(
        a,
        DrainedInfo {
            clean: 7,
            forced: 0,
        },
    );
    let policy = Policy::default();
    let mut r = plan(&["a", "b", "c"]);
    restart_one(&mut r, &mut s, &policy, "a", a, a2, 0);
    restart_one(&mut r, &mut s, &policy, "b", b, b2, 1000);
    restart_one(&mut r, &mut s, &policy, "c", c, c2, 2000);
    assert_eq!(r.step(s.at(3000), &policy, None), Action::Complete);
    let first = &r.results[0];
    assert_eq!(first.name, "a");
    assert_eq!(
        (first.old_instance, first.new_instance),
        (Some(a), Some(a2))
    );
    assert_eq!(first.connections_before, 7);
    assert_eq!(first.drain_ms, Some(120));
    assert_eq!(first.restart_ms, Some(280));
    assert_eq!(
        (first.clean_closes, first.forced_closes),
        (Some(7), Some(0))
    );
    assert_eq!(r.results.len(), 3);
}

#[test]
fn capacity_is_checked_before_touching_a_node() {
    let [a, b, ..] = ids();
    let mut s = Script::new(&[("a", a, ACTIVE, 10), ("b", b, DRAINED, 0)]);
    let mut r = plan(&["a", "b"]);
    let action = r.step(s.at(0), &Policy::default(), None);
    assert_eq!(
        action,
        Action::Abort(Abort::TooFewActive {
            node: n("a"),
            have: 0,
            need: 1
        })
    );

    // Known capacities that cannot absorb the node's connections.
    let mut s = Script::new(&[("a", a, ACTIVE, 100), ("b", b, ACTIVE, 950)]);
    s.obs.nodes.get_mut("b").unwrap().capacity = Some(1000);
    let mut r = plan(&["a", "b"]);
    assert_eq!(
        r.step(s.at(0), &Policy::default(), None),
        Action::Abort(Abort::NoHeadroom {
            node: n("a"),
            room: 50,
            connections: 100
        })
    );
    s.obs.nodes.get_mut("b").unwrap().capacity = Some(1100);
    assert!(matches!(
        r.step(s.at(0), &Policy::default(), None),
        Action::SendDrain { .. }
    ));
}

#[test]
fn a_node_not_active_or_missing_stops_the_rollout() {
    let [a, b, ..] = ids();
    let mut s = Script::new(&[("a", a, DRAINING, 1), ("b", b, ACTIVE, 0)]);
    let mut r = plan(&["a", "b"]);
    assert!(matches!(
        r.step(s.at(0), &Policy::default(), None),
        Action::Abort(Abort::NotActive { .. })
    ));
    let mut r = plan(&["x", "b"]);
    assert!(matches!(
        r.step(s.at(0), &Policy::default(), None),
        Action::Abort(Abort::Missing { .. })
    ));
}

#[test]
fn an_unacknowledged_drain_is_resent_then_aborts() {
    let [a, b, ..] = ids();
    let mut s = Script::new(&[("a", a, ACTIVE, 1), ("b", b, ACTIVE, 0)]);
    let policy = Policy {
        ack_timeout: ms(1000),
        ack_retries: 2,
        ..Policy::default()
    };
    let mut r = plan(&["a", "b"]);
    assert!(matches!(
        r.step(s.at(0), &policy, None),
        Action::SendDrain { attempt: 1, .. }
    ));
    assert_eq!(r.step(s.at(999), &policy, None), Action::Wait);
    assert!(matches!(
        r.step(s.at(1000), &policy, None),
        Action::SendDrain { attempt: 2, .. }
    ));
    assert!(matches!(
        r.step(s.at(2000), &policy, None),
        Action::SendDrain { attempt: 3, .. }
    ));
    assert_eq!(
        r.step(s.at(3000), &policy, None),
        Action::Abort(Abort::NoAck {
            node: n("a"),
            attempts: 3
        })
    );
    assert_eq!(r.index, 0, "b untouched");
}

#[test]
fn a_replacement_that_never_comes_aborts_and_leaves_the_rest() {
    let [a, b, ..] = ids();
    let mut s = Script::new(&[("a", a, ACTIVE, 1), ("b", b, ACTIVE, 0)]);
    let policy = Policy {
        replace_timeout: ms(5000),
        ..Policy::default()
    };
    let mut r = plan(&["a", "b"]);
    r.step(s.at(0), &policy, None);
    s.set("a", a, DRAINED, 0);
    assert_eq!(r.step(s.at(100), &policy, None), Action::Wait);
    s.remove("a");
    assert_eq!(r.step(s.at(200), &policy, None), Action::Wait);
    assert_eq!(r.step(s.at(5199), &policy, None), Action::Wait);
    assert_eq!(
        r.step(s.at(5200), &policy, None),
        Action::Abort(Abort::NoReplacement { node: n("a") })
    );
    assert_eq!(r.index, 0);
}

#[test]
fn a_node_killed_mid_drain_waits_for_its_replacement_or_aborts() {
    let [a, b, a2, ..] = ids();
    for abort_on_lost in [false, true] {
        let policy = Policy {
            abort_on_lost,
            ..Policy::default()
        };
        let mut s = Script::new(&[("a", a, ACTIVE, 50), ("b", b, ACTIVE, 0)]);
        let mut r = plan(&["a", "b"]);
        r.step(s.at(0), &policy, None);
        s.set("a", a, DRAINING, 30);
        r.step(s.at(10), &policy, None);
        s.remove("a"); // its record expired: killed
        let action = r.step(s.at(10_000), &policy, None);
        if abort_on_lost {
            assert_eq!(action, Action::Abort(Abort::Lost { node: n("a") }));
            continue;
        }
        assert_eq!(action, Action::Wait);
        assert!(r.results[0].lost);
        s.set("a", a2, ACTIVE, 0);
        assert_eq!(r.step(s.at(12_000), &policy, None), Action::NodeDone);
        assert_eq!(r.results[0].new_instance, Some(a2));
    }
}

#[test]
fn a_node_resumed_during_its_drain_stops_the_rollout() {
    let [a, b, ..] = ids();
    let mut s = Script::new(&[("a", a, ACTIVE, 5), ("b", b, ACTIVE, 0)]);
    let policy = Policy::default();
    let mut r = plan(&["a", "b"]);
    r.step(s.at(0), &policy, None);
    s.set("a", a, DRAINING, 5);
    r.step(s.at(10), &policy, None);
    s.set("a", a, ACTIVE, 5);
    assert_eq!(
        r.step(s.at(20), &policy, None),
        Action::Abort(Abort::Resumed { node: n("a") })
    );
}

#[test]
fn a_drain_that_never_empties_times_out() {
    let [a, b, ..] = ids();
    let mut s = Script::new(&[("a", a, ACTIVE, 5), ("b", b, ACTIVE, 0)]);
    let policy = Policy {
        drain_timeout: ms(1000),
        ..Policy::default()
    };
    let mut r = plan(&["a", "b"]);
    r.step(s.at(0), &policy, None);
    s.set("a", a, DRAINING, 3);
    assert_eq!(r.step(s.at(10), &policy, None), Action::Wait);
    assert_eq!(
        r.step(s.at(1010), &policy, None),
        Action::Abort(Abort::DrainTimeout {
            node: n("a"),
            connections: 3
        })
    );
}

#[test]
fn drained_but_never_exiting_aborts() {
    let [a, b, ..] = ids();
    let mut s = Script::new(&[("a", a, ACTIVE, 0), ("b", b, ACTIVE, 0)]);
    let policy = Policy {
        exit_timeout: ms(2000),
        ..Policy::default()
    };
    let mut r = plan(&["a", "b"]);
    r.step(s.at(0), &policy, None);
    s.set("a", a, DRAINED, 0);
    assert_eq!(r.step(s.at(10), &policy, None), Action::Wait);
    assert_eq!(
        r.step(s.at(2010), &policy, None),
        Action::Abort(Abort::NoExit { node: n("a") })
    );
}

#[test]
fn exec_runs_after_the_drain() {
    let [a, b, a2, ..] = ids();
    let policy = Policy {
        exec: true,
        ..Policy::default()
    };
    let mut s = Script::new(&[("a", a, ACTIVE, 1), ("b", b, ACTIVE, 0)]);
    let mut r = plan(&["a", "b"]);
    r.step(s.at(0), &policy, None);
    s.set("a", a, DRAINED, 0);
    assert_eq!(
        r.step(s.at(10), &policy, None),
        Action::RunExec { node: n("a") }
    );
    assert_eq!(
        r.step(s.at(20), &policy, None),
        Action::Wait,
        "exec running"
    );
    s.set("a", a2, ACTIVE, 0); // the exec restarted it
    assert_eq!(
        r.step(s.at(30), &policy, Some(Input::ExecDone(Ok(())))),
        Action::NodeDone
    );

    let mut s = Script::new(&[("a", a, ACTIVE, 1), ("b", b, ACTIVE, 0)]);
    let mut r = plan(&["a", "b"]);
    r.step(s.at(0), &policy, None);
    s.set("a", a, DRAINED, 0);
    r.step(s.at(10), &policy, None);
    assert!(matches!(
        r.step(
            s.at(20),
            &policy,
            Some(Input::ExecDone(Err("exit 3".into())))
        ),
        Action::Abort(Abort::ExecFailed { .. })
    ));
}

#[test]
fn ephemeral_names_wait_for_the_active_count() {
    let [a, b, c, ..] = ids();
    let policy = Policy {
        ephemeral_names: true,
        ..Policy::default()
    };
    let mut s = Script::new(&[("pod-a", a, ACTIVE, 4), ("pod-b", b, ACTIVE, 4)]);
    let mut r = plan(&["pod-a", "pod-b"]);
    r.step(s.at(0), &policy, None);
    s.set("pod-a", a, DRAINED, 0);
    r.step(s.at(10), &policy, None);
    s.remove("pod-a");
    assert_eq!(r.step(s.at(20), &policy, None), Action::Wait);
    s.set("pod-x", c, NodeState::Starting, 0);
    assert_eq!(
        r.step(s.at(30), &policy, None),
        Action::Wait,
        "not active yet"
    );
    s.set("pod-x", c, ACTIVE, 0);
    assert_eq!(r.step(s.at(40), &policy, None), Action::NodeDone);
    assert_eq!(r.results[0].new_instance, Some(c));
}

#[test]
fn progress_survives_serialization_for_resume() {
    let [a, b, ..] = ids();
    let mut s = Script::new(&[("a", a, ACTIVE, 3), ("b", b, ACTIVE, 0)]);
    let policy = Policy::default();
    let mut r = plan(&["a", "b"]);
    r.step(s.at(0), &policy, None);
    s.set("a", a, DRAINING, 3);
    r.step(s.at(50_000), &policy, None);
    let json = serde_json::to_string(&r).unwrap();
    let mut back: Rollout = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    assert!(!back.missed_events);
    // A new coordinator's clock starts at zero: its timers restart, nothing is re-sent.
    back.restart_timers(ms(0));
    assert_eq!(
        back.phase,
        Phase::Draining {
            instance: a,
            since: ms(0)
        }
    );
    s.set("a", a, DRAINING, 0);
    assert_eq!(back.step(s.at(10), &policy, None), Action::Wait);
    assert!(matches!(back.phase, Phase::Exiting { .. }));
}

#[test]
fn a_node_that_drains_and_exits_between_two_looks_is_not_lost() {
    let [a, b, a2, ..] = ids();
    let policy = Policy {
        abort_on_lost: true,
        ..Policy::default()
    };
    for proof in ["drained", "deregistered"] {
        let mut s = Script::new(&[("a", a, ACTIVE, 0), ("b", b, ACTIVE, 0)]);
        let mut r = plan(&["a", "b"]);
        r.step(s.at(0), &policy, None);
        // Idle: it drained, exited and deregistered before the next observation.
        s.remove("a");
        match proof {
            "drained" => {
                s.obs.drained.insert(
                    a,
                    DrainedInfo {
                        clean: 0,
                        forced: 0,
                    },
                );
            }
            _ => {
                s.obs.deregistered.insert(a);
            }
        }
        assert_eq!(r.step(s.at(5), &policy, None), Action::Wait, "{proof}");
        assert!(matches!(r.phase, Phase::Replacing { .. }));
        assert!(!r.results[0].lost);
        assert_eq!(r.results[0].drain_ms, Some(5));
        s.set("a", a2, ACTIVE, 0);
        assert_eq!(r.step(s.at(20), &policy, None), Action::NodeDone);
    }
}

#[test]
fn an_aborting_loss_is_marked_lost_in_the_result() {
    let [a, b, ..] = ids();
    let policy = Policy {
        abort_on_lost: true,
        ..Policy::default()
    };
    let mut s = Script::new(&[("a", a, ACTIVE, 3), ("b", b, ACTIVE, 0)]);
    let mut r = plan(&["a", "b"]);
    r.step(s.at(0), &policy, None);
    s.set("a", a, DRAINING, 3);
    r.step(s.at(1), &policy, None);
    s.remove("a");
    assert!(matches!(
        r.step(s.at(2), &policy, None),
        Action::Abort(Abort::Lost { .. })
    ));
    assert!(r.results[0].lost);
}

#[test]
fn a_drain_that_could_not_be_sent_is_not_an_attempt() {
    let [a, b, ..] = ids();
    let policy = Policy {
        ack_timeout: ms(1000),
        ack_retries: 1,
        ..Policy::default()
    };
    let mut s = Script::new(&[("a", a, ACTIVE, 1), ("b", b, ACTIVE, 0)]);
    let mut r = plan(&["a", "b"]);
    assert!(matches!(
        r.step(s.at(0), &policy, None),
        Action::SendDrain { attempt: 1, .. }
    ));
    // Redis was down: the send failed. Many failed sends later, still no abort.
    for t in 1..5u64 {
        assert_eq!(
            r.step(s.at(t * 1000 - 1), &policy, Some(Input::SendFailed)),
            Action::Wait
        );
        assert!(matches!(
            r.step(s.at(t * 1000), &policy, None),
            Action::SendDrain { attempt: 1, .. }
        ));
    }
    // Once sends go through, the retries count again.
    assert!(matches!(
        r.step(s.at(6000), &policy, None),
        Action::SendDrain { attempt: 2, .. }
    ));
    assert!(matches!(
        r.step(s.at(7000), &policy, None),
        Action::Abort(Abort::NoAck { attempts: 2, .. })
    ));
}
