//! Three gateway processes on one PostgreSQL (issue 18): a watcher that
//! subscribes through node B sees a PUBLISH made through node C, served by
//! the node holding the presentity's shard (A); A is killed with SIGKILL;
//! within the lease time a survivor takes the shard over and NOTIFYs the
//! watcher in the same dialog with the next CSeq and its own Contact; the
//! publication survives (refreshable by its ETag) and later PUBLISHes
//! reach the watcher. No NOTIFY CSeq is ever seen twice.

mod support;

use sip_cpim_gateway::cluster::Sharding;
use sip_cpim_gateway::sip::Message;
use std::collections::HashMap;
use std::time::Duration;
use support::adapter::TestAdapter;
use support::postgres::PgServer;
use support::process::{GatewayProcess, spawn};
use support::{TempDir, Ua, pidf};

const SHARDS: u32 = 8;
const TTL_S: u64 = 3;

fn config(pg: &PgServer, node: &str, adapter: &str) -> String {
    config_ttl(pg, node, adapter, TTL_S)
}

fn config_ttl(pg: &PgServer, node: &str, adapter: &str, ttl_s: u64) -> String {
    format!(
        "[sip]\nlisten = [\"udp:127.0.0.1:0\"]\nlocal_domains = [\"example.com\"]\nroutes = []\n\
         [cpim]\nlisten = \"127.0.0.1:0\"\nadapter_url = \"{adapter}\"\nretry_initial_ms = 100\nretry_max_ms = 500\n\
         [presence]\nmin_expires = 1\ndefault_policy = \"allow\"\nnotify_min_interval_ms = 0\n\
         [store]\nbackend = \"postgres\"\nurl = \"{}\"\n\
         [cluster]\nnode = \"{node}\"\nmembers = [\"a\", \"b\", \"c\"]\nshards = {SHARDS}\nlease_ttl_s = {ttl_s}\n",
        pg.url()
    )
}

/// The live holder of each shard, once all are held and every node has
/// advertised its address; `None` while the cluster is still settling.
async fn holders(db: &tokio_postgres::Client) -> Option<HashMap<u32, String>> {
    let rows = db
        .query(
            "SELECT l.shard, l.holder FROM sipgw_leases l JOIN sipgw_nodes n ON n.name = l.holder
             WHERE l.expires_at > now() AND n.alive_until > now() AND n.sip <> ''",
            &[],
        )
        .await
        .ok()?;
    let m: HashMap<u32, String> = rows
        .iter()
        .map(|r| (r.get::<_, i32>(0) as u32, r.get::<_, String>(1)))
        .collect();
    (m.len() == SHARDS as usize).then_some(m)
}

async fn settled(
    db: &tokio_postgres::Client,
    want: impl Fn(&HashMap<u32, String>) -> bool,
) -> HashMap<u32, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(h) = holders(db).await {
            if want(&h) {
                return h;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cluster did not settle"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn publish(user: &str, call: &str, etag: Option<&str>, note: &str) -> String {
    let if_match = etag
        .map(|e| format!("SIP-If-Match: {e}\r\n"))
        .unwrap_or_default();
    format!(
        "PUBLISH sip:{user}@example.com SIP/2.0\r\nVia: {{via}}\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@example.com>;tag=p\r\nTo: <sip:{user}@example.com>\r\nCall-ID: {call}\r\nCSeq: 1 PUBLISH\r\nExpires: 3600\r\n{if_match}Content-Type: application/pidf+xml\r\nEvent: presence\r\n\r\n{}",
        pidf(
            &format!("pres:{user}@example.com"),
            "t1",
            "open",
            note,
            "2026-12-06T10:00:00Z"
        )
    )
}

fn note_of(m: &Message) -> String {
    let body = String::from_utf8_lossy(m.body());
    body.split("<note>")
        .nth(1)
        .and_then(|r| r.split("</note>").next())
        .unwrap_or("")
        .to_owned()
}

fn contact_port(m: &Message) -> u16 {
    let c = m.contacts().unwrap();
    let uri = match &c {
        sip_cpim_gateway::sip::headers::Contacts::List(l) => l[0].uri.clone(),
        other => panic!("{other:?}"),
    };
    uri.port.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_keeps_its_subscription_when_the_presentitys_node_dies() {
    let Some(pg) = PgServer::start() else { return };
    let dir = TempDir::new("cluster");
    let adapter = TestAdapter::start().await;
    let mut nodes: HashMap<&str, GatewayProcess> = HashMap::new();
    for n in ["a", "b", "c"] {
        nodes.insert(n, spawn(&dir, n, &config(&pg, n, &adapter.url())));
    }
    let (db, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    // Each member holds the shards it prefers (s mod 3).
    let h = settled(&db, |h| {
        h.iter()
            .all(|(s, n)| *n == ["a", "b", "c"][*s as usize % 3])
    })
    .await;
    // A presentity on a shard node a holds.
    let sharding = Sharding { shards: SHARDS };
    let user = (0..)
        .map(|i| format!("user{i}"))
        .find(|u| h[&sharding.of(&format!("sip:{u}@example.com"))] == "a")
        .unwrap();
    let shard = sharding.of(&format!("sip:{user}@example.com"));

    // The watcher talks to b, the publisher to c.
    let watcher = Ua::new(nodes["b"].udp).await;
    let publisher = Ua::new(nodes["c"].udp).await;
    let mut seen_cseqs = Vec::new();
    let mut n = Vec::new();

    let r = publisher
        .request(&publish(&user, "pub1", None, "first"), &mut n)
        .await;
    assert_eq!(r.status(), Some(200), "{r:?}");
    let etag = r.sip_etag().unwrap().unwrap().to_string();

    let sub = format!(
        "SUBSCRIBE sip:{user}@example.com SIP/2.0\r\nVia: {{via}}\r\nMax-Forwards: 70\r\nFrom: <sip:watcher@example.com>;tag=w\r\nTo: <sip:{user}@example.com>\r\nCall-ID: cluster-sub\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:watcher@{{me}}>\r\nExpires: 3600\r\nEvent: presence\r\n\r\n"
    );
    let mut notifies = Vec::new();
    let ok = watcher.request(&sub, &mut notifies).await;
    assert_eq!(ok.status(), Some(200), "{ok:?}");
    // Served by a (its Contact), answered through b.
    assert_eq!(contact_port(&ok), nodes["a"].udp.port());
    let first = watcher.triggered_notify(&mut notifies).await;
    assert_eq!(note_of(&first), "first");
    seen_cseqs.push(first.cseq().unwrap().seq);
    let to_tag = ok.to().unwrap().tag().unwrap().to_owned();

    // A CPIM watcher subscribes through b's HTTP API: forwarded to a,
    // whose records they are.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let v: serde_json::Value = http
        .post(format!("http://{}/cpim/v1/subscribe", nodes["b"].http))
        .json(&serde_json::json!({"watcher": "pres:xw@xmpp.example", "target": format!("pres:{user}@example.com"), "duration": 3600, "transID": "t1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "success", "{v}");
    let cpim = adapter
        .wait_calls("notify", 1, Duration::from_secs(5))
        .await;
    assert_eq!(cpim.len(), 1, "the first CPIM notify");
    assert!(cpim[0].to_string().contains("first"), "{}", cpim[0]);

    // A PUBLISH through c reaches the watcher that subscribed through b.
    let r = publisher
        .request(&publish(&user, "pub1", Some(&etag), "second"), &mut n)
        .await;
    assert_eq!(r.status(), Some(200));
    let etag = r.sip_etag().unwrap().unwrap().to_string();
    let second = watcher
        .notify(Duration::from_secs(5), 200)
        .await
        .expect("NOTIFY of the PUBLISH via c");
    assert_eq!(note_of(&second), "second");
    assert!(second.cseq().unwrap().seq > seen_cseqs[0]);
    seen_cseqs.push(second.cseq().unwrap().seq);

    // a dies without giving anything back.
    nodes.get_mut("a").unwrap().kill9();
    let killed = tokio::time::Instant::now();
    // The survivor next in the shard's order takes it within the lease
    // time (plus one renewal period) and NOTIFYs the watcher: same dialog,
    // next CSeq, the survivor's Contact.
    let taken_over = watcher
        .notify(Duration::from_secs(TTL_S * 3), 200)
        .await
        .expect("the survivor's NOTIFY after the takeover");
    let waited = killed.elapsed();
    assert!(
        waited <= Duration::from_secs(TTL_S + TTL_S / 3 + 3),
        "{waited:?}"
    );
    assert_eq!(taken_over.call_id(), Some("cluster-sub"));
    assert_eq!(taken_over.from().unwrap().tag(), Some(to_tag.as_str()));
    assert_eq!(taken_over.to().unwrap().tag(), Some("w"));
    assert!(
        taken_over.cseq().unwrap().seq > seen_cseqs[1],
        "CSeq continues"
    );
    assert_eq!(note_of(&taken_over), "second", "the state survived");
    let h = settled(&db, |h| h[&shard] != "a").await;
    let survivor = h[&shard].clone();
    assert_eq!(
        contact_port(&taken_over),
        nodes[survivor.as_str()].udp.port()
    );
    seen_cseqs.push(taken_over.cseq().unwrap().seq);

    // The publication survived: refreshed by its ETag, through c.
    let r = publisher
        .request(&publish(&user, "pub1", Some(&etag), "third"), &mut n)
        .await;
    assert_eq!(
        r.status(),
        Some(200),
        "the ETag survived the failover: {r:?}"
    );
    let third = watcher
        .notify(Duration::from_secs(5), 200)
        .await
        .expect("NOTIFY after failover");
    assert_eq!(note_of(&third), "third");
    seen_cseqs.push(third.cseq().unwrap().seq);

    // The CPIM watcher's queue moved with the shard: the survivor delivers
    // the states after "second" in order (at least once: a delivery in
    // flight when a died may come again, never out of order).
    let notes_of = |calls: Vec<serde_json::Value>| -> Vec<String> {
        calls
            .iter()
            .map(|c| {
                let t = c.to_string();
                ["first", "second", "third"]
                    .into_iter()
                    .find(|n| t.contains(&format!("<note>{n}</note>")))
                    .unwrap_or("?")
                    .to_owned()
            })
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let notes = loop {
        let notes = notes_of(adapter.calls("notify"));
        if notes.iter().any(|n| n == "third") || tokio::time::Instant::now() > deadline {
            break notes;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut dedup = notes.clone();
    dedup.dedup();
    assert_eq!(dedup, ["first", "second", "third"], "{notes:?}");

    // The watcher refreshes at its new remote target (the survivor).
    let refresher = Ua {
        server: nodes[survivor.as_str()].udp,
        ..watcher
    };
    let refresh = format!(
        "SUBSCRIBE sip:{user}@example.com SIP/2.0\r\nVia: {{via}}\r\nMax-Forwards: 70\r\nFrom: <sip:watcher@example.com>;tag=w\r\nTo: <sip:{user}@example.com>;tag={to_tag}\r\nCall-ID: cluster-sub\r\nCSeq: 2 SUBSCRIBE\r\nContact: <sip:watcher@{{me}}>\r\nExpires: 3600\r\nEvent: presence\r\n\r\n"
    );
    let mut notifies = Vec::new();
    let ok = refresher.request(&refresh, &mut notifies).await;
    assert_eq!(ok.status(), Some(200), "{ok:?}");
    let fourth = refresher.triggered_notify(&mut notifies).await;
    seen_cseqs.push(fourth.cseq().unwrap().seq);

    // Nothing else arrives (no second node NOTIFYing the same change).
    assert!(
        refresher
            .notify(Duration::from_millis(1500), 200)
            .await
            .is_none()
    );
    let mut sorted = seen_cseqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted, seen_cseqs,
        "NOTIFY CSeqs strictly increasing, none twice"
    );
}

/// A node that has just started is forwarded to as soon as it serves, not
/// a lease round later: its heartbeat with its addresses is announced
/// (`NOTIFY`), and a request for a shard whose holder is not yet known
/// waits for the view instead of being refused. With a 60 s lease (a round
/// every 20 s) nothing here can come from the periodic rounds: before the
/// announcement, every request for the last node's shards, and every
/// request it forwarded, was answered 503 for up to a round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_is_forwarded_to_as_soon_as_it_serves() {
    let Some(pg) = PgServer::start() else { return };
    let dir = TempDir::new("cluster-join");
    let adapter = TestAdapter::start().await;
    let (db, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut nodes: HashMap<&str, GatewayProcess> = HashMap::new();
    for n in ["a", "b", "c"] {
        nodes.insert(n, spawn(&dir, n, &config_ttl(&pg, n, &adapter.url(), 60)));
    }
    let started = tokio::time::Instant::now();
    // A member takes the shards it prefers when it opens its store, before
    // it listens: they are all held now (not waiting for the addresses).
    let rows = db
        .query(
            "SELECT shard, holder FROM sipgw_leases WHERE expires_at > now()",
            &[],
        )
        .await
        .unwrap();
    let held: HashMap<u32, String> = rows
        .iter()
        .map(|r| (r.get::<_, i32>(0) as u32, r.get::<_, String>(1)))
        .collect();
    assert_eq!(held.len(), SHARDS as usize, "{held:?}");
    let sharding = Sharding { shards: SHARDS };
    let user_on = |holder: &str| {
        (0..)
            .map(|i| format!("join{i}"))
            .find(|u| held[&sharding.of(&format!("sip:{u}@example.com"))] == holder)
            .unwrap()
    };
    let mut n = Vec::new();
    for via in ["a", "b", "c"] {
        let ua = Ua::new(nodes[via].udp).await;
        for holder in ["a", "b", "c"] {
            let user = user_on(holder);
            let r = ua
                .request(&publish(&user, &format!("join-{via}"), None, via), &mut n)
                .await;
            assert_eq!(
                r.status(),
                Some(200),
                "{user} (held by {holder}) via {via}: {r:?}"
            );
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}: not a lease round's doing",
        started.elapsed()
    );

    // A request a peer forwarded (its top Via is a's advertised address) is
    // never forwarded again, even when this node's view says another node
    // holds it: two stale views cannot make a loop. b answers it itself
    // (503, the sender may try again), and forwards nothing.
    // reqwest is built without a crypto provider; this test must not rely
    // on another test of this binary having installed one first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let forwarded_total = |node: &GatewayProcess| {
        let url = format!("http://{}/metrics", node.http);
        async move {
            let body = reqwest::get(url).await.unwrap().text().await.unwrap();
            body.lines()
                .filter(|l| l.starts_with("sipgw_cluster_forwarded_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        }
    };
    let before = forwarded_total(&nodes["b"]).await;
    let ua = Ua::new(nodes["b"].udp).await;
    let user = user_on("c");
    let as_if_from_a = publish(&user, "loop", None, "loop").replace(
        "Via: {via}",
        &format!(
            "Via: SIP/2.0/UDP {};rport;branch=z9hG4bKloop1\r\nVia: {{via}}",
            nodes["a"].udp
        ),
    );
    let r = ua.request(&as_if_from_a, &mut n).await;
    assert_eq!(r.status(), Some(503), "{r:?}");
    assert_eq!(forwarded_total(&nodes["b"]).await, before);
}
