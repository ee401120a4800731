//! Opening the store for a start (design §6, issue 17): the store-level
//! checks of [`SledStore::open_with`], then every record decoded as the
//! agents will decode it, before anything is loaded or written.
//!
//! - A record a newer build wrote (a version byte this one does not know)
//!   refuses the start ([`OpenError::Newer`]) and nothing is changed.
//! - Records that do not decode are moved aside: written to
//!   `PATH.corrupt-<unix-ms>.records.jsonl` (one JSON object a line: tree,
//!   key, value in hex, the decoding error), fsynced, then deleted from the
//!   store in one transaction that also notes the file. The start is then
//!   refused ([`OpenError::DamagedRecords`]), and so is every later start,
//!   until one with `start_after_corruption` acknowledges it: the rest of
//!   the store is healthy, but starting without those records drops their
//!   subscriptions, which only the operator may decide.
//! - sled failing to read its own records (a lost blob file) is a damaged
//!   store: moved aside whole, as at open.

use crate::store::{OpenError, OpenOptions, SledStore, Store, StoreError, Tree};
use std::io::Write;
use std::path::Path;

/// A record that does not decode.
struct Bad {
    tree: Tree,
    key: Vec<u8>,
    value: Vec<u8>,
    error: String,
}

/// What the store notes about records moved aside (its guard tree).
#[derive(serde::Serialize, serde::Deserialize)]
struct Note {
    file: String,
    count: usize,
    first: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn describe(b: &Bad) -> String {
    // Keys hold `\n` (composite keys): quoted and escaped, one line.
    let key = match std::str::from_utf8(&b.key) {
        Ok(k) => format!("{k:?}"),
        Err(_) => format!("0x{}", hex(&b.key)),
    };
    format!("{} key {key}: {}", b.tree.name(), b.error)
}

/// Opens the store at `path` for a start: checked, records checked, and a
/// new generation begun. Every refusal is one [`OpenError`].
pub async fn open_store(path: &Path, opts: OpenOptions) -> Result<SledStore, OpenError> {
    let io = |e: StoreError| OpenError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut store = SledStore::open_with(path, opts)?;
    loop {
        match check_records(&store, opts) {
            Ok(()) => break,
            Err(Checked::Refused(e)) => {
                store.release().await;
                return Err(e);
            }
            Err(Checked::Unreadable(fault)) => store = store.condemn(fault).await?,
            Err(Checked::Store(e)) => {
                store.release().await;
                return Err(io(e));
            }
        }
    }
    store.begin().map_err(io)?;
    Ok(store)
}

enum Checked {
    Refused(OpenError),
    /// sled cannot read its own records: the store is damaged.
    Unreadable(String),
    Store(StoreError),
}

impl From<StoreError> for Checked {
    fn from(e: StoreError) -> Self {
        Checked::Store(e)
    }
}

fn check_records(store: &SledStore, opts: OpenOptions) -> Result<(), Checked> {
    let path = store.path().display().to_string();
    if let Some(note) = store.records_aside()? {
        let note: Note = serde_json::from_str(&note).unwrap_or(Note {
            file: note,
            count: 0,
            first: "see the file".into(),
        });
        if !opts.start_after_corruption {
            return Err(Checked::Refused(OpenError::DamagedRecords {
                path,
                count: note.count,
                first: note.first,
                aside: note.file,
            }));
        }
        tracing::error!(path = %path, aside = %note.file, count = note.count,
            "start_after_corruption is set: starting without the records moved aside at an earlier start");
        store.move_records_aside(&[], None)?;
    }
    let mut bad = Vec::new();
    let mut newer = None;
    for tree in Tree::ALL {
        let read = store.visit(tree, &mut |k, v| {
            match crate::backup::check_record(tree, k, v) {
                Ok(()) => {}
                Err(StoreError::Newer { tree, version }) => {
                    newer.get_or_insert(format!("record version 0x{version:02x} in {tree}"));
                }
                Err(e) => bad.push(Bad {
                    tree,
                    key: k.to_vec(),
                    value: v.to_vec(),
                    error: e.to_string(),
                }),
            }
            Ok(())
        });
        if let Err(e) = read {
            return Err(Checked::Unreadable(format!("{}: {e}", tree.name())));
        }
    }
    if let Some(found) = newer {
        return Err(Checked::Refused(OpenError::Newer { path, found }));
    }
    if bad.is_empty() {
        return Ok(());
    }
    let file = format!(
        "{}.corrupt-{}.records.jsonl",
        store.path().display(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let io = |e: std::io::Error| {
        Checked::Refused(OpenError::Io {
            path: path.clone(),
            message: format!(
                "{} damaged record(s), and {file} cannot be written: {e}",
                bad.len()
            ),
        })
    };
    write_aside(&file, &bad).map_err(io)?;
    for b in &bad {
        tracing::error!(path = %path, aside = %file, record = %describe(b),
            "damaged record moved out of the store");
    }
    let note = Note {
        file: file.clone(),
        count: bad.len(),
        first: describe(&bad[0]),
    };
    let keys: Vec<(Tree, Vec<u8>)> = bad.into_iter().map(|b| (b.tree, b.key)).collect();
    store.move_records_aside(
        &keys,
        Some(&serde_json::to_string(&note).expect("serializes")),
    )?;
    if !opts.start_after_corruption {
        return Err(Checked::Refused(OpenError::DamagedRecords {
            path,
            count: note.count,
            first: note.first,
            aside: file,
        }));
    }
    tracing::error!(path = %path, aside = %file, count = note.count,
        "start_after_corruption is set: starting without the damaged records");
    store.move_records_aside(&[], None)?;
    Ok(())
}

/// The records, one JSON object a line, durably.
fn write_aside(file: &str, bad: &[Bad]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(file)?;
    for b in bad {
        let mut line = serde_json::json!({
            "tree": b.tree.name(),
            "key_hex": hex(&b.key),
            "value_hex": hex(&b.value),
            "error": b.error,
        });
        if let Ok(k) = std::str::from_utf8(&b.key) {
            line["key"] = k.into();
        }
        writeln!(f, "{line}")?;
    }
    f.sync_all()?;
    if let Some(dir) = Path::new(file).parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
