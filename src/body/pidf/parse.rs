//! Reading PIDF and cpim-pidf (RFC 3863 §4.1; the two differ only in the
//! namespace, which is a parameter), and the element helpers the XPIDF
//! reader shares. Known children are accepted in any order; unknown ones
//! are kept as [`XmlFragment`]s.

use std::collections::HashSet;

use super::model::{Basic, Contact, Note, PresenceDoc, Tuple, XmlFragment};
use crate::body::BodyError;
use crate::body::xml::{self, Element, XML_NS};

pub(super) fn check_root(root: &Element, ns: Option<&str>) -> Result<(), BodyError> {
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

pub(super) fn required_attr(
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

pub(super) fn note(el: &Element) -> Note {
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
pub(super) fn parse_priority(v: &str) -> Option<f32> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let p: f32 = v.parse().ok()?;
    (p.is_finite() && (0.0..=1.0).contains(&p)).then_some(p)
}

pub(super) fn from_pidf(root: &Element, ns: &'static str) -> Result<PresenceDoc, BodyError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::pidf::tests::{
        RFC3863_EXAMPLE, RPID_EXAMPLE, assert_round_trips, fixture_body, pidf,
    };
    use crate::body::pidf::{CPIM_PIDF_NS, PIDF_NS, PresenceFormat};

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
}
