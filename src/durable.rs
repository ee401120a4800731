//! The rule both agents' effects drivers apply: a change's batch, with the
//! adapter deliveries staged in it, is made durable before anything that
//! acknowledges it leaves (SIP 2xx, CPIM `success`, NOTIFY). One place, so
//! the presence agent and the gateway cannot drift apart on it.

use crate::delivery::{Adapter, Staged};
use crate::store::{Batch, Store, StoreError};

/// Commits `batch`; then the deliveries staged in it may go (`release`),
/// or, if it failed, they are forgotten (`abandon`) and the error logged.
pub async fn commit(
    store: &dyn Store,
    adapter: &Adapter,
    batch: Batch,
    staged: Vec<Staged>,
) -> Result<(), StoreError> {
    let committed = if batch.is_empty() {
        Ok(())
    } else {
        store.commit(batch).await
    };
    match &committed {
        Ok(()) => adapter.release(staged),
        Err(e) => {
            // Not logged above debug: the store logs the failure itself,
            // once (SledStore's committer, at error, for each write that
            // fails; commits refused after it are not), and a full disk
            // would otherwise log every request of the group and after.
            tracing::debug!(error = %e, "store commit failed: nothing it held is acknowledged");
            adapter.abandon(staged);
        }
    }
    committed
}
