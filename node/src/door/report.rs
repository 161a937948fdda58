//! What the door turned away, logged in aggregate: at a limit a node may refuse thousands of
//! connections a second, and a line for each would cost more than the refusals. Each is counted
//! in the metrics at once; this logs at most one line per interval with the counts since the
//! last one (`door refusals interval_ms=1000 counts="full=208 accept_emfile=9"`). It sleeps until
//! the first refusal after a quiet spell, so an idle node never wakes for it.

use super::Door;
use crate::metrics::DoorEvent;
use std::fmt::Write as _;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const EVENTS: usize = DoorEvent::ALL.len();

/// The counts of `door`'s metrics now.
fn counts(door: &Door) -> [u64; EVENTS] {
    DoorEvent::ALL.map(|event| door.metrics.door_count(event))
}

/// `full=208 accept_emfile=9`: the non-zero differences, in [`DoorEvent::ALL`]'s order.
fn describe(before: &[u64; EVENTS], now: &[u64; EVENTS]) -> String {
    let mut text = String::new();
    for ((event, b), n) in DoorEvent::ALL.iter().zip(before).zip(now) {
        if n > b {
            let sep = if text.is_empty() { "" } else { " " };
            let _ = write!(text, "{sep}{}={}", event.as_str(), n - b);
        }
    }
    text
}

/// Logs `door`'s refusals, at most once per `interval`, until `stop` (then once more, if any).
pub(crate) async fn run(door: &Door, interval: Duration, stop: CancellationToken) {
    let mut reported = counts(door);
    loop {
        let stopped = tokio::select! {
            () = door.refused.notified() => {
                tokio::select! {
                    () = tokio::time::sleep(interval) => false,
                    () = stop.cancelled() => true,
                }
            }
            () = stop.cancelled() => true,
        };
        let now = counts(door);
        let text = describe(&reported, &now);
        if !text.is_empty() {
            tracing::warn!(
                interval_ms = interval.as_millis() as u64,
                counts = %text,
                "door refusals"
            );
        }
        reported = now;
        if stopped {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_what_changed_only() {
        let at = |e| DoorEvent::ALL.iter().position(|x| *x == e).unwrap();
        let before = [0; EVENTS];
        let mut now = [0; EVENTS];
        assert_eq!(describe(&before, &now), "");
        now[at(DoorEvent::AcceptEmfile)] = 9;
        now[at(DoorEvent::Full)] = 208;
        assert_eq!(describe(&before, &now), "full=208 accept_emfile=9");
        assert_eq!(describe(&now, &now), "");
    }
}
