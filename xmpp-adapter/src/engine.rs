//! The subscription state machines of both directions, pure: events in,
//! [`Effect`]s out. No I/O here (runtime.rs executes the effects), so every
//! rule is unit-tested below.
//!
//! XMPP → SIP (an XMPP user watches a SIP presentity): RFC 8048 §5.2.
//! SIP → XMPP (a SIP watcher watches an XMPP user): RFC 8048 §5.3.
//! Notifications: RFC 8048 §6.2 / §6.3. Polling (probes): RFC 8048 §7.

use crate::address::Address;
use crate::model::{ResourcePresence, Resources};
use crate::{pidf, stanza};
use jid::{BareJid, Jid};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use xmpp_parsers::presence::{Presence, Type};

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send this stanza on the component connection of its `from` domain.
    Send(Presence),
    /// Call the gateway's CPIM API (retried until it answers).
    Cpim(CpimJob),
}

/// One CPIM call towards the gateway. Addresses without scheme; the runtime
/// writes them as `pres:` URIs.
#[derive(Debug, Clone, PartialEq)]
pub enum CpimJob {
    Subscribe {
        watcher: Address,
        target: Address,
        duration: u32,
    },
    Unsubscribe {
        watcher: Address,
        target: Address,
    },
    Notify {
        watcher: Address,
        target: Address,
        body: String,
    },
    /// A CPIM notify with `state: terminated` and `reason`: the gateway
    /// ends the SIP watcher's subscription with its final NOTIFY.
    Terminate {
        watcher: Address,
        target: Address,
        reason: &'static str,
    },
}

/// How the gateway answered one of our CPIM subscribes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeOutcome {
    /// `success` or `indeterminate`, with the granted duration.
    Accepted { duration: u32 },
    /// `failure` with a SIP code that refuses for good (RFC 8048 §5.2.1:
    /// 403, 489, 603 cancel the XMPP subscription; 404/604 name no user).
    Refused { code: u16 },
    /// Any other failure, a timeout or the gateway unreachable: the XMPP
    /// subscription stays and the CPIM subscribe is retried later.
    Transient,
}

/// The answer to the gateway's `POST {adapter}/subscribe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeAnswer {
    Success { duration: u32 },
    Indeterminate { duration: u32 },
    Failure { code: u16, reason: &'static str },
}

/// XMPP → SIP subscription phase (RFC 8048 §5.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum W2sPhase {
    /// CPIM subscribe sent, no NOTIFY seen: "neutral".
    Requested,
    /// `Subscription-State: pending`: nothing sent to XMPP yet.
    Pending,
    /// Active: `subscribed` sent (or the roster already said so).
    Active,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct W2s {
    pub xmpp: Address,
    pub sip: Address,
    pub phase: W2sPhase,
    /// The SIP presentity's state last sent to XMPP, per tuple (resource).
    pub last: Resources,
    /// Unix seconds at which the CPIM subscription is refreshed (or retried).
    pub refresh_at: u64,
    /// Consecutive transient failures (backoff).
    #[serde(default)]
    pub failures: u32,
}

/// SIP → XMPP subscription phase (RFC 8048 §5.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum S2wPhase {
    /// `subscribe` sent to the XMPP user, no answer yet.
    AwaitingApproval,
    /// `subscribed` received.
    Approved,
    /// `unsubscribed` received by an earlier version, which ended the SIP
    /// dialog at its next refresh (answered `failure` 603). Still honoured
    /// when read from a state file; no longer set.
    Refused,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct S2w {
    pub sip: Address,
    pub xmpp: Address,
    pub phase: S2wPhase,
    /// The PIDF last handed to the gateway (at-most-once per change).
    #[serde(default)]
    pub last_doc: Option<String>,
}

/// The durable state (store.rs writes it as JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// XMPP watcher → SIP presentity, by [`pair_key`] (xmpp, sip).
    pub w2s: BTreeMap<String, W2s>,
    /// SIP watcher → XMPP presentity, by [`pair_key`] (sip, xmpp).
    pub s2w: BTreeMap<String, S2w>,
    /// Each XMPP user's last presence per resource (RFC 8048 §6.2: one tuple
    /// per resource).
    pub xmpp_presence: BTreeMap<String, Resources>,
}

pub fn pair_key(watcher: &Address, target: &Address) -> String {
    format!("{}\n{}", watcher.key(), target.key())
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The SIP domains served as components.
    pub sip_domains: BTreeSet<String>,
    /// CPIM subscription duration asked for (seconds).
    pub duration: u32,
    /// Shortest and longest retry delay after a transient failure (seconds).
    pub retry_min_s: u64,
    pub retry_max_s: u64,
}

pub struct Engine {
    pub cfg: EngineConfig,
    pub state: State,
}

/// Renew at 80% of what was granted, never more often than every 5 s.
fn refresh_delay(granted: u32) -> u64 {
    (u64::from(granted) * 8 / 10).max(5)
}

fn bare(a: &Address) -> Option<Jid> {
    a.to_bare_jid().ok().map(Jid::from)
}

fn with_resource(a: &Address, res: &str) -> Option<Jid> {
    let b: BareJid = a.to_bare_jid().ok()?;
    if res.is_empty() {
        return Some(Jid::from(b));
    }
    Jid::new(&format!("{b}/{res}")).ok()
}

impl Engine {
    pub fn new(cfg: EngineConfig, state: State) -> Engine {
        Engine { cfg, state }
    }

    fn is_sip_domain(&self, d: &str) -> bool {
        self.cfg.sip_domains.contains(&d.to_ascii_lowercase())
    }

    fn backoff(&self, failures: u32) -> u64 {
        let d = self.cfg.retry_min_s.saturating_mul(1 << failures.min(16));
        d.min(self.cfg.retry_max_s).max(1)
    }

    // ---------------------------------------------------------------
    // XMPP stanzas in
    // ---------------------------------------------------------------

    /// A presence stanza from the XMPP server, addressed to a SIP user of one
    /// of our component domains. Returns the effects; stanzas that name no
    /// user or carry bad addresses are ignored with a log line.
    pub fn on_presence(&mut self, p: &Presence, now: u64) -> Vec<Effect> {
        let (Some(from), Some(to)) = (&p.from, &p.to) else {
            tracing::info!("presence without from/to ignored");
            return vec![];
        };
        if to.node().is_none() || !self.is_sip_domain(to.domain().as_str()) {
            tracing::debug!(%to, "presence not for a SIP user ignored");
            return vec![];
        }
        let (xmpp, sip) = match (
            Address::from_jid(from.as_str()),
            Address::from_jid(to.as_str()),
        ) {
            (Ok(x), Ok(s)) => (x, s),
            (Err(e), _) | (_, Err(e)) => {
                tracing::info!(%from, %to, error = %e, "presence with an unusable address ignored");
                return vec![];
            }
        };
        let resource = from.resource().map(|r| r.as_str().to_owned());
        match p.type_ {
            Type::Subscribe => self.w2s_subscribe(xmpp, sip, now),
            Type::Unsubscribe => self.w2s_unsubscribe(&xmpp, &sip),
            Type::Probe => self.w2s_probe(xmpp, sip, from.clone(), now),
            Type::Subscribed => self.s2w_subscribed(&sip, &xmpp),
            Type::Unsubscribed => self.s2w_unsubscribed(&sip, &xmpp),
            Type::None | Type::Unavailable => {
                self.xmpp_presence(&sip, &xmpp, resource.as_deref(), stanza::resource_of(p))
            }
            Type::Error => {
                tracing::info!(%from, %to, "presence error from the XMPP side");
                vec![]
            }
        }
    }

    /// RFC 8048 §5.2.1: `subscribe` → CPIM subscribe (→ SIP SUBSCRIBE).
    fn w2s_subscribe(&mut self, xmpp: Address, sip: Address, now: u64) -> Vec<Effect> {
        let key = pair_key(&xmpp, &sip);
        if let Some(w) = self.state.w2s.get(&key) {
            if w.phase == W2sPhase::Active {
                // Already subscribed: RFC 6121 §3.1.3 answers `subscribed`
                // again, and the current state follows.
                let mut out = self.send_control(Type::Subscribed, &sip, &xmpp);
                out.extend(self.w2s_full_state(w, None));
                return out;
            }
            return vec![];
        }
        let duration = self.cfg.duration;
        self.state.w2s.insert(
            key,
            W2s {
                xmpp: xmpp.clone(),
                sip: sip.clone(),
                phase: W2sPhase::Requested,
                last: Resources::new(),
                refresh_at: now + self.backoff(0).max(30),
                failures: 0,
            },
        );
        vec![Effect::Cpim(CpimJob::Subscribe {
            watcher: xmpp,
            target: sip,
            duration,
        })]
    }

    /// RFC 8048 §5.2.3: `unsubscribe` → CPIM unsubscribe (SIP Expires 0),
    /// and `unsubscribed` back to the XMPP user.
    fn w2s_unsubscribe(&mut self, xmpp: &Address, sip: &Address) -> Vec<Effect> {
        if self.state.w2s.remove(&pair_key(xmpp, sip)).is_none() {
            return vec![];
        }
        let mut out = vec![Effect::Cpim(CpimJob::Unsubscribe {
            watcher: xmpp.clone(),
            target: sip.clone(),
        })];
        out.extend(self.send_control(Type::Unsubscribed, sip, xmpp));
        out
    }

    /// RFC 8048 §7.1: a probe is answered from the state held (Prosody probes
    /// every contact at each login, from the full JID). Never `unsubscribed`:
    /// the server would drop the user's subscription. A probe for a pair we
    /// do not know means the roster has it (the server only probes contacts
    /// it is subscribed to): the CPIM subscription is re-created.
    fn w2s_probe(&mut self, xmpp: Address, sip: Address, from: Jid, now: u64) -> Vec<Effect> {
        let key = pair_key(&xmpp, &sip);
        match self.state.w2s.get(&key) {
            Some(w) if w.phase == W2sPhase::Active => self.w2s_full_state(w, Some(from)),
            Some(_) => vec![],
            None => {
                let mut out = self.w2s_subscribe(xmpp, sip, now);
                if let Some(w) = self.state.w2s.get_mut(&key) {
                    w.phase = W2sPhase::Active;
                }
                out.extend(
                    self.state
                        .w2s
                        .get(&key)
                        .map(|w| self.w2s_full_state(w, Some(from)))
                        .unwrap_or_default(),
                );
                out
            }
        }
    }

    /// Every tuple held for a W2S pair, to `to` (a full JID for a probe) or
    /// the watcher's bare JID; `unavailable` when nothing is open.
    fn w2s_full_state(&self, w: &W2s, to: Option<Jid>) -> Vec<Effect> {
        let Some(to) = to.or_else(|| bare(&w.xmpp)) else {
            return vec![];
        };
        let mut out: Vec<Effect> = w
            .last
            .iter()
            .filter_map(|(res, rp)| {
                with_resource(&w.sip, res)
                    .map(|from| Effect::Send(stanza::stanza_of(from, to.clone(), rp)))
            })
            .collect();
        if !w.last.values().any(|r| r.available) {
            if let Some(from) = bare(&w.sip) {
                out.push(Effect::Send(stanza::control(Type::Unavailable, from, to)));
            }
        }
        out
    }

    fn send_control(&self, t: Type, from: &Address, to: &Address) -> Vec<Effect> {
        match (bare(from), bare(to)) {
            (Some(f), Some(t2)) => vec![Effect::Send(stanza::control(t, f, t2))],
            _ => vec![],
        }
    }

    /// RFC 8048 §5.3.1: `subscribed` from the XMPP user → the SIP watcher's
    /// subscription becomes active (a CPIM notify with the state held). A
    /// probe asks the server for the user's current presence (RFC 8048 §7.2),
    /// answered even when the user is offline.
    fn s2w_subscribed(&mut self, sip: &Address, xmpp: &Address) -> Vec<Effect> {
        let key = pair_key(sip, xmpp);
        let Some(s) = self.state.s2w.get_mut(&key) else {
            tracing::debug!(sip = %sip.key(), xmpp = %xmpp.key(), "subscribed for no pending SIP subscription");
            return vec![];
        };
        if s.phase == S2wPhase::Approved {
            return vec![];
        }
        s.phase = S2wPhase::Approved;
        let mut out = self.send_control(Type::Probe, sip, xmpp);
        if self.state.xmpp_presence.contains_key(&xmpp.key()) {
            out.extend(self.s2w_notify(&key));
        }
        out
    }

    /// RFC 8048 §5.3.1: `unsubscribed` (refused or revoked) ends the SIP
    /// subscription at once: a CPIM notify `state: terminated`,
    /// `reason: rejected` gives the watcher its final NOTIFY
    /// `terminated;reason=rejected` (RFC 6665 §4.2.2) and removes the
    /// dialog. The pair is forgotten: a new SUBSCRIBE asks the user again.
    fn s2w_unsubscribed(&mut self, sip: &Address, xmpp: &Address) -> Vec<Effect> {
        if self.state.s2w.remove(&pair_key(sip, xmpp)).is_none() {
            return vec![];
        }
        vec![Effect::Cpim(CpimJob::Terminate {
            watcher: sip.clone(),
            target: xmpp.clone(),
            reason: "rejected",
        })]
    }

    /// RFC 8048 §6.2: available / unavailable presence of an XMPP resource →
    /// PIDF (one tuple per resource) in a CPIM notify to the SIP watcher the
    /// server addressed it to. A bare `unavailable` closes every resource.
    fn xmpp_presence(
        &mut self,
        sip: &Address,
        xmpp: &Address,
        resource: Option<&str>,
        rp: ResourcePresence,
    ) -> Vec<Effect> {
        let entry = self.state.xmpp_presence.entry(xmpp.key()).or_default();
        match resource {
            Some(r) => {
                entry.insert(r.to_owned(), rp);
            }
            None if !rp.available => {
                for v in entry.values_mut() {
                    v.available = false;
                }
            }
            None => {
                entry.insert(String::new(), rp);
            }
        }
        let key = pair_key(sip, xmpp);
        match self.state.s2w.get(&key) {
            Some(s) if s.phase == S2wPhase::Approved => self.s2w_notify(&key),
            _ => vec![],
        }
    }

    /// A CPIM notify with the XMPP user's whole state, unless it is the very
    /// document last handed over (idempotent on repeats and probe answers).
    fn s2w_notify(&mut self, key: &str) -> Vec<Effect> {
        let Some(s) = self.state.s2w.get(key) else {
            return vec![];
        };
        let empty = Resources::new();
        let res = self
            .state
            .xmpp_presence
            .get(&s.xmpp.key())
            .unwrap_or(&empty);
        let body = pidf::render(&s.xmpp.to_pres(), res);
        if s.last_doc.as_deref() == Some(body.as_str()) {
            return vec![];
        }
        let job = CpimJob::Notify {
            watcher: s.sip.clone(),
            target: s.xmpp.clone(),
            body: body.clone(),
        };
        self.state.s2w.get_mut(key).expect("present").last_doc = Some(body);
        vec![Effect::Cpim(job)]
    }

    // ---------------------------------------------------------------
    // CPIM calls from the gateway
    // ---------------------------------------------------------------

    /// `POST {adapter}/subscribe`: a SIP watcher subscribes to an XMPP user
    /// (RFC 8048 §5.3.1), or refreshes (§5.3.2: nothing goes to XMPP; the
    /// gateway's NOTIFY carries the last state).
    pub fn gateway_subscribe(
        &mut self,
        sip: Address,
        xmpp: Address,
        duration: u32,
    ) -> (SubscribeAnswer, Vec<Effect>) {
        if !self.is_sip_domain(&sip.domain) {
            // The component can only send from its own domain (XEP-0114).
            return (
                SubscribeAnswer::Failure {
                    code: 403,
                    reason: "watcher domain not served by this adapter",
                },
                vec![],
            );
        }
        if self.is_sip_domain(&xmpp.domain) {
            return (
                SubscribeAnswer::Failure {
                    code: 404,
                    reason: "target is not an XMPP user",
                },
                vec![],
            );
        }
        let key = pair_key(&sip, &xmpp);
        match self.state.s2w.get(&key).map(|s| s.phase) {
            Some(S2wPhase::Approved) => (SubscribeAnswer::Success { duration }, vec![]),
            Some(S2wPhase::AwaitingApproval) => (
                SubscribeAnswer::Indeterminate { duration },
                self.send_control(Type::Subscribe, &sip, &xmpp),
            ),
            Some(S2wPhase::Refused) => {
                self.state.s2w.remove(&key);
                (
                    SubscribeAnswer::Failure {
                        code: 603,
                        reason: "refused by the XMPP user",
                    },
                    vec![],
                )
            }
            None => {
                self.state.s2w.insert(
                    key,
                    S2w {
                        sip: sip.clone(),
                        xmpp: xmpp.clone(),
                        phase: S2wPhase::AwaitingApproval,
                        last_doc: None,
                    },
                );
                (
                    SubscribeAnswer::Indeterminate { duration },
                    self.send_control(Type::Subscribe, &sip, &xmpp),
                )
            }
        }
    }

    /// `POST {adapter}/unsubscribe`: RFC 8048 §5.3.3, `unsubscribe` to the
    /// XMPP user (the SIP watcher's Expires 0, expiry or failed NOTIFYs).
    pub fn gateway_unsubscribe(&mut self, sip: &Address, xmpp: &Address) -> Vec<Effect> {
        match self.state.s2w.remove(&pair_key(sip, xmpp)) {
            Some(s) if s.phase != S2wPhase::Refused => {
                self.send_control(Type::Unsubscribe, sip, xmpp)
            }
            _ => vec![],
        }
    }

    /// `POST {adapter}/notify`: a SIP presentity's state for an XMPP watcher
    /// (RFC 8048 §6.3), or the subscription's state (§5.2.1). Idempotent:
    /// only tuples that changed are sent (at-least-once delivery).
    pub fn gateway_notify(
        &mut self,
        xmpp: &Address,
        sip: &Address,
        body: Option<&str>,
        state: Option<&str>,
        reason: Option<&str>,
        now: u64,
    ) -> Vec<Effect> {
        let key = pair_key(xmpp, sip);
        let Some(w) = self.state.w2s.get_mut(&key) else {
            // Nobody on the XMPP side wants it (the roster item went while
            // the call was in flight): end it on the SIP side.
            if state == Some("terminated") {
                return vec![];
            }
            return vec![Effect::Cpim(CpimJob::Unsubscribe {
                watcher: xmpp.clone(),
                target: sip.clone(),
            })];
        };
        match state {
            Some("pending") => {
                // RFC 8048 §5.2.1: pending → nothing until active.
                if w.phase == W2sPhase::Requested {
                    w.phase = W2sPhase::Pending;
                }
                vec![]
            }
            Some("terminated") => {
                // RFC 6665 §4.1.3: rejected / noresource end it for good
                // (→ `unsubscribed`); timeout, deactivated, probation, giveup
                // invite a new subscription, which the XMPP roster still wants.
                let permanent = matches!(reason, None | Some("rejected") | Some("noresource"));
                if permanent {
                    let w = self.state.w2s.remove(&key).expect("present");
                    let mut out = vec![];
                    for res in w.last.keys().filter(|r| w.last[*r].available) {
                        if let (Some(f), Some(t)) = (with_resource(&w.sip, res), bare(&w.xmpp)) {
                            out.push(Effect::Send(stanza::control(Type::Unavailable, f, t)));
                        }
                    }
                    out.extend(self.send_control(Type::Unsubscribed, sip, xmpp));
                    out
                } else {
                    w.refresh_at = now + 30;
                    vec![Effect::Cpim(CpimJob::Subscribe {
                        watcher: xmpp.clone(),
                        target: sip.clone(),
                        duration: self.cfg.duration,
                    })]
                }
            }
            _ => {
                let mut out = vec![];
                if w.phase != W2sPhase::Active {
                    w.phase = W2sPhase::Active;
                    out.extend(self.send_control(Type::Subscribed, sip, xmpp));
                }
                let Some(body) = body else { return out };
                let new = match pidf::parse(body) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::info!(error = %e, "notify body is not PIDF; state unchanged");
                        return out;
                    }
                };
                let w = self.state.w2s.get_mut(&key).expect("present");
                let Some(to) = bare(&w.xmpp) else { return out };
                for (res, rp) in &new {
                    if w.last.get(res) != Some(rp) {
                        if let Some(from) = with_resource(&w.sip, res) {
                            out.push(Effect::Send(stanza::stanza_of(from, to.clone(), rp)));
                        }
                    }
                }
                for res in w.last.keys().filter(|r| !new.contains_key(*r)) {
                    if let Some(from) = with_resource(&w.sip, res) {
                        out.push(Effect::Send(stanza::control(
                            Type::Unavailable,
                            from,
                            to.clone(),
                        )));
                    }
                }
                w.last = new;
                out
            }
        }
    }

    /// The result of one of our CPIM subscribes (RFC 8048 §5.2.1/§5.2.2).
    pub fn subscribe_result(
        &mut self,
        xmpp: &Address,
        sip: &Address,
        outcome: SubscribeOutcome,
        now: u64,
    ) -> Vec<Effect> {
        let key = pair_key(xmpp, sip);
        let Some(w) = self.state.w2s.get_mut(&key) else {
            return vec![];
        };
        match outcome {
            SubscribeOutcome::Accepted { duration } => {
                w.failures = 0;
                w.refresh_at = now + refresh_delay(duration);
                vec![]
            }
            SubscribeOutcome::Transient => {
                w.failures = w.failures.saturating_add(1);
                let f = w.failures;
                let d = self.backoff(f);
                self.state.w2s.get_mut(&key).expect("present").refresh_at = now + d;
                vec![]
            }
            SubscribeOutcome::Refused { code } => {
                tracing::info!(xmpp = %xmpp.key(), sip = %sip.key(), code, "SIP side refused the subscription");
                self.state.w2s.remove(&key);
                self.send_control(Type::Unsubscribed, sip, xmpp)
            }
        }
    }

    // ---------------------------------------------------------------
    // Lifecycle
    // ---------------------------------------------------------------

    /// At start: every XMPP → SIP subscription is subscribed again (a
    /// refresh for the gateway; re-created if the gateway lost it).
    pub fn on_start(&mut self, now: u64) -> Vec<Effect> {
        let d = self.cfg.duration;
        self.state
            .w2s
            .values_mut()
            .map(|w| {
                w.refresh_at = now + 30;
                Effect::Cpim(CpimJob::Subscribe {
                    watcher: w.xmpp.clone(),
                    target: w.sip.clone(),
                    duration: d,
                })
            })
            .collect()
    }

    /// Every second: CPIM subscriptions due for renewal or retry. The next
    /// attempt is pushed out until the result arrives.
    pub fn on_tick(&mut self, now: u64) -> Vec<Effect> {
        let d = self.cfg.duration;
        let mut out = vec![];
        for w in self.state.w2s.values_mut().filter(|w| w.refresh_at <= now) {
            w.refresh_at = now + 60;
            out.push(Effect::Cpim(CpimJob::Subscribe {
                watcher: w.xmpp.clone(),
                target: w.sip.clone(),
                duration: d,
            }));
        }
        out
    }

    /// A component connection for `domain` is (re)established: resend what
    /// the server may have lost (it may have restarted): pending subscribe
    /// requests, probes for approved SIP watchers (RFC 8048 §7.2), and the
    /// last SIP state to XMPP watchers.
    pub fn on_connected(&self, domain: &str) -> Vec<Effect> {
        let mut out = vec![];
        for s in self.state.s2w.values().filter(|s| s.sip.domain == domain) {
            match s.phase {
                S2wPhase::AwaitingApproval => {
                    out.extend(self.send_control(Type::Subscribe, &s.sip, &s.xmpp))
                }
                S2wPhase::Approved => out.extend(self.send_control(Type::Probe, &s.sip, &s.xmpp)),
                S2wPhase::Refused => {}
            }
        }
        for w in
            self.state.w2s.values().filter(|w| {
                w.sip.domain == domain && w.phase == W2sPhase::Active && !w.last.is_empty()
            })
        {
            out.extend(self.w2s_full_state(w, None));
        }
        out
    }

    pub fn counts(&self) -> (usize, usize) {
        (self.state.w2s.len(), self.state.s2w.len())
    }
}

#[cfg(test)]
mod tests;
