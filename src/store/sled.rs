//! The sled implementation of [`Store`] with group commit.
//!
//! Invariant: only the committer task writes. It takes every batch queued
//! at the moment, applies each as one multi-tree transaction (so a batch is
//! all-or-nothing), flushes once, then releases every waiter. Order of
//! application is the order of `commit` calls (one FIFO channel).

use super::{Batch, CommitFuture, Op, Store, StoreError, Tree, Visitor};
use std::path::{Path, PathBuf};
use tokio::sync::{mpsc, oneshot};

type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// sled's page cache when none is configured (`[store] cache_capacity_bytes`).
pub const DEFAULT_CACHE_BYTES: u64 = 4 * 1024 * 1024;

pub struct SledStore {
    /// The last group commit succeeded (readiness, `/readyz`).
    healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
    db: sled::Db,
    trees: Vec<sled::Tree>,
    tx: mpsc::UnboundedSender<(Batch, Waiter)>,
    committer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    path: PathBuf,
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

impl SledStore {
    /// Opens (or creates) the store at `path`. A store that cannot be
    /// opened is moved aside to `path.corrupt-<unix-ms>` and a fresh one is
    /// created; the move is logged as an error (design §6).
    ///
    /// Must be called inside a tokio runtime (the committer is a task).
    pub fn open(path: &Path) -> Result<SledStore, StoreError> {
        Self::open_with(path, DEFAULT_CACHE_BYTES)
    }

    /// As [`SledStore::open`], with sled's page cache bounded to
    /// `cache_bytes`. The agents keep every live record in memory, so the
    /// cache only serves startup scans and rewrites; sled's own default
    /// (1 GiB) would hold a second copy of every record.
    pub fn open_with(path: &Path, cache_bytes: u64) -> Result<SledStore, StoreError> {
        let config = || sled::Config::new().path(path).cache_capacity(cache_bytes);
        let db = match config().open() {
            Ok(db) => db,
            // Only a store sled reports as corrupt is moved aside; a lock
            // held by another process or a permission problem is an error.
            Err(e @ (sled::Error::Corruption { .. } | sled::Error::Unsupported(_))) => {
                let ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0);
                let aside = PathBuf::from(format!("{}.corrupt-{ms}", path.display()));
                tracing::error!(path = %path.display(), aside = %aside.display(), error = %e,
                    "store cannot be opened; moving it aside and starting with an empty store");
                std::fs::rename(path, &aside).map_err(io)?;
                config().open().map_err(io)?
            }
            Err(e) => return Err(io(e)),
        };
        let mut trees = Vec::with_capacity(Tree::ALL.len());
        for t in Tree::ALL {
            trees.push(db.open_tree(t.name()).map_err(io)?);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let handle = tokio::spawn(committer(db.clone(), trees.clone(), rx, healthy.clone()));
        Ok(SledStore {
            healthy,
            db,
            trees,
            tx,
            committer: std::sync::Mutex::new(Some(handle)),
            path: path.to_owned(),
        })
    }

    /// Stops accepting commits, waits for queued ones, flushes, and releases
    /// the database (graceful shutdown; reopening in the same process).
    pub async fn close(self) -> Result<(), StoreError> {
        let SledStore {
            db,
            trees,
            healthy: _,
            tx,
            committer,
            path,
        } = self;
        drop(tx);
        let handle = committer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.await;
        }
        let r = db.flush_async().await.map(|_| ()).map_err(io);
        drop(trees);
        drop(db);
        // sled hands sealed log buffers to its own thread pool for writing,
        // and each such job holds the store's file — and with it the
        // exclusive lock taken at open — until it ends, after the last `Db`
        // handle is gone. Return only once the lock is free, so that a
        // reopen in this process (a restart, `import` after `export`, a
        // test) cannot meet our own lock.
        wait_for_lock_release(&path.join("db")).await;
        r
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last group commit was applied and flushed.
    pub fn healthy(&self) -> bool {
        self.healthy.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes on disk (for metrics).
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

/// Waits (bounded) until no one holds the exclusive lock on sled's data
/// file. The probe takes the lock the way sled does (`fs2`: `flock` on
/// Unix) and lets it go at once.
async fn wait_for_lock_release(file: &Path) {
    use fs2::FileExt;
    // sled's jobs finish within a write and an fsync; five seconds is far
    // beyond that and still bounds a shutdown.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let free = match std::fs::File::open(file) {
            Ok(f) => f.try_lock_exclusive().is_ok(), // unlocked when `f` drops
            Err(_) => true,                          // no store file, no lock
        };
        if free {
            return;
        }
        if std::time::Instant::now() >= deadline {
            tracing::warn!(file = %file.display(), "sled still holds its lock after close");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

async fn committer(
    db: sled::Db,
    trees: Vec<sled::Tree>,
    mut rx: mpsc::UnboundedReceiver<(Batch, Waiter)>,
    healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let mut group: Vec<(Batch, Waiter)> = Vec::with_capacity(256);
    while let Some(first) = rx.recv().await {
        group.push(first);
        while group.len() < 4096 {
            match rx.try_recv() {
                Ok(b) => group.push(b),
                Err(_) => break,
            }
        }
        // Apply on a blocking thread: sled's transactions and flush do I/O.
        let db2 = db.clone();
        let trees2 = trees.clone();
        let (batches, waiters): (Vec<Batch>, Vec<Waiter>) = group.drain(..).unzip();
        let applied = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let results: Vec<Result<(), StoreError>> =
                batches.iter().map(|b| apply(&trees2, b)).collect();
            let flushed = db2.flush().map(|_| ()).map_err(io);
            metrics::histogram!(crate::metrics::STORE_FLUSH_SECONDS)
                .record(started.elapsed().as_secs_f64());
            metrics::counter!(crate::metrics::STORE_BATCHES).increment(results.len() as u64);
            (results, flushed)
        })
        .await;
        match applied {
            Ok((results, flushed)) => {
                healthy.store(
                    flushed.is_ok() && results.iter().all(Result::is_ok),
                    std::sync::atomic::Ordering::Relaxed,
                );
                for (w, r) in waiters.into_iter().zip(results) {
                    let r = r.and_then(|_| flushed.clone());
                    let _ = w.send(r);
                }
            }
            Err(e) => {
                healthy.store(false, std::sync::atomic::Ordering::Relaxed);
                for w in waiters {
                    let _ = w.send(Err(io(&e)));
                }
            }
        }
    }
}

fn apply(trees: &[sled::Tree], batch: &Batch) -> Result<(), StoreError> {
    use sled::Transactional;
    if batch.ops.is_empty() {
        return Ok(());
    }
    trees
        .transaction(|tx| {
            for op in &batch.ops {
                match op {
                    Op::Put(t, k, v) => {
                        tx[t.index()].insert(k.as_slice(), v.as_slice())?;
                    }
                    Op::Delete(t, k) => {
                        tx[t.index()].remove(k.as_slice())?;
                    }
                }
            }
            Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
        })
        .map_err(|e| io(format!("{e:?}")))
}

impl Store for SledStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.trees[tree.index()]
            .get(key)
            .map_err(io)?
            .map(|v| v.to_vec()))
    }

    fn visit(&self, tree: Tree, f: Visitor<'_>) -> Result<(), StoreError> {
        for r in self.trees[tree.index()].iter() {
            let (k, v) = r.map_err(io)?;
            f(&k, &v)?;
        }
        Ok(())
    }

    fn commit(&self, batch: Batch) -> CommitFuture {
        let (w, r) = oneshot::channel();
        let sent = self.tx.send((batch, w));
        Box::pin(async move {
            sent.map_err(|_| StoreError::Closed)?;
            r.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "sipgw-store-{tag}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ))
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

    #[tokio::test]
    async fn corrupt_store_is_moved_aside() {
        let p = tmp("corrupt");
        std::fs::create_dir_all(&p).unwrap();
        // sled keeps its data in `db` and `conf`; garbage there cannot be opened.
        std::fs::write(p.join("conf"), b"\xff\xfe garbage").unwrap();
        std::fs::write(p.join("db"), vec![0xAAu8; 4096]).unwrap();
        let s = SledStore::open(&p).expect("opens a fresh store");
        assert!(s.scan(Tree::Registrations).unwrap().is_empty());
        let parent = p.parent().unwrap();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let moved = std::fs::read_dir(parent)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{name}.corrupt-"))
            });
        assert!(moved, "the corrupt store was moved aside");
        s.close().await.unwrap();
        let _ = std::fs::remove_dir_all(&p);
        for e in std::fs::read_dir(parent).unwrap().filter_map(|e| e.ok()) {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}.corrupt-"))
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}
