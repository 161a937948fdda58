//! An in-memory cluster for the model test: node processes that follow ebb's protocol (records
//! with TTLs, per-instance copies, signed events, desired state, supervisors that restart them),
//! a lock and a saved state with Redis's semantics, and an attacker and a lossy network between
//! them. It implements the engine's [`Io`], so the real engine runs against it; time is tokio's
//! paused clock, so minutes of rollout take milliseconds and every run is reproducible.

use ebb_coordinator::cluster::{ClusterError, Followed, Intake};
use ebb_coordinator::lock::Lock;
use ebb_coordinator::rollout::io::{Io, Snapshot};
use ebb_proto::command::{self, Action, Command, Then};
use ebb_proto::control::Control;
use ebb_proto::sign::Secret;
use ebb_proto::{Event, EventKind, NodeName, NodeRecord, NodeState};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const CLUSTER: &str = "model";
/// One tick of the nodes' world.
pub const TICK: Duration = Duration::from_millis(50);
pub const TTL: Duration = Duration::from_secs(3);

/// How one node behaves when drained.
#[derive(Debug, Clone)]
pub struct Behavior {
    pub connections: u64,
    /// Connections closed per tick while draining (at least 1).
    pub close_per_tick: u64,
    /// Ticks from exit to the replacement's start.
    pub restart_ticks: u32,
    /// Drain deliveries the node never receives (cut off).
    pub deaf_for: u32,
    /// Killed after this many ticks of draining (no goodbye; its keys expire).
    pub killed_after: Option<u32>,
    /// Its supervisor starts the replacement as soon as the old one starts draining.
    pub early_replacement: bool,
}

/// What goes wrong between the nodes and the coordinator.
#[derive(Debug, Clone, Default)]
pub struct Network {
    pub drop_events: f64,
    pub duplicate_events: f64,
    /// Events held back and delivered later (out of order).
    pub delay_events: f64,
    /// Forged events published per tick (by someone who can only PUBLISH).
    pub forged_per_tick: f64,
    /// Forged records written per tick (unsigned or signed with another key).
    pub forged_records: f64,
}

/// One process of a node.
#[derive(Debug, Clone)]
struct Process {
    name: NodeName,
    instance: Uuid,
    state: NodeState,
    connections: u64,
    started_at_ms: u64,
    then: Then,
    drain_ticks: u32,
    alive: bool,
}

/// What the model checks afterwards.
#[derive(Debug, Default, Clone)]
pub struct Log {
    /// Most planned nodes with no active instance at one moment.
    pub most_out: usize,
    /// Broken rules, in words.
    pub violations: Vec<String>,
    /// Drains applied, per original instance.
    pub drains: HashMap<Uuid, u32>,
    pub commands_after_steal: u32,
    /// When (virtual ms since the start) each original instance was drained, by name.
    pub drained_at: Vec<(u64, NodeName)>,
}

/// The whole world, behind one lock (never held across an await).
pub struct World {
    secret: Secret,
    /// The nodes' wall clock when the world began (ms).
    base_ms: u64,
    rng: StdRng,
    start: Instant,
    /// The coordinator's clock minus the nodes' (clock jumps).
    pub coordinator_offset_ms: i64,
    records: BTreeMap<String, (HashMap<String, String>, Instant)>,
    copies: HashMap<(String, Uuid), (HashMap<String, String>, Instant)>,
    desired: HashMap<NodeName, String>,
    lock: Option<(String, Instant)>,
    pub state: Option<String>,
    /// The rollout's control value, as stored (sealed).
    pub control: Option<String>,
    subscribers: Vec<mpsc::Sender<Followed>>,
    delayed: Vec<(u32, Event)>,
    processes: Vec<Process>,
    behavior: HashMap<NodeName, Behavior>,
    deaf: HashMap<NodeName, u32>,
    restarts: Vec<(u32, NodeName)>,
    pub network: Network,
    /// The instances that existed when the rollout began.
    original: HashSet<Uuid>,
    plan: Vec<NodeName>,
    tick: u32,
    pub stolen: bool,
    pub log: Log,
}

pub type Shared = Arc<Mutex<World>>;

impl World {
    pub fn new(seed: u64, nodes: Vec<(NodeName, Behavior)>, network: Network) -> Shared {
        let mut world = World {
            secret: Secret::new("model-test-secret-0123456789").unwrap(),
            base_ms: ebb_proto::time::now_ms(),
            rng: StdRng::seed_from_u64(seed),
            start: Instant::now(),
            coordinator_offset_ms: 0,
            records: BTreeMap::new(),
            copies: HashMap::new(),
            desired: HashMap::new(),
            lock: None,
            state: None,
            control: None,
            subscribers: Vec::new(),
            delayed: Vec::new(),
            processes: Vec::new(),
            behavior: HashMap::new(),
            deaf: HashMap::new(),
            restarts: Vec::new(),
            network,
            original: HashSet::new(),
            plan: nodes.iter().map(|(n, _)| n.clone()).collect(),
            tick: 0,
            stolen: false,
            log: Log::default(),
        };
        for (name, behavior) in nodes {
            world.deaf.insert(name.clone(), behavior.deaf_for);
            world.behavior.insert(name.clone(), behavior.clone());
            let instance = world.spawn(&name, behavior.connections);
            world.original.insert(instance);
        }
        Arc::new(Mutex::new(world))
    }

    fn node_ms(&self) -> u64 {
        self.base_ms + self.start.elapsed().as_millis() as u64
    }

    fn spawn(&mut self, name: &NodeName, connections: u64) -> Uuid {
        let process = Process {
            name: name.clone(),
            instance: Uuid::new_v4(),
            state: NodeState::Active,
            connections,
            started_at_ms: self.node_ms(),
            then: Then::Exit,
            drain_ticks: 0,
            alive: true,
        };
        let instance = process.instance;
        self.processes.push(process);
        let at = self.processes.len() - 1;
        self.write(at);
        self.publish(
            at,
            EventKind::Registered {
                url: "ws://10.0.0.1:8080/ws".into(),
                state: NodeState::Active,
                connections,
            },
        );
        instance
    }

    /// A heartbeat: the process's copy, and the record unless a newer instance owns it.
    fn write(&mut self, at: usize) {
        let p = &self.processes[at];
        let record = NodeRecord {
            name: p.name.clone(),
            instance: p.instance,
            url: "ws://10.0.0.1:8080/ws".into(),
            version: "1".into(),
            state: p.state,
            connections: p.connections,
            capacity: None,
            started_at_ms: p.started_at_ms,
            updated_at_ms: self.node_ms(),
            ttl_ms: TTL.as_millis() as u64,
        };
        let hash: HashMap<String, String> = record
            .to_fields(CLUSTER, Some(&self.secret))
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let expires = Instant::now() + TTL;
        let key = (p.name.to_string(), p.instance);
        self.copies.insert(key, (hash.clone(), expires));
        let newer = self.processes.iter().any(|q| {
            q.alive
                && q.name == p.name
                && q.started_at_ms > p.started_at_ms
                && q.instance != p.instance
        });
        if !newer {
            self.records.insert(p.name.to_string(), (hash, expires));
        }
    }

    /// A clean exit: record (if its own) and copy removed, then the goodbye.
    fn exit(&mut self, at: usize) {
        let (name, instance) = (self.processes[at].name.clone(), self.processes[at].instance);
        self.copies.remove(&(name.to_string(), instance));
        let owns = self
            .records
            .get(name.as_str())
            .is_some_and(|(h, _)| h.get("instance") == Some(&instance.to_string()));
        if owns {
            self.records.remove(name.as_str());
        }
        self.publish(at, EventKind::Deregistered {});
        self.processes[at].alive = false;
    }

    fn publish(&mut self, at: usize, kind: EventKind) {
        let p = &self.processes[at];
        let event = Event::now(CLUSTER, p.name.clone(), p.instance, kind);
        self.deliver_event(event);
    }

    /// Through the lossy network: dropped, duplicated or held back.
    fn deliver_event(&mut self, event: Event) {
        if self.rng.random_bool(self.network.drop_events) {
            return;
        }
        if self.rng.random_bool(self.network.delay_events) {
            let later = self.tick + self.rng.random_range(1..20);
            self.delayed.push((later, event));
            return;
        }
        let copies = if self.rng.random_bool(self.network.duplicate_events) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            self.broadcast(&event);
        }
    }

    /// To every subscriber; a full queue drops it (as the bounded intake does).
    fn broadcast(&mut self, event: &Event) {
        self.subscribers.retain(|tx| !tx.is_closed());
        for tx in &self.subscribers {
            let _ = tx.try_send(Followed::Event(event.clone()));
        }
    }

    /// One tick of every process, supervisor, attacker and delayed event.
    pub fn step(&mut self) {
        self.tick += 1;
        let due: Vec<Event> = {
            let tick = self.tick;
            let (due, later) = std::mem::take(&mut self.delayed)
                .into_iter()
                .partition(|(at, _)| *at <= tick);
            self.delayed = later;
            due.into_iter().map(|(_, e)| e).collect()
        };
        for event in due {
            self.broadcast(&event);
        }
        for at in 0..self.processes.len() {
            if self.processes[at].alive {
                self.advance(at);
            }
        }
        let tick = self.tick;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.restarts)
            .into_iter()
            .partition(|(t, _)| *t <= tick);
        self.restarts = later;
        for (_, name) in due {
            self.spawn(&name, 0);
        }
        self.attack();
        let now = Instant::now();
        self.records.retain(|_, (_, expires)| *expires > now);
        self.copies.retain(|_, (_, expires)| *expires > now);
        self.check();
    }

    fn advance(&mut self, at: usize) {
        let behavior = self.behavior[&self.processes[at].name].clone();
        let p = &mut self.processes[at];
        match p.state {
            NodeState::Draining => {
                p.drain_ticks += 1;
                if behavior.killed_after.is_some_and(|k| p.drain_ticks >= k)
                    && self.original.contains(&p.instance)
                {
                    // SIGKILL: nothing written, nothing said; its keys expire.
                    p.alive = false;
                    let name = p.name.clone();
                    self.restart_later(&name, behavior.restart_ticks);
                    return;
                }
                p.connections = p.connections.saturating_sub(behavior.close_per_tick.max(1));
                if p.connections == 0 {
                    p.state = NodeState::Drained;
                    self.write(at);
                    self.publish(
                        at,
                        EventKind::State {
                            state: NodeState::Drained,
                            connections: 0,
                        },
                    );
                    self.publish(
                        at,
                        EventKind::Drained {
                            clean: behavior.connections,
                            forced: 0,
                            duration_ms: 1,
                            then: self.processes[at].then,
                        },
                    );
                    if self.processes[at].then == Then::Exit {
                        self.exit(at);
                        if !behavior.early_replacement {
                            let name = self.processes[at].name.clone();
                            self.restart_later(&name, behavior.restart_ticks);
                        }
                    }
                    return;
                }
                self.write(at);
                let connections = self.processes[at].connections;
                self.publish(at, EventKind::Connections { connections });
            }
            _ => self.write(at),
        }
    }

    fn restart_later(&mut self, name: &NodeName, ticks: u32) {
        self.restarts.push((self.tick + ticks.max(1), name.clone()));
    }

    /// Someone who can PUBLISH (and, in some scenarios, write keys) but has no secret.
    fn attack(&mut self) {
        if self.rng.random_bool(self.network.forged_per_tick.min(1.0)) {
            let name = self.plan[self.rng.random_range(0..self.plan.len())].clone();
            let instance = match self.rng.random_range(0..3) {
                0 => Uuid::new_v4(),
                _ => self
                    .processes
                    .iter()
                    .rev()
                    .find(|p| p.name == name)
                    .map_or_else(Uuid::new_v4, |p| p.instance),
            };
            let kind = match self.rng.random_range(0..5) {
                0 => EventKind::Connections { connections: 0 },
                1 => EventKind::State {
                    state: NodeState::Drained,
                    connections: 0,
                },
                2 => EventKind::Deregistered {},
                3 => EventKind::Drained {
                    clean: 1,
                    forced: 0,
                    duration_ms: 1,
                    then: Then::Exit,
                },
                _ => EventKind::Registered {
                    url: "ws://evil/ws".into(),
                    state: NodeState::Active,
                    connections: 0,
                },
            };
            let event = Event::now(CLUSTER, name, instance, kind);
            self.broadcast(&event);
        }
        if self.rng.random_bool(self.network.forged_records.min(1.0)) {
            let name = self.plan[self.rng.random_range(0..self.plan.len())].clone();
            let forged = NodeRecord {
                name: name.clone(),
                instance: Uuid::new_v4(),
                url: "ws://evil/ws".into(),
                version: "1".into(),
                state: NodeState::Active,
                connections: 0,
                capacity: Some(u64::MAX / 2),
                started_at_ms: self.node_ms(),
                updated_at_ms: self.node_ms(),
                ttl_ms: TTL.as_millis() as u64,
            };
            let wrong = Secret::new("not-the-clusters-secret!").unwrap();
            let key = if self.rng.random_bool(0.5) {
                Some(&wrong)
            } else {
                None
            };
            let hash = forged
                .to_fields(CLUSTER, key)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            self.records
                .insert(name.to_string(), (hash, Instant::now() + TTL));
        }
    }

    /// The invariant, after every change: never more planned nodes without an active instance
    /// than allowed (checked by the caller against the policy).
    fn check(&mut self) {
        let out = self
            .plan
            .iter()
            .filter(|name| {
                !self
                    .processes
                    .iter()
                    .any(|p| p.alive && p.name == **name && p.state == NodeState::Active)
            })
            .count();
        self.log.most_out = self.log.most_out.max(out);
    }

    /// Whether every planned node now runs an instance that started after the rollout began.
    pub fn all_replaced(&self) -> bool {
        self.plan.iter().all(|name| {
            self.processes.iter().any(|p| {
                p.alive
                    && p.name == *name
                    && p.state == NodeState::Active
                    && !self.original.contains(&p.instance)
            })
        })
    }

    /// A command published: kept as desired state, delivered to the live processes of its
    /// target that hear it.
    fn send(&mut self, payload: String, target: &NodeName) {
        if self.stolen {
            self.log.commands_after_steal += 1;
        }
        self.desired.insert(target.clone(), payload.clone());
        let deaf = self.deaf.get_mut(target).expect("a planned node");
        if *deaf > 0 {
            *deaf -= 1;
            return;
        }
        // Signed commands expire by the real clock (the coordinator stamps them with it).
        let now = ebb_proto::time::now_ms();
        let Ok(cmd) = command::decode(payload.as_bytes(), Some(&self.secret), now, CLUSTER) else {
            self.log
                .violations
                .push("the coordinator sent a command nodes refuse".into());
            return;
        };
        let Action::Drain(drain) = &cmd.action else {
            return;
        };
        for at in 0..self.processes.len() {
            let p = &self.processes[at];
            if !p.alive || p.name != cmd.target || cmd.instance != Some(p.instance) {
                continue;
            }
            if !self.original.contains(&p.instance) {
                self.log
                    .violations
                    .push(format!("drained {}'s replacement {}", p.name, p.instance));
            }
            if p.state != NodeState::Active {
                continue;
            }
            *self.log.drains.entry(p.instance).or_default() += 1;
            let when = self.start.elapsed().as_millis() as u64;
            self.log.drained_at.push((when, p.name.clone()));
            let behavior = self.behavior[&p.name].clone();
            let p = &mut self.processes[at];
            p.state = NodeState::Draining;
            p.then = drain.then;
            self.write(at);
            let connections = self.processes[at].connections;
            self.publish(
                at,
                EventKind::State {
                    state: NodeState::Draining,
                    connections,
                },
            );
            if behavior.early_replacement {
                let name = self.processes[at].name.clone();
                self.restart_later(&name, 1);
            }
        }
    }

    /// `--exec 'restart {name}'`: the drained process exits cleanly and a new one starts.
    fn restart(&mut self, name: &NodeName) {
        let ticks = self.behavior[name].restart_ticks;
        for at in 0..self.processes.len() {
            if self.processes[at].alive && self.processes[at].name == *name {
                self.exit(at);
            }
        }
        self.restart_later(name, ticks);
    }

    /// Another coordinator takes the lock (this one stalled past its expiry).
    pub fn steal_lock(&mut self) {
        self.lock = Some((
            "someone-else".into(),
            Instant::now() + Duration::from_secs(3600),
        ));
        self.stolen = true;
    }

    /// Someone runs `ebb rollout pause|continue|abort` for rollout `id`.
    pub fn steer(&mut self, id: &str, mode: ebb_proto::control::Mode) {
        let control = ebb_proto::control::Control::new(id, mode, "the model says so", "model");
        self.control = Some(control.encode(Some(&self.secret)));
    }

    /// Takes the lock for `value` when free or expired.
    pub fn take_lock(&mut self, value: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        if self
            .lock
            .as_ref()
            .is_some_and(|(_, expires)| *expires > now)
        {
            return false;
        }
        self.lock = Some((value.to_owned(), now + ttl));
        true
    }

    fn holds(&self, lock: &Lock) -> bool {
        let value = lock.parts().1;
        self.lock
            .as_ref()
            .is_some_and(|(v, expires)| v == value && *expires > Instant::now())
    }

    fn parse(&self, name: &str, hash: &HashMap<String, String>) -> Option<NodeRecord> {
        let record = NodeRecord::from_fields(hash, CLUSTER, Some(&self.secret)).ok()?;
        (record.name.as_str() == name).then_some(record)
    }
}

/// The engine's view of the world.
#[derive(Clone)]
pub struct SimIo {
    pub world: Shared,
    intake: Arc<Intake>,
}

impl SimIo {
    pub fn new(world: Shared) -> Self {
        SimIo {
            world,
            intake: Arc::default(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        f(&mut self.world.lock().unwrap())
    }
}

impl Io for SimIo {
    fn cluster(&self) -> &str {
        CLUSTER
    }

    fn now_ms(&self) -> u64 {
        self.with(|w| w.node_ms().saturating_add_signed(w.coordinator_offset_ms))
    }

    async fn nodes(&mut self) -> Result<Vec<NodeRecord>, ClusterError> {
        Ok(self.with(|w| {
            w.records
                .iter()
                .filter_map(|(name, (hash, _))| w.parse(name, hash))
                .collect()
        }))
    }

    async fn read(
        &mut self,
        names: &[NodeName],
        instances: &[(NodeName, Uuid)],
    ) -> Result<Snapshot, ClusterError> {
        Ok(self.with(|w| Snapshot {
            records: names
                .iter()
                .map(|n| {
                    let record = w
                        .records
                        .get(n.as_str())
                        .and_then(|(h, _)| w.parse(n.as_str(), h));
                    (n.clone(), record)
                })
                .collect(),
            instances: instances
                .iter()
                .map(|(n, i)| {
                    let copy = w
                        .copies
                        .get(&(n.to_string(), *i))
                        .and_then(|(h, _)| w.parse(n.as_str(), h))
                        .filter(|r| r.instance == *i);
                    (*i, copy)
                })
                .collect(),
        }))
    }

    async fn send(&mut self, command: &Command) -> Result<usize, ClusterError> {
        self.with(|w| {
            let payload = command.encode(Some(&w.secret), 300_000);
            w.send(payload, &command.target);
        });
        Ok(1)
    }

    async fn clear_desired(&mut self, name: &NodeName, prefix: &str) -> Result<(), ClusterError> {
        self.with(|w| {
            if w.desired.get(name).is_some_and(|d| d.contains(prefix)) {
                w.desired.remove(name);
            }
        });
        Ok(())
    }

    async fn save_state(&mut self, lock: &Lock, json: &str) -> Result<bool, ClusterError> {
        Ok(self.with(|w| {
            let held = w.holds(lock);
            if held {
                w.state = Some(json.to_owned());
            }
            held
        }))
    }

    async fn clear_state(&mut self, lock: &Lock) -> Result<(), ClusterError> {
        self.with(|w| {
            if w.holds(lock) {
                w.state = None;
                w.control = None;
            }
        });
        Ok(())
    }

    async fn control(&mut self) -> Result<Option<Control>, ClusterError> {
        Ok(self.with(|w| {
            let value = w.control.as_ref()?;
            Control::decode(value.as_bytes(), Some(&w.secret)).ok()
        }))
    }

    async fn set_control(&mut self, lock: &Lock, control: &Control) -> Result<bool, ClusterError> {
        Ok(self.with(|w| {
            let held = w.holds(lock);
            if held {
                w.control = Some(control.encode(Some(&w.secret)));
            }
            held
        }))
    }

    async fn renew(&mut self, lock: &Lock) -> Result<bool, ClusterError> {
        Ok(self.with(|w| {
            let held = w.holds(lock);
            if held {
                w.lock = Some((lock.parts().1.to_owned(), Instant::now() + lock.ttl()));
            }
            held
        }))
    }

    async fn release(&mut self, lock: &Lock) -> Result<(), ClusterError> {
        self.with(|w| {
            if w.holds(lock) {
                w.lock = None;
            }
        });
        Ok(())
    }

    fn follow_events(&self, stop: CancellationToken) -> mpsc::Receiver<Followed> {
        let (tx, rx) = mpsc::channel(ebb_coordinator::cluster::EVENT_QUEUE);
        let _ = tx.try_send(Followed::Subscribed);
        self.with(|w| w.subscribers.push(tx.clone()));
        tokio::spawn(async move {
            stop.cancelled().await;
            drop(tx);
        });
        rx
    }

    fn intake(&self) -> Arc<Intake> {
        self.intake.clone()
    }

    fn exec(
        &self,
        command: String,
        _limit: Duration,
    ) -> impl Future<Output = Result<(), String>> + Send + 'static {
        let world = self.world.clone();
        async move {
            tokio::time::sleep(TICK * 2).await;
            let name = command
                .strip_prefix("restart ")
                .and_then(|n| NodeName::parse(n).ok())
                .ok_or_else(|| format!("unexpected command {command:?}"))?;
            world.lock().unwrap().restart(&name);
            Ok(())
        }
    }
}
