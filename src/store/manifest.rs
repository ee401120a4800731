//! The store's manifest (issue 17): `gateway-store.json` in the store
//! directory, beside sled's own files. It is what lets a start tell a
//! store it can trust from one it cannot, before sled reads (and, in its
//! recovery, rewrites) a single file:
//!
//! - `store` and `format` say whose store it is and in which format. A
//!   directory with neither a manifest nor sled's files is not a store; a
//!   format above [`FORMAT`] was written by a newer build. Both are refused
//!   and left untouched.
//! - `generation` counts starts and clean stops. The same number is written
//!   into sled (its `guard` tree) as the last write of each, and sled's must
//!   never be below the manifest's: sled recovers a damaged log by keeping
//!   the part before the first bad entry and starting without the rest, so
//!   a truncated or overwritten log opens "fine", emptier. The generation
//!   written last is the first thing such a recovery loses.
//! - `clean_stop` holds the length and SHA-256 of every sled file as a
//!   clean stop left them, and is removed before sled opens them again. A
//!   start that finds them changed knows the store was damaged while the
//!   gateway was down, and moves it aside with its bytes as they were.
//!
//! A store written before the manifest existed has sled's files and no
//! manifest: it is opened as it is and given one.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The manifest's file name inside the store directory.
pub const MANIFEST: &str = "gateway-store.json";

/// The store format this build writes and reads. Any change an older build
/// cannot read (a new record version byte, `codec.rs`; a new encoding of a
/// tree) bumps it, so that the older build refuses the store instead of
/// reading it wrongly.
pub const FORMAT: u32 = 1;

/// `store` in the manifest.
const IDENTITY: &str = "sip-cpim-gateway";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Manifest {
    pub store: String,
    pub format: u32,
    pub generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_stop: Option<Vec<FileStamp>>,
}

impl Manifest {
    pub fn new(generation: u64) -> Manifest {
        Manifest {
            store: IDENTITY.into(),
            format: FORMAT,
            generation,
            clean_stop: None,
        }
    }
}

/// One sled file as a clean stop left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct FileStamp {
    /// Relative to the store directory, `/`-separated.
    pub name: String,
    pub len: u64,
    pub sha256: String,
}

/// Why a store path cannot be opened as it is.
#[derive(Debug)]
pub(super) enum Refusal {
    /// Damaged: moved aside by the caller.
    Damaged(String),
    /// Missing, and this damaged store lies beside it.
    MovedAside(PathBuf),
    Newer(String),
    Foreign(String),
    Io(String),
}

/// What lies at a store path before anything is opened.
#[derive(Debug)]
pub(super) enum Found {
    /// Nothing, or an empty directory: a new store.
    Nothing,
    /// A store with its manifest.
    Managed(Manifest),
    /// sled's files and no manifest: a store of a build before issue 17.
    Legacy,
}

/// sled's files in a store directory (0.34: `conf`, `db`, `snap.*`,
/// `blobs/`).
fn is_sled_file(name: &str) -> bool {
    matches!(name, "conf" | "db" | "blobs") || name.starts_with("snap.")
}

fn io(path: &Path, e: std::io::Error) -> Refusal {
    Refusal::Io(format!("{}: {e}", path.display()))
}

/// Looks at `path` without changing anything.
pub(super) fn inspect(path: &Path) -> Result<Found, Refusal> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(e) => return Err(io(path, e)),
    };
    if !meta.is_dir() {
        return Err(Refusal::Foreign("a file, not a directory".into()));
    }
    let mut names: Vec<String> = std::fs::read_dir(path)
        .map_err(|e| io(path, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // A manifest being written when the first start was cut short.
        .filter(|n| *n != tmp_name())
        .collect();
    names.sort();
    if names.iter().any(|n| n == MANIFEST) {
        let m = read(path)?;
        if m.format > FORMAT {
            return Err(Refusal::Newer(format!("store format {}", m.format)));
        }
        return Ok(Found::Managed(m));
    }
    if names.iter().any(|n| is_sled_file(n)) {
        // Without its log sled would start an empty store.
        if !names.iter().any(|n| n == "db") {
            return Err(Refusal::Damaged("db: missing".into()));
        }
        return Ok(Found::Legacy);
    }
    if names.is_empty() {
        return Ok(Found::Nothing);
    }
    let shown: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
    let more = match names.len().saturating_sub(3) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    Err(Refusal::Foreign(format!(
        "a directory holding other files: {}{more}",
        shown.join(", ")
    )))
}

fn read(path: &Path) -> Result<Manifest, Refusal> {
    let file = path.join(MANIFEST);
    let bytes = std::fs::read(&file).map_err(|e| io(&file, e))?;
    let m: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| Refusal::Damaged(format!("{MANIFEST}: unreadable: {e}")))?;
    if m.store != IDENTITY || m.format == 0 {
        return Err(Refusal::Damaged(format!(
            "{MANIFEST}: not a manifest of this gateway (store {:?}, format {})",
            m.store, m.format
        )));
    }
    Ok(m)
}

fn tmp_name() -> String {
    format!("{MANIFEST}.tmp")
}

/// Replaces the manifest atomically and durably (write, fsync, rename,
/// fsync of the directory).
pub(super) fn write(path: &Path, m: &Manifest) -> Result<(), Refusal> {
    let tmp = path.join(tmp_name());
    let body = serde_json::to_vec_pretty(m).expect("the manifest serializes");
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(&body)?;
        f.write_all(b"\n")?;
        f.sync_all()
    });
    written.map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path.join(MANIFEST)).map_err(|e| io(&tmp, e))?;
    sync_dir(path).map_err(|e| io(path, e))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Every sled file below `path`, in name order, with its length and hash.
pub(super) fn stamps(path: &Path) -> std::io::Result<Vec<FileStamp>> {
    fn walk(root: &Path, rel: &str, out: &mut Vec<FileStamp>) -> std::io::Result<()> {
        let dir = if rel.is_empty() {
            root.to_owned()
        } else {
            root.join(rel)
        };
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if rel.is_empty() && !is_sled_file(&name) {
                continue;
            }
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if e.file_type()?.is_dir() {
                walk(root, &rel, out)?;
            } else {
                out.push(stamp(root, rel)?);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(path, "", &mut out)?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn stamp(root: &Path, name: String) -> std::io::Result<FileStamp> {
    let mut f = std::fs::File::open(root.join(&name))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    let sha256 = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(FileStamp { name, len, sha256 })
}

/// Checks sled's files against what the last clean stop recorded; the
/// first difference is the fault.
pub(super) fn verify(path: &Path, recorded: &[FileStamp]) -> Result<(), Refusal> {
    let now = stamps(path).map_err(|e| io(path, e))?;
    for r in recorded {
        match now.iter().find(|n| n.name == r.name) {
            None => return Err(Refusal::Damaged(format!("{}: missing", r.name))),
            Some(n) if n.len != r.len => {
                return Err(Refusal::Damaged(format!(
                    "{}: {} bytes, {} at the last clean stop",
                    r.name, n.len, r.len
                )));
            }
            Some(n) if n.sha256 != r.sha256 => {
                return Err(Refusal::Damaged(format!(
                    "{}: contents changed since the last clean stop",
                    r.name
                )));
            }
            Some(_) => {}
        }
    }
    match now
        .iter()
        .find(|n| !recorded.iter().any(|r| r.name == n.name))
    {
        Some(extra) => Err(Refusal::Damaged(format!(
            "{}: not there at the last clean stop",
            extra.name
        ))),
        None => Ok(()),
    }
}

/// `PATH.corrupt-` for a store at `path`.
fn aside_prefix(path: &Path) -> Option<String> {
    path.file_name()
        .map(|n| format!("{}.corrupt-", n.to_string_lossy()))
}

/// Renames the store at `path` to `PATH.corrupt-<unix-ms>` beside it (its
/// bytes as they are) and makes the rename durable.
pub(super) fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let prefix = aside_prefix(path).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path has no name")
    })?;
    let mut ms = now_ms();
    let aside = loop {
        let p = path.with_file_name(format!("{prefix}{ms}"));
        if !p.exists() {
            break p;
        }
        ms += 1;
    };
    std::fs::rename(path, &aside)?;
    if let Some(parent) = aside.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        sync_dir(parent)?;
    }
    Ok(aside)
}

/// The newest damaged store moved aside beside `path`, if any.
pub(super) fn moved_aside(path: &Path) -> Option<PathBuf> {
    let prefix = aside_prefix(path)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::read_dir(parent)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.strip_prefix(&prefix)
                .is_some_and(|ms| !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()))
        })
        .max_by_key(|n| (n.len(), n.clone()))
        .map(|n| parent.join(n))
}

pub(super) fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}
