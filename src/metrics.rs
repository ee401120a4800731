//! Prometheus metrics (issue 7). The series are recorded through the
//! `metrics` facade where the events happen (transactions, the notifier,
//! the store's committer); levels that are already held as state
//! (subscriptions, publications, queue depth, transactions in flight) are
//! read when `/metrics` is scraped instead of being tracked twice.
//!
//! Every name is a constant here, so docs/operations.md, the exposition and
//! the code agree. Label values come from closed sets (known methods,
//! numeric status codes, fixed kinds), so an attacker cannot grow the
//! number of series.

use crate::sip::Method;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// New requests received (retransmissions not counted), by `method`.
pub const SIP_REQUESTS_RECEIVED: &str = "sipgw_sip_requests_received_total";
/// Responses sent by server transactions, by `method` and `code`.
pub const SIP_RESPONSES_SENT: &str = "sipgw_sip_responses_sent_total";
/// Requests sent as new client transactions, by `method`.
pub const SIP_REQUESTS_SENT: &str = "sipgw_sip_requests_sent_total";
/// Final responses received by client transactions, by `method` and `code`.
pub const SIP_RESPONSES_RECEIVED: &str = "sipgw_sip_responses_received_total";
/// Retransmissions: `direction="received"` (requests absorbed by a server
/// transaction) or `"sent"` (Timer E, RFC 3261 §17.1.2.2).
pub const SIP_RETRANSMISSIONS: &str = "sipgw_sip_retransmissions_total";
/// Messages that did not parse (answered 400/505/513 or dropped).
pub const SIP_MALFORMED: &str = "sipgw_sip_malformed_total";
pub const SIP_SHED: &str = "sipgw_sip_requests_shed_total";
/// Requests forwarded to the cluster node holding their presentity.
pub const CLUSTER_FORWARDED: &str = "sipgw_cluster_forwarded_total";
/// Client transactions that ended without a response (`reason="timeout"`
/// (Timer F) or `"transport"`).
pub const SIP_CLIENT_FAILURES: &str = "sipgw_sip_client_transaction_failures_total";
/// Transactions in progress, by `kind` (`client`, `server`).
pub const SIP_TRANSACTIONS_IN_FLIGHT: &str = "sipgw_sip_transactions_in_flight";
/// Live subscriptions by `kind` (`local`, `cpim-to-sip`, `sip-to-cpim`).
pub const SUBSCRIPTIONS_ACTIVE: &str = "sipgw_subscriptions_active";
/// Live publications (RFC 3903 event state) of local presentities.
pub const PUBLICATIONS_ACTIVE: &str = "sipgw_publications_active";
/// Live registrar bindings of local AORs.
pub const REGISTRATIONS_ACTIVE: &str = "sipgw_registrations_active";
/// Notifications waiting in the durable adapter queue.
pub const ADAPTER_QUEUE_DEPTH: &str = "sipgw_adapter_queue_depth";
/// Failed delivery attempts to the adapter (each retry counts).
pub const ADAPTER_DELIVERY_FAILURES: &str = "sipgw_adapter_delivery_failures_total";
/// The queue's bound (`[cpim] adapter_max_pending`).
pub const ADAPTER_QUEUE_LIMIT: &str = "sipgw_adapter_queue_limit";
/// Presence notifies superseded by a later one of their stream at the
/// bound (only the older state is lost, issue 17).
pub const ADAPTER_QUEUE_COALESCED: &str = "sipgw_adapter_queue_coalesced_total";
/// Changes refused (503) at the bound: nothing could be coalesced.
pub const ADAPTER_QUEUE_REFUSED: &str = "sipgw_adapter_queue_refused_total";
/// Changes queued beyond the bound by callers that cannot refuse them.
pub const ADAPTER_QUEUE_OVER_LIMIT: &str = "sipgw_adapter_queue_over_limit_total";
/// Age of the oldest delivery still waiting for the adapter (0: none).
pub const ADAPTER_QUEUE_OLDEST_AGE: &str = "sipgw_adapter_queue_oldest_age_seconds";
/// Time of one group commit: apply every queued batch, then one flush.
pub const STORE_FLUSH_SECONDS: &str = "sipgw_store_flush_seconds";
/// Batches made durable (many share one flush).
pub const STORE_BATCHES: &str = "sipgw_store_batches_total";
/// Bytes the store occupies on disk.
pub const STORE_SIZE_BYTES: &str = "sipgw_store_size_bytes";
/// NOTIFYs held back by the rate limit (RFC 3856 §6.10); the change goes
/// out coalesced when the interval ends.
pub const NOTIFIES_THROTTLED: &str = "sipgw_notifies_throttled_total";
/// SIP TCP/TLS connections not admitted, by `reason`: `per_address`
/// (`[sip.transport] max_connections_per_address`) or `max_connections`
/// (the global cap, with no slow sender to evict).
pub const SIP_CONNECTIONS_REFUSED: &str = "sipgw_sip_connections_refused_total";
/// SIP TCP/TLS connections the gateway closed, by `reason`:
/// `message_timeout` (a message not complete within `message_timeout_ms`
/// of its first byte), `evicted` (the slowest sender, to admit a new
/// connection at `max_connections`), `idle` (`idle_timeout_s`).
pub const SIP_CONNECTIONS_CLOSED: &str = "sipgw_sip_connections_closed_total";
/// HTTP connections not admitted, by `reason`: `per_address`
/// (`[cpim] http_max_connections_per_address`) or `max_connections`
/// (`http_max_connections`).
pub const HTTP_CONNECTIONS_REFUSED: &str = "sipgw_http_connections_refused_total";
/// HTTP connections the gateway closed, by `reason`: `header_timeout` (a
/// request head, or the next one on a kept-alive connection, not complete
/// within `http_header_timeout_ms`), `body_timeout` (a request body not
/// complete within `http_body_timeout_ms`).
pub const HTTP_CONNECTIONS_CLOSED: &str = "sipgw_http_connections_closed_total";
/// HTTP requests answered, by `route` (the matched pattern) and `status`.
pub const HTTP_REQUESTS: &str = "sipgw_http_requests_total";

const FLUSH_BUCKETS: [f64; 12] = [
    0.000_25, 0.000_5, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 1.0,
];

/// The process-wide recorder, installed on first use. The facade has one
/// global recorder per process; several `Server`s in one test process share
/// it, so their counters add up.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(STORE_FLUSH_SECONDS.into()), &FLUSH_BUCKETS)
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows only its own");
        }
        describe();
        handle
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        SIP_REQUESTS_RECEIVED,
        "New SIP requests received (retransmissions not counted)"
    );
    describe_counter!(
        SIP_RESPONSES_SENT,
        "SIP responses sent by server transactions"
    );
    describe_counter!(
        SIP_REQUESTS_SENT,
        "SIP requests sent as client transactions"
    );
    describe_counter!(
        SIP_RESPONSES_RECEIVED,
        "Final SIP responses received by client transactions"
    );
    describe_counter!(
        SIP_RETRANSMISSIONS,
        "SIP retransmissions absorbed (received) or sent (Timer E)"
    );
    describe_counter!(SIP_MALFORMED, "SIP messages that did not parse");
    describe_counter!(
        CLUSTER_FORWARDED,
        "requests forwarded to the cluster node holding their presentity's shard"
    );
    describe_counter!(
        SIP_SHED,
        "new requests answered 503 because they would wait (stage=admission) or waited (stage=agent) longer than [sip.overload] max_queue_delay_ms"
    );
    describe_counter!(
        SIP_CLIENT_FAILURES,
        "Client transactions ended without a response"
    );
    describe_gauge!(SIP_TRANSACTIONS_IN_FLIGHT, "SIP transactions in progress");
    describe_gauge!(SUBSCRIPTIONS_ACTIVE, "Live subscriptions by kind");
    describe_gauge!(
        PUBLICATIONS_ACTIVE,
        "Live publications of local presentities"
    );
    describe_gauge!(REGISTRATIONS_ACTIVE, "Live registrar bindings");
    describe_gauge!(
        ADAPTER_QUEUE_DEPTH,
        "Notifications queued for the CPIM adapter"
    );
    describe_counter!(
        ADAPTER_DELIVERY_FAILURES,
        "Failed delivery attempts to the CPIM adapter"
    );
    describe_gauge!(
        ADAPTER_QUEUE_LIMIT,
        "Bound of the CPIM adapter queue (adapter_max_pending)"
    );
    describe_counter!(
        ADAPTER_QUEUE_COALESCED,
        "Presence notifies superseded by a later one of their stream at the queue's bound"
    );
    describe_counter!(
        ADAPTER_QUEUE_REFUSED,
        "Changes refused at the adapter queue's bound (nothing to coalesce)"
    );
    describe_counter!(
        ADAPTER_QUEUE_OVER_LIMIT,
        "Changes queued beyond the adapter queue's bound by callers that cannot refuse"
    );
    describe_gauge!(
        ADAPTER_QUEUE_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest delivery waiting for the CPIM adapter"
    );
    describe_histogram!(
        STORE_FLUSH_SECONDS,
        Unit::Seconds,
        "Duration of one group commit (apply + flush)"
    );
    describe_counter!(STORE_BATCHES, "Batches made durable");
    describe_gauge!(STORE_SIZE_BYTES, Unit::Bytes, "Store size on disk");
    describe_counter!(
        NOTIFIES_THROTTLED,
        "NOTIFYs held back by the rate limit (RFC 3856 §6.10)"
    );
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered");
    describe_counter!(
        SIP_CONNECTIONS_REFUSED,
        "SIP TCP/TLS connections refused by the per-address or global connection cap"
    );
    describe_counter!(
        SIP_CONNECTIONS_CLOSED,
        "SIP TCP/TLS connections closed by the message deadline, eviction or the idle timeout"
    );
    describe_counter!(
        HTTP_CONNECTIONS_REFUSED,
        "HTTP connections refused by the per-address or global connection cap"
    );
    describe_counter!(
        HTTP_CONNECTIONS_CLOSED,
        "HTTP connections closed by the header or body read deadline"
    );
}

/// The `method` label: the methods of RFC 3261 and its extensions by name,
/// anything else `other` (extension methods would be unbounded).
pub fn method_label(m: Option<&Method>) -> &'static str {
    match m {
        Some(Method::Register) => "REGISTER",
        Some(Method::Subscribe) => "SUBSCRIBE",
        Some(Method::Notify) => "NOTIFY",
        Some(Method::Publish) => "PUBLISH",
        Some(Method::Options) => "OPTIONS",
        Some(Method::Invite) => "INVITE",
        Some(Method::Ack) => "ACK",
        Some(Method::Cancel) => "CANCEL",
        Some(Method::Bye) => "BYE",
        Some(Method::Message) => "MESSAGE",
        _ => "other",
    }
}

/// The `code` label: a status code is three digits, 100–699.
pub fn code_label(code: u16) -> &'static str {
    // Exact codes for the ones operators alert on, classes for the rest.
    const EXACT: [(u16, &str); 26] = [
        (100, "100"),
        (200, "200"),
        (202, "202"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (406, "406"),
        (407, "407"),
        (408, "408"),
        (412, "412"),
        (415, "415"),
        (423, "423"),
        (480, "480"),
        (481, "481"),
        (482, "482"),
        (483, "483"),
        (486, "486"),
        (489, "489"),
        (494, "494"),
        (500, "500"),
        (503, "503"),
        (504, "504"),
        (513, "513"),
        (603, "603"),
    ];
    const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];
    if let Ok(i) = EXACT.binary_search_by_key(&code, |(c, _)| *c) {
        return EXACT[i].1;
    }
    match code {
        100..=699 => CLASSES[usize::from(code / 100 - 1)],
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(code_label(481), "481");
        assert_eq!(code_label(299), "2xx");
        assert_eq!(code_label(699), "6xx");
        assert_eq!(code_label(42), "other");
        assert_eq!(method_label(Some(&Method::Publish)), "PUBLISH");
        assert_eq!(method_label(None), "other");
    }
}
