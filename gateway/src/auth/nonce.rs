//! Stateless digest nonces: a nonce carries its own issue time and serial number and an
//! HMAC over them and the realm, so issuing one costs no memory. State is kept only for
//! nonces that have authenticated a request (their highest nonce count, for replay
//! protection), and only an authenticated request can create it: a flood of
//! unauthenticated requests can neither fill memory nor push a phone's nonce out.

use crate::engine::shard::{Numbers, ShardId};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Nonces in use remembered at most; beyond this the oldest is forgotten, and every nonce
/// issued up to it counts as stale (its user gets a new challenge with `stale=true`).
pub const MAX_NONCES_IN_USE: usize = 50_000;

/// Bytes of the HMAC kept in a nonce (128 bits).
const TAG_BYTES: usize = 16;

/// Hex digits of a nonce: issue second (8), serial (16), tag (32).
const NONCE_HEX_LEN: usize = 8 + 16 + 2 * TAG_BYTES;

/// What a nonce presented with credentials is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Ours and within its lifetime; `last_count` is the highest nonce count that already
    /// authenticated a request with it (0: first use).
    Valid {
        /// The nonce's serial number (its identity in the in-use table).
        serial: u64,
        /// The second (since the issuer's epoch) it was issued.
        issued: u32,
        /// The highest nonce count seen with it so far.
        last_count: u32,
    },
    /// Expired, forgotten, forged or not ours: challenge again with `stale=true`.
    Stale,
}

/// Issues and checks nonces for one realm.
pub struct NonceIssuer {
    realm: String,
    lifetime: Duration,
    key: [u8; 32],
    /// The clock origin of the issue times written into nonces.
    epoch: Instant,
    /// The engine shard issuing them: a serial names its shard, and a nonce of another
    /// shard is stale here (its use counts live there; accepting it here would let a
    /// replay through).
    shard: ShardId,
    serials: Numbers,
    /// Nonces that authenticated a request: serial -> (issue second, highest count).
    /// Serials grow with time, so the first entry is always the oldest.
    in_use: BTreeMap<u64, (u32, u32)>,
    /// Nonces with a serial up to this one that are not in use are treated as stale: they
    /// may have been in use and forgotten, and must not get a second first use.
    forgotten_through: Option<u64>,
}

impl NonceIssuer {
    /// An issuer for `realm` whose nonces live `lifetime`, keyed by `key`; `now` is the
    /// clock origin.
    pub fn new(realm: String, lifetime: Duration, key: [u8; 32], now: Instant) -> Self {
        NonceIssuer {
            realm,
            lifetime,
            key,
            epoch: now,
            shard: ShardId::SOLE,
            serials: ShardId::SOLE.numbers(1),
            in_use: BTreeMap::new(),
            forgotten_through: None,
        }
    }

    /// The same issuer as engine shard `shard` (its serials name the shard).
    pub fn on_shard(self, shard: ShardId) -> Self {
        NonceIssuer {
            shard,
            serials: shard.numbers(1),
            ..self
        }
    }

    fn second(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.epoch).as_secs()).unwrap_or(u32::MAX)
    }

    fn mac(&self, second: u32, serial: u64) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC accepts keys of any length");
        mac.update(self.realm.as_bytes());
        mac.update(&second.to_be_bytes());
        mac.update(&serial.to_be_bytes());
        mac
    }

    /// A fresh nonce. Nothing is remembered.
    pub fn issue(&mut self, now: Instant) -> String {
        let (second, serial) = (self.second(now), self.serials.take());
        let tag = self.mac(second, serial).finalize().into_bytes();
        format!(
            "{second:08x}{serial:016x}{}",
            hex::encode(&tag[..TAG_BYTES])
        )
    }

    /// What `nonce` is worth at `now`.
    pub fn check(&self, now: Instant, nonce: &str) -> NonceCheck {
        let Some((second, serial)) = self
            .authentic(nonce)
            .filter(|&(_, serial)| self.shard.of_number(serial) == self.shard.index())
        else {
            return NonceCheck::Stale;
        };
        let age = u64::from(self.second(now).saturating_sub(second));
        if age > self.lifetime.as_secs() {
            return NonceCheck::Stale;
        }
        match self.in_use.get(&serial) {
            Some(&(_, last_count)) => NonceCheck::Valid {
                serial,
                issued: second,
                last_count,
            },
            None if self.forgotten_through.is_some_and(|last| serial <= last) => NonceCheck::Stale,
            None => NonceCheck::Valid {
                serial,
                issued: second,
                last_count: 0,
            },
        }
    }

    /// The issue second and serial of a nonce whose tag is right.
    fn authentic(&self, nonce: &str) -> Option<(u32, u64)> {
        if nonce.len() != NONCE_HEX_LEN || !nonce.is_ascii() {
            return None;
        }
        let second = u32::from_str_radix(&nonce[..8], 16).ok()?;
        let serial = u64::from_str_radix(&nonce[8..24], 16).ok()?;
        let tag = hex::decode(&nonce[24..]).ok()?;
        self.mac(second, serial)
            .verify_truncated_left(&tag)
            .ok()
            .map(|()| (second, serial))
    }

    /// Records that nonce `serial`, issued at second `issued`, authenticated a request with
    /// nonce count `count`.
    pub fn record_use(&mut self, serial: u64, issued: u32, count: u32) {
        let entry = self.in_use.entry(serial).or_insert((issued, 0));
        entry.1 = entry.1.max(count);
        while self.in_use.len() > MAX_NONCES_IN_USE {
            let Some((oldest, _)) = self.in_use.pop_first() else {
                break;
            };
            self.forgotten_through = Some(self.forgotten_through.map_or(oldest, |f| f.max(oldest)));
        }
    }

    /// Forgets nonces in use whose lifetime is over (they are stale by their own time).
    pub fn purge(&mut self, now: Instant) {
        let current = self.second(now);
        let lifetime = self.lifetime.as_secs();
        while let Some((_, &(issued, _))) = self.in_use.first_key_value() {
            if u64::from(current.saturating_sub(issued)) <= lifetime {
                break;
            }
            self.in_use.pop_first();
        }
    }

    /// Nonces currently remembered (those that authenticated a request).
    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }
}
