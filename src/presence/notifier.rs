//! The notifier (RFC 6665 §4.2, RFC 3856 §6): SUBSCRIBE handling, NOTIFY
//! generation, subscription expiry.

use super::records::{DocFormat, Package, PolicyAction, SubStatus, SubscriptionRecord};
use super::{
    Agent, Effects, NotifyOutcome, OutNotify, TimerKey, WinfoPending, aor_key, now_ms, refuse,
};
use crate::body::negotiate;
use crate::body::winfo::{self, WatcherEntry, WatcherInfo, WatcherStatus};
use crate::dialog::{Dialog, dialog_id};
use crate::reject::Reject;
use crate::sip::{HeaderName, Method, Scheme, SubState, SubscriptionState};
use crate::store::Tree;
use crate::transaction::IncomingRequest;
use std::cmp::Reverse;
use std::sync::Arc;

/// Event packages this notifier serves.
pub(crate) const PACKAGES: &str = "presence, presence.winfo";

impl Agent {
    pub(crate) fn is_local(&self, host: &str) -> bool {
        self.settings
            .local_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(host))
    }

    pub(crate) fn on_subscribe(&mut self, st: &IncomingRequest) -> Effects {
        let req = st.request();
        // RFC 6665 §4.2.1.1 / §8.2.1: Event must name a package we serve.
        match req.event() {
            Ok(Some(e)) if e.is("presence") || e.is("presence.winfo") => {}
            Ok(_) => return refuse(st, Reject::BadEvent { allow: PACKAGES }),
            Err(e) => return refuse(st, Reject::bad(e.reason_phrase())),
        }
        let expires = match req.expires() {
            Ok(e) => e,
            Err(e) => return refuse(st, Reject::bad(e.reason_phrase())),
        };
        if req.to().and_then(|t| t.tag()).is_some() {
            return self.refresh(st, expires);
        }
        // A new subscription.
        let Some(ruri) = req.request_uri().cloned() else {
            return refuse(st, Reject::bad("Bad Request"));
        };
        let host = ruri
            .host
            .as_ref()
            .map(|h| h.canonical())
            .unwrap_or_default();
        if !matches!(ruri.scheme, Scheme::Sip | Scheme::Sips | Scheme::Pres)
            || !self.is_local(&host)
        {
            return refuse(st, Reject::NotFound);
        }
        let aor = aor_key(&ruri);
        let winfo = req
            .event()
            .ok()
            .flatten()
            .is_some_and(|e| e.is("presence.winfo"));
        // Policy applies to who the watcher is: the authenticated identity
        // when there is one, else the From AOR.
        let watcher_aor = match st.identity() {
            Some(id) => id.to_owned(),
            None => req.from().map(|f| aor_key(&f.uri)).unwrap_or_default(),
        };
        let content_type: DocFormat = if winfo {
            // RFC 3857 §5.2: only the presentity may see its watchers.
            if watcher_aor != aor {
                return refuse(st, Reject::Forbidden(None));
            }
            let acceptable = match req.accept() {
                Ok(None) => true,
                Ok(Some(list)) => list.iter().any(|m| {
                    (m.type_() == mime::STAR || m.type_() == mime::APPLICATION)
                        && (m.subtype() == mime::STAR
                            || m.subtype() == "watcherinfo" && m.suffix() == Some(mime::XML))
                }),
                Err(e) => return refuse(st, Reject::bad(e.reason_phrase())),
            };
            if !acceptable {
                return refuse(
                    st,
                    Reject::NotAcceptable {
                        accept: winfo::CONTENT_TYPE,
                    },
                );
            }
            DocFormat::WatcherInfo
        } else {
            let format = match req.accept() {
                Ok(a) => match negotiate(a.as_deref()) {
                    Some(f) => f,
                    None => {
                        return refuse(
                            st,
                            Reject::NotAcceptable {
                                accept: "application/pidf+xml, application/cpim-pidf+xml, application/xpidf+xml",
                            },
                        );
                    }
                },
                Err(e) => return refuse(st, Reject::bad(e.reason_phrase())),
            };
            DocFormat::Presence(format)
        };
        let requested = expires.unwrap_or(self.settings.default_expires);
        if requested != 0 && requested < self.settings.min_expires {
            let min = self.settings.min_expires;
            return refuse(st, Reject::IntervalTooBrief { min });
        }
        let granted = requested.min(self.settings.max_expires);
        let mut dialog = match Dialog::uas(req, st.to_tag()) {
            Ok(d) => d,
            Err(e) => return refuse(st, Reject::bad(e.to_string())),
        };
        let watcher = watcher_aor.clone();
        let event_id = req
            .event()
            .ok()
            .flatten()
            .and_then(|e| e.id().map(str::to_owned));
        // Authorization (issue 5, OMA flows 2.4–2.6); only the presentity
        // reaches its winfo, checked above.
        let action = if winfo {
            PolicyAction::Allow
        } else {
            self.decide(&aor, &watcher_aor)
        };
        if action == PolicyAction::Block {
            return refuse(st, Reject::Forbidden(None));
        }
        let pending = action == PolicyAction::Confirm;
        let polite = action == PolicyAction::PoliteBlock;
        let code = if pending {
            202
        } else {
            self.settings.subscribe_success_code
        };
        let mut resp = st.reply(code, if code == 202 { "Accepted" } else { "OK" });
        resp.push_header(HeaderName::Expires, granted.to_string());
        resp.push_header(HeaderName::Contact, self.settings.contact.clone());
        let mut fx = Effects {
            aor: Some(aor.clone()),
            ..Effects::default()
        };
        if granted == 0 {
            // A fetch (RFC 3856 §6.4, OMA flow 2.3): one NOTIFY with the
            // state, terminated; nothing is kept.
            let body = self.document(&aor, content_type, 0, None, pending || polite);
            let state =
                SubscriptionState::new(SubState::Terminated).with_param("reason", "timeout");
            let mut msg = dialog.request(Method::Notify, &self.settings.contact);
            let package = if winfo {
                Package::WatcherInfo
            } else {
                Package::Presence
            };
            decorate(
                &mut msg,
                package,
                event_id.as_deref(),
                &state,
                content_type,
                body,
            );
            fx.notifies.push(OutNotify {
                sub_id: dialog.id(),
                next_hop: dialog.next_hop(),
                msg,
                terminal: true,
            });
            fx.reply = Some(resp);
            return fx;
        }
        if let Err(limit) = self.admit(&watcher) {
            // Refused before anything is held, the limit named in a Warning.
            let (code, reason) = limit.status();
            let mut r = st.reply(code, reason);
            let why = limit.to_string().replace(['"', '\\'], "'");
            r.push_header(
                HeaderName::Warning,
                format!("399 {} \"{why}\"", self.layer.policy().agent),
            );
            if code == 503 {
                r.push_header(HeaderName::RetryAfter, "60");
            }
            return Effects {
                reply: Some(r),
                ..Effects::default()
            };
        }
        let rec = SubscriptionRecord {
            id: dialog.id().into(),
            presentity: aor.as_str().into(),
            watcher: watcher.into(),
            event: if winfo {
                Package::WatcherInfo
            } else {
                Package::Presence
            },
            event_id: event_id.map(String::into_boxed_str),
            dialog,
            expires_at: now_ms() + i64::from(granted) * 1000,
            format: content_type,
            status: if pending {
                SubStatus::Pending
            } else {
                SubStatus::Active
            },
            cpim: None,
            winfo_version: 0,
            polite,
            approved: false,
        };
        let id = rec.id.clone();
        let entry = (!winfo).then(|| winfo_entry(&rec, "subscribe"));
        self.add_sub(rec);
        fx.reply = Some(resp);
        // The immediate NOTIFY (RFC 6665 §4.2.1.2); it also persists the record.
        self.notify_or_defer(&id, &mut fx);
        if let Some(e) = entry {
            self.winfo_changed(&aor, vec![e], &mut fx);
        }
        fx
    }

    /// A SUBSCRIBE inside an existing dialog: refresh or unsubscribe.
    fn refresh(&mut self, st: &IncomingRequest, expires: Option<u32>) -> Effects {
        let req = st.request();
        let id = dialog_id(
            req.call_id().unwrap_or(""),
            req.to().and_then(|t| t.tag()).unwrap_or(""),
            req.from().and_then(|f| f.tag()).unwrap_or(""),
        );
        let cseq = req.cseq().map_or(0, |c| c.seq);
        let min = self.settings.min_expires;
        let max = self.settings.max_expires;
        let default = self.settings.default_expires;
        let Some(sub) = self.subs.get_mut(id.as_str()) else {
            return refuse(st, Reject::DialogGone);
        };
        let requested = expires.unwrap_or(default);
        if requested != 0 && requested < min {
            return refuse(st, Reject::IntervalTooBrief { min });
        }
        // RFC 3261 §12.2.2: a lower CSeq is out of order.
        if !sub.rec.dialog.accept_remote_cseq(cseq) {
            return refuse(st, Reject::CSeqOutOfOrder);
        }
        // SUBSCRIBE is a target refresh request (RFC 6665 §4.1.2.1).
        if let Ok(crate::sip::Contacts::List(l)) = req.contacts() {
            if let Some(c) = l.first() {
                sub.rec.dialog.set_remote_target(&c.uri.to_string());
            }
        }
        let granted = requested.min(max);
        let code = self.settings.subscribe_success_code;
        let mut resp = st.reply(code, if code == 202 { "Accepted" } else { "OK" });
        resp.push_header(HeaderName::Expires, granted.to_string());
        resp.push_header(HeaderName::Contact, self.settings.contact.clone());
        let aor = sub.rec.presentity.to_string();
        let mut fx = Effects {
            aor: Some(aor),
            reply: Some(resp),
            ..Effects::default()
        };
        if granted == 0 {
            // Unsubscribe: final NOTIFY, terminated;reason=timeout (RFC 6665 §4.2.1.4).
            self.terminate(&id, "timeout", &mut fx);
        } else {
            sub.rec.expires_at = now_ms() + i64::from(granted) * 1000;
            self.timers.push(Reverse((
                sub.rec.expires_at,
                TimerKey::Subscription(sub.rec.id.clone()),
            )));
            // RFC 6665 §4.2.1.2: a refresh is answered with a NOTIFY too.
            self.notify_or_defer(&id, &mut fx);
        }
        fx
    }

    /// Sends a NOTIFY with the current state now, or marks the
    /// subscription dirty when one is in flight (the next one carries the
    /// latest state).
    pub(crate) fn notify_or_defer(&mut self, id: &str, fx: &mut Effects) {
        let Some(sub) = self.subs.get(id) else { return };
        if let Some(c) = sub.rec.cpim.clone() {
            // A CPIM watcher: the state goes to the adapter queue, in order.
            let aor = sub.rec.presentity.clone();
            self.stage_cpim(&aor, &c, None, None, fx);
            return;
        }
        if sub.in_flight {
            if let Some(s) = self.subs.get_mut(id) {
                s.dirty = true;
            }
            return;
        }
        let aor = sub.rec.presentity.clone();
        let content_type = sub.rec.format;
        let version = sub.rec.winfo_version;
        let shared_id = sub.rec.id.clone();
        // The first NOTIFY carries full state whatever changed before it.
        let partial = match self.winfo_partial.remove(id) {
            Some(WinfoPending::Partial(p)) if version > 0 => Some(p),
            _ => None,
        };
        let neutral = sub.rec.status == SubStatus::Pending || sub.rec.polite;
        // RFC 3856 §6.10: at most one NOTIFY per interval; the first one is
        // never delayed, later changes wait and are coalesced.
        let interval = self.settings.notify_min_interval_ms as i64;
        let now = now_ms();
        if interval > 0 && sub.last_sent != 0 && now - sub.last_sent < interval {
            let at = sub.last_sent + interval;
            let arm = !sub.throttled;
            let s = self.subs.get_mut(id).expect("checked above");
            s.dirty = true;
            s.throttled = true;
            metrics::counter!(crate::metrics::NOTIFIES_THROTTLED).increment(1);
            let pending = partial.map_or(WinfoPending::Full, WinfoPending::Partial);
            self.winfo_partial.insert(shared_id.clone(), pending);
            if arm {
                self.timers
                    .push(Reverse((at, TimerKey::Throttle(shared_id))));
            }
            return;
        }
        let body = self.document(&aor, content_type, version, partial, neutral);
        let contact = self.settings.contact.clone();
        let sub = self.subs.get_mut(id).expect("checked above");
        sub.rec.winfo_version += 1;
        sub.last_sent = now;
        let remaining = ((sub.rec.expires_at - now_ms()).max(0) / 1000) as u32;
        let state = SubscriptionState::new(match sub.rec.status {
            SubStatus::Active => SubState::Active,
            SubStatus::Pending => SubState::Pending,
        })
        .with_param("expires", remaining);
        let mut msg = sub.rec.dialog.request(Method::Notify, &contact);
        decorate(
            &mut msg,
            sub.rec.event,
            sub.rec.event_id.as_deref(),
            &state,
            content_type,
            body,
        );
        sub.in_flight = true;
        sub.dirty = false;
        // The CSeq just used is persisted before the NOTIFY leaves.
        fx.batch.put(
            Tree::Subscriptions,
            id.as_bytes().to_vec(),
            sub.rec.to_stored(),
        );
        fx.notifies.push(OutNotify {
            sub_id: id.to_owned(),
            next_hop: sub.rec.dialog.next_hop(),
            msg,
            terminal: false,
        });
    }

    /// Ends a subscription with a final NOTIFY (`terminated;reason=…`).
    pub(crate) fn terminate(&mut self, id: &str, reason: &str, fx: &mut Effects) {
        let Some(mut sub) = self.remove_sub(id) else {
            return;
        };
        let aor = sub.rec.presentity.clone();
        if sub.rec.event == Package::Presence {
            // The presentity's winfo subscribers learn it (RFC 3857 §3.4.2).
            let e = winfo_entry(&sub.rec, winfo_event(reason));
            self.winfo_changed(
                &aor,
                vec![WatcherEntry {
                    status: WatcherStatus::Terminated,
                    ..e
                }],
                fx,
            );
        }
        if let Some(c) = sub.rec.cpim.clone() {
            self.stage_cpim(&aor, &c, Some("terminated"), Some(reason), fx);
            fx.batch.delete(Tree::Subscriptions, id.as_bytes().to_vec());
            self.gc(&aor);
            return;
        }
        self.winfo_partial.remove(id);
        let content_type = sub.rec.format;
        let neutral = sub.rec.status == SubStatus::Pending || sub.rec.polite;
        let body = self.document(&aor, content_type, sub.rec.winfo_version, None, neutral);
        let state = SubscriptionState::new(SubState::Terminated).with_param("reason", reason);
        let mut msg = sub
            .rec
            .dialog
            .request(Method::Notify, &self.settings.contact);
        decorate(
            &mut msg,
            sub.rec.event,
            sub.rec.event_id.as_deref(),
            &state,
            content_type,
            body,
        );
        fx.batch.delete(Tree::Subscriptions, id.as_bytes().to_vec());
        fx.notifies.push(OutNotify {
            sub_id: id.to_owned(),
            next_hop: sub.rec.dialog.next_hop(),
            msg,
            terminal: true,
        });
        self.gc(&aor);
    }

    pub(crate) fn expire_subscription(&mut self, id: &str, at: i64, fx: &mut Effects) {
        // Timers are not cancelled on refresh: only the current expiry counts.
        if self.subs.get(id).is_some_and(|s| s.rec.expires_at == at) {
            self.terminate(id, "timeout", fx);
        }
    }

    pub(crate) fn on_notify_done(&mut self, id: &str, outcome: NotifyOutcome) -> Effects {
        let mut fx = Effects::default();
        let Some(sub) = self.subs.get_mut(id) else {
            return fx;
        };
        sub.in_flight = false;
        match outcome {
            NotifyOutcome::Fatal => {
                // The watcher is gone: remove without another NOTIFY.
                tracing::info!(subscription = %id, "NOTIFY failed; subscription removed");
                let aor = sub.rec.presentity.clone();
                if let Some(gone) = self.remove_sub(id) {
                    if gone.rec.event == Package::Presence {
                        let e = winfo_entry(&gone.rec, "timeout");
                        let e = WatcherEntry {
                            status: WatcherStatus::Terminated,
                            ..e
                        };
                        self.winfo_changed(&gone.rec.presentity, vec![e], &mut fx);
                    }
                }
                fx.batch.delete(Tree::Subscriptions, id.as_bytes().to_vec());
                self.gc(&aor);
            }
            NotifyOutcome::Delivered | NotifyOutcome::Transient => {
                if outcome == NotifyOutcome::Transient && sub.rec.event == Package::WatcherInfo {
                    // The watcher may not have what was in flight: what
                    // changed since is no longer relative to what it has.
                    self.winfo_partial.insert(id.into(), WinfoPending::Full);
                    sub.dirty = true;
                }
                if sub.dirty && !sub.throttled {
                    self.notify_or_defer(id, &mut fx);
                }
            }
        }
        fx
    }
}

/// Event, Subscription-State and the body of a NOTIFY (RFC 6665 §8.2).
fn decorate(
    msg: &mut crate::sip::Message,
    package: Package,
    event_id: Option<&str>,
    state: &SubscriptionState,
    format: DocFormat,
    body: bytes::Bytes,
) {
    let package = package.as_str();
    let event = match event_id {
        Some(id) => format!("{package};id={id}"),
        None => package.to_owned(),
    };
    msg.push_header(HeaderName::Event, event);
    msg.push_header(HeaderName::SubscriptionState, state.to_string());
    msg.set_body(format.content_type(), body);
}

/// A watcher as winfo shows it (RFC 3858 §4).
pub(super) fn winfo_entry(rec: &SubscriptionRecord, event: &'static str) -> WatcherEntry {
    WatcherEntry {
        id: crate::presence::compose::binding_tuple_id(&rec.id).replacen("reg-", "w", 1),
        status: match rec.status {
            SubStatus::Active => WatcherStatus::Active,
            SubStatus::Pending => WatcherStatus::Pending,
        },
        event,
        uri: rec.watcher.to_string(),
        duration_subscribed: None,
    }
}

/// The event that brought a live watcher to its state (RFC 3857 §3.4.1):
/// `approved` if the owner let it in, else `subscribe`.
fn winfo_state_event(rec: &SubscriptionRecord) -> &'static str {
    if rec.approved {
        "approved"
    } else {
        "subscribe"
    }
}

/// The winfo event for a termination reason (RFC 3857 §3.4.2).
fn winfo_event(reason: &str) -> &'static str {
    match reason {
        "rejected" => "rejected",
        "deactivated" => "deactivated",
        "probation" => "probation",
        "noresource" => "noresource",
        "giveup" => "giveup",
        _ => "timeout",
    }
}

impl Agent {
    /// The body a subscription gets: the presentity's document in the
    /// negotiated format, or its watcher information (full, or the
    /// `partial` entries).
    pub(crate) fn document(
        &mut self,
        aor: &str,
        format: DocFormat,
        version: u32,
        partial: Option<Vec<WatcherEntry>>,
        neutral: bool,
    ) -> bytes::Bytes {
        let DocFormat::Presence(format) = format else {
            let full = partial.is_none();
            let watchers = match partial {
                Some(p) => p,
                None => self
                    .presentities
                    .get(aor)
                    .map(|p| {
                        p.watchers
                            .iter()
                            .filter_map(|id| self.subs.get(id))
                            .map(|s| winfo_entry(&s.rec, winfo_state_event(&s.rec)))
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            let doc = WatcherInfo {
                version,
                full,
                resource: aor.to_owned(),
                package: "presence".into(),
                watchers,
            };
            return bytes::Bytes::from(doc.render());
        };
        if neutral {
            // Pending or politely blocked: never the real state (OMA 2.5, 2.6).
            let doc = crate::body::PresenceDoc::neutral(&crate::presence::entity_of(aor));
            return bytes::Bytes::from(doc.render(format));
        }
        self.rendered(aor, format)
    }

    /// Watchers of `aor` changed: partial state to each winfo subscriber
    /// (RFC 3857 §5.2, RFC 3858 §4.2).
    ///
    /// The partial state is what changed since the last NOTIFY sent: its
    /// entries accumulate, the latest per watcher, until a NOTIFY carries
    /// them, through a throttle interval or a NOTIFY in flight. If that
    /// NOTIFY is delivered they are relative to it; if it fails, the next
    /// one carries full state instead (`on_notify_done`).
    pub(crate) fn winfo_changed(
        &mut self,
        aor: &str,
        entries: Vec<WatcherEntry>,
        fx: &mut Effects,
    ) {
        let ids: Vec<Arc<str>> = self
            .presentities
            .get(aor)
            .map(|p| p.winfo.iter().cloned().collect())
            .unwrap_or_default();
        for id in ids {
            if let WinfoPending::Partial(pending) = self
                .winfo_partial
                .entry(id.clone())
                .or_insert_with(|| WinfoPending::Partial(Vec::new()))
            {
                for e in &entries {
                    match pending.iter_mut().find(|p| p.id == e.id) {
                        Some(p) => *p = e.clone(),
                        None => pending.push(e.clone()),
                    }
                }
            }
            self.notify_or_defer(&id, fx);
        }
    }
}

impl Agent {
    /// The throttle interval of `id` is over: send what waited.
    pub(crate) fn throttle_over(&mut self, id: &str, fx: &mut Effects) {
        let Some(sub) = self.subs.get_mut(id) else {
            return;
        };
        sub.throttled = false;
        if sub.dirty && !sub.in_flight {
            sub.dirty = false;
            self.notify_or_defer(id, fx);
        }
    }
}
