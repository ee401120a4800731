//! Gateway dialogs in both directions survive SIGKILL: refresh timers are
//! re-armed, NOTIFY CSeq continues, queued adapter deliveries are sent.

mod support;

use serde_json::json;
use sip_cpim_gateway::sip::{HeaderName, Message, Method};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::adapter::TestAdapter;
use support::{TempDir, Ua, fix_length, pidf};

const W: Duration = Duration::from_secs(8);

struct Gw {
    child: Child,
    udp: SocketAddr,
    http: SocketAddr,
}

fn spawn(dir: &TempDir, adapter: &TestAdapter, ua: SocketAddr) -> Gw {
    let cfg = dir.0.join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:0\"]\nlocal_domains = [\"example.com\"]\ncpim_domains = [\"xmpp.example.org\"]\nroutes = [{{ domain = \"sip.example.net\", next_hop = \"udp:{ua}\" }}]\n[cpim]\nlisten = \"127.0.0.1:0\"\nadapter_url = \"{}\"\nretry_initial_ms = 50\nretry_max_ms = 200\n[presence]\nmin_expires = 1\ndefault_policy = \"allow\"\nnotify_min_interval_ms = 0\n[store]\npath = \"{}\"\n",
            adapter.url(),
            dir.0.join("store").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sip-cpim-gateway"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut udp, mut http) = (None, None);
    while udp.is_none() || http.is_none() {
        let line = lines.next().expect("gateway output").unwrap();
        if let Some(a) = line.strip_prefix("SIP listening: udp:") {
            udp = Some(a.parse().unwrap());
        }
        if let Some(a) = line.strip_prefix("CPIM HTTP listening: ") {
            http = Some(a.parse().unwrap());
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Gw {
        child,
        udp: udp.unwrap(),
        http: http.unwrap(),
    }
}

async fn next_request(ua: &Ua) -> Message {
    loop {
        let m = ua.recv(W).await.expect("a request from the gateway");
        if m.is_request() {
            return m;
        }
    }
}

#[tokio::test]
async fn gateway_dialogs_survive_sigkill() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = TempDir::new("gwrestart");
    let adapter = TestAdapter::start().await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ua_addr = sock.local_addr().unwrap();
    let mut gw = spawn(&dir, &adapter, ua_addr);
    let ua = Ua {
        sock,
        addr: ua_addr,
        server: gw.udp,
        n: Default::default(),
    };
    let http = reqwest::Client::new();

    // CPIM → SIP, with a short SIP lifetime so a refresh is due soon.
    let url = format!("http://{}/cpim/v1/subscribe", gw.http);
    let t = tokio::spawn({
        let http = http.clone();
        async move {
            http.post(url)
                .json(&json!({"watcher": "pres:alice@xmpp.example.org", "target": "pres:bob@sip.example.net", "duration": 3600}))
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    });
    let sub = next_request(&ua).await;
    let mut ok = Message::response_to(&sub, 200, "");
    ok.set_header(HeaderName::To, format!("{};tag=bt", sub.to().unwrap()));
    ok.push_header(HeaderName::Contact, format!("<sip:bob@{ua_addr}>"));
    ok.push_header(HeaderName::Expires, "4");
    ua.sock.send_to(&ok.to_bytes(), gw.udp).await.unwrap();
    assert_eq!(t.await.unwrap()["status"], "success");

    // SIP → CPIM.
    let mut n = Vec::new();
    let watch = "SUBSCRIBE sip:carol@xmpp.example.org SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@sip.example.net>;tag=wb\r\nTo: <sip:carol@xmpp.example.org>\r\nCall-ID: s2c-r\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:bob@{me}>\r\nEvent: presence\r\nExpires: 600\r\n\r\n";
    let r = ua.request(watch, &mut n).await;
    assert_eq!(r.status(), Some(202));
    let first = match n.pop() {
        Some(m) => m,
        None => ua.notify(W, 200).await.unwrap(),
    };
    let first_cseq = first.cseq().unwrap().seq;

    // A NOTIFY for the CPIM watcher while the adapter is down: queued.
    adapter.shared.fail_notify.store(true, Ordering::SeqCst);
    let ruri = match sub.contacts().unwrap() {
        sip_cpim_gateway::sip::Contacts::List(l) => l[0].uri.to_string(),
        _ => panic!(),
    };
    let body = pidf(
        "pres:bob@sip.example.net",
        "queued",
        "open",
        "",
        "2026-11-22T10:00:00Z",
    );
    let notify = fix_length(&format!(
        "NOTIFY {ruri} SIP/2.0\r\nVia: {{via}}\r\nMax-Forwards: 70\r\nFrom: {};tag=bt\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 NOTIFY\r\nContact: <sip:bob@{{me}}>\r\nEvent: presence\r\nSubscription-State: active;expires=4\r\nContent-Type: application/pidf+xml\r\n\r\n{body}",
        sub.to().unwrap(),
        sub.from().unwrap(),
        sub.call_id().unwrap()
    ));
    let mut n = Vec::new();
    assert_eq!(ua.request(&notify, &mut n).await.status(), Some(200));

    // Crash, adapter back, restart on the same store.
    gw.child.kill().unwrap();
    gw.child.wait().unwrap();
    adapter.shared.fail_notify.store(false, Ordering::SeqCst);
    let mut gw = spawn(&dir, &adapter, ua_addr);
    let ua = Ua {
        server: gw.udp,
        ..ua
    };

    // The queued delivery is sent.
    let calls = adapter.wait_calls("notify", 1, W).await;
    assert_eq!(calls[0]["presence"]["tuples"][0]["id"], "queued");
    // The refresh timer was re-armed: a refresh SUBSCRIBE in the same dialog.
    let refresh = next_request(&ua).await;
    assert_eq!(refresh.method(), Some(&Method::Subscribe));
    assert_eq!(refresh.call_id(), sub.call_id());
    assert_eq!(refresh.to().unwrap().tag(), Some("bt"));
    assert!(
        refresh.cseq().unwrap().seq > sub.cseq().unwrap().seq,
        "CSeq continues"
    );
    let mut ok = Message::response_to(&refresh, 200, "");
    ok.push_header(HeaderName::Expires, "600");
    ua.sock.send_to(&ok.to_bytes(), gw.udp).await.unwrap();
    // SIP → CPIM: an adapter notify reaches the watcher in the same dialog.
    let r = http
        .post(format!("http://{}/cpim/v1/notify", gw.http))
        .json(&json!({"watcher": "pres:bob@sip.example.net", "target": "pres:carol@xmpp.example.org", "presence": {"tuples": [{"id": "c", "basic": "open"}]}}))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(r["status"], "success");
    let after = ua.notify(W, 200).await.expect("NOTIFY after restart");
    assert_eq!(after.call_id(), Some("s2c-r"));
    assert!(
        after.cseq().unwrap().seq > first_cseq,
        "NOTIFY CSeq continues"
    );
    gw.child.kill().unwrap();
    gw.child.wait().unwrap();
}
