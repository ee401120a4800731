//! The presence of one XMPP resource or one PIDF tuple, as the adapter keeps
//! it: the common ground of both mappings (RFC 8048 §6).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// XMPP `<show/>` (RFC 6121 §4.7.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Show {
    Chat,
    Away,
    Xa,
    Dnd,
}

/// One resource (XMPP) or tuple (PIDF).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ResourcePresence {
    /// No type / `basic=open` (true); `unavailable` / `basic=closed` (false).
    pub available: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show: Option<Show>,
    /// `<status/>` ↔ `<note/>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `xml:lang` of the status / note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    /// XMPP `<priority/>` (-128..127); PIDF contact priority is 0..1.
    #[serde(default)]
    pub priority: i8,
}

/// All resources of one presentity, by resource name (tuple id without the
/// `ID-` prefix RFC 8048 §6.2 adds for xs:ID).
pub type Resources = BTreeMap<String, ResourcePresence>;
