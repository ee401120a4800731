//! The presence agent's task: it owns the [`Agent`], turns requests,
//! NOTIFY outcomes and timers into calls on it, and carries out the
//! [`Effects`] they return — commit first (`crate::durable`), then the
//! response and the NOTIFYs.

use super::{Agent, Effects, NotifyOutcome, TimerKey, cpim_sub_id, now_ms, records, refuse};
use crate::body::{PresenceDoc, PresenceFormat};
use crate::cpim::CpimResponse;
use crate::sip::{Message, Method, Uri};
use crate::transaction::{ServerTransaction, TransactionLayer};
use crate::transport::Resolver;
use bytes::Bytes;
use std::cmp::Reverse;
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, oneshot};

/// Reload attempts in a row, a second apart, before the agent gives up
/// and keeps the state it has (ten minutes of an unreadable store).
const RELOAD_ATTEMPTS: u32 = 600;
/// At most one log line about reloads this often (ms).
const RELOAD_LOG_EVERY_MS: i64 = 10_000;
/// After a reload, how long due timers wait (see `Agent::reload`).
const TIMERS_HELD_MS: i64 = 1000;

pub(crate) enum Command {
    Request(Box<ServerTransaction>),
    NotifyDone {
        sub_id: String,
        outcome: NotifyOutcome,
    },
    /// Reload the state from the store after a failed commit; the number
    /// is the request's place in `Agent::reloads`, so that a burst of
    /// failures (a full disk refuses every change) costs one reload, not
    /// one each.
    Reload(u64),
    /// The shards this node holds changed (issue 18): forget the
    /// presentities of the shards lost, take in those of the shards taken
    /// (never reloading the rest: a commit may be in flight for it), and
    /// NOTIFY every subscription taken over, so its watcher learns this
    /// node's Contact (RFC 6665 §4.1.2.1: the NOTIFY's Contact is the new
    /// remote target).
    Shards {
        taken: Box<dyn Fn(&str) -> bool + Send>,
        lost: Box<dyn Fn(&str) -> bool + Send>,
        done: oneshot::Sender<()>,
    },
    /// A read-only look for the admin views and metrics (`admin.rs`).
    Inspect(Box<dyn FnOnce(&mut Agent) + Send>),
    CpimSubscribe {
        watcher: String,
        target: String,
        aor: String,
        duration: Option<u32>,
        trans_id: String,
        reply: oneshot::Sender<CpimResponse>,
    },
    CpimUnsubscribe {
        watcher: String,
        target: String,
        trans_id: String,
        reply: oneshot::Sender<CpimResponse>,
    },
    Fetch {
        aor: String,
        reply: oneshot::Sender<(PresenceDoc, Bytes)>,
    },
    Policies {
        presentity: String,
        reply: oneshot::Sender<(Vec<(String, records::PolicyAction)>, records::PolicyAction)>,
    },
    SetPolicy {
        presentity: String,
        watcher: String,
        action: Option<records::PolicyAction>,
        reply: oneshot::Sender<bool>,
    },
    /// Grants (`grant`) or revokes a publisher's right to PUBLISH for
    /// `presentity` (`esc.rs`); `reply` gets whether a grant was held
    /// before, once the change is durable.
    SetPublisher {
        presentity: String,
        publisher: String,
        grant: bool,
        reply: oneshot::Sender<bool>,
    },
}

impl Agent {
    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        loop {
            let next = self
                .timers
                .peek()
                .map(|Reverse((at, _))| (*at).max(self.timers_held_until));
            let sleep = async {
                match next {
                    Some(at) => {
                        let d = (at - now_ms()).max(0) as u64;
                        tokio::time::sleep(std::time::Duration::from_millis(d)).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => return,
                },
                _ = sleep => self.fire_timers(),
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Request(st) => {
                let st = *st;
                // Logs about this request carry its Call-ID, method and peer.
                let span = st.span().clone();
                let _in = span.enter();
                let shed = st.shed();
                let inc = st.inbound();
                let fx = if let Some(retry_after) = shed {
                    metrics::counter!(crate::metrics::SIP_SHED, "stage" => "agent").increment(1);
                    refuse(inc, crate::reject::Reject::Overloaded { retry_after })
                } else {
                    self.on_request(inc)
                };
                self.run_effects(Some(st), fx);
            }
            Command::NotifyDone { sub_id, outcome } => {
                let fx = self.on_notify_done(&sub_id, outcome);
                self.run_effects(None, fx);
            }
            Command::Reload(n) => {
                // Only the latest request runs: it comes after every
                // failure before it, so it reloads what they left.
                if n == self.reloads.load(Ordering::Relaxed) {
                    self.reload(n);
                }
            }
            Command::Shards { taken, lost, done } => {
                self.forget_presentities(&*lost);
                let adopted = match self.absorb(&*taken) {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::error!(error = %e, "loading the shards taken failed");
                        return;
                    }
                };
                tracing::info!(
                    adopted = adopted.len(),
                    "presence state follows the shards held"
                );
                let mut fx = Effects::default();
                for id in adopted {
                    self.notify_or_defer(&id, &mut fx);
                }
                self.run_effects(None, fx);
                let _ = done.send(());
            }
            Command::CpimSubscribe {
                watcher,
                target,
                aor,
                duration,
                trans_id,
                reply,
            } => {
                let (resp, fx) = self.cpim_subscribe(&watcher, &target, &aor, duration, &trans_id);
                self.run_effects_then(None, fx, move || {
                    let _ = reply.send(resp);
                });
            }
            Command::CpimUnsubscribe {
                watcher,
                target,
                trans_id,
                reply,
            } => {
                let id = cpim_sub_id(&watcher, &target);
                let mut fx = Effects::default();
                let resp = if self.subs.contains_key(id.as_str()) {
                    self.terminate(&id, "timeout", &mut fx);
                    CpimResponse::success(&trans_id, None)
                } else {
                    crate::reject::Reject::DialogGone.cpim(&trans_id)
                };
                self.run_effects_then(None, fx, move || {
                    let _ = reply.send(resp);
                });
            }
            Command::Fetch { aor, reply } => {
                let body = self.rendered(&aor, PresenceFormat::Pidf);
                let doc = self.presentities[&aor]
                    .cache
                    .as_ref()
                    .map(|(d, _)| d.clone())
                    .expect("rendered fills the cache");
                self.gc(&aor);
                let _ = reply.send((doc, body));
            }
            Command::Policies { presentity, reply } => {
                let list = self.policies_of(&presentity);
                let domain = presentity
                    .rsplit('@')
                    .next()
                    .unwrap_or("")
                    .to_ascii_lowercase();
                let default = self
                    .settings
                    .domain_policies
                    .get(&domain)
                    .copied()
                    .unwrap_or(self.settings.default_policy);
                let _ = reply.send((list, default));
            }
            Command::SetPolicy {
                presentity,
                watcher,
                action,
                reply,
            } => {
                let fx = self.set_policy(&presentity, &watcher, action);
                self.run_effects_then(None, fx, move || {
                    let _ = reply.send(true);
                });
            }
            Command::SetPublisher {
                presentity,
                publisher,
                grant,
                reply,
            } => {
                let (held, fx) = self.set_publisher(&presentity, &publisher, grant);
                self.run_effects_then(None, fx, move || {
                    let _ = reply.send(held);
                });
            }
            Command::Inspect(f) => f(self),
        }
    }

    /// Reloads the state from the store (what is durable) after failed
    /// commits. If the store cannot be read now (sled being reopened after
    /// a failed write), tries again a second later, at most
    /// [`RELOAD_ATTEMPTS`] times in a row.
    fn reload(&mut self, n: u64) {
        // One line per RELOAD_LOG_EVERY_MS: a full disk refuses every
        // change, and each refusal may cost a reload.
        let now = now_ms();
        if now - self.reload_logged_at >= RELOAD_LOG_EVERY_MS {
            tracing::warn!(
                reloads_not_logged = self.reloads_not_logged,
                "store commit failed; reloading presence state from the store"
            );
            self.reload_logged_at = now;
            self.reloads_not_logged = 0;
        } else {
            self.reloads_not_logged += 1;
        }
        // The reload re-arms the timers of what failed to expire; due now,
        // they would fail again at once and reload again, in a loop, for
        // as long as the store cannot write (a full disk). Once a second
        // is enough.
        self.timers_held_until = now_ms() + TIMERS_HELD_MS;
        let Err(e) = self.reload_state() else {
            self.reload_failures = 0;
            return;
        };
        self.reload_failures += 1;
        // Every failed commit asks for a reload, and while the store
        // cannot be read each fails: the first of a run is logged.
        if self.reload_failures == 1 {
            tracing::error!(error = %e, "presence state reload failed; the state is kept, and the reload retried every second");
        } else {
            tracing::debug!(error = %e, attempt = self.reload_failures, "presence state reload failed");
        }
        if self.reload_failures >= RELOAD_ATTEMPTS {
            self.reload_failures = 0;
            return;
        }
        let me = self.self_tx.clone();
        let reloads = self.reloads.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            // A failure in the meantime has asked for a later one.
            if reloads
                .compare_exchange(n, n + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                let _ = me.send(Command::Reload(n + 1));
            }
        });
    }

    fn fire_timers(&mut self) {
        let now = now_ms();
        if now < self.timers_held_until {
            return;
        }
        let mut fx = Effects::default();
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, key))) = self.timers.pop() else {
                break;
            };
            match key {
                TimerKey::Binding(k) => self.expire_binding(&k, at, &mut fx),
                TimerKey::Publication(k) => self.expire_publication(&k, at, &mut fx),
                TimerKey::Subscription(id) => self.expire_subscription(&id, at, &mut fx),
                TimerKey::Throttle(id) => self.throttle_over(&id, &mut fx),
            }
        }
        self.run_effects(None, fx);
    }

    /// Commits, then answers `st` (the request `fx` answers, if any) and
    /// notifies (never before durability).
    fn run_effects(&self, st: Option<ServerTransaction>, fx: Effects) {
        self.run_effects_then(st, fx, || {});
    }

    /// As `run_effects`, calling `done` once the batch is durable.
    fn run_effects_then(
        &self,
        st: Option<ServerTransaction>,
        fx: Effects,
        done: impl FnOnce() + Send + 'static,
    ) {
        debug_assert_eq!(
            st.is_some(),
            fx.reply.is_some(),
            "a request gets one answer"
        );
        if fx.batch.is_empty() && fx.reply.is_none() && fx.notifies.is_empty() {
            done();
            return;
        }
        let adapter = self.adapter.clone();
        let store = self.store.clone();
        let layer = self.layer.clone();
        let resolver = self.resolver.clone();
        let me = self.self_tx.clone();
        let reloads = self.reloads.clone();
        let Effects {
            batch,
            staged,
            reply,
            notifies,
            aor,
        } = fx;
        // The request and its answer wait for the commit behind one
        // pointer: carried inline, they made this task's future kilobytes
        // that `tokio::spawn` copies (see `transaction::server::respond`).
        let reply = st.zip(reply).map(Box::new);
        tokio::spawn(async move {
            let committed = crate::durable::commit(&*store, &adapter, batch, staged).await;
            if committed.is_err() {
                if let Some(pair) = reply {
                    let (st, _) = *pair;
                    let r = crate::reject::Reject::StoreFailure.response(&st);
                    let _ = st.respond(r).await;
                }
                let n = reloads.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::debug!(aor = %aor.unwrap_or_default(), "store commit failed; presence state will be reloaded");
                let _ = me.send(Command::Reload(n));
                return;
            }
            done();
            if let Some(pair) = reply {
                let (st, resp) = *pair;
                let _ = st.respond(resp).await;
            }
            for n in notifies {
                let layer = layer.clone();
                let resolver = resolver.clone();
                let me = me.clone();
                tokio::spawn(async move {
                    // Boxed: a client transaction's future is kilobytes,
                    // and the task is spawned (copied) per NOTIFY.
                    let outcome =
                        Box::pin(send_notify(&layer, &resolver, n.msg, &n.next_hop)).await;
                    if !n.terminal {
                        let _ = me.send(Command::NotifyDone {
                            sub_id: n.sub_id,
                            outcome,
                        });
                    }
                });
            }
        });
    }
}

/// Sends one NOTIFY (failing over between targets, RFC 3263 §4.3) and
/// classifies the result (RFC 6665 §4.2.2).
async fn send_notify(
    layer: &TransactionLayer,
    resolver: &Resolver,
    msg: Message,
    next_hop: &Uri,
) -> NotifyOutcome {
    match layer.send_with_failover(resolver, next_hop, msg).await {
        Ok(resp) => {
            let code = resp.status().unwrap_or(500);
            match code {
                200..=299 => NotifyOutcome::Delivered,
                _ if code != 481 && code != 408 && resp.retry_after().ok().flatten().is_some() => {
                    NotifyOutcome::Transient
                }
                _ => NotifyOutcome::Fatal,
            }
        }
        Err(_) => NotifyOutcome::Fatal,
    }
}

impl Agent {
    fn on_request(&mut self, inc: &crate::transaction::IncomingRequest) -> Effects {
        match inc.request().method() {
            Some(Method::Register) => self.on_register(inc),
            Some(Method::Publish) => self.on_publish(inc),
            Some(Method::Subscribe) => self.on_subscribe(inc),
            _ => refuse(inc, crate::reject::Reject::MethodNotAllowed),
        }
    }
}
