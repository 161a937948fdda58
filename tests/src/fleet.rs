//! A cluster of `ebb-node` processes registered in Redis, with the test playing the supervisor
//! (a node that exits is started again under the same name, as systemd or Kubernetes would),
//! the `ebb` CLI, and a log of every event the nodes publish.

use crate::process::{Logs, Node, Options, Proc};
use ebb_proto::{Event, EventKind, Keys, NodeState};
use futures_util::StreamExt;
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One node name under supervision.
#[derive(Debug)]
pub struct Supervised {
    pub name: String,
    /// Where every start listens (the first start's address, given to each restart).
    listen: SocketAddr,
    /// Start it again when it exits.
    restart: Arc<AtomicBool>,
    /// How long the supervisor waits before starting it again, in ms.
    restart_delay_ms: Arc<AtomicU64>,
    pid: Arc<AtomicU32>,
    starts: Arc<AtomicUsize>,
    /// The stderr of every process started so far, in order.
    logs: Arc<Mutex<Vec<Logs>>>,
    addr: watch::Receiver<Option<SocketAddr>>,
    task: JoinHandle<()>,
}

impl Supervised {
    /// Starts `ebb-node --name <name> <args>` and keeps it running.
    pub async fn start(name: &str, args: Vec<String>) -> Supervised {
        let restart = Arc::new(AtomicBool::new(true));
        let restart_delay_ms = Arc::new(AtomicU64::new(0));
        let pid = Arc::new(AtomicU32::new(0));
        let starts = Arc::new(AtomicUsize::new(0));
        let logs: Arc<Mutex<Vec<Logs>>> = Arc::default();
        let (addr_tx, mut addr) = watch::channel(None);
        let mut all = vec!["--name".to_owned(), name.to_owned()];
        all.extend(args);
        let task = tokio::spawn({
            let (restart, pid, starts) = (restart.clone(), pid.clone(), starts.clone());
            let delay = restart_delay_ms.clone();
            let logs = logs.clone();
            async move {
                let mut listen: Option<SocketAddr> = None;
                loop {
                    // Every start after the first listens where the first did, so clients that
                    // hold the node's URL find it again.
                    let mut args = all.clone();
                    if let Some(addr) = listen {
                        args.extend(["--listen".to_owned(), addr.to_string()]);
                    }
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let mut node = Node::start(&args).await;
                    logs.lock().unwrap().push(node.proc.log_handle());
                    listen = Some(node.addr);
                    pid.store(node.proc.pid(), Ordering::SeqCst);
                    starts.fetch_add(1, Ordering::SeqCst);
                    addr_tx.send_replace(Some(node.addr));
                    node.proc.wait(Duration::from_secs(3600)).await;
                    addr_tx.send_replace(None);
                    if !restart.load(Ordering::SeqCst) {
                        return;
                    }
                    let delay = delay.load(Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
            }
        });
        let listen = addr
            .wait_for(Option::is_some)
            .await
            .expect("the supervisor runs")
            .expect("checked");
        Supervised {
            name: name.to_owned(),
            listen,
            restart,
            restart_delay_ms,
            pid,
            starts,
            logs,
            addr,
            task,
        }
    }

    /// The stderr lines of every process started under this name so far, oldest first.
    pub fn logs(&self) -> Vec<String> {
        let logs = self.logs.lock().unwrap().clone();
        logs.iter().flat_map(Logs::lines).collect()
    }

    /// Whether an exit is followed by a new start.
    pub fn set_restart(&self, restart: bool) {
        self.restart.store(restart, Ordering::SeqCst);
    }

    /// How long to wait after an exit before starting it again (a slow supervisor).
    pub fn set_restart_delay(&self, delay: Duration) {
        self.restart_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// The running process's pid.
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::SeqCst)
    }

    /// Where the node listens across restarts: what a load balancer probes.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The running process's address (waits while it restarts).
    pub async fn addr(&self) -> SocketAddr {
        let mut addr = self.addr.clone();
        let current = *addr
            .wait_for(Option::is_some)
            .await
            .expect("the supervisor runs");
        current.expect("checked")
    }

    /// `ws://<addr>/ws` of the running process.
    pub async fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr().await)
    }

    /// How many times it has been started.
    pub fn starts(&self) -> usize {
        self.starts.load(Ordering::SeqCst)
    }

    /// Sends a signal to the running process.
    pub fn signal(&self, signal: Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid.load(Ordering::SeqCst) as i32);
        let _ = nix::sys::signal::kill(pid, signal);
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.restart.store(false, Ordering::SeqCst);
        self.task.abort();
    }
}

/// Waits until every node holds at least `at_least` clients (its `/health` count): a test that
/// must watch a node drain starts its rollout only once the clients are in, or a node that
/// holds none drains in a few milliseconds and the test misses it.
pub async fn wait_holding<N: std::borrow::Borrow<Supervised>>(nodes: &[N], at_least: u64) {
    for node in nodes {
        let node = node.borrow();
        crate::eventually(
            &format!("{} holds {at_least} clients", node.name),
            Duration::from_secs(20),
            || async {
                let health = crate::http::get(node.addr().await, "/health").await.json();
                (health["connections"].as_u64() >= Some(at_least)).then_some(())
            },
        )
        .await;
    }
}

/// The arguments every node of a test cluster gets.
pub fn node_args(redis_url: &str, cluster: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--redis",
        redis_url,
        "--cluster",
        cluster,
        "--heartbeat-interval",
        "300ms",
        "--record-ttl",
        "2s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Runs `ebb --redis <url> --cluster <cluster> <args>` to its end; returns (exit code, stdout,
/// stderr lines).
pub async fn ebb(
    redis_url: &str,
    cluster: &str,
    args: &[&str],
    limit: Duration,
) -> (i32, String, Vec<String>) {
    let mut proc = ebb_spawn(redis_url, cluster, args);
    let (status, stdout) = proc.wait_with_output(limit).await;
    (status.code().unwrap_or(-1), stdout.join("\n"), proc.logs())
}

/// [`ebb`] with the environment variables `env` added.
pub async fn ebb_env(
    redis_url: &str,
    cluster: &str,
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> (i32, String, Vec<String>) {
    let mut proc = ebb_spawn_env(redis_url, cluster, args, env);
    let (status, stdout) = proc.wait_with_output(limit).await;
    (status.code().unwrap_or(-1), stdout.join("\n"), proc.logs())
}

/// Starts `ebb --redis <url> --cluster <cluster> <args>` without waiting.
pub fn ebb_spawn(redis_url: &str, cluster: &str, args: &[&str]) -> Proc {
    ebb_spawn_env(redis_url, cluster, args, &[])
}

fn ebb_spawn_env(redis_url: &str, cluster: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut all = vec![
        "--redis".to_owned(),
        redis_url.to_owned(),
        "--cluster".to_owned(),
        cluster.to_owned(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    Proc::spawn_with_env(&crate::bin::path("ebb"), &all, Options::default(), env)
}

/// Every event of a cluster, with when it was received.
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    events: Arc<Mutex<Vec<(Instant, Event)>>>,
    /// The subscriber task, until [`EventLog::stop`].
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl EventLog {
    /// Subscribes to the cluster's event channel; returns once subscribed.
    pub async fn start(redis_url: &str, cluster: &str) -> EventLog {
        let client = redis::Client::open(redis_url).expect("a valid URL");
        let mut pubsub = client.get_async_pubsub().await.expect("pub/sub connection");
        pubsub
            .subscribe(Keys::new(cluster).unwrap().events())
            .await
            .expect("subscribe");
        let log = EventLog::default();
        let events = log.events.clone();
        let cluster = cluster.to_owned();
        let task = tokio::spawn(async move {
            let mut stream = pubsub.into_on_message();
            while let Some(message) = stream.next().await {
                // Sealed events are read without checking the seal: the log records what was
                // published, forged or not.
                if let Ok(event) = Event::decode(message.get_payload_bytes(), None, &cluster) {
                    events.lock().unwrap().push((Instant::now(), event));
                }
            }
        });
        *log.task.lock().unwrap() = Some(task);
        log
    }

    /// Unsubscribes: ends the subscriber task and waits for it (the events so far stay). The
    /// task also ends by itself when Redis closes the connection (a Redis stopped or removed).
    pub async fn stop(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Everything so far.
    pub fn events(&self) -> Vec<(Instant, Event)> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until an event satisfies `pred`; returns it.
    pub async fn wait_for(&self, limit: Duration, pred: impl Fn(&Event) -> bool) -> Event {
        crate::eventually("an event", limit, || async {
            self.events
                .lock()
                .unwrap()
                .iter()
                .find(|(_, e)| pred(e))
                .map(|(_, e)| e.clone())
        })
        .await
    }

    /// [`EventLog::assert_one_at_a_time`], then how many drains each node name had.
    pub fn drains_per_node(&self) -> std::collections::BTreeMap<String, usize> {
        let mut per_node = std::collections::BTreeMap::new();
        for (name, _) in self.assert_one_at_a_time() {
            *per_node.entry(name).or_default() += 1;
        }
        per_node
    }

    /// Checks the rollout invariants over the log: at no moment were two instances draining,
    /// and each drained instance reached zero connections (or finished its drain) before the next
    /// instance began draining. An instance that vanished mid-drain (killed: it publishes nothing
    /// more) counts as finished once a new instance registers under its name. Returns the drained
    /// instances in order, by node name.
    pub fn assert_one_at_a_time(&self) -> Vec<(String, uuid::Uuid)> {
        let mut draining: HashMap<uuid::Uuid, String> = HashMap::new();
        let mut order = Vec::new();
        for (_, event) in self.events() {
            match &event.kind {
                EventKind::State {
                    state: NodeState::Draining,
                    ..
                } => {
                    assert!(
                        draining.is_empty(),
                        "{} began draining while {:?} still was",
                        event.node,
                        draining.values().collect::<Vec<_>>()
                    );
                    draining.insert(event.instance, event.node.to_string());
                    order.push((event.node.to_string(), event.instance));
                }
                EventKind::Connections { connections: 0 }
                | EventKind::Drained { .. }
                | EventKind::Deregistered {}
                | EventKind::State {
                    state: NodeState::Drained,
                    ..
                } => {
                    draining.remove(&event.instance);
                }
                EventKind::Registered { .. } => {
                    draining.retain(|instance, name| {
                        event.node != name.as_str() || *instance == event.instance
                    });
                }
                _ => {}
            }
        }
        order
    }
}
