//! One node's machine against scripted observations: no Redis, no clock.

use super::*;
use crate::rollout::observe::DrainedInfo;
use crate::rollout::testkit::*;

/// A node `a` admitted at `t`, with `b` active beside it.
fn admitted(s: &mut Script, old: Uuid, t: u64) -> NodeRun {
    admitted_with(s, old, t, &Policy::default())
}

fn admitted_with(s: &mut Script, old: Uuid, t: u64, policy: &Policy) -> NodeRun {
    let mut run = NodeRun::new(n("a"));
    let view = s.obs.nodes[&n("a")].clone();
    let action = run.start(&view, s.at(t), policy, 2);
    assert_eq!(
        action,
        NodeAction::SendDrain {
            instance: old,
            attempt: 1
        }
    );
    run
}

fn step(run: &mut NodeRun, obs: &Observation, policy: &Policy) -> NodeAction {
    step_with(run, obs, policy, None)
}

fn step_with(
    run: &mut NodeRun,
    obs: &Observation,
    policy: &Policy,
    input: Option<NodeInput>,
) -> NodeAction {
    let ctx = Ctx {
        obs,
        policy,
        missed_events: false,
    };
    run.step(ctx, input)
}

#[test]
fn a_node_is_drained_replaced_and_settled() {
    let [a, a2, b] = ids();
    let mut s = Script::new(&[("a", a, ACTIVE, 7), ("b", b, ACTIVE, 0)]);
    s.obs.drained.insert(
        a,
        DrainedInfo {
            clean: 7,
            forced: 0,
        },
    );
    let policy = Policy {
        settle: ms(100),
        ..Policy::default()
    };
    let mut run = admitted(&mut s, a, 0);
    assert_eq!(
        step(&mut run, s.at(10), &policy),
        NodeAction::Wait,
        "not acked"
    );
    s.set("a", a, DRAINING, 9);
    assert_eq!(step(&mut run, s.at(20), &policy), NodeAction::Wait);
    assert!(matches!(run.phase, Phase::Draining { .. }));
    assert_eq!(run.result.connections_before, 9, "the higher count seen");
    s.set("a", a, DRAINING, 0);
    assert_eq!(step(&mut run, s.at(120), &policy), NodeAction::Wait);
    assert!(matches!(run.phase, Phase::Exiting { .. }));
    s.remove("a");
    s.drop_copy(a);
    assert_eq!(step(&mut run, s.at(150), &policy), NodeAction::Wait);
    assert!(matches!(run.phase, Phase::Replacing { .. }));
    s.set("a", a2, ACTIVE, 0);
    assert_eq!(step(&mut run, s.at(400), &policy), NodeAction::Wait);
    assert!(matches!(run.phase, Phase::Settling { .. }));
    assert_eq!(step(&mut run, s.at(500), &policy), NodeAction::Done);
    let r = &run.result;
    assert_eq!((r.old_instance, r.new_instance), (Some(a), Some(a2)));
    assert_eq!((r.drain_ms, r.restart_ms), (Some(120), Some(280)));
    assert_eq!((r.clean_closes, r.forced_closes), (Some(7), Some(0)));
    assert!(!r.lost);
}

#[test]
fn an_unacknowledged_drain_is_resent_then_given_up_on() {
    let [a, b] = ids();
    let mut s = Script::new(&[("a", a, ACTIVE, 1), ("b", b, ACTIVE, 0)]);
    let policy = Policy {
        ack_timeout: ms(1000),
        ack_retries: 2,
        ..Policy::default()
    };
    let mut run = admitted(&mut s, a, 0);
    assert_eq!(step(&mut run, s.at(999), &policy), NodeAction::Wait);
    for (t, attempt) in [(1000, 2), (2000, 3)] {
        assert_eq!(
            step(&mut run, s.at(t), &policy),
            NodeAction::SendDrain {
                instance: a,
                attempt
            }
        );
    }
    assert_eq!(
        step(&mut run, s.at(3000), &policy),
        NodeAction::Abort(Abort::NoAck {
            node: n("a"),
            attempts: 3
        })
    );
}

#[test]
fn a_drain_that_could_not_be_sent_is_not_an_attempt() {
    let [a, b] = ids();
    let mut s = Script::new(&[("a", a, ACTIVE, 1), ("b", b, ACTIVE, 0)]);
    let policy = Policy {
        ack_timeout: ms(1000),
        ack_retries: 0,
        ..Policy::default()
    };
    let mut run = admitted(&mut s, a, 0);
    let failed = Some(NodeInput::SendFailed);
    // Zero attempts made: a retry is allowed although retries are 0.
    assert_eq!(
        step_with(&mut run, s.at(1000), &policy, failed),
        NodeAction::SendDrain {
            instance: a,
            attempt: 1
        }
    );
}

#[test]
fn a_node_resumed_mid_drain_or_never_emptying_stops_the_rollout() {
    let [a, b] = ids();
    let mut s = Script::new(&[("a", a, ACTIVE, 5), ("b", b, ACTIVE, 0)]);
    let policy = Policy {
        drain_timeout: ms(1000),
        ..Policy::default()
    };
    let mut run = admitted(&mut s, a, 0);
    s.set("a", a, DRAINING, 5);
    assert_eq!(step(&mut run, s.at(10), &policy), NodeAction::Wait);
    assert_eq!(
        step(&mut run, s.at(1010), &policy),
        NodeAction::Abort(Abort::DrainTimeout {
            node: n("a"),
            connections: 5
        })
    );
    s.set("a", a, ACTIVE, 5);
    assert_eq!(
        step(&mut run, s.at(1020), &policy),
        NodeAction::Abort(Abort::Resumed { node: n("a") })
    );
}

#[test]
fn a_replacement_that_took_the_name_over_waits_for_the_old_instance() {
    let [a, a2, b] = ids();
    let mut s = Script::new(&[("a", a, ACTIVE, 5), ("b", b, ACTIVE, 0)]);
    let policy = Policy::default();
    let mut run = admitted(&mut s, a, 0);
    s.set("a", a, DRAINING, 5);
    step(&mut run, s.at(10), &policy);
    // The replacement owns the record; the old instance still holds clients.
    s.set("a", a2, ACTIVE, 0);
    s.copy(a, DRAINING, 4);
    assert_eq!(step(&mut run, s.at(20), &policy), NodeAction::Wait);
    assert!(
        matches!(run.phase, Phase::Draining { .. }),
        "{:?}",
        run.phase
    );
    s.copy(a, DRAINED, 0);
    assert_eq!(step(&mut run, s.at(30), &policy), NodeAction::Wait);
    assert!(
        matches!(run.phase, Phase::Exiting { .. }),
        "{:?}",
        run.phase
    );
    s.drop_copy(a);
    assert_eq!(step(&mut run, s.at(40), &policy), NodeAction::Done);
    assert_eq!(run.result.new_instance, Some(a2));
}

#[test]
fn an_old_instance_that_shows_up_again_is_waited_for() {
    let [a, a2, b] = ids();
    let mut s = Script::new(&[("a", a, ACTIVE, 5), ("b", b, ACTIVE, 0)]);
    let policy = Policy::default();
    let mut run = admitted(&mut s, a, 0);
    s.set("a", a, DRAINED, 0);
    step(&mut run, s.at(10), &policy);
    s.remove("a");
    step(&mut run, s.at(20), &policy);
    assert!(matches!(run.phase, Phase::Replacing { .. }));
    // A partition healed: the old instance's copy is back, and a new instance is active.
    s.copy(a, DRAINED, 0);
    s.set("a", a2, ACTIVE, 0);
    assert_eq!(step(&mut run, s.at(30), &policy), NodeAction::Wait);
    assert!(
        matches!(run.phase, Phase::Exiting { .. }),
        "{:?}",
        run.phase
    );
}

#[test]
fn no_leftover_or_replayed_record_counts_as_the_replacement() {
    let [a, old, b] = ids();
    let mut s = Script::new(&[("a", a, ACTIVE, 0), ("b", b, ACTIVE, 0)]);
    let policy = Policy {
        replace_timeout: ms(1000),
        ..Policy::default()
    };
    let mut run = admitted(&mut s, a, 100_000);
    s.set("a", a, DRAINED, 0);
    step(&mut run, s.at(100_010), &policy);
    s.remove("a");
    step(&mut run, s.at(100_020), &policy);
    assert!(matches!(run.phase, Phase::Replacing { .. }));
    // An active record of an instance that started long before the drain began.
    let mut stale = s.view(old, ACTIVE, 0);
    stale.started_at_ms = WALL;
    s.obs.nodes.insert(n("a"), stale);
    assert_eq!(step(&mut run, s.at(100_030), &policy), NodeAction::Wait);
    assert_eq!(
        step(&mut run, s.at(101_020), &policy),
        NodeAction::Abort(Abort::NoReplacement { node: n("a") })
    );
}

#[test]
fn drained_but_never_exiting_aborts() {
    let [a, b] = ids();
    let mut s = Script::new(&[("a", a, ACTIVE, 0), ("b", b, ACTIVE, 0)]);
    let policy = Policy {
        exit_timeout: ms(500),
        ..Policy::default()
    };
    let mut run = admitted(&mut s, a, 0);
    s.set("a", a, DRAINED, 0);
    assert_eq!(step(&mut run, s.at(10), &policy), NodeAction::Wait);
    assert_eq!(
        step(&mut run, s.at(510), &policy),
        NodeAction::Abort(Abort::NoExit { node: n("a") })
    );
}

#[test]
fn a_node_killed_mid_drain_waits_for_its_replacement_or_aborts() {
    let [a, a2, b] = ids();
    for abort_on_lost in [false, true] {
        let mut s = Script::new(&[("a", a, ACTIVE, 5), ("b", b, ACTIVE, 0)]);
        let policy = Policy {
            abort_on_lost,
            ..Policy::default()
        };
        let mut run = admitted(&mut s, a, 0);
        s.set("a", a, DRAINING, 5);
        step(&mut run, s.at(10), &policy);
        s.remove("a");
        let action = step(&mut run, s.at(20), &policy);
        assert!(run.result.lost);
        if abort_on_lost {
            assert_eq!(action, NodeAction::Wait, "its goodbye may still come");
            let later = 20 + LOST_GRACE.as_millis() as u64;
            assert_eq!(
                step(&mut run, s.at(later), &policy),
                NodeAction::Abort(Abort::Lost { node: n("a") })
            );
            continue;
        }
        assert_eq!(action, NodeAction::Wait);
        s.set("a", a2, ACTIVE, 0);
        assert_eq!(step(&mut run, s.at(30), &policy), NodeAction::Done);
    }
}

#[test]
fn a_goodbye_that_trails_the_record_is_not_a_loss() {
    let [a, a2, b] = ids();
    for abort_on_lost in [false, true] {
        let mut s = Script::new(&[("a", a, ACTIVE, 0), ("b", b, ACTIVE, 0)]);
        s.obs.set_watched([(a, n("a"))]);
        let policy = Policy {
            abort_on_lost,
            ..Policy::default()
        };
        let mut run = admitted(&mut s, a, 0);
        // Idle: drained and deregistered before the first look; the event comes after.
        s.remove("a");
        step(&mut run, s.at(5), &policy);
        s.obs.deregistered.insert(a);
        s.set("a", a2, ACTIVE, 0);
        assert_eq!(step(&mut run, s.at(10), &policy), NodeAction::Done);
        assert!(!run.result.lost, "abort_on_lost {abort_on_lost}");
    }
}

#[test]
fn a_node_that_drains_and_exits_between_two_looks_is_not_lost() {
    let [a, b] = ids();
    let mut s = Script::new(&[("a", a, ACTIVE, 0), ("b", b, ACTIVE, 0)]);
    let policy = Policy {
        abort_on_lost: true,
        ..Policy::default()
    };
    let mut run = admitted(&mut s, a, 0);
    s.remove("a");
    s.obs.deregistered.insert(a);
    assert_eq!(step(&mut run, s.at(5), &policy), NodeAction::Wait);
    assert!(!run.result.lost);
    assert!(matches!(run.phase, Phase::Replacing { .. }));
}

#[test]
fn exec_runs_after_the_drain_and_again_after_a_resume_only_if_needed() {
    let [a, a2, b] = ids();
    let mut s = Script::new(&[("a", a, ACTIVE, 1), ("b", b, ACTIVE, 0)]);
    let policy = Policy {
        exec: true,
        ..Policy::default()
    };
    let mut run = admitted(&mut s, a, 0);
    s.set("a", a, DRAINED, 0);
    assert_eq!(
        step(&mut run, s.at(10), &policy),
        NodeAction::RunExec { instance: a }
    );
    assert_eq!(
        step(&mut run, s.at(20), &policy),
        NodeAction::Wait,
        "running"
    );

    // The coordinator died while the command ran; a new one resumes. The node is still there,
    // drained: the command runs again.
    let mut resumed = run.clone();
    resumed.restart_timers(ms(0));
    assert_eq!(
        step(&mut resumed, s.at(0), &policy),
        NodeAction::RunExec { instance: a }
    );
    // Had the command already restarted it, it is not run twice.
    let mut resumed = run.clone();
    resumed.restart_timers(ms(0));
    s.set("a", a2, ACTIVE, 0);
    assert_eq!(step(&mut resumed, s.at(0), &policy), NodeAction::Done);
    // But an instance that was there before the command ran is not what it started.
    let mut resumed = run.clone();
    resumed.restart_timers(ms(0));
    resumed.result.known_before.insert(a2);
    assert_eq!(
        step(&mut resumed, s.at(0), &policy),
        NodeAction::RunExec { instance: a }
    );

    let failed = Some(NodeInput::ExecDone(Err("boom".into())));
    assert_eq!(
        step_with(&mut run, s.at(30), &policy, failed),
        NodeAction::Abort(Abort::ExecFailed {
            node: n("a"),
            message: "boom".into()
        })
    );
}

#[test]
fn ephemeral_names_wait_for_a_new_instance_and_the_active_count() {
    let [a, b, c] = ids();
    let mut s = Script::new(&[("a", a, ACTIVE, 0), ("b", b, ACTIVE, 0)]);
    let policy = Policy {
        ephemeral_names: true,
        ..Policy::default()
    };
    let mut run = admitted_with(&mut s, a, 0, &policy);
    s.set("a", a, DRAINED, 0);
    step(&mut run, s.at(10), &policy);
    s.remove("a");
    assert_eq!(step(&mut run, s.at(20), &policy), NodeAction::Wait);
    s.set("pod-x", c, ACTIVE, 0);
    assert_eq!(step(&mut run, s.at(30), &policy), NodeAction::Done);
    assert_eq!(run.result.new_instance, Some(c));
}

#[test]
fn a_run_survives_serialization() {
    let [a, b] = ids();
    let mut s = Script::new(&[("a", a, ACTIVE, 3), ("b", b, ACTIVE, 0)]);
    let policy = Policy::default();
    let mut run = admitted(&mut s, a, 0);
    s.set("a", a, DRAINING, 3);
    step(&mut run, s.at(10), &policy);
    let json = serde_json::to_string(&run).unwrap();
    let back: NodeRun = serde_json::from_str(&json).unwrap();
    assert_eq!(back, run);
}

#[test]
fn min_ready_waits_for_the_same_instance_heartbeating_and_starts_over_on_a_restart() {
    let [a, a2, a3, b] = ids();
    let mut s = Script::new(&[("a", a, ACTIVE, 0), ("b", b, ACTIVE, 0)]);
    let policy = Policy {
        min_ready: ms(1000),
        ..Policy::default()
    };
    let mut run = admitted(&mut s, a, 0);
    s.remove("a");
    s.obs.deregistered.insert(a);
    step(&mut run, s.at(10), &policy);
    s.set("a", a2, ACTIVE, 0);
    assert_eq!(step(&mut run, s.at(20), &policy), NodeAction::Wait);
    assert!(
        matches!(run.phase, Phase::Soaking { new, .. } if new == a2),
        "{:?}",
        run.phase
    );
    // Restarted before the soak ended: it starts over with the new instance.
    s.set("a", a3, ACTIVE, 0);
    assert_eq!(step(&mut run, s.at(900), &policy), NodeAction::Wait);
    assert!(
        matches!(run.phase, Phase::Soaking { new, .. } if new == a3),
        "{:?}",
        run.phase
    );
    // A second after *its* start, and heartbeating: ready.
    s.set("a", a3, ACTIVE, 0);
    assert_eq!(
        step(&mut run, s.at(1500), &policy),
        NodeAction::Wait,
        "not yet"
    );
    s.set("a", a3, ACTIVE, 0);
    assert_eq!(step(&mut run, s.at(1910), &policy), NodeAction::Done);
    assert_eq!(run.result.new_instance, Some(a3));
}

#[test]
fn a_replacement_that_stopped_heartbeating_does_not_pass_its_soak() {
    let [a, a2, b] = ids();
    let mut s = Script::new(&[("a", a, ACTIVE, 0), ("b", b, ACTIVE, 0)]);
    let policy = Policy {
        min_ready: ms(1000),
        ..Policy::default()
    };
    let mut run = admitted(&mut s, a, 0);
    s.remove("a");
    s.obs.deregistered.insert(a);
    step(&mut run, s.at(10), &policy);
    s.set("a", a2, ACTIVE, 0);
    step(&mut run, s.at(20), &policy);
    s.set("a", a2, ACTIVE, 0); // one heartbeat, then it dies (the record lingers)
    assert_eq!(step(&mut run, s.at(30), &policy), NodeAction::Wait);
    assert_eq!(
        step(&mut run, s.at(6_000), &policy),
        NodeAction::Wait,
        "heartbeat too old"
    );
}

#[test]
fn a_failing_check_pauses_or_aborts_and_a_resumed_check_runs_again() {
    let [a, a2, b] = ids();
    for on_fail in [
        crate::rollout::OnCheckFail::Pause,
        crate::rollout::OnCheckFail::Abort,
    ] {
        let mut s = Script::new(&[("a", a, ACTIVE, 0), ("b", b, ACTIVE, 0)]);
        let policy = Policy {
            check: true,
            on_check_fail: on_fail,
            ..Policy::default()
        };
        let mut run = admitted(&mut s, a, 0);
        s.remove("a");
        s.obs.deregistered.insert(a);
        step(&mut run, s.at(10), &policy);
        s.set("a", a2, ACTIVE, 0);
        let url = s.obs.nodes[&n("a")].url.clone();
        assert_eq!(
            step(&mut run, s.at(20), &policy),
            NodeAction::RunCheck { url: url.clone() }
        );
        let mut resumed = run.clone();
        resumed.restart_timers(ms(0));
        assert_eq!(
            step(&mut resumed, s.at(0), &policy),
            NodeAction::RunCheck { url }
        );
        let failed = Some(NodeInput::CheckDone(Err("503 from /health".into())));
        let action = step_with(&mut run, s.at(30), &policy, failed);
        match on_fail {
            crate::rollout::OnCheckFail::Pause => {
                assert!(
                    matches!(&action, NodeAction::Pause(r) if r.contains("503 from /health")),
                    "{action:?}"
                );
                assert_eq!(
                    step(&mut run, s.at(40), &policy),
                    NodeAction::Done,
                    "its restart is done"
                );
            }
            crate::rollout::OnCheckFail::Abort => assert!(
                matches!(&action, NodeAction::Abort(Abort::CheckFailed { output, .. }) if output == "503 from /health"),
                "{action:?}"
            ),
        }
        assert_eq!(run.result.check.as_ref().map(|c| c.ok), Some(false));
    }
}
