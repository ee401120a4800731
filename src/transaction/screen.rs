//! The refusal of a new request before it is parsed, while admission
//! refuses new requests (`admission`).
//!
//! Under overload most new requests are only refused, and the full parse
//! of each (its `Message`, the key of its transaction) cost the core more
//! than the answer did: at twice capacity those refusals took a tenth of the
//! core from the requests being served (docs/performance.md, "Refused
//! before the parse"). So a UDP receiver first shows the datagram here
//! ([`Receive::screen`](crate::transport::Receive::screen)): when admission
//! would refuse a new request now, a [`Glance`] at the bytes is enough to
//! answer it with the same stateless 503 the full path sends.
//!
//! Invariant: a request is answered here only if the full path would
//! refuse it at admission too: it is new (no To tag; not an ACK or a
//! CANCEL), its top Via has a magic-cookie branch, and it matches no server
//! transaction (a retransmission of an admitted request is absorbed or
//! answered from its transaction, by the full path). Anything else, and
//! anything the glance cannot read plainly, is parsed and received as
//! before.

use super::TransactionLayer;
use super::server::{Reply, rfc3261_key, target_of};
use crate::metrics as m;
use crate::sip::Method;
use crate::sip::glance::Glance;
use crate::sip::headers::decode_via;
use crate::transport::{Source, routing::stamped};
use bytestring::ByteString;
use tokio::time::Instant;

impl TransactionLayer {
    /// The answer to `datagram`, received from `source` at `received`, if it
    /// is a new request that admission refuses now; `None`: parse it.
    pub(super) fn screen_datagram(
        &self,
        datagram: &[u8],
        source: &Source,
        received: Instant,
    ) -> Option<Reply> {
        // Cheapest first: while new requests are admitted, nothing to see.
        let stage = self.refusal(false, received)?;
        let glance = Glance::of(datagram)?;
        if glance.to_tagged() || matches!(glance.method(), "ACK" | "CANCEL") {
            return None;
        }
        let top = decode_via(&ByteString::from(glance.top_via()))
            .ok()?
            .into_iter()
            .next()?;
        let key = rfc3261_key(&top, glance.method(), source)?;
        if self.shared.servers().contains_key(&key) {
            return None;
        }
        let top = stamped(&top, source).unwrap_or(top);
        let target = target_of(&top, source);
        let method = Method::from_token(&ByteString::from(glance.method()));
        let method_label = m::method_label(Some(&method));
        metrics::counter!(m::SIP_REQUESTS_RECEIVED, "method" => method_label).increment(1);
        let top = top.to_string();
        Some(
            self.shared
                .refuse_overloaded(stage, method_label, target, |reason, tag, extra| {
                    glance.reply(503, reason, &top, tag, extra)
                }),
        )
    }
}
