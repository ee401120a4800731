//! The gateway's effects driver: the one task that owns the
//! [`GatewayCore`], the live SIP transactions and the pending CPIM answers.
//! It turns what happens (requests, responses, timers) into core events and
//! carries out the effects that come back: dialog table changes first, then
//! each commit before what depends on it (acknowledged means durable), then
//! responses, requests and adapter calls.

use super::ApiError;
use super::core::{Event, GatewayCore, PendingKey, store_failure};
use super::effects::{AdapterCall, Effect, Effects, LocalCall, ReplyId, TxId, Undo};
use crate::cpim::{CpimResponse, NotifyRequest, SubscribeRequest, UnsubscribeRequest};
use crate::delivery::{Adapter, Staged};
use crate::dialog_table::{DialogOwner, DialogTable};
use crate::presence::{PresenceAgent, now_ms};
use crate::reject::Reject;
use crate::sip::{Message, Uri};
use crate::store::{Batch, Store};
use crate::transaction::{ServerTransaction, TransactionLayer};
use crate::transport::Resolver;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

pub(super) type Answer = oneshot::Sender<Result<CpimResponse, ApiError>>;

/// A CPIM request from the HTTP side.
pub(super) enum CpimOp {
    Subscribe(SubscribeRequest),
    Unsubscribe(UnsubscribeRequest),
    Notify(NotifyRequest),
}

/// What reaches the driver's task.
pub(super) enum Cmd {
    Cpim(CpimOp, Answer),
    Sip(Box<ServerTransaction>),
    SubscribeDone {
        key: PendingKey,
        outcome: Result<Box<Message>, u16>,
    },
    AdapterAnswered {
        st: Box<ServerTransaction>,
        id: String,
        refresh: bool,
        outcome: Result<CpimResponse, String>,
    },
    NotifyDone {
        id: String,
        ok: bool,
    },
    Undo(Undo),
    /// Dialogs of shards this node took over (issue 18).
    Adopt(Vec<crate::gateway::records::GatewayDialog>),
    /// A read-only look for the admin views and metrics (`admin.rs`).
    Inspect(Box<dyn FnOnce(&mut GatewayCore) + Send>),
}

/// The I/O side, shared with the tasks the driver spawns.
#[derive(Clone)]
pub(super) struct Io {
    pub(super) store: Arc<dyn Store>,
    pub(super) layer: TransactionLayer,
    pub(super) resolver: Arc<Resolver>,
    pub(super) adapter: Adapter,
    pub(super) presence: PresenceAgent,
    pub(super) me: mpsc::UnboundedSender<Cmd>,
}

pub(super) struct Driver {
    pub(super) core: GatewayCore,
    pub(super) io: Io,
    pub(super) table: Arc<DialogTable>,
    txs: HashMap<TxId, Box<ServerTransaction>>,
    answers: HashMap<ReplyId, Answer>,
    next_id: u64,
}

/// An effect with the live objects its ids name.
enum Bound {
    Commit {
        batch: Batch,
        staged: Vec<Staged>,
        then: Vec<Bound>,
        undo: Option<Undo>,
    },
    /// A commit refused before it was tried (the adapter queue is full).
    Refuse {
        why: Reject,
        then: Vec<Bound>,
        undo: Option<Undo>,
    },
    Respond(Box<ServerTransaction>, Message),
    Answer(Answer, Result<CpimResponse, ApiError>),
    Subscribe {
        key: PendingKey,
        request: Message,
        hop: Uri,
    },
    Notify {
        request: Message,
        hop: Uri,
        report: Option<String>,
    },
    Ask {
        st: Box<ServerTransaction>,
        id: String,
        refresh: bool,
        call: AdapterCall,
    },
    Tell(UnsubscribeRequest),
    Local(LocalCall, Answer),
}

impl Driver {
    pub(super) fn new(core: GatewayCore, io: Io, table: Arc<DialogTable>) -> Driver {
        Driver {
            core,
            io,
            table,
            txs: HashMap::new(),
            answers: HashMap::new(),
            next_id: 0,
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        loop {
            let next = self.core.next_timer();
            let sleep = async {
                match next {
                    Some(at) => {
                        let ms = (at - now_ms()).max(0) as u64;
                        tokio::time::sleep(std::time::Duration::from_millis(ms)).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(c) => self.on_cmd(c),
                    None => return,
                },
                _ = sleep => {
                    let fx = self.core.handle(Event::Tick, now_ms());
                    self.apply(fx);
                }
            }
        }
    }

    fn on_cmd(&mut self, c: Cmd) {
        let now = now_ms();
        let fx = match c {
            Cmd::Cpim(op, answer) => {
                let reply = self.id();
                self.answers.insert(reply, answer);
                let event = match op {
                    CpimOp::Subscribe(req) => Event::CpimSubscribe { req, reply },
                    CpimOp::Unsubscribe(req) => Event::CpimUnsubscribe { req, reply },
                    CpimOp::Notify(req) => Event::CpimNotify { req, reply },
                };
                self.core.handle(event, now)
            }
            Cmd::Sip(mut st) => {
                // Its answer may wait on the adapter, a remote peer.
                st.taken();
                if let Some(retry_after) = st.shed() {
                    metrics::counter!(crate::metrics::SIP_SHED, "stage" => "agent").increment(1);
                    let r = Reject::Overloaded { retry_after }.response(st.inbound());
                    tokio::spawn(async move {
                        let _ = st.respond(r).await;
                    });
                    return;
                }
                let tx = self.id();
                let event = Event::Sip {
                    tx,
                    request: st.inbound(),
                };
                let fx = self.core.handle(event, now);
                self.txs.insert(tx, st);
                fx
            }
            Cmd::AdapterAnswered {
                st,
                id,
                refresh,
                outcome,
            } => {
                let tx = self.id();
                let event = Event::AdapterAnswered {
                    tx,
                    request: st.inbound(),
                    id,
                    refresh,
                    outcome,
                };
                let fx = self.core.handle(event, now);
                self.txs.insert(tx, st);
                fx
            }
            Cmd::SubscribeDone { key, outcome } => {
                self.core.handle(Event::SubscribeDone { key, outcome }, now)
            }
            Cmd::NotifyDone { id, ok } => self.core.handle(Event::NotifyDone { id, ok }, now),
            Cmd::Undo(u) => self.core.handle(Event::Undo(u), now),
            Cmd::Inspect(f) => {
                f(&mut self.core);
                return;
            }
            Cmd::Adopt(recs) => {
                tracing::info!(dialogs = recs.len(), "gateway dialogs taken over");
                for rec in recs {
                    self.core.adopt(rec);
                }
                for ev in self.core.take_dialog_events() {
                    self.table
                        .apply(crate::dialog_table::DialogOwner::Gateway, &ev);
                }
                return;
            }
        };
        self.apply(fx);
    }

    /// Carries out `fx`: table changes now, the rest on a task of its own
    /// (in order) so that the driver goes on with the next event.
    pub(super) fn apply(&mut self, fx: Effects) {
        for ev in &fx.dialogs {
            self.table.apply(DialogOwner::Gateway, ev);
        }
        let bound = self.bind(fx.effects);
        // A transaction the core did not answer is a defect: dropping it
        // answers 500 (`ServerTransaction`'s Drop) rather than leaving the
        // client to time out.
        if !self.txs.is_empty() {
            tracing::error!(
                count = self.txs.len(),
                "gateway left transactions unanswered"
            );
            self.txs.clear();
        }
        if !bound.is_empty() {
            tokio::spawn(execute(self.io.clone(), bound));
        }
    }

    /// Replaces ids by the objects they name; deliveries are staged into
    /// their batch here, on the driver's task, so their order is the
    /// order of events.
    fn bind(&mut self, effects: Vec<Effect>) -> Vec<Bound> {
        let mut out = Vec::with_capacity(effects.len());
        for e in effects {
            let b = match e {
                Effect::Commit {
                    mut batch,
                    deliveries,
                    then,
                    undo,
                } => {
                    // The adapter queue is bounded (`[cpim] adapter_max_pending`):
                    // a change whose delivery it cannot take is refused whole.
                    let mut staged = Vec::with_capacity(deliveries.len());
                    let mut full = None;
                    for d in deliveries {
                        let (w, t) = (&d.watcher, &d.target);
                        match self
                            .io
                            .adapter
                            .try_stage(&mut batch, w, t, d.path, d.payload)
                        {
                            Ok(s) => staged.push(s),
                            Err(f) => {
                                full = Some(Reject::from(f));
                                break;
                            }
                        }
                    }
                    let then = self.bind(then);
                    match full {
                        None => Bound::Commit {
                            batch,
                            staged,
                            then,
                            undo,
                        },
                        Some(why) => {
                            self.io.adapter.abandon(staged);
                            Bound::Refuse { why, then, undo }
                        }
                    }
                }
                Effect::Respond { tx, response } => match self.txs.remove(&tx) {
                    Some(st) => Bound::Respond(st, response),
                    None => continue,
                },
                Effect::Answer { reply, result } => match self.answers.remove(&reply) {
                    Some(a) => Bound::Answer(a, result),
                    None => continue,
                },
                Effect::Subscribe { key, request, hop } => Bound::Subscribe { key, request, hop },
                Effect::Notify {
                    request,
                    hop,
                    report,
                } => Bound::Notify {
                    request,
                    hop,
                    report,
                },
                Effect::Ask {
                    tx,
                    id,
                    refresh,
                    call,
                } => match self.txs.remove(&tx) {
                    Some(st) => Bound::Ask {
                        st,
                        id,
                        refresh,
                        call,
                    },
                    None => continue,
                },
                Effect::Tell(u) => Bound::Tell(u),
                Effect::Local { call, reply } => match self.answers.remove(&reply) {
                    Some(a) => Bound::Local(call, a),
                    None => continue,
                },
            };
            out.push(b);
        }
        out
    }
}

/// Runs bound effects in order.
async fn execute(io: Io, effects: Vec<Bound>) {
    for b in effects {
        match b {
            Bound::Commit {
                batch,
                staged,
                then,
                undo,
            } => {
                let committed =
                    crate::durable::commit(&*io.store, &io.adapter, batch, staged).await;
                if committed.is_ok() {
                    Box::pin(execute(io.clone(), then)).await;
                } else {
                    refuse_all(then, Reject::StoreFailure).await;
                    if let Some(u) = undo {
                        let _ = io.me.send(Cmd::Undo(u));
                    }
                }
            }
            Bound::Refuse { why, then, undo } => {
                refuse_all(then, why).await;
                if let Some(u) = undo {
                    let _ = io.me.send(Cmd::Undo(u));
                }
            }
            Bound::Respond(st, r) => {
                let _ = st.respond(r).await;
            }
            Bound::Answer(a, r) => {
                let _ = a.send(r);
            }
            Bound::Subscribe { key, request, hop } => {
                let io = io.clone();
                tokio::spawn(async move {
                    let outcome = io
                        .layer
                        .send_with_failover(&io.resolver, &hop, request)
                        .await
                        .map(Box::new)
                        .map_err(|e| e.status_code());
                    let _ = io.me.send(Cmd::SubscribeDone { key, outcome });
                });
            }
            Bound::Notify {
                request,
                hop,
                report,
            } => {
                let io = io.clone();
                tokio::spawn(async move {
                    let ok = io
                        .layer
                        .send_with_failover(&io.resolver, &hop, request)
                        .await
                        .is_ok_and(|r| r.status().is_some_and(|c| (200..300).contains(&c)));
                    if let Some(id) = report {
                        let _ = io.me.send(Cmd::NotifyDone { id, ok });
                    }
                });
            }
            Bound::Ask {
                st,
                id,
                refresh,
                call,
            } => {
                let io = io.clone();
                tokio::spawn(async move {
                    let outcome = match &call {
                        AdapterCall::Subscribe(s) => io.adapter.subscribe(s).await,
                        AdapterCall::Unsubscribe(u) => io.adapter.unsubscribe(u).await,
                    }
                    .map_err(|e| e.to_string());
                    let _ = io.me.send(Cmd::AdapterAnswered {
                        st,
                        id,
                        refresh,
                        outcome,
                    });
                });
            }
            Bound::Tell(u) => {
                let adapter = io.adapter.clone();
                tokio::spawn(async move {
                    let _ = adapter.unsubscribe(&u).await;
                });
            }
            Bound::Local(call, answer) => {
                let presence = io.presence.clone();
                tokio::spawn(async move {
                    let r = match call {
                        LocalCall::Subscribe {
                            watcher,
                            target,
                            aor,
                            duration,
                            trans_id,
                        } => {
                            presence
                                .cpim_subscribe(&watcher, &target, &aor, Some(duration), &trans_id)
                                .await
                        }
                        LocalCall::Unsubscribe {
                            watcher,
                            target,
                            trans_id,
                        } => {
                            presence
                                .cpim_unsubscribe(&watcher, &target, &trans_id)
                                .await
                        }
                    };
                    let _ = answer.send(Ok(r));
                });
            }
        }
    }
}

/// A commit failed or was refused: whatever `then` would have acknowledged
/// gets `why` instead (a CPIM answer: 503), and nothing is sent (see
/// [`Effect::Commit`]).
async fn refuse_all(then: Vec<Bound>, why: Reject) {
    for b in then {
        match b {
            Bound::Respond(st, _) => {
                let r = why.response(st.inbound());
                let _ = st.respond(r).await;
            }
            Bound::Answer(a, _) | Bound::Local(_, a) => {
                let e = match why {
                    Reject::StoreFailure => store_failure(),
                    _ => ApiError::Unavailable(format!("not taken: {why}")),
                };
                let _ = a.send(Err(e));
            }
            Bound::Commit { then, .. } | Bound::Refuse { then, .. } => {
                Box::pin(refuse_all(then, why.clone())).await
            }
            // Dropped unanswered: the transaction answers 500 itself.
            Bound::Ask { .. } => {}
            Bound::Subscribe { .. } | Bound::Notify { .. } | Bound::Tell(_) => {}
        }
    }
}
