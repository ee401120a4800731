//! API authentication: the bearer token of `/cpim` and `/admin` (RFC 6750).
//! SIP digest authentication is `crate::auth`.

use super::{ApiFault, AppState};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

/// Passes a request on when no token is configured or it carries
/// `Authorization: Bearer <token>`; else 401 `unauthorized` with
/// `WWW-Authenticate: Bearer`.
pub(super) async fn bearer(
    State(s): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiFault> {
    if let Some(token) = &s.token {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
        if !ok {
            return Err(ApiFault::Unauthorized);
        }
    }
    Ok(next.run(req).await)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"tok", b"tok"));
        assert!(!constant_time_eq(b"tok", b"tak"));
        assert!(!constant_time_eq(b"tok", b"toke"));
        assert!(!constant_time_eq(b"", b"tok"));
        assert!(constant_time_eq(b"", b""));
    }
}
