//! Dispatch of incoming SIP requests that passed the core checks: to the
//! presence agent (local presentities), the CPIM gateway, or an in-dialog
//! handler.

use crate::presence::PresenceAgent;
use crate::sip::Method;
use crate::transaction::ServerTransaction;
use tokio::sync::mpsc;

/// Where requests go.
#[derive(Clone)]
pub struct Router {
    pub presence: PresenceAgent,
}

impl Router {
    pub fn dispatch(&self, st: ServerTransaction) {
        match st.request().method() {
            Some(Method::Register | Method::Publish | Method::Subscribe) => {
                self.presence.handle(st)
            }
            Some(Method::Notify) => {
                // No gatewayed subscription dialogs exist yet: a NOTIFY
                // matches no dialog (RFC 6665 §4.1.3).
                tokio::spawn(async move {
                    let r = st.reply(481, "Subscription Does Not Exist");
                    let _ = st.respond(r).await;
                });
            }
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
