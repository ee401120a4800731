//! The registrar (RFC 3261 §10.3) for local AORs. Bindings become presence
//! tuples (seed §10.2/§10.3, see `compose`).

use super::records::BindingRecord;
use super::{Agent, Effects, TimerKey, aor_key, encode, now_ms, refuse};
use crate::reject::Reject;
use crate::sip::{Contacts, HeaderName, NameAddr, Uri};
use crate::store::Tree;
use crate::transaction::IncomingRequest;
use std::cmp::Reverse;

impl Agent {
    pub(crate) fn on_register(&mut self, st: &IncomingRequest) -> Effects {
        let req = st.request();
        // Step 1: the Request-URI names a domain we hold bindings for.
        let ruri_host = req
            .request_uri()
            .and_then(|u| u.host.as_ref())
            .map(|h| h.canonical())
            .unwrap_or_default();
        if !self.is_local(&ruri_host) {
            return refuse(st, Reject::NotFound);
        }
        // Step 5: To must be a SIP/SIPS AOR of that domain (RFC 4475 §3.3.4).
        let Some(to) = req.to() else {
            return refuse(st, Reject::bad("Missing To Header"));
        };
        if !to.uri.scheme.is_sip() {
            return refuse(st, Reject::bad("To Must Be A SIP Or SIPS URI"));
        }
        let to_host = to
            .uri
            .host
            .as_ref()
            .map(|h| h.canonical())
            .unwrap_or_default();
        if !self.is_local(&to_host) {
            return refuse(st, Reject::NotFound);
        }
        let aor = aor_key(&to.uri);
        let call_id = req.call_id().unwrap_or("").to_owned();
        let cseq = req.cseq().map_or(0, |c| c.seq);
        let header_expires = match req.expires() {
            Ok(e) => e,
            Err(e) => return refuse(st, Reject::bad(e.reason_phrase())),
        };
        let contacts = match req.contacts() {
            Ok(c) => c,
            Err(e) => return refuse(st, Reject::bad(e.reason_phrase())),
        };
        let now = now_ms();
        let current: Vec<BindingRecord> = self
            .presentities
            .get(&aor)
            .map(|p| p.bindings.clone())
            .unwrap_or_default();
        let mut next = current.clone();
        match contacts {
            Contacts::Star => {
                // Step 6: "*" only with Expires: 0 and no other Contact.
                let n_contacts = req.fields(&HeaderName::Contact).count();
                if header_expires != Some(0) || n_contacts != 1 {
                    return refuse(st, Reject::bad("Contact * Requires Expires 0"));
                }
                for b in &current {
                    if b.call_id == call_id && cseq <= b.cseq {
                        return refuse(st, Reject::CSeqOutOfOrder);
                    }
                }
                next.clear();
            }
            Contacts::List(list) => {
                for c in &list {
                    let expires = c
                        .expires()
                        .or(header_expires)
                        .unwrap_or(self.settings.default_expires);
                    if expires != 0 && expires < self.settings.min_expires {
                        let min = self.settings.min_expires;
                        return refuse(st, Reject::IntervalTooBrief { min });
                    }
                    let expires = expires.min(self.settings.max_expires);
                    let pos = next
                        .iter()
                        .position(|b| Uri::parse_str(&b.uri).is_ok_and(|u| u.matches(&c.uri)));
                    if let Some(i) = pos {
                        // Step 7: against the binding as stored (a request is
                        // never out of order with itself), same Call-ID needs
                        // a higher CSeq.
                        let stored = current.iter().find(|b| b.key() == next[i].key());
                        if stored.is_some_and(|b| b.call_id == call_id && cseq <= b.cseq) {
                            return refuse(st, Reject::CSeqOutOfOrder);
                        }
                        if expires == 0 {
                            next.remove(i);
                            continue;
                        }
                        let mut b = binding(&aor, c, &call_id, cseq, now, expires);
                        if next[i].cseq == cseq && next[i].call_id == call_id {
                            // The same URI twice in one request (seed §10.2
                            // F1): one binding whose feature parameters are
                            // the union of both Contacts.
                            b = merge_features(&next[i], b);
                        }
                        next[i] = b;
                    } else if expires != 0 {
                        next.push(binding(&aor, c, &call_id, cseq, now, expires));
                    }
                }
            }
        }
        // Apply all or nothing.
        let mut fx = Effects {
            aor: Some(aor.clone()),
            ..Effects::default()
        };
        for b in &current {
            if !next.iter().any(|n| n.key() == b.key()) {
                fx.batch.delete(Tree::Registrations, b.key().into_bytes());
            }
        }
        for b in &next {
            if !current.contains(b) {
                fx.batch
                    .put(Tree::Registrations, b.key().into_bytes(), encode(b));
                self.timers
                    .push(Reverse((b.expires_at, TimerKey::Binding(b.key().into()))));
            }
        }
        let changed = !fx.batch.is_empty();
        let mut resp = st.reply(200, "OK");
        for b in &next {
            let remaining = ((b.expires_at - now).max(0) / 1000).max(1);
            resp.push_header(HeaderName::Contact, with_expires(&b.contact, remaining));
        }
        resp.push_header(
            HeaderName::Date,
            httpdate::fmt_http_date(std::time::SystemTime::now()),
        );
        self.presentities.entry(aor.clone()).or_default().bindings = next;
        if changed {
            self.changed(&aor, &mut fx);
        }
        self.gc(&aor);
        fx.reply = Some(resp);
        fx
    }

    pub(crate) fn expire_binding(&mut self, key: &str, at: i64, fx: &mut Effects) {
        self.expire_soft_state(Tree::Registrations, key, fx, |p| {
            let before = p.bindings.len();
            p.bindings
                .retain(|b| !(b.key() == key && b.expires_at == at));
            p.bindings.len() != before
        });
    }
}

fn binding(
    aor: &str,
    c: &NameAddr,
    call_id: &str,
    cseq: u32,
    now: i64,
    expires: u32,
) -> BindingRecord {
    let mut contact = c.clone();
    contact.params.remove("expires");
    BindingRecord {
        aor: aor.to_owned(),
        uri: c.uri.to_string(),
        contact: contact.to_string(),
        call_id: call_id.to_owned(),
        cseq,
        expires_at: now + i64::from(expires) * 1000,
        q: c.q(),
        description: c.feature("description"),
        methods: c.feature("methods"),
    }
}

/// Merges the feature parameters of two Contacts for one URI: `methods`
/// united, `description` kept from the first that has it.
fn merge_features(first: &BindingRecord, mut second: BindingRecord) -> BindingRecord {
    let mut methods: Vec<String> = Vec::new();
    for m in [&first.methods, &second.methods].into_iter().flatten() {
        for x in m.split(',').map(str::trim).filter(|x| !x.is_empty()) {
            if !methods.iter().any(|y| y.eq_ignore_ascii_case(x)) {
                methods.push(x.to_owned());
            }
        }
    }
    second.methods = (!methods.is_empty()).then(|| methods.join(","));
    second.description = first.description.clone().or(second.description);
    let mut c = match crate::sip::headers::decode_name_addr(&second.contact.clone().into()) {
        Ok(c) => c,
        Err(_) => return second,
    };
    if let Some(m) = &second.methods {
        c.params.set(crate::sip::Param::quoted(
            "methods",
            bytestring::ByteString::from(m.clone()),
        ));
    }
    if let Some(d) = &second.description {
        c.params.set(crate::sip::Param::quoted(
            "description",
            bytestring::ByteString::from(d.clone()),
        ));
    }
    second.contact = c.to_string();
    second
}

fn with_expires(contact: &str, secs: i64) -> String {
    format!("{contact};expires={secs}")
}
