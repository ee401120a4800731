//! The PostgreSQL implementation of [`Store`] (issue 18): the backend of
//! a gateway that shares its state with other nodes, or that an operator
//! wants on the database they already run and back up.
//!
//! Invariants:
//! - **Acknowledged means durable**: a batch's future resolves `Ok` only
//!   after the PostgreSQL transaction that applied it committed (the
//!   server's `synchronous_commit`, on by default, makes that a flushed
//!   WAL record). Batches queued together share one transaction (group
//!   commit); a batch is never split across two.
//! - **Ownership, not sharing**: every record belongs to a shard (a stable
//!   hash of the presentity it concerns, `cluster::shard`), and this node
//!   writes only shards whose lease it holds. Every transaction re-reads
//!   the leases of the shards it touches `FOR SHARE` and aborts unless each
//!   is still this node's, at the epoch this node acquired it with, and not
//!   expired by the database's clock: a node that was partitioned away and
//!   came back stale cannot overwrite or delete what the new holder wrote
//!   (the fault OpenSIPS users hit in #1848 and #2960). The `FOR SHARE`
//!   lock makes a takeover wait for a transaction that passed the check,
//!   so the new holder reads everything committed under the old epoch.
//! - Only the committer task writes records, in `commit` call order.
//! - The connections run on a runtime thread of their own, so no store
//!   call depends on the caller's runtime (the agents load through the
//!   synchronous [`Store::visit`] during startup, from inside a runtime).

mod commit;
mod leases;

use self::commit::committer;
pub use self::leases::{Holdings, Peer};
use self::leases::{acquire, leave, renew};
use super::{Batch, CommitFuture, Store, StoreError, Tree, Visitor};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, NoTls};

/// The shard of a record to be written: `(tree, key, value) → shard`.
/// Stable across nodes and builds (every node must agree).
pub type Sharder = Arc<dyn Fn(Tree, &[u8], &[u8]) -> u32 + Send + Sync>;

/// How a [`PgStore`] is opened (`[store]` and `[cluster]` in
/// `gateway.toml`).
#[derive(Clone)]
pub struct PgOptions {
    /// A libpq-style connection string or `postgres://` URL.
    pub url: String,
    /// This node's name: the holder written into the leases.
    pub node: String,
    /// How many shards the presentities are spread over; the same on every
    /// node, fixed for the life of the database.
    pub shards: u32,
    /// How long a lease lasts without renewal (renewed every third of it).
    pub lease_ttl: Duration,
    /// The nodes of the cluster, in the same order on every node
    /// (`[cluster] members`); empty: this node alone takes every shard.
    pub members: Vec<String>,
    pub sharder: Sharder,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &redact(&self.url))
            .field("node", &self.node)
            .field("shards", &self.shards)
            .field("lease_ttl", &self.lease_ttl)
            .finish_non_exhaustive()
    }
}

/// The URL with any password replaced, for logs and errors.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((cred, host)) => match cred.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => url.to_owned(),
            },
            None => url.to_owned(),
        },
        None => url
            .split_whitespace()
            .map(|kv| {
                if kv.starts_with("password=") {
                    "password=***"
                } else {
                    kv
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// The schema, created if absent. Records are keyed as the other backends
/// key them (tree, key); `shard` says whose lease fences them.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sipgw_records (
    tree smallint NOT NULL,
    key bytea NOT NULL,
    shard integer NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (tree, key)
);
CREATE INDEX IF NOT EXISTS sipgw_records_by_shard ON sipgw_records (shard, tree);
CREATE TABLE IF NOT EXISTS sipgw_leases (
    shard integer PRIMARY KEY,
    holder text NOT NULL,
    epoch bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS sipgw_meta (
    name text PRIMARY KEY,
    value text NOT NULL
);
";

/// The schema version this build writes; a database marked with a higher
/// one was written by a newer build and is refused.
const SCHEMA_VERSION: i64 = 1;

type Waiter = oneshot::Sender<Result<(), StoreError>>;
type Chunk = Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError>;

enum Job {
    Get {
        tree: Tree,
        key: Vec<u8>,
        reply: std::sync::mpsc::SyncSender<Result<Option<Vec<u8>>, StoreError>>,
    },
    Visit {
        tree: Tree,
        shards: Vec<i32>,
        out: std::sync::mpsc::SyncSender<Chunk>,
    },
    Close {
        done: std::sync::mpsc::SyncSender<()>,
    },
}

/// Records streamed to a visitor at a time.
const VISIT_CHUNK: usize = 1024;

pub struct PgStore {
    commits: mpsc::UnboundedSender<(Batch, Waiter)>,
    jobs: mpsc::UnboundedSender<Job>,
    holdings: Arc<Holdings>,
    /// The last commit and the last lease renewal succeeded (`/readyz`).
    healthy: Arc<AtomicBool>,
    /// `pg_total_relation_size` of the records, refreshed with the leases.
    size: Arc<AtomicU64>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    node: String,
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

/// A tokio-postgres error with the server's message, not just "db error".
fn pg(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Io(format!("postgres: {} ({})", db.message(), db.code().code())),
        None => StoreError::Io(format!("postgres: {e}")),
    }
}

fn tree_id(t: Tree) -> i16 {
    t.index() as i16
}

async fn connect(url: &str) -> Result<Client, StoreError> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| io(format!("cannot connect to {}: {}", redact(url), pg(e))))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::error!(error = %e, "postgres connection closed");
        }
    });
    Ok(client)
}

impl PgStore {
    /// Connects, creates the schema if absent, takes the leases of
    /// `opts.wanted` (all shards when `None`) and starts the committer and
    /// the lease renewal. Fails if a wanted shard is held by another node
    /// whose lease has not expired (two gateways on one database with the
    /// same shards would otherwise both write).
    pub fn open(opts: PgOptions) -> Result<PgStore, StoreError> {
        if opts.shards == 0 {
            return Err(io("[cluster] shards must be at least 1"));
        }
        let holdings = Arc::new(Holdings::default());
        let healthy = Arc::new(AtomicBool::new(true));
        let size = Arc::new(AtomicU64::new(0));
        let (commits_tx, commits_rx) = mpsc::unbounded_channel();
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let thread = {
            let holdings = holdings.clone();
            let healthy = healthy.clone();
            let size = size.clone();
            let opts = opts.clone();
            std::thread::Builder::new()
                .name("store-postgres".into())
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = ready_tx.send(Err(io(e)));
                            return;
                        }
                    };
                    rt.block_on(run(
                        opts, holdings, healthy, size, commits_rx, jobs_rx, ready_tx,
                    ));
                })
                .map_err(io)?
        };
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(io("the store thread ended while opening"));
            }
        }
        Ok(PgStore {
            commits: commits_tx,
            jobs: jobs_tx,
            holdings,
            healthy,
            size,
            thread: Mutex::new(Some(thread)),
            node: opts.node,
        })
    }

    /// The shards held and their epochs.
    pub fn holdings(&self) -> &Arc<Holdings> {
        &self.holdings
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// The records' size in the database (table, index, TOAST), as last
    /// measured.
    pub fn size_on_disk(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// Clean stop: waits for queued commits, gives the leases back (so a
    /// successor need not wait for them to expire) and closes the
    /// connections. Later commits fail with [`StoreError::Closed`].
    pub async fn close(&self) -> Result<(), StoreError> {
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        if self.jobs.send(Job::Close { done: done_tx }).is_ok() {
            let _ = tokio::task::spawn_blocking(move || done_rx.recv()).await;
        }
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        Ok(())
    }

    fn visit_shards(&self, tree: Tree, shards: Vec<i32>, f: Visitor<'_>) -> Result<(), StoreError> {
        let (out, chunks) = std::sync::mpsc::sync_channel(4);
        self.jobs
            .send(Job::Visit { tree, shards, out })
            .map_err(|_| StoreError::Closed)?;
        for chunk in chunks {
            for (k, v) in chunk? {
                f(&k, &v)?;
            }
        }
        Ok(())
    }

    /// Calls `f` with every record of `tree` in `shards` (a takeover loads
    /// the shards it took).
    pub fn visit_in(&self, tree: Tree, shards: &[u32], f: Visitor<'_>) -> Result<(), StoreError> {
        self.visit_shards(tree, shards.iter().map(|s| *s as i32).collect(), f)
    }
}

impl Store for PgStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let (reply, rx) = std::sync::mpsc::sync_channel(1);
        self.jobs
            .send(Job::Get {
                tree,
                key: key.to_vec(),
                reply,
            })
            .map_err(|_| StoreError::Closed)?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// The records of the shards this node holds: what it serves.
    fn visit(&self, tree: Tree, f: Visitor<'_>) -> Result<(), StoreError> {
        let (shards, _) = self.holdings.snapshot();
        self.visit_shards(tree, shards, f)
    }

    fn commit(&self, batch: Batch) -> CommitFuture {
        let (tx, rx) = oneshot::channel();
        let sent = self.commits.send((batch, tx)).is_ok();
        Box::pin(async move {
            if !sent {
                return Err(StoreError::Closed);
            }
            rx.await.unwrap_or(Err(StoreError::Closed))
        })
    }

    /// Every acknowledged commit is already durable in PostgreSQL.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The store thread: connects, prepares, then serves commits, reads and
/// lease renewal until closed.
#[allow(clippy::too_many_arguments)]
async fn run(
    opts: PgOptions,
    holdings: Arc<Holdings>,
    healthy: Arc<AtomicBool>,
    size: Arc<AtomicU64>,
    commits: mpsc::UnboundedReceiver<(Batch, Waiter)>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    ready: std::sync::mpsc::SyncSender<Result<(), StoreError>>,
) {
    let opened = async {
        let writer = connect(&opts.url).await?;
        let reader = connect(&opts.url).await?;
        let leaser = connect(&opts.url).await?;
        prepare_schema(&writer).await?;
        acquire(&leaser, &opts, &holdings).await?;
        Ok::<_, StoreError>((writer, reader, leaser))
    }
    .await;
    let (writer, mut reader, leaser) = match opened {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let committer = tokio::spawn(committer(
        writer,
        opts.url.clone(),
        commits,
        holdings.clone(),
        opts.sharder.clone(),
        opts.node.clone(),
        healthy.clone(),
    ));
    let renewal = tokio::spawn(renew(
        leaser,
        opts.clone(),
        holdings.clone(),
        healthy.clone(),
        size,
    ));
    while let Some(job) = jobs.recv().await {
        // Reads go on a new connection once the old one is gone (a server
        // restart); the failed read itself was answered with its error.
        if reader.is_closed() {
            match connect(&opts.url).await {
                Ok(c) => reader = c,
                Err(e) => tracing::warn!(error = %e, "cannot reconnect the reader"),
            }
        }
        match job {
            Job::Get { tree, key, reply } => {
                let r = reader
                    .query_opt(
                        "SELECT value FROM sipgw_records WHERE tree = $1 AND key = $2",
                        &[&tree_id(tree), &key],
                    )
                    .await
                    .map(|row| row.map(|r| r.get::<_, Vec<u8>>(0)))
                    .map_err(pg);
                let _ = reply.send(r);
            }
            Job::Visit { tree, shards, out } => visit(&reader, tree, shards, out).await,
            Job::Close { done } => {
                renewal.abort();
                // Commits still queued fail with `Closed` (the server has
                // drained its transactions before it closes the store).
                committer.abort();
                if let Ok(c) = connect(&opts.url).await {
                    leave(&c, &opts, &holdings).await;
                } else {
                    holdings.drop_shards(&holdings.shards());
                }
                let _ = done.send(());
                return;
            }
        }
    }
}

async fn prepare_schema(c: &Client) -> Result<(), StoreError> {
    // Two nodes starting at once both run this: serialise them on an
    // advisory lock (transaction-scoped) instead of racing on CREATE.
    c.batch_execute("BEGIN; SELECT pg_advisory_xact_lock(7248003856);")
        .await
        .map_err(pg)?;
    c.batch_execute(SCHEMA).await.map_err(pg)?;
    let found: Option<String> = c
        .query_opt("SELECT value FROM sipgw_meta WHERE name = 'schema'", &[])
        .await
        .map_err(pg)?
        .map(|r| r.get(0));
    match found.as_deref().map(str::parse::<i64>) {
        None => {
            c.execute(
                "INSERT INTO sipgw_meta (name, value) VALUES ('schema', $1)",
                &[&SCHEMA_VERSION.to_string()],
            )
            .await
            .map_err(pg)?;
        }
        Some(Ok(v)) if v <= SCHEMA_VERSION => {}
        Some(v) => {
            let _ = c.batch_execute("ROLLBACK").await;
            return Err(io(format!(
                "the database holds schema {v:?}, written by a newer version (this one writes {SCHEMA_VERSION}); left untouched"
            )));
        }
    }
    c.batch_execute("COMMIT").await.map_err(pg)
}

async fn visit(c: &Client, tree: Tree, shards: Vec<i32>, out: std::sync::mpsc::SyncSender<Chunk>) {
    use futures_util::TryStreamExt;
    let tid = tree_id(tree);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&tid, &shards];
    let rows = c
        .query_raw(
            "SELECT key, value FROM sipgw_records WHERE tree = $1 AND shard = ANY($2) ORDER BY key",
            params,
        )
        .await;
    let rows = match rows {
        Ok(r) => r,
        Err(e) => {
            hand_over_err(&out, pg(e)).await;
            return;
        }
    };
    futures_util::pin_mut!(rows);
    let mut chunk = Vec::with_capacity(VISIT_CHUNK);
    loop {
        match rows.try_next().await {
            Ok(Some(r)) => {
                chunk.push((r.get::<_, Vec<u8>>(0), r.get::<_, Vec<u8>>(1)));
                if chunk.len() == VISIT_CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(VISIT_CHUNK));
                    if !hand_over(&out, full).await {
                        return;
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                hand_over_err(&out, pg(e)).await;
                return;
            }
        }
    }
    if !chunk.is_empty() {
        hand_over(&out, chunk).await;
    }
}

/// Gives a chunk to the visitor, which runs on the caller's thread, waiting
/// while it is behind (a bounded channel: a few chunks in memory, never a
/// whole tree) without blocking this thread's commits and renewals.
async fn hand_over(
    out: &std::sync::mpsc::SyncSender<Chunk>,
    chunk: Vec<(Vec<u8>, Vec<u8>)>,
) -> bool {
    let mut item = Ok(chunk);
    loop {
        match out.try_send(item) {
            Ok(()) => return true,
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return false,
            Err(std::sync::mpsc::TrySendError::Full(back)) => {
                item = back;
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    }
}

async fn hand_over_err(out: &std::sync::mpsc::SyncSender<Chunk>, e: StoreError) {
    let mut item = Err(e);
    loop {
        match out.try_send(item) {
            Err(std::sync::mpsc::TrySendError::Full(back)) => {
                item = back;
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://gw:secret@db:5432/presence"),
            "postgres://gw:***@db:5432/presence"
        );
        assert_eq!(
            redact("host=db user=gw password=secret dbname=p"),
            "host=db user=gw password=*** dbname=p"
        );
        assert_eq!(redact("postgres://db/p"), "postgres://db/p");
    }
}
