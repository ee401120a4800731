//! The gateway core without sockets, store or runtime: events in, effects
//! out, at a given `now`. Both mappings of seed §7, the durability rule and
//! the refusals.

use super::GatewaySettings;
use super::core::{Event, GatewayCore};
use super::effects::{AdapterCall, Effect, Effects, Undo};
use crate::cpim::{CpimResponse, NotifyRequest, Presence, Status, SubscribeRequest};
use crate::dialog_table::DialogEvent;
use crate::sip::{HeaderName, Limits, Message, Scheme, parse_datagram};
use crate::store::{Op, Tree};
use crate::transaction::IncomingRequest;
use std::sync::Arc;

const NOW: i64 = 1_700_000_000_000;
const PIDF: &str = "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
                    entity=\"pres:bob@xmpp.example.org\"><tuple id=\"t\"><status><basic>open\
                    </basic></status></tuple></presence>";

fn core() -> GatewayCore {
    GatewayCore::new(Arc::new(GatewaySettings {
        local_domains: vec!["example.com".into()],
        cpim_domains: vec!["xmpp.example.org".into()],
        header_scheme: Scheme::Pres,
        contact: "<sip:gw@192.0.2.1:5060>".into(),
        default_expires: 3600,
        min_expires: 60,
        max_expires: 7200,
    }))
}

fn parse(raw: &str) -> Message {
    parse_datagram(
        bytes::Bytes::from(raw.replace('\n', "\r\n")),
        &Limits::default(),
    )
    .expect("test message parses")
}

fn h(m: &Message, name: HeaderName) -> &str {
    m.header_value(&name).unwrap_or("")
}

/// A commit's (puts, deletes, deliveries, then, undo).
type Commit = (
    usize,
    usize,
    Vec<super::effects::Delivery>,
    Vec<Effect>,
    Option<Undo>,
);

/// The one commit of `fx`.
fn commit(fx: Effects) -> Commit {
    let [
        Effect::Commit {
            batch,
            deliveries,
            then,
            undo,
        },
    ] = <[Effect; 1]>::try_from(fx.effects).expect("exactly one effect")
    else {
        panic!("expected a commit");
    };
    let puts = batch
        .ops
        .iter()
        .filter(|o| matches!(o, Op::Put(Tree::Dialogs, ..)))
        .count();
    let deletes = batch
        .ops
        .iter()
        .filter(|o| matches!(o, Op::Delete(Tree::Dialogs, ..)))
        .count();
    (puts, deletes, deliveries, then, undo)
}

/// Seed §7.2: CPIM subscribe → SUBSCRIBE; 200 → durable dialog, then
/// `success`; the refresh timer → in-dialog SUBSCRIBE, CSeq durable first;
/// NOTIFY → CPIM notify queued durably, then 200.
#[test]
fn cpim_watcher_of_a_sip_presentity() {
    let mut c = core();
    let fx = c.handle(
        Event::CpimSubscribe {
            req: SubscribeRequest {
                watcher: "pres:alice@xmpp.example.org".into(),
                target: "pres:bob@sip.example.net".into(),
                duration: Some(600),
                trans_id: Some("t1".into()),
            },
            reply: 7,
        },
        NOW,
    );
    let [Effect::Subscribe { key, request, hop }] = &fx.effects[..] else {
        panic!("one SUBSCRIBE: {fx:?}");
    };
    assert_eq!(
        fx.dialogs,
        [DialogEvent::Sent {
            call_id: key.0.clone(),
            local_tag: "t1".into()
        }]
    );
    assert_eq!(hop.to_string(), "sip:bob@sip.example.net");
    assert_eq!(
        request.request_uri().unwrap().to_string(),
        "sip:bob@sip.example.net"
    );
    assert_eq!(
        h(request, HeaderName::From),
        "<pres:alice@xmpp.example.org>;tag=t1"
    );
    assert_eq!(h(request, HeaderName::To), "<pres:bob@sip.example.net>");
    assert_eq!(h(request, HeaderName::CSeq), "1 SUBSCRIBE");
    assert_eq!(h(request, HeaderName::Event), "presence");
    assert_eq!(h(request, HeaderName::Expires), "600");
    assert_eq!(h(request, HeaderName::Contact), "<sip:gw@192.0.2.1:5060>");

    // The notifier grants 300 s.
    let mut ok = Message::response_to(request, 200, "OK");
    ok.set_header(HeaderName::To, "<pres:bob@sip.example.net>;tag=n1");
    ok.push_header(HeaderName::Contact, "<sip:bob@192.0.2.5:5070>");
    ok.push_header(HeaderName::Expires, "300");
    let key = key.clone();
    let fx = c.handle(
        Event::SubscribeDone {
            key: key.clone(),
            outcome: Ok(Box::new(ok)),
        },
        NOW + 50,
    );
    let id = format!("{};t1;n1", key.0);
    // The dialog routes before the pending entry goes: no gap in which a
    // NOTIFY would get 481.
    assert_eq!(
        fx.dialogs,
        [
            DialogEvent::Created(id.clone()),
            DialogEvent::Settled {
                call_id: key.0.clone(),
                local_tag: "t1".into()
            },
        ]
    );
    let (puts, deletes, deliveries, then, undo) = commit(fx);
    assert_eq!((puts, deletes, deliveries.len(), undo), (1, 0, 0, None));
    let [Effect::Answer { reply: 7, result }] = &then[..] else {
        panic!("the answer waits for the commit: {then:?}");
    };
    let r: &CpimResponse = result.as_ref().expect("answered");
    assert_eq!((r.status, r.duration), (Status::Success, Some(300)));
    assert_eq!(r.trans_id, "t1");

    // Refreshed 30 s (a tenth) before expiry, at the remote target.
    let due = NOW + 50 + 270_000;
    assert_eq!(c.next_timer(), Some(due));
    assert!(c.handle(Event::Tick, due - 1).effects.is_empty());
    let fx = c.handle(Event::Tick, due);
    let (puts, _, _, then, undo) = commit(fx);
    assert_eq!(puts, 1, "the new CSeq is stored before the request leaves");
    assert_eq!(
        undo,
        Some(Undo::Unsent {
            key: key.clone(),
            cpim_until: NOW + 600_000
        })
    );
    let [Effect::Subscribe { request, hop, .. }] = &then[..] else {
        panic!("a refresh: {then:?}");
    };
    assert_eq!(hop.to_string(), "sip:bob@192.0.2.5:5070");
    assert_eq!(h(request, HeaderName::CSeq), "2 SUBSCRIBE");
    assert_eq!(h(request, HeaderName::Expires), "300");
    assert_eq!(
        h(request, HeaderName::To),
        "<pres:bob@sip.example.net>;tag=n1"
    );

    // A NOTIFY in the dialog: queued for the adapter in the same commit
    // as the dialog's new remote CSeq, and only then 200.
    let notify = parse(&format!(
        "NOTIFY sip:gw@192.0.2.1:5060 SIP/2.0\n\
         Via: SIP/2.0/UDP 192.0.2.5:5070;branch=z9hG4bKn1\n\
         Max-Forwards: 70\n\
         From: <sip:bob@sip.example.net>;tag=n1\n\
         To: <pres:alice@xmpp.example.org>;tag=t1\n\
         Call-ID: {}\n\
         CSeq: 1 NOTIFY\n\
         Event: presence\n\
         Subscription-State: active;expires=300\n\
         Content-Type: application/pidf+xml\n\
         Content-Length: {}\n\n{PIDF}",
        key.0,
        PIDF.len()
    ));
    let inc = IncomingRequest::new(notify, "x");
    let fx = c.handle(
        Event::Sip {
            tx: 3,
            request: &inc,
        },
        due + 10,
    );
    let (puts, _, deliveries, then, _) = commit(fx);
    assert_eq!(puts, 1);
    let [d] = &deliveries[..] else {
        panic!("one delivery")
    };
    assert_eq!(
        (d.watcher.as_str(), d.target.as_str(), d.path),
        (
            "pres:alice@xmpp.example.org",
            "pres:bob@sip.example.net",
            "notify"
        )
    );
    let n: NotifyRequest = serde_json::from_value(d.payload.clone()).unwrap();
    assert_eq!(n.presence.body.as_deref(), Some(PIDF), "carried unchanged");
    assert_eq!(n.state, None, "active is the default");
    let [Effect::Respond { tx: 3, response }] = &then[..] else {
        panic!("200 after the commit: {then:?}");
    };
    assert_eq!(response.status(), Some(200));

    // A retransmitted or older CSeq is refused at once, nothing stored.
    let fx = c.handle(
        Event::Sip {
            tx: 4,
            request: &inc,
        },
        due + 20,
    );
    let [Effect::Respond { tx: 4, response }] = &fx.effects[..] else {
        panic!("{fx:?}");
    };
    assert_eq!(response.status(), Some(500));

    // A CPIM refresh with a new duration whose CSeq cannot be stored: not
    // sent, the adapter gets the store failure, and the stored duration
    // stands (the refresh timer keeps its time).
    let timer = c.next_timer();
    let refresh = SubscribeRequest {
        watcher: "pres:alice@xmpp.example.org".into(),
        target: "pres:bob@sip.example.net".into(),
        duration: Some(900),
        trans_id: Some("t1".into()),
    };
    let fx = c.handle(
        Event::CpimSubscribe {
            req: refresh,
            reply: 8,
        },
        due + 30,
    );
    let (_, _, _, _, undo) = commit(fx);
    assert_eq!(
        undo,
        Some(Undo::Unsent {
            key: key.clone(),
            cpim_until: NOW + 600_000
        })
    );
    let fx = c.handle(Event::Undo(undo.unwrap()), due + 31);
    assert!(
        matches!(
            &fx.effects[..],
            [Effect::Answer {
                reply: 8,
                result: Err(_)
            }]
        ),
        "{fx:?}"
    );
    assert_eq!(c.next_timer(), timer);
    assert_eq!(c.dialogs[&id].rec.cpim_until, NOW + 600_000);
}

fn sip_subscribe(expires: u32, event: &str) -> IncomingRequest {
    IncomingRequest::new(
        parse(&format!(
            "SUBSCRIBE sip:bob@xmpp.example.org SIP/2.0\n\
             Via: SIP/2.0/UDP 192.0.2.9:5062;branch=z9hG4bKs1\n\
             Max-Forwards: 70\n\
             From: <sip:alice@example.com>;tag=w1\n\
             To: <sip:bob@xmpp.example.org>\n\
             Call-ID: sub1@192.0.2.9\n\
             CSeq: 1 SUBSCRIBE\n\
             Contact: <sip:alice@192.0.2.9:5062>\n\
             Event: {event}\n\
             Expires: {expires}\n\
             Content-Length: 0\n\n"
        )),
        "unused",
    )
}

/// Seed §7.1: SUBSCRIBE → CPIM subscribe; `success` → durable dialog, then
/// 202 and the immediate NOTIFY; CPIM notify → NOTIFY with the document
/// unchanged; no refresh → CPIM unsubscribe and final NOTIFY.
#[test]
fn sip_watcher_of_a_cpim_presentity() {
    let mut c = core();
    let inc = sip_subscribe(600, "presence");
    let fx = c.handle(
        Event::Sip {
            tx: 1,
            request: &inc,
        },
        NOW,
    );
    let [
        Effect::Ask {
            tx: 1,
            id,
            refresh: false,
            call: AdapterCall::Subscribe(s),
        },
    ] = &fx.effects[..]
    else {
        panic!("the adapter is asked first: {fx:?}");
    };
    assert!(fx.dialogs.is_empty(), "no dialog before the answer");
    assert_eq!(s.watcher, "pres:alice@example.com");
    assert_eq!(s.target, "pres:bob@xmpp.example.org");
    assert_eq!(s.duration, Some(600));
    let trans_id = s.trans_id.clone().unwrap();
    assert_eq!(id, &format!("sub1@192.0.2.9;{trans_id};w1"));

    let fx = c.handle(
        Event::AdapterAnswered {
            tx: 1,
            request: &inc,
            id: id.clone(),
            refresh: false,
            outcome: Ok(CpimResponse::success(&trans_id, Some(600))),
        },
        NOW + 5,
    );
    let id = id.clone();
    assert_eq!(fx.dialogs, [DialogEvent::Created(id.clone())]);
    let (puts, _, _, then, undo) = commit(fx);
    assert_eq!(puts, 1);
    assert_eq!(undo, Some(Undo::Forget(id.clone())));
    let [
        Effect::Respond { tx: 1, response },
        Effect::Notify {
            request,
            hop,
            report: Some(r),
        },
    ] = &then[..]
    else {
        panic!("202 then NOTIFY, after the commit: {then:?}");
    };
    assert_eq!(r, &id);
    assert_eq!(response.status(), Some(202));
    assert_eq!(
        h(response, HeaderName::To),
        format!("<sip:bob@xmpp.example.org>;tag={trans_id}")
    );
    assert_eq!(h(response, HeaderName::Contact), "<sip:gw@192.0.2.1:5060>");
    assert_eq!(h(response, HeaderName::Expires), "600");
    assert_eq!(hop.to_string(), "sip:alice@192.0.2.9:5062");
    assert_eq!(h(request, HeaderName::CSeq), "1 NOTIFY");
    assert_eq!(
        h(request, HeaderName::SubscriptionState),
        "active;expires=600"
    );
    assert!(
        request.body().is_empty(),
        "no state until the adapter sends it"
    );

    // While that NOTIFY is in flight a CPIM notify waits for it ...
    let notify = |reply| Event::CpimNotify {
        req: NotifyRequest {
            watcher: "pres:alice@example.com".into(),
            target: "pres:bob@xmpp.example.org".into(),
            trans_id: Some("n1".into()),
            presence: Presence {
                content_type: Some("application/pidf+xml".into()),
                body: Some(PIDF.into()),
                tuples: None,
            },
            state: None,
            reason: None,
        },
        reply,
    };
    let (_, _, _, then, _) = commit(c.handle(notify(2), NOW + 6));
    assert!(
        matches!(
            &then[..],
            [Effect::Answer {
                reply: 2,
                result: Ok(_)
            }]
        ),
        "{then:?}"
    );
    // ... and goes when it is answered, with the next CSeq.
    let fx = c.handle(
        Event::NotifyDone {
            id: id.clone(),
            ok: true,
        },
        NOW + 7,
    );
    let (_, _, _, then, _) = commit(fx);
    let [Effect::Notify { request, .. }] = &then[..] else {
        panic!("{then:?}")
    };
    assert_eq!(h(request, HeaderName::CSeq), "2 NOTIFY");
    assert_eq!(
        request.body().as_ref(),
        PIDF.as_bytes(),
        "carried unchanged"
    );
    assert_eq!(
        h(request, HeaderName::From),
        format!("<sip:bob@xmpp.example.org>;tag={trans_id}")
    );
    assert_eq!(h(request, HeaderName::To), "<sip:alice@example.com>;tag=w1");

    // The watcher does not refresh: at expiry, CPIM unsubscribe and the
    // final NOTIFY, once the removal is durable.
    c.handle(
        Event::NotifyDone {
            id: id.clone(),
            ok: true,
        },
        NOW + 8,
    );
    assert_eq!(c.next_timer(), Some(NOW + 5 + 600_000));
    let fx = c.handle(Event::Tick, NOW + 5 + 600_000);
    assert_eq!(fx.dialogs, [DialogEvent::Ended(id.clone())]);
    let (puts, deletes, _, then, _) = commit(fx);
    assert_eq!((puts, deletes), (0, 1));
    let [
        Effect::Tell(u),
        Effect::Notify {
            request,
            report: None,
            ..
        },
    ] = &then[..]
    else {
        panic!("{then:?}")
    };
    assert_eq!(u.trans_id.as_deref(), Some(trans_id.as_str()));
    assert_eq!(
        h(request, HeaderName::SubscriptionState),
        "terminated;reason=timeout"
    );
    assert_eq!(c.next_timer(), None);
}

/// The dialog id a SIP watcher's SUBSCRIBE is asked to the adapter for.
fn asked(c: &mut GatewayCore, inc: &IncomingRequest, at: i64) -> String {
    let fx = c.handle(
        Event::Sip {
            tx: 1,
            request: inc,
        },
        at,
    );
    let [Effect::Ask { id, .. }] = &fx.effects[..] else {
        panic!("{fx:?}")
    };
    id.clone()
}

/// The adapter says `success`: the commit that follows.
fn answered(
    c: &mut GatewayCore,
    inc: &IncomingRequest,
    id: &str,
    refresh: bool,
    at: i64,
) -> Commit {
    let tid = id.split(';').nth(1).unwrap();
    let ev = Event::AdapterAnswered {
        tx: 1,
        request: inc,
        id: id.to_owned(),
        refresh,
        outcome: Ok(CpimResponse::success(tid, None)),
    };
    commit(c.handle(ev, at))
}

/// A failed commit's undo puts memory back where the store is: a dialog
/// created for a 202 that never went is forgotten (and unrouted).
#[test]
fn a_dialog_whose_commit_failed_is_forgotten() {
    let mut c = core();
    let inc = sip_subscribe(600, "presence");
    let id = asked(&mut c, &inc, NOW);
    let (_, _, _, _, undo) = answered(&mut c, &inc, &id, false, NOW);
    let fx = c.handle(Event::Undo(undo.unwrap()), NOW);
    assert_eq!(fx.dialogs, [DialogEvent::Ended(id)]);
    assert!(fx.effects.is_empty());
    assert!(c.dialogs.is_empty());
}

/// Refusals are answered at once with their required headers and change
/// nothing (RFC 6665 §4.1.2.1, §8.2.1.2, RFC 3261 §10.2.8 for 423).
#[test]
fn refusals_change_nothing() {
    let mut c = core();
    for (inc, code, header) in [
        (
            sip_subscribe(10, "presence"),
            423,
            (HeaderName::MinExpires, "60"),
        ),
        (
            sip_subscribe(600, "dialog"),
            489,
            (HeaderName::AllowEvents, "presence"),
        ),
    ] {
        let fx = c.handle(
            Event::Sip {
                tx: 9,
                request: &inc,
            },
            NOW,
        );
        let [Effect::Respond { tx: 9, response }] = &fx.effects[..] else {
            panic!("{fx:?}")
        };
        assert_eq!(response.status(), Some(code));
        assert_eq!(h(response, header.0), header.1);
        assert!(fx.dialogs.is_empty());
    }
    // An in-dialog request for no dialog: 481 (RFC 3261 §12.2.2).
    let mut inc = sip_subscribe(600, "presence");
    inc.request
        .set_header(HeaderName::To, "<sip:bob@xmpp.example.org>;tag=nope");
    let fx = c.handle(
        Event::Sip {
            tx: 2,
            request: &inc,
        },
        NOW,
    );
    assert!(
        matches!(&fx.effects[..], [Effect::Respond { response, .. }] if response.status() == Some(481))
    );
    assert!(c.dialogs.is_empty() && c.next_timer().is_none());
}

/// A SIP watcher's refresh whose record cannot be stored: no 202, and the
/// dialog goes back to the expiry the store holds (its timer fires then).
#[test]
fn a_refresh_whose_commit_failed_keeps_the_stored_expiry() {
    let mut c = core();
    let inc = sip_subscribe(600, "presence");
    let id = asked(&mut c, &inc, NOW);
    let tid = id.split(';').nth(1).unwrap().to_owned();
    answered(&mut c, &inc, &id, false, NOW);
    c.handle(
        Event::NotifyDone {
            id: id.clone(),
            ok: true,
        },
        NOW,
    );
    assert_eq!(c.next_timer(), Some(NOW + 600_000));
    let mut refresh = sip_subscribe(600, "presence");
    refresh.request.set_header(
        HeaderName::To,
        format!("<sip:bob@xmpp.example.org>;tag={tid}"),
    );
    refresh.request.set_header(HeaderName::CSeq, "2 SUBSCRIBE");
    assert_eq!(asked(&mut c, &refresh, NOW + 100_000), id);
    let (_, _, _, _, undo) = answered(&mut c, &refresh, &id, true, NOW + 100_000);
    let Some(Undo::Revert(before)) = undo else {
        panic!("{undo:?}")
    };
    assert_eq!(before.expires_at, NOW + 600_000);
    c.handle(Event::Undo(Undo::Revert(before)), NOW + 100_001);
    // The stored expiry stands: the dialog ends then, not 600 s later.
    let fx = c.handle(Event::Tick, NOW + 600_000);
    assert_eq!(fx.dialogs, [DialogEvent::Ended(id)]);
}
