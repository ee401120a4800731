//! A transaction user for tests: every new request on a channel the test
//! reads, as an agent's queue would hold it.

use sip_cpim_gateway::transaction::{ServerTransaction, TransactionLayer, TransactionUser};
use std::sync::Arc;
use tokio::sync::mpsc;

struct Queue(mpsc::UnboundedSender<ServerTransaction>);

impl TransactionUser for Queue {
    fn take(&self, st: ServerTransaction) {
        // A test that dropped its end no longer wants them.
        let _ = self.0.send(st);
    }
}

/// Connects a channel to `layer` as its transaction user.
pub fn connect(layer: &TransactionLayer) -> mpsc::UnboundedReceiver<ServerTransaction> {
    let (tx, rx) = mpsc::unbounded_channel();
    layer.connect(Arc::new(Queue(tx)));
    rx
}
