//! Slow and greedy clients on the SIP TCP and the HTTP listeners (issue 17
//! item 5, docs/reliability.md "Hostile input"): the per-message SIP read
//! deadline, the HTTP head and body deadlines, the per-address and global
//! connection caps, eviction of the slowest SIP sender at the global cap,
//! and a well-behaved client served while many slow connections are open.
//!
//! Everything is on loopback with ephemeral ports. A second source address
//! is another loopback address (127.0.0.2, …): Linux routes all of 127/8
//! to `lo`, so a socket can bind any of them.

mod support;

use sip_cpim_gateway::config::Config;
use sip_cpim_gateway::server::Server;
use sip_cpim_gateway::transport::Proto;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{TempDir, parse_exposition};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const TOKEN: &str = "slow-token";

async fn start(dir: &TempDir, tweak: impl FnOnce(&mut Config)) -> Server {
    let mut cfg = Config::default();
    cfg.sip.listen = vec!["udp:127.0.0.1:0".into(), "tcp:127.0.0.1:0".into()];
    cfg.cpim.listen = "127.0.0.1:0".into();
    cfg.cpim.token = TOKEN.into();
    cfg.store.path = dir.0.join("store").display().to_string();
    tweak(&mut cfg);
    Server::start(&cfg).await.unwrap()
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(format!("{from}:0").parse().unwrap()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), s.connect(to))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Whether the gateway closed `s` within `wait` (end of stream or reset);
/// whatever it sent before is returned too.
async fn closed_within(s: &mut TcpStream, wait: Duration) -> (bool, String) {
    let until = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        match tokio::time::timeout_at(until.into(), s.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => return (true, String::from_utf8_lossy(&got).into()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    (false, String::from_utf8_lossy(&got).into())
}

fn options(from: SocketAddr, n: u32) -> String {
    format!(
        "OPTIONS sip:gw@example.com SIP/2.0\r\nVia: SIP/2.0/TCP {from};branch=z9hG4bK-slow{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@example.com>;tag=s{n}\r\nTo: <sip:gw@example.com>\r\n\
         Call-ID: slow{n}@probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// OPTIONS over `s`: the status line of the answer, if one came in `wait`.
async fn sip_options_on(s: &mut TcpStream, n: u32, wait: Duration) -> Option<String> {
    let me = s.local_addr().unwrap();
    s.write_all(options(me, n).as_bytes()).await.ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let until = Instant::now() + wait;
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(until.into(), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    text.lines().next().map(str::to_owned)
}

/// OPTIONS over a new connection from `from`: the time to a 200.
async fn sip_probe(from: &str, to: SocketAddr, n: u32) -> Option<Duration> {
    let t0 = Instant::now();
    let mut s = connect_from(from, to).await;
    let line = sip_options_on(&mut s, n, Duration::from_secs(2)).await?;
    line.starts_with("SIP/2.0 200").then(|| t0.elapsed())
}

/// `GET /healthz` over a new connection from `from`: the status line.
async fn http_healthz(from: &str, to: SocketAddr) -> Option<String> {
    let mut s = connect_from(from, to).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let (_, text) = closed_within(&mut s, Duration::from_secs(3)).await;
    text.lines().next().map(str::to_owned)
}

/// A counter from `/metrics` (the recorder is process-wide, so tests in
/// this file add up: only lower bounds are asserted).
async fn counter(server: &Server, series: &str) -> f64 {
    let mut s = connect_from("127.0.0.1", server.http).await;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (_, text) = closed_within(&mut s, Duration::from_secs(3)).await;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    parse_exposition(body).get(series).copied().unwrap_or(0.0)
}

/// Writes `head` one byte every `every` until the gateway closes the
/// connection (or `limit` passes); the time from the first byte to the
/// close, and what the gateway sent.
async fn trickle(
    s: &mut TcpStream,
    head: &[u8],
    every: Duration,
    limit: Duration,
) -> (Option<Duration>, String) {
    let t0 = Instant::now();
    let mut i = 0;
    while t0.elapsed() < limit {
        if s.write_all(&head[i % head.len()..][..1]).await.is_err() {
            return (Some(t0.elapsed()), String::new());
        }
        i += 1;
        let (closed, text) = closed_within(s, every).await;
        if closed {
            return (Some(t0.elapsed()), text);
        }
    }
    (None, String::new())
}

const SIP_HEAD: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.2;branch=z9hG4bK-l\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HTTP_HEAD: &[u8] =
    b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

#[tokio::test]
async fn sip_slow_message_is_cut_at_the_deadline_keepalives_are_not() {
    let dir = TempDir::new("slow-sip-deadline");
    let s = start(&dir, |c| c.sip.transport.message_timeout_ms = 600).await;
    let tcp = s.local_addr(Proto::Tcp).unwrap();
    // A byte every 100 ms: never idle, but the message never completes.
    let mut slow = connect_from("127.0.0.2", tcp).await;
    let (cut, _) = trickle(
        &mut slow,
        SIP_HEAD,
        Duration::from_millis(100),
        Duration::from_secs(5),
    )
    .await;
    let cut = cut.expect("the slow sender is cut off");
    assert!(
        cut >= Duration::from_millis(550) && cut < Duration::from_millis(2000),
        "cut {cut:?} after the first byte; message_timeout_ms = 600"
    );
    // Keep-alive CRLFs between messages (RFC 5626 §4.4.1) for twice the
    // deadline: governed by the idle timeout only, so the connection stays
    // and a message after them is answered.
    let mut ka = connect_from("127.0.0.2", tcp).await;
    assert_eq!(
        sip_options_on(&mut ka, 1, Duration::from_secs(2))
            .await
            .as_deref(),
        Some("SIP/2.0 200 OK")
    );
    for _ in 0..12 {
        ka.write_all(b"\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sip_options_on(&mut ka, 2, Duration::from_secs(2))
            .await
            .as_deref(),
        Some("SIP/2.0 200 OK"),
        "keep-alives between messages are not cut by the message deadline"
    );
    // A message that takes a while but completes within the deadline is
    // taken: the head in two parts 300 ms apart.
    let me = ka.local_addr().unwrap();
    let msg = options(me, 3);
    let (a, b) = msg.split_at(msg.len() / 2);
    ka.write_all(a.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    ka.write_all(b.as_bytes()).await.unwrap();
    let (_, text) = closed_within(&mut ka, Duration::from_millis(1000)).await;
    assert!(text.starts_with("SIP/2.0 200"), "{text:?}");
    assert!(
        counter(
            &s,
            "sipgw_sip_connections_closed_total{reason=\"message_timeout\"}"
        )
        .await
            >= 1.0
    );
    s.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn sip_per_address_cap_refuses_the_next_connection_from_that_address_only() {
    let dir = TempDir::new("slow-sip-per-address");
    let s = start(&dir, |c| c.sip.transport.max_connections_per_address = 4).await;
    let tcp = s.local_addr(Proto::Tcp).unwrap();
    let mut held = Vec::new();
    for n in 0..4 {
        let mut c = connect_from("127.0.0.2", tcp).await;
        assert_eq!(
            sip_options_on(&mut c, 10 + n, Duration::from_secs(2))
                .await
                .as_deref(),
            Some("SIP/2.0 200 OK")
        );
        held.push(c);
    }
    // The fifth from 127.0.0.2 is closed at once, unanswered.
    let mut fifth = connect_from("127.0.0.2", tcp).await;
    let (closed, text) = closed_within(&mut fifth, Duration::from_secs(2)).await;
    assert!(closed && text.is_empty(), "{closed} {text:?}");
    // Another source is served, and so are the four already open.
    assert!(sip_probe("127.0.0.3", tcp, 20).await.is_some());
    for (n, c) in (30..).zip(held.iter_mut()) {
        assert_eq!(
            sip_options_on(c, n, Duration::from_secs(2))
                .await
                .as_deref(),
            Some("SIP/2.0 200 OK")
        );
    }
    // Once one of the four is closed, 127.0.0.2 may open another.
    drop(held.pop());
    let mut ok = false;
    for n in 40..60 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if sip_probe("127.0.0.2", tcp, n).await.is_some() {
            ok = true;
            break;
        }
    }
    assert!(ok, "a freed slot is available to the address again");
    assert!(
        counter(
            &s,
            "sipgw_sip_connections_refused_total{reason=\"per_address\"}"
        )
        .await
            >= 1.0
    );
    s.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn sip_global_cap_evicts_the_slowest_sender_never_an_idle_flow() {
    let dir = TempDir::new("slow-sip-evict");
    let s = start(&dir, |c| {
        c.sip.transport.max_connections = 4;
        c.sip.transport.message_timeout_ms = 60_000;
    })
    .await;
    let tcp = s.local_addr(Proto::Tcp).unwrap();
    // Two idle flows that have completed a message (registered UAs
    // between keep-alives), then two slow senders.
    let mut flows = Vec::new();
    for n in 0..2 {
        let mut c = connect_from("127.0.0.1", tcp).await;
        assert!(
            sip_options_on(&mut c, n, Duration::from_secs(2))
                .await
                .is_some()
        );
        flows.push(c);
    }
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut c = connect_from("127.0.0.2", tcp).await;
        c.write_all(&SIP_HEAD[..40]).await.unwrap();
        slow.push(c);
        // Distinct start times, so "slowest" is well defined.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The table is full; a new client is served by taking the slot of the
    // sender whose message has been in progress longest: the first one.
    assert!(sip_probe("127.0.0.3", tcp, 10).await.is_some());
    let (first_closed, _) = closed_within(&mut slow[0], Duration::from_millis(500)).await;
    let (second_closed, _) = closed_within(&mut slow[1], Duration::from_millis(200)).await;
    assert!(
        first_closed && !second_closed,
        "{first_closed} {second_closed}"
    );
    // That freed a slot for good (the victim left, the probe came and
    // went): fill it with another flow, and the next newcomer takes the
    // slot of the second slow sender.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = connect_from("127.0.0.1", tcp).await;
    assert!(
        sip_options_on(&mut c, 2, Duration::from_secs(2))
            .await
            .is_some()
    );
    flows.push(c);
    assert!(sip_probe("127.0.0.3", tcp, 11).await.is_some());
    let (second_closed, _) = closed_within(&mut slow[1], Duration::from_millis(500)).await;
    assert!(second_closed);
    // Only idle flows left (and the probe's connection, closed by now):
    // fill the table with flows, then a newcomer is refused, not served at
    // an idle flow's expense.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = connect_from("127.0.0.1", tcp).await;
    assert!(
        sip_options_on(&mut c, 3, Duration::from_secs(2))
            .await
            .is_some()
    );
    flows.push(c);
    let mut late = connect_from("127.0.0.3", tcp).await;
    let (closed, _) = closed_within(&mut late, Duration::from_secs(2)).await;
    assert!(closed, "no slow sender to evict: refused");
    for (n, c) in (20..).zip(flows.iter_mut()) {
        assert!(
            sip_options_on(c, n, Duration::from_secs(2)).await.is_some(),
            "idle flow {n} kept"
        );
    }
    assert!(counter(&s, "sipgw_sip_connections_closed_total{reason=\"evicted\"}").await >= 2.0);
    assert!(
        counter(
            &s,
            "sipgw_sip_connections_refused_total{reason=\"max_connections\"}"
        )
        .await
            >= 1.0
    );
    s.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn sip_and_http_serve_a_well_behaved_client_among_many_slow_connections() {
    let dir = TempDir::new("slow-many");
    let s = start(&dir, |c| {
        c.sip.transport.max_connections = 64;
        c.sip.transport.max_connections_per_address = 16;
        c.cpim.http_max_connections = 64;
        c.cpim.http_max_connections_per_address = 16;
    })
    .await;
    let tcp = s.local_addr(Proto::Tcp).unwrap();
    // 240 slow connections from 6 addresses, half to each listener: more
    // than both global caps, 20 per address and listener.
    let mut slow = Vec::new();
    for i in 0..240u32 {
        let from = format!("127.0.0.{}", 2 + i % 6);
        let (to, head) = if i % 2 == 0 {
            (tcp, SIP_HEAD)
        } else {
            (s.http, HTTP_HEAD)
        };
        let mut c = connect_from(&from, to).await;
        let _ = c.write_all(&head[..30]).await;
        slow.push(c);
    }
    for n in 0..10 {
        let sip = sip_probe("127.0.0.1", tcp, 100 + n).await;
        assert!(sip.is_some(), "SIP probe {n} served");
        let http = http_healthz("127.0.0.1", s.http).await;
        assert_eq!(http.as_deref(), Some("HTTP/1.1 200 OK"), "HTTP probe {n}");
    }
    drop(slow);
    s.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn http_slow_head_is_cut_at_the_header_deadline() {
    let dir = TempDir::new("slow-http-head");
    let s = start(&dir, |c| c.cpim.http_header_timeout_ms = 600).await;
    let mut slow = connect_from("127.0.0.2", s.http).await;
    let (cut, _) = trickle(
        &mut slow,
        HTTP_HEAD,
        Duration::from_millis(100),
        Duration::from_secs(5),
    )
    .await;
    let cut = cut.expect("the slow head is cut off");
    assert!(
        cut >= Duration::from_millis(550) && cut < Duration::from_millis(2000),
        "cut {cut:?}; http_header_timeout_ms = 600"
    );
    // A connection that says nothing at all is cut too.
    let mut silent = connect_from("127.0.0.2", s.http).await;
    let (closed, _) = closed_within(&mut silent, Duration::from_secs(2)).await;
    assert!(closed);
    assert_eq!(
        http_healthz("127.0.0.1", s.http).await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    assert!(
        counter(
            &s,
            "sipgw_http_connections_closed_total{reason=\"header_timeout\"}"
        )
        .await
            >= 2.0
    );
    s.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn http_slow_body_is_answered_408_and_closed() {
    let dir = TempDir::new("slow-http-body");
    let s = start(&dir, |c| c.cpim.http_body_timeout_ms = 600).await;
    let mut slow = connect_from("127.0.0.2", s.http).await;
    let head = format!(
        "POST /cpim/v1/subscribe HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let (cut, text) = trickle(
        &mut slow,
        b"{\"watcher\": \"pres:a@example.com\"          ",
        Duration::from_millis(100),
        Duration::from_secs(5),
    )
    .await;
    let cut = cut.expect("the slow body is cut off");
    assert!(cut < Duration::from_millis(2000), "cut {cut:?}");
    assert!(text.starts_with("HTTP/1.1 408 "), "{text:?}");
    assert!(text.contains("\"code\":\"body_timeout\""), "{text:?}");
    assert!(
        counter(
            &s,
            "sipgw_http_connections_closed_total{reason=\"body_timeout\"}"
        )
        .await
            >= 1.0
    );
    s.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn http_connection_caps_answer_503_and_spare_other_sources() {
    let dir = TempDir::new("slow-http-caps");
    let s = start(&dir, |c| {
        c.cpim.http_max_connections = 5;
        c.cpim.http_max_connections_per_address = 3;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from("127.0.0.2", s.http).await);
    }
    // Accepted in order; give the accept loop a moment to count them.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fourth = connect_from("127.0.0.2", s.http).await;
    let (closed, text) = closed_within(&mut fourth, Duration::from_secs(2)).await;
    assert!(closed, "{text:?}");
    assert!(text.starts_with("HTTP/1.1 503 "), "{text:?}");
    assert!(text.contains("too_many_connections"), "{text:?}");
    // Another source is served; then two held from it fill the global cap
    // and a third source is refused.
    assert_eq!(
        http_healthz("127.0.0.3", s.http).await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    for _ in 0..2 {
        held.push(connect_from("127.0.0.3", s.http).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut sixth = connect_from("127.0.0.4", s.http).await;
    let (closed, text) = closed_within(&mut sixth, Duration::from_secs(2)).await;
    assert!(closed && text.starts_with("HTTP/1.1 503 "), "{text:?}");
    // Freed slots are free again.
    held.clear();
    let mut ok = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if http_healthz("127.0.0.4", s.http).await.as_deref() == Some("HTTP/1.1 200 OK") {
            ok = true;
            break;
        }
    }
    assert!(ok);
    for reason in ["per_address", "max_connections"] {
        let series = format!("sipgw_http_connections_refused_total{{reason=\"{reason}\"}}");
        assert!(counter(&s, &series).await >= 1.0, "{series}");
    }
    s.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn http_graceful_shutdown_still_finishes_and_closes() {
    let dir = TempDir::new("slow-http-stop");
    let s = start(&dir, |_| {}).await;
    // An idle keep-alive connection and a half-sent head do not hold the
    // stop up beyond the grace period, and the listener is closed after.
    let mut idle = connect_from("127.0.0.1", s.http).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(2), idle.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let mut half = connect_from("127.0.0.2", s.http).await;
    half.write_all(b"GET /hea").await.unwrap();
    let http = s.http;
    let t0 = Instant::now();
    s.shutdown(Duration::from_secs(3)).await;
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    let (closed, _) = closed_within(&mut idle, Duration::from_secs(2)).await;
    assert!(
        closed,
        "the idle keep-alive connection is closed at the stop"
    );
    assert!(
        TcpStream::connect(http).await.is_err(),
        "the listener is closed"
    );
}
