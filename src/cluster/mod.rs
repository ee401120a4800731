//! Running as one node of several on a shared PostgreSQL store (issue 18,
//! docs/cluster.md): which shard a presentity's records belong to
//! (`shard.rs`). The leases that give a node its shards, and the fence on
//! every write, are the store's (`store::postgres`).

pub mod shard;

pub use self::shard::{Sharding, record_sharder};
