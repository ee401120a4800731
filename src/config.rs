//! `gateway.toml`: the configuration model (design §7). Every setting has a
//! default; unknown keys are errors.

use crate::sip::Limits;
use crate::transport::Proto;
pub use crate::transport::{Listener, StaticRoute, parse_listener};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A value is not acceptable; `line` is 0 when the value is a default
    /// or came from the environment.
    #[error("{path}:{line}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    /// Several of the above, one per line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Many(Vec<ConfigError>),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub sip: SipConfig,
    pub cpim: CpimConfig,
    pub presence: PresenceConfig,
    pub auth: AuthConfig,
    pub store: StoreConfig,
    pub cluster: ClusterConfig,
    pub log: LogConfig,
}

/// `[cluster]`: this node's part of a cluster on the PostgreSQL backend
/// (issue 18, docs/cluster.md). Ignored with `backend = "sled"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster: the holder of its leases.
    pub node: String,
    /// How many shards presentities are hashed over. The same on every
    /// node, and fixed once the database holds records.
    pub shards: u32,
    /// How long a lease lasts unless renewed (every third of it): how long
    /// a dead node's presentities wait for a survivor to take them.
    pub lease_ttl_s: u64,
    /// Every node's `node` name, in the same order on every node: shard
    /// `s` prefers `members[s mod N]` and falls back along the list. Empty:
    /// this node alone, holding every shard.
    pub members: Vec<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node: "gateway".into(),
            shards: 64,
            lease_ttl_s: 15,
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// `udp:HOST:PORT`, `tcp:HOST:PORT`, `tls:HOST:PORT`.
    pub listen: Vec<String>,
    pub local_domains: Vec<String>,
    pub cpim_domains: Vec<String>,
    pub routes: Vec<StaticRoute>,
    /// Host (name or IP) put in Via sent-by and Contact; empty: the
    /// listener's address.
    pub advertise: String,
    pub tls: TlsConfig,
    pub limits: Limits,
    pub transport: TransportSettings,
    pub timers: TimerSettings,
    pub overload: OverloadSettings,
}

/// `[sip.transport]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportSettings {
    /// Stream connections idle this long are closed. Between messages
    /// (keep-alive CRLFs, RFC 5626 §4.4.1) only this applies.
    pub idle_timeout_s: u64,
    /// A message (header section and body) must be complete this long
    /// after its first byte arrived, else the connection is closed: each
    /// trickled byte resets the idle timer, so without it one slow sender
    /// holds a slot for ever (issue 17 item 5).
    pub message_timeout_ms: u64,
    /// Open TCP/TLS connections at most (incoming and outgoing).
    pub max_connections: usize,
    /// Connections accepted from one source IP address at most, so one
    /// source cannot fill `max_connections`.
    pub max_connections_per_address: usize,
    pub connect_timeout_ms: u64,
    /// Requests larger than this go over TCP instead of UDP (RFC 3261 §18.1.1).
    pub udp_mtu_threshold: usize,
    /// UDP socket receive buffer in bytes (capped by net.core.rmem_max).
    pub udp_recv_buffer_bytes: usize,
}

impl Default for TransportSettings {
    fn default() -> Self {
        TransportSettings {
            idle_timeout_s: 300,
            message_timeout_ms: 5000,
            max_connections: 1024,
            max_connections_per_address: 32,
            connect_timeout_ms: 5000,
            udp_mtu_threshold: 1300,
            udp_recv_buffer_bytes: 4 * 1024 * 1024,
        }
    }
}

/// `[sip.overload]`: load shedding by queue delay (docs/operations.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OverloadSettings {
    /// The wait budget of a new request, from its arrival (the kernel's
    /// receive timestamp) to its answer: one whose age plus its expected
    /// wait exceeds it is answered 503 at admission, statelessly; an
    /// admitted one is shed by its agent past 1.5 times it (in-dialog
    /// requests are admitted up to that too). 0 turns shedding off. 1.5
    /// times it below T1, so that the answer comes before the client
    /// retransmits.
    pub max_queue_delay_ms: u64,
    /// The Retry-After of those 503s (RFC 3261 §21.5.4), in seconds.
    pub retry_after_s: u32,
    /// Requests in progress (admitted, not yet answered) past which a new
    /// request is answered 503 at admission, statelessly, whatever its
    /// expected wait; a request inside a dialog is admitted up to 1.5
    /// times it. Bounds memory when the wait cannot be estimated (the
    /// agents stalled). Not turned off by `max_queue_delay_ms = 0`.
    pub max_in_progress: usize,
}

impl Default for OverloadSettings {
    fn default() -> Self {
        OverloadSettings {
            max_queue_delay_ms: 300,
            retry_after_s: 2,
            max_in_progress: 16_384,
        }
    }
}

/// `[sip.timers]`: RFC 3261 T1, T2, T4.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimerSettings {
    pub t1_ms: u64,
    pub t2_ms: u64,
    pub t4_ms: u64,
}

impl Default for TimerSettings {
    fn default() -> Self {
        TimerSettings {
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
        }
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: vec!["udp:127.0.0.1:5060".into(), "tcp:127.0.0.1:5060".into()],
            local_domains: vec!["example.com".into()],
            cpim_domains: vec![],
            routes: vec![],
            advertise: String::new(),
            tls: TlsConfig::default(),
            limits: Limits::default(),
            transport: TransportSettings::default(),
            timers: TimerSettings::default(),
            overload: OverloadSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: String,
    pub key: String,
    /// PEM bundle of CAs trusted for outgoing TLS; empty: the system store.
    pub ca: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CpimConfig {
    pub listen: String,
    pub adapter_url: String,
    pub token: String,
    pub sip_header_scheme: String,
    /// How long a direct call to the adapter may take.
    pub adapter_timeout_ms: u64,
    /// Delivery retry backoff: first delay and cap.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// Notifications the durable adapter queue holds at most (issue 17).
    /// At the limit a presence notify supersedes the older one of its
    /// (watcher, target) stream; a change that nothing can make room for
    /// is refused (503) instead of growing the queue.
    pub adapter_max_pending: usize,
    /// Open HTTP connections at most; more are answered 503 and closed.
    pub http_max_connections: usize,
    /// Open HTTP connections from one source IP address at most.
    pub http_max_connections_per_address: usize,
    /// A request head must be complete this long after the connection
    /// opened or its previous response was sent; also the keep-alive idle
    /// timeout (hyper's `header_read_timeout`).
    pub http_header_timeout_ms: u64,
    /// A request body must be complete this long after its head.
    pub http_body_timeout_ms: u64,
}

impl Default for CpimConfig {
    fn default() -> Self {
        CpimConfig {
            listen: "127.0.0.1:8080".into(),
            adapter_url: "http://127.0.0.1:9090/cpim".into(),
            token: String::new(),
            sip_header_scheme: "sip".into(),
            adapter_timeout_ms: 5000,
            retry_initial_ms: 500,
            retry_max_ms: 30_000,
            adapter_max_pending: crate::delivery::DEFAULT_MAX_PENDING,
            http_max_connections: 1024,
            http_max_connections_per_address: 128,
            http_header_timeout_ms: 10_000,
            http_body_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    pub default_expires: u32,
    pub min_expires: u32,
    pub max_expires: u32,
    pub notify_min_interval_ms: u64,
    pub default_policy: String,
    /// Per-domain defaults, e.g. `{ "example.com" = "allow" }`.
    pub domain_policies: std::collections::BTreeMap<String, String>,
    pub subscribe_success_code: u16,
    /// Live subscriptions one watcher (From AOR) may hold at once, over all
    /// presentities and packages; 0 = no limit.
    pub max_subscriptions_per_watcher: usize,
    /// Live subscriptions the presence agent holds in all; 0 = no limit.
    pub max_subscriptions: usize,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            default_expires: 3600,
            min_expires: 60,
            max_expires: 86400,
            notify_min_interval_ms: 5000,
            default_policy: "confirm".into(),
            domain_policies: Default::default(),
            subscribe_success_code: 200,
            max_subscriptions_per_watcher: 100,
            max_subscriptions: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub enabled: bool,
    pub realm: String,
    /// Lines `user:realm:HA1` (32 hex digits: MD5; 64: SHA-256).
    pub credentials_file: String,
    /// A nonce older than this gets `stale=true`.
    pub nonce_ttl_s: u64,
    /// A request whose Date is further than this from now is refused (seed §9.4).
    pub date_skew_s: u64,
    /// Listeners (as written in `sip.listen`) on a trusted network: no challenge.
    pub trusted_listeners: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            realm: "example.com".into(),
            credentials_file: String::new(),
            nonce_ttl_s: 300,
            date_skew_s: 300,
            trusted_listeners: vec![],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sled` (embedded, the default) or `postgres` (issue 18: a database
    /// shared by the nodes of a cluster, docs/cluster.md).
    pub backend: String,
    /// The PostgreSQL connection string (`postgres://user:pass@host/db` or
    /// `host=… user=… dbname=…`); `backend = "postgres"` only.
    pub url: String,
    /// The sled directory; `backend = "sled"` only.
    pub path: String,
    /// sled's page cache; records beyond it are read from disk on use.
    pub cache_capacity_bytes: u64,
    /// Start even though the store (or some of its records) was found
    /// damaged and moved aside: with what is left, possibly nothing. Off:
    /// such a start is refused (exit status 3) until the operator restores
    /// a backup or sets this (issue 17, docs/operations.md).
    pub start_after_corruption: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: "sled".into(),
            url: String::new(),
            path: "./data".into(),
            cache_capacity_bytes: 4 * 1024 * 1024,
            start_after_corruption: false,
        }
    }
}

/// `[log]`: where the `tracing` output goes and how it looks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (human-readable) or `json` (one object per line).
    pub format: String,
    /// A `tracing` filter (`info`, `sip_cpim_gateway=debug,warn`); `RUST_LOG`
    /// overrides it when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

impl StoreConfig {
    /// How the store is opened.
    pub fn open_options(&self) -> crate::store::OpenOptions {
        crate::store::OpenOptions {
            cache_bytes: self.cache_capacity_bytes,
            start_after_corruption: self.start_after_corruption,
        }
    }
}

impl Config {
    /// Reads a file, applies `GATEWAY__SECTION__KEY` environment
    /// overrides, and validates; every problem is reported with its line.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let cfg = Self::parse_with_env(&text, path, std::env::vars())?;
        cfg.validate(path, &text)?;
        Ok(cfg)
    }

    /// Parses TOML text; syntax and unknown-key errors carry a line number.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Self::parse_with_env(text, path, std::iter::empty())
    }

    /// Parses TOML text, then applies overrides from `vars` named
    /// `GATEWAY__SECTION__KEY` (e.g. `GATEWAY__STORE__PATH=/tmp/x`,
    /// `GATEWAY__SIP__TLS__CERT=…`). A value that parses as a TOML value
    /// (number, boolean, array) is taken as such, anything else as a string.
    pub fn parse_with_env(
        text: &str,
        path: &Path,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let syntax = |e: toml::de::Error| {
            let line = e.span().map_or(0, |s| {
                text[..s.start.min(text.len())].matches('\n').count() + 1
            });
            ConfigError::Syntax {
                path: path.to_owned(),
                line,
                message: e.message().to_owned(),
            }
        };
        // The text alone first: its errors keep their line numbers.
        let base: Config = toml::from_str(text).map_err(syntax)?;
        let vars: Vec<(String, String)> =
            vars.filter(|(k, _)| k.starts_with("GATEWAY__")).collect();
        if vars.is_empty() {
            return Ok(base);
        }
        let mut value: toml::Table = toml::from_str(text).map_err(syntax)?;
        let mut from_env = Vec::new();
        for (var, raw) in vars {
            let Some(rest) = var.strip_prefix("GATEWAY__") else {
                continue;
            };
            let keys: Vec<String> = rest.split("__").map(|k| k.to_ascii_lowercase()).collect();
            if keys.iter().any(String::is_empty) {
                return Err(ConfigError::Env {
                    var,
                    message: "empty key segment".into(),
                });
            }
            let parsed = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(raw.clone()));
            let mut table = &mut value;
            for k in &keys[..keys.len() - 1] {
                let entry = table
                    .entry(k.clone())
                    .or_insert_with(|| toml::Value::Table(Default::default()));
                table = match entry {
                    toml::Value::Table(t) => t,
                    _ => {
                        return Err(ConfigError::Env {
                            var,
                            message: format!("{k} is not a section"),
                        });
                    }
                };
            }
            table.insert(keys[keys.len() - 1].clone(), parsed);
            from_env.push(var);
        }
        Config::deserialize(toml::Value::Table(value)).map_err(|e| {
            // An error from a value that came from the environment names it.
            match from_env.iter().find(|v| {
                e.message().contains(
                    &v["GATEWAY__".len()..]
                        .to_ascii_lowercase()
                        .replace("__", "."),
                )
            }) {
                Some(v) => ConfigError::Env {
                    var: v.clone(),
                    message: e.message().to_owned(),
                },
                None if !from_env.is_empty() && e.span().is_none() => ConfigError::Env {
                    var: from_env.join(", "),
                    message: e.message().to_owned(),
                },
                None => syntax(e),
            }
        })
    }

    /// A listener on an unspecified address without `advertise`: the
    /// gateway would put 0.0.0.0 into Via and Contact.
    fn advertise_needed(&self) -> bool {
        self.sip.advertise.trim().is_empty()
            && self
                .sip
                .listen
                .iter()
                .filter_map(|l| parse_listener(l).ok())
                .any(|l| l.addr.ip().is_unspecified())
    }

    /// The SIP listeners.
    pub fn listeners(&self) -> Result<Vec<Listener>, String> {
        self.sip.listen.iter().map(|s| parse_listener(s)).collect()
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let mut errors: Vec<ConfigError> = Vec::new();
        let mut bad = |key: &str, message: String| {
            errors.push(ConfigError::Invalid {
                path: path.to_owned(),
                line: line_of(text, key),
                key: key.to_owned(),
                message,
            })
        };
        let mut tls = false;
        for l in &self.sip.listen {
            match parse_listener(l) {
                Ok(l) => tls |= l.transport == Proto::Tls,
                Err(m) => bad("sip.listen", format!("{l:?}: {m}")),
            }
        }
        if tls {
            for (key, file) in [
                ("sip.tls.cert", &self.sip.tls.cert),
                ("sip.tls.key", &self.sip.tls.key),
            ] {
                if file.is_empty() {
                    bad(key, "required for a tls: listener".into());
                } else if !Path::new(file).is_file() {
                    bad(key, format!("{file:?} does not exist"));
                }
            }
        }
        if self.cpim.listen.parse::<SocketAddr>().is_err() {
            bad(
                "cpim.listen",
                format!("{:?} is not an IP address and port", self.cpim.listen),
            );
        }
        if self.auth.enabled {
            if self.auth.credentials_file.is_empty() {
                bad("auth.credentials_file", "required when auth.enabled".into());
            } else if let Err(m) = crate::auth::Credentials::load(
                Path::new(&self.auth.credentials_file),
                &self.auth.realm,
            ) {
                bad("auth.credentials_file", m);
            }
        }
        for t in &self.auth.trusted_listeners {
            if !self.sip.listen.iter().any(|l| l == t) {
                bad(
                    "auth.trusted_listeners",
                    format!("{t:?} is not one of sip.listen"),
                );
            }
        }
        let t = &self.sip.timers;
        if t.t1_ms == 0 || t.t2_ms < t.t1_ms || t.t4_ms == 0 {
            bad("sip.timers", "need 0 < t1_ms <= t2_ms and t4_ms > 0".into());
        }
        let st = &self.sip.transport;
        for (key, v) in [
            ("sip.transport.max_connections", st.max_connections),
            (
                "sip.transport.max_connections_per_address",
                st.max_connections_per_address,
            ),
            (
                "sip.overload.max_in_progress",
                self.sip.overload.max_in_progress,
            ),
            ("cpim.http_max_connections", self.cpim.http_max_connections),
            (
                "cpim.http_max_connections_per_address",
                self.cpim.http_max_connections_per_address,
            ),
        ] {
            if v == 0 {
                bad(key, "must be at least 1".into());
            }
        }
        // Below 100 ms a client on a slow link could not send one message;
        // above an hour the limit no longer limits anything.
        for (key, v) in [
            ("sip.transport.message_timeout_ms", st.message_timeout_ms),
            (
                "cpim.http_header_timeout_ms",
                self.cpim.http_header_timeout_ms,
            ),
            ("cpim.http_body_timeout_ms", self.cpim.http_body_timeout_ms),
        ] {
            if !(100..=3_600_000).contains(&v) {
                bad(key, "must be between 100 and 3600000 (ms)".into());
            }
        }
        if let Err(m) = crate::transport::Resolver::new(&self.sip.routes) {
            bad("sip.routes", m);
        }
        let p = &self.presence;
        if p.min_expires > p.default_expires || p.default_expires > p.max_expires {
            bad(
                "presence.default_expires",
                "need min_expires <= default_expires <= max_expires".into(),
            );
        }
        if !matches!(
            p.default_policy.as_str(),
            "allow" | "block" | "polite-block" | "confirm"
        ) {
            bad(
                "presence.default_policy",
                "expected allow, block, polite-block or confirm".into(),
            );
        }
        for (domain, action) in &p.domain_policies {
            if !matches!(
                action.as_str(),
                "allow" | "block" | "polite-block" | "confirm"
            ) {
                bad(
                    "presence.domain_policies",
                    format!("{domain}: expected allow, block, polite-block or confirm"),
                );
            }
        }
        if !matches!(p.subscribe_success_code, 200 | 202) {
            bad(
                "presence.subscribe_success_code",
                "expected 200 or 202".into(),
            );
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            bad("log.format", "expected \"text\" or \"json\"".into());
        }
        if self.log.level.trim().is_empty() {
            bad(
                "log.level",
                "empty (it would silence every log line)".into(),
            );
        } else if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.log.level) {
            bad("log.level", format!("not a tracing filter: {e}"));
        }
        if self.advertise_needed() {
            bad(
                "sip.advertise",
                "required when a listener is on 0.0.0.0 or [::] (Via and Contact need a reachable host)"
                    .into(),
            );
        }
        match reqwest::Url::parse(&self.cpim.adapter_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(u) => bad(
                "cpim.adapter_url",
                format!("scheme {:?}: expected http or https", u.scheme()),
            ),
            Err(e) => bad("cpim.adapter_url", format!("not a URL: {e}")),
        }
        if self.cpim.adapter_timeout_ms == 0 {
            bad("cpim.adapter_timeout_ms", "must be at least 1".into());
        }
        if self.cpim.retry_initial_ms == 0 {
            bad(
                "cpim.retry_initial_ms",
                "must be at least 1 (0 would retry in a tight loop)".into(),
            );
        }
        if self.cpim.retry_max_ms < self.cpim.retry_initial_ms {
            bad(
                "cpim.retry_max_ms",
                "must be at least cpim.retry_initial_ms".into(),
            );
        }
        if self.cpim.adapter_max_pending == 0 {
            bad(
                "cpim.adapter_max_pending",
                "must be at least 1 (the queue is always bounded)".into(),
            );
        }
        if self.store.cache_capacity_bytes < 1024 * 1024 {
            bad(
                "store.cache_capacity_bytes",
                "must be at least 1048576 (1 MiB)".into(),
            );
        }
        match self.store.backend.as_str() {
            "sled" => {}
            "postgres" if self.store.url.is_empty() => {
                bad("store.url", "required with backend = \"postgres\"".into())
            }
            "postgres" => {
                if let Err(e) = self.store.url.parse::<tokio_postgres::Config>() {
                    bad(
                        "store.url",
                        format!("not a PostgreSQL connection string: {e}"),
                    );
                }
            }
            other => bad(
                "store.backend",
                format!("{other:?}: expected \"sled\" or \"postgres\""),
            ),
        }
        if self.cluster.node.is_empty() {
            bad("cluster.node", "must not be empty".into());
        }
        if !self.cluster.members.is_empty() && !self.cluster.members.contains(&self.cluster.node) {
            bad(
                "cluster.members",
                format!("must list this node ({:?})", self.cluster.node),
            );
        }
        if self.cluster.members.len() as u64 > crate::delivery::SEQ_LANES {
            bad(
                "cluster.members",
                format!("at most {} nodes", crate::delivery::SEQ_LANES),
            );
        }
        if !(1..=65536).contains(&self.cluster.shards) {
            bad("cluster.shards", "must be between 1 and 65536".into());
        }
        if self.cluster.lease_ttl_s < 3 {
            bad(
                "cluster.lease_ttl_s",
                "must be at least 3 (renewed every third of it)".into(),
            );
        }
        if !matches!(self.cpim.sip_header_scheme.as_str(), "sip" | "pres") {
            bad(
                "cpim.sip_header_scheme",
                "expected \"sip\" or \"pres\"".into(),
            );
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(ConfigError::Many(errors)),
        }
    }
}

/// The line of `key` (`section.sub.leaf`) in `text`: the `leaf =` line
/// inside its `[section.sub]` table, else the table header; 0 if absent
/// (a default, or a value from the environment).
pub fn line_of(text: &str, key: &str) -> usize {
    let (section, leaf) = match key.rsplit_once('.') {
        Some((s, l)) => (s, l),
        None => ("", key),
    };
    let mut in_section = section.is_empty();
    let mut header_line = 0;
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            in_section = h.trim() == section;
            if in_section {
                header_line = n + 1;
            }
            continue;
        }
        if in_section {
            if let Some(rest) = t.strip_prefix(leaf) {
                if rest.trim_start().starts_with('=') {
                    return n + 1;
                }
            }
        }
    }
    // `[presence]`-level keys like "presence" name the section itself.
    if header_line == 0 {
        for (n, line) in text.lines().enumerate() {
            if line.trim() == format!("[{key}]") {
                return n + 1;
            }
        }
    }
    header_line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_config_is_valid() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml"));
        let cfg = Config::load(path).expect("bundled gateway.toml loads");
        assert_eq!(cfg.sip.local_domains, vec!["example.com"]);
        assert_eq!(cfg.listeners().unwrap().len(), 2);
    }

    #[test]
    fn unknown_key_names_line() {
        let e = Config::parse("[sip]\nlisten = []\nlisten_typo = 1\n", Path::new("x.toml"))
            .unwrap_err();
        match e {
            ConfigError::Syntax { line, message, .. } => {
                assert_eq!(line, 3);
                assert!(message.contains("listen_typo"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn environment_overrides() {
        let vars = vec![
            (
                "GATEWAY__STORE__PATH".to_string(),
                "/tmp/elsewhere".to_string(),
            ),
            (
                "GATEWAY__PRESENCE__MIN_EXPIRES".to_string(),
                "5".to_string(),
            ),
            (
                "GATEWAY__SIP__LISTEN".to_string(),
                "[\"udp:127.0.0.1:5070\"]".to_string(),
            ),
            (
                "GATEWAY__SIP__TLS__CERT".to_string(),
                "/etc/x.pem".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c = Config::parse_with_env(
            "[store]\npath = \"./data\"\n",
            Path::new("g.toml"),
            vars.into_iter(),
        )
        .unwrap();
        assert_eq!(c.store.path, "/tmp/elsewhere");
        assert_eq!(c.presence.min_expires, 5);
        assert_eq!(c.sip.listen, ["udp:127.0.0.1:5070"]);
        assert_eq!(c.sip.tls.cert, "/etc/x.pem");
        let e = Config::parse_with_env(
            "",
            Path::new("g.toml"),
            vec![("GATEWAY__STORE__PAHT".to_string(), "x".to_string())].into_iter(),
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::Env { .. }), "{e}");
    }

    #[test]
    fn every_invalid_value_names_its_line() {
        let text = "[sip]\nlisten = [\"udp:127.0.0.1:5060\", \"tls:127.0.0.1:5061\"]\n[sip.tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n[cpim]\nlisten = \"localhost:8080\"\n";
        let c = Config::parse(text, Path::new("g.toml")).unwrap();
        let e = c
            .validate(Path::new("g.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("g.toml:4: sip.tls.cert: \"/nonexistent/cert.pem\" does not exist"),
            "{e}"
        );
        assert!(e.contains("g.toml:5: sip.tls.key:"), "{e}");
        assert!(
            e.contains("g.toml:7: cpim.listen: \"localhost:8080\" is not an IP address and port"),
            "{e}"
        );
    }

    #[test]
    fn operational_values_are_checked() {
        let text = "[sip]\nlisten = [\"udp:0.0.0.0:5060\"]\n[cpim]\nadapter_url = \"ftp://x\"\nretry_initial_ms = 0\n[log]\nformat = \"xml\"\nlevel = \"\"\n";
        let c = Config::parse(text, Path::new("g.toml")).unwrap();
        let e = c
            .validate(Path::new("g.toml"), text)
            .unwrap_err()
            .to_string();
        for want in [
            "sip.advertise: required when a listener is on 0.0.0.0",
            "g.toml:4: cpim.adapter_url: scheme \"ftp\"",
            "g.toml:5: cpim.retry_initial_ms: must be at least 1",
            "g.toml:7: log.format: expected \"text\" or \"json\"",
            "g.toml:8: log.level: empty",
        ] {
            assert!(e.contains(want), "{want} in {e}");
        }
        let fixed = text
            .replace("[sip]\n", "[sip]\nadvertise = \"gw.example.com\"\n")
            .replace("ftp://x", "http://adapter:9090/cpim")
            .replace("retry_initial_ms = 0", "retry_initial_ms = 100")
            .replace("\"xml\"", "\"json\"")
            .replace("level = \"\"", "level = \"sip_cpim_gateway=debug,info\"");
        let c = Config::parse(&fixed, Path::new("g.toml")).unwrap();
        c.validate(Path::new("g.toml"), &fixed).unwrap();
    }

    #[test]
    fn connection_limits_and_deadlines_are_checked() {
        let text = "[sip.transport]\nmessage_timeout_ms = 0\nmax_connections_per_address = 0\n[cpim]\nhttp_max_connections = 0\nhttp_max_connections_per_address = 0\nhttp_header_timeout_ms = 50\nhttp_body_timeout_ms = 3600001\n[sip.overload]\nmax_in_progress = 0\n";
        let c = Config::parse(text, Path::new("g.toml")).unwrap();
        let e = c
            .validate(Path::new("g.toml"), text)
            .unwrap_err()
            .to_string();
        for want in [
            "g.toml:2: sip.transport.message_timeout_ms: must be between 100 and 3600000",
            "g.toml:3: sip.transport.max_connections_per_address: must be at least 1",
            "g.toml:5: cpim.http_max_connections: must be at least 1",
            "g.toml:6: cpim.http_max_connections_per_address: must be at least 1",
            "g.toml:7: cpim.http_header_timeout_ms: must be between 100 and 3600000",
            "g.toml:8: cpim.http_body_timeout_ms: must be between 100 and 3600000",
            "g.toml:10: sip.overload.max_in_progress: must be at least 1",
        ] {
            assert!(e.contains(want), "{want} in {e}");
        }
        let d = Config::default();
        assert_eq!(d.sip.transport.message_timeout_ms, 5000);
        assert_eq!(d.sip.transport.max_connections_per_address, 32);
        assert_eq!(d.cpim.http_max_connections, 1024);
        assert_eq!(d.cpim.http_max_connections_per_address, 128);
        let ok =
            "[sip.transport]\nmessage_timeout_ms = 100\n[cpim]\nhttp_body_timeout_ms = 3600000\n";
        Config::parse(ok, Path::new("g.toml"))
            .unwrap()
            .validate(Path::new("g.toml"), ok)
            .unwrap();
    }

    #[test]
    fn bad_listener_rejected() {
        assert!(parse_listener("sctp:127.0.0.1:5060").is_err());
        assert!(parse_listener("udp:localhost").is_err());
        assert_eq!(parse_listener("tcp:[::1]:5060").unwrap().addr.port(), 5060);
    }
}
