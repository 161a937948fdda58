//! The live connections of a node, and the mailbox through which the drain talks to each one.
//!
//! Each connection owns a [`ConnGuard`]; dropping it (when the socket task ends, however it ends)
//! removes the connection and decrements the count, so the count cannot drift from reality. The
//! drain never touches a socket: it leaves orders in a connection's [`Mailbox`] and wakes it.
//!
//! A mailbox is a `Notify` and a small mutex-guarded slot rather than a channel, because a node
//! holds tens of thousands of idle connections and a tokio mpsc channel allocates a block of
//! slots up front: the mailbox costs about a hundred bytes. The app's pushes queue in the same
//! slot (a `VecDeque`, which allocates only once something is pushed), bounded by the caller
//! ([`crate::push`]); the connection seals it when it sends its Close, after which a push fails.
//!
//! Connections are kept in id order (ids only grow), so a shed finds the most recently
//! connected ones by walking down from the top: each step costs O(log n) and the shed keeps no
//! list of its own.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tungstenite::Message;

/// What a connection must do to close itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CloseOrder {
    /// Close code to send (1001 by default).
    pub code: u16,
    /// The close reason text (JSON with `retry_after_ms`).
    pub reason: String,
    /// How long messages already received may take to be answered.
    pub inflight_timeout: Duration,
    /// How long to wait for the client's Close after ours.
    pub close_timeout: Duration,
    /// The app closed it ([`crate::Conn::close`]), not a drain or a shed.
    pub by_app: bool,
}

/// Orders waiting for a connection.
#[derive(Debug, Default)]
pub(crate) struct Orders {
    /// A text notice to send now.
    pub notice: Option<String>,
    /// The app's pushes, in order.
    pub pushes: VecDeque<Message>,
    /// The app pushed more than the client took: close it as too slow.
    pub overflowed: bool,
    /// Close the connection.
    pub close: Option<CloseOrder>,
}

impl Orders {
    fn is_empty(&self) -> bool {
        self.notice.is_none() && self.pushes.is_empty() && !self.overflowed && self.close.is_none()
    }
}

/// The orders, and whether pushes are still taken.
#[derive(Debug, Default)]
struct Slot {
    orders: Orders,
    sealed: bool,
}

/// Why a push was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Sealed,
    Overflow,
}

/// A connection's mailbox.
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    wake: Notify,
    slot: Mutex<Slot>,
    /// Set by the first close order: a shed passes over a connection already closing.
    closing: AtomicBool,
    /// Notified on overflow: a write blocked on a client that stopped reading gives up.
    overflow: Notify,
}

impl Mailbox {
    /// Leaves a notice for the connection.
    pub fn notice(&self, text: String) {
        self.slot.lock().expect("mailbox lock").orders.notice = Some(text);
        self.wake.notify_one();
    }

    /// Orders the connection to close. A later order replaces one not yet picked up.
    pub fn close(&self, order: CloseOrder) {
        self.closing.store(true, Ordering::Relaxed);
        self.slot.lock().expect("mailbox lock").orders.close = Some(order);
        self.wake.notify_one();
    }

    /// Queues a push, unless the mailbox is sealed or already holds `limit` pushes (then it is
    /// sealed, and the connection told to close as too slow).
    pub fn push(&self, message: Message, limit: usize) -> Result<(), Refused> {
        let mut slot = self.slot.lock().expect("mailbox lock");
        if slot.sealed {
            return Err(Refused::Sealed);
        }
        if slot.orders.pushes.len() >= limit {
            slot.sealed = true;
            slot.orders.pushes.clear();
            slot.orders.overflowed = true;
            drop(slot);
            self.overflow.notify_one();
            self.wake.notify_one();
            return Err(Refused::Overflow);
        }
        slot.orders.pushes.push_back(message);
        drop(slot);
        self.wake.notify_one();
        Ok(())
    }

    /// Takes no more pushes; returns the ones still queued.
    pub fn seal(&self) -> VecDeque<Message> {
        let mut slot = self.slot.lock().expect("mailbox lock");
        slot.sealed = true;
        std::mem::take(&mut slot.orders.pushes)
    }

    /// Whether pushes are still taken.
    pub fn is_sealed(&self) -> bool {
        self.slot.lock().expect("mailbox lock").sealed
    }

    /// Resolves once the pushes overflowed (at once if they already did).
    pub async fn overflowed(&self) {
        self.overflow.notified().await;
        // Keep the permit for whoever waits next: overflow is for good.
        self.overflow.notify_one();
    }

    /// Whether the connection was ever ordered to close.
    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Waits for orders and takes them. Cancel safe: orders stay in the slot until taken, and a
    /// wake-up that arrives while nobody waits is kept by the `Notify` permit.
    pub async fn next(&self) -> Orders {
        loop {
            self.wake.notified().await;
            let orders = std::mem::take(&mut self.slot.lock().expect("mailbox lock").orders);
            if !orders.is_empty() {
                return orders;
            }
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// By id, so the newest are at the end.
    conns: BTreeMap<u64, Arc<Mailbox>>,
    /// While draining: the order given to a connection registered after the drain's snapshot
    /// (an upgrade that raced the readiness flip), so none slips through open.
    late_close: Option<CloseOrder>,
}

/// The registry of live connections.
#[derive(Debug)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
    count: watch::Sender<usize>,
    next_id: AtomicU64,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            inner: Mutex::default(),
            count: watch::Sender::new(0),
            next_id: AtomicU64::new(0),
        }
    }
}

/// Proof that a connection is registered; dropping it deregisters the connection.
#[derive(Debug)]
pub(crate) struct ConnGuard {
    id: u64,
    registry: Arc<Registry>,
}

impl ConnGuard {
    /// The connection's id.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let removed = self
            .registry
            .inner
            .lock()
            .expect("registry lock")
            .conns
            .remove(&self.id)
            .is_some();
        if removed {
            self.registry.count.send_modify(|n| *n -= 1);
        }
    }
}

impl Registry {
    /// Registers a new connection.
    pub fn register(self: &Arc<Self>) -> (Arc<Mailbox>, ConnGuard) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mailbox = Arc::new(Mailbox::default());
        let late_close = {
            let mut inner = self.inner.lock().expect("registry lock");
            inner.conns.insert(id, mailbox.clone());
            inner.late_close.clone()
        };
        self.count.send_modify(|n| *n += 1);
        if let Some(order) = late_close {
            mailbox.close(order);
        }
        let guard = ConnGuard {
            id,
            registry: self.clone(),
        };
        (mailbox, guard)
    }

    /// Starts a drain's closing phase: returns every live connection's mailbox, and from now on
    /// orders each newly registered connection to close with `late_close`.
    pub fn begin_closing(&self, late_close: CloseOrder) -> Vec<Arc<Mailbox>> {
        let mut inner = self.inner.lock().expect("registry lock");
        inner.late_close = Some(late_close);
        inner.conns.values().cloned().collect()
    }

    /// The id the next connection will get: every connection open now has a smaller one.
    pub fn next_id(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed)
    }

    /// Orders the newest connection with an id below `below` that is not closing yet to close
    /// with `order`; returns its id, or `None` when there is none. Walking down from the last id
    /// returned, a shed visits each connection at most once.
    pub fn close_newest_below(&self, below: u64, order: CloseOrder) -> Option<u64> {
        let (id, mailbox) = {
            let inner = self.inner.lock().expect("registry lock");
            let (id, mailbox) = inner
                .conns
                .range(..below)
                .rev()
                .find(|(_, mailbox)| !mailbox.is_closing())?;
            (*id, mailbox.clone())
        };
        mailbox.close(order);
        Some(id)
    }

    /// Ends the closing phase (resume): new connections stay open again.
    pub fn end_closing(&self) {
        self.inner.lock().expect("registry lock").late_close = None;
    }

    /// Live connections now.
    pub fn count(&self) -> usize {
        *self.count.borrow()
    }

    /// Follows the live connection count.
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> CloseOrder {
        CloseOrder {
            code: 1001,
            reason: "r".into(),
            inflight_timeout: Duration::from_secs(1),
            close_timeout: Duration::from_secs(1),
            by_app: false,
        }
    }

    #[tokio::test]
    async fn guards_keep_the_count() {
        let registry = Arc::new(Registry::default());
        let mut count = registry.subscribe();
        let (_a, guard_a) = registry.register();
        let (_b, guard_b) = registry.register();
        assert_eq!(registry.count(), 2);
        drop(guard_a);
        assert_eq!(registry.count(), 1);
        drop(guard_b);
        count.wait_for(|n| *n == 0).await.unwrap();
    }

    #[tokio::test]
    async fn late_connections_are_ordered_to_close() {
        let registry = Arc::new(Registry::default());
        let (_early, _g1) = registry.register();
        let snapshot = registry.begin_closing(order());
        assert_eq!(snapshot.len(), 1);
        let (late, _g2) = registry.register();
        assert_eq!(late.next().await.close, Some(order()));
        registry.end_closing();
        let (after, _g3) = registry.register();
        assert!(after.slot.lock().unwrap().orders.close.is_none());
    }

    #[tokio::test]
    async fn a_shed_closes_the_newest_connections_first_once_each() {
        let registry = Arc::new(Registry::default());
        let mut conns: Vec<_> = (0..5).map(|_| registry.register()).collect();
        let below = registry.next_id();
        // One connected after the shed began: not the shed's.
        let (late, _g) = registry.register();
        // One already closing (a drain's or an earlier shed's order): passed over.
        conns[3].0.close(order());
        let first = registry.close_newest_below(below, order()).unwrap();
        assert_eq!(first, 4);
        let second = registry.close_newest_below(first, order()).unwrap();
        assert_eq!(second, 2, "3 was already closing");
        assert!(late.slot.lock().unwrap().orders.close.is_none());
        assert_eq!(conns[2].0.next().await.close, Some(order()));
        assert_eq!(registry.close_newest_below(0, order()), None);
        // A connection gone since is not found.
        drop(conns.remove(1));
        assert_eq!(registry.close_newest_below(second, order()), Some(0));
    }

    #[tokio::test]
    async fn orders_left_before_waiting_are_not_lost() {
        let mailbox = Mailbox::default();
        mailbox.notice("n".into());
        mailbox.close(order());
        let orders = mailbox.next().await;
        assert_eq!(orders.notice.as_deref(), Some("n"));
        assert_eq!(orders.close, Some(order()));
    }
}
