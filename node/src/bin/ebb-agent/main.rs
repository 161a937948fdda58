//! `ebb-agent`: puts a WebSocket server written in any language under ebb.
//!
//! The server already has what a coordinator needs from it: a health endpoint with its
//! connection count and a graceful drain on a signal. The agent supplies the rest with the same
//! Redis agent as `ebb-node` (registration, heartbeat, command validation and signing, events),
//! driven through [`Control::driven`] instead of the node library:
//! - it runs the app as its child and polls `--health-url`: the record's count is the JSON
//!   field `--connections-field` of a 200 answer (or the Prometheus sample
//!   `--connections-metric` at `--metrics-url`), its state `draining` on a 503;
//! - a `drain` command (or SIGTERM/SIGINT to the agent) sends the app `--drain-signal` (or
//!   POSTs `--drain-url`); the agent follows the count until the app exits, then reports
//!   `drained`, deregisters and exits with the app's status, so a supervisor restarts the pair;
//! - an app still running `--drain-deadline` after its drain began is killed (SIGKILL) and
//!   its last count reported as forced, so the agent deregisters and exits before a
//!   supervisor's own kill timeout (systemd's TimeoutStopSec, Kubernetes' grace period) would
//!   kill the pair mid-report;
//! - a health endpoint that stops answering while the app shuts down is "count unknown", never
//!   zero: the last count stands until the process is gone;
//! - the app exiting on its own is reported as lost (no `drained`, no deregistration: the
//!   record expires), and an app that never answers its health check with a count is an error,
//!   not a registration with a made-up count.
//!
//! - the app is tied to the agent ([`app`]): an agent that dies (even by SIGKILL) takes its app
//!   down with its drain signal, never leaving it running unregistered; or, with `--pid`, the
//!   agent attaches to a process started by someone else.
//!
//! Exit codes: the app's (128 + signal when a signal ended it), 1 when the app never became
//! healthy or could not be started, 2 for bad flags. Attached, 0 when the process drained and
//! 1 when it ended on its own.

mod app;
mod probe;

use app::App;
use probe::{Health, HttpUrl, Probe};

use clap::{CommandFactory, Parser, error::ErrorKind};
use ebb_node::agent::{Agent, AgentConfig};
use ebb_node::{Control, DrainReport, Metrics, Request, Then};
use ebb_proto::{NodeName, NodeState};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

/// How long deregistering from Redis may take at exit.
const AGENT_SHUTDOWN: Duration = Duration::from_secs(3);

#[derive(Debug, Parser)]
#[command(
    name = "ebb-agent",
    version,
    about = "Registers a WebSocket server of any language with ebb and drains it on command"
)]
pub struct Args {
    /// Redis: redis://, rediss://, redis+sentinel://, redis+cluster:// (as ebb-node).
    #[arg(long, env = "EBB_REDIS_URL", hide_env_values = true, value_parser = ebb_redis::TargetParser)]
    redis: ebb_redis::RedisTarget,
    /// PEM file of the CA that signed the Redis servers' certificates (rediss:// only).
    #[arg(long, env = "EBB_REDIS_CA")]
    redis_ca: Option<std::path::PathBuf>,
    /// The ebb cluster this node belongs to.
    #[arg(long, env = "EBB_CLUSTER", default_value = "default")]
    cluster: String,
    /// The node's name in the cluster.
    #[arg(long, env = "EBB_NAME")]
    name: String,
    /// The URL clients use for this app (advertised in its record).
    #[arg(long, env = "EBB_ADVERTISE_URL")]
    advertise_url: String,
    /// The app's health endpoint: 200 with a JSON body holding the connection count, 503 while
    /// it drains.
    #[arg(long, env = "EBB_HEALTH_URL")]
    health_url: String,
    /// The JSON field of the health answer that holds the connection count.
    #[arg(long, default_value = "connections")]
    connections_field: String,
    /// Read the connection count from this Prometheus endpoint instead of the health answer.
    #[arg(long, requires = "connections_metric")]
    metrics_url: Option<String>,
    /// The metric at `--metrics-url` that holds the count (samples of it are summed).
    #[arg(long, requires = "metrics_url")]
    connections_metric: Option<String>,
    /// The signal that makes the app drain and exit.
    #[arg(long, default_value = "TERM", value_parser = parse_signal)]
    drain_signal: Signal,
    /// POST this URL to make the app drain and exit, instead of sending it a signal.
    #[arg(long)]
    drain_url: Option<String>,
    /// The app's whole drain, from the drain signal to its exit; then it is killed.
    #[arg(long, env = "EBB_DRAIN_DEADLINE", default_value = "30s")]
    drain_deadline: humantime::Duration,
    /// How often the health endpoint is read.
    #[arg(long, default_value = "500ms")]
    poll_interval: humantime::Duration,
    /// How long the app has to answer its health check with a count after it starts.
    #[arg(long, default_value = "30s")]
    start_timeout: humantime::Duration,
    /// Shared secret: only commands signed with it are obeyed (at least 16 bytes).
    #[arg(long, env = "EBB_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// How often the Redis record is refreshed.
    #[arg(long, default_value = "2s")]
    heartbeat_interval: humantime::Duration,
    /// How long the Redis record outlives the last heartbeat.
    #[arg(long, default_value = "10s")]
    record_ttl: humantime::Duration,
    /// Attach to this running process instead of starting the app: the agent drains it and
    /// follows it, but its supervisor is whoever started it.
    #[arg(long, conflicts_with = "command", value_parser = clap::value_parser!(i32).range(2..))]
    pid: Option<i32>,
    /// The app and its arguments.
    #[arg(last = true, required_unless_present = "pid", num_args = 1..)]
    command: Vec<String>,
}

fn parse_signal(s: &str) -> Result<Signal, String> {
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse()
        .map_err(|_| format!("unknown signal {s:?} (TERM, INT, QUIT, HUP, USR1, USR2)"))
}

fn usage(message: String) -> ! {
    Args::command()
        .error(ErrorKind::InvalidValue, message)
        .exit()
}

fn main() -> ExitCode {
    if let Some(guarded) = app::guard_requested() {
        app::guard(guarded);
    }
    let args = Args::parse();
    let name = NodeName::parse(&args.name).unwrap_or_else(|e| usage(format!("--name: {e}")));
    if let Err(e) = ebb_proto::Keys::new(&args.cluster) {
        usage(format!("--cluster: {e}"));
    }
    let probe = Probe::new(&args).unwrap_or_else(|e| usage(e));
    let drain_url = args
        .drain_url
        .as_deref()
        .map(|u| HttpUrl::parse("--drain-url", u).unwrap_or_else(|e| usage(e)));
    let drainer = match drain_url {
        Some(url) => Drainer::Post(url),
        None => Drainer::Signal(args.drain_signal),
    };
    let secret = args.secret.as_ref().map(|s| {
        ebb_proto::sign::Secret::new(s.as_bytes())
            .unwrap_or_else(|e| usage(format!("--secret: {e}")))
    });
    let target = ebb_redis::cli::with_ca(args.redis.clone(), args.redis_ca.as_deref())
        .unwrap_or_else(|e| e.exit());
    let link = ebb_redis::Link::new(&target).unwrap_or_else(|e| usage(format!("--redis: {e}")));
    ebb_node::logging::init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ebb-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, name, secret, link, probe, drainer)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("ebb-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    args: Args,
    name: NodeName,
    secret: Option<ebb_proto::sign::Secret>,
    link: ebb_redis::Link,
    probe: Probe,
    drainer: Drainer,
) -> anyhow::Result<u8> {
    // On this thread (the one `block_on` runs): the app's death signal is tied to it.
    let mut app = match args.pid {
        Some(pid) => App::attach(pid)?,
        None => App::spawn(&args.command, drainer.death_signal())?,
    };
    let pid = app.pid();
    let count = match wait_healthy(&probe, &args, &mut app).await {
        Ok(count) => count,
        Err(e) => {
            app.stop().await;
            return Err(e);
        }
    };
    let (control, mut driver) = Control::driven();
    driver.set_connections(count);
    driver.set_state(NodeState::Active);
    let mut config = AgentConfig::new(link, args.cluster.clone(), name, args.advertise_url.clone());
    config.secret = secret;
    config.heartbeat = args.heartbeat_interval.into();
    config.ttl = args.record_ttl.into();
    let agent = Agent::spawn(config, control, Arc::new(Metrics::default()))?;
    let what = args.command.first().map_or("attached", String::as_str);
    tracing::info!(
        app = what,
        pid = pid.as_raw(),
        connections = count,
        "app healthy; registered through the Redis agent"
    );

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut poll = tokio::time::interval(args.poll_interval.into());
    let mut drain: Option<Draining> = None;
    let deadline = Duration::from(args.drain_deadline);
    let mut unknown_logged = false;
    let ended = loop {
        tokio::select! {
            ended = app.ended() => break ended?,
            request = driver.next() => match request {
                Some(Request::Drain(request)) if request.then == Then::Stay => tracing::warn!(
                    trigger = %request.trigger,
                    "drain refused: `then: stay` needs an app that can stay up without clients, and this one can only exit (use then: exit)"
                ),
                Some(Request::Drain(request)) => {
                    start_drain(&mut drain, &driver, pid, &drainer, &request.trigger).await;
                }
                Some(Request::Hurry) => {
                    start_drain(&mut drain, &driver, pid, &drainer, "hurry").await;
                }
                Some(Request::Resume) if drain.is_some() => {
                    tracing::warn!("resume refused: the app is already shutting down");
                }
                Some(Request::Resume) => {}
                Some(Request::Shed(_)) => {
                    tracing::warn!("shed ignored: the agent cannot close some of the app's connections");
                }
                None => {}
            },
            _ = past(drain.as_ref().filter(|d| d.forced.is_none()).map(|d| d.started + deadline)) => {
                if let Some(draining) = drain.as_mut() {
                    force(draining, &driver, pid, deadline);
                }
            }
            _ = sigterm.recv() => start_drain(&mut drain, &driver, pid, &drainer, "SIGTERM").await,
            _ = sigint.recv() => start_drain(&mut drain, &driver, pid, &drainer, "SIGINT").await,
            _ = poll.tick() => match probe.read().await {
                Ok(Health::Healthy(n)) => {
                    unknown_logged = false;
                    driver.set_connections(n);
                    if drain.is_none() {
                        driver.set_state(NodeState::Active);
                    }
                }
                Ok(Health::Draining(n)) => {
                    unknown_logged = false;
                    if let Some(n) = n {
                        driver.set_connections(n);
                    }
                    driver.set_state(NodeState::Draining);
                }
                // Count unknown (an app shutting down may close its listener first): the last
                // count stands, never zero.
                Err(why) => {
                    if !unknown_logged {
                        tracing::warn!(%why, connections = driver.connections(), "health check failed; keeping the last count");
                        unknown_logged = true;
                    }
                }
            },
        }
    };
    let code = ended.code(drain.is_some());
    let Some(Draining {
        started,
        trigger,
        before,
        forced,
    }) = drain
    else {
        // Lost, not drained: no `drained` and no deregistration, the record expires.
        tracing::error!(%ended, "the app exited on its own; reported as lost, not drained");
        return Ok(code);
    };
    let deadline_hit = forced.is_some();
    let forced = forced.unwrap_or(0);
    driver.report(DrainReport {
        trigger,
        then: Then::Exit,
        connections: before,
        clean: before.saturating_sub(forced),
        forced,
        duration: started.elapsed(),
        deadline_hit,
    });
    driver.set_connections(0);
    driver.set_state(NodeState::Drained);
    tracing::info!(%ended, "the app drained and exited; deregistering");
    agent.shutdown(AGENT_SHUTDOWN).await;
    Ok(code)
}

/// A drain under way.
struct Draining {
    started: Instant,
    trigger: String,
    /// The count when it began.
    before: u64,
    /// The count when the deadline killed the app, if it did.
    forced: Option<u64>,
}

/// Waits until `at`; forever when there is nothing to wait for.
async fn past(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The deadline passed with the app still running: kill it, and count what it held as forced.
fn force(draining: &mut Draining, driver: &ebb_node::Driver, pid: Pid, deadline: Duration) {
    let left = driver.connections() as u64;
    tracing::warn!(pid = pid.as_raw(), connections = left, deadline = %humantime::format_duration(deadline), "the app is still running at its drain deadline; killing it");
    if let Err(e) = nix::sys::signal::kill(pid, Signal::SIGKILL) {
        tracing::warn!(error = %e, "could not kill the app");
    }
    draining.forced = Some(left);
}

/// How the app is asked to drain.
enum Drainer {
    Signal(Signal),
    Post(HttpUrl),
}

impl Drainer {
    /// What the app gets if the agent dies: its drain signal, or TERM when it drains on a POST.
    fn death_signal(&self) -> Signal {
        match self {
            Drainer::Signal(signal) => *signal,
            Drainer::Post(_) => Signal::SIGTERM,
        }
    }
}

/// Asks the app to drain; later calls (a second signal, a hurry) ask again.
async fn start_drain(
    drain: &mut Option<Draining>,
    driver: &ebb_node::Driver,
    pid: Pid,
    drainer: &Drainer,
    trigger: &str,
) {
    match drainer {
        Drainer::Signal(signal) => {
            tracing::info!(trigger, ?signal, pid = pid.as_raw(), "draining the app");
            if let Err(e) = nix::sys::signal::kill(pid, *signal) {
                tracing::warn!(error = %e, "could not signal the app");
            }
        }
        Drainer::Post(url) => {
            tracing::info!(trigger, url = %url.display, "draining the app");
            match tokio::time::timeout(probe::HEALTH_TIMEOUT, url.request(http::Method::POST)).await
            {
                Ok(Ok((status, _))) if (200..300).contains(&status) => {}
                Ok(Ok((status, _))) => {
                    tracing::warn!(status, "the drain URL answered with an error")
                }
                Ok(Err(why)) => tracing::warn!(%why, "the drain URL failed"),
                Err(_) => tracing::warn!("the drain URL timed out"),
            }
        }
    }
    if drain.is_none() {
        *drain = Some(Draining {
            started: Instant::now(),
            trigger: trigger.to_owned(),
            before: driver.connections() as u64,
            forced: None,
        });
    }
    driver.set_state(NodeState::Draining);
}

/// Polls the health URL until it answers 200 with a count, within `--start-timeout`.
async fn wait_healthy(probe: &Probe, args: &Args, app: &mut App) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from(args.start_timeout);
    loop {
        if let Some(ended) = app.try_ended()? {
            anyhow::bail!("the app exited before it became healthy ({ended})");
        }
        let last = match probe.read().await {
            Ok(Health::Healthy(n)) => return Ok(n),
            Ok(Health::Draining(_)) => "it answered 503 (draining)".to_owned(),
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            anyhow::bail!(
                "the app did not answer {} with a connection count within {}: {last}",
                probe.health.display,
                args.start_timeout
            );
        }
        tokio::time::sleep(Duration::from(args.poll_interval)).await;
    }
}
