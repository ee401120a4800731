//! `/admin/v1`: watch policies, publisher grants and the read-only views
//! (presentities, subscriptions, dialogs) of what the agents hold. The view
//! types themselves are `crate::admin`, shared with the agents that fill
//! them.

use super::extract::{ApiPath, json_body, local_presentity, parse_uri};
use super::{ApiFault, AppState, ErrorBody};
use crate::admin::{
    DialogView, PresentitySummary, PresentityView, SubscriptionFilter, SubscriptionView,
};
use crate::presence::aor_key;
use crate::presence::records::PolicyAction;
use crate::sip::Scheme;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

/// The schemes an administered presentity may be named with.
const PRESENTITY_SCHEMES: &[Scheme] = &[Scheme::Pres, Scheme::Sip, Scheme::Sips];

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

/// `{"subscriptions": [...]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionList {
    pub subscriptions: Vec<SubscriptionView>,
    /// More matched than `limit`; narrow the filter.
    pub truncated: bool,
}

/// A local presentity's AOR key, or 400/404.
fn local_aor(s: &AppState, uri: &str) -> Result<String, ApiFault> {
    Ok(aor_key(&local_presentity(s, uri, PRESENTITY_SCHEMES)?))
}

/// A watcher's (or publisher's) AOR key, or 400.
fn watcher_aor(uri: &str) -> Result<String, ApiFault> {
    let u = parse_uri(uri)?;
    if !matches!(
        u.scheme,
        Scheme::Pres | Scheme::Sip | Scheme::Sips | Scheme::Im
    ) || u.host.is_none()
    {
        return Err(ApiFault::InvalidUri {
            uri: uri.to_owned(),
            reason: "expected a pres:, im:, sip: or sips: URI".into(),
        });
    }
    Ok(aor_key(&u))
}

/// The store did not commit a policy change.
fn store_failure() -> ApiFault {
    ApiFault::Unavailable("store failure".into())
}

#[utoipa::path(get, path = "/admin/v1/policies/{presentity}",
    params(("presentity" = String, Path, description = "Local presentity URI, percent-encoded", pattern = r"^(sip|sips|pres|im):[A-Za-z0-9._~+-]+@([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?$")),
    responses((status = 200, body = PolicyList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn list_policies(
    State(s): State<AppState>,
    ApiPath(presentity): ApiPath<String>,
) -> Result<axum::Json<PolicyList>, ApiFault> {
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
    params(("presentity" = String, Path, description = "Local presentity URI, percent-encoded", pattern = r"^(sip|sips|pres|im):[A-Za-z0-9._~+-]+@([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?$"),
           ("watcher" = String, Path, description = "Watcher URI (sip:, sips:, pres: or im:), percent-encoded", pattern = r"^(sip|sips|pres|im):[A-Za-z0-9._~+-]+@([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?$")),
    responses((status = 200, description = "Stored and applied to existing subscriptions", body = PolicyRule),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 408, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn put_policy(
    State(s): State<AppState>,
    ApiPath((presentity, watcher)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<PolicyRule>, ApiFault> {
    let aor = local_aor(&s, &presentity)?;
    let w = watcher_aor(&watcher)?;
    let update: PolicyUpdate = json_body(&headers, body)?;
    if !s.presence.set_policy(&aor, &w, Some(update.action)).await {
        return Err(store_failure());
    }
    Ok(axum::Json(PolicyRule {
        watcher: w,
        action: update.action,
    }))
}

#[utoipa::path(delete, path = "/admin/v1/policies/{presentity}/{watcher}",
    params(("presentity" = String, Path, description = "Local presentity URI, percent-encoded", pattern = r"^(sip|sips|pres|im):[A-Za-z0-9._~+-]+@([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?$"),
           ("watcher" = String, Path, description = "Watcher URI (sip:, sips:, pres: or im:), percent-encoded", pattern = r"^(sip|sips|pres|im):[A-Za-z0-9._~+-]+@([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?$")),
    responses((status = 204, description = "Removed; the default applies"), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn delete_policy(
    State(s): State<AppState>,
    ApiPath((presentity, watcher)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiFault> {
    let aor = local_aor(&s, &presentity)?;
    let w = watcher_aor(&watcher)?;
    let (rules, _) = s.presence.policies(&aor).await;
    if !rules.iter().any(|(x, _)| *x == w) {
        return Err(ApiFault::NoRule { watcher: w });
    }
    if !s.presence.set_policy(&aor, &w, None).await {
        return Err(store_failure());
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/admin/v1/publishers/{presentity}",
    params(("presentity" = String, Path, description = "Local presentity URI, percent-encoded", pattern = r"^(sip|sips|pres|im):[A-Za-z0-9._~+-]+@([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?$")),
    responses((status = 200, body = PublisherList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn list_publishers(
    State(s): State<AppState>,
    ApiPath(presentity): ApiPath<String>,
) -> Result<axum::Json<PublisherList>, ApiFault> {
    let aor = local_aor(&s, &presentity)?;
    let publishers = s.presence.publishers(&aor).await?;
    Ok(axum::Json(PublisherList {
        presentity: aor,
        publishers,
    }))
}

/// Grants `publisher` the right to PUBLISH for `presentity` (RFC 3903 §6
/// step 4); idempotent. Answered once the grant is durable.
#[utoipa::path(put, path = "/admin/v1/publishers/{presentity}/{publisher}",
    params(("presentity" = String, Path, description = "Local presentity URI, percent-encoded", pattern = r"^(sip|sips|pres|im):[A-Za-z0-9._~+-]+@([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?$"),
           ("publisher" = String, Path, description = "Publisher URI (sip:, sips:, pres: or im:), percent-encoded", pattern = r"^(sip|sips|pres|im):[A-Za-z0-9._~+-]+@([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?$")),
    responses((status = 200, description = "Granted (or already granted) and durable", body = PublisherGrant),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn put_publisher(
    State(s): State<AppState>,
    ApiPath((presentity, publisher)): ApiPath<(String, String)>,
) -> Result<axum::Json<PublisherGrant>, ApiFault> {
    let aor = local_aor(&s, &presentity)?;
    let p = watcher_aor(&publisher)?;
    s.presence.set_publisher(&aor, &p, true).await?;
    Ok(axum::Json(PublisherGrant {
        presentity: aor,
        publisher: p,
    }))
}

/// Revokes a grant. What the publisher already published stays until it
/// expires; nothing more from it is accepted.
#[utoipa::path(delete, path = "/admin/v1/publishers/{presentity}/{publisher}",
    params(("presentity" = String, Path, description = "Local presentity URI, percent-encoded", pattern = r"^(sip|sips|pres|im):[A-Za-z0-9._~+-]+@([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?$"),
           ("publisher" = String, Path, description = "Publisher URI (sip:, sips:, pres: or im:), percent-encoded", pattern = r"^(sip|sips|pres|im):[A-Za-z0-9._~+-]+@([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?$")),
    responses((status = 204, description = "Revoked and durable"), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, description = "No such grant, or not a local presentity", body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn delete_publisher(
    State(s): State<AppState>,
    ApiPath((presentity, publisher)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiFault> {
    let aor = local_aor(&s, &presentity)?;
    let p = watcher_aor(&publisher)?;
    // Checked and removed in one step on the agent task, so two DELETEs
    // racing get one 204 and one 404.
    if !s.presence.set_publisher(&aor, &p, false).await? {
        return Err(ApiFault::NoGrant {
            presentity: aor,
            publisher: p,
        });
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/admin/v1/presentities",
    responses((status = 200, body = [PresentitySummary]), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn list_presentities(
    State(s): State<AppState>,
) -> axum::Json<Vec<PresentitySummary>> {
    axum::Json(s.presence.presentities().await)
}

#[utoipa::path(get, path = "/admin/v1/presentities/{presentity}",
    params(("presentity" = String, Path, description = "Local presentity URI, percent-encoded", pattern = r"^(sip|sips|pres|im):[A-Za-z0-9._~+-]+@([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?$")),
    responses((status = 200, body = PresentityView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn show_presentity(
    State(s): State<AppState>,
    ApiPath(presentity): ApiPath<String>,
) -> Result<axum::Json<PresentityView>, ApiFault> {
    let aor = local_aor(&s, &presentity)?;
    match s.presence.presentity(&aor).await {
        Some(v) => Ok(axum::Json(v)),
        None => Err(ApiFault::UnknownPresentity(aor)),
    }
}

#[utoipa::path(get, path = "/admin/v1/subscriptions", params(SubscriptionFilter),
    responses((status = 200, body = SubscriptionList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn list_subscriptions(
    State(s): State<AppState>,
    filter: Result<Query<SubscriptionFilter>, QueryRejection>,
) -> Result<axum::Json<SubscriptionList>, ApiFault> {
    let Query(filter) = filter?;
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
    responses((status = 200, body = DialogView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn show_dialog(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<DialogView>, ApiFault> {
    if let Some(d) = s.presence.dialog(&id).await {
        return Ok(axum::Json(d));
    }
    match s.gateway.dialog(&id).await {
        Some(d) => Ok(axum::Json(d)),
        None => Err(ApiFault::UnknownDialog(id)),
    }
}
