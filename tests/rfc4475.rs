//! Every RFC 4475 torture message of `../shared/corpus/rfc4475/`, checked
//! against the classification in that folder's README.

use bytes::Bytes;
use sip_cpim_gateway::sip::{
    Contacts, HeaderName, Limits, Message, Method, ParseError, Scheme, StartLine, Transport,
    parse_datagram,
};
use std::collections::BTreeSet;
use std::path::PathBuf;

fn corpus_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/corpus/rfc4475"
    ))
}

fn load(name: &str) -> Bytes {
    let p = corpus_dir().join(format!("{name}.dat"));
    Bytes::from(std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
}

fn parse(name: &str) -> Result<Message, ParseError> {
    parse_datagram(load(name), &Limits::default())
}

fn ok(name: &str) -> Message {
    parse(name).unwrap_or_else(|e| panic!("{name} must parse: {e}"))
}

/// §3.1.1: must parse; print∘parse reparses to an equal message.
const VALID: &[&str] = &[
    "wsinv",
    "intmeth",
    "esc01",
    "escnull",
    "esc02",
    "lwsdisp",
    "longreq",
    "dblreq",
    "semiuri",
    "transports",
    "mpart01",
    "unreason",
    "noreason",
];

/// §3.2–§3.4 (mcl01 excepted, see `mcl01_is_a_framing_error`): parse.
const PARSE_APP_DECIDES: &[&str] = &[
    "badbranch",
    "insuf",
    "unkscm",
    "novelsc",
    "unksm2",
    "bext01",
    "invut",
    "regaut01",
    "multi01",
    "bcast",
    "zeromf",
    "cparam01",
    "cparam02",
    "regescrt",
    "sdp01",
    "inv2543",
];

/// §3.1.2: rejected with a specific error (by the parser, or for headers
/// decoded on use, by `check_headers`).
const INVALID: &[&str] = &[
    "badinv01",
    "clerr",
    "ncl",
    "scalar02",
    "scalarlg",
    "quotbal",
    "ltgtruri",
    "lwsruri",
    "lwsstart",
    "trws",
    "escruri",
    "baddate",
    "regbadct",
    "badaspec",
    "baddn",
    "badvers",
    "mismatch01",
    "mismatch02",
    "bigcode",
];

#[test]
fn every_corpus_file_is_classified() {
    let mut on_disk = BTreeSet::new();
    for e in std::fs::read_dir(corpus_dir()).expect("../shared/corpus/rfc4475 exists") {
        let name = e.unwrap().file_name().into_string().unwrap();
        if let Some(stem) = name.strip_suffix(".dat") {
            on_disk.insert(stem.to_owned());
        }
    }
    let mut known: BTreeSet<String> = VALID
        .iter()
        .chain(PARSE_APP_DECIDES)
        .chain(INVALID)
        .map(|s| s.to_string())
        .collect();
    known.insert("mcl01".into());
    known.insert("test".into()); // not an RFC 4475 case (README): only must not panic
    assert_eq!(on_disk, known);
    assert_eq!(on_disk.len(), 50);
    let _ = parse("test");
}

#[test]
fn valid_messages_parse_and_round_trip() {
    for name in VALID {
        let m = ok(name);
        m.check_headers().unwrap_or_else(|e| panic!("{name}: {e}"));
        let printed = m.to_bytes();
        let again = parse_datagram(printed.clone(), &Limits::default()).unwrap_or_else(|e| {
            panic!("{name} reparse: {e}\n{}", String::from_utf8_lossy(&printed))
        });
        let mut expected = m.clone();
        expected.sync_content_length();
        assert_eq!(again, expected, "{name}: print∘parse");
        assert_eq!(again.to_bytes(), printed, "{name}: printing is stable");
    }
}

#[test]
fn wsinv_tortuous_invite() {
    let m = ok("wsinv");
    assert_eq!(m.method(), Some(&Method::Invite));
    assert_eq!(m.to().unwrap().tag(), Some("1918181833n"));
    assert_eq!(m.from().unwrap().tag(), Some("98asjd8"));
    assert_eq!(m.from().unwrap().display().unwrap(), "J Rosenberg \\\"");
    assert_eq!(m.max_forwards(), Some(68));
    assert_eq!(m.cseq().unwrap().seq, 9);
    assert_eq!(m.via().len(), 3);
    assert_eq!(m.via()[1].transport, Transport::Tcp);
    assert_eq!(m.via()[2].branch(), Some("z9hG4bK30239"));
    assert_eq!(m.header_value(&HeaderName::Subject), Some(""));
    assert_eq!(
        m.header_value(&HeaderName::from_static("NewFangledHeader")),
        Some("newfangled value continued newfangled value")
    );
    let Contacts::List(c) = m.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(c[0].display().unwrap(), "Quoted string \"\"");
    assert_eq!(c[0].params.get("newparam"), Some(Some("newvalue")));
    assert_eq!(c[0].q(), Some(330));
    assert_eq!(
        m.routes().unwrap()[0].uri.params.get("unknown-no-value"),
        Some(None)
    );
    assert_eq!(m.body().len(), 150);
}

#[test]
fn intmeth_wide_character_range() {
    let m = ok("intmeth");
    assert!(
        matches!(m.method(), Some(Method::Extension(x)) if &**x == "!interesting-Method0123456789_*+`.%indeed'~")
    );
    let ruri = m.request_uri().unwrap();
    assert_eq!(
        ruri.user.as_deref(),
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(
        ruri.password.as_deref(),
        Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
    );
    assert_eq!(
        m.to().unwrap().display().unwrap(),
        "BEL:\x07 NUL:\x00 DEL:\x7f"
    );
    assert_eq!(m.from().unwrap().tag(), Some("_token~1'+`*%!-."));
    assert_eq!(m.max_forwards(), Some(255));
}

#[test]
fn escaping_rules() {
    let m = ok("esc01");
    let r = m.request_uri().unwrap();
    assert_eq!(r.user_unescaped().as_deref(), Some("sips:user@example.com"));
    assert_eq!(m.to().unwrap().uri.aor_key(), "sip:user@example.com");
    assert_eq!(
        m.from().unwrap().uri.user_unescaped().as_deref(),
        Some("I have spaces")
    );

    let m = ok("escnull");
    let Contacts::List(c) = m.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(c.len(), 2, "two distinct contacts");
    assert!(!c[0].uri.matches(&c[1].uri));
    assert_eq!(
        m.to().unwrap().uri.user_unescaped().as_deref(),
        Some("null-\0-null")
    );

    let m = ok("esc02");
    assert!(matches!(m.method(), Some(Method::Extension(x)) if &**x == "RE%47IST%45R"));
    let Contacts::List(c) = m.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(c.len(), 2, "C%6Fntact is not Contact");
}

#[test]
fn other_valid_cases() {
    assert_eq!(ok("lwsdisp").from().unwrap().display().unwrap(), "caller");
    let m = ok("longreq");
    assert_eq!(m.via().len(), 34);
    let m = ok("dblreq");
    assert_eq!(m.method(), Some(&Method::Register));
    assert!(m.body().is_empty(), "trailing octets ignored");
    assert_eq!(
        ok("semiuri").request_uri().unwrap().user.as_deref(),
        Some("user;par=u%40example.net")
    );
    let t: Vec<_> = ok("transports")
        .via()
        .iter()
        .map(|v| v.transport.to_string())
        .collect();
    assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
    let m = ok("mpart01");
    assert_eq!(m.body().len() as u32, m.content_length().unwrap());
    assert!(m.body().contains(&0));
    let m = ok("unreason");
    assert_eq!(m.status(), Some(200));
    assert!(m.reason().unwrap().starts_with("= 2**3 * 5**2 "));
    let m = ok("noreason");
    assert_eq!((m.status(), m.reason()), (Some(100), Some("")));
}

#[test]
fn invalid_messages_are_rejected_specifically() {
    fn header_err(name: &str, header: HeaderName) -> ParseError {
        let e = match parse(name) {
            Err(e) => e,
            Ok(m) => m.check_headers().expect_err(name),
        };
        assert_eq!(e.header(), Some(&header), "{name}: {e}");
        assert_eq!(e.status_code(), 400, "{name}");
        e
    }
    fn start_err(name: &str, reason: &str) {
        match parse(name) {
            Err(ParseError::StartLine { reason: r, .. }) => {
                assert!(r.contains(reason), "{name}: {r}")
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    header_err("badinv01", HeaderName::Via);
    assert!(matches!(
        parse("clerr"),
        Err(ParseError::BodyTruncated {
            declared: 9999,
            available: 154
        })
    ));
    header_err("ncl", HeaderName::ContentLength);
    let e = header_err("scalar02", HeaderName::CSeq);
    assert!(e.to_string().contains("out of range"), "{e}");
    header_err("scalarlg", HeaderName::CSeq);
    let e = header_err("quotbal", HeaderName::To);
    assert!(e.to_string().contains("unterminated quoted string"));
    start_err("ltgtruri", "must not be enclosed");
    start_err("lwsruri", "whitespace inside the Request-URI");
    start_err("lwsstart", "more than one SP");
    start_err("trws", "trailing whitespace");
    start_err("escruri", "headers are not allowed in a Request-URI");
    // Date matters to this element only where it is decoded; when it is, EST is refused.
    assert!(parse("baddate").is_ok());
    header_err("baddate", HeaderName::Date);
    let e = header_err("regbadct", HeaderName::Contact);
    assert!(e.to_string().contains("enclosed in '<' '>'"), "{e}");
    let e = header_err("badaspec", HeaderName::To);
    assert!(e.to_string().contains("whitespace inside"), "{e}");
    let e = header_err("baddn", HeaderName::From);
    assert!(e.to_string().contains("must be quoted"), "{e}");
    let e = parse("badvers").unwrap_err();
    assert_eq!(
        e,
        ParseError::UnsupportedVersion {
            version: "SIP/7.0".into()
        }
    );
    assert_eq!(e.status_code(), 505);
    assert!(matches!(
        parse("mismatch01"),
        Err(ParseError::CSeqMethodMismatch { .. })
    ));
    assert!(matches!(
        parse("mismatch02"),
        Err(ParseError::CSeqMethodMismatch { .. })
    ));
    start_err("bigcode", "three digits");
    // Every §3.1.2 case is covered above.
    assert_eq!(INVALID.len(), 19);
}

#[test]
fn mcl01_is_a_framing_error() {
    // RFC 4475 §3.3.9 / README: conflicting Content-Length values cannot be
    // framed; over UDP the datagram is discarded.
    assert!(matches!(
        parse("mcl01"),
        Err(ParseError::ConflictingContentLength { .. })
    ));
}

#[test]
fn application_layer_cases_parse() {
    for name in PARSE_APP_DECIDES {
        ok(name);
    }
    let m = ok("badbranch");
    assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK"));
    assert_eq!(
        m.top_via().unwrap().rfc3261_branch(),
        None,
        "cookie alone is no RFC 3261 branch"
    );

    let m = ok("insuf");
    assert!(m.call_id().is_none() && m.from().is_none() && m.to().is_none());

    assert_eq!(
        ok("unkscm").request_uri().unwrap().scheme,
        Scheme::Other("nobodyknowsthisscheme".into())
    );
    assert_eq!(
        ok("novelsc").request_uri().unwrap().scheme,
        Scheme::Other("soap.beep".into())
    );
    let m = ok("unksm2");
    assert_eq!(m.to().unwrap().uri.scheme, Scheme::Other("isbn".into()));
    assert_eq!(m.from().unwrap().uri.to_string(), "http://www.example.com");

    let m = ok("bext01");
    assert_eq!(
        m.require().unwrap(),
        ["nothingSupportsThis", "nothingSupportsThisEither"]
    );
    assert_eq!(m.proxy_require().unwrap().len(), 2);

    assert_eq!(
        ok("invut").content_type().unwrap().unwrap().essence_str(),
        "application/unknownformat"
    );
    assert_eq!(
        ok("regaut01").authorization().unwrap()[0].scheme,
        "NoOneKnowsThisScheme"
    );

    let m = ok("multi01");
    for h in [
        HeaderName::CSeq,
        HeaderName::CallId,
        HeaderName::To,
        HeaderName::From,
        HeaderName::MaxForwards,
    ] {
        assert!(m.core().repeated.contains(&h), "{h} recorded as repeated");
    }

    assert_eq!(ok("bcast").via()[1].host.to_string(), "255.255.255.255");
    assert_eq!(ok("zeromf").max_forwards(), Some(0));

    let Contacts::List(c) = ok("cparam01").contacts().unwrap() else {
        panic!()
    };
    assert!(c[0].params.contains("unknownparam") && c[0].uri.params.is_empty());
    let Contacts::List(c) = ok("cparam02").contacts().unwrap() else {
        panic!()
    };
    assert!(c[0].uri.params.contains("unknownparam") && c[0].params.is_empty());
    let Contacts::List(c) = ok("regescrt").contacts().unwrap() else {
        panic!()
    };
    assert_eq!(
        c[0].uri.headers.as_deref(),
        Some("Route=%3Csip:sip.example.com%3E")
    );
    let accept = ok("sdp01").accept().unwrap().unwrap();
    assert_eq!(accept[0].essence_str(), "text/nobodyknowsthis");

    let m = ok("inv2543");
    assert!(m.content_length().is_none() && m.max_forwards().is_none());
    assert!(m.top_via().unwrap().branch().is_none());
    assert!(m.from().unwrap().tag().is_none());
    assert_eq!(m.body().len(), 105, "body runs to the end of the datagram");
    assert!(matches!(m.start_line(), StartLine::Request { .. }));
}
