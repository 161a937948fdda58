//! The rolling restart: a step function over observations ([`step`]), the observations
//! themselves ([`observe`]), the engine that drives it against Redis ([`engine`]) and the report
//! it ends with ([`report`]).

pub mod engine;
pub mod observe;
pub mod report;
pub mod step;

use std::time::Duration;

/// `--min-active`: other active nodes required before draining one.
pub const DEFAULT_MIN_ACTIVE: usize = 1;
/// `--ack-timeout`: how long a node has to say `draining` after the command.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// `--ack-retries`: re-sends before giving up on an acknowledgement.
pub const DEFAULT_ACK_RETRIES: u32 = 2;
/// `--drain-timeout`: from acknowledgement to zero connections. Above the node's own drain
/// deadline (30 s by default), which ends every drain first.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(90);
/// `--exit-timeout`: from drained to the old instance gone.
pub const DEFAULT_EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// `--replace-timeout`: from the old instance gone to its replacement active.
pub const DEFAULT_REPLACE_TIMEOUT: Duration = Duration::from_secs(120);
/// `--settle`: pause after a replacement is active, before the next node.
pub const DEFAULT_SETTLE: Duration = Duration::ZERO;
/// `--redis-grace`: how long Redis may be unreachable mid-rollout before it aborts.
pub const DEFAULT_REDIS_GRACE: Duration = Duration::from_secs(30);
/// How often records are re-read when no event arrives (events make it faster, not correct).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The rules a rollout follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub min_active: usize,
    pub ack_timeout: Duration,
    pub ack_retries: u32,
    pub drain_timeout: Duration,
    pub exit_timeout: Duration,
    pub replace_timeout: Duration,
    pub settle: Duration,
    /// Replacements come back under new names (Kubernetes pods): wait for the active count.
    pub ephemeral_names: bool,
    /// An `--exec` command runs after each drain.
    pub exec: bool,
    /// Abort when a node vanishes mid-drain, instead of waiting for its replacement.
    pub abort_on_lost: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_active: DEFAULT_MIN_ACTIVE,
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            ack_retries: DEFAULT_ACK_RETRIES,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            exit_timeout: DEFAULT_EXIT_TIMEOUT,
            replace_timeout: DEFAULT_REPLACE_TIMEOUT,
            settle: DEFAULT_SETTLE,
            ephemeral_names: false,
            exec: false,
            abort_on_lost: false,
        }
    }
}
