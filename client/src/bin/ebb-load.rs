//! `ebb-load`: load for an ebb fleet.
//!
//! - `hold`: N idle connections, kept until stopped (memory per connection, filling a fleet);
//! - `echo`: N connections, window W, size S: msgs/s and p50/p99/p999 latency;
//! - `soak`: N reconnecting clients over several URLs at a rate, through drains or a rolling
//!   restart: lost, duplicates, abnormal closes, reconnect times and per-100 ms reconnect counts.
//!
//! Progress on a terminal; a JSON summary on stdout with `--json` (always for `hold`).
//! Exit codes: 0 done, 1 the load failed (connections refused, messages lost, abnormal closes),
//! 2 bad flags.

use clap::{Args as ClapArgs, Parser, Subcommand};
use ebb_client::load::{Sources, echo, hold, soak};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::process::ExitCode;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(name = "ebb-load", version, about = "Load generator for ebb fleets")]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, ClapArgs)]
struct SourceArgs {
    /// Spread connections over this many source addresses (one address has ~28k ports).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    sources: u32,
    /// The first source address is 127.0.0.<FIRST_SOURCE>.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    first_source: u32,
}

impl SourceArgs {
    fn sources(&self) -> Sources {
        Sources {
            first: self.first_source as usize,
            count: self.sources as usize,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Open N idle connections and hold them until SIGINT/SIGTERM or --for.
    Hold {
        /// Node WebSocket URL.
        #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
        url: String,
        /// Connections to open.
        #[arg(long, short = 'n', default_value_t = 1000,
              value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        connections: u32,
        #[command(flatten)]
        sources: SourceArgs,
        /// Handshakes in flight at once.
        #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        concurrency: u32,
        /// How long to hold (default: one hour).
        #[arg(long = "for")]
        duration: Option<humantime::Duration>,
        /// Also stop when standard input closes (for a parent process that holds the pipe).
        #[arg(long)]
        until_stdin_closes: bool,
    },
    /// Throughput and latency against an echo node.
    Echo {
        #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
        url: String,
        /// Connections.
        #[arg(long, short = 'n', default_value_t = 100,
              value_parser = clap::value_parser!(u32).range(1..=100_000))]
        connections: u32,
        /// Messages in flight per connection.
        #[arg(long, short = 'w', default_value_t = 1,
              value_parser = clap::value_parser!(u32).range(1..=10_000))]
        window: u32,
        /// Message size in bytes.
        #[arg(long, short = 's', default_value_t = 64,
              value_parser = clap::value_parser!(u32).range(1..=(16 << 20)))]
        size: u32,
        /// How long to run.
        #[arg(long = "for", default_value = "10s")]
        duration: humantime::Duration,
        #[command(flatten)]
        sources: SourceArgs,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reconnecting clients at a steady rate, through drains and rolling restarts.
    Soak {
        /// Node URLs (repeat, or comma-separated); clients are spread over them and fail over.
        #[arg(long = "url", value_delimiter = ',', required = true)]
        urls: Vec<String>,
        /// Clients.
        #[arg(long, short = 'n', default_value_t = 1000,
              value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        clients: u32,
        /// Messages per second, all clients together.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Message size in bytes.
        #[arg(long, short = 's', default_value_t = 32,
              value_parser = clap::value_parser!(u32).range(1..=(1 << 20)))]
        size: u32,
        /// Longest run; SIGINT/SIGTERM stop it earlier (then it settles and reports).
        #[arg(long = "for", default_value = "60s")]
        duration: humantime::Duration,
        /// After sending stops, how long the last answers may take.
        #[arg(long, default_value = "15s")]
        settle: humantime::Duration,
        /// Start every client on the first URL (the others are for failover only).
        #[arg(long)]
        start_on_first: bool,
        #[command(flatten)]
        sources: SourceArgs,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EBB_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ebb-load: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ebb-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A spinner on a terminal, nothing elsewhere.
fn spinner() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} {wide_msg}").expect("template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Cancelled on the first SIGINT or SIGTERM.
fn stop_on_signals() -> anyhow::Result<CancellationToken> {
    let stop = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let token = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        token.cancel();
    });
    Ok(stop)
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.mode {
        Mode::Hold {
            url,
            connections,
            sources,
            concurrency,
            duration,
            until_stdin_closes,
        } => {
            let spec = hold::Hold {
                url,
                connections: connections as usize,
                sources: sources.sources(),
                concurrency: concurrency as usize,
            };
            let stop = stop_on_signals()?;
            let held = hold::open(&spec).await?;
            println!("{}", serde_json::to_string(&held.opened)?);
            let ok = held.opened.failed == 0;
            let limit = duration.map(Into::into).unwrap_or(hold::DEFAULT_HOLD);
            let mut stdin = tokio::io::stdin();
            let mut sink = [0u8; 64];
            tokio::select! {
                _ = tokio::time::sleep(limit) => {}
                () = stop.cancelled() => {}
                _ = async {
                    use tokio::io::AsyncReadExt;
                    while let Ok(n) = stdin.read(&mut sink).await { if n == 0 { break } }
                }, if until_stdin_closes => {}
            }
            held.release().await;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Mode::Echo {
            url,
            connections,
            window,
            size,
            duration,
            sources,
            json,
        } => {
            let load = echo::EchoLoad {
                url,
                connections: connections as usize,
                window: window as usize,
                size: size as usize,
                duration: duration.into(),
                sources: sources.sources(),
            };
            let bar = spinner();
            let summary = echo::run(&load, |done| {
                bar.set_message(format!("{done} messages answered"))
            })
            .await?;
            bar.finish_and_clear();
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!(
                    "{} msgs/s over {:.1}s ({} connections, window {}, {} bytes): p50 {} µs, p99 {} µs, p999 {} µs, max {} µs, errors {}",
                    summary.msgs_per_sec.round(),
                    summary.seconds,
                    summary.connections,
                    summary.window,
                    summary.size,
                    summary.p50_us,
                    summary.p99_us,
                    summary.p999_us,
                    summary.max_us,
                    summary.errors
                );
            }
            Ok(if summary.errors == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Mode::Soak {
            urls,
            clients,
            rate,
            size,
            duration,
            settle,
            start_on_first,
            sources,
            json,
        } => {
            if !(rate > 0.0 && rate.is_finite()) {
                eprintln!("ebb-load: --rate must be a positive number");
                return Ok(ExitCode::from(2));
            }
            let spec = soak::Soak {
                urls,
                clients: clients as usize,
                rate,
                duration: duration.into(),
                settle: settle.into(),
                sources: sources.sources(),
                size: size as usize,
                start_on_first,
            };
            let stop = stop_on_signals()?;
            let bar = spinner();
            let summary = soak::run(&spec, stop, |live| {
                bar.set_message(format!(
                    "{}/{} connected, {} sent, {} awaiting an answer",
                    live.connected, spec.clients, live.sent, live.pending
                ))
            })
            .await;
            bar.finish_and_clear();
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!(
                    "{} clients, {:.1}s: sent {}, answered {}, lost {}, duplicate answers dropped {}, resent {}, abnormal closes {}, reconnects {} (p50 {} ms, p99 {} ms, max {} ms; late vs advised p99 {} ms), reconnect peak/mean per 100 ms {:.2}",
                    summary.clients,
                    summary.seconds,
                    summary.sent,
                    summary.answered,
                    summary.lost,
                    summary.duplicates,
                    summary.resent,
                    summary.abnormal_closes,
                    summary.reconnects,
                    summary.reconnect_ms.p50,
                    summary.reconnect_ms.p99,
                    summary.reconnect_ms.max,
                    summary.late_ms.p99,
                    summary.reconnects_per_100ms.peak_to_mean,
                );
            }
            let ok = summary.lost == 0 && summary.abnormal_closes == 0;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
