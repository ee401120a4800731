//! The gateway's dialogs and its SUBSCRIBEs awaiting an answer, kept in
//! step with the router's dialog table: every insertion and removal goes
//! through here and is recorded as a [`DialogEvent`], which the core hands
//! to its driver with the effects of the same event. So no path can hold a
//! dialog the router does not route to (or the reverse). Reads go straight
//! to the maps.

use super::core::{Entry, Pending, PendingKey};
use crate::dialog_table::DialogEvent;
use std::collections::HashMap;
use std::ops::Deref;

/// Gatewayed dialogs by id (`Call-ID;local-tag;remote-tag`).
#[derive(Default)]
pub(super) struct Held {
    map: HashMap<String, Entry>,
    events: Vec<DialogEvent>,
}

impl Held {
    pub(super) fn insert(&mut self, id: String, e: Entry) -> Option<Entry> {
        self.events.push(DialogEvent::Created(id.clone()));
        self.map.insert(id, e)
    }

    pub(super) fn remove(&mut self, id: &str) -> Option<Entry> {
        let e = self.map.remove(id)?;
        self.events.push(DialogEvent::Ended(id.to_owned()));
        Some(e)
    }

    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut Entry> {
        self.map.get_mut(id)
    }

    /// Keeps routing in-dialog requests of a dialog no longer held to the
    /// gateway (its final NOTIFY after our unsubscribe, RFC 6665 §4.1.2.3),
    /// until [`Held::forget_route`].
    pub(super) fn keep_route(&mut self, id: &str) {
        self.events.push(DialogEvent::Created(id.to_owned()));
    }

    pub(super) fn forget_route(&mut self, id: &str) {
        if !self.map.contains_key(id) {
            self.events.push(DialogEvent::Ended(id.to_owned()));
        }
    }

    /// The table changes made since the last call.
    pub(super) fn take_events(&mut self, into: &mut Vec<DialogEvent>) {
        into.append(&mut self.events);
    }
}

impl Deref for Held {
    type Target = HashMap<String, Entry>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

/// SUBSCRIBEs the gateway sent, until their final response, by Call-ID and
/// our From tag; the router finds a NOTIFY that overtakes the 2xx by them
/// (RFC 6665 §4.1.2.4).
#[derive(Default)]
pub(super) struct Outstanding {
    map: HashMap<PendingKey, Pending>,
    events: Vec<DialogEvent>,
}

impl Outstanding {
    pub(super) fn insert(&mut self, key: PendingKey, p: Pending) {
        self.events.push(DialogEvent::Sent {
            call_id: key.0.clone(),
            local_tag: key.1.clone(),
        });
        self.map.insert(key, p);
    }

    pub(super) fn remove(&mut self, key: &PendingKey) -> Option<Pending> {
        let p = self.map.remove(key)?;
        self.events.push(DialogEvent::Settled {
            call_id: key.0.clone(),
            local_tag: key.1.clone(),
        });
        Some(p)
    }

    pub(super) fn get_mut(&mut self, key: &PendingKey) -> Option<&mut Pending> {
        self.map.get_mut(key)
    }

    pub(super) fn take_events(&mut self, into: &mut Vec<DialogEvent>) {
        into.append(&mut self.events);
    }
}

impl Deref for Outstanding {
    type Target = HashMap<PendingKey, Pending>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}
