//! UDP: one socket per listener; every datagram is one message (RFC 3261
//! §18.3), parsed on the receiving threads.

use super::{Inbound, Proto, Source, TransportError, Upstream};
use crate::sip::{Limits, parse_datagram};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::time::Instant;

pub(super) struct UdpEndpoint {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
}

impl UdpEndpoint {
    /// Binds `addr` with a receive buffer of `recv_buffer` bytes (bursts of
    /// datagrams wait there instead of being dropped by the kernel) and
    /// starts `receivers` threads reading it, so parsing uses every core.
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

/// How often an idle receiver looks whether its runtime is still there.
const IDLE_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// Starts a receiver: an OS thread of its own, not a task.
///
/// Why a thread: a task that reads the socket waits in the runtime's run
/// queue behind every task that is ready, and under overload a group
/// commit makes thousands ready at once. With one worker (a gateway on one
/// core) the socket then went unread for tens of milliseconds, its receive
/// buffer (4 MiB, about 50 ms of datagrams at 36,000 a second) filled, and
/// the kernel dropped 561–151,037 datagrams per overload run: lost
/// un-SUBSCRIBEs left dialogs waiting, lost 200s made NOTIFYs retransmit
/// (docs/performance.md, "What stretches a step"). A thread is
/// scheduled by the kernel beside the workers, whatever their queue holds;
/// it parses and takes each message (admission, a refusal, the hand-off to
/// an agent) itself, entering the runtime only for the sends that leaves.
///
/// Invariant: the thread lives as long as the runtime that started it, as
/// a task would: a guard task holds `alive`'s sender, and when the runtime
/// drops its tasks the receiver sees the channel closed and ends.
fn spawn_receiver(rx: Arc<UdpSocket>, local: SocketAddr, limits: Limits, upstream: Upstream) {
    let runtime = tokio::runtime::Handle::current();
    let (guard, mut alive) = tokio::sync::oneshot::channel::<()>();
    runtime.spawn(async move {
        let _guard = guard;
        std::future::pending::<()>().await
    });
    let spawned = std::thread::Builder::new()
        .name("sip-udp-rx".into())
        .spawn(move || {
            // A datagram can be at most 65,535 bytes; anything above the
            // configured limit is refused by the parser before it allocates.
            let mut buf = vec![0u8; 65_536];
            let source = |peer| Source {
                proto: Proto::Udp,
                peer,
                local,
                conn: None,
            };
            loop {
                if !matches!(
                    alive.try_recv(),
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty)
                ) {
                    return;
                }
                match wait_readable(&*rx, IDLE_CHECK) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "udp poll error");
                        continue;
                    }
                }
                // Read until the socket is empty, then wait again.
                loop {
                    let (n, peer, stamp) = match super::rxstamp::recv(&*rx, &mut buf) {
                        Ok(x) => x,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            // ICMP errors surface here on some platforms; keep serving.
                            tracing::debug!(error = %e, "udp recv error");
                            continue;
                        }
                    };
                    // When the kernel queued it: the wait in the socket
                    // buffer counts towards the request's queue delay.
                    let received = Instant::now()
                        .checked_sub(super::rxstamp::age(stamp))
                        .unwrap_or_else(Instant::now);
                    take(
                        &runtime,
                        &upstream,
                        &buf[..n],
                        source(peer),
                        received,
                        &limits,
                    );
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start a UDP receiver thread");
    }
}

/// One datagram: refused from its bytes (`Upstream::screen`), or parsed
/// and handed up. Admission, a refusal or a retransmitted answer happen
/// here, before the next read; the runtime is entered only to send.
fn take(
    runtime: &tokio::runtime::Handle,
    upstream: &Upstream,
    datagram: &[u8],
    source: Source,
    received: Instant,
    limits: &Limits,
) {
    // A datagram over the size limit is for the parser to refuse (513),
    // not for a glance.
    if datagram.len() <= limits.max_message_bytes {
        if let Some(answer) = upstream.screen(datagram, &source, received) {
            runtime.block_on(answer);
            return;
        }
    }
    let bytes = Bytes::copy_from_slice(datagram);
    let event = match parse_datagram(bytes.clone(), limits) {
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
    runtime.block_on(upstream.deliver(event));
}

/// Waits up to `timeout` for `socket` to have a datagram; `false`: none yet.
fn wait_readable(
    socket: &impl std::os::fd::AsRawFd,
    timeout: std::time::Duration,
) -> std::io::Result<bool> {
    let mut fds = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd that outlives the call, and its count.
    let rc = unsafe { libc::poll(&mut fds, 1, timeout.as_millis() as libc::c_int) };
    match rc {
        0 => Ok(false),
        n if n > 0 => Ok(true),
        _ => {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The receiver threads end with the runtime that started them, as
    /// tasks would: then the socket closes and its port is free again.
    #[test]
    fn receivers_end_with_their_runtime() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let addr = rt.block_on(async {
            let ep = UdpEndpoint::bind(
                "127.0.0.1:0".parse().unwrap(),
                Limits::default(),
                Upstream::new(),
                0,
                2,
            )
            .await
            .unwrap();
            ep.local_addr()
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            std::net::UdpSocket::bind(addr).is_err(),
            "the receivers hold the socket while the runtime lives"
        );
        drop(rt);
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while std::net::UdpSocket::bind(addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the receivers outlived their runtime"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
