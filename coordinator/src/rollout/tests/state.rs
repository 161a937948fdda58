//! The whole rollout: machines and scheduler stepped together, against a scripted cluster that
//! behaves (a drained node is gone a tick later and replaced the tick after).

use super::*;
use crate::rollout::MaxParallel;
use crate::rollout::testkit::*;
use std::collections::BTreeMap;

struct Behaved {
    s: Script,
    /// Nodes being restarted: ticks since their drain.
    out: BTreeMap<String, u32>,
    order: Vec<String>,
    most_out: usize,
}

impl Behaved {
    fn new(names: &[&str]) -> Self {
        let nodes: Vec<_> = names
            .iter()
            .map(|name| (*name, Uuid::new_v4(), ACTIVE, 1))
            .collect();
        Behaved {
            s: Script::new(&nodes),
            out: BTreeMap::new(),
            order: Vec::new(),
            most_out: 0,
        }
    }

    fn react(&mut self, actions: &[Action]) {
        for action in actions {
            if let Action::SendDrain {
                node, attempt: 1, ..
            } = action
            {
                self.order.push(node.to_string());
                self.out.insert(node.to_string(), 0);
            }
        }
        self.most_out = self.most_out.max(self.out.len());
    }

    fn tick(&mut self) {
        let mut back = Vec::new();
        for (name, ticks) in &mut self.out {
            let instance = self.s.obs.nodes.get(&n(name)).map(|v| v.instance);
            match (*ticks, instance) {
                (0, Some(i)) => self.s.set(name, i, DRAINED, 0),
                (1, _) => self.s.remove(name),
                _ => back.push(name.clone()),
            }
            *ticks += 1;
        }
        for name in back {
            self.out.remove(&name);
            self.s.set(&name, Uuid::new_v4(), ACTIVE, 0);
        }
    }

    /// Runs to the end; the actions of the last step.
    fn run(&mut self, r: &mut Rollout, policy: &Policy) -> Vec<Action> {
        for t in 0..1000 {
            let actions = r.step(self.s.at(t * 10), policy, &mut Vec::new());
            self.react(&actions);
            if actions
                .iter()
                .any(|a| matches!(a, Action::Complete | Action::Abort(_)))
            {
                return actions;
            }
            self.tick();
        }
        panic!("the rollout did not end");
    }
}

fn plan(names: &[&str]) -> Rollout {
    Rollout::new("ab12".into(), names.iter().map(|name| n(name)).collect())
}

#[test]
fn one_at_a_time_every_node_is_restarted_in_plan_order() {
    let mut fleet = Behaved::new(&["a", "b", "c"]);
    let mut r = plan(&["c", "a", "b"]);
    let last = fleet.run(&mut r, &Policy::default());
    assert!(last.contains(&Action::Complete), "{last:?}");
    assert_eq!(fleet.order, ["c", "a", "b"]);
    assert_eq!(fleet.most_out, 1);
    assert_eq!(r.done(), 3);
    assert!(r.nodes.iter().all(|run| run.result.new_instance.is_some()));
}

#[test]
fn max_parallel_is_reached_and_never_passed() {
    let names = ["a", "b", "c", "d", "e", "f", "g"];
    for parallel in [2, 3] {
        let mut fleet = Behaved::new(&names);
        let mut r = plan(&names);
        let policy = Policy {
            max_parallel: MaxParallel::Count(parallel),
            ..Policy::default()
        };
        let last = fleet.run(&mut r, &policy);
        assert!(last.contains(&Action::Complete), "{last:?}");
        assert_eq!(fleet.most_out, parallel);
        assert_eq!(fleet.order, names);
    }
}

#[test]
fn an_abort_is_the_only_action_and_nothing_after_it_is_touched() {
    let [a, b] = ids();
    let mut s = Script::new(&[("a", a, ACTIVE, 10), ("b", b, ACTIVE, 0)]);
    let policy = Policy {
        drain_timeout: ms(100),
        ..Policy::default()
    };
    let mut r = plan(&["a", "b"]);
    assert_eq!(r.step(s.at(0), &policy, &mut Vec::new()).len(), 1);
    s.set("a", a, DRAINING, 10);
    r.step(s.at(10), &policy, &mut Vec::new());
    let actions = r.step(s.at(200), &policy, &mut Vec::new());
    assert!(
        matches!(actions[..], [Action::Abort(Abort::DrainTimeout { .. })]),
        "{actions:?}"
    );
    assert_eq!(r.nodes[1].phase, Phase::Pending);
}

#[test]
fn a_saved_rollout_resumes_where_it_was() {
    let mut fleet = Behaved::new(&["a", "b", "c"]);
    let mut r = plan(&["a", "b", "c"]);
    let policy = Policy::default();
    for t in 0..4 {
        let actions = r.step(fleet.s.at(t * 10), &policy, &mut Vec::new());
        fleet.react(&actions);
        fleet.tick();
    }
    let json = serde_json::to_string(&r).unwrap();
    let mut back: Rollout = serde_json::from_str(&json).unwrap();
    back.validate().unwrap();
    back.restart_timers(ms(0));
    assert!(back.missed_events);
    let last = fleet.run(&mut back, &policy);
    assert!(last.contains(&Action::Complete), "{last:?}");
    assert_eq!(fleet.order, ["a", "b", "c"], "no node drained twice");
}

#[test]
fn corrupted_saved_states_are_refused_not_panicked_on() {
    let mut r = plan(&["a", "b"]);
    r.nodes[1] = r.nodes[0].clone();
    assert_eq!(r.validate(), Err(Invalid::Duplicate(n("a"))));
    let mut r = plan(&["a"]);
    r.nodes[0].phase = Phase::Draining {
        instance: Uuid::nil(),
        since: ms(0),
    };
    assert_eq!(r.validate(), Err(Invalid::NoInstance(n("a"))));
    assert_eq!(
        Rollout::new("x;y".into(), vec![n("a")]).validate(),
        Err(Invalid::BadId("x;y".into()))
    );
    assert_eq!(plan(&[]).validate(), Err(Invalid::Empty));
    for garbage in [
        r#"{"id":"ab","nodes":[{"phase":{"phase":"draining"},"result":{}}]}"#,
        r#"{"id":"ab","nodes":[{"phase":{"phase":"pending"},"result":{"name":"evil;touch /tmp/x"}}]}"#,
        r#"{"id":"ab","nodes":"x"}"#,
    ] {
        assert!(
            serde_json::from_str::<Rollout>(garbage).is_err(),
            "{garbage}"
        );
    }
}
