//! Redis in a container from the locally built image answers over its mapped port.

use ebb_tests::redis::Redis;

#[tokio::test]
async fn redis_container_answers_ping() {
    let redis = Redis::run().await;
    assert!(
        redis.url().starts_with("redis://127.0.0.1:"),
        "{}",
        redis.url()
    );
    let mut connection = redis.connection().await;
    let pong: String = redis::cmd("PING")
        .query_async(&mut connection)
        .await
        .expect("PING");
    assert_eq!(pong, "PONG");
}
