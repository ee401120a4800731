//! Hash maps for the large in-memory tables (subscriptions, presentities,
//! the dialog table): a million entries rehash on every doubling and hash
//! on every lookup, and SipHash was 13 % of a 1M-subscription restart
//! (docs/performance.md). foldhash's `quality` hasher is several times
//! faster, still seeded per process at random, so peers choosing keys
//! (Call-IDs, tags) cannot aim collisions at one bucket.

pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::quality::RandomState>;
