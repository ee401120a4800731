//! The three presence formats: media type and namespace of each
//! ([`PresenceFormat`]), and which reader and writer serve a format
//! ([`PresenceDoc::parse`], [`PresenceDoc::render`], and the lenient reader
//! behind [`crate::body::presence_of`]).

use super::model::PresenceDoc;
use super::parse::from_pidf;
use super::render::render_pidf;
use super::xpidf::{from_xpidf, render_xpidf};
use crate::body::BodyError;
use crate::body::xml::{self, Element};

/// RFC 3863 namespace.
pub const PIDF_NS: &str = "urn:ietf:params:xml:ns:pidf";
/// draft-ietf-impp-cpim-pidf-05/-07 namespace.
pub const CPIM_PIDF_NS: &str = "urn:ietf:params:xml:ns:cpim-pidf";

/// The three presence body formats the gateway reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PresenceFormat {
    /// `application/pidf+xml` (RFC 3863).
    Pidf,
    /// `application/cpim-pidf+xml` (pre-RFC 3863 drafts).
    CpimPidf,
    /// `application/xpidf+xml` (legacy; see the docs of `xpidf.rs`).
    Xpidf,
}

impl PresenceFormat {
    /// All formats, in order of preference.
    pub const ALL: [PresenceFormat; 3] = [
        PresenceFormat::Pidf,
        PresenceFormat::CpimPidf,
        PresenceFormat::Xpidf,
    ];

    pub fn content_type(self) -> &'static str {
        match self {
            PresenceFormat::Pidf => "application/pidf+xml",
            PresenceFormat::CpimPidf => "application/cpim-pidf+xml",
            PresenceFormat::Xpidf => "application/xpidf+xml",
        }
    }

    /// Case-insensitive match on the media type essence; parameters ignored.
    pub fn from_content_type(ct: &str) -> Option<PresenceFormat> {
        let essence = ct.split(';').next().unwrap_or("").trim();
        PresenceFormat::ALL
            .into_iter()
            .find(|f| f.content_type().eq_ignore_ascii_case(essence))
    }

    /// XML namespace of the document element (`None` for XPIDF).
    pub fn namespace(self) -> Option<&'static str> {
        match self {
            PresenceFormat::Pidf => Some(PIDF_NS),
            PresenceFormat::CpimPidf => Some(CPIM_PIDF_NS),
            PresenceFormat::Xpidf => None,
        }
    }
}

impl PresenceDoc {
    /// Parses a body of the given format. Strict about the namespace of the
    /// document element; see [`crate::body::presence_of`] for a lenient entry point.
    pub fn parse(body: &[u8], format: PresenceFormat) -> Result<PresenceDoc, BodyError> {
        let root = xml::parse_document(body)?;
        from_root(&root, format)
    }

    /// Renders the document; deterministic, CRLF line ends, 2-space indent.
    pub fn render(&self, format: PresenceFormat) -> String {
        match format {
            PresenceFormat::Pidf => render_pidf(self, PIDF_NS),
            PresenceFormat::CpimPidf => render_pidf(self, CPIM_PIDF_NS),
            PresenceFormat::Xpidf => render_xpidf(self),
        }
    }
}

/// Parses `body` labelled as `labelled`; if the document element is in the
/// namespace of another supported format, parses it as that one instead
/// (deployed practice: XPIDF or PIDF sent as cpim-pidf, see Asterisk).
pub(crate) fn parse_lenient(
    body: &[u8],
    labelled: PresenceFormat,
) -> Result<(PresenceFormat, PresenceDoc), BodyError> {
    let root = xml::parse_document(body)?;
    match from_root(&root, labelled) {
        Ok(doc) => Ok((labelled, doc)),
        Err(err @ BodyError::WrongNamespace { .. }) => {
            let actual = PresenceFormat::ALL
                .into_iter()
                .find(|f| f.namespace() == root.ns.as_deref());
            match actual {
                Some(f) if f != labelled => from_root(&root, f).map(|doc| (f, doc)),
                _ => Err(err),
            }
        }
        Err(e) => Err(e),
    }
}

fn from_root(root: &Element, format: PresenceFormat) -> Result<PresenceDoc, BodyError> {
    match format {
        PresenceFormat::Pidf => from_pidf(root, PIDF_NS),
        PresenceFormat::CpimPidf => from_pidf(root, CPIM_PIDF_NS),
        PresenceFormat::Xpidf => from_xpidf(root),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::pidf::tests::{RFC3863_EXAMPLE, RPID_EXAMPLE, XPIDF_DEPLOYED, fixture_body};

    #[test]
    fn content_types() {
        for f in PresenceFormat::ALL {
            assert_eq!(PresenceFormat::from_content_type(f.content_type()), Some(f));
        }
        assert_eq!(
            PresenceFormat::from_content_type(" Application/PIDF+XML ; charset=UTF-8"),
            Some(PresenceFormat::Pidf)
        );
        assert_eq!(
            PresenceFormat::from_content_type("application/CPIM-pidf+xml"),
            Some(PresenceFormat::CpimPidf)
        );
        assert_eq!(PresenceFormat::from_content_type("application/xml"), None);
        assert_eq!(PresenceFormat::from_content_type(""), None);
    }

    #[test]
    fn truncations_never_panic() {
        let mut bodies: Vec<Vec<u8>> = vec![
            RFC3863_EXAMPLE.as_bytes().to_vec(),
            RPID_EXAMPLE.as_bytes().to_vec(),
            XPIDF_DEPLOYED.as_bytes().to_vec(),
        ];
        let dir = format!("{}/fixtures/seed-flows", env!("CARGO_MANIFEST_DIR"));
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sip"))
            .collect();
        names.sort();
        for name in names {
            let body = fixture_body(&name);
            if !body.is_empty() {
                bodies.push(body);
            }
        }
        assert!(bodies.len() >= 13);
        for body in &bodies {
            for end in 0..=body.len() {
                for f in PresenceFormat::ALL {
                    let _ = PresenceDoc::parse(&body[..end], f);
                    let _ = PresenceDoc::parse(&body[end..], f);
                }
            }
        }
    }

    mod prop {
        use super::*;
        use crate::body::pidf::{Basic, Contact, Note, Tuple};
        use proptest::prelude::*;
        use std::collections::HashSet;

        fn text() -> impl Strategy<Value = String> {
            "[ -~\u{a0}-\u{2fff}\t\r\n]{0,16}"
        }
        fn token() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9:@.+_&<>\"'-]{1,12}".prop_filter("no surrounding space", |s| s.trim() == s)
        }
        fn note() -> impl Strategy<Value = Note> {
            (text(), proptest::option::of("[a-z]{2}(-[A-Z]{2})?"))
                .prop_map(|(text, lang)| Note { text, lang })
        }
        fn tuple() -> impl Strategy<Value = Tuple> {
            (
                token(),
                proptest::option::of(prop_oneof![Just(Basic::Open), Just(Basic::Closed)]),
                proptest::option::of((token(), proptest::option::of(0u16..=1000))),
                proptest::collection::vec(note(), 0..3),
                proptest::option::of(token()),
            )
                .prop_map(|(id, basic, contact, notes, timestamp)| Tuple {
                    id,
                    basic,
                    status_extensions: Vec::new(),
                    contact: contact.map(|(uri, p)| Contact {
                        uri,
                        priority: p.map(|p| format!("0.{p:03}").parse::<f32>().unwrap().min(1.0)),
                    }),
                    notes,
                    timestamp,
                    extensions: Vec::new(),
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

            #[test]
            fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                for f in PresenceFormat::ALL {
                    let _ = PresenceDoc::parse(&bytes, f);
                }
            }

            #[test]
            fn xmlish_mutations_never_panic(
                cut in 0usize..2000,
                insert in "[<>&;/=\"'a-z:# \\[\\]!?-]{0,8}",
            ) {
                for base in [RFC3863_EXAMPLE, RPID_EXAMPLE, XPIDF_DEPLOYED] {
                    let at = cut % (base.len() + 1);
                    let at = (0..=at).rev().find(|i| base.is_char_boundary(*i)).unwrap_or(0);
                    let mutated = format!("{}{}{}", &base[..at], insert, &base[at..]);
                    for f in PresenceFormat::ALL {
                        if let Ok(doc) = PresenceDoc::parse(mutated.as_bytes(), f) {
                            // Whatever parses must re-render to something that parses the same.
                            if f != PresenceFormat::Xpidf {
                                let again = PresenceDoc::parse(doc.render(f).as_bytes(), f);
                                prop_assert_eq!(again, Ok(doc));
                            }
                        }
                    }
                }
            }

            #[test]
            fn generated_docs_round_trip(
                entity in token(),
                tuples in proptest::collection::vec(tuple(), 0..4),
                notes in proptest::collection::vec(note(), 0..3),
            ) {
                let mut seen = HashSet::new();
                let tuples: Vec<Tuple> = tuples.into_iter().filter(|t| seen.insert(t.id.clone())).collect();
                let doc = PresenceDoc { entity, tuples, notes, extensions: Vec::new() };
                for f in [PresenceFormat::Pidf, PresenceFormat::CpimPidf] {
                    let text = doc.render(f);
                    prop_assert_eq!(PresenceDoc::parse(text.as_bytes(), f), Ok(doc.clone()));
                }
            }
        }
    }
}
