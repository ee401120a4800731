//! The adapter's configuration: one TOML file, every key optional, unknown
//! keys refused, and `XMPP_ADAPTER__SECTION__KEY` environment overrides
//! (the same rule as the gateway's `GATEWAY__…`, docs/configuration.md).

use serde::Deserialize;
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: {1}")]
    Parse(String, String),
    #[error("environment variable {0}: {1}")]
    Env(String, String),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub adapter: AdapterSection,
    pub gateway: GatewaySection,
    pub xmpp: XmppSection,
    pub log: LogSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdapterSection {
    /// HTTP listener: the CPIM calls of the gateway under `/cpim`, `/healthz`, `/metrics`.
    pub listen: String,
    /// The durable state (JSON, replaced atomically).
    pub state_path: String,
    /// CPIM subscription duration asked of the gateway; renewed at 80%.
    pub subscription_duration_s: u32,
    /// Retry delays of CPIM subscribes after a transient failure.
    pub retry_min_s: u64,
    pub retry_max_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    /// Base URL of the gateway's HTTP API (`/cpim/v1/...` is appended).
    pub url: String,
    /// Bearer token for `/cpim/v1` (the gateway's `[cpim] token`).
    pub token: String,
    /// One CPIM call at most this long (a subscribe waits for the SIP final
    /// response: Timer F is 32 s).
    pub timeout_ms: u64,
    /// Retry delays of notifies and unsubscribes the gateway did not take.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentConfig {
    /// The SIP domain served (Prosody: `Component "example.com"`).
    pub domain: String,
    /// The XEP-0114 shared secret.
    pub secret: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XmppSection {
    /// The XMPP server's component port (XEP-0114), `IP:PORT` or `host:port`.
    pub server: String,
    /// One component connection per SIP domain.
    pub components: Vec<ComponentConfig>,
    /// Reconnection backoff.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A `tracing` filter; `RUST_LOG` replaces it when set.
    pub level: String,
}

impl Default for AdapterSection {
    fn default() -> Self {
        AdapterSection {
            listen: "127.0.0.1:9090".into(),
            state_path: "./xmpp-adapter-state.json".into(),
            subscription_duration_s: 86_400,
            retry_min_s: 2,
            retry_max_s: 300,
        }
    }
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            url: "http://127.0.0.1:8080".into(),
            token: String::new(),
            timeout_ms: 35_000,
            retry_initial_ms: 500,
            retry_max_ms: 30_000,
        }
    }
}

impl Default for XmppSection {
    fn default() -> Self {
        XmppSection {
            server: "127.0.0.1:5347".into(),
            components: vec![],
            reconnect_min_ms: 500,
            reconnect_max_ms: 30_000,
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: "info".into(),
        }
    }
}

const PREFIX: &str = "XMPP_ADAPTER__";

impl Config {
    /// Reads `path` (a missing file is an error) and applies the environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read(path.display().to_string(), e))?;
        Config::parse_with_env(&text, &path.display().to_string(), std::env::vars())
    }

    pub fn parse_with_env(
        text: &str,
        name: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse(name.into(), e.to_string()))?;
        for (k, v) in env {
            let Some(rest) = k.strip_prefix(PREFIX) else {
                continue;
            };
            let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if parts.iter().any(String::is_empty) {
                return Err(ConfigError::Env(k, "empty name segment".into()));
            }
            // A TOML value if it reads as one, else a plain string.
            let value = format!("v = {v}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(v.clone()));
            let mut table = &mut doc;
            for p in &parts[..parts.len() - 1] {
                let entry = table
                    .entry(p.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                table = entry
                    .as_table_mut()
                    .ok_or_else(|| ConfigError::Env(k.clone(), format!("{p} is not a table")))?;
            }
            table.insert(parts[parts.len() - 1].clone(), value);
        }
        let cfg: Config = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(name.into(), e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut errs = vec![];
        if self.adapter.listen.parse::<std::net::SocketAddr>().is_err() {
            errs.push(format!(
                "adapter.listen: {:?} is not IP:PORT",
                self.adapter.listen
            ));
        }
        if !(self.gateway.url.starts_with("http://") || self.gateway.url.starts_with("https://")) {
            errs.push(format!(
                "gateway.url: {:?} is not an http(s) URL",
                self.gateway.url
            ));
        }
        if self.xmpp.components.is_empty() {
            errs.push("xmpp.components: at least one { domain, secret } is needed".into());
        }
        for c in &self.xmpp.components {
            if c.domain.is_empty() || c.domain.contains(['@', '/']) {
                errs.push(format!(
                    "xmpp.components: {:?} is not a domain name",
                    c.domain
                ));
            }
        }
        if self.adapter.subscription_duration_s < 60 {
            errs.push("adapter.subscription_duration_s: at least 60".into());
        }
        if self.adapter.retry_min_s == 0 || self.adapter.retry_min_s > self.adapter.retry_max_s {
            errs.push("adapter.retry_min_s: need 0 < retry_min_s <= retry_max_s".into());
        }
        if self.gateway.retry_initial_ms == 0
            || self.gateway.retry_initial_ms > self.gateway.retry_max_ms
        {
            errs.push("gateway.retry_initial_ms: need 0 < retry_initial_ms <= retry_max_ms".into());
        }
        if self.xmpp.reconnect_min_ms == 0
            || self.xmpp.reconnect_min_ms > self.xmpp.reconnect_max_ms
        {
            errs.push(
                "xmpp.reconnect_min_ms: need 0 < reconnect_min_ms <= reconnect_max_ms".into(),
            );
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errs.join("\n")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[[xmpp.components]]\ndomain = \"example.com\"\nsecret = \"s\"\n";

    #[test]
    fn defaults_and_env_overrides() {
        let env = vec![
            ("XMPP_ADAPTER__GATEWAY__TOKEN".to_owned(), "t0k".to_owned()),
            (
                "XMPP_ADAPTER__ADAPTER__SUBSCRIPTION_DURATION_S".to_owned(),
                "600".to_owned(),
            ),
            ("OTHER".to_owned(), "x".to_owned()),
        ];
        let c = Config::parse_with_env(BASE, "t", env).unwrap();
        assert_eq!(c.gateway.token, "t0k");
        assert_eq!(c.adapter.subscription_duration_s, 600);
        assert_eq!(c.adapter.listen, "127.0.0.1:9090");
        assert_eq!(c.xmpp.components[0].domain, "example.com");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(Config::parse_with_env("[adapter]\nlisen = \"x\"\n", "t", vec![]).is_err());
        let env = vec![(
            "XMPP_ADAPTER__ADAPTER__LISTEN".to_owned(),
            "localhost:1".to_owned(),
        )];
        assert!(matches!(
            Config::parse_with_env(BASE, "t", env),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            Config::parse_with_env("", "t", vec![]),
            Err(ConfigError::Invalid(_))
        ));
    }
}
