//! Notification throttling (RFC 3856 §6.10) asserted exactly on tokio's
//! paused clock: an in-memory store and a recording transport that answers
//! every NOTIFY with 200.

use bytes::Bytes;
use sip_cpim_gateway::delivery::{Adapter, Backoff};
use sip_cpim_gateway::presence::records::PolicyAction;
use sip_cpim_gateway::presence::{PresenceAgent, PresenceSettings};
use sip_cpim_gateway::sip::{HeaderName, Limits, Message, Method, parse_datagram};
use sip_cpim_gateway::store::{MemStore, Store};
use sip_cpim_gateway::transaction::{
    ServerTransaction, Timers, TransactionLayer, TransactionUser, UasPolicy,
};
use sip_cpim_gateway::transport::{Inbound, Proto, Resolver, SendFuture, Source, Target, Transmit};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Default)]
struct Recorder {
    notifies: Mutex<Vec<(Instant, Message)>>,
    layer: OnceLock<TransactionLayer>,
}

fn source() -> Source {
    Source {
        proto: Proto::Udp,
        peer: "192.0.2.20:5060".parse().unwrap(),
        local: "192.0.2.10:5060".parse().unwrap(),
        conn: None,
    }
}

impl Transmit for Recorder {
    fn send(&self, bytes: Bytes, _: Target) -> SendFuture<'_> {
        let m = parse_datagram(bytes, &Limits::default()).unwrap();
        if std::env::var_os("THROTTLE_DEBUG").is_some() {
            eprintln!("{:?} {:?} {:?}", Instant::now(), m.status(), m.method());
        }
        if m.method() == Some(&Method::Notify) {
            self.notifies
                .lock()
                .unwrap()
                .push((Instant::now(), m.clone()));
            // The watcher answers 200 at once.
            let layer = self.layer.get().unwrap().clone();
            let ok = Message::response_to(&m, 200, "OK");
            tokio::spawn(async move {
                layer
                    .on_inbound(Inbound::Message {
                        msg: Box::new(ok),
                        source: source(),
                        received: tokio::time::Instant::now(),
                    })
                    .await
            });
        }
        Box::pin(async { Ok(()) })
    }

    fn sent_by(&self, _: Proto) -> Option<(String, u16)> {
        Some(("192.0.2.10".into(), 5060))
    }
}

fn request(text: &str) -> Inbound {
    let text = match text.split_once("\r\n\r\n") {
        Some((h, b)) => format!("{h}\r\nContent-Length: {}\r\n\r\n{b}", b.len()),
        None => text.to_owned(),
    };
    Inbound::Message {
        msg: Box::new(parse_datagram(Bytes::from(text), &Limits::default()).unwrap()),
        source: source(),
        received: tokio::time::Instant::now(),
    }
}

fn publish(i: u32) -> Inbound {
    let body = format!(
        "<?xml version=\"1.0\"?>\r\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"pres:alice@example.com\"><tuple id=\"t\"><status><basic>open</basic></status><note>n{i}</note><timestamp>2026-11-22T10:00:{i:02}Z</timestamp></tuple></presence>"
    );
    request(&format!(
        "PUBLISH sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKpub{i}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=p\r\nTo: <sip:alice@example.com>\r\nCall-ID: pub{i}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nContent-Type: application/pidf+xml\r\n\r\n{body}"
    ))
}

fn subscribe(cseq: u32, expires: u32, to_tag: Option<&str>) -> Inbound {
    let to = match to_tag {
        Some(t) => format!("<sip:alice@example.com>;tag={t}"),
        None => "<sip:alice@example.com>".into(),
    };
    request(&format!(
        "SUBSCRIBE sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKsub{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=b\r\nTo: {to}\r\nCall-ID: thr\r\nCSeq: {cseq} SUBSCRIBE\r\nContact: <sip:bob@192.0.2.20:5060>\r\nExpires: {expires}\r\nEvent: presence\r\n\r\n"
    ))
}

/// The presence agent as the transaction user, as the router hands it
/// its requests.
struct ToAgent(PresenceAgent);

impl TransactionUser for ToAgent {
    fn take(&self, st: ServerTransaction) {
        self.0.handle(st)
    }
}

/// A presence agent with a 5 s notification interval behind a transaction
/// layer whose NOTIFYs `rec` records and answers 200 at once.
fn agent(rec: &Arc<Recorder>) -> TransactionLayer {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let policy = UasPolicy {
        allow: vec![Method::Subscribe, Method::Publish, Method::Notify],
        accept: vec![
            "application/pidf+xml".into(),
            "application/watcherinfo+xml".into(),
        ],
        allow_events: vec!["presence".into(), "presence.winfo".into()],
        ..UasPolicy::default()
    };
    let layer = TransactionLayer::new(rec.clone(), Timers::default(), policy, 1300);
    let _ = rec.layer.set(layer.clone());
    let store: Arc<dyn Store> = Arc::new(MemStore::default());
    let adapter = Adapter::open(
        store.clone(),
        "http://127.0.0.1:9/cpim",
        Duration::from_secs(1),
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        },
    )
    .unwrap();
    let settings = PresenceSettings {
        local_domains: vec!["example.com".into()],
        default_expires: 3600,
        min_expires: 1,
        max_expires: 86400,
        subscribe_success_code: 200,
        contact: "<sip:192.0.2.10:5060>".into(),
        default_policy: PolicyAction::Allow,
        domain_policies: Default::default(),
        notify_min_interval_ms: 5000,
        max_subscriptions_per_watcher: 0,
        max_subscriptions: 0,
    };
    let pa = PresenceAgent::start(
        settings,
        store,
        layer.clone(),
        Arc::new(Resolver::new(&[]).unwrap()),
        adapter,
        sip_cpim_gateway::dialog_table::DialogTable::new(),
    )
    .unwrap();
    layer.connect(Arc::new(ToAgent(pa)));
    layer
}

#[tokio::test(start_paused = true)]
async fn ten_changes_in_one_second_give_one_immediate_then_one_coalesced_notify() {
    let rec = Arc::new(Recorder::default());
    let layer = agent(&rec);
    let t0 = Instant::now();
    layer.on_inbound(subscribe(1, 600, None)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Ten changes within one second.
    for i in 0..10 {
        layer.on_inbound(publish(i)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let n = rec.notifies.lock().unwrap().clone();
    let at: Vec<u128> = n.iter().map(|(t, _)| (*t - t0).as_millis()).collect();
    assert_eq!(n.len(), 2, "one immediate NOTIFY and one coalesced: {at:?}");
    assert!(at[0] < 50, "the first NOTIFY is not delayed: {at:?}");
    assert!(
        (4990..5100).contains(&at[1]),
        "the next one waits for the interval: {at:?}"
    );
    let body = String::from_utf8_lossy(n[1].1.body()).into_owned();
    assert!(body.contains("<note>n9</note>"), "the latest state: {body}");
    assert!(!body.contains("<note>n8</note>"));

    // A change now waits again, but the final NOTIFY of an unsubscribe does not.
    let tag = n[0].1.from().unwrap().tag().unwrap().to_owned();
    let before = Instant::now();
    layer.on_inbound(publish(10)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    layer.on_inbound(subscribe(2, 0, Some(&tag))).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let n = rec.notifies.lock().unwrap().clone();
    let last = n.last().unwrap();
    let s = last.1.subscription_state().unwrap().unwrap();
    assert_eq!(s.state.as_str(), "terminated");
    assert!(
        (last.0 - before) < Duration::from_millis(500),
        "the terminated NOTIFY is never delayed"
    );
}

/// Watchers that arrive within one interval after a watcherinfo NOTIFY
/// reach the winfo subscriber in one partial NOTIFY that names them all
/// (RFC 3857 §5.2, RFC 3858 §4.2: partial state is every change since the
/// last NOTIFY), not only the last one.
#[tokio::test(start_paused = true)]
async fn watchers_arriving_within_an_interval_are_all_in_the_next_partial_notify() {
    let rec = Arc::new(Recorder::default());
    let layer = agent(&rec);
    layer
        .on_inbound(request(
            "SUBSCRIBE sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKwinfo\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a\r\nTo: <sip:alice@example.com>\r\nCall-ID: winfo\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:alice@192.0.2.20:5060>\r\nExpires: 600\r\nEvent: presence.winfo\r\nAccept: application/watcherinfo+xml\r\n\r\n",
        ))
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    for watcher in ["bob", "carol"] {
        layer
            .on_inbound(request(&format!(
                "SUBSCRIBE sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK{watcher}\r\nMax-Forwards: 70\r\nFrom: <sip:{watcher}@example.com>;tag=w\r\nTo: <sip:alice@example.com>\r\nCall-ID: {watcher}\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:{watcher}@192.0.2.20:5060>\r\nExpires: 600\r\nEvent: presence\r\n\r\n"
            )))
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let winfo: Vec<String> = rec
        .notifies
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, m)| m.header_value(&HeaderName::Event) == Some("presence.winfo"))
        .map(|(_, m)| String::from_utf8_lossy(m.body()).into_owned())
        .collect();
    assert_eq!(
        winfo.len(),
        2,
        "one at once, one after the interval: {winfo:?}"
    );
    assert!(
        winfo[0].contains("version=\"0\" state=\"full\""),
        "{}",
        winfo[0]
    );
    let next = &winfo[1];
    assert!(next.contains("version=\"1\" state=\"partial\""), "{next}");
    for watcher in ["bob", "carol"] {
        assert!(
            next.contains(&format!(">sip:{watcher}@example.com</watcher>")),
            "{watcher} is in {next}"
        );
    }
}
