//! The node record: one Redis hash per node at [`crate::Keys::node`], written by the node on
//! registration and every heartbeat, read by the coordinator and `ebb status`.

use crate::state::NodeState;
use std::collections::HashMap;
use uuid::Uuid;

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
}

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub name: String,
    /// A uuid per process start: a restart under the same name shows as a new instance.
    pub instance: Uuid,
    /// Advertised WebSocket URL clients use.
    pub url: String,
    /// The node software's version.
    pub version: String,
    pub state: NodeState,
    pub connections: u64,
    /// Most connections this node should hold, when known (capacity checks use it).
    pub capacity: Option<u64>,
    pub started_at_ms: u64,
    pub updated_at_ms: u64,
}

/// A record hash that is missing a field or holds a bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad node record field {field}: {problem}")]
pub struct RecordError {
    pub field: &'static str,
    pub problem: String,
}

impl NodeRecord {
    /// The fields to `HSET`.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            (field::NAME, self.name.clone()),
            (field::INSTANCE, self.instance.to_string()),
            (field::URL, self.url.clone()),
            (field::VERSION, self.version.clone()),
            (field::STATE, self.state.to_string()),
            (field::CONNECTIONS, self.connections.to_string()),
            (field::STARTED_AT_MS, self.started_at_ms.to_string()),
            (field::UPDATED_AT_MS, self.updated_at_ms.to_string()),
        ];
        if let Some(capacity) = self.capacity {
            fields.push((field::CAPACITY, capacity.to_string()));
        }
        fields
    }

    /// Reads an `HGETALL` answer.
    pub fn from_fields(fields: &HashMap<String, String>) -> Result<Self, RecordError> {
        fn get<'a>(
            fields: &'a HashMap<String, String>,
            name: &'static str,
        ) -> Result<&'a str, RecordError> {
            fields
                .get(name)
                .map(String::as_str)
                .ok_or_else(|| RecordError {
                    field: name,
                    problem: "missing".to_owned(),
                })
        }
        fn parse<T: std::str::FromStr>(
            fields: &HashMap<String, String>,
            name: &'static str,
        ) -> Result<T, RecordError>
        where
            T::Err: std::fmt::Display,
        {
            get(fields, name)?.parse().map_err(|e: T::Err| RecordError {
                field: name,
                problem: e.to_string(),
            })
        }
        Ok(NodeRecord {
            name: get(fields, field::NAME)?.to_owned(),
            instance: parse(fields, field::INSTANCE)?,
            url: get(fields, field::URL)?.to_owned(),
            version: get(fields, field::VERSION)?.to_owned(),
            state: parse(fields, field::STATE)?,
            connections: parse(fields, field::CONNECTIONS)?,
            capacity: match fields.get(field::CAPACITY) {
                Some(_) => Some(parse(fields, field::CAPACITY)?),
                None => None,
            },
            started_at_ms: parse(fields, field::STARTED_AT_MS)?,
            updated_at_ms: parse(fields, field::UPDATED_AT_MS)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> NodeRecord {
        NodeRecord {
            name: "node-a".into(),
            instance: Uuid::new_v4(),
            url: "ws://127.0.0.1:8080/ws".into(),
            version: "0.1.0".into(),
            state: NodeState::Active,
            connections: 42,
            capacity: Some(10_000),
            started_at_ms: 1,
            updated_at_ms: 2,
        }
    }

    fn as_map(record: &NodeRecord) -> HashMap<String, String> {
        record
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    #[test]
    fn round_trips() {
        let mut r = record();
        assert_eq!(NodeRecord::from_fields(&as_map(&r)), Ok(r.clone()));
        r.capacity = None;
        assert_eq!(NodeRecord::from_fields(&as_map(&r)), Ok(r));
    }

    #[test]
    fn bad_fields_are_named() {
        let mut map = as_map(&record());
        map.insert(field::STATE.into(), "exploded".into());
        assert_eq!(
            NodeRecord::from_fields(&map).unwrap_err().field,
            field::STATE
        );
        map.remove(field::URL);
        assert_eq!(NodeRecord::from_fields(&map).unwrap_err().field, field::URL);
    }
}
