//! Dispatch of incoming SIP requests that passed the core checks.
//!
//! In-dialog requests (those with a To tag) go to the agent that owns their
//! dialog, found in the [`DialogTable`] by Call-ID and tags, or get 481 at
//! once (RFC 3261 §12.2.2); their Request-URI is our own Contact and names
//! no presentity. Only out-of-dialog requests are routed by Request-URI: to
//! the CPIM gateway for `cpim_domains` (seed §7.1), else to the presence
//! agent. SUBSCRIBE, REGISTER and PUBLISH are authenticated first, whichever
//! agent serves them.

use crate::auth::{Authenticator, Verdict, challenge_response};
use crate::dialog_table::{DialogOwner, DialogTable};
use crate::gateway::Gateway;
use crate::presence::PresenceAgent;
use crate::reject::Reject;
use crate::sip::{Message, Method};
use crate::transaction::{ServerTransaction, TransactionUser};
use crate::transport::Source;
use std::net::SocketAddr;
use std::sync::Arc;

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
    /// Who owns each dialog (kept by the agents).
    pub dialogs: Arc<DialogTable>,
    /// In a cluster (issue 18): which node serves each presentity, and the
    /// transaction layer to forward with.
    pub cluster: Option<(
        crate::cluster::Placement,
        crate::transaction::TransactionLayer,
    )>,
}

/// The AOR key of the presentity a new request is about: the
/// Request-URI's, the To URI's for REGISTER (RFC 3261 §10.3; its
/// Request-URI names only the domain).
fn presentity_of(req: &Message) -> Option<String> {
    let uri = match req.method() {
        Some(Method::Register) => req.to().map(|t| &t.uri),
        _ => req.request_uri(),
    }?;
    Some(crate::presence::aor_key(uri))
}

/// Answers `st` at once with the response `why` maps to.
fn refuse(st: ServerTransaction, why: Reject) {
    let r = why.response(&st);
    answer(st, r);
}

/// Answers a transaction from a spawned task.
fn answer(st: ServerTransaction, resp: Message) {
    tokio::spawn(async move {
        let _ = st.respond(resp).await;
    });
}

impl Router {
    /// In a cluster, a new request for a presentity whose shard another
    /// node holds is forwarded there (or refused for a moment while no
    /// live node holds it); `Some` when it is served here. A request a
    /// cluster node forwarded is never forwarded again.
    fn served_here(&self, st: ServerTransaction) -> Option<ServerTransaction> {
        use crate::cluster::Place;
        let Some((placement, layer)) = &self.cluster else {
            return Some(st);
        };
        let req = st.request();
        let Some(aor) = presentity_of(req) else {
            return Some(st);
        };
        match placement.place(&aor) {
            Place::Here => Some(st),
            Place::At { sip, .. } if !sip.is_empty() && !self.forwarded_by_peer(placement, req) => {
                // Waiting on a peer from here, not on this node's agents.
                let mut st = st;
                st.taken();
                let layer = layer.clone();
                let again = self.clone();
                tokio::spawn(async move {
                    if let Err(st) = crate::cluster::forward::forward(&layer, st, &sip).await {
                        // The holder did not answer: the view may be stale
                        // (a takeover since); placed once more, then served,
                        // forwarded to the new holder, or refused.
                        again.retry(st, &sip).await;
                    }
                });
                None
            }
            Place::At { .. } | Place::Nowhere if !self.forwarded_by_peer(placement, req) => {
                // No holder known yet (a takeover or a start in progress,
                // or the holder's address not yet read): wait for the view
                // rather than refuse at once.
                let mut st = st;
                st.taken();
                let again = self.clone();
                tokio::spawn(async move { again.retry(st, "").await });
                None
            }
            _ => {
                refuse(
                    st,
                    Reject::Unavailable {
                        retry_after: Some(1),
                    },
                );
                None
            }
        }
    }

    /// A request whose holder at `failed` did not answer (or, with `failed`
    /// empty, that has no known holder yet): dispatched again once the view
    /// names a reachable holder other than `failed` (the lease loop
    /// re-reads at once when a takeover or a new node is announced), else
    /// refused with 503 + Retry-After after two seconds.
    async fn retry(&self, st: ServerTransaction, failed: &str) {
        use crate::cluster::Place;
        let Some((placement, layer)) = &self.cluster else {
            return;
        };
        let aor = presentity_of(st.request()).unwrap_or_default();
        for _ in 0..20 {
            match placement.place(&aor) {
                Place::At { sip, .. } if sip == failed || sip.is_empty() => {}
                Place::Nowhere => {}
                Place::Here => return self.dispatch(st),
                Place::At { sip, .. } => {
                    if let Err(st) = crate::cluster::forward::forward(layer, st, &sip).await {
                        refuse(
                            st,
                            Reject::Unavailable {
                                retry_after: Some(1),
                            },
                        );
                    }
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        refuse(
            st,
            Reject::Unavailable {
                retry_after: Some(1),
            },
        );
    }

    fn forwarded_by_peer(&self, placement: &crate::cluster::Placement, req: &Message) -> bool {
        req.top_via().is_some_and(|v| {
            placement.is_peer_sip(&format!(
                "{}:{}",
                v.host,
                crate::sip::headers::sent_by_port(v)
            ))
        })
    }

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
                refuse(st, Reject::forbidden(why));
                None
            }
            Verdict::Authenticated(user) => {
                let mut st = st;
                let req = st.request();
                // The identity is the user at the realm (credentials are per
                // realm; the realm names the local domain they belong to).
                let identity = format!("sip:{user}@{}", auth.realm().to_ascii_lowercase());
                // REGISTER only for the user's own AOR (RFC 3261 §10.3 step
                // 3); PUBLISH and SUBSCRIBE go on with the identity: the
                // watch policy applies to it as a watcher, and it may
                // publish for another AOR only with a publisher grant
                // (RFC 3903 §6 step 4); the gateway hands it to the CPIM
                // side as the watcher.
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
                    refuse(st, Reject::forbidden("not this user's AOR"));
                    None
                }
            }
        }
    }

    pub fn dispatch(&self, st: ServerTransaction) {
        let source = st.source().clone();
        let req = st.request();
        let method = req.method().cloned();
        let to_tag = req.to().and_then(|t| t.tag());
        match method {
            Some(Method::Subscribe | Method::Notify) if to_tag.is_some() => {
                let owner = self.dialogs.owner(
                    req.call_id().unwrap_or(""),
                    to_tag.unwrap_or(""),
                    req.from().and_then(|f| f.tag()).unwrap_or(""),
                );
                let Some(owner) = owner else {
                    return refuse(st, Reject::DialogGone);
                };
                // A refresh is authenticated like the initial SUBSCRIBE; a
                // NOTIFY comes from the notifier we subscribed to, which has
                // no credentials of ours.
                let st = if method == Some(Method::Subscribe) {
                    match self.authenticate(st, &source) {
                        Some(st) => st,
                        None => return,
                    }
                } else {
                    st
                };
                match owner {
                    DialogOwner::Gateway => self.gateway.handle_sip(st),
                    DialogOwner::Presence => self.presence.handle(st),
                }
            }
            // RFC 6665 §4.1.3: a NOTIFY always belongs to a dialog (or to
            // a SUBSCRIBE we sent); without a To tag it matches none.
            Some(Method::Notify) => refuse(st, Reject::DialogGone),
            Some(Method::Subscribe) => {
                // A SUBSCRIBE to a CPIM-domain presentity is gatewayed (seed
                // §7.1), after the same authentication as a local one: the
                // CPIM side authorizes by the watcher's identity.
                let to_cpim = req
                    .request_uri()
                    .and_then(|u| u.host.as_ref())
                    .is_some_and(|h| self.gateway.is_cpim_domain(&h.canonical()));
                let Some(st) = self.served_here(st) else {
                    return;
                };
                let Some(st) = self.authenticate(st, &source) else {
                    return;
                };
                if to_cpim {
                    self.gateway.handle_sip(st)
                } else {
                    self.presence.handle(st)
                }
            }
            Some(Method::Register | Method::Publish) => {
                let Some(st) = self.served_here(st) else {
                    return;
                };
                if let Some(st) = self.authenticate(st, &source) {
                    self.presence.handle(st)
                }
            }
            _ => refuse(st, Reject::MethodNotAllowed),
        }
    }
}

/// The router is the transaction user: each new request is sorted into its
/// agent's queue on the task that received it.
impl TransactionUser for Router {
    fn take(&self, st: ServerTransaction) {
        self.dispatch(st)
    }
}
