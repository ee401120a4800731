//! The server side of the transaction layer (RFC 3261 §17.2): matching
//! requests to transactions (§17.2.3), the non-INVITE and INVITE server
//! transactions with Timers G, H, I, J, the UAS core checks on new requests
//! (§8.2), stateless answers to malformed ones, and [`ServerTransaction`],
//! the application's handle on one request.

use super::{IncomingRequest, Shared, TransactionLayer, random_token, shrunk_capacity, uas};
use crate::metrics as m;
use crate::sip::salvage::salvage_request;
use crate::sip::{
    HeaderName, Message, Method, ParseError, Via, default_reason, headers::decode_via,
};
use crate::transport::routing::ResponseTarget;
use crate::transport::{Source, Target, TransportError, response_target, stamp_received};
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// Server transaction identity (§17.2.3), held in one allocation per key:
/// the matching fields joined by `'\n'`, the match method last.
///
/// Invariant: no field contains `'\n'` (the parser splits header lines on it
/// and unfolds continuation lines; URIs and tokens exclude it), so two
/// different field tuples never join to the same text. One joined string
/// instead of a `String` per field keeps the table small: every UDP
/// transaction stays in it for Timer J (32 s), 64,000 at 2,000 requests/s.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum ServerKey {
    /// Magic-cookie branch: `branch, sent-by, method` (ACK → INVITE), plus
    /// the previous hop's address and port: retransmissions come from the
    /// same socket, and two senders reusing a branch (RFC 4475's corpus
    /// does) stay apart even on one host. With `rport` (RFC 3581) the
    /// sent-by is not where the sender is, so without the port a second
    /// sender on the host would be taken for a retransmission and its
    /// answer sent to the first one.
    Rfc3261 {
        fields: Box<str>,
        hop: std::net::SocketAddr,
    },
    /// RFC 2543 requests: `Request-URI, From tag, Call-ID, CSeq, top Via,
    /// method`.
    Rfc2543 { fields: Box<str> },
}

impl ServerKey {
    /// `join` sizes its buffer exactly, so boxing does not reallocate.
    fn join(parts: &[&str]) -> Box<str> {
        parts.join("\n").into_boxed_str()
    }

    /// The same identity for another method: a CANCEL's key names the
    /// INVITE it cancels this way (§9.2).
    fn with_method(&self, method: &str) -> ServerKey {
        let swap = |fields: &str| {
            let (head, _) = fields.rsplit_once('\n').expect("the method is last");
            ServerKey::join(&[head, method])
        };
        match self {
            ServerKey::Rfc3261 { fields, hop } => ServerKey::Rfc3261 {
                fields: swap(fields),
                hop: *hop,
            },
            ServerKey::Rfc2543 { fields } => ServerKey::Rfc2543 {
                fields: swap(fields),
            },
        }
    }
}

pub(super) fn match_method(m: &Method) -> &str {
    if *m == Method::Ack {
        "INVITE"
    } else {
        m.as_str()
    }
}

pub(super) fn server_key(req: &Message, source: &Source) -> Option<ServerKey> {
    let via = req.top_via()?;
    let method = match_method(req.method()?);
    if let Some(key) = rfc3261_key(via, method, source) {
        return Some(key);
    }
    let ruri = req.request_uri()?.to_string();
    let cseq = req.cseq().map_or(0, |c| c.seq).to_string();
    let via_host = format!("{}", via.host) + &via.port.map(|p| format!(":{p}")).unwrap_or_default();
    Some(ServerKey::Rfc2543 {
        fields: ServerKey::join(&[
            &ruri,
            req.from().and_then(|f| f.tag()).unwrap_or(""),
            req.call_id().unwrap_or(""),
            &cseq,
            &via_host,
            method,
        ]),
    })
}

/// The key of a request whose top Via has a magic-cookie branch; `None`
/// for an RFC 2543 one. `method` is the match method (`match_method`).
pub(super) fn rfc3261_key(via: &Via, method: &str, source: &Source) -> Option<ServerKey> {
    let branch = via.rfc3261_branch()?;
    let port = via.port.unwrap_or_else(|| via.transport.default_port());
    let sent_by = format!("{}:{port}", via.host.canonical());
    Some(ServerKey::Rfc3261 {
        fields: ServerKey::join(&[branch, &sent_by, method]),
        hop: source.peer,
    })
}

/// Where the responses to a request whose (stamped) top Via is `via` go
/// (§18.2.2); a `maddr` naming a host is not resolved: the source address
/// is answered instead.
pub(super) fn target_of(via: &Via, source: &Source) -> Target {
    match response_target(via, source) {
        ResponseTarget::Direct(t) => t,
        ResponseTarget::Resolve { proto, .. } => {
            let mut t = Target::new(proto, source.peer);
            t.conn = source.conn;
            t
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct ServerPhase {
    /// The last response sent, re-sent on a retransmitted request.
    last: Option<Bytes>,
    completed: bool,
    /// INVITE: the ACK arrived.
    confirmed: bool,
}

pub(super) struct ServerEntry {
    target: Target,
    invite: bool,
    /// The request's `method` metric label.
    method: &'static str,
    phase: Mutex<ServerPhase>,
    ack: tokio::sync::Notify,
}

impl ServerEntry {
    fn phase(&self) -> std::sync::MutexGuard<'_, ServerPhase> {
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A new request for the application, with the means to answer it once.
pub struct ServerTransaction {
    /// The request, its To tag and identity (set by the router).
    inbound: IncomingRequest,
    source: Source,
    key: ServerKey,
    entry: Arc<ServerEntry>,
    shared: Arc<Shared>,
    answered: bool,
    span: tracing::Span,
    /// When the request arrived, for shedding by queue delay.
    received: Instant,
    /// Counted among the requests in progress (see `admission`).
    queued: bool,
}

/// Ends server transactions whose Timer J fired.
pub(super) fn end_servers(shared: &Shared, keys: &mut Vec<ServerKey>) {
    let mut servers = shared.servers();
    for key in keys.drain(..) {
        servers.remove(&key);
    }
    if let Some(keep) = shrunk_capacity(servers.len(), servers.capacity()) {
        servers.shrink_to(keep);
    }
}

/// How long `req` may wait, from its arrival to its answer, before it is
/// refused 503 at admission under overload (`[sip.overload]
/// max_queue_delay_ms`; `None`: never), and whether the backlog counts.
///
/// A new request is refused for the wait its age and the backlog promise
/// together. A request inside a dialog (a To tag: the un-SUBSCRIBE or
/// refresh of a subscription that was served, a NOTIFY to the gateway)
/// finishes work already admitted: refusing it wastes that work, so it is
/// refused only for its own age, and past half the budget again. Measured
/// at twice capacity, every in-dialog refusal under the shared rule came
/// from the estimate (ages up to 165 ms, estimates 330–1,060 ms), each one
/// a served SUBSCRIBE and NOTIFY thrown away (docs/performance.md, "In-dialog
/// requests by their own age").
fn shed_budget(policy: &uas::UasPolicy, in_dialog: bool) -> Option<Budget> {
    let budget = policy.max_queue_delay?;
    Some(if in_dialog {
        Budget {
            limit: late_limit(budget),
            backlog_counts: false,
        }
    } else {
        Budget {
            limit: budget,
            backlog_counts: true,
        }
    })
}

/// A request's wait budget at admission (`shed_budget`).
struct Budget {
    limit: std::time::Duration,
    /// Whether the wait the backlog promises counts, or only the age.
    backlog_counts: bool,
}

/// The reason phrase of a refusal at admission.
const OVERLOADED: &str = "Service Unavailable (overloaded)";

impl Shared {
    /// The stateless 503 of a request refused at admission (`stage`), to
    /// `target`: counted, and built by `wire` from the reason, a fresh To
    /// tag and the Retry-After field, whether from the parsed request or
    /// from a glance at it (`screen`).
    pub(super) fn refuse_overloaded(
        &self,
        stage: &'static str,
        method: &'static str,
        target: Target,
        wire: impl FnOnce(&str, &str, &[(HeaderName, &str)]) -> Bytes,
    ) -> Reply {
        metrics::counter!(m::SIP_SHED, "stage" => stage).increment(1);
        metrics::counter!(m::SIP_RESPONSES_SENT, "method" => method, "code" => m::code_label(503))
            .increment(1);
        let extra = [(HeaderName::RetryAfter, &*self.overload_retry_after)];
        Reply::Send(wire(OVERLOADED, &random_token(), &extra), target)
    }
}

/// Past this age an admitted request is refused by its agent, and an
/// in-dialog one at admission: half the budget again, still below T1 with
/// the default budget (300 ms, T1 500 ms).
fn late_limit(budget: std::time::Duration) -> std::time::Duration {
    budget + budget / 2
}

impl TransactionLayer {
    /// Admission (`admission`): why a request received at `received` is
    /// refused, as its `stage` label, or `None` when it is admitted;
    /// `in_dialog`: it has a To tag.
    ///
    /// - "queue": the requests in progress reached `max_in_progress` (half
    ///   again for a request inside a dialog, as with the wait budget).
    ///   This bound holds even when the wait cannot be estimated (agents
    ///   stalled: no rate to divide by) or shedding by wait is off.
    /// - "admission": its age so far plus the wait the agents' queue
    ///   promises exceed its budget (`shed_budget`).
    pub(super) fn refusal(&self, in_dialog: bool, received: Instant) -> Option<&'static str> {
        let policy = &self.shared.policy;
        let most = if in_dialog {
            policy.max_in_progress + policy.max_in_progress / 2
        } else {
            policy.max_in_progress
        };
        let queued = self.shared.admission.queued();
        if queued >= most {
            tracing::debug!(queued, most, "refused at admission: too much in progress");
            return Some("queue");
        }
        let Budget {
            limit,
            backlog_counts,
        } = shed_budget(policy, in_dialog)?;
        let now = Instant::now();
        let age = now.saturating_duration_since(received);
        let expected = if backlog_counts {
            self.shared.admission.expected_wait(now)
        } else {
            std::time::Duration::ZERO
        };
        if age + expected <= limit {
            return None;
        }
        // Why, for an operator tracing overload (RUST_LOG=…server=debug).
        tracing::debug!(
            age_ms = age.as_millis() as u64,
            expected_ms = expected.as_millis() as u64,
            limit_ms = limit.as_millis() as u64,
            queued,
            "refused at admission"
        );
        Some("admission")
    }

    /// A received request: matched to its transaction, refused, or handed
    /// to the application. Synchronous up to the one send it may leave
    /// (`Reply`), so the future per received message stays small.
    pub(super) fn on_request(&self, mut req: Message, source: Source, received: Instant) -> Reply {
        stamp_received(&mut req, &source);
        let Some(key) = server_key(&req, &source) else {
            tracing::debug!(peer = %source.peer, "request without Via dropped");
            return Reply::Nothing;
        };
        let method = req.method().cloned().unwrap_or(Method::Options);
        let existing = self.shared.servers().get(&key).cloned();
        if let Some(entry) = existing {
            return absorb(&entry, &method);
        }
        if method == Method::Ack {
            // An ACK matching no transaction is absorbed (§17.2.3, §8.2).
            return Reply::Nothing;
        }
        let target = target_of(req.top_via().expect("key implies Via"), &source);
        let method_label = m::method_label(Some(&method));
        metrics::counter!(m::SIP_REQUESTS_RECEIVED, "method" => method_label).increment(1);
        let in_dialog = req.to().is_some_and(|t| t.tag().is_some());
        if method != Method::Cancel {
            if let Some(stage) = self.refusal(in_dialog, received) {
                // It would not be answered before the client retransmits,
                // or too much is in progress already: refuse it here,
                // before it costs a transaction, a task or the agent's
                // time, and statelessly (RFC 3261 §8.2.7): a
                // retransmission meets the same check, and under overload
                // the table must not grow with what is refused (it would
                // hold each for Timer J). See `admission`.
                return self.shared.refuse_overloaded(
                    stage,
                    method_label,
                    target,
                    |reason, tag, extra| req.stateless_reply(503, reason, tag, extra),
                );
            }
        }
        let entry = Arc::new(ServerEntry {
            target,
            invite: method == Method::Invite,
            method: method_label,
            phase: Mutex::new(ServerPhase::default()),
            ack: tokio::sync::Notify::new(),
        });
        // The UDP receivers run concurrently: a retransmission read by
        // another one since the lookup above found no entry then. One of
        // the two creates the transaction, the other absorbs (§17.2.3).
        let raced = match self.shared.servers().entry(key.clone()) {
            std::collections::hash_map::Entry::Occupied(first) => Some(first.get().clone()),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(entry.clone());
                None
            }
        };
        if let Some(first) = raced {
            return absorb(&first, &method);
        }
        let to_tag = random_token();

        if method == Method::Cancel {
            // §9.2: CANCEL matching an INVITE transaction gets 200 (our
            // INVITEs are answered at once, so it changes nothing); else 481.
            let invite_key = key.with_method("INVITE");
            let found = self.shared.servers().contains_key(&invite_key);
            let code = if found { 200 } else { 481 };
            let resp = uas::reply(&req, code, default_reason(code), &to_tag);
            return Reply::answered(respond(self.shared.clone(), key, entry, resp));
        }
        if let Some(resp) = uas::check_request(&req, &self.shared.policy, &to_tag) {
            return Reply::answered(respond(self.shared.clone(), key, entry, resp));
        }
        let span = tracing::info_span!(
            "sip_transaction",
            call_id = req.call_id().unwrap_or(""),
            method = method_label,
            peer = %source.peer,
            proto = %source.proto,
            identity = tracing::field::Empty,
        );
        span.in_scope(|| tracing::debug!("request received"));
        let st = ServerTransaction {
            inbound: IncomingRequest::new(req, to_tag),
            source,
            key,
            entry,
            shared: self.shared.clone(),
            answered: false,
            span,
            received,
            queued: true,
        };
        self.shared.admission.enter();
        if self
            .shared
            .draining
            .load(std::sync::atomic::Ordering::Acquire)
        {
            // RFC 3261 §21.5.4: temporarily unable; another server, or this
            // one after its restart, will take it.
            let mut resp = st.reply(503, "Service Unavailable (shutting down)");
            resp.push_header(HeaderName::RetryAfter, "5");
            return Reply::answered(st.respond(resp));
        }
        match self.shared.tu.get() {
            Some(tu) => {
                tu.take(st);
                Reply::Nothing
            }
            None => {
                // Not connected yet (the server connects it before it
                // receives): as while starting, 503 (RFC 3261 §21.5.4).
                let mut resp = st.reply(503, "Service Unavailable (starting)");
                resp.push_header(HeaderName::RetryAfter, "5");
                Reply::answered(st.respond(resp))
            }
        }
    }

    /// A message that did not parse: a request gets 400 (505, 513) built
    /// from salvaged headers; responses and noise are dropped (§8.2, RFC
    /// 4475 §3.1.2).
    pub(super) fn on_malformed(&self, bytes: Bytes, error: ParseError, source: Source) -> Reply {
        tracing::info!(peer = %source.peer, proto = %source.proto, %error, "malformed message");
        metrics::counter!(m::SIP_MALFORMED).increment(1);
        if matches!(error, ParseError::ConflictingContentLength { .. }) {
            // Cannot be framed: over UDP the datagram is discarded (RFC 4475
            // §3.3.9); over a stream the connection closes.
            return Reply::Nothing;
        }
        let Some(s) = salvage_request(&bytes) else {
            return Reply::Nothing;
        };
        let code = error.status_code();
        let mut resp = Message::response(code, &error.reason_phrase());
        for v in &s.via {
            resp.push_header(HeaderName::Via, v.clone());
        }
        if let Some(f) = &s.from {
            resp.push_header(HeaderName::From, f.clone());
        }
        if let Some(t) = &s.to {
            let needs_tag = !t.contains(";tag=")
                && crate::sip::headers::decode_name_addr(&t.clone().into()).is_ok();
            let to = if needs_tag {
                format!("{t};tag={}", random_token())
            } else {
                t.clone()
            };
            resp.push_header(HeaderName::To, to);
        }
        if let Some(c) = &s.call_id {
            resp.push_header(HeaderName::CallId, c.clone());
        }
        if let Some(c) = &s.cseq {
            resp.push_header(HeaderName::CSeq, c.clone());
        }
        let text = error.to_string().replace(['"', '\\'], "'");
        resp.push_header(
            HeaderName::Warning,
            format!("399 {} \"{text}\"", self.shared.policy.agent),
        );
        if code == 505 {
            resp.push_header(HeaderName::Supported, "");
        }
        let target = decode_via(&s.via[0].clone().into())
            .ok()
            .and_then(|v| v.into_iter().next())
            .and_then(|v| {
                // Apply §18.2.1 to the salvaged Via, then route by it.
                let mut req =
                    Message::request(Method::Options, crate::sip::Uri::sip(None, "invalid"));
                req.push_header(HeaderName::Via, v.to_string());
                stamp_received(&mut req, &source);
                match response_target(req.top_via()?, &source) {
                    ResponseTarget::Direct(t) => Some(t),
                    ResponseTarget::Resolve { .. } => None,
                }
            })
            .unwrap_or_else(|| {
                let mut t = Target::new(source.proto, source.peer);
                t.conn = source.conn;
                t
            });
        Reply::Send(resp.to_bytes(), target)
    }
}

/// A request matching the server transaction `entry`: a retransmission
/// gets the last response again (§17.2.2), an ACK confirms an INVITE
/// answer.
fn absorb(entry: &ServerEntry, method: &Method) -> Reply {
    if *method == Method::Ack {
        if entry.invite {
            entry.phase().confirmed = true;
            entry.ack.notify_one();
        }
        return Reply::Nothing;
    }
    metrics::counter!(m::SIP_RETRANSMISSIONS, "direction" => "received").increment(1);
    let last = entry.phase().last.clone();
    match last {
        Some(bytes) => Reply::Send(bytes, entry.target.clone()),
        None => Reply::Nothing,
    }
}

/// What taking a received message leaves to do on the receiving task: at
/// most one send. The decision itself is synchronous, so the future the
/// transport boxes per message (`Receive`) holds a send, not the request.
pub(super) enum Reply {
    Nothing,
    /// A stateless answer, or a retransmission of the last one.
    Send(Bytes, Target),
    /// An answer in a transaction (recorded; sending it may start timers).
    Answer(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>),
}

impl Reply {
    fn answered(
        sending: impl Future<Output = Result<(), TransportError>> + Send + 'static,
    ) -> Reply {
        Reply::Answer(Box::pin(async move {
            let _ = sending.await;
        }))
    }

    pub(super) async fn send(self, shared: &Shared) {
        match self {
            Reply::Nothing => {}
            Reply::Send(bytes, target) => {
                let _ = shared.transport.send(bytes, target).await;
            }
            Reply::Answer(sending) => sending.await,
        }
    }
}

/// Sends a response in a server transaction and schedules its end.
///
/// The response is encoded and recorded as the transaction's last at the
/// call, before the returned future is polled (callers await it at once):
/// the future then holds the encoded bytes, not the `Message`. It is
/// spawned or awaited inside every agent's per-request task, and a future
/// that carried the message through each `async` layer was kilobytes that
/// `tokio::spawn` copied on every request (`memmove` was 15–19 % of the
/// core under overload, docs/performance.md).
pub(super) fn respond(
    shared: Arc<Shared>,
    key: ServerKey,
    entry: Arc<ServerEntry>,
    resp: Message,
) -> impl Future<Output = Result<(), TransportError>> + Send + 'static {
    let outgoing = record(&entry, &resp);
    drop(resp);
    async move { transmit(&shared, &key, &entry, outgoing).await }
}

/// A response encoded and recorded, to be sent (`transmit`).
struct Outgoing {
    bytes: Bytes,
    is_final: bool,
}

/// Encodes `resp` and records it as the transaction's last response, for
/// retransmissions; `None` once a final response was sent (only one final
/// response per transaction, §17.2.2).
fn record(entry: &ServerEntry, resp: &Message) -> Option<Outgoing> {
    let code = resp.status().unwrap_or(500);
    let bytes = resp.to_bytes();
    let is_final = code >= 200;
    metrics::counter!(m::SIP_RESPONSES_SENT, "method" => entry.method, "code" => m::code_label(code))
        .increment(1);
    let mut p = entry.phase();
    if p.completed {
        return None;
    }
    p.last = Some(bytes.clone());
    p.completed = is_final;
    Some(Outgoing { bytes, is_final })
}

/// Sends a recorded response and schedules the transaction's end; nothing
/// when `record` refused a second final response.
async fn transmit(
    shared: &Arc<Shared>,
    key: &ServerKey,
    entry: &Arc<ServerEntry>,
    outgoing: Option<Outgoing>,
) -> Result<(), TransportError> {
    let Some(Outgoing { bytes, is_final }) = outgoing else {
        return Ok(());
    };
    let result = shared
        .transport
        .send(bytes.clone(), entry.target.clone())
        .await;
    if !is_final {
        return result;
    }
    let reliable = entry.target.proto.is_reliable();
    if !entry.invite {
        if reliable {
            // Timer J is zero over a reliable transport (§17.2.2).
            shared.end_server(key);
        } else {
            shared
                .timer_j
                .arm(shared, shared.timers.t1 * 64, key.clone());
        }
        return result;
    }
    let shared = shared.clone();
    let key = key.clone();
    let entry = entry.clone();
    let t = shared.timers;
    tokio::spawn(async move {
        // §17.2.1: Timer G retransmits (unreliable) until ACK; Timer H
        // gives up; Timer I absorbs ACK retransmissions.
        let h = tokio::time::sleep(t.t1 * 64);
        tokio::pin!(h);
        let mut g = t.t1;
        loop {
            if entry.phase().confirmed {
                break;
            }
            let next_g = async {
                if reliable {
                    std::future::pending::<()>().await
                } else {
                    tokio::time::sleep(g).await
                }
            };
            tokio::select! {
                _ = &mut h => break,
                _ = entry.ack.notified() => break,
                _ = next_g => {
                    g = (g * 2).min(t.t2);
                    let _ = shared.transport.send(bytes.clone(), entry.target.clone()).await;
                }
            }
        }
        if !reliable {
            tokio::time::sleep(t.t4).await;
        }
        shared.end_server(&key);
    });
    result
}

impl ServerTransaction {
    pub fn request(&self) -> &Message {
        &self.inbound.request
    }

    /// The Retry-After of the 503 to answer instead of serving the request,
    /// when it waited for its agent longer than `[sip.overload]
    /// max_queue_delay_ms` (`Reject::Overloaded`): under
    /// overload the agents answer what they can still answer in time and
    /// refuse the rest cheaply, so goodput stays near capacity and the
    /// clients stop retransmitting (RFC 3261 §21.5.4; the queue-delay
    /// signal of RFC 7339's ideas, without its Via parameters).
    ///
    /// Admitted requests get half their admission budget again here: the
    /// admission's estimate has already been paid for (parse, transaction,
    /// queueing), and serving one a little late still answers it before T1
    /// with the default budget; refusing it would waste that work and
    /// lower the goodput (`admission`).
    pub fn shed(&self) -> Option<u32> {
        // In-dialog requests were admitted on this limit already.
        let limit = late_limit(self.shared.policy.max_queue_delay?);
        (self.received.elapsed() > limit).then_some(self.shared.policy.overload_retry_after)
    }

    /// The request now waits on a remote peer (the gateway's adapter, a
    /// cluster node), not on this node's agents and store: from here it no
    /// longer counts towards the wait new requests are promised
    /// (`admission`). Answering it does the same. Idempotent.
    pub fn taken(&mut self) {
        if std::mem::take(&mut self.queued) {
            self.shared.admission.leave();
        }
    }

    /// The request as pure data, for deciding the answer.
    pub fn inbound(&self) -> &IncomingRequest {
        &self.inbound
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The To tag this transaction's responses carry (when the request had none).
    pub fn to_tag(&self) -> &str {
        &self.inbound.to_tag
    }

    /// Records who the request was authenticated as (an AOR key).
    pub fn set_identity(&mut self, aor: String) {
        self.span.record("identity", aor.as_str());
        self.inbound.identity = Some(aor);
    }

    /// The authenticated AOR, if the request was authenticated.
    pub fn identity(&self) -> Option<&str> {
        self.inbound.identity.as_deref()
    }

    /// The `sip_transaction` span (Call-ID, method, peer): enter it to log
    /// on behalf of this transaction.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// A response to the request (§8.2.6), To tag included.
    pub fn reply(&self, code: u16, reason: &str) -> Message {
        self.inbound.reply(code, reason)
    }

    /// Sends a provisional (1xx) response; the transaction stays open.
    pub async fn provisional(&self, resp: Message) -> Result<(), TransportError> {
        debug_assert!(resp.status().is_some_and(|c| c < 200));
        respond(
            self.shared.clone(),
            self.key.clone(),
            self.entry.clone(),
            resp,
        )
        .await
    }

    /// Sends the final response; the transaction then absorbs
    /// retransmissions until Timer J.
    ///
    /// Like `respond`, the response is encoded and recorded at the call;
    /// the future keeps only what sending needs, not the request or the
    /// response (see `respond` for why).
    pub fn respond(
        mut self,
        resp: Message,
    ) -> impl Future<Output = Result<(), TransportError>> + Send + 'static {
        use tracing::Instrument;
        self.taken();
        self.answered = true;
        let span = self.span.clone();
        span.in_scope(|| tracing::debug!(code = resp.status(), "response"));
        // The key moves out (an empty one is left, without allocating);
        // `answered` is set, so dropping `self` sends nothing.
        let key = std::mem::replace(
            &mut self.key,
            ServerKey::Rfc2543 {
                fields: Box::default(),
            },
        );
        respond(self.shared.clone(), key, self.entry.clone(), resp).instrument(span)
    }
}

impl AsRef<IncomingRequest> for ServerTransaction {
    fn as_ref(&self) -> &IncomingRequest {
        &self.inbound
    }
}

impl Drop for ServerTransaction {
    fn drop(&mut self) {
        self.taken();
        if self.answered {
            return;
        }
        // The application dropped the request without answering: answer 500
        // so the client does not retransmit until Timer F.
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            let resp = self.inbound.reply(500, "Server Internal Error");
            h.spawn(respond(
                self.shared.clone(),
                self.key.clone(),
                self.entry.clone(),
                resp,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Limits, parse_datagram};
    use crate::transport::Proto;

    fn key_of(raw: &str) -> ServerKey {
        let req = parse_datagram(Bytes::from(raw.to_owned()), &Limits::default()).unwrap();
        let source = Source {
            proto: Proto::Udp,
            peer: "192.0.2.20:5060".parse().unwrap(),
            local: "192.0.2.10:5060".parse().unwrap(),
            conn: None,
        };
        server_key(&req, &source).unwrap()
    }

    fn request(method: &str, via_params: &str) -> String {
        format!(
            "{method} sip:p@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20{via_params}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:w@example.com>;tag=f\r\nTo: <sip:p@example.com>\r\n\
             Call-ID: c@x\r\nCSeq: 7 {method}\r\nContent-Length: 0\r\n\r\n"
        )
    }

    /// §9.2: a CANCEL names the INVITE it cancels by the same identity with
    /// the method changed, for both §17.2.3 forms; an ACK matches the INVITE.
    #[test]
    fn cancel_and_ack_keys_name_the_invite() {
        for via in [";branch=z9hG4bKabc", ""] {
            let invite = key_of(&request("INVITE", via));
            let cancel = key_of(&request("CANCEL", via));
            assert_ne!(cancel, invite, "via {via:?}");
            assert_eq!(cancel.with_method("INVITE"), invite, "via {via:?}");
            assert_eq!(key_of(&request("ACK", via)), invite, "via {via:?}");
            assert_ne!(key_of(&request("OPTIONS", via)), invite, "via {via:?}");
        }
        // Another branch or sent-by is another transaction.
        let invite = key_of(&request("INVITE", ";branch=z9hG4bKabc"));
        assert_ne!(key_of(&request("INVITE", ";branch=z9hG4bKabd")), invite);
        assert_ne!(
            key_of(&request("INVITE", ":5070;branch=z9hG4bKabc")),
            invite
        );
    }
}
