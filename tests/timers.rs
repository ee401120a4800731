//! Transaction timers asserted exactly with tokio's paused clock and a
//! recording transport (RFC 3261 §17.1.2.2, §17.2.2, §8.1.3.1).

#[path = "support/queue.rs"]
mod queue;

use bytes::Bytes;
use sip_cpim_gateway::sip::{HeaderName, Limits, Message, Method, Uri, parse_datagram};
use sip_cpim_gateway::transaction::{ClientError, Timers, TransactionLayer, UasPolicy};
use sip_cpim_gateway::transport::{
    Inbound, Proto, Receive, SendFuture, Source, Target, Transmit, TransportError,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Default)]
struct Recorder {
    sends: Mutex<Vec<(Instant, Bytes)>>,
    fail: bool,
}

impl Transmit for Recorder {
    fn send(&self, bytes: Bytes, target: Target) -> SendFuture<'_> {
        self.sends.lock().unwrap().push((Instant::now(), bytes));
        let fail = self.fail;
        Box::pin(async move {
            if fail {
                Err(TransportError::Connect(target.addr, "refused".into()))
            } else {
                Ok(())
            }
        })
    }

    fn sent_by(&self, _: Proto) -> Option<(String, u16)> {
        Some(("192.0.2.10".into(), 5060))
    }
}

fn notify() -> Message {
    let mut m = Message::request(
        Method::Notify,
        Uri::parse_str("sip:watcher@192.0.2.20").unwrap(),
    );
    m.push_header(HeaderName::MaxForwards, "70");
    m.push_header(HeaderName::From, "<sip:p@example.com>;tag=a");
    m.push_header(HeaderName::To, "<sip:w@example.com>;tag=b");
    m.push_header(HeaderName::CallId, "timers@gw");
    m.push_header(HeaderName::CSeq, "2 NOTIFY");
    m
}

fn target(proto: Proto) -> Target {
    Target::new(proto, "192.0.2.20:5060".parse().unwrap())
}

fn offsets_ms(rec: &Recorder, start: Instant) -> Vec<u128> {
    rec.sends
        .lock()
        .unwrap()
        .iter()
        .map(|(t, _)| (*t - start).as_millis())
        .collect()
}

fn layer(rec: Arc<Recorder>) -> TransactionLayer {
    TransactionLayer::new(rec, Timers::default(), UasPolicy::default(), 1300)
}

fn source() -> Source {
    Source {
        proto: Proto::Udp,
        peer: "192.0.2.20:5060".parse().unwrap(),
        local: "192.0.2.10:5060".parse().unwrap(),
        conn: None,
    }
}

/// A response to the request the recorder saw first.
/// A request as the UDP transport hands it over: `to_tag` is "" or
/// ";tag=…" (inside a dialog), `waited_ms` its age on arrival.
fn request(branch: &str, to_tag: &str, method: &str, waited_ms: u64) -> Inbound {
    let raw = format!(
        "{method} sip:p@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:w@example.com>;tag=a\r\nTo: <sip:p@example.com>{to_tag}\r\n\
         Call-ID: {branch}@x\r\nCSeq: 1 {method}\r\nEvent: presence\r\nContent-Length: 0\r\n\r\n"
    );
    Inbound::Message {
        msg: Box::new(parse_datagram(Bytes::from(raw), &Limits::default()).unwrap()),
        source: source(),
        received: Instant::now() - Duration::from_millis(waited_ms),
    }
}

fn answer(rec: &Recorder, code: u16) -> Inbound {
    let first = rec.sends.lock().unwrap()[0].1.clone();
    let req = parse_datagram(first, &Limits::default()).unwrap();
    Inbound::Message {
        msg: Box::new(Message::response_to(&req, code, "")),
        source: source(),
        received: tokio::time::Instant::now(),
    }
}

#[tokio::test(start_paused = true)]
async fn timer_e_doubles_to_t2_and_timer_f_gives_408() {
    let rec = Arc::new(Recorder::default());
    let start = Instant::now();
    let err = layer(rec.clone())
        .send_request(notify(), target(Proto::Udp))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)));
    assert_eq!(err.status_code(), 408);
    assert_eq!(start.elapsed(), Duration::from_secs(32), "Timer F = 64*T1");
    // Intervals 500 ms, 1 s, 2 s, 4 s, 4 s, ... (T1 doubling, capped at T2).
    assert_eq!(
        offsets_ms(&rec, start),
        [
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn reliable_transport_sends_once_and_still_times_out() {
    let rec = Arc::new(Recorder::default());
    let start = Instant::now();
    let err = layer(rec.clone())
        .send_request(notify(), target(Proto::Tcp))
        .await
        .unwrap_err();
    assert_eq!(err.status_code(), 408);
    assert_eq!(offsets_ms(&rec, start), [0]);
}

#[tokio::test(start_paused = true)]
async fn provisional_response_moves_retransmissions_to_t2() {
    let rec = Arc::new(Recorder::default());
    let l = layer(rec.clone());
    let start = Instant::now();
    let task = tokio::spawn({
        let l = l.clone();
        async move { l.send_request(notify(), target(Proto::Udp)).await }
    });
    tokio::time::sleep(Duration::from_millis(700)).await; // after the first retransmission
    l.on_inbound(answer(&rec, 100)).await;
    tokio::time::sleep(Duration::from_millis(9000)).await;
    l.on_inbound(answer(&rec, 200)).await;
    let resp = task.await.unwrap().unwrap();
    assert_eq!(resp.status(), Some(200));
    // E at 500 ms (Trying), 1.5 s was armed before the 100; then T2 steps.
    assert_eq!(offsets_ms(&rec, start), [0, 500, 1500, 5500, 9500]);
}

#[tokio::test(start_paused = true)]
async fn transport_error_gives_503() {
    let rec = Arc::new(Recorder {
        fail: true,
        ..Recorder::default()
    });
    let err = layer(rec)
        .send_request(notify(), target(Proto::Tcp))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Transport(_)));
    assert_eq!(err.status_code(), 503);
}

/// A layer whose UAS core accepts PUBLISH, with its application channel.
fn publish_server(
    rec: Arc<Recorder>,
) -> (
    TransactionLayer,
    tokio::sync::mpsc::UnboundedReceiver<sip_cpim_gateway::transaction::ServerTransaction>,
) {
    let policy = UasPolicy {
        allow: vec![Method::Publish],
        ..UasPolicy::default()
    };
    let l = TransactionLayer::new(rec, Timers::default(), policy, 1300);
    let app = queue::connect(&l);
    (l, app)
}

#[tokio::test(start_paused = true)]
async fn server_timer_j_keeps_the_response_for_64_t1() {
    let rec = Arc::new(Recorder::default());
    let (l, mut app) = publish_server(rec.clone());
    let raw = "PUBLISH sip:p@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKj1\r\nMax-Forwards: 70\r\nFrom: <sip:p@example.com>;tag=a\r\nTo: <sip:p@example.com>\r\nCall-ID: j@x\r\nCSeq: 1 PUBLISH\r\nContent-Length: 0\r\n\r\n";
    let req = || Inbound::Message {
        msg: Box::new(parse_datagram(Bytes::from(raw), &Limits::default()).unwrap()),
        source: source(),
        received: tokio::time::Instant::now(),
    };
    l.on_inbound(req()).await;
    let st = app.recv().await.unwrap();
    let resp = st.reply(200, "OK");
    st.respond(resp).await.unwrap();
    // 31 s later a retransmission is still answered from the transaction...
    tokio::time::sleep(Duration::from_secs(31)).await;
    l.on_inbound(req()).await;
    assert_eq!(rec.sends.lock().unwrap().len(), 2);
    assert!(
        app.try_recv().is_err(),
        "not passed to the application again"
    );
    // ...after Timer J (32 s) the transaction is gone: a new request.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(l.in_flight().1, 0);
    l.on_inbound(req()).await;
    assert!(app.recv().await.is_some(), "a new server transaction");
}

/// Timer J runs per transaction, oldest first: of two transactions answered
/// 10 s apart, each ends 64·T1 after its own response, and a transaction
/// over a reliable transport ends at once (Timer J is zero, §17.2.2).
#[tokio::test(start_paused = true)]
async fn server_timer_j_ends_each_transaction_on_its_own_deadline() {
    let rec = Arc::new(Recorder::default());
    let (l, mut app) = publish_server(rec.clone());
    let publish = |branch: &str, proto: Proto| {
        let via = if proto == Proto::Tcp { "TCP" } else { "UDP" };
        let raw = format!(
            "PUBLISH sip:p@example.com SIP/2.0\r\nVia: SIP/2.0/{via} 192.0.2.20:5060;branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\nFrom: <sip:p@example.com>;tag=a\r\nTo: <sip:p@example.com>\r\nCall-ID: {branch}@x\r\nCSeq: 1 PUBLISH\r\nContent-Length: 0\r\n\r\n"
        );
        let mut source = source();
        source.proto = proto;
        Inbound::Message {
            msg: Box::new(parse_datagram(Bytes::from(raw), &Limits::default()).unwrap()),
            source,
            received: tokio::time::Instant::now(),
        }
    };
    for (branch, wait) in [("first", 10), ("second", 0)] {
        l.on_inbound(publish(branch, Proto::Udp)).await;
        let st = app.recv().await.unwrap();
        let resp = st.reply(200, "OK");
        st.respond(resp).await.unwrap();
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
    assert_eq!(l.in_flight().1, 2);
    l.on_inbound(publish("tcp", Proto::Tcp)).await;
    let st = app.recv().await.unwrap();
    let resp = st.reply(200, "OK");
    st.respond(resp).await.unwrap();
    assert_eq!(
        l.in_flight().1,
        2,
        "the TCP transaction ended with its response"
    );
    // 33 s after the first response: only the second transaction is left.
    tokio::time::sleep(Duration::from_secs(23)).await;
    assert_eq!(l.in_flight().1, 1);
    l.on_inbound(publish("second", Proto::Udp)).await;
    assert!(
        app.try_recv().is_err(),
        "the second still absorbs retransmissions"
    );
    l.on_inbound(publish("first", Proto::Udp)).await;
    assert!(app.recv().await.is_some(), "the first is a new transaction");
    // 43 s after the second response it is gone too (the new "first" remains).
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(l.in_flight().1, 1);
}

/// `[sip.overload]`: a new request that waited longer than the queue-delay
/// budget for its agent is to be shed with 503 and the configured
/// Retry-After, and not before (RFC 3261 §21.5.4).
#[tokio::test(start_paused = true)]
async fn a_request_that_waited_past_the_budget_is_shed() {
    let rec = Arc::new(Recorder::default());
    let policy = UasPolicy {
        allow: vec![Method::Publish],
        max_queue_delay: Some(Duration::from_millis(200)),
        overload_retry_after: 3,
        ..UasPolicy::default()
    };
    let l = TransactionLayer::new(rec.clone(), Timers::default(), policy, 1300);
    let mut app = queue::connect(&l);
    let raw = "PUBLISH sip:p@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKshed\r\nMax-Forwards: 70\r\nFrom: <sip:p@example.com>;tag=a\r\nTo: <sip:p@example.com>\r\nCall-ID: shed@x\r\nCSeq: 1 PUBLISH\r\nContent-Length: 0\r\n\r\n";
    l.on_inbound(Inbound::Message {
        msg: Box::new(parse_datagram(Bytes::from(raw), &Limits::default()).unwrap()),
        source: source(),
        received: tokio::time::Instant::now(),
    })
    .await;
    let st = app.recv().await.unwrap();
    // Admitted, it is served until 1.5 times its budget.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        st.shed(),
        None,
        "at 1.5 times the budget it is still served"
    );
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(st.shed(), Some(3));
    // With no budget configured nothing is ever shed.
    let (l, mut app) = publish_server(rec.clone());
    l.on_inbound(Inbound::Message {
        msg: Box::new(
            parse_datagram(Bytes::from(raw.replace("shed", "keep")), &Limits::default()).unwrap(),
        ),
        source: source(),
        received: tokio::time::Instant::now(),
    })
    .await;
    let st = app.recv().await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(st.shed(), None);
}

/// `[sip.overload]` at the transaction layer: a new request already older
/// than the budget when it is read (its wait in the socket buffer counts)
/// is refused 503 with the Retry-After at once, statelessly (RFC 3261
/// §8.2.7): no agent sees it and no transaction is kept for Timer J. A
/// request inside a dialog has 1.5 times the budget, and a retransmission of a
/// request that was served still gets its own answer, however late.
#[tokio::test(start_paused = true)]
async fn a_request_older_than_the_budget_on_arrival_is_refused_statelessly() {
    let rec = Arc::new(Recorder::default());
    let policy = UasPolicy {
        allow: vec![Method::Publish, Method::Subscribe],
        max_queue_delay: Some(Duration::from_millis(200)),
        overload_retry_after: 4,
        ..UasPolicy::default()
    };
    let l = TransactionLayer::new(rec.clone(), Timers::default(), policy, 1300);
    let mut app = queue::connect(&l);
    let sent = |rec: &Recorder| -> Vec<String> {
        rec.sends
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .collect()
    };
    // 201 ms old on arrival: refused, not queued, not kept. Taken as the
    // transport hands it up: boxed, on the task that read it.
    let handing_up = l.receive(request("old", "", "PUBLISH", 201));
    let size = std::mem::size_of_val(&*handing_up);
    assert!(
        size < 1024,
        "the future per received message is {size} bytes"
    );
    handing_up.await;
    let out = sent(&rec);
    assert_eq!(out.len(), 1);
    assert!(out[0].starts_with("SIP/2.0 503 "), "{}", out[0]);
    assert!(out[0].contains("\r\nRetry-After: 4\r\n"), "{}", out[0]);
    assert!(out[0].contains("\r\nCSeq: 1 PUBLISH\r\n"), "{}", out[0]);
    assert!(app.try_recv().is_err(), "no agent sees a shed request");
    assert_eq!(l.in_flight().1, 0, "no server transaction for it");
    // Its retransmission, older still, is refused the same way.
    l.on_inbound(request("old", "", "PUBLISH", 700)).await;
    assert_eq!(sent(&rec).len(), 2);
    assert!(sent(&rec)[1].starts_with("SIP/2.0 503 "));
    // 199 ms: served.
    l.on_inbound(request("young", "", "PUBLISH", 199)).await;
    let st = app.try_recv().expect("a young request reaches its agent");
    assert_eq!(l.in_flight().1, 1);
    let ok = st.reply(200, "OK");
    // The answer is encoded when `respond` is called: its future carries
    // bytes, not the transaction and the Message (2.4 KB, copied by every
    // `tokio::spawn` of an agent's task that awaits it).
    let answering = st.respond(ok);
    let size = std::mem::size_of_val(&answering);
    assert!(size < 512, "respond's future is {size} bytes");
    answering.await.unwrap();
    assert!(sent(&rec)[2].starts_with("SIP/2.0 200 "));
    // Its retransmission a second later gets the 200 again, not a 503.
    l.on_inbound(request("young", "", "PUBLISH", 1000)).await;
    assert_eq!(sent(&rec).len(), 4);
    assert_eq!(sent(&rec)[3], sent(&rec)[2]);
    // Inside a dialog (To tag): 300 ms is within its budget of 1.5 times, 301 ms is not.
    l.on_inbound(request("indialog", ";tag=b", "SUBSCRIBE", 300))
        .await;
    assert!(
        app.try_recv().is_ok(),
        "an in-dialog request gets 1.5 times the budget"
    );
    l.on_inbound(request("indialog2", ";tag=b", "SUBSCRIBE", 301))
        .await;
    assert!(app.try_recv().is_err());
    assert!(sent(&rec).last().unwrap().starts_with("SIP/2.0 503 "));
}

/// Admission by the expected wait (Little's law): with requests in
/// progress piling up faster than they are answered, a fresh request whose
/// wait would exceed the budget is refused at once, statelessly, while a
/// request inside a dialog is judged by its own age only; once the backlog
/// is answered, new requests are admitted again.
#[tokio::test(start_paused = true)]
async fn admission_refuses_what_the_backlog_would_make_late() {
    let rec = Arc::new(Recorder::default());
    let policy = UasPolicy {
        allow: vec![Method::Publish, Method::Subscribe],
        max_queue_delay: Some(Duration::from_millis(200)),
        ..UasPolicy::default()
    };
    let l = TransactionLayer::new(rec.clone(), Timers::default(), policy, 1300);
    let mut app = queue::connect(&l);
    let publish = |n: usize| request(&format!("adm{n}"), "", "PUBLISH", 0);
    let refused = |rec: &Recorder| {
        rec.sends
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, b)| b.starts_with(b"SIP/2.0 503 "))
            .count()
    };
    // 300 fresh requests: the rate is not known yet, all are admitted.
    let mut held = Vec::new();
    for n in 0..300 {
        l.on_inbound(publish(n)).await;
        held.push(app.try_recv().expect("admitted"));
    }
    assert_eq!(refused(&rec), 0);
    // 70 answered in the next 100 ms: 700/s, 230 in progress: 329 ms of wait.
    tokio::time::advance(Duration::from_millis(100)).await;
    for st in held.drain(..70) {
        let ok = st.reply(200, "OK");
        st.respond(ok).await.unwrap();
    }
    l.on_inbound(publish(300)).await;
    assert!(
        app.try_recv().is_err(),
        "a fresh request behind 329 ms of backlog is refused"
    );
    assert_eq!(refused(&rec), 1);
    assert_eq!(l.in_flight().1, 300, "no transaction kept for the refusal");
    // A request inside a dialog (To tag) finishes admitted work: the
    // backlog does not count against it, only its own age (300 ms here).
    l.on_inbound(request("dlg1", ";tag=b", "SUBSCRIBE", 0))
        .await;
    held.push(app.try_recv().expect("an in-dialog request is admitted"));
    l.on_inbound(request("dlg2", ";tag=b", "SUBSCRIBE", 301))
        .await;
    assert!(app.try_recv().is_err(), "older than 1.5 times the budget");
    assert_eq!(refused(&rec), 2);
    // The backlog answered, a new request is admitted again.
    for st in held.drain(..) {
        let ok = st.reply(200, "OK");
        st.respond(ok).await.unwrap();
    }
    l.on_inbound(publish(301)).await;
    assert!(app.try_recv().is_ok());
    assert_eq!(refused(&rec), 2);
}

/// Work in progress is bounded even when the wait cannot be estimated
/// (shedding by wait off here, as when the agents stall and no rate is
/// known): past `max_in_progress` requests admitted and not yet answered,
/// a new request is refused at admission with 503 and Retry-After (RFC
/// 3261 §21.5.4), statelessly, and so is its retransmission; a request
/// inside a dialog is admitted up to half again, and once one is answered
/// a new one is admitted again.
#[tokio::test(start_paused = true)]
async fn requests_in_progress_are_bounded_by_max_in_progress() {
    let rec = Arc::new(Recorder::default());
    let policy = UasPolicy {
        allow: vec![Method::Publish, Method::Subscribe],
        max_queue_delay: None,
        max_in_progress: 8,
        ..UasPolicy::default()
    };
    let l = TransactionLayer::new(rec.clone(), Timers::default(), policy, 1300);
    let mut app = queue::connect(&l);
    let mut held = Vec::new();
    for n in 0..8 {
        l.on_inbound(request(&format!("q{n}"), "", "PUBLISH", 0))
            .await;
        held.push(app.try_recv().expect("admitted"));
    }
    assert!(rec.sends.lock().unwrap().is_empty(), "all 8 admitted");
    l.on_inbound(request("over", "", "PUBLISH", 0)).await;
    assert!(app.try_recv().is_err(), "the ninth is not admitted");
    let out = |i: usize| String::from_utf8_lossy(&rec.sends.lock().unwrap()[i].1).into_owned();
    let refused = out(0);
    assert!(
        refused.starts_with("SIP/2.0 503 Service Unavailable (overloaded)\r\n"),
        "{refused}"
    );
    assert!(refused.contains("\r\nRetry-After: 2\r\n"), "{refused}");
    assert!(refused.contains("\r\nCSeq: 1 PUBLISH\r\n"), "{refused}");
    assert!(refused.contains("\r\nCall-ID: over@x\r\n"), "{refused}");
    assert_eq!(l.in_flight().1, 8, "no transaction kept for the refusal");
    // Its retransmission meets the same check.
    l.on_inbound(request("over", "", "PUBLISH", 0)).await;
    assert_eq!(rec.sends.lock().unwrap().len(), 2);
    assert!(out(1).starts_with("SIP/2.0 503 "), "{}", out(1));
    assert_eq!(l.in_flight().1, 8);
    // Requests inside dialogs finish admitted work: up to 12 in progress.
    for n in 0..4 {
        l.on_inbound(request(&format!("d{n}"), ";tag=b", "SUBSCRIBE", 0))
            .await;
        held.push(app.try_recv().expect("an in-dialog request is admitted"));
    }
    l.on_inbound(request("d4", ";tag=b", "SUBSCRIBE", 0)).await;
    assert!(app.try_recv().is_err(), "the thirteenth is not admitted");
    assert!(out(2).starts_with("SIP/2.0 503 "), "{}", out(2));
    // Below the bound again, a new request is admitted.
    for st in held.drain(..5) {
        let ok = st.reply(200, "OK");
        st.respond(ok).await.unwrap();
    }
    l.on_inbound(request("again", "", "PUBLISH", 0)).await;
    assert!(app.try_recv().is_ok(), "admitted once below the bound");
}

/// While admission refuses new requests, the UDP transport's first look
/// (`Receive::screen`) answers a new one from its bytes, before any parse:
/// the same stateless 503 as the full path (the same fields, the top Via
/// stamped with `received` and `rport`, RFC 3581 §4), no transaction kept.
/// What the full path must see is left to it: a request inside a dialog,
/// a retransmission of an admitted request, a CANCEL, and everything while
/// new requests are admitted.
#[tokio::test(start_paused = true)]
async fn while_new_requests_are_refused_they_are_refused_before_the_parse() {
    let rec = Arc::new(Recorder::default());
    let policy = UasPolicy {
        allow: vec![Method::Publish, Method::Subscribe],
        max_in_progress: 1,
        overload_retry_after: 4,
        ..UasPolicy::default()
    };
    let l = TransactionLayer::new(rec.clone(), Timers::default(), policy, 1300);
    let mut app = queue::connect(&l);
    let raw = |branch: &str, method: &str, to_tag: &str| {
        format!(
            "{method} sip:p@example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP client.example.com:5070;branch=z9hG4bK{branch};rport\r\n\
             v: SIP/2.0/UDP 192.0.2.99;branch=z9hG4bKfirst\r\n\
             Max-Forwards: 70\r\nf: \"W; tag=no\" <sip:w@example.com>;tag=a\r\n\
             To: <sip:p@example.com>{to_tag}\r\ni: {branch}@x\r\nCSeq: 7 {method}\r\n\
             Event: presence\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let screen = |bytes: &str| l.screen(bytes.as_bytes(), &source(), Instant::now());
    let sent = |i: usize| rec.sends.lock().unwrap()[i].1.clone();
    // Nothing in progress: every request is for the full path.
    assert!(screen(&raw("new", "SUBSCRIBE", "")).is_none());
    // One admitted and held: max_in_progress reached.
    let held = raw("held", "PUBLISH", "");
    l.on_inbound(Inbound::Message {
        msg: Box::new(parse_datagram(Bytes::from(held.clone()), &Limits::default()).unwrap()),
        source: source(),
        received: Instant::now(),
    })
    .await;
    let _st = app.try_recv().expect("admitted");
    let new = raw("new", "SUBSCRIBE", "");
    screen(&new).expect("refused from its bytes").await;
    assert_eq!(rec.sends.lock().unwrap().len(), 1);
    assert_eq!(l.in_flight().1, 1, "no transaction kept for the refusal");
    assert!(app.try_recv().is_err());
    // The full path's answer to the same bytes, for comparison.
    l.on_inbound(Inbound::Message {
        msg: Box::new(parse_datagram(Bytes::from(new.clone()), &Limits::default()).unwrap()),
        source: source(),
        received: Instant::now(),
    })
    .await;
    let (glanced, parsed) = (sent(0), sent(1));
    assert!(
        glanced.starts_with(b"SIP/2.0 503 Service Unavailable (overloaded)\r\n"),
        "{glanced:?}"
    );
    let fields = |wire: Bytes| {
        let m = parse_datagram(wire, &Limits::default()).unwrap();
        let to_tag = m.to().and_then(|t| t.tag()).map(str::to_owned);
        let fields: Vec<(HeaderName, String)> = m
            .headers()
            .iter()
            .filter(|f| f.name != HeaderName::To)
            .map(|f| (f.name.clone(), f.value.to_string()))
            .collect();
        (
            m.status(),
            m.to().map(|t| t.uri.to_string()),
            to_tag,
            fields,
        )
    };
    let (g, p) = (fields(glanced), fields(parsed));
    assert_eq!((g.0, &g.1, &g.3), (p.0, &p.1, &p.3));
    assert!(g.2.is_some() && p.2.is_some(), "a To tag in both");
    let top_via = &g.3[0].1;
    assert!(top_via.contains(";rport=5060"), "{top_via}");
    assert!(top_via.contains(";received=192.0.2.20"), "{top_via}");
    assert!(g.3.contains(&(HeaderName::RetryAfter, "4".into())));
    // Left to the full path: inside a dialog, the held request's
    // retransmission, a CANCEL.
    assert!(screen(&raw("dlg", "SUBSCRIBE", ";tag=b")).is_none());
    assert!(screen(&held).is_none());
    assert!(screen(&raw("new", "CANCEL", "")).is_none());
    assert_eq!(rec.sends.lock().unwrap().len(), 2);
}

/// Before its transaction user is connected, the layer refuses a new
/// request in its transaction: 503 with `Retry-After: 5` (RFC 3261
/// §21.5.4), and its retransmission gets the same answer again.
#[tokio::test(start_paused = true)]
async fn a_request_before_the_transaction_user_is_connected_gets_503() {
    let rec = Arc::new(Recorder::default());
    let policy = UasPolicy {
        allow: vec![Method::Publish],
        ..UasPolicy::default()
    };
    let l = TransactionLayer::new(rec.clone(), Timers::default(), policy, 1300);
    l.on_inbound(request("early", "", "PUBLISH", 0)).await;
    l.on_inbound(request("early", "", "PUBLISH", 0)).await;
    let sent: Vec<String> = rec
        .sends
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent[0].starts_with("SIP/2.0 503 Service Unavailable (starting)\r\n"),
        "{}",
        sent[0]
    );
    assert!(sent[0].contains("\r\nRetry-After: 5\r\n"), "{}", sent[0]);
    assert_eq!(
        sent[1], sent[0],
        "the retransmission gets the recorded answer"
    );
}
