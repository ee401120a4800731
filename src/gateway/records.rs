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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialog::DialogFields;
    use crate::store::Tree;
    use crate::store::codec::{decode, encode};

    /// The stored form is the field order (store/codec.rs): pinned here.
    #[test]
    fn gateway_dialog_encoding_is_stable() {
        let rec = GatewayDialog {
            id: "c;l;r".into(),
            direction: Direction::SipToCpim,
            watcher: "pres:w@x".into(),
            target: "pres:t@y".into(),
            trans_id: "ab".into(),
            dialog: Dialog::from(&DialogFields {
                call_id: "c".into(),
                local_tag: "l".into(),
                remote_tag: "r".into(),
                local_cseq: 2,
                ..DialogFields::default()
            }),
            expires_at: 5,
            refreshed_at: 1,
            cpim_until: 9,
            event_id: None,
            last_content_type: None,
            last_body: None,
        };
        let bin = encode(&rec);
        let hex: String = bin.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "0105633b6c3b720108707265733a77407808707265733a7440790261620163016c0172000000000200000a0212000000"
        );
        assert_eq!(decode::<GatewayDialog>(Tree::Dialogs, &bin).unwrap(), rec);
        let json = serde_json::to_vec(&rec).unwrap();
        assert_eq!(decode::<GatewayDialog>(Tree::Dialogs, &json).unwrap(), rec);
    }
}
