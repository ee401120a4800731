//! PIDF (RFC 3863) with RPID (RFC 4480) ↔ per-resource presence, pure.
//!
//! RFC 8048 §6.2 (XMPP to SIP) and §6.3 (SIP to XMPP): one tuple per XMPP
//! resource, `basic` open/closed ↔ no type/`unavailable`, `<note/>` ↔
//! `<status/>` with `xml:lang`. `<show/>` has no PIDF element; RFC 8048
//! points at RPID activities, mapped here both ways (away ↔ away, xa ↔ away
//! with `user-input` idle, dnd ↔ busy, chat ↔ open with no activity).
//! RFC 7248-style `<show xmlns='jabber:client'/>` inside `<status/>` is read
//! too, as other gateways emit it.

use crate::model::{ResourcePresence, Resources, Show};
use minidom::Element;
use thiserror::Error;

const NS_PIDF: &str = "urn:ietf:params:xml:ns:pidf";
const NS_DM: &str = "urn:ietf:params:xml:ns:pidf:data-model";
const NS_RPID: &str = "urn:ietf:params:xml:ns:pidf:rpid";
const NS_JABBER: &str = "jabber:client";

#[derive(Debug, Error)]
pub enum PidfError {
    #[error("not well-formed XML: {0}")]
    Xml(String),
    #[error("root element is not a PIDF <presence/>")]
    NotPidf,
}

/// Activities (RFC 4480 §3.2) and user-input (§3.7) found in one scope.
#[derive(Default, Clone)]
struct Rpid {
    show: Option<Show>,
    idle: bool,
}

/// Parses a PIDF document into resources. Tuples without an id are skipped
/// (RFC 3863 §4.1.2 requires it).
pub fn parse(body: &str) -> Result<Resources, PidfError> {
    // minidom reads the XML declaration itself; nothing may precede it.
    let body = body.trim_start_matches('\u{feff}').trim_start();
    let root: Element = body
        .parse()
        .map_err(|e: minidom::Error| PidfError::Xml(e.to_string()))?;
    if root.name() != "presence" || root.ns() != NS_PIDF {
        return Err(PidfError::NotPidf);
    }
    // RFC 4480 §3: person-level data (activities, dm:note) applies to every
    // tuple that carries none of its own.
    let mut person = Rpid::default();
    let mut person_note: Option<(String, Option<String>)> = None;
    let mut doc_note: Option<(String, Option<String>)> = None;
    for child in root.children() {
        match (child.name(), child.ns().as_str()) {
            ("person", NS_DM) => {
                person = rpid_of(child);
                person_note = child.get_child("note", NS_DM).map(note_of);
            }
            ("note", NS_PIDF) if doc_note.is_none() => doc_note = Some(note_of(child)),
            _ => {}
        }
    }
    let mut out = Resources::new();
    for t in root.children().filter(|c| c.is("tuple", NS_PIDF)) {
        let Some(id) = t.attr("id") else { continue };
        let status = t.get_child("status", NS_PIDF);
        let basic = status
            .and_then(|s| s.get_child("basic", NS_PIDF))
            .map(|b| b.text().trim().to_ascii_lowercase());
        let mut rp = ResourcePresence {
            available: basic.as_deref() == Some("open"),
            ..ResourcePresence::default()
        };
        let mut own = status.map(rpid_of).unwrap_or_default();
        let tuple_rpid = rpid_of(t);
        if own.show.is_none() {
            own.show = tuple_rpid.show;
            own.idle |= tuple_rpid.idle;
        }
        if own.show.is_none() {
            own = person.clone();
        }
        rp.show = match (own.show, own.idle) {
            (Some(Show::Away), true) => Some(Show::Xa),
            (s, _) => s,
        };
        // RFC 7248 §5.2 carried show as <show xmlns='jabber:client'/>.
        if let Some(s) = status.and_then(|s| s.get_child("show", NS_JABBER)) {
            rp.show = show_of_text(s.text().trim()).or(rp.show);
        }
        let note = t
            .get_child("note", NS_PIDF)
            .map(note_of)
            .or_else(|| doc_note.clone())
            .or_else(|| person_note.clone());
        if let Some((text, lang)) = note {
            rp.status = Some(text);
            rp.lang = lang;
        }
        // RFC 3863 §4.1.4: contact priority 0..1 ↔ XMPP priority 0..127.
        if let Some(p) = t
            .get_child("contact", NS_PIDF)
            .and_then(|c| c.attr("priority"))
            .and_then(|p| p.trim().parse::<f32>().ok())
        {
            rp.priority = (p.clamp(0.0, 1.0) * 127.0).round() as i8;
        }
        out.insert(id.strip_prefix("ID-").unwrap_or(id).to_owned(), rp);
    }
    Ok(out)
}

fn note_of(e: &Element) -> (String, Option<String>) {
    // xml:lang lives in the XML namespace; any attribute named `lang` will do.
    let lang = e
        .attrs()
        .iter()
        .find(|((_, name), _)| name.as_str() == "lang")
        .map(|(_, v)| v.to_string());
    (e.text().trim().to_owned(), lang)
}

/// RFC 4480 §3.2 activities → show: away ↔ away, busy-like ↔ dnd,
/// holiday/sleeping ↔ xa; user-input idle (§3.7) marks away as xa.
fn rpid_of(scope: &Element) -> Rpid {
    let mut r = Rpid::default();
    for a in scope.children().filter(|c| c.is("activities", NS_RPID)) {
        for act in a.children() {
            let s = match act.name() {
                "away" => Some(Show::Away),
                "busy" | "on-the-phone" | "meeting" | "performance" | "presentation"
                | "appointment" | "worship" => Some(Show::Dnd),
                "holiday" | "vacation" | "sleeping" => Some(Show::Xa),
                _ => None,
            };
            if r.show.is_none() {
                r.show = s;
            }
        }
    }
    if let Some(u) = scope.get_child("user-input", NS_RPID) {
        r.idle = u.text().trim() == "idle";
    }
    r
}

fn show_of_text(s: &str) -> Option<Show> {
    match s {
        "away" => Some(Show::Away),
        "chat" => Some(Show::Chat),
        "dnd" => Some(Show::Dnd),
        "xa" => Some(Show::Xa),
        _ => None,
    }
}

/// Renders the resources of `entity` (a `pres:` URI) as PIDF, one tuple per
/// resource (RFC 8048 §6.2), with the show of the best available resource
/// (highest priority) as RPID activities of the person. An empty set is one
/// closed tuple: the user is offline.
pub fn render(entity: &str, resources: &Resources) -> String {
    let mut s = String::with_capacity(512);
    s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    s.push_str(&format!(
        "<presence xmlns=\"{NS_PIDF}\" xmlns:dm=\"{NS_DM}\" xmlns:rpid=\"{NS_RPID}\" entity=\"{}\">\n",
        esc(entity)
    ));
    if resources.is_empty() {
        s.push_str("  <tuple id=\"ID-offline\"><status><basic>closed</basic></status></tuple>\n");
    }
    for (res, p) in resources {
        s.push_str(&format!(
            "  <tuple id=\"{}\"><status><basic>{}</basic></status>",
            esc(&tuple_id(res)),
            if p.available { "open" } else { "closed" }
        ));
        if let Some(text) = &p.status {
            match &p.lang {
                Some(l) => s.push_str(&format!(
                    "<note xml:lang=\"{}\">{}</note>",
                    esc(l),
                    esc(text)
                )),
                None => s.push_str(&format!("<note>{}</note>", esc(text))),
            }
        }
        s.push_str("</tuple>\n");
    }
    let best = resources
        .values()
        .filter(|p| p.available)
        .max_by_key(|p| p.priority);
    if let Some(p) = best {
        let (act, idle) = match p.show {
            Some(Show::Away) => (Some("away"), false),
            Some(Show::Xa) => (Some("away"), true),
            Some(Show::Dnd) => (Some("busy"), false),
            Some(Show::Chat) | None => (None, false),
        };
        if let Some(a) = act {
            s.push_str(&format!(
                "  <dm:person id=\"p\"><rpid:activities><rpid:{a}/></rpid:activities>{}</dm:person>\n",
                if idle { "<rpid:user-input>idle</rpid:user-input>" } else { "" }
            ));
        }
    }
    s.push_str("</presence>\n");
    s
}

/// RFC 8048 §6.2: a resource is not always an xs:ID, so "ID-" is prefixed
/// and characters outside NCName are replaced.
fn tuple_id(res: &str) -> String {
    let mut id = String::from("ID-");
    for c in res.chars() {
        id.push(if c.is_alphanumeric() || "-_.".contains(c) {
            c
        } else {
            '_'
        });
    }
    id
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(available: bool, show: Option<Show>, status: Option<&str>) -> ResourcePresence {
        ResourcePresence {
            available,
            show,
            status: status.map(str::to_owned),
            lang: None,
            priority: 0,
        }
    }

    #[test]
    fn person_activities_map_to_show() {
        let doc = r#"<?xml version="1.0"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
 xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="pres:bob@example.com">
 <tuple id="pc"><status><basic>open</basic></status><note xml:lang="en">In a meeting</note></tuple>
 <dm:person id="p1"><rpid:activities><rpid:busy/></rpid:activities></dm:person>
</presence>"#;
        let r = parse(doc).unwrap();
        let p = &r["pc"];
        assert!(p.available);
        assert_eq!(p.show, Some(Show::Dnd));
        assert_eq!(p.status.as_deref(), Some("In a meeting"));
        assert_eq!(p.lang.as_deref(), Some("en"));
    }

    #[test]
    fn closed_is_unavailable_and_id_prefix_dropped() {
        let doc = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@b">
 <tuple id="ID-x"><status><basic>closed</basic></status></tuple></presence>"#;
        let r = parse(doc).unwrap();
        assert_eq!(r["x"], res(false, None, None));
    }

    #[test]
    fn rfc7248_jabber_show_inside_status() {
        let doc = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:romeo@example.net">
 <tuple id="ID-orchard"><status><basic>open</basic><show xmlns="jabber:client">away</show></status></tuple></presence>"#;
        assert_eq!(parse(doc).unwrap()["orchard"].show, Some(Show::Away));
    }

    #[test]
    fn render_then_parse_round_trips_show_and_status() {
        for show in [None, Some(Show::Away), Some(Show::Xa), Some(Show::Dnd)] {
            let mut m = Resources::new();
            m.insert(
                "laptop".into(),
                res(true, show, Some("Lunch <back> & soon")),
            );
            let doc = render("pres:alice@xmpp.example.org", &m);
            let back = parse(&doc).unwrap();
            assert_eq!(back["laptop"].show, show, "{doc}");
            assert_eq!(
                back["laptop"].status.as_deref(),
                Some("Lunch <back> & soon")
            );
        }
    }

    #[test]
    fn empty_renders_closed() {
        let doc = render("pres:alice@xmpp.example.org", &Resources::new());
        assert!(doc.contains("<basic>closed</basic>"));
        assert!(!parse(&doc).unwrap()["offline"].available);
    }

    #[test]
    fn malformed_is_an_error() {
        assert!(matches!(parse("<presence"), Err(PidfError::Xml(_))));
        assert!(matches!(parse("<foo xmlns='x'/>"), Err(PidfError::NotPidf)));
    }
}
