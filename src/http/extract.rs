//! Requests into typed inputs, each failure an [`ApiFault`]: path
//! parameters, strict JSON bodies and presentity URIs.

use super::{ApiFault, AppState};
use crate::sip::{Scheme, Uri};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;

/// [`Path`] whose rejection (e.g. a percent-encoding that is not UTF-8) is
/// an [`ApiFault`], so it is answered with the JSON error body too.
pub(super) struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiFault;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiFault> {
        let Path(t) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(t))
    }
}

/// The JSON body of a request: content type checked, size limited, parsed
/// strictly (unknown fields refused).
pub(super) fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiFault> {
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
        return Err(ApiFault::UnsupportedMediaType);
    }
    // Through a `Value` so that the body must be a JSON object: serde's
    // derived structs also take an array of their fields (`["pres:a@x",
    // "pres:b@y"]` as a subscribe), which the OpenAPI document does not
    // admit (issue 17 item 5).
    let v: serde_json::Value = serde_json::from_slice(&body?)?;
    if !v.is_object() {
        return Err(ApiFault::InvalidJson(serde::de::Error::custom(
            "expected a JSON object",
        )));
    }
    Ok(serde_json::from_value(v)?)
}

/// A URI from the request path, or 400 `invalid_uri`.
pub(super) fn parse_uri(uri: &str) -> Result<Uri, ApiFault> {
    Uri::parse_str(uri).map_err(|e| ApiFault::InvalidUri {
        uri: uri.to_owned(),
        reason: e.reason.into(),
    })
}

/// `uri` parsed, when it has one of `schemes` and a host in the state's
/// `local_domains`; else 400 `invalid_uri` or 404 `not_local`.
pub(super) fn local_presentity(
    s: &AppState,
    uri: &str,
    schemes: &[Scheme],
) -> Result<Uri, ApiFault> {
    let u = parse_uri(uri)?;
    let host = u.host.as_ref().map(|h| h.canonical()).unwrap_or_default();
    if !schemes.contains(&u.scheme)
        || !s
            .local_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(&host))
    {
        return Err(ApiFault::NotLocal(uri.to_owned()));
    }
    Ok(u)
}
