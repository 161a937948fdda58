//! Target choice against scripted observations.

use super::*;
use crate::rollout::MaxParallel;
use crate::rollout::testkit::*;
use uuid::Uuid;

/// Nodes `names` with these connection counts, each with its own URL.
fn script(nodes: &[(&str, u64)]) -> (Script, Vec<NodeRun>, Vec<Uuid>) {
    let ids: Vec<Uuid> = nodes.iter().map(|_| Uuid::new_v4()).collect();
    let listed: Vec<_> = nodes
        .iter()
        .zip(&ids)
        .map(|((name, c), id)| (*name, *id, ACTIVE, *c))
        .collect();
    let mut s = Script::new(&listed);
    for (name, _) in nodes {
        s.obs.nodes.get_mut(&n(name)).unwrap().url = format!("ws://{name}:8080/ws");
    }
    let runs = nodes
        .iter()
        .map(|(name, _)| NodeRun::new(n(name)))
        .collect();
    (s, runs, ids)
}

fn admit(runs: &mut [NodeRun], i: usize, instance: Uuid) {
    runs[i].result.old_instance = Some(instance);
    runs[i].phase = Phase::Acking {
        instance,
        sent_at: ms(0),
        attempts: 1,
    };
}

fn urls(targets: &[Target]) -> Vec<(String, u64)> {
    targets
        .iter()
        .map(|t| {
            (
                t.url
                    .trim_start_matches("ws://")
                    .trim_end_matches(":8080/ws")
                    .to_owned(),
                t.weight,
            )
        })
        .collect()
}

#[test]
fn the_first_node_sends_its_clients_past_the_next_one_to_be_drained() {
    let (s, mut runs, ids) = script(&[("a", 1000), ("b", 1000), ("c", 1000)]);
    admit(&mut runs, 0, ids[0]);
    let targets = for_drain(&runs, &s.obs, &Policy::default(), 0, 0);
    assert_eq!(
        urls(&targets),
        [("c".to_owned(), 500)],
        "b is drained next; c lacks 500 of an even 1500"
    );
}

#[test]
fn restarted_nodes_come_first_while_they_have_room() {
    let (mut s, mut runs, ids) = script(&[("a", 0), ("b", 1000), ("c", 2000)]);
    runs[0].phase = Phase::Done;
    admit(&mut runs, 1, ids[1]);
    s.set("a", Uuid::new_v4(), ACTIVE, 0);
    s.obs.nodes.get_mut(&n("a")).unwrap().url = "ws://a:8080/ws".into();
    let targets = for_drain(&runs, &s.obs, &Policy::default(), 1, 0);
    assert_eq!(
        urls(&targets),
        [("a".to_owned(), 1500)],
        "c is next; a lacks its half of the 3000 that a and c will hold"
    );
}

#[test]
fn known_capacities_weigh_by_room_and_no_url_that_cannot_be_a_target_is_used() {
    let (mut s, mut runs, ids) = script(&[("a", 100), ("b", 200), ("c", 500), ("d", 0)]);
    s.capacity("a", 1000);
    s.capacity("b", 1000);
    s.capacity("c", 1000);
    s.capacity("d", 1000);
    s.obs.nodes.get_mut(&n("d")).unwrap().url = format!("ws://{}/ws", "d".repeat(80));
    runs.iter_mut().skip(1).for_each(|r| r.phase = Phase::Done);
    admit(&mut runs, 0, ids[0]);
    let targets = for_drain(&runs, &s.obs, &Policy::default(), 0, 0);
    assert_eq!(
        urls(&targets),
        [("b".to_owned(), 200), ("c".to_owned(), 1)],
        "of 800 over two equal capacities, b lacks 200 and c none"
    );
}

#[test]
fn nodes_in_flight_are_never_targets_and_a_lone_survivor_is() {
    let (s, mut runs, ids) = script(&[("a", 10), ("b", 10), ("c", 10)]);
    let policy = Policy {
        max_parallel: MaxParallel::Count(2),
        ..Policy::default()
    };
    admit(&mut runs, 0, ids[0]);
    admit(&mut runs, 1, ids[1]);
    let targets = for_drain(&runs, &s.obs, &policy, 1, 0);
    assert_eq!(urls(&targets).len(), 1);
    assert_eq!(
        urls(&targets)[0].0,
        "c",
        "soon to be drained, but the only one left"
    );
}

#[test]
fn a_full_node_is_never_a_target_while_another_has_a_seat() {
    let (mut s, mut runs, ids) = script(&[("a", 100), ("b", 1000), ("c", 900)]);
    s.capacity("a", 1000);
    s.capacity("b", 1000);
    s.capacity("c", 1000);
    runs.iter_mut().skip(1).for_each(|r| r.phase = Phase::Done);
    admit(&mut runs, 0, ids[0]);
    let targets = for_drain(&runs, &s.obs, &Policy::default(), 0, 0);
    assert_eq!(
        urls(&targets),
        [("c".to_owned(), 100)],
        "b is full; c has 100 seats"
    );
    s.obs.nodes.get_mut(&n("c")).unwrap().connections = 1000;
    let targets = for_drain(&runs, &s.obs, &Policy::default(), 0, 0);
    assert_eq!(
        urls(&targets).len(),
        2,
        "all full: the clients' own fallback decides"
    );
}

#[test]
fn clients_still_on_their_way_count_on_the_node_they_head_for() {
    let (mut s, mut runs, ids) = script(&[("a", 10), ("b", 0), ("c", 100), ("d", 100), ("e", 100)]);
    runs[0].phase = Phase::Done;
    runs[1].phase = Phase::Done;
    // b's drain just ended and sent its 90 clients to a; they are still arriving.
    runs[1].result.drained_at = Some(ms(5_000));
    runs[1].result.targets = vec!["ws://a:8080/ws".into()];
    runs[1].result.connections_before = 90;
    s.obs.nodes.get_mut(&n("b")).unwrap().url = "ws://b:8080/ws".into();
    admit(&mut runs, 2, ids[2]);
    let blind = for_drain(&runs, &s.obs, &Policy::default(), 2, 0);
    assert_eq!(
        urls(&blind),
        [("b".to_owned(), 78), ("a".to_owned(), 68)],
        "counting only what the records say, a looks nearly as empty as b"
    );
    let targets = for_drain(&runs, &s.obs, &Policy::default(), 2, 400);
    assert_eq!(
        urls(&targets),
        [("b".to_owned(), 100), ("a".to_owned(), 1)],
        "with a's 90 arriving clients counted, c's clients go to b"
    );
}

#[test]
fn clients_that_left_the_fleet_are_not_counted_as_on_their_way() {
    let (mut s, mut runs, ids) = script(&[("a", 10), ("b", 0), ("c", 100), ("d", 100)]);
    runs[0].phase = Phase::Done;
    runs[1].phase = Phase::Done;
    runs[1].result.drained_at = Some(ms(5_000));
    runs[1].result.targets = vec!["ws://a:8080/ws".into()];
    runs[1].result.connections_before = 20;
    s.obs.nodes.get_mut(&n("b")).unwrap().url = "ws://b:8080/ws".into();
    admit(&mut runs, 2, ids[2]);
    // The fleet once held 10,000: b moved only 20 of them.
    let targets = for_drain(&runs, &s.obs, &Policy::default(), 2, 10_000);
    let capped = for_drain(&runs, &s.obs, &Policy::default(), 2, 230);
    assert_eq!(urls(&targets), urls(&capped));
}
