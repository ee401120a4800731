//! The operations endpoints: `/healthz`, `/readyz`, `/metrics`, the
//! OpenAPI document at `/openapi.json`, and the request counter every
//! route passes through.

use super::admin::{
    __path_delete_policy, __path_delete_publisher, __path_list_policies, __path_list_presentities,
    __path_list_publishers, __path_list_subscriptions, __path_put_policy, __path_put_publisher,
    __path_show_dialog, __path_show_presentity,
};
use super::cpim::{__path_notify, __path_presence, __path_subscribe, __path_unsubscribe};
use super::{
    AppState, ErrorBody, ErrorDetail, PolicyList, PolicyRule, PolicyUpdate, PublisherGrant,
    PublisherList, SubscriptionList,
};
use crate::admin::{
    DialogView, PresentitySummary, PresentityView, PublicationView, RegistrationView,
    SubscriptionKind, SubscriptionView,
};
use crate::cpim::{
    CpimResponse, NotifyRequest, Presence, Status, SubscribeRequest, TupleView, UnsubscribeRequest,
};
use crate::presence::records::PolicyAction;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(title = "sip-cpim-gateway CPIM API", description = "The adapter contract of design §4: CPIM subscribe, unsubscribe and notify as JSON over HTTP."),
    paths(subscribe, unsubscribe, notify, presence, list_policies, put_policy, delete_policy,
        list_publishers, put_publisher, delete_publisher,
        list_presentities, show_presentity, list_subscriptions, show_dialog, healthz, readyz, metrics_text),
    components(schemas(SubscribeRequest, UnsubscribeRequest, NotifyRequest, Presence, TupleView, CpimResponse, Status, ErrorBody, ErrorDetail, PolicyRule, PolicyUpdate, PolicyList, PolicyAction,
        PublisherList, PublisherGrant,
        PresentitySummary, PresentityView, RegistrationView, PublicationView, SubscriptionView, SubscriptionKind, DialogView, SubscriptionList, Readiness)),
    modifiers(&Security, &NotifyConditions)
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

/// What `POST /cpim/v1/notify` requires besides its fields' own types
/// (docs/cpim-api.md; `check_notify` in the gateway): unless `state` is
/// `terminated`, a document (`presence.body` or `presence.tuples`) and no
/// `reason`. utoipa has no words for a condition between fields, so the
/// JSON Schema 2020-12 `if`/`then`/`else` (§10.2.2) are written here.
struct NotifyConditions;

impl utoipa::Modify for NotifyConditions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::Schema;
        let Some(RefOr::T(Schema::Object(o))) = openapi
            .components
            .as_mut()
            .and_then(|c| c.schemas.get_mut("NotifyRequest"))
        else {
            return;
        };
        let conditions = serde_json::json!({
            "if": {"required": ["state"], "properties": {"state": {"const": "terminated"}}},
            "then": true,
            "else": {
                "not": {"required": ["reason"]},
                "properties": {"presence": {"anyOf": [
                    {"required": ["body"], "properties": {"body": {"type": "string"}}},
                    {"required": ["tuples"], "properties": {"tuples": {"type": "array"}}}
                ]}}
            }
        });
        let ext = o.extensions.get_or_insert_with(Default::default);
        if let serde_json::Value::Object(m) = conditions {
            // Inserted as they are, not through `Extensions::add` (which
            // would prefix `x-`): these are schema keywords, not extensions.
            ext.extend(m);
        }
    }
}

pub(super) async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        ApiDoc::openapi().to_pretty_json().unwrap_or_default(),
    )
}

/// Liveness: the process answers HTTP.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive", body = String)))]
pub(super) async fn healthz() -> impl IntoResponse {
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
pub(super) async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
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
pub(super) async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
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

/// Counts every answered request by route pattern and status.
pub(super) async fn count_requests(req: Request, next: Next) -> Response {
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
