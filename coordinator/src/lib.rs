//! ebb-coordinator: the `ebb` CLI and the rolling-restart engine.
//!
//! Layout:
//! - [`cluster`]: Redis access (records, commands, events, persisted rollout state);
//! - [`lock`]: one rollout per cluster;
//! - [`rollout`]: the step function, observations, the engine and the report;
//! - [`commands`]: one module per subcommand (`status`, `drain`, `resume`, `rolling-restart`,
//!   `sign`, `acl`), each returning an [`commands::Outcome`] the binary maps to an exit code;
//! - [`progress`]: live progress on a terminal, plain lines elsewhere;
//! - [`exec`]: `--exec` and `--check` commands;
//! - [`service`]: `ebb serve`, the coordinator as a service driven by requests in Redis.

pub mod cluster;
pub mod commands;
pub mod exec;
pub mod lock;
pub mod progress;
pub mod rollout;
pub mod service;
