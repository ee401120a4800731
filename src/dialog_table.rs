//! Which agent owns each SIP dialog, so that in-dialog requests are routed
//! by dialog, not by Request-URI.
//!
//! RFC 3261 §12.2: a request with a To tag belongs to the dialog named by
//! its Call-ID, To tag (our local tag) and From tag (the remote tag). Its
//! Request-URI is the remote target we gave the peer in our Contact — the
//! gateway's own address — so it says nothing about which agent (presence
//! agent or CPIM gateway) holds the dialog. The router looks the dialog up
//! here first, hands the request to its owner, and answers 481 at once when
//! there is none (RFC 3261 §12.2.2); only out-of-dialog requests are routed
//! by Request-URI.
//!
//! The agents keep the table in step with the dialogs they hold: an entry
//! is added before the response that establishes the dialog is released and
//! removed when the dialog ends. A SUBSCRIBE the gateway sent also has a
//! *pending* entry by Call-ID and local tag until its final response is in,
//! because the first NOTIFY may arrive before the 2xx and carries a remote
//! tag nobody has seen yet (RFC 6665 §4.1.2.4).
//!
//! Invariant: an entry exists for every dialog an agent will accept an
//! in-dialog request for; an entry whose agent no longer holds the dialog
//! only costs that agent a 481 of its own.

use crate::maps::FastMap;
use std::cell::RefCell;
use std::sync::{Arc, RwLock};

/// The agent that holds a dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogOwner {
    /// The presence agent is the notifier (local presentities).
    Presence,
    /// The CPIM gateway: notifier of a SIP → CPIM subscription (seed §7.1)
    /// or subscriber of a CPIM → SIP one (seed §7.2).
    Gateway,
}

/// A change an agent made to the dialogs it holds: the agents emit these as
/// effects and their driver applies them here before anything the change
/// concerns is sent or answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogEvent {
    /// A dialog (`Call-ID;local-tag;remote-tag`) now routes to the agent.
    Created(String),
    /// It no longer does.
    Ended(String),
    /// A SUBSCRIBE the agent sent awaits its final response.
    Sent { call_id: String, local_tag: String },
    /// Its final response is in (or it failed).
    Settled { call_id: String, local_tag: String },
}

/// The dialog table (see the module documentation).
#[derive(Debug, Default)]
pub struct DialogTable {
    /// By `Call-ID;local-tag;remote-tag` ([`crate::dialog::dialog_id`]).
    dialogs: RwLock<FastMap<Arc<str>, DialogOwner>>,
    /// SUBSCRIBEs we sent and that have no final response yet, by
    /// `Call-ID;local-tag`.
    pending: RwLock<FastMap<Box<str>, DialogOwner>>,
}

thread_local! {
    /// Reused lookup key: routing an in-dialog request allocates nothing.
    static KEY: RefCell<String> = const { RefCell::new(String::new()) };
}

impl DialogTable {
    pub fn new() -> Arc<DialogTable> {
        Arc::new(DialogTable::default())
    }

    /// `id` is `Call-ID;local-tag;remote-tag` as [`crate::dialog::dialog_id`]
    /// builds it.
    pub fn insert(&self, id: Arc<str>, owner: DialogOwner) {
        self.write().insert(id, owner);
    }

    pub fn remove(&self, id: &str) {
        self.write().remove(id);
    }

    /// Applies what `owner` reports of its dialogs.
    pub fn apply(&self, owner: DialogOwner, event: &DialogEvent) {
        match event {
            DialogEvent::Created(id) => self.insert(Arc::from(id.as_str()), owner),
            DialogEvent::Ended(id) => self.remove(id),
            DialogEvent::Sent { call_id, local_tag } => {
                self.insert_pending(call_id, local_tag, owner)
            }
            DialogEvent::Settled { call_id, local_tag } => self.remove_pending(call_id, local_tag),
        }
    }

    /// Forgets every dialog of `owner` (an agent reloading its state).
    pub fn clear_owner(&self, owner: DialogOwner) {
        self.write().retain(|_, o| *o != owner);
    }

    /// A request we sent as `call_id` with our tag `local_tag` awaits its
    /// final response.
    pub fn insert_pending(&self, call_id: &str, local_tag: &str, owner: DialogOwner) {
        let key = format!("{call_id};{local_tag}").into_boxed_str();
        self.pending
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, owner);
    }

    pub fn remove_pending(&self, call_id: &str, local_tag: &str) {
        KEY.with_borrow_mut(|k| {
            join(k, &[call_id, local_tag]);
            self.pending
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(k.as_str());
        });
    }

    /// The owner of the dialog of an in-dialog request: its Call-ID, its To
    /// tag (our local tag) and its From tag (the remote tag). A dialog not
    /// yet confirmed by a 2xx is found by Call-ID and local tag.
    pub fn owner(&self, call_id: &str, local_tag: &str, remote_tag: &str) -> Option<DialogOwner> {
        KEY.with_borrow_mut(|k| {
            join(k, &[call_id, local_tag, remote_tag]);
            if let Some(o) = self.read().get(k.as_str()) {
                return Some(*o);
            }
            join(k, &[call_id, local_tag]);
            self.pending
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(k.as_str())
                .copied()
        })
    }

    /// Dialogs held.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, FastMap<Arc<str>, DialogOwner>> {
        // A panic while holding the lock cannot leave the map half-changed
        // (every change is one HashMap call), so a poisoned lock is usable.
        self.dialogs.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, FastMap<Arc<str>, DialogOwner>> {
        self.dialogs.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// `parts` joined by `;` into `buf` (the [`crate::dialog::dialog_id`] form).
fn join(buf: &mut String, parts: &[&str]) {
    buf.clear();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            buf.push(';');
        }
        buf.push_str(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialog::dialog_id;

    #[test]
    fn routes_by_all_three_parts_of_the_dialog_id() {
        let t = DialogTable::new();
        t.insert(
            dialog_id("c1@h", "ours", "theirs").into(),
            DialogOwner::Gateway,
        );
        t.insert(
            dialog_id("c2@h", "ours", "theirs").into(),
            DialogOwner::Presence,
        );
        assert_eq!(
            t.owner("c1@h", "ours", "theirs"),
            Some(DialogOwner::Gateway)
        );
        assert_eq!(
            t.owner("c2@h", "ours", "theirs"),
            Some(DialogOwner::Presence)
        );
        // Another remote tag is another dialog (RFC 3261 §12: a forked
        // SUBSCRIBE may create several).
        assert_eq!(t.owner("c1@h", "ours", "other"), None);
        assert_eq!(t.owner("c1@h", "theirs", "ours"), None);
        t.remove(&dialog_id("c1@h", "ours", "theirs"));
        assert_eq!(t.owner("c1@h", "ours", "theirs"), None);
        assert_eq!(t.len(), 1);
        t.clear_owner(DialogOwner::Presence);
        assert!(t.is_empty());
    }

    #[test]
    fn a_notify_before_the_2xx_finds_the_pending_subscribe() {
        // RFC 6665 §4.1.2.4: the NOTIFY carries the notifier's tag, which
        // the subscriber has not seen yet; Call-ID and our tag name it.
        let t = DialogTable::new();
        t.insert_pending("c@gw", "tid", DialogOwner::Gateway);
        assert_eq!(t.owner("c@gw", "tid", "any"), Some(DialogOwner::Gateway));
        assert_eq!(t.owner("c@gw", "other", "any"), None);
        t.remove_pending("c@gw", "tid");
        assert_eq!(t.owner("c@gw", "tid", "any"), None);
    }
}
