//! SIP → CPIM (seed §7.1): a SIP watcher of a CPIM presentity. A SUBSCRIBE
//! to a `cpim_domains` presentity becomes a CPIM subscribe to the adapter;
//! CPIM notifies from the adapter become NOTIFYs in every matching dialog;
//! the watcher's silence past the expiry becomes a CPIM unsubscribe.

use super::core::{Entry, GatewayCore, Timer, api_uri, refuse, trans_id_of};
use super::effects::{AdapterCall, Effect, Effects, ReplyId, TxId, Undo};
use super::records::{Direction, GatewayDialog};
use super::{ApiError, watcher_of};
use crate::cpim::{
    self, CpimResponse, NotifyRequest, Status, SubscribeRequest, UnsubscribeRequest,
};
use crate::dialog::{Dialog, dialog_id};
use crate::presence::aor_key;
use crate::reject::Reject;
use crate::sip::{HeaderName, Message, Scheme, SubState, SubscriptionState, Uri};
use crate::store::{Batch, Tree, codec};
use crate::transaction::IncomingRequest;
use std::cmp::Reverse;

impl GatewayCore {
    pub(super) fn sip_subscribe(&mut self, tx: TxId, inc: &IncomingRequest, fx: &mut Effects) {
        let req = &inc.request;
        match req.event() {
            Ok(Some(e)) if e.is("presence") => {}
            _ => return refuse(fx, tx, inc, Reject::BadEvent { allow: "presence" }),
        }
        let expires = match req.expires() {
            Ok(e) => e.unwrap_or(self.settings.default_expires),
            Err(_) => return refuse(fx, tx, inc, Reject::bad("Bad Expires")),
        };
        if expires != 0 && expires < self.settings.min_expires {
            let min = self.settings.min_expires;
            return refuse(fx, tx, inc, Reject::IntervalTooBrief { min });
        }
        let expires = expires.min(self.settings.max_expires);
        let watcher = watcher_of(inc);
        let mut target = req
            .request_uri()
            .map(|u| u.with_scheme(Scheme::Pres).to_string())
            .unwrap_or_default();
        let from_tag = req.from().and_then(|f| f.tag()).unwrap_or("");
        let (id, trans_id, refresh) = match req.to().and_then(|t| t.tag()) {
            Some(tag) => {
                let id = dialog_id(req.call_id().unwrap_or(""), tag, from_tag);
                let Some(e) = self
                    .dialogs
                    .get_mut(&id)
                    .filter(|e| e.rec.direction == Direction::SipToCpim)
                else {
                    return refuse(fx, tx, inc, Reject::DialogGone);
                };
                // Only the dialog's own watcher may refresh or end it.
                if e.rec.watcher != watcher {
                    let why = Reject::forbidden("not this dialog's watcher");
                    return refuse(fx, tx, inc, why);
                }
                if !e
                    .rec
                    .dialog
                    .accept_remote_cseq(req.cseq().map_or(0, |c| c.seq))
                {
                    return refuse(fx, tx, inc, Reject::CSeqOutOfOrder);
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
                (id, tag.to_owned(), true)
            }
            None => {
                let trans_id = trans_id_of(req);
                let id = dialog_id(req.call_id().unwrap_or(""), &trans_id, from_tag);
                (id, trans_id, false)
            }
        };
        let call = if expires == 0 {
            // Expires 0 → CPIM unsubscribe with transID = the To-tag.
            AdapterCall::Unsubscribe(UnsubscribeRequest {
                watcher,
                target,
                trans_id: Some(trans_id),
            })
        } else {
            AdapterCall::Subscribe(SubscribeRequest {
                watcher,
                target,
                duration: Some(expires),
                trans_id: Some(trans_id),
            })
        };
        fx.push(Effect::Ask {
            tx,
            id,
            refresh,
            call,
        });
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn adapter_answered(
        &mut self,
        tx: TxId,
        inc: &IncomingRequest,
        id: String,
        outcome: Result<CpimResponse, String>,
        refresh: bool,
        now: i64,
        fx: &mut Effects,
    ) {
        let req = &inc.request;
        let our_tag = if refresh {
            req.to().and_then(|t| t.tag()).unwrap_or("").to_owned()
        } else {
            trans_id_of(req)
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
                let mut r = Reject::TemporarilyUnavailable { retry_after: 30 }.response(inc);
                r.set_header(HeaderName::To, to_with_tag(req, &our_tag));
                return fx.push(Effect::Respond { tx, response: r });
            }
            Ok(r) => r,
        };
        let mut batch = Batch::default();
        if requested == 0 || resp.status == Status::Failure {
            // Unsubscribe (or refused): 200 / 603, final NOTIFY, state removed.
            let mut r = if requested == 0 {
                inc.reply(200, "OK")
            } else {
                Reject::Decline.response(inc)
            };
            r.set_header(HeaderName::To, to_with_tag(req, &our_tag));
            r.push_header(HeaderName::Expires, "0");
            let mut then = vec![Effect::Respond { tx, response: r }];
            let mut undo = None;
            if let Some(e) = self.dialogs.remove(&id) {
                undo = Some(Undo::Restore(vec![e.rec.clone()]));
                batch.delete(Tree::Dialogs, id.as_bytes().to_vec());
                let reason = if requested == 0 {
                    "timeout"
                } else {
                    "rejected"
                };
                let (request, hop, _) = self.build_notify(
                    e.rec,
                    SubscriptionState::new(SubState::Terminated).with_param("reason", reason),
                    None,
                );
                then.push(Effect::Notify {
                    request,
                    hop,
                    report: None,
                });
            }
            // The end is not durable: neither a 2xx nor the final NOTIFY
            // (the watcher may try again).
            return fx.commit(batch, then, undo);
        }
        // success / indeterminate → 202, To-tag = transID.
        let duration = resp.duration.unwrap_or(requested).min(requested.max(1));
        let state = if resp.status == Status::Indeterminate {
            SubState::Pending
        } else {
            SubState::Active
        };
        let mut before = None;
        let rec = match self.dialogs.get_mut(&id) {
            Some(e) => {
                before = Some(Box::new(e.rec.clone()));
                e.rec.expires_at = now + i64::from(duration) * 1000;
                e.rec.clone()
            }
            None => {
                let mut dialog = match Dialog::uas(req, &our_tag) {
                    Ok(d) => d,
                    Err(e) => return refuse(fx, tx, inc, Reject::bad(e.to_string())),
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
                    watcher: watcher_of(inc),
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
        // Our Contact is the gateway itself, in the 2xx as in every NOTIFY:
        // the watcher's in-dialog requests come here (RFC 3261 §12.1.1) and
        // are routed by dialog, whatever their Request-URI says.
        let mut r = inc.reply(202, "Accepted");
        r.set_header(HeaderName::To, to_with_tag(req, &our_tag));
        r.push_header(HeaderName::Contact, self.settings.contact.clone());
        r.push_header(HeaderName::Expires, duration.to_string());
        // The immediate NOTIFY RFC 6665 requires; no body until the adapter
        // sends state (design §5), or the last state known on a refresh.
        let body = rec.last_content_type.clone().zip(rec.last_body.clone());
        let substate = SubscriptionState::new(state).with_param("expires", duration);
        let (request, hop, rec) = self.build_notify(rec, substate, body);
        batch.put(Tree::Dialogs, id.as_bytes().to_vec(), codec::encode(&rec));
        let e = self.dialogs.get_mut(&id).expect("inserted");
        e.rec = rec;
        e.in_flight = true;
        // No 202 and no NOTIFY for a dialog that is not durable; a new one
        // is forgotten again, a refreshed one goes back to its stored
        // expiry.
        let undo = match before {
            Some(rec) => Undo::Revert(rec),
            None => Undo::Forget(id.clone()),
        };
        let then = vec![
            Effect::Respond { tx, response: r },
            Effect::Notify {
                request,
                hop,
                report: Some(id),
            },
        ];
        fx.commit(batch, then, Some(undo));
    }

    /// `POST /cpim/v1/notify`: a CPIM presentity's state to every matching
    /// SIP → CPIM dialog.
    pub(super) fn cpim_notify(
        &mut self,
        req: NotifyRequest,
        reply: ReplyId,
        now: i64,
        fx: &mut Effects,
    ) {
        let checked = self.check_notify(&req);
        let (state, doc, ids) = match checked {
            Ok(c) => c,
            Err(e) => {
                return fx.push(Effect::Answer {
                    reply,
                    result: Err(e),
                });
            }
        };
        let trans_id = req.trans_id.clone().unwrap_or_else(cpim::new_trans_id);
        if ids.is_empty() {
            let result = Ok(Reject::DialogGone.cpim(&trans_id));
            return fx.push(Effect::Answer { reply, result });
        }
        if state == SubState::Terminated {
            return self.cpim_terminate(&ids, req.reason.as_deref(), doc, &trans_id, reply, fx);
        }
        let Some((ct, body)) = doc else {
            // Only a terminating notify may come without a document.
            let e = ApiError::BadRequest("presence needs a body or tuples".into());
            return fx.push(Effect::Answer {
                reply,
                result: Err(e),
            });
        };
        let mut batch = Batch::default();
        let mut then = vec![Effect::Answer {
            reply,
            result: Ok(CpimResponse::success(&trans_id, None)),
        }];
        let mut sent = Vec::new();
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
            let remaining = ((e.rec.expires_at - now).max(0) / 1000) as u32;
            let rec = e.rec.clone();
            let (request, hop, rec) = self.build_notify(
                rec,
                SubscriptionState::new(state.clone()).with_param("expires", remaining),
                Some((ct.clone(), body.clone())),
            );
            batch.put(Tree::Dialogs, id.as_bytes().to_vec(), codec::encode(&rec));
            self.dialogs.get_mut(id).expect("listed").rec = rec;
            then.push(Effect::Notify {
                request,
                hop,
                report: Some(id.clone()),
            });
            sent.push(id.clone());
        }
        // Their CSeqs are not durable: no NOTIFY goes out.
        fx.commit(batch, then, Some(Undo::NotInFlight(sent)));
    }

    /// Validates a CPIM notify (docs/cpim-api.md): its state, its document
    /// (the body exactly as carried, or PIDF rendered from the tuples; a
    /// terminating notify may carry none) and the dialogs it is for.
    #[allow(clippy::type_complexity)]
    fn check_notify(
        &self,
        req: &NotifyRequest,
    ) -> Result<(SubState, Option<(String, String)>, Vec<String>), ApiError> {
        let watcher = api_uri("watcher", &req.watcher)?;
        let target = api_uri("target", &req.target)?;
        // Active unless it says pending or terminated; a reason only with
        // terminated (RFC 6665 §4.1.3 reason codes are tokens).
        let state = match req.state.as_deref() {
            None | Some("active") => SubState::Active,
            Some("pending") => SubState::Pending,
            Some("terminated") => SubState::Terminated,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "state: {other:?} is not active, pending or terminated"
                )));
            }
        };
        if let Some(r) = &req.reason {
            if state != SubState::Terminated
                || r.is_empty()
                || !r.bytes().all(crate::sip::grammar_token_char)
            {
                return Err(ApiError::BadRequest(
                    "reason: a token, and only with state terminated".into(),
                ));
            }
        }
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
                return Err(ApiError::BadRequest(
                    "presence needs a body or tuples".into(),
                ));
            }
        };
        if let Some((ct, body)) = &doc {
            crate::body::presence_of(ct, &bytes::Bytes::from(body.clone()))
                .map_err(|e| ApiError::BadRequest(format!("presence body: {e}")))?;
        }
        let w_key = aor_key(&watcher);
        let t_key = aor_key(&target);
        let ids = self
            .dialogs
            .iter()
            .filter(|(_, e)| e.rec.direction == Direction::SipToCpim)
            .filter(|(_, e)| {
                Uri::parse_str(&e.rec.watcher).is_ok_and(|u| aor_key(&u) == w_key)
                    && Uri::parse_str(&e.rec.target).is_ok_and(|u| aor_key(&u) == t_key)
            })
            .map(|(id, _)| id.clone())
            .collect();
        Ok((state, doc, ids))
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
        reply: ReplyId,
        fx: &mut Effects,
    ) {
        let mut batch = Batch::default();
        let mut then = vec![Effect::Answer {
            reply,
            result: Ok(CpimResponse::success(trans_id, None)),
        }];
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
            let (request, hop, _) = self.build_notify(e.rec, ss, doc.clone());
            then.push(Effect::Notify {
                request,
                hop,
                report: None,
            });
        }
        // Not durable: the store still holds them, so memory does too.
        fx.commit(batch, then, Some(Undo::Restore(removed)));
    }

    pub(super) fn notify_done(&mut self, id: &str, ok: bool, now: i64, fx: &mut Effects) {
        let Some(e) = self.dialogs.get_mut(id) else {
            return;
        };
        e.in_flight = false;
        if !ok {
            // The SIP watcher is gone (481, 408, timeout): CPIM unsubscribe.
            // Not durable: the dialog comes back at the next start and ends
            // then; the CPIM side hears of it once.
            let e = self.dialogs.remove(id).expect("present");
            let mut batch = Batch::default();
            batch.delete(Tree::Dialogs, id.as_bytes().to_vec());
            let u = UnsubscribeRequest {
                watcher: e.rec.watcher,
                target: e.rec.target,
                trans_id: Some(e.rec.trans_id),
            };
            return fx.commit(batch, vec![Effect::Tell(u)], None);
        }
        let Some((ct, body)) = e.latest.take() else {
            return;
        };
        e.in_flight = true;
        let remaining = ((e.rec.expires_at - now).max(0) / 1000) as u32;
        let rec = e.rec.clone();
        let (request, hop, rec) = self.build_notify(
            rec,
            SubscriptionState::new(SubState::Active).with_param("expires", remaining),
            Some((ct, body)),
        );
        let mut batch = Batch::default();
        batch.put(Tree::Dialogs, id.as_bytes().to_vec(), codec::encode(&rec));
        self.dialogs.get_mut(id).expect("present").rec = rec;
        let send = Effect::Notify {
            request,
            hop,
            report: Some(id.to_owned()),
        };
        // The CSeq is not durable: nothing is sent with it.
        fx.commit(
            batch,
            vec![send],
            Some(Undo::NotInFlight(vec![id.to_owned()])),
        );
    }

    pub(super) fn expire_due(&mut self, id: &str, at: i64, fx: &mut Effects) {
        if self.dialogs.get(id).is_none_or(|e| e.rec.expires_at != at) {
            return;
        }
        // The SIP watcher did not refresh: CPIM unsubscribe, final NOTIFY.
        // Not durable: the dialog, expired, is loaded and ended at the next
        // start; nothing is sent that the store does not say.
        let e = self.dialogs.remove(id).expect("checked");
        let mut batch = Batch::default();
        batch.delete(Tree::Dialogs, id.as_bytes().to_vec());
        let u = UnsubscribeRequest {
            watcher: e.rec.watcher.clone(),
            target: e.rec.target.clone(),
            trans_id: Some(e.rec.trans_id.clone()),
        };
        let (request, hop, _) = self.build_notify(
            e.rec,
            SubscriptionState::new(SubState::Terminated).with_param("reason", "timeout"),
            None,
        );
        let then = vec![
            Effect::Tell(u),
            Effect::Notify {
                request,
                hop,
                report: None,
            },
        ];
        fx.commit(batch, then, None);
    }
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
