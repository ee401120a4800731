//! The HTTP side (design §4): the CPIM API for adapters (`cpim.rs`), the
//! admin API (policies, publisher grants and read-only views: `admin.rs`),
//! `/openapi.json`, `/healthz`, `/readyz` and `/metrics` (`ops.rs`), the
//! CPIM and admin routes behind the bearer-token check (`auth.rs`). Every
//! error is JSON: `{"error": {"code": "...", "message": "..."}}`
//! ([`ApiFault`], the one mapping of failures to answers, `error.rs`); a
//! malformed request changes nothing.

mod admin;
mod auth;
mod cpim;
mod error;
mod extract;
pub mod forward;
mod limit;
mod ops;

pub use admin::{
    PolicyList, PolicyRule, PolicyUpdate, PublisherGrant, PublisherList, SubscriptionList,
};
pub use error::{ApiFault, ErrorBody, ErrorDetail};
pub use ops::{ApiDoc, Readiness};

use crate::gateway::Gateway;
use crate::presence::PresenceAgent;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::middleware;
use axum::routing::{get, post, put};
use std::sync::Arc;
use std::time::Duration;

/// Largest request body accepted (a presence document with room to spare).
pub const MAX_BODY: usize = 256 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub gateway: Gateway,
    pub presence: PresenceAgent,
    /// Bearer token for `/cpim` and `/admin`; `None`: open.
    pub token: Option<Arc<str>>,
    pub local_domains: Arc<[String]>,
    /// What `/readyz` and `/metrics` read from the rest of the process.
    pub ops: Arc<Ops>,
    /// In a cluster (issue 18): CPIM operations go to the presentity's node.
    pub cluster: Option<forward::ClusterHttp>,
}

/// The process-level state the operations endpoints report.
pub struct Ops {
    /// Set once every listener is bound and the agents have loaded the
    /// store; cleared when shutdown begins (so a load balancer stops
    /// sending before the listeners close).
    pub ready: std::sync::atomic::AtomicBool,
    pub transactions: crate::transaction::TransactionLayer,
    pub adapter: crate::delivery::Adapter,
    pub store: Arc<crate::store::Backend>,
}

/// The router of the HTTP listener.
pub fn router(state: AppState) -> Router {
    // Inside the bearer check: a node forwards only what it authenticated.
    let cpim_ops = Router::new()
        .route("/cpim/v1/subscribe", post(cpim::subscribe))
        .route("/cpim/v1/unsubscribe", post(cpim::unsubscribe))
        .route("/cpim/v1/notify", post(cpim::notify))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            forward::cpim_to_holder,
        ));
    let api = Router::new()
        .merge(cpim_ops)
        .route("/cpim/v1/presence/{presentity}", get(cpim::presence))
        .route("/admin/v1/policies/{presentity}", get(admin::list_policies))
        .route(
            "/admin/v1/policies/{presentity}/{watcher}",
            put(admin::put_policy).delete(admin::delete_policy),
        )
        .route(
            "/admin/v1/publishers/{presentity}",
            get(admin::list_publishers),
        )
        .route(
            "/admin/v1/publishers/{presentity}/{publisher}",
            put(admin::put_publisher).delete(admin::delete_publisher),
        )
        .route("/admin/v1/presentities", get(admin::list_presentities))
        .route(
            "/admin/v1/presentities/{presentity}",
            get(admin::show_presentity),
        )
        .route("/admin/v1/subscriptions", get(admin::list_subscriptions))
        .route("/admin/v1/dialogs/{id}", get(admin::show_dialog))
        // Before the route layers, so a 405 is behind them too.
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::bearer));
    Router::new()
        .merge(api)
        .route("/openapi.json", get(ops::openapi))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics_text))
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn(ops::count_requests))
        .fallback(|| async { ApiFault::NoRoute })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// A route asked with a method it does not serve: 405 (axum adds `Allow`).
async fn method_not_allowed(method: Method) -> ApiFault {
    ApiFault::MethodNotAllowed(method)
}

/// Limits of the HTTP listener (`[cpim] http_*`, issue 17 item 5).
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections from one source IP address at most.
    pub max_connections_per_address: usize,
    /// A request head must be complete this long after the connection
    /// opened or the previous response went out (hyper's
    /// `header_read_timeout`, so also the keep-alive idle timeout).
    pub header_timeout: Duration,
    /// A request body must be complete this long after its head.
    pub body_timeout: Duration,
}

/// Serves `router` on `listener` until `stop` is notified, within `limits`.
///
/// Our own accept loop instead of `axum::serve`: that one runs hyper
/// without a timer, so `header_read_timeout` never fires, and has no
/// connection cap; 5,000 slowloris connections were all held
/// (docs/reliability.md, "Hostile input"). HTTP/1.1 only, as before (axum's
/// `http2` feature is off).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: HttpLimits,
    stop: std::sync::Arc<tokio::sync::Notify>,
) -> std::io::Result<()> {
    let app = router(state).layer(middleware::from_fn_with_state(
        limits.body_timeout,
        limit::body_deadline,
    ));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let slots = limit::Slots::new(limits.max_connections, limits.max_connections_per_address);
    // Graceful: `graceful` tells every connection to finish the request in
    // progress and close; `close_tx.closed()` resolves once every
    // connection task has dropped its `close_rx`.
    let (graceful, _) = tokio::sync::watch::channel(false);
    let (close_tx, close_rx) = tokio::sync::watch::channel(());
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stopped => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                // Failed before we saw it: nothing to do.
                Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionRefused) => continue,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning, but
                    // keep listening for the stop.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::select! {
                        _ = &mut stopped => break,
                        _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    }
                }
            },
        };
        let slot = match slots.admit(peer.ip()) {
            Ok(s) => s,
            Err(reason) => {
                limit::refuse(&stream, reason);
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let mut graceful = graceful.subscribe();
        let close_rx = close_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _close_rx = close_rx;
            tokio::pin!(conn);
            let mut shutting_down = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            if e.is_timeout() {
                                limit::count_closed("header_timeout");
                            }
                            tracing::trace!(%peer, error = %e, "HTTP connection ended");
                        }
                        break;
                    }
                    _ = graceful.changed(), if !shutting_down => {
                        shutting_down = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
    drop(listener);
    graceful.send_replace(true);
    drop(close_rx);
    close_tx.closed().await;
    Ok(())
}
