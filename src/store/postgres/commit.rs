//! The committer: group commit of batches into one fenced transaction.

use super::leases::Holdings;
use super::{Sharder, Waiter, pg, tree_id};
use crate::store::{Batch, Op, StoreError, Tree};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;
use tokio_postgres::Client;

/// Batches taken into one transaction at most.
const GROUP_MAX: usize = 1024;

/// Records to write and records to delete, as `coalesce` leaves them.
type Final = (Vec<(Tree, Vec<u8>, Vec<u8>)>, Vec<(Tree, Vec<u8>)>);

/// The final state of each record a group of batches touches: later ops
/// win, as applying them one by one would leave it.
fn coalesce(batches: &[&Batch]) -> Final {
    let mut last: HashMap<(Tree, &[u8]), Option<&[u8]>> = HashMap::new();
    let mut order: Vec<(Tree, &[u8])> = Vec::new();
    for b in batches {
        for op in &b.ops {
            let (k, v) = match op {
                Op::Put(t, k, v) => ((*t, k.as_slice()), Some(v.as_slice())),
                Op::Delete(t, k) => ((*t, k.as_slice()), None),
            };
            if last.insert(k, v).is_none() {
                order.push(k);
            }
        }
    }
    let mut puts = Vec::new();
    let mut deletes = Vec::new();
    for k in order {
        match last[&k] {
            Some(v) => puts.push((k.0, k.1.to_vec(), v.to_vec())),
            None => deletes.push((k.0, k.1.to_vec())),
        }
    }
    (puts, deletes)
}

pub(super) async fn committer(
    mut c: Client,
    mut rx: mpsc::UnboundedReceiver<(Batch, Waiter)>,
    holdings: Arc<Holdings>,
    sharder: Sharder,
    node: String,
    healthy: Arc<AtomicBool>,
) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match rx.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        // A batch writing a shard this node does not hold fails alone,
        // before the database is asked.
        let mut taken = Vec::with_capacity(group.len());
        for (batch, waiter) in group {
            match unheld_shard(&batch, &sharder, &holdings) {
                Some(shard) => {
                    let _ = waiter.send(Err(StoreError::Fenced { shard }));
                }
                None => taken.push((batch, waiter)),
            }
        }
        if taken.is_empty() {
            continue;
        }
        let batches: Vec<&Batch> = taken.iter().map(|(b, _)| b).collect();
        let result = apply(&mut c, &batches, &sharder, &holdings, &node).await;
        match &result {
            Ok(()) => healthy.store(true, Ordering::Release),
            Err(StoreError::Fenced { .. }) => {}
            Err(e) => {
                tracing::error!(error = %e, batches = taken.len(), "group commit failed");
                healthy.store(false, Ordering::Release);
            }
        }
        for (_, waiter) in taken {
            let _ = waiter.send(result.clone());
        }
    }
}

fn unheld_shard(batch: &Batch, sharder: &Sharder, holdings: &Holdings) -> Option<u32> {
    batch.ops.iter().find_map(|op| match op {
        Op::Put(t, k, v) => {
            let s = sharder(*t, k, v);
            holdings.epoch(s).is_none().then_some(s)
        }
        Op::Delete(..) => None,
    })
}

/// One transaction: deletes (learning their shards), the fence check on
/// every shard touched, the upserts, commit.
async fn apply(
    c: &mut Client,
    batches: &[&Batch],
    sharder: &Sharder,
    holdings: &Holdings,
    node: &str,
) -> Result<(), StoreError> {
    let (puts, deletes) = coalesce(batches);
    let mut shards: Vec<i32> = Vec::new();
    let tx = c.transaction().await.map_err(pg)?;
    if !deletes.is_empty() {
        let trees: Vec<i16> = deletes.iter().map(|(t, _)| tree_id(*t)).collect();
        let keys: Vec<&[u8]> = deletes.iter().map(|(_, k)| k.as_slice()).collect();
        let rows = tx
            .query(
                "DELETE FROM sipgw_records r USING unnest($1::int2[], $2::bytea[]) AS d(tree, key)
                 WHERE r.tree = d.tree AND r.key = d.key RETURNING r.shard",
                &[&trees, &keys],
            )
            .await
            .map_err(pg)?;
        shards.extend(rows.iter().map(|r| r.get::<_, i32>(0)));
    }
    let mut p_trees = Vec::with_capacity(puts.len());
    let mut p_keys = Vec::with_capacity(puts.len());
    let mut p_shards = Vec::with_capacity(puts.len());
    let mut p_values = Vec::with_capacity(puts.len());
    for (t, k, v) in &puts {
        let s = sharder(*t, k, v) as i32;
        p_trees.push(tree_id(*t));
        p_keys.push(k.as_slice());
        p_shards.push(s);
        p_values.push(v.as_slice());
    }
    shards.extend(&p_shards);
    shards.sort_unstable();
    shards.dedup();
    let mut epochs = Vec::with_capacity(shards.len());
    for s in &shards {
        match holdings.epoch(*s as u32) {
            Some(e) => epochs.push(e),
            // A delete of a record of a shard this node does not hold.
            None => return Err(StoreError::Fenced { shard: *s as u32 }),
        }
    }
    // RFC-free but essential: the fence (module doc).
    let fenced = tx
        .query(
            "SELECT l.shard FROM sipgw_leases l
             JOIN unnest($1::int4[], $2::int8[]) AS h(shard, epoch)
               ON l.shard = h.shard AND l.epoch = h.epoch
             WHERE l.holder = $3 AND l.expires_at > clock_timestamp()
             FOR SHARE OF l",
            &[&shards, &epochs, &node],
        )
        .await
        .map_err(pg)?;
    if fenced.len() != shards.len() {
        let ok: std::collections::HashSet<i32> = fenced.iter().map(|r| r.get(0)).collect();
        let lost: Vec<u32> = shards
            .iter()
            .filter(|s| !ok.contains(s))
            .map(|s| *s as u32)
            .collect();
        tracing::error!(shards = ?lost, "write refused: the lease is no longer this node's");
        holdings.drop_shards(&lost);
        return Err(StoreError::Fenced { shard: lost[0] });
    }
    if !puts.is_empty() {
        // A record never changes shard (its presentity is part of what it
        // is); a key that exists under another shard is another node's
        // record, never overwritten (the row is then not counted).
        let written = tx
            .execute(
                "INSERT INTO sipgw_records (tree, key, shard, value)
                 SELECT * FROM unnest($1::int2[], $2::bytea[], $3::int4[], $4::bytea[])
                 ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value
                 WHERE sipgw_records.shard = EXCLUDED.shard",
                &[&p_trees, &p_keys, &p_shards, &p_values],
            )
            .await
            .map_err(pg)?;
        if written != puts.len() as u64 {
            return Err(StoreError::Io(format!(
                "{} of {} records exist under another shard: not overwritten",
                puts.len() as u64 - written,
                puts.len()
            )));
        }
    }
    tx.commit().await.map_err(pg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_ops_win_in_a_group() {
        let mut a = Batch::default();
        a.put(Tree::Dialogs, b"k".to_vec(), b"1".to_vec());
        a.delete(Tree::Dialogs, b"gone".to_vec());
        let mut b = Batch::default();
        b.delete(Tree::Dialogs, b"k".to_vec());
        b.put(Tree::Dialogs, b"gone".to_vec(), b"2".to_vec());
        b.put(Tree::Policies, b"k".to_vec(), b"3".to_vec());
        let (puts, deletes) = coalesce(&[&a, &b]);
        assert_eq!(
            puts,
            vec![
                (Tree::Dialogs, b"gone".to_vec(), b"2".to_vec()),
                (Tree::Policies, b"k".to_vec(), b"3".to_vec())
            ]
        );
        assert_eq!(deletes, vec![(Tree::Dialogs, b"k".to_vec())]);
    }
}
