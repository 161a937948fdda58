//! The node record: one Redis hash per node at [`crate::Keys::node`] (and a copy per process at
//! [`crate::Keys::instance`]), written by the node on registration and every heartbeat, read by
//! the coordinator and `ebb status`.
//!
//! Whatever is in Redis may have been written by someone else, so reading a record is parsing
//! it: the name must be a [`NodeName`] (and the one the record is listed under), every number is
//! bounded, the URL and version are short printable text, and with a secret the record must carry
//! the node's signature ([`Domain::Record`], covering the cluster and every field). A record that
//! fails any of this is an error the caller skips with a warning, never acted on.

use crate::keys::{MAX_CLOCK_SKEW, NODE_TTL};
use crate::name::NodeName;
use crate::sign::{Domain, Secret};
use crate::state::NodeState;
use std::collections::HashMap;
use uuid::Uuid;

/// Most connections a record may claim (per node, and as a capacity): far above any real node,
/// low enough that summing a whole fleet's cannot overflow.
pub const MAX_CONNECTIONS: u64 = 100_000_000;
/// Longest advertised URL, in bytes.
pub const MAX_URL_LEN: usize = 512;
/// Longest version string, in bytes.
pub const MAX_VERSION_LEN: usize = 64;
/// Longest record TTL a node may declare.
pub const MAX_TTL_MS: u64 = 3_600_000;

/// Hash field names.
pub mod field {
    pub const NAME: &str = "name";
    pub const INSTANCE: &str = "instance";
    pub const URL: &str = "url";
    pub const VERSION: &str = "version";
    pub const STATE: &str = "state";
    pub const CONNECTIONS: &str = "connections";
    pub const CAPACITY: &str = "capacity";
    pub const STARTED_AT_MS: &str = "started_at_ms";
    pub const UPDATED_AT_MS: &str = "updated_at_ms";
    pub const TTL_MS: &str = "ttl_ms";
    /// The node's signature over the cluster and every other field (with a secret only).
    pub const SIG: &str = "sig";
}

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub name: NodeName,
    /// A uuid per process start: a restart under the same name shows as a new instance.
    pub instance: Uuid,
    /// Advertised WebSocket URL clients use.
    pub url: String,
    /// The node software's version.
    pub version: String,
    pub state: NodeState,
    /// At most [`MAX_CONNECTIONS`].
    pub connections: u64,
    /// Most connections this node should hold, when known (capacity checks use it).
    pub capacity: Option<u64>,
    pub started_at_ms: u64,
    pub updated_at_ms: u64,
    /// How long the record lives after `updated_at_ms` without a heartbeat.
    pub ttl_ms: u64,
}

/// A record hash that is missing a field, holds a bad value, or is not signed as it must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad node record field {field}: {problem}")]
pub struct RecordError {
    pub field: &'static str,
    pub problem: String,
}

fn bad(field: &'static str, problem: impl Into<String>) -> RecordError {
    RecordError {
        field,
        problem: problem.into(),
    }
}

impl NodeRecord {
    /// The fields to `HSET`, signed with `secret` for `cluster` when given.
    pub fn to_fields(&self, cluster: &str, secret: Option<&Secret>) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            (field::NAME, self.name.to_string()),
            (field::INSTANCE, self.instance.to_string()),
            (field::URL, self.url.clone()),
            (field::VERSION, self.version.clone()),
            (field::STATE, self.state.to_string()),
            (field::CONNECTIONS, self.connections.to_string()),
            (field::STARTED_AT_MS, self.started_at_ms.to_string()),
            (field::UPDATED_AT_MS, self.updated_at_ms.to_string()),
            (field::TTL_MS, self.ttl_ms.to_string()),
        ];
        if let Some(capacity) = self.capacity {
            fields.push((field::CAPACITY, capacity.to_string()));
        }
        if let Some(secret) = secret {
            let lookup = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.as_str())
            };
            let sig = secret.sign(
                Domain::Record,
                &signed_message(cluster, lookup).into_bytes(),
            );
            fields.push((field::SIG, sig));
        }
        fields
    }

    /// Parses an `HGETALL` answer of a record in `cluster`. With `secret`, the record must carry
    /// a valid signature, checked before anything else is read.
    pub fn from_fields(
        fields: &HashMap<String, String>,
        cluster: &str,
        secret: Option<&Secret>,
    ) -> Result<Self, RecordError> {
        if let Some(secret) = secret {
            let sig = fields
                .get(field::SIG)
                .ok_or_else(|| bad(field::SIG, "unsigned, and a shared secret is configured"))?;
            let message = signed_message(cluster, |name| fields.get(name).map(String::as_str));
            if !secret.verify(Domain::Record, message.as_bytes(), sig) {
                return Err(bad(field::SIG, "bad signature"));
            }
        }
        let record = NodeRecord {
            name: get(fields, field::NAME)?
                .parse()
                .map_err(|e| bad(field::NAME, format!("{e}")))?,
            instance: parse(fields, field::INSTANCE)?,
            url: text(fields, field::URL, MAX_URL_LEN)?,
            version: text(fields, field::VERSION, MAX_VERSION_LEN)?,
            state: parse(fields, field::STATE)?,
            connections: bounded(fields, field::CONNECTIONS, MAX_CONNECTIONS)?,
            capacity: match fields.get(field::CAPACITY) {
                Some(_) => Some(bounded(fields, field::CAPACITY, MAX_CONNECTIONS)?),
                None => None,
            },
            started_at_ms: parse(fields, field::STARTED_AT_MS)?,
            updated_at_ms: parse(fields, field::UPDATED_AT_MS)?,
            ttl_ms: match fields.get(field::TTL_MS) {
                Some(_) => bounded(fields, field::TTL_MS, MAX_TTL_MS)?,
                None => NODE_TTL.as_millis() as u64,
            },
        };
        if !(record.url.starts_with("ws://") || record.url.starts_with("wss://")) {
            return Err(bad(field::URL, "not a ws:// or wss:// URL"));
        }
        if record.started_at_ms > record.updated_at_ms {
            return Err(bad(field::STARTED_AT_MS, "after updated_at_ms"));
        }
        Ok(record)
    }

    /// Whether the record is current at `now_ms`: refreshed within its TTL (a replayed or
    /// leftover copy is not) and not from the future, both with [`MAX_CLOCK_SKEW`] of slack.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        let skew = MAX_CLOCK_SKEW.as_millis() as u64;
        let expires = self
            .updated_at_ms
            .saturating_add(self.ttl_ms)
            .saturating_add(skew);
        now_ms <= expires && self.updated_at_ms <= now_ms.saturating_add(skew)
    }
}

/// What a record's signature covers: the cluster and every field, as a JSON array (unambiguous
/// whatever the values hold). A missing field signs as `null`.
fn signed_message<'a>(cluster: &str, get: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut parts: Vec<Option<&str>> = vec![Some("ebb-record-v1"), Some(cluster)];
    for name in [
        field::NAME,
        field::INSTANCE,
        field::URL,
        field::VERSION,
        field::STATE,
        field::CONNECTIONS,
        field::CAPACITY,
        field::STARTED_AT_MS,
        field::UPDATED_AT_MS,
        field::TTL_MS,
    ] {
        parts.push(get(name));
    }
    serde_json::to_string(&parts).expect("strings always serialize")
}

fn get<'a>(
    fields: &'a HashMap<String, String>,
    name: &'static str,
) -> Result<&'a str, RecordError> {
    fields
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| bad(name, "missing"))
}

fn parse<T: std::str::FromStr>(
    fields: &HashMap<String, String>,
    name: &'static str,
) -> Result<T, RecordError>
where
    T::Err: std::fmt::Display,
{
    get(fields, name)?
        .parse()
        .map_err(|e: T::Err| bad(name, e.to_string()))
}

fn bounded(
    fields: &HashMap<String, String>,
    name: &'static str,
    max: u64,
) -> Result<u64, RecordError> {
    let value: u64 = parse(fields, name)?;
    if value > max {
        return Err(bad(name, format!("{value} is above the limit of {max}")));
    }
    Ok(value)
}

/// Short printable ASCII: safe to show in a terminal, a log line or a report.
fn text(
    fields: &HashMap<String, String>,
    name: &'static str,
    max: usize,
) -> Result<String, RecordError> {
    let value = get(fields, name)?;
    if value.len() > max {
        return Err(bad(name, format!("longer than {max} bytes")));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(
            name,
            "holds a space, a control or a non-ASCII character",
        ));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "prod";

    fn record() -> NodeRecord {
        NodeRecord {
            name: NodeName::parse("node-a").unwrap(),
            instance: Uuid::new_v4(),
            url: "ws://127.0.0.1:8080/ws".into(),
            version: "0.1.0".into(),
            state: NodeState::Active,
            connections: 42,
            capacity: Some(10_000),
            started_at_ms: 1,
            updated_at_ms: 2,
            ttl_ms: 10_000,
        }
    }

    fn as_map(record: &NodeRecord, secret: Option<&Secret>) -> HashMap<String, String> {
        record
            .to_fields(C, secret)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    fn secret() -> Secret {
        Secret::new("record-test-secret-0123").unwrap()
    }

    #[test]
    fn round_trips() {
        let mut r = record();
        assert_eq!(
            NodeRecord::from_fields(&as_map(&r, None), C, None),
            Ok(r.clone())
        );
        r.capacity = None;
        assert_eq!(
            NodeRecord::from_fields(&as_map(&r, None), C, None),
            Ok(r.clone())
        );
        let signed = as_map(&r, Some(&secret()));
        assert_eq!(NodeRecord::from_fields(&signed, C, Some(&secret())), Ok(r));
    }

    #[test]
    fn bad_fields_are_named() {
        let mut map = as_map(&record(), None);
        map.insert(field::STATE.into(), "exploded".into());
        assert_eq!(
            NodeRecord::from_fields(&map, C, None).unwrap_err().field,
            field::STATE
        );
        map.remove(field::URL);
        assert_eq!(
            NodeRecord::from_fields(&map, C, None).unwrap_err().field,
            field::URL
        );
    }

    #[test]
    fn hostile_values_are_refused() {
        let cases: &[(&str, &str)] = &[
            (field::NAME, "evil;touch /tmp/x"),
            (field::NAME, ""),
            (field::CONNECTIONS, "18446744073709551615"),
            (field::CONNECTIONS, "-1"),
            (field::CAPACITY, "100000001"),
            (field::URL, "ws://a b"),
            (field::URL, "http://x/ws"),
            (field::VERSION, "1.0\u{1b}[2J"),
            (field::TTL_MS, "99999999999"),
            (field::STARTED_AT_MS, "3"),
        ];
        for (name, value) in cases {
            let mut map = as_map(&record(), None);
            map.insert((*name).into(), (*value).into());
            let err = NodeRecord::from_fields(&map, C, None).unwrap_err();
            assert_eq!(err.field, *name, "{name}={value:?}: {err}");
        }
        let mut map = as_map(&record(), None);
        map.insert(
            field::URL.into(),
            format!("ws://{}", "a".repeat(MAX_URL_LEN)),
        );
        assert!(NodeRecord::from_fields(&map, C, None).is_err());
    }

    #[test]
    fn with_a_secret_only_the_nodes_own_signature_passes() {
        let r = record();
        let refused = |map: &HashMap<String, String>, cluster: &str| {
            NodeRecord::from_fields(map, cluster, Some(&secret()))
                .unwrap_err()
                .field
        };
        assert_eq!(refused(&as_map(&r, None), C), field::SIG);
        let forged = as_map(&r, Some(&Secret::new("somebody-elses-secret").unwrap()));
        assert_eq!(refused(&forged, C), field::SIG);
        let mut tampered = as_map(&r, Some(&secret()));
        tampered.insert(field::CONNECTIONS.into(), "0".into());
        assert_eq!(refused(&tampered, C), field::SIG);
        let mut dropped = as_map(&r, Some(&secret()));
        dropped.remove(field::CAPACITY);
        assert_eq!(refused(&dropped, C), field::SIG);
        // Signed for another cluster sharing the secret.
        assert_eq!(refused(&as_map(&r, Some(&secret())), "staging"), field::SIG);
    }

    #[test]
    fn freshness() {
        let mut r = record();
        r.updated_at_ms = 1_000_000;
        r.ttl_ms = 10_000;
        let skew = MAX_CLOCK_SKEW.as_millis() as u64;
        assert!(r.is_fresh(1_000_000));
        assert!(r.is_fresh(1_000_000 + 10_000 + skew));
        assert!(!r.is_fresh(1_000_000 + 10_000 + skew + 1));
        assert!(r.is_fresh(1_000_000 - skew));
        assert!(!r.is_fresh(1_000_000 - skew - 1));
    }
}
