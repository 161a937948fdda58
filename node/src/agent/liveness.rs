//! The liveness half of the agent: register, heartbeat, publish state changes and connection
//! counts, deregister on the stop.
//!
//! It has a Redis connection of its own and does nothing else, so however much traffic arrives
//! on the command channel, a heartbeat never waits behind it: the record cannot expire while the
//! node and Redis are up.

use super::Retry;
use super::context::{Context, Half, SessionError};
use super::record;
use ebb_proto::{EventKind, NodeState};
use ebb_redis::Connection;
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until};

/// What outlives a liveness session.
#[derive(Debug, Default)]
struct State {
    /// Whether the current session got as far as registering (resets the backoff).
    connected: bool,
    /// Whether a newer instance took this name (logged once).
    superseded: bool,
}

/// Runs liveness sessions until stopped (after deregistering), backing off between failed ones.
pub(crate) async fn supervise(link: ebb_redis::Link, cx: Arc<Context>) {
    let mut state = State::default();
    let mut retry = Retry::new();
    loop {
        let result = run(&link, &cx, &mut state).await;
        cx.set_connected(Half::Liveness, false);
        let error = match result {
            Ok(()) => return,
            Err(error) => error,
        };
        cx.liveness_failures.send_modify(|n| *n += 1);
        if !retry
            .wait("liveness", &error, state.connected, &cx.stop)
            .await
        {
            return;
        }
    }
}

/// Writes the record in `state`; notes (and logs once) when a newer instance owns the name.
async fn write_record(
    cx: &Context,
    conn: &mut Connection,
    st: &mut State,
    state: NodeState,
) -> Result<(), SessionError> {
    let record = cx.identity.record(
        state,
        cx.control.connections() as u64,
        ebb_proto::time::now_ms(),
    );
    let written = record::write(conn, &cx.keys, &record, cx.config.secret.as_ref()).await?;
    if !written && !st.superseded {
        tracing::warn!(name = %cx.identity.name, "a newer instance owns this node name; no longer writing the record");
    }
    st.superseded = !written;
    Ok(())
}

/// A state change: the record, the event, and after a drain its report.
async fn on_state(
    cx: &Context,
    conn: &mut Connection,
    st: &mut State,
    state: NodeState,
) -> Result<(), SessionError> {
    write_record(cx, conn, st, state).await?;
    let connections = cx.control.connections() as u64;
    cx.publish(conn, EventKind::State { state, connections })
        .await?;
    if state != NodeState::Drained {
        return Ok(());
    }
    let report = cx.control.subscribe_reports().borrow().clone();
    if let Some(report) = report {
        let drained = EventKind::Drained {
            clean: report.clean,
            forced: report.forced,
            duration_ms: report.duration.as_millis() as u64,
            then: report.then,
        };
        cx.publish(conn, drained).await?;
    }
    Ok(())
}

/// A connection count worth telling (while not active).
async fn on_count(
    cx: &Context,
    conn: &mut Connection,
    st: &mut State,
    state: NodeState,
) -> Result<(), SessionError> {
    write_record(cx, conn, st, state).await?;
    let connections = cx.control.connections() as u64;
    cx.publish(conn, EventKind::Connections { connections })
        .await
}

/// One session. `Ok` only after a requested stop (the record is removed first).
async fn run(link: &ebb_redis::Link, cx: &Context, st: &mut State) -> Result<(), SessionError> {
    st.connected = false;
    // Through the link at every session: behind Sentinel, the master of the moment. After a
    // switch the old master may take writes for a while before it is demoted (records written
    // there are lost), so the session ends on the announcement, not on the first READONLY.
    let mut switches = link.switches();
    let mut conn = cx.connect().await?;
    // Appear once listening (a command sent on seeing the record is heard), but never wait for
    // the commands half longer than a Redis request may take.
    let _ = tokio::time::timeout(cx.config.redis_timeout, cx.listening.cancelled()).await;

    // Register with the state as it is now; changes from here on arrive in order.
    let mut transitions = cx.control.subscribe_transitions();
    let mut counts = cx.control.subscribe_connections();
    let mut current = cx.control.state();
    counts.borrow_and_update();
    write_record(cx, &mut conn, st, current).await?;
    let registered = EventKind::Registered {
        url: cx.identity.url.clone(),
        state: current,
        connections: cx.control.connections() as u64,
    };
    cx.publish(&mut conn, registered).await?;
    st.connected = true;
    cx.set_connected(Half::Liveness, true);
    tracing::info!(instance = %cx.identity.instance, "registered in Redis");

    let period = cx.config.heartbeat;
    let mut heartbeat = interval_at(Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let throttle = cx.config.count_throttle;
    let mut last_count_event = Instant::now() - throttle;
    let mut count_flush: Option<Instant> = None;
    loop {
        tokio::select! {
            // The heartbeat first; the stop last, so what happened before it is told first (the
            // `drained` of a drain that ends in exit).
            biased;
            _ = heartbeat.tick() => write_record(cx, &mut conn, st, current).await?,
            next = transitions.recv() => {
                let next = match next {
                    Ok(next) => next,
                    Err(broadcast::error::RecvError::Lagged(_)) => cx.control.state(),
                    Err(broadcast::error::RecvError::Closed) => return Err(SessionError::NodeGone),
                };
                if next != current {
                    current = next;
                    count_flush = None;
                    on_state(cx, &mut conn, st, current).await?;
                }
            }
            Ok(()) = counts.changed(), if current != NodeState::Active => {
                let connections = *counts.borrow_and_update();
                let now = Instant::now();
                if connections == 0 || now >= last_count_event + throttle {
                    count_flush = None;
                    last_count_event = now;
                    on_count(cx, &mut conn, st, current).await?;
                } else {
                    count_flush.get_or_insert(last_count_event + throttle);
                }
            }
            () = sleep_until(count_flush.unwrap_or_else(Instant::now)), if count_flush.is_some() => {
                count_flush = None;
                last_count_event = Instant::now();
                on_count(cx, &mut conn, st, current).await?;
            }
            Ok(()) = switches.changed() => return Err(SessionError::MasterSwitched),
            () = cx.stop.cancelled() => return deregister(cx, &mut conn, st).await,
        }
    }
}

/// Removes the record (if this instance still owns it) and says so.
async fn deregister(cx: &Context, conn: &mut Connection, st: &State) -> Result<(), SessionError> {
    if !st.superseded {
        record::remove(conn, &cx.keys, &cx.identity).await?;
    }
    cx.publish(conn, EventKind::Deregistered {}).await?;
    tracing::info!("deregistered from Redis");
    Ok(())
}
