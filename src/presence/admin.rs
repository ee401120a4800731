//! The presence agent's side of the operator views (`crate::admin`) and of
//! the scrape-time metrics: read-only looks at the agent's state, taken on
//! the agent task so they are consistent with what it does next.

use super::records::{SubStatus, SubscriptionRecord};
use super::{Agent, PresenceAgent, Sub, entity_of, now_ms};
use crate::admin::{
    DialogView, PresentitySummary, PresentityView, PublicationView, RegistrationView,
    SubscriptionFilter, SubscriptionKind, SubscriptionView, seconds_until,
};
use crate::body::PresenceFormat;

/// Levels for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub subscriptions: usize,
    pub publications: usize,
    pub registrations: usize,
}

impl PresenceAgent {
    pub async fn counts(&self) -> Counts {
        self.inspect(|a| Counts {
            subscriptions: a.subs.len(),
            publications: a.presentities.values().map(|p| p.publications.len()).sum(),
            registrations: a.presentities.values().map(|p| p.bindings.len()).sum(),
        })
        .await
        .unwrap_or_default()
    }

    /// Every presentity the agent holds something for, in AOR order.
    pub async fn presentities(&self) -> Vec<PresentitySummary> {
        self.inspect(|a| {
            let mut v: Vec<PresentitySummary> =
                a.presentities.keys().map(|aor| a.summary(aor)).collect();
            v.sort_by(|x, y| x.aor.cmp(&y.aor));
            v
        })
        .await
        .unwrap_or_default()
    }

    /// One presentity (AOR key) in full; `None` if nothing is held for it.
    pub async fn presentity(&self, aor: &str) -> Option<PresentityView> {
        let aor = aor.to_owned();
        self.inspect(move |a| a.presentity_view(&aor))
            .await
            .flatten()
    }

    /// Subscriptions held by the agent that match `filter`.
    pub async fn subscriptions(&self, filter: SubscriptionFilter) -> Vec<SubscriptionView> {
        let sel = filter.selector();
        if sel.excludes(SubscriptionKind::Local) {
            return Vec::new();
        }
        self.inspect(move |a| {
            let now = now_ms();
            let mut v: Vec<SubscriptionView> = a
                .subs
                .values()
                .filter(|s| sel.admits(SubscriptionKind::Local, &s.rec.watcher, &s.rec.presentity))
                .take(sel.take())
                .map(|s| view(s, now))
                .collect();
            v.sort_by(|x, y| x.id.cmp(&y.id));
            v
        })
        .await
        .unwrap_or_default()
    }

    /// The dialog of one subscription, by id.
    pub async fn dialog(&self, id: &str) -> Option<DialogView> {
        let id = id.to_owned();
        self.inspect(move |a| {
            let s = a.subs.get(id.as_str())?;
            let trans_id = s.rec.cpim.as_ref().map(|c| c.trans_id.clone());
            Some(DialogView::new(view(s, now_ms()), &s.rec.dialog, trans_id))
        })
        .await
        .flatten()
    }
}

/// What an operator sees of one subscription.
fn view(s: &Sub, now: i64) -> SubscriptionView {
    let r: &SubscriptionRecord = &s.rec;
    SubscriptionView {
        id: r.id.to_string(),
        kind: SubscriptionKind::Local,
        watcher: r.watcher.to_string(),
        target: match &r.cpim {
            Some(c) => c.target.clone(),
            None => entity_of(&r.presentity),
        },
        event: r.event.as_str().to_owned(),
        state: match r.status {
            SubStatus::Active => "active",
            SubStatus::Pending => "pending",
        }
        .to_owned(),
        polite_block: r.polite,
        expires_at_ms: r.expires_at,
        expires_in_s: seconds_until(r.expires_at, now),
        via_adapter: r.cpim.is_some(),
        notify_in_flight: s.in_flight,
        notify_pending: s.dirty,
        throttled: s.throttled,
        last_notify_at_ms: (s.last_sent != 0).then_some(s.last_sent),
    }
}

impl Agent {
    fn summary(&self, aor: &str) -> PresentitySummary {
        let p = self.presentities.get(aor);
        let aor = p.and_then(|p| p.aor.as_deref()).unwrap_or(aor);
        PresentitySummary {
            entity: entity_of(aor),
            aor: aor.to_owned(),
            registrations: p.map_or(0, |p| p.bindings.len()),
            publications: p.map_or(0, |p| p.publications.len()),
            watchers: p.map_or(0, |p| p.watchers.len()),
            winfo_subscribers: p.map_or(0, |p| p.winfo.len()),
        }
    }

    fn presentity_view(&mut self, aor: &str) -> Option<PresentityView> {
        if !self.presentities.contains_key(aor) {
            return None;
        }
        let document =
            String::from_utf8_lossy(&self.rendered(aor, PresenceFormat::Pidf)).into_owned();
        let now = now_ms();
        let p = &self.presentities[aor];
        let registrations = p
            .bindings
            .iter()
            .map(|b| RegistrationView {
                contact: b.contact.clone(),
                call_id: b.call_id.clone(),
                cseq: b.cseq,
                expires_at_ms: b.expires_at,
                expires_in_s: seconds_until(b.expires_at, now),
                q: b.q.map(|q| f32::from(q) / 1000.0),
                description: b.description.clone(),
                methods: b.methods.clone(),
                handles_subscriptions: b.handles_subscriptions(),
            })
            .collect();
        let publications = p
            .publications
            .iter()
            .map(|(r, _)| PublicationView {
                etag: r.etag.clone(),
                publisher: r.publisher.clone(),
                content_type: r.content_type.clone(),
                expires_at_ms: r.expires_at,
                expires_in_s: seconds_until(r.expires_at, now),
                modified_at_ms: r.modified_at,
                body: r.body.clone(),
            })
            .collect();
        let subscriptions = p
            .watchers
            .iter()
            .chain(p.winfo.iter())
            .filter_map(|id| self.subs.get(id))
            .map(|s| view(s, now))
            .collect();
        let summary = self.summary(aor);
        Some(PresentityView {
            entity: summary.entity,
            aor: summary.aor,
            watchers: summary.watchers,
            winfo_subscribers: summary.winfo_subscribers,
            document,
            registrations,
            publications,
            subscriptions,
        })
    }
}
