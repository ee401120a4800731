//! The internal presence agent over real UDP: every status code of RFC 3903
//! PUBLISH and RFC 6665/3856 SUBSCRIBE handling, registration-driven
//! presence (seed §10.2/§10.3), composition (OMA 2.1), expiry (OMA 2.2) and
//! fetch (OMA 2.3).

mod support;

use sip_cpim_gateway::config::Config;
use sip_cpim_gateway::server::Server;
use sip_cpim_gateway::sip::{HeaderName, Message, SubState};
use sip_cpim_gateway::transport::Proto;
use std::time::Duration;
use support::{TempDir, Ua, pidf};

const W: Duration = Duration::from_secs(5);

async fn start(dir: &TempDir, min_expires: u32) -> Server {
    start_with(dir, min_expires, |_| {}).await
}

async fn start_with(dir: &TempDir, min_expires: u32, tune: impl FnOnce(&mut Config)) -> Server {
    let mut cfg = Config::default();
    cfg.sip.listen = vec!["udp:127.0.0.1:0".into()];
    cfg.cpim.listen = "127.0.0.1:0".into();
    cfg.store.path = dir.0.join("store").display().to_string();
    cfg.presence.min_expires = min_expires;
    cfg.presence.default_policy = "allow".into();
    cfg.presence.notify_min_interval_ms = 0;
    tune(&mut cfg);
    Server::start(&cfg).await.unwrap()
}

fn publish(
    etag: Option<&str>,
    expires: Option<u32>,
    ct: Option<&str>,
    body: &str,
    extra: &str,
) -> String {
    let mut h = String::from(
        "PUBLISH sip:alice@example.com SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=pub\r\nTo: <sip:alice@example.com>\r\nCall-ID: pub-{me}\r\nCSeq: 1 PUBLISH\r\n",
    );
    h.push_str(extra);
    if let Some(t) = etag {
        h.push_str(&format!("SIP-If-Match: {t}\r\n"));
    }
    if let Some(e) = expires {
        h.push_str(&format!("Expires: {e}\r\n"));
    }
    if let Some(ct) = ct {
        h.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    format!("{h}\r\n{body}")
}

fn subscribe(target: &str, call_id: &str, expires: u32, extra: &str) -> String {
    format!(
        "SUBSCRIBE {target} SIP/2.0\r\nVia: {{via}}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=bob1\r\nTo: <{target}>\r\nCall-ID: {call_id}\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:bob@{{me}}>\r\nExpires: {expires}\r\n{extra}\r\n"
    )
}

fn body(m: &Message) -> String {
    String::from_utf8_lossy(m.body()).into_owned()
}

fn state(m: &Message) -> (SubState, Option<String>, Option<u32>) {
    let s = m.subscription_state().unwrap().expect("Subscription-State");
    (s.state.clone(), s.reason().map(str::to_owned), s.expires())
}

#[tokio::test]
async fn publish_status_codes() {
    let dir = TempDir::new("pub");
    let s = start(&dir, 60).await;
    let ua = Ua::new(s.local_addr(Proto::Udp).unwrap()).await;
    let mut n = Vec::new();
    let doc = pidf(
        "pres:alice@example.com",
        "t1",
        "open",
        "hi",
        "2026-11-22T10:00:00Z",
    );
    let ct = Some("application/pidf+xml");

    // 489 with Allow-Events: no Event, or an unknown one (RFC 3903 §6 step 6).
    let r = ua.request(&publish(None, None, ct, &doc, ""), &mut n).await;
    assert_eq!(r.status(), Some(489));
    assert_eq!(r.header_value(&HeaderName::AllowEvents), Some("presence"));
    let r = ua
        .request(&publish(None, None, ct, &doc, "Event: dialog\r\n"), &mut n)
        .await;
    assert_eq!(r.status(), Some(489));
    let ev = "Event: presence\r\n";
    // 404: not a local presentity.
    let r = ua
        .request(
            &publish(None, None, ct, &doc, ev).replace(
                "PUBLISH sip:alice@example.com",
                "PUBLISH sip:alice@elsewhere.org",
            ),
            &mut n,
        )
        .await;
    assert_eq!(r.status(), Some(404));
    // 400: neither body nor entity-tag; two entity-tags.
    let r = ua.request(&publish(None, None, None, "", ev), &mut n).await;
    assert_eq!(r.status(), Some(400));
    let r = ua
        .request(
            &publish(
                Some("a"),
                None,
                None,
                "",
                &format!("{ev}SIP-If-Match: b\r\n"),
            ),
            &mut n,
        )
        .await;
    assert_eq!(r.status(), Some(400));
    // 423 with Min-Expires.
    let r = ua
        .request(&publish(None, Some(10), ct, &doc, ev), &mut n)
        .await;
    assert_eq!(r.status(), Some(423));
    assert_eq!(r.min_expires().unwrap(), Some(60));
    // 415 with Accept.
    let r = ua
        .request(
            &publish(None, None, Some("text/plain"), "hello", ev),
            &mut n,
        )
        .await;
    assert_eq!(r.status(), Some(415));
    assert!(
        r.header_value(&HeaderName::Accept)
            .unwrap()
            .contains("application/pidf+xml")
    );
    // 400: a document that is not PIDF.
    let r = ua
        .request(&publish(None, None, ct, "<presence", ev), &mut n)
        .await;
    assert_eq!(r.status(), Some(400));
    // 200: SIP-ETag, default Expires 3600.
    let r = ua.request(&publish(None, None, ct, &doc, ev), &mut n).await;
    assert_eq!(r.status(), Some(200));
    assert_eq!(r.expires().unwrap(), Some(3600));
    let etag = r
        .sip_etag()
        .unwrap()
        .expect("SIP-ETag on every 2xx")
        .to_string();
    // Shortened to max_expires.
    let r2 = ua
        .request(
            &publish(
                None,
                Some(999_999),
                ct,
                &pidf(
                    "pres:alice@example.com",
                    "t9",
                    "open",
                    "",
                    "2026-11-22T10:00:00Z",
                ),
                ev,
            ),
            &mut n,
        )
        .await;
    assert_eq!(r2.expires().unwrap(), Some(86400));
    // 412: unknown entity-tag.
    let r = ua
        .request(&publish(Some("nosuchtag"), None, None, "", ev), &mut n)
        .await;
    assert_eq!(r.status(), Some(412));
    // 494: an older timestamp for a tuple we hold (seed 002 §10 step 8).
    let old = pidf(
        "pres:alice@example.com",
        "t1",
        "closed",
        "old",
        "2026-11-22T09:00:00Z",
    );
    let r = ua
        .request(&publish(Some(&etag), None, ct, &old, ev), &mut n)
        .await;
    assert_eq!((r.status(), r.reason()), (Some(494), Some("Out Of Sync")));
    // Refresh: no body, new entity-tag, Expires present.
    let r = ua
        .request(&publish(Some(&etag), Some(120), None, "", ev), &mut n)
        .await;
    assert_eq!(r.status(), Some(200));
    assert_eq!(r.expires().unwrap(), Some(120));
    let etag2 = r.sip_etag().unwrap().unwrap().to_string();
    assert_ne!(etag2, etag);
    // The old tag is gone: 412.
    let r = ua
        .request(&publish(Some(&etag), None, None, "", ev), &mut n)
        .await;
    assert_eq!(r.status(), Some(412));
    // Remove with Expires: 0.
    let r = ua
        .request(&publish(Some(&etag2), Some(0), None, "", ev), &mut n)
        .await;
    assert_eq!((r.status(), r.expires().unwrap()), (Some(200), Some(0)));
    let r = ua
        .request(&publish(Some(&etag2), None, None, "", ev), &mut n)
        .await;
    assert_eq!(r.status(), Some(412));
}

#[tokio::test]
async fn subscribe_status_codes() {
    let dir = TempDir::new("sub");
    let s = start(&dir, 60).await;
    let ua = Ua::new(s.local_addr(Proto::Udp).unwrap()).await;
    let mut n = Vec::new();
    let t = "sip:alice@example.com";
    let r = ua.request(&subscribe(t, "c1", 600, ""), &mut n).await;
    assert_eq!(r.status(), Some(489), "no Event header");
    assert_eq!(
        r.header_value(&HeaderName::AllowEvents),
        Some("presence, presence.winfo")
    );
    let r = ua
        .request(
            &subscribe(t, "c2", 600, "Event: message-summary\r\n"),
            &mut n,
        )
        .await;
    assert_eq!(r.status(), Some(489));
    let r = ua
        .request(
            &subscribe(t, "c3", 600, "Event: presence\r\nAccept: text/plain\r\n"),
            &mut n,
        )
        .await;
    assert_eq!(r.status(), Some(406));
    let r = ua
        .request(&subscribe(t, "c4", 10, "Event: presence\r\n"), &mut n)
        .await;
    assert_eq!(
        (r.status(), r.min_expires().unwrap()),
        (Some(423), Some(60))
    );
    let r = ua
        .request(
            &subscribe("sip:carol@elsewhere.org", "c5", 600, "Event: presence\r\n"),
            &mut n,
        )
        .await;
    assert_eq!(r.status(), Some(404));
    let r = ua
        .request(
            &subscribe(t, "c6", 600, "Event: presence\r\n")
                .replace(&format!("To: <{t}>"), &format!("To: <{t}>;tag=nosuch")),
            &mut n,
        )
        .await;
    assert_eq!(r.status(), Some(481), "refresh of an unknown subscription");
    let stray = "NOTIFY sip:gw@example.com SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <sip:x@example.net>;tag=a\r\nTo: <sip:gw@example.com>;tag=b\r\nCall-ID: stray\r\nCSeq: 1 NOTIFY\r\nEvent: presence\r\nSubscription-State: active\r\n\r\n";
    let r = ua.request(stray, &mut n).await;
    assert_eq!(r.status(), Some(481), "NOTIFY matching no dialog");
    let r = ua
        .request(
            &subscribe(t, "c7", 600, "Event: presence\r\n")
                .replace("Contact: <sip:bob@{me}>\r\n", ""),
            &mut n,
        )
        .await;
    assert_eq!(r.status(), Some(400), "SUBSCRIBE without Contact");
}

/// `[presence] max_subscriptions_per_watcher` and `max_subscriptions`:
/// refused before anything is held (403 / 503 + Retry-After, the limit
/// named in a Warning); a fetch is not held and not counted; ending a
/// subscription frees its place.
#[tokio::test]
async fn subscription_limits_are_enforced() {
    let dir = TempDir::new("limits");
    let s = start_with(&dir, 60, |c| {
        c.presence.max_subscriptions_per_watcher = 2;
        c.presence.max_subscriptions = 3;
    })
    .await;
    let ua = Ua::new(s.local_addr(Proto::Udp).unwrap()).await;
    let mut n = Vec::new();
    let ev = "Event: presence\r\n";
    for (i, target) in ["sip:p1@example.com", "sip:p2@example.com"]
        .iter()
        .enumerate()
    {
        let r = ua
            .request(&subscribe(target, &format!("lim{i}"), 600, ev), &mut n)
            .await;
        assert_eq!(r.status(), Some(200), "subscription {i} within the limit");
    }
    let third = subscribe("sip:p3@example.com", "lim2", 600, ev);
    let r = ua.request(&third, &mut n).await;
    assert_eq!(r.status(), Some(403), "bob's third subscription");
    let warning = r.header_value(&HeaderName::Warning).unwrap_or_default();
    assert!(
        warning.starts_with("399 ") && warning.contains("per-watcher limit"),
        "{warning}"
    );
    // A fetch (Expires: 0) holds nothing, so it is not refused.
    let r = ua
        .request(&subscribe("sip:p3@example.com", "lim-fetch", 0, ev), &mut n)
        .await;
    assert_eq!(r.status(), Some(200), "fetch within the limit");
    // Another watcher fills the global limit (3), then a fourth is 503.
    let carol = |call: &str, target: &str| {
        subscribe(target, call, 600, ev).replace(
            "sip:bob@example.com>;tag=bob1",
            "sip:carol@example.com>;tag=c1",
        )
    };
    let r = ua
        .request(&carol("lim3", "sip:p1@example.com"), &mut n)
        .await;
    assert_eq!(r.status(), Some(200));
    let r = ua
        .request(&carol("lim4", "sip:p2@example.com"), &mut n)
        .await;
    assert_eq!(r.status(), Some(503), "global limit");
    assert_eq!(r.header_value(&HeaderName::RetryAfter), Some("60"));
    assert!(
        r.header_value(&HeaderName::Warning)
            .is_some_and(|w| w.contains("3 subscriptions, its limit"))
    );
    // A CPIM watcher of a local presentity counts against the same limits.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cpim: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/cpim/v1/subscribe", s.http))
        .json(&serde_json::json!({"watcher": "pres:xena@xmpp.example.org",
            "target": "pres:p1@example.com", "duration": 600}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cpim["status"], "failure");
    assert_eq!(cpim["code"], 503);
    // Bob ends one subscription: his place is free again.
    let first_ok = n
        .iter()
        .find(|m| m.call_id() == Some("lim0"))
        .expect("NOTIFY of lim0")
        .clone();
    let tag = first_ok.from().unwrap().tag().unwrap().to_owned();
    let unsub = subscribe("sip:p1@example.com", "lim0", 0, ev)
        .replace(
            "To: <sip:p1@example.com>",
            &format!("To: <sip:p1@example.com>;tag={tag}"),
        )
        .replace("CSeq: 1 ", "CSeq: 2 ");
    let r = ua.request(&unsub, &mut n).await;
    assert_eq!(r.status(), Some(200));
    let r = ua.request(&third, &mut n).await;
    assert_eq!(r.status(), Some(200), "a freed place is usable again");
}

#[tokio::test]
async fn subscription_lifecycle_with_composition_and_expiry() {
    let dir = TempDir::new("life");
    let s = start(&dir, 1).await;
    let gw = s.local_addr(Proto::Udp).unwrap();
    let watcher = Ua::new(gw).await;
    let src1 = Ua::new(gw).await;
    let src2 = Ua::new(gw).await;
    let mut n = Vec::new();
    let ev = "Event: presence\r\n";
    let ct = Some("application/pidf+xml");

    // Source 2 publishes first (OMA 2.1 setup).
    let r = src2
        .request(
            &publish(
                None,
                Some(3600),
                ct,
                &pidf(
                    "pres:alice@example.com",
                    "t2",
                    "open",
                    "desk",
                    "2026-11-22T10:00:00Z",
                ),
                ev,
            ),
            &mut n,
        )
        .await;
    assert_eq!(r.status(), Some(200));

    // SUBSCRIBE: 200 with Expires and Contact, then the immediate NOTIFY.
    let r = watcher
        .request(
            &subscribe("sip:alice@example.com", "life1", 600, ev),
            &mut n,
        )
        .await;
    assert_eq!(r.status(), Some(200));
    assert_eq!(r.expires().unwrap(), Some(600));
    assert!(r.has_header(&HeaderName::Contact));
    let to_tag = r.to().unwrap().tag().unwrap().to_owned();
    let first = match n.pop() {
        Some(m) => m,
        None => watcher.notify(W, 200).await.expect("immediate NOTIFY"),
    };
    assert_eq!(first.from().unwrap().tag(), Some(to_tag.as_str()));
    assert_eq!(first.to().unwrap().tag(), Some("bob1"));
    assert_eq!(first.call_id(), Some("life1"));
    assert!(first.event().unwrap().unwrap().is("presence"));
    let (st, _, exp) = state(&first);
    assert_eq!(st, SubState::Active);
    assert!(exp.unwrap() <= 600 && exp.unwrap() >= 598);
    assert_eq!(
        first.content_type().unwrap().unwrap().essence_str(),
        "application/pidf+xml"
    );
    assert!(body(&first).contains("entity=\"pres:alice@example.com\""));
    assert!(body(&first).contains("t2"));
    let c1 = first.cseq().unwrap().seq;

    // Source 1 publishes with a short lifetime: composed with t2 (OMA 2.1).
    let r = src1
        .request(
            &publish(
                None,
                Some(2),
                ct,
                &pidf(
                    "pres:alice@example.com",
                    "t1",
                    "open",
                    "mobile",
                    "2026-11-22T10:00:01Z",
                ),
                ev,
            ),
            &mut n,
        )
        .await;
    assert_eq!(r.status(), Some(200));
    let second = watcher.notify(W, 200).await.expect("NOTIFY on change");
    assert!(second.cseq().unwrap().seq > c1);
    assert!(
        body(&second).contains("t1") && body(&second).contains("t2"),
        "{}",
        body(&second)
    );

    // OMA 2.2: source 1's publication expires; the watcher is told.
    let third = watcher
        .notify(Duration::from_secs(6), 200)
        .await
        .expect("NOTIFY on expiry");
    assert!(third.cseq().unwrap().seq > second.cseq().unwrap().seq);
    assert!(
        !body(&third).contains("\"t1\"") && body(&third).contains("t2"),
        "{}",
        body(&third)
    );
    assert_eq!(state(&third).0, SubState::Active);

    // Refresh in the dialog: 200 and a NOTIFY.
    let refresh = format!(
        "SUBSCRIBE sip:alice@example.com SIP/2.0\r\nVia: {{via}}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=bob1\r\nTo: <sip:alice@example.com>;tag={to_tag}\r\nCall-ID: life1\r\nCSeq: 2 SUBSCRIBE\r\nContact: <sip:bob@{{me}}>\r\nExpires: 300\r\n{ev}\r\n"
    );
    let r = watcher.request(&refresh, &mut n).await;
    assert_eq!((r.status(), r.expires().unwrap()), (Some(200), Some(300)));
    let fourth = match n.pop() {
        Some(m) => m,
        None => watcher.notify(W, 200).await.unwrap(),
    };
    assert!(state(&fourth).2.unwrap() <= 300);
    // A stale CSeq is refused (RFC 3261 §12.2.2).
    let r = watcher.request(&refresh, &mut n).await;
    assert_eq!(r.status(), Some(500));

    // Unsubscribe: 200, final NOTIFY terminated;reason=timeout.
    let unsub = refresh
        .replace("CSeq: 2", "CSeq: 3")
        .replace("Expires: 300", "Expires: 0");
    let r = watcher.request(&unsub, &mut n).await;
    assert_eq!(r.status(), Some(200));
    let last = match n.pop() {
        Some(m) => m,
        None => watcher.notify(W, 200).await.unwrap(),
    };
    assert_eq!(
        state(&last),
        (SubState::Terminated, Some("timeout".into()), None)
    );
    assert_eq!(s.presence.counts().await.subscriptions, 0);
}

#[tokio::test]
async fn fetch_and_registration_driven_presence() {
    let dir = TempDir::new("fetch");
    let s = start(&dir, 1).await;
    let gw = s.local_addr(Proto::Udp).unwrap();
    let pua = Ua::new(gw).await;
    let watcher = Ua::new(gw).await;
    let mut n = Vec::new();
    // Seed §10.3 F5: the PUA registers with a description.
    let reg = "REGISTER sip:example.com SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nTo: <sip:resource@example.com>\r\nFrom: <sip:resource@example.com>;tag=r1\r\nCall-ID: 110@pua\r\nCSeq: 2 REGISTER\r\nContact: <sip:id@{me}>;methods=\"MESSAGE\";description=\"Away from keyboard\"\r\nExpires: 600\r\n\r\n";
    let r = pua.request(reg, &mut n).await;
    assert_eq!(r.status(), Some(200));
    let crate_contacts = r.contacts().unwrap();
    let sip_cpim_gateway::sip::Contacts::List(l) = crate_contacts else {
        panic!()
    };
    assert_eq!(l.len(), 1);
    assert!(l[0].expires().unwrap() <= 600);
    assert_eq!(
        l[0].feature("description").as_deref(),
        Some("Away from keyboard")
    );
    // OMA 2.3 fetch: Expires 0 → 200 and one NOTIFY terminated;reason=timeout
    // carrying the state; nothing is kept.
    let r = watcher
        .request(
            &subscribe(
                "sip:resource@example.com",
                "fetch1",
                0,
                "Event: presence\r\nAccept: application/xpidf+xml\r\n",
            ),
            &mut n,
        )
        .await;
    assert_eq!((r.status(), r.expires().unwrap()), (Some(200), Some(0)));
    let f = match n.pop() {
        Some(m) => m,
        None => watcher.notify(W, 200).await.unwrap(),
    };
    assert_eq!(
        state(&f),
        (SubState::Terminated, Some("timeout".into()), None)
    );
    assert_eq!(
        f.content_type().unwrap().unwrap().essence_str(),
        "application/xpidf+xml"
    );
    assert!(body(&f).contains("Away from keyboard"), "{}", body(&f));
    assert_eq!(s.presence.counts().await.subscriptions, 0);
    // Out-of-order REGISTER (same Call-ID, lower CSeq) is refused (§10.3 step 7).
    let r = pua
        .request(&reg.replace("CSeq: 2", "CSeq: 1"), &mut n)
        .await;
    assert_eq!(r.status(), Some(500));
    // 423 below the minimum... and To must be a SIP AOR (RFC 4475 §3.3.4).
    let r = pua
        .request(
            &reg.replace("To: <sip:resource@example.com>", "To: <tel:+15551234>")
                .replace("CSeq: 2", "CSeq: 7"),
            &mut n,
        )
        .await;
    assert_eq!(r.status(), Some(400));
    // Contact: * removes every binding.
    let star = reg.replace("CSeq: 2", "CSeq: 9").replace(
        "Contact: <sip:id@{me}>;methods=\"MESSAGE\";description=\"Away from keyboard\"\r\nExpires: 600",
        "Contact: *\r\nExpires: 0",
    );
    let r = pua.request(&star, &mut n).await;
    assert_eq!(r.status(), Some(200));
    assert_eq!(s.presence.counts().await.registrations, 0);
}

#[tokio::test]
async fn notify_answered_481_ends_the_subscription() {
    let dir = TempDir::new("481");
    let s = start(&dir, 1).await;
    let gw = s.local_addr(Proto::Udp).unwrap();
    let watcher = Ua::new(gw).await;
    let src = Ua::new(gw).await;
    let mut n = Vec::new();
    watcher
        .send(&subscribe(
            "sip:dave@example.com",
            "gone1",
            600,
            "Event: presence\r\n",
        ))
        .await;
    // Answer the first NOTIFY with 481 (seed §9.5.1).
    let mut got_481 = false;
    for _ in 0..2 {
        let m = watcher.recv(W).await.unwrap();
        if m.method().is_some() {
            watcher.answer(&m, 481).await;
            got_481 = true;
        }
    }
    assert!(got_481);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.presence.counts().await.subscriptions, 0);
    let r = src
        .request(
            &publish(
                None,
                None,
                Some("application/pidf+xml"),
                &pidf(
                    "pres:dave@example.com",
                    "d",
                    "open",
                    "",
                    "2026-11-22T10:00:00Z",
                ),
                "Event: presence\r\n",
            )
            .replace("alice", "dave"),
            &mut n,
        )
        .await;
    assert_eq!(r.status(), Some(200));
    assert!(
        watcher
            .notify(Duration::from_millis(800), 200)
            .await
            .is_none(),
        "no NOTIFY after 481"
    );
}

#[tokio::test]
async fn watcher_info_shows_watchers_arrive_and_leave() {
    let dir = TempDir::new("winfo");
    let s = start(&dir, 1).await;
    let gw = s.local_addr(Proto::Udp).unwrap();
    let alice = Ua::new(gw).await;
    let bob = Ua::new(gw).await;
    let mut n = Vec::new();
    let winfo = "SUBSCRIBE sip:alice@example.com SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=aw\r\nTo: <sip:alice@example.com>\r\nCall-ID: winfo1\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:alice@{me}>\r\nExpires: 600\r\nEvent: presence.winfo\r\nAccept: application/watcherinfo+xml\r\n\r\n";
    let r = alice.request(winfo, &mut n).await;
    assert_eq!(r.status(), Some(200));
    let full = match n.pop() {
        Some(m) => m,
        None => alice.notify(W, 200).await.unwrap(),
    };
    assert_eq!(
        full.header_value(&HeaderName::Event),
        Some("presence.winfo")
    );
    assert_eq!(
        full.content_type().unwrap().unwrap().essence_str(),
        "application/watcherinfo+xml"
    );
    assert!(
        body(&full).contains("version=\"0\" state=\"full\""),
        "{}",
        body(&full)
    );
    assert!(body(&full).contains("resource=\"sip:alice@example.com\" package=\"presence\""));

    // Bob subscribes: Alice sees him arrive (partial state, version 1).
    let r = bob
        .request(
            &subscribe("sip:alice@example.com", "bobw", 600, "Event: presence\r\n"),
            &mut n,
        )
        .await;
    assert_eq!(r.status(), Some(200));
    let arrived = alice.notify(W, 200).await.expect("winfo NOTIFY");
    let b = body(&arrived);
    assert!(b.contains("version=\"1\" state=\"partial\""), "{b}");
    assert!(
        b.contains("status=\"active\" event=\"subscribe\">sip:bob@example.com</watcher>"),
        "{b}"
    );

    // Bob leaves: terminated, event timeout (version 2).
    let to_tag = r.to().unwrap().tag().unwrap().to_owned();
    let unsub = format!(
        "SUBSCRIBE sip:alice@example.com SIP/2.0\r\nVia: {{via}}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=bob1\r\nTo: <sip:alice@example.com>;tag={to_tag}\r\nCall-ID: bobw\r\nCSeq: 2 SUBSCRIBE\r\nContact: <sip:bob@{{me}}>\r\nExpires: 0\r\nEvent: presence\r\n\r\n"
    );
    assert_eq!(bob.request(&unsub, &mut n).await.status(), Some(200));
    let left = alice.notify(W, 200).await.expect("winfo NOTIFY");
    let b = body(&left);
    assert!(b.contains("version=\"2\" state=\"partial\""), "{b}");
    assert!(
        b.contains("status=\"terminated\" event=\"timeout\">sip:bob@example.com</watcher>"),
        "{b}"
    );

    // Only the presentity may watch its watchers (RFC 3857 §5.2).
    let snoop = winfo
        .replace(
            "<sip:alice@example.com>;tag=aw",
            "<sip:carol@example.com>;tag=cw",
        )
        .replace("winfo1", "winfo2");
    assert_eq!(bob.request(&snoop, &mut n).await.status(), Some(403));
}

/// Graceful stop (issue 7 §6): once shutdown begins, a new request gets 503
/// with Retry-After (RFC 3261 §21.5.4) instead of starting work that might
/// not finish; the HTTP listener stops accepting.
#[tokio::test]
async fn shutdown_refuses_new_requests() {
    let dir = TempDir::new("drain");
    let s = start(&dir, 60).await;
    let ua = Ua::new(s.local_addr(Proto::Udp).unwrap()).await;
    let mut n = Vec::new();
    s.shutdown(Duration::from_millis(500)).await;
    let r = ua
        .request(
            &subscribe("sip:p1@example.com", "drain1", 600, "Event: presence\r\n"),
            &mut n,
        )
        .await;
    assert_eq!(r.status(), Some(503));
    assert_eq!(r.header_value(&HeaderName::RetryAfter), Some("5"));
    assert!(n.is_empty(), "nothing was started");
    assert!(
        tokio::net::TcpStream::connect(s.http).await.is_err(),
        "the HTTP listener is closed"
    );
}

/// Issue 17: an expiry the store cannot make durable (a full disk) is
/// refused; the state is reloaded from the store, which re-arms the
/// expiry's timer in the past. Due timers then wait a second, so the
/// failed expiry is retried about once a second, not in a loop that
/// reloads the whole state as fast as the agent can (measured before the
/// fix: thousands of refused commits in these 3 s). Once the store writes
/// again, the subscription expires with its terminated NOTIFY.
#[tokio::test]
async fn an_expiry_the_store_refuses_is_retried_at_a_bounded_rate() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let dir = TempDir::new("expfail");
    let mut cfg = Config::default();
    cfg.sip.listen = vec!["udp:127.0.0.1:0".into()];
    cfg.cpim.listen = "127.0.0.1:0".into();
    cfg.store.path = dir.0.join("store").display().to_string();
    cfg.presence.min_expires = 1;
    cfg.presence.default_policy = "allow".into();
    let fail = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let (f, r) = (fail.clone(), refused.clone());
    let s = Server::start_with(&cfg, move |inner| {
        Arc::new(support::FailingStore {
            inner,
            fail: f,
            refused: r,
            reads_fail: false,
        })
    })
    .await
    .unwrap();
    let watcher = Ua::new(s.local_addr(Proto::Udp).unwrap()).await;
    let mut n = Vec::new();
    let sub = subscribe(
        "sip:alice@example.com",
        "exp-fail",
        1,
        "Event: presence\r\n",
    );
    assert_eq!(watcher.request(&sub, &mut n).await.status(), Some(200));
    watcher.triggered_notify(&mut n).await;
    fail.store(true, Ordering::SeqCst);
    // The expiry falls due after 1 s; nothing may be sent while it fails.
    assert!(watcher.notify(Duration::from_secs(3), 200).await.is_none());
    let tries = refused.load(Ordering::SeqCst);
    assert!((1..=6).contains(&tries), "{tries} refused commits in 3 s");
    fail.store(false, Ordering::SeqCst);
    let m = watcher.notify(W, 200).await.expect("the expiry's NOTIFY");
    assert_eq!(state(&m).0, SubState::Terminated, "{m:?}");
    s.shutdown(Duration::from_secs(2)).await;
}

/// Issue 17: sled refuses reads too once a write has failed. The reload
/// that undoes a refused change must then keep the agent's state, not
/// clear it and fail: a presentity published before the failure is still
/// served, and once the store can be read the state is what is durable.
#[tokio::test]
async fn a_reload_that_cannot_read_keeps_the_state() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = TempDir::new("readfail");
    let mut cfg = Config::default();
    cfg.sip.listen = vec!["udp:127.0.0.1:0".into()];
    cfg.cpim.listen = "127.0.0.1:0".into();
    cfg.store.path = dir.0.join("store").display().to_string();
    cfg.presence.default_policy = "allow".into();
    cfg.presence.notify_min_interval_ms = 0;
    let fail = Arc::new(AtomicBool::new(false));
    let f = fail.clone();
    let s = Server::start_with(&cfg, move |inner| {
        Arc::new(support::FailingStore {
            inner,
            fail: f,
            refused: Default::default(),
            reads_fail: true,
        })
    })
    .await
    .unwrap();
    let ua = Ua::new(s.local_addr(Proto::Udp).unwrap()).await;
    let mut n = Vec::new();
    let ct = Some("application/pidf+xml");
    let doc = |note: &str| {
        pidf(
            "pres:alice@example.com",
            "t1",
            "open",
            note,
            "2026-12-06T10:00:00Z",
        )
    };
    let ev = "Event: presence\r\n";
    let r = ua
        .request(&publish(None, Some(3600), ct, &doc("kept"), ev), &mut n)
        .await;
    assert_eq!(r.status(), Some(200));
    // A watcher of alice, and the count of subscriptions the agent holds.
    let sub = subscribe("sip:alice@example.com", "keep-sub", 3600, ev);
    assert_eq!(ua.request(&sub, &mut n).await.status(), Some(200));
    ua.triggered_notify(&mut n).await;
    let metrics = format!("http://{}/metrics", s.http);
    let local_subs = || async {
        let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        let m = support::parse_exposition(&text);
        support::series(&m, "sipgw_subscriptions_active{kind=\"local\"}")
    };
    assert_eq!(local_subs().await, 1.0);
    fail.store(true, Ordering::SeqCst);
    let r = ua
        .request(&publish(None, Some(3600), ct, &doc("refused"), ev), &mut n)
        .await;
    assert_eq!(r.status(), Some(500));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The reload read every other tree, then failed on the subscriptions:
    // the subscription is still held.
    assert_eq!(local_subs().await, 1.0, "subscriptions kept");
    let url = format!(
        "http://{}/cpim/v1/presence/pres%3Aalice%40example.com",
        s.http
    );
    let body = reqwest::get(&url).await.unwrap().text().await.unwrap();
    // Not emptied (a cleared state serves a neutral document without
    // alice's tuple). It still holds the refused change until a reload
    // can read (docs/reliability.md, limits).
    assert!(
        body.contains("<tuple id=\"t1\">"),
        "the state survives a reload that cannot read: {body}"
    );
    fail.store(false, Ordering::SeqCst);
    // Reloaded within a second or two: what is durable, without "refused".
    let mut last = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = reqwest::get(&url).await.unwrap().text().await.unwrap();
        if last.contains("kept") && !last.contains("refused") {
            break;
        }
    }
    assert!(last.contains("kept") && !last.contains("refused"), "{last}");
    s.shutdown(Duration::from_secs(2)).await;
}
