//! Digest authentication against the running server (RFC 3261 §22, RFC
//! 7616, RFC 8760; seed §9.4 replay protection).

mod support;

use sip_cpim_gateway::auth::digest::{self, Algorithm};
use sip_cpim_gateway::config::Config;
use sip_cpim_gateway::server::Server;
use sip_cpim_gateway::sip::Message;
use sip_cpim_gateway::transport::Proto;
use std::time::Duration;
use support::{TempDir, Ua, pidf};

async fn start(dir: &TempDir) -> Server {
    start_with(dir, |_| {}).await
}

async fn start_with(dir: &TempDir, tune: impl FnOnce(&mut Config)) -> Server {
    let md5 = digest::ha1(Algorithm::Md5, "alice", "example.com", "wonderland");
    let sha = digest::ha1(Algorithm::Sha256, "alice", "example.com", "wonderland");
    let creds = dir.0.join("users");
    std::fs::write(
        &creds,
        format!("alice:example.com:{md5}\nalice:example.com:{sha}\n"),
    )
    .unwrap();
    let mut cfg = Config::default();
    cfg.sip.listen = vec!["udp:127.0.0.1:0".into()];
    cfg.cpim.listen = "127.0.0.1:0".into();
    cfg.store.path = dir.0.join("store").display().to_string();
    cfg.auth.enabled = true;
    cfg.auth.credentials_file = creds.display().to_string();
    cfg.auth.nonce_ttl_s = 1;
    tune(&mut cfg);
    Server::start(&cfg).await.unwrap()
}

fn register(cseq: u32, extra: &str) -> String {
    format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: {{via}}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:alice@example.com>\r\nCall-ID: auth-reg\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:alice@{{me}}>\r\nExpires: 600\r\n{extra}\r\n"
    )
}

/// The challenge for `alg` in a 401.
fn nonce_of(r: &Message, alg: Algorithm) -> String {
    let ch = r.www_authenticate().unwrap();
    let c = ch
        .iter()
        .find(|c| c.param("algorithm").as_deref() == Some(alg.name()))
        .expect("challenge for the algorithm");
    assert_eq!(c.param("qop").as_deref(), Some("auth"));
    assert_eq!(c.param("realm").as_deref(), Some("example.com"));
    c.param("nonce").unwrap()
}

fn authorization(
    alg: Algorithm,
    nonce: &str,
    nc: &str,
    password: &str,
    method: &str,
    uri: &str,
) -> String {
    let ha1 = digest::ha1(alg, "alice", "example.com", password);
    let r = digest::response(alg, &ha1, nonce, Some((nc, "c0ffee", "auth")), method, uri);
    format!(
        "Authorization: Digest username=\"alice\", realm=\"example.com\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{r}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"c0ffee\"\r\n",
        alg.name()
    )
}

#[tokio::test]
async fn challenge_and_authenticated_retry_for_md5_and_sha256() {
    let dir = TempDir::new("auth1");
    let s = start(&dir).await;
    let ua = Ua::new(s.local_addr(Proto::Udp).unwrap()).await;
    let mut n = Vec::new();
    let r = ua.request(&register(1, ""), &mut n).await;
    assert_eq!(r.status(), Some(401));
    let algs: Vec<String> = r
        .www_authenticate()
        .unwrap()
        .iter()
        .filter_map(|c| c.param("algorithm"))
        .collect();
    assert_eq!(
        algs,
        ["SHA-256", "MD5"],
        "both offered, SHA-256 first (RFC 8760)"
    );
    for (cseq, alg) in (2..).zip([Algorithm::Md5, Algorithm::Sha256]) {
        let nonce = nonce_of(&r, alg);
        let ok = ua
            .request(
                &register(
                    cseq,
                    &authorization(
                        alg,
                        &nonce,
                        "00000001",
                        "wonderland",
                        "REGISTER",
                        "sip:example.com",
                    ),
                ),
                &mut n,
            )
            .await;
        assert_eq!(ok.status(), Some(200), "{}", alg.name());
    }
}

#[tokio::test]
async fn wrong_password_stale_nonce_replay_date_and_foreign_aor() {
    let dir = TempDir::new("auth2");
    let s = start(&dir).await;
    let ua = Ua::new(s.local_addr(Proto::Udp).unwrap()).await;
    let mut n = Vec::new();
    let r = ua.request(&register(1, ""), &mut n).await;
    let nonce = nonce_of(&r, Algorithm::Md5);
    // A wrong password: 403.
    let bad = ua
        .request(
            &register(
                2,
                &authorization(
                    Algorithm::Md5,
                    &nonce,
                    "00000001",
                    "guess",
                    "REGISTER",
                    "sip:example.com",
                ),
            ),
            &mut n,
        )
        .await;
    assert_eq!(bad.status(), Some(403));
    // Accepted once...
    let good = register(
        3,
        &authorization(
            Algorithm::Md5,
            &nonce,
            "00000002",
            "wonderland",
            "REGISTER",
            "sip:example.com",
        ),
    );
    assert_eq!(ua.request(&good, &mut n).await.status(), Some(200));
    // ...the same nonce count again is a replay, whatever the CSeq.
    let replay = good.replace("CSeq: 3", "CSeq: 4");
    assert_eq!(ua.request(&replay, &mut n).await.status(), Some(403));
    // A Date far in the past on a signed request (seed §9.4).
    let dated = register(
        5,
        &format!(
            "{}Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n",
            authorization(
                Algorithm::Md5,
                &nonce,
                "00000003",
                "wonderland",
                "REGISTER",
                "sip:example.com"
            )
        ),
    );
    assert_eq!(ua.request(&dated, &mut n).await.status(), Some(403));
    // Alice may not publish for Bob.
    let publish = format!(
        "PUBLISH sip:bob@example.com SIP/2.0\r\nVia: {{via}}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=p\r\nTo: <sip:bob@example.com>\r\nCall-ID: auth-pub\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nContent-Type: application/pidf+xml\r\n{}\r\n{}",
        authorization(
            Algorithm::Md5,
            &nonce,
            "00000004",
            "wonderland",
            "PUBLISH",
            "sip:bob@example.com"
        ),
        pidf(
            "pres:bob@example.com",
            "t",
            "open",
            "",
            "2026-11-22T10:00:00Z"
        )
    );
    assert_eq!(ua.request(&publish, &mut n).await.status(), Some(403));
    // A stale nonce with the right password: 401 stale=true.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let late = ua
        .request(
            &register(
                6,
                &authorization(
                    Algorithm::Md5,
                    &nonce,
                    "00000005",
                    "wonderland",
                    "REGISTER",
                    "sip:example.com",
                ),
            ),
            &mut n,
        )
        .await;
    assert_eq!(late.status(), Some(401));
    assert!(
        late.www_authenticate()
            .unwrap()
            .iter()
            .all(|c| c.param("stale").as_deref() == Some("true"))
    );
}

/// An authenticated user publishes for another AOR only with an explicit
/// publisher grant for that presentity (issue 14, RFC 3903 §6 step 4): not
/// by the default policy `allow`, not by an `allow` watcher rule (seeing is
/// not speaking for). The identity that counts is the authenticated one,
/// whatever From claims.
#[tokio::test]
async fn third_party_publish_needs_a_publisher_grant_not_a_watch_policy() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = TempDir::new("auth3");
    let s = start_with(&dir, |cfg| cfg.presence.default_policy = "allow".into()).await;
    let ua = Ua::new(s.local_addr(Proto::Udp).unwrap()).await;
    let doc = pidf(
        "pres:bob@example.com",
        "alice-t",
        "open",
        "",
        "2026-12-02T10:00:00Z",
    );
    // From claims bob: the authenticated identity (alice) still decides.
    let publish = |call: &str, auth: &str| {
        format!(
            "PUBLISH sip:bob@example.com SIP/2.0\r\nVia: {{via}}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=p\r\nTo: <sip:bob@example.com>\r\nCall-ID: {call}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nContent-Type: application/pidf+xml\r\n{auth}\r\n{doc}"
        )
    };
    // Each attempt: challenged, then answered with a fresh nonce (the
    // nonces of this server live 1 s).
    let attempt = async |call: &str| -> Message {
        let mut n = Vec::new();
        let r = ua.request(&publish(&format!("{call}-c"), ""), &mut n).await;
        assert_eq!(r.status(), Some(401));
        let nonce = nonce_of(&r, Algorithm::Sha256);
        let auth = authorization(
            Algorithm::Sha256,
            &nonce,
            "00000001",
            "wonderland",
            "PUBLISH",
            "sip:bob@example.com",
        );
        ua.request(&publish(call, &auth), &mut n).await
    };
    let composed = async || {
        let doc = s.presence.fetch("sip:bob@example.com").await.unwrap().1;
        String::from_utf8_lossy(&doc).contains("alice-t")
    };
    let refused = |r: &Message, why: &str| {
        assert_eq!(r.status(), Some(403), "{why}");
        assert_eq!(r.sip_etag().unwrap(), None, "{why}: no SIP-ETag");
    };

    refused(
        &attempt("tp-1").await,
        "default policy allow is no permission to publish",
    );
    assert!(!composed().await);

    let http = reqwest::Client::new();
    let base = format!("http://{}/admin/v1", s.http);
    let put = http
        .put(format!(
            "{base}/policies/sip:bob@example.com/sip:alice@example.com"
        ))
        .json(&serde_json::json!({"action": "allow"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 200);
    refused(
        &attempt("tp-2").await,
        "an explicit allow watcher rule is no permission to publish",
    );
    assert!(!composed().await, "a refused PUBLISH changes nothing");

    let grant = format!("{base}/publishers/pres%3Abob%40example.com/sip%3Aalice%40example.com");
    let put = http.put(&grant).send().await.unwrap();
    assert_eq!(put.status().as_u16(), 200);
    let r = attempt("tp-3").await;
    assert_eq!(r.status(), Some(200), "bob granted alice");
    assert!(r.sip_etag().unwrap().is_some());
    assert!(composed().await, "alice's tuple is in bob's document");

    let del = http.delete(&grant).send().await.unwrap();
    assert_eq!(del.status().as_u16(), 204);
    refused(&attempt("tp-4").await, "the grant is revoked");
}
