//! The gateway's side of the operator views (`crate::admin`) and of the
//! scrape-time metrics, read on the gateway task.

use super::Gateway;
use super::core::{Entry, GatewayCore};
use super::driver::Cmd;
use super::records::{Direction, GatewayDialog};
use crate::admin::{
    DialogView, SubscriptionFilter, SubscriptionKind, SubscriptionView, seconds_until,
};
use crate::presence::now_ms;

/// Gatewayed dialogs by direction, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DialogCounts {
    pub cpim_to_sip: usize,
    pub sip_to_cpim: usize,
    /// CPIM → SIP SUBSCRIBEs waiting for their final response.
    pub establishing: usize,
}

fn kind(d: Direction) -> SubscriptionKind {
    match d {
        Direction::CpimToSip => SubscriptionKind::CpimToSip,
        Direction::SipToCpim => SubscriptionKind::SipToCpim,
    }
}

fn view(e: &Entry, now: i64) -> SubscriptionView {
    let r: &GatewayDialog = &e.rec;
    SubscriptionView {
        id: r.id.clone(),
        kind: kind(r.direction),
        watcher: r.watcher.clone(),
        target: r.target.clone(),
        event: "presence".into(),
        state: "active".into(),
        polite_block: false,
        expires_at_ms: r.expires_at,
        expires_in_s: seconds_until(r.expires_at, now),
        // CPIM → SIP: the NOTIFYs come from the SIP side and go to the adapter.
        via_adapter: r.direction == Direction::CpimToSip,
        notify_in_flight: e.in_flight,
        notify_pending: e.latest.is_some(),
        throttled: false,
        last_notify_at_ms: None,
    }
}

impl Gateway {
    /// Runs `f` on the gateway task; `None` if it has stopped.
    async fn inspect<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut GatewayCore) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.tx.send(Cmd::Inspect(Box::new(move |a| {
            let _ = tx.send(f(a));
        })));
        rx.await.ok()
    }

    pub async fn counts(&self) -> DialogCounts {
        self.inspect(|a| {
            let mut c = DialogCounts {
                establishing: a.pending.len(),
                ..DialogCounts::default()
            };
            for e in a.dialogs.values() {
                match e.rec.direction {
                    Direction::CpimToSip => c.cpim_to_sip += 1,
                    Direction::SipToCpim => c.sip_to_cpim += 1,
                }
            }
            c
        })
        .await
        .unwrap_or_default()
    }

    /// Gatewayed dialogs that match `filter`.
    pub async fn subscriptions(&self, filter: SubscriptionFilter) -> Vec<SubscriptionView> {
        let sel = filter.selector();
        self.inspect(move |a| {
            let now = now_ms();
            let mut v: Vec<SubscriptionView> = a
                .dialogs
                .values()
                .filter(|e| sel.admits(kind(e.rec.direction), &e.rec.watcher, &e.rec.target))
                .take(sel.take())
                .map(|e| view(e, now))
                .collect();
            v.sort_by(|x, y| x.id.cmp(&y.id));
            v
        })
        .await
        .unwrap_or_default()
    }

    /// One gatewayed dialog, by id.
    pub async fn dialog(&self, id: &str) -> Option<DialogView> {
        let id = id.to_owned();
        self.inspect(move |a| {
            let e = a.dialogs.get(&id)?;
            Some(DialogView::new(
                view(e, now_ms()),
                &e.rec.dialog,
                Some(e.rec.trans_id.clone()),
            ))
        })
        .await
        .flatten()
    }
}
