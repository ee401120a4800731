//! `/cpim/v1`: the adapter contract (design §4): subscribe, unsubscribe and
//! notify, answered by the gateway, and the fetch of a local presentity's
//! document.

use super::extract::{ApiPath, json_body, local_presentity};
use super::{ApiFault, AppState, ErrorBody};
use crate::cpim::{CpimResponse, NotifyRequest, SubscribeRequest, UnsubscribeRequest};
use crate::presence::aor_key;
use crate::sip::Scheme;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

/// The schemes a fetched presentity may be named with.
const PRESENTITY_SCHEMES: &[Scheme] = &[Scheme::Pres, Scheme::Sip, Scheme::Sips, Scheme::Im];

#[utoipa::path(post, path = "/cpim/v1/subscribe", request_body = SubscribeRequest,
    responses((status = 200, description = "CPIM outcome (success, failure, indeterminate)", body = CpimResponse),
              (status = 400, description = "Not the JSON the route takes, or a field the gateway refuses", body = ErrorBody),
              (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
              (status = 408, description = "Body not complete within http_body_timeout_ms", body = ErrorBody),
              (status = 413, description = "Body over 256 KiB", body = ErrorBody),
              (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
              (status = 503, description = "The store did not commit, or the gateway stopped", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn subscribe(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<CpimResponse>, ApiFault> {
    let req: SubscribeRequest = json_body(&headers, body)?;
    Ok(axum::Json(s.gateway.subscribe(req).await?))
}

#[utoipa::path(post, path = "/cpim/v1/unsubscribe", request_body = UnsubscribeRequest,
    responses((status = 200, body = CpimResponse),
              (status = 400, description = "Not the JSON the route takes, or a field the gateway refuses", body = ErrorBody),
              (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
              (status = 408, description = "Body not complete within http_body_timeout_ms", body = ErrorBody),
              (status = 413, description = "Body over 256 KiB", body = ErrorBody),
              (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
              (status = 503, description = "The store did not commit, or the gateway stopped", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn unsubscribe(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<CpimResponse>, ApiFault> {
    let req: UnsubscribeRequest = json_body(&headers, body)?;
    Ok(axum::Json(s.gateway.unsubscribe(req).await?))
}

#[utoipa::path(post, path = "/cpim/v1/notify", request_body = NotifyRequest,
    responses((status = 200, body = CpimResponse),
              (status = 400, description = "Not the JSON the route takes, or a field the gateway refuses", body = ErrorBody),
              (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
              (status = 408, description = "Body not complete within http_body_timeout_ms", body = ErrorBody),
              (status = 413, description = "Body over 256 KiB", body = ErrorBody),
              (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
              (status = 503, description = "The store did not commit, or the gateway stopped", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn notify(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<CpimResponse>, ApiFault> {
    let req: NotifyRequest = json_body(&headers, body)?;
    Ok(axum::Json(s.gateway.notify(req).await?))
}

#[utoipa::path(get, path = "/cpim/v1/presence/{presentity}",
    params(("presentity" = String, Path, description = "A local presentity URI, percent-encoded (pres:alice@example.com)", pattern = r"^(sip|sips|pres|im):[A-Za-z0-9._~+-]+@([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?$")),
    responses((status = 200, description = "The composed PIDF document", content_type = "application/pidf+xml", body = String),
              (status = 400, description = "Not a URI", body = ErrorBody),
              (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
              (status = 404, description = "Not a local presentity", body = ErrorBody),
              (status = 503, description = "The presence agent stopped", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn presence(
    State(s): State<AppState>,
    ApiPath(presentity): ApiPath<String>,
) -> Result<Response, ApiFault> {
    let uri = local_presentity(&s, &presentity, PRESENTITY_SCHEMES)?;
    let (_, body) = s
        .presence
        .fetch(&aor_key(&uri))
        .await
        .ok_or_else(|| ApiFault::Unavailable("presence agent stopped".into()))?;
    Ok(([(header::CONTENT_TYPE, "application/pidf+xml")], body).into_response())
}
