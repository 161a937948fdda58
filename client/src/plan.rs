//! Where and when a client connects next: its own order over the URLs (away from the node that
//! closed, at random, skipping the ones that refused it recently), and what the servers advised
//! (when to come back, and where: a target judged by [`crate::follow`] at the next attempt).

use crate::follow::Goto;
use tokio::time::Instant;

/// What the servers advised for the next connection.
#[derive(Debug, Default)]
pub(crate) struct Advice {
    /// When to come back (a notice or a close reason), capped.
    pub come_back_at: Option<Instant>,
    /// Where to (a notice's `reconnectTo`, then a close reason's `reconnect_to`), as the server
    /// said it and at most a target's length; judged at the next attempt, then forgotten.
    pub target: Option<String>,
}

/// Where and when to connect next.
pub(crate) struct Plan {
    pub urls: usize,
    pub next: usize,
    /// Per URL: refused (503) until then.
    pub refused_until: Vec<Option<Instant>>,
    /// Failed attempts in a row.
    pub failures: u32,
    /// Connections in a row that ended without an answer or advice (a server that takes the
    /// connection and drops it): backed off like failed connects, not retried at once.
    pub flaps: u32,
    pub lost_at: Option<Instant>,
    pub advice: Advice,
}

impl Plan {
    pub fn new(urls: usize, first: usize) -> Self {
        Plan {
            urls,
            next: first % urls,
            refused_until: vec![None; urls],
            failures: 0,
            flaps: 0,
            lost_at: None,
            advice: Advice::default(),
        }
    }

    /// The next URL that has not refused us recently, or when the first refusal ends.
    pub fn candidate(&self, now: Instant) -> Result<usize, Instant> {
        (0..self.urls)
            .map(|k| (self.next + k) % self.urls)
            .find(|&i| self.refused_until[i].is_none_or(|t| t <= now))
            .ok_or_else(|| {
                self.refused_until
                    .iter()
                    .flatten()
                    .min()
                    .copied()
                    .unwrap_or(now)
            })
    }

    /// Away from the node that closed (listed URL `i`), to any other at random, so its clients
    /// spread over all the survivors instead of piling onto the next one. After a connection
    /// to a target outside the list, the own choice stays what it was.
    pub fn lost(&mut self, i: Option<usize>) {
        self.lost_at = Some(Instant::now());
        let Some(i) = i else { return };
        self.next = if self.urls > 1 {
            (i + 1 + rand::random_range(0..self.urls - 1)) % self.urls
        } else {
            i
        };
    }
}

/// Where an attempt goes.
pub(crate) enum Choice {
    /// The client's own choice: a listed URL.
    Own(usize),
    /// A server's target the client follows.
    Target(Goto),
}

impl Choice {
    pub fn url(&self, urls: &[String]) -> String {
        match self {
            Choice::Own(i) | Choice::Target(Goto::Listed(i)) => urls[*i].clone(),
            Choice::Target(Goto::Other(url)) => url.clone(),
        }
    }

    pub fn listed(&self) -> Option<usize> {
        match self {
            Choice::Own(i) | Choice::Target(Goto::Listed(i)) => Some(*i),
            Choice::Target(Goto::Other(_)) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_outside_the_list_leaves_the_own_order_alone() {
        let mut plan = Plan::new(3, 1);
        plan.lost(None);
        assert_eq!(plan.next, 1);
        assert!(plan.lost_at.is_some());
        for _ in 0..20 {
            plan.lost(Some(1));
            assert_ne!(plan.next, 1, "away from the node that closed");
        }
        let urls = ["ws://a/ws".to_owned(), "ws://b/ws".to_owned()];
        assert_eq!(Choice::Target(Goto::Listed(1)).url(&urls), "ws://b/ws");
        assert_eq!(Choice::Target(Goto::Listed(1)).listed(), Some(1));
        let other = Choice::Target(Goto::Other("ws://c/ws".into()));
        assert_eq!(
            (other.url(&urls).as_str(), other.listed()),
            ("ws://c/ws", None)
        );
        assert_eq!(Choice::Own(0).listed(), Some(0));
    }
}
