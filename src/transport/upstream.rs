//! The hand-off of what the transport receives to the layer above.
//!
//! Each message is handed up where it was read (a UDP receiver's thread, a
//! stream connection's reader task), not through a channel to one
//! consuming task. That hop cost a wake-up per message and, under overload, made
//! every response and in-dialog request wait in one queue behind the new
//! requests: the 200s to the gateway's NOTIFYs came back late and the
//! NOTIFYs were re-sent (docs/performance.md, "Received on the reading
//! task"). Now the only queue in front of admission is the socket's, and
//! its wait is measured (`rxstamp`).
//!
//! Invariant: the layer above is connected at most once; a message that
//! arrives before waits for it, none is dropped.

use super::{Inbound, Source};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The layer above, as the transport sees it. `receive` runs where the
/// message was read: a stream's next message is read only after it
/// returns, so messages of one connection are taken in order; the UDP
/// receiver threads call it concurrently, each driving the future it
/// returns with the runtime's handle (`Handle::block_on`).
pub trait Receive: Send + Sync + 'static {
    fn receive(&self, ev: Inbound) -> ReceiveFuture<'_>;

    /// A first look at a datagram, before it is parsed: the layer may
    /// answer it from its bytes alone (a new request refused under
    /// overload), and then it is neither parsed nor received. `None`:
    /// parse it and `receive` it.
    fn screen(
        &self,
        _datagram: &[u8],
        _source: &Source,
        _received: Instant,
    ) -> Option<ReceiveFuture<'_>> {
        None
    }
}

pub type ReceiveFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The transport's link to the layer above. That layer is built on the
/// transport (it sends through it), so it is connected after the listeners
/// are bound.
#[derive(Clone, Default)]
pub struct Upstream(Arc<Link>);

#[derive(Default)]
struct Link {
    layer: OnceLock<Arc<dyn Receive>>,
    connected: Notify,
}

impl Upstream {
    pub fn new() -> Upstream {
        Upstream::default()
    }

    /// Connects the layer above: messages flow from now on. Only the first
    /// call counts.
    pub fn connect(&self, layer: Arc<dyn Receive>) {
        if self.0.layer.set(layer).is_ok() {
            self.0.connected.notify_waiters();
        }
    }

    /// The layer's answer to `datagram` before any parse (`Receive::screen`);
    /// `None` while no layer is connected.
    pub(super) fn screen(
        &self,
        datagram: &[u8],
        source: &Source,
        received: Instant,
    ) -> Option<ReceiveFuture<'_>> {
        self.0.layer.get()?.screen(datagram, source, received)
    }

    /// Hands `ev` to the layer above, waiting until one is connected.
    pub(super) async fn deliver(&self, ev: Inbound) {
        loop {
            if let Some(layer) = self.0.layer.get() {
                return layer.receive(ev).await;
            }
            let connected = self.0.connected.notified();
            tokio::pin!(connected);
            // Registered before the check, so a `connect` between the check
            // and the wait is not missed.
            connected.as_mut().enable();
            if self.0.layer.get().is_none() {
                connected.await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Proto, Source};
    use bytes::Bytes;
    use std::time::Duration;

    /// A layer above that only collects what it is handed.
    struct Collect(tokio::sync::mpsc::Sender<Inbound>);

    impl Receive for Collect {
        fn receive(&self, ev: Inbound) -> ReceiveFuture<'_> {
            Box::pin(async move {
                let _ = self.0.send(ev).await;
            })
        }
    }

    fn noise() -> Inbound {
        let addr = "127.0.0.1:5060".parse().unwrap();
        Inbound::Malformed {
            bytes: Bytes::from_static(b"x"),
            error: crate::sip::ParseError::Empty,
            source: Source {
                proto: Proto::Udp,
                peer: addr,
                local: addr,
                conn: None,
            },
        }
    }

    /// What arrives before the layer above is connected waits for it, and
    /// is handed up once it is.
    #[tokio::test]
    async fn a_message_before_the_connection_waits_for_it() {
        let up = Upstream::new();
        let early = tokio::spawn({
            let up = up.clone();
            async move { up.deliver(noise()).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!early.is_finished(), "delivered with nothing connected");
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        up.connect(Arc::new(Collect(tx)));
        early.await.unwrap();
        assert!(matches!(rx.recv().await, Some(Inbound::Malformed { .. })));
        up.deliver(noise()).await;
        assert!(matches!(rx.recv().await, Some(Inbound::Malformed { .. })));
    }
}
