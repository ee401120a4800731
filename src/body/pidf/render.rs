//! Writing PIDF and cpim-pidf: deterministic, CRLF line ends, 2-space
//! indent, children in the schema order of RFC 3863 §4.4 (status,
//! extensions, contact, note, timestamp; presence: tuples, notes,
//! extensions); and the line and escaping helpers the XPIDF writer shares.

use super::model::{Note, PresenceDoc};
use crate::body::xml;

pub(super) const XML_DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;
const NL: &str = "\r\n";

pub(super) fn attr_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    xml::escape_attr(v, &mut s);
    s
}

/// qvalue with at most 3 decimals (RFC 3261 §25.1); `None` if not finite.
pub(super) fn fmt_priority(p: f32) -> Option<String> {
    if !p.is_finite() {
        return None;
    }
    let p = (p.clamp(0.0, 1.0) * 1000.0).round() / 1000.0;
    Some(format!("{p}"))
}

pub(super) fn line(out: &mut String, indent: usize, s: &str) {
    for _ in 0..indent {
        out.push_str("  ");
    }
    out.push_str(s);
    out.push_str(NL);
}

pub(super) fn render_note(out: &mut String, indent: usize, n: &Note) {
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

pub(super) fn render_pidf(doc: &PresenceDoc, ns: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::pidf::tests::assert_round_trips;
    use crate::body::pidf::{Basic, Contact, PresenceFormat, Tuple};

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
}
