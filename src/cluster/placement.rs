//! Where a request for a presentity is served: here, at the node holding
//! its shard, or nowhere for a moment (no live lease: a takeover is due).

use super::Sharding;
use crate::store::Holdings;
use std::sync::Arc;

/// This node's view of the cluster: its shards and the other nodes'.
#[derive(Clone)]
pub struct Placement {
    pub holdings: Arc<Holdings>,
    pub sharding: Sharding,
    pub node: Arc<str>,
}

/// The answer for one presentity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// This node holds the shard.
    Here,
    /// Another live node holds it; where it takes SIP over UDP and HTTP
    /// (`host:port`, as it advertises them; empty when not yet known).
    At {
        node: Arc<str>,
        sip: String,
        http: String,
    },
    /// No live holder known (a node died and its lease has not run out,
    /// or a takeover is in progress).
    Nowhere,
}

impl Placement {
    pub fn place(&self, aor: &str) -> Place {
        let shard = self.sharding.of(aor);
        if self.holdings.serves(shard) {
            return Place::Here;
        }
        if self.holdings.epoch(shard).is_some() {
            // Just taken, not yet loaded.
            return Place::Nowhere;
        }
        match self.holdings.owner(shard) {
            Some(node) if node != self.node => {
                let peer = self.holdings.peer(&node).unwrap_or_default();
                Place::At {
                    sip: peer.sip,
                    http: peer.http,
                    node,
                }
            }
            _ => Place::Nowhere,
        }
    }

    /// `addr` is a cluster node's SIP address (a request it forwarded is
    /// never forwarded again: two stale views cannot make a loop).
    pub fn is_peer_sip(&self, addr: &str) -> bool {
        self.holdings.peer_sips().iter().any(|p| p == addr)
    }
}
