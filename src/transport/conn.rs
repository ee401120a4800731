//! Stream connections (TCP, TLS) and the connection table.
//!
//! Each connection has a reader task (framing through `StreamParser`) and a
//! writer task fed by a channel. The table finds a connection by id (a
//! response goes back over the connection its request came in on) and by
//! peer address (requests to a peer reuse an open connection, as the seeds'
//! appendix B recommends for NAT traversal). Idle connections close after
//! `idle`; at most `max` are open at once.

use super::{Inbound, Proto, Source, Target, TransportError};
use crate::sip::{Limits, StreamParser};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Identifies one open stream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

struct Entry {
    tx: mpsc::Sender<Bytes>,
}

#[derive(Default)]
struct Index {
    by_id: HashMap<ConnId, Entry>,
    /// (protocol, address) → connection: the peer address of outgoing
    /// connections, and for incoming ones the source IP with the Via
    /// sent-by port of requests received on them.
    by_peer: HashMap<(Proto, SocketAddr), ConnId>,
}

pub(super) struct ConnTable {
    index: Mutex<Index>,
    open: AtomicUsize,
    next_id: AtomicU64,
    limits: Limits,
    idle: Duration,
    max: usize,
    connect_timeout: Duration,
    connector: TlsConnector,
    inbound: mpsc::Sender<Inbound>,
}

impl ConnTable {
    pub(super) fn new(
        limits: Limits,
        idle: Duration,
        max: usize,
        connect_timeout: Duration,
        connector: TlsConnector,
        inbound: mpsc::Sender<Inbound>,
    ) -> Arc<ConnTable> {
        Arc::new(ConnTable {
            index: Mutex::new(Index::default()),
            open: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            limits,
            idle,
            max,
            connect_timeout,
            connector,
            inbound,
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

    /// Reserves a slot under the cap.
    fn reserve(&self) -> bool {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
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
                if !table.reserve() {
                    tracing::warn!(%peer, limit = table.max, "connection limit reached; closing new connection");
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let table = table.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        None => table.run(stream, proto, peer, local, None).await,
                        Some(acc) => {
                            match tokio::time::timeout(table.connect_timeout, acc.accept(stream))
                                .await
                            {
                                Ok(Ok(tls)) => table.run(tls, proto, peer, local, None).await,
                                _ => {
                                    tracing::debug!(%peer, "TLS handshake failed or timed out");
                                    table.open.fetch_sub(1, Ordering::AcqRel);
                                }
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
        if !self.reserve() {
            return Err(TransportError::ConnectionLimit(self.max));
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
        let id = self.insert(tx.clone(), target.proto, target.addr);
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
                            table
                                .run(tls, Proto::Tls, peer, local, Some((id, rx)))
                                .await
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
                tokio::spawn(async move {
                    table
                        .run(stream, Proto::Tcp, peer, local, Some((id, rx)))
                        .await
                });
            }
        }
        Ok(tx)
    }

    fn insert(&self, tx: mpsc::Sender<Bytes>, proto: Proto, peer: SocketAddr) -> ConnId {
        let id = ConnId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut idx = self.lock();
        idx.by_id.insert(id, Entry { tx });
        idx.by_peer.insert((proto, peer), id);
        id
    }

    fn remove(&self, id: ConnId) {
        let mut idx = self.lock();
        if idx.by_id.remove(&id).is_some() {
            idx.by_peer.retain(|_, c| *c != id);
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

    /// Serves one connection until it closes, errs, or idles out. The slot
    /// was reserved by the caller; it is released here.
    async fn run<S>(
        self: Arc<Self>,
        stream: S,
        proto: Proto,
        peer: SocketAddr,
        local: SocketAddr,
        registered: Option<(ConnId, mpsc::Receiver<Bytes>)>,
    ) where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (id, mut rx) = match registered {
            Some(r) => r,
            None => {
                let (tx, rx) = mpsc::channel(256);
                (self.insert(tx, proto, peer), rx)
            }
        };
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
        'conn: loop {
            let deadline = *last.lock().unwrap_or_else(|p| p.into_inner()) + self.idle;
            let n = tokio::select! {
                r = rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break 'conn,
                    Ok(n) => n,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    let idle_for = last.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
                    if idle_for >= self.idle {
                        tracing::debug!(%peer, ?proto, "closing idle connection");
                        break 'conn;
                    }
                    continue 'conn;
                }
            };
            touch(&last);
            parser.push(&buf[..n]);
            loop {
                match parser.next_message() {
                    Ok(Some(msg)) => {
                        if let Some(v) = msg.top_via().filter(|_| msg.is_request()) {
                            let port = v.port.unwrap_or_else(|| proto.default_port());
                            self.alias(proto, SocketAddr::new(peer.ip(), port), id);
                        }
                        if self
                            .inbound
                            .send(Inbound::Message {
                                msg: Box::new(msg),
                                source: source.clone(),
                            })
                            .await
                            .is_err()
                        {
                            break 'conn;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        // A stream cannot be re-synchronised after a framing
                        // error (RFC 4475 §3.1.2.3): report, then close.
                        let _ = self
                            .inbound
                            .send(Inbound::Malformed {
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
