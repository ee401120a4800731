//! The presence document model.
//!
//! One model for all three formats ([`PresenceDoc`]): RFC 3863 §4.1 `<presence
//! entity>` with `tuple*`, `note*` and extensions; each `<tuple id>` (§4.1.2,
//! ids unique per document) with a mandatory `<status>` (§4.1.3) holding an
//! optional `<basic>` (§4.1.4) and extensions, an optional `<contact
//! priority>` (§4.1.5), `<note xml:lang>` (§4.1.6) and `<timestamp>` (§4.1.7).
//! Known children are accepted in any order; on output they follow the
//! schema order of RFC 3863 §4.4 (status, extensions, contact, note,
//! timestamp; presence: tuples, notes, extensions).
//!
//! Elements the model does not know (RPID RFC 4480, data model RFC 4479, any
//! other namespace, or unknown names in the PIDF namespace) are kept as
//! [`XmlFragment`]s: a self-contained serialization that declares every
//! namespace prefix it uses, normalized on the first parse (whitespace-only
//! text between child elements, comments and PIs dropped) and stable after.
//! `mustUnderstand` (RFC 3863 §4.1.3) is not enforced: such elements are
//! preserved and passed on, never silently dropped. Unknown *attributes* on
//! the known PIDF elements are not kept.

/// RFC 3863 §4.1.4 `<basic>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basic {
    Open,
    Closed,
}

impl Basic {
    pub fn as_str(self) -> &'static str {
        match self {
            Basic::Open => "open",
            Basic::Closed => "closed",
        }
    }
}

/// RFC 3863 §4.1.5 `<contact priority="...">uri</contact>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub uri: String,
    /// qvalue 0..=1; `None` = lowest priority.
    pub priority: Option<f32>,
}

/// RFC 3863 §4.1.6 `<note xml:lang="...">`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub text: String,
    pub lang: Option<String>,
}

/// An element the model does not know, kept so it survives re-rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlFragment {
    /// Namespace of the fragment's root element (`None` = no namespace).
    pub namespace: Option<String>,
    pub local_name: String,
    /// Self-contained serialization (declares all prefixes it uses).
    pub xml: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tuple {
    pub id: String,
    pub basic: Option<Basic>,
    /// Unknown children of `<status>`.
    pub status_extensions: Vec<XmlFragment>,
    pub contact: Option<Contact>,
    pub notes: Vec<Note>,
    /// As received (RFC 3339), whitespace-trimmed.
    pub timestamp: Option<String>,
    /// Unknown children of `<tuple>` (RPID, data model...).
    pub extensions: Vec<XmlFragment>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PresenceDoc {
    /// e.g. "pres:alice@example.com"
    pub entity: String,
    pub tuples: Vec<Tuple>,
    /// Presence-level notes.
    pub notes: Vec<Note>,
    /// Unknown children of `<presence>` (e.g. RPID `<person>`, data-model `<device>`).
    pub extensions: Vec<XmlFragment>,
}

impl Tuple {
    /// Milliseconds since the UNIX epoch of `timestamp` (RFC 3339, any offset),
    /// `None` if absent/unparseable.
    pub fn timestamp_millis(&self) -> Option<i64> {
        let ts = self.timestamp.as_deref()?.trim();
        let dt =
            time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).ok()?;
        i64::try_from(dt.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
    }
}

impl PresenceDoc {
    /// A document that reveals nothing: one tuple (id "neutral") with basic
    /// closed, no contact/notes. Used for pending and polite-block subscriptions.
    pub fn neutral(entity: &str) -> PresenceDoc {
        PresenceDoc {
            entity: entity.to_owned(),
            tuples: vec![Tuple {
                id: "neutral".to_owned(),
                basic: Some(Basic::Closed),
                status_extensions: Vec::new(),
                contact: None,
                notes: Vec::new(),
                timestamp: None,
                extensions: Vec::new(),
            }],
            notes: Vec::new(),
            extensions: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::pidf::PresenceFormat;
    use crate::body::pidf::tests::assert_round_trips;

    #[test]
    fn neutral_document() {
        let doc = PresenceDoc::neutral("pres:bob@example.com");
        assert_eq!(doc.tuples.len(), 1);
        assert_eq!(doc.tuples[0].id, "neutral");
        assert_eq!(doc.tuples[0].basic, Some(Basic::Closed));
        assert!(doc.tuples[0].contact.is_none() && doc.tuples[0].notes.is_empty());
        assert!(doc.notes.is_empty() && doc.extensions.is_empty());
        assert_round_trips(&doc);
        let x = PresenceDoc::parse(
            doc.render(PresenceFormat::Xpidf).as_bytes(),
            PresenceFormat::Xpidf,
        )
        .unwrap();
        assert_eq!(x.tuples[0].id, "neutral");
        assert_eq!(x.tuples[0].basic, Some(Basic::Closed));
    }
}
