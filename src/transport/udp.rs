//! UDP: one socket per listener; every datagram is one message (RFC 3261
//! §18.3), parsed on the receiving tasks.

use super::{Inbound, Proto, Source, TransportError, Upstream};
use crate::sip::{Limits, parse_datagram};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::time::Instant;

pub(super) struct UdpEndpoint {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
}

impl UdpEndpoint {
    /// Binds `addr` with a receive buffer of `recv_buffer` bytes (bursts of
    /// datagrams wait there instead of being dropped by the kernel) and
    /// starts `receivers` tasks reading it, so parsing uses every core.
    pub(super) async fn bind(
        addr: SocketAddr,
        limits: Limits,
        upstream: Upstream,
        recv_buffer: usize,
        receivers: usize,
    ) -> std::io::Result<Self> {
        let domain = if addr.is_ipv4() {
            socket2::Domain::IPV4
        } else {
            socket2::Domain::IPV6
        };
        let raw = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        if recv_buffer > 0 {
            // The kernel caps this at net.core.rmem_max: a smaller buffer is
            // worth a note, not an error.
            if let Err(e) = raw.set_recv_buffer_size(recv_buffer) {
                tracing::warn!(error = %e, "cannot set the UDP receive buffer size");
            }
            let granted = raw.recv_buffer_size().unwrap_or(0);
            if granted < recv_buffer {
                tracing::info!(
                    requested = recv_buffer,
                    granted,
                    "UDP receive buffer capped by net.core.rmem_max"
                );
            }
        }
        if let Err(e) = super::rxstamp::enable(&raw) {
            // Shedding then measures from the read, not the arrival.
            tracing::warn!(error = %e, "cannot enable kernel receive timestamps (SO_TIMESTAMPNS)");
        }
        raw.set_nonblocking(true)?;
        raw.bind(&addr.into())?;
        let socket = Arc::new(UdpSocket::from_std(raw.into())?);
        let local = socket.local_addr()?;
        for _ in 0..receivers.max(1) {
            spawn_receiver(socket.clone(), local, limits, upstream.clone());
        }
        Ok(UdpEndpoint { socket, local })
    }

    pub(super) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub(super) async fn send(&self, bytes: &[u8], to: SocketAddr) -> Result<(), TransportError> {
        self.socket
            .send_to(bytes, to)
            .await
            .map(|_| ())
            .map_err(|e| TransportError::Send(to, e.to_string()))
    }
}

fn spawn_receiver(rx: Arc<UdpSocket>, local: SocketAddr, limits: Limits, upstream: Upstream) {
    tokio::spawn(async move {
        // A datagram can be at most 65,535 bytes; anything above the
        // configured limit is refused by the parser before it allocates.
        let mut buf = vec![0u8; 65_536];
        loop {
            let (n, peer, stamp) = match rx.readable().await {
                Ok(()) => {
                    match rx.try_io(Interest::READABLE, || super::rxstamp::recv(&*rx, &mut buf)) {
                        Ok(x) => x,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(e) => {
                            // ICMP errors surface here on some platforms; keep serving.
                            tracing::debug!(error = %e, "udp recv error");
                            continue;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "udp readiness error");
                    continue;
                }
            };
            // When the kernel queued it: the wait in the socket buffer
            // counts towards the request's queue delay.
            let received = Instant::now()
                .checked_sub(super::rxstamp::age(stamp))
                .unwrap_or_else(Instant::now);
            let source = Source {
                proto: Proto::Udp,
                peer,
                local,
                conn: None,
            };
            // A datagram over the size limit is for the parser to refuse
            // (513), not for a glance.
            if n <= limits.max_message_bytes {
                if let Some(answer) = upstream.screen(&buf[..n], &source, received) {
                    answer.await;
                    continue;
                }
            }
            let bytes = Bytes::copy_from_slice(&buf[..n]);
            let event = match parse_datagram(bytes.clone(), &limits) {
                Ok(msg) => Inbound::Message {
                    msg: Box::new(msg),
                    source,
                    received,
                },
                Err(error) => Inbound::Malformed {
                    bytes,
                    error,
                    source,
                },
            };
            // Admission, a refusal or a retransmitted answer happen here,
            // before the next read (`upstream`).
            upstream.deliver(event).await;
        }
    });
}
