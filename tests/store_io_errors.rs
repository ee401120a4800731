//! Issue 17 item 2 at the level of `cargo test` (no root, no tmpfs): the
//! store's writes fail for real, with an error from the kernel. The test
//! process lowers its own RLIMIT_FSIZE below where sled's log must grow,
//! with SIGXFSZ ignored, so sled's next write past it fails with EFBIG, as
//! a full disk fails it with ENOSPC (tests/reliability/diskfull.sh does
//! that one with a tmpfs). Then: changes are refused (SIP 500, HTTP 503),
//! never acknowledged; /readyz says 503; reads are served; once the limit
//! is lifted the store recovers by itself (no restart), changes are
//! acknowledged again and an existing subscription is notified; after a
//! stop the store opens and holds exactly what was acknowledged.
//!
//! One test in this file: the limit is the whole process's.

mod support;

use sip_cpim_gateway::config::Config;
use sip_cpim_gateway::server::Server;
use sip_cpim_gateway::store::{SledStore, Store, Tree};
use sip_cpim_gateway::transport::Proto;
use std::time::Duration;
use support::{TempDir, Ua, pidf};

fn set_file_size_limit(bytes: u64) {
    let lim = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain system calls on this process; SIG_IGN installs no code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
}

fn publish(aor: &str, note: &str) -> String {
    let body = pidf(
        &format!("pres:{aor}"),
        "t1",
        "open",
        note,
        "2026-12-06T10:00:00Z",
    );
    format!(
        "PUBLISH sip:{aor} SIP/2.0\r\nVia: {{via}}\r\nMax-Forwards: 70\r\nFrom: <sip:{aor}>;tag=p\r\nTo: <sip:{aor}>\r\nCall-ID: pub-{note}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: 3600\r\nContent-Type: application/pidf+xml\r\n\r\n{body}"
    )
}

fn register(user: &str) -> String {
    format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: {{via}}\r\nMax-Forwards: 70\r\nTo: <sip:{user}@example.com>\r\nFrom: <sip:{user}@example.com>;tag=r\r\nCall-ID: reg-{user}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@{{me}}>\r\nExpires: 600\r\n\r\n"
    )
}

async fn readyz(http: &reqwest::Client, s: &Server) -> (u16, serde_json::Value) {
    let r = http
        .get(format!("http://{}/readyz", s.http))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_errors_are_refused_flagged_and_recovered_from() {
    let dir = TempDir::new("ioerr");
    let store = dir.0.join("store");
    let mut cfg = Config::default();
    cfg.sip.listen = vec!["udp:127.0.0.1:0".into()];
    cfg.cpim.listen = "127.0.0.1:0".into();
    cfg.store.path = store.display().to_string();
    cfg.presence.default_policy = "allow".into();
    cfg.presence.notify_min_interval_ms = 0;
    let s = Server::start(&cfg).await.unwrap();
    let ua = Ua::new(s.local_addr(Proto::Udp).unwrap()).await;
    let http = reqwest::Client::new();
    let mut notifies = Vec::new();
    // A watcher of alice, subscribed before the fault.
    let sub = "SUBSCRIBE sip:alice@example.com SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=bob1\r\nTo: <sip:alice@example.com>\r\nCall-ID: sub-alice\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:bob@{me}>\r\nEvent: presence\r\nExpires: 3600\r\n\r\n";
    let r = ua.request(sub, &mut notifies).await;
    assert_eq!(r.status(), Some(200), "{r:?}");
    ua.triggered_notify(&mut notifies).await;
    assert_eq!(
        ua.request(&register("r0"), &mut notifies).await.status(),
        Some(200)
    );

    // sled's log may not grow past its present end: its next segment fails.
    let db = std::fs::metadata(store.join("db")).unwrap().len();
    set_file_size_limit(db);
    let note = "x".repeat(8000);
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..400 {
        let aor = format!("p{i}@example.com");
        let r = ua
            .request(&publish(&aor, &format!("{i}-{note}")), &mut notifies)
            .await;
        match r.status() {
            Some(200) => acked.push(aor),
            Some(500) => {
                refused = Some(aor);
                break;
            }
            other => panic!("PUBLISH {i}: {other:?}"),
        }
    }
    let refused = refused.expect("a write past RLIMIT_FSIZE fails");
    assert!(notifies.is_empty(), "nobody watches p*: {notifies:?}");

    // Flagged, and every change refused at once.
    let (code, v) = readyz(&http, &s).await;
    assert_eq!((code, &v["store"]), (503, &serde_json::json!(false)), "{v}");
    assert_eq!(
        ua.request(&register("r1"), &mut notifies).await.status(),
        Some(500)
    );
    let r = ua
        .request(&publish("alice@example.com", "while-failed"), &mut notifies)
        .await;
    assert_eq!(r.status(), Some(500));
    let r = http
        .put(format!(
            "http://{}/admin/v1/policies/sip%3Aalice%40example.com/sip%3Acarol%40example.com",
            s.http
        ))
        .json(&serde_json::json!({"action": "block"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(
        notifies.is_empty(),
        "no NOTIFY for a refused change: {notifies:?}"
    );
    // Reads are served.
    let r = http
        .get(format!(
            "http://{}/cpim/v1/presence/pres%3Ap0%40example.com",
            s.http
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // Space is back: recovered without a restart (backoff ≤ 4 s).
    // RLIM_INFINITY is a u64 on Linux.
    set_file_size_limit(libc::RLIM_INFINITY);
    let mut ready = false;
    for _ in 0..150 {
        if readyz(&http, &s).await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "/readyz 200 again");
    assert_eq!(
        ua.request(&register("r2"), &mut notifies).await.status(),
        Some(200)
    );
    let r = ua
        .request(&publish("alice@example.com", "after"), &mut notifies)
        .await;
    assert_eq!(r.status(), Some(200));
    let n = ua.triggered_notify(&mut notifies).await;
    assert!(String::from_utf8_lossy(n.body()).contains("after"), "{n:?}");

    // After a stop: exactly what was acknowledged.
    s.shutdown(Duration::from_secs(5)).await;
    drop(s);
    let st = SledStore::open(&store).unwrap();
    let pubs: Vec<String> = st
        .scan(Tree::Publications)
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
        .collect();
    for aor in &acked {
        let n = pubs
            .iter()
            .filter(|k| k.starts_with(&format!("sip:{aor}\n")))
            .count();
        assert_eq!(n, 1, "acknowledged publication of {aor}");
    }
    assert!(
        !pubs
            .iter()
            .any(|k| k.starts_with(&format!("sip:{refused}\n"))),
        "refused {refused}"
    );
    let regs: Vec<String> = st
        .scan(Tree::Registrations)
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
        .collect();
    let has = |u: &str| {
        regs.iter()
            .any(|k| k.contains(&format!("sip:{u}@example.com")))
    };
    assert!(has("r0") && has("r2") && !has("r1"), "{regs:?}");
    st.close().await.unwrap();
}
