//! `ebb`: the operator's CLI for an ebb cluster.
//!
//! Exit codes: 0 success; 1 the operation failed or was aborted; 2 usage or infrastructure error
//! (bad flags, Redis unreachable).

use clap::{Parser, Subcommand, ValueEnum};
use ebb_coordinator::commands::{self, Outcome, Target};
use ebb_coordinator::rollout::{self, OnCheckFail, Overrides};
use ebb_proto::NodeName;
use ebb_proto::acl::UserName;
use ebb_proto::command::{Action, Drain, Resume, Then};
use ebb_proto::control::Mode;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "ebb",
    version,
    about = "Zero-downtime rolling restarts for ebb WebSocket fleets"
)]
struct Cli {
    /// Redis of the cluster's registry: redis://[user:password@]host[:port][/db], rediss:// for
    /// TLS; redis+sentinel://[user:password@]h1:p1,h2:p2/<master> and redis+cluster://h1:p1,h2:p2.
    #[arg(
        long,
        global = true,
        env = "EBB_REDIS_URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379",
        value_parser = ebb_redis::TargetParser
    )]
    redis: ebb_redis::RedisTarget,
    /// PEM file of the CA that signed the Redis servers' certificates (rediss:// only; default:
    /// the system's roots).
    #[arg(long, global = true, env = "EBB_REDIS_CA")]
    redis_ca: Option<std::path::PathBuf>,
    /// Cluster name.
    #[arg(long, global = true, env = "EBB_CLUSTER", default_value = ebb_proto::keys::DEFAULT_CLUSTER)]
    cluster: String,
    /// Shared secret: commands are signed with it (nodes configured with one refuse unsigned ones).
    #[arg(long, global = true, env = "EBB_SECRET", hide_env_values = true)]
    secret: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ThenArg {
    Exit,
    Stay,
}

impl From<ThenArg> for Then {
    fn from(t: ThenArg) -> Then {
        match t {
            ThenArg::Exit => Then::Exit,
            ThenArg::Stay => Then::Stay,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OnLost {
    /// Wait for the replacement, as after a normal exit.
    Wait,
    /// Stop the rollout.
    Abort,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CheckFailArg {
    /// Pause the rollout (`ebb rollout continue` goes on).
    Pause,
    /// Stop the rollout.
    Abort,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// List the nodes: name, instance, state, connections, age, version, URL.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Drain one node.
    Drain {
        name: NodeName,
        /// Exit once drained (the supervisor restarts it) or stay drained until `ebb resume`.
        #[arg(long, value_enum, default_value = "exit")]
        then: ThenArg,
        /// Override the node's drain deadline.
        #[arg(long)]
        deadline: Option<humantime::Duration>,
        /// Wait until drained (stay) or gone (exit).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long.
        #[arg(long, default_value = "2m")]
        timeout: humantime::Duration,
    },
    /// Make a drained node active again.
    Resume { name: NodeName },
    /// Drain and restart every node, one at a time.
    RollingRestart(Box<RollingArgs>),
    /// Even out the connections: overloaded nodes shed clients to the nodes with room, paced,
    /// and stay active.
    Rebalance {
        /// Uneven means max/mean above 1 + this (10% or 0.1).
        #[arg(long, default_value = "10%", value_parser = commands::rebalance::parse_tolerance)]
        tolerance: f64,
        /// Closes per second of each shedding node.
        #[arg(long, default_value_t = rollout::rebalance::DEFAULT_RATE,
              value_parser = clap::value_parser!(u32).range(1..=100_000))]
        rate: u32,
        /// Print the result as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Run as a service: take rolling-restart requests from Redis (leader only; others stand
    /// by), serve the HTTP API and status page.
    Serve {
        /// Address of the HTTP API and status page.
        #[arg(long, env = "EBB_SERVE_LISTEN", default_value = "127.0.0.1:8090")]
        listen: std::net::SocketAddr,
        /// Bearer token of the API's write endpoints (off without one).
        #[arg(long, env = "EBB_API_TOKEN", hide_env_values = true)]
        api_token: Option<String>,
        /// `--exec` template of every rollout this service runs (requests cannot carry commands).
        #[arg(long)]
        exec: Option<String>,
        /// `--check` template of every rollout this service runs.
        #[arg(long)]
        check: Option<String>,
        /// How long Redis may be unreachable before a rollout stops.
        #[arg(long, default_value_t = rollout::DEFAULT_REDIS_GRACE.into())]
        redis_grace: humantime::Duration,
        /// Expiry of the rollout lock.
        #[arg(long, default_value_t = ebb_proto::keys::ROLLOUT_LOCK_TTL.into(), value_parser = parse_lock_ttl)]
        lock_ttl: humantime::Duration,
    },
    /// Ask `ebb serve` for a rolling restart, through the request stream in Redis.
    Request {
        #[command(subcommand)]
        kind: RequestKind,
    },
    /// Follow a request of `ebb serve` to its end (default: the running one); exits with the
    /// rollout's exit code.
    Watch {
        id: Option<String>,
        /// Give up after this long.
        #[arg(long, default_value = "2h")]
        timeout: humantime::Duration,
    },
    /// Pause, continue or abort the running rollout (from any terminal or CI job).
    Rollout {
        #[command(subcommand)]
        action: RolloutAction,
        /// Why (shown in `ebb status` and the report).
        #[arg(long, global = true)]
        reason: Option<String>,
        /// Wait until the coordinator has taken it.
        #[arg(long, global = true)]
        wait: bool,
        /// With --wait: give up after this long.
        #[arg(long, global = true, default_value = "30s")]
        timeout: humantime::Duration,
    },
    /// Print the channel and payload of a command (signed with --secret), for `redis-cli PUBLISH`.
    Sign {
        #[command(subcommand)]
        action: SignAction,
    },
    /// Print the Redis ACL rules of one role of the cluster (needs no Redis).
    Acl(AclArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoleArg {
    /// One node: its own record, copies and desired state, its command channel, events.
    Node,
    /// The rollout: reads everything, writes desired state, the lock and the rollout state.
    Coordinator,
    /// CI/CD: `ebb drain`/`resume`, `redis-cli PUBLISH` of commands.
    Trigger,
    /// `ebb status`: reads records and the index.
    Viewer,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AclFormat {
    /// `ACL SETUSER ...` lines, for `redis-cli` to read from stdin.
    Commands,
    /// `user ...` lines, for Redis's `aclfile`.
    Aclfile,
}

#[derive(Debug, clap::Args)]
struct AclArgs {
    #[arg(long, value_enum)]
    role: RoleArg,
    /// With --role node: the node (repeat for several; one user each).
    #[arg(long = "node", value_name = "NAME")]
    nodes: Vec<NodeName>,
    /// The user's name [default: ebb-node-<NAME>, ebb-coordinator, ebb-trigger, ebb-viewer].
    #[arg(long)]
    user: Option<UserName>,
    /// Environment variable holding the password (its SHA-256 is printed); without it the
    /// placeholder >CHANGE-ME.
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
    #[arg(long, value_enum, default_value = "commands")]
    format: AclFormat,
}

impl AclArgs {
    fn into_args(self) -> commands::acl::Args {
        use commands::acl::{Format, RoleKind};
        commands::acl::Args {
            role: match self.role {
                RoleArg::Node => RoleKind::Node,
                RoleArg::Coordinator => RoleKind::Coordinator,
                RoleArg::Trigger => RoleKind::Trigger,
                RoleArg::Viewer => RoleKind::Viewer,
            },
            nodes: self.nodes,
            user: self.user,
            password_env: self.password_env,
            format: match self.format {
                AclFormat::Commands => Format::Commands,
                AclFormat::Aclfile => Format::AclFile,
            },
        }
    }
}

#[derive(Debug, Subcommand)]
enum RequestKind {
    /// A rolling restart, with the flags of `ebb rolling-restart`.
    RollingRestart {
        /// The idempotency key: a request with an id that already ran runs nothing (default:
        /// a fresh one).
        #[arg(long)]
        id: Option<String>,
        /// Follow it to its end, as `ebb watch` does.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long.
        #[arg(long, default_value = "2h")]
        timeout: humantime::Duration,
        #[command(flatten)]
        rollout: Box<RollingArgs>,
    },
}

#[derive(Debug, Clone, Copy, Subcommand)]
enum RolloutAction {
    /// Admit no new node (those in flight finish) until `continue`.
    Pause,
    /// Go on after a pause (`--pause-after`, a failed `--check`, `ebb rollout pause`).
    Continue,
    /// Admit no new node, let those in flight finish, then stop the rollout (aborted).
    Abort,
}

#[derive(Debug, Subcommand)]
enum SignAction {
    Drain {
        name: NodeName,
        #[arg(long, value_enum, default_value = "exit")]
        then: ThenArg,
    },
    Resume {
        name: NodeName,
    },
}

#[derive(Debug, clap::Args)]
struct RollingArgs {
    /// Print the plan and the first capacity check, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Continue the rollout a stopped coordinator left, under the rules it was started with.
    #[arg(long, conflicts_with = "fresh")]
    resume: bool,
    /// Discard an unfinished rollout and start a new one.
    #[arg(long)]
    fresh: bool,
    /// Only these nodes, in this order (comma-separated). A resumed rollout keeps its plan.
    #[arg(long, value_delimiter = ',', conflicts_with = "resume")]
    nodes: Option<Vec<NodeName>>,
    /// Nodes out of service because of the rollout at once: a count, or a percentage of the
    /// plan (at least one) [default: 1].
    #[arg(long)]
    max_parallel: Option<rollout::MaxParallel>,
    /// Other active nodes required before draining one [default: 1].
    #[arg(long)]
    min_active: Option<usize>,
    /// How long a node has to acknowledge a drain [default: 5s].
    #[arg(long)]
    ack_timeout: Option<humantime::Duration>,
    /// Re-sends before giving up on an acknowledgement [default: 2].
    #[arg(long)]
    ack_retries: Option<u32>,
    /// From acknowledgement to zero connections [default: 90s].
    #[arg(long)]
    drain_timeout: Option<humantime::Duration>,
    /// From drained to the old instance gone [default: 30s].
    #[arg(long)]
    exit_timeout: Option<humantime::Duration>,
    /// From the old instance gone to its replacement active [default: 2m].
    #[arg(long)]
    replace_timeout: Option<humantime::Duration>,
    /// Pause after each replacement is active, before its slot is free [default: 0s].
    #[arg(long)]
    settle: Option<humantime::Duration>,
    /// Replacements register under new names (Kubernetes pods): wait for the active count.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    ephemeral_names: Option<bool>,
    /// Command run per node after its drain (the node is told to stay drained, and the command
    /// restarts it); {name} and {instance} are replaced, each as one shell-quoted word.
    #[arg(long)]
    exec: Option<String>,
    /// When a node vanishes mid-drain (killed): wait for its replacement, or abort [default: wait].
    #[arg(long, value_enum)]
    on_node_lost: Option<OnLost>,
    /// Pause once this many nodes are done (a canary), until `ebb rollout continue`.
    #[arg(long)]
    pause_after: Option<usize>,
    /// A replacement counts only after staying active (same instance, heartbeating) this long
    /// [default: 0s].
    #[arg(long)]
    min_ready: Option<humantime::Duration>,
    /// Gate run once each replacement is ready ({name} and {url} replaced, each as one
    /// shell-quoted word); a non-zero exit pauses the rollout (or aborts it).
    #[arg(long)]
    check: Option<String>,
    /// What a failing --check does [default: pause].
    #[arg(long, value_enum)]
    on_check_fail: Option<CheckFailArg>,
    /// Do not rebalance the connections at the end (by default, a fleet left uneven beyond
    /// max/mean 1.25 is rebalanced, as `ebb rebalance` does).
    #[arg(long)]
    no_rebalance: bool,
    /// How long Redis may be unreachable before the rollout stops.
    #[arg(long, default_value_t = rollout::DEFAULT_REDIS_GRACE.into())]
    redis_grace: humantime::Duration,
    /// Expiry of the rollout lock (renewed every third of it): how long a coordinator that died
    /// holds off the next one. `--resume` waits up to this long for a dead one's lock.
    #[arg(long, default_value_t = ebb_proto::keys::ROLLOUT_LOCK_TTL.into(), value_parser = parse_lock_ttl)]
    lock_ttl: humantime::Duration,
}

fn parse_lock_ttl(s: &str) -> Result<humantime::Duration, String> {
    let ttl: humantime::Duration = s.parse().map_err(|e| format!("{e}"))?;
    if ttl.as_millis() < 1000 || ttl.as_secs() > 3600 {
        return Err("the lock TTL must be between 1s and 1h".to_owned());
    }
    Ok(ttl)
}

impl RollingArgs {
    /// The options of a request: what a service rollout may be asked (commands and this
    /// process's own flags are not).
    fn into_options(self) -> Result<ebb_proto::request::RolloutOptions, String> {
        let own = [
            (self.dry_run, "--dry-run"),
            (self.json, "--json"),
            (self.resume, "--resume"),
            (self.fresh, "--fresh"),
            (self.exec.is_some(), "--exec (configure it on ebb serve)"),
            (self.check.is_some(), "--check (configure it on ebb serve)"),
        ];
        if let Some((_, flag)) = own.iter().find(|(given, _)| *given) {
            return Err(format!("{flag} cannot be part of a request"));
        }
        let text = |d: Option<humantime::Duration>| d.map(|d| d.to_string());
        Ok(ebb_proto::request::RolloutOptions {
            nodes: self.nodes,
            max_parallel: self.max_parallel.map(|m| m.to_string()),
            min_active: self.min_active,
            ack_timeout: text(self.ack_timeout),
            ack_retries: self.ack_retries,
            drain_timeout: text(self.drain_timeout),
            exit_timeout: text(self.exit_timeout),
            replace_timeout: text(self.replace_timeout),
            settle: text(self.settle),
            min_ready: text(self.min_ready),
            pause_after: self.pause_after,
            ephemeral_names: self.ephemeral_names,
            on_node_lost: self.on_node_lost.map(|o| match o {
                OnLost::Wait => "wait".to_owned(),
                OnLost::Abort => "abort".to_owned(),
            }),
            on_check_fail: self.on_check_fail.map(|c| match c {
                CheckFailArg::Pause => "pause".to_owned(),
                CheckFailArg::Abort => "abort".to_owned(),
            }),
            rebalance: self.no_rebalance.then_some(false),
        })
    }

    fn into_args(self) -> commands::rolling_restart::Args {
        let duration = |d: Option<humantime::Duration>| d.map(Into::into);
        commands::rolling_restart::Args {
            dry_run: self.dry_run,
            json: self.json,
            resume: self.resume,
            fresh: self.fresh,
            nodes: self.nodes,
            overrides: Overrides {
                max_parallel: self.max_parallel,
                min_active: self.min_active,
                ack_timeout: duration(self.ack_timeout),
                ack_retries: self.ack_retries,
                drain_timeout: duration(self.drain_timeout),
                exit_timeout: duration(self.exit_timeout),
                replace_timeout: duration(self.replace_timeout),
                settle: duration(self.settle),
                ephemeral_names: self.ephemeral_names,
                abort_on_lost: self.on_node_lost.map(|o| matches!(o, OnLost::Abort)),
                pause_after: self.pause_after,
                min_ready: duration(self.min_ready),
                on_check_fail: self.on_check_fail.map(|c| match c {
                    CheckFailArg::Pause => OnCheckFail::Pause,
                    CheckFailArg::Abort => OnCheckFail::Abort,
                }),
                rebalance: self.no_rebalance.then_some(false),
            },
            exec: self.exec,
            check: self.check,
            redis_grace: self.redis_grace.into(),
            lock_ttl: self.lock_ttl.into(),
            request: None,
            output: commands::rolling_restart::Output::Terminal,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EBB_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let secret = match cli.secret.as_deref().map(ebb_proto::sign::Secret::new) {
        None => None,
        Some(Ok(secret)) => Some(secret),
        Some(Err(e)) => {
            eprintln!("ebb: invalid --secret: {e}");
            return ExitCode::from(2);
        }
    };
    let redis =
        ebb_redis::cli::with_ca(cli.redis, cli.redis_ca.as_deref()).unwrap_or_else(|e| e.exit());
    let target = Target {
        redis,
        cluster: cli.cluster,
        secret,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ebb: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Cmd::Status { json } => commands::status::run(&target, json).await,
            Cmd::Drain {
                name,
                then,
                deadline,
                wait,
                timeout,
            } => {
                let args = commands::drain::Args {
                    name,
                    then: then.into(),
                    deadline: deadline.map(Into::into),
                    wait: wait.then(|| timeout.into()),
                };
                commands::drain::run(&target, args).await
            }
            Cmd::Resume { name } => commands::resume::run(&target, &name).await,
            Cmd::RollingRestart(args) => {
                let interrupt = CancellationToken::new();
                tokio::spawn(interrupt_on_signals(interrupt.clone()));
                commands::rolling_restart::run(&target, args.into_args(), interrupt).await
            }
            Cmd::Serve {
                listen,
                api_token,
                exec,
                check,
                redis_grace,
                lock_ttl,
            } => {
                let shutdown = CancellationToken::new();
                tokio::spawn(interrupt_on_signals(shutdown.clone()));
                let config = ebb_coordinator::service::Config {
                    listen,
                    api_token: api_token.filter(|t| !t.is_empty()),
                    exec,
                    check,
                    redis_grace: redis_grace.into(),
                    lock_ttl: lock_ttl.into(),
                };
                commands::serve::run(&target, config, shutdown).await
            }
            Cmd::Request {
                kind:
                    RequestKind::RollingRestart {
                        id,
                        wait,
                        timeout,
                        rollout,
                    },
            } => match rollout.into_options() {
                Err(why) => Err(commands::Error::Usage(why)),
                Ok(options) => {
                    let args = commands::request::Args {
                        id,
                        options,
                        wait: wait.then(|| timeout.into()),
                    };
                    commands::request::run(&target, args).await
                }
            },
            Cmd::Watch { id, timeout } => commands::watch::run(&target, id, timeout.into()).await,
            Cmd::Rebalance {
                tolerance,
                rate,
                json,
            } => {
                let settings = rollout::rebalance::Settings {
                    tolerance,
                    rate,
                    rounds: rollout::rebalance::ROUNDS,
                };
                commands::rebalance::run(&target, commands::rebalance::Args { settings, json })
                    .await
            }
            Cmd::Rollout {
                action,
                reason,
                wait,
                timeout,
            } => {
                let mode = match action {
                    RolloutAction::Pause => Mode::Paused,
                    RolloutAction::Continue => Mode::Running,
                    RolloutAction::Abort => Mode::Aborted,
                };
                let args = commands::rollout::Args {
                    mode,
                    reason,
                    wait: wait.then(|| timeout.into()),
                };
                commands::rollout::run(&target, args).await
            }
            Cmd::Sign { action } => match action {
                SignAction::Drain { name, then } => commands::sign::run(
                    &target,
                    &name,
                    Action::Drain(Drain {
                        then: then.into(),
                        deadline_ms: None,
                        targets: Vec::new(),
                    }),
                ),
                SignAction::Resume { name } => {
                    commands::sign::run(&target, &name, Action::Resume(Resume {}))
                }
            },
            Cmd::Acl(args) => commands::acl::run(&target, args.into_args()),
        }
    });
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failed(reason)) => {
            eprintln!("ebb: {reason}");
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("ebb: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// SIGINT/SIGTERM stop a rollout where it is (it can be resumed).
async fn interrupt_on_signals(interrupt: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("ebb: interrupted; stopping the rollout where it is");
    interrupt.cancel();
}
