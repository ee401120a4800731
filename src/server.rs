//! Wiring: configuration → transports → transaction layer → application,
//! and the lifetime of the running gateway.

use crate::config::{Config, Listener};
use crate::sip::Method;
use crate::transaction::{ServerTransaction, Timers, TransactionLayer, UasPolicy};
use crate::transport::{Proto, Resolver, TlsSettings, TransportConfig, TransportLayer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot bind SIP listeners: {0}")]
    Bind(#[from] std::io::Error),
}

/// A running gateway.
pub struct Server {
    pub transport: Arc<TransportLayer>,
    pub transactions: TransactionLayer,
    pub resolver: Arc<Resolver>,
}

/// The UAS policy for what this build serves.
fn policy(cfg: &Config) -> UasPolicy {
    UasPolicy {
        // OPTIONS is answered by the core; the presence agent and the
        // gateway add their methods as they are built.
        allow: vec![Method::Options],
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
    }
}

impl Server {
    /// Binds everything in `cfg` and starts serving.
    pub async fn start(cfg: &Config) -> Result<Server, StartError> {
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
            max_connections: cfg.sip.transport.max_connections,
            connect_timeout: Duration::from_millis(cfg.sip.transport.connect_timeout_ms),
            udp_mtu_threshold: cfg.sip.transport.udp_mtu_threshold,
            tls,
            advertise: (!cfg.sip.advertise.is_empty()).then(|| cfg.sip.advertise.clone()),
        };
        let (in_tx, in_rx) = mpsc::channel(8192);
        let transport = TransportLayer::bind(tc, in_tx).await?;
        let timers = Timers {
            t1: Duration::from_millis(cfg.sip.timers.t1_ms),
            t2: Duration::from_millis(cfg.sip.timers.t2_ms),
            t4: Duration::from_millis(cfg.sip.timers.t4_ms),
        };
        let (transactions, app_rx) = TransactionLayer::new(
            transport.clone(),
            timers,
            policy(cfg),
            cfg.sip.transport.udp_mtu_threshold,
        );
        transactions.spawn_inbound(in_rx);
        tokio::spawn(serve_application(app_rx));
        let resolver = Arc::new(Resolver::new(&cfg.sip.routes).map_err(StartError::Config)?);
        Ok(Server {
            transport,
            transactions,
            resolver,
        })
    }

    pub fn local_addr(&self, proto: Proto) -> Option<SocketAddr> {
        self.transport.local_addr(proto)
    }
}

/// Requests that passed the core checks. Nothing but OPTIONS is served yet
/// and OPTIONS never reaches here, so anything arriving is a policy/handler
/// mismatch: answer 501 rather than leave the client retransmitting.
async fn serve_application(mut rx: mpsc::Receiver<ServerTransaction>) {
    while let Some(st) = rx.recv().await {
        let resp = st.reply(501, "Not Implemented");
        let _ = st.respond(resp).await;
    }
}
