//! `ebb-load`: load for an ebb fleet. `hold` opens N idle connections and keeps them.
//!
//! Exit codes: 0 done, 1 the load failed (e.g. connections refused), 2 bad flags.

use clap::{Parser, Subcommand};
use ebb_client::load::hold;
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(name = "ebb-load", version, about = "Load generator for ebb fleets")]
struct Args {
    #[command(subcommand)]
    mode: Mode,
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
        /// Spread over this many source addresses (one address has ~28k ports).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=60_000))]
        sources: u32,
        /// The first source address is 127.0.0.<FIRST_SOURCE>.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=60_000))]
        first_source: u32,
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
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ebb-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.mode {
        Mode::Hold {
            url,
            connections,
            sources,
            first_source,
            concurrency,
            duration,
            until_stdin_closes,
        } => {
            let spec = hold::Hold {
                url,
                connections: connections as usize,
                sources: ebb_client::load::Sources {
                    first: first_source as usize,
                    count: sources as usize,
                },
                concurrency: concurrency as usize,
            };
            let held = hold::open(&spec).await?;
            println!("{}", serde_json::to_string(&held.opened)?);
            let ok = held.opened.failed == 0;
            let limit = duration.map(Into::into).unwrap_or(hold::DEFAULT_HOLD);
            let mut term = signal(SignalKind::terminate())?;
            let mut int = signal(SignalKind::interrupt())?;
            let mut stdin = tokio::io::stdin();
            let mut sink = [0u8; 64];
            tokio::select! {
                _ = tokio::time::sleep(limit) => {}
                _ = term.recv() => {}
                _ = int.recv() => {}
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
    }
}
