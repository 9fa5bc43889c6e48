//! Online guessing of the operator token: failed console sign-ins and
//! failed bearer tokens, counted per client address. The first
//! [`Policy::free_failures`] failures cost nothing; after that each failure
//! makes the address wait [`Policy::first_delay`], doubling with every
//! further failure up to [`Policy::max_delay`], before its next attempt is
//! even checked (an attempt during the wait is answered 429 and not
//! counted). A success resets the address. Only the guessing address
//! waits: the operator elsewhere is never locked out.
//!
//! IPv6 clients are counted per /64 (one host usually has the whole
//! prefix); an IPv4 address mapped into IPv6 counts as itself. The table
//! is in memory, per process, and bounded: an address quiet for
//! [`Policy::forget_after`] starts afresh, and when the table is full the
//! address whose last failure is oldest is dropped. Time is an input
//! (`Instant`), so tests step it instead of sleeping.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many failures cost what.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    free_failures: u32,
    first_delay: Duration,
    max_delay: Duration,
    forget_after: Duration,
    max_addresses: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            free_failures: 5,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            forget_after: Duration::from_secs(3600),
            max_addresses: 10_000,
        }
    }
}

/// What became of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Granted,
    Denied,
    /// Not checked: the address must wait this long.
    TooSoon(Duration),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    not_before: Instant,
}

/// The failures per client address (see the module's documentation).
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    policy: Policy,
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

/// The address a client is counted under (failures here, connection
/// slots in `connections.rs`): IPv4 as it is (mapped addresses unmapped),
/// IPv6 by its /64, which one host usually holds whole.
pub(crate) fn client_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl Throttle {
    pub(crate) fn new(policy: Policy) -> Throttle {
        Throttle {
            policy,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Checks one attempt from `client` at `now`: `check` (the credential
    /// comparison) runs only if the address is not waiting, under the
    /// table's lock, so concurrent guesses from one address are counted
    /// one by one and none slips past the wait.
    pub(crate) fn attempt(
        &self,
        client: IpAddr,
        now: Instant,
        check: impl FnOnce() -> bool,
    ) -> Verdict {
        let key = client_key(client);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let current = entries
            .get(&key)
            .copied()
            .filter(|e| now.saturating_duration_since(e.last_failure) < self.policy.forget_after);
        if let Some(entry) = current {
            if now < entry.not_before {
                return Verdict::TooSoon(entry.not_before - now);
            }
        }
        if check() {
            entries.remove(&key);
            return Verdict::Granted;
        }
        let failures = current.map_or(0, |e| e.failures).saturating_add(1);
        let not_before = match failures.checked_sub(self.policy.free_failures + 1) {
            None => now,
            Some(extra) => now + self.delay(extra),
        };
        if !entries.contains_key(&key) && entries.len() >= self.policy.max_addresses {
            self.make_room(&mut entries, now);
        }
        entries.insert(
            key,
            Entry {
                failures,
                last_failure: now,
                not_before,
            },
        );
        Verdict::Denied
    }

    /// The wait after the `extra + 1`-th failure past the free ones.
    fn delay(&self, extra: u32) -> Duration {
        let factor = 2u32.checked_pow(extra.min(31)).unwrap_or(u32::MAX);
        self.policy
            .first_delay
            .checked_mul(factor)
            .map_or(self.policy.max_delay, |d| d.min(self.policy.max_delay))
    }

    /// Drops forgotten addresses, and the one with the oldest failure if
    /// that freed nothing.
    fn make_room(&self, entries: &mut HashMap<IpAddr, Entry>, now: Instant) {
        let forget_after = self.policy.forget_after;
        entries.retain(|_, e| now.saturating_duration_since(e.last_failure) < forget_after);
        if entries.len() >= self.policy.max_addresses {
            if let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.last_failure)
                .map(|(k, _)| *k)
            {
                entries.remove(&oldest);
            }
        }
    }

    /// How many addresses are counted now (for the unit tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `Retry-After` in whole seconds, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 9));

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn waits_grow_after_the_free_failures_and_are_capped() {
        let t = Throttle::new(Policy::default());
        let start = Instant::now();
        for _ in 0..5 {
            assert_eq!(t.attempt(A, start, || false), Verdict::Denied);
        }
        // The 6th failure is checked, then the address waits 1 s.
        assert_eq!(t.attempt(A, start, || false), Verdict::Denied);
        assert_eq!(t.attempt(A, start, || true), Verdict::TooSoon(secs(1)));
        // Attempts during the wait are not checked and not counted.
        let mut checked = false;
        assert_eq!(
            t.attempt(A, start + Duration::from_millis(500), || {
                checked = true;
                true
            }),
            Verdict::TooSoon(Duration::from_millis(500))
        );
        assert!(!checked, "the credential was checked during the wait");
        // Then 2, 4, 8, 16, 32, 60, 60 s.
        let mut now = start + secs(1);
        for wait in [2, 4, 8, 16, 32, 60, 60] {
            assert_eq!(t.attempt(A, now, || false), Verdict::Denied);
            assert_eq!(t.attempt(A, now, || true), Verdict::TooSoon(secs(wait)));
            now += secs(wait);
        }
        // Another address was never slowed down.
        assert_eq!(t.attempt(B, start, || true), Verdict::Granted);
    }

    #[test]
    fn a_success_resets_the_address_and_quiet_addresses_are_forgotten() {
        let t = Throttle::new(Policy::default());
        let start = Instant::now();
        for _ in 0..6 {
            t.attempt(A, start, || false);
        }
        assert_eq!(t.attempt(A, start + secs(1), || true), Verdict::Granted);
        assert!(t.is_empty());
        for _ in 0..6 {
            assert_eq!(t.attempt(A, start + secs(1), || false), Verdict::Denied);
        }
        assert_eq!(
            t.attempt(A, start + secs(1), || true),
            Verdict::TooSoon(secs(1))
        );
        // An hour without failures: five free failures again.
        let later = start + secs(1) + secs(3600);
        for _ in 0..6 {
            assert_eq!(t.attempt(A, later, || false), Verdict::Denied);
        }
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_itself() {
        let t = Throttle::new(Policy::default());
        let now = Instant::now();
        for host in 1..=6u16 {
            let address = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, host));
            t.attempt(address, now, || false);
        }
        let same_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 9, 9, 9, 9));
        assert!(matches!(
            t.attempt(same_64, now, || true),
            Verdict::TooSoon(_)
        ));
        let other_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
        assert_eq!(t.attempt(other_64, now, || true), Verdict::Granted);
        for _ in 0..6 {
            t.attempt(A, now, || false);
        }
        let mapped = match A {
            IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
            v6 => v6,
        };
        assert!(matches!(
            t.attempt(mapped, now, || true),
            Verdict::TooSoon(_)
        ));
    }

    #[test]
    fn the_table_is_bounded_and_drops_the_oldest_failure() {
        let t = Throttle::new(Policy {
            max_addresses: 3,
            ..Policy::default()
        });
        let start = Instant::now();
        let address = |n: u8| IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, n));
        for n in 1..=3 {
            for _ in 0..6 {
                t.attempt(address(n), start + secs(u64::from(n)), || false);
            }
        }
        assert_eq!(t.len(), 3);
        t.attempt(address(4), start + secs(10), || false);
        assert_eq!(t.len(), 3);
        // The oldest (1) was dropped; 2 and 3 still wait.
        assert_eq!(
            t.attempt(address(1), start + secs(4), || true),
            Verdict::Granted
        );
        assert!(matches!(
            t.attempt(address(3), start + secs(3), || true),
            Verdict::TooSoon(_)
        ));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }
}
