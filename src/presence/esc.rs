//! The event state compositor for PUBLISH (RFC 3903 §6), with the seed
//! draft's ordering rule (draft-olson-simple-publish-02 §10 step 8: an older
//! tuple `<timestamp>` is answered 494 Out Of Sync).

use super::records::{PublicationRecord, PublisherRecord};
use super::{Agent, Command, Effects, PresenceAgent, TimerKey, aor_key, encode, now_ms, refuse};
use crate::body::{BodyError, PresenceDoc, presence_of};
use crate::reject::Reject;
use crate::sip::{HeaderName, Scheme};
use crate::store::Tree;
use crate::transaction::{IncomingRequest, random_token};
use bytes::Bytes;
use std::cmp::Reverse;
use tokio::sync::oneshot;

/// Body types a PUBLISH may carry (RFC 3903 §4: the package's formats).
pub(crate) const ACCEPT: &str =
    "application/pidf+xml, application/cpim-pidf+xml, application/xpidf+xml, message/cpim";

/// Parses a stored or received presence body of any supported type.
pub(crate) fn parse_body(content_type: &str, body: &[u8]) -> Result<PresenceDoc, BodyError> {
    presence_of(content_type, &Bytes::copy_from_slice(body)).map(|(_, d)| d)
}

fn is_supported(ct: &str) -> bool {
    let essence = ct.split(';').next().unwrap_or("").trim();
    ACCEPT.split(", ").any(|a| a.eq_ignore_ascii_case(essence))
}

impl Agent {
    pub(crate) fn on_publish(&mut self, st: &IncomingRequest) -> Effects {
        let req = st.request();
        // Step 1: a resource we are responsible for.
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
        // Step 6 (RFC 3903 §6 order): Event.
        match req.event() {
            Ok(Some(e)) if e.is("presence") => {}
            Ok(_) => return refuse(st, Reject::BadEvent { allow: "presence" }),
            Err(e) => return refuse(st, Reject::bad(e.reason_phrase())),
        }
        let aor = aor_key(&ruri);
        // Step 4 (RFC 3903 §6: "the ESC MUST ... determine if the
        // publisher is authorized"; 403 otherwise, OMA flow 2.4): the
        // presentity publishes for itself, anyone else only with an explicit
        // grant for this presentity (admin API, `/admin/v1/publishers`).
        // The watch policy plays no part (issue 14): `allow`, by rule or by
        // default, lets a watcher *see* the presentity, not speak for it.
        // The publisher is the authenticated identity when there is one,
        // else From.
        let publisher = match st.identity() {
            Some(id) => id.to_owned(),
            None => req.from().map(|f| aor_key(&f.uri)).unwrap_or_default(),
        };
        if publisher != aor && !self.may_publish(&aor, &publisher) {
            return refuse(
                st,
                Reject::forbidden("not authorized to publish for this presentity"),
            );
        }
        // SIP-If-Match: at most one entity-tag (§11.3).
        let if_match = match req.sip_if_match() {
            Ok(v) if v.len() > 1 => return refuse(st, Reject::bad("Multiple SIP-If-Match Values")),
            Ok(v) => v.into_iter().next().map(|t| t.to_string()),
            Err(e) => return refuse(st, Reject::bad(e.reason_phrase())),
        };
        let has_body = !req.body().is_empty();
        if !has_body && if_match.is_none() {
            return refuse(st, Reject::bad("Missing Body And SIP-If-Match"));
        }
        // Expires (§6 step 5, seed step 7).
        let requested = match req.expires() {
            Ok(e) => e.unwrap_or(self.settings.default_expires),
            Err(e) => return refuse(st, Reject::bad(e.reason_phrase())),
        };
        if requested != 0 && requested < self.settings.min_expires {
            let min = self.settings.min_expires;
            return refuse(st, Reject::IntervalTooBrief { min });
        }
        let granted = requested.min(self.settings.max_expires);
        // The body.
        let new_doc = if has_body {
            let ct = match req.content_type() {
                Ok(Some(ct)) => ct.to_string(),
                Ok(None) => String::new(),
                Err(e) => return refuse(st, Reject::bad(e.reason_phrase())),
            };
            if !is_supported(&ct) {
                return refuse(st, Reject::UnsupportedMediaType { accept: ACCEPT });
            }
            match parse_body(&ct, req.body()) {
                Ok(doc) => Some((ct, doc)),
                Err(e) => return refuse(st, Reject::bad(format!("Bad Presence Document: {e}"))),
            }
        } else {
            None
        };
        // The publication being refreshed, modified or removed (§6 step 3):
        // only that one is copied, not every publication the presentity
        // holds (a presentity with many sources made each PUBLISH copy them
        // all, bodies included).
        let existing = match &if_match {
            Some(tag) => match self.presentities.get(&aor).and_then(|p| {
                p.publications
                    .iter()
                    .find(|(r, _)| &r.etag == tag)
                    .map(|(r, _)| r.clone())
            }) {
                Some(r) => Some(r),
                None => return refuse(st, Reject::ConditionalRequestFailed),
            },
            None => None,
        };
        // Seed step 8: an older timestamp for a tuple we hold is 494.
        if let Some((_, doc)) = &new_doc {
            let p = self.presentities.get(&aor);
            for t in &doc.tuples {
                let Some(new_ts) = t.timestamp_millis() else {
                    continue;
                };
                let older = p.is_some_and(|p| {
                    p.publications.iter().any(|(_, d)| {
                        d.tuples.iter().any(|h| {
                            h.id == t.id && h.timestamp_millis().is_some_and(|held| held > new_ts)
                        })
                    })
                });
                if older {
                    return refuse(st, Reject::OutOfSync);
                }
            }
        }
        let now = now_ms();
        let mut fx = Effects {
            aor: Some(aor.clone()),
            ..Effects::default()
        };
        if let Some(old) = &existing {
            fx.batch.delete(Tree::Publications, old.key().into_bytes());
        }
        let p = self.presentities.entry(aor.clone()).or_default();
        if let Some(old) = &existing {
            p.publications.retain(|(r, _)| r.etag != old.etag);
        }
        let mut resp;
        if granted == 0 {
            // Removal (§6 step 5): the state goes now.
            resp = st.reply(200, "OK");
            resp.push_header(HeaderName::Expires, "0");
        } else {
            let (content_type, body, doc, modified_at) = match (new_doc, &existing) {
                (Some((ct, doc)), _) => (
                    ct,
                    String::from_utf8_lossy(req.body()).into_owned(),
                    doc,
                    now,
                ),
                (None, Some(old)) => {
                    let doc = parse_body(&old.content_type, old.body.as_bytes())
                        .unwrap_or_else(|_| PresenceDoc::neutral(&aor));
                    (
                        old.content_type.clone(),
                        old.body.clone(),
                        doc,
                        old.modified_at,
                    )
                }
                (None, None) => unreachable!("rejected above"),
            };
            let rec = PublicationRecord {
                aor: aor.clone(),
                etag: random_token(),
                expires_at: now + i64::from(granted) * 1000,
                content_type,
                body,
                modified_at,
                publisher: req.from().map(|f| aor_key(&f.uri)).unwrap_or_default(),
            };
            fx.batch
                .put(Tree::Publications, rec.key().into_bytes(), encode(&rec));
            self.timers.push(Reverse((
                rec.expires_at,
                TimerKey::Publication(rec.key().into()),
            )));
            resp = st.reply(200, "OK");
            resp.push_header(HeaderName::SipETag, rec.etag.clone());
            resp.push_header(HeaderName::Expires, granted.to_string());
            p.publications.push((rec, doc));
        }
        let state_changed = has_body || granted == 0;
        if state_changed {
            self.changed(&aor, &mut fx);
        }
        self.gc(&aor);
        fx.reply = Some(resp);
        fx
    }

    /// Whether `publisher` holds a grant to publish for `presentity` (AOR
    /// keys). A presentity's own PUBLISH needs none.
    pub(crate) fn may_publish(&self, presentity: &str, publisher: &str) -> bool {
        self.publishers
            .get(presentity)
            .is_some_and(|g| g.contains(publisher))
    }

    /// Grants (or, with `grant` false, revokes) `publisher`'s right to
    /// publish for `presentity`; returns whether a grant was held before.
    /// The store op is written even when nothing changes in memory, so the
    /// answer waits for any earlier change to the same grant to be durable
    /// too (commits are applied in order). Revoking leaves the state already
    /// published: it expires as published, and no further PUBLISH from that
    /// publisher (refresh, modify or remove) is accepted.
    pub(crate) fn set_publisher(
        &mut self,
        presentity: &str,
        publisher: &str,
        grant: bool,
    ) -> (bool, Effects) {
        let mut fx = Effects {
            aor: Some(presentity.to_owned()),
            ..Effects::default()
        };
        let rec = PublisherRecord {
            presentity: presentity.to_owned(),
            publisher: publisher.to_owned(),
        };
        let held = self.may_publish(presentity, publisher);
        if grant {
            self.publishers
                .entry(rec.presentity.clone())
                .or_default()
                .insert(rec.publisher.clone());
            fx.batch
                .put(Tree::Publishers, rec.key().into_bytes(), encode(&rec));
        } else {
            if let Some(g) = self.publishers.get_mut(presentity) {
                g.remove(publisher);
                if g.is_empty() {
                    self.publishers.remove(presentity);
                }
            }
            fx.batch.delete(Tree::Publishers, rec.key().into_bytes());
        }
        (held, fx)
    }

    pub(crate) fn expire_publication(&mut self, key: &str, at: i64, fx: &mut Effects) {
        let Some((_, etag)) = key.split_once('\n') else {
            return;
        };
        self.expire_soft_state(Tree::Publications, key, fx, |p| {
            let before = p.publications.len();
            p.publications
                .retain(|(r, _)| !(r.etag == etag && r.expires_at == at));
            p.publications.len() != before
        });
    }
}

/// Why publisher grants could not be read or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// The store did not commit the change (the agent then reloads its
    /// state from the store, so none of it is in effect), or the agent has
    /// stopped.
    #[error("presence agent unavailable: store failure, or the agent stopped")]
    Unavailable,
}

impl PresenceAgent {
    /// The publishers granted for `presentity` (AOR key), in order.
    pub async fn publishers(&self, presentity: &str) -> Result<Vec<String>, GrantError> {
        let presentity = presentity.to_owned();
        self.inspect(move |a| {
            a.publishers
                .get(&presentity)
                .map(|g| g.iter().cloned().collect())
                .unwrap_or_default()
        })
        .await
        .ok_or(GrantError::Unavailable)
    }

    /// Grants (`grant`) or revokes `publisher`'s right to PUBLISH for
    /// `presentity` (AOR keys). Resolves once the change is durable, with
    /// whether a grant was held before.
    pub async fn set_publisher(
        &self,
        presentity: &str,
        publisher: &str,
        grant: bool,
    ) -> Result<bool, GrantError> {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Command::SetPublisher {
            presentity: presentity.to_owned(),
            publisher: publisher.to_owned(),
            grant,
            reply,
        });
        rx.await.map_err(|_| GrantError::Unavailable)
    }
}
