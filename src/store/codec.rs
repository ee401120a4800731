//! How records are encoded in the store.
//!
//! A record is one version byte followed by its postcard encoding
//! (`0x01`), compact because sled keeps the values of every page it has
//! read in memory and every NOTIFY rewrites its subscription record (issue
//! 4: memory per subscription and write volume). Stores written before this
//! format held JSON objects; a value that starts with `{` is read as JSON,
//! so such a store still loads, and is rewritten in the new form as its
//! records change.
//!
//! A record whose key already holds one of its fields may leave that field
//! empty in the value (`0x02`, [`encode_keyed`]): the subscription records
//! do so with their dialog id, which is otherwise stored twice and held
//! twice by sled (issue 4). Only the record type's own decoder, which has
//! the key, reads them; [`decode`] refuses them.
//!
//! Invariant: postcard is not self-describing, so the record types *are*
//! the format. Any change to a stored type (a field added, removed or
//! reordered, a variant reordered) needs a new version byte and a decoder
//! for the old one; no `skip_serializing_if` is used on them. The golden
//! tests next to the record types fail on such a change, as a reminder.
//!
//! Version bytes `0x01..=0x3f` are reserved for record versions (issue 17).
//! One above [`LATEST`] in that range was written by a newer build: it
//! decodes to [`StoreError::Newer`], not [`StoreError::Corrupt`], and the
//! start is refused with the store left as it is (an older binary must not
//! move aside what it merely cannot read). A new version byte also bumps
//! the store format ([`super::FORMAT`], `manifest.rs`), so an older binary
//! refuses such a store before reading a single record.

use super::{StoreError, Tree};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The first byte of a postcard-encoded record.
pub const POSTCARD_V1: u8 = 0x01;

/// The first byte of a postcard-encoded record whose key-derived fields
/// are left empty (the record type says which, and fills them in).
pub const POSTCARD_KEYED: u8 = 0x02;

/// The newest record version this build writes and reads.
pub const LATEST: u8 = POSTCARD_KEYED;

/// The version bytes reserved for record versions; above [`LATEST`] they
/// are a newer build's.
pub const VERSIONS: std::ops::RangeInclusive<u8> = 0x01..=0x3f;

/// A version byte this build does not know but a newer one may write.
fn newer(tree: Tree, b: u8) -> Option<StoreError> {
    (VERSIONS.contains(&b) && b > LATEST).then(|| StoreError::Newer {
        tree: tree.name(),
        version: b,
    })
}

/// Encodes a record.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // One buffer: the version byte, then the record appended in place.
    postcard::to_extend(v, vec![POSTCARD_V1]).expect("records serialize")
}

/// Encodes a record whose key-derived fields `v` has left empty.
pub fn encode_keyed<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_extend(v, vec![POSTCARD_KEYED]).expect("records serialize")
}

/// Decodes a keyed record ([`POSTCARD_KEYED`]) into the type's stored
/// layout, which may borrow from `bytes`; the caller fills in what its key
/// holds.
pub fn decode_keyed<'de, T: Deserialize<'de>>(
    tree: Tree,
    bytes: &'de [u8],
) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        tree: tree.name(),
        reason,
    };
    match bytes.split_first() {
        Some((&POSTCARD_KEYED, rest)) => {
            postcard::from_bytes(rest).map_err(|e| corrupt(format!("postcard: {e}")))
        }
        Some((&b, _)) => {
            Err(newer(tree, b).unwrap_or_else(|| corrupt("not a keyed record".into())))
        }
        None => Err(corrupt("not a keyed record".into())),
    }
}

/// Decodes a record of `tree` (either encoding).
pub fn decode<T: DeserializeOwned>(tree: Tree, bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        tree: tree.name(),
        reason,
    };
    match bytes.first() {
        Some(&POSTCARD_V1) => {
            postcard::from_bytes(&bytes[1..]).map_err(|e| corrupt(format!("postcard: {e}")))
        }
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| corrupt(format!("JSON: {e}"))),
        Some(&POSTCARD_KEYED) => Err(corrupt(
            "keyed record read without its key (a decoder bug)".into(),
        )),
        Some(&b) => {
            Err(newer(tree, b)
                .unwrap_or_else(|| corrupt(format!("unknown record encoding 0x{b:02x}"))))
        }
        None => Err(corrupt("empty record".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct R {
        a: String,
        b: Option<u32>,
    }

    #[test]
    fn both_encodings_decode() {
        let r = R {
            a: "x".into(),
            b: Some(7),
        };
        let bin = encode(&r);
        assert_eq!(bin, [POSTCARD_V1, 1, b'x', 1, 7]);
        assert_eq!(decode::<R>(Tree::Meta, &bin).unwrap(), r);
        assert_eq!(
            decode::<R>(Tree::Meta, br#"{"a":"x","b":7}"#).unwrap(),
            r,
            "stores written as JSON still load"
        );
        assert!(matches!(
            decode::<R>(Tree::Meta, &[0x7f]),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(decode::<R>(Tree::Meta, &[POSTCARD_V1, 5]).is_err());
        // A version byte a newer build may write: newer, not corrupt; one
        // outside the reserved range is corrupt.
        for b in [LATEST + 1, *VERSIONS.end()] {
            assert!(matches!(
                decode::<R>(Tree::Meta, &[b, 1, b'x', 0]),
                Err(StoreError::Newer { version, .. }) if version == b
            ));
            assert!(matches!(
                decode_keyed::<R>(Tree::Meta, &[b, 0, 0]),
                Err(StoreError::Newer { .. })
            ));
        }
        assert!(matches!(
            decode::<R>(Tree::Meta, &[VERSIONS.end() + 1]),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            decode::<R>(Tree::Meta, &[0]),
            Err(StoreError::Corrupt { .. })
        ));
        // A keyed record: only its type's decoder, which has the key, reads it.
        let keyed = encode_keyed(&R {
            a: String::new(),
            b: None,
        });
        assert_eq!(keyed, [POSTCARD_KEYED, 0, 0]);
        assert!(decode::<R>(Tree::Meta, &keyed).is_err());
        assert!(decode_keyed::<R>(Tree::Meta, &keyed).unwrap().a.is_empty());
        assert!(decode_keyed::<R>(Tree::Meta, &bin).is_err());
    }
}
