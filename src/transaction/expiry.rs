//! Timers J and K (RFC 3261 §17.2.2, §17.1.2.2): how long a completed
//! non-INVITE transaction stays in its table to absorb retransmissions. One
//! queue and one task per timer and layer, not a task per transaction: at
//! thousands of transactions a second that is thousands fewer spawns and
//! sleeping tasks.
//!
//! Invariant: deadlines in the queue never decrease from front to back. Each
//! timer has one duration for every transaction of a layer (J = 64·T1, K =
//! T4, both over unreliable transports only) and each deadline is taken
//! under the queue's lock, so a FIFO is the whole timer.

use super::{Shared, shrunk_capacity};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// Transactions whose timer fires within this much of each other end in one
/// wake-up; J and K are minimums, so ending one a few milliseconds late only
/// absorbs retransmissions a little longer.
const COALESCE: Duration = Duration::from_millis(10);

/// A FIFO of transaction keys to remove from a table at their deadline.
pub(super) struct Expiry<K> {
    queue: Mutex<VecDeque<(Instant, K)>>,
    wake: tokio::sync::Notify,
    started: AtomicBool,
    /// Removes expired keys from their table.
    end: fn(&Shared, &mut Vec<K>),
}

impl<K: Send + 'static> Expiry<K> {
    pub(super) fn new(end: fn(&Shared, &mut Vec<K>)) -> Arc<Expiry<K>> {
        Arc::new(Expiry {
            queue: Mutex::new(VecDeque::new()),
            wake: tokio::sync::Notify::new(),
            started: AtomicBool::new(false),
            end,
        })
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, K)>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends `key` after `after` (the same duration at every call); the
    /// first call starts the reaper task on the current runtime (a layer
    /// lives on one runtime).
    pub(super) fn arm(self: &Arc<Self>, shared: &Arc<Shared>, after: Duration, key: K) {
        let was_empty = {
            let mut q = self.queue();
            let was_empty = q.is_empty();
            q.push_back((Instant::now() + after, key));
            was_empty
        };
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(reap(self.clone(), Arc::downgrade(shared)));
        } else if was_empty {
            self.wake.notify_one();
        }
    }

    /// The layer is gone: let the reaper see it and end.
    pub(super) fn stop(&self) {
        self.wake.notify_one();
    }
}

/// Ends the keys whose deadline has passed, oldest first; returns when the
/// layer is gone.
async fn reap<K: Send + 'static>(expiry: Arc<Expiry<K>>, shared: Weak<Shared>) {
    let mut due = Vec::new();
    loop {
        if shared.strong_count() == 0 {
            return;
        }
        let front = expiry.queue().front().map(|(deadline, _)| *deadline);
        match front {
            // A permit stored by `notify_one` before this wait is not lost.
            None => expiry.wake.notified().await,
            Some(deadline) if deadline > Instant::now() => {
                tokio::time::sleep_until(deadline + COALESCE).await
            }
            Some(_) => {
                let now = Instant::now();
                {
                    let mut q = expiry.queue();
                    while q.front().is_some_and(|(deadline, _)| *deadline <= now) {
                        due.extend(q.pop_front().map(|(_, key)| key));
                    }
                    if let Some(keep) = shrunk_capacity(q.len(), q.capacity()) {
                        q.shrink_to(keep);
                    }
                }
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                (expiry.end)(&shared, &mut due);
                due.clear();
                if shrunk_capacity(0, due.capacity()).is_some() {
                    due = Vec::new();
                }
            }
        }
    }
}
