//! Forwarding a request to the node that holds its presentity (issue 18):
//! transaction-stateful (RFC 3261 §16), without Record-Route, so the
//! dialog it creates runs between the UA and the holding node directly.

use crate::sip::HeaderName;
use crate::transaction::{ServerTransaction, TransactionLayer};
use crate::transport::{Proto, Target};
use std::net::SocketAddr;

/// How long a holder may take to answer a forwarded request before this
/// node looks again at who holds the presentity (4×T1: a live node answers
/// a presence request in milliseconds; one that does not has likely died,
/// and its shards move within the lease TTL).
pub const FORWARD_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Sends `st`'s request on to `to` and relays the final response. When
/// `to` does not answer within [`FORWARD_WAIT`] (or cannot be reached) the
/// transaction comes back unanswered, for the caller to place again; the
/// UA's retransmissions are absorbed by it meanwhile.
pub async fn forward(
    layer: &TransactionLayer,
    st: ServerTransaction,
    to: &str,
) -> Result<(), ServerTransaction> {
    let addr: Option<SocketAddr> = match tokio::net::lookup_host(to).await {
        Ok(mut addrs) => addrs.next(),
        Err(_) => None,
    };
    let Some(to) = addr else {
        tracing::warn!(peer = %to, "the shard holder's SIP address does not resolve");
        return Err(st);
    };
    let mut req = st.request().clone();
    // RFC 3261 §16.6 step 3. A request arriving with 0 was answered 483 by
    // the core checks (`transaction::uas`) before it got here.
    let hops = req.max_forwards().map_or(70, |n| n.saturating_sub(1));
    req.set_header(HeaderName::MaxForwards, hops.to_string());
    let target = Target {
        proto: Proto::Udp,
        addr: to,
        server_name: None,
        conn: None,
    };
    metrics::counter!(crate::metrics::CLUSTER_FORWARDED).increment(1);
    match tokio::time::timeout(FORWARD_WAIT, layer.send_request(req, target)).await {
        Ok(Ok(mut resp)) => {
            // Our Via (the client transaction's) is on top; the rest are
            // the original request's (§16.7 step 3).
            resp.remove_top_via();
            let _ = st.respond(resp).await;
            Ok(())
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, peer = %to, "forwarding to the shard's holder failed");
            Err(st)
        }
        Err(_) => {
            tracing::warn!(peer = %to, "the shard's holder did not answer a forwarded request");
            Err(st)
        }
    }
}
