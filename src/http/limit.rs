//! The limits of the HTTP listener (issue 17 item 5, docs/reliability.md
//! "Hostile input"): connection caps (global and per source address) and
//! the request-body deadline. The head deadline is hyper's own
//! `header_read_timeout`, set in [`super::serve`].

use super::ApiFault;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    PerAddress,
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

pub(super) fn count_closed(reason: &'static str) {
    metrics::counter!(crate::metrics::HTTP_CONNECTIONS_CLOSED, "reason" => reason).increment(1);
}

#[derive(Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// The connection caps. A [`Slot`] is held for as long as its connection
/// is served.
pub(super) struct Slots {
    max: usize,
    per_address: usize,
    open: Arc<Mutex<Open>>,
}

/// One admitted connection; released on drop.
pub(super) struct Slot {
    ip: IpAddr,
    open: Arc<Mutex<Open>>,
}

fn lock(m: &Mutex<Open>) -> std::sync::MutexGuard<'_, Open> {
    // Counts only: a panic elsewhere cannot leave them worse than stale.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Slots {
    pub(super) fn new(max: usize, per_address: usize) -> Slots {
        Slots {
            max,
            per_address,
            open: Arc::default(),
        }
    }

    /// A slot for a connection from `ip`, unless a cap is reached.
    pub(super) fn admit(&self, ip: IpAddr) -> Result<Slot, Refusal> {
        let mut open = lock(&self.open);
        // The per-address cap first, so that a source flooding a full
        // listener is counted as what it is.
        if open.per_ip.get(&ip).copied().unwrap_or(0) >= self.per_address {
            return Err(Refusal::PerAddress);
        }
        if open.total >= self.max {
            return Err(Refusal::Full);
        }
        open.total += 1;
        *open.per_ip.entry(ip).or_insert(0) += 1;
        Ok(Slot {
            ip,
            open: self.open.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        open.total -= 1;
        if let Some(n) = open.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

/// What a refused connection is told before it is closed: 503 with
/// `Retry-After` (RFC 9110 §15.6.4) and the API's JSON error body.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: application/json\r\n\
Retry-After: 1\r\n\
Connection: close\r\n\
Content-Length: 79\r\n\
\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"connection limit reached\"}}\n";

/// Counts the refusal, tells the client (one non-blocking write: the
/// accept loop must never wait on a client), and closes.
pub(super) fn refuse(stream: &tokio::net::TcpStream, reason: Refusal) {
    metrics::counter!(crate::metrics::HTTP_CONNECTIONS_REFUSED, "reason" => reason.label())
        .increment(1);
    tracing::debug!(reason = reason.label(), "HTTP connection refused");
    let _ = stream.try_write(REFUSED);
}

/// The request body deadline: a body not complete `limit` after the head
/// was read is cut off, and the request answered 408 (RFC 9110 §15.5.9)
/// with `Connection: close`, whatever the handler made of the broken body.
pub(super) async fn body_deadline(
    State(limit): State<Duration>,
    req: Request,
    next: Next,
) -> Response {
    use http_body::Body as _;
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let expired = Arc::new(AtomicBool::new(false));
    let flag = expired.clone();
    let req = req.map(|inner| {
        Body::new(DeadlineBody {
            inner,
            sleep: Box::pin(tokio::time::sleep(limit)),
            expired: flag,
        })
    });
    let resp = next.run(req).await;
    if expired.load(Ordering::Acquire) {
        count_closed("body_timeout");
        let mut r = ApiFault::BodyTimeout(limit).into_response();
        r.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        return r;
    }
    resp
}

/// The body is not complete within the deadline.
#[derive(Debug, thiserror::Error)]
#[error("request body not complete within the deadline")]
struct BodyTimedOut;

/// A request body that fails once its deadline has passed.
struct DeadlineBody {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<AtomicBool>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        // Data already here is taken even at the deadline; only waiting
        // for more is cut short.
        if let Poll::Ready(f) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(f);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.expired.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_and_release() {
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let slots = Slots::new(3, 2);
        let s1 = slots.admit(a).unwrap();
        let _s2 = slots.admit(a).unwrap();
        assert_eq!(slots.admit(a).err(), Some(Refusal::PerAddress));
        let _s3 = slots.admit(b).unwrap();
        assert_eq!(slots.admit(b).err(), Some(Refusal::Full));
        drop(s1);
        assert!(slots.admit(a).is_ok(), "a released slot is free again");
    }

    #[test]
    fn refusal_body_length_is_right() {
        let text = std::str::from_utf8(REFUSED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "too_many_connections");
    }
}
