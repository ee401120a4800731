//! Executes the engine's effects: stanzas to the component connection of
//! their `from` domain, CPIM calls through a per-pair outbox (ordered,
//! coalescing, retried), and the state saved after every change (group
//! commit: a CPIM request from the gateway is answered once its effect is on
//! disk, which is what at-least-once delivery needs).

use crate::address::Address;
use crate::engine::{CpimJob, Effect, Engine, SubscribeOutcome};
use crate::gateway::{CpimError, GatewayClient};
use crate::metrics as m;
use crate::stanza;
use crate::store::Store;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, mpsc, watch};
use xmpp_parsers::stanza::Stanza;

pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Outgoing stanzas per component, queued while the connection is down.
pub const QUEUE: usize = 100_000;

#[derive(Default)]
struct Slot {
    pending: Option<CpimJob>,
    running: bool,
}

pub struct Shared {
    pub engine: Mutex<Engine>,
    gateway: GatewayClient,
    store: Store,
    outbound: HashMap<String, mpsc::Sender<Stanza>>,
    pub connected: HashMap<String, AtomicBool>,
    outbox: Mutex<HashMap<String, Slot>>,
    retry_initial: Duration,
    retry_max: Duration,
    wanted: AtomicU64,
    saved: watch::Sender<u64>,
    dirty: Notify,
}

fn job_key(job: &CpimJob) -> String {
    match job {
        // Subscribe and unsubscribe of one pair share a key: the later wins.
        CpimJob::Subscribe {
            watcher, target, ..
        }
        | CpimJob::Unsubscribe { watcher, target } => {
            format!("w2s\n{}\n{}", watcher.key(), target.key())
        }
        // A termination supersedes a notify still queued for the pair.
        CpimJob::Notify {
            watcher, target, ..
        }
        | CpimJob::Terminate {
            watcher, target, ..
        } => format!("s2w\n{}\n{}", watcher.key(), target.key()),
    }
}

impl Shared {
    pub fn new(
        engine: Engine,
        gateway: GatewayClient,
        store: Store,
        outbound: HashMap<String, mpsc::Sender<Stanza>>,
        retry_initial: Duration,
        retry_max: Duration,
    ) -> Arc<Shared> {
        let connected = outbound
            .keys()
            .map(|d| (d.clone(), AtomicBool::new(false)))
            .collect();
        Arc::new(Shared {
            engine: Mutex::new(engine),
            gateway,
            store,
            outbound,
            connected,
            outbox: Mutex::new(HashMap::new()),
            retry_initial,
            retry_max,
            wanted: AtomicU64::new(0),
            saved: watch::channel(0).0,
            dirty: Notify::new(),
        })
    }

    /// Runs `f` on the engine, applies its effects and schedules a save;
    /// returns `f`'s value and the save generation to wait for.
    pub fn with_engine<T>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Engine) -> (T, Vec<Effect>),
    ) -> (T, u64) {
        let (t, effects) = {
            let mut e = self.engine.lock().expect("engine lock");
            let r = f(&mut e);
            let (w, s) = e.counts();
            m::subscriptions(w, s);
            r
        };
        self.apply(effects);
        (t, self.mark_dirty())
    }

    pub fn apply(self: &Arc<Self>, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Send(p) => self.send(p),
                Effect::Cpim(job) => self.enqueue(job),
            }
        }
    }

    fn send(&self, p: xmpp_parsers::presence::Presence) {
        let Some(domain) = p.from.as_ref().map(|f| f.domain().as_str().to_owned()) else {
            return;
        };
        let t = stanza::type_name(&p.type_);
        match self.outbound.get(&domain) {
            Some(tx) => match tx.try_send(Stanza::Presence(p)) {
                Ok(()) => m::stanza("out", t),
                Err(_) => {
                    m::stanza("dropped", t);
                    tracing::warn!(%domain, "outgoing stanza queue full: stanza dropped (state is resent on reconnect)");
                }
            },
            None => tracing::warn!(%domain, "no component for this domain: stanza dropped"),
        }
    }

    // ----- persistence (group commit) -----

    fn mark_dirty(&self) -> u64 {
        let g = self.wanted.fetch_add(1, Ordering::SeqCst) + 1;
        self.dirty.notify_one();
        g
    }

    /// Waits until generation `g` is on disk (at most `limit`).
    pub async fn saved(&self, g: u64, limit: Duration) -> bool {
        let mut rx = self.saved.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|s| *s >= g))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The saving loop: at most one write per 20 ms, of the latest state.
    pub async fn persist_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.dirty.notified() => {}
                _ = stop.changed() => {}
            }
            let stopping = *stop.borrow();
            if !stopping {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.save_now().await;
            if stopping {
                return;
            }
        }
    }

    pub async fn save_now(&self) {
        let g = self.wanted.load(Ordering::SeqCst);
        let snapshot = self.engine.lock().expect("engine lock").state.clone();
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.save(&snapshot)).await {
            Ok(Ok(())) => {
                self.saved.send_if_modified(|s| {
                    let up = g > *s;
                    *s = (*s).max(g);
                    up
                });
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot save the state; retrying");
                m::store_error();
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.dirty.notify_one();
            }
            Err(e) => tracing::error!(error = %e, "save task failed"),
        }
    }

    // ----- CPIM outbox -----

    pub fn enqueue(self: &Arc<Self>, job: CpimJob) {
        let key = job_key(&job);
        let mut ob = self.outbox.lock().expect("outbox lock");
        let slot = ob.entry(key.clone()).or_default();
        slot.pending = Some(job);
        if !slot.running {
            slot.running = true;
            let me = self.clone();
            tokio::spawn(async move { me.worker(key).await });
        }
    }

    async fn worker(self: Arc<Self>, key: String) {
        let mut failures: u32 = 0;
        // Bounded: a job is given up after this many attempts (hours at the
        // longest delay); a newer job for the pair starts afresh.
        const MAX_ATTEMPTS: u32 = 200;
        loop {
            let job = {
                let mut ob = self.outbox.lock().expect("outbox lock");
                let slot = ob.get_mut(&key).expect("slot of a running worker");
                match slot.pending.take() {
                    Some(j) => j,
                    None => {
                        ob.remove(&key);
                        return;
                    }
                }
            };
            if self.execute(&job).await {
                failures = 0;
                continue;
            }
            failures += 1;
            if failures >= MAX_ATTEMPTS {
                tracing::error!(?job, "CPIM call given up after {MAX_ATTEMPTS} attempts");
                failures = 0;
                continue;
            }
            {
                let mut ob = self.outbox.lock().expect("outbox lock");
                let slot = ob.get_mut(&key).expect("slot of a running worker");
                if slot.pending.is_none() {
                    slot.pending = Some(job);
                }
            }
            let d = self
                .retry_initial
                .saturating_mul(1 << (failures - 1).min(16))
                .min(self.retry_max);
            tokio::time::sleep(d).await;
        }
    }

    /// One CPIM call; false = retry it later.
    async fn execute(self: &Arc<Self>, job: &CpimJob) -> bool {
        match job {
            CpimJob::Subscribe {
                watcher,
                target,
                duration,
            } => {
                let r = self
                    .gateway
                    .subscribe(&watcher.to_pres(), &target.to_pres(), *duration)
                    .await;
                let outcome = match &r {
                    Ok(a) if a.status == "success" || a.status == "indeterminate" => {
                        SubscribeOutcome::Accepted {
                            duration: a.duration.unwrap_or(*duration),
                        }
                    }
                    Ok(a) => match a.code {
                        // RFC 8048 §5.2.1: 403, 489, 603 refuse for good;
                        // 404 / 604 name no such user.
                        Some(code @ (403 | 404 | 489 | 603 | 604)) => {
                            SubscribeOutcome::Refused { code }
                        }
                        _ => SubscribeOutcome::Transient,
                    },
                    Err(_) => SubscribeOutcome::Transient,
                };
                log_call("subscribe", watcher, target, &r);
                let (w, t) = (watcher.clone(), target.clone());
                self.with_engine(|e| ((), e.subscribe_result(&w, &t, outcome, now_s())));
                // The engine schedules its own retry (refresh_at): done here.
                true
            }
            CpimJob::Unsubscribe { watcher, target } => {
                let r = self
                    .gateway
                    .unsubscribe(&watcher.to_pres(), &target.to_pres())
                    .await;
                log_call("unsubscribe", watcher, target, &r);
                !matches!(&r, Err(e) if e.retryable())
            }
            CpimJob::Notify {
                watcher,
                target,
                body,
            } => {
                let r = self
                    .gateway
                    .notify(&watcher.to_pres(), &target.to_pres(), body)
                    .await;
                log_call("notify", watcher, target, &r);
                !matches!(&r, Err(e) if e.retryable())
            }
            CpimJob::Terminate {
                watcher,
                target,
                reason,
            } => {
                let r = self
                    .gateway
                    .terminate(&watcher.to_pres(), &target.to_pres(), reason)
                    .await;
                log_call("notify", watcher, target, &r);
                !matches!(&r, Err(e) if e.retryable())
            }
        }
    }
}

fn log_call(
    op: &'static str,
    watcher: &Address,
    target: &Address,
    r: &Result<crate::gateway::CpimAnswer, CpimError>,
) {
    let outcome = match r {
        Ok(a) => {
            if a.status == "failure" {
                tracing::info!(op, watcher = %watcher.key(), target = %target.key(), code = ?a.code, reason = ?a.reason, "CPIM failure");
            } else {
                tracing::debug!(op, watcher = %watcher.key(), target = %target.key(), status = %a.status, "CPIM call");
            }
            match a.status.as_str() {
                "success" => "success",
                "indeterminate" => "indeterminate",
                _ => "failure",
            }
        }
        Err(e) => {
            tracing::warn!(op, watcher = %watcher.key(), target = %target.key(), error = %e, "CPIM call failed");
            if matches!(e, CpimError::Unreachable(_)) {
                "unreachable"
            } else {
                "error"
            }
        }
    };
    m::cpim_call(op, outcome);
}
