//! Composition (issue 4 §4, OMA flow 2.1): the presentity's document is the
//! union of the tuples of its live publications; registrations contribute
//! tuples only while nothing is published.
//!
//! - A registration says no more than "a device is reachable" (seed
//!   §10.2/§10.3 infer presence from it). Once a PUA publishes, it speaks
//!   for the presentity (RFC 3903 §1): its `closed` must not sit beside an
//!   inferred `open` tuple of the same device, which deployed watchers read
//!   as online (baresip reads the first `<basic>`, linphone any open
//!   tuple; tests/interop/README.md). So registration tuples are the
//!   fallback for presentities without a publication.
//! - Registration tuples get ids `reg-<hash of contact>`, so they never
//!   collide with published ids.
//! - The same tuple id in two publications: the newer `<timestamp>` wins;
//!   without timestamps the more recently modified publication wins.
//! - Presence-level notes and extensions come from the most recent
//!   publication that has them.

use super::records::BindingRecord;
use crate::body::{Basic, Contact, Note, PresenceDoc, Tuple};

/// A publication with its parsed document.
#[derive(Debug, Clone)]
pub struct Published {
    pub modified_at: i64,
    pub doc: PresenceDoc,
}

/// A stable id for a registration's tuple.
pub fn binding_tuple_id(uri: &str) -> String {
    // FNV-1a: stable across runs and platforms.
    let mut h: u32 = 0x811c9dc5;
    for b in uri.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x01000193);
    }
    format!("reg-{h:08x}")
}

/// The tuple a registration contributes (seed §10.2/§10.3): reachable, the
/// `description` feature parameter as status text (`closed` closes it).
pub fn binding_tuple(b: &BindingRecord) -> Tuple {
    let (basic, note) = match b.description.as_deref() {
        Some(d) if d.eq_ignore_ascii_case("closed") => (Basic::Closed, None),
        Some(d) if d.eq_ignore_ascii_case("open") => (Basic::Open, None),
        Some(d) => (Basic::Open, Some(d.to_owned())),
        None => (Basic::Open, None),
    };
    Tuple {
        id: binding_tuple_id(&b.uri),
        basic: Some(basic),
        status_extensions: vec![],
        contact: Some(Contact {
            uri: b.uri.clone(),
            priority: b.q.map(|q| f32::from(q) / 1000.0),
        }),
        notes: note
            .into_iter()
            .map(|text| Note { text, lang: None })
            .collect(),
        timestamp: None,
        extensions: vec![],
    }
}

/// The composed document of `entity`.
pub fn compose(
    entity: &str,
    bindings: &[BindingRecord],
    publications: &[Published],
) -> PresenceDoc {
    let mut tuples: Vec<Tuple> = if publications.is_empty() {
        bindings.iter().map(binding_tuple).collect()
    } else {
        Vec::new()
    };
    let mut ordered: Vec<&Published> = publications.iter().collect();
    ordered.sort_by_key(|p| p.modified_at);
    let mut origin: Vec<(i64, Option<i64>)> = vec![(i64::MIN, None); tuples.len()];
    let mut notes = Vec::new();
    let mut extensions = Vec::new();
    for p in ordered {
        for t in &p.doc.tuples {
            let ts = t.timestamp_millis();
            match tuples.iter().position(|x| x.id == t.id) {
                Some(i) => {
                    let (held_mod, held_ts) = origin[i];
                    let newer = match (ts, held_ts) {
                        (Some(a), Some(b)) => a >= b,
                        _ => p.modified_at >= held_mod,
                    };
                    if newer {
                        tuples[i] = t.clone();
                        origin[i] = (p.modified_at, ts);
                    }
                }
                None => {
                    tuples.push(t.clone());
                    origin.push((p.modified_at, ts));
                }
            }
        }
        if !p.doc.notes.is_empty() {
            notes = p.doc.notes.clone();
        }
        if !p.doc.extensions.is_empty() {
            extensions = p.doc.extensions.clone();
        }
    }
    if tuples.is_empty() {
        // Nothing known: the neutral document (RFC 3856 §6.6).
        let mut n = PresenceDoc::neutral(entity);
        n.notes = notes;
        return n;
    }
    PresenceDoc {
        entity: entity.to_owned(),
        tuples,
        notes,
        extensions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::presence_of;

    fn binding(uri: &str) -> BindingRecord {
        BindingRecord {
            aor: "bob@example.com".into(),
            uri: uri.into(),
            contact: format!("<{uri}>"),
            call_id: "c".into(),
            cseq: 1,
            expires_at: 0,
            q: None,
            description: None,
            methods: None,
        }
    }

    fn published(basic: &str, at: i64) -> Published {
        let xml = format!(
            "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"pres:bob@example.com\"><tuple id=\"t1\"><status><basic>{basic}</basic></status></tuple></presence>"
        );
        Published {
            modified_at: at,
            doc: presence_of("application/pidf+xml", &bytes::Bytes::from(xml))
                .unwrap()
                .1,
        }
    }

    #[test]
    fn registrations_count_only_while_nothing_is_published() {
        let b = [binding("sip:bob@192.0.2.1:5060")];
        // Registered only: the inferred tuple (seed §10.2).
        let d = compose("pres:bob@example.com", &b, &[]);
        assert_eq!(d.tuples.len(), 1);
        assert_eq!(d.tuples[0].basic, Some(Basic::Open));
        assert!(d.tuples[0].id.starts_with("reg-"));
        // The PUA publishes closed: that is the state, alone.
        let d = compose("pres:bob@example.com", &b, &[published("closed", 1)]);
        assert_eq!(d.tuples.len(), 1);
        assert_eq!(d.tuples[0].id, "t1");
        assert_eq!(d.tuples[0].basic, Some(Basic::Closed));
        // The publication gone: the registration speaks again.
        let d = compose("pres:bob@example.com", &b, &[]);
        assert!(d.tuples[0].id.starts_with("reg-"));
    }
}
