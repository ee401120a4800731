//! The adapter's HTTP side: the CPIM calls the gateway makes at `[cpim]
//! adapter_url` (`POST {base}/subscribe`, `/unsubscribe`, `/notify`;
//! docs/cpim-api.md "Outbound"), `/healthz` and `/metrics`.

use crate::address::Address;
use crate::engine::SubscribeAnswer;
use crate::metrics as m;
use crate::runtime::{Shared, now_s};
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[derive(Clone)]
pub struct AppState {
    pub shared: Arc<Shared>,
    pub prom: PrometheusHandle,
}

/// The fields the gateway sends; unknown ones are tolerated so that a newer
/// gateway does not break an older adapter.
#[derive(Debug, Deserialize)]
struct CpimReq {
    watcher: String,
    target: String,
    #[serde(default)]
    duration: Option<u32>,
    #[serde(rename = "transID", default)]
    trans_id: Option<String>,
    #[serde(default)]
    presence: Option<PresenceReq>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PresenceReq {
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    body: Option<String>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/cpim/subscribe", post(subscribe))
        .route("/cpim/unsubscribe", post(unsubscribe))
        .route("/cpim/notify", post(notify))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

fn bad(op: &'static str, msg: String) -> Response {
    m::cpim_served(op, 400);
    tracing::info!(op, %msg, "bad CPIM request from the gateway");
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": {"code": "invalid_request", "message": msg}})),
    )
        .into_response()
}

fn addresses(req: &CpimReq) -> Result<(Address, Address), String> {
    let w = Address::from_uri(&req.watcher).map_err(|e| format!("watcher: {e}"))?;
    let t = Address::from_uri(&req.target).map_err(|e| format!("target: {e}"))?;
    Ok((w, t))
}

/// Answers once the state change is saved (the gateway retries otherwise).
async fn durable(
    shared: &Arc<Shared>,
    op: &'static str,
    g: u64,
    body: serde_json::Value,
) -> Response {
    if shared.saved(g, Duration::from_secs(3)).await {
        m::cpim_served(op, 200);
        Json(body).into_response()
    } else {
        m::cpim_served(op, 503);
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": {"code": "unavailable", "message": "state not saved"}})),
        )
            .into_response()
    }
}

/// A SIP watcher subscribes to an XMPP user (RFC 8048 §5.3.1 / §5.3.2).
async fn subscribe(
    State(st): State<AppState>,
    req: Result<Json<CpimReq>, JsonRejection>,
) -> Response {
    let req = match req {
        Ok(Json(r)) => r,
        Err(e) => return bad("subscribe", e.body_text()),
    };
    tracing::debug!(op = "subscribe", watcher = %req.watcher, target = %req.target, state = ?req.state, "CPIM request from the gateway");
    let (sip, xmpp) = match addresses(&req) {
        Ok(a) => a,
        Err(e) => return bad("subscribe", e),
    };
    let duration = req.duration.unwrap_or(3600);
    let (answer, g) = st
        .shared
        .with_engine(|e| e.gateway_subscribe(sip, xmpp, duration));
    let tid = req.trans_id.unwrap_or_default();
    let body = match answer {
        SubscribeAnswer::Success { duration } => {
            json!({"status": "success", "transID": tid, "duration": duration})
        }
        SubscribeAnswer::Indeterminate { duration } => {
            json!({"status": "indeterminate", "transID": tid, "duration": duration})
        }
        SubscribeAnswer::Failure { code, reason } => {
            json!({"status": "failure", "transID": tid, "code": code, "reason": reason})
        }
    };
    durable(&st.shared, "subscribe", g, body).await
}

/// The SIP watcher's subscription ended (RFC 8048 §5.3.3).
async fn unsubscribe(
    State(st): State<AppState>,
    req: Result<Json<CpimReq>, JsonRejection>,
) -> Response {
    let req = match req {
        Ok(Json(r)) => r,
        Err(e) => return bad("unsubscribe", e.body_text()),
    };
    tracing::debug!(op = "unsubscribe", watcher = %req.watcher, target = %req.target, state = ?req.state, "CPIM request from the gateway");
    let (sip, xmpp) = match addresses(&req) {
        Ok(a) => a,
        Err(e) => return bad("unsubscribe", e),
    };
    let ((), g) = st
        .shared
        .with_engine(|e| ((), e.gateway_unsubscribe(&sip, &xmpp)));
    let tid = req.trans_id.unwrap_or_default();
    durable(
        &st.shared,
        "unsubscribe",
        g,
        json!({"status": "success", "transID": tid}),
    )
    .await
}

/// A SIP presentity's state for an XMPP watcher (RFC 8048 §6.3).
async fn notify(State(st): State<AppState>, req: Result<Json<CpimReq>, JsonRejection>) -> Response {
    let req = match req {
        Ok(Json(r)) => r,
        Err(e) => return bad("notify", e.body_text()),
    };
    tracing::debug!(op = "notify", watcher = %req.watcher, target = %req.target, state = ?req.state, "CPIM request from the gateway");
    let (xmpp, sip) = match addresses(&req) {
        Ok(a) => a,
        Err(e) => return bad("notify", e),
    };
    let ct = req
        .presence
        .as_ref()
        .and_then(|p| p.content_type.as_deref())
        .unwrap_or("application/pidf+xml");
    // PIDF only; a message/cpim wrapper or another format is not mapped
    // (the subscription state still is).
    let body = req
        .presence
        .as_ref()
        .and_then(|p| p.body.as_deref())
        .filter(|_| ct.to_ascii_lowercase().starts_with("application/pidf+xml"));
    let ((), g) = st.shared.with_engine(|e| {
        (
            (),
            e.gateway_notify(
                &xmpp,
                &sip,
                body,
                req.state.as_deref(),
                req.reason.as_deref(),
                now_s(),
            ),
        )
    });
    let tid = req.trans_id.unwrap_or_default();
    durable(
        &st.shared,
        "notify",
        g,
        json!({"status": "success", "transID": tid}),
    )
    .await
}

async fn healthz(State(st): State<AppState>) -> Response {
    let comps: serde_json::Map<String, serde_json::Value> = st
        .shared
        .connected
        .iter()
        .map(|(d, up)| (d.clone(), json!(up.load(Ordering::SeqCst))))
        .collect();
    let (w2s, s2w) = st.shared.engine.lock().expect("engine lock").counts();
    Json(json!({
        "status": "ok",
        "components": comps,
        "subscriptions": {"xmpp_to_sip": w2s, "sip_to_xmpp": s2w}
    }))
    .into_response()
}

async fn metrics(State(st): State<AppState>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        st.prom.render(),
    )
        .into_response()
}
