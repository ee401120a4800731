//! The PostgreSQL store (issue 18) against a real server: the `Store`
//! contract the agents rely on (atomic batches in order, durable once
//! acknowledged, reads back after a reopen), and the fence: a node whose
//! lease was taken over cannot write or delete the new holder's records.

mod support;

use sip_cpim_gateway::cluster::{Sharding, record_sharder};
use sip_cpim_gateway::store::{Batch, PgOptions, PgStore, Store, StoreError, Tree};
use std::time::Duration;
use support::postgres::PgServer;

fn opts(pg: &PgServer, node: &str, ttl_s: u64) -> PgOptions {
    PgOptions {
        url: pg.url(),
        node: node.into(),
        shards: 8,
        lease_ttl: Duration::from_secs(ttl_s),
        members: vec![],
        sharder: record_sharder(Sharding { shards: 8 }),
    }
}

fn policy_key(presentity: &str, watcher: &str) -> Vec<u8> {
    format!("{presentity}\n{watcher}").into_bytes()
}

fn keys(store: &PgStore, tree: Tree) -> Vec<Vec<u8>> {
    store
        .scan(tree)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_atomic_ordered_and_durable() {
    let Some(pg) = PgServer::start() else { return };
    let store = PgStore::open(opts(&pg, "a", 30)).unwrap_or_else(|e| panic!("{e}\n{}", pg.log()));
    assert_eq!(store.holdings().shards(), (0..8).collect::<Vec<_>>());

    // Later operations win, within a batch and across concurrent batches
    // taken into one transaction.
    let mut b = Batch::default();
    b.put(
        Tree::Policies,
        policy_key("sip:a@x", "sip:w@x"),
        b"1".to_vec(),
    );
    b.put(
        Tree::Policies,
        policy_key("sip:b@x", "sip:w@x"),
        b"1".to_vec(),
    );
    b.delete(Tree::Policies, policy_key("sip:b@x", "sip:w@x"));
    store.commit(b).await.unwrap();
    let mut pending = Vec::new();
    for i in 0..500u32 {
        let mut b = Batch::default();
        b.put(
            Tree::Policies,
            policy_key(&format!("sip:p{i}@x"), "sip:w@x"),
            i.to_be_bytes().to_vec(),
        );
        b.put(
            Tree::Policies,
            policy_key("sip:a@x", "sip:w@x"),
            i.to_be_bytes().to_vec(),
        );
        pending.push(store.commit(b));
    }
    for f in pending {
        f.await.unwrap();
    }
    assert_eq!(
        store
            .get(Tree::Policies, &policy_key("sip:a@x", "sip:w@x"))
            .unwrap(),
        Some(499u32.to_be_bytes().to_vec()),
        "the last batch queued is the last applied"
    );
    assert_eq!(
        store
            .get(Tree::Policies, &policy_key("sip:b@x", "sip:w@x"))
            .unwrap(),
        None
    );
    let all = keys(&store, Tree::Policies);
    assert_eq!(all.len(), 501);
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "visit is in key order");
    // Trees are separate keyspaces.
    assert!(keys(&store, Tree::Publishers).is_empty());
    store.close().await.unwrap();
    assert!(matches!(
        store.commit(Batch::default()).await,
        Err(StoreError::Closed)
    ));

    // A clean stop gave the leases back: the next node takes them at once.
    let next = PgStore::open(opts(&pg, "b", 30)).unwrap();
    assert_eq!(keys(&next, Tree::Policies).len(), 501);
    next.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_holder_keeps_its_shards() {
    let Some(pg) = PgServer::start() else { return };
    let a = PgStore::open(opts(&pg, "a", 30)).unwrap();
    match PgStore::open(opts(&pg, "b", 30)) {
        Err(StoreError::Io(m)) => assert!(m.contains("a holds 8 until"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a second gateway took shards a live one holds"),
    }
    // The same node restarting (after a crash) takes its own shards back,
    // at a higher epoch: its previous run is fenced.
    let before = a.holdings().epoch(0).unwrap();
    let again = PgStore::open(opts(&pg, "a", 30)).unwrap();
    assert_eq!(again.holdings().epoch(0), Some(before + 1));
    let mut b = Batch::default();
    b.put(
        Tree::Policies,
        policy_key("sip:a@x", "sip:w@x"),
        b"old run".to_vec(),
    );
    assert!(matches!(a.commit(b).await, Err(StoreError::Fenced { .. })));
    assert_eq!(
        again
            .get(Tree::Policies, &policy_key("sip:a@x", "sip:w@x"))
            .unwrap(),
        None
    );
    again.close().await.unwrap();
}

/// OpenSIPS #1848/#2960 in miniature: node a stalls past its lease, b takes
/// over and writes; a wakes up believing it still holds the shard. None of
/// a's writes or deletes may land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_node_cannot_overwrite_or_delete_the_new_holders_records() {
    let Some(pg) = PgServer::start() else { return };
    let a = PgStore::open(opts(&pg, "a", 30)).unwrap();
    let key = policy_key("sip:alice@x", "sip:w@x");
    let mut b = Batch::default();
    b.put(Tree::Policies, key.clone(), b"a".to_vec());
    a.commit(b).await.unwrap();

    // a's leases run out (as if it had been stopped for longer than the
    // TTL); b, started now, takes them.
    let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .execute(
            "UPDATE sipgw_leases SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let nb = PgStore::open(opts(&pg, "b", 30)).unwrap();
    let mut w = Batch::default();
    w.put(Tree::Policies, key.clone(), b"b".to_vec());
    w.put(
        Tree::Policies,
        policy_key("sip:alice@x", "sip:v@x"),
        b"b".to_vec(),
    );
    nb.commit(w).await.unwrap();

    // a still lists the shard as its own; the database says otherwise.
    assert!(!a.holdings().shards().is_empty());
    let mut stale = Batch::default();
    stale.put(Tree::Policies, key.clone(), b"a again".to_vec());
    assert!(matches!(
        a.commit(stale).await,
        Err(StoreError::Fenced { .. })
    ));
    let mut stale_delete = Batch::default();
    stale_delete.delete(Tree::Policies, policy_key("sip:alice@x", "sip:v@x"));
    let r = a.commit(stale_delete).await;
    assert!(matches!(r, Err(StoreError::Fenced { .. })), "{r:?}");
    assert_eq!(nb.get(Tree::Policies, &key).unwrap(), Some(b"b".to_vec()));
    assert_eq!(
        nb.get(Tree::Policies, &policy_key("sip:alice@x", "sip:v@x"))
            .unwrap(),
        Some(b"b".to_vec()),
        "the stale delete was rolled back"
    );
    // Having been refused, a knows: it no longer lists the shards it lost.
    let lost = Sharding { shards: 8 }.of("sip:alice@x");
    assert_eq!(a.holdings().epoch(lost), None);
    nb.close().await.unwrap();
}

/// A lease that is not renewed expires: the renewal keeps it alive well
/// past its TTL while the node runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_renewed_while_the_node_runs() {
    let Some(pg) = PgServer::start() else { return };
    let a = PgStore::open(opts(&pg, "a", 3)).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        PgStore::open(opts(&pg, "b", 3)).is_err(),
        "a's leases lapsed while it ran"
    );
    let mut b = Batch::default();
    b.put(
        Tree::Policies,
        policy_key("sip:a@x", "sip:w@x"),
        b"1".to_vec(),
    );
    a.commit(b).await.unwrap();
    assert!(a.healthy());
    a.close().await.unwrap();
}

/// A group commit is pipelined (BEGIN, fence, deletes, upserts in one round
/// trip, then COMMIT or ROLLBACK): a group refused after its statements ran
/// leaves nothing behind, and the connection serves the next group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_group_is_rolled_back_whole_and_the_next_commits() {
    let Some(pg) = PgServer::start() else { return };
    let a = PgStore::open(opts(&pg, "a", 30)).unwrap();
    let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    // A row for bob's policy under a shard that is not bob's: as if another
    // node had written it. The upsert leaves it alone; the group fails.
    let bob = policy_key("sip:bob@x", "sip:w@x");
    let wrong = (Sharding { shards: 8 }.of("sip:bob@x") as i32 + 1) % 8;
    client
        .execute(
            "INSERT INTO sipgw_records (tree, key, shard, value) VALUES ($1, $2, $3, $4)",
            &[
                &(Tree::ALL.iter().position(|t| *t == Tree::Policies).unwrap() as i16),
                &bob,
                &wrong,
                &b"other".to_vec(),
            ],
        )
        .await
        .unwrap();
    let carol = policy_key("sip:carol@x", "sip:w@x");
    let mut seed = Batch::default();
    seed.put(Tree::Policies, carol.clone(), b"kept".to_vec());
    a.commit(seed).await.unwrap();

    let mut b = Batch::default();
    b.put(
        Tree::Policies,
        policy_key("sip:alice@x", "sip:w@x"),
        b"1".to_vec(),
    );
    b.delete(Tree::Policies, carol.clone());
    b.put(Tree::Policies, bob.clone(), b"mine".to_vec());
    let r = a.commit(b).await;
    assert!(
        matches!(r, Err(StoreError::Io(ref m)) if m.contains("another shard")),
        "{r:?}"
    );
    assert_eq!(
        a.get(Tree::Policies, &policy_key("sip:alice@x", "sip:w@x"))
            .unwrap(),
        None
    );
    assert_eq!(
        a.get(Tree::Policies, &carol).unwrap(),
        Some(b"kept".to_vec()),
        "the delete was rolled back"
    );
    assert_eq!(
        a.get(Tree::Policies, &bob).unwrap(),
        Some(b"other".to_vec())
    );

    let mut next = Batch::default();
    next.put(
        Tree::Policies,
        policy_key("sip:dave@x", "sip:w@x"),
        b"2".to_vec(),
    );
    next.delete(Tree::Policies, carol.clone());
    a.commit(next).await.unwrap();
    assert_eq!(
        a.get(Tree::Policies, &policy_key("sip:dave@x", "sip:w@x"))
            .unwrap(),
        Some(b"2".to_vec())
    );
    assert_eq!(a.get(Tree::Policies, &carol).unwrap(), None);
    a.close().await.unwrap();
}

/// The database restarts under a running node (an operator's restart, a
/// failover of the primary): every connection drops. Commits made while it
/// is down fail (nothing is acknowledged that is not durable); once it is
/// back the node reconnects by itself (writer, reader and lease loop), keeps
/// its leases and commits and reads again, with no restart of the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_reconnects_after_the_database_restarts() {
    let Some(mut pg) = PgServer::start() else {
        return;
    };
    let a = PgStore::open(opts(&pg, "a", 6)).unwrap();
    let key = |n: u32| policy_key(&format!("sip:user{n}@x"), "sip:w@x");
    let put = |n: u32| {
        let mut b = Batch::default();
        b.put(Tree::Policies, key(n), format!("v{n}").into_bytes());
        b
    };
    a.commit(put(1)).await.unwrap();
    let pg = tokio::task::spawn_blocking(move || {
        pg.restart();
        pg
    })
    .await
    .unwrap();
    // The first commit after the restart may meet the dead connection: it
    // fails, and is not applied. Within a few attempts one succeeds, well
    // inside the lease TTL (6 s), so the leases were kept.
    let mut committed = None;
    for n in 2..40 {
        match a.commit(put(n)).await {
            Ok(()) => {
                committed = Some(n);
                break;
            }
            Err(e) => {
                assert!(!matches!(e, StoreError::Fenced { .. }), "{e}");
                assert_eq!(a.get(Tree::Policies, &key(n)).ok().flatten(), None);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n = committed.expect("a commit succeeds after the database is back");
    assert_eq!(
        a.get(Tree::Policies, &key(n)).unwrap(),
        Some(format!("v{n}").into_bytes())
    );
    assert_eq!(
        a.get(Tree::Policies, &key(1)).unwrap(),
        Some(b"v1".to_vec())
    );
    // The lease loop reconnected too: the leases are still renewed two TTLs
    // later (another node is refused, and this one still commits).
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(PgStore::open(opts(&pg, "b", 6)).is_err());
    a.commit(put(100)).await.unwrap();
    a.close().await.unwrap();
}
