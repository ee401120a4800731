//! The gateway as a state machine: [`GatewayCore::handle`] takes one
//! [`Event`] and the time, changes the dialogs it holds, and returns the
//! [`Effects`] that change calls for. It performs no I/O, reads no clock and
//! spawns nothing; `driver.rs` does all three. The two mappings live in
//! `cpim_to_sip.rs` (seed §7.2) and `sip_to_cpim.rs` (seed §7.1).

use super::GatewaySettings;
use super::effects::{Effects, ReplyId, TxId, Undo};
use super::held::{Held, Outstanding};
use super::records::{Direction, GatewayDialog};
use crate::cpim::{self, CpimResponse, NotifyRequest, SubscribeRequest, UnsubscribeRequest};
use crate::reject::Reject;
use crate::sip::{HeaderName, Message, Method, Scheme, SubscriptionState, Uri};
use crate::transaction::IncomingRequest;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use super::ApiError;
use super::effects::Effect;

/// A SUBSCRIBE the gateway sent, by Call-ID and our tag.
pub type PendingKey = (String, String);

/// What happens to the gateway.
#[derive(Debug)]
pub enum Event<'a> {
    /// `POST /cpim/v1/subscribe`.
    CpimSubscribe {
        req: SubscribeRequest,
        reply: ReplyId,
    },
    /// `POST /cpim/v1/unsubscribe`.
    CpimUnsubscribe {
        req: UnsubscribeRequest,
        reply: ReplyId,
    },
    /// `POST /cpim/v1/notify`.
    CpimNotify { req: NotifyRequest, reply: ReplyId },
    /// A SIP request routed to the gateway (SUBSCRIBE or NOTIFY).
    Sip {
        tx: TxId,
        request: &'a IncomingRequest,
    },
    /// The final response (or failure status) of a SUBSCRIBE we sent.
    SubscribeDone {
        key: PendingKey,
        outcome: Result<Box<Message>, u16>,
    },
    /// The adapter's answer to `Effect::Ask` (seed §7.1).
    AdapterAnswered {
        tx: TxId,
        request: &'a IncomingRequest,
        id: String,
        refresh: bool,
        outcome: Result<CpimResponse, String>,
    },
    /// A NOTIFY sent with `report` is answered: `ok` on a 2xx.
    NotifyDone { id: String, ok: bool },
    /// A commit failed; memory follows the store.
    Undo(Undo),
    /// Time passed: timers at or before `now` fire.
    Tick,
}

pub(super) struct Pending {
    pub(super) watcher: String,
    pub(super) target: String,
    pub(super) trans_id: String,
    pub(super) request: Message,
    pub(super) cpim_until: i64,
    pub(super) reply: Option<ReplyId>,
    /// An unsubscribe: state goes whatever the answer.
    pub(super) unsubscribe: bool,
    /// Set when a NOTIFY created the dialog before the 2xx (RFC 6665 §4.1.2.4).
    pub(super) early_id: Option<String>,
}

pub(super) struct Entry {
    pub(super) rec: GatewayDialog,
    /// SIP → CPIM: a NOTIFY is in flight; `latest` waits for it.
    pub(super) in_flight: bool,
    pub(super) latest: Option<(String, String)>,
}

impl Entry {
    /// A dialog held with nothing in flight.
    pub(super) fn idle(rec: GatewayDialog) -> Entry {
        Entry {
            rec,
            in_flight: false,
            latest: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// CPIM → SIP: refresh the SUBSCRIBE (or end it when the CPIM duration is over).
    Refresh(String),
    /// SIP → CPIM: the SIP watcher did not refresh.
    Expire(String),
    /// CPIM → SIP: the final NOTIFY of a dialog we unsubscribed from is no
    /// longer expected.
    Closed(String),
}

/// The gateway's state: every gatewayed dialog and every SUBSCRIBE awaiting
/// its answer.
///
/// Invariants: a dialog is in `dialogs` iff its record is in the store or in
/// a commit the driver has not finished (an `Undo` comes back if that
/// fails); every CPIM → SIP dialog is in `by_pair`; every dialog has one
/// live timer (a popped timer whose time no longer matches the record is
/// stale and ignored).
pub struct GatewayCore {
    pub(super) settings: Arc<GatewaySettings>,
    pub(super) dialogs: Held,
    /// CPIM → SIP dialogs by (watcher, target) as the adapter sent them.
    pub(super) by_pair: HashMap<(String, String), String>,
    pub(super) pending: Outstanding,
    /// Dialogs we unsubscribed from, until when their final NOTIFY is still
    /// answered 200 (RFC 6665 §4.1.2.3: the subscription ends with it).
    pub(super) closing: HashMap<String, i64>,
    pub(super) timers: BinaryHeap<Reverse<(i64, Timer)>>,
}

impl GatewayCore {
    pub fn new(settings: Arc<GatewaySettings>) -> GatewayCore {
        GatewayCore {
            settings,
            dialogs: Held::default(),
            by_pair: HashMap::new(),
            pending: Outstanding::default(),
            closing: HashMap::new(),
            timers: BinaryHeap::new(),
        }
    }

    /// Holds a dialog loaded from the store and arms its timer (a timer
    /// already due fires at the first [`Event::Tick`]).
    pub fn restore(&mut self, rec: GatewayDialog) {
        match rec.direction {
            Direction::CpimToSip => {
                self.by_pair
                    .insert((rec.watcher.clone(), rec.target.clone()), rec.id.clone());
                self.timers
                    .push(Reverse((refresh_at(&rec), Timer::Refresh(rec.id.clone()))));
            }
            Direction::SipToCpim => {
                self.timers
                    .push(Reverse((rec.expires_at, Timer::Expire(rec.id.clone()))));
            }
        }
        self.dialogs.insert(rec.id.clone(), Entry::idle(rec));
    }

    /// Takes over a dialog another node held (issue 18): restored as at a
    /// start, unless this core holds it already.
    pub fn adopt(&mut self, rec: GatewayDialog) {
        if self.dialogs.get_mut(&rec.id).is_none() {
            self.restore(rec);
        }
    }

    /// When the next timer is due (UNIX ms).
    pub fn next_timer(&self) -> Option<i64> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Table changes not yet handed out (after [`GatewayCore::restore`]).
    pub fn take_dialog_events(&mut self) -> Vec<crate::dialog_table::DialogEvent> {
        let mut v = Vec::new();
        self.dialogs.take_events(&mut v);
        self.pending.take_events(&mut v);
        v
    }

    /// Applies `event` at `now` (UNIX ms).
    pub fn handle(&mut self, event: Event<'_>, now: i64) -> Effects {
        let mut fx = Effects::default();
        match event {
            Event::CpimSubscribe { req, reply } => self.cpim_subscribe(req, reply, now, &mut fx),
            Event::CpimUnsubscribe { req, reply } => self.cpim_unsubscribe(req, reply, &mut fx),
            Event::CpimNotify { req, reply } => self.cpim_notify(req, reply, now, &mut fx),
            Event::Sip { tx, request } => match request.request.method() {
                Some(Method::Notify) => self.sip_notify(tx, request, now, &mut fx),
                Some(Method::Subscribe) => self.sip_subscribe(tx, request, &mut fx),
                _ => refuse(&mut fx, tx, request, Reject::MethodNotAllowed),
            },
            Event::SubscribeDone { key, outcome } => {
                self.subscribe_done(key, outcome, now, &mut fx)
            }
            Event::AdapterAnswered {
                tx,
                request,
                id,
                refresh,
                outcome,
            } => self.adapter_answered(tx, request, id, outcome, refresh, now, &mut fx),
            Event::NotifyDone { id, ok } => self.notify_done(&id, ok, now, &mut fx),
            Event::Undo(u) => self.undo(u, &mut fx),
            Event::Tick => self.fire(now, &mut fx),
        }
        fx.dialogs = self.take_dialog_events();
        fx
    }

    fn undo(&mut self, u: Undo, fx: &mut Effects) {
        match u {
            Undo::Unsent { key, cpim_until } => {
                // Not sent: the adapter (if it asked) learns the failure.
                let Some(p) = self.pending.remove(&key) else {
                    return;
                };
                if let Some(e) = p.early_id.and_then(|id| self.dialogs.get_mut(&id)) {
                    e.rec.cpim_until = cpim_until;
                }
                if let Some(reply) = p.reply {
                    fx.push(Effect::Answer {
                        reply,
                        result: Err(store_failure()),
                    });
                }
            }
            Undo::Revert(rec) => {
                // Its timer for the stored expiry is still armed and,
                // matching again, fires.
                if let Some(e) = self.dialogs.get_mut(&rec.id) {
                    e.rec = *rec;
                    e.in_flight = false;
                }
            }
            Undo::Restore(recs) => {
                for rec in recs {
                    let id = rec.id.clone();
                    if rec.direction == Direction::CpimToSip {
                        self.by_pair
                            .insert((rec.watcher.clone(), rec.target.clone()), id.clone());
                    }
                    self.dialogs.insert(id, Entry::idle(rec));
                }
            }
            Undo::NotInFlight(ids) => {
                for id in ids {
                    if let Some(e) = self.dialogs.get_mut(&id) {
                        e.in_flight = false;
                    }
                }
            }
            Undo::Forget(id) => {
                self.dialogs.remove(&id);
            }
        }
    }

    fn fire(&mut self, now: i64, fx: &mut Effects) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, t))) = self.timers.pop() else {
                break;
            };
            match t {
                Timer::Refresh(id) => self.refresh_due(&id, at, now, fx),
                Timer::Expire(id) => self.expire_due(&id, at, fx),
                Timer::Closed(id) => {
                    if self.closing.get(&id).is_some_and(|until| *until <= at) {
                        self.closing.remove(&id);
                        self.dialogs.forget_route(&id);
                    }
                }
            }
        }
    }

    /// The Request-URI host is a local domain: the presence agent serves it.
    pub(super) fn is_local(&self, u: &Uri) -> bool {
        let host = host_of(u);
        self.settings
            .local_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(&host))
    }

    /// Forgets a CPIM → SIP dialog, in memory and in `batch`.
    pub(super) fn remove_c2s(&mut self, id: &str, batch: &mut crate::store::Batch) {
        if let Some(e) = self.dialogs.remove(id) {
            self.by_pair
                .remove(&(e.rec.watcher.clone(), e.rec.target.clone()));
            batch.delete(crate::store::Tree::Dialogs, id.as_bytes().to_vec());
        }
    }

    /// A NOTIFY in a SIP → CPIM dialog: From = target with the dialog's
    /// tag, To = watcher, stored Call-ID, route set, next CSeq (§7.1). The
    /// record comes back with its CSeq advanced.
    pub(super) fn build_notify(
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
        (m, hop, rec)
    }
}

/// When to refresh a CPIM → SIP subscription: well before it expires.
pub(super) fn refresh_at(rec: &GatewayDialog) -> i64 {
    let left = rec.expires_at - rec.refreshed_at;
    let margin = (left / 10).clamp(1_000, 60_000);
    (rec.expires_at - margin)
        .min(rec.cpim_until)
        .max(rec.refreshed_at)
}

/// A URI from the API: `pres:`, `im:`, `sip:` or `sips:` with a user and host.
pub(super) fn api_uri(field: &str, s: &str) -> Result<Uri, ApiError> {
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

pub(super) fn host_of(u: &Uri) -> String {
    u.host.as_ref().map(|h| h.canonical()).unwrap_or_default()
}

/// The seed §7.1 transID of a SIP request.
pub(super) fn trans_id_of(m: &Message) -> String {
    cpim::trans_id(
        m.call_id().unwrap_or(""),
        &m.to().map(|t| t.uri.to_string()).unwrap_or_default(),
        &m.from().map(|f| f.uri.to_string()).unwrap_or_default(),
        m.cseq().map_or(0, |c| c.seq),
        m.from().and_then(|f| f.tag()).unwrap_or(""),
        &m.request_uri().map(ToString::to_string).unwrap_or_default(),
    )
}

/// Answers `tx` with the response `why` maps to.
pub(super) fn refuse(fx: &mut Effects, tx: TxId, request: &IncomingRequest, why: Reject) {
    fx.push(Effect::Respond {
        tx,
        response: why.response(request),
    });
}

/// What the HTTP side answers when a change could not be made durable.
pub(crate) fn store_failure() -> ApiError {
    ApiError::Unavailable("store failure: the change is not durable".into())
}
