//! Persistence (design §6): the `Store` trait the presence agent and the
//! gateway write through, and its sled implementation (`sled.rs`, the only
//! file that names sled).
//!
//! Acknowledged means durable: [`Store::commit`] resolves only after the
//! batch is applied atomically and flushed. Many concurrent commits share
//! one flush (group commit), so throughput does not pay one fsync per
//! request.
//!
//! A store that cannot be trusted at open is never served from (design §6,
//! issue 17): a damaged one is moved aside and the start refused unless the
//! operator allows an empty store, one written by a newer version and a
//! path that is not a store are left untouched and refused
//! ([`OpenError`], `manifest.rs`).

pub mod codec;
mod manifest;
mod mem;
pub mod postgres;
mod sled;

pub use self::manifest::{FORMAT, MANIFEST};
pub use self::mem::MemStore;
pub use self::postgres::{Holdings, Peer, PgOptions, PgStore, Sharder};
pub use self::sled::SledStore;

use std::future::Future;
use std::pin::Pin;

/// The record kinds, one keyspace each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tree {
    Registrations,
    Publications,
    Subscriptions,
    Dialogs,
    Policies,
    /// Grants to publish for another AOR (issue 14; `presence::records::
    /// PublisherRecord`). A tree of its own, not a kind of policy record:
    /// being allowed to see a presentity is no right to speak for it.
    Publishers,
    Deliveries,
    Meta,
}

impl Tree {
    pub const ALL: [Tree; 8] = [
        Tree::Registrations,
        Tree::Publications,
        Tree::Subscriptions,
        Tree::Dialogs,
        Tree::Policies,
        Tree::Publishers,
        Tree::Deliveries,
        Tree::Meta,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tree::Registrations => "registrations",
            Tree::Publications => "publications",
            Tree::Subscriptions => "subscriptions",
            Tree::Dialogs => "dialogs",
            Tree::Policies => "policies",
            Tree::Publishers => "publishers",
            Tree::Deliveries => "deliveries",
            Tree::Meta => "meta",
        }
    }

    fn index(self) -> usize {
        Tree::ALL
            .iter()
            .position(|t| *t == self)
            .expect("every tree is in ALL")
    }
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(Tree, Vec<u8>, Vec<u8>),
    Delete(Tree, Vec<u8>),
}

/// Changes applied together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn put(&mut self, tree: Tree, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put(tree, key.into(), value.into()));
    }

    pub fn delete(&mut self, tree: Tree, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete(tree, key.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn append(&mut self, mut other: Batch) {
        self.ops.append(&mut other.ops);
    }
}

/// Why the store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O error: {0}")]
    Io(String),
    #[error("store is shut down")]
    Closed,
    /// A write failed earlier and sled has not been reopened yet (issue
    /// 17): nothing is written until it has, and this refusal is at once.
    #[error("store not writable: {0}")]
    Unwritable(String),
    #[error("corrupt record in {tree}: {reason}")]
    Corrupt { tree: &'static str, reason: String },
    /// A record in a version this build does not know (a newer one wrote
    /// it): not corrupt, and not to be removed.
    #[error("record in {tree} has version 0x{version:02x}, newer than this build reads")]
    Newer { tree: &'static str, version: u8 },
    /// The write touches a shard whose lease this node does not hold (any
    /// more): another node owns those records (issue 18, `postgres.rs`).
    #[error("not written: shard {shard} is not held by this node")]
    Fenced { shard: u32 },
}

/// How [`SledStore::open_with`] opens a store.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// sled's page cache (`[store] cache_capacity_bytes`).
    pub cache_bytes: u64,
    /// `[store] start_after_corruption`: once a damaged store (or damaged
    /// records) has been moved aside, go on with what is left (an empty
    /// store) instead of refusing. Off by default: an empty gateway drops
    /// every subscription, which only the operator may decide.
    pub start_after_corruption: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            cache_bytes: self::sled::DEFAULT_CACHE_BYTES,
            start_after_corruption: false,
        }
    }
}

/// Why a store was not opened. Each is one line naming the path, the fault
/// and what the operator can do; [`OpenError::exit_code`] is the process's
/// exit status for it (docs/operations.md).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The store was damaged; it now lies at `aside`, bytes unchanged.
    #[error(
        "store {path}: damaged ({fault}); moved aside to {aside}; refusing to start with an empty store: restore a backup (sip-cpim-gateway import) or set [store] start_after_corruption = true"
    )]
    Damaged {
        path: String,
        fault: String,
        aside: String,
    },
    /// The store is missing and a damaged one was moved aside beside it at
    /// an earlier start: starting now would silently start empty.
    #[error(
        "store {path}: missing, and {aside} is a damaged store moved aside at an earlier start; refusing to start with an empty store: restore a backup (sip-cpim-gateway import) or set [store] start_after_corruption = true"
    )]
    MovedAside { path: String, aside: String },
    /// Records that do not decode were moved out of the store into `aside`
    /// (one JSON object a line); the rest of the store is intact.
    #[error(
        "store {path}: {count} damaged record(s) ({first}); moved aside to {aside}; refusing to start without them: restore a backup (sip-cpim-gateway import) or set [store] start_after_corruption = true"
    )]
    DamagedRecords {
        path: String,
        count: usize,
        first: String,
        aside: String,
    },
    /// Written by a newer version: left exactly as it is.
    #[error(
        "store {path}: written by a newer version ({found}; this version reads store format {FORMAT} and record versions up to 0x{:02x}); left untouched: run the newer version, or restore a backup exported for this one",
        codec::LATEST
    )]
    Newer { path: String, found: String },
    /// Not a store of this gateway: left exactly as it is.
    #[error(
        "store {path}: not a sip-cpim-gateway store ({why}); left untouched: check [store] path"
    )]
    Foreign { path: String, why: String },
    /// Not a fault of the store (a lock held by a running gateway, a
    /// permission, a full disk).
    #[error("store {path}: {message}")]
    Io { path: String, message: String },
}

impl OpenError {
    /// The exit status of a start refused for this reason.
    pub fn exit_code(&self) -> u8 {
        match self {
            OpenError::Damaged { .. }
            | OpenError::MovedAside { .. }
            | OpenError::DamagedRecords { .. } => 3,
            OpenError::Newer { .. } => 4,
            OpenError::Foreign { .. } => 5,
            OpenError::Io { .. } => 1,
        }
    }
}

/// What [`Store::visit`] calls with each key and value.
pub type Visitor<'a> = &'a mut dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError>;

/// Key/value pairs of one tree, in key order.
pub type Records = Vec<(Vec<u8>, Vec<u8>)>;

pub type CommitFuture = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// Durable keyed records.
pub trait Store: Send + Sync + 'static {
    /// One record.
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Calls `f` with every record of a tree, in key order, without
    /// collecting them (startup reloads 100,000s of records; holding them
    /// all at once would double the peak and leave it in the allocator).
    /// Stops at the first error `f` returns.
    fn visit(&self, tree: Tree, f: Visitor<'_>) -> Result<(), StoreError>;
    /// Every record of a tree, in key order.
    fn scan(&self, tree: Tree) -> Result<Records, StoreError> {
        let mut out = Vec::new();
        self.visit(tree, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(())
        })?;
        Ok(out)
    }
    /// Applies `batch` atomically; resolves once it is durable. Batches are
    /// applied in the order `commit` was called.
    fn commit(&self, batch: Batch) -> CommitFuture;
    /// Flushes everything written so far (shutdown).
    fn flush(&self) -> Result<(), StoreError>;
}

/// The store a running gateway is on (`[store] backend`): the embedded
/// sled store, or PostgreSQL (issue 18).
pub enum Backend {
    Sled(SledStore),
    Postgres(std::sync::Arc<PgStore>),
}

impl Backend {
    /// The last commit succeeded (`/readyz`).
    pub fn healthy(&self) -> bool {
        match self {
            Backend::Sled(s) => s.healthy(),
            Backend::Postgres(s) => s.healthy(),
        }
    }

    /// Bytes the records take on disk (the metric `sipgw_store_size_bytes`).
    pub fn size_on_disk(&self) -> u64 {
        match self {
            Backend::Sled(s) => s.size_on_disk(),
            Backend::Postgres(s) => s.size_on_disk(),
        }
    }

    /// Clean stop.
    pub async fn close(&self) -> Result<(), StoreError> {
        match self {
            Backend::Sled(s) => s.close().await,
            Backend::Postgres(s) => s.close().await,
        }
    }
}

impl Store for Backend {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Backend::Sled(s) => s.get(tree, key),
            Backend::Postgres(s) => s.get(tree, key),
        }
    }

    fn visit(&self, tree: Tree, f: Visitor<'_>) -> Result<(), StoreError> {
        match self {
            Backend::Sled(s) => s.visit(tree, f),
            Backend::Postgres(s) => s.visit(tree, f),
        }
    }

    fn commit(&self, batch: Batch) -> CommitFuture {
        match self {
            Backend::Sled(s) => s.commit(batch),
            Backend::Postgres(s) => s.commit(batch),
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        match self {
            Backend::Sled(s) => s.flush(),
            Backend::Postgres(s) => s.flush(),
        }
    }
}
