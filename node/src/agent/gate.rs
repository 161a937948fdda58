//! Which commands a node obeys. Pure logic: no I/O, no clock of its own.
//!
//! [`ebb_proto::command::decode`] checks what needs no node state (size, shape, version,
//! signature, expiry, cluster). The gate adds what only this node knows: the command must name it
//! (and this instance, when it names one), must not replay a nonce it has seen, and a command read
//! back from the desired-state key must be meant for this instance: one issued before this
//! process started was for its predecessor (a `drain then exit` must not drain the replacement).
//!
//! Judging ([`Gate::check`]) and remembering ([`Gate::remember`]) are separate steps: the worker
//! remembers a command only once its nonce is settled in Redis (`super::nonce`), so a Redis error
//! in between leaves the command to be judged afresh on its next delivery. Both memories are
//! bounded, and only commands that passed every check (with a secret: correctly signed) enter
//! them, so nothing an outsider publishes can grow them.

use ebb_proto::NodeName;
use ebb_proto::command::{self, Command, Refusal};
use ebb_proto::sign::Secret;
use std::collections::{HashMap, VecDeque};
use uuid::Uuid;

/// Most nonces remembered; beyond it the soonest to expire is forgotten first.
const MAX_NONCES: usize = 10_000;
/// Most applied command ids remembered (to apply a re-delivered command once).
const MAX_APPLIED: usize = 256;

/// How a command arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Pub/sub, as it was published.
    Live,
    /// Read back from the desired-state key on (re)connect.
    Desired,
}

/// What to do with a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Apply(Command),
    /// Not for this instance, or already applied: nothing to do, nothing wrong.
    Ignore(&'static str),
    Refuse(Refusal),
}

/// The gate of one node instance.
#[derive(Debug)]
pub(crate) struct Gate {
    cluster: String,
    name: NodeName,
    instance: Uuid,
    started_at_ms: u64,
    secret: Option<Secret>,
    /// Recently applied command ids, with how each arrived.
    applied: VecDeque<(String, Delivery)>,
    nonces: HashMap<String, u64>,
}

impl Gate {
    pub fn new(
        cluster: String,
        name: NodeName,
        instance: Uuid,
        started_at_ms: u64,
        secret: Option<Secret>,
    ) -> Self {
        Gate {
            cluster,
            name,
            instance,
            started_at_ms,
            secret,
            applied: VecDeque::new(),
            nonces: HashMap::new(),
        }
    }

    /// Judges a payload received at `now_ms`. A command to apply is not remembered yet: call
    /// [`Gate::remember`] once it is applied.
    pub fn check(&self, payload: &[u8], delivery: Delivery, now_ms: u64) -> Verdict {
        let cmd = match command::decode(payload, self.secret.as_ref(), now_ms, &self.cluster) {
            Ok(cmd) => cmd,
            // Desired state outlives a signed command's short validity: an expired one is stale
            // (applied long ago, or not for this instance), not an attack.
            Err(Refusal::Expired(_)) if delivery == Delivery::Desired => {
                return Verdict::Ignore("expired desired state");
            }
            Err(refusal) => return Verdict::Refuse(refusal),
        };
        if cmd.target != self.name {
            return Verdict::Refuse(Refusal::WrongTarget {
                expected: self.name.to_string(),
                got: cmd.target.into(),
            });
        }
        match (cmd.instance, delivery) {
            (Some(instance), Delivery::Live) if instance != self.instance => {
                return Verdict::Refuse(Refusal::WrongInstance {
                    expected: self.instance,
                    got: instance,
                });
            }
            (Some(instance), Delivery::Desired) if instance != self.instance => {
                return Verdict::Ignore("desired state for a previous instance");
            }
            (None, Delivery::Desired)
                if cmd.issued_at_ms.is_none_or(|at| at < self.started_at_ms) =>
            {
                return Verdict::Ignore("desired state older than this instance");
            }
            _ => {}
        }
        let nonce_seen = cmd
            .nonce
            .as_ref()
            .is_some_and(|n| self.nonces.contains_key(n));
        let applied = self
            .applied
            .iter()
            .find(|(id, _)| *id == cmd.id)
            .map(|(_, how)| *how);
        match (delivery, applied) {
            // Read back from the desired state just before its live copy arrived (a command
            // published while the session started): the same command, not a replay.
            (Delivery::Live, Some(Delivery::Desired)) => {
                return Verdict::Ignore("already applied from the desired state");
            }
            (Delivery::Live, _) if nonce_seen => return Verdict::Refuse(Refusal::Replayed),
            (_, Some(_)) => return Verdict::Ignore("already applied"),
            _ if nonce_seen => return Verdict::Ignore("already applied"),
            _ => {}
        }
        Verdict::Apply(cmd)
    }

    /// Remembers a command as applied (its id, and its nonce until it expires), so a second
    /// delivery is ignored or, live and signed, refused as a replay.
    pub fn remember(&mut self, cmd: &Command, delivery: Delivery, now_ms: u64) {
        if self.applied.len() == MAX_APPLIED {
            self.applied.pop_front();
        }
        self.applied.push_back((cmd.id.clone(), delivery));
        let Some(nonce) = &cmd.nonce else { return };
        self.nonces.retain(|_, expires| *expires >= now_ms);
        if self.nonces.len() >= MAX_NONCES
            && let Some(oldest) = self
                .nonces
                .iter()
                .min_by_key(|(_, expires)| **expires)
                .map(|(n, _)| n.clone())
        {
            self.nonces.remove(&oldest);
        }
        let expires = cmd.expires_at_ms.unwrap_or(u64::MAX);
        self.nonces.insert(nonce.clone(), expires);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebb_proto::command::{Action, Drain, Resume};

    const NOW: u64 = 1_000_000;

    fn secret() -> Secret {
        Secret::new("gate-test-secret-0123456789").unwrap()
    }

    fn gate(secret: Option<Secret>) -> (Gate, Uuid) {
        let instance = Uuid::new_v4();
        (
            Gate::new(
                "c".into(),
                NodeName::parse("node-a").unwrap(),
                instance,
                NOW - 10_000,
                secret,
            ),
            instance,
        )
    }

    fn drain(target: &str) -> Command {
        let mut cmd = Command::new(
            "c",
            NodeName::parse(target).unwrap(),
            Action::Drain(Drain::default()),
        );
        cmd.issued_at_ms = Some(NOW);
        cmd
    }

    /// Judges and, when applied, remembers: what the worker does with a fresh nonce.
    fn admit(gate: &mut Gate, payload: &[u8], delivery: Delivery, now: u64) -> Verdict {
        let verdict = gate.check(payload, delivery, now);
        if let Verdict::Apply(cmd) = &verdict {
            gate.remember(cmd, delivery, now);
        }
        verdict
    }

    #[test]
    fn judging_alone_remembers_nothing() {
        let (mut gate, _) = gate(None);
        let payload = drain("node-a").encode(None, 0);
        assert_eq!(
            label(gate.check(payload.as_bytes(), Delivery::Live, NOW)),
            "apply"
        );
        assert_eq!(
            label(gate.check(payload.as_bytes(), Delivery::Live, NOW)),
            "apply"
        );
        assert_eq!(
            label(admit(&mut gate, payload.as_bytes(), Delivery::Live, NOW)),
            "apply"
        );
        assert_eq!(
            label(gate.check(payload.as_bytes(), Delivery::Live, NOW)),
            "ignore: already applied"
        );
    }

    fn label(v: Verdict) -> String {
        match v {
            Verdict::Apply(_) => "apply".into(),
            Verdict::Ignore(why) => format!("ignore: {why}"),
            Verdict::Refuse(r) => format!("refuse: {}", r.label()),
        }
    }

    #[test]
    fn obeys_a_command_for_it_once() {
        let (mut gate, _) = gate(None);
        let payload = drain("node-a").encode(None, 0);
        assert_eq!(
            label(admit(&mut gate, payload.as_bytes(), Delivery::Live, NOW)),
            "apply"
        );
        assert_eq!(
            label(admit(&mut gate, payload.as_bytes(), Delivery::Desired, NOW)),
            "ignore: already applied"
        );
        assert_eq!(
            label(admit(&mut gate, payload.as_bytes(), Delivery::Live, NOW)),
            "ignore: already applied"
        );
    }

    #[test]
    fn refuses_other_targets_and_instances() {
        let (mut gate, instance) = gate(None);
        let other = drain("node-b").encode(None, 0);
        assert_eq!(
            label(admit(&mut gate, other.as_bytes(), Delivery::Live, NOW)),
            "refuse: wrong_target"
        );
        let mut old = drain("node-a");
        old.instance = Some(Uuid::new_v4());
        let old = old.encode(None, 0);
        assert_eq!(
            label(admit(&mut gate, old.as_bytes(), Delivery::Live, NOW)),
            "refuse: wrong_instance"
        );
        assert_eq!(
            label(admit(&mut gate, old.as_bytes(), Delivery::Desired, NOW)),
            "ignore: desired state for a previous instance"
        );
        let mut mine = drain("node-a");
        mine.instance = Some(instance);
        assert_eq!(
            label(admit(
                &mut gate,
                mine.encode(None, 0).as_bytes(),
                Delivery::Desired,
                NOW
            )),
            "apply"
        );
    }

    #[test]
    fn desired_state_from_before_this_instance_is_not_for_it() {
        let (mut gate, _) = gate(None);
        let mut stale = drain("node-a");
        stale.issued_at_ms = Some(NOW - 60_000);
        assert_eq!(
            label(admit(
                &mut gate,
                stale.encode(None, 0).as_bytes(),
                Delivery::Desired,
                NOW
            )),
            "ignore: desired state older than this instance"
        );
        let mut undated = drain("node-a");
        undated.issued_at_ms = None;
        let undated = undated.encode(None, 0);
        assert_eq!(
            label(admit(&mut gate, undated.as_bytes(), Delivery::Desired, NOW)),
            "ignore: desired state older than this instance"
        );
        // The same command live is obeyed: it is being sent now.
        assert_eq!(
            label(admit(&mut gate, undated.as_bytes(), Delivery::Live, NOW)),
            "apply"
        );
    }

    #[test]
    fn with_a_secret_only_fresh_signed_commands_pass() {
        let (mut gate, _) = gate(Some(secret()));
        let now = ebb_proto::time::now_ms();
        let mut cmd = Command::new(
            "c",
            NodeName::parse("node-a").unwrap(),
            Action::Resume(Resume {}),
        );
        cmd.issued_at_ms = Some(now);
        let unsigned = cmd.encode(None, 0);
        assert_eq!(
            label(admit(&mut gate, unsigned.as_bytes(), Delivery::Live, now)),
            "refuse: unsigned"
        );
        let signed = cmd.encode(Some(&secret()), 60_000);
        assert_eq!(
            label(admit(&mut gate, signed.as_bytes(), Delivery::Live, now)),
            "apply"
        );
        assert_eq!(
            label(admit(&mut gate, signed.as_bytes(), Delivery::Live, now)),
            "refuse: replayed"
        );
        assert_eq!(
            label(admit(&mut gate, signed.as_bytes(), Delivery::Desired, now)),
            "ignore: already applied"
        );
        let mut elsewhere = cmd.clone();
        elsewhere.cluster = Some("other".into());
        let elsewhere = elsewhere.encode(Some(&secret()), 60_000);
        assert_eq!(
            label(admit(&mut gate, elsewhere.as_bytes(), Delivery::Live, now)),
            "refuse: wrong_cluster"
        );
        let forged = cmd.encode(Some(&Secret::new("not-the-right-secret!").unwrap()), 60_000);
        assert_eq!(
            label(admit(&mut gate, forged.as_bytes(), Delivery::Live, now)),
            "refuse: bad_signature"
        );
    }

    #[test]
    fn a_signed_command_seen_first_in_the_desired_state_is_not_a_replay_live() {
        let (mut gate, _) = gate(Some(secret()));
        let now = ebb_proto::time::now_ms();
        let mut cmd = Command::new(
            "c",
            NodeName::parse("node-a").unwrap(),
            Action::Resume(Resume {}),
        );
        cmd.issued_at_ms = Some(now);
        let signed = cmd.encode(Some(&secret()), 60_000);
        assert_eq!(
            label(admit(&mut gate, signed.as_bytes(), Delivery::Desired, now)),
            "apply"
        );
        assert_eq!(
            label(admit(&mut gate, signed.as_bytes(), Delivery::Live, now)),
            "ignore: already applied from the desired state"
        );
        // Expired in the desired state: stale, not refused.
        assert_eq!(
            label(admit(
                &mut gate,
                signed.as_bytes(),
                Delivery::Desired,
                now + 3_600_000
            )),
            "ignore: expired desired state"
        );
    }

    #[test]
    fn nonces_are_bounded() {
        let (mut gate, _) = gate(Some(secret()));
        let now = ebb_proto::time::now_ms();
        for _ in 0..(MAX_NONCES + 10) {
            let mut cmd = Command::new(
                "c",
                NodeName::parse("node-a").unwrap(),
                Action::Resume(Resume {}),
            );
            cmd.issued_at_ms = Some(now);
            let signed = cmd.encode(Some(&secret()), 60_000);
            assert_eq!(
                label(admit(&mut gate, signed.as_bytes(), Delivery::Live, now)),
                "apply"
            );
        }
        assert!(gate.nonces.len() <= MAX_NONCES);
        assert!(gate.applied.len() <= MAX_APPLIED);
    }
}
