//! Kernel receive timestamps on UDP datagrams (`SO_TIMESTAMPNS`, socket(7)).
//!
//! Under overload the longest wait is not in the gateway's queues but in
//! the socket's receive buffer: a datagram read from a full buffer may
//! already be older than T1, so its sender has retransmitted it. The time
//! userspace reads it says nothing about that; the kernel's timestamp,
//! taken when the datagram was queued on the socket, does. Overload
//! shedding measures a request's age from it (docs/operations.md,
//! `[sip.overload]`).
//!
//! Linux only; elsewhere a datagram's age starts when it is read.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// Asks the kernel to stamp every datagram queued on `socket`.
#[cfg(target_os = "linux")]
pub(super) fn enable(socket: &socket2::Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid descriptor (borrowed from a live socket) and a
    // pointer to a c_int that outlives the call, with its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub(super) fn enable(_socket: &socket2::Socket) -> io::Result<()> {
    Ok(())
}

/// One datagram: its length in `buf`, its sender, and when the kernel
/// queued it (`None` when the socket does not stamp).
#[cfg(target_os = "linux")]
pub(super) fn recv(
    socket: &impl std::os::fd::AsRawFd,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<SystemTime>)> {
    // Room for one cmsghdr and a timespec (32 bytes on 64-bit Linux), with
    // the alignment cmsghdr needs.
    let mut control = [0u64; 8];
    let fd = socket.as_raw_fd();
    let mut stamp = None;
    // SAFETY: `try_init` hands a zeroed sockaddr_storage and its length;
    // recvmsg writes at most that many bytes of address, at most
    // `buf.len()` bytes into `buf` and at most `control`'s size into
    // `control`, all of which outlive the call. The CMSG_* walk stays
    // within `msg_controllen` as the kernel set it, and the timestamp is
    // read unaligned from inside that range.
    let (n, addr) = unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = storage.cast();
            msg.msg_namelen = *len;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control) as _;
            let n = libc::recvmsg(fd, &mut msg, 0);
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            *len = msg.msg_namelen;
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                    stamp = Some(
                        SystemTime::UNIX_EPOCH
                            + Duration::new(
                                ts.tv_sec.max(0) as u64,
                                ts.tv_nsec.clamp(0, 999_999_999) as u32,
                            ),
                    );
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
            Ok(n as usize)
        })
    }?;
    let peer = addr
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP sender"))?;
    Ok((n, peer, stamp))
}

#[cfg(not(target_os = "linux"))]
pub(super) fn recv(
    socket: &tokio::net::UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<SystemTime>)> {
    socket.try_recv_from(buf).map(|(n, peer)| (n, peer, None))
}

/// How long a datagram stamped `stamp` has waited, by the wall clock the
/// kernel stamps with (zero when the clock stepped back).
pub(super) fn age(stamp: Option<SystemTime>) -> Duration {
    stamp
        .and_then(|s| SystemTime::now().duration_since(s).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A datagram sent to a stamping socket comes back with its sender and
    /// a timestamp from the kernel, no later than now and not long before.
    #[cfg(target_os = "linux")]
    #[test]
    fn datagrams_carry_the_kernel_receive_time() {
        let raw = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        raw.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        enable(&raw).unwrap();
        let rx: std::net::UdpSocket = raw.into();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // The kernel turns stamping on for the whole stack in deferred work
        // (net_enable_timestamp): until then a datagram is stamped when it
        // is read. So probe until one shows the 30 ms it waited.
        let mut waited = Duration::ZERO;
        for _ in 0..100 {
            let before = SystemTime::now();
            tx.send_to(b"OPTIONS", rx.local_addr().unwrap()).unwrap();
            std::thread::sleep(Duration::from_millis(30));
            let mut buf = [0u8; 64];
            let (n, peer, stamp) = recv(&rx, &mut buf).unwrap();
            assert_eq!(&buf[..n], b"OPTIONS");
            assert_eq!(peer, tx.local_addr().unwrap());
            let stamp = stamp.expect("SO_TIMESTAMPNS stamps the datagram");
            assert!(
                stamp >= before - Duration::from_millis(5),
                "{stamp:?} {before:?}"
            );
            waited = age(Some(stamp));
            assert!(waited < Duration::from_secs(5), "{waited:?}");
            if waited >= Duration::from_millis(25) {
                break;
            }
        }
        // It waited in the buffer while we slept: the age shows it.
        assert!(waited >= Duration::from_millis(25), "{waited:?}");
        assert_eq!(age(None), Duration::ZERO);
    }
}
