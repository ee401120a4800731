//! The CPIM ↔ SIP gateway (seed `000`/`001` §7, design §5).
//!
//! - CPIM → SIP (§7.2): a CPIM subscribe opens a SUBSCRIBE dialog towards
//!   the SIP domain, refreshed while the CPIM duration lasts; each NOTIFY
//!   becomes a CPIM notify to the adapter; unsubscribe sends Expires 0.
//! - SIP → CPIM (§7.1): a SUBSCRIBE to a `cpim_domains` presentity becomes
//!   a CPIM subscribe to the adapter; CPIM notifies from the adapter become
//!   NOTIFYs in every matching dialog.
//! - A CPIM subscribe for a local presentity is served by the presence
//!   agent directly.
//!
//! One task owns the gateway's dialogs; SIP transactions and adapter calls
//! run in spawned tasks that report back. Every change is durable before it
//! is acknowledged (SIP 2xx or CPIM success).

mod admin;
mod held;
pub mod records;

pub use admin::DialogCounts;

use crate::cpim::{
    self, CpimResponse, NotifyRequest, Presence, Status, SubscribeRequest, UnsubscribeRequest,
};
use crate::delivery::{Adapter, Staged};
use crate::dialog::{Dialog, dialog_id};
use crate::dialog_table::DialogTable;
use crate::presence::{PresenceAgent, aor_key, now_ms};
use crate::reject::Reject;
use crate::sip::{HeaderName, Message, Method, Scheme, SubState, SubscriptionState, Uri};
use crate::store::{Batch, Store, StoreError, Tree, codec};
use crate::transaction::{ServerTransaction, TransactionLayer, random_token};
use crate::transport::Resolver;
use held::{Held, Outstanding};
use records::{Direction, GatewayDialog};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What the gateway needs from `gateway.toml`.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub local_domains: Vec<String>,
    pub cpim_domains: Vec<String>,
    /// Scheme of From/To in SUBSCRIBEs the gateway sends (design §5).
    pub header_scheme: Scheme,
    pub contact: String,
    pub default_expires: u32,
    pub min_expires: u32,
    pub max_expires: u32,
}

/// Why an API request was refused before anything changed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unavailable(String),
}

enum Cmd {
    Subscribe(
        SubscribeRequest,
        oneshot::Sender<Result<CpimResponse, ApiError>>,
    ),
    Unsubscribe(
        UnsubscribeRequest,
        oneshot::Sender<Result<CpimResponse, ApiError>>,
    ),
    Notify(
        NotifyRequest,
        oneshot::Sender<Result<CpimResponse, ApiError>>,
    ),
    Sip(Box<ServerTransaction>),
    /// The final response (or failure) of a SUBSCRIBE the gateway sent.
    SubscribeDone {
        key: PendingKey,
        outcome: Result<Box<Message>, u16>,
    },
    /// The adapter's answer to a SIP watcher's SUBSCRIBE (§7.1).
    AdapterAnswered {
        st: Box<ServerTransaction>,
        id: String,
        outcome: Result<CpimResponse, String>,
        refresh: bool,
    },
    NotifyDone {
        id: String,
        ok: bool,
    },
    /// A read-only look for the admin views and metrics (`admin.rs`).
    Inspect(Box<dyn FnOnce(&mut Actor) + Send>),
    /// A commit failed: undo what its change did in memory, so that memory
    /// says what the store says (run on the actor's task).
    Repair(Box<dyn FnOnce(&mut Actor) + Send>),
}

/// A SUBSCRIBE the gateway sent, by Call-ID and our tag.
type PendingKey = (String, String);

struct Pending {
    watcher: String,
    target: String,
    trans_id: String,
    request: Message,
    cpim_until: i64,
    reply: Option<oneshot::Sender<Result<CpimResponse, ApiError>>>,
    /// An unsubscribe: state goes whatever the answer.
    unsubscribe: bool,
    /// Set when a NOTIFY created the dialog before the 2xx (RFC 6665 §4.1.2.4).
    early_id: Option<String>,
}

struct Entry {
    rec: GatewayDialog,
    /// SIP → CPIM: a NOTIFY is in flight; `latest` waits for it.
    in_flight: bool,
    latest: Option<(String, String)>,
}

impl Entry {
    /// A dialog held with nothing in flight.
    fn idle(rec: GatewayDialog) -> Entry {
        Entry {
            rec,
            in_flight: false,
            latest: None,
        }
    }
}

/// Handle to the running gateway.
#[derive(Clone)]
pub struct Gateway {
    tx: mpsc::UnboundedSender<Cmd>,
    settings: Arc<GatewaySettings>,
}

impl Gateway {
    pub fn start(
        settings: GatewaySettings,
        store: Arc<dyn Store>,
        layer: TransactionLayer,
        resolver: Arc<Resolver>,
        adapter: Adapter,
        presence: PresenceAgent,
        table: Arc<DialogTable>,
    ) -> Result<Gateway, StoreError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let settings = Arc::new(settings);
        let mut g = Actor {
            settings: settings.clone(),
            store,
            layer,
            resolver,
            adapter,
            presence,
            dialogs: Held::new(table.clone()),
            by_pair: HashMap::new(),
            pending: Outstanding::new(table),
            closing: HashMap::new(),
            timers: BinaryHeap::new(),
            me: tx.clone(),
        };
        g.load()?;
        tokio::spawn(g.run(rx));
        Ok(Gateway { tx, settings })
    }

    /// The Request-URI host is a CPIM domain (seed §7.1 applies).
    pub fn is_cpim_domain(&self, host: &str) -> bool {
        self.settings
            .cpim_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(host))
    }

    pub fn handle_sip(&self, st: ServerTransaction) {
        let _ = self.tx.send(Cmd::Sip(Box::new(st)));
    }

    async fn ask(
        &self,
        f: impl FnOnce(oneshot::Sender<Result<CpimResponse, ApiError>>) -> Cmd,
    ) -> Result<CpimResponse, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(f(tx))
            .map_err(|_| ApiError::Unavailable("gateway is shutting down".into()))?;
        rx.await
            .map_err(|_| ApiError::Unavailable("gateway is shutting down".into()))?
    }

    /// `POST /cpim/v1/subscribe`: answers when the SIP final response is in.
    pub async fn subscribe(&self, req: SubscribeRequest) -> Result<CpimResponse, ApiError> {
        self.ask(|tx| Cmd::Subscribe(req, tx)).await
    }

    pub async fn unsubscribe(&self, req: UnsubscribeRequest) -> Result<CpimResponse, ApiError> {
        self.ask(|tx| Cmd::Unsubscribe(req, tx)).await
    }

    pub async fn notify(&self, req: NotifyRequest) -> Result<CpimResponse, ApiError> {
        self.ask(|tx| Cmd::Notify(req, tx)).await
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// CPIM → SIP: refresh the SUBSCRIBE (or end it when the CPIM duration is over).
    Refresh(String),
    /// SIP → CPIM: the SIP watcher did not refresh.
    Expire(String),
    /// CPIM → SIP: the final NOTIFY of a dialog we unsubscribed from is no
    /// longer expected.
    Closed(String),
}

struct Actor {
    settings: Arc<GatewaySettings>,
    store: Arc<dyn Store>,
    layer: TransactionLayer,
    resolver: Arc<Resolver>,
    adapter: Adapter,
    presence: PresenceAgent,
    dialogs: Held,
    /// CPIM → SIP dialogs by (watcher, target) as the adapter sent them.
    by_pair: HashMap<(String, String), String>,
    pending: Outstanding,
    /// Dialogs we unsubscribed from, until when their final NOTIFY is still
    /// answered 200 (RFC 6665 §4.1.2.3: the subscription ends with it).
    closing: HashMap<String, i64>,
    timers: BinaryHeap<Reverse<(i64, Timer)>>,
    me: mpsc::UnboundedSender<Cmd>,
}

/// A URI from the API: `pres:`, `im:`, `sip:` or `sips:` with a user and host.
fn api_uri(field: &str, s: &str) -> Result<Uri, ApiError> {
    let u = Uri::parse_str(s)
        .map_err(|e| ApiError::BadRequest(format!("{field}: invalid URI: {}", e.reason)))?;
    if !matches!(
        u.scheme,
        Scheme::Pres | Scheme::Im | Scheme::Sip | Scheme::Sips
    ) || u.host.is_none()
    {
        return Err(ApiError::BadRequest(format!(
            "{field}: expected a pres:, im:, sip: or sips: URI"
        )));
    }
    Ok(u)
}

fn host_of(u: &Uri) -> String {
    u.host.as_ref().map(|h| h.canonical()).unwrap_or_default()
}

/// The seed §7.1 transID of a SIP request.
fn trans_id_of(m: &Message) -> String {
    cpim::trans_id(
        m.call_id().unwrap_or(""),
        &m.to().map(|t| t.uri.to_string()).unwrap_or_default(),
        &m.from().map(|f| f.uri.to_string()).unwrap_or_default(),
        m.cseq().map_or(0, |c| c.seq),
        m.from().and_then(|f| f.tag()).unwrap_or(""),
        &m.request_uri().map(ToString::to_string).unwrap_or_default(),
    )
}

/// The CPIM watcher of a SIP watcher's SUBSCRIBE (seed §7.1): the
/// authenticated identity when digest authentication is on (the CPIM side
/// authorizes by it, so a From header claiming someone else must not count),
/// else the From URI; as a `pres:` URI either way.
fn watcher_of(st: &ServerTransaction) -> String {
    let uri = match st.identity() {
        Some(id) => Uri::parse_str(id).ok(),
        None => st.request().from().map(|f| f.uri.clone()),
    };
    uri.map(|u| u.with_scheme(Scheme::Pres).to_string())
        .unwrap_or_default()
}

/// The presence object of a SIP body: carried unchanged, tuples parsed.
fn presence_of_body(content_type: Option<String>, body: &bytes::Bytes) -> Presence {
    let tuples = content_type
        .as_deref()
        .and_then(|ct| crate::body::presence_of(ct, body).ok())
        .map(|(_, d)| cpim::tuples_view(&d));
    Presence {
        content_type: content_type.filter(|_| !body.is_empty()),
        body: (!body.is_empty()).then(|| String::from_utf8_lossy(body).into_owned()),
        tuples,
    }
}

impl Actor {
    fn load(&mut self) -> Result<(), StoreError> {
        let store = self.store.clone();
        store.visit(Tree::Dialogs, &mut |_, v| {
            let rec: GatewayDialog = codec::decode(Tree::Dialogs, v)?;
            match rec.direction {
                Direction::CpimToSip => {
                    self.by_pair
                        .insert((rec.watcher.clone(), rec.target.clone()), rec.id.clone());
                    self.timers.push(Reverse((
                        self.refresh_at(&rec),
                        Timer::Refresh(rec.id.clone()),
                    )));
                }
                Direction::SipToCpim => {
                    self.timers
                        .push(Reverse((rec.expires_at, Timer::Expire(rec.id.clone()))));
                }
            }
            self.dialogs.insert(rec.id.clone(), Entry::idle(rec));
            Ok(())
        })
    }

    /// When to refresh a CPIM → SIP subscription: well before it expires.
    fn refresh_at(&self, rec: &GatewayDialog) -> i64 {
        let left = rec.expires_at - rec.refreshed_at;
        let margin = (left / 10).clamp(1_000, 60_000);
        (rec.expires_at - margin)
            .min(rec.cpim_until)
            .max(rec.refreshed_at)
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        loop {
            let next = self.timers.peek().map(|Reverse((at, _))| *at);
            let sleep = async {
                match next {
                    Some(at) => {
                        tokio::time::sleep(std::time::Duration::from_millis(
                            (at - now_ms()).max(0) as u64
                        ))
                        .await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(c) => self.on_cmd(c),
                    None => return,
                },
                _ = sleep => self.fire(),
            }
        }
    }

    /// Commits `batch`, then releases deliveries and runs `after`.
    fn commit_then(
        &self,
        batch: Batch,
        staged: Vec<Staged>,
        after: impl FnOnce(bool) + Send + 'static,
    ) {
        let store = self.store.clone();
        let adapter = self.adapter.clone();
        tokio::spawn(async move {
            let ok = batch.is_empty() || store.commit(batch).await.is_ok();
            if ok {
                adapter.release(staged);
            } else {
                tracing::error!("gateway store commit failed");
                adapter.abandon(staged);
            }
            after(ok);
        });
    }

    fn on_cmd(&mut self, c: Cmd) {
        match c {
            Cmd::Subscribe(req, reply) => self.cpim_subscribe(req, reply),
            Cmd::Unsubscribe(req, reply) => self.cpim_unsubscribe(req, reply),
            Cmd::Notify(req, reply) => self.cpim_notify(req, reply),
            Cmd::Sip(st) => match st.request().method() {
                Some(Method::Notify) => self.sip_notify(*st),
                Some(Method::Subscribe) => self.sip_subscribe(*st),
                _ => refuse(*st, Reject::MethodNotAllowed),
            },
            Cmd::SubscribeDone { key, outcome } => self.subscribe_done(key, outcome),
            Cmd::AdapterAnswered {
                st,
                id,
                outcome,
                refresh,
            } => self.adapter_answered(*st, id, outcome, refresh),
            Cmd::NotifyDone { id, ok } => self.notify_done(&id, ok),
            Cmd::Inspect(f) | Cmd::Repair(f) => f(self),
        }
    }

    fn fire(&mut self) {
        let now = now_ms();
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, t))) = self.timers.pop() else {
                break;
            };
            match t {
                Timer::Refresh(id) => self.refresh_due(&id, at),
                Timer::Expire(id) => self.expire_due(&id, at),
                Timer::Closed(id) => {
                    if self.closing.get(&id).is_some_and(|until| *until <= at) {
                        self.closing.remove(&id);
                        self.dialogs.forget_route(&id);
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------------
    // CPIM → SIP (seed §7.2)

    fn cpim_subscribe(
        &mut self,
        req: SubscribeRequest,
        reply: oneshot::Sender<Result<CpimResponse, ApiError>>,
    ) {
        let watcher = match api_uri("watcher", &req.watcher) {
            Ok(u) => u,
            Err(e) => return drop(reply.send(Err(e))),
        };
        let target = match api_uri("target", &req.target) {
            Ok(u) => u,
            Err(e) => return drop(reply.send(Err(e))),
        };
        let trans_id = req.trans_id.clone().unwrap_or_else(cpim::new_trans_id);
        if trans_id.is_empty() || !trans_id.bytes().all(crate::sip::grammar_token_char) {
            return drop(reply.send(Err(ApiError::BadRequest(
                "transID must be a SIP token".into(),
            ))));
        }
        let duration = req.duration.unwrap_or(self.settings.default_expires);
        let host = host_of(&target);
        if self
            .settings
            .local_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(&host))
        {
            // A local presentity: the presence agent serves the CPIM watcher.
            let presence = self.presence.clone();
            let aor = aor_key(&target);
            tokio::spawn(async move {
                let r = presence
                    .cpim_subscribe(&req.watcher, &req.target, &aor, Some(duration), &trans_id)
                    .await;
                let _ = reply.send(Ok(r));
            });
            return;
        }
        let pair = (req.watcher.clone(), req.target.clone());
        if let Some(id) = self.by_pair.get(&pair).cloned() {
            // Already subscribed: a refresh with the new duration.
            if let Some(e) = self.dialogs.get_mut(&id) {
                e.rec.cpim_until = now_ms() + i64::from(duration) * 1000;
                let until = e.rec.cpim_until;
                self.send_in_dialog(&id, duration, Some(reply), false);
                let _ = until;
            }
            return;
        }
        let scheme = self.settings.header_scheme.clone();
        let from = watcher.with_scheme(scheme.clone());
        let to = target.with_scheme(scheme);
        let ruri = target.with_scheme(Scheme::Sip);
        let call_id = format!("{}@gw", random_token());
        let mut m = Message::request(Method::Subscribe, ruri.clone());
        m.push_header(HeaderName::MaxForwards, "70");
        m.push_header(HeaderName::From, format!("<{from}>;tag={trans_id}"));
        m.push_header(HeaderName::To, format!("<{to}>"));
        m.push_header(HeaderName::CallId, call_id.clone());
        m.push_header(HeaderName::CSeq, "1 SUBSCRIBE");
        m.push_header(HeaderName::Contact, self.settings.contact.clone());
        m.push_header(HeaderName::Event, "presence");
        m.push_header(
            HeaderName::Accept,
            "application/pidf+xml, application/cpim-pidf+xml, application/xpidf+xml, message/cpim",
        );
        m.push_header(HeaderName::Expires, duration.to_string());
        let key = (call_id, trans_id.clone());
        self.pending.insert(
            key.clone(),
            Pending {
                watcher: req.watcher,
                target: req.target,
                trans_id,
                request: m.clone(),
                cpim_until: now_ms() + i64::from(duration) * 1000,
                reply: Some(reply),
                unsubscribe: false,
                early_id: None,
            },
        );
        self.send_subscribe(key, m, ruri);
    }

    /// Sends a SUBSCRIBE as a client transaction; the answer comes back as
    /// `SubscribeDone`.
    fn send_subscribe(&self, key: PendingKey, m: Message, next_hop: Uri) {
        let layer = self.layer.clone();
        let resolver = self.resolver.clone();
        let me = self.me.clone();
        tokio::spawn(async move {
            let outcome = layer
                .send_with_failover(&resolver, &next_hop, m)
                .await
                .map(Box::new)
                .map_err(|e| e.status_code());
            let _ = me.send(Cmd::SubscribeDone { key, outcome });
        });
    }

    /// A SUBSCRIBE in an existing CPIM → SIP dialog (refresh or, with 0,
    /// unsubscribe).
    fn send_in_dialog(
        &mut self,
        id: &str,
        expires: u32,
        reply: Option<oneshot::Sender<Result<CpimResponse, ApiError>>>,
        unsubscribe: bool,
    ) {
        let contact = self.settings.contact.clone();
        let Some(e) = self.dialogs.get_mut(id) else {
            return;
        };
        let mut m = e.rec.dialog.request(Method::Subscribe, &contact);
        m.push_header(HeaderName::Event, "presence");
        m.push_header(HeaderName::Expires, expires.to_string());
        let key = (
            e.rec.dialog.call_id().to_owned(),
            e.rec.dialog.local_tag().to_owned(),
        );
        let next_hop = e.rec.dialog.next_hop();
        let mut batch = Batch::default();
        batch.put(Tree::Dialogs, id.as_bytes().to_vec(), codec::encode(&e.rec));
        self.pending.insert(
            key.clone(),
            Pending {
                watcher: e.rec.watcher.clone(),
                target: e.rec.target.clone(),
                trans_id: e.rec.trans_id.clone(),
                request: m.clone(),
                cpim_until: e.rec.cpim_until,
                reply,
                unsubscribe,
                early_id: Some(id.to_owned()),
            },
        );
        // The CSeq used is durable before the request leaves.
        let me = self.me.clone();
        let layer_sender = (self.layer.clone(), self.resolver.clone());
        self.commit_then(batch, vec![], move |ok| {
            if !ok {
                // Not sent: the adapter (if it asked) learns the failure.
                let _ = me.send(Cmd::Repair(Box::new(move |a: &mut Actor| {
                    if let Some(p) = a.pending.remove(&key) {
                        if let Some(tx) = p.reply {
                            let _ = tx.send(Err(store_failure()));
                        }
                    }
                })));
                return;
            }
            let (layer, resolver) = layer_sender;
            tokio::spawn(async move {
                let outcome = layer
                    .send_with_failover(&resolver, &next_hop, m)
                    .await
                    .map(Box::new)
                    .map_err(|e| e.status_code());
                let _ = me.send(Cmd::SubscribeDone { key, outcome });
            });
        });
    }

    fn subscribe_done(&mut self, key: PendingKey, outcome: Result<Box<Message>, u16>) {
        let Some(mut p) = self.pending.remove(&key) else {
            return;
        };
        let (code, reason) = match &outcome {
            Ok(r) => (
                r.status().unwrap_or(500),
                r.reason().unwrap_or("").to_owned(),
            ),
            Err(c) => (*c, crate::sip::default_reason(*c).to_owned()),
        };
        let reply = p.reply.take();
        let answer = move |r: Result<CpimResponse, ApiError>| {
            if let Some(tx) = reply {
                let _ = tx.send(r);
            }
        };
        if p.unsubscribe {
            // "In all cases, any subscription state in the gateway is destroyed."
            let mut batch = Batch::default();
            if let Some(id) = &p.early_id {
                self.remove_c2s(id, &mut batch);
                // The notifier's final NOTIFY still comes: answer it 200
                // for 64·T1 (RFC 6665 §4.1.2.3), without passing it on.
                let until = now_ms() + 32_000;
                self.closing.insert(id.clone(), until);
                self.dialogs.keep_route(id);
                self.timers
                    .push(Reverse((until, Timer::Closed(id.clone()))));
            }
            let status = if (200..300).contains(&code) {
                Status::Success
            } else {
                Status::Failure
            };
            let resp = CpimResponse {
                status,
                trans_id: p.trans_id.clone(),
                duration: None,
                code: (status == Status::Failure).then_some(code),
                reason: (status == Status::Failure).then_some(reason),
            };
            // "Unsubscribed" only once the end is durable.
            self.commit_then(batch, vec![], move |ok| {
                answer(if ok { Ok(resp) } else { Err(store_failure()) })
            });
            return;
        }
        let Ok(resp) = outcome.as_ref().map_err(|_| ()).and_then(|r| {
            if (200..300).contains(&code) {
                Ok(r)
            } else {
                Err(())
            }
        }) else {
            // Failure: the CPIM side learns the SIP status (§7.2).
            let mut batch = Batch::default();
            if let Some(id) = &p.early_id {
                self.remove_c2s(id, &mut batch);
            }
            let r = CpimResponse::failure(&p.trans_id, code, &reason);
            self.commit_then(batch, vec![], move |_| answer(Ok(r)));
            return;
        };
        let granted = resp
            .expires()
            .ok()
            .flatten()
            .unwrap_or_else(|| p.request.expires().ok().flatten().unwrap_or(0));
        let status = if code == 202 {
            Status::Indeterminate
        } else {
            Status::Success
        };
        let now = now_ms();
        let id = match p.early_id.clone() {
            Some(id) if self.dialogs.contains_key(&id) => {
                let e = self.dialogs.get_mut(&id).expect("checked");
                e.rec.expires_at = now + i64::from(granted) * 1000;
                e.rec.refreshed_at = now;
                // A 2xx to a refresh may update the remote target.
                if let Ok(crate::sip::Contacts::List(l)) = resp.contacts() {
                    if let Some(c) = l.first() {
                        e.rec.dialog.set_remote_target(&c.uri.to_string());
                    }
                }
                id
            }
            _ => {
                let dialog = match Dialog::uac(&p.request, resp) {
                    Ok(d) => d,
                    Err(e) => {
                        let r =
                            CpimResponse::failure(&p.trans_id, 502, &format!("Bad Gateway: {e}"));
                        answer(Ok(r));
                        return;
                    }
                };
                let rec = GatewayDialog {
                    id: dialog.id(),
                    direction: Direction::CpimToSip,
                    watcher: p.watcher.clone(),
                    target: p.target.clone(),
                    trans_id: p.trans_id.clone(),
                    dialog,
                    expires_at: now + i64::from(granted) * 1000,
                    refreshed_at: now,
                    cpim_until: p.cpim_until,
                    event_id: None,
                    last_content_type: None,
                    last_body: None,
                };
                let id = rec.id.clone();
                self.by_pair
                    .insert((rec.watcher.clone(), rec.target.clone()), id.clone());
                self.dialogs.insert(id.clone(), Entry::idle(rec));
                id
            }
        };
        let rec = self.dialogs[&id].rec.clone();
        self.timers
            .push(Reverse((self.refresh_at(&rec), Timer::Refresh(id.clone()))));
        let mut batch = Batch::default();
        batch.put(Tree::Dialogs, id.as_bytes().to_vec(), codec::encode(&rec));
        let r = CpimResponse {
            status,
            trans_id: p.trans_id.clone(),
            duration: Some(granted),
            code: None,
            reason: None,
        };
        self.commit_then(batch, vec![], move |ok| {
            answer(if ok { Ok(r) } else { Err(store_failure()) })
        });
    }

    fn remove_c2s(&mut self, id: &str, batch: &mut Batch) {
        if let Some(e) = self.dialogs.remove(id) {
            self.by_pair
                .remove(&(e.rec.watcher.clone(), e.rec.target.clone()));
            batch.delete(Tree::Dialogs, id.as_bytes().to_vec());
        }
    }

    fn refresh_due(&mut self, id: &str, at: i64) {
        let Some(e) = self.dialogs.get(id) else {
            return;
        };
        if self.refresh_at(&e.rec) != at {
            return; // superseded by a later refresh
        }
        let now = now_ms();
        let left = ((e.rec.cpim_until - now) / 1000).max(0) as u32;
        if left == 0 {
            // The CPIM duration is over: end the SIP subscription.
            self.send_in_dialog(id, 0, None, true);
        } else {
            let original = ((e.rec.expires_at - e.rec.refreshed_at) / 1000).max(1) as u32;
            self.send_in_dialog(id, left.min(original), None, false);
        }
    }

    fn cpim_unsubscribe(
        &mut self,
        req: UnsubscribeRequest,
        reply: oneshot::Sender<Result<CpimResponse, ApiError>>,
    ) {
        let target =
            match api_uri("watcher", &req.watcher).and_then(|_| api_uri("target", &req.target)) {
                Ok(t) => t,
                Err(e) => return drop(reply.send(Err(e))),
            };
        let trans_id = req.trans_id.clone().unwrap_or_else(cpim::new_trans_id);
        if self
            .settings
            .local_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(&host_of(&target)))
        {
            let presence = self.presence.clone();
            tokio::spawn(async move {
                let r = presence
                    .cpim_unsubscribe(&req.watcher, &req.target, &trans_id)
                    .await;
                let _ = reply.send(Ok(r));
            });
            return;
        }
        match self
            .by_pair
            .get(&(req.watcher.clone(), req.target.clone()))
            .cloned()
        {
            Some(id) => self.send_in_dialog(&id, 0, Some(reply), true),
            // Unknown: failure, nothing sent (§7.2).
            None => drop(reply.send(Ok(Reject::DialogGone.cpim(&trans_id)))),
        }
    }

    /// A NOTIFY from the SIP side: to the adapter (CPIM → SIP dialogs).
    fn sip_notify(&mut self, st: ServerTransaction) {
        let req = st.request();
        let id = dialog_id(
            req.call_id().unwrap_or(""),
            req.to().and_then(|t| t.tag()).unwrap_or(""),
            req.from().and_then(|f| f.tag()).unwrap_or(""),
        );
        let known = self
            .dialogs
            .get(&id)
            .is_some_and(|e| e.rec.direction == Direction::CpimToSip);
        let id = if known {
            id
        } else {
            // RFC 6665 §4.1.2.4: a NOTIFY may arrive before the 2xx.
            let key = (
                req.call_id().unwrap_or("").to_owned(),
                req.to().and_then(|t| t.tag()).unwrap_or("").to_owned(),
            );
            match self.early_dialog(&key, req) {
                Some(id) => id,
                None => {
                    if self.closing.get(&id).is_none_or(|until| *until <= now_ms()) {
                        return refuse(st, Reject::DialogGone);
                    }
                    tokio::spawn(async move {
                        let r = st.reply(200, "OK");
                        let _ = st.respond(r).await;
                    });
                    return;
                }
            }
        };
        let e = self.dialogs.get_mut(&id).expect("dialog exists");
        if !e
            .rec
            .dialog
            .accept_remote_cseq(req.cseq().map_or(0, |c| c.seq))
        {
            return refuse(st, Reject::CSeqOutOfOrder);
        }
        let sub_state = req.subscription_state().ok().flatten();
        let terminated = sub_state
            .as_ref()
            .is_some_and(|s| s.state == SubState::Terminated);
        let presence = presence_of_body(
            req.content_type().ok().flatten().map(|c| c.to_string()),
            req.body(),
        );
        let n = NotifyRequest {
            watcher: e.rec.watcher.clone(),
            target: e.rec.target.clone(),
            trans_id: Some(trans_id_of(req)),
            presence,
            state: sub_state
                .as_ref()
                .filter(|s| s.state != SubState::Active)
                .map(|s| s.state.as_str().to_owned()),
            reason: sub_state
                .as_ref()
                .and_then(|s| s.reason().map(str::to_owned)),
        };
        let mut batch = Batch::default();
        let staged = self.adapter.stage(
            &mut batch,
            &e.rec.watcher,
            &e.rec.target,
            "notify",
            serde_json::to_value(&n).expect("serializes"),
        );
        if terminated {
            self.remove_c2s(&id, &mut batch);
        } else {
            batch.put(Tree::Dialogs, id.as_bytes().to_vec(), codec::encode(&e.rec));
        }
        // The 200 goes once the delivery is queued durably.
        self.commit_then(batch, vec![staged], move |ok| {
            tokio::spawn(async move {
                let r = if ok {
                    st.reply(200, "OK")
                } else {
                    Reject::StoreFailure.response(&st)
                };
                let _ = st.respond(r).await;
            });
        });
    }

    fn early_dialog(&mut self, key: &PendingKey, notify: &Message) -> Option<String> {
        let p = self.pending.get_mut(key)?;
        if p.unsubscribe {
            return None;
        }
        // The dialog from the NOTIFY: its From tag is the remote tag, its
        // Contact the remote target, its Record-Route the route set.
        let mut d = Dialog::uas(notify, &p.trans_id).ok()?;
        d.local_cseq = p.request.cseq().map_or(1, |c| c.seq);
        d.remote_cseq = None;
        let now = now_ms();
        let rec = GatewayDialog {
            id: d.id(),
            direction: Direction::CpimToSip,
            watcher: p.watcher.clone(),
            target: p.target.clone(),
            trans_id: p.trans_id.clone(),
            expires_at: now + i64::from(p.request.expires().ok().flatten().unwrap_or(0)) * 1000,
            refreshed_at: now,
            cpim_until: p.cpim_until,
            dialog: d,
            event_id: None,
            last_content_type: None,
            last_body: None,
        };
        let id = rec.id.clone();
        p.early_id = Some(id.clone());
        self.by_pair
            .insert((rec.watcher.clone(), rec.target.clone()), id.clone());
        self.dialogs.insert(id.clone(), Entry::idle(rec));
        Some(id)
    }

    // ------------------------------------------------------------------
    // SIP → CPIM (seed §7.1)

    fn sip_subscribe(&mut self, st: ServerTransaction) {
        let req = st.request();
        match req.event() {
            Ok(Some(e)) if e.is("presence") => {}
            _ => return refuse(st, Reject::BadEvent { allow: "presence" }),
        }
        let expires = match req.expires() {
            Ok(e) => e.unwrap_or(self.settings.default_expires),
            Err(_) => return refuse(st, Reject::bad("Bad Expires")),
        };
        if expires != 0 && expires < self.settings.min_expires {
            let min = self.settings.min_expires;
            return refuse(st, Reject::IntervalTooBrief { min });
        }
        let expires = expires.min(self.settings.max_expires);
        let to_tag = req.to().and_then(|t| t.tag()).map(str::to_owned);
        let watcher = watcher_of(&st);
        let mut target = req
            .request_uri()
            .map(|u| u.with_scheme(Scheme::Pres).to_string())
            .unwrap_or_default();
        let (id, trans_id, refresh) = match to_tag {
            Some(tag) => {
                let id = dialog_id(
                    req.call_id().unwrap_or(""),
                    &tag,
                    req.from().and_then(|f| f.tag()).unwrap_or(""),
                );
                let Some(e) = self
                    .dialogs
                    .get_mut(&id)
                    .filter(|e| e.rec.direction == Direction::SipToCpim)
                else {
                    return refuse(st, Reject::DialogGone);
                };
                // Only the dialog's own watcher may refresh or end it.
                if e.rec.watcher != watcher {
                    return refuse(st, Reject::forbidden("not this dialog's watcher"));
                }
                if !e
                    .rec
                    .dialog
                    .accept_remote_cseq(req.cseq().map_or(0, |c| c.seq))
                {
                    return refuse(st, Reject::CSeqOutOfOrder);
                }
                // The presentity is the dialog's: inside it the Request-URI
                // is our Contact (RFC 3261 §12.2.1.1), not the target.
                target = e.rec.target.clone();
                // SUBSCRIBE is a target refresh request (RFC 6665
                // §4.1.2.1): its Contact is the watcher's new remote target.
                if let Ok(crate::sip::Contacts::List(l)) = req.contacts() {
                    if let Some(c) = l.first() {
                        e.rec.dialog.set_remote_target(&c.uri.to_string());
                    }
                }
                (id, tag, true)
            }
            None => {
                let trans_id = trans_id_of(req);
                (
                    dialog_id(
                        req.call_id().unwrap_or(""),
                        &trans_id,
                        req.from().and_then(|f| f.tag()).unwrap_or(""),
                    ),
                    trans_id,
                    false,
                )
            }
        };
        let adapter = self.adapter.clone();
        let me = self.me.clone();
        tokio::spawn(async move {
            let outcome = if expires == 0 {
                // Expires 0 → CPIM unsubscribe with transID = the To-tag.
                let u = UnsubscribeRequest {
                    watcher,
                    target,
                    trans_id: Some(trans_id),
                };
                adapter.unsubscribe(&u).await.map_err(|e| e.to_string())
            } else {
                let s = SubscribeRequest {
                    watcher,
                    target,
                    duration: Some(expires),
                    trans_id: Some(trans_id),
                };
                adapter.subscribe(&s).await.map_err(|e| e.to_string())
            };
            let _ = me.send(Cmd::AdapterAnswered {
                st: Box::new(st),
                id,
                outcome,
                refresh,
            });
        });
    }

    fn adapter_answered(
        &mut self,
        st: ServerTransaction,
        id: String,
        outcome: Result<CpimResponse, String>,
        refresh: bool,
    ) {
        let req = st.request();
        let trans_id = trans_id_of(req);
        let our_tag = if refresh {
            req.to().and_then(|t| t.tag()).unwrap_or("").to_owned()
        } else {
            trans_id
        };
        let requested = req
            .expires()
            .ok()
            .flatten()
            .unwrap_or(self.settings.default_expires);
        let resp = match outcome {
            Err(e) => {
                // Adapter unreachable or timing out: 480, nothing stored.
                tracing::warn!(error = %e, "CPIM adapter did not answer a SUBSCRIBE");
                let mut r = Reject::TemporarilyUnavailable { retry_after: 30 }.response(&st);
                r.set_header(HeaderName::To, to_with_tag(req, &our_tag));
                tokio::spawn(async move {
                    let _ = st.respond(r).await;
                });
                return;
            }
            Ok(r) => r,
        };
        // Our Contact is the gateway itself, in the 2xx as in every NOTIFY:
        // the watcher's in-dialog requests come here (RFC 3261 §12.1.1) and
        // are routed by dialog, whatever their Request-URI says.
        let contact = self.settings.contact.clone();
        let mut batch = Batch::default();
        if requested == 0 || resp.status == Status::Failure {
            // Unsubscribe (or refused): 200 / 603, final NOTIFY, state removed.
            let mut r = if requested == 0 {
                st.reply(200, "OK")
            } else {
                Reject::Decline.response(&st)
            };
            r.set_header(HeaderName::To, to_with_tag(req, &our_tag));
            r.push_header(HeaderName::Expires, "0");
            let mut notify = None;
            let mut removed = None;
            if let Some(e) = self.dialogs.remove(&id) {
                removed = Some(e.rec.clone());
                batch.delete(Tree::Dialogs, id.as_bytes().to_vec());
                let reason = if requested == 0 {
                    "timeout"
                } else {
                    "rejected"
                };
                notify = Some(self.build_notify(
                    e.rec,
                    SubscriptionState::new(SubState::Terminated).with_param("reason", reason),
                    None,
                ));
            }
            let (layer, resolver, me) =
                (self.layer.clone(), self.resolver.clone(), self.me.clone());
            self.commit_then(batch, vec![], move |ok| {
                if !ok {
                    // The store still holds the dialog: so does memory.
                    if let Some(rec) = removed {
                        let _ = me.send(Cmd::Repair(Box::new(move |a: &mut Actor| {
                            let id = rec.id.clone();
                            a.dialogs.insert(id, Entry::idle(rec));
                        })));
                    }
                }
                tokio::spawn(async move {
                    if !ok {
                        // The end is not durable: neither a 2xx nor the
                        // final NOTIFY (the watcher may try again).
                        let r = Reject::StoreFailure.response(&st);
                        let _ = st.respond(r).await;
                        return;
                    }
                    let _ = st.respond(r).await;
                    if let Some((m, hop, _)) = notify {
                        let _ = send(&layer, &resolver, m, &hop).await;
                    }
                });
            });
            return;
        }
        // success / indeterminate → 202, To-tag = transID, Contact = target.
        let duration = resp.duration.unwrap_or(requested).min(requested.max(1));
        let now = now_ms();
        let state = if resp.status == Status::Indeterminate {
            SubState::Pending
        } else {
            SubState::Active
        };
        let created = !self.dialogs.contains_key(&id);
        let rec = match self.dialogs.get_mut(&id) {
            Some(e) => {
                e.rec.expires_at = now + i64::from(duration) * 1000;
                e.rec.clone()
            }
            None => {
                let mut dialog = match Dialog::uas(req, &our_tag) {
                    Ok(d) => d,
                    Err(e) => return refuse(st, Reject::bad(e.to_string())),
                };
                dialog.set_local_uri(&format!(
                    "<{}>",
                    req.request_uri()
                        .map(|u| u.with_scheme(Scheme::Sip))
                        .unwrap_or_else(|| Uri::sip(None, "invalid"))
                ));
                let rec = GatewayDialog {
                    id: id.clone(),
                    direction: Direction::SipToCpim,
                    watcher: watcher_of(&st),
                    target: req
                        .request_uri()
                        .map(|u| u.with_scheme(Scheme::Pres).to_string())
                        .unwrap_or_default(),
                    trans_id: our_tag.clone(),
                    dialog,
                    expires_at: now + i64::from(duration) * 1000,
                    refreshed_at: now,
                    cpim_until: 0,
                    event_id: req
                        .event()
                        .ok()
                        .flatten()
                        .and_then(|e| e.id().map(str::to_owned)),
                    last_content_type: None,
                    last_body: None,
                };
                self.dialogs.insert(id.clone(), Entry::idle(rec.clone()));
                rec
            }
        };
        self.timers
            .push(Reverse((rec.expires_at, Timer::Expire(id.clone()))));
        let mut r = st.reply(202, "Accepted");
        r.set_header(HeaderName::To, to_with_tag(req, &our_tag));
        r.push_header(HeaderName::Contact, contact);
        r.push_header(HeaderName::Expires, duration.to_string());
        // The immediate NOTIFY RFC 6665 requires; no body until the adapter
        // sends state (design §5), or the last state known on a refresh.
        let body = rec.last_content_type.clone().zip(rec.last_body.clone());
        let substate = SubscriptionState::new(state).with_param("expires", duration);
        let e = self.dialogs.get_mut(&id).expect("inserted");
        e.in_flight = true;
        let (m, hop, rec2) = self.build_notify(rec, substate, body);
        self.dialogs.get_mut(&id).expect("inserted").rec = rec2.clone();
        batch.put(Tree::Dialogs, id.as_bytes().to_vec(), codec::encode(&rec2));
        let (layer, resolver, me) = (self.layer.clone(), self.resolver.clone(), self.me.clone());
        self.commit_then(batch, vec![], move |ok| {
            if !ok {
                // No 202 and no NOTIFY for a dialog that is not durable; a
                // new one is forgotten again (a refresh keeps its dialog,
                // whose stored expiry still stands).
                tokio::spawn(async move {
                    let r = Reject::StoreFailure.response(&st);
                    let _ = st.respond(r).await;
                });
                let _ = me.send(Cmd::Repair(Box::new(move |a: &mut Actor| {
                    if created {
                        a.dialogs.remove(&id);
                    } else if let Some(e) = a.dialogs.get_mut(&id) {
                        e.in_flight = false;
                    }
                })));
                return;
            }
            tokio::spawn(async move {
                let _ = st.respond(r).await;
                let ok = send(&layer, &resolver, m, &hop).await;
                let _ = me.send(Cmd::NotifyDone { id, ok });
            });
        });
    }

    /// A NOTIFY in a SIP → CPIM dialog: From = target with the dialog's tag,
    /// To = watcher, stored Call-ID, route set, next CSeq (§7.1).
    fn build_notify(
        &self,
        mut rec: GatewayDialog,
        state: SubscriptionState,
        body: Option<(String, String)>,
    ) -> (Message, Uri, GatewayDialog) {
        let mut m = rec.dialog.request(Method::Notify, &self.settings.contact);
        m.push_header(
            HeaderName::Event,
            match &rec.event_id {
                Some(id) => format!("presence;id={id}"),
                None => "presence".into(),
            },
        );
        m.push_header(HeaderName::SubscriptionState, state.to_string());
        if let Some((ct, b)) = body {
            m.set_body(&ct, bytes::Bytes::from(b));
        } else {
            m.sync_content_length();
        }
        let hop = rec.dialog.next_hop();
        let _ = &mut rec;
        (m, hop, rec)
    }

    /// `POST /cpim/v1/notify`: a CPIM presentity's state to every matching
    /// SIP → CPIM dialog.
    fn cpim_notify(
        &mut self,
        req: NotifyRequest,
        reply: oneshot::Sender<Result<CpimResponse, ApiError>>,
    ) {
        let (watcher, target) = match (
            api_uri("watcher", &req.watcher),
            api_uri("target", &req.target),
        ) {
            (Ok(w), Ok(t)) => (w, t),
            (Err(e), _) | (_, Err(e)) => return drop(reply.send(Err(e))),
        };
        // The subscription state the CPIM side reports (docs/cpim-api.md):
        // active unless it says pending or terminated; a reason only with
        // terminated (RFC 6665 §4.1.3 reason codes are tokens).
        let state = match req.state.as_deref() {
            None | Some("active") => SubState::Active,
            Some("pending") => SubState::Pending,
            Some("terminated") => SubState::Terminated,
            Some(other) => {
                return drop(reply.send(Err(ApiError::BadRequest(format!(
                    "state: {other:?} is not active, pending or terminated"
                )))));
            }
        };
        if let Some(r) = &req.reason {
            if state != SubState::Terminated
                || r.is_empty()
                || !r.bytes().all(crate::sip::grammar_token_char)
            {
                return drop(reply.send(Err(ApiError::BadRequest(
                    "reason: a token, and only with state terminated".into(),
                ))));
            }
        }
        // The body exactly as carried, or PIDF rendered from the tuples; a
        // terminating notify may carry none.
        let doc = match (&req.presence.body, &req.presence.tuples) {
            (Some(b), _) => Some((
                req.presence
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "application/pidf+xml".into()),
                b.clone(),
            )),
            (None, Some(t)) => Some((
                "application/pidf+xml".to_owned(),
                cpim::doc_from_tuples(&target.with_scheme(Scheme::Pres).to_string(), t)
                    .render(crate::body::PresenceFormat::Pidf),
            )),
            (None, None) if state == SubState::Terminated => None,
            (None, None) => {
                return drop(reply.send(Err(ApiError::BadRequest(
                    "presence needs a body or tuples".into(),
                ))));
            }
        };
        if let Some((ct, body)) = &doc {
            if let Err(e) = crate::body::presence_of(ct, &bytes::Bytes::from(body.clone())) {
                return drop(reply.send(Err(ApiError::BadRequest(format!("presence body: {e}")))));
            }
        }
        let w_key = aor_key(&watcher);
        let t_key = aor_key(&target);
        let ids: Vec<String> = self
            .dialogs
            .iter()
            .filter(|(_, e)| e.rec.direction == Direction::SipToCpim)
            .filter(|(_, e)| {
                Uri::parse_str(&e.rec.watcher).is_ok_and(|u| aor_key(&u) == w_key)
                    && Uri::parse_str(&e.rec.target).is_ok_and(|u| aor_key(&u) == t_key)
            })
            .map(|(id, _)| id.clone())
            .collect();
        let trans_id = req.trans_id.clone().unwrap_or_else(cpim::new_trans_id);
        if ids.is_empty() {
            let _ = reply.send(Ok(Reject::DialogGone.cpim(&trans_id)));
            return;
        }
        if state == SubState::Terminated {
            return self.cpim_terminate(&ids, req.reason.as_deref(), doc, &trans_id, reply);
        }
        let Some((ct, body)) = doc else {
            // Only a terminating notify may come without a document.
            return drop(reply.send(Err(ApiError::BadRequest(
                "presence needs a body or tuples".into(),
            ))));
        };
        let mut batch = Batch::default();
        let mut sends = Vec::new();
        for id in &ids {
            let e = self.dialogs.get_mut(id).expect("listed");
            e.rec.last_content_type = Some(ct.clone());
            e.rec.last_body = Some(body.clone());
            if e.in_flight {
                e.latest = Some((ct.clone(), body.clone()));
                batch.put(Tree::Dialogs, id.as_bytes().to_vec(), codec::encode(&e.rec));
                continue;
            }
            e.in_flight = true;
            let remaining = ((e.rec.expires_at - now_ms()).max(0) / 1000) as u32;
            let rec = e.rec.clone();
            let (m, hop, rec) = self.build_notify(
                rec,
                SubscriptionState::new(state.clone()).with_param("expires", remaining),
                Some((ct.clone(), body.clone())),
            );
            batch.put(Tree::Dialogs, id.as_bytes().to_vec(), codec::encode(&rec));
            self.dialogs.get_mut(id).expect("listed").rec = rec;
            sends.push((id.clone(), m, hop));
        }
        let (layer, resolver, me) = (self.layer.clone(), self.resolver.clone(), self.me.clone());
        self.commit_then(batch, vec![], move |ok| {
            let _ = reply.send(if ok {
                Ok(CpimResponse::success(&trans_id, None))
            } else {
                Err(store_failure())
            });
            if !ok {
                // Their CSeqs are not durable: no NOTIFY goes out.
                let _ = me.send(Cmd::Repair(Box::new(move |a: &mut Actor| {
                    for (id, _, _) in sends {
                        if let Some(e) = a.dialogs.get_mut(&id) {
                            e.in_flight = false;
                        }
                    }
                })));
                return;
            }
            for (id, m, hop) in sends {
                let (layer, resolver, me) = (layer.clone(), resolver.clone(), me.clone());
                tokio::spawn(async move {
                    let ok = send(&layer, &resolver, m, &hop).await;
                    let _ = me.send(Cmd::NotifyDone { id, ok });
                });
            }
        });
    }

    /// The CPIM side ended these SIP watchers' subscriptions (an XMPP user
    /// refused or revoked them): each gets its final NOTIFY `terminated`,
    /// with the reason given (RFC 6665 §4.2.2), and its state is removed.
    /// Nothing goes back to the adapter: the end came from there.
    fn cpim_terminate(
        &mut self,
        ids: &[String],
        reason: Option<&str>,
        doc: Option<(String, String)>,
        trans_id: &str,
        reply: oneshot::Sender<Result<CpimResponse, ApiError>>,
    ) {
        let mut batch = Batch::default();
        let mut sends = Vec::new();
        let mut removed = Vec::new();
        for id in ids {
            let Some(e) = self.dialogs.remove(id) else {
                continue;
            };
            batch.delete(Tree::Dialogs, id.as_bytes().to_vec());
            let mut ss = SubscriptionState::new(SubState::Terminated);
            if let Some(r) = reason {
                ss = ss.with_param("reason", r);
            }
            removed.push(e.rec.clone());
            let (m, hop, _) = self.build_notify(e.rec, ss, doc.clone());
            sends.push((m, hop));
        }
        let (layer, resolver, me) = (self.layer.clone(), self.resolver.clone(), self.me.clone());
        let trans_id = trans_id.to_owned();
        self.commit_then(batch, vec![], move |ok| {
            if !ok {
                let _ = reply.send(Err(store_failure()));
                // The store still holds them: so does memory.
                let _ = me.send(Cmd::Repair(Box::new(move |a: &mut Actor| {
                    for rec in removed {
                        let id = rec.id.clone();
                        a.dialogs.insert(id, Entry::idle(rec));
                    }
                })));
                return;
            }
            let _ = reply.send(Ok(CpimResponse::success(&trans_id, None)));
            for (m, hop) in sends {
                let (layer, resolver) = (layer.clone(), resolver.clone());
                tokio::spawn(async move {
                    let _ = send(&layer, &resolver, m, &hop).await;
                });
            }
        });
    }

    fn notify_done(&mut self, id: &str, ok: bool) {
        let Some(e) = self.dialogs.get_mut(id) else {
            return;
        };
        e.in_flight = false;
        if !ok {
            // The SIP watcher is gone (481, 408, timeout): CPIM unsubscribe.
            let e = self.dialogs.remove(id).expect("present");
            let mut batch = Batch::default();
            batch.delete(Tree::Dialogs, id.as_bytes().to_vec());
            let u = UnsubscribeRequest {
                watcher: e.rec.watcher,
                target: e.rec.target,
                trans_id: Some(e.rec.trans_id),
            };
            let adapter = self.adapter.clone();
            self.commit_then(batch, vec![], move |ok| {
                // Not durable: the dialog comes back at the next start and
                // ends then; the CPIM side hears of it once.
                if ok {
                    tokio::spawn(async move {
                        let _ = adapter.unsubscribe(&u).await;
                    });
                }
            });
            return;
        }
        if let Some((ct, body)) = e.latest.take() {
            e.in_flight = true;
            let remaining = ((e.rec.expires_at - now_ms()).max(0) / 1000) as u32;
            let rec = e.rec.clone();
            let (m, hop, rec) = self.build_notify(
                rec,
                SubscriptionState::new(SubState::Active).with_param("expires", remaining),
                Some((ct, body)),
            );
            let mut batch = Batch::default();
            batch.put(Tree::Dialogs, id.as_bytes().to_vec(), codec::encode(&rec));
            self.dialogs.get_mut(id).expect("present").rec = rec;
            let (layer, resolver, me, id) = (
                self.layer.clone(),
                self.resolver.clone(),
                self.me.clone(),
                id.to_owned(),
            );
            self.commit_then(batch, vec![], move |ok| {
                if !ok {
                    // The CSeq is not durable: nothing is sent with it.
                    let _ = me.send(Cmd::Repair(Box::new(move |a: &mut Actor| {
                        if let Some(e) = a.dialogs.get_mut(&id) {
                            e.in_flight = false;
                        }
                    })));
                    return;
                }
                tokio::spawn(async move {
                    let ok = send(&layer, &resolver, m, &hop).await;
                    let _ = me.send(Cmd::NotifyDone { id, ok });
                });
            });
        }
    }

    fn expire_due(&mut self, id: &str, at: i64) {
        if self.dialogs.get(id).is_none_or(|e| e.rec.expires_at != at) {
            return;
        }
        // The SIP watcher did not refresh: CPIM unsubscribe, final NOTIFY.
        let e = self.dialogs.remove(id).expect("checked");
        let mut batch = Batch::default();
        batch.delete(Tree::Dialogs, id.as_bytes().to_vec());
        let u = UnsubscribeRequest {
            watcher: e.rec.watcher.clone(),
            target: e.rec.target.clone(),
            trans_id: Some(e.rec.trans_id.clone()),
        };
        let (m, hop, _) = self.build_notify(
            e.rec,
            SubscriptionState::new(SubState::Terminated).with_param("reason", "timeout"),
            None,
        );
        let (layer, resolver, adapter) = (
            self.layer.clone(),
            self.resolver.clone(),
            self.adapter.clone(),
        );
        self.commit_then(batch, vec![], move |ok| {
            // Not durable: the dialog, expired, is loaded and ended at the
            // next start; nothing is sent that the store does not say.
            if ok {
                tokio::spawn(async move {
                    let _ = adapter.unsubscribe(&u).await;
                    let _ = send(&layer, &resolver, m, &hop).await;
                });
            }
        });
    }
}

/// Answers `st` with the response `why` maps to.
fn refuse(st: ServerTransaction, why: Reject) {
    tokio::spawn(async move {
        let r = why.response(&st);
        let _ = st.respond(r).await;
    });
}

/// What the HTTP side answers when a change could not be made durable.
fn store_failure() -> ApiError {
    ApiError::Unavailable("store failure: the change is not durable".into())
}

/// The request's To with our tag.
fn to_with_tag(req: &Message, tag: &str) -> String {
    match req.to() {
        Some(t) => {
            let mut t = t.clone();
            t.set_tag(tag);
            t.to_string()
        }
        None => String::new(),
    }
}

/// Sends an in-dialog request (failing over, RFC 3263 §4.3); true on a 2xx.
async fn send(layer: &TransactionLayer, resolver: &Resolver, m: Message, hop: &Uri) -> bool {
    layer
        .send_with_failover(resolver, hop, m)
        .await
        .is_ok_and(|r| r.status().is_some_and(|c| (200..300).contains(&c)))
}
