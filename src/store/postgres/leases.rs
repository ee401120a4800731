//! The leases: which shards this node holds, at which epoch (the fence
//! every write is checked against), how they are taken, kept, handed back
//! and taken over.
//!
//! With `[cluster] members` (several nodes), shard `s` prefers
//! `members[s mod N]` and falls back along the list from there, so a dead
//! node's shards spread over the survivors. A node takes a shard when no
//! live lease holds it and it is the first live member in the shard's
//! order; it hands a shard back when the shard's preferred member is live
//! again. Liveness is a heartbeat row per node (`sipgw_nodes`). Every
//! decision reads the tables; `LISTEN sipgw_leases` only wakes the loop
//! early (a lost notification delays a takeover by one tick, never loses
//! it).

use super::{PgOptions, io, pg};
use crate::store::StoreError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// The shards this node holds and the epoch it holds each at: the fence
/// every write is checked against.
#[derive(Debug)]
pub struct Holdings {
    held: RwLock<HashMap<u32, i64>>,
    /// The live holder of each shard as last read (this node included).
    owners: RwLock<Vec<Option<Arc<str>>>>,
    /// Bumped whenever `held` changes: the agents load or drop shards.
    changed: tokio::sync::watch::Sender<u64>,
    /// Where each live node takes SIP and HTTP, as they advertise in their
    /// heartbeat; this node's own under its name.
    peers: RwLock<HashMap<Arc<str>, Peer>>,
    /// What this node advertises.
    me: RwLock<Peer>,
    /// What this node's heartbeat last wrote: a change is announced
    /// (`NOTIFY`), so the others re-read it at once rather than a tick
    /// later, when it could not yet be forwarded to.
    announced: RwLock<Peer>,
    /// Wakes the lease loop for a round now (a notification from another
    /// node, or this node's addresses just became known).
    wake: Arc<tokio::sync::Notify>,
    /// The store is closing: the shards given back are not to be followed.
    closing: std::sync::atomic::AtomicBool,
    /// Held shards whose records the agents have loaded: only these are
    /// served (a request for a shard just taken waits, or is refused with
    /// 503, until then).
    ready: RwLock<std::collections::HashSet<u32>>,
}

/// Where a node serves: `host:port` of its SIP (UDP) and HTTP listeners.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    pub sip: String,
    pub http: String,
}

impl Default for Holdings {
    fn default() -> Self {
        Holdings {
            held: RwLock::default(),
            owners: RwLock::default(),
            changed: tokio::sync::watch::Sender::new(0),
            peers: RwLock::default(),
            me: RwLock::default(),
            announced: RwLock::default(),
            wake: Arc::default(),
            closing: std::sync::atomic::AtomicBool::new(false),
            ready: RwLock::default(),
        }
    }
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

    /// Every held shard with the epoch it is held at, as the fence
    /// statement takes them (`int4[]`, `int8[]`).
    pub fn epochs(&self) -> (Vec<i32>, Vec<i64>) {
        self.held
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(s, e)| (*s as i32, *e))
            .unzip()
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

    /// The node holding `shard` by the lease table as last read, if its
    /// lease is live.
    pub fn owner(&self, shard: u32) -> Option<Arc<str>> {
        self.owners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(shard as usize)
            .cloned()
            .flatten()
    }

    /// Where the live node `name` serves, as last read.
    pub fn peer(&self, name: &str) -> Option<Peer> {
        self.peers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The SIP addresses of the live nodes, as last read.
    pub fn peer_sips(&self) -> Vec<String> {
        self.peers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|p| p.sip.clone())
            .collect()
    }

    /// What this node advertises in its heartbeat (set once its listeners
    /// are bound).
    pub fn advertise(&self, me: Peer) {
        *self.me.write().unwrap_or_else(|p| p.into_inner()) = me;
        // Until the heartbeat carries them, no node can forward here.
        self.wake.notify_one();
    }

    /// `shard` is held and its records are loaded: requests for it are
    /// served here.
    pub fn serves(&self, shard: u32) -> bool {
        self.epoch(shard).is_some()
            && self
                .ready
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&shard)
    }

    /// The agents have loaded `shards`.
    pub fn mark_ready(&self, shards: &[u32]) {
        self.ready
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(shards.iter().copied());
    }

    /// The store is closing (a clean stop gives every shard back).
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Wakes when the held shards change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|g| *g += 1);
    }

    pub(super) fn set(&self, shard: u32, epoch: i64) {
        self.held
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(shard, epoch);
    }

    pub(super) fn drop_shards(&self, lost: &[u32]) {
        {
            let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
            let mut ready = self.ready.write().unwrap_or_else(|p| p.into_inner());
            for s in lost {
                held.remove(s);
                ready.remove(s);
            }
        }
        if !lost.is_empty() {
            self.bump();
        }
    }

    pub(super) fn snapshot(&self) -> (Vec<i32>, Vec<i64>) {
        let held = self.held.read().unwrap_or_else(|p| p.into_inner());
        held.iter().map(|(s, e)| (*s as i32, *e)).unzip()
    }
}

/// Creates the heartbeat table (the records' schema is `SCHEMA`).
pub(super) const NODES_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sipgw_nodes (
    name text PRIMARY KEY,
    sip text NOT NULL DEFAULT '',
    http text NOT NULL DEFAULT '',
    alive_until timestamptz NOT NULL
);
";

/// The wake-up channel: sent on every take and give-back.
const CHANNEL: &str = "sipgw_leases";

fn ttl_s(opts: &PgOptions) -> f64 {
    opts.lease_ttl.as_secs_f64()
}

/// The order in which members take shard `s`: its preferred member
/// `members[s mod N]` first, then the others rotated by `(s div N) mod
/// (N-1)`, so the shards one member prefers fall back to every other member
/// in turn: a dead node's load spreads over all survivors.
fn order(members: &[String], shard: u32) -> impl Iterator<Item = &str> {
    let n = members.len().max(1);
    let s = shard as usize;
    let preferred = s % n;
    let others = n - 1;
    let turn = if others == 0 { 0 } else { (s / n) % others };
    std::iter::once(preferred)
        .chain((0..others).map(move |i| {
            // The i-th of the members other than `preferred`, from `turn`.
            let k = (turn + i) % others;
            if k < preferred { k } else { k + 1 }
        }))
        .take(members.len())
        .map(move |i| members[i].as_str())
}

/// Takes `shards` where free, expired or this node's own (a restart: the
/// epoch rises, fencing the previous run). Returns those taken.
async fn take(
    c: &Client,
    opts: &PgOptions,
    holdings: &Holdings,
    shards: &[i32],
) -> Result<Vec<u32>, StoreError> {
    if shards.is_empty() {
        return Ok(Vec::new());
    }
    let rows = c
        .query(
            "INSERT INTO sipgw_leases (shard, holder, epoch, expires_at)
             SELECT s, $2, 1, now() + make_interval(secs => $3) FROM unnest($1::int4[]) AS s
             ON CONFLICT (shard) DO UPDATE
                SET holder = EXCLUDED.holder, epoch = sipgw_leases.epoch + 1,
                    expires_at = EXCLUDED.expires_at
                WHERE sipgw_leases.expires_at < now() OR sipgw_leases.holder = $2
             RETURNING shard, epoch",
            &[&shards, &opts.node, &ttl_s(opts)],
        )
        .await
        .map_err(pg)?;
    let mut taken = Vec::with_capacity(rows.len());
    for r in &rows {
        let s = r.get::<_, i32>(0) as u32;
        holdings.set(s, r.get(1));
        taken.push(s);
    }
    if !taken.is_empty() {
        holdings.bump();
        let _ = c.execute(&format!("NOTIFY {CHANNEL}"), &[]).await;
    }
    Ok(taken)
}

/// Expires this node's leases on `shards` now (epochs kept: the next
/// holder's take raises them) and stops writing them.
pub(super) async fn give_back(c: &Client, opts: &PgOptions, holdings: &Holdings, shards: &[u32]) {
    let epochs: Vec<i64> = shards.iter().filter_map(|s| holdings.epoch(*s)).collect();
    let ids: Vec<i32> = shards.iter().map(|s| *s as i32).collect();
    // First stop writing, then release: a commit racing the release is
    // refused here rather than by the database.
    holdings.drop_shards(shards);
    let r = c
        .execute(
            "UPDATE sipgw_leases l SET expires_at = now() - interval '1 second'
             FROM unnest($1::int4[], $2::int8[]) AS h(shard, epoch)
             WHERE l.shard = h.shard AND l.epoch = h.epoch AND l.holder = $3",
            &[&ids, &epochs, &opts.node],
        )
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %pg(e), "giving leases back failed; they expire by themselves");
    }
    let _ = c.execute(&format!("NOTIFY {CHANNEL}"), &[]).await;
}

/// This node is gone (clean stop): heartbeat ended, every lease given back.
pub(super) async fn leave(c: &Client, opts: &PgOptions, holdings: &Holdings) {
    holdings.closing.store(true, Ordering::Release);
    let held = holdings.shards();
    give_back(c, opts, holdings, &held).await;
    let _ = c
        .execute(
            "UPDATE sipgw_nodes SET alive_until = now() - interval '1 second' WHERE name = $1",
            &[&opts.node],
        )
        .await;
}

/// The first round at open. One node (`members` empty) takes every shard
/// or refuses to start; a member takes what [`round`] gives it.
pub(super) async fn acquire(
    c: &Client,
    opts: &PgOptions,
    holdings: &Holdings,
) -> Result<(), StoreError> {
    c.batch_execute(NODES_SCHEMA).await.map_err(pg)?;
    if !opts.members.is_empty() {
        if !opts.members.contains(&opts.node) {
            return Err(io(format!(
                "[cluster] node {:?} is not in [cluster] members {:?}",
                opts.node, opts.members
            )));
        }
        round(c, opts, holdings, Instant::now()).await?;
        // The agents load what is held at open before anything is served.
        holdings.mark_ready(&holdings.shards());
        return Ok(());
    }
    let wanted: Vec<i32> = (0..opts.shards as i32).collect();
    let taken = take(c, opts, holdings, &wanted).await?;
    holdings.mark_ready(&taken);
    if taken.len() < wanted.len() {
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
        // One node serves everything: half a store is no store.
        return Err(io(format!(
            "shards held by another gateway: {}; is another gateway running on this database?",
            who.join(", ")
        )));
    }
    Ok(())
}

/// One round of a member: heartbeat, renewal, the owners view, takeover of
/// shards no live lease holds, hand-back of shards whose preferred member
/// is live again.
async fn round(
    c: &Client,
    opts: &PgOptions,
    holdings: &Holdings,
    started: Instant,
) -> Result<(), StoreError> {
    let ttl = ttl_s(opts);
    let me = holdings
        .me
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    c.execute(
        "INSERT INTO sipgw_nodes (name, sip, http, alive_until)
         VALUES ($1, $3, $4, now() + make_interval(secs => $2))
         ON CONFLICT (name) DO UPDATE
            SET alive_until = EXCLUDED.alive_until, sip = EXCLUDED.sip, http = EXCLUDED.http",
        &[&opts.node, &ttl, &me.sip, &me.http],
    )
    .await
    .map_err(pg)?;
    let changed = {
        let mut announced = holdings
            .announced
            .write()
            .unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *announced, me.clone()) != me
    };
    if changed && !opts.members.is_empty() {
        let _ = c.execute(&format!("NOTIFY {CHANNEL}"), &[]).await;
    }
    renew_held(c, opts, holdings).await?;
    if opts.members.is_empty() {
        return Ok(());
    }
    let mut peers = HashMap::new();
    for r in c
        .query(
            "SELECT name, sip, http FROM sipgw_nodes WHERE alive_until > now()",
            &[],
        )
        .await
        .map_err(pg)?
    {
        peers.insert(
            Arc::<str>::from(r.get::<_, &str>(0)),
            Peer {
                sip: r.get(1),
                http: r.get(2),
            },
        );
    }
    let live: std::collections::HashSet<String> = peers.keys().map(|k| k.to_string()).collect();
    *holdings.peers.write().unwrap_or_else(|p| p.into_inner()) = peers;
    let rows = c
        .query(
            "SELECT shard, holder, expires_at > now() FROM sipgw_leases WHERE shard < $1",
            &[&(opts.shards as i32)],
        )
        .await
        .map_err(pg)?;
    let mut owners: Vec<Option<Arc<str>>> = vec![None; opts.shards as usize];
    let mut lapsed = vec![false; opts.shards as usize];
    for r in &rows {
        let s = r.get::<_, i32>(0) as usize;
        if r.get::<_, bool>(2) {
            owners[s] = Some(Arc::from(r.get::<_, &str>(1)));
        } else {
            lapsed[s] = true;
        }
    }
    *holdings.owners.write().unwrap_or_else(|p| p.into_inner()) = owners.clone();
    let me = opts.node.as_str();
    let is_live = |n: &str| n == me || live.contains(n);
    // A shard nobody ever held waits for its preferred member while this
    // node is new (they may be starting together); a lapsed one does not.
    let patient = started.elapsed() < opts.lease_ttl * 2;
    let mut want = Vec::new();
    let mut hand_back = Vec::new();
    for s in 0..opts.shards {
        let preferred = order(&opts.members, s).next().unwrap_or(me);
        match &owners[s as usize] {
            Some(o) if &**o == me => {
                if preferred != me && live.contains(preferred) {
                    hand_back.push(s);
                }
            }
            Some(_) => {}
            None => {
                let first = order(&opts.members, s).find(|n| is_live(n));
                if first == Some(me) && (preferred == me || lapsed[s as usize] || !patient) {
                    want.push(s as i32);
                }
            }
        }
    }
    if !hand_back.is_empty() {
        tracing::info!(shards = ?hand_back, "handing shards back to their preferred node");
        give_back(c, opts, holdings, &hand_back).await;
    }
    let taken = take(c, opts, holdings, &want).await?;
    if !taken.is_empty() {
        tracing::warn!(shards = ?taken, node = %me, "took over shards");
        let mut owners = holdings.owners.write().unwrap_or_else(|p| p.into_inner());
        for s in taken {
            owners[s as usize] = Some(Arc::from(me));
        }
    }
    Ok(())
}

/// Renews the held leases; drops (and reports) any that were lost.
async fn renew_held(c: &Client, opts: &PgOptions, holdings: &Holdings) -> Result<(), StoreError> {
    let (shards, epochs) = holdings.snapshot();
    let rows = c
        .query(
            "UPDATE sipgw_leases l SET expires_at = now() + make_interval(secs => $4)
             FROM unnest($1::int4[], $2::int8[]) AS h(shard, epoch)
             WHERE l.shard = h.shard AND l.epoch = h.epoch AND l.holder = $3
               AND l.expires_at >= now()
             RETURNING l.shard",
            &[&shards, &epochs, &opts.node, &ttl_s(opts)],
        )
        .await
        .map_err(pg)?;
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
    Ok(())
}

/// Runs a round every third of the lease TTL, or at once when another node
/// takes or gives back (`LISTEN`); marks the store unhealthy while the
/// database cannot be reached, and keeps its size measured.
pub(super) async fn renew(
    mut c: Client,
    opts: PgOptions,
    holdings: Arc<Holdings>,
    healthy: Arc<AtomicBool>,
    size: Arc<AtomicU64>,
) {
    let started = Instant::now();
    let wake = holdings.wake.clone();
    if !opts.members.is_empty() {
        tokio::spawn(listen(opts.url.clone(), wake.clone()));
    }
    let period = opts.lease_ttl / 3;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // Not at once: the node that sent it is still committing.
            _ = wake.notified() => tokio::time::sleep(Duration::from_millis(50)).await,
        }
        if c.is_closed() {
            // The server restarted or the connection dropped: a new one,
            // tried once a round; the leases run out meanwhile if it never
            // comes back, and the fence keeps every write safe.
            match super::connect(&opts.url).await {
                Ok(n) => c = n,
                Err(e) => {
                    tracing::error!(error = %e, "lease round: cannot reconnect");
                    healthy.store(false, Ordering::Release);
                    continue;
                }
            }
        }
        match round(&c, &opts, &holdings, started).await {
            Ok(()) => healthy.store(true, Ordering::Release),
            Err(e) => {
                tracing::error!(error = %e, "lease round failed");
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

/// `LISTEN sipgw_leases` on a connection of its own, reconnecting; each
/// notification wakes the lease loop.
async fn listen(url: String, wake: Arc<tokio::sync::Notify>) {
    use futures_util::StreamExt;
    loop {
        if let Ok((client, mut conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            let w = wake.clone();
            let driver = tokio::spawn(async move {
                let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                while let Some(Ok(m)) = messages.next().await {
                    if let tokio_postgres::AsyncMessage::Notification(_) = m {
                        w.notify_one();
                    }
                }
            });
            if client
                .batch_execute(&format!("LISTEN {CHANNEL}"))
                .await
                .is_ok()
            {
                let _ = driver.await;
            } else {
                driver.abort();
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::order;

    #[test]
    fn a_members_shards_fall_back_to_every_other_member() {
        let m: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let orders: Vec<Vec<&str>> = (0..12).map(|s| order(&m, s).collect()).collect();
        // Each order is a permutation with the preferred member first.
        for (s, o) in orders.iter().enumerate() {
            assert_eq!(o[0], m[s % 4]);
            let mut sorted = o.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, ["a", "b", "c", "d"]);
        }
        // a prefers shards 0, 4, 8: their second choices are b, c, d.
        let seconds: Vec<&str> = [0, 4, 8].iter().map(|s| orders[*s][1]).collect();
        assert_eq!(seconds, ["b", "c", "d"]);
        // One member: itself.
        assert_eq!(order(&m[..1], 5).collect::<Vec<_>>(), ["a"]);
    }
}
