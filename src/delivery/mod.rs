//! Delivery to the CPIM adapter (design §4): notifies and terminations go
//! through a durable queue in the store, ordered per (watcher, target),
//! retried with capped exponential backoff, removed only on a 2xx from the
//! adapter, and resumed after a restart.
//!
//! Invariant: a record is staged into the in-memory queue (in the order the
//! owning task produces them) before its batch commits, but is sent only
//! once `release` marks it durable — so per-stream order is the staging
//! order and nothing unacknowledged-as-durable ever reaches the adapter.
//!
//! The queue is bounded (issue 17, `[cpim] adapter_max_pending`): while the
//! adapter is down it grows to the limit and no further. At the limit a
//! presence notify — one that changes no subscription state — is
//! superseded by the next presence notify of its stream: the older one is
//! dropped from memory and deleted from the store in the batch of the
//! change that needed the room, so the adapter gets the latest state of
//! every stream, in order, once it is back. Nothing else is ever dropped
//! (a `pending` or `terminated` notify, an unsubscribe), nor reordered. A
//! change that nothing can make room for is refused by
//! [`Adapter::try_stage`] ([`QueueFull`], a 503 for the caller).

mod lanes;
use crate::cpim::{CpimResponse, SubscribeRequest, UnsubscribeRequest};
use crate::store::{Batch, Store, StoreError, Tree};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One queued call to the adapter, as stored (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub seq: u64,
    /// `watcher\ntarget`: the ordering domain.
    pub stream: String,
    /// Path under `adapter_url`: `notify` or `unsubscribe`.
    pub path: String,
    pub payload: serde_json::Value,
    /// When it was queued (UNIX ms), for the age of the oldest pending
    /// delivery; records of earlier versions have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at_ms: Option<i64>,
}

impl DeliveryRecord {
    /// A stored record.
    pub fn decode(v: &[u8]) -> Result<DeliveryRecord, StoreError> {
        serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
            tree: Tree::Deliveries.name(),
            reason: e.to_string(),
        })
    }
}

/// Retry policy.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

/// Why a direct call to the adapter failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AdapterError {
    #[error("adapter unreachable: {0}")]
    Unreachable(String),
    #[error("adapter answered HTTP {0}")]
    Status(u16),
    #[error("adapter answered with an invalid body: {0}")]
    Invalid(String),
}

/// [`Adapter::try_stage`] refused a change: the queue is at its limit and
/// no pending notify can be superseded. Nothing was added to the batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the adapter queue is full ({depth} pending, limit {limit}) and nothing in it can be coalesced"
)]
pub struct QueueFull {
    pub depth: usize,
    pub limit: usize,
    /// When to try again: the longest retry interval, when the queue has
    /// surely been tried once more.
    pub retry_after_s: u32,
}

impl From<QueueFull> for crate::reject::Reject {
    /// 503 with Retry-After (RFC 3261 §21.5.4): the change is not taken.
    fn from(f: QueueFull) -> Self {
        crate::reject::Reject::Unavailable {
            retry_after: Some(f.retry_after_s),
        }
    }
}

/// Concurrent deliveries at most, over all streams: a long outage leaves a
/// worker per stream, and when the adapter answers again they must not all
/// open a connection at once.
const MAX_POSTS_IN_FLIGHT: usize = 64;

/// A queued delivery as held in memory: the payload serialized once.
struct Item {
    seq: u64,
    path: Box<str>,
    body: Bytes,
    queued_at_ms: i64,
    /// A notify that changes no subscription state (no `state`): the next
    /// such notify of its stream supersedes it.
    presence_only: bool,
    durable: bool,
    /// Superseded, and deleted from the store in the batch of this staged
    /// record: gone once that batch is durable, kept if it fails. Not
    /// counted in the depth.
    superseded_by: Option<u64>,
}

impl Item {
    /// A record read from the store (durable by definition), and its
    /// stream; `loaded_at` stands in for a missing queue time.
    fn stored(rec: DeliveryRecord, loaded_at: i64) -> (String, Item) {
        let item = Item {
            seq: rec.seq,
            presence_only: presence_only(&rec.path, &rec.payload),
            body: Bytes::from(
                serde_json::to_vec(&rec.payload)
                    .expect("serializes")
                    .into_boxed_slice(),
            ),
            path: rec.path.into(),
            queued_at_ms: rec.queued_at_ms.unwrap_or(loaded_at),
            durable: true,
            superseded_by: None,
        };
        (rec.stream, item)
    }
}

#[derive(Default)]
struct StreamQueue {
    items: VecDeque<Item>,
    running: bool,
}

impl StreamQueue {
    /// Marks every pending presence notify of this stream that a later
    /// one supersedes, on behalf of the record `by` (staged after them when
    /// `then_presence` says it is a presence notify itself), and adds their
    /// deletion to `batch`. Superseded means: durable (its put is applied,
    /// so the delete cannot come first), and the next unsuperseded item
    /// after it is a presence notify that is durable or is `by` itself (a
    /// notify whose batch might fail supersedes nothing). Returns how many.
    fn coalesce(
        &mut self,
        stream: &str,
        by: u64,
        then_presence: bool,
        batch: &mut Batch,
        out: &mut Vec<(String, u64)>,
    ) -> usize {
        let mut next_supersedes = then_presence;
        let mut n = 0;
        for it in self.items.iter_mut().rev() {
            if it.superseded_by.is_some() {
                continue;
            }
            if next_supersedes && it.presence_only && it.durable {
                it.superseded_by = Some(by);
                batch.delete(Tree::Deliveries, it.seq.to_be_bytes().to_vec());
                out.push((stream.to_owned(), it.seq));
                n += 1;
            } else {
                next_supersedes = it.presence_only && it.durable;
            }
        }
        n
    }

    fn position(&self, seq: u64) -> Option<usize> {
        self.items.iter().position(|i| i.seq == seq)
    }
}

/// The queue; one lock.
#[derive(Default)]
struct Queue {
    streams: HashMap<String, StreamQueue>,
    /// Pending items not superseded: what the limit counts.
    depth: usize,
    /// A pass over every stream found nothing to coalesce, and nothing was
    /// queued, made durable or restored since (spares refusals the pass).
    exhausted: bool,
}

struct Inner {
    store: Arc<dyn Store>,
    client: reqwest::Client,
    adapter_url: String,
    next_seq: AtomicU64,
    /// In a cluster (issue 18): this node's lane of the sequence space,
    /// `seq ≡ lane (mod SEQ_LANES)`; `None`: one node, plain increments.
    lane: std::sync::OnceLock<u64>,
    queue: Mutex<Queue>,
    max_pending: usize,
    backoff: Backoff,
    posts: tokio::sync::Semaphore,
    failures: AtomicU64,
    coalesced: AtomicU64,
    refused: AtomicU64,
    over_limit: AtomicU64,
}

/// The adapter client and the durable queue. Cheap to clone.
#[derive(Clone)]
pub struct Adapter {
    inner: Arc<Inner>,
}

/// A record staged in a batch, to be released after the commit.
#[derive(Debug)]
pub struct Staged {
    stream: String,
    seq: u64,
    /// Records this one superseded (deleted in the same batch).
    coalesced: Vec<(String, u64)>,
}

/// The queue's counters, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueueStats {
    /// Pending deliveries.
    pub depth: usize,
    pub limit: usize,
    /// Presence notifies superseded by a later one of their stream.
    pub coalesced: u64,
    /// Changes refused by [`Adapter::try_stage`] at the limit.
    pub refused: u64,
    /// Changes queued beyond the limit by [`Adapter::stage`], which cannot
    /// refuse.
    pub over_limit: u64,
    /// How long the oldest pending delivery has waited.
    pub oldest_age: Duration,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A notify that changes no subscription state.
fn presence_only(path: &str, payload: &serde_json::Value) -> bool {
    path == "notify" && payload.get("state").is_none_or(serde_json::Value::is_null)
}

/// A change being staged: what is known before the queue is locked.
struct Change {
    stream: String,
    path: String,
    body: Bytes,
    presence_only: bool,
    queued_at_ms: i64,
    /// The stored record without its `seq` (given under the lock), as the
    /// JSON `serde` writes for [`DeliveryRecord`]: `,"stream":…}`.
    stored_tail: Vec<u8>,
}

impl Change {
    fn new(watcher: &str, target: &str, path: &str, payload: &serde_json::Value) -> Change {
        let stream = format!("{watcher}\n{target}");
        let body = serde_json::to_vec(payload).expect("serializes");
        let queued_at_ms = now_ms();
        let json = |s: &str| serde_json::to_string(s).expect("serializes");
        let mut stored_tail = format!(
            ",\"stream\":{},\"path\":{},\"payload\":",
            json(&stream),
            json(path)
        )
        .into_bytes();
        stored_tail.extend_from_slice(&body);
        stored_tail.extend_from_slice(format!(",\"queued_at_ms\":{queued_at_ms}}}").as_bytes());
        Change {
            stream,
            path: path.to_owned(),
            // Exactly its length: it is held until the adapter takes it.
            body: Bytes::from(body.into_boxed_slice()),
            presence_only: presence_only(path, payload),
            queued_at_ms,
            stored_tail,
        }
    }

    fn stored(&self, seq: u64) -> Vec<u8> {
        let mut v = format!("{{\"seq\":{seq}").into_bytes();
        v.extend_from_slice(&self.stored_tail);
        v
    }
}

/// Lanes of the delivery sequence space: at most this many cluster
/// members (`[cluster] members`, validated).
pub const SEQ_LANES: u64 = 64;

/// The queue's bound when none is configured (`[cpim] adapter_max_pending`).
pub const DEFAULT_MAX_PENDING: usize = 100_000;

impl Adapter {
    /// Loads queued deliveries from the store and starts sending them,
    /// bounded by [`DEFAULT_MAX_PENDING`].
    pub fn open(
        store: Arc<dyn Store>,
        adapter_url: &str,
        timeout: Duration,
        backoff: Backoff,
    ) -> Result<Adapter, StoreError> {
        Self::open_bounded(store, adapter_url, timeout, backoff, DEFAULT_MAX_PENDING)
    }

    /// As [`Adapter::open`], bounded by `max_pending`. What the store holds
    /// is kept even beyond it (a lowered limit, a store of a version
    /// without a bound): nothing queued is dropped.
    pub fn open_bounded(
        store: Arc<dyn Store>,
        adapter_url: &str,
        timeout: Duration,
        backoff: Backoff,
        max_pending: usize,
    ) -> Result<Adapter, StoreError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| StoreError::Io(e.to_string()))?;
        let mut q = Queue::default();
        let mut max_seq = 0;
        let loaded_at = now_ms();
        store.visit(Tree::Deliveries, &mut |_, v| {
            let rec = DeliveryRecord::decode(v)?;
            max_seq = max_seq.max(rec.seq);
            q.depth += 1;
            // Keys are big-endian sequence numbers: visit order is seq order.
            let (stream, item) = Item::stored(rec, loaded_at);
            q.streams.entry(stream).or_default().items.push_back(item);
            Ok(())
        })?;
        if q.depth > max_pending {
            tracing::warn!(
                pending = q.depth,
                limit = max_pending,
                "the stored adapter queue is over its limit; it is kept, and drains first"
            );
        }
        let names: Vec<String> = q.streams.keys().cloned().collect();
        let a = Adapter {
            inner: Arc::new(Inner {
                store,
                client,
                adapter_url: adapter_url.trim_end_matches('/').to_owned(),
                next_seq: AtomicU64::new(max_seq + 1),
                lane: std::sync::OnceLock::new(),
                queue: Mutex::new(q),
                max_pending,
                backoff,
                posts: tokio::sync::Semaphore::new(MAX_POSTS_IN_FLIGHT),
                failures: AtomicU64::new(0),
                coalesced: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                over_limit: AtomicU64::new(0),
            }),
        };
        for s in names {
            a.kick(&s);
        }
        Ok(a)
    }

    /// A queue whose deliveries all fail (its adapter URL is a closed
    /// loopback port) and are retried only hourly: the queue alone, for
    /// tests and measurements of it.
    #[doc(hidden)]
    pub fn detached(store: Arc<dyn Store>, max_pending: usize) -> Result<Adapter, StoreError> {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| StoreError::Io(e.to_string()))?;
        let hourly = Backoff {
            initial: Duration::from_secs(3600),
            max: Duration::from_secs(3600),
        };
        let url = format!("http://{closed}/cpim");
        Self::open_bounded(store, &url, Duration::from_secs(1), hourly, max_pending)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.inner.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queued deliveries not yet acknowledged by the adapter.
    pub fn depth(&self) -> usize {
        self.lock().depth
    }

    /// Failed delivery attempts so far.
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    /// The queue's level and counters.
    pub fn stats(&self) -> QueueStats {
        let q = self.lock();
        let oldest = q
            .streams
            .values()
            .filter_map(|s| s.items.iter().find(|i| i.superseded_by.is_none()))
            .map(|i| i.queued_at_ms)
            .min();
        QueueStats {
            depth: q.depth,
            limit: self.inner.max_pending,
            coalesced: self.inner.coalesced.load(Ordering::Relaxed),
            refused: self.inner.refused.load(Ordering::Relaxed),
            over_limit: self.inner.over_limit.load(Ordering::Relaxed),
            oldest_age: oldest.map_or(Duration::ZERO, |t| {
                Duration::from_millis((now_ms() - t).max(0) as u64)
            }),
        }
    }

    /// Adds a delivery to `batch` and to the in-memory queue (not sent
    /// until [`Adapter::release`]). At the limit, pending presence notifies
    /// are coalesced to make room (see the module); when nothing can be,
    /// the delivery is queued all the same, beyond the limit (counted as
    /// `over_limit`): for callers that cannot refuse the change. Callers
    /// that can should use [`Adapter::try_stage`].
    pub fn stage(
        &self,
        batch: &mut Batch,
        watcher: &str,
        target: &str,
        path: &str,
        payload: serde_json::Value,
    ) -> Staged {
        let change = Change::new(watcher, target, path, &payload);
        let Ok(staged) = self.enqueue(batch, change, |q| {
            let n = self.inner.over_limit.fetch_add(1, Ordering::Relaxed) + 1;
            // The first, then every 1,000th: an expiry storm is one story.
            if n == 1 || n % 1000 == 0 {
                tracing::warn!(
                    pending = q.depth,
                    limit = self.inner.max_pending,
                    over_limit_total = n,
                    "adapter queue over its limit: a change that cannot be refused is queued anyway"
                );
            }
            Ok::<(), std::convert::Infallible>(())
        });
        staged
    }

    /// As [`Adapter::stage`], but at the limit with nothing to coalesce the
    /// change is refused: nothing is added to `batch` or the queue, and the
    /// caller answers 503 (`Reject::from(QueueFull)`) without committing.
    pub fn try_stage(
        &self,
        batch: &mut Batch,
        watcher: &str,
        target: &str,
        path: &str,
        payload: serde_json::Value,
    ) -> Result<Staged, QueueFull> {
        let change = Change::new(watcher, target, path, &payload);
        self.enqueue(batch, change, |q| {
            self.inner.refused.fetch_add(1, Ordering::Relaxed);
            Err(QueueFull {
                depth: q.depth,
                limit: self.inner.max_pending,
                retry_after_s: self.inner.backoff.max.as_secs().clamp(1, 3600) as u32,
            })
        })
    }

    /// Queues `change`, making room at the limit; when nothing can make
    /// room, `full` decides: refuse (`Err`), or queue beyond the limit.
    fn enqueue<E>(
        &self,
        batch: &mut Batch,
        change: Change,
        full: impl FnOnce(&Queue) -> Result<(), E>,
    ) -> Result<Staged, E> {
        let mut q = self.lock();
        let seq = self.next_seq();
        let coalesced = match self.make_room(&mut q, &change, seq, batch) {
            Some(c) => c,
            None => {
                full(&q)?;
                Vec::new()
            }
        };
        Ok(Self::push(&mut q, change, seq, coalesced, batch))
    }

    /// Below the limit: nothing to do. At it: supersedes what can be, first
    /// in the change's own stream, then anywhere; `None` if nothing can.
    fn make_room(
        &self,
        q: &mut Queue,
        change: &Change,
        seq: u64,
        batch: &mut Batch,
    ) -> Option<Vec<(String, u64)>> {
        let mut out = Vec::new();
        if q.depth < self.inner.max_pending {
            return Some(out);
        }
        let mut n = q.streams.get_mut(&change.stream).map_or(0, |s| {
            s.coalesce(&change.stream, seq, change.presence_only, batch, &mut out)
        });
        if n == 0 && !q.exhausted {
            for (name, s) in q.streams.iter_mut() {
                if *name != change.stream {
                    n += s.coalesce(name, seq, false, batch, &mut out);
                }
            }
            q.exhausted = n == 0;
        }
        if n == 0 {
            return None;
        }
        q.depth -= n;
        self.inner.coalesced.fetch_add(n as u64, Ordering::Relaxed);
        Some(out)
    }

    fn push(
        q: &mut Queue,
        change: Change,
        seq: u64,
        coalesced: Vec<(String, u64)>,
        batch: &mut Batch,
    ) -> Staged {
        batch.put(
            Tree::Deliveries,
            seq.to_be_bytes().to_vec(),
            change.stored(seq),
        );
        q.depth += 1;
        q.exhausted = false;
        q.streams
            .entry(change.stream.clone())
            .or_default()
            .items
            .push_back(Item {
                seq,
                path: change.path.into(),
                body: change.body,
                queued_at_ms: change.queued_at_ms,
                presence_only: change.presence_only,
                durable: false,
                superseded_by: None,
            });
        Staged {
            stream: change.stream,
            seq,
            coalesced,
        }
    }

    /// The batch holding `staged` is durable: send; what they superseded
    /// is gone.
    pub fn release(&self, staged: Vec<Staged>) {
        let mut kick = Vec::new();
        {
            let mut q = self.lock();
            q.exhausted = false;
            for s in staged {
                for (stream, seq) in &s.coalesced {
                    Self::forget(&mut q, stream, *seq);
                }
                if let Some(sq) = q.streams.get_mut(&s.stream) {
                    if let Some(i) = sq.items.iter_mut().find(|i| i.seq == s.seq) {
                        i.durable = true;
                    }
                    kick.push(s.stream);
                }
            }
        }
        for s in kick {
            self.kick(&s);
        }
    }

    /// Drops a superseded item whose deletion is durable.
    fn forget(q: &mut Queue, stream: &str, seq: u64) {
        let Some(sq) = q.streams.get_mut(stream) else {
            return;
        };
        if let Some(p) = sq.position(seq) {
            sq.items.remove(p);
        }
        if sq.items.is_empty() && !sq.running {
            q.streams.remove(stream);
        }
    }

    /// The batch failed: forget what was staged in it, and keep what it
    /// would have superseded.
    pub fn abandon(&self, staged: Vec<Staged>) {
        let mut q = self.lock();
        q.exhausted = false;
        for s in staged {
            for (stream, seq) in &s.coalesced {
                let restored = q.streams.get_mut(stream).and_then(|sq| {
                    let p = sq.position(*seq)?;
                    let it = &mut sq.items[p];
                    (it.superseded_by == Some(s.seq)).then(|| it.superseded_by = None)
                });
                if restored.is_some() {
                    q.depth += 1;
                }
            }
            let Some(sq) = q.streams.get_mut(&s.stream) else {
                continue;
            };
            let removed = sq.position(s.seq).and_then(|p| sq.items.remove(p));
            if sq.items.is_empty() && !sq.running {
                q.streams.remove(&s.stream);
            }
            if removed.is_some() {
                q.depth -= 1;
            }
        }
    }

    /// Starts the worker of a stream unless it runs.
    fn kick(&self, stream: &str) {
        {
            let mut q = self.lock();
            let Some(sq) = q.streams.get_mut(stream) else {
                return;
            };
            if sq.running || !sq.items.front().is_some_and(|i| i.durable) {
                return;
            }
            sq.running = true;
        }
        let me = self.clone();
        let stream = stream.to_owned();
        tokio::spawn(async move { me.work(stream).await });
    }

    /// Delivers a stream's items one at a time, in order: the front item
    /// until the adapter takes it, retried after a delay that doubles up to
    /// the backoff's maximum; then the next.
    async fn work(self, stream: String) {
        let mut delay = self.inner.backoff.initial;
        loop {
            let (seq, path, body) = {
                let mut q = self.lock();
                let Some(sq) = q.streams.get_mut(&stream) else {
                    return;
                };
                match sq.items.front() {
                    Some(i) if i.durable => (i.seq, i.path.clone(), i.body.clone()),
                    _ => {
                        sq.running = false;
                        if sq.items.is_empty() {
                            q.streams.remove(&stream);
                        }
                        return;
                    }
                }
            };
            let sent = {
                let _permit = self.inner.posts.acquire().await;
                self.post_bytes(&path, body).await
            };
            match sent {
                Ok(_) => {
                    let mut b = Batch::default();
                    b.delete(Tree::Deliveries, seq.to_be_bytes().to_vec());
                    if let Err(e) = self.inner.store.commit(b).await {
                        // The store logged its failure once; the record
                        // stays and is sent again after a restart (at least
                        // once, docs/cpim-api.md).
                        tracing::debug!(error = %e, "cannot remove a delivered record");
                    }
                    let mut q = self.lock();
                    // By its seq: a record superseded meanwhile may be gone.
                    let removed = q.streams.get_mut(&stream).and_then(|sq| {
                        let p = sq.position(seq)?;
                        sq.items.remove(p)
                    });
                    if removed.is_some_and(|i| i.superseded_by.is_none()) {
                        q.depth -= 1;
                    }
                    delay = self.inner.backoff.initial;
                }
                Err(e) => {
                    self.inner.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, retry_in = ?delay, "adapter delivery failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.inner.backoff.max);
                }
            }
        }
    }

    async fn post_bytes(&self, path: &str, body: Bytes) -> Result<reqwest::Response, AdapterError> {
        let url = format!("{}/{path}", self.inner.adapter_url);
        let r = self
            .inner
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| AdapterError::Unreachable(e.to_string()))?;
        if r.status().is_success() {
            Ok(r)
        } else {
            Err(AdapterError::Status(r.status().as_u16()))
        }
    }

    async fn post<T: Serialize>(&self, path: &str, req: &T) -> Result<CpimResponse, AdapterError> {
        let body = serde_json::to_vec(req).expect("serializes");
        let r = self.post_bytes(path, Bytes::from(body)).await?;
        r.json::<CpimResponse>()
            .await
            .map_err(|e| AdapterError::Invalid(e.to_string()))
    }

    /// A direct CPIM subscribe to the adapter (SIP → CPIM, seed §7.1).
    pub async fn subscribe(&self, req: &SubscribeRequest) -> Result<CpimResponse, AdapterError> {
        self.post("subscribe", req).await
    }

    /// A direct CPIM unsubscribe to the adapter.
    pub async fn unsubscribe(
        &self,
        req: &UnsubscribeRequest,
    ) -> Result<CpimResponse, AdapterError> {
        self.post("unsubscribe", req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;
    use serde_json::json;

    fn adapter(store: Arc<dyn Store>, max: usize) -> Adapter {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Adapter::detached(store, max).unwrap()
    }

    fn note(n: u32) -> serde_json::Value {
        json!({"watcher": "w", "target": "t", "presence": {"body": n.to_string()}})
    }

    /// Stages and commits one delivery; what the store then holds.
    async fn put(
        a: &Adapter,
        store: &MemStore,
        w: &str,
        payload: serde_json::Value,
    ) -> Result<(), QueueFull> {
        let mut b = Batch::default();
        let s = a.try_stage(&mut b, w, "t", "notify", payload)?;
        store.commit(b).await.unwrap();
        a.release(vec![s]);
        Ok(())
    }

    fn stored(store: &MemStore) -> Vec<DeliveryRecord> {
        store
            .scan(Tree::Deliveries)
            .unwrap()
            .iter()
            .map(|(_, v)| DeliveryRecord::decode(v).unwrap())
            .collect()
    }

    /// The record staged is what `serde` writes for it (the stored form
    /// is assembled without re-serializing the payload).
    #[tokio::test]
    async fn stored_form_is_the_records_json() {
        let store = Arc::new(MemStore::default());
        let a = adapter(store.clone(), 10);
        let payload = json!({"watcher": "pres:a\"b@x", "state": "pending", "n": [1, 2]});
        let mut b = Batch::default();
        a.stage(&mut b, "pres:a\"b@x", "pres:t@y", "notify", payload.clone());
        let crate::store::Op::Put(_, k, v) = &b.ops[0] else {
            panic!("a put")
        };
        let rec = DeliveryRecord::decode(v).unwrap();
        assert_eq!(k, &rec.seq.to_be_bytes());
        assert_eq!(rec.payload, payload);
        assert_eq!(rec.stream, "pres:a\"b@x\npres:t@y");
        assert_eq!(v, &serde_json::to_vec(&rec).unwrap());
    }

    /// At the limit a presence notify supersedes the older ones of its
    /// stream (memory and store), a state change is never superseded and
    /// never lets an older notify be dropped across it, and a change that
    /// nothing can make room for is refused by `try_stage` and taken over
    /// the limit by `stage`.
    #[tokio::test]
    async fn bounded_coalesced_then_refused() {
        let store = Arc::new(MemStore::default());
        let a = adapter(store.clone(), 3);
        put(&a, &store, "a", note(1)).await.unwrap();
        put(&a, &store, "a", json!({"state": "pending", "n": 2}))
            .await
            .unwrap();
        put(&a, &store, "a", note(3)).await.unwrap();
        assert_eq!(a.depth(), 3);
        // Stream a is full of things that cannot go: 1 is followed by a
        // state change, 3 is the newest. 4 supersedes 3.
        put(&a, &store, "a", note(4)).await.unwrap();
        let ns: Vec<_> = stored(&store)
            .iter()
            .map(|r| r.payload["presence"]["body"].clone())
            .collect();
        assert_eq!(ns, [json!("1"), serde_json::Value::Null, json!("4")]);
        assert_eq!(a.stats().coalesced, 1);
        // Another stream, nothing to supersede anywhere: refused.
        let e = put(&a, &store, "b", note(5)).await.unwrap_err();
        assert_eq!((e.depth, e.limit), (3, 3));
        assert_eq!(
            crate::reject::Reject::from(e).code(),
            503,
            "the caller answers 503"
        );
        assert_eq!(a.stats().refused, 1);
        assert_eq!(stored(&store).len(), 3, "nothing was written");
        // A state change at the limit is not a presence notify: refused too.
        assert!(
            put(&a, &store, "a", json!({"state": "terminated"}))
                .await
                .is_err()
        );
        // `stage` cannot refuse: over the limit, counted.
        let mut b = Batch::default();
        let s = a.stage(&mut b, "b", "t", "notify", note(6));
        store.commit(b).await.unwrap();
        a.release(vec![s]);
        assert_eq!(a.depth(), 4);
        assert_eq!(a.stats().over_limit, 1);
        assert_eq!(stored(&store).len(), 4);
    }

    /// Room is also made in other streams, and a failed batch gives back
    /// what it superseded.
    #[tokio::test]
    async fn coalesces_elsewhere_and_abandon_restores() {
        let store = Arc::new(MemStore::default());
        let a = adapter(store.clone(), 3);
        for n in 1..=3 {
            put(&a, &store, "a", note(n)).await.unwrap();
        }
        // A new stream at the limit: a's 1 and 2 are superseded by 3.
        let mut b = Batch::default();
        let s = a.try_stage(&mut b, "b", "t", "notify", note(9)).unwrap();
        assert_eq!(a.depth(), 2);
        assert_eq!(b.len(), 3, "two deletions and the new record");
        // The batch fails: a's records are back, the new one is gone.
        a.abandon(vec![s]);
        assert_eq!(a.depth(), 3);
        assert_eq!(stored(&store).len(), 3);
        // Again, committed this time.
        put(&a, &store, "b", note(9)).await.unwrap();
        let ns: Vec<_> = stored(&store)
            .iter()
            .map(|r| (r.stream.clone(), r.payload["presence"]["body"].clone()))
            .collect();
        assert_eq!(
            ns,
            [
                ("a\nt".to_owned(), json!("3")),
                ("b\nt".to_owned(), json!("9"))
            ]
        );
        assert_eq!(a.depth(), 2);
        // A restart loads the same queue.
        let again = adapter(store.clone(), 3);
        assert_eq!(again.depth(), 2);
        assert!(again.stats().oldest_age < Duration::from_secs(60));
    }
}
