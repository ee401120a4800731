//! Dispatch of incoming SIP requests that passed the core checks: to the
//! presence agent (local presentities), the CPIM gateway, or an in-dialog
//! handler.

use crate::gateway::Gateway;
use crate::presence::PresenceAgent;
use crate::sip::Method;
use crate::transaction::ServerTransaction;
use tokio::sync::mpsc;

/// Where requests go.
#[derive(Clone)]
pub struct Router {
    pub presence: PresenceAgent,
    pub gateway: Gateway,
}

impl Router {
    pub fn dispatch(&self, st: ServerTransaction) {
        match st.request().method() {
            Some(Method::Subscribe) => {
                // A SUBSCRIBE to a CPIM-domain presentity is gatewayed (seed
                // §7.1), in-dialog ones included.
                let to_cpim = st
                    .request()
                    .request_uri()
                    .and_then(|u| u.host.as_ref())
                    .is_some_and(|h| self.gateway.is_cpim_domain(&h.canonical()));
                if to_cpim {
                    self.gateway.handle_sip(st)
                } else {
                    self.presence.handle(st)
                }
            }
            Some(Method::Register | Method::Publish) => self.presence.handle(st),
            // NOTIFYs arrive in dialogs the gateway opened (seed §7.2).
            Some(Method::Notify) => self.gateway.handle_sip(st),
            _ => {
                tokio::spawn(async move {
                    let r = st.reply(405, "Method Not Allowed");
                    let _ = st.respond(r).await;
                });
            }
        }
    }

    /// Consumes the transaction layer's new requests.
    pub async fn serve(self, mut rx: mpsc::Receiver<ServerTransaction>) {
        while let Some(st) = rx.recv().await {
            self.dispatch(st);
        }
    }
}
