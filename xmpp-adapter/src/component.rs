//! One XEP-0114 component connection per SIP domain, kept up for the life of
//! the process: connect, handshake, resend state, then move stanzas both
//! ways; on any loss, reconnect with exponential backoff.
//!
//! Built on tokio-xmpp's XML stream and connector, with the handshake of its
//! `Component` done here: `Component` ends its stream on the first stanza
//! xmpp-parsers cannot parse (a malformed `<show/>` would drop the link for
//! every user) and on the first read timeout; this loop logs and skips the
//! former and answers the latter with a ping.

use crate::metrics as m;
use crate::runtime::{Shared, now_s};
use crate::stanza;
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio_xmpp::connect::{DnsConfig, ServerConnector, TcpServerConnector};
use tokio_xmpp::parsers::component::Handshake;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::ping::Ping;
use tokio_xmpp::parsers::stanza::Stanza;
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::xmlstream::{
    FallibleStreamElement, ReadError, Timeouts, XmppStream, XmppStreamElement,
};
use xmpp_parsers::jid::{BareJid, Jid};

type Stream = XmppStream<<TcpServerConnector as ServerConnector>::Stream>;

#[derive(Debug, Error)]
pub enum ComponentError {
    #[error("connect: {0}")]
    Connect(String),
    #[error("no stream id from the server")]
    NoStreamId,
    #[error("handshake refused (wrong secret or unknown component?)")]
    Refused,
    #[error("stream closed during the handshake: {0}")]
    Closed(String),
}

pub struct ComponentTask {
    pub domain: String,
    pub secret: String,
    pub server: String,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

async fn login(jid: &BareJid, secret: &str, server: &str) -> Result<Stream, ComponentError> {
    let connector = TcpServerConnector::from(DnsConfig::addr(server));
    let (mut pending, _) = connector
        .connect(&Jid::from(jid.clone()), ns::COMPONENT, Timeouts::tight())
        .await
        .map_err(|e| ComponentError::Connect(e.to_string()))?;
    let header = pending.take_header();
    let mut stream: Stream = pending.skip_features();
    let id = header.id.ok_or(ComponentError::NoStreamId)?.into_owned();
    // XEP-0114 §3: <handshake/> = SHA-1(stream id + secret).
    stream
        .send(&XmppStreamElement::ComponentHandshake(
            Handshake::from_stream_id_and_password(id, secret),
        ))
        .await
        .map_err(|e| ComponentError::Closed(e.to_string()))?;
    loop {
        match stream.next().await {
            Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::ComponentHandshake(_)))) => {
                return Ok(stream);
            }
            Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::StreamError(e)))) => {
                tracing::warn!(error = ?e, "stream error during the handshake");
                return Err(ComponentError::Refused);
            }
            Some(Ok(_)) => return Err(ComponentError::Refused),
            Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(e)) => return Err(ComponentError::Closed(e.to_string())),
            None => return Err(ComponentError::Closed("end of stream".into())),
        }
    }
}

/// Sends `s`; on failure keeps it in `carry` for the next connection.
async fn send_keep(
    stream: &mut Stream,
    s: Stanza,
    carry: &mut Option<Stanza>,
) -> Result<(), String> {
    if let Stanza::Presence(p) = &s {
        tracing::debug!(from = ?p.from, to = ?p.to, type_ = stanza::type_name(&p.type_), show = ?p.show, status = ?p.statuses, "presence out");
    }
    let el = XmppStreamElement::Stanza(s);
    match stream.send(&el).await {
        Ok(()) => Ok(()),
        Err(e) => {
            if let XmppStreamElement::Stanza(s) = el {
                *carry = Some(s);
            }
            Err(format!("send: {e}"))
        }
    }
}

impl ComponentTask {
    pub async fn run(
        self,
        shared: Arc<Shared>,
        mut rx: mpsc::Receiver<Stanza>,
        mut stop: watch::Receiver<bool>,
    ) {
        let jid = match BareJid::new(&self.domain) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(domain = %self.domain, error = %e, "not a component JID");
                return;
            }
        };
        let mut delay = self.backoff_min;
        // A stanza taken from the queue whose send failed: sent first after
        // the reconnection.
        let mut carry: Option<Stanza> = None;
        while !*stop.borrow() {
            let attempt = tokio::select! {
                r = login(&jid, &self.secret, &self.server) => r,
                _ = stop.changed() => break,
            };
            let mut stream = match attempt {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(domain = %self.domain, server = %self.server, error = %e, "component connection failed; retrying in {delay:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => break,
                    }
                    delay = (delay * 2).min(self.backoff_max);
                    continue;
                }
            };
            delay = self.backoff_min;
            tracing::info!(domain = %self.domain, server = %self.server, "component connected");
            shared.connected[&self.domain].store(true, Ordering::SeqCst);
            m::component_connected(&self.domain, true);
            // Resend what the server may have lost (it may have restarted).
            let effects = shared
                .engine
                .lock()
                .expect("engine lock")
                .on_connected(&self.domain);
            shared.apply(effects);
            let reason = self
                .session(&shared, &mut stream, &mut rx, &mut carry, &mut stop)
                .await;
            shared.connected[&self.domain].store(false, Ordering::SeqCst);
            m::component_connected(&self.domain, false);
            if *stop.borrow() {
                let _ = tokio::time::timeout(Duration::from_secs(2), stream.shutdown()).await;
                break;
            }
            tracing::warn!(domain = %self.domain, %reason, "component connection lost; reconnecting in {delay:?}");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => break,
            }
            delay = (delay * 2).min(self.backoff_max);
        }
        tracing::info!(domain = %self.domain, "component stopped");
    }

    /// Moves stanzas until the connection ends; returns why.
    async fn session(
        &self,
        shared: &Arc<Shared>,
        stream: &mut Stream,
        rx: &mut mpsc::Receiver<Stanza>,
        carry: &mut Option<Stanza>,
        stop: &mut watch::Receiver<bool>,
    ) -> String {
        if let Some(s) = carry.take() {
            if let Err(e) = send_keep(stream, s, carry).await {
                return e;
            }
        }
        let mut ping_n: u64 = 0;
        loop {
            tokio::select! {
                out = rx.recv() => {
                    let Some(s) = out else { return "outgoing queue closed".into() };
                    if let Err(e) = send_keep(stream, s, carry).await {
                        return e;
                    }
                }
                item = stream.next() => match item {
                    Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::Stanza(s)))) => {
                        if let Some(reply) = self.inbound(shared, s) {
                            if let Err(e) = stream.send(&XmppStreamElement::Stanza(reply)).await {
                                return format!("send: {e}");
                            }
                        }
                    }
                    Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::StreamError(e)))) => {
                        return format!("stream error from the server: {e:?}");
                    }
                    Some(Ok(FallibleStreamElement::Ok(other))) => {
                        tracing::info!(domain = %self.domain, element = ?other, "unexpected stream element ignored");
                    }
                    Some(Ok(FallibleStreamElement::Err(e))) => {
                        // A well-formed stanza xmpp-parsers refuses (e.g. an
                        // unknown <show/> value): ignored, the stream lives on.
                        m::stanza("malformed", "any");
                        tracing::info!(domain = %self.domain, error = %e, "malformed stanza ignored");
                    }
                    Some(Err(ReadError::SoftTimeout)) => {
                        // Silence: a XEP-0199 ping through the server to
                        // ourselves keeps data flowing (the server answers
                        // for an unreachable one).
                        ping_n += 1;
                        let iq = Iq::from_get(format!("keepalive-{ping_n}"), Ping)
                            .with_from(Jid::from(BareJid::new(&self.domain).expect("checked")))
                            .with_to(Jid::from(BareJid::new(&self.domain).expect("checked")));
                        if let Err(e) = stream.send(&XmppStreamElement::Stanza(Stanza::Iq(iq))).await {
                            return format!("send: {e}");
                        }
                    }
                    Some(Err(e)) => return format!("read: {e}"),
                    None => return "end of stream".into(),
                },
                _ = stop.changed() => return "stopping".into(),
            }
        }
    }

    /// One stanza from the server; returns a direct reply (IQs only).
    fn inbound(&self, shared: &Arc<Shared>, s: Stanza) -> Option<Stanza> {
        match s {
            Stanza::Presence(p) => {
                m::stanza("in", stanza::type_name(&p.type_));
                tracing::debug!(from = ?p.from, to = ?p.to, type_ = stanza::type_name(&p.type_), "presence in");
                shared.with_engine(|e| ((), e.on_presence(&p, now_s())));
                None
            }
            Stanza::Iq(iq) => {
                m::stanza("in", "iq");
                match iq {
                    Iq::Get {
                        from,
                        to,
                        id,
                        payload,
                    } => {
                        let reply = if payload.is("ping", ns::PING) {
                            Iq::Result {
                                from: to,
                                to: from,
                                id,
                                payload: None,
                            }
                        } else {
                            unhandled(from, to, id)
                        };
                        Some(Stanza::Iq(reply))
                    }
                    Iq::Set { from, to, id, .. } => Some(Stanza::Iq(unhandled(from, to, id))),
                    Iq::Result { .. } | Iq::Error { .. } => None,
                }
            }
            Stanza::Message(msg) => {
                m::stanza("in", "message");
                tracing::debug!(from = ?msg.from, "message ignored (presence only)");
                None
            }
        }
    }
}

/// RFC 6120 §8.4: an IQ nobody handles gets `service-unavailable`, sent back
/// to where it came from.
fn unhandled(from: Option<Jid>, to: Option<Jid>, id: String) -> Iq {
    Iq::Error {
        from: to,
        to: from,
        id,
        error: StanzaError::new(
            ErrorType::Cancel,
            DefinedCondition::ServiceUnavailable,
            "en",
            "",
        ),
        payload: None,
    }
}
