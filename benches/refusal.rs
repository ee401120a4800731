//! The user-space work of one stateless 503 under overload, two ways, on
//! the same presence SUBSCRIBE: after the full parse (`parse_datagram`,
//! `stamp_received`, `Message::stateless_reply`), and from a glance at its
//! lines (`Glance::of`, the top Via decoded and stamped,
//! `Glance::reply`), as `transaction::screen` does while admission refuses
//! new requests. Both start from the receive buffer (the full path copies
//! it into `Bytes` first, as the UDP receiver does) and end with the
//! response's bytes; the transaction key, the To tag and the socket calls
//! are the same on both paths and left out.
//!
//! Run with `cargo bench --bench refusal`; results in docs/performance.md
//! ("Refused before the parse").

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use sip_cpim_gateway::sip::glance::Glance;
use sip_cpim_gateway::sip::headers::decode_via;
use sip_cpim_gateway::sip::{HeaderName, Limits, parse_datagram};
use sip_cpim_gateway::transport::routing::stamped;
use sip_cpim_gateway::transport::{Proto, Source, stamp_received};
use std::hint::black_box;

/// The SUBSCRIBE of the overload runs (tests/sipp/side-by-side/kamailio/
/// scenarios/subscribe.xml) as SIPp fills it in.
const SUBSCRIBE: &[u8] = concat!(
    "SUBSCRIBE sip:user1042@example.com SIP/2.0\r\n",
    "Via: SIP/2.0/UDP 127.0.0.1:15190;branch=z9hG4bK-18264-1-0\r\n",
    "Max-Forwards: 70\r\n",
    "From: <sip:watcher1042@example.com>;tag=18264S1\r\n",
    "To: <sip:user1042@example.com>\r\n",
    "Call-ID: 1-18264@127.0.0.1\r\n",
    "CSeq: 1 SUBSCRIBE\r\n",
    "Contact: <sip:watcher1042@127.0.0.1:15190>\r\n",
    "Event: presence\r\n",
    "Accept: application/pidf+xml\r\n",
    "Expires: 600\r\n",
    "Content-Length: 0\r\n",
    "\r\n",
)
.as_bytes();

const REASON: &str = "Service Unavailable (overloaded)";

fn refusal(c: &mut Criterion) {
    let source = Source {
        proto: Proto::Udp,
        peer: "127.0.0.1:15190".parse().unwrap(),
        local: "127.0.0.1:15090".parse().unwrap(),
        conn: None,
    };
    let limits = Limits::default();
    let extra = [(HeaderName::RetryAfter, "2")];
    let mut g = c.benchmark_group("refusal");
    g.bench_function("after the full parse", |b| {
        b.iter(|| {
            let bytes = Bytes::copy_from_slice(black_box(SUBSCRIBE));
            let mut req = parse_datagram(bytes, &limits).unwrap();
            stamp_received(&mut req, &source);
            black_box(req.stateless_reply(503, REASON, "0123456789abcdef", &extra))
        })
    });
    g.bench_function("from a glance", |b| {
        b.iter(|| {
            let glance = Glance::of(black_box(SUBSCRIBE)).unwrap();
            let top = decode_via(&glance.top_via().into())
                .unwrap()
                .into_iter()
                .next()
                .unwrap();
            let top = stamped(&top, &source).unwrap_or(top);
            black_box(glance.reply(503, REASON, &top.to_string(), "0123456789abcdef", &extra))
        })
    });
    g.finish();
}

criterion_group!(benches, refusal);
criterion_main!(benches);
