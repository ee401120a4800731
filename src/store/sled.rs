//! The sled implementation of [`Store`] with group commit.
//!
//! Invariant: only the committer task writes. It takes every batch queued
//! at the moment, applies each as one multi-tree transaction (so a batch is
//! all-or-nothing), flushes once, then releases every waiter. Order of
//! application is the order of `commit` calls (one FIFO channel).
//!
//! Opening checks the store before sled reads it (`manifest.rs`, issue 17):
//! a damaged store is moved aside and never served from, a newer or a
//! foreign one is left untouched. sled 0.34 does not report every damage
//! as an error: it panics on some (caught here, without the panic message
//! on stderr) and recovers others to an earlier, emptier state (caught by
//! the generation check).
//!
//! A write that fails (a full disk, an I/O error; issue 17) leaves sled 0.34
//! failed for good: every later write returns the same error, even once
//! space is back, and its memory still holds the changes of the batches
//! whose flush failed, which the disk may not. So after a failed group the
//! store (1) reads through a *shadow* of the durable values of the keys
//! those batches changed, (2) refuses every commit at once, and (3) the
//! committer tries, with backoff, to reopen sled from its files, write the
//! shadow back (undoing whatever part of the failed batches reached the
//! disk) and flush; once that succeeds it is healthy again. Measured and
//! explained in docs/reliability.md ("Disk full and I/O errors").

use super::manifest::{self, Found, Manifest, Refusal};
use super::{Batch, CommitFuture, Op, OpenError, OpenOptions, Store, StoreError, Tree, Visitor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// sled's page cache when none is configured (`[store] cache_capacity_bytes`).
pub const DEFAULT_CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// sled's tree for the store's own bookkeeping (not a [`Tree`]: never
/// exported, imported or written by a batch).
const GUARD_TREE: &str = "guard";
/// In [`GUARD_TREE`]: the generation (`manifest.rs`), big-endian `u64`.
const GENERATION: &[u8] = b"generation";
/// In [`GUARD_TREE`]: where damaged records were moved to, until a start
/// with `start_after_corruption` acknowledges it.
const RECORDS_ASIDE: &[u8] = b"records-aside";

/// The first wait before the committer tries to recover from a failed
/// write; it doubles after each failed attempt, up to [`RECOVERY_MAX`].
const RECOVERY_FIRST: Duration = Duration::from_millis(250);
const RECOVERY_MAX: Duration = Duration::from_secs(4);
/// Written, synced and removed in the store directory before a recovery
/// attempt: reopening sled on a disk that is still full fails (measured)
/// after dropping the handles reads need, so it is not tried before the
/// filesystem takes a write of this size. Not a sled file: the manifest's
/// checks ignore it.
const PROBE_FILE: &str = "gateway-store.probe";
const PROBE_BYTES: usize = 1 << 20;

/// sled's handles. Replaced when the committer reopens sled after a failed
/// write.
struct Handles {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    guard: sled::Tree,
}

/// Per tree (by [`Tree::index`]): key → its durable value (`None`: absent),
/// for the keys that batches whose flush failed changed in sled's memory.
type Shadow = Vec<BTreeMap<Vec<u8>, Option<Vec<u8>>>>;

/// What the readers and the committer share.
struct Shared {
    /// `None` only while a reopen holds no sled, or after one failed.
    handles: RwLock<Option<Handles>>,
    /// Reads see these values over sled's until a compensating batch that
    /// writes them is durable (see the module's documentation).
    shadow: Mutex<Shadow>,
    /// The last group commit succeeded, or the store recovered since
    /// (readiness, `/readyz`).
    healthy: AtomicBool,
    /// The generation last written into sled and the manifest.
    generation: AtomicU64,
    path: PathBuf,
    cache_bytes: u64,
    /// Fault injection for the unit tests: every group's flush fails, and
    /// so does every recovery attempt, while set.
    #[cfg(test)]
    fail_writes: AtomicBool,
}

/// The write side of an open store; taken out by [`SledStore::close`].
struct Open {
    tx: mpsc::UnboundedSender<(Batch, Waiter)>,
    committer: tokio::task::JoinHandle<()>,
}

pub struct SledStore {
    shared: Arc<Shared>,
    open: RwLock<Option<Open>>,
    opts: OpenOptions,
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

impl Refusal {
    /// The fault alone (a reopen after a failed write).
    fn describe(&self) -> String {
        match self {
            Refusal::Damaged(m) | Refusal::Newer(m) | Refusal::Foreign(m) | Refusal::Io(m) => {
                m.clone()
            }
            Refusal::MovedAside(p) => format!("moved aside to {}", p.display()),
        }
    }

    fn into_open_error(self, path: &Path) -> OpenError {
        let path_s = path.display().to_string();
        match self {
            // Only reached where moving aside is not possible.
            Refusal::Damaged(fault) => OpenError::Io {
                path: path_s,
                message: format!("damaged ({fault})"),
            },
            Refusal::MovedAside(aside) => OpenError::MovedAside {
                path: path_s,
                aside: aside.display().to_string(),
            },
            Refusal::Newer(found) => OpenError::Newer {
                path: path_s,
                found,
            },
            Refusal::Foreign(why) => OpenError::Foreign { path: path_s, why },
            Refusal::Io(message) => OpenError::Io {
                path: path_s,
                message,
            },
        }
    }
}

impl SledStore {
    /// Opens (or creates) the store at `path` with the default options.
    ///
    /// Must be called inside a tokio runtime (the committer is a task).
    pub fn open(path: &Path) -> Result<SledStore, OpenError> {
        Self::open_with(path, OpenOptions::default())
    }

    /// Opens (or creates) the store at `path`: a missing path or an empty
    /// directory becomes a new store, a store is checked (`manifest.rs`)
    /// and opened. A damaged store is moved aside to `PATH.corrupt-<unix-ms>`
    /// and reported at error level; then the open fails
    /// ([`OpenError::Damaged`]) unless `opts.start_after_corruption`, with
    /// which a new, empty store is created in its place. A store of a newer
    /// build and a path that holds no store are refused and left untouched.
    ///
    /// Nothing is written into sled before [`SledStore::begin`], so a
    /// caller can still refuse the store (damaged or newer records).
    pub fn open_with(path: &Path, opts: OpenOptions) -> Result<SledStore, OpenError> {
        match Self::try_open(path, opts) {
            Ok(s) => Ok(s),
            Err(Refusal::Damaged(fault)) => Self::after_damage(path, opts, fault),
            Err(r) => Err(r.into_open_error(path)),
        }
    }

    /// Moves a damaged store aside; then refuses, or opens a new store.
    fn after_damage(path: &Path, opts: OpenOptions, fault: String) -> Result<SledStore, OpenError> {
        let aside = manifest::move_aside(path).map_err(|e| OpenError::Io {
            path: path.display().to_string(),
            message: format!("damaged ({fault}), and it cannot be moved aside: {e}"),
        })?;
        tracing::error!(path = %path.display(), aside = %aside.display(), fault = %fault,
            "the store is damaged; it was moved aside, bytes unchanged");
        if !opts.start_after_corruption {
            return Err(OpenError::Damaged {
                path: path.display().to_string(),
                fault,
                aside: aside.display().to_string(),
            });
        }
        tracing::error!(path = %path.display(),
            "start_after_corruption is set: starting with an empty store");
        Self::try_open(path, opts).map_err(|r| r.into_open_error(path))
    }

    fn try_open(path: &Path, opts: OpenOptions) -> Result<SledStore, Refusal> {
        // Another process (a running gateway) holds the store: touch
        // nothing, not even the manifest.
        if locked(&path.join("db")) {
            return Err(Refusal::Io(format!(
                "{}: locked by another process",
                path.join("db").display()
            )));
        }
        let known = match manifest::inspect(path)? {
            Found::Nothing => {
                if !opts.start_after_corruption {
                    if let Some(aside) = manifest::moved_aside(path) {
                        return Err(Refusal::MovedAside(aside));
                    }
                }
                std::fs::create_dir_all(path)
                    .map_err(|e| Refusal::Io(format!("{}: {e}", path.display())))?;
                Manifest::new(0)
            }
            Found::Legacy => Manifest::new(0),
            Found::Managed(m) => {
                if let Some(recorded) = &m.clean_stop {
                    let started = std::time::Instant::now();
                    manifest::verify(path, recorded)?;
                    tracing::info!(path = %path.display(),
                        bytes = recorded.iter().map(|f| f.len).sum::<u64>(),
                        ms = started.elapsed().as_millis() as u64,
                        "store files are as the last clean stop left them");
                }
                m
            }
        };
        // From here on sled may rewrite its files: the stamps of the last
        // clean stop stop holding before it opens them.
        let m = Manifest {
            format: manifest::FORMAT,
            clean_stop: None,
            ..known
        };
        manifest::write(path, &m)?;
        let (db, trees, guard) = open_sled(path, opts.cache_bytes)?;
        let generation = read_generation(&guard).map_err(Refusal::Io)?;
        if generation < m.generation {
            drop((trees, guard, db));
            lock_released(&path.join("db"));
            return Err(Refusal::Damaged(format!(
                "db: sled recovered generation {generation}, the manifest records {}: what was written since is missing",
                m.generation
            )));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            handles: RwLock::new(Some(Handles { db, trees, guard })),
            shadow: Mutex::new(vec![BTreeMap::new(); Tree::ALL.len()]),
            healthy: AtomicBool::new(true),
            generation: AtomicU64::new(generation.max(m.generation)),
            path: path.to_owned(),
            cache_bytes: opts.cache_bytes,
            #[cfg(test)]
            fail_writes: AtomicBool::new(false),
        });
        let committer = tokio::spawn(committer(shared.clone(), rx));
        Ok(SledStore {
            shared,
            open: RwLock::new(Some(Open { tx, committer })),
            opts,
        })
    }

    /// The store is accepted: a new generation is written into sled, then
    /// into the manifest. Call once, before serving.
    pub fn begin(&self) -> Result<(), StoreError> {
        let g = self.shared.generation.load(Ordering::Relaxed) + 1;
        self.with_handles(|h| {
            h.guard.insert(GENERATION, &g.to_be_bytes()).map_err(io)?;
            h.db.flush().map_err(io)
        })??;
        self.shared.generation.store(g, Ordering::Relaxed);
        manifest::write(&self.shared.path, &Manifest::new(g))
            .map_err(|r| io(r.into_open_error(&self.shared.path)))
    }

    /// Runs `f` on sled's handles: [`StoreError::Closed`] after `close`,
    /// [`StoreError::Unwritable`] while a failed reopen left none.
    fn with_handles<T>(&self, f: impl FnOnce(&Handles) -> T) -> Result<T, StoreError> {
        let handles = self
            .shared
            .handles
            .read()
            .unwrap_or_else(|p| p.into_inner());
        match handles.as_ref() {
            Some(h) => Ok(f(h)),
            None if self
                .open
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .is_none() =>
            {
                Err(StoreError::Closed)
            }
            None => Err(StoreError::Unwritable(
                "sled is being reopened after a failed write".into(),
            )),
        }
    }

    /// The shadowed (durable) value of `key`, if a failed batch changed it.
    fn shadowed(&self, tree: Tree, key: &[u8]) -> Option<Option<Vec<u8>>> {
        let shadow = self.shared.shadow.lock().unwrap_or_else(|p| p.into_inner());
        shadow[tree.index()].get(key).cloned()
    }

    /// Stops accepting commits, waits for queued ones, writes a new
    /// generation as the last write, and releases the database. Once sled
    /// has let go of its files their stamps go into the manifest: the next
    /// start checks them before sled reads anything. Later calls, and every
    /// read and commit after it, find the store closed.
    pub async fn close(&self) -> Result<(), StoreError> {
        let Some(open) = self.open.write().unwrap_or_else(|p| p.into_inner()).take() else {
            return Ok(());
        };
        let Open { tx, committer } = open;
        drop(tx);
        let _ = committer.await;
        // Stopped while failed: one last recovery, so that what the failed
        // batches left on disk is undone and the stop is a clean one.
        if !self.healthy() {
            let s = self.shared.clone();
            match tokio::task::spawn_blocking(move || recover(&s)).await {
                Ok(Ok(())) => self.shared.healthy.store(true, Ordering::Relaxed),
                Ok(Err(e)) => tracing::error!(error = %e,
                    "store still not writable at stop: a batch answered with an error may have reached the disk in part"),
                Err(e) => tracing::error!(error = %e, "store recovery at stop failed"),
            }
        }
        let taken = self
            .shared
            .handles
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(Handles { db, trees, guard }) = taken else {
            return Err(StoreError::Unwritable(
                "closed while sled could not be reopened after a failed write".into(),
            ));
        };
        let g = self.shared.generation.load(Ordering::Relaxed) + 1;
        let last = match guard.insert(GENERATION, &g.to_be_bytes()) {
            Ok(_) => db.flush_async().await.map(|_| ()).map_err(io),
            Err(e) => Err(io(e)),
        };
        drop((trees, guard, db));
        let path = self.shared.path.clone();
        // sled hands sealed log buffers to its own thread pool for writing,
        // and each such job holds the store's file — and with it the
        // exclusive lock taken at open — until it ends, after the last `Db`
        // handle is gone. Return only once the lock is free, so that a
        // reopen in this process (a restart, `import` after `export`, a
        // test) cannot meet our own lock, and the stamps are of files sled
        // no longer writes.
        let stamped = tokio::task::spawn_blocking(move || {
            if !lock_released(&path.join("db")) {
                return Err("sled still holds its lock".to_owned());
            }
            let started = std::time::Instant::now();
            let stamps = manifest::stamps(&path).map_err(|e| e.to_string())?;
            tracing::info!(path = %path.display(),
                bytes = stamps.iter().map(|f| f.len).sum::<u64>(),
                ms = started.elapsed().as_millis() as u64,
                "clean-stop stamps of the store's files taken");
            Ok(stamps)
        })
        .await
        .map_err(io)?;
        last?;
        self.shared.generation.store(g, Ordering::Relaxed);
        let mut m = Manifest::new(g);
        let path = &self.shared.path;
        match stamped {
            Ok(stamps) => m.clean_stop = Some(stamps),
            Err(e) => tracing::warn!(path = %path.display(), error = %e,
                "store closed without its clean-stop stamps; the next start checks only its generation"),
        }
        manifest::write(path, &m).map_err(|r| io(r.into_open_error(path)))
    }

    /// Lets go of the store without writing to it (a refused start): no
    /// new generation, no clean-stop stamps, so the next start checks it
    /// as after an unclean stop.
    pub async fn release(&self) {
        let open = self.open.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(o) = open {
            drop(o.tx);
            let _ = o.committer.await;
        }
        drop(
            self.shared
                .handles
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        let db = self.shared.path.join("db");
        let _ = tokio::task::spawn_blocking(move || lock_released(&db)).await;
    }

    /// Lets go of a store found damaged after it was opened (a record sled
    /// cannot read) and moves it aside; then refuses, or opens a new store
    /// as [`SledStore::open_with`] does.
    pub async fn condemn(self, fault: String) -> Result<SledStore, OpenError> {
        self.release().await;
        Self::after_damage(&self.shared.path, self.opts, fault)
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The last group commit was applied and flushed, or the store has
    /// recovered from a failed one since.
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }

    /// Bytes on disk (for metrics).
    pub fn size_on_disk(&self) -> u64 {
        self.with_handles(|h| h.db.size_on_disk().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Where damaged records were moved at an earlier start that refused
    /// to go on without them, if that has not been acknowledged yet.
    pub fn records_aside(&self) -> Result<Option<String>, StoreError> {
        let v = self
            .with_handles(|h| h.guard.get(RECORDS_ASIDE))?
            .map_err(io)?;
        Ok(v.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Removes the records `bad` from the store and notes `file` (where
    /// they were written first) as their place, in one transaction, flushed.
    /// With `bad` empty: forgets the note (the operator started anyway).
    pub fn move_records_aside(
        &self,
        bad: &[(Tree, Vec<u8>)],
        file: Option<&str>,
    ) -> Result<(), StoreError> {
        use sled::Transactional;
        self.with_handles(|o| {
            let mut all: Vec<&sled::Tree> = o.trees.iter().collect();
            all.push(&o.guard);
            all.as_slice()
                .transaction(|tx| {
                    for (t, k) in bad {
                        tx[t.index()].remove(k.as_slice())?;
                    }
                    let guard = &tx[Tree::ALL.len()];
                    match file {
                        Some(f) => guard.insert(RECORDS_ASIDE, f.as_bytes())?,
                        None => guard.remove(RECORDS_ASIDE)?,
                    };
                    Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
                })
                .map_err(|e| io(format!("{e:?}")))?;
            o.db.flush().map(|_| ()).map_err(io)
        })?
    }
}

/// Opens sled and the trees, turning the panics sled 0.34 raises on some
/// damaged logs into a refusal.
fn open_sled(
    path: &Path,
    cache_bytes: u64,
) -> Result<(sled::Db, Vec<sled::Tree>, sled::Tree), Refusal> {
    let opened = quietly(|| -> sled::Result<_> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()?;
        let mut trees = Vec::with_capacity(Tree::ALL.len());
        for t in Tree::ALL {
            trees.push(db.open_tree(t.name())?);
        }
        let guard = db.open_tree(GUARD_TREE)?;
        Ok((db, trees, guard))
    });
    match opened {
        Err(msg) => Err(Refusal::Damaged(format!(
            "sled failed while reading its files: {msg}"
        ))),
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => match e {
            sled::Error::Corruption { at, .. } => Err(Refusal::Damaged(match at {
                Some(at) => format!("sled: corrupt log entry at {at:?}"),
                None => "sled: corrupt log entry".into(),
            })),
            sled::Error::Unsupported(_) | sled::Error::ReportableBug(_) => {
                Err(Refusal::Damaged(format!("sled: {e}")))
            }
            sled::Error::Io(ref i)
                if matches!(
                    i.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
                ) =>
            {
                Err(Refusal::Damaged(format!("sled: {e}")))
            }
            // A lock held by a running gateway, a permission, a full disk:
            // not the store's fault.
            e => Err(Refusal::Io(e.to_string())),
        },
    }
}

fn read_generation(guard: &sled::Tree) -> Result<u64, String> {
    match guard.get(GENERATION).map_err(|e| e.to_string())? {
        None => Ok(0),
        Some(v) => <[u8; 8]>::try_from(v.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| "the generation record is not 8 bytes".to_owned()),
    }
}

/// Runs `f`; a panic in it becomes `Err(message)`, and its message is kept
/// off stderr (the start reports it as a damaged store instead).
fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    use std::cell::{Cell, RefCell};
    thread_local! {
        static QUIET: Cell<bool> = const { Cell::new(false) };
        static MESSAGE: RefCell<Option<String>> = const { RefCell::new(None) };
    }
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                let p = info.payload();
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown failure".into());
                let at = info
                    .location()
                    .map(|l| format!(" ({}:{})", l.file(), l.line()))
                    .unwrap_or_default();
                MESSAGE.with(|m| *m.borrow_mut() = Some(format!("{msg}{at}")));
            } else {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    r.map_err(|_| {
        MESSAGE
            .with(|m| m.borrow_mut().take())
            .unwrap_or_else(|| "unknown failure".into())
    })
}

/// Someone holds the exclusive lock on sled's data file now. The probe
/// takes the lock the way sled does (`fs2`: `flock` on Unix) and lets it go
/// at once.
fn locked(file: &Path) -> bool {
    use fs2::FileExt;
    match std::fs::File::open(file) {
        Ok(f) => f.try_lock_exclusive().is_err(), // unlocked when `f` drops
        Err(_) => false,                          // no store file, no lock
    }
}

/// Waits (bounded) until no one holds the exclusive lock on sled's data
/// file; false if someone still does.
fn lock_released(file: &Path) -> bool {
    // sled's jobs finish within a write and an fsync; five seconds is far
    // beyond that and still bounds a shutdown.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if !locked(file) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            tracing::warn!(file = %file.display(), "sled still holds its lock after close");
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// When the committer next tries to recover from a failed write, and how
/// long it waits after that one if it fails too.
type Recovery = Option<(tokio::time::Instant, Duration)>;

async fn committer(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<(Batch, Waiter)>) {
    let mut group: Vec<(Batch, Waiter)> = Vec::with_capacity(256);
    let mut recovery: Recovery = None;
    // Bounded by the channel: it ends when the store is closed (`close`
    // drops the sender). A failed store is retried with backoff, not in a
    // busy loop.
    loop {
        let first = match recovery {
            Some((at, wait)) => tokio::select! {
                m = rx.recv() => m,
                () = tokio::time::sleep_until(at) => {
                    recovery = try_recover(&shared, wait).await;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(first) = first else { break };
        group.push(first);
        while group.len() < 4096 {
            match rx.try_recv() {
                Ok(b) => group.push(b),
                Err(_) => break,
            }
        }
        if recovery.is_some() {
            // sled cannot write until it is reopened: refuse at once, so
            // the caller answers 500/503 instead of waiting (issue 17).
            for (_, w) in group.drain(..) {
                let _ = w.send(Err(StoreError::Unwritable(
                    "a write failed; waiting for the store to recover".into(),
                )));
            }
            continue;
        }
        let (batches, waiters): (Vec<Batch>, Vec<Waiter>) = group.drain(..).unzip();
        // Apply on a blocking thread: sled's transactions and flush do I/O.
        let s = shared.clone();
        let applied = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let guard = s.handles.read().unwrap_or_else(|p| p.into_inner());
            let Some(h) = guard.as_ref() else {
                let e = StoreError::Unwritable("sled is not open".into());
                return (batches.iter().map(|_| Err(e.clone())).collect(), Err(e));
            };
            let results: Vec<Result<Vec<Option<sled::IVec>>, StoreError>> =
                batches.iter().map(|b| apply(&h.trees, b)).collect();
            let flushed = h.db.flush().map(|_| ()).map_err(io);
            #[cfg(test)]
            let flushed = match s.fail_writes.load(Ordering::Relaxed) {
                true => Err(io("injected write failure")),
                false => flushed,
            };
            drop(guard);
            metrics::histogram!(crate::metrics::STORE_FLUSH_SECONDS)
                .record(started.elapsed().as_secs_f64());
            metrics::counter!(crate::metrics::STORE_BATCHES).increment(results.len() as u64);
            if flushed.is_err() {
                shadow_failed(&s, &batches, &results);
            }
            (results, flushed)
        })
        .await;
        let (results, flushed) = match applied {
            Ok(r) => r,
            // A panic inside sled: nothing of the group is known durable.
            Err(e) => (Vec::new(), Err(io(&e))),
        };
        let answers: Vec<Result<(), StoreError>> = (0..waiters.len())
            .map(|i| match (results.get(i), &flushed) {
                (Some(Ok(_)), Ok(())) => Ok(()),
                (Some(Err(e)), _) => Err(e.clone()),
                (_, Err(e)) => Err(e.clone()),
                (None, Ok(())) => Err(StoreError::Io("batch not applied".into())),
            })
            .collect();
        if let Some(Err(e)) = answers.iter().find(|r| r.is_err()) {
            // Unhealthy (`/readyz`) before anyone hears of the failure.
            shared.healthy.store(false, Ordering::Relaxed);
            tracing::error!(error = %e,
                "store write failed: refusing changes until sled is reopened and writes again");
            recovery = Some((tokio::time::Instant::now() + RECOVERY_FIRST, RECOVERY_FIRST));
        }
        for (w, r) in waiters.into_iter().zip(answers) {
            let _ = w.send(r);
        }
    }
}

/// After a group whose flush failed: the durable value of every key its
/// applied batches changed goes into the shadow (the earliest pre-image of
/// a key in the group is its value before the group, which was durable).
fn shadow_failed(
    shared: &Shared,
    batches: &[Batch],
    results: &[Result<Vec<Option<sled::IVec>>, StoreError>],
) {
    let mut shadow = shared.shadow.lock().unwrap_or_else(|p| p.into_inner());
    for (b, r) in batches.iter().zip(results) {
        let Ok(before) = r else { continue }; // not applied: sled is unchanged
        for (op, old) in b.ops.iter().zip(before) {
            let (t, k) = match op {
                Op::Put(t, k, _) | Op::Delete(t, k) => (t, k),
            };
            shadow[t.index()]
                .entry(k.clone())
                .or_insert_with(|| old.as_ref().map(|v| v.to_vec()));
        }
    }
}

/// One recovery attempt (on a blocking thread); the next attempt's time,
/// or `None` once the store writes again.
async fn try_recover(shared: &Arc<Shared>, wait: Duration) -> Recovery {
    let s = shared.clone();
    let r = tokio::task::spawn_blocking(move || recover(&s))
        .await
        .map_err(io)
        .and_then(|r| r);
    match r {
        Ok(()) => {
            shared.healthy.store(true, Ordering::Relaxed);
            tracing::info!(path = %shared.path.display(),
                "store writable again (sled reopened, failed batches undone); accepting changes");
            None
        }
        Err(e) => {
            tracing::debug!(error = %e, "store still not writable");
            let next = (wait * 2).min(RECOVERY_MAX);
            Some((tokio::time::Instant::now() + wait, next))
        }
    }
}

/// Reopens sled from its files and writes the shadow back, flushed: what
/// the failed batches changed is then undone in memory and on disk, and
/// sled has written since its error. Done only once the filesystem takes a
/// write of [`PROBE_BYTES`]: reopening drops the handles reads use, and
/// sled does not open on a full disk.
fn recover(shared: &Shared) -> Result<(), StoreError> {
    #[cfg(test)]
    if shared.fail_writes.load(Ordering::Relaxed) {
        return Err(io("injected write failure"));
    }
    probe(&shared.path)?;
    let mut handles = shared.handles.write().unwrap_or_else(|p| p.into_inner());
    drop(handles.take());
    let db_file = shared.path.join("db");
    if !lock_released(&db_file) {
        return Err(StoreError::Unwritable(
            "the failed sled still holds its lock".into(),
        ));
    }
    let (db, trees, guard) = open_sled(&shared.path, shared.cache_bytes)
        .map_err(|r| StoreError::Unwritable(format!("reopening sled: {}", r.describe())))?;
    let h = Handles { db, trees, guard };
    let written = (|| {
        let want = shared.generation.load(Ordering::Relaxed);
        let found = read_generation(&h.guard).map_err(io)?;
        if found < want {
            // The log lost acknowledged writes: never serve from it.
            return Err(StoreError::Unwritable(format!(
                "reopened sled holds generation {found}, {want} expected"
            )));
        }
        let mut undo = Batch::default();
        {
            let shadow = shared.shadow.lock().unwrap_or_else(|p| p.into_inner());
            for (t, keys) in Tree::ALL.iter().zip(shadow.iter()) {
                for (k, v) in keys {
                    match v {
                        Some(v) => undo.put(*t, k.clone(), v.clone()),
                        None => undo.delete(*t, k.clone()),
                    }
                }
            }
        }
        apply(&h.trees, &undo)?;
        // Something is written even with nothing to undo: sled's first
        // write after the reopen is the proof that it writes again.
        h.guard
            .insert(GENERATION, &found.to_be_bytes())
            .map_err(io)?;
        h.db.flush().map_err(io)?;
        shared
            .shadow
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter_mut()
            .for_each(BTreeMap::clear);
        Ok(())
    })();
    // Reads go to the reopened sled either way: with the shadow over it
    // until the undo is durable.
    *handles = Some(h);
    written
}

/// Writes, syncs and removes [`PROBE_FILE`] in the store directory.
fn probe(dir: &Path) -> Result<(), StoreError> {
    use std::io::Write;
    let file = dir.join(PROBE_FILE);
    let written = (|| {
        let mut f = std::fs::File::create(&file)?;
        f.write_all(&vec![0u8; PROBE_BYTES])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&file);
    written.map_err(|e| StoreError::Unwritable(format!("{}: {e}", file.display())))
}

/// Applies `batch` atomically; the value each op found (in op order), for
/// undoing it should the flush fail.
///
/// A sled transaction costs per tree it spans (an overlay each, staged
/// under sled's global write lock, committed tree by tree), so it spans
/// only the trees the batch touches; and a batch of one op needs none: a
/// single insert or remove is atomic by itself.
fn apply(trees: &[sled::Tree], batch: &Batch) -> Result<Vec<Option<sled::IVec>>, StoreError> {
    use sled::Transactional;
    let tree_of = |op: &Op| match op {
        Op::Put(t, ..) | Op::Delete(t, _) => t.index(),
    };
    match batch.ops.as_slice() {
        [] => return Ok(Vec::new()),
        [Op::Put(t, k, v)] => {
            return Ok(vec![
                trees[t.index()]
                    .insert(k.as_slice(), v.as_slice())
                    .map_err(io)?,
            ]);
        }
        [Op::Delete(t, k)] => return Ok(vec![trees[t.index()].remove(k.as_slice()).map_err(io)?]),
        _ => {}
    }
    // Position of each touched tree in the transaction's view.
    let mut slot = [usize::MAX; Tree::ALL.len()];
    let mut touched: Vec<&sled::Tree> = Vec::with_capacity(2);
    for op in &batch.ops {
        let i = tree_of(op);
        if slot[i] == usize::MAX {
            slot[i] = touched.len();
            touched.push(&trees[i]);
        }
    }
    touched
        .as_slice()
        .transaction(|tx| {
            // Built afresh each time: sled may run the closure again.
            let mut before = Vec::with_capacity(batch.ops.len());
            for op in &batch.ops {
                let view = &tx[slot[tree_of(op)]];
                before.push(match op {
                    Op::Put(_, k, v) => view.insert(k.as_slice(), v.as_slice())?,
                    Op::Delete(_, k) => view.remove(k.as_slice())?,
                });
            }
            Ok::<_, sled::transaction::ConflictableTransactionError<()>>(before)
        })
        .map_err(|e| io(format!("{e:?}")))
}

impl Store for SledStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.shadowed(tree, key) {
            return Ok(v);
        }
        self.with_handles(|h| {
            Ok(h.trees[tree.index()]
                .get(key)
                .map_err(io)?
                .map(|v| v.to_vec()))
        })?
    }

    fn visit(&self, tree: Tree, f: Visitor<'_>) -> Result<(), StoreError> {
        let shadow =
            self.shared.shadow.lock().unwrap_or_else(|p| p.into_inner())[tree.index()].clone();
        self.with_handles(|h| {
            // sled's records in key order, the shadowed ones replaced (or
            // left out, or added) by their durable values.
            let mut shadowed = shadow.into_iter().peekable();
            for r in h.trees[tree.index()].iter() {
                let (k, v) = r.map_err(io)?;
                while let Some((sk, sv)) = shadowed.next_if(|(sk, _)| sk.as_slice() < &k[..]) {
                    if let Some(sv) = sv {
                        f(&sk, &sv)?;
                    }
                }
                match shadowed.next_if(|(sk, _)| sk.as_slice() == &k[..]) {
                    Some((_, Some(sv))) => f(&k, &sv)?,
                    Some((_, None)) => {}
                    None => f(&k, &v)?,
                }
            }
            for (sk, sv) in shadowed {
                if let Some(sv) = sv {
                    f(&sk, &sv)?;
                }
            }
            Ok(())
        })?
    }

    fn commit(&self, batch: Batch) -> CommitFuture {
        let (w, r) = oneshot::channel();
        let sent = self
            .open
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .ok_or(StoreError::Closed)
            .and_then(|o| o.tx.send((batch, w)).map_err(|_| StoreError::Closed));
        Box::pin(async move {
            sent?;
            r.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.with_handles(|h| h.db.flush().map(|_| ()).map_err(io))?
    }
}

#[cfg(test)]
mod tests {
    use super::super::MANIFEST as MANIFEST_NAME;
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "sipgw-store-{tag}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ))
    }

    /// `apply` runs a batch over the trees it touches only (or without a
    /// transaction for one op): every op lands in its own tree, and the
    /// values it found come back in op order (what undoing a failed flush
    /// writes back).
    #[test]
    fn apply_puts_each_op_in_its_tree_and_returns_what_it_found() {
        let p = tmp("apply");
        let db = sled::Config::new().path(&p).temporary(true).open().unwrap();
        let trees: Vec<sled::Tree> = Tree::ALL
            .iter()
            .map(|t| db.open_tree(t.name()).unwrap())
            .collect();
        let tree = |t: Tree| &trees[t.index()];
        tree(Tree::Policies).insert(b"k", b"old").unwrap();
        tree(Tree::Dialogs).insert(b"gone", b"was").unwrap();

        let mut b = Batch::default();
        b.put(Tree::Dialogs, b"d".to_vec(), b"1".to_vec());
        b.put(Tree::Policies, b"k".to_vec(), b"new".to_vec());
        b.delete(Tree::Dialogs, b"gone".to_vec());
        let before = apply(&trees, &b).unwrap();
        assert_eq!(
            before,
            vec![
                None,
                Some(sled::IVec::from(b"old")),
                Some(sled::IVec::from(b"was"))
            ]
        );
        assert_eq!(
            tree(Tree::Dialogs).get(b"d").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(
            tree(Tree::Policies).get(b"k").unwrap().as_deref(),
            Some(&b"new"[..])
        );
        assert_eq!(tree(Tree::Dialogs).get(b"gone").unwrap(), None);
        assert_eq!(
            tree(Tree::Policies).get(b"d").unwrap(),
            None,
            "no op in another tree"
        );

        // One op: no transaction, the same answer.
        let mut one = Batch::default();
        one.put(Tree::Policies, b"k".to_vec(), b"newer".to_vec());
        assert_eq!(
            apply(&trees, &one).unwrap(),
            vec![Some(sled::IVec::from(b"new"))]
        );
        let mut del = Batch::default();
        del.delete(Tree::Dialogs, b"d".to_vec());
        assert_eq!(
            apply(&trees, &del).unwrap(),
            vec![Some(sled::IVec::from(b"1"))]
        );
        assert_eq!(tree(Tree::Dialogs).get(b"d").unwrap(), None);
    }

    #[tokio::test]
    async fn commit_is_atomic_ordered_and_durable() {
        let p = tmp("basic");
        {
            let s = SledStore::open(&p).unwrap();
            let mut b = Batch::default();
            b.put(Tree::Publications, b"a".to_vec(), b"1".to_vec());
            b.put(Tree::Subscriptions, b"s".to_vec(), b"x".to_vec());
            s.commit(b).await.unwrap();
            // Many concurrent commits share flushes; the last write wins.
            let futs: Vec<_> = (0..200)
                .map(|i| {
                    let mut b = Batch::default();
                    b.put(
                        Tree::Publications,
                        b"a".to_vec(),
                        format!("{i}").into_bytes(),
                    );
                    s.commit(b)
                })
                .collect();
            for f in futs {
                f.await.unwrap();
            }
            let mut d = Batch::default();
            d.delete(Tree::Subscriptions, b"s".to_vec());
            s.commit(d).await.unwrap();
            s.close().await.unwrap();
        }
        // Reopen: what was acknowledged is there.
        let s = SledStore::open(&p).unwrap();
        assert_eq!(
            s.get(Tree::Publications, b"a").unwrap(),
            Some(b"199".to_vec())
        );
        assert_eq!(s.get(Tree::Subscriptions, b"s").unwrap(), None);
        assert_eq!(s.scan(Tree::Publications).unwrap().len(), 1);
        // A second open while the first holds the lock fails instead of
        // treating the live store as corrupt.
        assert!(SledStore::open(&p).is_err());
        s.close().await.unwrap();
        let _ = std::fs::remove_dir_all(&p);
    }

    /// `close()` returns only once sled has let go of the store's file
    /// lock, so the store can be reopened at once (a restart in the same
    /// process, `import` after `export`). sled writes sealed log buffers on
    /// its own thread pool, and those jobs hold the file (and its lock)
    /// after the last `Db` handle is dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn close_releases_the_file_lock() {
        let p = tmp("reopen");
        // Busy threads, as when the whole suite runs on two cores: sled's
        // I/O threads then finish their jobs late, after `close`.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinners: Vec<_> = (0..4)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        for round in 0..40u32 {
            let s = SledStore::open(&p).unwrap_or_else(|e| panic!("reopen {round}: {e}"));
            // Enough data to seal several log buffers per round.
            let futs: Vec<_> = (0..64u32)
                .map(|i| {
                    let mut b = Batch::default();
                    b.put(
                        Tree::Publications,
                        format!("{round}-{i}").into_bytes(),
                        vec![round as u8; 4096],
                    );
                    s.commit(b)
                })
                .collect();
            for f in futs {
                f.await.unwrap();
            }
            s.close().await.unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in spinners {
            t.join().unwrap();
        }
        let s = SledStore::open(&p).unwrap();
        assert_eq!(s.scan(Tree::Publications).unwrap().len(), 40 * 64);
        s.close().await.unwrap();
        let _ = std::fs::remove_dir_all(&p);
    }

    /// Issue 17: a group whose flush fails (sled 0.34 then refuses every
    /// later write, and its memory holds the failed batch) is not read
    /// back, later commits are refused at once, and once writes work again
    /// the store reopens sled by itself and undoes whatever part of the
    /// failed batch reached the disk (here sled's own periodic flush writes
    /// it), so the store holds exactly the acknowledged batches.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_is_undone_and_the_store_recovers() {
        fn put(k: &str, v: &str) -> Batch {
            let mut b = Batch::default();
            b.put(
                Tree::Registrations,
                k.as_bytes().to_vec(),
                v.as_bytes().to_vec(),
            );
            b
        }
        fn pairs(s: &SledStore) -> Vec<(String, String)> {
            let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
            let r = s.scan(Tree::Registrations).unwrap();
            r.into_iter().map(|(k, v)| (text(k), text(v))).collect()
        }
        let kv = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let p = tmp("recover");
        let s = SledStore::open(&p).unwrap();
        s.begin().unwrap();
        s.commit(put("a", "1")).await.unwrap();
        s.commit(put("b", "1")).await.unwrap();
        s.shared.fail_writes.store(true, Ordering::Relaxed);
        let mut failed = put("a", "2");
        failed.put(Tree::Registrations, b"c".to_vec(), b"new".to_vec());
        failed.delete(Tree::Registrations, b"b".to_vec());
        failed.put(Tree::Registrations, b"a".to_vec(), b"3".to_vec());
        assert!(s.commit(failed).await.is_err());
        assert!(!s.healthy());
        // Reads give what is durable, not what sled holds in memory.
        assert_eq!(
            s.get(Tree::Registrations, b"a").unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(
            s.get(Tree::Registrations, b"b").unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(s.get(Tree::Registrations, b"c").unwrap(), None);
        assert_eq!(pairs(&s), [kv("a", "1"), kv("b", "1")]);
        // Refused at once, not queued behind the failure.
        let r = s.commit(put("d", "1")).await;
        assert!(matches!(r, Err(StoreError::Unwritable(_))), "{r:?}");
        // sled's flusher thread (every 500 ms) writes the failed batch.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(!s.healthy(), "no recovery while writes fail");
        s.shared.fail_writes.store(false, Ordering::Relaxed);
        for _ in 0..100 {
            if s.healthy() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(s.healthy(), "recovered by itself");
        assert_eq!(pairs(&s), [kv("a", "1"), kv("b", "1")]);
        s.commit(put("e", "1")).await.unwrap();
        s.close().await.unwrap();
        let s = SledStore::open(&p).unwrap();
        assert_eq!(pairs(&s), [kv("a", "1"), kv("b", "1"), kv("e", "1")]);
        s.close().await.unwrap();
        let _ = std::fs::remove_dir_all(&p);
    }

    /// A stop before the committer's next recovery attempt: `close`
    /// recovers once more, so the part of a failed batch that sled's
    /// flusher wrote does not come back at the next start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_while_failed_undoes_the_failed_batch() {
        let p = tmp("stopfailed");
        let s = SledStore::open(&p).unwrap();
        s.begin().unwrap();
        let mut b = Batch::default();
        b.put(Tree::Dialogs, b"a".to_vec(), b"1".to_vec());
        s.commit(b).await.unwrap();
        s.shared.fail_writes.store(true, Ordering::Relaxed);
        let mut b = Batch::default();
        b.put(Tree::Dialogs, b"a".to_vec(), b"2".to_vec());
        b.put(Tree::Dialogs, b"c".to_vec(), b"new".to_vec());
        assert!(s.commit(b).await.is_err());
        // sled's flusher writes it; the first recovery attempt (250 ms)
        // fails; the stop comes before the second (750 ms).
        tokio::time::sleep(Duration::from_millis(650)).await;
        s.shared.fail_writes.store(false, Ordering::Relaxed);
        s.close().await.unwrap();
        let s = SledStore::open(&p).unwrap();
        let all = s.scan(Tree::Dialogs).unwrap();
        assert_eq!(all, [(b"a".to_vec(), b"1".to_vec())]);
        s.close().await.unwrap();
        let _ = std::fs::remove_dir_all(&p);
    }

    /// Every `PATH.corrupt-*` beside `p`, removed.
    fn remove_asides(p: &Path) {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        for e in std::fs::read_dir(p.parent().unwrap()).unwrap().flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}.corrupt-"))
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// Cuts the store's log to `len` bytes.
    fn cut_db(p: &Path, len: u64) {
        let f = std::fs::OpenOptions::new().write(true).open(p.join("db"));
        f.unwrap().set_len(len).unwrap();
    }

    /// The refusal of an open that must not succeed.
    fn refusal(p: &Path, opts: OpenOptions) -> OpenError {
        match SledStore::open_with(p, opts) {
            Err(e) => e,
            Ok(_) => panic!("{} opened", p.display()),
        }
    }

    fn allowing() -> OpenOptions {
        OpenOptions {
            start_after_corruption: true,
            ..OpenOptions::default()
        }
    }

    /// A store sled cannot open is moved aside with its bytes as they
    /// were, and the open refused; a start with the store missing and the
    /// damaged one beside it is refused too (a restart loop must not turn
    /// into an empty gateway); only `start_after_corruption` opens a new,
    /// empty store.
    #[tokio::test]
    async fn corrupt_store_is_moved_aside() {
        let p = tmp("corrupt");
        std::fs::create_dir_all(&p).unwrap();
        // sled keeps its data in `db` and `conf`; garbage there cannot be opened.
        std::fs::write(p.join("conf"), b"\xff\xfe garbage").unwrap();
        std::fs::write(p.join("db"), vec![0xAAu8; 4096]).unwrap();
        let aside = match refusal(&p, OpenOptions::default()) {
            OpenError::Damaged { aside, .. } => PathBuf::from(aside),
            e => panic!("{e}"),
        };
        assert!(!p.exists(), "the damaged store is no longer at its path");
        assert_eq!(
            std::fs::read(aside.join("conf")).unwrap(),
            b"\xff\xfe garbage"
        );
        assert_eq!(std::fs::read(aside.join("db")).unwrap(), vec![0xAAu8; 4096]);
        let e = refusal(&p, OpenOptions::default());
        assert!(matches!(e, OpenError::MovedAside { .. }), "{e}");
        assert_eq!(e.exit_code(), 3);
        let s = SledStore::open_with(&p, allowing()).expect("opens a fresh store");
        assert!(s.scan(Tree::Registrations).unwrap().is_empty());
        s.begin().unwrap();
        s.close().await.unwrap();
        // Once there is a store again, a plain open takes it.
        SledStore::open(&p).unwrap().close().await.unwrap();
        let _ = std::fs::remove_dir_all(&p);
        remove_asides(&p);
    }

    /// A store damaged while the gateway was down (after a clean stop) is
    /// found before sled reads it; after an unclean stop, the generation
    /// sled recovers betrays a log that lost its end.
    #[tokio::test]
    async fn damage_after_a_stop_is_found() {
        async fn filled(p: &Path) {
            let s = SledStore::open(p).unwrap();
            s.begin().unwrap();
            for i in 0..200u32 {
                let mut b = Batch::default();
                b.put(Tree::Dialogs, i.to_be_bytes().to_vec(), vec![7u8; 300]);
                s.commit(b).await.unwrap();
            }
            s.close().await.unwrap();
        }
        // Clean stop, then the log is cut: refused before sled opens it.
        let p = tmp("stamps");
        filled(&p).await;
        let len = std::fs::metadata(p.join("db")).unwrap().len();
        cut_db(&p, 8);
        let cut = std::fs::read(p.join("db")).unwrap();
        match refusal(&p, OpenOptions::default()) {
            OpenError::Damaged { fault, aside, .. } => {
                assert_eq!(fault, format!("db: 8 bytes, {len} at the last clean stop"));
                assert_eq!(std::fs::read(Path::new(&aside).join("db")).unwrap(), cut);
            }
            e => panic!("{e}"),
        }
        remove_asides(&p);

        // Unclean stop (no stamps): sled opens the cut log as an empty
        // store, whose generation gives it away.
        filled(&p).await;
        let m = std::fs::read_to_string(p.join(MANIFEST_NAME)).unwrap();
        let mut m: serde_json::Value = serde_json::from_str(&m).unwrap();
        m.as_object_mut().unwrap().remove("clean_stop");
        std::fs::write(p.join(MANIFEST_NAME), m.to_string()).unwrap();
        cut_db(&p, 0);
        match refusal(&p, OpenOptions::default()) {
            OpenError::Damaged { fault, .. } => {
                assert!(fault.contains("sled recovered generation 0"), "{fault}")
            }
            e => panic!("{e}"),
        }
        remove_asides(&p);
        let _ = std::fs::remove_dir_all(&p);
    }

    /// A panic inside sled while it reads a damaged log (sled 0.34 has
    /// several) becomes a message, and stays off stderr.
    #[test]
    fn panics_while_opening_become_messages() {
        let r: Result<(), String> = quietly(|| panic!("tried to serialize Uninitialized"));
        let m = r.unwrap_err();
        assert!(
            m.starts_with("tried to serialize Uninitialized (src/store/sled.rs:"),
            "{m}"
        );
        assert_eq!(quietly(|| 7), Ok(7));
    }

    /// A newer store format, a file and a directory of something else are
    /// refused and left exactly as they were.
    #[tokio::test]
    async fn newer_and_foreign_are_left_untouched() {
        let p = tmp("newer");
        std::fs::create_dir_all(&p).unwrap();
        let m = r#"{"store":"sip-cpim-gateway","format":2,"generation":9}"#;
        std::fs::write(p.join(MANIFEST_NAME), m).unwrap();
        std::fs::write(p.join("db"), b"whatever a newer build writes").unwrap();
        let e = refusal(&p, allowing());
        assert!(matches!(e, OpenError::Newer { .. }), "{e}");
        assert_eq!(e.exit_code(), 4);
        assert!(e.to_string().contains("store format 2"), "{e}");
        assert_eq!(std::fs::read_to_string(p.join(MANIFEST_NAME)).unwrap(), m);
        assert_eq!(
            std::fs::read(p.join("db")).unwrap(),
            b"whatever a newer build writes"
        );
        let _ = std::fs::remove_dir_all(&p);

        let p = tmp("foreign");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("notes.txt"), b"mine").unwrap();
        let e = refusal(&p, allowing());
        assert!(matches!(e, OpenError::Foreign { .. }), "{e}");
        assert_eq!(e.exit_code(), 5);
        assert!(e.to_string().contains("notes.txt"), "{e}");
        assert_eq!(std::fs::read_dir(&p).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(&p);
        std::fs::write(&p, b"a file").unwrap();
        assert!(matches!(refusal(&p, allowing()), OpenError::Foreign { .. }));
        assert_eq!(std::fs::read(&p).unwrap(), b"a file");
        let _ = std::fs::remove_file(&p);
    }
}
