//! Admission of new requests under overload (`[sip.overload]`).
//!
//! A new request is worth serving only if it can be answered before its
//! client retransmits (T1, RFC 3261 §17.1.2.2): past that, each request
//! costs its retransmissions too, and goodput collapses. So a request's
//! wait is budgeted (`max_queue_delay_ms`) from its arrival (the kernel's
//! receive timestamp, see `transport::rxstamp`) and checked twice:
//!
//! - at admission, by the transaction layer: its age so far plus the wait
//!   it can expect before its answer, by Little's law (requests in
//!   progress over the rate they leave). Refusing it there costs one
//!   stateless 503, no transaction, no task, no agent time;
//! - when an agent takes it (`ServerTransaction::shed`): its actual wait,
//!   a backstop for what the estimate missed.
//!
//! "In progress" spans the agents' queues and the durable commit after
//! them: under overload the group commit shares the cores, and a request
//! that waits there is as late as one that waits in a queue.
//!
//! Invariant: `queued` counts the admitted requests neither answered nor
//! handed to a remote peer (`ServerTransaction::taken`: the gateway's
//! adapter, a cluster node, whose waits are not this node's load); each
//! `ServerTransaction` enters once and leaves once.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Below this many queued requests the estimate is not trusted: a burst
/// after an idle spell meets a rate measured while idle, and the backstop
/// handles what waits too long.
const MIN_QUEUED: usize = 64;
/// The rate requests leave is sampled over this window.
const WINDOW: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub(super) struct Admission {
    queued: AtomicUsize,
    taken: AtomicU64,
    rate: Mutex<Rate>,
}

#[derive(Debug)]
struct Rate {
    since: Instant,
    taken_then: u64,
    /// Requests taken per second, over the last full window.
    per_s: f64,
}

impl Admission {
    pub(super) fn new() -> Admission {
        Admission {
            queued: AtomicUsize::new(0),
            taken: AtomicU64::new(0),
            rate: Mutex::new(Rate {
                since: Instant::now(),
                taken_then: 0,
                per_s: 0.0,
            }),
        }
    }

    /// A request was queued for the agents.
    pub(super) fn enter(&self) {
        self.queued.fetch_add(1, Ordering::Relaxed);
    }

    /// A request in progress was answered, dropped, or handed to a peer.
    pub(super) fn leave(&self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
        self.taken.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// The wait a request admitted now can expect before its answer; zero
    /// while few are in progress or their rate is not known.
    pub(super) fn expected_wait(&self, now: Instant) -> Duration {
        let queued = self.queued();
        let mut rate = self.rate.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(rate.since);
        if elapsed >= WINDOW {
            let taken = self.taken.load(Ordering::Relaxed);
            let answered = taken - rate.taken_then;
            // A rate is only as good as its sample: after an idle spell the
            // window is long and nearly empty, and dividing the burst that
            // follows by it would promise minutes of wait. Unknown instead
            // (the agents' check still applies).
            rate.per_s = if elapsed <= WINDOW * 2 && answered >= MIN_QUEUED as u64 {
                answered as f64 / elapsed.as_secs_f64()
            } else {
                0.0
            };
            rate.taken_then = taken;
            rate.since = now;
        }
        if queued < MIN_QUEUED || rate.per_s <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((queued as f64 / rate.per_s).min(3600.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Little's law over the rate of the last window: 400 queued, taken at
    /// 2,000/s, is 200 ms of wait; a short queue or an unknown rate is none.
    #[tokio::test(start_paused = true)]
    async fn the_expected_wait_is_the_queue_over_the_rate_taken() {
        let a = Admission::new();
        for _ in 0..400 {
            a.enter();
        }
        // No window has passed: the rate is unknown.
        assert_eq!(a.expected_wait(Instant::now()), Duration::ZERO);
        tokio::time::advance(WINDOW).await;
        // Nothing taken in the first window: unknown still.
        assert_eq!(a.expected_wait(Instant::now()), Duration::ZERO);
        for _ in 0..200 {
            a.leave();
            a.enter();
        }
        tokio::time::advance(WINDOW).await;
        // 200 in 100 ms: 2,000/s, and 400 queued.
        let w = a.expected_wait(Instant::now());
        assert!((w.as_secs_f64() - 0.2).abs() < 1e-6, "{w:?}");
        // Between windows the rate holds and the queue is read live.
        for _ in 0..200 {
            a.leave();
        }
        let w = a.expected_wait(Instant::now());
        assert!((w.as_secs_f64() - 0.1).abs() < 1e-6, "{w:?}");
        for _ in 0..137 {
            a.leave();
        }
        assert_eq!(a.queued(), 63);
        assert_eq!(
            a.expected_wait(Instant::now()),
            Duration::ZERO,
            "below MIN_QUEUED"
        );
    }

    /// After an idle spell, a burst is not measured against the trickle
    /// answered during it: too small or too long a sample is no rate.
    #[tokio::test(start_paused = true)]
    async fn a_burst_after_idle_is_not_promised_the_idle_rate() {
        let a = Admission::new();
        // Ten seconds with five requests answered, then a burst of 100.
        for _ in 0..5 {
            a.enter();
            a.leave();
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..100 {
            a.enter();
        }
        assert_eq!(a.expected_wait(Instant::now()), Duration::ZERO);
        // A full window with only 10 answered: still unknown.
        for _ in 0..10 {
            a.leave();
        }
        tokio::time::advance(WINDOW).await;
        assert_eq!(a.expected_wait(Instant::now()), Duration::ZERO);
    }
}
