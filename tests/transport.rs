//! Transport and transaction layer over real UDP, TCP and TLS on 127.0.0.1.

mod support;

use bytes::Bytes;
use sip_cpim_gateway::sip::{HeaderName, Limits, Message, Method, StreamParser, Uri};
use sip_cpim_gateway::transport::{Proto, Target};
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(3);

#[tokio::test]
async fn udp_request_response() {
    let s = start(Opts::default()).await;
    let ua = udp_ua().await;
    let me = ua.local_addr().unwrap();
    ua.send_to(
        request("SUBSCRIBE", "UDP", me, "u1", "Event: presence\r\n").as_bytes(),
        s.udp,
    )
    .await
    .unwrap();
    let (resp, _) = recv_udp(&ua, WAIT).await.expect("response");
    assert_eq!(resp.status(), Some(200));
    assert!(
        resp.to().unwrap().tag().is_some(),
        "UAS adds a To tag (RFC 3261 §8.2.6.2)"
    );
    assert_eq!(resp.cseq().unwrap().method, Method::Subscribe);
    assert_eq!(resp.top_via().unwrap().branch(), Some("z9hG4bKu1"));
    assert_eq!(s.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn retransmission_is_absorbed_and_answered_with_the_same_response() {
    let s = start(Opts {
        handler_delay: Duration::from_millis(300),
        ..Opts::default()
    })
    .await;
    let ua = udp_ua().await;
    let me = ua.local_addr().unwrap();
    let req = request("PUBLISH", "UDP", me, "rtx1", "Event: presence\r\n");
    ua.send_to(req.as_bytes(), s.udp).await.unwrap();
    // Retransmitted while the handler is still working (Trying): absorbed.
    tokio::time::sleep(Duration::from_millis(100)).await;
    ua.send_to(req.as_bytes(), s.udp).await.unwrap();
    let (first, first_bytes) = recv_udp(&ua, WAIT).await.expect("final response");
    assert_eq!(first.status(), Some(200));
    assert!(
        recv_udp(&ua, Duration::from_millis(200)).await.is_none(),
        "no second response to the Trying retransmission"
    );
    // Retransmitted after the final response (Completed): the same bytes again.
    ua.send_to(req.as_bytes(), s.udp).await.unwrap();
    let (_, again) = recv_udp(&ua, WAIT).await.expect("re-sent response");
    assert_eq!(again, first_bytes, "the last response is re-sent verbatim");
    assert_eq!(s.calls.load(Ordering::SeqCst), 1, "the handler ran once");
}

#[tokio::test]
async fn rfc2543_request_without_cookie_is_matched_too() {
    let s = start(Opts::default()).await;
    let ua = udp_ua().await;
    let me = ua.local_addr().unwrap();
    let req =
        request("SUBSCRIBE", "UDP", me, "x", "Event: presence\r\n").replace(";branch=z9hG4bKx", "");
    ua.send_to(req.as_bytes(), s.udp).await.unwrap();
    let (_, a) = recv_udp(&ua, WAIT).await.unwrap();
    ua.send_to(req.as_bytes(), s.udp).await.unwrap();
    let (_, b) = recv_udp(&ua, WAIT).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(s.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn tcp_request_response_and_connection_reuse_for_responses() {
    let s = start(Opts::default()).await;
    let mut c = tcp_connect(s.tcp).await;
    let me = c.local_addr().unwrap();
    let mut p = StreamParser::new(Limits::default());
    for n in 0..3 {
        send_stream(
            &mut c,
            &request(
                "SUBSCRIBE",
                "TCP",
                me,
                &format!("t{n}"),
                "Event: presence\r\n",
            ),
        )
        .await;
        let resp = recv_stream(&mut c, &mut p, WAIT)
            .await
            .expect("response on the same connection");
        assert_eq!(resp.status(), Some(200));
    }
    assert_eq!(s.transport.connection_count(), 1);
}

#[tokio::test]
async fn tls_request_response() {
    let s = start(Opts {
        tls: true,
        ..Opts::default()
    })
    .await;
    let mut c = tls_connect(s.tls.unwrap(), s.cert_pem.as_deref().unwrap()).await;
    let me = c.get_ref().0.local_addr().unwrap();
    let mut p = StreamParser::new(Limits::default());
    send_stream(&mut c, &request("OPTIONS", "TLS", me, "tls1", "")).await;
    let resp = recv_stream(&mut c, &mut p, WAIT)
        .await
        .expect("response over TLS");
    assert_eq!(resp.status(), Some(200));
    assert_eq!(
        resp.header_value(&HeaderName::AllowEvents),
        Some("presence")
    );
}

#[tokio::test]
async fn response_on_a_new_tcp_connection_when_the_first_is_gone() {
    // RFC 3261 §18.2.2: the connection is closed before the response, so the
    // server opens one to the received address at the sent-by port.
    let s = start(Opts {
        handler_delay: Duration::from_millis(300),
        ..Opts::default()
    })
    .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sent_by = listener.local_addr().unwrap();
    let mut c = tcp_connect(s.tcp).await;
    send_stream(
        &mut c,
        &request(
            "SUBSCRIBE",
            "TCP",
            sent_by,
            "newconn",
            "Event: presence\r\n",
        ),
    )
    .await;
    c.shutdown().await.unwrap();
    drop(c);
    let (mut back, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("server connects back")
        .unwrap();
    let mut p = StreamParser::new(Limits::default());
    let resp = recv_stream(&mut back, &mut p, WAIT)
        .await
        .expect("response on the new connection");
    assert_eq!(resp.status(), Some(200));
    assert_eq!(resp.top_via().unwrap().branch(), Some("z9hG4bKnewconn"));
}

fn outgoing(method: Method, branch_hint: &str) -> Message {
    let mut m = Message::request(
        method.clone(),
        Uri::parse_str("sip:watcher@127.0.0.1").unwrap(),
    );
    m.push_header(HeaderName::MaxForwards, "70");
    m.push_header(HeaderName::From, "<sip:presentity@example.com>;tag=p1");
    m.push_header(HeaderName::To, "<sip:watcher@example.com>;tag=w1");
    m.push_header(HeaderName::CallId, format!("{branch_hint}@gw"));
    m.push_header(HeaderName::CSeq, format!("7 {method}"));
    m.push_header(HeaderName::Event, "presence");
    m
}

/// A peer that answers every request on its connections with 200.
async fn answering_peer(
    listener: TcpListener,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    loop {
        let (mut c, _) = listener.accept().await.unwrap();
        accepted.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let mut p = StreamParser::new(Limits::default());
            while let Some(req) = recv_stream(&mut c, &mut p, Duration::from_secs(10)).await {
                let resp = Message::response_to(&req, 200, "OK");
                c.write_all(&resp.to_bytes()).await.unwrap();
            }
        });
    }
}

#[tokio::test]
async fn client_transactions_reuse_an_open_connection() {
    let s = start(Opts::default()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(answering_peer(listener, accepted.clone()));
    for n in 0..3 {
        let resp = s
            .layer
            .send_request(
                outgoing(Method::Notify, &format!("r{n}")),
                Target::new(Proto::Tcp, peer),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), Some(200));
        assert_eq!(resp.cseq().unwrap().method, Method::Notify);
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one connection for three requests"
    );
}

#[tokio::test]
async fn requests_to_a_peer_reuse_its_incoming_connection() {
    // The seeds' appendix B: a connection the peer opened (for its
    // SUBSCRIBE) carries the NOTIFYs back to it.
    let s = start(Opts::default()).await;
    let mut c = tcp_connect(s.tcp).await;
    let listen_port_claimed: std::net::SocketAddr = "127.0.0.1:5999".parse().unwrap();
    let mut p = StreamParser::new(Limits::default());
    send_stream(
        &mut c,
        &request(
            "SUBSCRIBE",
            "TCP",
            listen_port_claimed,
            "in1",
            "Event: presence\r\n",
        ),
    )
    .await;
    assert_eq!(
        recv_stream(&mut c, &mut p, WAIT).await.unwrap().status(),
        Some(200)
    );
    let layer = s.layer.clone();
    let notify = tokio::spawn(async move {
        layer
            .send_request(
                outgoing(Method::Notify, "n1"),
                Target::new(Proto::Tcp, listen_port_claimed),
            )
            .await
    });
    let req = recv_stream(&mut c, &mut p, WAIT)
        .await
        .expect("NOTIFY on the watcher's own connection");
    assert_eq!(req.method(), Some(&Method::Notify));
    let v = req.top_via().unwrap();
    assert!(v.rfc3261_branch().is_some());
    assert_eq!(v.transport.as_str(), "TCP");
    c.write_all(&Message::response_to(&req, 200, "OK").to_bytes())
        .await
        .unwrap();
    assert_eq!(notify.await.unwrap().unwrap().status(), Some(200));
}

#[tokio::test]
async fn client_over_udp_gets_the_response() {
    let s = start(Opts::default()).await;
    let peer = udp_ua().await;
    let addr = peer.local_addr().unwrap();
    let layer = s.layer.clone();
    let t = tokio::spawn(async move {
        layer
            .send_request(outgoing(Method::Notify, "u"), Target::new(Proto::Udp, addr))
            .await
    });
    let (req, _) = recv_udp(&peer, WAIT).await.unwrap();
    let via = req.top_via().unwrap();
    assert_eq!(via.port, Some(s.udp.port()), "sent-by is the UDP listener");
    assert_eq!(via.rport(), Some(None), "RFC 3581: rport requested");
    peer.send_to(
        &Message::response_to(&req, 481, "Call/Transaction Does Not Exist").to_bytes(),
        s.udp,
    )
    .await
    .unwrap();
    assert_eq!(t.await.unwrap().unwrap().status(), Some(481));
}

#[tokio::test]
async fn large_udp_request_goes_over_tcp() {
    // RFC 3261 §18.1.1: above the MTU threshold a request uses TCP.
    let s = start(Opts::default()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(answering_peer(listener, accepted.clone()));
    let mut m = outgoing(Method::Notify, "big");
    m.set_body("application/pidf+xml", Bytes::from(vec![b'x'; 2000]));
    let resp = s
        .layer
        .send_request(m, Target::new(Proto::Udp, peer))
        .await
        .unwrap();
    assert_eq!(resp.status(), Some(200));
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(resp.top_via().unwrap().transport.as_str(), "TCP");
}

#[tokio::test]
async fn garbage_and_half_messages_do_not_stop_the_server() {
    let s = start(Opts {
        idle_timeout: Duration::from_millis(500),
        ..Opts::default()
    })
    .await;
    let ua = udp_ua().await;
    let me = ua.local_addr().unwrap();
    for g in [
        &b"\x00\x01\x02"[..],
        b"\r\n\r\n",
        b"SIP/2.0 200 OK\r\n\r\n",
        &[0xffu8; 3000][..],
        b"INVITE",
    ] {
        ua.send_to(g, s.udp).await.unwrap();
    }
    // A TCP peer that sends half a message and stalls.
    let mut stalled = tcp_connect(s.tcp).await;
    stalled
        .write_all(b"SUBSCRIBE sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/TCP x;branch=z9hG4bK1\r\n")
        .await
        .unwrap();
    // Others are served meanwhile.
    ua.send_to(request("OPTIONS", "UDP", me, "alive", "").as_bytes(), s.udp)
        .await
        .unwrap();
    assert_eq!(recv_udp(&ua, WAIT).await.unwrap().0.status(), Some(200));
    let mut other = tcp_connect(s.tcp).await;
    let mut p = StreamParser::new(Limits::default());
    let other_addr = other.local_addr().unwrap();
    send_stream(
        &mut other,
        &request("OPTIONS", "TCP", other_addr, "alive2", ""),
    )
    .await;
    assert_eq!(
        recv_stream(&mut other, &mut p, WAIT)
            .await
            .unwrap()
            .status(),
        Some(200)
    );
    // The stalled connection is closed once idle.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut stalled, &mut buf))
        .await
        .expect("closed by the server");
    assert_eq!(n.unwrap_or(0), 0);
}

#[tokio::test]
async fn connection_cap_refuses_new_connections_but_keeps_serving() {
    let s = start(Opts {
        max_connections: 3,
        ..Opts::default()
    })
    .await;
    // Three flows that have each completed a message: idle between
    // messages, so not evictable (a connection that never completed one is
    // the slowest sender, and a newcomer at the cap takes its slot:
    // tests/slow_clients.rs).
    let mut held = Vec::new();
    for i in 0..3 {
        let mut c = tcp_connect(s.tcp).await;
        let me = c.local_addr().unwrap();
        let mut p = StreamParser::new(Limits::default());
        send_stream(
            &mut c,
            &request("OPTIONS", "TCP", me, &format!("cap-h{i}"), ""),
        )
        .await;
        assert_eq!(
            recv_stream(&mut c, &mut p, WAIT).await.unwrap().status(),
            Some(200)
        );
        held.push(c);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.transport.connection_count(), 3);
    // The fourth is closed at once.
    let mut extra = tcp_connect(s.tcp).await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut extra, &mut buf))
        .await
        .unwrap();
    assert_eq!(n.unwrap_or(0), 0, "over the cap: closed");
    // UDP and the held connections are still answered.
    let ua = udp_ua().await;
    ua.send_to(
        request("OPTIONS", "UDP", ua.local_addr().unwrap(), "cap-udp", "").as_bytes(),
        s.udp,
    )
    .await
    .unwrap();
    assert_eq!(recv_udp(&ua, WAIT).await.unwrap().0.status(), Some(200));
    let c = &mut held[0];
    let me = c.local_addr().unwrap();
    let mut p = StreamParser::new(Limits::default());
    send_stream(c, &request("OPTIONS", "TCP", me, "cap-tcp", "")).await;
    assert_eq!(
        recv_stream(c, &mut p, WAIT).await.unwrap().status(),
        Some(200)
    );
    // Closing one frees a slot.
    held.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = tcp_connect(s.tcp).await;
    let me = again.local_addr().unwrap();
    let mut p = StreamParser::new(Limits::default());
    send_stream(&mut again, &request("OPTIONS", "TCP", me, "cap-again", "")).await;
    assert_eq!(
        recv_stream(&mut again, &mut p, WAIT)
            .await
            .unwrap()
            .status(),
        Some(200)
    );
}

#[tokio::test]
async fn malformed_request_gets_400_naming_the_fault() {
    let s = start(Opts::default()).await;
    let ua = udp_ua().await;
    let me = ua.local_addr().unwrap();
    let bad = request("SUBSCRIBE", "UDP", me, "bad1", "").replace(
        "To: <sip:presentity@example.com>",
        "To: \"unterminated <sip:p@example.com>",
    );
    ua.send_to(bad.as_bytes(), s.udp).await.unwrap();
    // The response copies the request's To verbatim (§8.2.6.2), broken as it
    // is, so read it as text.
    let resp = recv_udp_raw(&ua, WAIT).await.expect("400");
    assert!(
        resp.starts_with("SIP/2.0 400 Bad To: unterminated quoted string\r\n"),
        "{resp}"
    );
    assert!(
        resp.contains("\r\nWarning: 399 gw.test \"malformed To header at offset "),
        "{resp}"
    );
    assert!(
        resp.contains("\r\nTo: \"unterminated <sip:p@example.com>\r\n"),
        "{resp}"
    );
    assert!(resp.contains("\r\nCall-ID: bad1@test\r\n"), "{resp}");
    assert!(
        resp.contains(";received=127.0.0.1")
            || resp.contains(&format!("Via: SIP/2.0/UDP {me};branch=z9hG4bKbad1")),
        "{resp}"
    );
    assert_eq!(s.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn stray_ack_is_absorbed_and_invite_gets_405_with_allow() {
    let s = start(Opts::default()).await;
    let ua = udp_ua().await;
    let me = ua.local_addr().unwrap();
    ua.send_to(request("ACK", "UDP", me, "ack1", "").as_bytes(), s.udp)
        .await
        .unwrap();
    assert!(
        recv_udp(&ua, Duration::from_millis(300)).await.is_none(),
        "no answer to a stray ACK"
    );
    ua.send_to(request("INVITE", "UDP", me, "inv1", "").as_bytes(), s.udp)
        .await
        .unwrap();
    let (resp, _) = recv_udp(&ua, WAIT).await.unwrap();
    assert_eq!(resp.status(), Some(405));
    assert_eq!(
        resp.header_value(&HeaderName::Allow),
        Some("OPTIONS, SUBSCRIBE, NOTIFY, PUBLISH")
    );
    // Timer G: the 405 is retransmitted until the ACK arrives (§17.2.1).
    let (again, _) = recv_udp(&ua, Duration::from_secs(2))
        .await
        .expect("retransmitted 405");
    assert_eq!(again.status(), Some(405));
    let to_tag = resp.to().unwrap().tag().unwrap().to_owned();
    let ack = request("ACK", "UDP", me, "inv1", "").replace(
        "To: <sip:presentity@example.com>",
        &format!("To: <sip:presentity@example.com>;tag={to_tag}"),
    );
    ua.send_to(ack.as_bytes(), s.udp).await.unwrap();
    // Drain anything sent before the ACK arrived, then expect silence.
    while recv_udp(&ua, Duration::from_millis(100)).await.is_some() {}
    assert!(
        recv_udp(&ua, Duration::from_millis(1500)).await.is_none(),
        "retransmissions stop after ACK"
    );
    // A CANCEL for the INVITE: 200 (already answered); for nothing: 481.
    ua.send_to(request("CANCEL", "UDP", me, "inv1", "").as_bytes(), s.udp)
        .await
        .unwrap();
    assert_eq!(recv_udp(&ua, WAIT).await.unwrap().0.status(), Some(200));
    ua.send_to(
        request("CANCEL", "UDP", me, "nothing", "").as_bytes(),
        s.udp,
    )
    .await
    .unwrap();
    assert_eq!(recv_udp(&ua, WAIT).await.unwrap().0.status(), Some(481));
}
