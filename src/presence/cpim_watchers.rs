//! CPIM watchers of local presentities (seed §7.2 served without a SIP
//! hop): a CPIM subscribe from the adapter becomes a subscription of the
//! presence agent whose notifications are queued to the adapter durably.

use super::records::{
    CpimWatcher, DocFormat, Package, PolicyAction, SubStatus, SubscriptionRecord,
};
use super::{Agent, Effects, TimerKey, aor_key, cpim_sub_id, now_ms};
use crate::body::PresenceFormat;
use crate::cpim::{CpimResponse, NotifyRequest, Presence, tuples_view};
use crate::reject::Reject;
use crate::store::Tree;
use std::cmp::Reverse;
use std::sync::Arc;

impl Agent {
    /// Queues the presentity's state for a CPIM watcher.
    pub(super) fn stage_cpim(
        &mut self,
        aor: &str,
        c: &CpimWatcher,
        state: Option<&str>,
        reason: Option<&str>,
        fx: &mut Effects,
    ) {
        // Pending or politely blocked CPIM watchers get the neutral document.
        let sub = self.subs.get(cpim_sub_id(&c.watcher, &c.target).as_str());
        let neutral = sub.is_some_and(|s| s.rec.status == SubStatus::Pending || s.rec.polite);
        let state = state.or(sub
            .filter(|s| s.rec.status == SubStatus::Pending)
            .map(|_| "pending"));
        let (body, tuples) = if neutral {
            let doc = crate::body::PresenceDoc::neutral(&crate::presence::entity_of(aor));
            (
                bytes::Bytes::from(doc.render(PresenceFormat::Pidf)),
                Some(tuples_view(&doc)),
            )
        } else {
            let body = self.rendered(aor, PresenceFormat::Pidf);
            let tuples = self
                .presentities
                .get(aor)
                .and_then(|p| p.cache.as_ref())
                .map(|(d, _)| tuples_view(d));
            (body, tuples)
        };
        let n = NotifyRequest {
            watcher: c.watcher.clone(),
            target: c.target.clone(),
            trans_id: Some(c.trans_id.clone()),
            presence: Presence {
                content_type: Some(PresenceFormat::Pidf.content_type().to_owned()),
                body: Some(String::from_utf8_lossy(&body).into_owned()),
                tuples,
            },
            state: state.map(str::to_owned),
            reason: reason.map(str::to_owned),
        };
        let payload = serde_json::to_value(&n).expect("serializes");
        let staged = self
            .adapter
            .stage(&mut fx.batch, &c.watcher, &c.target, "notify", payload);
        fx.staged.push(staged);
    }

    /// A CPIM watcher subscribes to a local presentity (issue 6 §3).
    pub(crate) fn cpim_subscribe(
        &mut self,
        watcher: &str,
        target: &str,
        aor: &str,
        duration: Option<u32>,
        trans_id: &str,
    ) -> (CpimResponse, Effects) {
        let mut fx = Effects {
            aor: Some(aor.to_owned()),
            ..Effects::default()
        };
        let id: Arc<str> = cpim_sub_id(watcher, target).into();
        let watcher_aor = crate::sip::Uri::parse_str(watcher)
            .map(|u| aor_key(&u))
            .unwrap_or_default();
        let action = self.decide(aor, &watcher_aor);
        if action == PolicyAction::Block {
            return (Reject::Forbidden(None).cpim(trans_id), fx);
        }
        let requested = duration.unwrap_or(self.settings.default_expires);
        if requested == 0 {
            // A fetch: one notification, nothing kept.
            if self.subs.contains_key(&id) {
                self.terminate(&id, "timeout", &mut fx);
            } else {
                let c = CpimWatcher {
                    watcher: watcher.into(),
                    target: target.into(),
                    trans_id: trans_id.into(),
                };
                self.stage_cpim(aor, &c, Some("terminated"), Some("timeout"), &mut fx);
                self.gc(aor);
            }
            return (CpimResponse::success(trans_id, Some(0)), fx);
        }
        let granted = requested.clamp(self.settings.min_expires, self.settings.max_expires);
        let expires_at = now_ms() + i64::from(granted) * 1000;
        match self.subs.get_mut(&id) {
            Some(sub) => {
                sub.rec.expires_at = expires_at;
                self.timers
                    .push(Reverse((expires_at, TimerKey::Subscription(id.clone()))));
            }
            None => {
                if let Err(limit) = self.admit(watcher) {
                    tracing::info!(%watcher, %limit, "CPIM subscribe refused");
                    let (code, _) = limit.status();
                    return (
                        CpimResponse::failure(trans_id, code, &limit.to_string()),
                        fx,
                    );
                }
                let rec = SubscriptionRecord {
                    id: id.clone(),
                    presentity: aor.into(),
                    watcher: watcher.into(),
                    event: Package::Presence,
                    event_id: None,
                    dialog: Default::default(),
                    expires_at,
                    format: DocFormat::Presence(PresenceFormat::Pidf),
                    status: if action == PolicyAction::Confirm {
                        SubStatus::Pending
                    } else {
                        SubStatus::Active
                    },
                    cpim: Some(Box::new(CpimWatcher {
                        watcher: watcher.into(),
                        target: target.into(),
                        trans_id: trans_id.into(),
                    })),
                    winfo_version: 0,
                    polite: action == PolicyAction::PoliteBlock,
                    approved: false,
                };
                self.add_sub(rec);
            }
        }
        fx.batch.put(
            Tree::Subscriptions,
            id.as_bytes().to_vec(),
            self.subs[&id].rec.to_stored(),
        );
        self.notify_or_defer(&id, &mut fx);
        let mut resp = CpimResponse::success(trans_id, Some(granted));
        if action == PolicyAction::Confirm {
            resp.status = crate::cpim::Status::Indeterminate;
        }
        (resp, fx)
    }
}
