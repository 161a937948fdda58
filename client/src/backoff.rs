//! How long to wait before reconnecting.
//!
//! After a drain, the server says when to come back (the close reason's `retry_after_ms`, or
//! the notice's `reconnectIn`): the client waits exactly that, because the server spread those
//! delays so the fleet sees a flat reconnect rate. Otherwise (a failed connect, a close without
//! advice, an abnormal end) it backs off exponentially with full jitter — a uniform delay in
//! `[0, min(max, min_delay * 2^attempt)]` — so clients that failed together do not retry
//! together. The exponential schedule comes from backon; backon's own jitter only adds up to one
//! delay on top, which is not full jitter, so the jitter is drawn here.
//!
//! Every delay a server advises (close reason, notice, an upgrade refusal's `Retry-After`) is
//! server input: it is capped at [`Backoff::max_advised`] before it becomes a deadline, so a
//! hostile or broken server can neither park a client for years nor overflow an `Instant`.

use backon::BackoffBuilder;
use std::time::Duration;
use tokio::time::Instant;

/// The backoff limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first cap.
    pub min: Duration,
    /// The largest cap.
    pub max: Duration,
    /// The longest server-advised delay honoured: a close reason's `retry_after_ms`, a notice's
    /// `reconnectIn`, and the `Retry-After` of a refused upgrade are all cut to this.
    pub max_advised: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(10),
            max_advised: Duration::from_secs(60),
        }
    }
}

/// Attempts past this one all get the same cap: `min * 2^64` is beyond any `max`, and backon
/// walks the schedule from the start, so an unbounded attempt count would cost ever more.
const LAST_DOUBLING: u32 = 64;

impl Backoff {
    /// The cap of the `attempt`th consecutive failure (0-based).
    pub fn cap(&self, attempt: u32) -> Duration {
        let attempt = attempt.min(LAST_DOUBLING);
        // backon computes in f32; whole milliseconds keep the schedule exact.
        let cap = backon::ExponentialBuilder::default()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .without_max_times()
            .build()
            .nth(attempt as usize)
            .unwrap_or(self.max);
        Duration::from_millis(cap.as_millis() as u64)
    }

    /// The delay before the next attempt: the advised one when the server gave one (capped),
    /// else full jitter over the cap of `attempt`. `unit` is a uniform draw in `[0, 1)`.
    pub fn delay(&self, attempt: u32, advised: Option<Duration>, unit: f64) -> Duration {
        match advised {
            Some(advised) => self.advised(advised),
            None => self.cap(attempt).mul_f64(unit.clamp(0.0, 1.0)),
        }
    }

    /// A server-advised delay, capped at [`Backoff::max_advised`].
    pub fn advised(&self, advised: Duration) -> Duration {
        advised.min(self.max_advised)
    }
}

/// `from + after`, or as far ahead as an `Instant` goes (a year is always representable) when
/// that overflows: `Instant + Duration` panics on overflow, and `after` may come from
/// configuration (`max_advised: Duration::MAX`) or, uncapped, from a server.
pub(crate) fn deadline(from: Instant, after: Duration) -> Instant {
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    from.checked_add(after)
        .or_else(|| from.checked_add(YEAR))
        .unwrap_or(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn caps_double_up_to_the_maximum() {
        let b = Backoff {
            min: ms(100),
            max: ms(1000),
            max_advised: ms(5000),
        };
        let caps: Vec<_> = (0..6).map(|a| b.cap(a)).collect();
        assert_eq!(
            caps,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        assert_eq!(b.cap(500), ms(1000));
        assert_eq!(b.cap(u32::MAX), ms(1000));
    }

    #[test]
    fn full_jitter_spans_zero_to_the_cap() {
        let b = Backoff::default();
        assert_eq!(b.delay(3, None, 0.0), Duration::ZERO);
        assert_eq!(b.delay(3, None, 0.5), ms(400));
        assert!(b.delay(3, None, 0.999_999) <= ms(800));
    }

    #[test]
    fn advised_delays_win_but_are_capped() {
        let b = Backoff::default();
        assert_eq!(b.delay(7, Some(ms(2500)), 0.9), ms(2500));
        assert_eq!(
            b.delay(0, Some(Duration::from_secs(3600)), 0.1),
            b.max_advised
        );
        assert_eq!(b.advised(Duration::MAX), b.max_advised);
    }

    #[test]
    fn deadlines_never_overflow() {
        let now = Instant::now();
        assert_eq!(deadline(now, ms(5)), now + ms(5));
        assert!(deadline(now, Duration::MAX) > now);
        assert!(deadline(now, Duration::from_secs(u64::MAX)) > now);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconnect_schedule_waits_what_it_says() {
        // The delays a client sleeps through after four failures and one advised close.
        let b = Backoff::default();
        let start = tokio::time::Instant::now();
        let plan = [
            b.delay(0, None, 1.0),
            b.delay(1, None, 1.0),
            b.delay(2, None, 1.0),
            b.delay(3, None, 1.0),
            b.delay(0, Some(ms(1234)), 0.3),
        ];
        for delay in plan {
            tokio::time::sleep(delay).await;
        }
        assert_eq!(start.elapsed(), ms(100 + 200 + 400 + 800 + 1234));
    }
}
