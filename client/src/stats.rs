//! What a client counts.

use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Most reconnect samples one client keeps.
pub const MAX_SAMPLES: usize = 10_000;

/// Counters of one client (or, summed, of many).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Messages handed to the client.
    pub sent: u64,
    /// Messages answered (each counted once, duplicates dropped).
    pub answered: u64,
    /// Messages sent again on a new connection because they were not answered on the old one.
    pub resent: u64,
    /// Replies for messages already answered (dropped).
    pub duplicates: u64,
    /// Successful connections after the first.
    pub reconnects: u64,
    /// Failed connection attempts (refused, unreachable).
    pub connect_failures: u64,
    /// Upgrades refused with 503 (a draining node).
    pub refused: u64,
    /// Close codes received, by code.
    pub close_codes: BTreeMap<u16, u64>,
    /// Connections that ended without a Close frame (what a browser reports as 1006).
    pub abnormal: u64,
    /// Notices received.
    pub notices: u64,
    /// Pushes handed to the application.
    pub pushes: u64,
    /// Pushes dropped as duplicates (a seq not above the last one seen).
    pub push_duplicates: u64,
    /// Pushes that came after a hole (a seq before them had not come yet).
    pub push_gaps: u64,
    /// Connections made to a reconnect target a server named.
    pub targets_followed: u64,
    /// Reconnect targets not followed: not among the configured URLs (or too long to be one).
    pub targets_ignored: u64,
    /// From losing a connection to having a new one, per reconnect, in ms.
    pub reconnect_ms: Vec<u64>,
    /// How much later than advised each reconnect came (0 when on time), in ms.
    pub late_ms: Vec<u64>,
    /// When each reconnect happened, ms since the epoch (for reconnect-rate buckets).
    pub reconnected_at_ms: Vec<u64>,
}

impl Stats {
    /// Adds another client's counters.
    pub fn merge(&mut self, other: &Stats) {
        self.sent += other.sent;
        self.answered += other.answered;
        self.resent += other.resent;
        self.duplicates += other.duplicates;
        self.reconnects += other.reconnects;
        self.connect_failures += other.connect_failures;
        self.refused += other.refused;
        for (code, n) in &other.close_codes {
            *self.close_codes.entry(*code).or_default() += n;
        }
        self.abnormal += other.abnormal;
        self.notices += other.notices;
        self.pushes += other.pushes;
        self.push_duplicates += other.push_duplicates;
        self.push_gaps += other.push_gaps;
        self.targets_followed += other.targets_followed;
        self.targets_ignored += other.targets_ignored;
        self.reconnect_ms.extend(&other.reconnect_ms);
        self.late_ms.extend(&other.late_ms);
        self.reconnected_at_ms.extend(&other.reconnected_at_ms);
    }

    /// Messages sent and never answered.
    pub fn unanswered(&self) -> u64 {
        self.sent.saturating_sub(self.answered)
    }

    pub(crate) fn reconnected(&mut self, took: Duration, late: Duration) {
        self.reconnects += 1;
        // A long-lived client keeps the first samples only, so its memory stays bounded.
        if self.reconnect_ms.len() < MAX_SAMPLES {
            self.reconnect_ms.push(took.as_millis() as u64);
            self.late_ms.push(late.as_millis() as u64);
            self.reconnected_at_ms.push(ebb_proto::time::now_ms());
        }
    }
}
