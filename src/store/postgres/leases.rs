//! The leases: which shards this node holds, at which epoch (the fence
//! every write is checked against), how they are taken and kept.

use super::{PgOptions, io, pg};
use crate::store::StoreError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio_postgres::Client;

/// The shards this node holds and the epoch it holds each at: the fence
/// every write is checked against.
#[derive(Debug, Default)]
pub struct Holdings {
    held: RwLock<HashMap<u32, i64>>,
}

impl Holdings {
    /// The epoch `shard` is held at, if held.
    pub fn epoch(&self, shard: u32) -> Option<i64> {
        self.held
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&shard)
            .copied()
    }

    /// Held shards, sorted.
    pub fn shards(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .held
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        v.sort_unstable();
        v
    }

    pub(super) fn set(&self, shard: u32, epoch: i64) {
        self.held
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(shard, epoch);
    }

    pub(super) fn drop_shards(&self, lost: &[u32]) {
        let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
        for s in lost {
            held.remove(s);
        }
    }

    pub(super) fn snapshot(&self) -> (Vec<i32>, Vec<i64>) {
        let held = self.held.read().unwrap_or_else(|p| p.into_inner());
        held.iter().map(|(s, e)| (*s as i32, *e)).unzip()
    }
}

/// Takes the leases of the wanted shards that are free, expired or this
/// node's own (a restart: the epoch rises, fencing the previous run).
pub(super) async fn acquire(
    c: &Client,
    opts: &PgOptions,
    holdings: &Holdings,
) -> Result<(), StoreError> {
    let wanted: Vec<i32> = match &opts.wanted {
        Some(w) => w.iter().map(|s| *s as i32).collect(),
        None => (0..opts.shards as i32).collect(),
    };
    let ttl = opts.lease_ttl.as_secs_f64();
    let rows = c
        .query(
            "INSERT INTO sipgw_leases (shard, holder, epoch, expires_at)
             SELECT s, $2, 1, now() + make_interval(secs => $3) FROM unnest($1::int4[]) AS s
             ON CONFLICT (shard) DO UPDATE
                SET holder = EXCLUDED.holder, epoch = sipgw_leases.epoch + 1,
                    expires_at = EXCLUDED.expires_at
                WHERE sipgw_leases.expires_at < now() OR sipgw_leases.holder = $2
             RETURNING shard, epoch",
            &[&wanted, &opts.node, &ttl],
        )
        .await
        .map_err(pg)?;
    for r in &rows {
        holdings.set(r.get::<_, i32>(0) as u32, r.get(1));
    }
    if rows.len() < wanted.len() {
        let others = c
            .query(
                "SELECT holder, count(*), max(expires_at)::text FROM sipgw_leases
                 WHERE shard = ANY($1) AND holder <> $2 AND expires_at >= now() GROUP BY holder",
                &[&wanted, &opts.node],
            )
            .await
            .map_err(pg)?;
        let who: Vec<String> = others
            .iter()
            .map(|r| {
                format!(
                    "{} holds {} until {}",
                    r.get::<_, String>(0),
                    r.get::<_, i64>(1),
                    r.get::<_, String>(2)
                )
            })
            .collect();
        if opts.wanted.is_none() {
            // One node serves everything: half a store is no store.
            return Err(io(format!(
                "shards held by another gateway: {}; is another gateway running on this database?",
                who.join(", ")
            )));
        }
        tracing::warn!(held_elsewhere = %who.join(", "), "some shards are held by other nodes");
    }
    Ok(())
}

/// Renews the held leases every third of their life; drops (and reports)
/// any that could not be renewed, and marks the store unhealthy while the
/// database cannot be reached.
pub(super) async fn renew(
    c: Client,
    opts: PgOptions,
    holdings: Arc<Holdings>,
    healthy: Arc<AtomicBool>,
    size: Arc<AtomicU64>,
) {
    let period = opts.lease_ttl / 3;
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    loop {
        tick.tick().await;
        let (shards, epochs) = holdings.snapshot();
        let ttl = opts.lease_ttl.as_secs_f64();
        let renewed = c
            .query(
                "UPDATE sipgw_leases l SET expires_at = now() + make_interval(secs => $4)
                 FROM unnest($1::int4[], $2::int8[]) AS h(shard, epoch)
                 WHERE l.shard = h.shard AND l.epoch = h.epoch AND l.holder = $3
                   AND l.expires_at >= now()
                 RETURNING l.shard",
                &[&shards, &epochs, &opts.node, &ttl],
            )
            .await;
        match renewed {
            Ok(rows) => {
                let kept: std::collections::HashSet<i32> = rows.iter().map(|r| r.get(0)).collect();
                let lost: Vec<u32> = shards
                    .iter()
                    .filter(|s| !kept.contains(s))
                    .map(|s| *s as u32)
                    .collect();
                if !lost.is_empty() {
                    tracing::error!(shards = ?lost, node = %opts.node,
                        "leases lost (expired or taken by another node): no longer writing them");
                    holdings.drop_shards(&lost);
                }
                healthy.store(true, Ordering::Release);
            }
            Err(e) => {
                tracing::error!(error = %pg(e), "lease renewal failed");
                healthy.store(false, Ordering::Release);
            }
        }
        if let Ok(row) = c
            .query_one("SELECT pg_total_relation_size('sipgw_records')::int8", &[])
            .await
        {
            size.store(row.get::<_, i64>(0) as u64, Ordering::Relaxed);
        }
    }
}
