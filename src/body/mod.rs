//! Message bodies, pure (no I/O, no clock, no global state): presence
//! documents — PIDF (RFC 3863), cpim-pidf (its pre-RFC drafts) and legacy
//! XPIDF — in [`pidf`], and the RFC 3862 `message/cpim` wrapper in [`cpim`].
//!
//! [`presence_of`] is the one-call reader used for the "parsed tuples"
//! convenience view: any supported presence type, optionally wrapped in
//! message/cpim (the inner Content-Type decides).

pub mod cpim;
pub mod pidf;
pub mod winfo;
mod xml;

pub use pidf::{Basic, Contact, Note, PresenceDoc, PresenceFormat, Tuple, XmlFragment, negotiate};

use bytes::Bytes;

/// How many message/cpim wrappers [`presence_of`] unwraps at most.
pub const MAX_CPIM_NESTING: usize = 4;

fn ns_display(ns: &str) -> &str {
    if ns.is_empty() { "(no namespace)" } else { ns }
}

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not well-formed XML (XML 1.0 / Namespaces in XML), or not UTF-8.
    #[error("not well-formed XML at byte {offset}: {reason}")]
    NotWellFormed { reason: String, offset: usize },
    /// Elements nested deeper than the parser accepts.
    #[error("XML nested deeper than {limit} elements")]
    TooDeep { limit: usize },
    /// The document element is not in the namespace of the declared format
    /// (`found` is empty for no namespace).
    #[error(
        "document element is in namespace {}, which is not the namespace of the declared presence format",
        ns_display(.found)
    )]
    WrongNamespace { found: String },
    /// A mandatory element is absent (`presence`, `status`, `presentity`).
    #[error("required element <{0}> is missing")]
    MissingElement(&'static str),
    /// A mandatory attribute is absent.
    #[error("element <{element}> has no required attribute \"{attribute}\"")]
    MissingAttribute {
        element: &'static str,
        attribute: &'static str,
    },
    /// A value outside its allowed set/syntax.
    #[error("invalid {what}: {value:?}")]
    InvalidValue { what: &'static str, value: String },
    /// Two tuples share an id (RFC 3863 §4.1.2: ids are unique).
    #[error("tuple id {0:?} appears more than once")]
    DuplicateTupleId(String),
    /// An element that may appear at most once appears again.
    #[error("element <{0}> appears more than once where at most one is allowed")]
    DuplicateElement(&'static str),
    /// [`presence_of`] was given a media type it does not read.
    #[error("unsupported presence content type {0:?}")]
    UnsupportedContentType(String),
    /// Malformed message/cpim wrapper.
    #[error(transparent)]
    Cpim(#[from] cpim::CpimError),
}

/// Parses a presence body of any supported type (`application/pidf+xml`,
/// `application/cpim-pidf+xml`, `application/xpidf+xml`, or `message/cpim`
/// wrapping one of them, up to [`MAX_CPIM_NESTING`] levels); the inner
/// Content-Type decides. Lenient where deployed practice differs from the
/// label: a document whose root namespace is that of another supported
/// format (e.g. XPIDF or PIDF sent as cpim-pidf, as Asterisk does) is parsed
/// as that format, and that format is returned.
pub fn presence_of(
    content_type: &str,
    body: &Bytes,
) -> Result<(PresenceFormat, PresenceDoc), BodyError> {
    let mut content_type = content_type.to_owned();
    let mut body = body.clone();
    for _ in 0..=MAX_CPIM_NESTING {
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case(cpim::CONTENT_TYPE) {
            let msg = cpim::CpimMessage::parse(&body)?;
            content_type = msg
                .content_type
                .ok_or(BodyError::Cpim(cpim::CpimError::MissingContentType))?;
            body = msg.body;
            continue;
        }
        let format = PresenceFormat::from_content_type(essence)
            .ok_or_else(|| BodyError::UnsupportedContentType(essence.to_owned()))?;
        return pidf::parse_lenient(&body, format);
    }
    Err(BodyError::Cpim(cpim::CpimError::TooDeep {
        limit: MAX_CPIM_NESTING,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_of_plain_types() {
        let pidf = Bytes::from_static(
            br#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@b"><tuple id="x"><status><basic>open</basic></status></tuple></presence>"#,
        );
        let (f, doc) = presence_of("application/pidf+xml;charset=UTF-8", &pidf).unwrap();
        assert_eq!(f, PresenceFormat::Pidf);
        assert_eq!(doc.tuples[0].basic, Some(Basic::Open));
        // Labelled cpim-pidf but really PIDF / XPIDF: read as what it is.
        let (f, _) = presence_of("application/cpim-pidf+xml", &pidf).unwrap();
        assert_eq!(f, PresenceFormat::Pidf);
        let xpidf = Bytes::from_static(
            br#"<presence><presentity uri="sip:a@b"/><atom id="1"><address uri="sip:a@h"><status status="open"/></address></atom></presence>"#,
        );
        let (f, doc) = presence_of("application/cpim-pidf+xml", &xpidf).unwrap();
        assert_eq!(f, PresenceFormat::Xpidf);
        assert_eq!(doc.entity, "sip:a@b");
        let (f, _) = presence_of("Application/XPIDF+XML", &xpidf).unwrap();
        assert_eq!(f, PresenceFormat::Xpidf);
        // A foreign namespace is still an error.
        let other = Bytes::from_static(br#"<presence xmlns="urn:x" entity="pres:a@b"/>"#);
        assert_eq!(
            presence_of("application/pidf+xml", &other),
            Err(BodyError::WrongNamespace {
                found: "urn:x".into()
            })
        );
        assert_eq!(
            presence_of("text/plain", &pidf),
            Err(BodyError::UnsupportedContentType("text/plain".into()))
        );
    }

    #[test]
    fn presence_of_message_cpim() {
        let (bytes, inner) = cpim::tests::wrapped_pidf();
        let (f, doc) = presence_of("message/cpim", &bytes).unwrap();
        assert_eq!(f, PresenceFormat::Pidf);
        assert_eq!(
            doc,
            PresenceDoc::parse(inner.as_bytes(), PresenceFormat::Pidf).unwrap()
        );
        assert_eq!(doc.entity, "pres:piglet@100akerwood.com");
        // Nested once more.
        let mut nested = b"From: <im:x@y>\r\n\r\nContent-Type: Message/CPIM\r\n\r\n".to_vec();
        nested.extend_from_slice(&bytes);
        let (f, doc2) = presence_of("Message/CPIM", &Bytes::from(nested)).unwrap();
        assert_eq!((f, doc2), (PresenceFormat::Pidf, doc));
        // Too deep.
        let mut deep = bytes.to_vec();
        for _ in 0..=MAX_CPIM_NESTING {
            let mut outer = b"From: <im:x@y>\r\n\r\nContent-Type: message/cpim\r\n\r\n".to_vec();
            outer.extend_from_slice(&deep);
            deep = outer;
        }
        assert_eq!(
            presence_of("message/cpim", &Bytes::from(deep)),
            Err(BodyError::Cpim(cpim::CpimError::TooDeep {
                limit: MAX_CPIM_NESTING
            }))
        );
        // Inner entity without a Content-Type.
        let bare = Bytes::from_static(b"From: <im:x@y>\r\n\r\n\r\n<presence/>");
        assert_eq!(
            presence_of("message/cpim", &bare),
            Err(BodyError::Cpim(cpim::CpimError::MissingContentType))
        );
        // Malformed wrapper.
        let broken =
            Bytes::from_static(b"From: <im:x@y>\r\nContent-Type: application/pidf+xml\r\n");
        assert!(matches!(
            presence_of("message/cpim", &broken),
            Err(BodyError::Cpim(cpim::CpimError::MissingBlankLine { .. }))
        ));
    }
}
