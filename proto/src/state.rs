//! The node lifecycle states, as a node stores them in its record and publishes them in events.
//!
//! `starting → active → draining → drained → (exit | active again on resume)`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a node is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Bound but not yet serving WebSocket upgrades.
    Starting,
    /// Ready: accepts upgrades, `/health` answers 200.
    Active,
    /// Readiness flipped, closing its connections.
    Draining,
    /// Every connection closed; the node exits or waits for `resume`.
    Drained,
}

impl NodeState {
    /// The lower-case name used in records, events, metrics and `/health`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Starting => "starting",
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Drained => "drained",
        }
    }

    /// All states, in lifecycle order (used to render one metric per state).
    pub const ALL: [NodeState; 4] = [
        NodeState::Starting,
        NodeState::Active,
        NodeState::Draining,
        NodeState::Drained,
    ];
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown node state {0:?} (expected starting, active, draining or drained)")]
pub struct UnknownState(pub String);

impl FromStr for NodeState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for state in NodeState::ALL {
            assert_eq!(state.as_str().parse::<NodeState>(), Ok(state));
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{state}\""));
        }
        assert!("paused".parse::<NodeState>().is_err());
    }
}
