//! The failures of the HTTP API and their one mapping to an HTTP answer.

use crate::gateway::ApiError;
use crate::presence::GrantError;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

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

/// Why an API request was refused, named by what went wrong.
///
/// Invariant: every variant answers a 4xx or 5xx status with the JSON body
/// `{"error": {"code": "...", "message": "..."}}` ([`ErrorBody`]), `code`
/// from [`ApiFault::code`] and `message` the variant's `Display`. The
/// `IntoResponse` impl below is the only place a failure becomes an HTTP
/// response: handlers and middleware return `Result<_, ApiFault>` and never
/// build a failure answer themselves, and axum's own refusals come here too
/// (extractor rejections through `From`, unknown routes and methods through
/// the router's fallbacks). A refused request changes nothing.
#[derive(Debug, thiserror::Error)]
pub enum ApiFault {
    /// The body is not `application/json` (415 `unsupported_media_type`).
    #[error("expected application/json")]
    UnsupportedMediaType,
    /// The body could not be read: over [`super::MAX_BODY`] (413) or broken
    /// off (400); `invalid_body`.
    #[error("{}", .0.body_text())]
    InvalidBody(#[from] BytesRejection),
    /// The body is not JSON, or not the JSON the route takes (unknown or
    /// missing fields, wrong types): 400 `invalid_json`.
    #[error("{0}")]
    InvalidJson(#[from] serde_json::Error),
    /// A path parameter that does not decode (a percent-encoding that is
    /// not UTF-8): 400 `invalid_path` (500 if the route has no such
    /// parameter, a bug).
    #[error("{}", .0.body_text())]
    InvalidPath(#[from] PathRejection),
    /// The query string does not parse: 400 `invalid_query`.
    #[error("{}", .0.body_text())]
    InvalidQuery(#[from] QueryRejection),
    /// Well-formed JSON the gateway refuses (e.g. a watcher that is not a
    /// URI): 400 `invalid_request`.
    #[error("{0}")]
    InvalidRequest(String),
    /// A URI in the path that does not parse or has the wrong scheme: 400
    /// `invalid_uri`.
    #[error("{uri}: {reason}")]
    InvalidUri { uri: String, reason: String },
    /// A presentity URI outside `local_domains`: 404 `not_local`.
    #[error("{0} is not a local presentity")]
    NotLocal(String),
    /// Nothing is held for this local presentity: 404 `unknown_presentity`.
    #[error("nothing is held for {0}")]
    UnknownPresentity(String),
    /// No subscription dialog with this id: 404 `unknown_dialog`.
    #[error("no subscription dialog {0}")]
    UnknownDialog(String),
    /// The presentity has no policy rule for this watcher: 404 `no_rule`.
    #[error("no rule for {watcher}")]
    NoRule { watcher: String },
    /// The publisher holds no grant for this presentity: 404 `no_grant`.
    #[error("{publisher} holds no grant to publish for {presentity}")]
    NoGrant {
        presentity: String,
        publisher: String,
    },
    /// No route matches the path: 404 `not_found`.
    #[error("no such route")]
    NoRoute,
    /// The route exists but does not serve this method: 405
    /// `method_not_allowed` (axum adds the `Allow` header).
    #[error("{0} is not allowed on this route")]
    MethodNotAllowed(Method),
    /// Missing or wrong bearer token: 401 `unauthorized`, with
    /// `WWW-Authenticate: Bearer` (RFC 6750 §3).
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// The store did not commit, or an agent has stopped: 503
    /// `unavailable`.
    #[error("{0}")]
    Unavailable(String),
    /// The request body did not arrive within `[cpim]
    /// http_body_timeout_ms` of its head: 408 `body_timeout` (RFC 9110
    /// §15.5.9); the connection is closed after the answer.
    #[error("request body not complete within {} ms", .0.as_millis())]
    BodyTimeout(std::time::Duration),
}

impl ApiFault {
    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiFault::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiFault::InvalidBody(e) => e.status(),
            ApiFault::InvalidPath(e) => e.status(),
            ApiFault::InvalidJson(_)
            | ApiFault::InvalidQuery(_)
            | ApiFault::InvalidRequest(_)
            | ApiFault::InvalidUri { .. } => StatusCode::BAD_REQUEST,
            ApiFault::NotLocal(_)
            | ApiFault::UnknownPresentity(_)
            | ApiFault::UnknownDialog(_)
            | ApiFault::NoRule { .. }
            | ApiFault::NoGrant { .. }
            | ApiFault::NoRoute => StatusCode::NOT_FOUND,
            ApiFault::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiFault::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiFault::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiFault::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The stable machine-readable `code` of the body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiFault::UnsupportedMediaType => "unsupported_media_type",
            ApiFault::InvalidBody(_) => "invalid_body",
            ApiFault::InvalidJson(_) => "invalid_json",
            ApiFault::InvalidPath(_) => "invalid_path",
            ApiFault::InvalidQuery(_) => "invalid_query",
            ApiFault::InvalidRequest(_) => "invalid_request",
            ApiFault::InvalidUri { .. } => "invalid_uri",
            ApiFault::NotLocal(_) => "not_local",
            ApiFault::UnknownPresentity(_) => "unknown_presentity",
            ApiFault::UnknownDialog(_) => "unknown_dialog",
            ApiFault::NoRule { .. } => "no_rule",
            ApiFault::NoGrant { .. } => "no_grant",
            ApiFault::NoRoute => "not_found",
            ApiFault::MethodNotAllowed(_) => "method_not_allowed",
            ApiFault::Unauthorized => "unauthorized",
            ApiFault::Unavailable(_) => "unavailable",
            ApiFault::BodyTimeout(_) => "body_timeout",
        }
    }
}

impl IntoResponse for ApiFault {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.to_string(),
            },
        };
        let mut r = (self.status(), axum::Json(body)).into_response();
        if let ApiFault::Unauthorized = self {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

impl From<ApiError> for ApiFault {
    fn from(e: ApiError) -> ApiFault {
        match e {
            ApiError::BadRequest(m) => ApiFault::InvalidRequest(m),
            ApiError::Unavailable(m) => ApiFault::Unavailable(m),
        }
    }
}

impl From<GrantError> for ApiFault {
    fn from(e: GrantError) -> ApiFault {
        ApiFault::Unavailable(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, Bytes};
    use axum::extract::{FromRequest, FromRequestParts, Path, Query};
    use axum::http::Request;
    use serde_json::{Value, json};

    /// The status, `WWW-Authenticate` and JSON body `fault` answers.
    async fn answer(fault: ApiFault) -> (u16, Option<String>, Value) {
        let r = fault.into_response();
        let status = r.status().as_u16();
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let auth = r
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, auth, serde_json::from_slice(&body).unwrap())
    }

    fn body(code: &str, message: &str) -> Value {
        json!({"error": {"code": code, "message": message}})
    }

    #[tokio::test]
    async fn every_variant_is_a_json_error_with_its_status() {
        let too_big = Bytes::from_request(
            Request::new(Body::from(vec![b'a'; 2 * 1024 * 1024 + 1])),
            &(),
        )
        .await
        .unwrap_err();
        let too_big_text = too_big.body_text();
        let bad_json = serde_json::from_slice::<Value>(b"{not json").unwrap_err();
        let bad_json_text = bad_json.to_string();
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Q {
            limit: usize,
        }
        let (mut parts, ()) = Request::get("/x?limit=x").body(()).unwrap().into_parts();
        let bad_query = Query::<Q>::from_request_parts(&mut parts, &())
            .await
            .unwrap_err();
        let bad_query_text = bad_query.body_text();
        // No route matched, so no parameters: the one path rejection a
        // unit test can make (the 400 of undecodable parameters is in
        // tests/admin.rs, over a server).
        let (mut parts, ()) = Request::get("/x").body(()).unwrap().into_parts();
        let no_params = Path::<String>::from_request_parts(&mut parts, &())
            .await
            .unwrap_err();
        let no_params_text = no_params.body_text();
        let cases = [
            (
                ApiFault::UnsupportedMediaType,
                415,
                body("unsupported_media_type", "expected application/json"),
            ),
            (
                ApiFault::InvalidBody(too_big),
                413,
                body("invalid_body", &too_big_text),
            ),
            (
                ApiFault::from(bad_json),
                400,
                body("invalid_json", &bad_json_text),
            ),
            (
                ApiFault::from(no_params),
                500,
                body("invalid_path", &no_params_text),
            ),
            (
                ApiFault::from(bad_query),
                400,
                body("invalid_query", &bad_query_text),
            ),
            (
                ApiFault::from(ApiError::BadRequest("watcher: not a URI".into())),
                400,
                body("invalid_request", "watcher: not a URI"),
            ),
            (
                ApiFault::InvalidUri {
                    uri: "carol@".into(),
                    reason: "no scheme".into(),
                },
                400,
                body("invalid_uri", "carol@: no scheme"),
            ),
            (
                ApiFault::NotLocal("pres:x@elsewhere.org".into()),
                404,
                body(
                    "not_local",
                    "pres:x@elsewhere.org is not a local presentity",
                ),
            ),
            (
                ApiFault::UnknownPresentity("sip:carol@example.com".into()),
                404,
                body(
                    "unknown_presentity",
                    "nothing is held for sip:carol@example.com",
                ),
            ),
            (
                ApiFault::UnknownDialog("c;l;r".into()),
                404,
                body("unknown_dialog", "no subscription dialog c;l;r"),
            ),
            (
                ApiFault::NoRule {
                    watcher: "sip:bob@example.net".into(),
                },
                404,
                body("no_rule", "no rule for sip:bob@example.net"),
            ),
            (
                ApiFault::NoGrant {
                    presentity: "sip:carol@example.com".into(),
                    publisher: "sip:dave@example.com".into(),
                },
                404,
                body(
                    "no_grant",
                    "sip:dave@example.com holds no grant to publish for sip:carol@example.com",
                ),
            ),
            (ApiFault::NoRoute, 404, body("not_found", "no such route")),
            (
                ApiFault::MethodNotAllowed(Method::PATCH),
                405,
                body("method_not_allowed", "PATCH is not allowed on this route"),
            ),
            (
                ApiFault::Unauthorized,
                401,
                body("unauthorized", "missing or wrong bearer token"),
            ),
            (
                ApiFault::from(ApiError::Unavailable("gateway stopped".into())),
                503,
                body("unavailable", "gateway stopped"),
            ),
            (
                ApiFault::from(GrantError::Unavailable),
                503,
                body(
                    "unavailable",
                    "presence agent unavailable: store failure, or the agent stopped",
                ),
            ),
            (
                ApiFault::BodyTimeout(std::time::Duration::from_millis(30_000)),
                408,
                body("body_timeout", "request body not complete within 30000 ms"),
            ),
        ];
        for (fault, status, json) in cases {
            let what = format!("{fault:?}");
            let (got, auth, got_json) = answer(fault).await;
            assert_eq!(got, status, "{what}");
            assert_eq!(got_json, json, "{what}");
            assert_eq!(auth.is_some(), status == 401, "{what}");
        }
        let (_, auth, _) = answer(ApiFault::Unauthorized).await;
        assert_eq!(auth.as_deref(), Some("Bearer"));
    }
}
