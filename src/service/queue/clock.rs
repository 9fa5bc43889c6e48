//! The queue's "now": the database's `now()`, moved forward by a skew that
//! is zero in production and that a test can advance, so that backoffs,
//! leases, `Retry-After` waits and 404 deadlines pass without the test
//! sleeping (River's SQL reads `coalesce(@now::timestamptz, now())` and its
//! tests inject the time for the same reason).
//!
//! The database stays the one clock of record: a skew only shifts it. Every
//! queue statement that *decides* by time (claim's "due", the lease it
//! sets, a heartbeat's renewal, a retry's `scheduled_at`, the rescuer's
//! "expired", the "due now" of an operator or webhook request, the 404
//! deadline) reads and writes `now() + make_interval(secs => $n)` with
//! [`Clock::skew_s`] as `$n`, so a zero skew is exactly `now()`. Timestamps of record (`enqueued_at`, `started_at`,
//! `finished_at`, an attempt's times) stay real; so does the cleaner's
//! retention, which measures records. This file never reads the machine's
//! clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// The queue's clock: the database's, plus a skew shared by every clone
/// (the runner, the API and the scheduler of one app see one time).
#[derive(Debug, Clone, Default)]
pub struct Clock {
    skew_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The database's own clock, unshifted: what production runs on.
    pub fn database() -> Clock {
        Clock::default()
    }

    /// Moves the queue's "now" forward by `by` for every holder of this
    /// clock. For tests: production never calls it. Time only moves
    /// forward, so a lease or a backoff written earlier never lengthens.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        // fetch_update never fails with a closure that always answers.
        let _ = self
            .skew_ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |skew| {
                Some(skew.saturating_add(ms))
            });
    }

    /// How far ahead of the database's `now()` the queue's time is.
    pub fn skew(&self) -> Duration {
        Duration::from_millis(self.skew_ms.load(Ordering::Acquire).max(0) as u64)
    }

    /// The skew in seconds, the parameter every `now()` of the queue's SQL
    /// is shifted by: `now() + make_interval(secs => $n)`.
    pub fn skew_s(&self) -> f64 {
        self.skew_ms.load(Ordering::Acquire) as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_skew_that_only_grows() {
        let clock = Clock::database();
        let seen_by_the_api = clock.clone();
        assert_eq!(clock.skew(), Duration::ZERO);
        assert_eq!(clock.skew_s(), 0.0);
        clock.advance(Duration::from_millis(1_500));
        seen_by_the_api.advance(Duration::from_secs(2));
        assert_eq!(clock.skew(), Duration::from_millis(3_500));
        assert_eq!(seen_by_the_api.skew_s(), 3.5);
        clock.advance(Duration::MAX);
        assert_eq!(clock.skew_s(), i64::MAX as f64 / 1000.0);
    }
}
