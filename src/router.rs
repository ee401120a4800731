//! Dispatch of incoming SIP requests that passed the core checks: to the
//! presence agent (local presentities), the CPIM gateway, or an in-dialog
//! handler.

use crate::auth::{Authenticator, Verdict, challenge_response};
use crate::gateway::Gateway;
use crate::presence::PresenceAgent;
use crate::sip::{Message, Method};
use crate::transaction::ServerTransaction;
use crate::transport::Source;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Where requests go.
#[derive(Clone)]
pub struct Router {
    pub presence: PresenceAgent,
    pub gateway: Gateway,
    /// Digest authentication, when enabled.
    pub auth: Option<Arc<Authenticator>>,
    /// Local listener addresses where requests are not challenged.
    pub trusted: Arc<[SocketAddr]>,
    pub local_domains: Arc<[String]>,
}

/// Answers a transaction from a spawned task.
fn answer(st: ServerTransaction, resp: Message) {
    tokio::spawn(async move {
        let _ = st.respond(resp).await;
    });
}

impl Router {
    /// RFC 3261 §22: requests for local presentities must be authenticated
    /// (unless they came in on a trusted listener); the user may publish or
    /// register only for its own AOR. `None`: answered here.
    fn authenticate(&self, st: ServerTransaction, source: &Source) -> Option<ServerTransaction> {
        let Some(auth) = &self.auth else {
            return Some(st);
        };
        if self.trusted.contains(&source.local) {
            return Some(st);
        }
        let now = crate::presence::now_ms();
        match auth.verify(st.request(), now) {
            Verdict::Challenge { stale } => {
                let r = challenge_response(st.reply(401, "Unauthorized"), auth, stale, now);
                answer(st, r);
                None
            }
            Verdict::Forbidden(why) => {
                let r = st.reply(403, &format!("Forbidden ({why})"));
                answer(st, r);
                None
            }
            Verdict::Authenticated(user) => {
                let mut st = st;
                let req = st.request();
                // The identity is the user at the realm (credentials are per
                // realm; the realm names the local domain they belong to).
                let identity = format!("sip:{user}@{}", auth.realm().to_ascii_lowercase());
                // REGISTER only for the user's own AOR (RFC 3261 §10.3 step
                // 3); PUBLISH and SUBSCRIBE go on with the identity, and the
                // presence agent applies the presentity's policy to it (a
                // user may publish for another AOR only where allowed).
                let own_register = req.method() != Some(&Method::Register)
                    || req.to().is_some_and(|t| {
                        t.uri.user_unescaped().as_deref() == Some(user.as_str())
                            && t.uri.host.as_ref().is_some_and(|h| {
                                self.local_domains
                                    .iter()
                                    .any(|d| d.eq_ignore_ascii_case(&h.canonical()))
                            })
                    });
                if own_register {
                    st.set_identity(identity);
                    Some(st)
                } else {
                    let r = st.reply(403, "Forbidden (not this user's AOR)");
                    answer(st, r);
                    None
                }
            }
        }
    }

    pub fn dispatch(&self, st: ServerTransaction) {
        let source = st.source().clone();
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
                } else if let Some(st) = self.authenticate(st, &source) {
                    self.presence.handle(st)
                }
            }
            Some(Method::Register | Method::Publish) => {
                if let Some(st) = self.authenticate(st, &source) {
                    self.presence.handle(st)
                }
            }
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
