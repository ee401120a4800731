//! RFC 3261 §17 transactions: non-INVITE client and server transactions with
//! timers E, F, J, K (and the INVITE server transaction needed to refuse an
//! INVITE properly: timers G, H, I), transaction matching (§17.1.3, §17.2.3,
//! including RFC 2543 requests), the UAS core checks of §8.2, and stateless
//! answers to malformed requests.
//!
//! The application above, the [`TransactionUser`], takes each new request
//! as a [`ServerTransaction`] on the task that received it, and starts
//! client transactions with [`TransactionLayer::send_request`].

mod admission;
mod client;
mod expiry;
mod screen;
mod server;
use expiry::Expiry;
pub use server::ServerTransaction;
use server::{ServerEntry, ServerKey};
pub mod uas;

pub use uas::{IncomingRequest, UasPolicy};

use crate::metrics as m;
use crate::sip::{HeaderName, Message, Method, Via};
use crate::transport::{
    Inbound, Proto, Receive, ReceiveFuture, Resolver, Source, Target, Transmit, TransportError,
};
use client::{ClientAction, ClientNonInvite};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// T1, T2, T4 (RFC 3261 §17.1.1.1, Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// Why a client transaction ended without a response (§8.1.3.1).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// Timer F fired: treated as 408 Request Timeout.
    #[error("no final response within {0:?} (Timer F)")]
    Timeout(Duration),
    /// The transport failed: treated as 503 Service Unavailable.
    #[error("transport failure: {0}")]
    Transport(#[from] TransportError),
    /// The request cannot be sent as built.
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    /// The next hop resolved to no target at all (RFC 3263 §4).
    #[error("no target for {0}")]
    NoTarget(String),
}

impl ClientError {
    /// The status the TU acts on (§8.1.3.1).
    pub fn status_code(&self) -> u16 {
        match self {
            ClientError::Timeout(_) => 408,
            ClientError::Transport(_) => 503,
            ClientError::Invalid(_) => 400,
            // Nothing to send to: as a proxy answers an unknown domain.
            ClientError::NoTarget(_) => 404,
        }
    }
}

/// Client transaction identity (§17.1.3): branch and CSeq method.
type ClientKey = (String, String);

/// A client transaction's entry in the table.
///
/// Invariant: `Waiting` holds the only sender of the channel its
/// `send_request` future reads; once the final response is delivered the
/// entry becomes `Completed`, which drops the channel (its first block is
/// allocated for 32 messages) and only absorbs retransmitted responses until
/// Timer K (§17.1.2.2).
enum ClientSlot {
    Waiting(mpsc::UnboundedSender<Box<Message>>),
    Completed,
}

struct Shared {
    transport: Arc<dyn Transmit>,
    timers: Timers,
    policy: UasPolicy,
    udp_mtu_threshold: usize,
    clients: Mutex<HashMap<ClientKey, ClientSlot>>,
    servers: Mutex<HashMap<ServerKey, Arc<ServerEntry>>>,
    /// Takes the new requests; connected once, after the layer is built.
    tu: OnceLock<Arc<dyn TransactionUser>>,
    /// Client transactions waiting for their final response.
    active_clients: std::sync::atomic::AtomicUsize,
    /// Shutting down: new requests are refused with 503, transactions in
    /// progress (and retransmissions of answered requests) continue.
    draining: std::sync::atomic::AtomicBool,
    /// New requests waiting for their agents (`[sip.overload]`).
    admission: admission::Admission,
    /// The Retry-After value of a refusal at admission, formatted once.
    overload_retry_after: Box<str>,
    /// Timer J of server transactions over unreliable transports.
    timer_j: Arc<Expiry<ServerKey>>,
    /// Timer K of client transactions over unreliable transports.
    timer_k: Arc<Expiry<ClientKey>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The reaper holds only a weak reference: wake it so it ends too.
        self.timer_j.stop();
        self.timer_k.stop();
    }
}

/// A burst leaves large tables and queues behind: the capacity to shrink
/// to once one is mostly empty (amortised: only after a 4x drop).
fn shrunk_capacity(len: usize, capacity: usize) -> Option<usize> {
    (capacity > 4096 && len * 4 < capacity).then_some(len * 2)
}

impl Shared {
    /// A server transaction ends: its entry leaves the table.
    fn end_server(&self, key: &ServerKey) {
        let mut servers = self.servers();
        servers.remove(key);
        if let Some(keep) = shrunk_capacity(servers.len(), servers.capacity()) {
            servers.shrink_to(keep);
        }
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<ClientKey, ClientSlot>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn servers(&self) -> std::sync::MutexGuard<'_, HashMap<ServerKey, Arc<ServerEntry>>> {
        self.servers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The transaction user (RFC 3261 §17): the application above, which
/// takes every new request that passed admission and the UAS core checks.
///
/// `take` runs where the request was received (see [`Receive`]): a UDP
/// receiver thread, concurrently with the others, or a stream's reader: it must only sort the request to
/// where it is served and return, never wait. There is no queue between
/// the two layers: a channel and a task there made every request wait
/// behind the ones before it, out of admission's sight, and its overflow
/// refused requests inside dialogs already served once (docs/performance.md,
/// "The transaction user on the receiving task"). The bound on work in
/// progress is admission's (`UasPolicy::max_in_progress`).
pub trait TransactionUser: Send + Sync + 'static {
    fn take(&self, st: ServerTransaction);
}

/// The transaction layer. Cheap to clone.
#[derive(Clone)]
pub struct TransactionLayer {
    shared: Arc<Shared>,
}

/// A random token for branches and tags.
pub fn random_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_owned()
}

impl TransactionLayer {
    /// A layer over `transport`. New requests go to the transaction user
    /// connected with [`TransactionLayer::connect`]; until then they are
    /// refused 503.
    pub fn new(
        transport: Arc<dyn Transmit>,
        timers: Timers,
        policy: UasPolicy,
        udp_mtu_threshold: usize,
    ) -> TransactionLayer {
        let overload_retry_after = policy.overload_retry_after.to_string().into();
        let shared = Arc::new(Shared {
            transport,
            timers,
            policy,
            udp_mtu_threshold,
            clients: Mutex::new(HashMap::new()),
            servers: Mutex::new(HashMap::new()),
            tu: OnceLock::new(),
            active_clients: std::sync::atomic::AtomicUsize::new(0),
            draining: std::sync::atomic::AtomicBool::new(false),
            admission: admission::Admission::new(),
            overload_retry_after,
            timer_j: Expiry::new(server::end_servers),
            timer_k: Expiry::new(end_clients),
        });
        TransactionLayer { shared }
    }

    /// Connects the transaction user: new requests go to it from now on.
    /// Only the first call counts (it is built on this layer, so it comes
    /// after).
    pub fn connect(&self, tu: Arc<dyn TransactionUser>) {
        let _ = self.shared.tu.set(tu);
    }

    pub fn timers(&self) -> Timers {
        self.shared.timers
    }

    pub fn policy(&self) -> &UasPolicy {
        &self.shared.policy
    }

    /// Graceful shutdown begins: new requests get 503 with Retry-After.
    pub fn drain(&self) {
        self.shared
            .draining
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Transactions in progress: (client transactions still waiting for a
    /// final response, server transactions including those absorbing
    /// retransmissions).
    pub fn in_flight(&self) -> (usize, usize) {
        (
            self.shared
                .active_clients
                .load(std::sync::atomic::Ordering::Relaxed),
            self.shared.servers().len(),
        )
    }

    /// Handles one received event, on the task that received it (see
    /// [`Receive`]).
    pub async fn on_inbound(&self, ev: Inbound) {
        let reply = match ev {
            Inbound::Message {
                msg,
                source,
                received,
            } if msg.is_request() => self.on_request(*msg, source, received),
            Inbound::Message { msg, source, .. } => {
                self.on_response(*msg, &source);
                server::Reply::Nothing
            }
            Inbound::Malformed {
                bytes,
                error,
                source,
            } => self.on_malformed(bytes, error, source),
        };
        reply.send(&self.shared).await;
    }

    fn on_response(&self, msg: Message, source: &Source) {
        let key = match (msg.top_via().and_then(Via::branch), msg.cseq()) {
            (Some(b), Some(c)) => (b.to_owned(), c.method.to_string()),
            _ => {
                tracing::debug!(peer = %source.peer, "response without branch or CSeq dropped");
                return;
            }
        };
        let tx = match self.shared.clients().get(&key) {
            Some(ClientSlot::Waiting(tx)) => Some(tx.clone()),
            // A retransmitted final response, absorbed in Completed (§17.1.2.2).
            Some(ClientSlot::Completed) => return,
            None => None,
        };
        match tx {
            Some(tx) => {
                let _ = tx.send(Box::new(msg));
            }
            None => tracing::debug!(peer = %source.peer, branch = %key.0, "stray response dropped"),
        }
    }

    /// Resolves `next_hop` (RFC 3263 §4) and sends `req` to its targets in
    /// order until one of them answers: a transport error, a timeout (Timer
    /// F) or a 503 moves on to the next target with a new transaction (RFC
    /// 3263 §4.3, RFC 3261 §21.5.4); any other final response is the
    /// answer. The last target's outcome is returned when all fail. Every
    /// request the gateway originates (NOTIFY, SUBSCRIBE, in dialog or not)
    /// goes through here, so they all fail over alike.
    pub async fn send_with_failover(
        &self,
        resolver: &Resolver,
        next_hop: &crate::sip::Uri,
        req: Message,
    ) -> Result<Message, ClientError> {
        // Nothing to try (no route, no DNS answer): as for an unknown
        // domain, 404 to whoever asked.
        let mut targets = resolver
            .resolve(next_hop)
            .await
            .map_err(|e| ClientError::NoTarget(e.to_string()))?
            .into_iter()
            .peekable();
        while let Some(t) = targets.next() {
            if targets.peek().is_none() {
                // The last target: its outcome is the answer, whatever it is.
                return self.send_request(req, t).await;
            }
            let answer = self.send_request(req.clone(), t).await;
            let fail_over = match &answer {
                Ok(r) => r.status() == Some(503),
                Err(ClientError::Transport(_) | ClientError::Timeout(_)) => true,
                Err(ClientError::Invalid(_) | ClientError::NoTarget(_)) => false,
            };
            if !fail_over {
                return answer;
            }
        }
        Err(ClientError::NoTarget(next_hop.to_string()))
    }

    /// Sends `req` as a new client transaction to `target` and waits for the
    /// final response. A top Via with a fresh branch is added here; a UDP
    /// request larger than the MTU threshold goes over TCP (§18.1.1).
    pub async fn send_request(&self, req: Message, target: Target) -> Result<Message, ClientError> {
        use tracing::Instrument;
        let method = m::method_label(req.method());
        let span = tracing::info_span!(
            "sip_client_transaction",
            call_id = req.call_id().unwrap_or(""),
            method,
            peer = %target.addr,
            proto = %target.proto,
        );
        metrics::counter!(m::SIP_REQUESTS_SENT, "method" => method).increment(1);
        let result = self
            .client_transaction(req, target)
            .instrument(span.clone())
            .await;
        let _in = span.enter();
        match &result {
            Ok(resp) => {
                let code = resp.status().unwrap_or(0);
                tracing::debug!(code, "final response");
                metrics::counter!(m::SIP_RESPONSES_RECEIVED, "method" => method, "code" => m::code_label(code))
                    .increment(1);
            }
            Err(e) => {
                tracing::info!(error = %e, "client transaction failed");
                let reason = match e {
                    ClientError::Timeout(_) => "timeout",
                    ClientError::Transport(_) => "transport",
                    ClientError::Invalid(_) => "invalid",
                    ClientError::NoTarget(_) => "no_target",
                };
                metrics::counter!(m::SIP_CLIENT_FAILURES, "method" => method, "reason" => reason)
                    .increment(1);
            }
        }
        result
    }

    async fn client_transaction(
        &self,
        mut req: Message,
        target: Target,
    ) -> Result<Message, ClientError> {
        let method = req
            .method()
            .cloned()
            .ok_or(ClientError::Invalid("not a request"))?;
        if method == Method::Invite || method == Method::Ack {
            return Err(ClientError::Invalid(
                "INVITE client transactions are not supported",
            ));
        }
        let cseq_method = req
            .cseq()
            .map(|c| c.method.to_string())
            .ok_or(ClientError::Invalid("no CSeq"))?;
        let branch = format!("{}{}", crate::sip::headers::MAGIC_COOKIE, random_token());
        let mut target = target;
        let mut via_proto = target.proto;
        let stamp = |req: &mut Message, proto: Proto| -> Result<(), ClientError> {
            let (host, port) = self
                .shared
                .transport
                .sent_by(proto)
                .ok_or(ClientError::Transport(TransportError::NoTransport(proto)))?;
            let via = format!(
                "SIP/2.0/{} {host}:{port};branch={branch};rport",
                proto.via_token()
            );
            if req
                .top_via()
                .is_some_and(|v| v.branch() == Some(branch.as_str()))
            {
                req.remove_top_via();
            }
            req.prepend_header(HeaderName::Via, via);
            Ok(())
        };
        stamp(&mut req, via_proto)?;
        let mut bytes = req.to_bytes();
        let mut fallback_udp = None;
        if via_proto == Proto::Udp && bytes.len() > self.shared.udp_mtu_threshold {
            // §18.1.1: too large for UDP; if TCP fails, retry over UDP.
            via_proto = Proto::Tcp;
            stamp(&mut req, via_proto)?;
            fallback_udp = Some(target.clone());
            target.proto = Proto::Tcp;
            bytes = req.to_bytes();
        }
        let key: ClientKey = (branch.clone(), cseq_method);
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.shared
            .clients()
            .insert(key.clone(), ClientSlot::Waiting(tx));
        let guard = ClientGuard::new(self.shared.clone(), key);

        if let Err(e) = self
            .shared
            .transport
            .send(bytes.clone(), target.clone())
            .await
        {
            match fallback_udp {
                Some(t) => {
                    tracing::debug!(error = %e, "TCP for a large request failed; using UDP");
                    stamp(&mut req, Proto::Udp)?;
                    bytes = req.to_bytes();
                    target = t;
                    self.shared
                        .transport
                        .send(bytes.clone(), target.clone())
                        .await?;
                }
                None => return Err(e.into()),
            }
        }
        let mut sm = ClientNonInvite::new(target.proto.is_reliable(), self.shared.timers);
        let mut e_at: Option<Instant> = None;
        let mut f_at: Option<Instant> = None;
        let mut pending = sm.start();
        // Boxed as it arrives: the future stays a kilobyte smaller.
        let mut final_response: Option<Box<Message>> = None;
        loop {
            while !pending.is_empty() {
                for action in std::mem::take(&mut pending) {
                    match action {
                        ClientAction::ArmE(d) => e_at = Some(Instant::now() + d),
                        ClientAction::ArmF(d) => f_at = Some(Instant::now() + d),
                        ClientAction::CancelEF => {
                            e_at = None;
                            f_at = None;
                        }
                        ClientAction::Retransmit => {
                            metrics::counter!(m::SIP_RETRANSMISSIONS, "direction" => "sent")
                                .increment(1);
                            if self
                                .shared
                                .transport
                                .send(bytes.clone(), target.clone())
                                .await
                                .is_err()
                            {
                                pending.extend(sm.on_transport_error());
                            }
                        }
                        ClientAction::ArmK(k) => {
                            // Keep absorbing retransmitted responses for K,
                            // but give the TU its response now.
                            let mut guard = guard;
                            if let Some(key) = guard.key.take() {
                                if k.is_zero() {
                                    self.shared.clients().remove(&key);
                                } else {
                                    self.shared
                                        .clients()
                                        .insert(key.clone(), ClientSlot::Completed);
                                    self.shared.timer_k.arm(&self.shared, k, key);
                                }
                            }
                            return final_response
                                .map(|r: Box<Message>| *r)
                                .ok_or(ClientError::Invalid("no response"));
                        }
                        ClientAction::DeliverFinal
                        | ClientAction::DeliverProvisional
                        | ClientAction::Terminate => {}
                        ClientAction::Timeout => {
                            return Err(ClientError::Timeout(self.shared.timers.t1 * 64));
                        }
                        ClientAction::TransportFailed => {
                            return Err(ClientError::Transport(TransportError::Send(
                                target.addr,
                                "retransmission failed".into(),
                            )));
                        }
                    }
                }
            }
            let sleep_e = async {
                match e_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let sleep_f = async {
                match f_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                resp = rx.recv() => match resp {
                    Some(resp) => {
                        let status = resp.status().unwrap_or(500);
                        pending = sm.on_response(status);
                        if pending.contains(&ClientAction::DeliverFinal) {
                            final_response = Some(resp);
                        }
                    }
                    None => return Err(ClientError::Invalid("transaction table dropped")),
                },
                _ = sleep_e => { e_at = None; pending = sm.on_timer_e(); }
                _ = sleep_f => { f_at = None; pending = sm.on_timer_f(); }
            }
        }
    }
}

/// Ends client transactions whose Timer K fired.
fn end_clients(shared: &Shared, keys: &mut Vec<ClientKey>) {
    let mut clients = shared.clients();
    for key in keys.drain(..) {
        clients.remove(&key);
    }
    if let Some(keep) = shrunk_capacity(clients.len(), clients.capacity()) {
        clients.shrink_to(keep);
    }
}

/// Removes a client transaction from the table when its future is dropped.
struct ClientGuard {
    shared: Arc<Shared>,
    key: Option<ClientKey>,
}

impl ClientGuard {
    fn new(shared: Arc<Shared>, key: ClientKey) -> ClientGuard {
        shared
            .active_clients
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ClientGuard {
            shared,
            key: Some(key),
        }
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.shared
            .active_clients
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(k) = self.key.take() {
            self.shared.clients().remove(&k);
        }
    }
}

/// The transport hands every message up here, where it read it: the UDP
/// receiver threads concurrently, a stream's reader in order.
impl Receive for TransactionLayer {
    fn receive(&self, ev: Inbound) -> ReceiveFuture<'_> {
        Box::pin(self.on_inbound(ev))
    }

    fn screen(
        &self,
        datagram: &[u8],
        source: &Source,
        received: Instant,
    ) -> Option<ReceiveFuture<'_>> {
        let reply = self.screen_datagram(datagram, source, received)?;
        Some(Box::pin(async move { reply.send(&self.shared).await }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_shrink_only_after_a_fourfold_drop() {
        assert_eq!(shrunk_capacity(0, 4096), None, "small tables are kept");
        assert_eq!(shrunk_capacity(2000, 8192), Some(4000));
        assert_eq!(shrunk_capacity(2048, 8192), None);
    }
}
