//! Who may hold one of the API's connection slots, and for how long.
//!
//! A connection is *busy* while a request is in flight on it and *idle*
//! otherwise (just accepted and still sending its first request, between
//! keep-alive requests, an HTTP/2 connection with no open stream). The
//! policy, so that no peer can hold the HTTP side hostage:
//!
//! - an idle connection is closed after `http.idle_timeout_s` (bytes alone
//!   are no progress: HTTP/2 pings or a preface never reset the clock, only
//!   a request does);
//! - once half the slots are taken, an address that already holds
//!   `http.max_connections_per_address` connections gets no more: a
//!   further one is closed at once (below that, a burst from one client or
//!   a reverse proxy is served in full);
//! - when all `http.max_connections` slots are taken, the oldest idle
//!   connection of the address holding the most idle ones is closed to make
//!   room (IPv6 peers counted by their /64); a
//!   new connection waits only when every slot is busy with a request
//!   (which `http.request_timeout_s` bounds).
//!
//! This module owns the bookkeeping only; `http::Server` applies it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

/// One connection's activity, shared by its serving task and the registry.
#[derive(Debug)]
pub(crate) struct Activity {
    /// Woken when this connection becomes idle (a waiting newcomer may
    /// now evict it).
    idle: Arc<tokio::sync::Notify>,
    born: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `born` when the connection last became idle.
    idle_since_ms: AtomicU64,
    /// Cancelled to close the connection.
    pub(crate) close: CancellationToken,
}

impl Activity {
    fn new(idle: Arc<tokio::sync::Notify>) -> Activity {
        Activity {
            idle,
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            close: CancellationToken::new(),
        }
    }

    /// A request started; the guard marks it finished when dropped.
    pub(crate) fn request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        RequestGuard(self.clone())
    }

    /// How long the connection has been idle (`None`: busy).
    pub(crate) fn idle_for(&self, now: Instant) -> Option<std::time::Duration> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since =
            self.born + std::time::Duration::from_millis(self.idle_since_ms.load(Ordering::SeqCst));
        Some(now.saturating_duration_since(since))
    }
}

/// Marks a request finished when dropped (the response has been produced).
pub(crate) struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        let elapsed = u64::try_from(activity.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.idle_since_ms.store(elapsed, Ordering::SeqCst);
        if activity.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            activity.idle.notify_waiters();
        }
    }
}

/// A response body that keeps its request in flight until it is written
/// out (or dropped, when the connection goes).
pub(crate) struct Guarded<B> {
    inner: B,
    _guard: RequestGuard,
}

impl<B> Guarded<B> {
    pub(crate) fn new(inner: B, guard: RequestGuard) -> Guarded<B> {
        Guarded {
            inner,
            _guard: guard,
        }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// What to do with a connection just accepted.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Serve it; the registry holds it until [`Registry::leave`].
    Admitted { id: u64, activity: Arc<Activity> },
    /// Its address already holds its share: close it.
    AddressFull,
    /// Every slot is busy with a request: wait for one to end, then ask again.
    Full,
}

struct Entry {
    ip: IpAddr,
    activity: Arc<Activity>,
}

/// The connections being served.
pub(crate) struct Registry {
    max_connections: usize,
    max_per_address: usize,
    inner: Mutex<Inner>,
    /// Notified whenever a connection leaves or becomes idle.
    pub(crate) freed: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    per_address: HashMap<IpAddr, usize>,
}

impl Registry {
    pub(crate) fn new(max_connections: usize, max_per_address: usize) -> Registry {
        Registry {
            max_connections: max_connections.max(1),
            max_per_address: if max_per_address == 0 {
                usize::MAX
            } else {
                max_per_address
            },
            inner: Mutex::new(Inner::default()),
            freed: Arc::new(tokio::sync::Notify::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves counts that are still
        // consistent (every update is a single step), so go on.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decides on a connection from `ip`, evicting an idle one if every
    /// slot is taken. IPv6 peers are counted by their /64.
    pub(crate) fn admit(&self, ip: IpAddr) -> Admission {
        let ip = super::throttle::client_key(ip);
        let mut inner = self.lock();
        let under_pressure = inner.entries.len() * 2 >= self.max_connections;
        if under_pressure
            && inner.per_address.get(&ip).copied().unwrap_or(0) >= self.max_per_address
        {
            return Admission::AddressFull;
        }
        if inner.entries.len() >= self.max_connections {
            match inner.idle_victim() {
                Some(victim) => inner.remove(victim),
                None => return Admission::Full,
            }
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let activity = Arc::new(Activity::new(self.freed.clone()));
        inner.entries.insert(
            id,
            Entry {
                ip,
                activity: activity.clone(),
            },
        );
        *inner.per_address.entry(ip).or_default() += 1;
        Admission::Admitted { id, activity }
    }

    /// The connection `id` is gone (a no-op for one already evicted).
    pub(crate) fn leave(&self, id: u64) {
        self.lock().remove(id);
        self.freed.notify_waiters();
    }

    /// Connections held now (for the unit tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

impl Inner {
    /// The oldest idle connection of the address holding the most idle
    /// ones: a flood from one peer pays before anyone else does.
    fn idle_victim(&self) -> Option<u64> {
        let now = Instant::now();
        let mut idle_per_address: HashMap<IpAddr, usize> = HashMap::new();
        let idle: Vec<(u64, IpAddr, std::time::Duration)> = self
            .entries
            .iter()
            .filter_map(|(id, e)| e.activity.idle_for(now).map(|d| (*id, e.ip, d)))
            .collect();
        for (_, ip, _) in &idle {
            *idle_per_address.entry(*ip).or_default() += 1;
        }
        idle.into_iter()
            .max_by_key(|(id, ip, idle_for)| (idle_per_address[ip], *idle_for, u64::MAX - id))
            .map(|(id, _, _)| id)
    }

    fn remove(&mut self, id: u64) {
        if let Some(entry) = self.entries.remove(&id) {
            entry.activity.close.cancel();
            if let Some(n) = self.per_address.get_mut(&entry.ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_address.remove(&entry.ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn admitted(a: Admission) -> (u64, Arc<Activity>) {
        match a {
            Admission::Admitted { id, activity } => (id, activity),
            other => panic!("expected admission, got {other:?}"),
        }
    }

    #[test]
    fn one_address_gets_its_share_and_no_more_once_slots_are_scarce() {
        let r = Registry::new(8, 2);
        let (_, _) = admitted(r.admit(ip(2)));
        let (second, _) = admitted(r.admit(ip(2)));
        // Plenty of room: a burst from one client is served.
        let (third, _) = admitted(r.admit(ip(2)));
        let (fourth, _) = admitted(r.admit(ip(2)));
        // Half the slots taken: no more for this address, others still get in.
        assert!(matches!(r.admit(ip(2)), Admission::AddressFull));
        admitted(r.admit(ip(1)));
        r.leave(third);
        r.leave(fourth);
        r.leave(second);
        admitted(r.admit(ip(2)));
    }

    #[test]
    fn a_full_house_evicts_an_idle_connection_of_the_heaviest_address() {
        let r = Registry::new(3, 0);
        let (_, quiet) = admitted(r.admit(ip(1)));
        let (_, flood_a) = admitted(r.admit(ip(2)));
        let (_, flood_b) = admitted(r.admit(ip(2)));
        let (_, newcomer) = admitted(r.admit(ip(3)));
        assert!(!quiet.close.is_cancelled(), "the lone peer keeps its slot");
        assert!(flood_a.close.is_cancelled(), "the flood's oldest goes");
        assert!(!flood_b.close.is_cancelled());
        assert!(!newcomer.close.is_cancelled());
        assert_eq!(r.len(), 3);
    }

    #[tokio::test]
    async fn a_connection_that_becomes_idle_wakes_a_waiting_newcomer() {
        let r = Registry::new(1, 0);
        let (_, a) = admitted(r.admit(ip(1)));
        let guard = a.request();
        assert!(matches!(r.admit(ip(2)), Admission::Full));
        let freed = r.freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        drop(guard);
        tokio::time::timeout(std::time::Duration::from_secs(1), freed)
            .await
            .expect("woken when the request ended");
        admitted(r.admit(ip(2)));
    }

    #[test]
    fn ipv6_peers_are_counted_by_their_64() {
        let r = Registry::new(8, 2);
        let v6 = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
        for n in 1..=4 {
            admitted(r.admit(v6(n)));
        }
        assert!(matches!(r.admit(v6(99)), Admission::AddressFull));
    }

    #[test]
    fn busy_connections_are_never_evicted() {
        let r = Registry::new(2, 0);
        let (_, a) = admitted(r.admit(ip(1)));
        let (_, b) = admitted(r.admit(ip(2)));
        let _ga = a.request();
        let gb = b.request();
        assert!(matches!(r.admit(ip(3)), Admission::Full));
        assert!(b.idle_for(Instant::now()).is_none());
        drop(gb);
        assert!(b.idle_for(Instant::now()).is_some());
        admitted(r.admit(ip(3)));
        assert!(b.close.is_cancelled());
        assert!(!a.close.is_cancelled());
    }
}
