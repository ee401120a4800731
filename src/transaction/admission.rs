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
/// How much of the recent peak rate survives each window (see `Rate`).
const PEAK_DECAY: f64 = 0.8;

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
    /// The highest recent `per_s`, decaying by `PEAK_DECAY` per window.
    /// The queue drains at the agents' capacity, not at the rate of the
    /// last window: a window in which the group commit stalled (one slow
    /// flush) answers few and, alone, promised the whole queue seconds of
    /// wait. Measured at 7,000 dialogs/s, within capacity, such windows
    /// refused 20–1,500 of 35,000–70,000 requests (docs/performance.md,
    /// "Received on the reading task"). A lasting drop still shows within
    /// a few windows (a half after three).
    peak_per_s: f64,
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
                peak_per_s: 0.0,
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
            let windows = elapsed.as_secs_f64() / WINDOW.as_secs_f64();
            rate.peak_per_s = (rate.peak_per_s * PEAK_DECAY.powf(windows)).max(rate.per_s);
            rate.taken_then = taken;
            rate.since = now;
        }
        if queued < MIN_QUEUED || rate.per_s <= 0.0 {
            return Duration::ZERO;
        }
        let per_s = rate.per_s.max(rate.peak_per_s);
        Duration::from_secs_f64((queued as f64 / per_s).min(3600.0))
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

    /// One slow window (a stalled group commit) does not promise the queue
    /// its rate: the wait is measured against the recent peak, which
    /// decays, so that a lasting drop still counts within a few windows.
    #[tokio::test(start_paused = true)]
    async fn one_slow_window_does_not_set_the_rate() {
        let a = Admission::new();
        let window = |a: &Admission, taken: usize| {
            for _ in 0..taken {
                a.leave();
                a.enter();
            }
        };
        for _ in 0..400 {
            a.enter();
        }
        a.expected_wait(Instant::now());
        // 2,000 in a window: 20,000/s.
        window(&a, 2000);
        tokio::time::advance(WINDOW).await;
        let w = a.expected_wait(Instant::now());
        assert!((w.as_secs_f64() - 0.02).abs() < 1e-6, "{w:?}");
        // A stalled window answers 80 (800/s, 500 ms for 400 queued): the
        // peak, decayed to 16,000/s, still sets the wait.
        window(&a, 80);
        tokio::time::advance(WINDOW).await;
        let w = a.expected_wait(Instant::now());
        assert!((w.as_secs_f64() - 0.025).abs() < 1e-6, "{w:?}");
        // Fifteen more windows at 800/s (1.5 s): the peak has decayed below
        // it, and the wait is the queue over 800/s again.
        for _ in 0..15 {
            window(&a, 80);
            tokio::time::advance(WINDOW).await;
            a.expected_wait(Instant::now());
        }
        let w = a.expected_wait(Instant::now());
        assert!((w.as_secs_f64() - 0.5).abs() < 1e-6, "{w:?}");
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
