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
//! - a health endpoint that stops answering while the app shuts down is "count unknown", never
//!   zero: the last count stands until the process is gone;
//! - the app exiting on its own is reported as lost (no `drained`, no deregistration: the
//!   record expires), and an app that never answers its health check with a count is an error,
//!   not a registration with a made-up count.
//!
//! Exit codes: the app's (128 + signal when a signal ended it), 1 when the app never became
//! healthy or could not be started, 2 for bad flags.

use clap::{CommandFactory, Parser, error::ErrorKind};
use ebb_node::agent::{Agent, AgentConfig};
use ebb_node::{Control, DrainReport, Metrics, Request, Then};
use ebb_proto::{NodeName, NodeState};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Child;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

/// How long deregistering from Redis may take at exit.
const AGENT_SHUTDOWN: Duration = Duration::from_secs(3);
/// How long one health request may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest health answer read.
const HEALTH_MAX_BYTES: usize = 64 * 1024;

#[derive(Debug, Parser)]
#[command(
    name = "ebb-agent",
    version,
    about = "Registers a WebSocket server of any language with ebb and drains it on command"
)]
struct Args {
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
    /// The app and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EBB_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
    let mut child = tokio::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {:?}: {e}", args.command[0]))?;
    let pid = Pid::from_raw(child.id().map_or(0, |id| id as i32));
    let count = match wait_healthy(&probe, &args, &mut child).await {
        Ok(count) => count,
        Err(e) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
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
    tracing::info!(app = %args.command[0], pid = pid.as_raw(), connections = count, "app healthy; registered through the Redis agent");

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut poll = tokio::time::interval(args.poll_interval.into());
    let mut drain: Option<(Instant, String, u64)> = None;
    let mut unknown_logged = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
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
    let code = exit_code(&status);
    let Some((started, trigger, before)) = drain else {
        // Lost, not drained: no `drained` and no deregistration, the record expires.
        tracing::error!(%status, "the app exited on its own; reported as lost, not drained");
        return Ok(code);
    };
    driver.report(DrainReport {
        trigger,
        then: Then::Exit,
        connections: before,
        clean: before,
        forced: 0,
        duration: started.elapsed(),
        deadline_hit: false,
    });
    driver.set_connections(0);
    driver.set_state(NodeState::Drained);
    tracing::info!(%status, "the app drained and exited; deregistering");
    agent.shutdown(AGENT_SHUTDOWN).await;
    Ok(code)
}

/// How the app is asked to drain.
enum Drainer {
    Signal(Signal),
    Post(HttpUrl),
}

/// Asks the app to drain; later calls (a second signal, a hurry) ask again.
async fn start_drain(
    drain: &mut Option<(Instant, String, u64)>,
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
            match tokio::time::timeout(HEALTH_TIMEOUT, url.request(http::Method::POST)).await {
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
        *drain = Some((
            Instant::now(),
            trigger.to_owned(),
            driver.connections() as u64,
        ));
    }
    driver.set_state(NodeState::Draining);
}

/// Polls the health URL until it answers 200 with a count, within `--start-timeout`.
async fn wait_healthy(probe: &Probe, args: &Args, child: &mut Child) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from(args.start_timeout);
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the app exited before it became healthy ({status})");
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

fn exit_code(status: &std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
        _ => 1,
    }
}

/// What one health read said.
enum Health {
    Healthy(usize),
    Draining(Option<usize>),
}

/// Where the app's health and count are read.
struct Probe {
    health: HttpUrl,
    /// The JSON field of a healthy answer that holds the count.
    field: String,
    /// Or: the Prometheus endpoint and metric that hold it.
    metrics: Option<(HttpUrl, String)>,
}

impl Probe {
    fn new(args: &Args) -> Result<Probe, String> {
        let metrics = match (&args.metrics_url, &args.connections_metric) {
            (Some(url), Some(name)) => Some((HttpUrl::parse("--metrics-url", url)?, name.clone())),
            _ => None,
        };
        Ok(Probe {
            health: HttpUrl::parse("--health-url", &args.health_url)?,
            field: args.connections_field.clone(),
            metrics,
        })
    }

    /// One look: 200 with a count (a non-negative integer), or 503 (with a count if one can
    /// be read); anything else is an error that names what was wrong.
    async fn read(&self) -> Result<Health, String> {
        let (status, body) = self.health.get().await?;
        let count = async {
            match &self.metrics {
                Some((url, name)) => {
                    let (status, text) = url.get().await?;
                    if status != 200 {
                        return Err(format!("{} answered {status}", url.display));
                    }
                    metric_count(&String::from_utf8_lossy(&text), name)
                }
                None => json_count(&body, &self.field),
            }
        };
        match status {
            200 => count.await.map(Health::Healthy),
            503 => Ok(Health::Draining(count.await.ok())),
            other => Err(format!("it answered {other}")),
        }
    }
}

/// The non-negative integer `field` of a JSON object.
fn json_count(body: &[u8], field: &str) -> Result<usize, String> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let n = json
        .get(field)
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| format!("the answer has no non-negative integer {field:?}"))?;
    usize::try_from(n).map_err(|_| format!("{field} {n} is too large"))
}

/// The sum of the samples of metric `name` in Prometheus text (`name 3` or `name{...} 3`),
/// each a non-negative whole number.
fn metric_count(text: &str, name: &str) -> Result<usize, String> {
    let mut total: Option<u64> = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = match rest.chars().next() {
            Some(' ') => rest.trim(),
            Some('{') => rest.rsplit_once('}').map_or("", |(_, v)| v.trim()),
            _ => continue,
        };
        let value = value.split_whitespace().next().unwrap_or("");
        let n: f64 = value
            .parse()
            .map_err(|_| format!("{name} has the value {value:?}, not a number"))?;
        if !(n.is_finite() && n >= 0.0 && n.fract() == 0.0 && n <= u32::MAX as f64) {
            return Err(format!("{name} is {value}, not a connection count"));
        }
        total = Some(total.unwrap_or(0) + n as u64);
    }
    let total = total.ok_or_else(|| format!("no sample of {name} in the metrics"))?;
    usize::try_from(total).map_err(|_| format!("{name} {total} is too large"))
}

/// `http://host:port/path`.
struct HttpUrl {
    authority: String,
    path: String,
    display: String,
}

impl HttpUrl {
    fn parse(flag: &str, url: &str) -> Result<HttpUrl, String> {
        let bad = |why: &str| format!("{flag} {url:?}: {why}");
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("expected http://host:port/path"))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.is_empty() || !authority.contains(':') {
            return Err(bad("expected a host and a port"));
        }
        Ok(HttpUrl {
            authority: authority.to_owned(),
            path: if path.is_empty() { "/" } else { path }.to_owned(),
            display: url.to_owned(),
        })
    }

    /// A GET, bounded by [`HEALTH_TIMEOUT`].
    async fn get(&self) -> Result<(u16, Vec<u8>), String> {
        tokio::time::timeout(HEALTH_TIMEOUT, self.request(http::Method::GET))
            .await
            .map_err(|_| "timed out".to_owned())?
    }

    async fn request(&self, method: http::Method) -> Result<(u16, Vec<u8>), String> {
        use http_body_util::BodyExt;
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let driver = tokio::spawn(connection);
        let request = http::Request::builder()
            .method(method)
            .uri(&self.path)
            .header(http::header::HOST, &self.authority)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let status = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), HEALTH_MAX_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes()
            .to_vec();
        driver.abort();
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_is_read_from_json_or_prometheus_text_and_nothing_else_is_one() {
        assert_eq!(
            json_count(br#"{"status":"healthy","connections":3}"#, "connections"),
            Ok(3)
        );
        for bad in [
            &b"{}"[..],
            b"[]",
            b"not json",
            br#"{"connections":-1}"#,
            br#"{"connections":"3"}"#,
            br#"{"connections":1.5}"#,
        ] {
            assert!(json_count(bad, "connections").is_err(), "{bad:?}");
        }
        let text = "# TYPE app_connections gauge\napp_connections_total 99\napp_connections{shard=\"a\"} 2\napp_connections{shard=\"b\"} 3 1700000000\n";
        assert_eq!(metric_count(text, "app_connections"), Ok(5));
        assert_eq!(
            metric_count("app_connections 7\n", "app_connections"),
            Ok(7)
        );
        assert!(metric_count("other 1\n", "app_connections").is_err());
        for bad in ["NaN", "+Inf", "-1", "1.5", "1e30", "x"] {
            let text = format!("app_connections {bad}\n");
            assert!(metric_count(&text, "app_connections").is_err(), "{bad}");
        }
    }

    #[test]
    fn http_urls_need_a_host_and_a_port() {
        let url = HttpUrl::parse("--health-url", "http://127.0.0.1:8080/health").unwrap();
        assert_eq!(
            (url.authority.as_str(), url.path.as_str()),
            ("127.0.0.1:8080", "/health")
        );
        assert_eq!(HttpUrl::parse("f", "http://h:1").unwrap().path, "/");
        for bad in ["https://h:1/", "h:1/health", "http:///x", "http://host/x"] {
            assert!(HttpUrl::parse("f", bad).is_err(), "{bad}");
        }
    }
}
