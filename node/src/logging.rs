//! The log setup every binary of this package shares (ebb-node, ebb-agent): `EBB_LOG` as the
//! filter (default `info`), to stderr, coloured only on a terminal.

/// Installs the subscriber; call once, before the runtime starts.
pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EBB_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
