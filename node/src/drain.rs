//! The drain controller: the one code path every trigger ends in.
//!
//! 1. flip readiness (state `draining`: `/health` 503, upgrades 503, the Redis record follows);
//! 2. wait the propagation delay;
//! 3. take the connections and, with the notice on, send each its `server_shutdown` notice;
//! 4. order each connection closed at its slot of the schedule ([`crate::pacing`]): the first no
//!    earlier than the notice lead after the notices, the last within the close spread; each one
//!    answers what it received, sends Close with its advised delay and awaits the client's.
//!    With targets, each slot is dealt one in proportion ([`crate::pacing::dealt`]), named as
//!    `reconnect_to` in the Close reason and `reconnectTo` in the notice (in neither when it
//!    does not fit the 123-byte reason);
//! 5. wait for the count to reach zero, or the deadline, which terminates what is left;
//! 6. report clean and forced closes, state `drained`; then exit, or wait for `resume`.
//!
//! A `hurry` (second signal) skips what is left of steps 2 and 4 (the lead included). A `resume` stops the drain:
//! connections already told to close finish closing, the rest stay, readiness flips back.
//! Between drains the controller also runs sheds ([`crate::shed`]); a shed asked for while
//! draining is ignored.

use crate::app::App;
use crate::control::{DrainReport, DrainRequest, Request};
use crate::pacing::{self, Slot};
use crate::registry::CloseOrder;
use crate::shared::Shared;
use ebb_proto::command::Then;
use ebb_proto::{CloseReason, NodeState, ShutdownNotice};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

/// After a hurry that comes when every close is already ordered, how long handshakes may take.
const HURRY_GRACE: Duration = Duration::from_secs(1);

/// How long terminated socket tasks get to finish after the deadline.
const TERMINATE_GRACE: Duration = Duration::from_secs(1);

/// Runs drains as they are requested. Returns the report of the drain that ends in exit, after
/// cancelling `exit` (which stops the HTTP server).
pub(crate) async fn controller<A: App>(
    shared: Arc<Shared<A>>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    exit: CancellationToken,
) -> DrainReport {
    // A request that interrupted a shed, served next.
    let mut next = None;
    loop {
        let request = match next.take() {
            Some(request) => Some(request),
            None => requests.recv().await,
        };
        let (request, hurried) = match request {
            Some(Request::Drain(request)) => (request, false),
            Some(Request::Hurry) => (DrainRequest::exit("hurry"), true),
            Some(Request::Resume) => continue,
            Some(Request::Shed(shed)) => {
                next = crate::shed::run(&shared, &mut requests, shed).await;
                continue;
            }
            // Shared holds a sender, so the queue never closes while the node runs.
            None => std::future::pending().await,
        };
        let Some(mut report) = drain(&shared, &mut requests, request, hurried).await else {
            resume(&shared);
            continue;
        };
        // The report first, so whoever sees `drained` can read it.
        shared.report.send_replace(Some(report.clone()));
        shared.set_state(NodeState::Drained);
        if report.then == Then::Stay && stay_drained(&mut requests, &mut report).await {
            resume(&shared);
            continue;
        }
        exit.cancel();
        return report;
    }
}

/// What a request means to a drain in progress (or a drained node).
enum Effect {
    /// Finish fast.
    Hurry,
    Resume,
    /// A drain asking for exit: a `then: stay` becomes `exit`.
    Exit,
    /// Nothing new (another drain asking for stay).
    Nothing,
}

/// The next request's effect. Shared holds a sender, so the queue never closes while the node
/// runs; if it did, this waits forever rather than spin.
async fn next_effect(requests: &mut mpsc::UnboundedReceiver<Request>) -> Effect {
    match requests.recv().await {
        Some(Request::Hurry) => Effect::Hurry,
        Some(Request::Resume) => Effect::Resume,
        Some(Request::Drain(request)) if request.then == Then::Exit => Effect::Exit,
        Some(Request::Drain(_)) => Effect::Nothing,
        Some(Request::Shed(shed)) => {
            tracing::info!(trigger = %shed.trigger, "shed ignored: the node is draining");
            Effect::Nothing
        }
        None => std::future::pending().await,
    }
}

/// Drained and staying: waits for a resume (`true`), or for a reason to exit after all (a drain
/// asking for exit, or a hurry), which sets `report.then` and returns `false`.
async fn stay_drained(
    requests: &mut mpsc::UnboundedReceiver<Request>,
    report: &mut DrainReport,
) -> bool {
    loop {
        match next_effect(requests).await {
            Effect::Resume => return true,
            Effect::Exit | Effect::Hurry => break,
            Effect::Nothing => {}
        }
    }
    tracing::info!("drained node told to exit");
    report.then = Then::Exit;
    false
}

fn resume<A: App>(shared: &Shared<A>) {
    shared.registry.end_closing();
    shared.renew_terminate_token();
    shared.set_state(NodeState::Active);
    tracing::info!(
        connections = shared.registry.count(),
        "resumed: accepting connections"
    );
}

/// What interrupted a wait.
enum Interrupt {
    /// The time came (or a hurry made it come now).
    Elapsed,
    Resume,
}

/// Waits until `until`, serving requests meanwhile: a hurry ends the wait (and all later waits),
/// a resume is returned, a drain with `then: exit` upgrades `then`.
async fn wait(
    requests: &mut mpsc::UnboundedReceiver<Request>,
    until: Instant,
    hurried: &mut bool,
    then: &mut Then,
) -> Interrupt {
    while !*hurried {
        tokio::select! {
            _ = sleep_until(until) => return Interrupt::Elapsed,
            effect = next_effect(requests) => match effect {
                Effect::Hurry => {
                    tracing::info!("hurry: skipping the rest of the pacing");
                    *hurried = true;
                }
                Effect::Resume => return Interrupt::Resume,
                Effect::Exit => *then = Then::Exit,
                Effect::Nothing => {}
            },
        }
    }
    Interrupt::Elapsed
}

/// One drain. `None` when it was resumed before the end.
async fn drain<A: App>(
    shared: &Shared<A>,
    requests: &mut mpsc::UnboundedReceiver<Request>,
    request: DrainRequest,
    mut hurried: bool,
) -> Option<DrainReport> {
    let config = &shared.config.drain;
    let started = Instant::now();
    let mut deadline = started
        .checked_add(request.deadline.unwrap_or(config.deadline))
        .unwrap_or_else(|| started + config.deadline);
    let mut then = request.then;
    shared.tally.clean.store(0, Ordering::Relaxed);
    shared.tally.forced.store(0, Ordering::Relaxed);
    shared.set_state(NodeState::Draining);
    shared.app.draining();
    tracing::info!(
        trigger = %request.trigger,
        %then,
        connections = shared.registry.count(),
        "drain started: readiness flipped, new upgrades refused"
    );

    if let Interrupt::Resume = wait(
        requests,
        (started + config.propagation_delay).min(deadline),
        &mut hurried,
        &mut then,
    )
    .await
    {
        return None;
    }

    let targets = &request.targets;
    let reason = |retry_after: Duration, target: Option<usize>| {
        CloseReason::draining(retry_after.as_millis() as u64)
            .to(target.map(|k| targets[k].url.clone()))
    };
    let order = |reason: CloseReason| CloseOrder {
        code: config.close_code,
        reason: reason.encode(),
        inflight_timeout: config.inflight_timeout,
        close_timeout: config.close_timeout,
        by_app: false,
    };
    // A connection that raced the readiness flip goes to the heaviest target.
    let heaviest = (0..targets.len()).max_by_key(|&k| (targets[k].weight, std::cmp::Reverse(k)));
    let mailboxes = shared.registry.begin_closing(order(reason(
        config.reconnect_base + config.reconnect_spread,
        heaviest,
    )));
    let (lead, spread) = closing_window(config, deadline, hurried);
    let slots = pacing::schedule(
        mailboxes.len(),
        lead,
        spread,
        config.reconnect_base,
        config.reconnect_spread,
    );
    let dealt = pacing::dealt(slots.len(), targets);
    let closing = Instant::now();
    if config.notice {
        let now_ms = ebb_proto::time::now_ms();
        for ((mailbox, slot), &target) in mailboxes.iter().zip(&slots).zip(&dealt) {
            let mut notice = ShutdownNotice::new(
                config.notice_message.clone(),
                slot.reconnect_at().as_millis() as u64,
                now_ms,
            );
            // Named only when the Close will name it too (its delay is at most this one).
            let planned = reason(slot.retry_after, target);
            if planned.fits() {
                notice.reconnect_to = planned.reconnect_to;
            }
            mailbox.notice(notice.encode());
        }
    }
    for ((mailbox, slot), &target) in mailboxes.iter().zip(&slots).zip(&dealt) {
        if let Interrupt::Resume =
            wait(requests, closing + slot.close_at, &mut hurried, &mut then).await
        {
            return None;
        }
        mailbox.close(order(reason(advised(slot, closing, hurried), target)));
    }
    drop(mailboxes);

    let mut count = shared.registry.subscribe();
    let mut deadline_hit = false;
    loop {
        tokio::select! {
            () = all_closed(&mut count) => break,
            _ = sleep_until(deadline) => {
                deadline_hit = true;
                let left = shared.registry.count();
                tracing::warn!(left, "drain deadline: terminating the connections still open");
                shared.terminate_token().cancel();
                let mut after = shared.registry.subscribe();
                if timeout(TERMINATE_GRACE, all_closed(&mut after)).await.is_err() {
                    tracing::error!(left = shared.registry.count(), "connections outlived termination");
                }
                break;
            }
            effect = next_effect(requests) => match effect {
                Effect::Resume => return None,
                Effect::Exit => then = Then::Exit,
                // Every close is ordered; what is left is handshakes: give them a moment, then cut.
                Effect::Hurry => deadline = deadline.min(Instant::now() + HURRY_GRACE),
                Effect::Nothing => {}
            },
        }
    }

    let report = DrainReport {
        trigger: request.trigger,
        then,
        connections: slots.len() as u64,
        clean: shared.tally.clean.load(Ordering::Relaxed),
        forced: shared.tally.forced.load(Ordering::Relaxed),
        duration: started.elapsed(),
        deadline_hit,
    };
    shared
        .metrics
        .drain_done(report.duration.as_secs_f64(), report.clean, report.forced);
    if report.forced == 0 {
        tracing::info!(
            clean = report.clean,
            duration_ms = report.duration.as_millis() as u64,
            then = %report.then,
            "drain finished: every connection closed cleanly"
        );
    } else {
        tracing::warn!(
            clean = report.clean,
            forced = report.forced,
            deadline_hit,
            duration_ms = report.duration.as_millis() as u64,
            then = %report.then,
            "drain finished: some connections were forced"
        );
    }
    Some(report)
}

/// The notice lead and the close spread of a drain whose closing phase starts now. The last
/// connection closed (at the later of the two) must still have time to answer and complete its
/// handshake before the deadline: a deadline that leaves less room shortens both. A hurry skips
/// both; without a notice there is nothing to lead.
fn closing_window(
    config: &crate::config::DrainConfig,
    deadline: Instant,
    hurried: bool,
) -> (Duration, Duration) {
    if hurried {
        return (Duration::ZERO, Duration::ZERO);
    }
    let room = deadline
        .saturating_duration_since(Instant::now())
        .saturating_sub(config.inflight_timeout + config.close_timeout);
    let wanted_lead = if config.notice {
        config.notice_lead
    } else {
        Duration::ZERO
    };
    let (lead, spread) = (wanted_lead.min(room), config.close_spread.min(room));
    if lead < wanted_lead || spread < config.close_spread {
        tracing::info!(
            lead_ms = lead.as_millis() as u64,
            spread_ms = spread.as_millis() as u64,
            "notice lead and close spread shortened to fit the drain deadline"
        );
    }
    (lead, spread)
}

/// Resolves when the connection count is zero. (The watch guard is dropped before returning, so
/// the future stays `Send`.)
async fn all_closed(count: &mut tokio::sync::watch::Receiver<usize>) {
    let _ = count.wait_for(|n| *n == 0).await.map(|_| ());
}

/// The delay to advise a connection closed now: its slot's, or when pacing was skipped, the one
/// that keeps its planned reconnect moment.
fn advised(slot: &Slot, closing: Instant, hurried: bool) -> Duration {
    if hurried {
        slot.retry_after_if_closed_at(closing.elapsed())
    } else {
        slot.retry_after
    }
}
