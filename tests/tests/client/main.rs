//! ebb-client over real TCP: against real nodes through drains ([`drains`]), at its own limits
//! ([`limits`]: frame size, a full queue, thousands of pending messages), and against hostile
//! servers ([`hostile`]: absurd advised delays, a flood of pushes), and the reconnect targets
//! servers name ([`targets`]: followed only when listed).

mod drains;
mod hostile;
mod limits;
mod targets;

use ebb_client::Event;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::mpsc;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Reads events until `n` replies came, within `limit`; the ids, each seen exactly once.
async fn replies(events: &mut mpsc::Receiver<Event>, n: usize, limit: Duration) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    tokio::time::timeout(limit, async {
        while ids.len() < n {
            match events.recv().await {
                Some(Event::Reply { id, .. }) => assert!(ids.insert(id), "{id} answered twice"),
                Some(_) => {}
                None => panic!("the client stopped after {} replies", ids.len()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} of {n} replies within {limit:?}", ids.len()));
    ids
}

/// Reads events until one matches `want`, within `limit`.
async fn until<T>(
    events: &mut mpsc::Receiver<Event>,
    limit: Duration,
    mut want: impl FnMut(Event) -> Option<T>,
) -> T {
    tokio::time::timeout(limit, async {
        loop {
            let event = events.recv().await.expect("the client stopped");
            if let Some(found) = want(event) {
                return found;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no such event within {limit:?}"))
}
