//! Composition (issue 4 §4, OMA flow 2.1): the presentity's document is the
//! union of the tuples of its live registrations and publications.
//!
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
    let mut tuples: Vec<Tuple> = bindings.iter().map(binding_tuple).collect();
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
