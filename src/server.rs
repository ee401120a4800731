//! Wiring: configuration → transports → transaction layer → application,
//! and the lifetime of the running gateway.

use crate::config::{Config, Listener};
use crate::delivery::{Adapter, Backoff};
use crate::gateway::{Gateway, GatewaySettings};
use crate::presence::{PresenceAgent, PresenceSettings};
use crate::router::Router;
use crate::sip::Method;
use crate::store::{Backend, OpenError, PgOptions, PgStore, Store, StoreError};
use crate::transaction::{Timers, TransactionLayer, UasPolicy};
use crate::transport::{Proto, Resolver, TlsSettings, Transmit, TransportConfig, TransportLayer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot bind SIP listeners: {0}")]
    Bind(#[from] std::io::Error),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    /// The store was refused at open (issue 17): the message names the
    /// path, the fault and the remedy.
    #[error("{0}")]
    Open(#[from] OpenError),
}

impl StartError {
    /// The process's exit status for it: [`OpenError::exit_code`] for a
    /// refused store, 1 otherwise (docs/operations.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Open(e) => e.exit_code(),
            _ => 1,
        }
    }
}

/// A running gateway.
pub struct Server {
    pub transport: Arc<TransportLayer>,
    pub transactions: TransactionLayer,
    pub resolver: Arc<Resolver>,
    pub store: Arc<Backend>,
    pub presence: PresenceAgent,
    pub gateway: Gateway,
    pub adapter: Adapter,
    /// The bound CPIM/admin HTTP address.
    pub http: SocketAddr,
    pub ops: Arc<crate::http::Ops>,
    http_stop: Arc<tokio::sync::Notify>,
    http_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Opens the configured store (`[store] backend`).
async fn open_backend(cfg: &Config) -> Result<Backend, StartError> {
    if cfg.store.backend == "postgres" {
        let sharding = crate::cluster::Sharding {
            shards: cfg.cluster.shards,
        };
        let store = PgStore::open(PgOptions {
            url: cfg.store.url.clone(),
            node: cfg.cluster.node.clone(),
            shards: cfg.cluster.shards,
            lease_ttl: Duration::from_secs(cfg.cluster.lease_ttl_s),
            members: cfg.cluster.members.clone(),
            sharder: crate::cluster::record_sharder(sharding),
        })?;
        tracing::info!(node = %cfg.cluster.node, shards = store.holdings().shards().len(),
            "store: PostgreSQL, leases taken");
        return Ok(Backend::Postgres(Arc::new(store)));
    }
    Ok(Backend::Sled(
        crate::recovery::open_store(
            std::path::Path::new(&cfg.store.path),
            cfg.store.open_options(),
        )
        .await?,
    ))
}

/// The UAS policy for what this build serves.
fn policy(cfg: &Config) -> UasPolicy {
    UasPolicy {
        // OPTIONS is answered by the core.
        allow: vec![
            Method::Register,
            Method::Subscribe,
            Method::Notify,
            Method::Publish,
        ],
        allow_events: vec!["presence".into(), "presence.winfo".into()],
        accept: vec![
            "application/pidf+xml".into(),
            "application/cpim-pidf+xml".into(),
            "application/xpidf+xml".into(),
            "message/cpim".into(),
        ],
        supported: vec![],
        agent: cfg
            .sip
            .local_domains
            .first()
            .cloned()
            .unwrap_or_else(|| "sip-cpim-gateway".into()),
        max_queue_delay: (cfg.sip.overload.max_queue_delay_ms > 0)
            .then(|| std::time::Duration::from_millis(cfg.sip.overload.max_queue_delay_ms)),
        overload_retry_after: cfg.sip.overload.retry_after_s,
        max_in_progress: cfg.sip.overload.max_in_progress,
    }
}

impl Server {
    /// Binds everything in `cfg` and starts serving.
    pub async fn start(cfg: &Config) -> Result<Server, StartError> {
        Self::start_with(cfg, |s| s).await
    }

    /// As [`Server::start`], with the store the agents and the delivery
    /// queue write to passed through `wrap` first: fault injection (a store
    /// that fails its commits on demand) for tests of the rule that nothing
    /// is acknowledged unless it is durable. Health and size still read the
    /// sled store underneath.
    pub async fn start_with(
        cfg: &Config,
        wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
    ) -> Result<Server, StartError> {
        // The recorder first, so nothing recorded during startup is lost.
        let metrics = crate::metrics::handle();
        let listeners: Vec<Listener> = cfg.listeners().map_err(StartError::Config)?;
        let tls = if cfg.sip.tls.cert.is_empty() {
            None
        } else {
            Some(TlsSettings {
                cert: cfg.sip.tls.cert.clone().into(),
                key: cfg.sip.tls.key.clone().into(),
                ca: (!cfg.sip.tls.ca.is_empty()).then(|| cfg.sip.tls.ca.clone().into()),
            })
        };
        let tc = TransportConfig {
            listeners,
            limits: cfg.sip.limits,
            idle_timeout: Duration::from_secs(cfg.sip.transport.idle_timeout_s),
            message_timeout: Duration::from_millis(cfg.sip.transport.message_timeout_ms),
            max_connections: cfg.sip.transport.max_connections,
            max_connections_per_address: cfg.sip.transport.max_connections_per_address,
            connect_timeout: Duration::from_millis(cfg.sip.transport.connect_timeout_ms),
            udp_mtu_threshold: cfg.sip.transport.udp_mtu_threshold,
            tls,
            advertise: (!cfg.sip.advertise.is_empty()).then(|| cfg.sip.advertise.clone()),
            udp_recv_buffer: cfg.sip.transport.udp_recv_buffer_bytes,
        };
        let upstream = crate::transport::Upstream::new();
        let transport = TransportLayer::bind(tc, upstream.clone()).await?;
        let timers = Timers {
            t1: Duration::from_millis(cfg.sip.timers.t1_ms),
            t2: Duration::from_millis(cfg.sip.timers.t2_ms),
            t4: Duration::from_millis(cfg.sip.timers.t4_ms),
        };
        let transactions = TransactionLayer::new(
            transport.clone(),
            timers,
            policy(cfg),
            cfg.sip.transport.udp_mtu_threshold,
        );
        let resolver = Arc::new(Resolver::new(&cfg.sip.routes).map_err(StartError::Config)?);
        let store = Arc::new(open_backend(cfg).await?);
        let (host, port) = transport
            .sent_by(Proto::Udp)
            .or_else(|| transport.sent_by(Proto::Tcp))
            .ok_or_else(|| StartError::Config("no SIP listener".into()))?;
        let transport_param = if transport.local_addr(Proto::Udp).is_some() {
            ""
        } else {
            ";transport=tcp"
        };
        let settings = PresenceSettings {
            local_domains: cfg.sip.local_domains.clone(),
            default_expires: cfg.presence.default_expires,
            min_expires: cfg.presence.min_expires,
            max_expires: cfg.presence.max_expires,
            subscribe_success_code: cfg.presence.subscribe_success_code,
            default_policy: crate::presence::records::PolicyAction::parse(
                &cfg.presence.default_policy,
            )
            .unwrap_or(crate::presence::records::PolicyAction::Confirm),
            domain_policies: cfg
                .presence
                .domain_policies
                .iter()
                .filter_map(|(d, a)| {
                    crate::presence::records::PolicyAction::parse(a)
                        .map(|a| (d.to_ascii_lowercase(), a))
                })
                .collect(),
            notify_min_interval_ms: cfg.presence.notify_min_interval_ms,
            max_subscriptions_per_watcher: cfg.presence.max_subscriptions_per_watcher,
            max_subscriptions: cfg.presence.max_subscriptions,
            contact: format!("<sip:{host}:{port}{transport_param}>"),
        };
        let dyn_store: Arc<dyn Store> = wrap(store.clone());
        // reqwest uses rustls without a built-in provider: install ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let adapter = Adapter::open_bounded(
            dyn_store.clone(),
            &cfg.cpim.adapter_url,
            Duration::from_millis(cfg.cpim.adapter_timeout_ms),
            Backoff {
                initial: Duration::from_millis(cfg.cpim.retry_initial_ms),
                max: Duration::from_millis(cfg.cpim.retry_max_ms),
            },
            cfg.cpim.adapter_max_pending,
        )?;
        let contact = settings.contact.clone();
        let dialogs = crate::dialog_table::DialogTable::new();
        let presence = PresenceAgent::start(
            settings,
            dyn_store.clone(),
            transactions.clone(),
            resolver.clone(),
            adapter.clone(),
            dialogs.clone(),
        )?;
        let header_scheme = if cfg.cpim.sip_header_scheme == "pres" {
            crate::sip::Scheme::Pres
        } else {
            crate::sip::Scheme::Sip
        };
        let gateway = Gateway::start(
            GatewaySettings {
                local_domains: cfg.sip.local_domains.clone(),
                cpim_domains: cfg.sip.cpim_domains.clone(),
                header_scheme,
                contact,
                default_expires: cfg.presence.default_expires,
                min_expires: cfg.presence.min_expires,
                max_expires: cfg.presence.max_expires,
            },
            dyn_store,
            transactions.clone(),
            resolver.clone(),
            adapter.clone(),
            presence.clone(),
            dialogs.clone(),
        )?;
        let placement = match &*store {
            Backend::Postgres(pg) => Some(crate::cluster::Placement {
                holdings: pg.holdings().clone(),
                sharding: crate::cluster::Sharding {
                    shards: cfg.cluster.shards,
                },
                node: Arc::from(cfg.cluster.node.as_str()),
            }),
            Backend::Sled(_) => None,
        };
        let listener = tokio::net::TcpListener::bind(&cfg.cpim.listen).await?;
        let http = listener.local_addr()?;
        let ops = Arc::new(crate::http::Ops {
            ready: std::sync::atomic::AtomicBool::new(false),
            transactions: transactions.clone(),
            adapter: adapter.clone(),
            store: store.clone(),
        });
        let state = crate::http::AppState {
            gateway: gateway.clone(),
            presence: presence.clone(),
            token: (!cfg.cpim.token.is_empty()).then(|| Arc::from(cfg.cpim.token.as_str())),
            local_domains: cfg.sip.local_domains.clone().into(),
            ops: ops.clone(),
            cluster: placement
                .clone()
                .map(|placement| crate::http::forward::ClusterHttp {
                    placement,
                    client: reqwest::Client::builder()
                        // A §7.2 subscribe waits for the SIP final response
                        // (Timer F, 32 s) before it answers.
                        .timeout(Duration::from_secs(40))
                        .build()
                        .unwrap_or_default(),
                }),
        };
        // Histograms and summaries are kept bounded by periodic upkeep.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                metrics.run_upkeep();
            }
        });
        let http_limits = crate::http::HttpLimits {
            max_connections: cfg.cpim.http_max_connections,
            max_connections_per_address: cfg.cpim.http_max_connections_per_address,
            header_timeout: Duration::from_millis(cfg.cpim.http_header_timeout_ms),
            body_timeout: Duration::from_millis(cfg.cpim.http_body_timeout_ms),
        };
        let http_stop = Arc::new(tokio::sync::Notify::new());
        let stop = http_stop.clone();
        let http_task = tokio::spawn(async move {
            if let Err(e) = crate::http::serve(listener, state, http_limits, stop).await {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        });
        let auth = if cfg.auth.enabled {
            let creds = crate::auth::Credentials::load(
                std::path::Path::new(&cfg.auth.credentials_file),
                &cfg.auth.realm,
            )
            .map_err(StartError::Config)?;
            Some(Arc::new(crate::auth::Authenticator::new(
                &cfg.auth.realm,
                creds,
                (cfg.auth.nonce_ttl_s * 1000) as i64,
                (cfg.auth.date_skew_s * 1000) as i64,
            )))
        } else {
            None
        };
        // Trusted listeners by their bound address (ports resolved).
        let trusted: Vec<SocketAddr> = cfg
            .auth
            .trusted_listeners
            .iter()
            .filter_map(|t| cfg.sip.listen.iter().position(|l| l == t))
            .filter_map(|i| transport.local_addrs().get(i).map(|(_, a)| *a))
            .collect();
        let cluster = match &*store {
            Backend::Postgres(pg) => {
                // Where the other nodes forward to: this node's Via sent-by
                // (its advertised host) and its HTTP listener.
                let sip = transport
                    .sent_by(Proto::Udp)
                    .map(|(h, p)| format!("{h}:{p}"))
                    .unwrap_or_default();
                pg.holdings().advertise(crate::store::Peer {
                    sip,
                    http: http.to_string(),
                });
                if let Some(lane) = cfg
                    .cluster
                    .members
                    .iter()
                    .position(|m| *m == cfg.cluster.node)
                {
                    adapter.use_lane(lane as u64);
                }
                crate::cluster::follow::follow(
                    pg.clone(),
                    crate::cluster::Sharding {
                        shards: cfg.cluster.shards,
                    },
                    presence.clone(),
                    gateway.clone(),
                    adapter.clone(),
                );
                placement.clone().map(|p| (p, transactions.clone()))
            }
            Backend::Sled(_) => None,
        };
        let router = Router {
            cluster,
            presence: presence.clone(),
            gateway: gateway.clone(),
            auth,
            trusted: trusted.into(),
            local_domains: cfg.sip.local_domains.clone().into(),
            dialogs,
        };
        // New requests are dispatched on the task that received them.
        transactions.connect(Arc::new(router));
        // Receive only once everything above is ready.
        upstream.connect(Arc::new(transactions.clone()));
        ops.ready.store(true, std::sync::atomic::Ordering::Release);
        Ok(Server {
            ops,
            http_stop,
            http_task: std::sync::Mutex::new(Some(http_task)),
            transport,
            transactions,
            resolver,
            store,
            presence,
            gateway,
            adapter,
            http,
        })
    }

    /// Graceful stop (SIGTERM/SIGINT): refuses new work (SIP 503, HTTP
    /// listener closed, `/readyz` 503), waits up to `grace` for HTTP
    /// requests and client transactions in flight (NOTIFYs, SUBSCRIBEs
    /// being answered), then flushes and closes the store. Subscriptions
    /// are not torn down: they resume at the next start.
    pub async fn shutdown(&self, grace: Duration) {
        self.ops
            .ready
            .store(false, std::sync::atomic::Ordering::Release);
        // Stop accepting: new SIP requests get 503, the HTTP listener
        // closes once its requests in progress are answered.
        self.transactions.drain();
        self.http_stop.notify_one();
        let deadline = tokio::time::Instant::now() + grace;
        let http = self
            .http_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = http {
            let _ = tokio::time::timeout_at(deadline, h).await;
        }
        while self.transactions.in_flight().0 > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "store flush at shutdown failed");
        }
        // A clean stop: the next start checks the store's files against
        // what this leaves (issue 17). Anything still running finds the
        // store closed from here on.
        if let Err(e) = self.store.close().await {
            tracing::error!(error = %e, "store close at shutdown failed");
        }
    }

    pub fn local_addr(&self, proto: Proto) -> Option<SocketAddr> {
        self.transport.local_addr(proto)
    }
}
