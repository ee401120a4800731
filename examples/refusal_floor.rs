//! The cheapest server that answers every SIP request with a `503`: the
//! floor under what a refusal can cost on a given machine (issue 16,
//! docs/performance.md "What a refusal costs at the least").
//!
//! One thread, one blocking UDP socket, no parser: it copies the lines a
//! response must echo (Via, From, To, Call-ID, CSeq, RFC 3261 §8.2.6.2)
//! from each datagram into a `503` with `Retry-After`, and sends it back.
//! No To-tag, no transaction, no check of any kind: it is a yardstick for
//! `tests/sipp/side-by-side/floor.sh`, not a SIP element. Whatever it costs
//! per request is the kernel's receive and send on this machine plus a
//! few hundred nanoseconds of copying, so no server that answers every
//! request can refuse for less.
//!
//! With `--batch` (Linux) it reads up to 64 datagrams per `recvmmsg` and
//! answers them with one `sendmmsg`, so the syscalls' fixed cost is shared
//! too: the floor for a server that batches its socket calls.
//!
//!   cargo run --release --example refusal_floor -- 127.0.0.1:15090 [--batch]

use std::net::UdpSocket;

/// The header lines a response copies, full and compact names, lower-case.
const ECHOED: [&[u8]; 9] = [
    b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq",
];

fn echoed(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let name = line[..colon].trim_ascii_end();
    ECHOED.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// Writes the `503` for the request in `req` into `out`; false when `req`
/// is a response or has no header section.
fn refusal(req: &[u8], out: &mut Vec<u8>) -> bool {
    if req.starts_with(b"SIP/") {
        return false;
    }
    let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    out.clear();
    out.extend_from_slice(b"SIP/2.0 503 Service Unavailable\r\n");
    // Skip the request line; copy each echoed header line as it stands.
    for line in req[..end].split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if echoed(line) {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"Retry-After: 1\r\nContent-Length: 0\r\n\r\n");
    true
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:15090".to_owned());
    let socket = UdpSocket::bind(&addr)?;
    if std::env::args().any(|a| a == "--batch") {
        batched(&socket)
    } else {
        one_by_one(&socket)
    }
}

/// One `recv_from` and one `send_to` per request, until the socket fails.
fn one_by_one(socket: &UdpSocket) -> std::io::Result<()> {
    let mut buf = vec![0u8; 65_536];
    let mut out = Vec::with_capacity(2048);
    loop {
        let (n, peer) = socket.recv_from(&mut buf)?;
        if refusal(&buf[..n], &mut out) {
            // A send error (the peer's buffer full) loses one answer, as
            // it would for any server.
            let _ = socket.send_to(&out, peer);
        }
    }
}

/// Datagrams per `recvmmsg`/`sendmmsg`.
const BATCH: usize = 64;
/// Room per datagram in a batch: a request cut short by it has no end of
/// headers and gets no answer (the bench's requests are under 1 kB).
const DATAGRAM: usize = 4096;

#[cfg(target_os = "linux")]
fn batched(socket: &UdpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let mut bufs = vec![[0u8; DATAGRAM]; BATCH];
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(2048)).collect();
    // SAFETY (for the zeroed values): plain C structs, valid when zeroed.
    let mut names: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iov_in: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iov_out: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut replies: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    loop {
        for i in 0..BATCH {
            iov_in[i] = libc::iovec {
                iov_base: bufs[i].as_mut_ptr().cast(),
                iov_len: bufs[i].len(),
            };
            msgs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            msgs[i].msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msgs[i].msg_hdr.msg_iov = &mut iov_in[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at a live buffer, address and iovec
        // of the sizes given; MSG_WAITFORONE blocks for the first datagram
        // only, then takes what is queued.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut m = 0;
        for i in 0..n as usize {
            let len = msgs[i].msg_len as usize;
            if refusal(&bufs[i][..len], &mut outs[m]) {
                iov_out[m] = libc::iovec {
                    iov_base: outs[m].as_mut_ptr().cast(),
                    iov_len: outs[m].len(),
                };
                replies[m].msg_hdr.msg_name = msgs[i].msg_hdr.msg_name;
                replies[m].msg_hdr.msg_namelen = msgs[i].msg_hdr.msg_namelen;
                replies[m].msg_hdr.msg_iov = &mut iov_out[m];
                replies[m].msg_hdr.msg_iovlen = 1;
                m += 1;
            }
        }
        // SAFETY: the first `m` reply headers point at live buffers and at
        // the senders' addresses in `names`. A short or failed send loses
        // those answers, as a full peer buffer would.
        unsafe { libc::sendmmsg(fd, replies.as_mut_ptr(), m as libc::c_uint, 0) };
    }
}

#[cfg(not(target_os = "linux"))]
fn batched(_socket: &UdpSocket) -> std::io::Result<()> {
    Err(std::io::Error::other(
        "--batch needs Linux (recvmmsg, sendmmsg)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_echoes_the_fields_a_response_copies() {
        let req = b"PUBLISH sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5160;branch=z9hG4bK1\r\n\
Max-Forwards: 70\r\nf: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: c1\r\n\
CSeq: 1 PUBLISH\r\nEvent: presence\r\nContent-Length: 0\r\n\r\n";
        let mut out = Vec::new();
        assert!(refusal(req, &mut out));
        assert_eq!(
            String::from_utf8_lossy(&out),
            "SIP/2.0 503 Service Unavailable\r\nVia: SIP/2.0/UDP 127.0.0.1:5160;branch=z9hG4bK1\r\n\
f: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: c1\r\nCSeq: 1 PUBLISH\r\n\
Retry-After: 1\r\nContent-Length: 0\r\n\r\n"
        );
        assert!(!refusal(b"SIP/2.0 200 OK\r\n\r\n", &mut out));
        assert!(!refusal(b"PUBLISH sip:a SIP/2.0\r\nVia: x", &mut out));
    }

    /// Both serving loops, over real loopback sockets: every request of a
    /// burst gets its own 503 (by Call-ID), and a response gets nothing.
    #[test]
    fn both_loops_answer_every_request_of_a_burst() {
        type Serve = fn(&UdpSocket) -> std::io::Result<()>;
        let loops: &[Serve] = if cfg!(target_os = "linux") {
            &[one_by_one, batched]
        } else {
            &[one_by_one]
        };
        for &serve in loops {
            let server = UdpSocket::bind("127.0.0.1:0").unwrap();
            let at = server.local_addr().unwrap();
            // The loop never returns; the thread ends with the test binary.
            std::thread::spawn(move || serve(&server));
            let client = UdpSocket::bind("127.0.0.1:0").unwrap();
            client
                .set_read_timeout(Some(std::time::Duration::from_millis(300)))
                .unwrap();
            client
                .send_to(b"SIP/2.0 200 OK\r\nCall-ID: r\r\n\r\n", at)
                .unwrap();
            for n in 0..10 {
                let req = format!(
                    "PUBLISH sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK{n}\r\n\
                     Call-ID: c{n}\r\nCSeq: 1 PUBLISH\r\nContent-Length: 0\r\n\r\n"
                );
                client.send_to(req.as_bytes(), at).unwrap();
            }
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            while let Ok(n) = client.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                assert!(text.starts_with("SIP/2.0 503 "), "{text}");
                got.push(
                    text.split("Call-ID: ")
                        .nth(1)
                        .unwrap()
                        .split("\r\n")
                        .next()
                        .unwrap()
                        .to_owned(),
                );
            }
            got.sort();
            let mut want: Vec<String> = (0..10).map(|n| format!("c{n}")).collect();
            want.sort();
            assert_eq!(got, want, "one 503 per request, none for the response");
        }
    }
}
