//! Every message of the seed call flows (`fixtures/seed-flows/`) parses, and
//! the fields the presence flows depend on have the values the drafts show.

use bytes::Bytes;
use sip_cpim_gateway::sip::{
    Contacts, HeaderName, Limits, Message, Method, Scheme, SubState, parse_datagram,
};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/seed-flows"))
}

fn load(name: &str) -> Message {
    let bytes = std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let m = parse_datagram(Bytes::from(bytes), &Limits::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    m.check_headers().unwrap_or_else(|e| panic!("{name}: {e}"));
    m
}

#[test]
fn every_fixture_parses_round_trips_and_matches_its_name() {
    let mut n = 0;
    for e in std::fs::read_dir(dir()).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if !name.ends_with(".sip") {
            continue;
        }
        n += 1;
        let m = load(&name);
        // `<flow>-<msg>-<METHOD or code>.sip`
        let what = name.trim_end_matches(".sip").rsplit('-').next().unwrap();
        match what.parse::<u16>() {
            Ok(code) => assert_eq!(m.status(), Some(code), "{name}"),
            Err(_) => assert_eq!(
                m.method().map(|m| m.to_string()).as_deref(),
                Some(what),
                "{name}"
            ),
        }
        // Fixtures are canonical: printing gives back the same bytes.
        let raw = std::fs::read(dir().join(&name)).unwrap();
        assert_eq!(
            m.to_bytes().as_ref(),
            raw.as_slice(),
            "{name} prints byte-exact"
        );
        assert_eq!(m.content_length(), Some(m.body().len() as u32), "{name}");
    }
    assert_eq!(n, 41);
}

#[test]
fn flow_10_1_client_to_client() {
    let f1 = load("10.1-F1-SUBSCRIBE.sip");
    assert_eq!(f1.method(), Some(&Method::Subscribe));
    assert_eq!(
        f1.request_uri().unwrap().to_string(),
        "sip:presentity@pres.example.com"
    );
    assert_eq!(f1.from().unwrap().uri.scheme, Scheme::Pres);
    assert_eq!(f1.from().unwrap().display().unwrap(), "User");
    assert_eq!(
        f1.to().unwrap().uri.to_string(),
        "pres:presentity@example.com"
    );
    assert!(
        f1.from().unwrap().tag().is_none(),
        "RFC 2543-era request without From tag"
    );
    assert!(f1.top_via().unwrap().branch().is_none());
    assert_eq!(f1.cseq().unwrap().seq, 1);
    assert!(f1.event().unwrap().unwrap().is("presence"));
    assert_eq!(f1.expires().unwrap(), Some(600));
    assert_eq!(
        f1.accept().unwrap().unwrap()[0].essence_str(),
        "application/xpidf+xml"
    );
    let Contacts::List(c) = f1.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(c[0].uri.to_string(), "sip:user@watcherhost.example.com");

    let f2 = load("10.1-F2-202.sip");
    assert_eq!(f2.to().unwrap().tag(), Some("88a7s"));
    assert_eq!(f2.call_id(), f1.call_id());

    let f3 = load("10.1-F3-NOTIFY.sip");
    assert_eq!(f3.from().unwrap().tag(), Some("88a7s"));
    assert_eq!(f3.cseq().unwrap().seq, 1);
    assert_eq!(
        f3.content_type().unwrap().unwrap().essence_str(),
        "application/xpidf+xml"
    );
    assert_eq!(f3.body().len(), 156);
    let f5 = load("10.1-F5-NOTIFY.sip");
    assert_eq!(f5.cseq().unwrap().seq, 2);
    assert!(
        std::str::from_utf8(f5.body())
            .unwrap()
            .contains("status=\"closed\"")
    );

    let f7 = load("10.1-F7-SUBSCRIBE.sip");
    assert_eq!(f7.expires().unwrap(), Some(0), "unsubscribe");
    assert_eq!(f7.cseq().unwrap().seq, 2);
}

#[test]
fn flow_10_2_registration_feature_params() {
    let f1 = load("10.2-F1-REGISTER.sip");
    assert_eq!(f1.method(), Some(&Method::Register));
    let Contacts::List(c) = f1.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].feature("methods").as_deref(), Some("MESSAGE"));
    assert_eq!(c[0].feature("description").as_deref(), Some("open"));
    assert_eq!(c[1].feature("methods").as_deref(), Some("SUBSCRIBE"));
    assert_eq!(f1.expires().unwrap(), Some(600));
    assert_eq!(f1.to().unwrap().uri.aor_key(), "sip:resource@example.com");

    let f4 = load("10.2-F4-SUBSCRIBE.sip");
    assert_eq!(f4.via().len(), 2, "proxied by the presence server");
    assert_eq!(
        f4.request_uri().unwrap().to_string(),
        "sip:id@pua.example.com"
    );
}

#[test]
fn flow_10_3_presence_server_notifications() {
    let f6 = load("10.3-F6-200.sip");
    let Contacts::List(c) = f6.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(
        c[0].feature("description").as_deref(),
        Some("Away from keyboard")
    );
    assert_eq!(c[0].expires(), Some(600));
    let f7 = load("10.3-F7-NOTIFY.sip");
    assert_eq!(f7.method(), Some(&Method::Notify));
    assert!(
        std::str::from_utf8(f7.body())
            .unwrap()
            .contains("Away from keyboard")
    );
}

#[test]
fn publish_flow() {
    let m1 = load("publish-M1-SUBSCRIBE.sip");
    assert_eq!(
        m1.top_via().unwrap().rfc3261_branch(),
        Some("z9hG4bKnashds7")
    );
    assert_eq!(m1.from().unwrap().tag(), Some("12341234"));
    assert_eq!(m1.expires().unwrap(), Some(3600));

    let m3 = load("publish-M3-NOTIFY.sip");
    let ss = m3.subscription_state().unwrap().unwrap();
    assert_eq!(ss.state, SubState::Active);
    assert_eq!(ss.expires(), Some(3599));
    assert_eq!(
        m3.content_type().unwrap().unwrap().essence_str(),
        "application/cpim-pidf+xml"
    );
    assert_eq!(m3.body().len(), 432);

    let m9 = load("publish-M9-PUBLISH.sip");
    assert_eq!(m9.method(), Some(&Method::Publish));
    assert!(m9.event().unwrap().unwrap().is("presence"));
    assert_eq!(m9.expires().unwrap(), Some(3600));
    assert_eq!(m9.body().len(), 293);
    assert!(
        m9.sip_if_match().unwrap().is_empty(),
        "draft -02 has no entity tags"
    );

    let m10 = load("publish-M10-200.sip");
    assert_eq!(m10.status(), Some(200));
    assert_eq!(
        m10.expires().unwrap(),
        Some(1800),
        "the PA shortened the publication"
    );
    assert_eq!(
        m10.header_value(&HeaderName::CallId),
        Some("81818181@pua.domain.com")
    );
}
