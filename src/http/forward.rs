//! In a cluster (issue 18), a CPIM operation about a presentity whose shard
//! another node holds is forwarded to that node, the way SIP requests are
//! (`cluster::forward`): its records may only be written there. The
//! answer comes back unchanged.

use super::{ApiFault, AppState};
use crate::cluster::{Place, Placement};
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Marks a request one node forwarded to another: never forwarded again
/// (two stale views of the leases cannot make a loop).
const FORWARDED: &str = "x-sipgw-forwarded";

/// What forwarding needs: the view of the cluster and an HTTP client.
#[derive(Clone)]
pub struct ClusterHttp {
    pub placement: Placement,
    pub client: reqwest::Client,
}

/// The middleware on `/cpim/v1/{subscribe,unsubscribe,notify}`.
pub(super) async fn cpim_to_holder(
    State(s): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(cluster) = s.cluster.clone() else {
        return next.run(req).await;
    };
    if req.headers().contains_key(FORWARDED) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    // Read as the handlers read it (the body limit applies).
    let bytes = match Bytes::from_request(Request::from_parts(parts.clone(), body), &s).await {
        Ok(b) => b,
        Err(rejection) => return ApiFault::InvalidBody(rejection).into_response(),
    };
    // The presentity: every CPIM operation names it as `target`. A body
    // that does not say is the handler's to refuse.
    let target = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("target").and_then(|t| t.as_str()).map(str::to_owned));
    let place = target.as_deref().map(|t| cluster.placement.place(t));
    match place {
        None | Some(Place::Here) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Some(Place::At { http, node, .. }) if !http.is_empty() => {
            match relay(&cluster.client, &http, &parts, bytes).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(%node, error = %e, "forwarding a CPIM operation failed");
                    ApiFault::Unavailable(format!(
                        "the node holding the presentity ({node}) did not answer; retry"
                    ))
                    .into_response()
                }
            }
        }
        Some(_) => ApiFault::Unavailable(
            "no node holds the presentity at the moment (a takeover is in progress); retry".into(),
        )
        .into_response(),
    }
}

async fn relay(
    client: &reqwest::Client,
    http: &str,
    parts: &axum::http::request::Parts,
    body: Bytes,
) -> Result<Response, reqwest::Error> {
    metrics::counter!(crate::metrics::CLUSTER_FORWARDED).increment(1);
    let url = format!("http://{http}{}", parts.uri.path());
    let mut out = client.post(url).header(FORWARDED, "1").body(body);
    for name in [header::CONTENT_TYPE, header::AUTHORIZATION] {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name.as_str(), v.as_bytes());
        }
    }
    let resp = out.send().await?;
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE.as_str())
        .map(|v| v.as_bytes().to_vec());
    let body = resp.bytes().await?;
    let mut r = Response::new(Body::from(body));
    *r.status_mut() =
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    if let Some(ct) = ctype.and_then(|c| HeaderValue::from_bytes(&c).ok()) {
        r.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    Ok(r)
}
