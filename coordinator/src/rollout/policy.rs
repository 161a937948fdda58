//! The rules a rollout follows, their defaults, and the overrides a command line (or a request)
//! gives. A rollout saves its policy with its state, so `--resume` keeps the rules it started
//! with; an override that contradicts them is refused rather than silently applied or dropped.

use super::ms;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// `--max-parallel`: nodes out of service because of the rollout at once.
pub const DEFAULT_MAX_PARALLEL: MaxParallel = MaxParallel::Count(1);
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
/// `--settle`: pause after a replacement is active, before its slot is free.
pub const DEFAULT_SETTLE: Duration = Duration::ZERO;
/// `--min-ready`: how long a replacement must stay active before it counts (0: at once).
pub const DEFAULT_MIN_READY: Duration = Duration::ZERO;

/// `--redis-grace`: how long Redis may be unreachable mid-rollout before it aborts.
pub const DEFAULT_REDIS_GRACE: Duration = Duration::from_secs(30);
/// How often records are re-read when no event arrives (events make it faster, not correct).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// `--max-parallel N` or `N%` (of the plan, at least one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxParallel {
    Count(usize),
    Percent(u8),
}

impl MaxParallel {
    /// The number of slots for a plan of `nodes` nodes.
    pub fn of(self, nodes: usize) -> usize {
        match self {
            MaxParallel::Count(n) => n.max(1),
            MaxParallel::Percent(p) => (nodes * p as usize / 100).max(1),
        }
    }
}

impl fmt::Display for MaxParallel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxParallel::Count(n) => write!(f, "{n}"),
            MaxParallel::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl FromStr for MaxParallel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected a count (1, 2, ...) or a percentage (25%), got {s:?}");
        match s.strip_suffix('%') {
            Some(p) => match p.parse::<u8>() {
                Ok(p @ 1..=100) => Ok(MaxParallel::Percent(p)),
                _ => Err(bad()),
            },
            None => match s.parse::<usize>() {
                Ok(n @ 1..=10_000) => Ok(MaxParallel::Count(n)),
                _ => Err(bad()),
            },
        }
    }
}

/// The rules a rollout follows; saved with it, so `--resume` keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub max_parallel: MaxParallel,
    pub min_active: usize,
    #[serde(with = "ms")]
    pub ack_timeout: Duration,
    pub ack_retries: u32,
    #[serde(with = "ms")]
    pub drain_timeout: Duration,
    #[serde(with = "ms")]
    pub exit_timeout: Duration,
    #[serde(with = "ms")]
    pub replace_timeout: Duration,
    #[serde(with = "ms")]
    pub settle: Duration,
    /// Replacements come back under new names (Kubernetes pods): wait for the active count.
    pub ephemeral_names: bool,
    /// An `--exec` command runs after each drain.
    pub exec: bool,
    /// Abort when a node vanishes mid-drain, instead of waiting for its replacement.
    pub abort_on_lost: bool,
    /// Pause the rollout once this many nodes are done (a canary), until `ebb rollout continue`.
    #[serde(default)]
    pub pause_after: Option<usize>,
    /// A replacement counts once it has stayed active (same instance, heartbeating) this long.
    #[serde(with = "ms", default)]
    pub min_ready: Duration,
    /// A `--check` command gates each node once its replacement is ready.
    #[serde(default)]
    pub check: bool,
    /// What a failing `--check` does.
    #[serde(default)]
    pub on_check_fail: OnCheckFail,
    /// Rebalance the fleet's connections once every node is restarted, if they ended uneven.
    #[serde(default = "yes")]
    pub rebalance: bool,
}

fn yes() -> bool {
    true
}

/// `--on-check-fail`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnCheckFail {
    /// Pause the rollout (the node's restart is done; `ebb rollout continue` goes on).
    #[default]
    Pause,
    /// Stop the rollout.
    Abort,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_parallel: DEFAULT_MAX_PARALLEL,
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
            pause_after: None,
            min_ready: DEFAULT_MIN_READY,
            check: false,
            on_check_fail: OnCheckFail::Pause,
            rebalance: true,
        }
    }
}

/// The rules a command line or a request sets; `None` keeps the default (or, on resume, what
/// the rollout was started with).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Overrides {
    pub max_parallel: Option<MaxParallel>,
    pub min_active: Option<usize>,
    #[serde(with = "ms::opt")]
    pub ack_timeout: Option<Duration>,
    pub ack_retries: Option<u32>,
    #[serde(with = "ms::opt")]
    pub drain_timeout: Option<Duration>,
    #[serde(with = "ms::opt")]
    pub exit_timeout: Option<Duration>,
    #[serde(with = "ms::opt")]
    pub replace_timeout: Option<Duration>,
    #[serde(with = "ms::opt")]
    pub settle: Option<Duration>,
    pub ephemeral_names: Option<bool>,
    pub abort_on_lost: Option<bool>,
    pub pause_after: Option<usize>,
    #[serde(with = "ms::opt")]
    pub min_ready: Option<Duration>,
    pub on_check_fail: Option<OnCheckFail>,
    pub rebalance: Option<bool>,
}

impl Overrides {
    /// `base` with every override that is set.
    pub fn apply(&self, base: Policy) -> Policy {
        let mut policy = json_object(&base);
        policy.extend(self.set());
        serde_json::from_value(policy.into()).expect("overrides have the policy's fields and types")
    }

    /// The flags set to something other than `saved` has (for `--resume`).
    pub fn conflicts(&self, saved: &Policy) -> Vec<String> {
        let saved = json_object(saved);
        self.set()
            .filter(|(field, value)| saved.get(field) != Some(value))
            .map(|(field, _)| flag(&field))
            .collect()
    }

    /// The overrides that are set, as the policy's JSON fields.
    fn set(&self) -> impl Iterator<Item = (String, serde_json::Value)> {
        json_object(self).into_iter().filter(|(_, v)| !v.is_null())
    }
}

fn json_object(value: &impl Serialize) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(value).expect("a policy serializes") {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("a policy is a struct"),
    }
}

/// The command-line flag of a policy field.
fn flag(field: &str) -> String {
    match field {
        "abort_on_lost" => "--on-node-lost".to_owned(),
        "rebalance" => "--no-rebalance".to_owned(),
        other => format!("--{}", other.replace('_', "-")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_parallel_parses_counts_and_percentages() {
        assert_eq!("2".parse(), Ok(MaxParallel::Count(2)));
        assert_eq!("25%".parse(), Ok(MaxParallel::Percent(25)));
        for bad in [
            "0",
            "0%",
            "101%",
            "-1",
            "x",
            "",
            "%",
            "99999999999999999999",
        ] {
            assert!(bad.parse::<MaxParallel>().is_err(), "{bad}");
        }
        assert_eq!(MaxParallel::Percent(25).of(24), 6);
        assert_eq!(MaxParallel::Percent(1).of(3), 1);
        assert_eq!(MaxParallel::Count(4).of(2), 4);
    }

    #[test]
    fn overrides_apply_and_name_their_conflicts() {
        let overrides = Overrides {
            max_parallel: Some(MaxParallel::Count(3)),
            settle: Some(Duration::from_secs(2)),
            ..Overrides::default()
        };
        let policy = overrides.apply(Policy::default());
        assert_eq!(policy.max_parallel, MaxParallel::Count(3));
        assert_eq!(policy.settle, Duration::from_secs(2));
        assert_eq!(policy.min_active, DEFAULT_MIN_ACTIVE);
        assert!(overrides.conflicts(&policy).is_empty());
        assert_eq!(
            overrides.conflicts(&Policy::default()),
            ["--max-parallel", "--settle"]
        );
        assert!(Overrides::default().conflicts(&policy).is_empty());
    }
}
