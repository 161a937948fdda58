//! The commands half of the agent: subscribe, reconcile the desired state, then judge and obey
//! what arrives, until the subscription or the connection fails (this half alone reconnects) or
//! the stop.
//!
//! The worker takes payloads from the bounded [`Inbox`] one at a time. A refusal costs a counter
//! and, at most once per [`REFUSAL_REPORT_INTERVAL`], one log line and one event. A dropped
//! payload could have been a genuine command, and the coordinator writes every command to the
//! desired-state key as well as publishing it, so after drops the worker re-reads that key (at
//! most once per [`DESIRED_REREAD_INTERVAL`]). The key is read bounded (`GETRANGE`), and a value
//! that is too large or not a string is refused like any bad payload rather than breaking the
//! session.

use super::context::{Context, Half, SessionError};
use super::gate::{Delivery, Gate, Verdict};
use super::inbox::{Inbound, Inbox};
use super::refusals::Refusals;
use super::{DESIRED_REREAD_INTERVAL, REFUSAL_REPORT_INTERVAL, Retry, nonce};
use crate::control::{DrainRequest, ShedRequest};
use ebb_proto::EventKind;
use ebb_proto::command::{Action, Command, MAX_COMMAND_BYTES, Refusal};
use ebb_proto::target::Target;
use ebb_redis::Connection;
use redis::AsyncCommands;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, sleep_until};

/// What outlives a commands session.
#[derive(Debug)]
struct State {
    gate: Gate,
    refusals: Refusals,
    /// Whether the current session got as far as subscribing (resets the backoff).
    connected: bool,
}

/// Runs commands sessions until stopped, backing off between failed ones.
pub(crate) async fn supervise(link: ebb_redis::Link, cx: Arc<Context>) {
    let mut state = State {
        gate: Gate::new(
            cx.keys.cluster().to_owned(),
            cx.identity.name.clone(),
            cx.identity.instance,
            cx.identity.started_at_ms,
            cx.config.secret.clone(),
        ),
        refusals: Refusals::new(REFUSAL_REPORT_INTERVAL),
        connected: false,
    };
    let mut retry = Retry::new();
    loop {
        let result = run(&link, &cx, &mut state).await;
        cx.set_connected(Half::Commands, false);
        let error = match result {
            Ok(()) => return,
            Err(error) => error,
        };
        if !retry
            .wait("commands", &error, state.connected, &cx.stop)
            .await
        {
            return;
        }
    }
}

/// One session. `Ok` only after a requested stop.
async fn run(link: &ebb_redis::Link, cx: &Context, st: &mut State) -> Result<(), SessionError> {
    st.connected = false;
    // Through the link at every session: behind Sentinel, the master of the moment. The switch
    // count is taken first, so a failover announced while connecting ends this session too.
    let switches = link.switches();
    let mut liveness_failures = cx.liveness_failures.subscribe();
    liveness_failures.mark_unchanged();
    let conn = cx.connect().await?;
    let channel = cx.keys.commands(&cx.identity.name);
    let inbox =
        Inbox::subscribe(link, &channel, cx.metrics.clone(), cx.config.redis_timeout).await?;
    st.connected = true;
    cx.set_connected(Half::Commands, true);
    cx.listening.cancel();
    tracing::info!(%channel, "listening for commands");
    let mut worker = Worker {
        cx,
        conn,
        st,
        inbox,
        switches,
        liveness_failures,
        reread_at: None,
        last_read: Instant::now(),
        drops_seen: 0,
    };
    // Pub/sub is at-most-once: obey what was decided while we were not subscribed.
    worker.reconcile().await?;
    worker.serve().await
}

/// One session's command loop.
struct Worker<'a> {
    cx: &'a Context,
    conn: Connection,
    st: &'a mut State,
    inbox: Inbox,
    /// Moves when the sentinels announce a new master: a subscription on a demoted master never
    /// errors, so the session ends and the next one subscribes on the new master.
    switches: tokio::sync::watch::Receiver<u64>,
    /// Moves when a liveness session fails: Redis is unreachable from here (a partition the
    /// silent subscription would notice only later), so this session ends too and the next
    /// one re-reads the desired state once Redis answers again.
    liveness_failures: tokio::sync::watch::Receiver<u64>,
    /// When the desired state is to be read again (after drops).
    reread_at: Option<Instant>,
    last_read: Instant,
    /// Drops already answered by a re-read.
    drops_seen: u64,
}

/// What the desired-state key holds.
enum Desired {
    Absent,
    Payload(Vec<u8>),
    Refused(Refusal),
}

impl Worker<'_> {
    async fn serve(&mut self) -> Result<(), SessionError> {
        // Made once: registering a fresh waiter for every payload of a flood would cost locks.
        let cx = self.cx;
        let mut stop = std::pin::pin!(cx.stop.cancelled());
        loop {
            let report_at = self.st.refusals.due();
            tokio::select! {
                biased;
                () = &mut stop => return Ok(()),
                Ok(()) = self.switches.changed() => return Err(SessionError::MasterSwitched),
                Ok(()) = self.liveness_failures.changed() => return Err(SessionError::LivenessLost),
                () = sleep_until(report_at.unwrap_or_else(Instant::now)), if report_at.is_some() => {
                    self.report().await?;
                }
                () = sleep_until(self.reread_at.unwrap_or_else(Instant::now)), if self.reread_at.is_some() => {
                    self.reconcile().await?;
                }
                inbound = self.inbox.next() => {
                    match inbound? {
                        Inbound::Payload(payload) => self.judge(&payload, Delivery::Live).await?,
                        Inbound::TooLarge(len) => self.refuse(Refusal::TooLarge(len)).await?,
                    }
                    self.after_drops();
                }
            }
        }
    }

    /// Schedules a re-read of the desired state when payloads were dropped since the last one.
    fn after_drops(&mut self) {
        if self.reread_at.is_none() && self.inbox.dropped() > self.drops_seen {
            self.reread_at = Some((self.last_read + DESIRED_REREAD_INTERVAL).max(Instant::now()));
        }
    }

    /// Reads the desired state and obeys it if it is meant for this instance and not yet applied.
    async fn reconcile(&mut self) -> Result<(), SessionError> {
        let dropped = self.inbox.dropped();
        if dropped > self.drops_seen {
            tracing::warn!(
                dropped = dropped - self.drops_seen,
                "command queue full: payloads dropped unread; re-reading the desired state"
            );
        }
        self.drops_seen = dropped;
        self.reread_at = None;
        self.last_read = Instant::now();
        match read_desired(&mut self.conn, self.cx).await? {
            Desired::Absent => Ok(()),
            Desired::Payload(payload) => self.judge(&payload, Delivery::Desired).await,
            Desired::Refused(refusal) => self.refuse(refusal).await,
        }
    }

    async fn judge(&mut self, payload: &[u8], delivery: Delivery) -> Result<(), SessionError> {
        let now_ms = ebb_proto::time::now_ms();
        match self.st.gate.check(payload, delivery, now_ms) {
            Verdict::Apply(cmd) => self.apply(cmd, delivery, now_ms).await,
            Verdict::Ignore(why) => {
                tracing::trace!(why, ?delivery, "command ignored");
                Ok(())
            }
            Verdict::Refuse(refusal) => self.refuse(refusal).await,
        }
    }

    /// Obeys a command the gate let through, once its nonce (if it is signed) is settled.
    async fn apply(
        &mut self,
        cmd: Command,
        delivery: Delivery,
        now_ms: u64,
    ) -> Result<(), SessionError> {
        let first_use = match (&self.cx.config.secret, &cmd.nonce) {
            (Some(_), Some(n)) => {
                nonce::claim(&mut self.conn, &self.cx.keys, n, cmd.expires_at_ms, now_ms).await?
            }
            _ => true,
        };
        // Remembered either way: a replay of a nonce taken in Redis is then refused for free.
        self.st.gate.remember(&cmd, delivery, now_ms);
        if !first_use {
            return match delivery {
                Delivery::Live => self.refuse(Refusal::Replayed).await,
                // The same command, read back after another instance applied it.
                Delivery::Desired => Ok(()),
            };
        }
        let action = cmd.action.name();
        tracing::info!(id = %cmd.id, action, ?delivery, "command accepted");
        let trigger = format!("command {}", cmd.id);
        match &cmd.action {
            Action::Drain(drain) => self.cx.control.drain(DrainRequest {
                then: drain.then,
                deadline: drain.deadline_ms.map(Duration::from_millis),
                targets: others(&drain.targets, &self.cx.identity.url),
                trigger,
            }),
            Action::Resume(_) => self.cx.control.resume(),
            Action::Shed(shed) => {
                let targets = others(&shed.targets, &self.cx.identity.url);
                if targets.is_empty() {
                    tracing::warn!(id = %cmd.id, "shed ignored: its only target is this node");
                } else {
                    self.cx.control.shed(ShedRequest {
                        count: usize::try_from(shed.count).unwrap_or(usize::MAX),
                        rate_per_s: shed.rate_per_s,
                        targets,
                        trigger,
                    });
                }
            }
        }
        self.cx.metrics.command_applied(action);
        let applied = EventKind::CommandApplied {
            command_id: cmd.id,
            action: action.to_owned(),
        };
        self.cx.publish(&mut self.conn, applied).await
    }

    /// Counts a refusal; reports it at once when none was reported for an interval.
    async fn refuse(&mut self, refusal: Refusal) -> Result<(), SessionError> {
        self.cx.metrics.command_refused(refusal.label());
        if self.st.refusals.add(refusal, Instant::now()) {
            self.report().await?;
        }
        Ok(())
    }

    /// One log line and one event for every refusal not yet reported.
    async fn report(&mut self) -> Result<(), SessionError> {
        let Some(report) = self.st.refusals.take(Instant::now()) else {
            return Ok(());
        };
        tracing::warn!(
            refused = report.total,
            reasons = %report.describe(),
            latest = %report.latest,
            "commands refused"
        );
        self.cx.publish(&mut self.conn, report.event()).await
    }
}

/// The targets that are not this node (advertised at `own_url`): a node never sends its
/// clients back to itself, whatever the coordinator (or whoever published) put in the command.
fn others(targets: &[Target], own_url: &str) -> Vec<Target> {
    targets
        .iter()
        .filter(|t| t.url != own_url)
        .cloned()
        .collect()
}

/// Reads at most [`MAX_COMMAND_BYTES`] + 1 bytes of the desired-state key: whatever is stored
/// there, only that much crosses the network.
async fn read_desired(conn: &mut Connection, cx: &Context) -> Result<Desired, SessionError> {
    let key = cx.keys.desired(&cx.identity.name);
    let read: redis::RedisResult<Vec<u8>> = conn.getrange(key, 0, MAX_COMMAND_BYTES as isize).await;
    match read {
        // GETRANGE answers a missing key with an empty string; empty is no command either way.
        Ok(payload) if payload.is_empty() => Ok(Desired::Absent),
        Ok(payload) if payload.len() > MAX_COMMAND_BYTES => {
            Ok(Desired::Refused(Refusal::TooLarge(payload.len())))
        }
        Ok(payload) => Ok(Desired::Payload(payload)),
        Err(error) if error.code() == Some("WRONGTYPE") => Ok(Desired::Refused(
            Refusal::Malformed("the desired-state key does not hold a string".to_owned()),
        )),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_never_hands_out_its_own_url() {
        let t = |url: &str, weight| Target {
            url: url.to_owned(),
            weight,
        };
        let own = "ws://10.0.0.1:8080/ws";
        let targets = [
            t("ws://10.0.0.2:8080/ws", 3),
            t(own, 5),
            t("ws://10.0.0.3:8080/ws", 1),
        ];
        assert_eq!(
            others(&targets, own),
            [t("ws://10.0.0.2:8080/ws", 3), t("ws://10.0.0.3:8080/ws", 1)]
        );
        assert!(others(&[t(own, 1)], own).is_empty());
    }
}
