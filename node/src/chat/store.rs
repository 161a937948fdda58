//! Where chat messages are stored and numbered: in this process (no `--redis`: rooms are the
//! node's own), or in Redis, where one script numbers, stores, trims and publishes each message
//! atomically, so `seq` increases by exactly 1 per room across every node of the cluster and a
//! resent id is acked with its first `seq` instead of being stored twice.

use ebb_proto::Keys;
use ebb_proto::chat::{HISTORY_AGE_MS, HISTORY_LEN, RoomMessage};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Numbers, stores, trims and publishes one message. KEYS: seq, history, ids. ARGV: id, text,
/// now_ms, the history's length and age limits, the channel, the room, the publish command.
/// Returns `{seq, 1}` when stored, `{seq, 0}` when the id was stored before.
const STORE: &str = r#"
local old = redis.call('ZSCORE', KEYS[3], ARGV[1])
if old then return {tonumber(old), 0} end
local now = tonumber(ARGV[3])
local seq = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], seq, cjson.encode({seq = seq, id = ARGV[1], text = ARGV[2], at_ms = now}))
redis.call('ZADD', KEYS[3], seq, ARGV[1])
local floor = seq - tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', floor)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', floor)
for _ = 1, 16 do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #oldest == 0 then break end
  local entry = cjson.decode(oldest[1])
  if entry.at_ms >= now - tonumber(ARGV[5]) then break end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], entry.seq, entry.seq)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], entry.seq, entry.seq)
end
redis.call(ARGV[8], ARGV[6], cjson.encode({room = ARGV[7], seq = seq, id = ARGV[1], text = ARGV[2]}))
return {seq, 1}
"#;

/// One stored message in the history.
#[derive(Debug, Clone, serde::Deserialize)]
struct Stored {
    seq: u64,
    id: String,
    text: String,
}

/// What a reconnect finds: whether the history reaches back far enough, and what it holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Since {
    /// The first seq the history no longer has, when it does not reach back to `after + 1`.
    pub gap_from: Option<u64>,
    pub messages: Vec<RoomMessage>,
}

/// Where messages live.
#[derive(Debug)]
pub(crate) enum Store {
    Local(Mutex<HashMap<String, LocalRoom>>),
    Redis {
        conn: ebb_redis::Conn,
        keys: Keys,
        publish: &'static str,
    },
}

/// One room kept in this process.
#[derive(Debug, Default)]
pub(crate) struct LocalRoom {
    seq: u64,
    history: VecDeque<(RoomMessage, u64)>,
    ids: HashMap<String, u64>,
}

impl Store {
    pub fn local() -> Store {
        Store::Local(Mutex::default())
    }

    pub fn redis(conn: ebb_redis::Conn, keys: Keys, sharded: bool) -> Store {
        let publish = if sharded { "SPUBLISH" } else { "PUBLISH" };
        Store::Redis {
            conn,
            keys,
            publish,
        }
    }

    /// Stores a post: its seq, and the message when it is new (a local store hands it back to be
    /// delivered; Redis publishes it to every node itself).
    pub async fn store(
        &self,
        room: &str,
        id: &str,
        text: &str,
    ) -> Result<(u64, Option<RoomMessage>), String> {
        let now = ebb_proto::time::now_ms();
        match self {
            Store::Local(rooms) => {
                let mut rooms = rooms.lock().expect("chat rooms lock");
                let r = rooms.entry(room.to_owned()).or_default();
                if let Some(&seq) = r.ids.get(id) {
                    return Ok((seq, None));
                }
                r.seq += 1;
                let message = RoomMessage {
                    room: room.to_owned(),
                    seq: r.seq,
                    id: id.to_owned(),
                    text: text.to_owned(),
                };
                r.history.push_back((message.clone(), now));
                r.ids.insert(id.to_owned(), r.seq);
                while r.history.len() as u64 > HISTORY_LEN
                    || r.history
                        .front()
                        .is_some_and(|(_, at)| *at + HISTORY_AGE_MS < now)
                {
                    if let Some((old, _)) = r.history.pop_front() {
                        r.ids.remove(&old.id);
                    }
                }
                Ok((r.seq, Some(message)))
            }
            Store::Redis {
                conn,
                keys,
                publish,
            } => {
                let (seq, _new): (u64, u8) = redis::Script::new(STORE)
                    .key(keys.chat_seq(room))
                    .key(keys.chat_history(room))
                    .key(keys.chat_ids(room))
                    .arg(id)
                    .arg(text)
                    .arg(now)
                    .arg(HISTORY_LEN)
                    .arg(HISTORY_AGE_MS)
                    .arg(keys.chat_channel())
                    .arg(room)
                    .arg(*publish)
                    .invoke_async(&mut conn.clone())
                    .await
                    .map_err(|e| format!("not stored: {e}"))?;
                Ok((seq, None))
            }
        }
    }

    /// Every stored message of `room` with `seq > after`, in order, and whether some are gone.
    pub async fn since(&self, room: &str, after: u64) -> Result<Since, String> {
        let (last, stored): (u64, Vec<(RoomMessage, u64)>) = match self {
            Store::Local(rooms) => {
                let rooms = rooms.lock().expect("chat rooms lock");
                let Some(r) = rooms.get(room) else {
                    return Ok(Since::default());
                };
                let kept = r.history.iter().map(|(m, _)| (m.clone(), m.seq)).collect();
                (r.seq, kept)
            }
            Store::Redis { conn, keys, .. } => {
                let (last, oldest, newer): (Option<u64>, Vec<(String, u64)>, Vec<String>) =
                    redis::pipe()
                        .get(keys.chat_seq(room))
                        .zrange_withscores(keys.chat_history(room), 0, 0)
                        .zrangebyscore(keys.chat_history(room), format!("({after}"), "+inf")
                        .query_async(&mut conn.clone())
                        .await
                        .map_err(|e| format!("history unavailable: {e}"))?;
                let mut stored: Vec<(RoomMessage, u64)> = oldest
                    .into_iter()
                    .filter_map(|(json, _)| decode(room, &json))
                    .map(|m| {
                        let seq = m.seq;
                        (m, seq)
                    })
                    .collect();
                stored.extend(newer.iter().filter_map(|json| decode(room, json)).map(|m| {
                    let seq = m.seq;
                    (m, seq)
                }));
                stored.sort_by_key(|(_, seq)| *seq);
                stored.dedup_by_key(|(_, seq)| *seq);
                (last.unwrap_or(0), stored)
            }
        };
        let oldest = stored.first().map(|(_, seq)| *seq);
        let gap_from = match oldest {
            Some(oldest) if oldest > after + 1 => Some(after + 1),
            None if last > after => Some(after + 1),
            _ => None,
        };
        let messages = stored
            .into_iter()
            .filter(|(_, seq)| *seq > after)
            .map(|(m, _)| m)
            .collect();
        Ok(Since { gap_from, messages })
    }
}

fn decode(room: &str, json: &str) -> Option<RoomMessage> {
    let stored: Stored = serde_json::from_str(json).ok()?;
    Some(RoomMessage {
        room: room.to_owned(),
        seq: stored.seq,
        id: stored.id,
        text: stored.text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_room_numbers_by_one_takes_an_id_once_and_says_what_is_gone() {
        let store = Store::local();
        assert_eq!(store.store("r", "a", "one").await.unwrap().0, 1);
        assert_eq!(store.store("r", "b", "two").await.unwrap().0, 2);
        let (seq, again) = store.store("r", "a", "one again").await.unwrap();
        assert_eq!((seq, again), (1, None), "a resent id keeps its seq");
        assert_eq!(store.store("other", "a", "x").await.unwrap().0, 1);
        let since = store.since("r", 1).await.unwrap();
        assert_eq!(since.gap_from, None);
        assert_eq!(
            since.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [2]
        );
        for i in 0..HISTORY_LEN + 5 {
            store.store("big", &format!("m{i}"), "x").await.unwrap();
        }
        let since = store.since("big", 0).await.unwrap();
        assert_eq!(since.gap_from, Some(1));
        assert_eq!(since.messages.len() as u64, HISTORY_LEN);
        assert_eq!(since.messages[0].seq, 6);
        assert_eq!(store.since("nobody", 3).await.unwrap(), Since::default());
    }
}
