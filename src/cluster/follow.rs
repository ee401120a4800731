//! The agents follow the shards this node holds: on a takeover they load
//! the shards taken, on a hand-back or a lost lease they drop them.

use super::Sharding;
use crate::delivery::Adapter;
use crate::gateway::Gateway;
use crate::gateway::records::GatewayDialog;
use crate::presence::PresenceAgent;
use crate::store::{PgStore, Tree, codec};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Watches `store`'s holdings until it closes. A shard taken is served
/// (`Holdings::serves`) only once every agent has loaded it.
pub fn follow(
    store: Arc<PgStore>,
    sharding: Sharding,
    presence: PresenceAgent,
    gateway: Gateway,
    adapter: Adapter,
) {
    let mut changes = store.holdings().subscribe();
    let mut held: BTreeSet<u32> = store.holdings().shards().into_iter().collect();
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            if store.holdings().closing() {
                return;
            }
            let now: BTreeSet<u32> = store.holdings().shards().into_iter().collect();
            let taken: Vec<u32> = now.difference(&held).copied().collect();
            let lost: Vec<u32> = held.difference(&now).copied().collect();
            held = now;
            if taken.is_empty() && lost.is_empty() {
                continue;
            }
            tracing::info!(taken = ?taken, lost = ?lost, "shards held changed");
            let (t, l) = (taken.clone(), lost.clone());
            presence
                .shards_changed(
                    Box::new(move |aor: &str| t.contains(&sharding.of(aor))),
                    Box::new(move |aor: &str| l.contains(&sharding.of(aor))),
                )
                .await;
            let a = adapter.clone();
            match tokio::task::spawn_blocking(move || a.reload()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "reloading the adapter queue failed"),
                Err(e) => tracing::error!(error = %e, "reloading the adapter queue failed"),
            }
            if taken.is_empty() {
                continue;
            }
            let s = store.clone();
            let shards = taken.clone();
            let loaded = tokio::task::spawn_blocking(move || {
                let mut recs = Vec::new();
                s.visit_in(Tree::Dialogs, &shards, &mut |_, v| {
                    recs.push(codec::decode::<GatewayDialog>(Tree::Dialogs, v)?);
                    Ok(())
                })
                .map(|()| recs)
            })
            .await;
            match loaded {
                Ok(Ok(recs)) => gateway.adopt(recs),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "loading the dialogs of shards taken failed")
                }
                Err(e) => tracing::error!(error = %e, "loading the dialogs of shards taken failed"),
            }
            store.holdings().mark_ready(&taken);
        }
    });
}
