//! A cluster of `ebb-node` containers around a Redis container, with the test playing the
//! supervisor (systemd, Kubernetes): a node container that exits is started again, under the same
//! name, as a new process (a new instance id).
//!
//! ## Layout
//!
//! ```text
//!            host (the test, the `ebb` coordinator, WebSocket clients)
//!              |  127.0.0.1:<mapped port> per container (Docker's default bridge)
//!   +----------+-----------+-----------------+
//!   | redis    | node n1   | node n2  ...    |   primary network: Docker's default `bridge`,
//!   +----------+-----------+-----------------+   where every container's port is published
//!   |  alias   |  alias    |  alias          |
//!   |  "redis" |  "n1"     |  "n2"           |   per-test network `ebb-<id>`: the nodes reach
//!   +----------+-----------+-----------------+   Redis at `redis://redis:6379` only through it
//! ```
//!
//! Every test gets its own user-defined network, `ebb-<id>` (unique per [`Fleet`]); Redis joins it
//! with the alias `redis` and each node with its node name as alias, so nodes advertise
//! `ws://<name>:8080/ws` and reach Redis by name, and tests running in parallel never see each
//! other. The host talks to everything through published ports: the coordinator (a host process,
//! [`Fleet::ebb`]) to Redis, WebSocket clients and `/metrics` scrapes to the nodes
//! ([`NodeContainer::addr`]).
//!
//! **Cutting a node off from Redis** ([`NodeContainer::disconnect_from_redis`]) disconnects it
//! from the per-test network only. Its published port lives on its *primary* network (the
//! default bridge, which it never leaves), so its clients' TCP connections and new clients are
//! untouched while it cannot resolve nor route to Redis; [`NodeContainer::connect_to_redis`]
//! puts it back under the same alias. That is why a node's primary network is not the Redis
//! network: Docker 20.10 re-publishes a container's ports on another of its networks when the
//! primary one is disconnected, under a *new* host port, and every client connection breaks.
//! Redis stays on both networks; it is paused, stopped and started through [`Fleet::redis`].
//!
//! A node container is created by testcontainers on the default bridge and, once running,
//! connected to the per-test network (testcontainers can neither create a container without
//! starting it nor give it a network alias): the agent's very first Redis connect may fail to
//! resolve `redis` and is retried by its backoff (a few hundred milliseconds). The connection
//! persists across restarts of the container, so a restarted node registers at once.
//!
//! ## Operations
//!
//! testcontainers does what it offers: create and start containers (from [`node_image`] and
//! [`crate::redis::image`]), read published ports, start again, pause, unpause, stop, logs,
//! removal. What it lacks goes through its re-exported bollard client on the same engine:
//! networks (create, connect with an alias, disconnect, remove), waiting for a container to exit
//! (the supervisor), and SIGKILL.
//!
//! ## The supervisor
//!
//! One task per node waits for its container to exit, records the exit code
//! ([`NodeContainer::exits`]), and, unless told not to ([`NodeContainer::set_restart`]), starts
//! the same container again and waits until it answers `/health` on its (possibly new) host port.
//! Docker may publish a restarted container's port on a different host port: always ask
//! [`NodeContainer::addr`], which waits while the node is down.
//!
//! ## Shutdown
//!
//! Every test ends with [`Fleet::shutdown`]: bounded, it stops the event log and the supervisors
//! (a supervisor that does not stop, or that failed, fails the test), removes the node and Redis
//! containers and the network, and checks that nothing labelled with the fleet's id is left. A
//! fleet dropped without it (a failing test) is swept with the `docker` CLI, after printing the
//! tail of every container's logs; dropped without it while not panicking, it fails the test.
//!
//! Node containers run with `EBB_HEARTBEAT_INTERVAL=300ms` and `EBB_RECORD_TTL=2s` (a killed node's
//! record expires fast) and `EBB_LOG=info,ebb_node=debug`; flags in [`Options::node_args`]
//! override them.

use crate::fleet::{EventLog, ebb, ebb_spawn};
use crate::http;
use crate::process::Proc;
use crate::redis::Redis;
use ebb_proto::{Keys, NodeState};
use futures_util::StreamExt;
use futures_util::future::join_all;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use testcontainers::bollard::Docker;
use testcontainers::bollard::errors::Error as DockerError;
use testcontainers::bollard::models::{
    EndpointSettings, NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest,
};
use testcontainers::bollard::query_parameters::{
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, WaitContainerOptionsBuilder,
};
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// The node image used when `EBB_NODE_IMAGE` is unset.
pub const DEFAULT_NODE_IMAGE: &str = "ebb/node:local";
/// The nodes' Redis URL, inside the per-test network.
pub const NODE_REDIS_URL: &str = "redis://redis:6379";
/// The cluster name [`Fleet::start`] uses.
pub const CLUSTER: &str = "test";
/// The label every container and network of a fleet carries (value: the fleet's id).
pub const LABEL: &str = "ebb.test";
/// The node's port inside its container.
const NODE_PORT: u16 = 8080;
/// How long a node may take to start (first start, or again after an exit).
const START_LIMIT: Duration = Duration::from_secs(30);
/// Bound of one Docker request made by the harness.
const DOCKER_LIMIT: Duration = Duration::from_secs(30);
/// Bound of [`Fleet::shutdown`].
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(60);
/// How long [`NodeContainer::addr`] waits for a node that is down.
const ADDR_LIMIT: Duration = Duration::from_secs(60);
/// Bound of one HTTP request to a node, or one Redis request from the host.
const HTTP_LIMIT: Duration = Duration::from_secs(10);

/// The node image, as `(name, tag)`: `EBB_NODE_IMAGE` or [`DEFAULT_NODE_IMAGE`].
pub fn node_image() -> (String, String) {
    crate::redis::image_from_env("EBB_NODE_IMAGE", DEFAULT_NODE_IMAGE)
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// Cluster name.
    pub cluster: String,
    /// Node names, one container each.
    pub names: Vec<String>,
    /// Flags every node gets after `--listen 0.0.0.0:8080 --redis redis://redis:6379 --cluster C
    /// --name N --advertise-url ws://N:8080/ws`.
    pub node_args: Vec<String>,
    /// Publish each node on a fixed host port, kept across restarts (Docker otherwise picks a
    /// new one at every start), so clients holding a list of node URLs can come back to it.
    pub stable_ports: bool,
}

/// Where a supervised node is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Up {
    /// Running and answering on this host address.
    Running(SocketAddr),
    /// Exited; started again unless held (or being started).
    Down,
    /// The supervisor gave up.
    Failed(String),
}

#[derive(Debug)]
struct Shared {
    name: String,
    docker: Docker,
    network: String,
    container: ContainerAsync<GenericImage>,
    restart: AtomicBool,
    restart_changed: Notify,
    starts: AtomicUsize,
    exits: watch::Sender<Vec<i64>>,
    up: watch::Sender<Up>,
}

/// One node container under supervision.
#[derive(Debug)]
pub struct NodeContainer {
    shared: Arc<Shared>,
    task: Option<JoinHandle<Result<(), String>>>,
}

/// Redis, the nodes, the network and the event log of one test. See the module docs.
#[derive(Debug)]
pub struct Fleet {
    id: String,
    cluster: String,
    docker: Docker,
    network: String,
    redis: Option<Redis>,
    nodes: Vec<NodeContainer>,
    events: EventLog,
    stop: watch::Sender<bool>,
    /// Set once [`Fleet::shutdown`] succeeded.
    clean: bool,
}

/// Runs one Docker request, bounded.
async fn bounded<T>(
    what: &str,
    request: impl Future<Output = Result<T, DockerError>>,
) -> Result<T, String> {
    tokio::time::timeout(DOCKER_LIMIT, request)
        .await
        .map_err(|_| format!("{what}: no answer from Docker within {DOCKER_LIMIT:?}"))?
        .map_err(|e| format!("{what}: {e}"))
}

impl Fleet {
    /// Starts Redis and one node per name in cluster [`CLUSTER`], every node with `node_args`
    /// (e.g. `["--close-spread", "5s"]`), and waits until all are registered and active.
    pub async fn start(names: &[&str], node_args: &[&str]) -> Fleet {
        Fleet::start_with(Options {
            cluster: CLUSTER.to_owned(),
            names: names.iter().map(|s| s.to_string()).collect(),
            node_args: node_args.iter().map(|s| s.to_string()).collect(),
            stable_ports: false,
        })
        .await
    }

    /// Starts what `options` says; waits until every node is registered and active.
    pub async fn start_with(options: Options) -> Fleet {
        let id = format!("ebb-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let docker = Docker::connect_with_local_defaults()
            .unwrap_or_else(|e| panic!("connecting to the Docker engine: {e}"));
        let (stop, _) = watch::channel(false);
        let mut fleet = Fleet {
            network: id.clone(),
            id,
            cluster: options.cluster.clone(),
            docker,
            redis: None,
            nodes: Vec::new(),
            events: EventLog::default(),
            stop,
            clean: false,
        };
        // From here on, a panic drops `fleet`, which sweeps whatever was created.
        match tokio::time::timeout(2 * START_LIMIT, fleet.bring_up(&options)).await {
            Ok(Ok(())) => fleet,
            Ok(Err(e)) => panic!("starting the fleet {}: {e}", fleet.id),
            Err(_) => panic!(
                "starting the fleet {} took longer than {:?}",
                fleet.id,
                2 * START_LIMIT
            ),
        }
    }

    async fn bring_up(&mut self, options: &Options) -> Result<(), String> {
        let labels = HashMap::from([(LABEL.to_owned(), self.id.clone())]);
        bounded(
            "creating the network",
            self.docker.create_network(NetworkCreateRequest {
                name: self.network.clone(),
                driver: Some("bridge".to_owned()),
                labels: Some(labels),
                ..Default::default()
            }),
        )
        .await?;

        let (id, network) = (self.id.clone(), self.network.clone());
        let redis = Redis::run_with(|request| {
            request
                .with_container_name(format!("{id}-redis"))
                .with_label(LABEL, id.as_str())
        })
        .await;
        let redis_id = redis.container().id().to_owned();
        self.redis = Some(redis);
        connect(&self.docker, &network, &redis_id, "redis").await?;
        self.events = EventLog::start(self.redis_url(), &self.cluster).await;

        let starting = options.names.iter().map(|name| {
            NodeContainer::start(
                self.docker.clone(),
                &self.id,
                &self.network,
                options,
                name,
                self.stop.subscribe(),
            )
        });
        for node in join_all(starting).await {
            self.nodes.push(node?);
        }
        let names: Vec<&str> = options.names.iter().map(String::as_str).collect();
        self.wait_active(&names, START_LIMIT).await;
        Ok(())
    }

    /// The fleet's id: the network's name and the prefix of every container's name.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The cluster name.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The per-test network (the one Redis is reached through).
    pub fn network(&self) -> &str {
        &self.network
    }

    /// Redis: pause, unpause, stop, its container.
    pub fn redis(&self) -> &Redis {
        self.redis.as_ref().expect("Redis runs until shutdown")
    }

    /// Redis, to start it again after a stop (its host port may change; [`Fleet::redis_url`]
    /// follows).
    pub fn redis_mut(&mut self) -> &mut Redis {
        self.redis.as_mut().expect("Redis runs until shutdown")
    }

    /// `redis://127.0.0.1:<mapped port>`, for the host (the coordinator, the test).
    pub fn redis_url(&self) -> &str {
        self.redis().url()
    }

    /// A new connection to Redis from the host (bounded: panics when Redis does not answer).
    pub async fn redis_conn(&self) -> redis::aio::MultiplexedConnection {
        tokio::time::timeout(HTTP_LIMIT, self.redis().connection())
            .await
            .unwrap_or_else(|_| panic!("connecting to Redis took longer than {HTTP_LIMIT:?}"))
    }

    /// Every event the nodes published since the fleet started (the log ends when Redis stops).
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// The key schema of the cluster.
    pub fn keys(&self) -> Keys {
        Keys::new(&self.cluster).expect("a valid cluster name")
    }

    /// Every node, in the order given.
    pub fn nodes(&self) -> &[NodeContainer] {
        &self.nodes
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> &NodeContainer {
        self.nodes
            .iter()
            .find(|n| n.name() == name)
            .unwrap_or_else(|| panic!("no node {name} in this fleet"))
    }

    /// Runs `ebb --redis <host url> --cluster <cluster> <args>` to its end: (exit code, stdout,
    /// stderr lines).
    pub async fn ebb(&self, args: &[&str], limit: Duration) -> (i32, String, Vec<String>) {
        ebb(self.redis_url(), &self.cluster, args, limit).await
    }

    /// Starts `ebb --redis <host url> --cluster <cluster> <args>` without waiting.
    pub fn ebb_spawn(&self, args: &[&str]) -> Proc {
        ebb_spawn(self.redis_url(), &self.cluster, args)
    }

    /// `ebb status --json`, parsed; panics unless it exits 0.
    pub async fn status(&self) -> serde_json::Value {
        let (code, stdout, logs) = self
            .ebb(&["status", "--json"], Duration::from_secs(20))
            .await;
        assert_eq!(code, 0, "ebb status: {logs:?}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    /// A node's record as stored in Redis (empty when there is none).
    pub async fn record(&self, name: &str) -> HashMap<String, String> {
        let mut conn = self.redis_conn().await;
        let key = self.keys().node(&crate::node_name(name));
        let read = redis::AsyncCommands::hgetall(&mut conn, key);
        tokio::time::timeout(HTTP_LIMIT, read)
            .await
            .unwrap_or_else(|_| {
                panic!("reading the record of {name} took longer than {HTTP_LIMIT:?}")
            })
            .unwrap_or_else(|e| panic!("reading the record of {name}: {e}"))
    }

    /// Waits until every node of `names` has a record in state `active` and listens on its
    /// command channel. The two halves of a node's Redis agent connect on their own (a node
    /// whose first DNS lookup of Redis failed may register before it subscribes), so a record
    /// alone does not say that a command published now reaches the node.
    pub async fn wait_active(&self, names: &[&str], limit: Duration) {
        crate::eventually(
            &format!("{names:?} registered, active and listening for commands"),
            limit,
            || async {
                for name in names {
                    let record = self.record(name).await;
                    if record.get("state").map(String::as_str) != Some(NodeState::Active.as_str()) {
                        return None;
                    }
                    if self.command_listeners(name).await == 0 {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
    }

    /// How many subscribers the command channel of node `name` has (`PUBSUB NUMSUB`).
    pub async fn command_listeners(&self, name: &str) -> i64 {
        let mut conn = self.redis_conn().await;
        let channel = self.keys().commands(&crate::node_name(name));
        let mut cmd = redis::cmd("PUBSUB");
        cmd.arg("NUMSUB").arg(&channel);
        let numsub = cmd.query_async::<(String, i64)>(&mut conn);
        tokio::time::timeout(HTTP_LIMIT, numsub)
            .await
            .unwrap_or_else(|_| panic!("PUBSUB NUMSUB took longer than {HTTP_LIMIT:?}"))
            .unwrap_or_else(|e| panic!("PUBSUB NUMSUB {channel}: {e}"))
            .1
    }

    /// Publishes `payload` on the command channel of node `name`; returns how many subscribers
    /// received it.
    pub async fn publish_command(&self, name: &str, payload: impl AsRef<[u8]>) -> i64 {
        let mut conn = self.redis_conn().await;
        let channel = self.keys().commands(&crate::node_name(name));
        let publish = redis::AsyncCommands::publish(&mut conn, channel, payload.as_ref());
        tokio::time::timeout(HTTP_LIMIT, publish)
            .await
            .unwrap_or_else(|_| panic!("publishing to {name} took longer than {HTTP_LIMIT:?}"))
            .unwrap_or_else(|e| panic!("publishing to {name}'s command channel: {e}"))
    }

    /// Stops everything and checks it is gone, within a bound: the event log, the supervisors
    /// (each must stop, and none may have failed), the node and Redis containers, the network.
    /// Panics when any of it fails or hangs.
    pub async fn shutdown(mut self) {
        match tokio::time::timeout(SHUTDOWN_LIMIT, self.teardown()).await {
            Ok(Ok(())) => self.clean = true,
            Ok(Err(e)) => panic!("shutting the fleet {} down: {e}", self.id),
            Err(_) => panic!(
                "shutting the fleet {} down took longer than {SHUTDOWN_LIMIT:?}",
                self.id
            ),
        }
    }

    async fn teardown(&mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        self.events.stop().await;
        self.stop.send_replace(true);
        for node in &mut self.nodes {
            let name = node.name().to_owned();
            let Some(task) = node.task.take() else {
                continue;
            };
            match tokio::time::timeout(Duration::from_secs(10), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => problems.push(format!("the supervisor of {name} failed: {e}")),
                Ok(Err(e)) => problems.push(format!("the supervisor of {name} panicked: {e}")),
                Err(_) => problems.push(format!("the supervisor of {name} did not stop")),
            }
        }
        let removals = std::mem::take(&mut self.nodes).into_iter().map(|node| {
            let name = node.name().to_owned();
            async move {
                let shared = Arc::try_unwrap(node.shared)
                    .map_err(|_| format!("{name}'s container is still in use"))?;
                shared
                    .container
                    .rm()
                    .await
                    .map_err(|e| format!("removing {name}'s container: {e}"))
            }
        });
        problems.extend(join_all(removals).await.into_iter().filter_map(Result::err));
        if let Some(redis) = self.redis.take()
            && let Err(e) = redis.rm().await
        {
            problems.push(format!("removing Redis's container: {e}"));
        }
        if let Err(e) = bounded(
            "removing the network",
            self.docker.remove_network(&self.network),
        )
        .await
        {
            problems.push(e);
        }

        // Nothing may be left.
        let filters = HashMap::from([("label", vec![format!("{LABEL}={}", self.id)])]);
        let left = bounded(
            "listing containers",
            self.docker.list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build(),
            )),
        )
        .await?;
        if !left.is_empty() {
            let names: Vec<_> = left.iter().map(|c| c.names.clone()).collect();
            problems.push(format!("containers left behind: {names:?}"));
        }
        match self.docker.inspect_network(&self.network, None).await {
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Ok(_) => problems.push(format!("the network {} is left behind", self.network)),
            Err(e) => problems.push(format!("inspecting the network: {e}")),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// What a fleet that was not shut down leaves to its drop: logs (when a test failed), then
    /// removal through the CLI (drop cannot wait for async work).
    fn sweep(&mut self) {
        self.stop.send_replace(true);
        for node in &mut self.nodes {
            if let Some(task) = node.task.take() {
                task.abort();
            }
        }
        let docker = |args: &[&str]| {
            std::process::Command::new("docker")
                .args(args)
                .stdin(std::process::Stdio::null())
                .output()
                .ok()
        };
        let filter = format!("label={LABEL}={}", self.id);
        let ids = docker(&["ps", "-aq", "--filter", &filter])
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if std::thread::panicking() {
            for id in &ids {
                if let Some(out) = docker(&["logs", "--tail", "80", id]) {
                    let name = docker(&["inspect", "--format", "{{.Name}}", id])
                        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                        .unwrap_or_default();
                    eprintln!("---- last logs of {name} ----");
                    eprint!("{}", String::from_utf8_lossy(&out.stdout));
                    eprint!("{}", String::from_utf8_lossy(&out.stderr));
                }
            }
        }
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids.iter());
            docker(&args);
        }
        docker(&["network", "rm", &self.network]);
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if self.clean {
            return;
        }
        self.sweep();
        if !std::thread::panicking() {
            panic!(
                "the fleet {} was dropped without Fleet::shutdown (swept with the docker CLI)",
                self.id
            );
        }
    }
}

/// Connects container `id` to `network` under `alias`.
async fn connect(docker: &Docker, network: &str, id: &str, alias: &str) -> Result<(), String> {
    bounded(
        &format!("connecting {alias} to {network}"),
        docker.connect_network(
            network,
            NetworkConnectRequest {
                container: id.to_owned(),
                endpoint_config: Some(EndpointSettings {
                    aliases: Some(vec![alias.to_owned()]),
                    ..Default::default()
                }),
            },
        ),
    )
    .await
}

/// Waits until container `id` is not running; returns its exit code.
async fn wait_exit(docker: &Docker, id: &str) -> Result<i64, String> {
    loop {
        let options = WaitContainerOptionsBuilder::new()
            .condition("not-running")
            .build();
        let mut waiting = docker.wait_container(id, Some(options));
        match waiting.next().await {
            Some(Ok(response)) => return Ok(response.status_code),
            // bollard reports a non-zero exit code as an error.
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => return Ok(code),
            // Anything else (a dropped request): look at the container itself.
            other => {
                let state = bounded("inspecting a node container", async {
                    docker.inspect_container(id, None).await
                })
                .await
                .map_err(|e| format!("{e} (waiting for the exit: {other:?})"))?
                .state
                .unwrap_or_default();
                if state.running != Some(true) {
                    return Ok(state.exit_code.unwrap_or(-1));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The container's current host address, once `/health` answers there.
async fn ready(container: &ContainerAsync<GenericImage>) -> Result<SocketAddr, String> {
    let port = container
        .get_host_port_ipv4(NODE_PORT.tcp())
        .await
        .map_err(|e| format!("reading the published port: {e}"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        let attempt = http::request(addr, ::http::Method::GET, "/health", None);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), attempt).await {
            return Ok(addr);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Returns when `stop` says so (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The supervisor of one node: see the module docs.
async fn supervise(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) -> Result<(), String> {
    let id = shared.container.id().to_owned();
    loop {
        let code = tokio::select! {
            () = stopped(&mut stop) => return Ok(()),
            code = wait_exit(&shared.docker, &id) => code?,
        };
        shared.up.send_replace(Up::Down);
        shared.exits.send_modify(|codes| codes.push(code));
        // Held while restarts are off.
        loop {
            let changed = shared.restart_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if shared.restart.load(Ordering::SeqCst) {
                break;
            }
            tokio::select! {
                () = stopped(&mut stop) => return Ok(()),
                () = changed => {}
            }
        }
        let again = async {
            shared
                .container
                .start()
                .await
                .map_err(|e| format!("starting {} again: {e}", shared.name))?;
            shared.starts.fetch_add(1, Ordering::SeqCst);
            ready(&shared.container).await
        };
        let result = tokio::select! {
            () = stopped(&mut stop) => return Ok(()),
            result = tokio::time::timeout(START_LIMIT, again) => result
                .unwrap_or_else(|_| Err(format!("{} did not answer within {START_LIMIT:?} of its restart", shared.name))),
        };
        match result {
            Ok(addr) => {
                shared.up.send_replace(Up::Running(addr));
            }
            Err(e) => {
                shared.up.send_replace(Up::Failed(e.clone()));
                return Err(e);
            }
        }
    }
}

impl NodeContainer {
    async fn start(
        docker: Docker,
        fleet: &str,
        network: &str,
        options: &Options,
        name: &str,
        stop: watch::Receiver<bool>,
    ) -> Result<NodeContainer, String> {
        let (cluster, extra) = (options.cluster.as_str(), &options.node_args);
        let (image, tag) = node_image();
        let mut args: Vec<String> = [
            "--listen",
            "0.0.0.0:8080",
            "--redis",
            NODE_REDIS_URL,
            "--cluster",
            cluster,
            "--name",
            name,
            "--advertise-url",
            &format!("ws://{name}:{NODE_PORT}/ws"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().cloned());
        let mut image_request: testcontainers::ContainerRequest<GenericImage> =
            GenericImage::new(image.as_str(), tag.as_str())
                .with_exposed_port(NODE_PORT.tcp())
                .with_wait_for(WaitFor::message_on_stderr("node active"))
                .into();
        if options.stable_ports {
            // A port the kernel just handed out and took back: free, and Docker keeps it
            // through restarts once it is mapped explicitly.
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("finding a free port: {e}"))?
                .port();
            image_request = image_request.with_mapped_port(port, NODE_PORT.tcp());
        }
        let container = image_request
            .with_container_name(format!("{fleet}-{name}"))
            .with_label(LABEL, fleet)
            .with_env_var("EBB_HEARTBEAT_INTERVAL", "300ms")
            .with_env_var("EBB_RECORD_TTL", "2s")
            .with_env_var("EBB_LOG", "info,ebb_node=debug")
            .with_env_var("NO_COLOR", "1")
            .with_cmd(args)
            .with_startup_timeout(START_LIMIT)
            .start()
            .await
            .map_err(|e| {
                format!(
                    "starting node {name} from {image}:{tag}: {e} (build the image with \
                     deploy/images/build.sh after cargo build --workspace --bins)"
                )
            })?;
        connect(&docker, network, container.id(), name).await?;
        let addr = tokio::time::timeout(START_LIMIT, ready(&container))
            .await
            .map_err(|_| format!("{name} did not answer /health within {START_LIMIT:?}"))??;
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            docker,
            network: network.to_owned(),
            container,
            restart: AtomicBool::new(true),
            restart_changed: Notify::new(),
            starts: AtomicUsize::new(1),
            exits: watch::channel(Vec::new()).0,
            up: watch::channel(Up::Running(addr)).0,
        });
        let task = tokio::spawn(supervise(shared.clone(), stop));
        Ok(NodeContainer {
            shared,
            task: Some(task),
        })
    }

    /// The node's name (also its alias on the per-test network).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The container, for what the wrappers here do not cover.
    pub fn container(&self) -> &ContainerAsync<GenericImage> {
        &self.shared.container
    }

    /// The running node's host address (`127.0.0.1:<published port>`); waits while it is down
    /// or restarting, and panics if it does not come back.
    pub async fn addr(&self) -> SocketAddr {
        let mut up = self.shared.up.subscribe();
        let state = tokio::time::timeout(
            ADDR_LIMIT,
            up.wait_for(|u| matches!(u, Up::Running(_) | Up::Failed(_))),
        )
        .await
        .unwrap_or_else(|_| panic!("{} was not running within {ADDR_LIMIT:?}", self.name()))
        .expect("the node's state outlives its supervisor")
        .clone();
        match state {
            Up::Running(addr) => addr,
            Up::Failed(e) => panic!("{}: {e}", self.name()),
            Up::Down => unreachable!("waited for another state"),
        }
    }

    /// `ws://<host address>/ws` of the running node.
    pub async fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr().await)
    }

    /// `GET path` on the running node, bounded.
    pub async fn get(&self, path: &str) -> http::Response {
        let addr = self.addr().await;
        tokio::time::timeout(HTTP_LIMIT, http::get(addr, path))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "GET {path} on {} took longer than {HTTP_LIMIT:?}",
                    self.name()
                )
            })
    }

    /// `GET /health`.
    pub async fn health(&self) -> http::Response {
        self.get("/health").await
    }

    /// Reads `/metrics`.
    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.body
    }

    /// One metric sample (0 when absent).
    pub async fn metric(&self, sample: &str) -> f64 {
        http::metric(&self.metrics().await, sample).unwrap_or(0.0)
    }

    /// How many times the container has been started (1 at first).
    pub fn starts(&self) -> usize {
        self.shared.starts.load(Ordering::SeqCst)
    }

    /// The exit codes of its runs so far (0 after a drain ending in exit, 137 after SIGKILL).
    pub fn exits(&self) -> Vec<i64> {
        self.shared.exits.borrow().clone()
    }

    /// Waits until it has exited `n` times in all; returns the exit codes.
    pub async fn wait_exits(&self, n: usize, limit: Duration) -> Vec<i64> {
        let mut exits = self.shared.exits.subscribe();
        tokio::time::timeout(limit, exits.wait_for(|e| e.len() >= n))
            .await
            .unwrap_or_else(|_| panic!("{} did not exit {n} time(s) within {limit:?}", self.name()))
            .expect("the exit codes outlive the supervisor")
            .clone()
    }

    /// Whether an exit is followed by a new start (default: yes). Turning it back on starts a
    /// node that is being held down.
    pub fn set_restart(&self, restart: bool) {
        self.shared.restart.store(restart, Ordering::SeqCst);
        self.shared.restart_changed.notify_waiters();
    }

    /// Kills the node's process with SIGKILL (`docker kill`): no drain, no deregistration.
    pub async fn kill(&self) {
        let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
        bounded(
            &format!("killing {}", self.name()),
            self.shared
                .docker
                .kill_container(self.shared.container.id(), Some(options)),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Freezes the node's processes (cgroup freezer).
    pub async fn pause(&self) {
        self.shared
            .container
            .pause()
            .await
            .unwrap_or_else(|e| panic!("pausing {}: {e}", self.name()));
    }

    /// Thaws a paused node.
    pub async fn unpause(&self) {
        self.shared
            .container
            .unpause()
            .await
            .unwrap_or_else(|e| panic!("unpausing {}: {e}", self.name()));
    }

    /// Cuts the node off from Redis: disconnects it from the per-test network, leaving its
    /// published port (on the default bridge) and its clients alone. See the module docs.
    pub async fn disconnect_from_redis(&self) {
        let shared = &self.shared;
        bounded(
            &format!("disconnecting {} from {}", shared.name, shared.network),
            shared.docker.disconnect_network(
                &shared.network,
                NetworkDisconnectRequest {
                    container: shared.container.id().to_owned(),
                    force: Some(false),
                },
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Puts the node back on the per-test network, under its alias.
    pub async fn connect_to_redis(&self) {
        let shared = &self.shared;
        connect(
            &shared.docker,
            &shared.network,
            shared.container.id(),
            &shared.name,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Everything the node has logged, over all its runs (stdout, then stderr).
    pub async fn logs(&self) -> String {
        let container = &self.shared.container;
        let stdout = container.stdout_to_vec().await.unwrap_or_default();
        let stderr = container.stderr_to_vec().await.unwrap_or_default();
        format!(
            "{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )
    }
}

/// The rollout report `ebb rolling-restart --json` printed (its last stdout line).
pub fn report_of(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("no JSON report ({e}) in {stdout:?}"))
}

/// Bounded wait for a set of spawned tasks (clients held open by a test, for example).
pub async fn join_within<T>(what: &str, tasks: Vec<JoinHandle<T>>, limit: Duration) -> Vec<T> {
    tokio::time::timeout(limit, join_all(tasks))
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{what}: {e}")))
        .collect()
}
