//! Persistence (design §6): the `Store` trait the presence agent and the
//! gateway write through, and its sled implementation (`sled.rs`, the only
//! file that names sled).
//!
//! Acknowledged means durable: [`Store::commit`] resolves only after the
//! batch is applied atomically and flushed. Many concurrent commits share
//! one flush (group commit), so throughput does not pay one fsync per
//! request.

pub mod codec;
mod mem;
mod sled;

pub use self::mem::MemStore;
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
    #[error("corrupt record in {tree}: {reason}")]
    Corrupt { tree: &'static str, reason: String },
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
