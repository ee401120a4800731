//! Presence documents: PIDF (RFC 3863), its pre-RFC name cpim-pidf
//! (draft-ietf-impp-cpim-pidf-05/-07) and the legacy XPIDF, plus Accept
//! negotiation (RFC 3261 §20.1, RFC 3856 §6.5/§7.1).
//!
//! # Model
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
//!
//! # cpim-pidf
//! Same shape, namespace `urn:ietf:params:xml:ns:cpim-pidf`, any prefix (the
//! old drafts wrote `impp:`). [`PresenceDoc::parse`] is strict about the
//! namespace ([`BodyError::WrongNamespace`]); [`super::presence_of`] is the
//! lenient entry point that falls back to the format the content really has.
//!
//! # XPIDF (no specification; decisions documented here)
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
//!
//! # Entities
//! Only the predefined entities and character references are resolved; any
//! other entity reference (even one declared in an internal DTD subset) makes
//! the document not well-formed. No entity is ever expanded from a DTD.

use std::collections::HashSet;

use super::BodyError;
use super::xml::{self, Element, XML_NS};

/// RFC 3863 namespace.
pub const PIDF_NS: &str = "urn:ietf:params:xml:ns:pidf";
/// draft-ietf-impp-cpim-pidf-05/-07 namespace.
pub const CPIM_PIDF_NS: &str = "urn:ietf:params:xml:ns:cpim-pidf";
/// DOCTYPE line of deployed XPIDF.
pub const XPIDF_DOCTYPE: &str =
    r#"<!DOCTYPE presence PUBLIC "-//IETF//DTD RFCxxxx XPIDF 1.0//EN" "xpidf.dtd">"#;

const XML_DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;
const NL: &str = "\r\n";

/// The three presence body formats the gateway reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PresenceFormat {
    /// `application/pidf+xml` (RFC 3863).
    Pidf,
    /// `application/cpim-pidf+xml` (pre-RFC 3863 drafts).
    CpimPidf,
    /// `application/xpidf+xml` (legacy; see the module docs).
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
    /// Parses a body of the given format. Strict about the namespace of the
    /// document element; see [`super::presence_of`] for a lenient entry point.
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

// ---------------------------------------------------------------------------
// PIDF / cpim-pidf parsing
// ---------------------------------------------------------------------------

fn check_root(root: &Element, ns: Option<&str>) -> Result<(), BodyError> {
    if root.ns.as_deref() != ns {
        return Err(BodyError::WrongNamespace {
            found: root.ns.clone().unwrap_or_default(),
        });
    }
    if root.local != "presence" {
        return Err(BodyError::MissingElement("presence"));
    }
    Ok(())
}

fn required_attr(
    el: &Element,
    element: &'static str,
    attribute: &'static str,
    what: &'static str,
) -> Result<String, BodyError> {
    let v = el
        .attr(attribute)
        .ok_or(BodyError::MissingAttribute { element, attribute })?
        .trim();
    if v.is_empty() {
        return Err(BodyError::InvalidValue {
            what,
            value: String::new(),
        });
    }
    Ok(v.to_owned())
}

fn fragment(el: &Element) -> XmlFragment {
    XmlFragment {
        namespace: el.ns.clone(),
        local_name: el.local.clone(),
        xml: xml::fragment_xml(el),
    }
}

fn note(el: &Element) -> Note {
    Note {
        text: el.text(),
        lang: el
            .attr_ns(XML_NS, "lang")
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned),
    }
}

/// RFC 3261 qvalue-ish: a finite number in 0..=1.
fn parse_priority(v: &str) -> Option<f32> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let p: f32 = v.parse().ok()?;
    (p.is_finite() && (0.0..=1.0).contains(&p)).then_some(p)
}

fn from_pidf(root: &Element, ns: &'static str) -> Result<PresenceDoc, BodyError> {
    check_root(root, Some(ns))?;
    let entity = required_attr(root, "presence", "entity", "presence entity")?;
    let mut doc = PresenceDoc {
        entity,
        tuples: Vec::new(),
        notes: Vec::new(),
        extensions: Vec::new(),
    };
    let mut ids = HashSet::new();
    for child in root.child_elements() {
        if child.is(Some(ns), "tuple") {
            let t = parse_tuple(child, ns)?;
            if !ids.insert(t.id.clone()) {
                return Err(BodyError::DuplicateTupleId(t.id));
            }
            doc.tuples.push(t);
        } else if child.is(Some(ns), "note") {
            doc.notes.push(note(child));
        } else {
            doc.extensions.push(fragment(child));
        }
    }
    Ok(doc)
}

fn parse_tuple(el: &Element, ns: &str) -> Result<Tuple, BodyError> {
    let id = required_attr(el, "tuple", "id", "tuple id")?;
    let mut t = Tuple {
        id,
        basic: None,
        status_extensions: Vec::new(),
        contact: None,
        notes: Vec::new(),
        timestamp: None,
        extensions: Vec::new(),
    };
    let mut have_status = false;
    for c in el.child_elements() {
        if c.ns.as_deref() != Some(ns) {
            t.extensions.push(fragment(c));
            continue;
        }
        match c.local.as_str() {
            "status" => {
                if have_status {
                    return Err(BodyError::DuplicateElement("status"));
                }
                have_status = true;
                for s in c.child_elements() {
                    if s.is(Some(ns), "basic") {
                        if t.basic.is_some() {
                            return Err(BodyError::DuplicateElement("basic"));
                        }
                        let v = s.text();
                        t.basic = Some(match v.trim() {
                            "open" => Basic::Open,
                            "closed" => Basic::Closed,
                            other => {
                                return Err(BodyError::InvalidValue {
                                    what: "basic",
                                    value: other.to_owned(),
                                });
                            }
                        });
                    } else {
                        t.status_extensions.push(fragment(s));
                    }
                }
            }
            "contact" => {
                if t.contact.is_some() {
                    return Err(BodyError::DuplicateElement("contact"));
                }
                let uri = c.text().trim().to_owned();
                if uri.is_empty() {
                    return Err(BodyError::InvalidValue {
                        what: "contact",
                        value: uri,
                    });
                }
                let priority = match c.attr("priority") {
                    None => None,
                    Some(p) => Some(parse_priority(p).ok_or_else(|| BodyError::InvalidValue {
                        what: "contact priority",
                        value: p.to_owned(),
                    })?),
                };
                t.contact = Some(Contact { uri, priority });
            }
            "note" => t.notes.push(note(c)),
            "timestamp" => {
                if t.timestamp.is_some() {
                    return Err(BodyError::DuplicateElement("timestamp"));
                }
                let ts = c.text().trim().to_owned();
                if !ts.is_empty() {
                    t.timestamp = Some(ts);
                }
            }
            _ => t.extensions.push(fragment(c)),
        }
    }
    if !have_status {
        return Err(BodyError::MissingElement("status"));
    }
    Ok(t)
}

// ---------------------------------------------------------------------------
// XPIDF parsing
// ---------------------------------------------------------------------------

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

fn from_xpidf(root: &Element) -> Result<PresenceDoc, BodyError> {
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

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

fn attr_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    xml::escape_attr(v, &mut s);
    s
}

/// qvalue with at most 3 decimals (RFC 3261 §25.1); `None` if not finite.
fn fmt_priority(p: f32) -> Option<String> {
    if !p.is_finite() {
        return None;
    }
    let p = (p.clamp(0.0, 1.0) * 1000.0).round() / 1000.0;
    Some(format!("{p}"))
}

fn line(out: &mut String, indent: usize, s: &str) {
    for _ in 0..indent {
        out.push_str("  ");
    }
    out.push_str(s);
    out.push_str(NL);
}

fn render_note(out: &mut String, indent: usize, n: &Note) {
    let mut s = String::from("<note");
    if let Some(l) = &n.lang {
        s.push_str(" xml:lang=\"");
        xml::escape_attr(l, &mut s);
        s.push('"');
    }
    s.push('>');
    xml::escape_text(&n.text, &mut s);
    s.push_str("</note>");
    line(out, indent, &s);
}

fn render_pidf(doc: &PresenceDoc, ns: &str) -> String {
    let mut out = String::with_capacity(512);
    line(&mut out, 0, XML_DECL);
    line(
        &mut out,
        0,
        &format!("<presence xmlns=\"{}\"", attr_value(ns)),
    );
    line(
        &mut out,
        1,
        &format!("entity=\"{}\">", attr_value(&doc.entity)),
    );
    for t in &doc.tuples {
        line(
            &mut out,
            1,
            &format!("<tuple id=\"{}\">", attr_value(&t.id)),
        );
        if t.basic.is_none() && t.status_extensions.is_empty() {
            line(&mut out, 2, "<status/>");
        } else {
            line(&mut out, 2, "<status>");
            if let Some(b) = t.basic {
                line(&mut out, 3, &format!("<basic>{}</basic>", b.as_str()));
            }
            for e in &t.status_extensions {
                line(&mut out, 3, &e.xml);
            }
            line(&mut out, 2, "</status>");
        }
        for e in &t.extensions {
            line(&mut out, 2, &e.xml);
        }
        if let Some(c) = &t.contact {
            let mut s = String::from("<contact");
            if let Some(p) = c.priority.and_then(fmt_priority) {
                s.push_str(&format!(" priority=\"{p}\""));
            }
            s.push('>');
            xml::escape_text(&c.uri, &mut s);
            s.push_str("</contact>");
            line(&mut out, 2, &s);
        }
        for n in &t.notes {
            render_note(&mut out, 2, n);
        }
        if let Some(ts) = &t.timestamp {
            line(
                &mut out,
                2,
                &format!("<timestamp>{}</timestamp>", xml::escape_text_cow(ts)),
            );
        }
        line(&mut out, 1, "</tuple>");
    }
    for n in &doc.notes {
        render_note(&mut out, 1, n);
    }
    for e in &doc.extensions {
        line(&mut out, 1, &e.xml);
    }
    line(&mut out, 0, "</presence>");
    out
}

fn render_xpidf(doc: &PresenceDoc) -> String {
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

// ---------------------------------------------------------------------------
// Negotiation
// ---------------------------------------------------------------------------

/// q-value of a media range (RFC 3261 §20.1 / RFC 7231 §5.3.1); an
/// unparseable q counts as 1, out-of-range values are clamped.
fn q_of(range: &mime::Mime) -> f32 {
    range
        .get_param("q")
        .and_then(|q| q.as_str().trim().parse::<f32>().ok())
        .filter(|q| q.is_finite())
        .map(|q| q.clamp(0.0, 1.0))
        .unwrap_or(1.0)
}

/// q the Accept ranges give to `format`: the most specific matching range
/// wins (exact > `type/*` > `*/*`); 0 when nothing matches.
fn quality(ranges: &[mime::Mime], format: PresenceFormat) -> f32 {
    let (ty, sub) = format
        .content_type()
        .split_once('/')
        .unwrap_or(("application", ""));
    let mut best: Option<(u8, f32)> = None;
    for r in ranges {
        let (rt, rs) = r.essence_str().split_once('/').unwrap_or(("", ""));
        let specificity = if rt.eq_ignore_ascii_case(ty) && rs.eq_ignore_ascii_case(sub) {
            2
        } else if rt.eq_ignore_ascii_case(ty) && rs == "*" {
            1
        } else if rt == "*" && rs == "*" {
            0
        } else {
            continue;
        };
        let q = q_of(r);
        best = match best {
            Some((s, bq)) if s > specificity || (s == specificity && bq >= q) => Some((s, bq)),
            _ => Some((specificity, q)),
        };
    }
    best.map_or(0.0, |(_, q)| q)
}

/// RFC 3261 §20.1 / RFC 3856 §6.5 negotiation: the format to send to a
/// watcher given its Accept values (`None` = header absent → PIDF;
/// `Some(empty list)` = nothing acceptable). Honours q-values (q=0 = not
/// acceptable), wildcards `*/*` and `application/*`; ties go to PIDF, then
/// cpim-pidf, then XPIDF. `None` return = 406 Not Acceptable.
pub fn negotiate(accept: Option<&[mime::Mime]>) -> Option<PresenceFormat> {
    let Some(ranges) = accept else {
        return Some(PresenceFormat::Pidf);
    };
    let mut best: Option<(PresenceFormat, f32)> = None;
    for f in PresenceFormat::ALL {
        let q = quality(ranges, f);
        if q > 0.0 && best.is_none_or(|(_, bq)| q > bq) {
            best = Some((f, q));
        }
    }
    best.map(|(f, _)| f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_body(name: &str) -> Vec<u8> {
        let path = format!("{}/fixtures/seed-flows/{name}", env!("CARGO_MANIFEST_DIR"));
        let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let pos = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("blank line");
        raw[pos + 4..].to_vec()
    }

    /// RFC 3863 §6 example (two tuples, status extensions, notes, xml:lang).
    pub(crate) const RFC3863_EXAMPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
    xmlns:im="urn:ietf:params:xml:ns:pidf:im"
    xmlns:myex="http://id.example.com/presence/"
    entity="pres:someone@example.com">
  <tuple id="bs35r9">
    <status>
      <basic>open</basic>
      <im:im>busy</im:im>
      <myex:location>home</myex:location>
    </status>
    <contact priority="0.8">im:someone@mobilecarrier.net</contact>
    <note xml:lang="en">Don't Disturb Please!</note>
    <note xml:lang="fr">Ne derangez pas, s'il vous plait</note>
    <timestamp>2001-10-27T16:49:29Z</timestamp>
  </tuple>
  <tuple id="eg92n8">
    <status>
      <basic>open</basic>
    </status>
    <contact priority="1.0">mailto:someone@example.com</contact>
  </tuple>
  <note>I'll be in Tokyo next week</note>
</presence>
"#;

    /// RFC 3863 §4.2.2 minimal example.
    const RFC3863_MINIMAL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
    entity="pres:someone@example.com">
  <tuple id="sg89ae">
    <status>
      <basic>open</basic>
    </status>
    <contact priority="0.8">tel:+09012345678</contact>
  </tuple>
</presence>
"#;

    /// RPID (RFC 4480) + data model (RFC 4479) extended PIDF.
    pub(crate) const RPID_EXAMPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
    xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
    xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xmlns:caps="urn:ietf:params:xml:ns:pidf:caps"
    entity="pres:someone@example.com">
  <tuple id="bs35r9">
    <status>
      <basic>open</basic>
    </status>
    <rpid:activities>
      <rpid:on-the-phone/>
    </rpid:activities>
    <dm:deviceID>urn:device:0003ba4811e3</dm:deviceID>
    <contact priority="0.8">im:someone@mobilecarrier.net</contact>
    <note xml:lang="en">Don't Disturb Please!</note>
    <timestamp>2005-05-30T22:00:29Z</timestamp>
  </tuple>
  <dm:person id="p1">
    <rpid:activities rpid:until="2005-05-30T23:00:00Z">
      <rpid:on-the-phone/>
      <!-- comments are dropped -->
    </rpid:activities>
    <rpid:class>calendar</rpid:class>
    <rpid:mood><rpid:other xml:lang="en">a &amp; b &lt;c&gt;</rpid:other></rpid:mood>
    <dm:note>Scoring 120</dm:note>
    <caps:extra xsi:type="caps:T"/>
    <dm:timestamp>2005-05-30T22:02:44+02:00</dm:timestamp>
  </dm:person>
  <dm:device id="pc122">
    <rpid:user-input>idle</rpid:user-input>
    <dm:deviceID>urn:device:0003ba4811e3</dm:deviceID>
  </dm:device>
</presence>
"#;

    fn pidf(body: &str) -> Result<PresenceDoc, BodyError> {
        PresenceDoc::parse(body.as_bytes(), PresenceFormat::Pidf)
    }

    fn assert_round_trips(doc: &PresenceDoc) {
        for f in [PresenceFormat::Pidf, PresenceFormat::CpimPidf] {
            let text = doc.render(f);
            let back = PresenceDoc::parse(text.as_bytes(), f)
                .unwrap_or_else(|e| panic!("{f:?}: {e}\n{text}"));
            assert_eq!(&back, doc, "{f:?} round trip\n{text}");
            assert_eq!(back.render(f), text, "{f:?} render is stable");
        }
    }

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
    fn seed_cpim_pidf_fixtures_parse() {
        let two = [
            ("publish-M3-NOTIFY.sip", Basic::Open, "2003-02-01T16:49:29Z"),
            ("publish-M7-NOTIFY.sip", Basic::Open, "2003-02-01T16:49:29Z"),
            (
                "publish-M11-NOTIFY.sip",
                Basic::Closed,
                "2003-02-01T17:00:19Z",
            ),
            (
                "publish-M13-NOTIFY.sip",
                Basic::Closed,
                "2003-02-01T17:00:19Z",
            ),
        ];
        for (file, mobile, mobile_ts) in two {
            let body = fixture_body(file);
            let doc = PresenceDoc::parse(&body, PresenceFormat::CpimPidf)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(doc.entity, "pres:presentity@domain.com");
            let ids: Vec<_> = doc.tuples.iter().map(|t| t.id.as_str()).collect();
            assert_eq!(ids, ["mobile-phone", "desktop"], "{file}");
            assert_eq!(doc.tuples[0].basic, Some(mobile));
            assert_eq!(doc.tuples[0].timestamp.as_deref(), Some(mobile_ts));
            assert_eq!(doc.tuples[1].basic, Some(Basic::Open));
            assert_eq!(
                doc.tuples[1].timestamp.as_deref(),
                Some("2003-02-01T12:21:29Z")
            );
            assert_eq!(doc.tuples[1].timestamp_millis(), Some(1_044_102_089_000));
            assert!(doc.notes.is_empty() && doc.extensions.is_empty());
            // Our renderer reproduces the fixture byte for byte.
            assert_eq!(
                doc.render(PresenceFormat::CpimPidf).as_bytes(),
                &body[..],
                "{file}"
            );
            // Declared as cpim-pidf, so not PIDF.
            assert_eq!(
                PresenceDoc::parse(&body, PresenceFormat::Pidf),
                Err(BodyError::WrongNamespace {
                    found: CPIM_PIDF_NS.to_owned()
                })
            );
        }
        let body = fixture_body("publish-M9-PUBLISH.sip");
        let doc = PresenceDoc::parse(&body, PresenceFormat::CpimPidf).unwrap();
        assert_eq!(doc.entity, "pres:presentity@domain.com");
        assert_eq!(doc.tuples.len(), 1);
        assert_eq!(doc.tuples[0].id, "mobile-phone");
        assert_eq!(doc.tuples[0].basic, Some(Basic::Closed));
        assert_eq!(
            doc.tuples[0].timestamp.as_deref(),
            Some("2003-02-01T17:00:19Z")
        );
        assert_eq!(doc.tuples[0].timestamp_millis(), Some(1_044_118_819_000));
        assert_eq!(doc.render(PresenceFormat::CpimPidf).as_bytes(), &body[..]);
    }

    #[test]
    fn cpim_pidf_with_impp_prefix() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<impp:presence xmlns:impp="urn:ietf:params:xml:ns:cpim-pidf"
    entity="pres:someone@example.com">
  <impp:tuple id="mobile-phone">
    <impp:status><impp:basic>open</impp:basic></impp:status>
    <impp:contact priority="0.8">tel:09012345678</impp:contact>
  </impp:tuple>
</impp:presence>"#;
        let doc = PresenceDoc::parse(body.as_bytes(), PresenceFormat::CpimPidf).unwrap();
        assert_eq!(doc.tuples[0].id, "mobile-phone");
        assert_eq!(doc.tuples[0].basic, Some(Basic::Open));
        assert_eq!(
            doc.tuples[0].contact,
            Some(Contact {
                uri: "tel:09012345678".into(),
                priority: Some(0.8)
            })
        );
        assert_round_trips(&doc);
    }

    #[test]
    fn rfc3863_example() {
        let doc = pidf(RFC3863_EXAMPLE).unwrap();
        assert_eq!(doc.entity, "pres:someone@example.com");
        assert_eq!(doc.tuples.len(), 2);
        let t = &doc.tuples[0];
        assert_eq!(t.id, "bs35r9");
        assert_eq!(t.basic, Some(Basic::Open));
        assert_eq!(
            t.contact,
            Some(Contact {
                uri: "im:someone@mobilecarrier.net".into(),
                priority: Some(0.8)
            })
        );
        assert_eq!(
            t.notes,
            vec![
                Note {
                    text: "Don't Disturb Please!".into(),
                    lang: Some("en".into())
                },
                Note {
                    text: "Ne derangez pas, s'il vous plait".into(),
                    lang: Some("fr".into())
                },
            ]
        );
        assert_eq!(t.timestamp.as_deref(), Some("2001-10-27T16:49:29Z"));
        assert_eq!(t.timestamp_millis(), Some(1_004_201_369_000));
        assert_eq!(t.status_extensions.len(), 2);
        assert_eq!(
            t.status_extensions[0],
            XmlFragment {
                namespace: Some("urn:ietf:params:xml:ns:pidf:im".into()),
                local_name: "im".into(),
                xml: r#"<im:im xmlns:im="urn:ietf:params:xml:ns:pidf:im">busy</im:im>"#.into(),
            }
        );
        assert_eq!(
            t.status_extensions[1].xml,
            r#"<myex:location xmlns:myex="http://id.example.com/presence/">home</myex:location>"#
        );
        let t2 = &doc.tuples[1];
        assert_eq!(t2.id, "eg92n8");
        assert_eq!(t2.contact.as_ref().unwrap().priority, Some(1.0));
        assert_eq!(t2.timestamp_millis(), None);
        assert_eq!(
            doc.notes,
            vec![Note {
                text: "I'll be in Tokyo next week".into(),
                lang: None
            }]
        );
        assert_round_trips(&doc);

        let min = pidf(RFC3863_MINIMAL).unwrap();
        assert_eq!(min.tuples[0].id, "sg89ae");
        assert_eq!(
            min.tuples[0].contact,
            Some(Contact {
                uri: "tel:+09012345678".into(),
                priority: Some(0.8)
            })
        );
        assert_round_trips(&min);
    }

    #[test]
    fn rpid_extensions_preserved() {
        let doc = pidf(RPID_EXAMPLE).unwrap();
        let t = &doc.tuples[0];
        assert_eq!(t.extensions.len(), 2);
        assert_eq!(
            t.extensions[0],
            XmlFragment {
                namespace: Some("urn:ietf:params:xml:ns:pidf:rpid".into()),
                local_name: "activities".into(),
                xml: r#"<rpid:activities xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"><rpid:on-the-phone/></rpid:activities>"#.into(),
            }
        );
        assert_eq!(t.extensions[1].local_name, "deviceID");
        assert_eq!(t.notes.len(), 1);
        assert_eq!(doc.extensions.len(), 2);
        let person = &doc.extensions[0];
        assert_eq!(
            person.namespace.as_deref(),
            Some("urn:ietf:params:xml:ns:pidf:data-model")
        );
        assert_eq!(person.local_name, "person");
        assert_eq!(
            person.xml,
            concat!(
                r#"<dm:person xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid""#,
                r#" xmlns:caps="urn:ietf:params:xml:ns:pidf:caps" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" id="p1">"#,
                r#"<rpid:activities rpid:until="2005-05-30T23:00:00Z"><rpid:on-the-phone/></rpid:activities>"#,
                r#"<rpid:class>calendar</rpid:class>"#,
                r#"<rpid:mood><rpid:other xml:lang="en">a &amp; b &lt;c&gt;</rpid:other></rpid:mood>"#,
                r#"<dm:note>Scoring 120</dm:note>"#,
                r#"<caps:extra xsi:type="caps:T"/>"#,
                r#"<dm:timestamp>2005-05-30T22:02:44+02:00</dm:timestamp>"#,
                r#"</dm:person>"#
            )
        );
        assert_eq!(doc.extensions[1].local_name, "device");
        assert_round_trips(&doc);

        // Extensions survive the trip through cpim-pidf too.
        let cpim = doc.render(PresenceFormat::CpimPidf);
        assert!(cpim.contains(r#"xmlns="urn:ietf:params:xml:ns:cpim-pidf""#));
        let back = PresenceDoc::parse(cpim.as_bytes(), PresenceFormat::CpimPidf).unwrap();
        assert_eq!(back, doc);
        // And each fragment is usable on its own.
        for frag in doc.extensions.iter().chain(&t.extensions) {
            let root = xml::parse_document(frag.xml.as_bytes()).unwrap();
            assert_eq!(root.ns, frag.namespace);
            assert_eq!(root.local, frag.local_name);
        }
    }

    #[test]
    fn fragment_default_namespace_and_rebinding() {
        // An un-prefixed extension, an un-namespaced child, and a prefix
        // rebound inside the extension.
        let body = r#"<p:presence xmlns:p="urn:ietf:params:xml:ns:pidf" xmlns:x="urn:a" entity="pres:a@b">
  <p:tuple id="t1"><p:status><p:basic>closed</p:basic></p:status>
    <ext xmlns="urn:ext" a="1"><inner/><bare xmlns=""/></ext>
    <x:a><x:b xmlns:x="urn:b"><x:c/></x:b><x:d/></x:a>
    <loose/>
  </p:tuple>
</p:presence>"#;
        let doc = pidf(body).unwrap();
        let ext = &doc.tuples[0].extensions;
        assert_eq!(
            ext[0].xml,
            r#"<ext xmlns="urn:ext" a="1"><inner/><bare xmlns=""/></ext>"#
        );
        assert_eq!(
            ext[1].xml,
            r#"<x:a xmlns:x="urn:a"><x:b xmlns:x="urn:b"><x:c/></x:b><x:d/></x:a>"#
        );
        assert_eq!(ext[2].namespace, None);
        assert_eq!(ext[2].xml, r#"<loose xmlns=""/>"#);
        assert_round_trips(&doc);
    }

    #[test]
    fn escaping_and_determinism() {
        let doc = PresenceDoc {
            entity: "pres:a&b<\"c\">@example.com".into(),
            tuples: vec![Tuple {
                id: "x\"&<".into(),
                basic: Some(Basic::Open),
                status_extensions: Vec::new(),
                contact: Some(Contact {
                    uri: "sip:a@b?x=1&y=<2>".into(),
                    priority: Some(0.125),
                }),
                notes: vec![Note {
                    text: " <&> \"q\" 'a'\r\n line2\ttab ".into(),
                    lang: Some("en-GB".into()),
                }],
                timestamp: Some("2003-02-01T17:00:19.5+01:00".into()),
                extensions: Vec::new(),
            }],
            notes: vec![Note {
                text: "]]> done".into(),
                lang: None,
            }],
            extensions: Vec::new(),
        };
        let text = doc.render(PresenceFormat::Pidf);
        assert!(text.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n"));
        assert!(text.contains(r#"entity="pres:a&amp;b&lt;&quot;c&quot;&gt;@example.com""#));
        assert!(text.contains(r#"<tuple id="x&quot;&amp;&lt;">"#));
        assert!(text.contains("sip:a@b?x=1&amp;y=&lt;2&gt;"));
        assert!(text.contains(r#"priority="0.125""#));
        assert!(text.contains("]]&gt; done"));
        assert_eq!(text, doc.render(PresenceFormat::Pidf));
        assert_eq!(doc.tuples[0].timestamp_millis(), Some(1_044_115_219_500));
        assert_round_trips(&doc);
    }

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

    #[test]
    fn errors_are_specific() {
        let wrap = |inner: &str| {
            format!(
                r#"<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@b">{inner}</presence>"#
            )
        };
        // Not well-formed.
        for bad in [
            "",
            "   ",
            "<presence",
            r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@b"><tuple></presence>"#,
            r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@b"></presence><x/>"#,
            r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="a&b"/>"#,
            r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@b">&ent;</presence>"#,
            r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@b">&#1;</presence>"#,
            r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="x" entity="y"/>"#,
            r#"<x:presence entity="pres:a@b"/>"#,
            "text<presence/>",
        ] {
            assert!(
                matches!(pidf(bad), Err(BodyError::NotWellFormed { .. })),
                "{bad:?} -> {:?}",
                pidf(bad)
            );
        }
        assert!(matches!(
            PresenceDoc::parse(b"<presence \xff/>", PresenceFormat::Pidf),
            Err(BodyError::NotWellFormed { offset: 10, .. })
        ));
        // Entity declared in an internal subset is still not expanded.
        let lol = r#"<?xml version="1.0"?><!DOCTYPE presence [<!ENTITY a "aaaa">]><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@b"><note>&a;</note></presence>"#;
        assert!(matches!(pidf(lol), Err(BodyError::NotWellFormed { .. })));
        // Wrong namespace.
        assert_eq!(
            pidf(r#"<presence xmlns="urn:ietf:params:xml:ns:cpim-pidf" entity="pres:a@b"/>"#),
            Err(BodyError::WrongNamespace {
                found: CPIM_PIDF_NS.into()
            })
        );
        assert_eq!(
            PresenceDoc::parse(wrap("").as_bytes(), PresenceFormat::CpimPidf),
            Err(BodyError::WrongNamespace {
                found: PIDF_NS.into()
            })
        );
        assert_eq!(
            PresenceDoc::parse(wrap("").as_bytes(), PresenceFormat::Xpidf),
            Err(BodyError::WrongNamespace {
                found: PIDF_NS.into()
            })
        );
        assert_eq!(
            pidf(r#"<presence entity="pres:a@b"/>"#),
            Err(BodyError::WrongNamespace {
                found: String::new()
            })
        );
        assert_eq!(
            pidf(r#"<foo xmlns="urn:ietf:params:xml:ns:pidf"/>"#),
            Err(BodyError::MissingElement("presence"))
        );
        // Missing entity.
        assert_eq!(
            pidf(r#"<presence xmlns="urn:ietf:params:xml:ns:pidf"/>"#),
            Err(BodyError::MissingAttribute {
                element: "presence",
                attribute: "entity"
            })
        );
        assert_eq!(
            pidf(r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity=" "/>"#),
            Err(BodyError::InvalidValue {
                what: "presence entity",
                value: String::new()
            })
        );
        // Missing tuple id.
        assert_eq!(
            pidf(&wrap("<tuple><status><basic>open</basic></status></tuple>")),
            Err(BodyError::MissingAttribute {
                element: "tuple",
                attribute: "id"
            })
        );
        // Duplicate tuple id.
        assert_eq!(
            pidf(&wrap(
                r#"<tuple id="a"><status/></tuple><tuple id="a"><status/></tuple>"#
            )),
            Err(BodyError::DuplicateTupleId("a".into()))
        );
        // Missing status.
        assert_eq!(
            pidf(&wrap(r#"<tuple id="a"><contact>sip:a@b</contact></tuple>"#)),
            Err(BodyError::MissingElement("status"))
        );
        // A status in another namespace does not count.
        assert_eq!(
            pidf(&wrap(
                r#"<tuple id="a"><s:status xmlns:s="urn:x"/></tuple>"#
            )),
            Err(BodyError::MissingElement("status"))
        );
        // Bad basic value.
        assert_eq!(
            pidf(&wrap(
                r#"<tuple id="a"><status><basic>busy</basic></status></tuple>"#
            )),
            Err(BodyError::InvalidValue {
                what: "basic",
                value: "busy".into()
            })
        );
        assert_eq!(
            pidf(&wrap(
                r#"<tuple id="a"><status><basic>open</basic><basic>open</basic></status></tuple>"#
            )),
            Err(BodyError::DuplicateElement("basic"))
        );
        assert_eq!(
            pidf(&wrap(r#"<tuple id="a"><status/><status/></tuple>"#)),
            Err(BodyError::DuplicateElement("status"))
        );
        // Bad priority.
        assert_eq!(
            pidf(&wrap(
                r#"<tuple id="a"><status/><contact priority="1.5">sip:a@b</contact></tuple>"#
            )),
            Err(BodyError::InvalidValue {
                what: "contact priority",
                value: "1.5".into()
            })
        );
        assert_eq!(
            pidf(&wrap(
                r#"<tuple id="a"><status/><contact priority="-0">sip:a@b</contact></tuple>"#
            )),
            Err(BodyError::InvalidValue {
                what: "contact priority",
                value: "-0".into()
            })
        );
        // Too deep.
        let deep = format!("{}{}", "<a>".repeat(100), "</a>".repeat(100));
        assert_eq!(
            pidf(&wrap(&deep)),
            Err(BodyError::TooDeep {
                limit: xml::MAX_DEPTH
            })
        );
        let ok_depth = format!(
            "{}{}",
            "<x:a xmlns:x=\"urn:x\">".repeat(60),
            "</x:a>".repeat(60)
        );
        assert!(pidf(&wrap(&ok_depth)).is_ok());
        // Messages say why.
        let msg = pidf(&wrap(
            r#"<tuple id="a"><status><basic>busy</basic></status></tuple>"#,
        ))
        .unwrap_err()
        .to_string();
        assert!(msg.contains("basic") && msg.contains("busy"), "{msg}");
        let msg = pidf(r#"<presence entity="pres:a@b"/>"#)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("no namespace"), "{msg}");
    }

    #[test]
    fn lenient_where_harmless() {
        // Children out of schema order, BOM, comments, PIs, CDATA, empty status.
        let body = "\u{feff}<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- hi -->\n\
            <presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\" pres:a@b \">\
            <note>top</note>\
            <tuple id=\" t1 \"><timestamp> 2003-02-01T17:00:19Z </timestamp><note><![CDATA[<raw>]]></note>\
            <contact> sip:a@b </contact><status/><?pi x?></tuple></presence>\n";
        let doc = pidf(body).unwrap();
        assert_eq!(doc.entity, "pres:a@b");
        let t = &doc.tuples[0];
        assert_eq!(t.id, "t1");
        assert_eq!(t.basic, None);
        assert_eq!(
            t.contact,
            Some(Contact {
                uri: "sip:a@b".into(),
                priority: None
            })
        );
        assert_eq!(t.notes[0].text, "<raw>");
        assert_eq!(t.timestamp.as_deref(), Some("2003-02-01T17:00:19Z"));
        assert_eq!(doc.notes[0].text, "top");
        assert_round_trips(&doc);
        // No tuples at all (allowed since -07 / RFC 3863).
        let empty =
            pidf(r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@b"/>"#).unwrap();
        assert!(empty.tuples.is_empty());
        assert_round_trips(&empty);
    }

    const XPIDF_DEPLOYED: &str = r#"<?xml version="1.0"?>
<!DOCTYPE presence PUBLIC "-//IETF//DTD RFCxxxx XPIDF 1.0//EN" "xpidf.dtd">
<presence>
  <presentity uri="sip:user@example.com;method=SUBSCRIBE"/>
  <atom id="1000">
    <address uri="sip:user@host;user=ip" priority="0.800000">
      <status status="open"/>
      <msnsubstatus substatus="online"/>
    </address>
  </atom>
  <atom atomid="2000">
    <address uri="sip:a@desk"><status status="inuse"/><msnsubstatus substatus="onthephone"/></address>
    <address uri="sip:a@mobile" priority="banana"><status status="inactive"/><note>gone</note></address>
  </atom>
  <atom>
    <address uri="sip:a@x"><status status="closed"/></address>
  </atom>
</presence>
"#;

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

    fn mimes(s: &[&str]) -> Vec<mime::Mime> {
        s.iter().map(|m| m.parse().unwrap()).collect()
    }

    #[test]
    fn negotiation() {
        use PresenceFormat::*;
        let n = |s: &[&str]| negotiate(Some(&mimes(s)));
        assert_eq!(negotiate(None), Some(Pidf));
        assert_eq!(n(&[]), None);
        assert_eq!(n(&["application/pidf+xml"]), Some(Pidf));
        assert_eq!(n(&["application/xpidf+xml"]), Some(Xpidf));
        assert_eq!(n(&["application/cpim-pidf+xml"]), Some(CpimPidf));
        assert_eq!(
            n(&["application/pidf+xml;q=0.5", "application/xpidf+xml"]),
            Some(Xpidf)
        );
        assert_eq!(n(&["application/*"]), Some(Pidf));
        assert_eq!(n(&["*/*"]), Some(Pidf));
        assert_eq!(n(&["text/plain"]), None);
        assert_eq!(n(&["application/pidf+xml;q=0"]), None);
        assert_eq!(
            n(&["application/pidf+xml;q=0", "application/*"]),
            Some(CpimPidf)
        );
        assert_eq!(
            n(&[
                "application/pidf+xml;q=0",
                "application/*;q=0.1",
                "application/xpidf+xml;q=0.2"
            ]),
            Some(Xpidf)
        );
        assert_eq!(
            n(&["application/xpidf+xml", "application/cpim-pidf+xml"]),
            Some(CpimPidf)
        );
        assert_eq!(
            n(&["application/xpidf+xml", "application/pidf+xml"]),
            Some(Pidf)
        );
        assert_eq!(n(&["Application/PIDF+XML;q=0.7", "text/plain"]), Some(Pidf));
        assert_eq!(n(&["*/*;q=0"]), None);
        assert_eq!(n(&["application/pidf+xml;q=bogus"]), Some(Pidf));
        assert_eq!(
            n(&["application/sdp", "application/xpidf+xml;q=0.001"]),
            Some(Xpidf)
        );
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
        use proptest::prelude::*;

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
