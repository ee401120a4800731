//! The gateway's dialogs and its SUBSCRIBEs awaiting an answer, kept in
//! step with the router's [`DialogTable`]: every insertion and removal goes
//! through here, so no path can hold a dialog the router does not route to
//! (or the reverse). Reads go straight to the maps.

use super::{Entry, Pending, PendingKey};
use crate::dialog_table::{DialogOwner, DialogTable};
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;

/// Gatewayed dialogs by id (`Call-ID;local-tag;remote-tag`).
pub(super) struct Held {
    map: HashMap<String, Entry>,
    table: Arc<DialogTable>,
}

impl Held {
    pub(super) fn new(table: Arc<DialogTable>) -> Held {
        Held {
            map: HashMap::new(),
            table,
        }
    }

    pub(super) fn insert(&mut self, id: String, e: Entry) -> Option<Entry> {
        self.table
            .insert(Arc::from(id.as_str()), DialogOwner::Gateway);
        self.map.insert(id, e)
    }

    pub(super) fn remove(&mut self, id: &str) -> Option<Entry> {
        let e = self.map.remove(id)?;
        self.table.remove(id);
        Some(e)
    }

    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut Entry> {
        self.map.get_mut(id)
    }

    /// Keeps routing in-dialog requests of a dialog no longer held to the
    /// gateway (its final NOTIFY after our unsubscribe, RFC 6665 §4.1.2.3),
    /// until [`Held::forget_route`].
    pub(super) fn keep_route(&self, id: &str) {
        self.table.insert(Arc::from(id), DialogOwner::Gateway);
    }

    pub(super) fn forget_route(&self, id: &str) {
        if !self.map.contains_key(id) {
            self.table.remove(id);
        }
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
pub(super) struct Outstanding {
    map: HashMap<PendingKey, Pending>,
    table: Arc<DialogTable>,
}

impl Outstanding {
    pub(super) fn new(table: Arc<DialogTable>) -> Outstanding {
        Outstanding {
            map: HashMap::new(),
            table,
        }
    }

    pub(super) fn insert(&mut self, key: PendingKey, p: Pending) {
        self.table
            .insert_pending(&key.0, &key.1, DialogOwner::Gateway);
        self.map.insert(key, p);
    }

    pub(super) fn remove(&mut self, key: &PendingKey) -> Option<Pending> {
        let p = self.map.remove(key)?;
        self.table.remove_pending(&key.0, &key.1);
        Some(p)
    }

    pub(super) fn get_mut(&mut self, key: &PendingKey) -> Option<&mut Pending> {
        self.map.get_mut(key)
    }
}

impl Deref for Outstanding {
    type Target = HashMap<PendingKey, Pending>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}
