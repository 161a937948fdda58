//! Commands a node obeys: one type per command ([`drain`], [`resume`]), one enum ([`Action`])
//! dispatching, and the envelope that carries them over pub/sub and in the desired-state key.
//!
//! A plain command is a JSON object, easy to publish by hand:
//!
//! ```json
//! {"v":1,"id":"deploy-42","target":"node-a","type":"drain","then":"exit"}
//! ```
//!
//! With a shared secret configured, nodes accept only the signed envelope
//! ([`crate::sign::Envelope`], domain [`Domain::Command`]) whose command carries the `cluster`, a
//! `nonce` and an `expires_at_ms`: the signature covers the cluster and the target (and the
//! instance when the sender knows it), so a command captured in one cluster or for one node is
//! worth nothing anywhere else, and a replay is refused by its nonce.
//!
//! [`decode`] does everything that needs no node state (size, JSON shape, version, signature,
//! expiry, cluster, field validation). The node adds what only it knows: target, instance, replay.

pub mod drain;
pub mod resume;
pub mod shed;

pub use drain::{Drain, Then};
pub use resume::Resume;
pub use shed::Shed;

use crate::keys::{MAX_NONCE_LEN, validate_name};
use crate::name::NodeName;
use crate::sign::{Domain, Envelope, Secret};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The command format version this build speaks.
pub const PROTOCOL_VERSION: u64 = 1;
/// Largest payload a node will parse, in bytes; anything larger is refused unread.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;
/// Longest command id, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// A command for one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Format version, [`PROTOCOL_VERSION`].
    pub v: u64,
    /// Unique id, for acknowledgements and so a re-delivered command is applied once.
    pub id: String,
    /// The cluster it is for. Required when signed (the signature then covers it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Name of the node that must obey.
    pub target: NodeName,
    /// When set, only this instance (one process start) obeys; its replacement ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<Uuid>,
    /// When it was issued (ms since epoch). Desired state issued before a node started is not for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at_ms: Option<u64>,
    /// After this (ms since epoch) the command is refused. Required when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// Random, unique per command; a second delivery of the same nonce is a replay. Required when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// What to do.
    #[serde(flatten)]
    pub action: Action,
}

/// The command kinds: one arm per file in this module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    Drain(Drain),
    Resume(Resume),
    Shed(Shed),
}

impl Action {
    /// `drain`, `resume` or `shed`.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Drain(_) => "drain",
            Action::Resume(_) => "resume",
            Action::Shed(_) => "shed",
        }
    }

    fn validate(&self) -> Result<(), String> {
        match self {
            Action::Drain(drain) => drain.validate(),
            Action::Resume(resume) => resume.validate(),
            Action::Shed(shed) => shed.validate(),
        }
    }
}

/// Why a command was not obeyed. Every refusal is logged and counted by its [`Refusal::label`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("payload of {0} bytes exceeds the {MAX_COMMAND_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("malformed command: {0}")]
    Malformed(String),
    #[error("unknown command version {0} (this node speaks {PROTOCOL_VERSION})")]
    UnknownVersion(u64),
    #[error("unsigned command refused: a shared secret is configured")]
    Unsigned,
    #[error("bad signature")]
    BadSignature,
    #[error("command expired at {0} ms")]
    Expired(u64),
    #[error("command for cluster {got:?} arrived in cluster {expected:?}")]
    WrongCluster { expected: String, got: String },
    #[error("command for {got:?} arrived at node {expected:?}")]
    WrongTarget { expected: String, got: String },
    #[error("command for instance {got} arrived at instance {expected}")]
    WrongInstance { expected: Uuid, got: Uuid },
    #[error("replayed command (nonce already seen)")]
    Replayed,
}

impl Refusal {
    /// A short, stable label for metrics and events.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::TooLarge(_) => "too_large",
            Refusal::Malformed(_) => "malformed",
            Refusal::UnknownVersion(_) => "unknown_version",
            Refusal::Unsigned => "unsigned",
            Refusal::BadSignature => "bad_signature",
            Refusal::Expired(_) => "expired",
            Refusal::WrongCluster { .. } => "wrong_cluster",
            Refusal::WrongTarget { .. } => "wrong_target",
            Refusal::WrongInstance { .. } => "wrong_instance",
            Refusal::Replayed => "replayed",
        }
    }

    /// Every label, so metrics can be rendered at zero before the first refusal.
    pub const LABELS: [&'static str; 10] = [
        "too_large",
        "malformed",
        "unknown_version",
        "unsigned",
        "bad_signature",
        "expired",
        "wrong_cluster",
        "wrong_target",
        "wrong_instance",
        "replayed",
    ];
}

impl Command {
    /// A new command with a fresh id, issued now, for any instance of `target` in `cluster`.
    pub fn new(cluster: &str, target: NodeName, action: Action) -> Self {
        Command {
            v: PROTOCOL_VERSION,
            id: Uuid::new_v4().simple().to_string(),
            cluster: Some(cluster.to_owned()),
            target,
            instance: None,
            issued_at_ms: Some(crate::time::now_ms()),
            expires_at_ms: None,
            nonce: None,
            action,
        }
    }

    /// The payload to publish: plain JSON, or with a secret the signed envelope (a nonce and an
    /// expiry `ttl_ms` from now are added when missing).
    pub fn encode(&self, secret: Option<&Secret>, ttl_ms: u64) -> String {
        let Some(secret) = secret else {
            return serde_json::to_string(self).expect("a command always serializes");
        };
        let mut cmd = self.clone();
        cmd.nonce
            .get_or_insert_with(|| Uuid::new_v4().simple().to_string());
        cmd.expires_at_ms
            .get_or_insert_with(|| crate::time::now_ms().saturating_add(ttl_ms));
        let signed = serde_json::to_string(&cmd).expect("a command always serializes");
        secret.seal(Domain::Command, signed)
    }

    fn validate(&self) -> Result<(), Refusal> {
        if self.id.is_empty() || self.id.len() > MAX_ID_LEN {
            return Err(Refusal::Malformed(format!(
                "id must be 1 to {MAX_ID_LEN} bytes"
            )));
        }
        if let Some(cluster) = &self.cluster {
            validate_name(cluster).map_err(|e| Refusal::Malformed(format!("cluster: {e}")))?;
        }
        if let Some(nonce) = &self.nonce
            && (nonce.len() > MAX_NONCE_LEN || validate_name(nonce).is_err())
        {
            return Err(Refusal::Malformed(format!(
                "nonce must be 1 to {MAX_NONCE_LEN} of [A-Za-z0-9._-]"
            )));
        }
        self.action.validate().map_err(Refusal::Malformed)
    }
}

/// Reads the version first, so a future format is refused as such rather than as malformed.
fn check_version(value: &serde_json::Value) -> Result<(), Refusal> {
    match value.get("v") {
        Some(v) => match v.as_u64() {
            Some(PROTOCOL_VERSION) => Ok(()),
            Some(other) => Err(Refusal::UnknownVersion(other)),
            None => Err(Refusal::Malformed("v must be an integer".to_owned())),
        },
        None => Err(Refusal::Malformed("missing field `v`".to_owned())),
    }
}

fn parse_command(text: &str) -> Result<Command, Refusal> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Refusal::Malformed(e.to_string()))?;
    command_from_value(value)
}

/// A command from JSON already parsed (each payload is parsed once: garbage is cheap to refuse).
fn command_from_value(value: serde_json::Value) -> Result<Command, Refusal> {
    if !value.is_object() {
        return Err(Refusal::Malformed("not a JSON object".to_owned()));
    }
    check_version(&value)?;
    let cmd: Command =
        serde_json::from_value(value).map_err(|e| Refusal::Malformed(e.to_string()))?;
    cmd.validate()?;
    Ok(cmd)
}

/// Decodes and checks a payload received at `now_ms` by a node of `cluster`. With `secret`, only
/// a correctly signed, unexpired envelope carrying the cluster, a nonce and an expiry passes;
/// without, plain commands and envelopes both pass (an envelope's signature cannot be checked
/// without the secret). A command naming another cluster is refused either way.
pub fn decode(
    payload: &[u8],
    secret: Option<&Secret>,
    now_ms: u64,
    cluster: &str,
) -> Result<Command, Refusal> {
    if payload.len() > MAX_COMMAND_BYTES {
        return Err(Refusal::TooLarge(payload.len()));
    }
    let text = std::str::from_utf8(payload)
        .map_err(|_| Refusal::Malformed("payload is not UTF-8".to_owned()))?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Refusal::Malformed(e.to_string()))?;
    check_version(&value)?;
    let cmd = if value.get("signed").is_some() {
        let envelope: Envelope =
            serde_json::from_value(value).map_err(|e| Refusal::Malformed(e.to_string()))?;
        if let Some(secret) = secret
            && envelope.open(secret, Domain::Command).is_none()
        {
            return Err(Refusal::BadSignature);
        }
        let cmd = parse_command(&envelope.signed)?;
        if secret.is_some()
            && (cmd.cluster.is_none() || cmd.nonce.is_none() || cmd.expires_at_ms.is_none())
        {
            return Err(Refusal::Malformed(
                "a signed command must carry cluster, nonce and expires_at_ms".to_owned(),
            ));
        }
        cmd
    } else if secret.is_some() {
        return Err(Refusal::Unsigned);
    } else {
        command_from_value(value)?
    };
    if let Some(got) = &cmd.cluster
        && got != cluster
    {
        return Err(Refusal::WrongCluster {
            expected: cluster.to_owned(),
            got: got.clone(),
        });
    }
    if let Some(expires) = cmd.expires_at_ms
        && expires < now_ms
    {
        return Err(Refusal::Expired(expires));
    }
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("a-test-secret-of-32-bytes-length").unwrap()
    }

    const C: &str = "prod";

    fn node(name: &str) -> NodeName {
        NodeName::parse(name).unwrap()
    }

    #[test]
    fn plain_drain_round_trips() {
        let mut cmd = Command::new(
            C,
            node("node-a"),
            Action::Drain(Drain {
                then: Then::Stay,
                deadline_ms: Some(5000),
                targets: Vec::new(),
            }),
        );
        cmd.instance = Some(Uuid::new_v4());
        let text = cmd.encode(None, 0);
        assert_eq!(decode(text.as_bytes(), None, 0, C), Ok(cmd));
    }

    #[test]
    fn hand_written_commands_parse_with_defaults() {
        let text = r#"{"v":1,"id":"deploy-42","target":"node-a","type":"drain"}"#;
        let cmd = decode(text.as_bytes(), None, 0, C).unwrap();
        assert_eq!(cmd.action, Action::Drain(Drain::default()));
        assert_eq!(cmd.issued_at_ms, None);
        assert_eq!(cmd.cluster, None);
        let text = r#"{"v":1,"id":"r1","target":"node-a","type":"resume"}"#;
        let cmd = decode(text.as_bytes(), None, 0, C).unwrap();
        assert_eq!(cmd.action, Action::Resume(Resume {}));
    }

    #[test]
    fn signed_round_trip_and_tampering() {
        let cmd = Command::new(C, node("node-a"), Action::Resume(Resume {}));
        let now = crate::time::now_ms();
        let text = cmd.encode(Some(&secret()), 60_000);
        let back = decode(text.as_bytes(), Some(&secret()), now, C).unwrap();
        assert_eq!(back.id, cmd.id);
        assert!(back.nonce.is_some());

        let tampered = text.replace("node-a", "node-b");
        assert_eq!(
            decode(tampered.as_bytes(), Some(&secret()), now, C),
            Err(Refusal::BadSignature)
        );
        let other = Secret::new("another-secret-of-some-length").unwrap();
        assert_eq!(
            decode(text.as_bytes(), Some(&other), now, C),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            decode(cmd.encode(None, 0).as_bytes(), Some(&secret()), now, C),
            Err(Refusal::Unsigned)
        );
        assert!(matches!(
            decode(text.as_bytes(), Some(&secret()), now + 120_000, C),
            Err(Refusal::Expired(_))
        ));
    }

    #[test]
    fn a_signed_command_is_worth_nothing_in_another_cluster() {
        let now = crate::time::now_ms();
        let text = Command::new("staging", node("node-a"), Action::Resume(Resume {}))
            .encode(Some(&secret()), 60_000);
        assert_eq!(
            decode(text.as_bytes(), Some(&secret()), now, "prod")
                .unwrap_err()
                .label(),
            "wrong_cluster"
        );
        // Without the cluster, a signed command is refused outright.
        let mut cmd = Command::new(C, node("node-a"), Action::Resume(Resume {}));
        cmd.cluster = None;
        assert_eq!(
            decode(
                cmd.encode(Some(&secret()), 60_000).as_bytes(),
                Some(&secret()),
                now,
                C
            )
            .unwrap_err()
            .label(),
            "malformed"
        );
        // A command's signature is not an event's or a record's.
        let body = serde_json::to_string(&cmd).unwrap();
        let as_event = secret().seal(Domain::Event, body);
        assert_eq!(
            decode(as_event.as_bytes(), Some(&secret()), now, C),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn bad_payloads_are_refused_with_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"\xff\xfe", "malformed"),
            (b"not json", "malformed"),
            (b"[1,2]", "malformed"),
            (br#"{"id":"x","target":"a","type":"drain"}"#, "malformed"),
            (
                br#"{"v":2,"id":"x","target":"a","type":"drain"}"#,
                "unknown_version",
            ),
            (
                br#"{"v":"1","id":"x","target":"a","type":"drain"}"#,
                "malformed",
            ),
            (
                br#"{"v":1,"id":"x","target":"a","type":"explode"}"#,
                "malformed",
            ),
            (
                br#"{"v":1,"id":"","target":"a","type":"drain"}"#,
                "malformed",
            ),
            (
                br#"{"v":1,"id":"x","target":"a b","type":"drain"}"#,
                "malformed",
            ),
            (
                br#"{"v":1,"id":"x","target":"a","type":"drain","deadline_ms":0}"#,
                "malformed",
            ),
            (
                br#"{"v":1,"id":"x","target":"a","type":"drain","then":"reboot"}"#,
                "malformed",
            ),
            (br#"{"v":1,"signed":"{}","sig":"00"}"#, "malformed"),
            (
                br#"{"v":1,"id":"x","target":"a","type":"drain","nonce":"a:b"}"#,
                "malformed",
            ),
            (
                br#"{"v":1,"id":"x","target":"evil;touch /tmp/x","type":"drain"}"#,
                "malformed",
            ),
            (
                br#"{"v":1,"id":"x","cluster":"other","target":"a","type":"drain"}"#,
                "wrong_cluster",
            ),
        ];
        for (payload, label) in cases {
            let err = decode(payload, None, 0, C).unwrap_err();
            assert_eq!(
                err.label(),
                *label,
                "{}: {err}",
                String::from_utf8_lossy(payload)
            );
        }
        let huge = vec![b' '; MAX_COMMAND_BYTES + 1];
        assert_eq!(
            decode(&huge, None, 0, C),
            Err(Refusal::TooLarge(huge.len()))
        );
    }

    #[test]
    fn every_refusal_label_is_listed() {
        let id = Uuid::nil();
        for refusal in [
            Refusal::TooLarge(1),
            Refusal::Malformed(String::new()),
            Refusal::UnknownVersion(9),
            Refusal::Unsigned,
            Refusal::BadSignature,
            Refusal::Expired(0),
            Refusal::WrongCluster {
                expected: "a".into(),
                got: "b".into(),
            },
            Refusal::WrongTarget {
                expected: "a".into(),
                got: "b".into(),
            },
            Refusal::WrongInstance {
                expected: id,
                got: id,
            },
            Refusal::Replayed,
        ] {
            assert!(Refusal::LABELS.contains(&refusal.label()));
        }
    }
}
