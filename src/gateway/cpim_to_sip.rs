//! CPIM → SIP (seed §7.2): a CPIM watcher of a SIP presentity. A CPIM
//! subscribe opens a SUBSCRIBE dialog towards the SIP domain, refreshed
//! while the CPIM duration lasts; each NOTIFY becomes a CPIM notify to the
//! adapter; an unsubscribe sends `Expires: 0`. A CPIM subscribe for a local
//! presentity goes to the presence agent instead.

use super::core::{
    Entry, GatewayCore, Pending, PendingKey, Timer, api_uri, refresh_at, refuse, trans_id_of,
};
use super::effects::{Delivery, Effect, Effects, LocalCall, ReplyId, TxId, Undo};
use super::records::{Direction, GatewayDialog};
use super::{ApiError, presence_of_body};
use crate::cpim::{
    self, CpimResponse, NotifyRequest, Status, SubscribeRequest, UnsubscribeRequest,
};
use crate::dialog::{Dialog, dialog_id};
use crate::presence::aor_key;
use crate::reject::Reject;
use crate::sip::{HeaderName, Message, Method, Scheme, SubState};
use crate::store::{Batch, Tree, codec};
use crate::transaction::{IncomingRequest, random_token};
use std::cmp::Reverse;

/// What a CPIM → SIP SUBSCRIBE accepts (design §5).
const ACCEPT: &str =
    "application/pidf+xml, application/cpim-pidf+xml, application/xpidf+xml, message/cpim";

impl GatewayCore {
    pub(super) fn cpim_subscribe(
        &mut self,
        req: SubscribeRequest,
        reply: ReplyId,
        now: i64,
        fx: &mut Effects,
    ) {
        let answer = |fx: &mut Effects, result| fx.push(Effect::Answer { reply, result });
        let (watcher, target) = match (
            api_uri("watcher", &req.watcher),
            api_uri("target", &req.target),
        ) {
            (Ok(w), Ok(t)) => (w, t),
            (Err(e), _) | (_, Err(e)) => return answer(fx, Err(e)),
        };
        let trans_id = req.trans_id.clone().unwrap_or_else(cpim::new_trans_id);
        if trans_id.is_empty() || !trans_id.bytes().all(crate::sip::grammar_token_char) {
            let e = ApiError::BadRequest("transID must be a SIP token".into());
            return answer(fx, Err(e));
        }
        let duration = req.duration.unwrap_or(self.settings.default_expires);
        if self.is_local(&target) {
            // A local presentity: the presence agent serves the CPIM watcher.
            let call = LocalCall::Subscribe {
                aor: aor_key(&target),
                watcher: req.watcher,
                target: req.target,
                duration,
                trans_id,
            };
            return fx.push(Effect::Local { call, reply });
        }
        let pair = (req.watcher.clone(), req.target.clone());
        if let Some(id) = self.by_pair.get(&pair).cloned() {
            // Already subscribed: a refresh with the new duration.
            let until = now + i64::from(duration) * 1000;
            return self.send_in_dialog(&id, duration, Some(until), Some(reply), false, fx);
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
        m.push_header(HeaderName::Accept, ACCEPT);
        m.push_header(HeaderName::Expires, duration.to_string());
        let key = (call_id, trans_id.clone());
        self.pending.insert(
            key.clone(),
            Pending {
                watcher: req.watcher,
                target: req.target,
                trans_id,
                request: m.clone(),
                cpim_until: now + i64::from(duration) * 1000,
                reply: Some(reply),
                unsubscribe: false,
                early_id: None,
            },
        );
        fx.push(Effect::Subscribe {
            key,
            request: m,
            hop: ruri,
        });
    }

    /// A SUBSCRIBE in an existing CPIM → SIP dialog (refresh or, with 0,
    /// unsubscribe).
    /// `cpim_until`: a CPIM refresh's new duration, kept only if the
    /// SUBSCRIBE can be sent.
    pub(super) fn send_in_dialog(
        &mut self,
        id: &str,
        expires: u32,
        cpim_until: Option<i64>,
        reply: Option<ReplyId>,
        unsubscribe: bool,
        fx: &mut Effects,
    ) {
        let Some(e) = self.dialogs.get_mut(id) else {
            return;
        };
        let stored_until = e.rec.cpim_until;
        if let Some(until) = cpim_until {
            e.rec.cpim_until = until;
        }
        let mut m = e
            .rec
            .dialog
            .request(Method::Subscribe, &self.settings.contact);
        m.push_header(HeaderName::Event, "presence");
        m.push_header(HeaderName::Expires, expires.to_string());
        let key = (
            e.rec.dialog.call_id().to_owned(),
            e.rec.dialog.local_tag().to_owned(),
        );
        let hop = e.rec.dialog.next_hop();
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
        let send = Effect::Subscribe {
            key: key.clone(),
            request: m,
            hop,
        };
        let undo = Undo::Unsent {
            key,
            cpim_until: stored_until,
        };
        fx.commit(batch, vec![send], Some(undo));
    }

    pub(super) fn subscribe_done(
        &mut self,
        key: PendingKey,
        outcome: Result<Box<Message>, u16>,
        now: i64,
        fx: &mut Effects,
    ) {
        let Some(p) = self.pending.remove(&key) else {
            return;
        };
        let (code, reason) = match &outcome {
            Ok(r) => (
                r.status().unwrap_or(500),
                r.reason().unwrap_or("").to_owned(),
            ),
            Err(c) => (*c, crate::sip::default_reason(*c).to_owned()),
        };
        let answer = |result| {
            p.reply
                .map(|reply| Effect::Answer { reply, result })
                .into_iter()
                .collect::<Vec<_>>()
        };
        let mut batch = Batch::default();
        if p.unsubscribe {
            // "In all cases, any subscription state in the gateway is destroyed."
            if let Some(id) = &p.early_id {
                self.remove_c2s(id, &mut batch);
                // The notifier's final NOTIFY still comes: answer it 200
                // for 64·T1 (RFC 6665 §4.1.2.3), without passing it on.
                let until = now + 32_000;
                self.closing.insert(id.clone(), until);
                self.dialogs.keep_route(id);
                self.timers
                    .push(Reverse((until, Timer::Closed(id.clone()))));
            }
            let resp = if (200..300).contains(&code) {
                CpimResponse {
                    status: Status::Success,
                    trans_id: p.trans_id.clone(),
                    duration: None,
                    code: None,
                    reason: None,
                }
            } else {
                CpimResponse::failure(&p.trans_id, code, &reason)
            };
            // "Unsubscribed" only once the end is durable.
            return fx.commit(batch, answer(Ok(resp)), None);
        }
        let resp = match &outcome {
            Ok(r) if (200..300).contains(&code) => r,
            _ => {
                // Failure: the CPIM side learns the SIP status (§7.2).
                if let Some(id) = &p.early_id {
                    self.remove_c2s(id, &mut batch);
                }
                let r = CpimResponse::failure(&p.trans_id, code, &reason);
                return fx.commit(batch, answer(Ok(r)), None);
            }
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
                        let why = format!("Bad Gateway: {e}");
                        let r = CpimResponse::failure(&p.trans_id, 502, &why);
                        fx.effects.extend(answer(Ok(r)));
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
        let rec = &self.dialogs[&id].rec;
        self.timers
            .push(Reverse((refresh_at(rec), Timer::Refresh(id.clone()))));
        batch.put(Tree::Dialogs, id.as_bytes().to_vec(), codec::encode(rec));
        let r = CpimResponse {
            status,
            trans_id: p.trans_id.clone(),
            duration: Some(granted),
            code: None,
            reason: None,
        };
        fx.commit(batch, answer(Ok(r)), None);
    }

    pub(super) fn refresh_due(&mut self, id: &str, at: i64, now: i64, fx: &mut Effects) {
        let Some(e) = self.dialogs.get(id) else {
            return;
        };
        if refresh_at(&e.rec) != at {
            return; // superseded by a later refresh
        }
        let left = ((e.rec.cpim_until - now) / 1000).max(0) as u32;
        if left == 0 {
            // The CPIM duration is over: end the SIP subscription.
            self.send_in_dialog(id, 0, None, None, true, fx);
        } else {
            let original = ((e.rec.expires_at - e.rec.refreshed_at) / 1000).max(1) as u32;
            self.send_in_dialog(id, left.min(original), None, None, false, fx);
        }
    }

    pub(super) fn cpim_unsubscribe(
        &mut self,
        req: UnsubscribeRequest,
        reply: ReplyId,
        fx: &mut Effects,
    ) {
        let target =
            match api_uri("watcher", &req.watcher).and_then(|_| api_uri("target", &req.target)) {
                Ok(t) => t,
                Err(e) => {
                    return fx.push(Effect::Answer {
                        reply,
                        result: Err(e),
                    });
                }
            };
        let trans_id = req.trans_id.clone().unwrap_or_else(cpim::new_trans_id);
        if self.is_local(&target) {
            let call = LocalCall::Unsubscribe {
                watcher: req.watcher,
                target: req.target,
                trans_id,
            };
            return fx.push(Effect::Local { call, reply });
        }
        match self.by_pair.get(&(req.watcher, req.target)).cloned() {
            Some(id) => self.send_in_dialog(&id, 0, None, Some(reply), true, fx),
            // Unknown: failure, nothing sent (§7.2).
            None => fx.push(Effect::Answer {
                reply,
                result: Ok(Reject::DialogGone.cpim(&trans_id)),
            }),
        }
    }

    /// A NOTIFY from the SIP side: to the adapter.
    pub(super) fn sip_notify(
        &mut self,
        tx: TxId,
        inc: &IncomingRequest,
        now: i64,
        fx: &mut Effects,
    ) {
        let req = &inc.request;
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
            match self.early_dialog(&key, req, now) {
                Some(id) => id,
                None if self.closing.get(&id).is_some_and(|until| *until > now) => {
                    let response = inc.reply(200, "OK");
                    return fx.push(Effect::Respond { tx, response });
                }
                None => return refuse(fx, tx, inc, Reject::DialogGone),
            }
        };
        let e = self.dialogs.get_mut(&id).expect("dialog exists");
        let before = e.rec.clone();
        if !e
            .rec
            .dialog
            .accept_remote_cseq(req.cseq().map_or(0, |c| c.seq))
        {
            return refuse(fx, tx, inc, Reject::CSeqOutOfOrder);
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
        let delivery = Delivery {
            watcher: e.rec.watcher.clone(),
            target: e.rec.target.clone(),
            path: "notify",
            payload: serde_json::to_value(&n).expect("serializes"),
        };
        let mut batch = Batch::default();
        // Not stored (or not queued): the dialog as it was, so that the
        // notifier's retransmission or retry is taken again.
        let undo = if terminated {
            self.remove_c2s(&id, &mut batch);
            Undo::Restore(vec![before])
        } else {
            batch.put(Tree::Dialogs, id.as_bytes().to_vec(), codec::encode(&e.rec));
            Undo::Revert(Box::new(before))
        };
        // The 200 goes once the delivery is queued durably.
        fx.push(Effect::Commit {
            batch,
            deliveries: vec![delivery],
            then: vec![Effect::Respond {
                tx,
                response: inc.reply(200, "OK"),
            }],
            undo: Some(undo),
        });
    }

    /// The dialog a NOTIFY creates before the 2xx to our SUBSCRIBE.
    fn early_dialog(&mut self, key: &PendingKey, notify: &Message, now: i64) -> Option<String> {
        let p = self.pending.get_mut(key)?;
        if p.unsubscribe {
            return None;
        }
        // The dialog from the NOTIFY: its From tag is the remote tag, its
        // Contact the remote target, its Record-Route the route set.
        let mut d = Dialog::uas(notify, &p.trans_id).ok()?;
        d.local_cseq = p.request.cseq().map_or(1, |c| c.seq);
        d.remote_cseq = None;
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
}
