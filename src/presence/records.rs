//! The durable records of the presence agent (design §6): absolute expiry
//! times in UNIX milliseconds, serialized as JSON so `export` dumps are
//! readable.

use crate::dialog::Dialog;
use serde::{Deserialize, Serialize};

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

/// One subscription to a local presentity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// The dialog id (`Call-ID;local-tag;remote-tag`).
    pub id: String,
    pub presentity: String,
    pub watcher: String,
    pub event: String,
    pub event_id: Option<String>,
    pub dialog: Dialog,
    pub expires_at: i64,
    /// Content type of the documents this watcher gets.
    pub format: String,
    pub status: SubStatus,
    /// A CPIM watcher served directly (no SIP dialog): notifications go
    /// to the adapter queue (design §2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpim: Option<CpimWatcher>,
    /// The `version` of the next watcherinfo document (RFC 3858 §4.2).
    #[serde(default)]
    pub winfo_version: u32,
    /// Polite blocking (OMA flow 2.5): active, but only ever the neutral
    /// document.
    #[serde(default)]
    pub polite: bool,
}

/// An authorization rule for one watcher of one presentity (issue 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyAction {
    /// 200 and the real document.
    Allow,
    /// 403 (to SUBSCRIBE and to a third-party PUBLISH, OMA flow 2.4).
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

/// The CPIM side of a subscription: the identities as the adapter sent them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpimWatcher {
    pub watcher: String,
    pub target: String,
    pub trans_id: String,
}
