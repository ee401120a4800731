//! Stream connections (TCP, TLS) and the connection table.
//!
//! Each connection has a reader task (framing through `StreamParser`) and a
//! writer task fed by a channel. The table finds a connection by id (a
//! response goes back over the connection its request came in on) and by
//! peer address (requests to a peer reuse an open connection, as the seeds'
//! appendix B recommends for NAT traversal). Idle connections close after
//! `idle`; at most `max` are open at once, at most `per_address` of them
//! accepted from one source address.
//!
//! Slow senders (issue 17 item 5, docs/reliability.md "Hostile input"):
//! every received byte resets the idle timer, so a peer that trickles one
//! byte now and then would hold its slot for ever. A message (header
//! section and body) must therefore arrive within `message_timeout` of its
//! first byte, else the connection is closed. Between messages (nothing
//! buffered but keep-alive CRLFs, RFC 5626 §4.4.1) only the idle timeout
//! applies. At the global cap a new connection takes the slot of the
//! connection whose message has been in progress longest (or that never
//! completed one), never that of a connection idle between messages: those
//! are the long-lived flows of registered user agents (RFC 5626 §3), and an
//! attacker's fresh connections would otherwise push them out.

use super::{Inbound, Proto, Source, Target, TransportError, Upstream};
use crate::sip::{Limits, StreamParser};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Identifies one open stream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

struct Entry {
    tx: mpsc::Sender<Bytes>,
    /// The source address of an accepted connection (counted against the
    /// per-address cap); `None` for connections the gateway opened.
    incoming: Option<IpAddr>,
    state: Arc<ConnState>,
}

/// What the eviction at the global cap reads of a running connection.
struct ConnState {
    /// Milliseconds since the table's epoch, plus one, at which the message
    /// in progress began (for an accepted connection that has not yet
    /// completed a message: when it was accepted); 0 while idle between
    /// messages. The smallest non-zero value is the slowest sender.
    partial_since: AtomicU64,
    /// Set once chosen for eviction, so it is chosen only once.
    evicted: AtomicBool,
    /// Wakes the reader to close the connection.
    evict: Notify,
}

/// Why a new connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// `per_address` connections from this source are open.
    PerAddress,
    /// `max` connections are open and none is a slow sender to evict.
    Full,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::PerAddress => "per_address",
            Refusal::Full => "max_connections",
        }
    }
}

fn count_refused(r: Refusal) {
    metrics::counter!(crate::metrics::SIP_CONNECTIONS_REFUSED, "reason" => r.label()).increment(1);
}

fn count_closed(reason: &'static str) {
    metrics::counter!(crate::metrics::SIP_CONNECTIONS_CLOSED, "reason" => reason).increment(1);
}

#[derive(Default)]
struct Index {
    by_id: HashMap<ConnId, Entry>,
    /// (protocol, address) → connection: the peer address of outgoing
    /// connections, and for incoming ones the source IP with the Via
    /// sent-by port of requests received on them.
    by_peer: HashMap<(Proto, SocketAddr), ConnId>,
    /// Open accepted connections by source address.
    per_ip: HashMap<IpAddr, usize>,
}

/// The timeouts of stream connections.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConnTimeouts {
    /// No byte either way for this long: closed.
    pub idle: Duration,
    /// A message must be complete this long after its first byte.
    pub message: Duration,
    /// TCP connect and TLS handshake.
    pub connect: Duration,
}

/// The connection caps.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConnCaps {
    /// Open connections at most, incoming and outgoing.
    pub max: usize,
    /// Accepted connections from one source address at most.
    pub per_address: usize,
}

/// A connection entered in the table, handed to its reader.
struct Admitted {
    id: ConnId,
    rx: mpsc::Receiver<Bytes>,
    state: Arc<ConnState>,
}

pub(super) struct ConnTable {
    index: Mutex<Index>,
    open: AtomicUsize,
    next_id: AtomicU64,
    limits: Limits,
    idle: Duration,
    message_timeout: Duration,
    max: usize,
    per_address: usize,
    connect_timeout: Duration,
    /// Time base of [`ConnState::partial_since`].
    epoch: Instant,
    connector: TlsConnector,
    upstream: Upstream,
}

impl ConnTable {
    pub(super) fn new(
        limits: Limits,
        timeouts: ConnTimeouts,
        caps: ConnCaps,
        connector: TlsConnector,
        upstream: Upstream,
    ) -> Arc<ConnTable> {
        Arc::new(ConnTable {
            index: Mutex::new(Index::default()),
            open: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            limits,
            idle: timeouts.idle,
            message_timeout: timeouts.message,
            max: caps.max,
            per_address: caps.per_address,
            connect_timeout: timeouts.connect,
            epoch: Instant::now(),
            connector,
            upstream,
        })
    }

    pub(super) fn len(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        // A panic while holding the lock cannot leave the maps inconsistent
        // in a way that matters more than losing the server; keep going.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Now on the time base of [`ConnState::partial_since`] (never 0).
    fn stamp(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// Reserves a slot under the cap, or takes over the slot of the slowest
    /// sender (see the module documentation). Called with the index locked,
    /// so two new connections cannot pick the same victim.
    fn reserve(&self, idx: &Index) -> Result<(), Refusal> {
        let under_cap = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if under_cap {
            return Ok(());
        }
        let victim = idx
            .by_id
            .values()
            .filter(|e| !e.state.evicted.load(Ordering::Acquire))
            .filter_map(|e| match e.state.partial_since.load(Ordering::Acquire) {
                0 => None,
                t => Some((t, &e.state)),
            })
            .min_by_key(|(t, _)| *t);
        let Some((_, victim)) = victim else {
            return Err(Refusal::Full);
        };
        victim.evicted.store(true, Ordering::Release);
        // `notify_one` keeps a permit if the reader is not waiting yet.
        victim.evict.notify_one();
        count_closed("evicted");
        // The new connection takes over the victim's slot: the count goes
        // one over `max` until the victim's reader has ended (promptly: it
        // is woken) and released its own.
        self.open.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Admits a connection accepted from `peer`: the per-address cap, then
    /// the global one. On success the connection is in the table.
    fn admit(&self, peer: SocketAddr, proto: Proto) -> Result<Admitted, Refusal> {
        let mut idx = self.lock();
        let ip = peer.ip();
        if idx.per_ip.get(&ip).copied().unwrap_or(0) >= self.per_address {
            return Err(Refusal::PerAddress);
        }
        self.reserve(&idx)?;
        *idx.per_ip.entry(ip).or_insert(0) += 1;
        let state = Arc::new(ConnState {
            // Not yet proven: evictable until its first message is complete.
            partial_since: AtomicU64::new(self.stamp()),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        });
        let (tx, rx) = mpsc::channel(256);
        let id = ConnId(self.next_id.fetch_add(1, Ordering::Relaxed));
        idx.by_id.insert(
            id,
            Entry {
                tx,
                incoming: Some(ip),
                state: state.clone(),
            },
        );
        idx.by_peer.insert((proto, peer), id);
        Ok(Admitted { id, rx, state })
    }

    /// Binds a TCP listener (TLS when `acceptor` is given) and accepts.
    pub(super) async fn listen(
        self: &Arc<Self>,
        addr: SocketAddr,
        acceptor: Option<TlsAcceptor>,
    ) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let proto = if acceptor.is_some() {
            Proto::Tls
        } else {
            Proto::Tcp
        };
        let table = self.clone();
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let admitted = match table.admit(peer, proto) {
                    Ok(a) => a,
                    Err(r) => {
                        // Debug, not warn: under attack this is per connection.
                        tracing::debug!(%peer, reason = r.label(), "connection refused");
                        count_refused(r);
                        drop(stream);
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let table = table.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        None => table.run(stream, proto, peer, local, admitted).await,
                        Some(acc) => {
                            // The handshake is bounded by connect_timeout and
                            // may be cut short by eviction like a message.
                            let hs =
                                tokio::time::timeout(table.connect_timeout, acc.accept(stream));
                            tokio::select! {
                                r = hs => match r {
                                    Ok(Ok(tls)) => table.run(tls, proto, peer, local, admitted).await,
                                    _ => {
                                        tracing::debug!(%peer, "TLS handshake failed or timed out");
                                        table.remove(admitted.id);
                                    }
                                },
                                _ = admitted.state.evict.notified() => table.remove(admitted.id),
                            }
                        }
                    }
                });
            }
        });
        Ok(local)
    }

    /// Sends over `target.conn` when open, else over a connection to
    /// `target.addr`, opening one if needed.
    pub(super) async fn send(
        self: &Arc<Self>,
        bytes: Bytes,
        target: &Target,
    ) -> Result<(), TransportError> {
        let existing = {
            let idx = self.lock();
            target
                .conn
                .filter(|c| idx.by_id.contains_key(c))
                .or_else(|| idx.by_peer.get(&(target.proto, target.addr)).copied())
                .and_then(|c| idx.by_id.get(&c).map(|e| e.tx.clone()))
        };
        if let Some(tx) = existing {
            if tx.send(bytes.clone()).await.is_ok() {
                return Ok(());
            }
            // Closed under us: fall through and reconnect.
        }
        let tx = self.connect(target).await?;
        tx.send(bytes)
            .await
            .map_err(|_| TransportError::Send(target.addr, "connection closed".into()))
    }

    async fn connect(
        self: &Arc<Self>,
        target: &Target,
    ) -> Result<mpsc::Sender<Bytes>, TransportError> {
        {
            let idx = self.lock();
            if let Err(r) = self.reserve(&idx) {
                count_refused(r);
                return Err(TransportError::ConnectionLimit(self.max));
            }
        }
        let release = |e| {
            self.open.fetch_sub(1, Ordering::AcqRel);
            e
        };
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(target.addr)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return Err(release(TransportError::Connect(target.addr, e.to_string())));
                }
                Err(_) => {
                    return Err(release(TransportError::Connect(
                        target.addr,
                        "timed out".into(),
                    )));
                }
            };
        let _ = stream.set_nodelay(true);
        let local = stream
            .local_addr()
            .map_err(|e| release(TransportError::Connect(target.addr, e.to_string())))?;
        let (tx, rx) = mpsc::channel(256);
        let (id, state) = self.insert(tx.clone(), target.proto, target.addr);
        let admitted = Admitted { id, rx, state };
        let table = self.clone();
        let peer = target.addr;
        match target.proto {
            Proto::Tls => {
                let name = target
                    .server_name
                    .clone()
                    .unwrap_or_else(|| peer.ip().to_string());
                let server_name = rustls_pki_types::ServerName::try_from(name.clone())
                    .map_err(|e| TransportError::Tls(peer, e.to_string()));
                let server_name = match server_name {
                    Ok(s) => s,
                    Err(e) => {
                        self.remove(id);
                        return Err(e);
                    }
                };
                match tokio::time::timeout(
                    self.connect_timeout,
                    self.connector.connect(server_name, stream),
                )
                .await
                {
                    Ok(Ok(tls)) => {
                        tokio::spawn(async move {
                            table.run(tls, Proto::Tls, peer, local, admitted).await
                        });
                    }
                    Ok(Err(e)) => {
                        self.remove(id);
                        return Err(TransportError::Tls(peer, e.to_string()));
                    }
                    Err(_) => {
                        self.remove(id);
                        return Err(TransportError::Tls(peer, "handshake timed out".into()));
                    }
                }
            }
            _ => {
                tokio::spawn(
                    async move { table.run(stream, Proto::Tcp, peer, local, admitted).await },
                );
            }
        }
        Ok(tx)
    }

    /// Enters a connection the gateway opened (its slot is reserved).
    fn insert(
        &self,
        tx: mpsc::Sender<Bytes>,
        proto: Proto,
        peer: SocketAddr,
    ) -> (ConnId, Arc<ConnState>) {
        let id = ConnId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let state = Arc::new(ConnState {
            partial_since: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        });
        let mut idx = self.lock();
        idx.by_id.insert(
            id,
            Entry {
                tx,
                incoming: None,
                state: state.clone(),
            },
        );
        idx.by_peer.insert((proto, peer), id);
        (id, state)
    }

    fn remove(&self, id: ConnId) {
        let mut idx = self.lock();
        if let Some(e) = idx.by_id.remove(&id) {
            idx.by_peer.retain(|_, c| *c != id);
            if let Some(ip) = e.incoming {
                if let Some(n) = idx.per_ip.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        idx.per_ip.remove(&ip);
                    }
                }
            }
            self.open.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Records that requests from `alias` (source IP, Via sent-by port)
    /// arrive on `id`, so requests to that address reuse the connection.
    fn alias(&self, proto: Proto, alias: SocketAddr, id: ConnId) {
        let mut idx = self.lock();
        if idx.by_id.contains_key(&id) {
            idx.by_peer.entry((proto, alias)).or_insert(id);
        }
    }

    /// Serves one connection until it closes, errs, idles out, misses the
    /// message deadline or is evicted. The caller entered it in the table;
    /// it is removed (and its slot released) here.
    async fn run<S>(
        self: Arc<Self>,
        stream: S,
        proto: Proto,
        peer: SocketAddr,
        local: SocketAddr,
        admitted: Admitted,
    ) where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let Admitted {
            id,
            mut rx,
            state: conn_state,
        } = admitted;
        let (mut rd, mut wr) = tokio::io::split(stream);
        let last = Arc::new(Mutex::new(Instant::now()));
        let touch =
            |l: &Mutex<Instant>| *l.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        let writer_last = last.clone();
        let writer = tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if wr.write_all(&b).await.is_err() {
                    break;
                }
                touch(&writer_last);
            }
            let _ = wr.shutdown().await;
        });
        let source = Source {
            proto,
            peer,
            local,
            conn: Some(id),
        };
        let mut parser = StreamParser::new(self.limits);
        let mut buf = vec![0u8; 16 * 1024];
        // When the message now arriving must be complete; `None` between
        // messages.
        let mut message_deadline: Option<Instant> = None;
        // An accepted connection stays evictable (`partial_since` set at
        // admission) until it has delivered one complete message.
        let mut proven = conn_state.partial_since.load(Ordering::Acquire) == 0;
        'conn: loop {
            let idle_deadline = *last.lock().unwrap_or_else(|p| p.into_inner()) + self.idle;
            let wake = message_deadline.map_or(idle_deadline, |m| m.min(idle_deadline));
            let n = tokio::select! {
                r = rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break 'conn,
                    Ok(n) => n,
                },
                _ = tokio::time::sleep_until(wake) => {
                    if message_deadline.is_some_and(|m| Instant::now() >= m) {
                        tracing::debug!(%peer, ?proto, "closing connection: message not complete within message_timeout");
                        count_closed("message_timeout");
                        break 'conn;
                    }
                    let idle_for = last.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
                    if idle_for >= self.idle {
                        tracing::debug!(%peer, ?proto, "closing idle connection");
                        count_closed("idle");
                        break 'conn;
                    }
                    continue 'conn;
                }
                _ = conn_state.evict.notified() => {
                    tracing::debug!(%peer, ?proto, "connection evicted at the connection limit");
                    break 'conn;
                }
            };
            touch(&last);
            parser.push(&buf[..n]);
            loop {
                match parser.next_message() {
                    Ok(Some(msg)) => {
                        proven = true;
                        message_deadline = None;
                        if let Some(v) = msg.top_via().filter(|_| msg.is_request()) {
                            let port = v.port.unwrap_or_else(|| proto.default_port());
                            self.alias(proto, SocketAddr::new(peer.ip(), port), id);
                        }
                        // Handed up here, so this connection's messages are
                        // taken in order (`upstream`).
                        self.upstream
                            .deliver(Inbound::Message {
                                msg: Box::new(msg),
                                source: source.clone(),
                                received: tokio::time::Instant::now(),
                            })
                            .await;
                    }
                    Ok(None) => {
                        // Bytes of a message are buffered (the parser has
                        // dropped keep-alive CRLFs): its clock runs from
                        // the read that brought its first byte.
                        if parser.in_message() {
                            if message_deadline.is_none() {
                                message_deadline = Some(Instant::now() + self.message_timeout);
                                if proven {
                                    conn_state
                                        .partial_since
                                        .store(self.stamp(), Ordering::Release);
                                }
                            }
                        } else {
                            message_deadline = None;
                            if proven {
                                conn_state.partial_since.store(0, Ordering::Release);
                            }
                        }
                        break;
                    }
                    Err(error) => {
                        // A stream cannot be re-synchronised after a framing
                        // error (RFC 4475 §3.1.2.3): report, then close.
                        self.upstream
                            .deliver(Inbound::Malformed {
                                bytes: parser.take_failed().unwrap_or_default(),
                                error,
                                source: source.clone(),
                            })
                            .await;
                        // Give the layer above a moment to answer on this
                        // connection before it closes.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        break 'conn;
                    }
                }
            }
        }
        self.remove(id);
        writer.abort();
    }
}
