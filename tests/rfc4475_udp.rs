//! Every RFC 4475 message sent over UDP to the running server gets the
//! answer the corpus README names for a registrar/presence server that does
//! not serve INVITE or MESSAGE, and the server keeps serving.

mod support;

use bytes::Bytes;
use sip_cpim_gateway::config::Config;
use sip_cpim_gateway::server::Server;
use sip_cpim_gateway::sip::salvage::salvage_request;
use sip_cpim_gateway::sip::{Limits, headers::decode_via, parse_datagram};
use sip_cpim_gateway::transport::Proto;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;

/// File → expected status (`None`: no answer at all).
const EXPECTED: &[(&str, Option<u16>)] = &[
    // §3.1.1 (valid): answered by method.
    ("wsinv", Some(405)),   // INVITE is not served (RFC 3261 §8.2.1)
    ("intmeth", Some(501)), // unknown method
    ("esc01", Some(405)),
    ("escnull", Some(200)), // a registrar: two distinct bindings
    ("esc02", Some(501)),   // RE%47IST%45R is not REGISTER
    ("lwsdisp", Some(200)),
    ("longreq", Some(405)),
    ("dblreq", Some(200)), // the REGISTER is processed normally
    ("semiuri", Some(200)),
    ("transports", Some(200)),
    ("mpart01", Some(405)), // MESSAGE
    ("unreason", None),     // responses are never answered
    ("noreason", None),
    // §3.1.2 (invalid).
    ("badinv01", Some(400)),
    ("clerr", Some(400)),
    ("ncl", Some(400)),
    ("scalar02", Some(400)),
    ("scalarlg", None),
    ("quotbal", Some(400)),
    ("ltgtruri", Some(400)),
    ("lwsruri", Some(400)),
    ("lwsstart", Some(400)),
    ("trws", Some(400)),
    ("escruri", Some(400)),
    ("baddate", Some(405)),  // Date does not matter to an INVITE we refuse
    ("regbadct", Some(400)), // the registrar decodes Contact: 400
    ("badaspec", Some(400)),
    ("baddn", Some(400)),
    ("badvers", Some(505)),
    ("mismatch01", Some(400)),
    ("mismatch02", Some(400)), // 501 or 400; the CSeq mismatch is found first
    ("bigcode", None),
    // §3.2.
    ("badbranch", Some(200)), // matched by RFC 2543 rules
    // §3.3.
    ("insuf", Some(400)),
    ("unkscm", Some(416)),
    ("novelsc", Some(416)),
    ("unksm2", Some(400)), // a registrar needs a SIP/SIPS AOR in To
    ("bext01", Some(420)),
    ("invut", Some(405)),    // §8.2.1 method inspection precedes §8.2.3 content
    ("regaut01", Some(200)), // a registrar without auth ignores it
    ("multi01", Some(400)),
    ("mcl01", None), // framing error: the datagram is discarded
    ("bcast", None),
    ("zeromf", Some(200)), // an endpoint processes Max-Forwards 0 normally
    ("cparam01", Some(200)),
    ("cparam02", Some(200)),
    ("regescrt", Some(200)),
    ("sdp01", Some(405)),
    // §3.4.
    ("inv2543", Some(405)),
    // Not an RFC 4475 case: no Via, so no answer can be routed.
    ("test", None),
];

fn load(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../shared/corpus/rfc4475/{name}.dat",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// The port §18.2.2 sends the answer to: the top Via's sent-by port, or 5060.
fn answer_port(bytes: &[u8]) -> Option<u16> {
    let via = match parse_datagram(Bytes::copy_from_slice(bytes), &Limits::default()) {
        Ok(m) => m.top_via().cloned(),
        Err(_) => salvage_request(bytes)
            .and_then(|s| decode_via(&s.via[0].clone().into()).ok())
            .and_then(|v| v.into_iter().next()),
    }?;
    Some(via.port.unwrap_or(5060))
}

async fn start(dir: &support::TempDir) -> Server {
    let mut cfg = Config::default();
    cfg.sip.listen = vec!["udp:127.0.0.1:0".into()];
    cfg.cpim.listen = "127.0.0.1:0".into();
    cfg.store.path = dir.0.join("store").display().to_string();
    Server::start(&cfg).await.unwrap()
}

#[tokio::test]
async fn every_message_gets_its_answer_and_the_server_keeps_serving() {
    let dir = support::TempDir::new("4475");
    let server = start(&dir).await;
    let gw = server.local_addr(Proto::Udp).unwrap();
    assert_eq!(EXPECTED.len(), 50);
    let mut failures = Vec::new();
    for (n, (name, expected)) in EXPECTED.iter().enumerate() {
        let bytes = load(name);
        // Each message comes from its own loopback address, bound at the
        // port its Via names, so the answer routed per §18.2.2 reaches it.
        let ip = Ipv4Addr::new(127, 0, 1, 10 + n as u8);
        let port = answer_port(&bytes).unwrap_or(0);
        let sock = UdpSocket::bind(SocketAddr::from((ip, port))).await.unwrap();
        sock.send_to(&bytes, gw).await.unwrap();
        let wait = if expected.is_some() {
            Duration::from_secs(2)
        } else {
            Duration::from_millis(300)
        };
        let mut buf = vec![0u8; 65536];
        let got = match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
            Ok(Ok((k, _))) => {
                let text = String::from_utf8_lossy(&buf[..k]).into_owned();
                text.get(8..11).and_then(|c| c.parse::<u16>().ok())
            }
            _ => None,
        };
        if got != *expected {
            failures.push(format!("{name}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // Still serving.
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    let ok = format!(
        "OPTIONS sip:gw@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKafter\r\nMax-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:gw@example.com>\r\nCall-ID: after\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(ok.as_bytes(), gw).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (k, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..k].starts_with(b"SIP/2.0 200 OK\r\n"));
}

#[tokio::test]
async fn answers_carry_the_headers_the_rfc_requires() {
    let dir = support::TempDir::new("4475");
    let server = start(&dir).await;
    let gw = server.local_addr(Proto::Udp).unwrap();
    let ask = |name: &'static str, ip: u8| async move {
        let bytes = load(name);
        let port = answer_port(&bytes).unwrap();
        let sock = UdpSocket::bind(SocketAddr::from((Ipv4Addr::new(127, 0, 2, ip), port)))
            .await
            .unwrap();
        sock.send_to(&bytes, gw).await.unwrap();
        let mut buf = vec![0u8; 65536];
        let (k, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&buf[..k]).into_owned()
    };
    let bext = ask("bext01", 1).await;
    assert!(
        bext.contains("\r\nUnsupported: nothingSupportsThis, nothingSupportsThisEither\r\n"),
        "{bext}"
    );
    let inv = ask("invut", 2).await;
    assert!(
        inv.contains("\r\nAllow: OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH\r\n"),
        "{inv}"
    );
    let vers = ask("badvers", 3).await;
    assert!(
        vers.starts_with("SIP/2.0 505 Version Not Supported\r\n"),
        "{vers}"
    );
    let insuf = ask("insuf", 4).await;
    assert!(
        insuf.starts_with("SIP/2.0 400 Missing Call-ID Header\r\n"),
        "{insuf}"
    );
    let multi = ask("multi01", 5).await;
    assert!(multi.starts_with("SIP/2.0 400 Duplicate "), "{multi}");
    let scheme = ask("unkscm", 6).await;
    assert!(scheme.starts_with("SIP/2.0 416 "), "{scheme}");
}

/// RFC 3581 §4: a request that came over UDP with `rport` in its top Via is
/// answered over UDP to its source address and port, whatever the Via's
/// sent-protocol and sent-by say — including the early answers the UAS core
/// gives before any transaction exists (416 for `novelsc`, whose Via says
/// TCP and names a host that does not resolve here).
#[tokio::test]
async fn rport_answers_go_back_to_the_source_even_for_early_rejections() {
    let dir = support::TempDir::new("4475");
    let server = start(&dir).await;
    let gw = server.local_addr(Proto::Udp).unwrap();
    for (name, code) in [("novelsc", 416u16), ("unkscm", 416), ("bext01", 420)] {
        let text = String::from_utf8(load(name)).unwrap();
        let with_rport = text.replacen(";branch=", ";rport;branch=", 1);
        assert_ne!(text, with_rport, "{name} has a branch parameter");
        // An ephemeral source port, not the Via's sent-by port.
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let me = sock.local_addr().unwrap();
        sock.send_to(with_rport.as_bytes(), gw).await.unwrap();
        let mut buf = vec![0u8; 65536];
        let (k, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{name} with rport: no answer at the source"))
            .unwrap();
        let answer = String::from_utf8_lossy(&buf[..k]).into_owned();
        assert!(
            answer.starts_with(&format!("SIP/2.0 {code} ")),
            "{name}: {answer}"
        );
        // The top Via records where it came from (RFC 3581 §4).
        assert!(
            answer.contains(&format!(";rport={};", me.port()))
                && answer.contains(&format!("received={}", me.ip())),
            "{name}: {answer}"
        );
    }
}
