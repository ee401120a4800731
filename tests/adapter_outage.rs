//! An adapter outage (issue 17): the durable delivery queue stays within
//! `[cpim] adapter_max_pending` in memory and in the store while thousands
//! of notifies are produced, coalescing keeps the latest presence state of
//! every (watcher, target) stream and never drops a state change, the
//! metrics show the outage, and delivery resumes in order once the adapter
//! answers again.

mod support;

use serde_json::{Value, json};
use sip_cpim_gateway::config::Config;
use sip_cpim_gateway::server::Server;
use sip_cpim_gateway::sip::HeaderName;
use sip_cpim_gateway::store::{Store, Tree};
use sip_cpim_gateway::transport::Proto;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::adapter::TestAdapter;
use support::{TempDir, Ua, parse_exposition, pidf, post_json, series};

const LIMIT: usize = 40;
const PUBLISHES: usize = 1500;
const WATCHERS: [&str; 3] = [
    "pres:w1@xmpp.example.org",
    "pres:w2@xmpp.example.org",
    "pres:w3@xmpp.example.org",
];
/// w3's subscription ends (expires) during the outage: its `terminated`
/// notify is a state change, never coalesced.
const SHORT: u32 = 2;

fn publish(etag: Option<&str>, i: usize) -> String {
    let if_match = etag.map_or(String::new(), |t| format!("SIP-If-Match: {t}\r\n"));
    format!(
        "PUBLISH sip:alice@example.com SIP/2.0\r\nVia: {{via}}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=p\r\nTo: <sip:alice@example.com>\r\nCall-ID: outage-{{me}}\r\nCSeq: {i} PUBLISH\r\nEvent: presence\r\nExpires: 3600\r\n{if_match}Content-Type: application/pidf+xml\r\n\r\n{}",
        pidf(
            "pres:alice@example.com",
            "t",
            "open",
            &format!("n{i}"),
            "2026-12-01T10:00:00Z"
        )
    )
}

/// The publish a notify carries the state of (0: none yet).
fn index(call: &Value) -> usize {
    call["presence"]["tuples"][0]["note"]
        .as_str()
        .and_then(|n| n.strip_prefix('n'))
        .map_or(0, |n| n.parse().unwrap())
}

/// The queue's level in memory and in the store.
fn levels(server: &Server) -> (usize, usize) {
    let stored = server.store.scan(Tree::Deliveries).unwrap().len();
    (server.adapter.depth(), stored)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_is_bounded_coalesced_and_resumes_in_order() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = TempDir::new("outage");
    let adapter = TestAdapter::start().await;
    // Down from the start: every notify is answered 503.
    adapter.shared.fail_notify.store(true, Ordering::SeqCst);
    let mut cfg = Config::default();
    cfg.sip.listen = vec!["udp:127.0.0.1:0".into()];
    cfg.sip.local_domains = vec!["example.com".into()];
    cfg.cpim.listen = "127.0.0.1:0".into();
    cfg.cpim.adapter_url = adapter.url();
    cfg.cpim.retry_initial_ms = 20;
    cfg.cpim.retry_max_ms = 200;
    cfg.cpim.adapter_max_pending = LIMIT;
    cfg.presence.min_expires = 1;
    cfg.presence.default_policy = "allow".into();
    cfg.presence.notify_min_interval_ms = 0;
    cfg.store.path = dir.0.join("store").display().to_string();
    let server = Server::start(&cfg).await.unwrap();
    let http = reqwest::Client::new();

    // Three CPIM watchers of a local presentity, served by the PA: each
    // change of alice's state is one notify per watcher stream.
    let subscribed = Instant::now();
    for (i, w) in WATCHERS.iter().enumerate() {
        let duration = if i == 2 { SHORT } else { 3600 };
        let url = format!("http://{}/cpim/v1/subscribe", server.http);
        let body = json!({"watcher": w, "target": "pres:alice@example.com", "duration": duration});
        let v = post_json(&http, &url, &body).await;
        assert_eq!(v["status"], "success", "{v}");
    }
    let ua = Ua::new(server.local_addr(Proto::Udp).unwrap()).await;
    let mut etag: Option<String> = None;
    let mut n = Vec::new();
    let mut highest = (0, 0);
    for i in 1..=PUBLISHES {
        let r = ua.request(&publish(etag.as_deref(), i), &mut n).await;
        assert_eq!(r.status(), Some(200), "publish {i}");
        etag = r.header_value(&HeaderName::SipETag).map(str::to_owned);
        let (depth, stored) = levels(&server);
        assert!(
            depth <= LIMIT && stored <= LIMIT,
            "publish {i}: {depth} pending, {stored} stored, limit {LIMIT}"
        );
        highest = (highest.0.max(depth), highest.1.max(stored));
    }
    // w3's subscription has expired by now (its final notify is queued).
    tokio::time::sleep(
        Duration::from_secs(u64::from(SHORT) + 1).saturating_sub(subscribed.elapsed()),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (depth, stored) = levels(&server);
    assert!(depth <= LIMIT && stored <= LIMIT, "{depth} {stored}");
    // Filled up to the limit (coalescing happens there only, and makes
    // room for a few at once).
    assert!(
        highest.0 >= LIMIT - WATCHERS.len() && highest.1 >= LIMIT - WATCHERS.len(),
        "{highest:?}"
    );
    let stats = server.adapter.stats();
    assert!(
        stats.coalesced as usize >= PUBLISHES * 2 - 2 * LIMIT,
        "{stats:?}"
    );
    assert_eq!((stats.refused, stats.over_limit), (0, 0), "{stats:?}");
    assert!(adapter.calls("notify").is_empty(), "the adapter is down");

    // The outage in the metrics.
    let text = http
        .get(format!("http://{}/metrics", server.http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let m = parse_exposition(&text);
    assert_eq!(series(&m, "sipgw_adapter_queue_limit"), LIMIT as f64);
    let d = series(&m, "sipgw_adapter_queue_depth");
    assert!(d > 0.0 && d <= LIMIT as f64, "{text}");
    assert!(series(&m, "sipgw_adapter_queue_coalesced_total") >= stats.coalesced as f64);
    assert!(
        series(&m, "sipgw_adapter_queue_oldest_age_seconds") >= 1.0,
        "{text}"
    );
    assert!(series(&m, "sipgw_adapter_delivery_failures_total") > 0.0);
    assert_eq!(series(&m, "sipgw_adapter_queue_refused_total"), 0.0);

    // The adapter is back: everything drains, in order, ending with the
    // latest state of every stream.
    adapter.shared.fail_notify.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    while levels(&server) != (0, 0) {
        assert!(Instant::now() < deadline, "drained: {:?}", levels(&server));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = adapter.calls("notify");
    eprintln!(
        "outage: {PUBLISHES} publishes x {} watchers, limit {LIMIT}: highest {highest:?} (memory, store), {} coalesced, {} delivered after it",
        WATCHERS.len(),
        stats.coalesced,
        calls.len()
    );
    assert!(calls.len() <= LIMIT, "{} deliveries", calls.len());
    let mut per: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for c in &calls {
        assert_eq!(c["target"], "pres:alice@example.com");
        per.entry(c["watcher"].as_str().unwrap().to_owned())
            .or_default()
            .push(c);
    }
    for (i, w) in WATCHERS.iter().enumerate() {
        let got = &per[*w];
        let idx: Vec<usize> = got.iter().map(|c| index(c)).collect();
        assert!(
            idx.windows(2).all(|p| p[0] < p[1]) || i == 2,
            "{w}: in order: {idx:?}"
        );
        if i < 2 {
            assert_eq!(*idx.last().unwrap(), PUBLISHES, "{w}: the latest state");
            assert!(got.iter().all(|c| c.get("state").is_none()), "{w}");
        } else {
            // The state change arrives, last, after the presence it
            // followed; nothing before it is reordered.
            let (last, before) = got.split_last().unwrap();
            assert_eq!(last["state"], "terminated", "{w}: {got:?}");
            let idx: Vec<usize> = before.iter().map(|c| index(c)).collect();
            assert!(idx.windows(2).all(|p| p[0] < p[1]), "{w}: {idx:?}");
            assert!(before.iter().all(|c| c.get("state").is_none()), "{w}");
        }
    }
    server.shutdown(Duration::from_millis(200)).await;
}
