//! `drain`: flip readiness, close every connection paced, then exit or stay drained.

use crate::target::{self, Target};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Longest drain deadline a command may ask for.
pub const MAX_DEADLINE_MS: u64 = 24 * 3600 * 1000;

/// What a node does once drained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Then {
    /// Exit the process (rolling restart: the supervisor starts the new version).
    #[default]
    Exit,
    /// Stay up, drained, until `resume` (maintenance).
    Stay,
}

impl Then {
    /// `exit` or `stay`.
    pub fn as_str(self) -> &'static str {
        match self {
            Then::Exit => "exit",
            Then::Stay => "stay",
        }
    }
}

impl fmt::Display for Then {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Then {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "exit" => Ok(Then::Exit),
            "stay" => Ok(Then::Stay),
            other => Err(format!("expected exit or stay, got {other:?}")),
        }
    }
}

/// Arguments of a drain command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    /// Exit or stay once drained (default: exit).
    #[serde(default)]
    pub then: Then,
    /// Overrides the node's drain deadline, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Where the clients should go, in proportion ([`crate::target`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
}

impl Drain {
    /// Checks the arguments (also used by the admin endpoint and the CLI, so every way in agrees).
    pub fn validate(&self) -> Result<(), String> {
        match self.deadline_ms {
            Some(0) => return Err("deadline_ms must be positive".to_owned()),
            Some(ms) if ms > MAX_DEADLINE_MS => {
                return Err(format!("deadline_ms must be at most {MAX_DEADLINE_MS}"));
            }
            _ => {}
        }
        target::validate(&self.targets)
    }
}
