//! The committer: group commit of batches into one fenced transaction.

use super::leases::Holdings;
use super::{Sharder, Waiter, pg, tree_id};
use crate::store::{Batch, Op, StoreError, Tree};
use futures_util::future::try_join4;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

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
    c: Client,
    url: String,
    mut rx: mpsc::UnboundedReceiver<(Batch, Waiter)>,
    holdings: Arc<Holdings>,
    sharder: Sharder,
    node: String,
    healthy: Arc<AtomicBool>,
) {
    let mut conn = Statements::prepare(&c).await.map(|st| (c, st));
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
        // The server restarted or the network dropped the connection: a
        // new one (and its statements) before this group, never a busy
        // loop (only a group waiting makes it try).
        if conn.as_ref().map_or(true, |(c, _)| c.is_closed()) {
            conn = reopen(&url).await;
        }
        let batches: Vec<&Batch> = taken.iter().map(|(b, _)| b).collect();
        let result = match &mut conn {
            Ok((c, st)) => apply(c, st, &batches, &sharder, &holdings, &node).await,
            Err(e) => Err(e.clone()),
        };
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

/// A new writer connection with its statements prepared.
async fn reopen(url: &str) -> Result<(Client, Statements), StoreError> {
    let c = super::connect(url).await?;
    let st = Statements::prepare(&c).await?;
    tracing::info!("reconnected to PostgreSQL (writer)");
    Ok((c, st))
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

/// The statements of a group commit, prepared once on the writer's
/// connection: an unprepared statement costs tokio-postgres a Parse round
/// trip of its own each time.
pub(super) struct Statements {
    fence: Statement,
    delete: Statement,
    upsert: Statement,
}

impl Statements {
    pub(super) async fn prepare(c: &Client) -> Result<Self, StoreError> {
        Ok(Statements {
            fence: c.prepare(FENCE).await.map_err(pg)?,
            delete: c.prepare(DELETE).await.map_err(pg)?,
            upsert: c.prepare(UPSERT).await.map_err(pg)?,
        })
    }
}

/// The fence (module doc of `leases`): of the shards a transaction writes
/// — those of its upserts ($3) and those of the records it deletes, read
/// from the rows before the DELETE runs — the ones this node does not hold
/// at the epoch it took them with ($1, $2), by an unexpired lease. The
/// lease rows it does hold are locked `FOR SHARE` until the transaction
/// ends, so no other node can take them meanwhile. `MATERIALIZED` keeps
/// the locking query a query of its own.
const FENCE: &str = "WITH wanted AS (
       SELECT unnest($3::int4[]) AS shard
       UNION
       SELECT r.shard FROM sipgw_records r
         JOIN unnest($4::int2[], $5::bytea[]) AS d(tree, key) ON r.tree = d.tree AND r.key = d.key),
     held AS MATERIALIZED (
       SELECT l.shard FROM sipgw_leases l
         JOIN unnest($1::int4[], $2::int8[]) AS h(shard, epoch)
           ON l.shard = h.shard AND l.epoch = h.epoch
        WHERE l.shard IN (SELECT shard FROM wanted)
          AND l.holder = $6 AND l.expires_at > clock_timestamp()
          FOR SHARE OF l)
     SELECT shard FROM wanted WHERE shard NOT IN (SELECT shard FROM held)";

const DELETE: &str =
    "DELETE FROM sipgw_records r USING unnest($1::int2[], $2::bytea[]) AS d(tree, key)
      WHERE r.tree = d.tree AND r.key = d.key";

/// A record never changes shard (its presentity is part of what it is); a
/// key that exists under another shard is another node's record, never
/// overwritten (the row is then not counted).
const UPSERT: &str = "INSERT INTO sipgw_records (tree, key, shard, value)
      SELECT * FROM unnest($1::int2[], $2::bytea[], $3::int4[], $4::bytea[])
      ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value
      WHERE sipgw_records.shard = EXCLUDED.shard";

/// One transaction in two round trips: BEGIN, the fence, the deletes and
/// the upserts are pipelined (tokio-postgres sends each request when its
/// future is first polled, and `try_join` polls them in order); then
/// COMMIT if the fence found every shard held and the upserts all
/// applied, ROLLBACK otherwise. Statements run in the order sent, so the
/// deletes and upserts run under the locks the fence took.
async fn apply(
    c: &mut Client,
    st: &Statements,
    batches: &[&Batch],
    sharder: &Sharder,
    holdings: &Holdings,
    node: &str,
) -> Result<(), StoreError> {
    let (puts, deletes) = coalesce(batches);
    let d_trees: Vec<i16> = deletes.iter().map(|(t, _)| tree_id(*t)).collect();
    let d_keys: Vec<&[u8]> = deletes.iter().map(|(_, k)| k.as_slice()).collect();
    let mut p_trees = Vec::with_capacity(puts.len());
    let mut p_keys = Vec::with_capacity(puts.len());
    let mut p_shards = Vec::with_capacity(puts.len());
    let mut p_values = Vec::with_capacity(puts.len());
    for (t, k, v) in &puts {
        p_trees.push(tree_id(*t));
        p_keys.push(k.as_slice());
        p_shards.push(sharder(*t, k, v) as i32);
        p_values.push(v.as_slice());
    }
    let mut put_shards = p_shards.clone();
    put_shards.sort_unstable();
    put_shards.dedup();
    let (held, epochs) = holdings.epochs();
    let fence_params: [&(dyn ToSql + Sync); 6] =
        [&held, &epochs, &put_shards, &d_trees, &d_keys, &node];
    let begin = c.batch_execute("BEGIN");
    let fence = c.query(&st.fence, &fence_params);
    let delete = async {
        if d_keys.is_empty() {
            return Ok(0);
        }
        c.execute(&st.delete, &[&d_trees, &d_keys]).await
    };
    let upsert = async {
        if p_keys.is_empty() {
            return Ok(0);
        }
        c.execute(&st.upsert, &[&p_trees, &p_keys, &p_shards, &p_values])
            .await
    };
    let sent = try_join4(begin, fence, delete, upsert).await;
    let (missing, written) = match sent {
        Ok(((), missing, _, written)) => (missing, written),
        Err(e) => {
            let _ = c.batch_execute("ROLLBACK").await;
            return Err(pg(e));
        }
    };
    if !missing.is_empty() {
        let _ = c.batch_execute("ROLLBACK").await;
        let mut lost: Vec<u32> = missing.iter().map(|r| r.get::<_, i32>(0) as u32).collect();
        lost.sort_unstable();
        tracing::error!(shards = ?lost, "write refused: the lease is no longer this node's");
        holdings.drop_shards(&lost);
        return Err(StoreError::Fenced { shard: lost[0] });
    }
    if written != puts.len() as u64 {
        let _ = c.batch_execute("ROLLBACK").await;
        return Err(StoreError::Io(format!(
            "{} of {} records exist under another shard: not overwritten",
            puts.len() as u64 - written,
            puts.len()
        )));
    }
    c.batch_execute("COMMIT").await.map_err(pg)
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
