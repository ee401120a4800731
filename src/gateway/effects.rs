//! What the gateway core decides, as data. The core never sends, stores or
//! waits; it returns [`Effects`] and the driver (`driver.rs`) carries them
//! out. Transactions and CPIM answers are named by id: the driver holds the
//! live objects, so the core can be run and tested without sockets or a
//! runtime.

use super::ApiError;
use super::core::PendingKey;
use super::records::GatewayDialog;
use crate::cpim::{CpimResponse, SubscribeRequest, UnsubscribeRequest};
use crate::dialog_table::DialogEvent;
use crate::sip::{Message, Uri};
use crate::store::Batch;

/// A SIP server transaction the driver holds until the core answers it.
pub type TxId = u64;

/// A CPIM request (HTTP) whose answer the driver holds until the core gives it.
pub type ReplyId = u64;

/// A CPIM operation for the adapter, queued durably in the same batch as
/// the change that causes it (`crate::delivery`).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub watcher: String,
    pub target: String,
    /// The adapter path: `notify`, `subscribe`, `unsubscribe`.
    pub path: &'static str,
    pub payload: serde_json::Value,
}

/// A call to the adapter whose answer the core waits for.
#[derive(Debug, Clone, PartialEq)]
pub enum AdapterCall {
    Subscribe(SubscribeRequest),
    Unsubscribe(UnsubscribeRequest),
}

/// A CPIM operation on a local presentity, served by the presence agent.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalCall {
    Subscribe {
        watcher: String,
        target: String,
        aor: String,
        duration: u32,
        trans_id: String,
    },
    Unsubscribe {
        watcher: String,
        target: String,
        trans_id: String,
    },
}

/// Undoing in memory what a failed commit did, so that memory says what
/// the store says. Fed back to the core as [`super::core::Event::Undo`].
#[derive(Debug, Clone, PartialEq)]
pub enum Undo {
    /// A SUBSCRIBE whose CSeq could not be made durable was not sent; a
    /// CPIM refresh's new duration (`cpim_until`) goes back to the stored one.
    Unsent { key: PendingKey, cpim_until: i64 },
    /// A refresh whose record could not be stored: the dialog as stored.
    Revert(Box<GatewayDialog>),
    /// Dialogs whose removal failed: held again.
    Restore(Vec<GatewayDialog>),
    /// NOTIFYs that were not sent: nothing in flight on these dialogs.
    NotInFlight(Vec<String>),
    /// A dialog created for a 202 that was never sent: forgotten.
    Forget(String),
}

/// One thing for the driver to do. Effects run in order; a
/// [`Effect::Commit`]'s `then` runs only once its batch is durable.
#[derive(Debug)]
pub enum Effect {
    /// Make `batch` durable with `deliveries`, then run `then`.
    ///
    /// Invariant (acknowledged means durable): if the commit fails, nothing
    /// in `then` happens; each transaction it would have answered gets the
    /// store-failure response instead, each CPIM answer a store failure,
    /// nothing is sent, and `undo` goes back to the core.
    Commit {
        batch: Batch,
        deliveries: Vec<Delivery>,
        then: Vec<Effect>,
        undo: Option<Undo>,
    },
    /// The final response of a server transaction.
    Respond { tx: TxId, response: Message },
    /// The answer to a CPIM request.
    Answer {
        reply: ReplyId,
        result: Result<CpimResponse, ApiError>,
    },
    /// Send a SUBSCRIBE (failing over, RFC 3263 §4.3); its outcome comes
    /// back as `Event::SubscribeDone { key }`.
    Subscribe {
        key: PendingKey,
        request: Message,
        hop: Uri,
    },
    /// Send a NOTIFY; with `report`, its outcome comes back as
    /// `Event::NotifyDone` for that dialog.
    Notify {
        request: Message,
        hop: Uri,
        report: Option<String>,
    },
    /// Ask the adapter on behalf of a SIP watcher; the answer comes back as
    /// `Event::AdapterAnswered` with the same transaction.
    Ask {
        tx: TxId,
        id: String,
        refresh: bool,
        call: AdapterCall,
    },
    /// Tell the adapter, expecting nothing back.
    Tell(UnsubscribeRequest),
    /// Hand a CPIM request for a local presentity to the presence agent.
    Local { call: LocalCall, reply: ReplyId },
}

/// Everything one event caused.
#[derive(Debug, Default)]
pub struct Effects {
    /// Dialog table changes: applied before anything else, so a response
    /// or request that creates a dialog never overtakes its route.
    pub dialogs: Vec<DialogEvent>,
    pub effects: Vec<Effect>,
}

impl Effects {
    pub fn push(&mut self, e: Effect) {
        self.effects.push(e);
    }

    /// Commits `batch`, then runs `then`.
    pub fn commit(&mut self, batch: Batch, then: Vec<Effect>, undo: Option<Undo>) {
        self.effects.push(Effect::Commit {
            batch,
            deliveries: Vec::new(),
            then,
            undo,
        });
    }
}
