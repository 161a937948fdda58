//! Events wake, records confirm.

use super::*;
use crate::rollout::testkit::{WALL, n};

fn record(name: &str, instance: Uuid, state: NodeState, connections: u64, at: u64) -> NodeRecord {
    NodeRecord {
        name: n(name),
        instance,
        url: "ws://x/ws".into(),
        version: "1".into(),
        state,
        connections,
        capacity: None,
        started_at_ms: at,
        updated_at_ms: at,
        ttl_ms: 10_000,
    }
}

fn event(name: &str, instance: Uuid, kind: EventKind) -> Event {
    Event::now("c", n(name), instance, kind)
}

fn observation() -> Observation {
    Observation {
        wall_ms: WALL,
        plan: [n("a"), n("b")].into_iter().collect(),
        ..Observation::default()
    }
}

#[test]
fn no_event_changes_a_view() {
    let a = Uuid::new_v4();
    let mut obs = observation();
    obs.apply_records(&[record("a", a, NodeState::Draining, 10, WALL)]);
    obs.set_watched([(a, n("a"))]);
    for kind in [
        EventKind::Connections { connections: 0 },
        EventKind::State {
            state: NodeState::Drained,
            connections: 0,
        },
        EventKind::Deregistered {},
        EventKind::Registered {
            url: "ws://x/ws".into(),
            state: NodeState::Active,
            connections: 0,
        },
    ] {
        assert_eq!(
            obs.note_event(&event("a", a, kind.clone())),
            Wake::Node(n("a"))
        );
        // A forged "new instance, active" event neither.
        assert_eq!(
            obs.note_event(&event("a", Uuid::new_v4(), kind)),
            Wake::Node(n("a"))
        );
    }
    let view = obs.record(&n("a")).unwrap();
    assert_eq!(
        (view.instance, view.state, view.connections),
        (a, NodeState::Draining, 10)
    );
}

#[test]
fn events_about_unknown_nodes_or_instances_are_not_kept() {
    let a = Uuid::new_v4();
    let mut obs = observation();
    obs.set_watched([(a, n("a"))]);
    for i in 0..10_000u32 {
        let name = format!("x{i}");
        let drained = EventKind::Drained {
            clean: 1,
            forced: 0,
            duration_ms: 1,
            then: ebb_proto::command::Then::Exit,
        };
        assert_eq!(
            obs.note_event(&event(&name, Uuid::new_v4(), drained.clone())),
            Wake::Nothing
        );
        obs.note_event(&event("a", Uuid::new_v4(), drained));
        obs.note_event(&event(
            &name,
            Uuid::new_v4(),
            EventKind::CommandRefused {
                reason: "x".repeat(10_000),
                command_id: None,
                count: None,
                reasons: Default::default(),
            },
        ));
    }
    assert!(obs.drained.is_empty(), "only watched instances are noted");
    assert!(obs.refused.is_empty(), "only planned nodes are noted");
    obs.note_event(&event(
        "a",
        a,
        EventKind::CommandRefused {
            reason: "x".repeat(10_000),
            command_id: None,
            count: None,
            reasons: Default::default(),
        },
    ));
    assert_eq!(obs.refused[&n("a")].len(), 64, "bounded");
    obs.note_event(&event("a", a, EventKind::Deregistered {}));
    assert!(obs.ended_cleanly(a));
    obs.set_watched([]);
    assert!(!obs.ended_cleanly(a), "forgotten once unwatched");
}

#[test]
fn stale_and_future_records_are_not_views() {
    let mut obs = observation();
    let skew = ebb_proto::keys::MAX_CLOCK_SKEW.as_millis() as u64;
    obs.apply_records(&[
        record(
            "a",
            Uuid::new_v4(),
            NodeState::Active,
            0,
            WALL - 10_000 - skew - 1,
        ),
        record("b", Uuid::new_v4(), NodeState::Active, 0, WALL + skew + 1),
        record("c", Uuid::new_v4(), NodeState::Active, 0, WALL),
    ]);
    assert_eq!(obs.nodes.keys().collect::<Vec<_>>(), [&n("c")]);
}

#[test]
fn an_instance_is_known_by_its_record_or_its_own_copy() {
    let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
    let mut obs = observation();
    obs.apply_records(&[record("a", old, NodeState::Draining, 3, WALL)]);
    assert_eq!(obs.instance(&n("a"), old).unwrap().connections, 3);
    obs.apply_record(&n("a"), Some(&record("a", new, NodeState::Active, 0, WALL)));
    assert!(obs.instance(&n("a"), old).is_none());
    obs.set_watched([(old, n("a"))]);
    obs.apply_instance(old, Some(&record("a", old, NodeState::Draining, 2, WALL)));
    assert_eq!(obs.instance(&n("a"), old).unwrap().connections, 2);
    // A copy of some other instance read under this one's key is not it.
    obs.apply_instance(old, Some(&record("a", new, NodeState::Draining, 2, WALL)));
    assert!(obs.instance(&n("a"), old).is_none());
}
