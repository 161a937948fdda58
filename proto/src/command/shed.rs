//! `shed`: an active node closes some of its connections, paced, sending each client to a
//! target, and stays active (`ebb rebalance`).

use crate::record::MAX_CONNECTIONS;
use crate::target::{self, Target};
use serde::{Deserialize, Serialize};

/// Fastest shed rate a command may ask for, closes per second.
pub const MAX_RATE: u32 = 100_000;

/// Arguments of a shed command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shed {
    /// How many connections to close (at most the node's own count at the time).
    pub count: u64,
    /// Closes per second.
    pub rate_per_s: u32,
    /// Where the shed clients should go; at least one.
    pub targets: Vec<Target>,
}

impl Shed {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.count == 0 || self.count > MAX_CONNECTIONS {
            return Err(format!("count must be 1 to {MAX_CONNECTIONS}"));
        }
        if self.rate_per_s == 0 || self.rate_per_s > MAX_RATE {
            return Err(format!("rate_per_s must be 1 to {MAX_RATE}"));
        }
        if self.targets.is_empty() {
            return Err("a shed needs at least one target".to_owned());
        }
        target::validate(&self.targets)
    }
}
