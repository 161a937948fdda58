//! `ebb-node`: the reference node, an echo server that drains gracefully.
//!
//! Parses flags (each with an `EBB_*` env fallback), sets up tracing, binds, wires SIGTERM and
//! SIGINT to the drain (a second signal hurries it), and waits. Exit codes: 0 after a drain that
//! ends in exit, 1 when serving fails, 2 for bad flags.

use clap::builder::TypedValueParser as _;
use clap::{ArgAction, CommandFactory, Parser, error::ErrorKind};
use ebb_node::agent::{Agent, AgentConfig};
use ebb_node::config::{self, ConnectionConfig, DoorConfig, DrainConfig, NodeConfig};
use ebb_node::{Control, DrainRequest, Echo, Node};
use ebb_proto::NodeName;
use std::process::ExitCode;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

/// How long deregistering from Redis may take at exit.
const AGENT_SHUTDOWN: Duration = Duration::from_secs(3);

#[derive(Debug, Parser)]
#[command(
    name = "ebb-node",
    version,
    about = "A WebSocket echo node that drains gracefully"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "EBB_LISTEN", default_value = config::DEFAULT_LISTEN)]
    listen: std::net::SocketAddr,
    /// Connections the kernel queues for the node to accept (capped by net.core.somaxconn).
    #[arg(long, env = "EBB_LISTEN_BACKLOG", default_value_t = config::DEFAULT_LISTEN_BACKLOG,
          value_parser = clap::value_parser!(u32).range(1..=65535))]
    listen_backlog: u32,
    /// Stable node name (default: the host name).
    #[arg(long, env = "EBB_NAME")]
    name: Option<String>,
    /// Redis: redis://[user:password@]host[:port][/db], rediss:// for TLS,
    /// redis+sentinel://[user:password@]h1:p1,h2:p2/<master>, redis+cluster://h1:p1,h2:p2;
    /// without it the node runs standalone (signals and admin endpoint only).
    #[arg(long, env = "EBB_REDIS_URL", hide_env_values = true, value_parser = ebb_redis::TargetParser)]
    redis: Option<ebb_redis::RedisTarget>,
    /// PEM file of the CA that signed the Redis servers' certificates (rediss:// only; default:
    /// the system's roots).
    #[arg(long, env = "EBB_REDIS_CA", requires = "redis")]
    redis_ca: Option<std::path::PathBuf>,
    /// Cluster name (Redis key prefix).
    #[arg(long, env = "EBB_CLUSTER", default_value = ebb_proto::keys::DEFAULT_CLUSTER)]
    cluster: String,
    /// URL clients use to reach this node, as registered in Redis
    /// (default: ws://<name or listen address>:<port>/ws).
    #[arg(long, env = "EBB_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// Most WebSocket connections this node accepts; more are refused 503 + Retry-After. The node
    /// enforces (and registers for the coordinator) the smaller of this and RLIMIT_NOFILE less
    /// --fd-reserve.
    #[arg(long, env = "EBB_CAPACITY",
          value_parser = clap::value_parser!(u64).range(1..=(1 << 40)).map(|v| v as usize))]
    capacity: Option<usize>,
    /// How long a client may take to send a request's headers (an upgrade's included); then the
    /// connection is closed (counted in ebb_header_timeouts_total).
    #[arg(long, env = "EBB_HEADER_TIMEOUT", default_value_t = config::DEFAULT_HEADER_TIMEOUT.into())]
    header_timeout: humantime::Duration,
    /// HTTP connections open and not upgraded; beyond it new connections are closed at once.
    #[arg(long, env = "EBB_MAX_HANDSHAKES", default_value_t = config::DEFAULT_MAX_HANDSHAKES,
          value_parser = clap::value_parser!(u64).range(1..=(1 << 24)).map(|v| v as usize))]
    max_handshakes: usize,
    /// Most WebSocket connections from one IP address; more are refused 429 + Retry-After.
    #[arg(long, env = "EBB_MAX_CONNECTIONS_PER_IP",
          value_parser = clap::value_parser!(u64).range(1..=(1 << 40)).map(|v| v as usize))]
    max_connections_per_ip: Option<usize>,
    /// File descriptors WebSocket connections never use, so /health, /metrics and /admin keep
    /// answering at the limit (32 of them are the process's own).
    #[arg(long, env = "EBB_FD_RESERVE", default_value_t = config::DEFAULT_FD_RESERVE,
          value_parser = clap::value_parser!(u64)
              .range(config::MIN_FD_RESERVE as u64..=(1 << 20)).map(|v| v as usize))]
    fd_reserve: usize,
    /// Retry-After of an upgrade refused because the node (or the client's address) is full.
    #[arg(long, env = "EBB_FULL_RETRY_AFTER", default_value_t = config::DEFAULT_FULL_RETRY_AFTER.into())]
    full_retry_after: humantime::Duration,
    /// Shared secret: only commands signed with it are obeyed (at least 16 bytes).
    #[arg(long, env = "EBB_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// How often the Redis record is refreshed.
    #[arg(long, env = "EBB_HEARTBEAT_INTERVAL", default_value_t = ebb_proto::keys::HEARTBEAT_INTERVAL.into())]
    heartbeat_interval: humantime::Duration,
    /// How long the Redis record outlives the last heartbeat (a killed node vanishes after it).
    #[arg(long, env = "EBB_RECORD_TTL", default_value_t = ebb_proto::keys::NODE_TTL.into())]
    record_ttl: humantime::Duration,
    /// Version shown in the node record (default: ebb-node's own).
    #[arg(long, env = "EBB_NODE_VERSION", default_value = env!("CARGO_PKG_VERSION"))]
    node_version: String,
    /// Bearer token enabling POST /admin/drain and /admin/resume (off without one).
    #[arg(long, env = "EBB_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Artificial processing delay of the echo app (e.g. 200ms), to hold messages in flight.
    #[arg(long, env = "EBB_ECHO_DELAY", default_value_t = Duration::ZERO.into())]
    echo_delay: humantime::Duration,

    /// Pause between flipping readiness and closing anything (load balancer propagation).
    #[arg(long, env = "EBB_PROPAGATION_DELAY", default_value_t = config::DEFAULT_PROPAGATION_DELAY.into())]
    propagation_delay: humantime::Duration,
    /// Send the `server_shutdown` notice before closing.
    #[arg(long, env = "EBB_NOTICE", action = ArgAction::Set, default_value_t = config::DEFAULT_NOTICE)]
    notice: bool,
    /// With the notice on, how long after it the first close comes (closes are spread over
    /// [lead, close spread]), so what a client sent before it saw the notice is answered.
    #[arg(long, env = "EBB_NOTICE_LEAD", default_value_t = config::DEFAULT_NOTICE_LEAD.into())]
    notice_lead: humantime::Duration,
    /// Text of the notice.
    #[arg(long, env = "EBB_NOTICE_MESSAGE", default_value = config::DEFAULT_NOTICE_MESSAGE)]
    notice_message: String,
    /// Close code of a drain close (1000, 1001, 1012, 1013 or 3000-4999).
    #[arg(long, env = "EBB_CLOSE_CODE", default_value_t = config::DEFAULT_CLOSE_CODE,
          value_parser = parse_close_code)]
    close_code: u16,
    /// Window over which closes are spread evenly.
    #[arg(long, env = "EBB_CLOSE_SPREAD", default_value_t = config::DEFAULT_CLOSE_SPREAD.into())]
    close_spread: humantime::Duration,
    /// Smallest reconnect delay advised to a client.
    #[arg(long, env = "EBB_RECONNECT_BASE", default_value_t = config::DEFAULT_RECONNECT_BASE.into())]
    reconnect_base: humantime::Duration,
    /// Advised delays are spread over this window above the base.
    #[arg(long, env = "EBB_RECONNECT_SPREAD", default_value_t = config::DEFAULT_RECONNECT_SPREAD.into())]
    reconnect_spread: humantime::Duration,
    /// How long a closing connection may take to answer messages already received.
    #[arg(long, env = "EBB_INFLIGHT_TIMEOUT", default_value_t = config::DEFAULT_INFLIGHT_TIMEOUT.into())]
    inflight_timeout: humantime::Duration,
    /// How long to wait for a client's Close after ours before cutting TCP.
    #[arg(long, env = "EBB_CLOSE_TIMEOUT", default_value_t = config::DEFAULT_CLOSE_TIMEOUT.into())]
    close_timeout: humantime::Duration,
    /// The whole drain ends by then; what is still open is terminated.
    #[arg(long, env = "EBB_DRAIN_DEADLINE", default_value_t = config::DEFAULT_DRAIN_DEADLINE.into())]
    drain_deadline: humantime::Duration,
    /// Ping interval; a peer that missed the previous pong is dropped.
    #[arg(long, env = "EBB_PING_INTERVAL", default_value_t = config::DEFAULT_PING_INTERVAL.into())]
    ping_interval: humantime::Duration,
    /// Largest message or frame accepted, in bytes; larger closes with 1009.
    #[arg(long, env = "EBB_MAX_MESSAGE_SIZE", default_value_t = config::DEFAULT_MAX_MESSAGE_SIZE,
          value_parser = clap::value_parser!(u64).range(16..=(64 << 20)).map(|v| v as usize))]
    max_message_size: usize,
    /// Per-connection read buffer, in bytes.
    #[arg(long, env = "EBB_READ_BUFFER_SIZE", default_value_t = config::DEFAULT_READ_BUFFER_SIZE,
          value_parser = clap::value_parser!(u64).range(64..=(1 << 20)).map(|v| v as usize))]
    read_buffer_size: usize,
    /// Messages of one connection processed concurrently before reading pauses.
    #[arg(long, env = "EBB_MAX_INFLIGHT", default_value_t = config::DEFAULT_MAX_INFLIGHT,
          value_parser = clap::value_parser!(u64).range(1..=4096).map(|v| v as usize))]
    max_inflight: usize,
    /// The app to serve.
    #[arg(long, env = "EBB_APP", value_enum, default_value = "echo")]
    app: AppKind,
    /// Pushes a connection may have waiting before it is closed as too slow (1008).
    #[arg(long, env = "EBB_PUSH_QUEUE", default_value_t = config::DEFAULT_PUSH_QUEUE,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(|v| v as usize))]
    push_queue: usize,
}

fn parse_close_code(s: &str) -> Result<u16, String> {
    let code: u16 = s.parse().map_err(|e| format!("{e}"))?;
    match code {
        1000 | 1001 | 1012 | 1013 | 3000..=4999 => Ok(code),
        _ => Err(format!(
            "{code} cannot be sent in a Close frame; use 1000, 1001, 1012, 1013 or 3000-4999"
        )),
    }
}

impl Args {
    fn node_config(&self) -> NodeConfig {
        NodeConfig {
            drain: DrainConfig {
                propagation_delay: self.propagation_delay.into(),
                notice: self.notice,
                notice_lead: self.notice_lead.into(),
                notice_message: self.notice_message.clone(),
                close_code: self.close_code,
                close_spread: self.close_spread.into(),
                reconnect_base: self.reconnect_base.into(),
                reconnect_spread: self.reconnect_spread.into(),
                inflight_timeout: self.inflight_timeout.into(),
                close_timeout: self.close_timeout.into(),
                deadline: self.drain_deadline.into(),
            },
            connection: ConnectionConfig {
                max_message_size: self.max_message_size,
                read_buffer_size: self.read_buffer_size,
                max_inflight: self.max_inflight,
                ping_interval: self.ping_interval.into(),
                push_queue: self.push_queue,
            },
            door: DoorConfig {
                capacity: self.capacity,
                header_timeout: self.header_timeout.into(),
                max_handshakes: self.max_handshakes,
                max_connections_per_ip: self.max_connections_per_ip,
                fd_reserve: self.fd_reserve,
                full_retry_after: self.full_retry_after.into(),
            },
            admin_token: self.admin_token.clone().filter(|t| !t.is_empty()),
            ..NodeConfig::default()
        }
    }

    /// The node name, or a usage error.
    fn name(&self) -> Result<NodeName, String> {
        let name = match &self.name {
            Some(name) => name.clone(),
            None => gethostname::gethostname().to_string_lossy().into_owned(),
        };
        NodeName::parse(&name).map_err(|e| format!("invalid node name: {e} (set --name)"))
    }
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.ping_interval.is_zero()
        || args.drain_deadline.is_zero()
        || args.header_timeout.is_zero()
    {
        Args::command()
            .error(
                ErrorKind::InvalidValue,
                "--ping-interval, --drain-deadline and --header-timeout must be positive",
            )
            .exit();
    }
    let name = args
        .name()
        .unwrap_or_else(|e| Args::command().error(ErrorKind::InvalidValue, e).exit());
    let secret = args.secret.as_ref().map(|s| {
        ebb_proto::sign::Secret::new(s.as_bytes()).unwrap_or_else(|e| {
            Args::command()
                .error(ErrorKind::InvalidValue, format!("invalid --secret: {e}"))
                .exit()
        })
    });
    if let Err(e) = ebb_proto::Keys::new(&args.cluster) {
        Args::command()
            .error(ErrorKind::InvalidValue, format!("invalid --cluster: {e}"))
            .exit();
    }
    // The link is made here, before the node listens, so what the agent could not connect to
    // (a form this build does not connect yet, an unreadable CA file) is a usage error.
    let link = args.redis.take().map(|target| {
        let target =
            ebb_redis::cli::with_ca(target, args.redis_ca.as_deref()).unwrap_or_else(|e| e.exit());
        ebb_redis::Link::new(&target).unwrap_or_else(|e| {
            Args::command()
                .error(ErrorKind::InvalidValue, format!("--redis: {e}"))
                .exit()
        })
    });
    ebb_node::logging::init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ebb-node: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, name, secret, link)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ebb-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Which app the node serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AppKind {
    /// `Echo: <message>` for every message.
    Echo,
    /// The reference chat: `/ws?room=R[&after=N]`, rooms across the cluster through --redis.
    Chat,
}

async fn run(
    args: Args,
    name: NodeName,
    secret: Option<ebb_proto::sign::Secret>,
    link: Option<ebb_redis::Link>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    match args.app {
        AppKind::Echo => {
            let echo = Echo::with_delay(args.echo_delay.into());
            serve(args, name, secret, link, echo).await
        }
        AppKind::Chat => {
            let chat = match &link {
                Some(link) => {
                    let keys = ebb_proto::Keys::new(&args.cluster)?;
                    ebb_node::chat::Chat::with_redis(link.clone(), keys)
                        .await
                        .context("the chat app cannot reach Redis")?
                }
                None => ebb_node::chat::Chat::local(),
            };
            serve(args, name, secret, link, chat).await
        }
    }
}

async fn serve<A: ebb_node::App>(
    args: Args,
    name: NodeName,
    secret: Option<ebb_proto::sign::Secret>,
    link: Option<ebb_redis::Link>,
    app: A,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    // Installed before anything is served, so a signal never meets the default action.
    let signals = Signals::install().context("cannot install signal handlers")?;
    let listener = listen(args.listen, args.listen_backlog)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let node = Node::new(args.node_config(), app);
    let metrics = node.metrics();
    let running = node.start(listener)?;
    tracing::info!(%name, addr = %running.local_addr(), "ebb-node listening");
    tokio::spawn(signals.drain_on_signals(running.control().clone()));
    let agent = match link {
        Some(link) => {
            let advertise_url = args.advertise_url.clone().unwrap_or_else(|| {
                let addr = running.local_addr();
                let host = if addr.ip().is_unspecified() {
                    name.to_string()
                } else {
                    addr.ip().to_string()
                };
                format!("ws://{host}:{}/ws", addr.port())
            });
            let target = link.target().to_string();
            let mut config =
                AgentConfig::new(link, args.cluster.clone(), name.clone(), advertise_url);
            config.version = args.node_version.clone();
            // What the node enforces, not what was asked: the coordinator's headroom checks and
            // reconnect targets then use the numbers the node refuses by.
            config.capacity = Some(running.limits().capacity as u64);
            config.secret = secret;
            config.heartbeat = args.heartbeat_interval.into();
            config.ttl = args.record_ttl.into();
            let agent = Agent::spawn(config, running.control().clone(), metrics)
                .context("cannot start the Redis agent")?;
            tracing::info!(instance = %agent.instance(), cluster = %args.cluster, redis = %target, "Redis agent started");
            Some(agent)
        }
        None => None,
    };
    let report = running.wait().await?;
    if let Some(agent) = agent {
        agent.shutdown(AGENT_SHUTDOWN).await;
    }
    tracing::info!(
        clean = report.clean,
        forced = report.forced,
        duration_ms = report.duration.as_millis() as u64,
        "exiting"
    );
    Ok(())
}

/// A listener on `addr` with a kernel accept queue of `backlog`.
fn listen(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// SIGTERM and SIGINT, which both mean "drain".
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }

    /// First signal: drain then exit. Every later one: hurry.
    async fn drain_on_signals(mut self, control: Control) {
        let first = self.next().await;
        tracing::info!(signal = first, "draining; send it again to finish fast");
        control.drain(DrainRequest::exit(first));
        loop {
            let again = self.next().await;
            tracing::info!(signal = again, "second signal: skipping pacing");
            control.hurry();
        }
    }
}
