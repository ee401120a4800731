//! SIP transports (RFC 3261 §18): UDP, TCP and TLS listeners, stream framing
//! through the message core's [`StreamParser`](crate::sip::StreamParser), a
//! connection table, response routing (§18.2.2, RFC 3581) and next-hop
//! resolution (static routes, then RFC 3263 DNS).
//!
//! The layer above talks to it through [`Transmit`] (outbound) and an
//! [`Upstream`] link, which hands it everything received, parsed or not,
//! where it was read (a UDP receiver thread, a stream's reader task).

mod conn;
mod listener;
pub mod resolve;
pub mod routing;
mod rxstamp;
mod tls;
mod udp;
mod upstream;

pub use conn::ConnId;
pub use listener::{Listener, StaticRoute, parse_listener};
pub use resolve::Resolver;
pub use routing::{response_target, stamp_received};
pub use upstream::{Receive, ReceiveFuture, Upstream};

use crate::sip::{Limits, Message, ParseError};
use bytes::Bytes;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Udp,
    Tcp,
    Tls,
}

impl Proto {
    /// RFC 3261 §17.1.1.1: reliable transports need no retransmissions.
    pub fn is_reliable(self) -> bool {
        !matches!(self, Proto::Udp)
    }

    /// The Via transport token.
    pub fn via_token(self) -> &'static str {
        match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
            Proto::Tls => "TLS",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Proto::Tls => 5061,
            _ => 5060,
        }
    }

    pub fn from_via(t: &crate::sip::Transport) -> Option<Proto> {
        match t {
            crate::sip::Transport::Udp => Some(Proto::Udp),
            crate::sip::Transport::Tcp => Some(Proto::Tcp),
            crate::sip::Transport::Tls => Some(Proto::Tls),
            _ => None,
        }
    }
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.via_token())
    }
}

/// Where to send a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub proto: Proto,
    pub addr: SocketAddr,
    /// TLS server name (certificate check); the host of the URI.
    pub server_name: Option<String>,
    /// Send over this connection when it is still open (responses, §18.2.2).
    pub conn: Option<ConnId>,
}

impl Target {
    pub fn new(proto: Proto, addr: SocketAddr) -> Target {
        Target {
            proto,
            addr,
            server_name: None,
            conn: None,
        }
    }
}

/// Where a message came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub proto: Proto,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The connection it arrived on (stream transports).
    pub conn: Option<ConnId>,
}

/// Something received.
#[derive(Debug)]
pub enum Inbound {
    /// A well-formed message, and when it arrived: for UDP when the kernel
    /// queued the datagram (its wait in the socket buffer included), for a
    /// stream when its last byte was read.
    Message {
        msg: Box<Message>,
        source: Source,
        received: tokio::time::Instant,
    },
    /// Bytes that did not parse; a request among them may deserve a 400.
    Malformed {
        bytes: Bytes,
        error: ParseError,
        source: Source,
    },
}

/// Why a message could not be sent.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("no {0} transport is configured")]
    NoTransport(Proto),
    #[error("connection to {0} failed: {1}")]
    Connect(SocketAddr, String),
    #[error("TLS handshake with {0} failed: {1}")]
    Tls(SocketAddr, String),
    #[error("send to {0} failed: {1}")]
    Send(SocketAddr, String),
    #[error("connection limit of {0} reached")]
    ConnectionLimit(usize),
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, String),
}

/// Transport settings (`[sip]`, `[sip.transport]`, `[sip.tls]`).
#[derive(Debug, Clone)]
pub struct TransportConfig {
    pub listeners: Vec<Listener>,
    pub limits: Limits,
    pub idle_timeout: Duration,
    /// A message (header section and body) must arrive within this long of
    /// its first byte, else the connection is closed (slow senders, issue
    /// 17 item 5).
    pub message_timeout: Duration,
    pub max_connections: usize,
    /// Connections accepted from one source address at most.
    pub max_connections_per_address: usize,
    pub connect_timeout: Duration,
    /// Requests larger than this go over TCP instead of UDP (§18.1.1).
    pub udp_mtu_threshold: usize,
    pub tls: Option<tls::TlsSettings>,
    /// Host put in Via sent-by (and Contact); empty: the listener address.
    pub advertise: Option<String>,
    /// UDP socket receive buffer (`SO_RCVBUF`), bytes.
    pub udp_recv_buffer: usize,
}

pub use tls::TlsSettings;

/// What the transaction layer needs from a transport.
pub trait Transmit: Send + Sync + 'static {
    /// Sends `bytes` to `target` (over `target.conn` if it is still open).
    fn send(&self, bytes: Bytes, target: Target) -> SendFuture<'_>;
    /// `host:port` to put in Via sent-by for this protocol, and whether a
    /// listener for it exists.
    fn sent_by(&self, proto: Proto) -> Option<(String, u16)>;
}

pub type SendFuture<'a> =
    Pin<Box<dyn std::future::Future<Output = Result<(), TransportError>> + Send + 'a>>;

/// The running transports.
pub struct TransportLayer {
    udp: Vec<udp::UdpEndpoint>,
    conns: Arc<conn::ConnTable>,
    config: TransportConfig,
    local: Vec<(Proto, SocketAddr)>,
}

impl TransportLayer {
    /// Binds every listener and starts receiving; what arrives is handed to
    /// the layer `upstream` connects.
    pub async fn bind(
        config: TransportConfig,
        upstream: Upstream,
    ) -> std::io::Result<Arc<TransportLayer>> {
        let tls_server = match &config.tls {
            Some(t) => Some(t.server_config()?),
            None => None,
        };
        let tls_client = match &config.tls {
            Some(t) => t.client_config()?,
            None => tls::TlsSettings::default_client_config()?,
        };
        let conns = conn::ConnTable::new(
            config.limits,
            conn::ConnTimeouts {
                idle: config.idle_timeout,
                message: config.message_timeout,
                connect: config.connect_timeout,
            },
            conn::ConnCaps {
                max: config.max_connections,
                per_address: config.max_connections_per_address,
            },
            tls_client,
            upstream.clone(),
        );
        let mut udp = Vec::new();
        let mut local = Vec::new();
        for l in &config.listeners {
            match l.transport {
                Proto::Udp => {
                    let receivers = std::thread::available_parallelism().map_or(2, |n| n.get());
                    let ep = udp::UdpEndpoint::bind(
                        l.addr,
                        config.limits,
                        upstream.clone(),
                        config.udp_recv_buffer,
                        receivers,
                    )
                    .await?;
                    local.push((Proto::Udp, ep.local_addr()));
                    udp.push(ep);
                }
                Proto::Tcp => {
                    let a = conns.listen(l.addr, None).await?;
                    local.push((Proto::Tcp, a));
                }
                Proto::Tls => {
                    let acceptor = tls_server.clone().ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            "tls listener without certificate",
                        )
                    })?;
                    let a = conns.listen(l.addr, Some(acceptor)).await?;
                    local.push((Proto::Tls, a));
                }
            }
        }
        Ok(Arc::new(TransportLayer {
            udp,
            conns,
            config,
            local,
        }))
    }

    /// The bound addresses (ports resolved when 0 was configured).
    pub fn local_addrs(&self) -> &[(Proto, SocketAddr)] {
        &self.local
    }

    pub fn local_addr(&self, proto: Proto) -> Option<SocketAddr> {
        self.local
            .iter()
            .find(|(p, _)| *p == proto)
            .map(|(_, a)| *a)
    }

    /// Open stream connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    async fn send_inner(&self, bytes: Bytes, target: Target) -> Result<(), TransportError> {
        match target.proto {
            Proto::Udp => {
                let ep = self
                    .udp
                    .iter()
                    .find(|e| e.local_addr().is_ipv4() == target.addr.is_ipv4())
                    .or_else(|| self.udp.first())
                    .ok_or(TransportError::NoTransport(Proto::Udp))?;
                ep.send(&bytes, target.addr).await
            }
            Proto::Tcp | Proto::Tls => self.conns.send(bytes, &target).await,
        }
    }
}

impl Transmit for TransportLayer {
    fn send(&self, bytes: Bytes, target: Target) -> SendFuture<'_> {
        Box::pin(self.send_inner(bytes, target))
    }

    fn sent_by(&self, proto: Proto) -> Option<(String, u16)> {
        // Without a listener of this protocol (an outgoing TCP connection
        // from a UDP-only gateway) the response returns on the connection;
        // any listener's address still names the gateway.
        let addr = self
            .local_addr(proto)
            .or_else(|| self.local.first().map(|(_, a)| *a))?;
        let host = match &self.config.advertise {
            Some(h) if !h.is_empty() => h.clone(),
            _ => match addr {
                SocketAddr::V4(a) => a.ip().to_string(),
                SocketAddr::V6(a) => format!("[{}]", a.ip()),
            },
        };
        Some((host, addr.port()))
    }
}
