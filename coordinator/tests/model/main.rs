//! A model-based test of the rollout: the real engine, step function and resume logic against
//! an in-memory cluster ([`sim`]), over random fleets and random interleavings of what can go
//! wrong: events forged, duplicated, reordered and lost; records forged; nodes that miss their
//! drain, vanish mid-drain, or whose replacement takes the name over early; the coordinator
//! killed at random moments (in any phase, `--exec` included) and resumed from its saved state;
//! its clock jumping; its lock stolen.
//!
//! Properties, for every case:
//! - never more planned nodes without an active instance than `--max-parallel`;
//! - no replacement is ever drained, no command a node would refuse is sent, and nothing is
//!   sent once the lock is someone else's;
//! - no panic;
//! - when the fleet behaves (nothing forged that can make a node unreadable, no stolen lock,
//!   clocks within the skew, every drain deliverable within the retries), the rollout completes
//!   and every node runs a new instance.
//!
//! `PROPTEST_CASES` sets the number of cases (default below); CI runs the default.

mod sim;

use ebb_coordinator::commands::rolling_restart;
use ebb_coordinator::lock::Lock;
use ebb_coordinator::progress::Progress;
use ebb_coordinator::rollout::engine::Engine;
use ebb_coordinator::rollout::report::{Report, Status};
use ebb_coordinator::rollout::{MaxParallel, Overrides, Policy, Rollout};
use ebb_proto::NodeName;
use ebb_proto::control::Mode;
use proptest::prelude::*;
use sim::{Behavior, Network, SimIo, TICK, World};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const LOCK_TTL: Duration = Duration::from_secs(3);
/// Longest virtual time a case may take.
const CASE_LIMIT: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone)]
struct Scenario {
    nodes: Vec<Behavior>,
    network: Network,
    max_parallel: usize,
    exec: bool,
    abort_on_lost: bool,
    /// Virtual ms at which the coordinator is killed (SIGKILL: nothing cleaned up).
    crashes: Vec<u64>,
    /// (virtual ms, the coordinator clock's new offset from the nodes').
    jumps: Vec<(u64, i64)>,
    steal_at: Option<u64>,
    /// (virtual ms, mode) written to the rollout's control value, as `ebb rollout` would.
    controls: Vec<(u64, Mode)>,
    seed: u64,
}

impl Scenario {
    /// Nothing happens that should stop the rollout: it must complete. (With events lost, a
    /// clean exit can look like a crash, and `--on-node-lost abort` rightly stops on it.)
    fn behaves(&self) -> bool {
        let skew = ebb_proto::keys::MAX_CLOCK_SKEW.as_millis() as i64;
        self.network.forged_records == 0.0
            && !(self.abort_on_lost && self.network.drop_events > 0.0)
            && self.controls.iter().all(|(_, mode)| *mode == Mode::Running)
            && self.steal_at.is_none()
            && self.jumps.iter().all(|(_, offset)| offset.abs() < skew / 2)
            && self
                .nodes
                .iter()
                .all(|b| b.deaf_for <= 2 && (b.killed_after.is_none() || !self.abort_on_lost))
            && !(self.exec && self.nodes.iter().any(|b| b.early_replacement))
    }
}

fn behavior() -> impl Strategy<Value = Behavior> {
    (
        0u64..40,
        1u64..10,
        1u32..40,
        prop_oneof![6 => Just(0u32), 1 => 1u32..4],
        prop_oneof![8 => Just(None), 1 => (1u32..10).prop_map(Some)],
        prop::bool::weighted(0.15),
    )
        .prop_map(
            |(connections, close_per_tick, restart_ticks, deaf_for, killed_after, early)| {
                Behavior {
                    connections,
                    close_per_tick,
                    restart_ticks,
                    deaf_for,
                    killed_after,
                    early_replacement: early,
                }
            },
        )
}

fn network() -> impl Strategy<Value = Network> {
    (
        prop_oneof![Just(0.0), 0.0..0.5f64],
        prop_oneof![Just(0.0), 0.0..0.5f64],
        prop_oneof![Just(0.0), 0.0..0.5f64],
        prop_oneof![Just(0.0), 0.0..2.0f64],
        prop_oneof![4 => Just(0.0), 1 => 0.0..0.05f64],
    )
        .prop_map(|(drop, dup, delay, forged, records)| Network {
            drop_events: drop,
            duplicate_events: dup,
            delay_events: delay,
            forged_per_tick: forged,
            forged_records: records,
        })
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Paused), Just(Mode::Running), Just(Mode::Aborted)]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(behavior(), 2..7),
        network(),
        1usize..4,
        prop::bool::weighted(0.25),
        prop::bool::weighted(0.25),
        prop::collection::vec(0u64..20_000, 0..4),
        prop::collection::vec((0u64..20_000, -20_000i64..20_000), 0..3),
        prop_oneof![6 => Just(None), 1 => (0u64..10_000).prop_map(Some)],
        prop_oneof![
            3 => Just(Vec::new()),
            1 => prop::collection::vec((0u64..15_000, mode()), 1..4),
        ],
        any::<u64>(),
    )
        .prop_map(
            |(
                nodes,
                network,
                max_parallel,
                exec,
                abort_on_lost,
                mut crashes,
                jumps,
                steal,
                mut controls,
                seed,
            )| {
                crashes.sort();
                controls.sort_by_key(|(at, _)| *at);
                // Small jumps in most cases, so the "behaves" property is exercised often.
                let jumps = jumps
                    .into_iter()
                    .map(|(at, offset)| (at, if seed % 3 == 0 { offset } else { offset / 10 }))
                    .collect();
                Scenario {
                    nodes,
                    network,
                    max_parallel,
                    exec,
                    abort_on_lost,
                    crashes,
                    jumps,
                    steal_at: steal,
                    controls,
                    seed,
                }
            },
        )
}

/// What a case ended with.
#[derive(Debug)]
struct Ended {
    report: Option<Report>,
    log: sim::Log,
    all_replaced: bool,
    stolen: bool,
}

fn policy(s: &Scenario) -> Policy {
    Policy {
        max_parallel: MaxParallel::Count(s.max_parallel),
        ack_timeout: Duration::from_millis(500),
        drain_timeout: Duration::from_secs(60),
        exit_timeout: Duration::from_secs(20),
        replace_timeout: Duration::from_secs(30),
        exec: s.exec,
        abort_on_lost: s.abort_on_lost,
        ..Policy::default()
    }
}

fn plan(s: &Scenario) -> Vec<(NodeName, Behavior)> {
    s.nodes
        .iter()
        .enumerate()
        .map(|(i, b)| (NodeName::parse(&format!("n{i}")).unwrap(), b.clone()))
        .collect()
}

fn run(s: &Scenario) -> Ended {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(run_async(s))
}

async fn run_async(s: &Scenario) -> Ended {
    let world = World::new(s.seed, plan(s), s.network.clone());
    let start = Instant::now();
    let driver = tokio::spawn(drive(world.clone(), s.clone(), start));
    let names: Vec<NodeName> = plan(s).into_iter().map(|(n, _)| n).collect();
    let mut prepared = rolling_restart::Prepared {
        rollout: Rollout::new("abc123".into(), names.clone()),
        policy: policy(s),
        exec: s.exec.then(|| "restart {name}".to_owned()),
        check: None,
        request: None,
    };
    let mut crashes = s
        .crashes
        .iter()
        .map(|ms| start + Duration::from_millis(*ms));
    let mut holder = 0;
    let report = loop {
        holder += 1;
        let value = format!("coordinator-{holder}");
        if !take_lock(&world, &value).await {
            break None;
        }
        let lock = Lock::held("ebb:{model}:rollout:lock".into(), value, LOCK_TTL);
        let engine = Engine {
            io: SimIo::new(world.clone()),
            policy: prepared.policy.clone(),
            exec: prepared.exec.clone(),
            check: prepared.check.clone(),
            request: prepared.request.clone(),
            redis_grace: Duration::from_secs(30),
            lock,
        };
        let rollout = prepared.rollout.clone();
        let mut task = tokio::spawn(async move {
            engine
                .run(rollout, &mut Progress::silent(), CancellationToken::new())
                .await
        });
        let crash = crashes.next();
        tokio::select! {
            done = &mut task => break Some(done.expect("the engine does not panic")),
            () = sleep_until(crash) => task.abort(),
            () = tokio::time::sleep_until(start + CASE_LIMIT) => { task.abort(); break None; }
        }
        let _ = task.await;
        // kill -9, then `ebb rolling-restart --resume` (a fresh start when nothing was saved:
        // saved before acting, so nothing was sent either).
        let saved = world.lock().unwrap().state.clone();
        prepared = match saved {
            None => rolling_restart::Prepared {
                rollout: Rollout::new("abc124".into(), names.clone()),
                ..prepared
            },
            Some(json) => {
                let saved = rolling_restart::read_saved(&json).expect("the saved state reads back");
                let given = rolling_restart::Given {
                    overrides: &Overrides::default(),
                    exec: None,
                    check: None,
                };
                rolling_restart::resume(saved, given).expect("resumed under its own rules")
            }
        };
    };
    driver.abort();
    let world = world.lock().unwrap();
    Ended {
        report,
        log: world.log.clone(),
        all_replaced: world.all_replaced(),
        stolen: world.stolen,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits for the previous holder's lock to expire, as `--resume` does.
async fn take_lock(world: &sim::Shared, value: &str) -> bool {
    for _ in 0..1000 {
        if world.lock().unwrap().take_lock(value, LOCK_TTL) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The nodes' world ticks; clock jumps and the lock theft happen on schedule.
async fn drive(world: sim::Shared, s: Scenario, start: Instant) {
    let mut jumps = s.jumps.clone();
    jumps.sort();
    let mut jumps = jumps.into_iter().peekable();
    let mut steal = s.steal_at;
    let mut controls = s.controls.clone().into_iter().peekable();
    loop {
        tokio::time::sleep(TICK).await;
        let now = start.elapsed().as_millis() as u64;
        let mut w = world.lock().unwrap();
        while let Some((_, mode)) = controls.next_if(|(at, _)| *at <= now) {
            // The rollout running now: the saved one, else the first.
            let id = w
                .state
                .as_deref()
                .and_then(|json| serde_json::from_str::<serde_json::Value>(json).ok())
                .and_then(|saved| saved["rollout"]["id"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "abc123".to_owned());
            w.steer(&id, mode);
        }
        while let Some((_, offset)) = jumps.next_if(|(at, _)| *at <= now) {
            w.coordinator_offset_ms = offset;
        }
        if steal.is_some_and(|at| at <= now) {
            steal = None;
            w.steal_lock();
        }
        w.step();
    }
}

fn check(s: &Scenario, ended: &Ended) -> Result<(), TestCaseError> {
    let log = &ended.log;
    prop_assert!(
        log.most_out <= s.max_parallel,
        "{} nodes out at once, --max-parallel {}",
        log.most_out,
        s.max_parallel
    );
    prop_assert!(log.violations.is_empty(), "{:?}", log.violations);
    prop_assert_eq!(
        log.commands_after_steal,
        0,
        "commands sent after the lock was lost"
    );
    if ended.stolen
        && let Some(report) = &ended.report
    {
        prop_assert!(report.status != Status::Completed || ended.all_replaced);
    }
    if s.behaves() {
        let report = ended.report.as_ref();
        prop_assert_eq!(
            report.map(|r| r.status),
            Some(Status::Completed),
            "{:?}",
            report.map(|r| &r.reason)
        );
        prop_assert!(ended.all_replaced, "completed but not every node is new");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_rollout_never_takes_more_out_than_allowed_and_completes_when_the_fleet_behaves(
        s in scenario()
    ) {
        let ended = run(&s);
        check(&s, &ended)?;
    }
}

/// A fixed hostile case, so a regression shows with a readable name: events flooding in forged
/// while every node drains, two coordinator crashes, one of them mid-`--exec`.
#[test]
fn a_forged_flood_and_two_crashes_mid_exec_change_nothing() {
    let node = Behavior {
        connections: 30,
        close_per_tick: 2,
        restart_ticks: 10,
        deaf_for: 0,
        killed_after: None,
        early_replacement: false,
    };
    let s = Scenario {
        nodes: vec![node.clone(), node.clone(), node],
        network: Network {
            forged_per_tick: 1.0,
            duplicate_events: 0.3,
            delay_events: 0.3,
            ..Network::default()
        },
        max_parallel: 1,
        exec: true,
        abort_on_lost: false,
        crashes: vec![900, 2_300],
        jumps: vec![],
        steal_at: None,
        controls: vec![],
        seed: 7,
    };
    let ended = run(&s);
    check(&s, &ended).unwrap();
    assert_eq!(ended.log.most_out, 1);
}
