//! Authorization outcomes (OMA flows 2.4–2.6) and every policy transition on
//! a live subscription, driven through the admin API.

mod support;

use serde_json::{Value, json};
use sip_cpim_gateway::config::Config;
use sip_cpim_gateway::server::Server;
use sip_cpim_gateway::sip::{Message, SubState};
use sip_cpim_gateway::transport::Proto;
use std::time::Duration;
use support::{TempDir, Ua, pidf};

const W: Duration = Duration::from_secs(5);

async fn start(dir: &TempDir) -> Server {
    let mut cfg = Config::default();
    cfg.sip.listen = vec!["udp:127.0.0.1:0".into()];
    cfg.cpim.listen = "127.0.0.1:0".into();
    cfg.cpim.token = "admin-token".into();
    cfg.store.path = dir.0.join("store").display().to_string();
    cfg.presence.default_policy = "confirm".into();
    cfg.presence.notify_min_interval_ms = 0;
    cfg.presence.min_expires = 1;
    Server::start(&cfg).await.unwrap()
}

fn subscribe(watcher: &str, call_id: &str) -> String {
    format!(
        "SUBSCRIBE sip:alice@example.com SIP/2.0\r\nVia: {{via}}\r\nMax-Forwards: 70\r\nFrom: <sip:{watcher}@example.com>;tag=t-{watcher}\r\nTo: <sip:alice@example.com>\r\nCall-ID: {call_id}\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:{watcher}@{{me}}>\r\nExpires: 600\r\nEvent: presence\r\n\r\n"
    )
}

fn publish(body: &str) -> String {
    format!(
        "PUBLISH sip:alice@example.com SIP/2.0\r\nVia: {{via}}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=p\r\nTo: <sip:alice@example.com>\r\nCall-ID: pub\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nContent-Type: application/pidf+xml\r\n\r\n{body}"
    )
}

fn state(m: &Message) -> (SubState, Option<String>) {
    let s = m.subscription_state().unwrap().unwrap();
    (s.state.clone(), s.reason().map(str::to_owned))
}

fn real(m: &Message) -> bool {
    String::from_utf8_lossy(m.body()).contains("at the beach")
}

async fn put(s: &Server, watcher: &str, action: &str) -> u16 {
    reqwest::Client::new()
        .put(format!(
            "http://{}/admin/v1/policies/sip:alice@example.com/sip:{watcher}@example.com",
            s.http
        ))
        .bearer_auth("admin-token")
        .json(&json!({"action": action}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn first_notify(ua: &Ua, pending: &mut Vec<Message>) -> Message {
    match pending.pop() {
        Some(m) => m,
        None => ua.notify(W, 200).await.expect("NOTIFY"),
    }
}

#[tokio::test]
async fn outcomes_and_transitions() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = TempDir::new("policy");
    let s = start(&dir).await;
    let gw = s.local_addr(Proto::Udp).unwrap();
    let alice = Ua::new(gw).await;
    let mut n = Vec::new();
    let doc = pidf(
        "pres:alice@example.com",
        "a1",
        "open",
        "at the beach",
        "2026-11-22T10:00:00Z",
    );
    assert_eq!(
        alice.request(&publish(&doc), &mut n).await.status(),
        Some(200)
    );

    // block → 403 (OMA 2.4). Mallory's PUBLISH for alice is 403 too, but
    // for want of a publisher grant: a watch rule never decides a PUBLISH
    // (issue 14; `third_party_publish_needs_a_grant` below).
    assert_eq!(put(&s, "mallory", "block").await, 200);
    let mallory = Ua::new(gw).await;
    assert_eq!(
        mallory
            .request(&subscribe("mallory", "m1"), &mut n)
            .await
            .status(),
        Some(403)
    );
    let third_party = publish(&doc).replace(
        "From: <sip:alice@example.com>;tag=p",
        "From: <sip:mallory@example.com>;tag=m",
    );
    assert_eq!(
        mallory.request(&third_party, &mut n).await.status(),
        Some(403)
    );

    // polite-block → 200, active, neutral document, never the real one (OMA 2.5).
    assert_eq!(put(&s, "eve", "polite-block").await, 200);
    let eve = Ua::new(gw).await;
    let mut en = Vec::new();
    let r = eve.request(&subscribe("eve", "e1"), &mut en).await;
    assert_eq!(r.status(), Some(200));
    let m = first_notify(&eve, &mut en).await;
    assert_eq!(state(&m).0, SubState::Active);
    assert!(!real(&m) && !m.body().is_empty(), "neutral, not empty");
    assert!(String::from_utf8_lossy(m.body()).contains("<basic>closed</basic>"));

    // confirm (the default) → 202, pending, neutral (OMA 2.6 step 7).
    let bob = Ua::new(gw).await;
    let mut bn = Vec::new();
    let r = bob.request(&subscribe("bob", "b1"), &mut bn).await;
    assert_eq!(r.status(), Some(202));
    let m = first_notify(&bob, &mut bn).await;
    assert_eq!(state(&m).0, SubState::Pending);
    assert!(!real(&m));

    // confirm → allow: active with the real document, no re-SUBSCRIBE (step 12).
    assert_eq!(put(&s, "bob", "allow").await, 200);
    let m = bob.notify(W, 200).await.unwrap();
    assert_eq!(state(&m).0, SubState::Active);
    assert!(real(&m));
    // allow → polite-block: active, neutral.
    assert_eq!(put(&s, "bob", "polite-block").await, 200);
    let m = bob.notify(W, 200).await.unwrap();
    assert_eq!(state(&m).0, SubState::Active);
    assert!(!real(&m));
    // polite-block → confirm: pending, neutral.
    assert_eq!(put(&s, "bob", "confirm").await, 200);
    let m = bob.notify(W, 200).await.unwrap();
    assert_eq!(state(&m).0, SubState::Pending);
    assert!(!real(&m));
    // confirm → allow → block: terminated;reason=rejected.
    assert_eq!(put(&s, "bob", "allow").await, 200);
    assert!(real(&bob.notify(W, 200).await.unwrap()));
    assert_eq!(put(&s, "bob", "block").await, 200);
    let m = bob.notify(W, 200).await.unwrap();
    assert_eq!(state(&m), (SubState::Terminated, Some("rejected".into())));

    // The admin API lists the rules; delete restores the default; a token is needed.
    let http = reqwest::Client::new();
    let list: Value = http
        .get(format!(
            "http://{}/admin/v1/policies/sip:alice@example.com",
            s.http
        ))
        .bearer_auth("admin-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["default"], "confirm");
    assert_eq!(list["rules"].as_array().unwrap().len(), 3);
    let del = http
        .delete(format!(
            "http://{}/admin/v1/policies/sip:alice@example.com/sip:bob@example.com",
            s.http
        ))
        .bearer_auth("admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(del.status().as_u16(), 204);
    let unauth = http
        .get(format!(
            "http://{}/admin/v1/policies/sip:alice@example.com",
            s.http
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status().as_u16(), 401);
    let bad = http
        .put(format!(
            "http://{}/admin/v1/policies/sip:alice@example.com/sip:bob@example.com",
            s.http
        ))
        .bearer_auth("admin-token")
        .json(&json!({"action": "maybe"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
}

async fn admin(s: &Server, method: reqwest::Method, path: &str, body: Option<Value>) -> u16 {
    let mut r = reqwest::Client::new()
        .request(method, format!("http://{}{path}", s.http))
        .bearer_auth("admin-token");
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send().await.unwrap().status().as_u16()
}

/// Without digest auth the publisher is the From AOR (issue 14, RFC 3903
/// §6 step 4): an `allow` watch rule lets mallory see alice, not publish
/// for her; a publisher grant does, until it is revoked.
#[tokio::test]
async fn third_party_publish_needs_a_grant() {
    use reqwest::Method;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = TempDir::new("policy-pub");
    let s = start(&dir).await;
    let mallory = Ua::new(s.local_addr(Proto::Udp).unwrap()).await;
    let mut n = Vec::new();
    let doc = pidf(
        "pres:alice@example.com",
        "m1",
        "open",
        "mallory was here",
        "2026-11-22T10:00:00Z",
    );
    let third_party = |call: &str| {
        publish(&doc).replace(
            "From: <sip:alice@example.com>;tag=p\r\nTo: <sip:alice@example.com>\r\nCall-ID: pub",
            &format!(
                "From: <sip:mallory@example.com>;tag=m\r\nTo: <sip:alice@example.com>\r\nCall-ID: {call}"
            ),
        )
    };
    let composed = async || {
        let doc = s.presence.fetch("sip:alice@example.com").await.unwrap().1;
        String::from_utf8_lossy(&doc).contains("mallory was here")
    };

    assert_eq!(put(&s, "mallory", "allow").await, 200);
    let r = mallory.request(&third_party("tp1"), &mut n).await;
    assert_eq!(r.status(), Some(403), "an allow rule is no grant");
    assert_eq!(r.sip_etag().unwrap(), None);
    assert!(!composed().await);

    let grant = "/admin/v1/publishers/sip:alice@example.com/sip:mallory@example.com";
    assert_eq!(admin(&s, Method::PUT, grant, None).await, 200);
    let r = mallory.request(&third_party("tp2"), &mut n).await;
    assert_eq!(r.status(), Some(200), "granted");
    assert!(r.sip_etag().unwrap().is_some());
    assert!(composed().await);

    assert_eq!(admin(&s, Method::DELETE, grant, None).await, 204);
    let r = mallory.request(&third_party("tp3"), &mut n).await;
    assert_eq!(r.status(), Some(403), "revoked");
    assert_eq!(r.sip_etag().unwrap(), None);
}
