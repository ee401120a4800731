//! Watcher authorization (RFC 3856 §5.1, RFC 5025's actions): allow,
//! block, polite block, pending — per (presentity, watcher) rule, else the
//! domain's default, else the global default — and what a change of rule
//! does to the subscriptions it governs.

use super::notifier::winfo_entry;
use super::records::{PolicyAction, PolicyRecord, SubStatus};
use super::{Agent, Effects, encode};
use crate::store::Tree;
use std::sync::Arc;

impl Agent {
    /// The rule for `watcher` of `presentity` (both AOR keys): an explicit
    /// rule, else the presentity domain's default, else the global default.
    /// A presentity may always watch itself.
    pub(crate) fn decide(&self, presentity: &str, watcher: &str) -> PolicyAction {
        if presentity == watcher {
            return PolicyAction::Allow;
        }
        if let Some(a) = self
            .policies
            .get(&(presentity.to_owned(), watcher.to_owned()))
        {
            return *a;
        }
        let domain = presentity
            .rsplit('@')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        self.settings
            .domain_policies
            .get(&domain)
            .copied()
            .unwrap_or(self.settings.default_policy)
    }

    /// Sets (or with `None` removes) a rule and applies it at once to the
    /// watcher's existing subscriptions (issue 5): allow → active with the
    /// real document; polite-block → active, neutral; confirm → pending,
    /// neutral; block → terminated;reason=rejected.
    pub(crate) fn set_policy(
        &mut self,
        presentity: &str,
        watcher: &str,
        action: Option<PolicyAction>,
    ) -> Effects {
        let mut fx = Effects {
            aor: Some(presentity.to_owned()),
            ..Effects::default()
        };
        let rec = PolicyRecord {
            presentity: presentity.to_owned(),
            watcher: watcher.to_owned(),
            action: action.unwrap_or(PolicyAction::Confirm),
        };
        match action {
            Some(a) => {
                self.policies
                    .insert((presentity.to_owned(), watcher.to_owned()), a);
                fx.batch
                    .put(Tree::Policies, rec.key().into_bytes(), encode(&rec));
            }
            None => {
                self.policies
                    .remove(&(presentity.to_owned(), watcher.to_owned()));
                fx.batch.delete(Tree::Policies, rec.key().into_bytes());
            }
        }
        let effective = self.decide(presentity, watcher);
        let ids: Vec<Arc<str>> = self
            .presentities
            .get(presentity)
            .map(|p| {
                p.watchers
                    .iter()
                    .filter(|id| {
                        self.subs
                            .get(*id)
                            .is_some_and(|s| &*s.rec.watcher == watcher)
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for id in ids {
            if effective == PolicyAction::Block {
                self.terminate(&id, "rejected", &mut fx);
                continue;
            }
            let Some(sub) = self.subs.get_mut(&id) else {
                continue;
            };
            let (status, polite) = match effective {
                PolicyAction::Allow => (SubStatus::Active, false),
                PolicyAction::PoliteBlock => (SubStatus::Active, true),
                _ => (SubStatus::Pending, false),
            };
            if sub.rec.status == status && sub.rec.polite == polite {
                continue;
            }
            let approved = sub.rec.status == SubStatus::Pending && status == SubStatus::Active;
            sub.rec.approved = status == SubStatus::Active && (approved || sub.rec.approved);
            sub.rec.status = status;
            sub.rec.polite = polite;
            // A state change is not throttled away: it goes out now.
            sub.last_sent = 0;
            let entry = winfo_entry(&sub.rec, if approved { "approved" } else { "subscribe" });
            fx.batch.put(
                Tree::Subscriptions,
                id.as_bytes().to_vec(),
                sub.rec.to_stored(),
            );
            self.notify_or_defer(&id, &mut fx);
            self.winfo_changed(presentity, vec![entry], &mut fx);
        }
        fx
    }

    /// The rules of a presentity, for the admin API.
    pub(crate) fn policies_of(&self, presentity: &str) -> Vec<(String, PolicyAction)> {
        let mut v: Vec<(String, PolicyAction)> = self
            .policies
            .iter()
            .filter(|((p, _), _)| p == presentity)
            .map(|((_, w), a)| (w.clone(), *a))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}
