//! Live clients through a rollout: ebb-clients spread over the nodes, each sending steadily and
//! reconnecting through drains, so a test can say "every message answered exactly once, no 1006".

use ebb_client::{Client, ClientConfig, Echo};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often each client sends.
const EVERY: Duration = Duration::from_millis(20);

/// Clients sending until [`Traffic::finish`].
#[derive(Debug)]
pub struct Traffic {
    stop: CancellationToken,
    task: JoinHandle<(u64, Arc<Vec<Client>>)>,
}

/// What the clients saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub sent: u64,
    pub answered: u64,
    pub duplicates: u64,
    pub abnormal: u64,
}

impl Traffic {
    /// `n` clients over `urls` (client `i` starts at `urls[i % len]`), sending from now on.
    pub fn start(urls: &[String], n: usize) -> Traffic {
        let clients: Vec<Client> = (0..n)
            .map(|i| {
                let mut config = ClientConfig::new(urls.to_vec());
                config.first_url = i % urls.len();
                config.events = false;
                Client::start(config, Echo).0
            })
            .collect();
        let clients = Arc::new(clients);
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (clients, stop) = (clients.clone(), stop.clone());
            async move {
                let mut sent = 0;
                while !stop.is_cancelled() {
                    for client in clients.iter() {
                        if client.send(format!("m{sent}")).is_ok() {
                            sent += 1;
                        }
                    }
                    tokio::time::sleep(EVERY).await;
                }
                (sent, clients)
            }
        });
        Traffic { stop, task }
    }

    /// Stops sending, waits (bounded) for every answer, closes the clients; their totals.
    pub async fn finish(self, limit: Duration) -> Totals {
        self.stop.cancel();
        let (sent, clients) = self.task.await.expect("the sender does not panic");
        for client in clients.iter() {
            crate::eventually("every message answered", limit, || async {
                (client.pending() == 0).then_some(())
            })
            .await;
        }
        let clients = Arc::try_unwrap(clients).expect("the sender holds no client now");
        let mut totals = Totals {
            sent,
            answered: 0,
            duplicates: 0,
            abnormal: 0,
        };
        for client in clients {
            let stats = client.close().await;
            totals.answered += stats.answered;
            totals.duplicates += stats.duplicates;
            totals.abnormal += stats.abnormal;
        }
        totals
    }
}

impl Totals {
    /// Every message answered exactly once, and no connection ended without a Close.
    pub fn assert_nothing_lost(&self) {
        assert_eq!(self.answered, self.sent, "every message answered: {self:?}");
        assert_eq!(self.duplicates, 0, "{self:?}");
        assert_eq!(self.abnormal, 0, "no 1006: {self:?}");
    }
}
