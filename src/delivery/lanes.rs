//! The queue in a cluster (issue 18): sequence numbers in per-member lanes,
//! and the queue rebuilt from the store when the shards held change.

use super::{Adapter, DeliveryRecord, Item, SEQ_LANES, StreamQueue, now_ms};
use crate::store::{StoreError, Tree};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;

impl Adapter {
    /// Numbers deliveries from now on in `lane` of [`SEQ_LANES`] (a
    /// cluster member's index): sequence numbers, which are the records'
    /// keys, never collide between nodes, and follow the clock, so a
    /// stream written by one node and then by the node that took its shard
    /// over stays in order. Set once, before anything is staged.
    pub fn use_lane(&self, lane: u64) {
        let _ = self.inner.lane.set(lane % SEQ_LANES);
    }

    /// The next sequence number: the next in this node's lane at or after
    /// the current time in µs (× lanes), else plainly the next.
    pub(super) fn next_seq(&self) -> u64 {
        let Some(lane) = self.inner.lane.get().copied() else {
            return self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut cur = self.inner.next_seq.load(Ordering::Relaxed);
        loop {
            let floor = cur.max(now.saturating_mul(SEQ_LANES));
            let seq = floor + (lane + SEQ_LANES - floor % SEQ_LANES) % SEQ_LANES;
            match self.inner.next_seq.compare_exchange_weak(
                cur,
                seq + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return seq,
                Err(actual) => cur = actual,
            }
        }
    }

    /// The store's records changed under the queue (a cluster node took
    /// shards over or gave them up, issue 18): the queue becomes what the
    /// store holds for this node, in sequence order, plus what is staged
    /// and not yet durable (its batch decides). A stream's running worker
    /// keeps running (one worker per stream, so order holds); a record
    /// being posted when its shard left is delivered at least once.
    pub fn reload(&self) -> Result<(), StoreError> {
        let loaded_at = now_ms();
        let mut fresh: HashMap<String, VecDeque<Item>> = HashMap::new();
        let mut max_seq = 0;
        self.inner.store.visit(Tree::Deliveries, &mut |_, v| {
            let rec = DeliveryRecord::decode(v)?;
            max_seq = max_seq.max(rec.seq);
            let (stream, item) = Item::stored(rec, loaded_at);
            fresh.entry(stream).or_default().push_back(item);
            Ok(())
        })?;
        let names: Vec<String> = {
            let mut q = self.lock();
            let mut streams = HashMap::new();
            for (name, old) in q.streams.drain() {
                let mut items = fresh.remove(&name).unwrap_or_default();
                items.extend(old.items.into_iter().filter(|i| !i.durable));
                if !items.is_empty() || old.running {
                    streams.insert(
                        name,
                        StreamQueue {
                            items,
                            running: old.running,
                        },
                    );
                }
            }
            for (name, items) in fresh {
                streams.insert(
                    name,
                    StreamQueue {
                        items,
                        running: false,
                    },
                );
            }
            q.depth = streams
                .values()
                .flat_map(|s| s.items.iter())
                .filter(|i| i.superseded_by.is_none())
                .count();
            q.streams = streams;
            q.exhausted = false;
            q.streams.keys().cloned().collect()
        };
        self.inner
            .next_seq
            .fetch_max(max_seq + 1, Ordering::Relaxed);
        for s in names {
            self.kick(&s);
        }
        Ok(())
    }
}
