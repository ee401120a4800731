//! The CPIM ↔ SIP gateway end to end: a test adapter (axum) and a test SIP
//! UA on loopback, one test per direction and outcome (seed §7.1, §7.2).

mod support;

use serde_json::{Value, json};
use sip_cpim_gateway::config::{Config, StaticRoute};
use sip_cpim_gateway::cpim::trans_id;
use sip_cpim_gateway::server::Server;
use sip_cpim_gateway::sip::{HeaderName, Message, Method, SubState};
use sip_cpim_gateway::transport::Proto;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::adapter::{self, TestAdapter};
use support::{TempDir, Ua, fix_length, pidf};

const W: Duration = Duration::from_secs(5);

struct Env {
    server: Server,
    adapter: TestAdapter,
    /// The SIP side: presentity (sip.example.net) and watcher.
    ua: Ua,
    http: reqwest::Client,
    /// Set: every store commit fails (fault injection).
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
    _dir: TempDir,
}

async fn env(token: &str) -> Env {
    env_with(token, |_, _| {}).await
}

async fn env_with(token: &str, tune: impl FnOnce(&mut Config, &TempDir)) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = TempDir::new("gw");
    let adapter = TestAdapter::start().await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ua_addr = sock.local_addr().unwrap();
    let mut cfg = Config::default();
    cfg.sip.listen = vec!["udp:127.0.0.1:0".into()];
    cfg.sip.local_domains = vec!["example.com".into()];
    cfg.sip.cpim_domains = vec!["xmpp.example.org".into()];
    cfg.sip.routes = vec![StaticRoute {
        domain: "sip.example.net".into(),
        next_hop: format!("udp:{ua_addr}"),
    }];
    cfg.sip.timers.t1_ms = 50; // Timer F = 3.2 s
    cfg.cpim.listen = "127.0.0.1:0".into();
    cfg.cpim.adapter_url = adapter.url();
    cfg.cpim.adapter_timeout_ms = 1000;
    cfg.cpim.retry_initial_ms = 50;
    cfg.cpim.retry_max_ms = 200;
    cfg.cpim.token = token.into();
    cfg.presence.min_expires = 1;
    cfg.presence.default_policy = "allow".into();
    cfg.presence.notify_min_interval_ms = 0;
    cfg.store.path = dir.0.join("store").display().to_string();
    tune(&mut cfg, &dir);
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = fail.clone();
    let server = Server::start_with(&cfg, move |inner| {
        std::sync::Arc::new(support::FailingStore {
            inner,
            fail: flag,
            refused: Default::default(),
            reads_fail: false,
        })
    })
    .await
    .unwrap();
    let ua = Ua {
        sock,
        addr: ua_addr,
        server: server.local_addr(Proto::Udp).unwrap(),
        n: Default::default(),
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    Env {
        server,
        adapter,
        ua,
        http: reqwest::Client::new(),
        fail,
        _dir: dir,
    }
}

impl Env {
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("http://{}{path}", self.server.http))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Starts a CPIM subscribe; the answer comes when the SIP side answers.
    fn subscribe(
        &self,
        watcher: &str,
        target: &str,
        duration: u32,
    ) -> tokio::task::JoinHandle<(u16, Value)> {
        let http = self.http.clone();
        let url = format!("http://{}/cpim/v1/subscribe", self.server.http);
        let body = json!({"watcher": watcher, "target": target, "duration": duration});
        tokio::spawn(async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json().await.unwrap())
        })
    }

    async fn next_request(&self) -> Message {
        loop {
            let m = self.ua.recv(W).await.expect("a request from the gateway");
            if m.is_request() {
                return m;
            }
        }
    }

    /// Answers `req` with `code`, To tag, Contact and Expires.
    async fn answer(&self, req: &Message, code: u16, to_tag: &str, expires: u32) {
        let mut r = Message::response_to(req, code, "");
        let mut to = req.to().unwrap().clone();
        if to.tag().is_none() {
            to.set_tag(to_tag);
        }
        r.set_header(HeaderName::To, to.to_string());
        r.push_header(HeaderName::Contact, format!("<sip:bob@{}>", self.ua.addr));
        r.push_header(HeaderName::Expires, expires.to_string());
        self.ua
            .sock
            .send_to(&r.to_bytes(), self.ua.server)
            .await
            .unwrap();
    }

    /// A NOTIFY from the SIP presentity in the dialog `sub` created.
    fn notify_text(
        &self,
        sub: &Message,
        to_tag: &str,
        cseq: u32,
        state: &str,
        body: &str,
    ) -> String {
        let ruri = match sub.contacts().unwrap() {
            sip_cpim_gateway::sip::Contacts::List(l) => l[0].uri.to_string(),
            _ => panic!(),
        };
        let from = sub.from().unwrap();
        fix_length(&format!(
            "NOTIFY {ruri} SIP/2.0\r\nVia: {{via}}\r\nMax-Forwards: 70\r\nFrom: {};tag={to_tag}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} NOTIFY\r\nContact: <sip:bob@{{me}}>\r\nEvent: presence\r\nSubscription-State: {state}\r\nContent-Type: application/pidf+xml\r\n\r\n{body}",
            sub.to().unwrap(),
            from,
            sub.call_id().unwrap(),
        ))
    }

    async fn final_response(&self) -> Message {
        loop {
            let m = self.ua.recv(W).await.expect("a response");
            if m.status().is_some_and(|c| c >= 200) {
                return m;
            }
        }
    }
}

#[tokio::test]
async fn cpim_subscribe_opens_a_sip_dialog_and_maps_the_answer() {
    let e = env("").await;
    let t = e.subscribe(
        "pres:alice@xmpp.example.org",
        "pres:bob@sip.example.net",
        600,
    );
    let sub = e.next_request().await;
    // The SUBSCRIBE of seed §7.2 / design §5, header by header.
    assert_eq!(sub.method(), Some(&Method::Subscribe));
    assert_eq!(
        sub.request_uri().unwrap().to_string(),
        "sip:bob@sip.example.net"
    );
    assert_eq!(
        sub.from().unwrap().uri.to_string(),
        "sip:alice@xmpp.example.org"
    );
    assert_eq!(sub.to().unwrap().uri.to_string(), "sip:bob@sip.example.net");
    assert!(sub.to().unwrap().tag().is_none());
    let tid = sub.from().unwrap().tag().unwrap().to_owned();
    assert_eq!(tid.len(), 40, "From tag = transID");
    assert_eq!(sub.cseq().unwrap().seq, 1);
    assert!(sub.event().unwrap().unwrap().is("presence"));
    assert_eq!(sub.expires().unwrap(), Some(600));
    let accept = sub.header_value(&HeaderName::Accept).unwrap();
    assert!(accept.contains("application/pidf+xml") && accept.contains("application/xpidf+xml"));
    assert!(sub.has_header(&HeaderName::Contact) && sub.max_forwards() == Some(70));
    // 202 → indeterminate, duration from the response's Expires.
    e.answer(&sub, 202, "bobtag", 500).await;
    let (code, v) = t.await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        v,
        json!({"status": "indeterminate", "transID": tid, "duration": 500})
    );

    // A NOTIFY in the dialog → 200 to SIP, a CPIM notify to the adapter.
    let body = pidf(
        "pres:bob@sip.example.net",
        "b1",
        "open",
        "on the phone",
        "2026-11-22T10:00:00Z",
    );
    let text = e.notify_text(&sub, "bobtag", 1, "active;expires=500", &body);
    e.ua.send(&text).await;
    assert_eq!(e.final_response().await.status(), Some(200));
    let calls = e.adapter.wait_calls("notify", 1, W).await;
    let n = &calls[0];
    assert_eq!(
        n["watcher"], "pres:alice@xmpp.example.org",
        "as the adapter sent it"
    );
    assert_eq!(n["target"], "pres:bob@sip.example.net");
    assert_eq!(
        n["presence"]["body"],
        body.as_str(),
        "the body exactly as received"
    );
    assert_eq!(n["presence"]["content_type"], "application/pidf+xml");
    assert_eq!(n["presence"]["tuples"][0]["id"], "b1");
    assert_eq!(n["presence"]["tuples"][0]["note"], "on the phone");
    // transID computed as §7.1 from the NOTIFY.
    let expected = trans_id(
        sub.call_id().unwrap(),
        "sip:alice@xmpp.example.org",
        "sip:bob@sip.example.net",
        1,
        "bobtag",
        &match sub.contacts().unwrap() {
            sip_cpim_gateway::sip::Contacts::List(l) => l[0].uri.to_string(),
            _ => unreachable!(),
        },
    );
    assert_eq!(n["transID"], expected.as_str());

    // terminated → delivered with its reason, state removed; then 481.
    e.ua.send(&e.notify_text(&sub, "bobtag", 2, "terminated;reason=deactivated", &body))
        .await;
    assert_eq!(e.final_response().await.status(), Some(200));
    let calls = e.adapter.wait_calls("notify", 2, W).await;
    assert_eq!(calls[1]["state"], "terminated");
    assert_eq!(calls[1]["reason"], "deactivated");
    e.ua.send(&e.notify_text(&sub, "bobtag", 3, "active", &body))
        .await;
    assert_eq!(
        e.final_response().await.status(),
        Some(481),
        "no dialog any more"
    );
}

#[tokio::test]
async fn cpim_subscribe_outcomes_200_403_and_timeout() {
    let e = env("").await;
    let t = e.subscribe("pres:alice@xmpp.example.org", "pres:ok@sip.example.net", 60);
    let sub = e.next_request().await;
    e.answer(&sub, 200, "t200", 60).await;
    let (_, v) = t.await.unwrap();
    assert_eq!(
        (v["status"].as_str(), v["duration"].as_u64()),
        (Some("success"), Some(60))
    );

    let t = e.subscribe("pres:alice@xmpp.example.org", "pres:no@sip.example.net", 60);
    let sub = e.next_request().await;
    e.answer(&sub, 403, "t403", 0).await;
    let (_, v) = t.await.unwrap();
    assert_eq!(
        (v["status"].as_str(), v["code"].as_u64()),
        (Some("failure"), Some(403))
    );

    let t = e.subscribe(
        "pres:alice@xmpp.example.org",
        "pres:silent@sip.example.net",
        60,
    );
    let _ = e.next_request().await; // never answered: Timer F (64·T1)
    let (_, v) = tokio::time::timeout(Duration::from_secs(10), t)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (v["status"].as_str(), v["code"].as_u64()),
        (Some("failure"), Some(408))
    );
}

#[tokio::test]
async fn cpim_unsubscribe_known_and_unknown() {
    let e = env("").await;
    let t = e.subscribe(
        "pres:alice@xmpp.example.org",
        "pres:bob@sip.example.net",
        600,
    );
    let sub = e.next_request().await;
    e.answer(&sub, 200, "ut", 600).await;
    t.await.unwrap();
    let http = e.http.clone();
    let url = format!("http://{}/cpim/v1/unsubscribe", e.server.http);
    let t = tokio::spawn(async move {
        let r = http.post(url).json(&json!({"watcher": "pres:alice@xmpp.example.org", "target": "pres:bob@sip.example.net"})).send().await.unwrap();
        r.json::<Value>().await.unwrap()
    });
    let unsub = e.next_request().await;
    assert_eq!(unsub.method(), Some(&Method::Subscribe));
    assert_eq!(unsub.expires().unwrap(), Some(0));
    assert_eq!(unsub.call_id(), sub.call_id());
    assert_eq!(unsub.to().unwrap().tag(), Some("ut"));
    assert_eq!(unsub.cseq().unwrap().seq, 2);
    e.answer(&unsub, 200, "ut", 0).await;
    assert_eq!(t.await.unwrap()["status"], "success");
    // Unknown: failure and nothing sent.
    let (_, v) = e
        .post(
            "/cpim/v1/unsubscribe",
            json!({"watcher": "pres:x@xmpp.example.org", "target": "pres:y@sip.example.net"}),
        )
        .await;
    assert_eq!(v["status"], "failure");
    assert!(e.ua.recv(Duration::from_millis(400)).await.is_none());
}

fn watcher_subscribe(cseq: u32, expires: u32, to_tag: Option<&str>) -> String {
    watcher_subscribe_to("sip:carol@xmpp.example.org", cseq, expires, to_tag)
}

/// A SUBSCRIBE of bob's with `ruri` as its Request-URI: inside the dialog a
/// UA sends to the remote target, i.e. the last Contact it was given.
fn watcher_subscribe_to(ruri: &str, cseq: u32, expires: u32, to_tag: Option<&str>) -> String {
    let to = match to_tag {
        Some(t) => format!("<sip:carol@xmpp.example.org>;tag={t}"),
        None => "<sip:carol@xmpp.example.org>".into(),
    };
    format!(
        "SUBSCRIBE {ruri} SIP/2.0\r\nVia: {{via}}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@sip.example.net>;tag=wb\r\nTo: {to}\r\nCall-ID: s2c-1\r\nCSeq: {cseq} SUBSCRIBE\r\nContact: <sip:bob@{{me}}>\r\nEvent: presence\r\nExpires: {expires}\r\n\r\n"
    )
}

#[tokio::test]
async fn sip_watcher_of_a_cpim_presentity() {
    let e = env("").await;
    let mut notifies = Vec::new();
    let r =
        e.ua.request(&watcher_subscribe(1, 600, None), &mut notifies)
            .await;
    // §7.1: 202, To-tag = transID, Expires = adapter duration; Contact =
    // the gateway, where the watcher's in-dialog requests must come.
    assert_eq!(r.status(), Some(202));
    let tid = r.to().unwrap().tag().unwrap().to_owned();
    let calls = e.adapter.calls("subscribe");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["watcher"], "pres:bob@sip.example.net");
    assert_eq!(calls[0]["target"], "pres:carol@xmpp.example.org");
    assert_eq!(calls[0]["duration"], 600);
    assert_eq!(calls[0]["transID"], tid.as_str());
    assert_eq!(tid.len(), 40);
    let c = r.contacts().unwrap();
    let sip_cpim_gateway::sip::Contacts::List(c) = c else {
        panic!()
    };
    let gateway_contact = c[0].uri.to_string();
    assert_eq!(
        gateway_contact,
        format!("sip:{}", e.server.local_addr(Proto::Udp).unwrap())
    );
    assert_eq!(r.expires().unwrap(), Some(300));
    // The immediate NOTIFY: active, no body yet.
    let first = e.ua.triggered_notify(&mut notifies).await;
    assert_eq!(first.from().unwrap().tag(), Some(tid.as_str()));
    assert_eq!(
        first.subscription_state().unwrap().unwrap().state,
        SubState::Active
    );
    assert!(first.body().is_empty());
    // The NOTIFY's Contact is the same remote target as the 202's.
    let sip_cpim_gateway::sip::Contacts::List(nc) = first.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(nc[0].uri.to_string(), gateway_contact);

    // The adapter's notify → NOTIFY in the dialog with the body as sent.
    let body = pidf(
        "pres:carol@xmpp.example.org",
        "c1",
        "open",
        "chatty",
        "2026-11-22T10:00:00Z",
    );
    let e2 = &e;
    let post = async move {
        e2.post("/cpim/v1/notify", json!({"watcher": "pres:bob@sip.example.net", "target": "pres:carol@xmpp.example.org", "presence": {"content_type": "application/pidf+xml", "body": body}})).await
    };
    let (http_answer, n) = tokio::join!(post, e.ua.notify(W, 200));
    assert_eq!(http_answer.1["status"], "success");
    let n = n.unwrap();
    assert_eq!(n.to().unwrap().uri.to_string(), "sip:bob@sip.example.net");
    assert_eq!(n.from().unwrap().tag(), Some(tid.as_str()));
    assert_eq!(n.call_id(), Some("s2c-1"));
    assert!(n.cseq().unwrap().seq > first.cseq().unwrap().seq);
    assert_eq!(
        String::from_utf8_lossy(n.body()),
        pidf(
            "pres:carol@xmpp.example.org",
            "c1",
            "open",
            "chatty",
            "2026-11-22T10:00:00Z"
        )
    );
    // No matching dialog: failure.
    let (_, v) = e.post("/cpim/v1/notify", json!({"watcher": "pres:zed@sip.example.net", "target": "pres:carol@xmpp.example.org", "presence": {"tuples": [{"id": "x", "basic": "open"}]}})).await;
    assert_eq!(v["status"], "failure");

    // A refresh to the remote target (RFC 3261 §12.2.1.1; the NOTIFY's
    // Contact updated it, RFC 6665 §4.1.2.1): routed by dialog, not by the
    // Request-URI's domain, so the gateway answers it and asks the adapter.
    let mut notifies = Vec::new();
    let r =
        e.ua.request(
            &watcher_subscribe_to(&gateway_contact, 2, 600, Some(&tid)),
            &mut notifies,
        )
        .await;
    assert_eq!(r.status(), Some(202), "{r:?}");
    assert_eq!(r.to().unwrap().tag(), Some(tid.as_str()));
    let again = e.adapter.wait_calls("subscribe", 2, W).await;
    assert_eq!(again[1]["transID"], tid.as_str());
    assert_eq!(again[1]["watcher"], "pres:bob@sip.example.net");
    // The presentity is the dialog's, not the Request-URI's.
    assert_eq!(again[1]["target"], "pres:carol@xmpp.example.org");
    let refreshed = e.ua.triggered_notify(&mut notifies).await;
    assert!(refreshed.cseq().unwrap().seq > n.cseq().unwrap().seq);
    // The refresh carried the last state known (design §5).
    assert_eq!(
        String::from_utf8_lossy(refreshed.body()),
        String::from_utf8_lossy(n.body())
    );
    // A request naming no dialog is 481 whatever its Request-URI.
    let mut none = Vec::new();
    let r =
        e.ua.request(
            &watcher_subscribe_to(&gateway_contact, 3, 600, Some("nosuchtag")),
            &mut none,
        )
        .await;
    assert_eq!(r.status(), Some(481));

    // Expires 0 → CPIM unsubscribe with transID = the To-tag, final NOTIFY.
    let mut notifies = Vec::new();
    let r =
        e.ua.request(
            &watcher_subscribe_to(&gateway_contact, 4, 0, Some(&tid)),
            &mut notifies,
        )
        .await;
    assert_eq!(r.status(), Some(200));
    let un = e.adapter.wait_calls("unsubscribe", 1, W).await;
    assert_eq!(un[0]["transID"], tid.as_str());
    assert_eq!(un[0]["target"], "pres:carol@xmpp.example.org");
    assert_eq!(un[0]["watcher"], "pres:bob@sip.example.net");
    let last = e.ua.triggered_notify(&mut notifies).await;
    let ss = last.subscription_state().unwrap().unwrap();
    assert_eq!(
        (ss.state.clone(), ss.reason()),
        (SubState::Terminated, Some("timeout"))
    );
}

#[tokio::test]
async fn sip_watcher_refused_or_adapter_down() {
    let e = env("").await;
    let mut n = Vec::new();
    e.adapter
        .shared
        .subscribe_mode
        .store(adapter::FAILURE, Ordering::SeqCst);
    let r =
        e.ua.request(
            &watcher_subscribe(1, 600, None).replace("s2c-1", "s2c-f"),
            &mut n,
        )
        .await;
    assert_eq!(r.status(), Some(603));
    let tid = e.adapter.calls("subscribe")[0]["transID"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        r.to().unwrap().tag(),
        Some(tid.as_str()),
        "603 with the same To-tag"
    );
    e.adapter
        .shared
        .subscribe_mode
        .store(adapter::HANG, Ordering::SeqCst);
    let r =
        e.ua.request(
            &watcher_subscribe(1, 600, None).replace("s2c-1", "s2c-h"),
            &mut n,
        )
        .await;
    assert_eq!(r.status(), Some(480));
    assert!(r.retry_after().unwrap().is_some());
}

#[tokio::test]
async fn cpim_watcher_of_a_local_presentity_is_served_by_the_pa() {
    let e = env("").await;
    let (_, v) = e.post("/cpim/v1/subscribe", json!({"watcher": "pres:alice@xmpp.example.org", "target": "pres:dave@example.com", "duration": 600, "transID": "tx1"})).await;
    assert_eq!(
        (v["status"].as_str(), v["transID"].as_str()),
        (Some("success"), Some("tx1"))
    );
    let calls = e.adapter.wait_calls("notify", 1, W).await;
    assert_eq!(calls[0]["target"], "pres:dave@example.com");
    assert!(
        calls[0]["presence"]["body"]
            .as_str()
            .unwrap()
            .contains("entity=\"pres:dave@example.com\"")
    );
    // Dave publishes: the CPIM watcher hears of it.
    let mut n = Vec::new();
    let publish = format!(
        "PUBLISH sip:dave@example.com SIP/2.0\r\nVia: {{via}}\r\nMax-Forwards: 70\r\nFrom: <sip:dave@example.com>;tag=d\r\nTo: <sip:dave@example.com>\r\nCall-ID: dp\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nContent-Type: application/pidf+xml\r\n\r\n{}",
        pidf(
            "pres:dave@example.com",
            "dv",
            "open",
            "lunch",
            "2026-11-22T12:00:00Z"
        )
    );
    assert_eq!(e.ua.request(&publish, &mut n).await.status(), Some(200));
    let calls = e.adapter.wait_calls("notify", 2, W).await;
    assert_eq!(calls[1]["presence"]["tuples"][0]["note"], "lunch");
    // The fetch view of the same presentity.
    let r = e
        .http
        .get(format!(
            "http://{}/cpim/v1/presence/pres:dave@example.com",
            e.server.http
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/pidf+xml");
    assert!(r.text().await.unwrap().contains("lunch"));
}

#[tokio::test]
async fn adapter_down_loses_nothing_and_keeps_order() {
    let e = env("").await;
    let t = e.subscribe(
        "pres:alice@xmpp.example.org",
        "pres:bob@sip.example.net",
        600,
    );
    let sub = e.next_request().await;
    e.answer(&sub, 200, "dt", 600).await;
    t.await.unwrap();
    e.adapter.shared.fail_notify.store(true, Ordering::SeqCst);
    for i in 1..=5 {
        let body = pidf(
            "pres:bob@sip.example.net",
            &format!("n{i}"),
            "open",
            "",
            "2026-11-22T10:00:00Z",
        );
        e.ua.send(&e.notify_text(&sub, "dt", i, "active", &body))
            .await;
        assert_eq!(
            e.final_response().await.status(),
            Some(200),
            "SIP side is answered while the adapter is down"
        );
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(e.adapter.calls("notify").is_empty());
    assert_eq!(e.server.adapter.depth(), 5, "queued durably");
    assert!(e.server.adapter.failures() > 0, "retried");
    e.adapter.shared.fail_notify.store(false, Ordering::SeqCst);
    let calls = e.adapter.wait_calls("notify", 5, W).await;
    let ids: Vec<&str> = calls
        .iter()
        .map(|c| c["presence"]["tuples"][0]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["n1", "n2", "n3", "n4", "n5"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(e.server.adapter.depth(), 0);
}

/// The adapter queue is bounded (`[cpim] adapter_max_pending`): with the
/// adapter down and the queue full of notifies nothing can be coalesced
/// with, a NOTIFY for another stream is refused 503 + Retry-After and
/// changes nothing, so the notifier's retry with the same CSeq is taken
/// once there is room (RFC 3261 §21.5.4, RFC 6665 §4.1.3).
#[tokio::test]
async fn a_full_adapter_queue_refuses_and_changes_nothing() {
    let e = env_with("", |cfg, _| cfg.cpim.adapter_max_pending = 2).await;
    let mut dialogs = Vec::new();
    for (w, tag) in [("alice", "ta"), ("carol", "tc"), ("dora", "td")] {
        let t = e.subscribe(
            &format!("pres:{w}@xmpp.example.org"),
            "pres:bob@sip.example.net",
            600,
        );
        let sub = e.next_request().await;
        e.answer(&sub, 200, tag, 600).await;
        t.await.unwrap();
        dialogs.push((sub, tag));
    }
    e.adapter.shared.fail_notify.store(true, Ordering::SeqCst);
    let body = pidf(
        "pres:bob@sip.example.net",
        "q",
        "open",
        "",
        "2026-11-22T10:00:00Z",
    );
    for (sub, tag) in &dialogs[..2] {
        e.ua.send(&e.notify_text(sub, tag, 1, "active", &body))
            .await;
        assert_eq!(e.final_response().await.status(), Some(200));
    }
    let (sub, tag) = &dialogs[2];
    let third = e.notify_text(sub, tag, 1, "active", &body);
    e.ua.send(&third).await;
    let r = e.final_response().await;
    assert_eq!(r.status(), Some(503), "{r:?}");
    assert!(r.retry_after().unwrap().is_some(), "{r:?}");
    assert_eq!(
        e.server.adapter.depth(),
        2,
        "nothing queued for the refused one"
    );
    // The adapter is back; the queue drains, and the same NOTIFY (same
    // CSeq: the refused one changed nothing) is taken.
    e.adapter.shared.fail_notify.store(false, Ordering::SeqCst);
    e.adapter.wait_calls("notify", 2, W).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    e.ua.send(&third).await;
    assert_eq!(e.final_response().await.status(), Some(200));
    e.adapter.wait_calls("notify", 3, W).await;
}

#[tokio::test]
async fn http_errors_are_json_and_change_nothing() {
    let e = env("").await;
    let base = format!("http://{}", e.server.http);
    let r = e
        .http
        .post(format!("{base}/cpim/v1/subscribe"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_json"
    );
    let (code, v) = e
        .post(
            "/cpim/v1/subscribe",
            json!({"watcher": "alice", "target": "pres:bob@sip.example.net"}),
        )
        .await;
    assert_eq!(code, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("watcher"));
    let (code, _) = e
        .post(
            "/cpim/v1/subscribe",
            json!({"watcher": "pres:a@x.org", "target": "pres:b@y.org", "extra": 1}),
        )
        .await;
    assert_eq!(code, 400, "unknown fields are refused");
    let r = e
        .http
        .post(format!("{base}/cpim/v1/notify"))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    assert!(
        e.ua.recv(Duration::from_millis(300)).await.is_none(),
        "nothing went out on SIP"
    );
    let r = e.http.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let api: Value = e
        .http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for p in [
        "/cpim/v1/subscribe",
        "/cpim/v1/unsubscribe",
        "/cpim/v1/notify",
        "/cpim/v1/presence/{presentity}",
    ] {
        assert!(api["paths"][p].is_object(), "{p} documented");
    }
    assert!(api["components"]["schemas"]["CpimResponse"].is_object());
}

#[tokio::test]
async fn bearer_token_protects_the_api() {
    let e = env("s3cret").await;
    let (code, v) = e
        .post(
            "/cpim/v1/unsubscribe",
            json!({"watcher": "pres:a@xmpp.example.org", "target": "pres:b@sip.example.net"}),
        )
        .await;
    assert_eq!(code, 401);
    assert_eq!(v["error"]["code"], "unauthorized");
    let r = e
        .http
        .post(format!("http://{}/cpim/v1/unsubscribe", e.server.http))
        .bearer_auth("s3cret")
        .json(&json!({"watcher": "pres:a@xmpp.example.org", "target": "pres:b@sip.example.net"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

/// RFC 3862 message/cpim wrapping a PIDF, CRLF line ends.
fn cpim_wrapped(entity: &str, id: &str) -> String {
    let inner = pidf(entity, id, "open", "signed", "2026-11-22T10:00:00Z");
    format!(
        "From: <{entity}>\r\nTo: <pres:watcher@example.org>\r\nDateTime: 2026-11-22T10:00:00Z\r\n\r\nContent-Type: application/pidf+xml\r\nContent-ID: <1234@example.org>\r\n\r\n{inner}"
    )
}

#[tokio::test]
async fn message_cpim_bodies_travel_unchanged_both_ways() {
    let e = env("").await;
    // SIP → CPIM: a NOTIFY with a message/cpim body reaches the adapter byte
    // for byte, its inner PIDF parsed for the tuples view.
    let t = e.subscribe(
        "pres:alice@xmpp.example.org",
        "pres:bob@sip.example.net",
        600,
    );
    let sub = e.next_request().await;
    e.answer(&sub, 200, "mc", 600).await;
    t.await.unwrap();
    let wrapped = cpim_wrapped("pres:bob@sip.example.net", "w1");
    let text = e
        .notify_text(&sub, "mc", 1, "active", &wrapped)
        // The SIP header is the first Content-Type; the inner one stays.
        .replacen(
            "Content-Type: application/pidf+xml",
            "Content-Type: message/cpim",
            1,
        );
    e.ua.send(&text).await;
    assert_eq!(e.final_response().await.status(), Some(200));
    let n = &e.adapter.wait_calls("notify", 1, W).await[0];
    assert_eq!(n["presence"]["content_type"], "message/cpim");
    assert_eq!(n["presence"]["body"], wrapped.as_str(), "never rewritten");
    assert_eq!(n["presence"]["tuples"][0]["id"], "w1");

    // CPIM → SIP: the adapter's message/cpim body goes into the NOTIFY as is.
    let mut notifies = Vec::new();
    let r =
        e.ua.request(
            &watcher_subscribe(1, 600, None).replace("s2c-1", "s2c-mc"),
            &mut notifies,
        )
        .await;
    assert_eq!(r.status(), Some(202));
    e.ua.triggered_notify(&mut notifies).await;
    let body = cpim_wrapped("pres:carol@xmpp.example.org", "c9");
    let e2 = &e;
    let b2 = body.clone();
    let post = async move {
        e2.post(
            "/cpim/v1/notify",
            json!({"watcher": "pres:bob@sip.example.net", "target": "pres:carol@xmpp.example.org", "presence": {"content_type": "message/cpim", "body": b2}}),
        )
        .await
    };
    let (answer, got) = tokio::join!(post, e.ua.notify(W, 200));
    assert_eq!(answer.1["status"], "success");
    let got = got.unwrap();
    assert_eq!(
        got.content_type().unwrap().unwrap().essence_str(),
        "message/cpim"
    );
    assert_eq!(String::from_utf8_lossy(got.body()), body);
}

/// `Authorization` for alice (password `wonderland`, realm example.com)
/// answering the MD5 challenge of `challenge`.
fn alice_authorization(challenge: &Message, method: &str, uri: &str, nc: &str) -> String {
    use sip_cpim_gateway::auth::digest::{self, Algorithm};
    let ch = challenge.www_authenticate().unwrap();
    let c = ch
        .iter()
        .find(|c| c.param("algorithm").as_deref() == Some("MD5"))
        .expect("an MD5 challenge");
    let nonce = c.param("nonce").unwrap();
    let ha1 = digest::ha1(Algorithm::Md5, "alice", "example.com", "wonderland");
    let r = digest::response(
        Algorithm::Md5,
        &ha1,
        &nonce,
        Some((nc, "c0ffee", "auth")),
        method,
        uri,
    );
    format!(
        "Authorization: Digest username=\"alice\", realm=\"example.com\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{r}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"c0ffee\"\r\n"
    )
}

/// With digest authentication on, a SUBSCRIBE to a CPIM-domain presentity
/// is challenged like a local one (RFC 3261 §22), and the watcher the
/// adapter sees is the authenticated identity, not the From header's claim:
/// the CPIM side authorizes by it. Refreshes in the dialog are challenged
/// too, and only the dialog's own watcher may refresh it.
#[tokio::test]
async fn sip_watchers_of_cpim_presentities_are_authenticated() {
    let e = env_with("", |cfg, dir| {
        use sip_cpim_gateway::auth::digest::{self, Algorithm};
        let creds = dir.0.join("users");
        let md5 = digest::ha1(Algorithm::Md5, "alice", "example.com", "wonderland");
        std::fs::write(&creds, format!("alice:example.com:{md5}\n")).unwrap();
        cfg.auth.enabled = true;
        cfg.auth.realm = "example.com".into();
        cfg.auth.credentials_file = creds.display().to_string();
    })
    .await;
    let ruri = "sip:carol@xmpp.example.org";
    // No credentials, From claiming bob: challenged, the adapter never asked.
    let mut notifies = Vec::new();
    let r =
        e.ua.request(&watcher_subscribe(1, 600, None), &mut notifies)
            .await;
    assert_eq!(r.status(), Some(401));
    assert!(e.adapter.calls("subscribe").is_empty());
    // Alice's credentials: accepted, and the adapter is asked for alice.
    let auth = alice_authorization(&r, "SUBSCRIBE", ruri, "00000001");
    let text = watcher_subscribe(2, 600, None)
        .replace("Event: presence\r\n", &format!("Event: presence\r\n{auth}"));
    let r = e.ua.request(&text, &mut notifies).await;
    assert_eq!(r.status(), Some(202), "{r:?}");
    let calls = e.adapter.calls("subscribe");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["watcher"], "pres:alice@example.com");
    let tid = r.to().unwrap().tag().unwrap().to_owned();
    let sip_cpim_gateway::sip::Contacts::List(c) = r.contacts().unwrap() else {
        panic!()
    };
    let gateway_contact = c[0].uri.to_string();
    e.ua.triggered_notify(&mut notifies).await;
    // A refresh without credentials is challenged, with them accepted.
    let mut notifies = Vec::new();
    let refresh = |cseq, extra: &str| {
        watcher_subscribe_to(&gateway_contact, cseq, 600, Some(&tid)).replace(
            "Event: presence\r\n",
            &format!("Event: presence\r\n{extra}"),
        )
    };
    let r = e.ua.request(&refresh(3, ""), &mut notifies).await;
    assert_eq!(r.status(), Some(401));
    let auth = alice_authorization(&r, "SUBSCRIBE", &gateway_contact, "00000001");
    let r = e.ua.request(&refresh(4, &auth), &mut notifies).await;
    assert_eq!(r.status(), Some(202), "{r:?}");
    let calls = e.adapter.wait_calls("subscribe", 2, W).await;
    assert_eq!(calls[1]["watcher"], "pres:alice@example.com");
}

/// Design §6 / issue 19: nothing is acknowledged that is not durable. With
/// every commit failing, each gateway path that would acknowledge answers
/// 500 (SIP) or 503 (CPIM) instead, and sends nothing that claims success:
/// no 202, no NOTIFY, no SUBSCRIBE carrying a CSeq the store does not hold.
#[tokio::test]
async fn failed_commits_are_never_acknowledged() {
    let e = env("").await;
    // --- SIP → CPIM (§7.1): a SIP watcher's new SUBSCRIBE.
    e.fail.store(true, Ordering::SeqCst);
    let mut notifies = Vec::new();
    let r =
        e.ua.request(&watcher_subscribe(1, 600, None), &mut notifies)
            .await;
    assert_eq!(r.status(), Some(500), "{r:?}");
    assert!(notifies.is_empty());
    quiet(&e).await;
    // Nothing was kept: with the store back, its refresh is 481.
    e.fail.store(false, Ordering::SeqCst);
    let tid = trans_id_of_first_subscribe();
    let r =
        e.ua.request(&watcher_subscribe(2, 600, Some(&tid)), &mut notifies)
            .await;
    assert_eq!(r.status(), Some(481));
    // A real subscription, then its unsubscribe while the store fails.
    let text = watcher_subscribe(1, 600, None).replace("s2c-1", "s2c-fail");
    let r = e.ua.request(&text, &mut notifies).await;
    assert_eq!(r.status(), Some(202));
    let tid = r.to().unwrap().tag().unwrap().to_owned();
    e.ua.triggered_notify(&mut notifies).await;
    e.fail.store(true, Ordering::SeqCst);
    // Its refresh: 500, and no NOTIFY.
    let re = watcher_subscribe(2, 600, Some(&tid)).replace("s2c-1", "s2c-fail");
    let mut refreshed = Vec::new();
    let r = e.ua.request(&re, &mut refreshed).await;
    assert_eq!(r.status(), Some(500), "{r:?}");
    assert!(refreshed.is_empty(), "no NOTIFY: {refreshed:?}");
    let un = watcher_subscribe(3, 0, Some(&tid)).replace("s2c-1", "s2c-fail");
    let mut finals = Vec::new();
    let r = e.ua.request(&un, &mut finals).await;
    assert_eq!(r.status(), Some(500), "{r:?}");
    assert!(finals.is_empty(), "no final NOTIFY: {finals:?}");
    quiet(&e).await;
    // A CPIM notify for a watcher whose dialog exists: 503, no NOTIFY.
    let (code, v) = e
        .post(
            "/cpim/v1/notify",
            json!({"watcher": "pres:bob@sip.example.net", "target": "pres:carol@xmpp.example.org",
                   "presence": {"tuples": [{"id": "c", "basic": "open"}]}}),
        )
        .await;
    assert_eq!(code, 503, "{v}");
    assert_eq!(v["error"]["code"], "unavailable", "{v}");
    quiet(&e).await;
    // The CPIM side ends it: 503, and no final NOTIFY.
    let (code, v) = e
        .post(
            "/cpim/v1/notify",
            json!({"watcher": "pres:bob@sip.example.net", "target": "pres:carol@xmpp.example.org",
                   "presence": {}, "state": "terminated", "reason": "rejected"}),
        )
        .await;
    assert_eq!(code, 503, "{v}");
    quiet(&e).await;

    // --- CPIM → SIP (§7.2): the SIP 2xx arrives, the dialog cannot be stored.
    let t = e.subscribe(
        "pres:alice@xmpp.example.org",
        "pres:bob@sip.example.net",
        600,
    );
    let sub = e.next_request().await;
    e.answer(&sub, 200, "bobtag", 600).await;
    let (code, v) = t.await.unwrap();
    assert_eq!(code, 503, "{v}");
    // A CPIM subscribe that works, then a NOTIFY and an unsubscribe while
    // the store fails.
    e.fail.store(false, Ordering::SeqCst);
    let t = e.subscribe(
        "pres:dora@xmpp.example.org",
        "pres:bob@sip.example.net",
        600,
    );
    let sub = e.next_request().await;
    e.answer(&sub, 200, "dtag", 600).await;
    let (code, v) = t.await.unwrap();
    assert_eq!((code, v["status"].as_str()), (200, Some("success")));
    e.fail.store(true, Ordering::SeqCst);
    // Its refresh: 503, and no SUBSCRIBE with a CSeq the store lacks.
    let t = e.subscribe(
        "pres:dora@xmpp.example.org",
        "pres:bob@sip.example.net",
        900,
    );
    let (code, v) = t.await.unwrap();
    assert_eq!(code, 503, "{v}");
    quiet(&e).await;
    let body = pidf(
        "pres:bob@sip.example.net",
        "b1",
        "open",
        "x",
        "2026-11-22T10:00:00Z",
    );
    let text = e.notify_text(&sub, "dtag", 1, "active;expires=600", &body);
    e.ua.send(&text).await;
    assert_eq!(e.final_response().await.status(), Some(500));
    let (code, v) = e
        .post(
            "/cpim/v1/unsubscribe",
            json!({"watcher": "pres:dora@xmpp.example.org", "target": "pres:bob@sip.example.net"}),
        )
        .await;
    assert_eq!(code, 503, "{v}");
    quiet(&e).await;
    assert!(e.adapter.calls("notify").is_empty());
}

/// Nothing reaches the SIP side for a while.
async fn quiet(e: &Env) {
    let m = e.ua.recv(Duration::from_millis(600)).await;
    assert!(m.is_none(), "nothing may be sent: {m:?}");
}

/// The transID the gateway computes for `watcher_subscribe(1, 600, None)`.
fn trans_id_of_first_subscribe() -> String {
    trans_id(
        "s2c-1",
        "sip:carol@xmpp.example.org",
        "sip:bob@sip.example.net",
        1,
        "wb",
        "sip:carol@xmpp.example.org",
    )
}

/// RFC 3263 §4.3: the gateway's requests fail over between the targets of
/// their next hop — here a domain's static routes in order: a TCP hop that
/// refuses the connection (transport error), then one that answers 503,
/// then one that answers 200. Each attempt is a new transaction (new
/// branch), and the CPIM side hears the last answer.
#[tokio::test]
async fn requests_fail_over_between_the_targets_of_their_next_hop() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }; // dropped: nothing listens there any more
    let busy = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let busy_addr = busy.local_addr().unwrap();
    let e = env_with("", move |cfg, _| {
        cfg.sip.listen.push("tcp:127.0.0.1:0".into());
        let last = cfg.sip.routes.remove(0); // the test UA
        cfg.sip.routes = vec![
            StaticRoute {
                domain: "sip.example.net".into(),
                next_hop: format!("tcp:{closed}"),
            },
            StaticRoute {
                domain: "sip.example.net".into(),
                next_hop: format!("udp:{busy_addr}"),
            },
            last,
        ];
    })
    .await;
    let t = e.subscribe(
        "pres:alice@xmpp.example.org",
        "pres:bob@sip.example.net",
        600,
    );
    // The second route answers 503.
    let (first, _) = support::recv_udp(&busy, W).await.expect("a SUBSCRIBE");
    assert_eq!(first.method(), Some(&Method::Subscribe));
    let r = Message::response_to(&first, 503, "Service Unavailable");
    busy.send_to(&r.to_bytes(), e.ua.server).await.unwrap();
    // The third gets the same request as a new transaction.
    let sub = e.next_request().await;
    assert_eq!(sub.method(), Some(&Method::Subscribe));
    assert_eq!(sub.call_id(), first.call_id());
    assert_eq!(sub.cseq().unwrap().seq, first.cseq().unwrap().seq);
    assert_ne!(
        sub.top_via().unwrap().branch(),
        first.top_via().unwrap().branch()
    );
    e.answer(&sub, 200, "bobtag", 600).await;
    let (code, v) = t.await.unwrap();
    assert_eq!((code, v["status"].as_str()), (200, Some("success")), "{v}");
    // Nothing more reaches the 503 target.
    assert!(
        support::recv_udp(&busy, Duration::from_millis(300))
            .await
            .is_none()
    );
}

/// The CPIM side ends a SIP watcher's subscription (an XMPP user refuses
/// or revokes it): `POST /cpim/v1/notify` with `state: terminated` and a
/// reason gives the watcher its final NOTIFY `terminated;reason=…` (RFC 6665
/// §4.2.2), removes the dialog (a refresh is then 481), and sends nothing
/// back to the adapter. A state that is not a subscription state is 400 and
/// changes nothing; `pending` is carried as pending.
#[tokio::test]
async fn cpim_notify_carries_pending_and_terminated_states() {
    let e = env("").await;
    let mut notifies = Vec::new();
    let r =
        e.ua.request(&watcher_subscribe(1, 600, None), &mut notifies)
            .await;
    assert_eq!(r.status(), Some(202));
    let tid = r.to().unwrap().tag().unwrap().to_owned();
    e.ua.triggered_notify(&mut notifies).await;
    let pair =
        json!({"watcher": "pres:bob@sip.example.net", "target": "pres:carol@xmpp.example.org"});
    let with = |extra: Value| {
        let mut v = pair.clone();
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    // Not a state: 400, nothing sent.
    let (code, v) = e
        .post(
            "/cpim/v1/notify",
            with(
                json!({"state": "paused", "presence": {"tuples": [{"id": "c", "basic": "open"}]}}),
            ),
        )
        .await;
    assert_eq!(code, 400, "{v}");
    let (code, v) = e
        .post(
            "/cpim/v1/notify",
            with(json!({"reason": "rejected", "presence": {"tuples": [{"id": "c", "basic": "open"}]}})),
        )
        .await;
    assert_eq!(code, 400, "a reason without terminated: {v}");
    quiet(&e).await;
    // pending → NOTIFY pending.
    let e2 = &e;
    let post = async move {
        e2.post(
            "/cpim/v1/notify",
            with(json!({"state": "pending", "presence": {"tuples": [{"id": "c", "basic": "closed"}]}})),
        )
        .await
    };
    let ((code, _), n) = tokio::join!(post, e.ua.notify(W, 200));
    assert_eq!(code, 200);
    let n = n.unwrap();
    assert_eq!(
        n.subscription_state().unwrap().unwrap().state,
        SubState::Pending
    );
    // terminated;reason=rejected, no body needed.
    let e2 = &e;
    let post = async move {
        e2.post(
            "/cpim/v1/notify",
            with(json!({"state": "terminated", "reason": "rejected", "presence": {}})),
        )
        .await
    };
    let ((code, v), last) = tokio::join!(post, e.ua.notify(W, 200));
    assert_eq!((code, v["status"].as_str()), (200, Some("success")), "{v}");
    let last = last.unwrap();
    let ss = last.subscription_state().unwrap().unwrap();
    assert_eq!(
        (ss.state.clone(), ss.reason()),
        (SubState::Terminated, Some("rejected"))
    );
    assert!(last.cseq().unwrap().seq > n.cseq().unwrap().seq);
    // The dialog is gone, and the adapter heard nothing back.
    let mut none = Vec::new();
    let r =
        e.ua.request(&watcher_subscribe(2, 600, Some(&tid)), &mut none)
            .await;
    assert_eq!(r.status(), Some(481));
    assert!(e.adapter.calls("unsubscribe").is_empty());
    assert_eq!(e.adapter.calls("subscribe").len(), 1);
}
