//! UDP: one socket per listener; every datagram is one message (RFC 3261
//! §18.3), parsed on the receiving task.

use super::{Inbound, Proto, Source, TransportError};
use crate::sip::{Limits, parse_datagram};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

pub(super) struct UdpEndpoint {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
}

impl UdpEndpoint {
    pub(super) async fn bind(
        addr: SocketAddr,
        limits: Limits,
        inbound: mpsc::Sender<Inbound>,
    ) -> std::io::Result<Self> {
        let socket = Arc::new(UdpSocket::bind(addr).await?);
        let local = socket.local_addr()?;
        let rx = socket.clone();
        tokio::spawn(async move {
            // A datagram can be at most 65,535 bytes; anything above the
            // configured limit is refused by the parser before it allocates.
            let mut buf = vec![0u8; 65_536];
            loop {
                let (n, peer) = match rx.recv_from(&mut buf).await {
                    Ok(x) => x,
                    Err(e) => {
                        // ICMP errors surface here on some platforms; keep serving.
                        tracing::debug!(error = %e, "udp recv error");
                        continue;
                    }
                };
                let source = Source {
                    proto: Proto::Udp,
                    peer,
                    local,
                    conn: None,
                };
                let bytes = Bytes::copy_from_slice(&buf[..n]);
                let event = match parse_datagram(bytes.clone(), &limits) {
                    Ok(msg) => Inbound::Message {
                        msg: Box::new(msg),
                        source,
                    },
                    Err(error) => Inbound::Malformed {
                        bytes,
                        error,
                        source,
                    },
                };
                if inbound.send(event).await.is_err() {
                    return; // the layer above is gone: shutting down
                }
            }
        });
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
