//! Delivery to the CPIM adapter (design §4): notifies and terminations go
//! through a durable queue in the store, ordered per (watcher, target),
//! retried with capped exponential backoff, removed only on a 2xx from the
//! adapter, and resumed after a restart.
//!
//! Invariant: a record is staged into the in-memory queue (in the order the
//! owning task produces them) before its batch commits, but is sent only
//! once `release` marks it durable — so per-stream order is the staging
//! order and nothing unacknowledged-as-durable ever reaches the adapter.

use crate::cpim::{CpimResponse, SubscribeRequest, UnsubscribeRequest};
use crate::store::{Batch, Store, StoreError, Tree};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One queued call to the adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub seq: u64,
    /// `watcher\ntarget`: the ordering domain.
    pub stream: String,
    /// Path under `adapter_url`: `notify` or `unsubscribe`.
    pub path: String,
    pub payload: serde_json::Value,
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

struct Item {
    rec: DeliveryRecord,
    durable: bool,
}

#[derive(Default)]
struct StreamQueue {
    items: VecDeque<Item>,
    running: bool,
}

struct Inner {
    store: Arc<dyn Store>,
    client: reqwest::Client,
    adapter_url: String,
    next_seq: AtomicU64,
    streams: Mutex<HashMap<String, StreamQueue>>,
    backoff: Backoff,
    depth: AtomicUsize,
    failures: AtomicU64,
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
}

impl Adapter {
    /// Loads queued deliveries from the store and starts sending them.
    pub fn open(
        store: Arc<dyn Store>,
        adapter_url: &str,
        timeout: Duration,
        backoff: Backoff,
    ) -> Result<Adapter, StoreError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| StoreError::Io(e.to_string()))?;
        let mut streams: HashMap<String, StreamQueue> = HashMap::new();
        let mut max_seq = 0;
        let mut depth = 0;
        for (_, v) in store.scan(Tree::Deliveries)? {
            let rec: DeliveryRecord =
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    tree: Tree::Deliveries.name(),
                    reason: e.to_string(),
                })?;
            max_seq = max_seq.max(rec.seq);
            depth += 1;
            // Keys are big-endian sequence numbers: scan order is seq order.
            streams
                .entry(rec.stream.clone())
                .or_default()
                .items
                .push_back(Item { rec, durable: true });
        }
        let a = Adapter {
            inner: Arc::new(Inner {
                store,
                client,
                adapter_url: adapter_url.trim_end_matches('/').to_owned(),
                next_seq: AtomicU64::new(max_seq + 1),
                streams: Mutex::new(streams),
                backoff,
                depth: AtomicUsize::new(depth),
                failures: AtomicU64::new(0),
            }),
        };
        let names: Vec<String> = a.lock().keys().cloned().collect();
        for s in names {
            a.kick(&s);
        }
        Ok(a)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, StreamQueue>> {
        self.inner.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queued deliveries not yet acknowledged by the adapter.
    pub fn depth(&self) -> usize {
        self.inner.depth.load(Ordering::Relaxed)
    }

    /// Failed delivery attempts so far.
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    /// Adds a delivery to `batch` and to the in-memory queue (not sent
    /// until [`Adapter::release`]).
    pub fn stage(
        &self,
        batch: &mut Batch,
        watcher: &str,
        target: &str,
        path: &str,
        payload: serde_json::Value,
    ) -> Staged {
        let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
        let stream = format!("{watcher}\n{target}");
        let rec = DeliveryRecord {
            seq,
            stream: stream.clone(),
            path: path.to_owned(),
            payload,
        };
        batch.put(
            Tree::Deliveries,
            seq.to_be_bytes().to_vec(),
            serde_json::to_vec(&rec).expect("serializes"),
        );
        self.lock()
            .entry(stream.clone())
            .or_default()
            .items
            .push_back(Item {
                rec,
                durable: false,
            });
        self.inner.depth.fetch_add(1, Ordering::Relaxed);
        Staged { stream, seq }
    }

    /// The batch holding `staged` is durable: send.
    pub fn release(&self, staged: Vec<Staged>) {
        let mut kick = Vec::new();
        {
            let mut streams = self.lock();
            for s in staged {
                if let Some(q) = streams.get_mut(&s.stream) {
                    if let Some(i) = q.items.iter_mut().find(|i| i.rec.seq == s.seq) {
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

    /// The batch failed: forget what was staged in it.
    pub fn abandon(&self, staged: Vec<Staged>) {
        let mut streams = self.lock();
        for s in staged {
            if let Some(q) = streams.get_mut(&s.stream) {
                let before = q.items.len();
                q.items.retain(|i| i.rec.seq != s.seq);
                if q.items.len() != before {
                    self.inner.depth.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Starts the worker of a stream unless it runs.
    fn kick(&self, stream: &str) {
        {
            let mut streams = self.lock();
            let Some(q) = streams.get_mut(stream) else {
                return;
            };
            if q.running || !q.items.front().is_some_and(|i| i.durable) {
                return;
            }
            q.running = true;
        }
        let me = self.clone();
        let stream = stream.to_owned();
        tokio::spawn(async move { me.work(stream).await });
    }

    async fn work(self, stream: String) {
        let mut delay = self.inner.backoff.initial;
        loop {
            let front = {
                let mut streams = self.lock();
                let Some(q) = streams.get_mut(&stream) else {
                    return;
                };
                match q.items.front() {
                    Some(i) if i.durable => i.rec.clone(),
                    _ => {
                        q.running = false;
                        if q.items.is_empty() {
                            streams.remove(&stream);
                        }
                        return;
                    }
                }
            };
            match self.post(&front.path, &front.payload).await {
                Ok(_) => {
                    let mut b = Batch::default();
                    b.delete(Tree::Deliveries, front.seq.to_be_bytes().to_vec());
                    if let Err(e) = self.inner.store.commit(b).await {
                        tracing::error!(error = %e, "cannot remove a delivered record");
                    }
                    let mut streams = self.lock();
                    if let Some(q) = streams.get_mut(&stream) {
                        q.items.pop_front();
                    }
                    self.inner.depth.fetch_sub(1, Ordering::Relaxed);
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

    async fn post(
        &self,
        path: &str,
        payload: &serde_json::Value,
    ) -> Result<reqwest::Response, AdapterError> {
        let url = format!("{}/{path}", self.inner.adapter_url);
        let r = self
            .inner
            .client
            .post(&url)
            .json(payload)
            .send()
            .await
            .map_err(|e| AdapterError::Unreachable(e.to_string()))?;
        if r.status().is_success() {
            Ok(r)
        } else {
            Err(AdapterError::Status(r.status().as_u16()))
        }
    }

    /// A direct CPIM subscribe to the adapter (SIP → CPIM, seed §7.1).
    pub async fn subscribe(&self, req: &SubscribeRequest) -> Result<CpimResponse, AdapterError> {
        let r = self
            .post("subscribe", &serde_json::to_value(req).expect("serializes"))
            .await?;
        r.json::<CpimResponse>()
            .await
            .map_err(|e| AdapterError::Invalid(e.to_string()))
    }

    /// A direct CPIM unsubscribe to the adapter.
    pub async fn unsubscribe(
        &self,
        req: &UnsubscribeRequest,
    ) -> Result<CpimResponse, AdapterError> {
        let r = self
            .post(
                "unsubscribe",
                &serde_json::to_value(req).expect("serializes"),
            )
            .await?;
        r.json::<CpimResponse>()
            .await
            .map_err(|e| AdapterError::Invalid(e.to_string()))
    }
}
