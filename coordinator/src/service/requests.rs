//! The request stream `ebb:{c}:requests`, read through the consumer group [`REQUEST_GROUP`]:
//! an entry is delivered to one consumer and acknowledged once its request is done, so a request
//! added while no service runs is carried out when one starts, and one a dead leader took is
//! claimed by the next. The `id` inside makes a request run at most once (see `results`).

use crate::cluster::{Cluster, ClusterError};
use ebb_proto::keys::REQUEST_GROUP;
use ebb_proto::request::REQUEST_FIELD;
use redis::AsyncCommands;
use redis::streams::{StreamAutoClaimOptions, StreamId, StreamReadOptions, StreamReadReply};

/// How long one read waits for a new entry, in ms (under the connection's response timeout).
const BLOCK_MS: usize = 1000;
/// Entries the stream keeps (older ones are trimmed when new ones are added).
pub const MAX_ENTRIES: usize = 10_000;

/// One entry: its id and its `request` field (none if it has none).
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub request: Option<Vec<u8>>,
}

impl From<StreamId> for Entry {
    fn from(entry: StreamId) -> Self {
        let request = entry.map.get(REQUEST_FIELD).and_then(|v| match v {
            redis::Value::BulkString(bytes) => Some(bytes.clone()),
            redis::Value::SimpleString(s) => Some(s.clone().into_bytes()),
            _ => None,
        });
        Entry {
            id: entry.id,
            request,
        }
    }
}

/// Creates the consumer group (from the stream's start, so entries added before any service ran
/// are delivered), and the stream if it does not exist.
pub async fn ensure_group(cluster: &mut Cluster) -> Result<(), ClusterError> {
    let key = cluster.keys().requests();
    let created: redis::RedisResult<()> = cluster
        .conn()
        .xgroup_create_mkstream(key, REQUEST_GROUP, "0")
        .await;
    match created {
        Ok(()) => Ok(()),
        Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// The next new entry for `consumer`, waiting up to a second.
pub async fn next(cluster: &mut Cluster, consumer: &str) -> Result<Option<Entry>, ClusterError> {
    let key = cluster.keys().requests();
    let options = StreamReadOptions::default()
        .group(REQUEST_GROUP, consumer)
        .count(1)
        .block(BLOCK_MS);
    let reply: Option<StreamReadReply> = cluster
        .conn()
        .xread_options(&[key], &[">"], &options)
        .await?;
    Ok(reply
        .into_iter()
        .flat_map(|r| r.keys)
        .flat_map(|k| k.ids)
        .map(Entry::from)
        .next())
}

/// Takes over every entry delivered but not acknowledged (a leader that died took them).
pub async fn claim_pending(
    cluster: &mut Cluster,
    consumer: &str,
) -> Result<Vec<Entry>, ClusterError> {
    let key = cluster.keys().requests();
    let mut start = "0-0".to_owned();
    let mut claimed = Vec::new();
    for _ in 0..100 {
        let reply: redis::streams::StreamAutoClaimReply = cluster
            .conn()
            .xautoclaim_options(
                &key,
                REQUEST_GROUP,
                consumer,
                0,
                &start,
                StreamAutoClaimOptions::default().count(100),
            )
            .await?;
        claimed.extend(reply.claimed.into_iter().map(Entry::from));
        if reply.next_stream_id == "0-0" {
            break;
        }
        start = reply.next_stream_id;
    }
    Ok(claimed)
}

/// Acknowledges an entry: its request is done (or refused).
pub async fn ack(cluster: &mut Cluster, entry: &str) -> Result<(), ClusterError> {
    let key = cluster.keys().requests();
    let _: i64 = cluster.conn().xack(key, REQUEST_GROUP, &[entry]).await?;
    Ok(())
}

/// Adds a request (its field's value); returns the entry's id.
pub async fn add(cluster: &mut Cluster, value: &str) -> Result<String, ClusterError> {
    let key = cluster.keys().requests();
    let id: String = cluster
        .conn()
        .xadd_maxlen(
            key,
            redis::streams::StreamMaxlen::Approx(MAX_ENTRIES),
            "*",
            &[(REQUEST_FIELD, value)],
        )
        .await?;
    Ok(id)
}
