//! Refused commands, reported in aggregate. Pure logic: no I/O, the clock is passed in.
//!
//! Each refusal is counted in the metrics at once, but a flood of garbage must not cost a log
//! line and a Redis round trip per payload. So refusals are reported (one log line, one
//! `command_refused` event carrying the counts) at most once per interval: the first after a
//! quiet interval at once, so a coordinator learns without delay that its command was refused,
//! and whatever follows within the interval together when it ends.

use ebb_proto::EventKind;
use ebb_proto::command::Refusal;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;
use tokio::time::Instant;

const REASONS: usize = Refusal::LABELS.len();

/// Refusals not yet reported, and when the next report may go.
#[derive(Debug)]
pub(crate) struct Refusals {
    interval: Duration,
    counts: [u64; REASONS],
    /// The latest refusal not yet reported, to show one in full.
    latest: Option<Refusal>,
    /// Until then, refusals wait for the next report; `None` (or past) means report at once.
    quiet_until: Option<Instant>,
}

/// What one report says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    pub total: u64,
    /// Non-zero counts, by label.
    pub by_reason: BTreeMap<&'static str, u64>,
    /// One of them, in full.
    pub latest: Refusal,
}

impl Refusals {
    pub fn new(interval: Duration) -> Self {
        Refusals {
            interval,
            counts: [0; REASONS],
            latest: None,
            quiet_until: None,
        }
    }

    /// Counts a refusal at `now`; `true` when it should be reported at once.
    pub fn add(&mut self, refusal: Refusal, now: Instant) -> bool {
        let label = refusal.label();
        let slot = Refusal::LABELS
            .iter()
            .position(|l| *l == label)
            .expect("every refusal's label is listed");
        self.counts[slot] += 1;
        self.latest = Some(refusal);
        self.quiet_until.is_none_or(|until| now >= until)
    }

    /// When the refusals waiting are to be reported; `None` when none wait.
    pub fn due(&self) -> Option<Instant> {
        self.latest.as_ref()?;
        Some(self.quiet_until.unwrap_or_else(Instant::now))
    }

    /// Takes what waits, for a report made at `now`; the next one may come an interval later.
    pub fn take(&mut self, now: Instant) -> Option<Report> {
        let latest = self.latest.take()?;
        let by_reason = Refusal::LABELS
            .iter()
            .zip(std::mem::take(&mut self.counts))
            .filter(|(_, n)| *n > 0)
            .map(|(label, n)| (*label, n))
            .collect::<BTreeMap<_, _>>();
        self.quiet_until = Some(now + self.interval);
        Some(Report {
            total: by_reason.values().sum(),
            by_reason,
            latest,
        })
    }
}

impl Report {
    /// The most frequent reason (the first label of a tie).
    pub fn reason(&self) -> &'static str {
        let mut best = ("", 0);
        for (label, n) in &self.by_reason {
            if *n > best.1 {
                best = (label, *n);
            }
        }
        best.0
    }

    /// `malformed=120 too_large=3`, for the log line.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        for (label, n) in &self.by_reason {
            let sep = if text.is_empty() { "" } else { " " };
            let _ = write!(text, "{sep}{label}={n}");
        }
        text
    }

    /// The `command_refused` event: one refusal as before aggregation, more with their counts.
    pub fn event(&self) -> EventKind {
        let (count, reasons) = if self.total == 1 {
            (None, BTreeMap::new())
        } else {
            let reasons = self
                .by_reason
                .iter()
                .map(|(label, n)| ((*label).to_owned(), *n))
                .collect();
            (Some(self.total), reasons)
        };
        EventKind::CommandRefused {
            reason: self.reason().to_owned(),
            command_id: None,
            count,
            reasons,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn malformed() -> Refusal {
        Refusal::Malformed("x".into())
    }

    #[test]
    fn the_first_refusal_is_reported_at_once_and_the_rest_of_the_interval_together() {
        let t0 = Instant::now();
        let mut refusals = Refusals::new(SEC);
        assert_eq!(refusals.due(), None);
        assert!(refusals.add(Refusal::Unsigned, t0));
        let first = refusals.take(t0).unwrap();
        assert_eq!((first.total, first.reason()), (1, "unsigned"));
        assert_eq!(
            first.event(),
            EventKind::CommandRefused {
                reason: "unsigned".into(),
                command_id: None,
                count: None,
                reasons: BTreeMap::new(),
            }
        );
        // A flood within the interval: nothing at once, one report when it ends.
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_micros(i * 50);
            let refusal = if i.is_multiple_of(100) {
                Refusal::TooLarge(20_000)
            } else {
                malformed()
            };
            assert!(!refusals.add(refusal, now), "refusal {i}");
        }
        assert_eq!(refusals.due(), Some(t0 + SEC));
        let flood = refusals.take(t0 + SEC).unwrap();
        assert_eq!(flood.total, 10_000);
        assert_eq!(flood.describe(), "malformed=9900 too_large=100");
        let EventKind::CommandRefused {
            reason,
            count,
            reasons,
            ..
        } = flood.event()
        else {
            panic!("not a refusal event")
        };
        assert_eq!((reason.as_str(), count), ("malformed", Some(10_000)));
        assert_eq!(reasons["too_large"], 100);
        assert_eq!(refusals.due(), None);
        assert_eq!(refusals.take(t0 + SEC), None);
    }

    #[test]
    fn after_a_quiet_interval_the_next_refusal_goes_at_once_again() {
        let t0 = Instant::now();
        let mut refusals = Refusals::new(SEC);
        assert!(refusals.add(malformed(), t0));
        refusals.take(t0);
        assert!(!refusals.add(malformed(), t0 + SEC / 2));
        refusals.take(t0 + SEC);
        // Nothing during the next interval; then one comes: at once.
        assert!(refusals.add(Refusal::Replayed, t0 + 3 * SEC));
        assert_eq!(refusals.take(t0 + 3 * SEC).unwrap().reason(), "replayed");
    }
}
