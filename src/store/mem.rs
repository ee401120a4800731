//! An in-memory [`Store`]: same semantics (atomic batches, commit order),
//! no durability. For tests that run on tokio's paused clock, where a
//! blocking flush would let virtual time jump.

use super::{Batch, CommitFuture, Op, Store, StoreError, Tree, Visitor};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// One tree's records in key order.
type TreeRecords = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Default)]
pub struct MemStore {
    trees: Mutex<HashMap<Tree, TreeRecords>>,
}

impl Store for MemStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .trees
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&tree)
            .and_then(|t| t.get(key).cloned()))
    }

    fn visit(&self, tree: Tree, f: Visitor<'_>) -> Result<(), StoreError> {
        let trees = self.trees.lock().unwrap_or_else(|p| p.into_inner());
        for (k, v) in trees.get(&tree).into_iter().flatten() {
            f(k, v)?;
        }
        Ok(())
    }

    fn commit(&self, batch: Batch) -> CommitFuture {
        let mut trees = self.trees.lock().unwrap_or_else(|p| p.into_inner());
        for op in batch.ops {
            match op {
                Op::Put(t, k, v) => {
                    trees.entry(t).or_default().insert(k, v);
                }
                Op::Delete(t, k) => {
                    trees.entry(t).or_default().remove(&k);
                }
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
