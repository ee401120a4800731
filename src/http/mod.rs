//! The HTTP side (design §4): the CPIM API for adapters, the admin API
//! (policies, publisher grants and read-only views), `/openapi.json`, `/healthz`, `/readyz`
//! and `/metrics`. Every error is JSON:
//! `{"error": {"code": "...", "message": "..."}}`; a malformed request
//! changes nothing.

use crate::admin::{
    DialogView, PresentitySummary, PresentityView, PublicationView, RegistrationView,
    SubscriptionFilter, SubscriptionKind, SubscriptionView,
};
use crate::cpim::{
    CpimResponse, NotifyRequest, Presence, Status, SubscribeRequest, TupleView, UnsubscribeRequest,
};
use crate::gateway::{ApiError, Gateway};
use crate::presence::records::PolicyAction;
use crate::presence::{PresenceAgent, aor_key};
use crate::sip::{Scheme, Uri};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use std::sync::Arc;
use utoipa::{OpenApi, ToSchema};

/// Largest request body accepted (a presence document with room to spare).
pub const MAX_BODY: usize = 256 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub gateway: Gateway,
    pub presence: PresenceAgent,
    /// Bearer token for `/cpim` and `/admin`; `None`: open.
    pub token: Option<Arc<str>>,
    pub local_domains: Arc<[String]>,
    /// What `/readyz` and `/metrics` read from the rest of the process.
    pub ops: Arc<Ops>,
}

/// The process-level state the operations endpoints report.
pub struct Ops {
    /// Set once every listener is bound and the agents have loaded the
    /// store; cleared when shutdown begins (so a load balancer stops
    /// sending before the listeners close).
    pub ready: std::sync::atomic::AtomicBool,
    pub transactions: crate::transaction::TransactionLayer,
    pub adapter: crate::delivery::Adapter,
    pub store: Arc<crate::store::SledStore>,
}

/// The error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code, e.g. `invalid_json`, `invalid_uri`.
    pub code: String,
    pub message: String,
}

/// An error answer; the one place API failures become HTTP statuses.
pub struct HttpError(StatusCode, &'static str, String);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.1.to_owned(),
                message: self.2,
            },
        };
        (self.0, axum::Json(body)).into_response()
    }
}

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> HttpError {
        match e {
            ApiError::BadRequest(m) => HttpError(StatusCode::BAD_REQUEST, "invalid_request", m),
            ApiError::Unavailable(m) => {
                HttpError(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            }
        }
    }
}

/// The JSON body of a request: content type checked, size limited, parsed
/// strictly (unknown fields refused).
fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, HttpError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case("application/json")
    {
        return Err(HttpError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected application/json".into(),
        ));
    }
    let body = body.map_err(|e| HttpError(e.status(), "invalid_body", e.body_text()))?;
    serde_json::from_slice(&body)
        .map_err(|e| HttpError(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))
}

#[utoipa::path(post, path = "/cpim/v1/subscribe", request_body = SubscribeRequest,
    responses((status = 200, description = "CPIM outcome (success, failure, indeterminate)", body = CpimResponse),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 415, body = ErrorBody)),
    security(("bearer" = [])))]
async fn subscribe(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<CpimResponse>, HttpError> {
    let req: SubscribeRequest = json_body(&headers, body)?;
    Ok(axum::Json(s.gateway.subscribe(req).await?))
}

#[utoipa::path(post, path = "/cpim/v1/unsubscribe", request_body = UnsubscribeRequest,
    responses((status = 200, body = CpimResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
async fn unsubscribe(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<CpimResponse>, HttpError> {
    let req: UnsubscribeRequest = json_body(&headers, body)?;
    Ok(axum::Json(s.gateway.unsubscribe(req).await?))
}

#[utoipa::path(post, path = "/cpim/v1/notify", request_body = NotifyRequest,
    responses((status = 200, body = CpimResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
async fn notify(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<CpimResponse>, HttpError> {
    let req: NotifyRequest = json_body(&headers, body)?;
    Ok(axum::Json(s.gateway.notify(req).await?))
}

#[utoipa::path(get, path = "/cpim/v1/presence/{presentity}",
    params(("presentity" = String, Path, description = "A local presentity URI, percent-encoded (pres:alice@example.com)")),
    responses((status = 200, description = "The composed PIDF document", content_type = "application/pidf+xml", body = String),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn presence(
    State(s): State<AppState>,
    Path(presentity): Path<String>,
) -> Result<Response, HttpError> {
    let uri = Uri::parse_str(&presentity).map_err(|e| {
        HttpError(
            StatusCode::BAD_REQUEST,
            "invalid_uri",
            format!("{presentity}: {}", e.reason),
        )
    })?;
    let host = uri.host.as_ref().map(|h| h.canonical()).unwrap_or_default();
    if !matches!(
        uri.scheme,
        Scheme::Pres | Scheme::Sip | Scheme::Sips | Scheme::Im
    ) || !s
        .local_domains
        .iter()
        .any(|d| d.eq_ignore_ascii_case(&host))
    {
        return Err(HttpError(
            StatusCode::NOT_FOUND,
            "not_local",
            format!("{presentity} is not a local presentity"),
        ));
    }
    let (_, body) = s.presence.fetch(&aor_key(&uri)).await.ok_or_else(|| {
        HttpError(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "presence agent stopped".into(),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "application/pidf+xml")], body).into_response())
}

/// One authorization rule.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct PolicyRule {
    /// The watcher's URI (AOR form).
    pub watcher: String,
    pub action: PolicyAction,
}

/// `PUT` body.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyUpdate {
    pub action: PolicyAction,
}

/// A presentity's rules and the default for watchers without one.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyList {
    pub presentity: String,
    pub default: PolicyAction,
    pub rules: Vec<PolicyRule>,
}

/// A local presentity's AOR key, or 400/404.
fn local_aor(s: &AppState, uri: &str) -> Result<String, HttpError> {
    let u = Uri::parse_str(uri).map_err(|e| {
        HttpError(
            StatusCode::BAD_REQUEST,
            "invalid_uri",
            format!("{uri}: {}", e.reason),
        )
    })?;
    let host = u.host.as_ref().map(|h| h.canonical()).unwrap_or_default();
    if !matches!(u.scheme, Scheme::Pres | Scheme::Sip | Scheme::Sips)
        || !s
            .local_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(&host))
    {
        return Err(HttpError(
            StatusCode::NOT_FOUND,
            "not_local",
            format!("{uri} is not a local presentity"),
        ));
    }
    Ok(aor_key(&u))
}

fn watcher_aor(uri: &str) -> Result<String, HttpError> {
    let u = Uri::parse_str(uri).map_err(|e| {
        HttpError(
            StatusCode::BAD_REQUEST,
            "invalid_uri",
            format!("{uri}: {}", e.reason),
        )
    })?;
    if !matches!(
        u.scheme,
        Scheme::Pres | Scheme::Sip | Scheme::Sips | Scheme::Im
    ) || u.host.is_none()
    {
        return Err(HttpError(
            StatusCode::BAD_REQUEST,
            "invalid_uri",
            format!("{uri}: expected a pres:, im:, sip: or sips: URI"),
        ));
    }
    Ok(aor_key(&u))
}

#[utoipa::path(get, path = "/admin/v1/policies/{presentity}",
    params(("presentity" = String, Path, description = "Local presentity URI, percent-encoded")),
    responses((status = 200, body = PolicyList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_policies(
    State(s): State<AppState>,
    Path(presentity): Path<String>,
) -> Result<axum::Json<PolicyList>, HttpError> {
    let aor = local_aor(&s, &presentity)?;
    let (rules, default) = s.presence.policies(&aor).await;
    Ok(axum::Json(PolicyList {
        presentity: aor,
        default,
        rules: rules
            .into_iter()
            .map(|(watcher, action)| PolicyRule { watcher, action })
            .collect(),
    }))
}

#[utoipa::path(put, path = "/admin/v1/policies/{presentity}/{watcher}", request_body = PolicyUpdate,
    params(("presentity" = String, Path), ("watcher" = String, Path)),
    responses((status = 200, description = "Stored and applied to existing subscriptions", body = PolicyRule),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn put_policy(
    State(s): State<AppState>,
    Path((presentity, watcher)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<PolicyRule>, HttpError> {
    let aor = local_aor(&s, &presentity)?;
    let w = watcher_aor(&watcher)?;
    let update: PolicyUpdate = json_body(&headers, body)?;
    if !s.presence.set_policy(&aor, &w, Some(update.action)).await {
        return Err(HttpError(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "store failure".into(),
        ));
    }
    Ok(axum::Json(PolicyRule {
        watcher: w,
        action: update.action,
    }))
}

#[utoipa::path(delete, path = "/admin/v1/policies/{presentity}/{watcher}",
    params(("presentity" = String, Path), ("watcher" = String, Path)),
    responses((status = 204, description = "Removed; the default applies"), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
async fn delete_policy(
    State(s): State<AppState>,
    Path((presentity, watcher)): Path<(String, String)>,
) -> Result<StatusCode, HttpError> {
    let aor = local_aor(&s, &presentity)?;
    let w = watcher_aor(&watcher)?;
    let (rules, _) = s.presence.policies(&aor).await;
    if !rules.iter().any(|(x, _)| *x == w) {
        return Err(HttpError(
            StatusCode::NOT_FOUND,
            "no_rule",
            format!("no rule for {w}"),
        ));
    }
    if !s.presence.set_policy(&aor, &w, None).await {
        return Err(HttpError(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "store failure".into(),
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The publishers granted for a presentity (issue 14). A presentity
/// always publishes for itself; anyone else needs a grant here, whatever
/// the watch policy says.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublisherList {
    pub presentity: String,
    /// Granted publisher AORs, in order.
    pub publishers: Vec<String>,
}

/// One grant.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublisherGrant {
    pub presentity: String,
    /// The publisher's AOR (the authenticated identity when `[auth]` is on,
    /// else the From of its PUBLISH).
    pub publisher: String,
}

fn unavailable(e: crate::presence::GrantError) -> HttpError {
    HttpError(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        e.to_string(),
    )
}

#[utoipa::path(get, path = "/admin/v1/publishers/{presentity}",
    params(("presentity" = String, Path, description = "Local presentity URI, percent-encoded")),
    responses((status = 200, body = PublisherList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_publishers(
    State(s): State<AppState>,
    Path(presentity): Path<String>,
) -> Result<axum::Json<PublisherList>, HttpError> {
    let aor = local_aor(&s, &presentity)?;
    let publishers = s.presence.publishers(&aor).await.map_err(unavailable)?;
    Ok(axum::Json(PublisherList {
        presentity: aor,
        publishers,
    }))
}

/// Grants `publisher` the right to PUBLISH for `presentity` (RFC 3903 §6
/// step 4); idempotent. Answered once the grant is durable.
#[utoipa::path(put, path = "/admin/v1/publishers/{presentity}/{publisher}",
    params(("presentity" = String, Path, description = "Local presentity URI, percent-encoded"),
           ("publisher" = String, Path, description = "Publisher URI (sip:, sips:, pres: or im:), percent-encoded")),
    responses((status = 200, description = "Granted (or already granted) and durable", body = PublisherGrant),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn put_publisher(
    State(s): State<AppState>,
    Path((presentity, publisher)): Path<(String, String)>,
) -> Result<axum::Json<PublisherGrant>, HttpError> {
    let aor = local_aor(&s, &presentity)?;
    let p = watcher_aor(&publisher)?;
    s.presence
        .set_publisher(&aor, &p, true)
        .await
        .map_err(unavailable)?;
    Ok(axum::Json(PublisherGrant {
        presentity: aor,
        publisher: p,
    }))
}

/// Revokes a grant. What the publisher already published stays until it
/// expires; nothing more from it is accepted.
#[utoipa::path(delete, path = "/admin/v1/publishers/{presentity}/{publisher}",
    params(("presentity" = String, Path, description = "Local presentity URI, percent-encoded"),
           ("publisher" = String, Path, description = "Publisher URI, percent-encoded")),
    responses((status = 204, description = "Revoked and durable"), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, description = "No such grant, or not a local presentity", body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn delete_publisher(
    State(s): State<AppState>,
    Path((presentity, publisher)): Path<(String, String)>,
) -> Result<StatusCode, HttpError> {
    let aor = local_aor(&s, &presentity)?;
    let p = watcher_aor(&publisher)?;
    // Checked and removed in one step on the agent task, so two DELETEs
    // racing get one 204 and one 404.
    if !s
        .presence
        .set_publisher(&aor, &p, false)
        .await
        .map_err(unavailable)?
    {
        return Err(HttpError(
            StatusCode::NOT_FOUND,
            "no_grant",
            format!("{p} holds no grant to publish for {aor}"),
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        ApiDoc::openapi().to_pretty_json().unwrap_or_default(),
    )
}

/// Liveness: the process answers HTTP.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive", body = String)))]
async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// The answer of `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not-ready`.
    pub status: &'static str,
    /// Listeners bound, state loaded, not shutting down.
    pub started: bool,
    /// The last store commit succeeded.
    pub store: bool,
}

/// Readiness: 200 once the listeners are bound and the store is open and
/// writable, 503 before, after a failed commit, or while shutting down.
#[utoipa::path(get, path = "/readyz", responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let started = s.ops.ready.load(std::sync::atomic::Ordering::Acquire);
    let store = s.ops.store.healthy();
    let ok = started && store;
    let body = Readiness {
        status: if ok { "ready" } else { "not-ready" },
        started,
        store,
    };
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body))
}

/// Prometheus text exposition (version 0.0.4). Levels held as state are
/// read now; counters and histograms were recorded as events happened.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
    use crate::metrics as m;
    let handle = m::handle();
    let (client, server) = s.ops.transactions.in_flight();
    metrics::gauge!(m::SIP_TRANSACTIONS_IN_FLIGHT, "kind" => "client").set(client as f64);
    metrics::gauge!(m::SIP_TRANSACTIONS_IN_FLIGHT, "kind" => "server").set(server as f64);
    let pa = s.presence.counts().await;
    let gw = s.gateway.counts().await;
    for (kind, n) in [
        (SubscriptionKind::Local, pa.subscriptions),
        (SubscriptionKind::CpimToSip, gw.cpim_to_sip),
        (SubscriptionKind::SipToCpim, gw.sip_to_cpim),
    ] {
        metrics::gauge!(m::SUBSCRIPTIONS_ACTIVE, "kind" => kind.as_str()).set(n as f64);
    }
    metrics::gauge!(m::PUBLICATIONS_ACTIVE).set(pa.publications as f64);
    metrics::gauge!(m::REGISTRATIONS_ACTIVE).set(pa.registrations as f64);
    let q = s.ops.adapter.stats();
    metrics::gauge!(m::ADAPTER_QUEUE_DEPTH).set(q.depth as f64);
    metrics::gauge!(m::ADAPTER_QUEUE_LIMIT).set(q.limit as f64);
    metrics::gauge!(m::ADAPTER_QUEUE_OLDEST_AGE).set(q.oldest_age.as_secs_f64());
    metrics::counter!(m::ADAPTER_QUEUE_COALESCED).absolute(q.coalesced);
    metrics::counter!(m::ADAPTER_QUEUE_REFUSED).absolute(q.refused);
    metrics::counter!(m::ADAPTER_QUEUE_OVER_LIMIT).absolute(q.over_limit);
    metrics::counter!(m::ADAPTER_DELIVERY_FAILURES).absolute(s.ops.adapter.failures());
    metrics::gauge!(m::STORE_SIZE_BYTES).set(s.ops.store.size_on_disk() as f64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
}

/// `{"subscriptions": [...]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionList {
    pub subscriptions: Vec<SubscriptionView>,
    /// More matched than `limit`; narrow the filter.
    pub truncated: bool,
}

#[utoipa::path(get, path = "/admin/v1/presentities",
    responses((status = 200, body = [PresentitySummary]), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_presentities(State(s): State<AppState>) -> axum::Json<Vec<PresentitySummary>> {
    axum::Json(s.presence.presentities().await)
}

#[utoipa::path(get, path = "/admin/v1/presentities/{presentity}",
    params(("presentity" = String, Path, description = "Local presentity URI, percent-encoded")),
    responses((status = 200, body = PresentityView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn show_presentity(
    State(s): State<AppState>,
    Path(presentity): Path<String>,
) -> Result<axum::Json<PresentityView>, HttpError> {
    let aor = local_aor(&s, &presentity)?;
    s.presence
        .presentity(&aor)
        .await
        .map(axum::Json)
        .ok_or_else(|| {
            HttpError(
                StatusCode::NOT_FOUND,
                "unknown_presentity",
                format!("nothing is held for {aor}"),
            )
        })
}

#[utoipa::path(get, path = "/admin/v1/subscriptions", params(SubscriptionFilter),
    responses((status = 200, body = SubscriptionList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_subscriptions(
    State(s): State<AppState>,
    filter: Result<Query<SubscriptionFilter>, QueryRejection>,
) -> Result<axum::Json<SubscriptionList>, HttpError> {
    let Query(filter) =
        filter.map_err(|e| HttpError(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let limit = filter.limit();
    let mut subscriptions = s.presence.subscriptions(filter.clone()).await;
    subscriptions.extend(s.gateway.subscriptions(filter).await);
    let truncated = subscriptions.len() > limit;
    subscriptions.truncate(limit);
    Ok(axum::Json(SubscriptionList {
        subscriptions,
        truncated,
    }))
}

#[utoipa::path(get, path = "/admin/v1/dialogs/{id}",
    params(("id" = String, Path, description = "Subscription id (Call-ID;local-tag;remote-tag), percent-encoded")),
    responses((status = 200, body = DialogView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn show_dialog(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<DialogView>, HttpError> {
    if let Some(d) = s.presence.dialog(&id).await {
        return Ok(axum::Json(d));
    }
    s.gateway.dialog(&id).await.map(axum::Json).ok_or_else(|| {
        HttpError(
            StatusCode::NOT_FOUND,
            "unknown_dialog",
            format!("no subscription dialog {id}"),
        )
    })
}

/// Counts every answered request by route pattern and status.
async fn count_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    metrics::counter!(crate::metrics::HTTP_REQUESTS, "route" => route, "status" => resp.status().as_u16().to_string())
        .increment(1);
    resp
}

/// Bearer-token check for `/cpim` and `/admin` (RFC 6750).
async fn auth(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &s.token {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
        if !ok {
            let mut r = HttpError(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token".into(),
            )
            .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(OpenApi)]
#[openapi(
    info(title = "sip-cpim-gateway CPIM API", description = "The adapter contract of design §4: CPIM subscribe, unsubscribe and notify as JSON over HTTP."),
    paths(subscribe, unsubscribe, notify, presence, list_policies, put_policy, delete_policy,
        list_publishers, put_publisher, delete_publisher,
        list_presentities, show_presentity, list_subscriptions, show_dialog, healthz, readyz, metrics_text),
    components(schemas(SubscribeRequest, UnsubscribeRequest, NotifyRequest, Presence, TupleView, CpimResponse, Status, ErrorBody, ErrorDetail, PolicyRule, PolicyUpdate, PolicyList, PolicyAction,
        PublisherList, PublisherGrant,
        PresentitySummary, PresentityView, RegistrationView, PublicationView, SubscriptionView, SubscriptionKind, DialogView, SubscriptionList, Readiness)),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The router of the HTTP listener.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/cpim/v1/subscribe", post(subscribe))
        .route("/cpim/v1/unsubscribe", post(unsubscribe))
        .route("/cpim/v1/notify", post(notify))
        .route("/cpim/v1/presence/{presentity}", get(presence))
        .route("/admin/v1/policies/{presentity}", get(list_policies))
        .route(
            "/admin/v1/policies/{presentity}/{watcher}",
            axum::routing::put(put_policy).delete(delete_policy),
        )
        .route("/admin/v1/publishers/{presentity}", get(list_publishers))
        .route(
            "/admin/v1/publishers/{presentity}/{publisher}",
            axum::routing::put(put_publisher).delete(delete_publisher),
        )
        .route("/admin/v1/presentities", get(list_presentities))
        .route("/admin/v1/presentities/{presentity}", get(show_presentity))
        .route("/admin/v1/subscriptions", get(list_subscriptions))
        .route("/admin/v1/dialogs/{id}", get(show_dialog))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .merge(api)
        .route("/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route_layer(middleware::from_fn(count_requests))
        .fallback(|| async {
            HttpError(StatusCode::NOT_FOUND, "not_found", "no such route".into())
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serves `router` on `listener` until `stop` is notified.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    stop: std::sync::Arc<tokio::sync::Notify>,
) -> std::io::Result<()> {
    // Graceful: once `stop` is notified no new connection is accepted and
    // requests in progress finish.
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { stop.notified().await })
        .await
}
