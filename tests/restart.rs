//! Durability: registrations, publications and subscriptions survive SIGKILL.
//! After a restart on the same store, the watcher keeps receiving NOTIFYs in
//! the same dialog with increasing CSeq, and a publication that expired while
//! the gateway was down produces its NOTIFY.

mod support;

use std::time::Duration;
use support::{TempDir, Ua, pidf};

use support::process::GatewayProcess as Gateway;

fn spawn(dir: &TempDir) -> Gateway {
    spawn_on(
        dir,
        &format!("path = \"{}\"", dir.0.join("store").display()),
    )
}

/// The gateway with `store` as its `[store]` section.
fn spawn_on(dir: &TempDir, store: &str) -> Gateway {
    support::process::spawn(
        dir,
        "gateway",
        &format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:0\"]\nlocal_domains = [\"example.com\"]\nroutes = []\n[cpim]\nlisten = \"127.0.0.1:0\"\n[presence]\nmin_expires = 1\ndefault_policy = \"allow\"\nnotify_min_interval_ms = 0\n[store]\n{store}\n"
        ),
    )
}

fn kill9(g: &mut Gateway) {
    g.kill9();
}

const EV: &str = "Event: presence\r\n";

fn publish(expires: u32, id: &str, ts: &str) -> String {
    format!(
        "PUBLISH sip:alice@example.com SIP/2.0\r\nVia: {{via}}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=p\r\nTo: <sip:alice@example.com>\r\nCall-ID: pub-{id}\r\nCSeq: 1 PUBLISH\r\nExpires: {expires}\r\nContent-Type: application/pidf+xml\r\n{EV}\r\n{}",
        pidf("pres:alice@example.com", id, "open", id, ts)
    )
}

#[tokio::test]
async fn state_survives_sigkill_and_expiry_during_downtime_notifies() {
    let dir = TempDir::new("restart");
    let store = format!("path = \"{}\"", dir.0.join("store").display());
    sigkill_scenario(&dir, &store).await;
}

/// The same on the PostgreSQL backend (issue 18): what was acknowledged is
/// in the database, and the restarted node takes its own leases back at
/// once (a higher epoch) instead of waiting for them to expire.
#[tokio::test]
async fn state_survives_sigkill_on_postgres() {
    let Some(pg) = support::postgres::PgServer::start() else {
        return;
    };
    let dir = TempDir::new("restart-pg");
    let store = format!("backend = \"postgres\"\nurl = \"{}\"", pg.url());
    sigkill_scenario(&dir, &store).await;
}

async fn sigkill_scenario(dir: &TempDir, store: &str) {
    let mut g = spawn_on(dir, store);
    let watcher = Ua::new(g.udp).await;
    let publisher = Ua::new(g.udp).await;
    let mut n = Vec::new();

    let reg = "REGISTER sip:example.com SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nTo: <sip:alice@example.com>\r\nFrom: <sip:alice@example.com>;tag=r\r\nCall-ID: reg1\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@{me}>;description=\"at desk\"\r\nExpires: 3600\r\n\r\n";
    assert_eq!(publisher.request(reg, &mut n).await.status(), Some(200));
    assert_eq!(
        publisher
            .request(&publish(3600, "long", "2026-11-22T10:00:00Z"), &mut n)
            .await
            .status(),
        Some(200)
    );
    assert_eq!(
        publisher
            .request(&publish(2, "short", "2026-11-22T10:00:00Z"), &mut n)
            .await
            .status(),
        Some(200)
    );

    let sub = "SUBSCRIBE sip:alice@example.com SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=w\r\nTo: <sip:alice@example.com>\r\nCall-ID: keep-me\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:bob@{me}>\r\nExpires: 3600\r\nEvent: presence\r\n\r\n";
    let r = watcher.request(sub, &mut n).await;
    assert_eq!(r.status(), Some(200));
    let first = match n.pop() {
        Some(m) => m,
        None => watcher.notify(Duration::from_secs(5), 200).await.unwrap(),
    };
    let body = String::from_utf8_lossy(first.body()).into_owned();
    // Published state only: the registration's inferred tuple is the
    // fallback for presentities that publish nothing (docs/presence.md).
    assert!(
        body.contains("\"short\"") && body.contains("\"long\"") && !body.contains("at desk"),
        "{body}"
    );
    let tag = first.from().unwrap().tag().unwrap().to_owned();
    let cseq = first.cseq().unwrap().seq;

    // Crash before the short publication expires; stay down past its expiry.
    kill9(&mut g);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut g = spawn_on(dir, store);
    let watcher = Ua {
        server: g.udp,
        ..watcher
    };
    // The expiry that happened while down produces its NOTIFY, in the same dialog.
    let after = watcher
        .notify(Duration::from_secs(5), 200)
        .await
        .expect("NOTIFY for the expired publication");
    assert_eq!(after.call_id(), Some("keep-me"));
    assert_eq!(after.from().unwrap().tag(), Some(tag.as_str()));
    assert_eq!(after.to().unwrap().tag(), Some("w"));
    assert!(after.cseq().unwrap().seq > cseq, "CSeq continues");
    let body = String::from_utf8_lossy(after.body()).into_owned();
    assert!(
        !body.contains("\"short\"") && body.contains("\"long\""),
        "{body}"
    );
    // The registration survived too (admin view of the presentity).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let view: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "http://{}/admin/v1/presentities/sip:alice@example.com",
            g.http
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["registrations"][0]["description"], "at desk", "{view}");

    // New changes still reach the watcher, CSeq still increasing.
    let publisher = Ua {
        server: g.udp,
        ..publisher
    };
    assert_eq!(
        publisher
            .request(&publish(3600, "new", "2026-11-22T11:00:00Z"), &mut n)
            .await
            .status(),
        Some(200)
    );
    let next = watcher.notify(Duration::from_secs(5), 200).await.unwrap();
    assert!(next.cseq().unwrap().seq > after.cseq().unwrap().seq);
    assert!(String::from_utf8_lossy(next.body()).contains("\"new\""));
    kill9(&mut g);
}

/// Publisher grants (issue 14) are durable: granted before a SIGKILL, a
/// third party's PUBLISH is accepted after the restart; revoked before
/// one, it is refused after it.
#[tokio::test]
async fn publisher_grants_survive_sigkill() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = TempDir::new("restart-grant");
    let grant = "/admin/v1/publishers/sip:alice@example.com/sip:mallory@example.com";
    let admin = async |g: &Gateway, method: reqwest::Method| -> u16 {
        reqwest::Client::new()
            .request(method, format!("http://{}{grant}", g.http))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let mallory = |id: &str| {
        publish(3600, id, "2026-11-22T10:00:00Z")
            .replace("From: <sip:alice@", "From: <sip:mallory@")
    };
    let mut n = Vec::new();

    let mut g = spawn(&dir);
    let ua = Ua::new(g.udp).await;
    assert_eq!(ua.request(&mallory("m0"), &mut n).await.status(), Some(403));
    assert_eq!(admin(&g, reqwest::Method::PUT).await, 200);
    kill9(&mut g);

    let mut g = spawn(&dir);
    let ua = Ua {
        server: g.udp,
        ..ua
    };
    assert_eq!(
        ua.request(&mallory("m1"), &mut n).await.status(),
        Some(200),
        "the grant was reloaded"
    );
    assert_eq!(admin(&g, reqwest::Method::DELETE).await, 204);
    kill9(&mut g);

    let mut g = spawn(&dir);
    let ua = Ua {
        server: g.udp,
        ..ua
    };
    assert_eq!(
        ua.request(&mallory("m2"), &mut n).await.status(),
        Some(403),
        "the revocation was durable"
    );
    kill9(&mut g);
}
