//! The close schedule of a drain: when each connection is closed and what delay it is advised.
//!
//! Connection `i` of `n` is closed at `lead + (spread - lead) * i / n` after the drain's closing
//! phase starts (when the notices go out) and advised to wait `base + reconnect_spread * i / n`.
//! The lead gives a client that sent a message just before it saw the notice the time to get its
//! answer before the Close; the closes still end within the spread (a spread shorter than the
//! lead closes everyone at the lead). Close moments and delays both grow with `i`, so the moments
//! clients come back (`close + delay`) are evenly spaced over
//! `lead + base .. base + max(lead, spread) + reconnect_spread`: the surviving nodes see a flat
//! reconnect rate instead of a storm. When pacing is skipped (a
//! second signal), the remaining clients are closed at once but advised the delay that keeps their
//! planned reconnect moment, so skipping pacing speeds the exit without bunching reconnects.
//!
//! With reconnect targets, slot `i` is also dealt a target ([`dealt`]): the deal interleaves the
//! targets in proportion, so the clients closed in any stretch of the window are spread over the
//! targets like the whole, and each target sees its share of the flat reconnect rate.
//!
//! A shed ([`shed_slot`]) paces by rate instead of by window: connection `i` of `n` is closed
//! `i / rate` seconds in and advised `reconnect_spread * i / n`, so its clients come back evenly
//! spaced too, to nodes that have room.

use ebb_proto::target::{self, Target};
use std::time::Duration;

/// One connection's place in the schedule, as offsets from the start of the closing phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// When to send this connection its Close.
    pub close_at: Duration,
    /// The reconnect delay its close reason advises, counted from its Close.
    pub retry_after: Duration,
}

impl Slot {
    /// When the client is expected back, from the start of the closing phase.
    pub fn reconnect_at(&self) -> Duration {
        self.close_at + self.retry_after
    }

    /// The delay to advise when this slot is closed early at `now` (pacing skipped): the client's
    /// planned reconnect moment is kept.
    pub fn retry_after_if_closed_at(&self, now: Duration) -> Duration {
        self.reconnect_at().saturating_sub(now)
    }
}

/// The schedule for `n` connections: closes over `[lead, max(lead, spread))`.
pub fn schedule(
    n: usize,
    lead: Duration,
    spread: Duration,
    base: Duration,
    reconnect_spread: Duration,
) -> Vec<Slot> {
    let window = spread.saturating_sub(lead);
    (0..n)
        .map(|i| Slot {
            close_at: lead + fraction(window, i, n),
            retry_after: base + fraction(reconnect_spread, i, n),
        })
        .collect()
}

/// The target of each of `slots` slots (an index into `targets`, in slot order), dealt in
/// proportion and interleaved ([`ebb_proto::target::deal`]); `None` for each without targets.
pub fn dealt(slots: usize, targets: &[Target]) -> Vec<Option<usize>> {
    if targets.is_empty() {
        return vec![None; slots];
    }
    target::deal(targets, slots).into_iter().map(Some).collect()
}

/// Slot `i` of a shed of `n` connections at `rate_per_s` closes a second (at least 1): closed
/// `i / rate` after the shed starts, advised `reconnect_spread * i / n`.
pub fn shed_slot(i: usize, n: usize, rate_per_s: u32, reconnect_spread: Duration) -> Slot {
    let nanos = i as u128 * 1_000_000_000 / u128::from(rate_per_s.max(1));
    Slot {
        close_at: Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)),
        retry_after: fraction(reconnect_spread, i, n),
    }
}

fn fraction(window: Duration, i: usize, n: usize) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    let nanos = window.as_nanos() * i as u128 / n as u128;
    Duration::from_nanos(nanos as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn closes_are_evenly_spread() {
        let slots = schedule(4, ms(0), ms(1000), ms(100), ms(400));
        let closes: Vec<_> = slots.iter().map(|s| s.close_at).collect();
        assert_eq!(closes, [ms(0), ms(250), ms(500), ms(750)]);
        let delays: Vec<_> = slots.iter().map(|s| s.retry_after).collect();
        assert_eq!(delays, [ms(100), ms(200), ms(300), ms(400)]);
    }

    #[test]
    fn reconnects_are_flat() {
        let n = 10_000;
        let slots = schedule(n, ms(0), ms(10_000), ms(0), ms(2_000));
        // 100 ms buckets over the whole reconnect window hold the same count (±1).
        let mut buckets = vec![0usize; 120];
        for slot in &slots {
            buckets[(slot.reconnect_at().as_millis() / 100) as usize] += 1;
        }
        let mean = n as f64 / buckets.len() as f64;
        for (i, &b) in buckets.iter().enumerate() {
            assert!((b as f64 - mean).abs() <= 1.0, "bucket {i}: {b} vs {mean}");
        }
    }

    #[test]
    fn the_lead_delays_the_first_close_and_the_spread_still_bounds_the_last() {
        let slots = schedule(4, ms(500), ms(1000), ms(100), ms(400));
        let closes: Vec<_> = slots.iter().map(|s| s.close_at).collect();
        assert_eq!(closes, [ms(500), ms(625), ms(750), ms(875)]);
        let delays: Vec<_> = slots.iter().map(|s| s.retry_after).collect();
        assert_eq!(delays, [ms(100), ms(200), ms(300), ms(400)]);
        // A spread shorter than the lead: everyone at the lead, delays still spread.
        let slots = schedule(3, ms(500), ms(200), ms(0), ms(300));
        assert!(slots.iter().all(|s| s.close_at == ms(500)), "{slots:?}");
        let back: Vec<_> = slots.iter().map(Slot::reconnect_at).collect();
        assert_eq!(back, [ms(500), ms(600), ms(700)]);
    }

    #[test]
    fn reconnects_stay_flat_with_a_lead() {
        let n = 10_000;
        let lead = ms(500);
        let slots = schedule(n, lead, ms(10_000), ms(0), ms(2_000));
        assert!(slots.iter().all(|s| s.close_at >= lead));
        assert!(slots.iter().all(|s| s.close_at < ms(10_000)));
        // Reconnects span lead .. spread + reconnect spread (11.5 s): 115 buckets of 100 ms, each
        // holding the same count (±1).
        let mut buckets = vec![0usize; 115];
        for slot in &slots {
            buckets[((slot.reconnect_at() - lead).as_millis() / 100) as usize] += 1;
        }
        let mean = n as f64 / buckets.len() as f64;
        for (i, &b) in buckets.iter().enumerate() {
            assert!((b as f64 - mean).abs() <= 1.0, "bucket {i}: {b} vs {mean}");
        }
    }

    #[test]
    fn closing_early_keeps_the_planned_reconnect() {
        let slots = schedule(10, ms(0), ms(10_000), ms(0), ms(1_000));
        let now = ms(2_000);
        for slot in &slots[3..] {
            assert_eq!(
                now + slot.retry_after_if_closed_at(now),
                slot.reconnect_at()
            );
        }
        assert_eq!(slots[0].retry_after_if_closed_at(now), Duration::ZERO);
    }

    fn t(url: &str, weight: u64) -> Target {
        Target {
            url: url.to_owned(),
            weight,
        }
    }

    #[test]
    fn targets_are_dealt_alike_over_the_whole_window() {
        // The drain's pairing: slot i gets dealt[i]. In every tenth of the close window, and
        // among the clients coming back in every tenth of the reconnect window, B gets 3 of 4.
        let n = 1000;
        let slots = schedule(n, ms(500), ms(10_000), ms(100), ms(1_000));
        let dealt = dealt(n, &[t("ws://b/ws", 3), t("ws://c/ws", 1)]);
        assert_eq!(dealt.len(), n);
        let per_tenth = |moment: &dyn Fn(&Slot) -> Duration, from: Duration, to: Duration| {
            let mut b = [0usize; 10];
            let mut all = [0usize; 10];
            for (slot, target) in slots.iter().zip(&dealt) {
                let x = (moment(slot) - from).as_nanos() * 10 / (to - from).as_nanos();
                let x = (x as usize).min(9);
                all[x] += 1;
                b[x] += (*target == Some(0)) as usize;
            }
            (b, all)
        };
        let (b, all) = per_tenth(&|s| s.close_at, ms(500), ms(10_000));
        for k in 0..10 {
            let want = all[k] as f64 * 0.75;
            assert!(
                (b[k] as f64 - want).abs() <= 1.0,
                "close tenth {k}: {b:?} of {all:?}"
            );
        }
        let (b, all) = per_tenth(&Slot::reconnect_at, ms(600), ms(11_100));
        for k in 0..10 {
            let want = all[k] as f64 * 0.75;
            assert!(
                (b[k] as f64 - want).abs() <= 1.0,
                "reconnect tenth {k}: {b:?} of {all:?}"
            );
        }
        assert_eq!(super::dealt(3, &[]), [None, None, None]);
    }

    #[test]
    fn a_shed_is_paced_by_its_rate() {
        let spread = ms(200);
        let slots: Vec<_> = (0..100).map(|i| shed_slot(i, 100, 200, spread)).collect();
        assert_eq!(
            slots[0],
            Slot {
                close_at: ms(0),
                retry_after: ms(0)
            }
        );
        assert_eq!(slots[1].close_at, ms(5));
        assert_eq!(slots[99].close_at, ms(495));
        assert_eq!(slots[50].retry_after, ms(100));
        assert!(slots.iter().all(|s| s.retry_after < spread));
        // Reconnect moments are evenly spaced: 5 ms + 2 ms apart.
        for pair in slots.windows(2) {
            assert_eq!(pair[1].reconnect_at() - pair[0].reconnect_at(), ms(7));
        }
        // The slowest rate and the largest count do not overflow.
        let last = shed_slot(usize::MAX, usize::MAX, 1, spread);
        assert_eq!(last.close_at, Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn empty_and_zero_windows() {
        assert!(schedule(0, ms(500), ms(1000), ms(0), ms(0)).is_empty());
        let slots = schedule(3, Duration::ZERO, Duration::ZERO, ms(50), Duration::ZERO);
        assert!(
            slots
                .iter()
                .all(|s| s.close_at.is_zero() && s.retry_after == ms(50))
        );
    }
}
