//! The legacy XPIDF (`application/xpidf+xml`), read and written. There is
//! no specification; the decisions are documented here.
//!
//! Parsing accepts two shapes, both without a namespace:
//! 1. the seed draft's CPIM-01 DTD shape (draft-rosenberg-impp-presence-01
//!    §10): `<presence entityInfo="pres:..."><tuple destination="..."
//!    status="open"/></presence>`. `entity` = `entityInfo`; one tuple per
//!    `<tuple>`: contact = `destination` (no priority), id = `"t"` + 8 lower
//!    hex digits of the 32-bit FNV-1a hash of the destination (deterministic,
//!    stable across NOTIFYs), `destination` is required.
//! 2. the deployed (Microsoft/pjsip/Asterisk) shape: `<presence><presentity
//!    uri/><atom id><address uri priority><status status/></address></atom>`,
//!    optionally after `<!DOCTYPE presence PUBLIC "-//IETF//DTD RFCxxxx XPIDF
//!    1.0//EN" "xpidf.dtd">` (never resolved). `entity` = presentity `uri`
//!    exactly as given (no `sip:`→`pres:` rewriting: that is the gateway's
//!    job); one tuple per `<address>`: id = atom `id` (or `atomid`; `atom<n>`
//!    if absent), suffixed `-<k>` (k = 1, 2, ...) when an atom has several
//!    addresses; contact = address `uri` + `priority` (ignored if not a
//!    qvalue); `<note>` children of the address become tuple notes.
//!
//! In both shapes, ids are made unique by appending `-2`, `-3`, ... if needed.
//! Status mapping: `open` → [`Basic::Open`]; `closed` → [`Basic::Closed`]
//! (ASCII case-insensitive); any other value (`inuse`, `inactive`, `busy`,
//! `Away from keyboard`, ...) → [`Basic::Closed`] *plus* a tuple [`Note`]
//! carrying the original value so the information is not lost (open = willing
//! to communicate, as pjsip reads it: everything else is offline); a missing
//! status leaves `basic` as `None`.
//!
//! Rendering XPIDF always uses shape 2 with the DOCTYPE line: one `<atom>` per
//! tuple (atom id = tuple id), one `<address>` with the contact (the entity
//! when the tuple has no contact), `<status status="open|closed"/>` (`closed`
//! when basic is unknown), `<msnsubstatus substatus="online|offline"/>` as
//! Windows Messenger/Asterisk send it, and the tuple notes as `<note>`.
//! Timestamps, presence-level notes and extensions cannot be carried.

use std::collections::HashSet;

use super::model::{Basic, Contact, Note, PresenceDoc, Tuple};
use super::parse::{check_root, note, parse_priority, required_attr};
use super::render::{XML_DECL, attr_value, fmt_priority, line, render_note};
use crate::body::BodyError;
use crate::body::xml::Element;

/// DOCTYPE line of deployed XPIDF.
pub const XPIDF_DOCTYPE: &str =
    r#"<!DOCTYPE presence PUBLIC "-//IETF//DTD RFCxxxx XPIDF 1.0//EN" "xpidf.dtd">"#;

/// 32-bit FNV-1a.
fn fnv1a32(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn unique_id(id: String, used: &mut HashSet<String>) -> String {
    if used.insert(id.clone()) {
        return id;
    }
    let mut n = 2usize;
    loop {
        let candidate = format!("{id}-{n}");
        if used.insert(candidate.clone()) {
            return candidate;
        }
        n += 1;
    }
}

/// XPIDF status value → basic (+ a note keeping a non-basic value).
fn xpidf_status(raw: Option<&str>) -> (Option<Basic>, Option<Note>) {
    let Some(raw) = raw else {
        return (None, None);
    };
    let v = raw.trim();
    if v.eq_ignore_ascii_case("open") {
        (Some(Basic::Open), None)
    } else if v.eq_ignore_ascii_case("closed") || v.is_empty() {
        (Some(Basic::Closed), None)
    } else {
        (
            Some(Basic::Closed),
            Some(Note {
                text: v.to_owned(),
                lang: None,
            }),
        )
    }
}

pub(super) fn from_xpidf(root: &Element) -> Result<PresenceDoc, BodyError> {
    check_root(root, None)?;
    if root.attr("entityInfo").is_some() {
        return from_xpidf_seed(root);
    }
    let deployed = root
        .child_elements()
        .any(|c| c.is(None, "presentity") || c.is(None, "atom"));
    if deployed {
        return from_xpidf_deployed(root);
    }
    if root.child_elements().any(|c| c.is(None, "tuple")) {
        return Err(BodyError::MissingAttribute {
            element: "presence",
            attribute: "entityInfo",
        });
    }
    Err(BodyError::MissingElement("presentity"))
}

fn from_xpidf_seed(root: &Element) -> Result<PresenceDoc, BodyError> {
    let entity = required_attr(root, "presence", "entityInfo", "presence entityInfo")?;
    let mut used = HashSet::new();
    let mut tuples = Vec::new();
    for t in root.child_elements().filter(|c| c.is(None, "tuple")) {
        let dest = required_attr(t, "tuple", "destination", "tuple destination")?;
        let (basic, extra) = xpidf_status(t.attr("status"));
        let id = unique_id(format!("t{:08x}", fnv1a32(&dest)), &mut used);
        tuples.push(Tuple {
            id,
            basic,
            status_extensions: Vec::new(),
            contact: Some(Contact {
                uri: dest,
                priority: None,
            }),
            notes: extra.into_iter().collect(),
            timestamp: None,
            extensions: Vec::new(),
        });
    }
    Ok(PresenceDoc {
        entity,
        tuples,
        notes: Vec::new(),
        extensions: Vec::new(),
    })
}

fn from_xpidf_deployed(root: &Element) -> Result<PresenceDoc, BodyError> {
    let presentity = root
        .child_elements()
        .find(|c| c.is(None, "presentity"))
        .ok_or(BodyError::MissingElement("presentity"))?;
    let entity = required_attr(presentity, "presentity", "uri", "presentity uri")?;
    let mut used = HashSet::new();
    let mut tuples = Vec::new();
    for (n, atom) in root
        .child_elements()
        .filter(|c| c.is(None, "atom"))
        .enumerate()
    {
        let atom_id = atom
            .attr("id")
            .or_else(|| atom.attr("atomid"))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("atom{}", n + 1));
        let addresses: Vec<&Element> = atom
            .child_elements()
            .filter(|c| c.is(None, "address"))
            .collect();
        let several = addresses.len() > 1;
        for (k, addr) in addresses.into_iter().enumerate() {
            let uri = required_attr(addr, "address", "uri", "address uri")?;
            let priority = addr.attr("priority").and_then(parse_priority);
            let status = addr
                .child_elements()
                .find(|c| c.is(None, "status"))
                .and_then(|s| s.attr("status"));
            let (basic, extra) = xpidf_status(status);
            let mut notes: Vec<Note> = extra.into_iter().collect();
            notes.extend(
                addr.child_elements()
                    .filter(|c| c.is(None, "note"))
                    .map(note),
            );
            let id = if several {
                format!("{atom_id}-{}", k + 1)
            } else {
                atom_id.clone()
            };
            tuples.push(Tuple {
                id: unique_id(id, &mut used),
                basic,
                status_extensions: Vec::new(),
                contact: Some(Contact { uri, priority }),
                notes,
                timestamp: None,
                extensions: Vec::new(),
            });
        }
    }
    Ok(PresenceDoc {
        entity,
        tuples,
        notes: Vec::new(),
        extensions: Vec::new(),
    })
}

pub(super) fn render_xpidf(doc: &PresenceDoc) -> String {
    let mut out = String::with_capacity(512);
    line(&mut out, 0, XML_DECL);
    line(&mut out, 0, XPIDF_DOCTYPE);
    line(&mut out, 0, "<presence>");
    line(
        &mut out,
        1,
        &format!("<presentity uri=\"{}\"/>", attr_value(&doc.entity)),
    );
    for t in &doc.tuples {
        line(&mut out, 1, &format!("<atom id=\"{}\">", attr_value(&t.id)));
        let (uri, priority) = match &t.contact {
            Some(c) => (c.uri.as_str(), c.priority.and_then(fmt_priority)),
            None => (doc.entity.as_str(), None),
        };
        let mut s = format!("<address uri=\"{}\"", attr_value(uri));
        if let Some(p) = priority {
            s.push_str(&format!(" priority=\"{p}\""));
        }
        s.push('>');
        line(&mut out, 2, &s);
        let (status, sub) = match t.basic {
            Some(Basic::Open) => ("open", "online"),
            Some(Basic::Closed) | None => ("closed", "offline"),
        };
        line(&mut out, 3, &format!("<status status=\"{status}\"/>"));
        line(&mut out, 3, &format!("<msnsubstatus substatus=\"{sub}\"/>"));
        for n in &t.notes {
            render_note(&mut out, 3, n);
        }
        line(&mut out, 2, "</address>");
        line(&mut out, 1, "</atom>");
    }
    line(&mut out, 0, "</presence>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::pidf::PresenceFormat;
    use crate::body::pidf::tests::{RFC3863_EXAMPLE, XPIDF_DEPLOYED, fixture_body, pidf};

    #[test]
    fn seed_xpidf_fixtures_parse() {
        let cases = [
            (
                "10.1-F3-NOTIFY.sip",
                "pres:presentity@example.com",
                "sip:presentity@example.com",
                Basic::Open,
                None,
            ),
            (
                "10.1-F5-NOTIFY.sip",
                "pres:presentity@example.com",
                "sip:presentity@example.com",
                Basic::Closed,
                None,
            ),
            (
                "10.2-F7-NOTIFY.sip",
                "pres:resource@example.com",
                "im:resource@example.com",
                Basic::Open,
                None,
            ),
            (
                "10.2-F11-NOTIFY.sip",
                "pres:resource@example.com",
                "im:resource@example.com",
                Basic::Closed,
                Some("busy"),
            ),
            (
                "10.3-F3-NOTIFY.sip",
                "pres:resource@example.com",
                "im:resource@example.com",
                Basic::Open,
                None,
            ),
            (
                "10.3-F7-NOTIFY.sip",
                "pres:resource@example.com",
                "im:resource@example.com",
                Basic::Closed,
                Some("Away from keyboard"),
            ),
        ];
        for (file, entity, dest, basic, note) in cases {
            let body = fixture_body(file);
            let doc = PresenceDoc::parse(&body, PresenceFormat::Xpidf)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(doc.entity, entity, "{file}");
            assert_eq!(doc.tuples.len(), 1, "{file}");
            let t = &doc.tuples[0];
            assert_eq!(t.id, format!("t{:08x}", fnv1a32(dest)), "{file}");
            assert_eq!(t.id.len(), 9);
            assert_eq!(t.basic, Some(basic), "{file}");
            assert_eq!(
                t.contact,
                Some(Contact {
                    uri: dest.to_owned(),
                    priority: None
                }),
                "{file}"
            );
            assert_eq!(
                t.notes.iter().map(|n| n.text.as_str()).next(),
                note,
                "{file}"
            );
            // Seed XPIDF is not PIDF.
            assert!(matches!(
                PresenceDoc::parse(&body, PresenceFormat::Pidf),
                Err(BodyError::WrongNamespace { ref found }) if found.is_empty()
            ));
        }
        // Same destination → same id across NOTIFYs (F3 and F5).
        let a =
            PresenceDoc::parse(&fixture_body("10.1-F3-NOTIFY.sip"), PresenceFormat::Xpidf).unwrap();
        let b =
            PresenceDoc::parse(&fixture_body("10.1-F5-NOTIFY.sip"), PresenceFormat::Xpidf).unwrap();
        assert_eq!(a.tuples[0].id, b.tuples[0].id);
    }

    #[test]
    fn xpidf_deployed_shape() {
        let doc = PresenceDoc::parse(XPIDF_DEPLOYED.as_bytes(), PresenceFormat::Xpidf).unwrap();
        assert_eq!(doc.entity, "sip:user@example.com;method=SUBSCRIBE");
        let ids: Vec<_> = doc.tuples.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["1000", "2000-1", "2000-2", "atom3"]);
        let basics: Vec<_> = doc.tuples.iter().map(|t| t.basic).collect();
        assert_eq!(
            basics,
            [
                Some(Basic::Open),
                Some(Basic::Closed),
                Some(Basic::Closed),
                Some(Basic::Closed)
            ]
        );
        assert_eq!(
            doc.tuples[0].contact,
            Some(Contact {
                uri: "sip:user@host;user=ip".into(),
                priority: Some(0.8)
            })
        );
        assert_eq!(doc.tuples[1].notes[0].text, "inuse");
        assert_eq!(doc.tuples[2].contact.as_ref().unwrap().priority, None);
        let notes: Vec<_> = doc.tuples[2]
            .notes
            .iter()
            .map(|n| n.text.as_str())
            .collect();
        assert_eq!(notes, ["inactive", "gone"]);
        assert!(doc.tuples[3].notes.is_empty());

        // Render (deployed shape with DOCTYPE) and parse back: stable.
        let text = doc.render(PresenceFormat::Xpidf);
        assert!(text.starts_with(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<!DOCTYPE presence PUBLIC \"-//IETF//DTD RFCxxxx XPIDF 1.0//EN\" \"xpidf.dtd\">\r\n<presence>\r\n"
        ));
        assert!(text.contains(r#"<status status="open"/>"#));
        let back = PresenceDoc::parse(text.as_bytes(), PresenceFormat::Xpidf).unwrap();
        assert_eq!(back, doc);
        assert_eq!(back.render(PresenceFormat::Xpidf), text);
    }

    #[test]
    fn xpidf_seed_shape_edge_cases() {
        let body = r#"<presence entityInfo="pres:p@example.com">
  <tuple destination="sip:p@a" status="OPEN"/>
  <tuple destination="sip:p@a" status="closed"/>
  <tuple destination="sip:p@b"/>
</presence>"#;
        let doc = PresenceDoc::parse(body.as_bytes(), PresenceFormat::Xpidf).unwrap();
        let id = format!("t{:08x}", fnv1a32("sip:p@a"));
        assert_eq!(doc.tuples[0].id, id);
        assert_eq!(doc.tuples[1].id, format!("{id}-2"));
        assert_eq!(doc.tuples[0].basic, Some(Basic::Open));
        assert_eq!(doc.tuples[1].basic, Some(Basic::Closed));
        assert_eq!(doc.tuples[2].basic, None);
        assert_eq!(
            PresenceDoc::parse(
                br#"<presence><tuple destination="x"/></presence>"#,
                PresenceFormat::Xpidf
            ),
            Err(BodyError::MissingAttribute {
                element: "presence",
                attribute: "entityInfo"
            })
        );
        assert_eq!(
            PresenceDoc::parse(
                br#"<presence entityInfo="pres:x"><tuple status="open"/></presence>"#,
                PresenceFormat::Xpidf
            ),
            Err(BodyError::MissingAttribute {
                element: "tuple",
                attribute: "destination"
            })
        );
        assert_eq!(
            PresenceDoc::parse(
                br#"<presence><atom id="1"/></presence>"#,
                PresenceFormat::Xpidf
            ),
            Err(BodyError::MissingElement("presentity"))
        );
        assert_eq!(
            PresenceDoc::parse(br#"<presence/>"#, PresenceFormat::Xpidf),
            Err(BodyError::MissingElement("presentity"))
        );
        assert_eq!(
            PresenceDoc::parse(br#"<presence><presentity uri="sip:a@b"/><atom id="1"><address/></atom></presence>"#, PresenceFormat::Xpidf),
            Err(BodyError::MissingAttribute { element: "address", attribute: "uri" })
        );
    }

    #[test]
    fn pidf_to_xpidf_and_back() {
        let doc = pidf(RFC3863_EXAMPLE).unwrap();
        let text = doc.render(PresenceFormat::Xpidf);
        let x = PresenceDoc::parse(text.as_bytes(), PresenceFormat::Xpidf).unwrap();
        assert_eq!(x.entity, doc.entity);
        assert_eq!(x.tuples.len(), doc.tuples.len());
        for (a, b) in doc.tuples.iter().zip(&x.tuples) {
            assert_eq!(a.id, b.id);
            assert_eq!(a.basic, b.basic);
            assert_eq!(a.contact, b.contact);
            assert_eq!(a.notes, b.notes);
        }
        // A tuple without contact gets the entity as address; unknown basic → closed.
        let mut d = PresenceDoc::neutral("pres:z@example.com");
        d.tuples[0].basic = None;
        let x = PresenceDoc::parse(
            d.render(PresenceFormat::Xpidf).as_bytes(),
            PresenceFormat::Xpidf,
        )
        .unwrap();
        assert_eq!(
            x.tuples[0].contact.as_ref().unwrap().uri,
            "pres:z@example.com"
        );
        assert_eq!(x.tuples[0].basic, Some(Basic::Closed));
    }
}
