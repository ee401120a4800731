//! The durable record of a gatewayed subscription dialog (design §6).

use crate::dialog::Dialog;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// A CPIM watcher of a SIP presentity (seed §7.2): we are the subscriber.
    CpimToSip,
    /// A SIP watcher of a CPIM presentity (seed §7.1): we are the notifier.
    SipToCpim,
}

/// One gatewayed dialog: the SIP dialog state, and the CPIM identities as
/// the adapter knows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayDialog {
    pub id: String,
    pub direction: Direction,
    pub watcher: String,
    pub target: String,
    pub trans_id: String,
    pub dialog: Dialog,
    /// When the SIP subscription expires (UNIX ms).
    pub expires_at: i64,
    /// When it was last (re)established.
    pub refreshed_at: i64,
    /// CPIM → SIP: refresh until this time (the CPIM duration).
    pub cpim_until: i64,
    pub event_id: Option<String>,
    /// SIP → CPIM: the last state the adapter sent (for refreshes).
    pub last_content_type: Option<String>,
    pub last_body: Option<String>,
}
