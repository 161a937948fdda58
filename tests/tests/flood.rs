//! A flood of garbage on a node's command channel, against a real Redis in a container and the
//! real `ebb-node` binary: the node's record never expires, its clients keep being answered, a
//! genuine drain sent meanwhile is obeyed, refusals and drops are counted, and memory stays
//! bounded.

use ebb_proto::{Keys, NodeName};
use ebb_tests::fleet::ebb;
use ebb_tests::process::Node;
use ebb_tests::redis::Redis;
use ebb_tests::ws::{Client, Seen};
use ebb_tests::{eventually, http, procfs};
use nix::sys::signal::Signal;
use redis::AsyncCommands;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const CLUSTER: &str = "flood";
/// How long the flood lasts: well beyond twice the record TTL.
const FLOOD: Duration = Duration::from_secs(8);
/// When the genuine drain is sent, from the start of the flood.
const DRAIN_AT: Duration = Duration::from_secs(5);
const RECORD_TTL: Duration = Duration::from_secs(3);
const PUBLISHERS: usize = 4;
const PIPELINE: usize = 64;
const PAYLOAD: usize = 1024;
/// The node's peak resident memory must stay below this. Measured: 12 MiB before the flood, 13
/// MiB after; with redis-rs's RESP2 pub/sub (an unbounded buffer before the reader) 63-126 MiB.
const MAX_PEAK_RSS_MIB: u64 = 64;

/// 1 KiB of garbage: half of it random bytes (refused at the first byte), half well-formed JSON
/// of the right version that is no command (refused only after being parsed whole).
fn garbage(seed: u64) -> Vec<u8> {
    if seed.is_multiple_of(2) {
        let mut x = seed | 1;
        (0..PAYLOAD)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    } else {
        let mut json = format!(r#"{{"v":1,"seed":{seed},"pad":["#).into_bytes();
        while json.len() < PAYLOAD - 3 {
            json.extend_from_slice(b"0,");
        }
        json.extend_from_slice(b"0]}");
        json
    }
}

/// What the publishers achieved.
#[derive(Debug, Default)]
struct Published {
    total: AtomicU64,
    /// Publishes no subscriber received (the node's subscription was being re-established).
    unheard: AtomicU64,
}

/// One publisher: pipelines of PUBLISH as fast as Redis answers, until `until`.
fn publisher(
    url: String,
    channel: String,
    until: Instant,
    seed: u64,
    published: Arc<Published>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let payloads: Vec<Vec<u8>> = (0..PIPELINE as u64).map(|i| garbage(seed + i)).collect();
        // Bounded in time, and in count as a backstop.
        for _ in 0..1_000_000 {
            if Instant::now() >= until {
                return;
            }
            let mut pipe = redis::pipe();
            for payload in &payloads {
                pipe.publish(&channel, payload);
            }
            let heard: Vec<i64> = pipe.query_async(&mut conn).await.unwrap();
            published
                .total
                .fetch_add(heard.len() as u64, Ordering::Relaxed);
            let unheard = heard.iter().filter(|n| **n == 0).count() as u64;
            published.unheard.fetch_add(unheard, Ordering::Relaxed);
        }
    })
}

/// What the sampler saw of the node's record.
#[derive(Debug)]
struct RecordSamples {
    samples: u64,
    /// The smallest remaining TTL seen, in ms.
    min_pttl_ms: i64,
}

/// Samples the record's remaining TTL every 100 ms until `stop`; panics the moment it is gone.
fn sample_record(url: String, key: String, stop: Arc<AtomicBool>) -> JoinHandle<RecordSamples> {
    tokio::spawn(async move {
        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let mut seen = RecordSamples {
            samples: 0,
            min_pttl_ms: i64::MAX,
        };
        for _ in 0..1_000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let pttl: i64 = conn.pttl(&key).await.unwrap();
            assert!(
                pttl > 0,
                "the record expired during the flood (PTTL {pttl})"
            );
            seen.samples += 1;
            seen.min_pttl_ms = seen.min_pttl_ms.min(pttl);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen
    })
}

/// Echoes on `client` every 100 ms until `until`; returns how many and the slowest answer.
async fn probe_echo(client: &mut Client, until: Instant) -> (u32, Duration) {
    let mut slowest = Duration::ZERO;
    let mut n = 0;
    while Instant::now() < until && n < 1_000 {
        let text = format!("probe-{n}");
        let sent = Instant::now();
        client.send(&text).await;
        assert_eq!(
            client.next(SECS(2)).await,
            Seen::Text(format!("Echo: {text}")),
            "echo {n} during the flood"
        );
        slowest = slowest.max(sent.elapsed());
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (n, slowest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_flood_starves_neither_the_heartbeat_nor_the_clients_nor_a_genuine_drain() {
    let redis = Redis::run().await;
    let name = NodeName::parse("n1").unwrap();
    let keys = Keys::new(CLUSTER).unwrap();
    let mut node = Node::start(&[
        "--redis",
        redis.url(),
        "--cluster",
        CLUSTER,
        "--name",
        "n1",
        "--record-ttl",
        "3s",
        "--heartbeat-interval",
        "1s",
        "--close-spread",
        "0s",
    ])
    .await;
    let mut probe = Client::connect(&node.ws_url()).await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut client = Client::connect(&node.ws_url()).await;
        idle.push(tokio::spawn(async move {
            let (_, close, _) = client.until_close(SECS(30)).await;
            client.finish(SECS(2)).await;
            close
        }));
    }
    eventually("registered with every client", SECS(10), || async {
        let mut conn = redis.connection().await;
        let connections: Option<String> = conn.hget(keys.node(&name), "connections").await.ok()?;
        (connections.as_deref() == Some("21")).then_some(())
    })
    .await;

    let peak_before_mib = procfs::peak_rss_kib(node.proc.pid()) / 1024;
    let start = Instant::now();
    let until = start + FLOOD;
    let published = Arc::new(Published::default());
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|i| {
            publisher(
                redis.url().to_owned(),
                keys.commands(&name),
                until,
                (i * PIPELINE) as u64,
                published.clone(),
            )
        })
        .collect();
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let record = sample_record(
        redis.url().to_owned(),
        keys.node(&name),
        stop_sampling.clone(),
    );

    // The clients are answered throughout, until the genuine drain.
    let (echoes, slowest_echo) = probe_echo(&mut probe, start + DRAIN_AT).await;
    let drain_sent = Instant::now();
    let (code, _, logs) = ebb(
        redis.url(),
        CLUSTER,
        &["drain", "n1", "--then", "stay"],
        SECS(10),
    )
    .await;
    assert_eq!(code, 0, "{logs:?}");
    let obeyed = eventually("the drain obeyed during the flood", SECS(5), || async {
        let health = http::get(node.addr, "/health").await;
        (health.status == 503).then(|| drain_sent.elapsed())
    })
    .await;
    assert!(
        Instant::now() < until,
        "the drain was obeyed only after the flood ended ({obeyed:?} after it was sent)"
    );
    let (_, close, _) = probe.until_close(SECS(10)).await;
    assert!(matches!(close, Seen::Close(Some((1001, _)))), "{close:?}");
    probe.finish(SECS(2)).await;

    for publisher in publishers {
        publisher.await.unwrap();
    }
    let flood_took = start.elapsed();
    stop_sampling.store(true, Ordering::Relaxed);
    let record = record.await.unwrap();
    for client in idle {
        let close = client.await.unwrap();
        assert!(matches!(close, Seen::Close(Some((1001, _)))), "{close:?}");
    }

    let total = published.total.load(Ordering::Relaxed);
    let unheard = published.unheard.load(Ordering::Relaxed);
    let metrics = node.metrics().await;
    let metric = |sample: &str| http::metric(&metrics, sample).unwrap_or(0.0) as u64;
    let malformed = metric(r#"ebb_commands_refused_total{reason="malformed"}"#);
    let dropped = metric("ebb_commands_dropped_total");
    let peak_mib = procfs::peak_rss_kib(node.proc.pid()) / 1024;
    let logs = node.proc.logs();
    let count = |needle: &str| logs.iter().filter(|l| l.contains(needle)).count();
    let accepted = logs
        .iter()
        .find(|l| l.contains("command accepted"))
        .cloned()
        .unwrap_or_default();
    println!(
        "flood: {total} payloads of {PAYLOAD} B in {flood_took:?} ({:.0}/s), {unheard} with no \
         subscriber; node refused {malformed} as malformed, dropped {dropped}; {} refusal log \
         lines; record sampled {} times, smallest PTTL {} ms (TTL {RECORD_TTL:?}); {echoes} \
         echoes, slowest {slowest_echo:?}; drain obeyed {obeyed:?} after it was sent ({accepted}); \
         {} command subscriptions; peak RSS {peak_mib} MiB ({peak_before_mib} MiB before)",
        total as f64 / flood_took.as_secs_f64(),
        count("commands refused"),
        record.samples,
        record.min_pttl_ms,
        count("listening for commands"),
    );

    assert!(record.samples >= 50, "{record:?}");
    assert!(echoes >= 20, "{echoes} echoes");
    // Heartbeats never waited for the flood: one registration, never a lost liveness session.
    assert_eq!(count("registered in Redis"), 1, "liveness reconnected");
    assert!(malformed > 1000, "refusals counted: {malformed}");
    // The worker is far slower than the flood (it parses what it refuses): the queue overflows.
    assert!(dropped > 0, "drops counted: {dropped}");
    assert!(
        malformed + dropped <= total,
        "{malformed} + {dropped} > {total}"
    );
    // Refusals are logged in aggregate: about one line a second, not one per payload.
    assert!(
        count("commands refused") <= 2 * flood_took.as_secs() as usize + 2,
        "{} refusal lines",
        count("commands refused")
    );
    assert!(
        peak_mib < MAX_PEAK_RSS_MIB,
        "peak RSS {peak_mib} MiB under the flood"
    );

    node.signal(Signal::SIGTERM);
    assert_eq!(node.proc.wait(SECS(10)).await.code(), Some(0));
}
