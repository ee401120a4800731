//! Shards: every record belongs to the shard of the presentity it is
//! about, so a presentity's publications, registrations, watchers, policy
//! and gatewayed dialogs are held, written and failed over together by one
//! node (the lease holder of that shard). Nothing about one presentity is
//! ever split over two writers: that is what keeps NOTIFY CSeqs and
//! versions single-sourced (the duplicate NOTIFYs of Kamailio #4252 and
//! the CSeq re-use of its DB-only mode come from several writers per
//! presentity).

use crate::delivery::DeliveryRecord;
use crate::gateway::records::GatewayDialog;
use crate::presence::records::SubscriptionRecord;
use crate::store::{Sharder, Tree, codec};
use std::sync::Arc;

/// How presentities map to shards. The hash is FNV-1a (64 bit) of the AOR
/// key as the records hold it: fixed, so every node and every build agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sharding {
    pub shards: u32,
}

impl Sharding {
    /// The shard of the presentity `aor`: its AOR key (`sip:user@host`) or
    /// its CPIM URI (`pres:user@host`), the same shard either way: the
    /// scheme is left out and the rest lower-cased, so a presentity and the
    /// gatewayed dialogs about it (which name it as the other side does)
    /// land together.
    pub fn of(&self, aor: &str) -> u32 {
        let rest = match aor.split_once(':') {
            Some(("sip" | "sips" | "pres" | "im" | "xmpp", rest)) => rest,
            _ => aor,
        };
        let mut h: u64 = FNV_OFFSET;
        for b in rest.bytes() {
            h ^= u64::from(b.to_ascii_lowercase());
            h = h.wrapping_mul(FNV_PRIME);
        }
        (h % u64::from(self.shards.max(1))) as u32
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = FNV_OFFSET;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The presentity a stored record is about, if it names one.
pub fn presentity_of(tree: Tree, key: &[u8], value: &[u8]) -> Option<String> {
    let prefix = || {
        let k = std::str::from_utf8(key).ok()?;
        Some(k.split_once('\n').map_or(k, |(aor, _)| aor).to_owned())
    };
    match tree {
        // `aor\n…` keys (presence::records).
        Tree::Registrations | Tree::Publications | Tree::Policies | Tree::Publishers => prefix(),
        Tree::Subscriptions => SubscriptionRecord::from_stored(key, value)
            .ok()
            .map(|s| s.presentity.to_string()),
        // Both directions: the dialog is about its target (the presentity
        // watched, SIP or CPIM).
        Tree::Dialogs => codec::decode::<GatewayDialog>(Tree::Dialogs, value)
            .ok()
            .map(|d| d.target),
        // Stream `watcher\ntarget`.
        Tree::Deliveries => DeliveryRecord::decode(value)
            .ok()
            .and_then(|d| d.stream.split_once('\n').map(|(_, t)| t.to_owned())),
        Tree::Meta => None,
    }
}

/// The store's sharder: the shard of a record's presentity; records that
/// name none (and any that do not decode, which the store refuses at open
/// anyway) by their key.
pub fn record_sharder(sharding: Sharding) -> Sharder {
    Arc::new(
        move |tree, key, value| match presentity_of(tree, key, value) {
            Some(aor) => sharding.of(&aor),
            None => (fnv1a(key) % u64::from(sharding.shards.max(1))) as u32,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned: changing the hash would move every record of a running
    /// cluster to another shard.
    #[test]
    fn the_hash_is_fixed() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let s = Sharding { shards: 64 };
        assert_eq!(s.of("sip:alice@example.com"), s.of("sip:alice@example.com"));
        assert!(s.of("sip:bob@example.com") < 64);
        // A SIP presentity and the CPIM name of it share a shard.
        assert_eq!(
            s.of("sip:alice@example.com"),
            s.of("pres:alice@Example.COM")
        );
        assert_eq!(
            s.of("sip:alice@example.com"),
            (fnv1a(b"alice@example.com") % 64) as u32
        );
    }

    #[test]
    fn keyed_records_shard_by_their_presentity() {
        let s = Sharding { shards: 1024 };
        let f = record_sharder(s);
        let aor = "sip:alice@example.com";
        let want = s.of(aor);
        for tree in [
            Tree::Registrations,
            Tree::Publications,
            Tree::Policies,
            Tree::Publishers,
        ] {
            assert_eq!(f(tree, format!("{aor}\nsomething").as_bytes(), b""), want);
        }
        let d = DeliveryRecord {
            seq: 1,
            stream: format!("im:bob@xmpp.example\n{aor}"),
            path: "notify".into(),
            payload: serde_json::json!({}),
            queued_at_ms: None,
        };
        let v = serde_json::to_vec(&d).unwrap();
        assert_eq!(f(Tree::Deliveries, &1u64.to_be_bytes(), &v), want);
    }
}
