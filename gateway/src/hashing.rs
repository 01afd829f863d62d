//! Hash maps for the engine's large tables (tens of thousands of transactions live at once:
//! RFC 3261 keeps a completed one up to 32 s), built so that a table growing does not stall
//! its shard. Growing rehashes every entry; with std's keyed SipHash over string keys that
//! cost 8 ms of CPU at 70,000 entries, in the middle of a worker turn, while every datagram
//! of the shard waited.
//!
//! - [`PrehashedMap`]: keys chosen by the network (branches, Call-IDs) keep the keyed
//!   SipHash of std's maps (HashDoS resistance), computed once when the key is made and
//!   stored with it ([`Prehashed`]), so growing moves entries without hashing again.
//! - [`IdMap`]: keys the gateway numbers itself (transaction ids) need no keyed hash: a
//!   multiply-and-rotate mix, nothing an attacker can steer.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

/// A key with its hash, computed once by a [`KeyHasher`].
#[derive(Debug, Clone)]
pub struct Prehashed<K> {
    hash: u64,
    key: K,
}

impl<K> Prehashed<K> {
    /// The key.
    pub fn key(&self) -> &K {
        &self.key
    }
}

impl<K: PartialEq> PartialEq for Prehashed<K> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.key == other.key
    }
}

impl<K: Eq> Eq for Prehashed<K> {}

impl<K> Hash for Prehashed<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Makes the [`Prehashed`] keys of one map (its keyed SipHash, random per process as std's
/// maps are): every key of a map, and every key looked up in it, from the same one.
#[derive(Debug, Clone, Default)]
pub struct KeyHasher(RandomState);

impl KeyHasher {
    /// `key` with its hash.
    pub fn key<K: Hash>(&self, key: K) -> Prehashed<K> {
        Prehashed {
            hash: self.0.hash_one(&key),
            key,
        }
    }
}

/// Hands the stored hash of a [`Prehashed`] key to the map unchanged.
#[derive(Debug, Default, Clone, Copy)]
pub struct StoredHash(u64);

impl Hasher for StoredHash {
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `Prehashed`; anything else is folded in all the same.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map from network-chosen keys hashed once (see the module documentation).
pub type PrehashedMap<K, V> = HashMap<Prehashed<K>, V, BuildHasherDefault<StoredHash>>;

/// Mixes integers the gateway assigns itself (ids counted up from 1) into well-spread
/// hashes: FxHash's multiply and rotate, per 64-bit word.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

/// FxHash's multiplier (from the golden ratio).
const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by ids the gateway assigns (never by anything from the network).
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prehashed_key_is_found_by_an_equal_key_made_again() {
        let hasher = KeyHasher::default();
        let mut map: PrehashedMap<(String, String), u32> = PrehashedMap::default();
        for n in 0..10_000u32 {
            map.insert(hasher.key((format!("z9hG4bK{n}"), "INVITE".into())), n);
        }
        assert_eq!(
            map.get(&hasher.key(("z9hG4bK4711".to_string(), "INVITE".to_string()))),
            Some(&4711)
        );
        assert_eq!(
            map.get(&hasher.key(("z9hG4bK4711".to_string(), "BYE".to_string()))),
            None
        );
    }

    /// A string key that counts how often it is hashed.
    #[derive(PartialEq, Eq)]
    struct Counted(String);

    static HASHED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    impl Hash for Counted {
        fn hash<H: Hasher>(&self, state: &mut H) {
            HASHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.0.hash(state);
        }
    }

    /// The stall this module removes: a std map of string keys hashes each key again every
    /// time it grows; a prehashed map hashes each key once, when it is made.
    #[test]
    fn a_growing_prehashed_map_hashes_no_key_again() {
        use std::sync::atomic::Ordering::Relaxed;
        const KEYS: usize = 100_000;
        let keys = || (0..KEYS).map(|n| Counted(format!("z9hG4bK-{n}")));
        HASHED.store(0, Relaxed);
        let mut plain = HashMap::new();
        for (n, key) in keys().enumerate() {
            plain.insert(key, n);
        }
        let plain_hashes = HASHED.swap(0, Relaxed);
        assert!(plain_hashes > KEYS * 3 / 2, "std: {plain_hashes} hashes");
        let hasher = KeyHasher::default();
        let mut prehashed = PrehashedMap::default();
        for (n, key) in keys().enumerate() {
            prehashed.insert(hasher.key(key), n);
        }
        assert_eq!(
            HASHED.load(Relaxed),
            KEYS,
            "one hash per key, none on growth"
        );
        assert_eq!(prehashed.len(), KEYS);
    }

    #[test]
    fn keys_differing_only_in_hash_or_only_in_value_are_different() {
        let hasher = KeyHasher::default();
        let a = hasher.key("a".to_string());
        let forged = Prehashed {
            hash: a.hash,
            key: "b".to_string(),
        };
        assert_ne!(a, forged, "the same hash, another key");
        let other_map = KeyHasher::default().key("a".to_string());
        assert_eq!(a.key(), other_map.key());
    }

    #[test]
    fn counted_ids_spread_over_the_table() {
        // hashbrown takes the bucket from the low bits and a tag from the top 7: counted
        // ids must vary in both.
        let hashes: Vec<u64> = (1..=1024u64)
            .map(|id| BuildHasherDefault::<IdHasher>::default().hash_one(id))
            .collect();
        let low: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 1023).collect();
        let top: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(low.len() > 600, "{} of 1024 low-bit buckets", low.len());
        assert_eq!(top.len(), 128, "every 7-bit tag used");
    }
}
