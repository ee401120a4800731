//! The CPIM JSON API client towards the gateway (docs/cpim-api.md,
//! "Inbound: served by the gateway"). Nothing else of the gateway is used.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CpimError {
    /// No answer: connection refused, reset, or timed out.
    #[error("gateway unreachable: {0}")]
    Unreachable(String),
    /// An HTTP error status with the gateway's error JSON.
    #[error("gateway answered HTTP {0}: {1}")]
    Http(u16, String),
    #[error("gateway answer not understood: {0}")]
    BadAnswer(String),
}

impl CpimError {
    /// Worth retrying: the gateway is away or overloaded (503), not a
    /// request it refuses (4xx).
    pub fn retryable(&self) -> bool {
        match self {
            CpimError::Unreachable(_) => true,
            CpimError::Http(code, _) => *code >= 500 || *code == 401 || *code == 429,
            CpimError::BadAnswer(_) => true,
        }
    }
}

/// The CPIM answer (`status`, `transID`, `duration`, `code`, `reason`).
#[derive(Debug, Clone, Deserialize)]
pub struct CpimAnswer {
    pub status: String,
    #[serde(default)]
    pub duration: Option<u32>,
    #[serde(default)]
    pub code: Option<u16>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Serialize)]
struct SubscribeBody<'a> {
    watcher: &'a str,
    target: &'a str,
    duration: u32,
}

#[derive(Serialize)]
struct UnsubscribeBody<'a> {
    watcher: &'a str,
    target: &'a str,
}

#[derive(Serialize)]
struct PresenceBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
}

#[derive(Serialize)]
struct NotifyBody<'a> {
    watcher: &'a str,
    target: &'a str,
    presence: PresenceBody<'a>,
    /// `terminated` ends the SIP watchers' subscriptions (docs/cpim-api.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

#[derive(Clone)]
pub struct GatewayClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl GatewayClient {
    pub fn new(base: &str, token: &str, timeout: Duration) -> Result<GatewayClient, CpimError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| CpimError::Unreachable(e.to_string()))?;
        Ok(GatewayClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    async fn post<T: Serialize>(&self, op: &str, body: &T) -> Result<CpimAnswer, CpimError> {
        let mut req = self
            .http
            .post(format!("{}/cpim/v1/{op}", self.base))
            .json(body);
        if !self.token.is_empty() {
            req = req.bearer_auth(&self.token);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| CpimError::Unreachable(e.to_string()))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| CpimError::Unreachable(e.to_string()))?;
        if !status.is_success() {
            return Err(CpimError::Http(status.as_u16(), text));
        }
        serde_json::from_str(&text).map_err(|e| CpimError::BadAnswer(format!("{e}: {text}")))
    }

    /// `POST /cpim/v1/subscribe` (waits for the SIP final response).
    pub async fn subscribe(
        &self,
        watcher: &str,
        target: &str,
        duration: u32,
    ) -> Result<CpimAnswer, CpimError> {
        self.post(
            "subscribe",
            &SubscribeBody {
                watcher,
                target,
                duration,
            },
        )
        .await
    }

    /// `POST /cpim/v1/unsubscribe`.
    pub async fn unsubscribe(&self, watcher: &str, target: &str) -> Result<CpimAnswer, CpimError> {
        self.post("unsubscribe", &UnsubscribeBody { watcher, target })
            .await
    }

    /// `POST /cpim/v1/notify` with a PIDF body.
    pub async fn notify(
        &self,
        watcher: &str,
        target: &str,
        pidf: &str,
    ) -> Result<CpimAnswer, CpimError> {
        self.post(
            "notify",
            &NotifyBody {
                watcher,
                target,
                presence: PresenceBody {
                    content_type: Some("application/pidf+xml"),
                    body: Some(pidf),
                },
                state: None,
                reason: None,
            },
        )
        .await
    }

    /// `POST /cpim/v1/notify` with `state: terminated`: the SIP watcher's
    /// subscription ends with its final NOTIFY carrying `reason`.
    pub async fn terminate(
        &self,
        watcher: &str,
        target: &str,
        reason: &str,
    ) -> Result<CpimAnswer, CpimError> {
        self.post(
            "notify",
            &NotifyBody {
                watcher,
                target,
                presence: PresenceBody {
                    content_type: None,
                    body: None,
                },
                state: Some("terminated"),
                reason: Some(reason),
            },
        )
        .await
    }
}
