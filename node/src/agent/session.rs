//! One connected session of the agent: connect, subscribe, register, reconcile, then serve
//! heartbeats, commands and events until an error (the supervisor reconnects) or the stop.

use super::AgentConfig;
use super::gate::{Delivery, Gate, Verdict};
use super::record::{self, Identity};
use crate::control::{Control, DrainRequest};
use crate::metrics::Metrics;
use ebb_proto::command::Action;
use ebb_proto::{Event, EventKind, Keys, NodeState};
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer {0} in time")]
    Timeout(&'static str),
    #[error("the pub/sub connection closed")]
    PubSubClosed,
    #[error("the node is gone")]
    NodeGone,
}

/// What outlives a session.
#[derive(Debug)]
pub(crate) struct State {
    config: AgentConfig,
    keys: Keys,
    identity: Identity,
    gate: Gate,
    control: Control,
    pub metrics: std::sync::Arc<Metrics>,
    pub stop: CancellationToken,
    /// Whether the current session got as far as registering (resets the backoff).
    connected: bool,
    /// Whether a newer instance took this name (logged once).
    superseded: bool,
}

impl State {
    pub fn new(
        config: AgentConfig,
        keys: Keys,
        instance: Uuid,
        control: Control,
        metrics: std::sync::Arc<Metrics>,
        stop: CancellationToken,
    ) -> Self {
        let started_at_ms = ebb_proto::time::now_ms();
        let identity = Identity {
            name: config.name.clone(),
            instance,
            url: config.advertise_url.clone(),
            version: config.version.clone(),
            capacity: config.capacity,
            started_at_ms,
            ttl: config.ttl,
        };
        let gate = Gate::new(
            keys.cluster().to_owned(),
            config.name.clone(),
            instance,
            started_at_ms,
            config.secret.clone(),
        );
        State {
            config,
            keys,
            identity,
            gate,
            control,
            metrics,
            stop,
            connected: false,
            superseded: false,
        }
    }

    pub fn was_connected(&self) -> bool {
        self.connected
    }

    async fn write_record(
        &mut self,
        conn: &mut MultiplexedConnection,
        state: NodeState,
    ) -> Result<(), SessionError> {
        let record = self.identity.record(
            state,
            self.control.connections() as u64,
            ebb_proto::time::now_ms(),
        );
        let written = record::write(conn, &self.keys, &record, self.config.secret.as_ref()).await?;
        if !written && !self.superseded {
            tracing::warn!(name = %self.identity.name, "a newer instance owns this node name; no longer writing the record");
        }
        self.superseded = !written;
        Ok(())
    }

    async fn publish(
        &self,
        conn: &mut MultiplexedConnection,
        kind: EventKind,
    ) -> Result<(), SessionError> {
        let event = Event::now(
            self.keys.cluster(),
            self.identity.name.clone(),
            self.identity.instance,
            kind,
        );
        let payload = event.encode(self.config.secret.as_ref());
        let _: i64 = conn.publish(self.keys.events(), payload).await?;
        Ok(())
    }

    async fn on_state(
        &mut self,
        conn: &mut MultiplexedConnection,
        state: NodeState,
    ) -> Result<(), SessionError> {
        self.write_record(conn, state).await?;
        let connections = self.control.connections() as u64;
        self.publish(conn, EventKind::State { state, connections })
            .await?;
        if state == NodeState::Drained {
            let report = self.control.subscribe_reports().borrow().clone();
            if let Some(report) = report {
                self.publish(
                    conn,
                    EventKind::Drained {
                        clean: report.clean,
                        forced: report.forced,
                        duration_ms: report.duration.as_millis() as u64,
                        then: report.then,
                    },
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn on_count(
        &mut self,
        conn: &mut MultiplexedConnection,
        state: NodeState,
    ) -> Result<(), SessionError> {
        self.write_record(conn, state).await?;
        let connections = self.control.connections() as u64;
        self.publish(conn, EventKind::Connections { connections })
            .await
    }

    async fn on_command(
        &mut self,
        conn: &mut MultiplexedConnection,
        payload: &[u8],
        delivery: Delivery,
    ) -> Result<(), SessionError> {
        match self
            .gate
            .check(payload, delivery, ebb_proto::time::now_ms())
        {
            Verdict::Apply(cmd) => {
                let action = cmd.action.name();
                tracing::info!(id = %cmd.id, action, ?delivery, "command accepted");
                match &cmd.action {
                    Action::Drain(drain) => self.control.drain(DrainRequest {
                        then: drain.then,
                        deadline: drain.deadline_ms.map(Duration::from_millis),
                        trigger: format!("command {}", cmd.id),
                    }),
                    Action::Resume(_) => self.control.resume(),
                }
                self.metrics.command_applied(action);
                self.publish(
                    conn,
                    EventKind::CommandApplied {
                        command_id: cmd.id,
                        action: action.to_owned(),
                    },
                )
                .await
            }
            Verdict::Ignore(why) => {
                tracing::debug!(why, ?delivery, "command ignored");
                Ok(())
            }
            Verdict::Refuse(refusal) => {
                tracing::warn!(%refusal, bytes = payload.len(), ?delivery, "command refused");
                self.metrics.command_refused(refusal.label());
                self.publish(
                    conn,
                    EventKind::CommandRefused {
                        reason: refusal.label().to_owned(),
                        command_id: None,
                    },
                )
                .await
            }
        }
    }
}

async fn timed<T, E: Into<SessionError>>(
    limit: Duration,
    what: &'static str,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, SessionError> {
    timeout(limit, future)
        .await
        .map_err(|_| SessionError::Timeout(what))?
        .map_err(Into::into)
}

/// One session. `Ok` only after a requested stop (the record is removed first).
pub(crate) async fn run(client: &redis::Client, state: &mut State) -> Result<(), SessionError> {
    state.connected = false;
    let limit = state.config.redis_timeout;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(limit))
        .set_response_timeout(Some(limit));
    let mut conn = timed(
        limit,
        "connect",
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await?;
    let mut pubsub = timed(limit, "pub/sub connect", client.get_async_pubsub()).await?;
    let channel = state.keys.commands(&state.identity.name);
    timed(limit, "SUBSCRIBE", pubsub.subscribe(&channel)).await?;
    let (mut sink, mut messages) = pubsub.split();

    // Register with the state as it is now; changes from here on arrive in order.
    let mut transitions = state.control.subscribe_transitions();
    let mut counts = state.control.subscribe_connections();
    let mut current = state.control.state();
    counts.borrow_and_update();
    state.write_record(&mut conn, current).await?;
    state
        .publish(
            &mut conn,
            EventKind::Registered {
                url: state.identity.url.clone(),
                state: current,
                connections: state.control.connections() as u64,
            },
        )
        .await?;

    // Pub/sub is at-most-once: obey what was decided while we were away.
    let desired: Option<Vec<u8>> = conn.get(state.keys.desired(&state.identity.name)).await?;
    if let Some(payload) = desired {
        state
            .on_command(&mut conn, &payload, Delivery::Desired)
            .await?;
    }
    state.connected = true;
    state.metrics.redis_connected(true);
    tracing::info!(instance = %state.identity.instance, %channel, "registered in Redis");

    let period = state.config.heartbeat;
    let mut heartbeat = interval_at(Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let throttle = state.config.count_throttle;
    let mut last_count_event = Instant::now() - throttle;
    let mut count_flush: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            message = messages.next() => match message {
                Some(message) => {
                    state.on_command(&mut conn, message.get_payload_bytes(), Delivery::Live).await?;
                }
                None => return Err(SessionError::PubSubClosed),
            },
            next = transitions.recv() => {
                let next = match next {
                    Ok(next) => next,
                    Err(broadcast::error::RecvError::Lagged(_)) => state.control.state(),
                    Err(broadcast::error::RecvError::Closed) => return Err(SessionError::NodeGone),
                };
                if next != current {
                    current = next;
                    count_flush = None;
                    state.on_state(&mut conn, current).await?;
                }
            }
            Ok(()) = counts.changed(), if current != NodeState::Active => {
                let connections = *counts.borrow_and_update();
                let now = Instant::now();
                if connections == 0 || now >= last_count_event + throttle {
                    count_flush = None;
                    last_count_event = now;
                    state.on_count(&mut conn, current).await?;
                } else {
                    count_flush.get_or_insert(last_count_event + throttle);
                }
            }
            () = sleep_until(count_flush.unwrap_or_else(Instant::now)), if count_flush.is_some() => {
                count_flush = None;
                last_count_event = Instant::now();
                state.on_count(&mut conn, current).await?;
            }
            _ = heartbeat.tick() => {
                state.write_record(&mut conn, current).await?;
                // The pub/sub connection is otherwise silent: a ping proves it is alive.
                timed(limit, "pub/sub PING", sink.ping::<redis::Value>()).await?;
            }
            () = state.stop.cancelled() => {
                if !state.superseded {
                    record::remove(&mut conn, &state.keys, &state.identity).await?;
                }
                state.publish(&mut conn, EventKind::Deregistered {}).await?;
                tracing::info!("deregistered from Redis");
                return Ok(());
            }
        }
    }
}
