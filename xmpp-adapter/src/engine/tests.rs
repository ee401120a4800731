use super::*;
use crate::model::Show;

fn engine() -> Engine {
    Engine::new(
        EngineConfig {
            sip_domains: ["example.com".to_owned()].into(),
            duration: 3600,
            retry_min_s: 2,
            retry_max_s: 60,
        },
        State::default(),
    )
}

fn addr(s: &str) -> Address {
    Address::from_jid(s).unwrap()
}

fn pres(t: Type, from: &str, to: &str) -> Presence {
    Presence::new(t)
        .with_from(Jid::new(from).unwrap())
        .with_to(Jid::new(to).unwrap())
}

/// (type, from, to, show, status) of each stanza sent.
type Sent = (String, String, String, Option<String>, Option<String>);

fn sent(out: &[Effect]) -> Vec<Sent> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Send(p) => Some((
                stanza::type_name(&p.type_).to_owned(),
                p.from.as_ref().unwrap().to_string(),
                p.to.as_ref().unwrap().to_string(),
                p.show.as_ref().map(|s| format!("{s:?}")),
                p.statuses.values().next().cloned(),
            )),
            _ => None,
        })
        .collect()
}

const PIDF_AWAY: &str = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="pres:bob@example.com"><tuple id="t1"><status><basic>open</basic></status><note>Lunch</note></tuple><dm:person id="p"><rpid:activities><rpid:away/></rpid:activities></dm:person></presence>"#;
const PIDF_CLOSED: &str = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:bob@example.com"><tuple id="t1"><status><basic>closed</basic></status></tuple></presence>"#;

#[test]
fn xmpp_subscribe_becomes_cpim_subscribe_then_subscribed_on_active() {
    let mut e = engine();
    let out = e.on_presence(
        &pres(Type::Subscribe, "alice@xmpp.example.org", "bob@example.com"),
        100,
    );
    assert_eq!(
        out,
        vec![Effect::Cpim(CpimJob::Subscribe {
            watcher: addr("alice@xmpp.example.org"),
            target: addr("bob@example.com"),
            duration: 3600
        })]
    );
    let (x, s) = (addr("alice@xmpp.example.org"), addr("bob@example.com"));
    // pending: nothing to XMPP (RFC 8048 §5.2.1).
    assert!(
        e.gateway_notify(&x, &s, None, Some("pending"), None, 101)
            .is_empty()
    );
    // active with a document: subscribed, then the tuple as presence.
    let out = e.gateway_notify(&x, &s, Some(PIDF_AWAY), None, None, 102);
    let st = sent(&out);
    assert_eq!(st[0].0, "subscribed");
    assert_eq!(
        st[1],
        (
            "available".into(),
            "bob@example.com/t1".into(),
            "alice@xmpp.example.org".into(),
            Some("Away".into()),
            Some("Lunch".into())
        )
    );
    // The same notify again (at-least-once): nothing.
    assert!(
        e.gateway_notify(&x, &s, Some(PIDF_AWAY), None, None, 103)
            .is_empty()
    );
    // closed → unavailable.
    let st = sent(&e.gateway_notify(&x, &s, Some(PIDF_CLOSED), None, None, 104));
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].0, "unavailable");
}

#[test]
fn probe_answered_from_state_never_unsubscribed() {
    let mut e = engine();
    let (x, s) = (addr("alice@xmpp.example.org"), addr("bob@example.com"));
    e.on_presence(
        &pres(Type::Subscribe, "alice@xmpp.example.org", "bob@example.com"),
        1,
    );
    e.gateway_notify(&x, &s, Some(PIDF_AWAY), None, None, 2);
    let st = sent(&e.on_presence(
        &pres(
            Type::Probe,
            "alice@xmpp.example.org/phone",
            "bob@example.com",
        ),
        3,
    ));
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].2, "alice@xmpp.example.org/phone");
    assert_eq!(st[0].4.as_deref(), Some("Lunch"));
    // An unknown pair (state lost): re-created from the probe, no unsubscribed.
    let out = e.on_presence(
        &pres(Type::Probe, "carol@xmpp.example.org/x", "bob@example.com"),
        4,
    );
    assert!(
        out.iter()
            .any(|e| matches!(e, Effect::Cpim(CpimJob::Subscribe { .. })))
    );
    assert!(sent(&out).iter().all(|s| s.0 != "unsubscribed"));
    // The pair is active: the next notify sends presence without a new `subscribed`.
    let st = sent(&e.gateway_notify(
        &addr("carol@xmpp.example.org"),
        &s,
        Some(PIDF_AWAY),
        None,
        None,
        5,
    ));
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].0, "available");
}

#[test]
fn refusal_and_timeouts() {
    let mut e = engine();
    let (x, s) = (addr("alice@xmpp.example.org"), addr("bob@example.com"));
    e.on_presence(
        &pres(Type::Subscribe, "alice@xmpp.example.org", "bob@example.com"),
        1,
    );
    // A transient failure keeps the pair and retries later.
    assert!(
        e.subscribe_result(&x, &s, SubscribeOutcome::Transient, 10)
            .is_empty()
    );
    assert_eq!(e.state.w2s.values().next().unwrap().refresh_at, 14);
    assert!(e.on_tick(13).is_empty());
    assert_eq!(e.on_tick(14).len(), 1);
    // terminated;reason=timeout → subscribe again, XMPP untouched.
    let out = e.gateway_notify(&x, &s, None, Some("terminated"), Some("timeout"), 20);
    assert!(matches!(out[..], [Effect::Cpim(CpimJob::Subscribe { .. })]));
    // rejected → unsubscribed, state gone.
    let st = sent(&e.gateway_notify(&x, &s, None, Some("terminated"), Some("rejected"), 21));
    assert_eq!(st.last().unwrap().0, "unsubscribed");
    assert!(e.state.w2s.is_empty());
    // A late notify for the removed pair: CPIM unsubscribe (never left behind).
    let out = e.gateway_notify(&x, &s, Some(PIDF_AWAY), None, None, 22);
    assert!(matches!(
        out[..],
        [Effect::Cpim(CpimJob::Unsubscribe { .. })]
    ));
}

#[test]
fn xmpp_unsubscribe_ends_the_sip_side() {
    let mut e = engine();
    e.on_presence(
        &pres(Type::Subscribe, "alice@xmpp.example.org", "bob@example.com"),
        1,
    );
    let out = e.on_presence(
        &pres(
            Type::Unsubscribe,
            "alice@xmpp.example.org",
            "bob@example.com",
        ),
        2,
    );
    assert!(matches!(out[0], Effect::Cpim(CpimJob::Unsubscribe { .. })));
    assert!(e.state.w2s.is_empty());
}

#[test]
fn sip_watcher_approval_presence_and_refusal() {
    let mut e = engine();
    let (c, a) = (addr("carol@example.com"), addr("alice@xmpp.example.org"));
    let (ans, out) = e.gateway_subscribe(c.clone(), a.clone(), 600);
    assert_eq!(ans, SubscribeAnswer::Indeterminate { duration: 600 });
    assert_eq!(sent(&out)[0].0, "subscribe");
    // Presence before approval is kept but not notified.
    assert!(
        e.on_presence(
            &pres(Type::None, "alice@xmpp.example.org/pc", "carol@example.com"),
            1
        )
        .is_empty()
    );
    let out = e.on_presence(
        &pres(
            Type::Subscribed,
            "alice@xmpp.example.org",
            "carol@example.com",
        ),
        2,
    );
    assert_eq!(sent(&out)[0].0, "probe");
    let Some(Effect::Cpim(CpimJob::Notify { body, .. })) = out.get(1) else {
        panic!("{out:?}")
    };
    assert!(body.contains("<basic>open</basic>"));
    // dnd + status → busy + note.
    let mut p = pres(Type::None, "alice@xmpp.example.org/pc", "carol@example.com")
        .with_show(xmpp_parsers::presence::Show::Dnd);
    p.set_status("", "Meeting");
    let out = e.on_presence(&p, 3);
    let Some(Effect::Cpim(CpimJob::Notify { body, .. })) = out.first() else {
        panic!("{out:?}")
    };
    let r = pidf::parse(body).unwrap();
    assert_eq!(r["pc"].show, Some(Show::Dnd));
    assert_eq!(r["pc"].status.as_deref(), Some("Meeting"));
    // The same presence again (a probe answer): no second notify.
    assert!(e.on_presence(&p, 4).is_empty());
    // Offline → closed.
    let out = e.on_presence(
        &pres(
            Type::Unavailable,
            "alice@xmpp.example.org/pc",
            "carol@example.com",
        ),
        5,
    );
    let Some(Effect::Cpim(CpimJob::Notify { body, .. })) = out.first() else {
        panic!("{out:?}")
    };
    assert!(body.contains("<basic>closed</basic>") && !body.contains("<basic>open</basic>"));
    // Refresh while approved: success, nothing to XMPP.
    let (ans, out) = e.gateway_subscribe(c.clone(), a.clone(), 600);
    assert_eq!(ans, SubscribeAnswer::Success { duration: 600 });
    assert!(out.is_empty());
    // Revoked (RFC 8048 §5.3.1): a CPIM notify `terminated`/`rejected` at
    // once, and the pair is forgotten.
    let out = e.on_presence(
        &pres(
            Type::Unsubscribed,
            "alice@xmpp.example.org",
            "carol@example.com",
        ),
        6,
    );
    assert_eq!(
        out,
        vec![Effect::Cpim(CpimJob::Terminate {
            watcher: c.clone(),
            target: a.clone(),
            reason: "rejected",
        })]
    );
    assert!(e.state.s2w.is_empty());
    // A second `unsubscribed` (a retransmission) changes nothing.
    let again = e.on_presence(
        &pres(
            Type::Unsubscribed,
            "alice@xmpp.example.org",
            "carol@example.com",
        ),
        7,
    );
    assert!(again.is_empty());
    // A state file of an earlier version saying Refused: the refresh is 603.
    e.state.s2w.insert(
        pair_key(&c, &a),
        S2w {
            sip: c.clone(),
            xmpp: a.clone(),
            phase: S2wPhase::Refused,
            last_doc: None,
        },
    );
    let (ans, _) = e.gateway_subscribe(c.clone(), a.clone(), 600);
    assert!(matches!(ans, SubscribeAnswer::Failure { code: 603, .. }));
    assert!(e.state.s2w.is_empty());
}

#[test]
fn sip_unsubscribe_sends_xmpp_unsubscribe_and_foreign_watchers_fail() {
    let mut e = engine();
    let (c, a) = (addr("carol@example.com"), addr("alice@xmpp.example.org"));
    e.gateway_subscribe(c.clone(), a.clone(), 600);
    assert_eq!(sent(&e.gateway_unsubscribe(&c, &a))[0].0, "unsubscribe");
    assert!(e.gateway_unsubscribe(&c, &a).is_empty());
    let (ans, _) = e.gateway_subscribe(addr("x@other.net"), a, 600);
    assert!(matches!(ans, SubscribeAnswer::Failure { code: 403, .. }));
}

#[test]
fn reconnect_resends_state() {
    let mut e = engine();
    let (x, s) = (addr("alice@xmpp.example.org"), addr("bob@example.com"));
    e.on_presence(
        &pres(Type::Subscribe, "alice@xmpp.example.org", "bob@example.com"),
        1,
    );
    e.gateway_notify(&x, &s, Some(PIDF_AWAY), None, None, 2);
    let (c, a) = (addr("carol@example.com"), addr("alice@xmpp.example.org"));
    e.gateway_subscribe(c.clone(), a.clone(), 600);
    let types: Vec<String> = sent(&e.on_connected("example.com"))
        .into_iter()
        .map(|s| s.0)
        .collect();
    assert_eq!(types, vec!["subscribe", "available"]);
    e.on_presence(
        &pres(
            Type::Subscribed,
            "alice@xmpp.example.org",
            "carol@example.com",
        ),
        3,
    );
    let types: Vec<String> = sent(&e.on_connected("example.com"))
        .into_iter()
        .map(|s| s.0)
        .collect();
    assert_eq!(types, vec!["probe", "available"]);
    assert!(e.on_connected("other.org").is_empty());
    assert_eq!(e.on_start(10).len(), 1);
}

#[test]
fn stanzas_not_for_a_sip_user_are_ignored() {
    let mut e = engine();
    assert!(
        e.on_presence(
            &pres(Type::Subscribe, "alice@xmpp.example.org", "example.com"),
            1
        )
        .is_empty()
    );
    assert!(
        e.on_presence(
            &pres(Type::Subscribe, "alice@xmpp.example.org", "bob@other.org"),
            1
        )
        .is_empty()
    );
    assert!(e.on_presence(&Presence::new(Type::Probe), 1).is_empty());
}

#[test]
fn gateway_composed_documents_map_each_change() {
    let doc = |note: &str, act: &str| {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\"\r\n  entity=\"pres:bob@example.com\">\r\n  <tuple id=\"pc\">\r\n    <status>\r\n      <basic>open</basic>\r\n    </status>\r\n    <note xml:lang=\"en\">{note}</note>\r\n  </tuple>\r\n  <dm:person xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" id=\"p-pc\"><rpid:activities><rpid:{act}/></rpid:activities></dm:person>\r\n</presence>\r\n"
        )
    };
    let mut e = engine();
    let (x, s) = (addr("alice@xmpp.example.org"), addr("bob@example.com"));
    e.on_presence(
        &pres(Type::Subscribe, "alice@xmpp.example.org", "bob@example.com"),
        1,
    );
    let st = sent(&e.gateway_notify(&x, &s, Some(&doc("Here", "unknown")), None, None, 2));
    assert_eq!(st[1].4.as_deref(), Some("Here"));
    let st = sent(&e.gateway_notify(&x, &s, Some(&doc("In a meeting", "busy")), None, None, 3));
    assert_eq!(st.len(), 1, "{st:?}");
    assert_eq!(st[0].3.as_deref(), Some("Dnd"));
    assert_eq!(st[0].4.as_deref(), Some("In a meeting"));
}
