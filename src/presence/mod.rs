//! The internal presence agent (PA) for the presentities of `local_domains`:
//! registrar (RFC 3261 §10.3), event state compositor for PUBLISH (RFC
//! 3903), notifier for SUBSCRIBE/NOTIFY (RFC 6665, RFC 3856), composition,
//! soft-state expiry, persistence.
//!
//! One task (the agent) owns all presence state, so requests for a
//! presentity are applied strictly in arrival order and atomically. Each
//! request yields [`Effects`]: a store batch, the response, and NOTIFYs. The
//! response and the NOTIFYs go out only after the batch is durable (design
//! §6); at most one NOTIFY per subscription is in flight (RFC 6665 §4.2.2),
//! later changes are coalesced into the next one.

mod admin;
mod authorization;
pub use admin::Counts;
pub use esc::GrantError;
pub mod compose;
mod cpim_watchers;
mod driver;
use driver::Command;
mod esc;
mod notifier;
pub mod records;
mod registrar;

use crate::body::{PresenceDoc, PresenceFormat};
use crate::cpim::CpimResponse;
use crate::delivery::{Adapter, Staged};
use crate::dialog_table::{DialogOwner, DialogTable};
use crate::sip::{Message, Uri};
use crate::store::{Batch, Store, StoreError, Tree};
use crate::transaction::{IncomingRequest, ServerTransaction, TransactionLayer};
use crate::transport::Resolver;
use bytes::Bytes;
use compose::Published;
use records::{BindingRecord, PublicationRecord, SubscriptionRecord};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What the presence agent needs from `gateway.toml`.
#[derive(Debug, Clone)]
pub struct PresenceSettings {
    pub local_domains: Vec<String>,
    pub default_expires: u32,
    pub min_expires: u32,
    pub max_expires: u32,
    /// 200 (RFC 6665) or 202 (the seed flows).
    pub subscribe_success_code: u16,
    /// Our Contact for dialogs (`<sip:host:port>`).
    pub contact: String,
    /// The rule for watchers without one: per presentity domain, then global.
    pub default_policy: records::PolicyAction,
    pub domain_policies: HashMap<String, records::PolicyAction>,
    /// At most one NOTIFY per subscription per interval (RFC 3856 §6.10);
    /// 0 disables throttling.
    pub notify_min_interval_ms: u64,
    /// Live subscriptions per watcher; 0 = no limit.
    pub max_subscriptions_per_watcher: usize,
    /// Live subscriptions in all; 0 = no limit.
    pub max_subscriptions: usize,
}

/// Milliseconds since the UNIX epoch: the wall clock read once, then
/// advanced by the runtime's monotonic clock, so timers never see the wall
/// clock step and tests can run on tokio's paused clock.
pub fn now_ms() -> i64 {
    static BASE: std::sync::OnceLock<(i64, tokio::time::Instant)> = std::sync::OnceLock::new();
    let (wall, mono) = *BASE.get_or_init(|| {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        (wall, tokio::time::Instant::now())
    });
    wall + tokio::time::Instant::now()
        .saturating_duration_since(mono)
        .as_millis() as i64
}

/// The key of a presentity: `sip:user@host`, host lower-cased, escapes
/// normalised, no port or parameters (RFC 3261 §10.3 step 5).
pub fn aor_key(uri: &Uri) -> String {
    let mut u = uri.with_scheme(crate::sip::Scheme::Sip);
    u.port = None;
    u.to_string()
}

/// The `pres:` URI of a presentity key (RFC 3856 §6.2: entity).
pub fn entity_of(aor: &str) -> String {
    match aor.strip_prefix("sip:") {
        Some(rest) => format!("pres:{rest}"),
        None => aor.to_owned(),
    }
}

/// A subscription refused by a configured limit (`[presence]
/// max_subscriptions*`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LimitExceeded {
    #[error("the presence agent holds {limit} subscriptions, its limit")]
    Total { limit: usize },
    #[error("{watcher} holds {limit} subscriptions, the per-watcher limit")]
    PerWatcher { watcher: String, limit: usize },
}

impl LimitExceeded {
    /// The SIP status: capacity is temporary (503, RFC 3261 §21.5.4), a
    /// watcher's quota is a refusal (403, §21.4.4).
    pub(crate) fn status(&self) -> (u16, &'static str) {
        match self {
            LimitExceeded::Total { .. } => (503, "Service Unavailable"),
            LimitExceeded::PerWatcher { .. } => (403, "Forbidden"),
        }
    }
}

/// A request refused before anything changed: only its response.
pub(crate) fn refuse(st: &IncomingRequest, why: crate::reject::Reject) -> Effects {
    Effects {
        reply: Some(why.response(st)),
        ..Effects::default()
    }
}

/// The result of one request or event: applied in memory already, made
/// durable by the effects task before anything is sent.
#[derive(Default)]
pub(crate) struct Effects {
    pub batch: Batch,
    /// Adapter deliveries in `batch`, released once it is durable.
    pub staged: Vec<Staged>,
    /// The response to the request being handled: its transaction stays
    /// with the agent's loop, which sends this once `batch` is durable.
    pub reply: Option<Message>,
    pub notifies: Vec<OutNotify>,
    /// The presentity to reload from the store if the commit fails.
    pub aor: Option<String>,
}

pub(crate) struct OutNotify {
    pub sub_id: String,
    pub msg: Message,
    pub next_hop: Uri,
    /// The subscription ends with this NOTIFY.
    pub terminal: bool,
}

/// How a NOTIFY ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotifyOutcome {
    Delivered,
    /// 481/408/timeout/transport failure, or another failure without
    /// Retry-After: the subscription is removed (RFC 6665 §4.2.2, seed §9.5.1).
    Fatal,
    /// A failure with Retry-After: keep the subscription.
    Transient,
}

/// Handle to the running agent.
#[derive(Clone)]
pub struct PresenceAgent {
    tx: mpsc::UnboundedSender<Command>,
}

impl PresenceAgent {
    /// Loads every record from `store`, expires what expired while the
    /// gateway was down (with its NOTIFYs), re-arms every timer, and starts.
    pub fn start(
        settings: PresenceSettings,
        store: Arc<dyn Store>,
        layer: TransactionLayer,
        resolver: Arc<Resolver>,
        adapter: Adapter,
        dialogs: Arc<DialogTable>,
    ) -> Result<PresenceAgent, StoreError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut agent = Agent {
            settings,
            store,
            layer,
            resolver,
            adapter,
            dialogs,
            presentities: Default::default(),
            subs: Default::default(),
            timers: BinaryHeap::new(),
            self_tx: tx.clone(),
            winfo_partial: HashMap::new(),
            policies: HashMap::new(),
            publishers: HashMap::new(),
            per_watcher: Default::default(),
            watcher_hasher: std::hash::RandomState::new(),
            reloads: Default::default(),
            reload_failures: 0,
            timers_held_until: 0,
            reload_logged_at: i64::MIN / 2,
            reloads_not_logged: 0,
        };
        agent.load()?;
        tokio::spawn(agent.run(rx));
        Ok(PresenceAgent { tx })
    }

    /// Hands a REGISTER, PUBLISH or SUBSCRIBE to the agent.
    /// The shards this node holds changed (issue 18): forget the
    /// presentities `lost` accepts, take in those `taken` accepts; resolves
    /// once done (`Command::Shards`).
    pub async fn shards_changed(
        &self,
        taken: Box<dyn Fn(&str) -> bool + Send>,
        lost: Box<dyn Fn(&str) -> bool + Send>,
    ) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Command::Shards { taken, lost, done }).is_ok() {
            let _ = rx.await;
        }
    }

    pub fn handle(&self, st: ServerTransaction) {
        if let Err(mpsc::error::SendError(Command::Request(st))) =
            self.tx.send(Command::Request(Box::new(st)))
        {
            tokio::spawn(async move {
                let resp = crate::reject::Reject::Unavailable { retry_after: None }.response(&*st);
                let _ = st.respond(resp).await;
            });
        }
    }

    /// A CPIM watcher subscribes to a local presentity (`aor`); served here
    /// without a SIP hop. `watcher`/`target` are kept as the adapter sent them.
    pub async fn cpim_subscribe(
        &self,
        watcher: &str,
        target: &str,
        aor: &str,
        duration: Option<u32>,
        trans_id: &str,
    ) -> CpimResponse {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Command::CpimSubscribe {
            watcher: watcher.to_owned(),
            target: target.to_owned(),
            aor: aor.to_owned(),
            duration,
            trans_id: trans_id.to_owned(),
            reply,
        });
        rx.await.unwrap_or_else(|_| {
            crate::reject::Reject::Unavailable { retry_after: None }.cpim(trans_id)
        })
    }

    pub async fn cpim_unsubscribe(
        &self,
        watcher: &str,
        target: &str,
        trans_id: &str,
    ) -> CpimResponse {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Command::CpimUnsubscribe {
            watcher: watcher.to_owned(),
            target: target.to_owned(),
            trans_id: trans_id.to_owned(),
            reply,
        });
        rx.await.unwrap_or_else(|_| {
            crate::reject::Reject::Unavailable { retry_after: None }.cpim(trans_id)
        })
    }

    /// The composed document of a local presentity, and its PIDF rendering.
    pub async fn fetch(&self, aor: &str) -> Option<(PresenceDoc, Bytes)> {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Command::Fetch {
            aor: aor.to_owned(),
            reply,
        });
        rx.await.ok()
    }

    /// The rules of `presentity` (AOR key) and its default.
    pub async fn policies(
        &self,
        presentity: &str,
    ) -> (Vec<(String, records::PolicyAction)>, records::PolicyAction) {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Command::Policies {
            presentity: presentity.to_owned(),
            reply,
        });
        rx.await
            .unwrap_or((Vec::new(), records::PolicyAction::Confirm))
    }

    /// Sets or removes a rule; existing subscriptions follow at once.
    /// Resolves once the change is durable (false if the store failed).
    pub async fn set_policy(
        &self,
        presentity: &str,
        watcher: &str,
        action: Option<records::PolicyAction>,
    ) -> bool {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Command::SetPolicy {
            presentity: presentity.to_owned(),
            watcher: watcher.to_owned(),
            action,
            reply,
        });
        rx.await.unwrap_or(false)
    }

    /// Runs `f` on the agent task; `None` if the agent has stopped.
    async fn inspect<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Agent) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Command::Inspect(Box::new(move |a| {
            let _ = tx.send(f(a));
        })));
        rx.await.ok()
    }
}

/// One subscription in memory.
pub(crate) struct Sub {
    pub rec: SubscriptionRecord,
    pub in_flight: bool,
    pub dirty: bool,
    /// When the last NOTIFY was generated (0: none yet).
    pub last_sent: i64,
    /// A throttle timer is armed.
    pub throttled: bool,
}

#[derive(Default)]
pub(crate) struct Presentity {
    pub bindings: Vec<BindingRecord>,
    pub publications: Vec<(PublicationRecord, PresenceDoc)>,
    /// Subscriptions to the presence package (ids shared with `Agent::subs`).
    pub watchers: BTreeSet<Arc<str>>,
    /// Subscriptions to its watcher information (`presence.winfo`).
    pub winfo: BTreeSet<Arc<str>>,
    /// The composed document and its renderings, until the next change.
    pub cache: Option<(PresenceDoc, Vec<(PresenceFormat, Bytes)>)>,
    /// The AOR key, shared by the records of its subscriptions (one copy
    /// per presentity instead of one per watcher).
    pub aor: Option<Arc<str>>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKey {
    // Boxed text, not `String`: one heap entry per live subscription, and
    // 8 bytes less each (issue 4).
    Binding(Box<str>),
    Publication(Box<str>),
    Subscription(Arc<str>),
    /// The throttle interval of a subscription ended (RFC 3856 §6.10).
    Throttle(Arc<str>),
}

/// What a winfo subscription's next NOTIFY must carry (RFC 3858 §4.2).
#[derive(Debug)]
pub(crate) enum WinfoPending {
    /// The watchers that changed since the last NOTIFY sent.
    Partial(Vec<crate::body::winfo::WatcherEntry>),
    /// Full state: the last NOTIFY may not have reached the subscriber.
    Full,
}

pub(crate) struct Agent {
    pub settings: PresenceSettings,
    pub store: Arc<dyn Store>,
    pub layer: TransactionLayer,
    pub resolver: Arc<Resolver>,
    pub adapter: Adapter,
    /// The router's dialog table: every SIP subscription held here is in it
    /// as [`DialogOwner::Presence`] (kept by `add_sub`/`remove_sub`/`load`).
    pub dialogs: Arc<DialogTable>,
    pub presentities: crate::maps::FastMap<String, Presentity>,
    /// Boxed: a bucket is then 24 bytes instead of ~200, so the table's
    /// spare capacity (up to half of it after growing) and the copy made
    /// while it grows cost little (issue 4: memory per subscription).
    pub subs: crate::maps::FastMap<Arc<str>, Box<Sub>>,
    pub timers: BinaryHeap<Reverse<(i64, TimerKey)>>,
    pub self_tx: mpsc::UnboundedSender<Command>,
    /// Watcherinfo state waiting for a winfo subscription's next NOTIFY;
    /// none: nothing changed since the last one (a NOTIFY sent anyway, for
    /// a refresh, carries full state).
    pub winfo_partial: HashMap<Arc<str>, WinfoPending>,
    /// Authorization rules by (presentity, watcher).
    pub policies: HashMap<(String, String), records::PolicyAction>,
    /// Who may PUBLISH for a presentity besides itself: presentity AOR →
    /// granted publisher AORs (`esc.rs`; never the watch policy).
    pub publishers: HashMap<String, BTreeSet<String>>,
    /// Live subscriptions per watcher, for `max_subscriptions_per_watcher`,
    /// keyed by a 64-bit hash of `SubscriptionRecord::watcher` (no copy of
    /// the URI per watcher; a collision would only make two watchers share
    /// one count).
    pub per_watcher: crate::maps::FastMap<u64, u32>,
    pub watcher_hasher: std::hash::RandomState,
    /// Reloads asked for after failed commits (`driver.rs`).
    pub reloads: Arc<std::sync::atomic::AtomicU64>,
    /// Reloads that failed in a row.
    pub reload_failures: u32,
    /// No timer fires before this (ms since the epoch): set by a reload
    /// after a failed commit (`driver.rs`).
    pub timers_held_until: i64,
    /// When a reload was last logged (ms), and reloads since.
    pub reload_logged_at: i64,
    pub reloads_not_logged: u64,
}

pub(crate) use crate::store::codec::{decode, encode};

impl Agent {
    /// Reads the state from the store (startup). See [`Agent::reload`].
    fn load(&mut self) -> Result<(), StoreError> {
        let regs = self.store.scan(Tree::Registrations)?;
        self.load_with(regs)
    }

    /// Reloads the state after a failed commit. Nothing is cleared unless
    /// the store can be read: sled refuses reads too once a write has
    /// failed (measured on a full disk), and a reload cut short would
    /// leave the agent without its state. The subscriptions are streamed
    /// (their count can be large), so they are read once without keeping
    /// anything first.
    pub(crate) fn reload_state(&mut self) -> Result<(), StoreError> {
        let regs = self.store.scan(Tree::Registrations)?;
        for t in [Tree::Publications, Tree::Policies, Tree::Publishers] {
            self.store.visit(t, &mut |_, _| Ok(()))?;
        }
        self.store.visit(Tree::Subscriptions, &mut |_, _| Ok(()))?;
        self.load_with(regs)
    }

    fn load_with(&mut self, regs: crate::store::Records) -> Result<(), StoreError> {
        self.presentities.clear();
        self.subs.clear();
        self.dialogs.clear_owner(DialogOwner::Presence);
        self.per_watcher.clear();
        self.timers.clear();
        self.policies.clear();
        self.publishers.clear();
        self.absorb_with(regs, &|_| true)?;
        tracing::info!(
            presentities = self.presentities.len(),
            subscriptions = self.subs.len(),
            "presence state loaded"
        );
        Ok(())
    }

    /// Adds the stored records of the presentities `mine` accepts, leaving
    /// everything already held as it is (a subscription already held keeps
    /// its in-memory state: a commit of it may be in flight). Returns the
    /// subscriptions added.
    pub(crate) fn absorb(
        &mut self,
        mine: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<Arc<str>>, StoreError> {
        let regs = self.store.scan(Tree::Registrations)?;
        self.absorb_with(regs, mine)
    }

    fn absorb_with(
        &mut self,
        regs: crate::store::Records,
        mine: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<Arc<str>>, StoreError> {
        for (_, v) in regs {
            let b: BindingRecord = decode(Tree::Registrations, &v)?;
            if !mine(&b.aor) {
                continue;
            }
            self.timers
                .push(Reverse((b.expires_at, TimerKey::Binding(b.key().into()))));
            self.presentities
                .entry(b.aor.clone())
                .or_default()
                .bindings
                .push(b);
        }
        for (_, v) in self.store.scan(Tree::Publications)? {
            let p: PublicationRecord = decode(Tree::Publications, &v)?;
            if !mine(&p.aor) {
                continue;
            }
            let doc = match esc::parse_body(&p.content_type, p.body.as_bytes()) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(aor = %p.aor, error = %e, "stored publication no longer parses; skipped");
                    continue;
                }
            };
            self.timers.push(Reverse((
                p.expires_at,
                TimerKey::Publication(p.key().into()),
            )));
            self.presentities
                .entry(p.aor.clone())
                .or_default()
                .publications
                .push((p, doc));
        }
        for (_, v) in self.store.scan(Tree::Policies)? {
            let p: records::PolicyRecord = decode(Tree::Policies, &v)?;
            if mine(&p.presentity) {
                self.policies.insert((p.presentity, p.watcher), p.action);
            }
        }
        // A store from before issue 14 has no grants: the tree is empty.
        for (_, v) in self.store.scan(Tree::Publishers)? {
            let g: records::PublisherRecord = decode(Tree::Publishers, &v)?;
            if mine(&g.presentity) {
                self.publishers
                    .entry(g.presentity)
                    .or_default()
                    .insert(g.publisher);
            }
        }
        let mut added = Vec::new();
        let store = self.store.clone();
        store.visit(Tree::Subscriptions, &mut |k, v| {
            let s = SubscriptionRecord::from_stored(k, v)?;
            if mine(&s.presentity) && !self.subs.contains_key(&*s.id) {
                added.push(s.id.clone());
                self.add_sub(s);
            }
            Ok(())
        })?;
        Ok(added)
    }

    /// Forgets every presentity `gone` accepts, with its watchers, policies
    /// and grants (a shard this node no longer holds, issue 18). Their
    /// timers find nothing when they fire.
    pub(crate) fn forget_presentities(&mut self, gone: &dyn Fn(&str) -> bool) {
        let aors: Vec<String> = self
            .presentities
            .keys()
            .filter(|a| gone(a))
            .cloned()
            .collect();
        for aor in aors {
            if let Some(p) = self.presentities.get(&aor) {
                let ids: Vec<Arc<str>> = p.watchers.iter().chain(p.winfo.iter()).cloned().collect();
                for id in ids {
                    self.remove_sub(&id);
                }
            }
            self.presentities.remove(&aor);
        }
        self.policies.retain(|(p, _), _| !gone(p));
        self.publishers.retain(|p, _| !gone(p));
    }

    /// The composed document of `aor` rendered as `format`.
    pub(crate) fn rendered(&mut self, aor: &str, format: PresenceFormat) -> Bytes {
        let p = self.presentities.entry(aor.to_owned()).or_default();
        if p.cache.is_none() {
            let published: Vec<Published> = p
                .publications
                .iter()
                .map(|(r, d)| Published {
                    modified_at: r.modified_at,
                    doc: d.clone(),
                })
                .collect();
            let doc = compose::compose(&entity_of(aor), &p.bindings, &published);
            p.cache = Some((doc, Vec::new()));
        }
        let (doc, renders) = p.cache.as_mut().expect("cache filled above");
        if let Some((_, b)) = renders.iter().find(|(f, _)| *f == format) {
            return b.clone();
        }
        let b = Bytes::from(doc.render(format));
        renders.push((format, b.clone()));
        b
    }

    /// The presentity changed: drop the cache and notify every watcher.
    pub(crate) fn changed(&mut self, aor: &str, fx: &mut Effects) {
        let watchers: Vec<Arc<str>> = match self.presentities.get_mut(aor) {
            Some(p) => {
                p.cache = None;
                p.watchers.iter().cloned().collect()
            }
            None => return,
        };
        for id in watchers {
            self.notify_or_defer(&id, fx);
        }
    }

    /// Starts holding a subscription: the subscription map, its
    /// presentity's index, the per-watcher count and its expiry timer.
    pub(crate) fn add_sub(&mut self, mut rec: SubscriptionRecord) {
        let id = rec.id.clone();
        self.timers.push(Reverse((
            rec.expires_at,
            TimerKey::Subscription(id.clone()),
        )));
        let p = self
            .presentities
            .entry(rec.presentity.to_string())
            .or_default();
        // One copy of the AOR per presentity, shared by its watchers.
        rec.presentity = p.aor.get_or_insert_with(|| rec.presentity.clone()).clone();
        if rec.event == records::Package::WatcherInfo {
            p.winfo.insert(id.clone());
        } else {
            p.watchers.insert(id.clone());
        }
        if rec.cpim.is_none() {
            // A SIP dialog: in-dialog requests reach it by dialog id.
            self.dialogs.insert(id.clone(), DialogOwner::Presence);
        }
        *self
            .per_watcher
            .entry(self.watcher_key(&rec.watcher))
            .or_default() += 1;
        let sub = Sub {
            rec,
            in_flight: false,
            dirty: false,
            last_sent: 0,
            throttled: false,
        };
        if let Some(old) = self.subs.insert(id, Box::new(sub)) {
            // Same id again (a CPIM re-subscribe is a refresh, not this):
            // the count follows the map.
            self.uncount(&old.rec.watcher);
        }
    }

    /// Stops holding a subscription (the inverse of [`Agent::add_sub`];
    /// stale timers are ignored when they fire). The caller stores the
    /// deletion and sends what the end implies.
    pub(crate) fn remove_sub(&mut self, id: &str) -> Option<Box<Sub>> {
        let sub = self.subs.remove(id)?;
        if sub.rec.cpim.is_none() {
            self.dialogs.remove(id);
        }
        if let Some(p) = self.presentities.get_mut(&*sub.rec.presentity) {
            p.watchers.remove(id);
            p.winfo.remove(id);
        }
        self.winfo_partial.remove(id);
        self.uncount(&sub.rec.watcher);
        Some(sub)
    }

    fn watcher_key(&self, watcher: &str) -> u64 {
        use std::hash::BuildHasher;
        self.watcher_hasher.hash_one(watcher)
    }

    fn uncount(&mut self, watcher: &str) {
        let key = self.watcher_key(watcher);
        if let Some(n) = self.per_watcher.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.per_watcher.remove(&key);
            }
        }
    }

    /// Whether one more subscription for `watcher` is within the limits.
    pub(crate) fn admit(&self, watcher: &str) -> Result<(), LimitExceeded> {
        let max = self.settings.max_subscriptions;
        if max > 0 && self.subs.len() >= max {
            return Err(LimitExceeded::Total { limit: max });
        }
        let limit = self.settings.max_subscriptions_per_watcher;
        let held = self
            .per_watcher
            .get(&self.watcher_key(watcher))
            .copied()
            .unwrap_or(0) as usize;
        if limit > 0 && held >= limit {
            return Err(LimitExceeded::PerWatcher {
                watcher: watcher.to_owned(),
                limit,
            });
        }
        Ok(())
    }

    /// Removes a presentity entry that no longer holds anything.
    /// Ends one piece of a presentity's soft state whose timer fired: a
    /// binding or a publication, keyed `aor\n…` in `tree`. `remove` takes
    /// it out of the presentity if it is still the one the timer was for
    /// (a refresh re-arms a later timer). Watchers then learn that the
    /// information is gone (OMA flow 2.2), and the deletion is stored.
    pub(crate) fn expire_soft_state(
        &mut self,
        tree: Tree,
        key: &str,
        fx: &mut Effects,
        remove: impl FnOnce(&mut Presentity) -> bool,
    ) {
        let Some((aor, _)) = key.split_once('\n') else {
            return;
        };
        let Some(p) = self.presentities.get_mut(aor) else {
            return;
        };
        if remove(p) {
            let aor = aor.to_owned();
            fx.batch.delete(tree, key.as_bytes().to_vec());
            self.changed(&aor, fx);
            self.gc(&aor);
        }
    }

    pub(crate) fn gc(&mut self, aor: &str) {
        if self.presentities.get(aor).is_some_and(|p| {
            p.bindings.is_empty()
                && p.publications.is_empty()
                && p.watchers.is_empty()
                && p.winfo.is_empty()
        }) {
            self.presentities.remove(aor);
        }
    }
}

/// The id of a CPIM watcher's subscription.
pub(crate) fn cpim_sub_id(watcher: &str, target: &str) -> String {
    format!("cpim;{watcher};{target}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every live subscription is one `Sub` (boxed) plus its text; issue 4
    /// budgets ~1 kB per subscription in all, so growth here is a
    /// regression to notice (docs/performance.md).
    #[test]
    fn subscription_in_memory_stays_compact() {
        assert!(std::mem::size_of::<Sub>() <= 192);
        assert!(std::mem::size_of::<(i64, TimerKey)>() <= 32);
    }
}
