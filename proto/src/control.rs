//! Control of a running rollout from anywhere (`ebb rollout pause|continue|abort`, a CI job, the
//! coordinator itself after `--pause-after`): one value at [`crate::Keys::rollout_control`]
//! saying which mode the rollout should be in. It is level-triggered, not an event: the
//! coordinator reads it every tick, so a write while it was restarting is not lost, and writing
//! the same mode twice changes nothing. It names the rollout it is for, so a value left from an
//! earlier rollout steers nothing. With a secret it is sealed ([`Domain::Control`]).

use crate::sign::{Domain, Envelope, Secret};
use serde::{Deserialize, Serialize};

/// Format version.
pub const CONTROL_VERSION: u64 = 1;
/// Largest control value read, in bytes.
pub const MAX_CONTROL_BYTES: usize = 4096;
/// Longest reason kept, in characters.
pub const MAX_REASON_CHARS: usize = 200;

/// What a rollout should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Admit nodes as the limits allow.
    Running,
    /// Admit no new node; those in flight finish.
    Paused,
    /// Admit no new node; those in flight finish; then stop, aborted.
    Aborted,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Running => "running",
            Mode::Paused => "paused",
            Mode::Aborted => "aborted",
        }
    }
}

/// The control value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    pub v: u64,
    /// The rollout it is for.
    pub rollout: String,
    pub mode: Mode,
    /// Why, for the report and `ebb status`.
    pub reason: String,
    /// Who set it (host, user, CI job), as they said.
    pub by: String,
    pub at_ms: u64,
}

/// Why a control value is not obeyed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("larger than {MAX_CONTROL_BYTES} bytes")]
    TooLarge,
    #[error("not a rollout control value: {0}")]
    Malformed(String),
    #[error("unsigned, and a shared secret is configured")]
    Unsigned,
    #[error("bad signature")]
    BadSignature,
}

impl Control {
    /// A control value for `rollout`, stamped now; reason and author cut to size.
    pub fn new(rollout: &str, mode: Mode, reason: &str, by: &str) -> Self {
        let cut = |s: &str| s.chars().take(MAX_REASON_CHARS).collect::<String>();
        Control {
            v: CONTROL_VERSION,
            rollout: rollout.to_owned(),
            mode,
            reason: cut(reason),
            by: cut(by),
            at_ms: crate::time::now_ms(),
        }
    }

    /// The value to SET: plain JSON, or sealed with `secret`.
    pub fn encode(&self, secret: Option<&Secret>) -> String {
        let json = serde_json::to_string(self).expect("a control value serializes");
        match secret {
            Some(secret) => secret.seal(Domain::Control, json),
            None => json,
        }
    }

    /// Reads a control value; with `secret`, only one sealed with it.
    pub fn decode(value: &[u8], secret: Option<&Secret>) -> Result<Self, ControlError> {
        if value.len() > MAX_CONTROL_BYTES {
            return Err(ControlError::TooLarge);
        }
        let bad = |e: serde_json::Error| ControlError::Malformed(e.to_string());
        let json: serde_json::Value = serde_json::from_slice(value).map_err(bad)?;
        let control: Control = if json.get("signed").is_some() {
            let envelope: Envelope = serde_json::from_value(json).map_err(bad)?;
            let body = match secret {
                Some(secret) => envelope
                    .open(secret, Domain::Control)
                    .ok_or(ControlError::BadSignature)?,
                None => envelope.signed.as_str(),
            };
            serde_json::from_str(body).map_err(bad)?
        } else if secret.is_some() {
            return Err(ControlError::Unsigned);
        } else {
            serde_json::from_value(json).map_err(bad)?
        };
        if control.v != CONTROL_VERSION {
            return Err(ControlError::Malformed(format!("version {}", control.v)));
        }
        Ok(Control {
            reason: control.reason.chars().take(MAX_REASON_CHARS).collect(),
            by: control.by.chars().take(MAX_REASON_CHARS).collect(),
            ..control
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("control-test-secret-01").unwrap()
    }

    #[test]
    fn round_trips_plain_and_sealed() {
        let control = Control::new("ab12", Mode::Paused, "canary", "ci-42");
        let plain = control.encode(None);
        assert_eq!(Control::decode(plain.as_bytes(), None), Ok(control.clone()));
        let sealed = control.encode(Some(&secret()));
        assert_eq!(
            Control::decode(sealed.as_bytes(), Some(&secret())),
            Ok(control)
        );
    }

    #[test]
    fn forged_and_garbage_values_are_refused() {
        let control = Control::new("ab12", Mode::Aborted, "x", "y");
        assert_eq!(
            Control::decode(control.encode(None).as_bytes(), Some(&secret())),
            Err(ControlError::Unsigned)
        );
        let wrong = Secret::new("another-secret-entirely").unwrap();
        assert_eq!(
            Control::decode(control.encode(Some(&wrong)).as_bytes(), Some(&secret())),
            Err(ControlError::BadSignature)
        );
        // A command's signature is not a control value's.
        let as_command = secret().seal(Domain::Command, serde_json::to_string(&control).unwrap());
        assert_eq!(
            Control::decode(as_command.as_bytes(), Some(&secret())),
            Err(ControlError::BadSignature)
        );
        for garbage in [
            &b"nope"[..],
            br#"{"v":2,"rollout":"a","mode":"paused","reason":"","by":"","at_ms":0}"#,
            br#"{"v":1,"rollout":"a","mode":"explode","reason":"","by":"","at_ms":0}"#,
        ] {
            assert!(matches!(
                Control::decode(garbage, None),
                Err(ControlError::Malformed(_))
            ));
        }
        assert_eq!(
            Control::decode(&vec![b' '; MAX_CONTROL_BYTES + 1], None),
            Err(ControlError::TooLarge)
        );
        let long = format!(
            r#"{{"v":1,"rollout":"a","mode":"paused","reason":"{}","by":"","at_ms":0}}"#,
            "r".repeat(1000)
        );
        assert_eq!(
            Control::decode(long.as_bytes(), None).unwrap().reason.len(),
            MAX_REASON_CHARS
        );
    }
}
