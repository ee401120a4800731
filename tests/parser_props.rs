//! Property tests of the parser and serializer:
//! - print∘parse is the identity on generated messages;
//! - the stream parser yields the same messages wherever the input is split;
//! - no input makes the parser panic (random, truncated, mutated, oversized).

use bytes::Bytes;
use proptest::prelude::*;
use sip_cpim_gateway::lint;
use sip_cpim_gateway::sip::{
    HeaderName, Limits, Message, Method, StreamParser, Uri, parse_datagram,
};

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9.!%*_+`'~-]{0,11}"
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,8}(\\.[a-z][a-z0-9]{0,6}){1,2}",
        (1u8..=254, 0u8..=255, 0u8..=255, 1u8..=254)
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        Just("[2001:db8::1]".to_owned()),
    ]
}

fn uri() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("sip"), Just("sips")],
        proptest::option::of("[a-z0-9._~-]{1,10}(%2[0-9A-F])?"),
        host(),
        proptest::option::of(1024u16..65535),
        proptest::option::of(prop_oneof![
            Just(";lr"),
            Just(";transport=tcp"),
            Just(";user=phone;x=1")
        ]),
    )
        .prop_map(|(s, u, h, p, params)| {
            let mut out = format!("{s}:");
            if let Some(u) = u {
                out.push_str(&u);
                out.push('@');
            }
            out.push_str(&h);
            if let Some(p) = p {
                out.push_str(&format!(":{p}"));
            }
            out.push_str(params.unwrap_or(""));
            out
        })
}

fn display() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        "[A-Za-z]{1,8}".prop_map(|s| s),
        "[A-Za-z ,<>@]{0,12}".prop_map(|s| format!("\"{s}\"")),
    ])
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Subscribe),
        Just(Method::Notify),
        Just(Method::Publish),
        Just(Method::Register),
        Just(Method::Options),
        Just(Method::Message),
    ]
}

/// A generated message in canonical form.
fn message() -> impl Strategy<Value = Message> {
    (
        proptest::bool::ANY,
        method(),
        uri(),
        (
            host(),
            token(),
            proptest::option::of(1024u16..65535),
            proptest::collection::vec(host(), 0..3),
        ),
        (display(), uri(), token()),
        (display(), uri(), proptest::option::of(token())),
        (
            "[A-Za-z0-9.-]{1,20}(@[a-z0-9.]{1,12})?",
            0u32..=u32::MAX,
            0u8..=255u8,
        ),
        proptest::collection::vec(("X-[A-Za-z0-9-]{1,10}", "[ -~]{0,30}"), 0..4),
        proptest::option::of((
            0u32..=86400,
            prop_oneof![Just("presence"), Just("presence.winfo")],
        )),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        (100u16..=699, "[A-Za-z ]{0,20}"),
    )
        .prop_map(
            |(
                is_req,
                method,
                ruri,
                (vh, branch, vport, extra_vias),
                from,
                to,
                (cid, seq, mf),
                ext,
                sub,
                body,
                (code, reason),
            )| {
                let mut m = if is_req {
                    Message::request(method.clone(), Uri::parse_str(&ruri).unwrap())
                } else {
                    Message::response(code, reason.trim())
                };
                let port = vport.map(|p| format!(":{p}")).unwrap_or_default();
                m.push_header(
                    HeaderName::Via,
                    format!("SIP/2.0/UDP {vh}{port};branch=z9hG4bK{branch};rport"),
                );
                for h in extra_vias {
                    m.push_header(HeaderName::Via, format!("SIP/2.0/TCP {h};branch=z9hG4bKx"));
                }
                let na = |d: Option<String>, u: String| match d {
                    Some(d) => format!("{d} <{u}>"),
                    None => format!("<{u}>"),
                };
                m.push_header(
                    HeaderName::From,
                    format!("{};tag={}", na(from.0, from.1), from.2),
                );
                let mut t = na(to.0, to.1);
                if let Some(tag) = to.2 {
                    t.push_str(&format!(";tag={tag}"));
                }
                m.push_header(HeaderName::To, t);
                m.push_header(HeaderName::CallId, cid);
                m.push_header(HeaderName::CSeq, format!("{seq} {method}"));
                m.push_header(HeaderName::MaxForwards, mf.to_string());
                for (n, v) in ext {
                    m.push_header(
                        HeaderName::from_static(Box::leak(n.into_boxed_str())),
                        v.trim().to_owned(),
                    );
                }
                if let Some((exp, ev)) = sub {
                    m.push_header(HeaderName::Event, ev);
                    m.push_header(HeaderName::Expires, exp.to_string());
                }
                match body {
                    Some(b) => m.set_body("application/pidf+xml", b),
                    None => m.sync_content_length(),
                }
                m
            },
        )
}

fn parse(b: Bytes) -> Message {
    parse_datagram(b.clone(), &Limits::default())
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&b)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn print_parse_is_identity(m in message()) {
        let printed = m.to_bytes();
        let back = parse(printed.clone());
        prop_assert_eq!(&back, &m);
        prop_assert_eq!(back.to_bytes(), printed);
    }

    #[test]
    fn stream_split_anywhere(msgs in proptest::collection::vec(message(), 1..4), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8), keepalive in proptest::bool::ANY) {
        let mut wire = Vec::new();
        for m in &msgs {
            if keepalive {
                wire.extend_from_slice(b"\r\n\r\n");
            }
            m.write_to(&mut wire);
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.push(0);
        points.push(wire.len());
        points.sort_unstable();
        points.dedup();
        let mut p = StreamParser::new(Limits::default());
        let mut out = Vec::new();
        for w in points.windows(2) {
            p.push(&wire[w[0]..w[1]]);
            while let Some(m) = p.next_message().unwrap() {
                out.push(m);
            }
        }
        prop_assert_eq!(out, msgs);
        prop_assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = lint::lint_bytes(Bytes::from(b.clone()), &Limits::default());
        let mut p = StreamParser::new(Limits::default());
        p.push(&b);
        let _ = p.next_message();
    }

    #[test]
    fn mutated_messages_never_panic(m in message(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut b = m.to_bytes().to_vec();
        for (i, v) in flips {
            let k = i.index(b.len());
            b[k] = v;
        }
        let _ = lint::lint_bytes(Bytes::from(b.clone()), &Limits::default());
        let mut p = StreamParser::new(Limits::default());
        p.push(&b);
        while let Ok(Some(_)) = p.next_message() {}
    }
}

#[test]
fn every_truncation_of_corpus_and_fixtures_is_handled() {
    let mut files = Vec::new();
    for d in ["../shared/corpus/rfc4475", "fixtures/seed-flows"] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(d);
        for e in std::fs::read_dir(&dir).unwrap() {
            files.push(std::fs::read(e.unwrap().path()).unwrap());
        }
    }
    let limits = Limits::default();
    for f in &files {
        for cut in 0..=f.len() {
            let part = Bytes::copy_from_slice(&f[..cut]);
            let _ = lint::lint_bytes(part, &limits);
            let mut p = StreamParser::new(limits);
            p.push(&f[..cut]);
            let _ = p.next_message();
        }
    }
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let limits = Limits::default();
    let mut big = b"NOTIFY sip:a@example.com SIP/2.0\r\nX-Pad: ".to_vec();
    big.resize(limits.max_message_bytes + 10, b'a');
    let e = parse_datagram(Bytes::from(big.clone()), &limits).unwrap_err();
    assert_eq!(e.status_code(), 513);
    // A stream peer that never ends its header section is cut off too.
    let mut p = StreamParser::new(limits);
    p.push(&big);
    assert_eq!(p.next_message().unwrap_err().status_code(), 513);
    // Many tiny headers hit the header-count limit, not memory.
    let mut many = b"OPTIONS sip:a@example.com SIP/2.0\r\n".to_vec();
    for _ in 0..(limits.max_headers + 1) {
        many.extend_from_slice(b"X: y\r\n");
    }
    many.extend_from_slice(b"\r\n");
    assert!(matches!(
        parse_datagram(Bytes::from(many), &limits),
        Err(sip_cpim_gateway::sip::ParseError::TooManyHeaders { .. })
    ));
}
