//! Running as one node of several on a shared PostgreSQL store (issue 18,
//! docs/cluster.md): which shard a presentity's records belong to
//! (`shard.rs`), where a request for one is served (`placement.rs`),
//! forwarding it there (`forward.rs`), and the agents following the shards
//! this node holds (`follow.rs`). The leases that give a node its shards,
//! and the fence on every write, are the store's (`store::postgres`).

pub mod follow;
pub mod forward;
pub mod placement;
pub mod shard;

pub use self::placement::{Place, Placement};
pub use self::shard::{Sharding, record_sharder};
