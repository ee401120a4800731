//! The CPIM ↔ SIP gateway (seed `000`/`001` §7, design §5).
//!
//! - CPIM → SIP (§7.2, `cpim_to_sip.rs`): a CPIM subscribe opens a
//!   SUBSCRIBE dialog towards the SIP domain, refreshed while the CPIM
//!   duration lasts; each NOTIFY becomes a CPIM notify to the adapter;
//!   unsubscribe sends Expires 0.
//! - SIP → CPIM (§7.1, `sip_to_cpim.rs`): a SUBSCRIBE to a `cpim_domains`
//!   presentity becomes a CPIM subscribe to the adapter; CPIM notifies from
//!   the adapter become NOTIFYs in every matching dialog.
//! - A CPIM subscribe for a local presentity is served by the presence
//!   agent directly.
//!
//! The shape is sans-I/O: [`core::GatewayCore`] takes events and the time
//! and returns [`effects::Effects`]; `driver.rs` is the one task that feeds
//! it and carries the effects out, commit first. Every change is durable
//! before it is acknowledged (SIP 2xx or CPIM success).

mod admin;
pub mod core;
mod cpim_to_sip;
mod driver;
pub mod effects;
mod held;
pub mod records;
mod sip_to_cpim;

pub use admin::DialogCounts;

use crate::cpim::{
    self, CpimResponse, NotifyRequest, Presence, SubscribeRequest, UnsubscribeRequest,
};
use crate::delivery::Adapter;
use crate::dialog_table::{DialogOwner, DialogTable};
use crate::presence::PresenceAgent;
use crate::sip::{Scheme, Uri};
use crate::store::{Store, StoreError, Tree, codec};
use crate::transaction::{IncomingRequest, ServerTransaction, TransactionLayer};
use crate::transport::Resolver;
use core::GatewayCore;
use driver::{Cmd, CpimOp, Driver, Io};
use records::GatewayDialog;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What the gateway needs from `gateway.toml`.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub local_domains: Vec<String>,
    pub cpim_domains: Vec<String>,
    /// Scheme of From/To in SUBSCRIBEs the gateway sends (design §5).
    pub header_scheme: Scheme,
    pub contact: String,
    pub default_expires: u32,
    pub min_expires: u32,
    pub max_expires: u32,
}

/// Why an API request was refused before anything changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unavailable(String),
}

/// Handle to the running gateway.
#[derive(Clone)]
pub struct Gateway {
    tx: mpsc::UnboundedSender<Cmd>,
    settings: Arc<GatewaySettings>,
}

impl Gateway {
    /// Loads every gatewayed dialog from `store` and starts the driver.
    pub fn start(
        settings: GatewaySettings,
        store: Arc<dyn Store>,
        layer: TransactionLayer,
        resolver: Arc<Resolver>,
        adapter: Adapter,
        presence: PresenceAgent,
        table: Arc<DialogTable>,
    ) -> Result<Gateway, StoreError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let settings = Arc::new(settings);
        let mut core = GatewayCore::new(settings.clone());
        store.visit(Tree::Dialogs, &mut |_, v| {
            let rec: GatewayDialog = codec::decode(Tree::Dialogs, v)?;
            core.restore(rec);
            Ok(())
        })?;
        for ev in core.take_dialog_events() {
            table.apply(DialogOwner::Gateway, &ev);
        }
        let io = Io {
            store,
            layer,
            resolver,
            adapter,
            presence,
            me: tx.clone(),
        };
        tokio::spawn(Driver::new(core, io, table).run(rx));
        Ok(Gateway { tx, settings })
    }

    /// Takes over the gatewayed dialogs of shards this node now holds
    /// (issue 18): their timers re-armed from the records, CSeqs continued
    /// from them.
    pub fn adopt(&self, recs: Vec<GatewayDialog>) {
        let _ = self.tx.send(Cmd::Adopt(recs));
    }

    /// The Request-URI host is a CPIM domain (seed §7.1 applies).
    pub fn is_cpim_domain(&self, host: &str) -> bool {
        self.settings
            .cpim_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(host))
    }

    pub fn handle_sip(&self, st: ServerTransaction) {
        let _ = self.tx.send(Cmd::Sip(Box::new(st)));
    }

    async fn ask(&self, op: CpimOp) -> Result<CpimResponse, ApiError> {
        let (tx, rx) = oneshot::channel();
        let gone = || ApiError::Unavailable("gateway is shutting down".into());
        self.tx.send(Cmd::Cpim(op, tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// `POST /cpim/v1/subscribe`: answers when the SIP final response is in.
    pub async fn subscribe(&self, req: SubscribeRequest) -> Result<CpimResponse, ApiError> {
        self.ask(CpimOp::Subscribe(req)).await
    }

    pub async fn unsubscribe(&self, req: UnsubscribeRequest) -> Result<CpimResponse, ApiError> {
        self.ask(CpimOp::Unsubscribe(req)).await
    }

    pub async fn notify(&self, req: NotifyRequest) -> Result<CpimResponse, ApiError> {
        self.ask(CpimOp::Notify(req)).await
    }
}

/// The CPIM watcher of a SIP watcher's SUBSCRIBE (seed §7.1): the
/// authenticated identity when digest authentication is on (the CPIM side
/// authorizes by it, so a From header claiming someone else must not count),
/// else the From URI; as a `pres:` URI either way.
fn watcher_of(inc: &IncomingRequest) -> String {
    let uri = match &inc.identity {
        Some(id) => Uri::parse_str(id).ok(),
        None => inc.request.from().map(|f| f.uri.clone()),
    };
    uri.map(|u| u.with_scheme(Scheme::Pres).to_string())
        .unwrap_or_default()
}

/// The presence object of a SIP body: carried unchanged, tuples parsed.
fn presence_of_body(content_type: Option<String>, body: &bytes::Bytes) -> Presence {
    let tuples = content_type
        .as_deref()
        .and_then(|ct| crate::body::presence_of(ct, body).ok())
        .map(|(_, d)| cpim::tuples_view(&d));
    Presence {
        content_type: content_type.filter(|_| !body.is_empty()),
        body: (!body.is_empty()).then(|| String::from_utf8_lossy(body).into_owned()),
        tuples,
    }
}

#[cfg(test)]
mod tests;
