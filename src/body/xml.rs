//! Minimal, bounded, namespace-aware XML tree used by the presence parsers.
//!
//! Built from quick-xml's [`NsReader`] events (XML 1.0 + Namespaces in XML 1.0).
//! The tree is small on purpose: elements with their resolved namespace, the
//! namespace declarations written on them, attributes and text. Comments,
//! processing instructions and the DOCTYPE are dropped.
//!
//! Safety properties (the input is untrusted network data):
//! * no recursion while building; nesting deeper than [`MAX_DEPTH`] is an error;
//! * no entity expansion: the five predefined entities and character
//!   references are resolved, any other `&name;` is rejected as not well-formed
//!   (the DOCTYPE internal subset is never interpreted, external entities are
//!   never fetched);
//! * input must be UTF-8 (RFC 3863 §3.1 makes UTF-8 mandatory to accept);
//! * characters not allowed by XML 1.0 §2.2 (e.g. `&#1;`) are rejected.
//!
//! The serializer ([`fragment_xml`]) writes a self-contained copy of a subtree:
//! every namespace prefix it uses (element names, attribute names and
//! QName-looking attribute values such as `xsi:type="p:T"`) is declared inside
//! the copy, so it can be pasted into any document.

use std::borrow::Cow;

use quick_xml::XmlVersion;
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{PrefixDeclaration, QName, ResolveResult};
use quick_xml::reader::NsReader;

use super::BodyError;

/// Deepest element nesting accepted (the root element is depth 1).
pub const MAX_DEPTH: usize = 64;

/// The namespace bound to the reserved `xml` prefix.
pub const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

#[derive(Debug, Clone)]
pub struct Attr {
    pub prefix: Option<String>,
    pub ns: Option<String>,
    pub local: String,
    pub value: String,
    /// If the value looks like a QName whose prefix was in scope: that binding.
    pub value_binding: Option<(String, String)>,
}

#[derive(Debug, Clone)]
pub enum Node {
    Element(Element),
    Text(String),
}

#[derive(Debug, Clone)]
pub struct Element {
    pub prefix: Option<String>,
    pub ns: Option<String>,
    pub local: String,
    /// Namespace declarations written on this element: (prefix, uri); prefix
    /// `None` is the default namespace, an empty uri undeclares it.
    pub decls: Vec<(Option<String>, String)>,
    pub attrs: Vec<Attr>,
    pub children: Vec<Node>,
}

impl Element {
    /// Is this element `{ns}local`?
    pub fn is(&self, ns: Option<&str>, local: &str) -> bool {
        self.ns.as_deref() == ns && self.local == local
    }

    /// Value of an un-namespaced attribute.
    pub fn attr(&self, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.is_none() && a.local == local)
            .map(|a| a.value.as_str())
    }

    /// Value of a namespaced attribute.
    pub fn attr_ns(&self, ns: &str, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.as_deref() == Some(ns) && a.local == local)
            .map(|a| a.value.as_str())
    }

    pub fn child_elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// Concatenated text of this element and its descendants (iterative).
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut stack: Vec<std::slice::Iter<'_, Node>> = vec![self.children.iter()];
        while let Some(top) = stack.last_mut() {
            match top.next() {
                Some(Node::Text(t)) => out.push_str(t),
                Some(Node::Element(e)) => stack.push(e.children.iter()),
                None => {
                    stack.pop();
                }
            }
        }
        out
    }
}

fn not_well_formed(reason: impl Into<String>, offset: usize) -> BodyError {
    BodyError::NotWellFormed {
        reason: reason.into(),
        offset,
    }
}

/// XML 1.0 §2.2 `Char`.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn check_chars(s: &str, offset: usize) -> Result<(), BodyError> {
    match s.chars().find(|c| !is_xml_char(*c)) {
        None => Ok(()),
        Some(c) => Err(not_well_formed(
            format!("character U+{:04X} is not allowed in XML", c as u32),
            offset,
        )),
    }
}

fn utf8(bytes: &[u8], offset: usize) -> Result<&str, BodyError> {
    std::str::from_utf8(bytes)
        .map_err(|e| not_well_formed("name is not UTF-8", offset + e.valid_up_to()))
}

/// The resolver hands out namespace names as written (escaped); normalize
/// them exactly like the `xmlns` attribute values we record.
fn namespace_name(raw: &[u8], offset: usize) -> Result<String, BodyError> {
    let attr = Attribute {
        key: QName(b"xmlns"),
        value: Cow::Borrowed(raw),
    };
    let v = attr
        .normalized_value(XmlVersion::Implicit1_0)
        .map_err(|err| not_well_formed(format!("bad namespace name: {err}"), offset))?;
    Ok(v.into_owned())
}

fn resolved(
    r: ResolveResult<'_>,
    prefix: &str,
    offset: usize,
) -> Result<Option<String>, BodyError> {
    match r {
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Bound(ns) => Ok(Some(namespace_name(ns.into_inner(), offset)?)),
        ResolveResult::Unknown(_) => Err(not_well_formed(
            format!("namespace prefix \"{prefix}\" is not declared"),
            offset,
        )),
    }
}

/// `prefix:local` where both are NCName-ish (no whitespace, slash, etc.).
fn qname_prefix(v: &str) -> Option<&str> {
    let (p, l) = v.split_once(':')?;
    let ncname = |s: &str| {
        let mut cs = s.chars();
        matches!(cs.next(), Some(c) if c.is_alphabetic() || c == '_')
            && cs.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    (ncname(p) && ncname(l)).then_some(p)
}

/// XML 1.0 (5th ed.) §2.3 NameStartChar, without ':'.
fn is_name_start(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z' | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}'
        | '\u{F8}'..='\u{2FF}' | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}'
        | '\u{200C}'..='\u{200D}' | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}'
        | '\u{3001}'..='\u{D7FF}' | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}'
        | '\u{10000}'..='\u{EFFFF}')
}

/// XML 1.0 (5th ed.) §2.3 NameChar, without ':'.
fn is_name_char(c: char) -> bool {
    is_name_start(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

fn is_ncname(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if is_name_start(c)) && cs.all(is_name_char)
}

/// Namespaces in XML 1.0 §4 QName: `NCName` or `NCName ':' NCName`.
fn check_qname(raw: &[u8], offset: usize) -> Result<(), BodyError> {
    let name = utf8(raw, offset)?;
    let ok = match name.split_once(':') {
        Some((p, l)) => is_ncname(p) && is_ncname(l),
        None => is_ncname(name),
    };
    if ok {
        Ok(())
    } else {
        Err(not_well_formed(format!("invalid name {name:?}"), offset))
    }
}

fn build_element(
    reader: &NsReader<&[u8]>,
    e: &BytesStart<'_>,
    offset: usize,
) -> Result<Element, BodyError> {
    let qname = e.name();
    check_qname(qname.into_inner(), offset)?;
    let (prefix, local) = {
        let (local, prefix) = qname.decompose();
        let prefix = match prefix {
            Some(p) => Some(utf8(p.into_inner(), offset)?.to_owned()),
            None => None,
        };
        (prefix, utf8(local.into_inner(), offset)?.to_owned())
    };
    let (res, _) = reader.resolver().resolve_element(qname);
    let ns = resolved(res, prefix.as_deref().unwrap_or(""), offset)?;
    let mut decls = Vec::new();
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| not_well_formed(format!("bad attribute: {err}"), offset))?;
        check_qname(a.key.into_inner(), offset)?;
        let value = a
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|err| not_well_formed(format!("bad attribute value: {err}"), offset))?;
        check_chars(&value, offset)?;
        if let Some(decl) = a.key.as_namespace_binding() {
            let p = match decl {
                PrefixDeclaration::Default => None,
                PrefixDeclaration::Named(p) => Some(utf8(p, offset)?.to_owned()),
            };
            decls.push((p, value.into_owned()));
            continue;
        }
        let (local, aprefix) = a.key.decompose();
        let aprefix = match aprefix {
            Some(p) => Some(utf8(p.into_inner(), offset)?.to_owned()),
            None => None,
        };
        let (res, _) = reader.resolver().resolve_attribute(a.key);
        let ans = resolved(res, aprefix.as_deref().unwrap_or(""), offset)?;
        let value_binding = qname_prefix(&value).and_then(|p| {
            let prefix = QName(value.as_bytes()).prefix()?;
            match reader.resolver().resolve_prefix(Some(prefix), false) {
                ResolveResult::Bound(ns) => namespace_name(ns.into_inner(), offset)
                    .ok()
                    .map(|u| (p.to_owned(), u)),
                _ => None,
            }
        });
        attrs.push(Attr {
            prefix: aprefix,
            ns: ans,
            local: utf8(local.into_inner(), offset)?.to_owned(),
            value: value.into_owned(),
            value_binding,
        });
    }
    Ok(Element {
        prefix,
        ns,
        local,
        decls,
        attrs,
        children: Vec::new(),
    })
}

fn push_text(stack: &mut [Element], text: &str, offset: usize) -> Result<(), BodyError> {
    match stack.last_mut() {
        Some(parent) => {
            if let Some(Node::Text(t)) = parent.children.last_mut() {
                t.push_str(text);
            } else {
                parent.children.push(Node::Text(text.to_owned()));
            }
            Ok(())
        }
        None if text.chars().all(|c| matches!(c, ' ' | '\t' | '\r' | '\n')) => Ok(()),
        None => Err(not_well_formed("text outside the root element", offset)),
    }
}

fn predefined(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => return None,
    })
}

/// Parses a complete XML document into its root element.
pub fn parse_document(body: &[u8]) -> Result<Element, BodyError> {
    let (text, base) = match std::str::from_utf8(body) {
        Ok(t) => match t.strip_prefix('\u{feff}') {
            Some(rest) => (rest, 3),
            None => (t, 0),
        },
        Err(e) => {
            return Err(not_well_formed(
                "document is not UTF-8 (only UTF-8 is supported)",
                e.valid_up_to(),
            ));
        }
    };
    let mut reader = NsReader::from_str(text);
    {
        let cfg = reader.config_mut();
        cfg.check_end_names = true;
        cfg.allow_unmatched_ends = false;
        cfg.check_comments = true;
        cfg.expand_empty_elements = false;
        cfg.trim_text(false);
    }
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut first_event = true;
    loop {
        let offset = base + reader.buffer_position() as usize;
        let ev = match reader.read_event() {
            Ok(ev) => ev,
            Err(e) => {
                return Err(not_well_formed(
                    e.to_string(),
                    base + reader.error_position() as usize,
                ));
            }
        };
        let was_first = std::mem::replace(&mut first_event, false);
        match ev {
            Event::Start(e) | Event::Empty(e) if root.is_some() => {
                let _ = e;
                return Err(not_well_formed("more than one root element", offset));
            }
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(BodyError::TooDeep { limit: MAX_DEPTH });
                }
                let el = build_element(&reader, &e, offset)?;
                stack.push(el);
            }
            Event::Empty(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(BodyError::TooDeep { limit: MAX_DEPTH });
                }
                let el = build_element(&reader, &e, offset)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(el)),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                // quick-xml has checked that the name matches the open element.
                let el = stack
                    .pop()
                    .ok_or_else(|| not_well_formed("end tag without start tag", offset))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(el)),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let s = t
                    .xml10_content()
                    .map_err(|e| not_well_formed(e.to_string(), offset))?;
                check_chars(&s, offset)?;
                push_text(&mut stack, &s, offset)?;
            }
            Event::CData(t) => {
                if stack.is_empty() {
                    return Err(not_well_formed("CDATA outside the root element", offset));
                }
                let s = t
                    .xml10_content()
                    .map_err(|e| not_well_formed(e.to_string(), offset))?;
                check_chars(&s, offset)?;
                push_text(&mut stack, &s, offset)?;
            }
            Event::GeneralRef(r) => {
                let c = if r.is_char_ref() {
                    r.resolve_char_ref()
                        .map_err(|e| not_well_formed(e.to_string(), offset))?
                } else {
                    let name = r
                        .decode()
                        .map_err(|e| not_well_formed(e.to_string(), offset))?;
                    match predefined(&name) {
                        Some(c) => Some(c),
                        None => {
                            return Err(not_well_formed(
                                format!(
                                    "undefined entity reference &{name}; (entities are not expanded)"
                                ),
                                offset,
                            ));
                        }
                    }
                };
                let c = c.ok_or_else(|| not_well_formed("bad character reference", offset))?;
                if !is_xml_char(c) {
                    return Err(not_well_formed(
                        format!("character U+{:04X} is not allowed in XML", c as u32),
                        offset,
                    ));
                }
                let mut buf = [0u8; 4];
                if stack.is_empty() {
                    return Err(not_well_formed(
                        "reference outside the root element",
                        offset,
                    ));
                }
                push_text(&mut stack, c.encode_utf8(&mut buf), offset)?;
            }
            Event::Decl(_) => {
                if !was_first {
                    return Err(not_well_formed(
                        "XML declaration is not at the start of the document",
                        offset,
                    ));
                }
            }
            Event::DocType(_) => {
                if root.is_some() || !stack.is_empty() {
                    return Err(not_well_formed("DOCTYPE after the root element", offset));
                }
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => {
                if let Some(open) = stack.last() {
                    return Err(not_well_formed(
                        format!("document ends inside element <{}>", open.local),
                        offset,
                    ));
                }
                return root.ok_or_else(|| not_well_formed("no root element", offset));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Serialization
// ---------------------------------------------------------------------------

/// Escapes character data (`&`, `<`, `>`; CR as a character reference so it
/// survives end-of-line normalization). Characters XML cannot carry are dropped.
pub fn escape_text(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            c if is_xml_char(c) => out.push(c),
            _ => {}
        }
    }
}

/// Escapes an attribute value for a double-quoted attribute; TAB, LF and CR
/// become character references so attribute-value normalization keeps them.
pub fn escape_attr(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if is_xml_char(c) => out.push(c),
            _ => {}
        }
    }
}

pub fn escape_text_cow(s: &str) -> Cow<'_, str> {
    if s.chars()
        .all(|c| is_xml_char(c) && !matches!(c, '&' | '<' | '>' | '\r'))
    {
        Cow::Borrowed(s)
    } else {
        let mut out = String::with_capacity(s.len() + 8);
        escape_text(s, &mut out);
        Cow::Owned(out)
    }
}

/// Namespace scope during serialization. `default` starts as "unknown" so an
/// un-prefixed fragment root always states its default namespace.
struct Scope {
    frames: Vec<usize>,
    bindings: Vec<(Option<String>, String)>,
}

impl Scope {
    /// Current binding of `prefix`: `None` = unknown (nothing declared within
    /// the fragment), `Some("")` = explicitly no namespace.
    fn lookup(&self, prefix: Option<&str>) -> Option<&str> {
        self.bindings
            .iter()
            .rev()
            .find(|(p, _)| p.as_deref() == prefix)
            .map(|(_, u)| u.as_str())
    }
}

fn qname(prefix: Option<&str>, local: &str, out: &mut String) {
    if let Some(p) = prefix {
        out.push_str(p);
        out.push(':');
    }
    out.push_str(local);
}

fn whitespace_only(s: &str) -> bool {
    s.chars().all(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
}

/// Prefix bindings used anywhere in the subtree that can be declared once on
/// its root: the prefix always means the same namespace inside the subtree
/// and the root does not declare it itself. In order of first use.
fn hoistable(root: &Element) -> Vec<(Option<String>, String)> {
    let mut uses: Vec<(String, String)> = Vec::new();
    let mut conflicted: Vec<String> = Vec::new();
    let mut note = |p: &str, ns: &str, uses: &mut Vec<(String, String)>| {
        if p == "xml" || p == "xmlns" {
            return;
        }
        match uses.iter().find(|(q, _)| q == p) {
            Some((_, u)) if u != ns => conflicted.push(p.to_owned()),
            Some(_) => {}
            None => uses.push((p.to_owned(), ns.to_owned())),
        }
    };
    // Declarations inside the subtree only veto hoisting (a prefix rebound
    // to another namespace somewhere); they are never hoisted themselves, so
    // that a second serialization of our own output is identical.
    let mut declared: Vec<(String, String)> = Vec::new();
    let mut stack = vec![root];
    while let Some(el) = stack.pop() {
        if let (Some(p), Some(ns)) = (el.prefix.as_deref(), el.ns.as_deref()) {
            note(p, ns, &mut uses);
        }
        for a in &el.attrs {
            if let (Some(p), Some(ns)) = (a.prefix.as_deref(), a.ns.as_deref()) {
                note(p, ns, &mut uses);
            }
        }
        for (p, u) in &el.decls {
            if let Some(p) = p {
                declared.push((p.clone(), u.clone()));
            }
        }
        // Reverse so the stack pops children in document order.
        for c in el.children.iter().rev() {
            if let Node::Element(c) = c {
                stack.push(c);
            }
        }
    }
    uses.into_iter()
        .filter(|(p, u)| {
            !u.is_empty()
                && !conflicted.contains(p)
                && !declared.iter().any(|(q, v)| q == p && v != u)
                && !root
                    .decls
                    .iter()
                    .any(|(q, _)| q.as_deref() == Some(p.as_str()))
        })
        .map(|(p, u)| (Some(p), u))
        .collect()
}

fn open_tag(el: &Element, extra: &[(Option<String>, String)], scope: &mut Scope, out: &mut String) {
    scope.frames.push(scope.bindings.len());
    out.push('<');
    qname(el.prefix.as_deref(), &el.local, out);
    let mut decls: Vec<(Option<String>, String)> = Vec::new();
    for (p, u) in el.decls.iter().chain(extra) {
        if p.as_deref() == Some("xml") || p.as_deref() == Some("xmlns") {
            continue;
        }
        // `xmlns:p=""` is XML 1.1 only; the binding simply ends here.
        if p.is_some() && u.is_empty() {
            continue;
        }
        if decls.iter().any(|(q, _)| q == p) {
            continue;
        }
        decls.push((p.clone(), u.clone()));
        scope.bindings.push((p.clone(), u.clone()));
    }
    let need = |p: Option<&str>,
                ns: &str,
                scope: &mut Scope,
                decls: &mut Vec<(Option<String>, String)>| {
        if p == Some("xml") || p == Some("xmlns") {
            return;
        }
        if scope.lookup(p) != Some(ns) {
            decls.push((p.map(str::to_owned), ns.to_owned()));
            scope.bindings.push((p.map(str::to_owned), ns.to_owned()));
        }
    };
    need(
        el.prefix.as_deref(),
        el.ns.as_deref().unwrap_or(""),
        scope,
        &mut decls,
    );
    for a in &el.attrs {
        if let (Some(p), Some(ns)) = (a.prefix.as_deref(), a.ns.as_deref()) {
            need(Some(p), ns, scope, &mut decls);
        }
    }
    for a in &el.attrs {
        if let Some((p, ns)) = &a.value_binding {
            // Only add when the prefix is free; never rebind one in use.
            if scope.lookup(Some(p)).is_none() {
                need(Some(p), ns, scope, &mut decls);
            }
        }
    }
    for (p, u) in &decls {
        match p {
            Some(p) => {
                out.push_str(" xmlns:");
                out.push_str(p);
            }
            None => out.push_str(" xmlns"),
        }
        out.push_str("=\"");
        escape_attr(u, out);
        out.push('"');
    }
    for a in &el.attrs {
        out.push(' ');
        qname(a.prefix.as_deref(), &a.local, out);
        out.push_str("=\"");
        escape_attr(&a.value, out);
        out.push('"');
    }
}

/// Serializes `root` as a self-contained fragment (iterative; depth is
/// bounded by [`MAX_DEPTH`] anyway). Whitespace-only text between child
/// elements is dropped; comments and PIs were never kept.
pub fn fragment_xml(root: &Element) -> String {
    let mut out = String::new();
    let mut scope = Scope {
        frames: Vec::new(),
        bindings: Vec::new(),
    };
    // Stack of (element, next child index).
    let mut stack: Vec<(&Element, usize)> = Vec::new();
    let hoisted = hoistable(root);
    let mut pending: Option<&Element> = Some(root);
    let mut extra: &[(Option<String>, String)] = &hoisted;
    loop {
        if let Some(el) = pending.take() {
            open_tag(el, extra, &mut scope, &mut out);
            extra = &[];
            if el.children.is_empty()
                || (el
                    .children
                    .iter()
                    .all(|n| matches!(n, Node::Text(t) if t.is_empty())))
            {
                out.push_str("/>");
                let mark = scope.frames.pop().unwrap_or(0);
                scope.bindings.truncate(mark);
            } else {
                out.push('>');
                stack.push((el, 0));
            }
        }
        let Some((el, idx)) = stack.last_mut() else {
            break;
        };
        let el: &Element = el;
        if *idx < el.children.len() {
            let child = &el.children[*idx];
            *idx += 1;
            match child {
                Node::Element(c) => pending = Some(c),
                Node::Text(t) => {
                    let element_content = el.children.iter().any(|n| matches!(n, Node::Element(_)));
                    if !(element_content && whitespace_only(t)) {
                        escape_text(t, &mut out);
                    }
                }
            }
        } else {
            out.push_str("</");
            qname(el.prefix.as_deref(), &el.local, &mut out);
            out.push('>');
            stack.pop();
            let mark = scope.frames.pop().unwrap_or(0);
            scope.bindings.truncate(mark);
        }
    }
    out
}
