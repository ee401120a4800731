//! Prometheus series (names prefixed `xmpp_adapter_`), served on `/metrics`.

use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub fn install() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| e.to_string())
}

/// Stanzas by direction (`in`, `out`, `dropped`, `malformed`) and type.
pub fn stanza(direction: &'static str, kind: &'static str) {
    counter!("xmpp_adapter_stanzas_total", "direction" => direction, "type" => kind).increment(1);
}

/// CPIM calls to the gateway by operation and outcome (`success`,
/// `indeterminate`, `failure`, `unreachable`, `error`).
pub fn cpim_call(op: &'static str, outcome: &'static str) {
    counter!("xmpp_adapter_cpim_calls_total", "op" => op, "outcome" => outcome).increment(1);
}

/// CPIM calls from the gateway by operation and HTTP status class.
pub fn cpim_served(op: &'static str, status: u16) {
    counter!("xmpp_adapter_cpim_requests_total", "op" => op, "status" => status.to_string())
        .increment(1);
}

pub fn component_connected(domain: &str, up: bool) {
    gauge!("xmpp_adapter_component_connected", "domain" => domain.to_owned()).set(if up {
        1.0
    } else {
        0.0
    });
    if up {
        counter!("xmpp_adapter_component_connects_total", "domain" => domain.to_owned())
            .increment(1);
    }
}

pub fn subscriptions(w2s: usize, s2w: usize) {
    gauge!("xmpp_adapter_subscriptions", "direction" => "xmpp_to_sip").set(w2s as f64);
    gauge!("xmpp_adapter_subscriptions", "direction" => "sip_to_xmpp").set(s2w as f64);
}

pub fn store_error() {
    counter!("xmpp_adapter_store_errors_total").increment(1);
}
