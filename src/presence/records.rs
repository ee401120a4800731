//! The durable records of the presence agent (design §6): absolute expiry
//! times in UNIX milliseconds, serialized as JSON so `export` dumps are
//! readable.

use crate::body::PresenceFormat;
use crate::dialog::Dialog;
use crate::store::{StoreError, Tree, codec};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::Arc;

/// One registered contact of a local AOR (RFC 3261 §10.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingRecord {
    pub aor: String,
    /// The contact URI.
    pub uri: String,
    /// The Contact value as registered (name-addr with its parameters).
    pub contact: String,
    pub call_id: String,
    pub cseq: u32,
    pub expires_at: i64,
    pub q: Option<u16>,
    /// `description="…"` feature parameter (seed §10.2/§10.3).
    pub description: Option<String>,
    /// `methods="…"` feature parameter.
    pub methods: Option<String>,
}

impl BindingRecord {
    pub fn key(&self) -> String {
        format!("{}\n{}", self.aor, self.uri)
    }

    /// The PUA registered `methods="SUBSCRIBE"`: it handles subscriptions
    /// itself (seed §10.2). Recorded and shown to operators; the PA still
    /// serves the presentity (docs/presence.md).
    pub fn handles_subscriptions(&self) -> bool {
        self.methods.as_deref().is_some_and(|m| {
            m.split(',')
                .any(|x| x.trim().eq_ignore_ascii_case("SUBSCRIBE"))
        })
    }
}

/// One publication (RFC 3903 event state) of a local AOR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicationRecord {
    pub aor: String,
    pub etag: String,
    pub expires_at: i64,
    pub content_type: String,
    pub body: String,
    /// When this state was last modified (ordering of equal tuple ids).
    pub modified_at: i64,
    /// The publisher (From URI).
    pub publisher: String,
}

impl PublicationRecord {
    pub fn key(&self) -> String {
        format!("{}\n{}", self.aor, self.etag)
    }
}

/// The state of a subscription (RFC 6665 §4.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubStatus {
    Active,
    Pending,
}

/// The event package of a subscription (RFC 6665 §7.2, RFC 3856, RFC 3857).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Package {
    #[serde(rename = "presence")]
    Presence,
    #[serde(rename = "presence.winfo")]
    WatcherInfo,
}

impl Package {
    /// The Event header token.
    pub fn as_str(self) -> &'static str {
        match self {
            Package::Presence => "presence",
            Package::WatcherInfo => "presence.winfo",
        }
    }
}

/// The documents a subscription gets: a presence format (negotiated from
/// Accept) or watcher information. Stored as its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocFormat {
    Presence(PresenceFormat),
    WatcherInfo,
}

impl DocFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            DocFormat::Presence(f) => f.content_type(),
            DocFormat::WatcherInfo => crate::body::winfo::CONTENT_TYPE,
        }
    }

    pub fn from_content_type(ct: &str) -> Option<DocFormat> {
        if ct.eq_ignore_ascii_case(crate::body::winfo::CONTENT_TYPE) {
            Some(DocFormat::WatcherInfo)
        } else {
            PresenceFormat::from_content_type(ct).map(DocFormat::Presence)
        }
    }
}

impl Serialize for DocFormat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.content_type())
    }
}

impl<'de> Deserialize<'de> for DocFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DocFormat, D::Error> {
        let ct = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DocFormat::from_content_type(&ct)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown document format {ct:?}")))
    }
}

/// One subscription to a local presentity.
///
/// Every live subscription is held in memory as one of these, so the text
/// is held compactly (issue 4: memory per subscription): the id is shared
/// with the agent's indexes and timers (`Arc`), the package and format are
/// enums, the dialog is one buffer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// The dialog id (`Call-ID;local-tag;remote-tag`).
    pub id: Arc<str>,
    pub presentity: Arc<str>,
    pub watcher: Box<str>,
    pub event: Package,
    pub event_id: Option<Box<str>>,
    pub dialog: Dialog,
    pub expires_at: i64,
    /// Content type of the documents this watcher gets.
    pub format: DocFormat,
    pub status: SubStatus,
    /// A CPIM watcher served directly (no SIP dialog): notifications go
    /// to the adapter queue (design §2).
    #[serde(default)]
    pub cpim: Option<Box<CpimWatcher>>,
    /// The `version` of the next watcherinfo document (RFC 3858 §4.2).
    #[serde(default)]
    pub winfo_version: u32,
    /// Polite blocking (OMA flow 2.5): active, but only ever the neutral
    /// document.
    #[serde(default)]
    pub polite: bool,
    /// Became active by the owner's approval (pending → active): its
    /// watcherinfo event is then `approved`, in full state too (RFC 3857
    /// §3.4.1, RFC 3858 §5's example).
    #[serde(default)]
    pub approved: bool,
}

impl SubscriptionRecord {
    /// The stored value ([`codec::POSTCARD_KEYED`], the [`Stored`] layout):
    /// what the key or the dialog already holds is left out (sled keeps
    /// every value it has read in memory; issue 4).
    pub fn to_stored(&self) -> Vec<u8> {
        codec::encode_keyed(&Stored::of(self))
    }

    /// A stored subscription: the keyed layout with its id taken from the
    /// key, or a record of an older version carrying everything itself.
    pub fn from_stored(key: &[u8], value: &[u8]) -> Result<SubscriptionRecord, StoreError> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            tree: Tree::Subscriptions.name(),
            reason: reason.into(),
        };
        if value.first() != Some(&codec::POSTCARD_KEYED) {
            return codec::decode(Tree::Subscriptions, value);
        }
        let s: Stored<'_> = codec::decode_keyed(Tree::Subscriptions, value)?;
        let id = std::str::from_utf8(key).map_err(|_| corrupt("subscription key is not UTF-8"))?;
        let elided = |text: Cow<'_, str>, uri: &str| -> Result<String, StoreError> {
            if !text.is_empty() {
                return Ok(text.into_owned());
            }
            unbracket(uri)
                .map(str::to_owned)
                .ok_or_else(|| corrupt("elided URI but the dialog has none"))
        };
        Ok(SubscriptionRecord {
            id: id.into(),
            presentity: elided(s.presentity, s.dialog.local_uri())?.into(),
            watcher: elided(s.watcher, s.dialog.remote_uri())?.into(),
            event: s.event,
            event_id: s.event_id.map(|e| e.into()),
            expires_at: s.expires_at,
            format: s
                .format
                .unwrap_or(DocFormat::Presence(PresenceFormat::Pidf)),
            status: s.status,
            cpim: s.cpim.map(|c| Box::new(c.into_owned())),
            winfo_version: s.winfo_version,
            polite: s.polite,
            approved: s.approved,
            dialog: s.dialog.into_owned(),
        })
    }
}

/// `<uri>` → `uri` (the dialog's URIs are name-addrs without display name).
fn unbracket(name_addr: &str) -> Option<&str> {
    name_addr.strip_prefix('<')?.strip_suffix('>')
}

/// How a [`SubscriptionRecord`] is stored (postcard, positional: the field
/// order is the format; the golden test pins it). Left out, because the
/// key or the dialog holds them: the id (the key), the presentity and the
/// watcher when they are the dialog's local and remote URI (empty then),
/// and the format when it is PIDF (`None`).
#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    #[serde(borrow)]
    presentity: Cow<'a, str>,
    #[serde(borrow)]
    watcher: Cow<'a, str>,
    event: Package,
    #[serde(borrow)]
    event_id: Option<Cow<'a, str>>,
    dialog: Cow<'a, Dialog>,
    expires_at: i64,
    format: Option<DocFormat>,
    status: SubStatus,
    cpim: Option<Cow<'a, CpimWatcher>>,
    winfo_version: u32,
    polite: bool,
    approved: bool,
}

impl<'a> Stored<'a> {
    fn of(r: &'a SubscriptionRecord) -> Stored<'a> {
        let elide = |text: &'a str, uri: &str| -> Cow<'a, str> {
            if unbracket(uri) == Some(text) {
                Cow::Borrowed("")
            } else {
                Cow::Borrowed(text)
            }
        };
        Stored {
            presentity: elide(&r.presentity, r.dialog.local_uri()),
            watcher: elide(&r.watcher, r.dialog.remote_uri()),
            event: r.event,
            event_id: r.event_id.as_deref().map(Cow::Borrowed),
            dialog: Cow::Borrowed(&r.dialog),
            expires_at: r.expires_at,
            format: (r.format != DocFormat::Presence(PresenceFormat::Pidf)).then_some(r.format),
            status: r.status,
            cpim: r.cpim.as_deref().map(Cow::Borrowed),
            winfo_version: r.winfo_version,
            polite: r.polite,
            approved: r.approved,
        }
    }
}

/// An authorization rule for one watcher of one presentity (issue 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyAction {
    /// 200 and the real document.
    Allow,
    /// 403 to SUBSCRIBE (OMA flow 2.4). No rule is a permission to
    /// PUBLISH: that takes a [`PublisherRecord`] (issue 14).
    Block,
    /// 200 and a neutral, closed document, never the real state (OMA 2.5).
    PoliteBlock,
    /// 202, pending, neutral document until the owner decides (OMA 2.6).
    Confirm,
}

impl PolicyAction {
    pub fn parse(s: &str) -> Option<PolicyAction> {
        match s {
            "allow" => Some(PolicyAction::Allow),
            "block" => Some(PolicyAction::Block),
            "polite-block" => Some(PolicyAction::PoliteBlock),
            "confirm" => Some(PolicyAction::Confirm),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyAction::Allow => "allow",
            PolicyAction::Block => "block",
            PolicyAction::PoliteBlock => "polite-block",
            PolicyAction::Confirm => "confirm",
        }
    }
}

/// A stored rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub presentity: String,
    pub watcher: String,
    pub action: PolicyAction,
}

impl PolicyRecord {
    pub fn key(&self) -> String {
        format!("{}\n{}", self.presentity, self.watcher)
    }
}

/// A grant: `publisher` may PUBLISH event state for `presentity` (both
/// AOR keys). RFC 3903 §6 step 4 makes the ESC decide whether a publisher
/// is authorized; a presentity publishes for itself, anyone else only with
/// one of these. Kept apart from [`PolicyRecord`] on purpose: being allowed
/// to see a presentity is no right to speak for it (issue 14).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublisherRecord {
    pub presentity: String,
    pub publisher: String,
}

impl PublisherRecord {
    pub fn key(&self) -> String {
        format!("{}\n{}", self.presentity, self.publisher)
    }
}

/// The CPIM side of a subscription: the identities as the adapter sent them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpimWatcher {
    pub watcher: String,
    pub target: String,
    pub trans_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialog::DialogFields;
    use crate::store::codec::{decode, encode};

    fn sample() -> SubscriptionRecord {
        SubscriptionRecord {
            id: "c1;lt;rt".into(),
            presentity: "sip:p@example.com".into(),
            watcher: "sip:w@example.com".into(),
            event: Package::Presence,
            event_id: None,
            dialog: Dialog::from(&DialogFields {
                call_id: "c1".into(),
                local_tag: "lt".into(),
                remote_tag: "rt".into(),
                local_uri: "<sip:p@example.com>".into(),
                remote_uri: "<sip:w@example.com>".into(),
                remote_target: "sip:w@192.0.2.1".into(),
                route_set: vec!["<sip:proxy;lr>".into()],
                local_cseq: 3,
                remote_cseq: Some(1),
                secure: false,
            }),
            expires_at: 1_700_000_000_000,
            format: DocFormat::Presence(PresenceFormat::Pidf),
            status: SubStatus::Pending,
            cpim: None,
            winfo_version: 2,
            polite: false,
            approved: false,
        }
    }

    /// The stored form is the field order (store/codec.rs): this pins it, so
    /// a reordered field or variant fails here instead of misreading stores.
    #[test]
    fn subscription_record_encoding_is_stable() {
        let rec = sample();
        let bin = encode(&rec);
        let hex: String = bin.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "010863313b6c743b7274117369703a70406578616d706c652e636f6d117369703a77406578616d706c652e636f6d0000026331026c74027274133c7369703a70406578616d706c652e636f6d3e133c7369703a77406578616d706c652e636f6d3e0f7369703a77403139322e302e322e31010e3c7369703a70726f78793b6c723e0301010080a0abfef962146170706c69636174696f6e2f706964662b786d6c0100020000"
        );
        assert_eq!(
            decode::<SubscriptionRecord>(Tree::Subscriptions, &bin).unwrap(),
            rec
        );
        // A record written as JSON by an earlier version still loads.
        let json = serde_json::to_vec(&rec).unwrap();
        assert_eq!(
            decode::<SubscriptionRecord>(Tree::Subscriptions, &json).unwrap(),
            rec
        );
        assert!(
            bin.len() * 2 < json.len(),
            "{} vs {}",
            bin.len(),
            json.len()
        );
    }

    /// The stored form of a publisher grant is its field order (codec.rs):
    /// pinned, like the subscription's.
    #[test]
    fn publisher_record_encoding_is_stable() {
        let rec = PublisherRecord {
            presentity: "sip:b@example.com".into(),
            publisher: "sip:a@example.com".into(),
        };
        assert_eq!(rec.key(), "sip:b@example.com\nsip:a@example.com");
        let bin = encode(&rec);
        let hex: String = bin.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "01117369703a62406578616d706c652e636f6d117369703a61406578616d706c652e636f6d"
        );
        assert_eq!(
            decode::<PublisherRecord>(Tree::Publishers, &bin).unwrap(),
            rec
        );
        let json = serde_json::to_vec(&rec).unwrap();
        assert_eq!(
            decode::<PublisherRecord>(Tree::Publishers, &json).unwrap(),
            rec
        );
    }

    /// What the agent stores: no id (the key has it), no presentity or
    /// watcher when they are the dialog's URIs, no format when PIDF; read
    /// back whole. Older values (V1, JSON) still load.
    #[test]
    fn stored_subscription_leaves_out_what_key_and_dialog_hold() {
        let rec = sample();
        let stored = rec.to_stored();
        let hex: String = stored.iter().map(|b| format!("{b:02x}")).collect();
        // 02 | presentity "" | watcher "" | event 0 | event_id None |
        // dialog (as in V1) | expires | format None | Pending | no cpim |
        // winfo_version 2 | polite, approved false.
        assert_eq!(
            hex,
            concat!(
                "02",
                "00000000",
                "026331026c74027274133c7369703a70406578616d706c652e636f6d3e133c7369703a77",
                "406578616d706c652e636f6d3e0f7369703a77403139322e302e322e31010e3c736970",
                "3a70726f78793b6c723e03010100",
                "80a0abfef962",
                "00",
                "01",
                "00",
                "02",
                "0000"
            )
        );
        let v1 = encode(&rec);
        assert!(
            stored.len() + 40 < v1.len(),
            "{} vs {}",
            stored.len(),
            v1.len()
        );
        assert_eq!(
            SubscriptionRecord::from_stored(rec.id.as_bytes(), &stored).unwrap(),
            rec
        );
        // The key, not the value, names the subscription.
        assert_eq!(
            &*SubscriptionRecord::from_stored(b"k", &stored).unwrap().id,
            "k"
        );
        // What differs from the dialog is kept: a watcher with a port (its
        // AOR has none), another format.
        let mut other = sample();
        other.watcher = "sip:w@example.com".into();
        other.dialog = Dialog::from(&DialogFields {
            remote_uri: "<sip:w@example.com:5070>".into(),
            ..DialogFields::from(&other.dialog)
        });
        other.format = DocFormat::Presence(PresenceFormat::Xpidf);
        let back = SubscriptionRecord::from_stored(b"c1;lt;rt", &other.to_stored()).unwrap();
        assert_eq!(back, other);
        // A CPIM watcher has no dialog: everything is stored.
        let mut cpim = sample();
        cpim.dialog = Dialog::default();
        cpim.cpim = Some(Box::new(CpimWatcher {
            watcher: "pres:x@xmpp.example.org".into(),
            target: "pres:p@example.com".into(),
            trans_id: "t1".into(),
        }));
        let back = SubscriptionRecord::from_stored(b"c1;lt;rt", &cpim.to_stored()).unwrap();
        assert_eq!(back, cpim);
        // An elided URI with no dialog to take it from is corrupt, not "".
        let mut bad = cpim.to_stored();
        bad[1] = 0; // presentity length 0
        bad.drain(2..2 + cpim.presentity.len());
        assert!(matches!(
            SubscriptionRecord::from_stored(b"k", &bad),
            Err(StoreError::Corrupt { .. })
        ));
        // Values written by earlier versions carry their own id.
        assert_eq!(SubscriptionRecord::from_stored(b"k", &v1).unwrap(), rec);
        let json = serde_json::to_vec(&rec).unwrap();
        assert_eq!(SubscriptionRecord::from_stored(b"k", &json).unwrap(), rec);
        assert!(matches!(
            SubscriptionRecord::from_stored(&[0xff], &stored),
            Err(StoreError::Corrupt { .. })
        ));
        // Generic decoding refuses a keyed value rather than guess.
        assert!(decode::<SubscriptionRecord>(Tree::Subscriptions, &stored).is_err());
    }
}
