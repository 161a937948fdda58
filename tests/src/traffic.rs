//! Live clients through a rollout: ebb-clients spread over the nodes, each sending steadily and
//! reconnecting through drains, so a test can say "every message answered exactly once, no 1006".
//! Clients started with events on also have their Close frames logged ([`Traffic::closes`]), so
//! a test can read every reason a node sent.

use ebb_client::{Client, ClientConfig, Echo, Event};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// How often each client sends, by default.
pub const EVERY: Duration = Duration::from_millis(20);

/// Clients sending until [`Traffic::finish`].
#[derive(Debug)]
pub struct Traffic {
    stop: CancellationToken,
    task: JoinHandle<(u64, Arc<Vec<Client>>)>,
    closes: Arc<Mutex<Vec<Closed>>>,
    /// The event readers (clients with events on); each ends when its client is closed.
    _readers: JoinSet<()>,
}

/// A connection's end as one client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// Which client (its index).
    pub client: usize,
    /// The Close code, `None` when abnormal.
    pub code: Option<u16>,
    /// The Close reason as sent.
    pub reason: Option<String>,
}

/// What the clients saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub sent: u64,
    pub answered: u64,
    pub duplicates: u64,
    pub abnormal: u64,
    /// Connections made to a target a node named.
    pub targets_followed: u64,
    /// Targets named and not followed (not among the client's URLs).
    pub targets_ignored: u64,
}

impl Traffic {
    /// `n` clients over `urls` (client `i` starts at `urls[i % len]`), sending from now on.
    pub fn start(urls: &[String], n: usize) -> Traffic {
        Traffic::start_with(n, EVERY, |i| {
            let mut config = ClientConfig::new(urls.to_vec());
            config.first_url = i % urls.len();
            config.events = false;
            config
        })
    }

    /// `n` clients, client `i` configured by `config(i)`, each sending every `every` from now
    /// on. A client with `events` on has its events read here, and its Close frames logged.
    pub fn start_with(
        n: usize,
        every: Duration,
        config: impl Fn(usize) -> ClientConfig,
    ) -> Traffic {
        let closes = Arc::new(Mutex::new(Vec::new()));
        let mut readers = JoinSet::new();
        let clients: Vec<Client> = (0..n)
            .map(|i| {
                let (client, mut events) = Client::start(config(i), Echo);
                let closes = closes.clone();
                readers.spawn(async move {
                    while let Some(event) = events.recv().await {
                        if let Event::Disconnected { code, reason, .. } = event {
                            let closed = Closed {
                                client: i,
                                code,
                                reason,
                            };
                            closes.lock().unwrap().push(closed);
                        }
                    }
                });
                client
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
                    tokio::time::sleep(every).await;
                }
                (sent, clients)
            }
        });
        Traffic {
            stop,
            task,
            closes,
            _readers: readers,
        }
    }

    /// Every connection end the clients with events on have seen so far.
    pub fn closes(&self) -> Vec<Closed> {
        self.closes.lock().unwrap().clone()
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
            targets_followed: 0,
            targets_ignored: 0,
        };
        for client in clients {
            let stats = client.close().await;
            totals.answered += stats.answered;
            totals.duplicates += stats.duplicates;
            totals.abnormal += stats.abnormal;
            totals.targets_followed += stats.targets_followed;
            totals.targets_ignored += stats.targets_ignored;
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
