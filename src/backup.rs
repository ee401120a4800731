//! `sip-cpim-gateway export` / `import` (issue 7): the store as JSON lines,
//! for backups, restores and moving state between hosts.
//!
//! The dump is readable and independent of the store's binary encoding: a
//! header line, then one line per record with its tree, its key and the
//! record as the JSON form of its type:
//!
//! ```text
//! {"format":"sip-cpim-gateway-export","version":1,"exported_at_ms":1764700000000}
//! {"tree":"subscriptions","key":"c1;lt;rt","record":{"id":"c1;lt;rt",...}}
//! ```
//!
//! Import checks every line before it writes anything, then writes the
//! whole dump as one atomic batch: a dump is restored completely or not at
//! all. It refuses a store that already holds records unless forced.

use crate::delivery::DeliveryRecord;
use crate::gateway::records::GatewayDialog;
use crate::presence::records::{
    BindingRecord, PolicyRecord, PublicationRecord, PublisherRecord, SubscriptionRecord,
};
use crate::store::{Batch, Store, StoreError, Tree, codec};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};

pub const FORMAT: &str = "sip-cpim-gateway-export";
pub const VERSION: u32 = 1;

/// Why an export or import failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("the store already holds {0} records; import into an empty store, or pass --force")]
    NotEmpty(usize),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    version: u32,
    exported_at_ms: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    tree: String,
    /// The key as text (every key but the delivery queue's is text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    /// The key in hex, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_hex: Option<String>,
    record: serde_json::Value,
}

fn tree_named(name: &str) -> Option<Tree> {
    Tree::ALL.into_iter().find(|t| t.name() == name)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What is done with a stored record once decoded as the type its tree
/// holds (one decoder per tree for the dump and the startup check).
trait Decoded {
    type Out;
    fn take<T: Serialize>(self, record: T) -> Self::Out;
}

/// The record as JSON (the dump).
struct AsJson;

impl Decoded for AsJson {
    type Out = serde_json::Value;
    fn take<T: Serialize>(self, record: T) -> serde_json::Value {
        serde_json::to_value(record).expect("records serialize as JSON")
    }
}

/// Only whether it decodes (the startup check).
struct Readable;

impl Decoded for Readable {
    type Out = ();
    fn take<T: Serialize>(self, _: T) {}
}

/// Decodes a stored value as the type its tree holds, exactly as the
/// agents do when they load it.
fn decode_as<D: Decoded>(tree: Tree, k: &[u8], v: &[u8], d: D) -> Result<D::Out, StoreError> {
    Ok(match tree {
        Tree::Registrations => d.take(codec::decode::<BindingRecord>(tree, v)?),
        Tree::Publications => d.take(codec::decode::<PublicationRecord>(tree, v)?),
        Tree::Subscriptions => d.take(SubscriptionRecord::from_stored(k, v)?),
        Tree::Dialogs => d.take(codec::decode::<GatewayDialog>(tree, v)?),
        Tree::Policies => d.take(codec::decode::<PolicyRecord>(tree, v)?),
        Tree::Publishers => d.take(codec::decode::<PublisherRecord>(tree, v)?),
        // The delivery queue is stored as JSON (its payload is free-form).
        Tree::Deliveries => d.take(DeliveryRecord::decode(v)?),
        Tree::Meta => d.take(hex(v)),
    })
}

/// A stored value as JSON, by the type its tree holds.
fn to_json(tree: Tree, k: &[u8], v: &[u8]) -> Result<serde_json::Value, StoreError> {
    decode_as(tree, k, v, AsJson)
}

/// Whether a stored value decodes as the type its tree holds: `Corrupt` if
/// not, `Newer` if a newer build wrote it (the startup check, issue 17).
pub fn check_record(tree: Tree, k: &[u8], v: &[u8]) -> Result<(), StoreError> {
    decode_as(tree, k, v, Readable)
}

/// A record from a dump in the store's encoding, checked against its type.
fn from_json(tree: Tree, key: &[u8], v: serde_json::Value) -> Result<Vec<u8>, String> {
    fn b<T: Serialize + serde::de::DeserializeOwned>(
        v: serde_json::Value,
    ) -> Result<Vec<u8>, String> {
        let r: T = serde_json::from_value(v).map_err(|e| e.to_string())?;
        Ok(codec::encode(&r))
    }
    match tree {
        Tree::Registrations => b::<BindingRecord>(v),
        Tree::Publications => b::<PublicationRecord>(v),
        Tree::Subscriptions => {
            // Stored keyed (the id is the key): the two must agree.
            let r: SubscriptionRecord = serde_json::from_value(v).map_err(|e| e.to_string())?;
            if r.id.as_bytes() != key {
                return Err(format!("record id {:?} is not its key", r.id));
            }
            Ok(r.to_stored())
        }
        Tree::Dialogs => b::<GatewayDialog>(v),
        Tree::Policies => b::<PolicyRecord>(v),
        Tree::Publishers => {
            // The agent revokes a grant by deleting `rec.key()`: a grant
            // filed under another key would come back at the next start.
            let r: PublisherRecord = serde_json::from_value(v).map_err(|e| e.to_string())?;
            if r.key().as_bytes() != key {
                return Err(format!(
                    "grant for {:?} by {:?} is not its key",
                    r.presentity, r.publisher
                ));
            }
            Ok(codec::encode(&r))
        }
        Tree::Deliveries => {
            let r: DeliveryRecord = serde_json::from_value(v).map_err(|e| e.to_string())?;
            Ok(serde_json::to_vec(&r).expect("serializes"))
        }
        Tree::Meta => v
            .as_str()
            .and_then(unhex)
            .ok_or_else(|| "expected a hex string".to_owned()),
    }
}

/// Writes every record of `store` to `out`; returns how many.
pub fn export(store: &dyn Store, now_ms: i64, out: &mut dyn Write) -> Result<usize, BackupError> {
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        exported_at_ms: now_ms,
    };
    serde_json::to_writer(&mut *out, &header).map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    let mut n = 0;
    for tree in Tree::ALL {
        let mut io_error = None;
        store
            .visit(tree, &mut |k, v| {
                // Text keys (with the `\n` the composite keys use) as text;
                // binary ones (big-endian sequence numbers) in hex.
                let (key, key_hex) = match std::str::from_utf8(k) {
                    Ok(s) if !s.chars().any(|c| c.is_control() && c != '\n') => {
                        (Some(s.to_owned()), None)
                    }
                    _ => (None, Some(hex(k))),
                };
                let line = Line {
                    tree: tree.name().into(),
                    key,
                    key_hex,
                    record: to_json(tree, k, v)?,
                };
                let written = serde_json::to_writer(&mut *out, &line)
                    .map_err(std::io::Error::from)
                    .and_then(|_| out.write_all(b"\n"));
                if let Err(e) = written {
                    io_error = Some(e);
                    return Err(StoreError::Closed);
                }
                n += 1;
                Ok(())
            })
            .map_err(|e| match io_error.take() {
                Some(io) => BackupError::Io(io),
                None => BackupError::Store(e),
            })?;
    }
    out.flush()?;
    Ok(n)
}

/// Reads a dump and checks every line; the batch that restores it.
pub fn parse_dump(input: &mut dyn BufRead) -> Result<Batch, BackupError> {
    let mut batch = Batch::default();
    let mut lines = input.lines().enumerate();
    let bad = |line: usize, message: String| BackupError::Line {
        line: line + 1,
        message,
    };
    match lines.next() {
        Some((i, l)) => {
            let h: Header = serde_json::from_str(&l?)
                .map_err(|e| bad(i, format!("not an export header: {e}")))?;
            if h.format != FORMAT || h.version != VERSION {
                return Err(bad(
                    i,
                    format!(
                        "format {:?} version {} (expected {FORMAT:?} version {VERSION})",
                        h.format, h.version
                    ),
                ));
            }
        }
        None => return Err(bad(0, "empty file: no export header".into())),
    }
    for (i, l) in lines {
        let l = l?;
        if l.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(&l).map_err(|e| bad(i, e.to_string()))?;
        let tree = tree_named(&line.tree)
            .ok_or_else(|| bad(i, format!("unknown tree {:?}", line.tree)))?;
        let key = match (line.key, line.key_hex) {
            (Some(k), None) => k.into_bytes(),
            (None, Some(h)) => unhex(&h).ok_or_else(|| bad(i, "key_hex is not hex".into()))?,
            _ => return Err(bad(i, "exactly one of key and key_hex is required".into())),
        };
        let value = from_json(tree, &key, line.record)
            .map_err(|m| bad(i, format!("{}: {m}", tree.name())))?;
        batch.put(tree, key, value);
    }
    Ok(batch)
}

/// Records held in `store` (all trees).
pub fn count(store: &dyn Store) -> Result<usize, StoreError> {
    let mut n = 0;
    for tree in Tree::ALL {
        store.visit(tree, &mut |_, _| {
            n += 1;
            Ok(())
        })?;
    }
    Ok(n)
}

/// Restores a dump into `store` as one atomic batch; returns how many
/// records were written.
pub async fn import(
    store: &dyn Store,
    input: &mut dyn BufRead,
    force: bool,
) -> Result<usize, BackupError> {
    let batch = parse_dump(input)?;
    let held = count(store)?;
    if held > 0 && !force {
        return Err(BackupError::NotEmpty(held));
    }
    let n = batch.len();
    store.commit(batch).await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    #[tokio::test]
    async fn export_import_round_trip_and_refusals() {
        let src = MemStore::default();
        let mut b = Batch::default();
        let policy = PolicyRecord {
            presentity: "sip:a@example.com".into(),
            watcher: "sip:w@example.com".into(),
            action: crate::presence::records::PolicyAction::Block,
        };
        b.put(
            Tree::Policies,
            policy.key().into_bytes(),
            codec::encode(&policy),
        );
        b.put(Tree::Meta, vec![0xff, 0x00], vec![1, 2, 3]);
        b.put(
            Tree::Deliveries,
            7u64.to_be_bytes().to_vec(),
            serde_json::to_vec(&DeliveryRecord {
                seq: 7,
                stream: "w\nt".into(),
                path: "notify".into(),
                payload: serde_json::json!({"x": 1}),
                queued_at_ms: None,
            })
            .unwrap(),
        );
        src.commit(b).await.unwrap();
        let mut dump = Vec::new();
        assert_eq!(export(&src, 1, &mut dump).unwrap(), 3);
        let text = String::from_utf8(dump.clone()).unwrap();
        assert!(text.starts_with(r#"{"format":"sip-cpim-gateway-export","version":1"#));
        assert!(text.contains(r#""record":{"action":"block","presentity":"sip:a@example.com","watcher":"sip:w@example.com"}"#), "{text}");
        assert!(text.contains(r#""key_hex":"0000000000000007""#), "{text}");

        let dst = MemStore::default();
        assert_eq!(import(&dst, &mut dump.as_slice(), false).await.unwrap(), 3);
        assert_eq!(
            dst.scan(Tree::Policies).unwrap(),
            src.scan(Tree::Policies).unwrap()
        );
        assert_eq!(dst.scan(Tree::Meta).unwrap(), src.scan(Tree::Meta).unwrap());
        assert_eq!(
            dst.scan(Tree::Deliveries).unwrap(),
            src.scan(Tree::Deliveries).unwrap()
        );
        // Not into a store that holds something, unless forced.
        assert!(matches!(
            import(&dst, &mut dump.as_slice(), false).await,
            Err(BackupError::NotEmpty(3))
        ));
        assert_eq!(import(&dst, &mut dump.as_slice(), true).await.unwrap(), 3);

        // A bad line anywhere: nothing is written.
        let mut broken = text.clone();
        broken
            .push_str("{\"tree\":\"policies\",\"key\":\"k\",\"record\":{\"action\":\"maybe\"}}\n");
        let empty = MemStore::default();
        let e = import(&empty, &mut broken.as_bytes(), false)
            .await
            .unwrap_err();
        assert!(matches!(e, BackupError::Line { line: 5, .. }), "{e}");
        assert_eq!(count(&empty).unwrap(), 0, "nothing applied");
        let e = import(&empty, &mut "{}\n".as_bytes(), false)
            .await
            .unwrap_err();
        assert!(matches!(e, BackupError::Line { line: 1, .. }), "{e}");
    }

    /// Publisher grants (issue 14) go through a dump and back unchanged, a
    /// dump of an earlier version (no `publishers` lines) still imports,
    /// and a grant filed under a key that is not its own is refused.
    #[tokio::test]
    async fn publisher_grants_round_trip() {
        let grant = PublisherRecord {
            presentity: "sip:bob@example.com".into(),
            publisher: "sip:alice@example.com".into(),
        };
        let src = MemStore::default();
        let mut b = Batch::default();
        b.put(
            Tree::Publishers,
            grant.key().into_bytes(),
            codec::encode(&grant),
        );
        src.commit(b).await.unwrap();
        let mut dump = Vec::new();
        assert_eq!(export(&src, 1, &mut dump).unwrap(), 1);
        let text = String::from_utf8(dump.clone()).unwrap();
        assert!(
            text.contains(r#"{"tree":"publishers","key":"sip:bob@example.com\nsip:alice@example.com","record":{"presentity":"sip:bob@example.com","publisher":"sip:alice@example.com"}}"#),
            "{text}"
        );
        let dst = MemStore::default();
        assert_eq!(import(&dst, &mut dump.as_slice(), false).await.unwrap(), 1);
        let stored = dst.scan(Tree::Publishers).unwrap();
        assert_eq!(stored, src.scan(Tree::Publishers).unwrap());
        assert_eq!(
            codec::decode::<PublisherRecord>(Tree::Publishers, &stored[0].1).unwrap(),
            grant
        );

        // An earlier version's dump has no grants: it loads, and holds none.
        let old = concat!(
            r#"{"format":"sip-cpim-gateway-export","version":1,"exported_at_ms":1}"#,
            "\n",
            r#"{"tree":"policies","key":"sip:bob@example.com\nsip:alice@example.com","record":{"action":"allow","presentity":"sip:bob@example.com","watcher":"sip:alice@example.com"}}"#,
            "\n"
        );
        let dst = MemStore::default();
        assert_eq!(import(&dst, &mut old.as_bytes(), false).await.unwrap(), 1);
        assert!(dst.scan(Tree::Publishers).unwrap().is_empty());

        // A grant under another key: refused, nothing written.
        let misfiled = text.replace(
            r#""key":"sip:bob@example.com\nsip:alice@example.com""#,
            r#""key":"sip:bob@example.com\nsip:mallory@example.com""#,
        );
        assert_ne!(misfiled, text);
        let empty = MemStore::default();
        let e = import(&empty, &mut misfiled.as_bytes(), false)
            .await
            .unwrap_err();
        assert!(matches!(e, BackupError::Line { line: 2, .. }), "{e}");
        assert_eq!(count(&empty).unwrap(), 0, "nothing applied");
    }
}
