//! Digest authentication (RFC 3261 §22, RFC 7616, RFC 8760): challenges, verification,
//! nonce lifetime and nonce-count replay protection. Sans-IO: time comes in as `now`.

mod credentials;
mod digest;

pub use credentials::{parse_credentials, Credentials};
pub use digest::{digest_response, DigestInput};

use crate::config::DigestAlgorithm;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Nonces remembered at most; beyond this the oldest are forgotten (their users get a
/// fresh challenge with `stale=true`, which phones answer without asking the user).
const MAX_NONCES: usize = 50_000;

/// Why credentials were refused. Unknown users and wrong passwords share one variant so
/// nothing reveals which extensions exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// The header is not a well-formed Digest response.
    #[error("malformed credentials: {0}")]
    Malformed(String),
    /// The realm is not ours.
    #[error("credentials for another realm")]
    WrongRealm,
    /// The algorithm was not offered to this user.
    #[error("algorithm {0} was not offered")]
    AlgorithmNotOffered(String),
    /// qop=auth with cnonce and nc is required.
    #[error("qop=auth with cnonce and nc is required")]
    QopRequired,
    /// The nonce count did not increase: a replayed request.
    #[error("nonce count did not increase (replay)")]
    Replay,
    /// Unknown user or wrong password.
    #[error("wrong user name or password")]
    BadCredentials,
}

/// The result of checking credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The credentials are valid for this user.
    Authenticated {
        /// The authenticated user name.
        user: String,
    },
    /// The nonce expired or is unknown: challenge again with `stale=true`.
    Stale,
    /// Refused; answer 403.
    Rejected(RejectReason),
}

#[derive(Debug)]
struct NonceState {
    issued: Instant,
    last_count: u32,
}

/// Issues challenges and verifies digest responses for one realm.
pub struct DigestAuthenticator {
    realm: String,
    lifetime: Duration,
    opaque: String,
    nonce_key: [u8; 32],
    nonces: HashMap<String, NonceState>,
    /// Nonces in the order they were issued: expiry and eviction of the oldest take the
    /// front, so a full table costs nothing per challenge (a scan of 50,000 nonces per
    /// challenge would stall a gateway under sustained load).
    issue_order: VecDeque<(Instant, String)>,
    issued: u64,
}

impl DigestAuthenticator {
    /// An authenticator for `realm` whose nonces live `lifetime`; `secret` seeds nonces.
    pub fn new(realm: String, lifetime: Duration, secret: [u8; 32]) -> Self {
        DigestAuthenticator {
            realm,
            lifetime,
            opaque: hex::encode(&secret[..8]),
            nonce_key: secret,
            nonces: HashMap::new(),
            issue_order: VecDeque::new(),
            issued: 0,
        }
    }

    fn new_nonce(&mut self, now: Instant) -> String {
        use sha2::{Digest, Sha256};
        self.issued += 1;
        let mut hasher = Sha256::new();
        hasher.update(self.nonce_key);
        hasher.update(self.issued.to_be_bytes());
        hasher.update(rand::random::<[u8; 16]>());
        let nonce = hex::encode(&hasher.finalize()[..18]);
        self.purge(now);
        while self.nonces.len() >= MAX_NONCES {
            let Some((_, oldest)) = self.issue_order.pop_front() else {
                break;
            };
            self.nonces.remove(&oldest);
        }
        self.nonces.insert(
            nonce.clone(),
            NonceState {
                issued: now,
                last_count: 0,
            },
        );
        self.issue_order.push_back((now, nonce.clone()));
        nonce
    }

    /// Header values for WWW-Authenticate or Proxy-Authenticate: one per algorithm, in the
    /// order given, sharing one fresh nonce.
    pub fn challenge(
        &mut self,
        now: Instant,
        algorithms: &[DigestAlgorithm],
        stale: bool,
    ) -> Vec<String> {
        let nonce = self.new_nonce(now);
        algorithms
            .iter()
            .map(|algorithm| {
                let mut value = format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", opaque=\"{}\", algorithm={}, qop=\"auth\"",
                    self.realm,
                    self.opaque,
                    algorithm.token()
                );
                if stale {
                    value.push_str(", stale=true");
                }
                value
            })
            .collect()
    }

    /// Checks an Authorization / Proxy-Authorization value for a request with `method`.
    pub fn verify(
        &mut self,
        now: Instant,
        method: &str,
        header_value: &str,
        allowed: &[DigestAlgorithm],
        password_of: impl Fn(&str) -> Option<String>,
    ) -> AuthOutcome {
        let credentials = match parse_credentials(header_value) {
            Ok(credentials) => credentials,
            Err(problem) => return AuthOutcome::Rejected(RejectReason::Malformed(problem)),
        };
        if credentials.realm != self.realm {
            return AuthOutcome::Rejected(RejectReason::WrongRealm);
        }
        let algorithm = match credentials.algorithm.as_deref() {
            None => DigestAlgorithm::Md5,
            Some(name) if name.eq_ignore_ascii_case("MD5") => DigestAlgorithm::Md5,
            Some(name) if name.eq_ignore_ascii_case("SHA-256") => DigestAlgorithm::Sha256,
            Some(other) => {
                return AuthOutcome::Rejected(RejectReason::AlgorithmNotOffered(other.to_string()))
            }
        };
        if !allowed.contains(&algorithm) {
            return AuthOutcome::Rejected(RejectReason::AlgorithmNotOffered(
                algorithm.token().to_string(),
            ));
        }
        let (Some(qop), Some(cnonce), Some(count_text)) =
            (&credentials.qop, &credentials.cnonce, &credentials.nc)
        else {
            return AuthOutcome::Rejected(RejectReason::QopRequired);
        };
        if !qop.eq_ignore_ascii_case("auth") {
            return AuthOutcome::Rejected(RejectReason::QopRequired);
        }
        let Ok(count) = u32::from_str_radix(count_text, 16) else {
            return AuthOutcome::Rejected(RejectReason::Malformed(format!("nc={count_text}")));
        };
        let lifetime = self.lifetime;
        let Some(state) = self.nonces.get(&credentials.nonce) else {
            return AuthOutcome::Stale;
        };
        if now.duration_since(state.issued) > lifetime {
            self.nonces.remove(&credentials.nonce);
            return AuthOutcome::Stale;
        }
        if count <= state.last_count {
            return AuthOutcome::Rejected(RejectReason::Replay);
        }
        // Unknown users are checked against a password nobody has, so the work (and the
        // answer) is the same as for a wrong password.
        let known = password_of(&credentials.username);
        let password = known.clone().unwrap_or_else(|| hex::encode(self.nonce_key));
        let expected = digest_response(&DigestInput {
            algorithm,
            username: &credentials.username,
            realm: &self.realm,
            password: &password,
            method,
            uri: &credentials.uri,
            nonce: &credentials.nonce,
            nc: count_text,
            cnonce,
            qop,
        });
        if known.is_none()
            || !constant_time_eq(
                expected.as_bytes(),
                credentials.response.to_ascii_lowercase().as_bytes(),
            )
        {
            return AuthOutcome::Rejected(RejectReason::BadCredentials);
        }
        if let Some(state) = self.nonces.get_mut(&credentials.nonce) {
            state.last_count = count;
        }
        AuthOutcome::Authenticated {
            user: credentials.username,
        }
    }

    /// Forgets expired nonces (the oldest first; it stops at the first one still valid).
    pub fn purge(&mut self, now: Instant) {
        while let Some((issued, nonce)) = self.issue_order.front() {
            if now.duration_since(*issued) <= self.lifetime {
                break;
            }
            self.nonces.remove(nonce);
            self.issue_order.pop_front();
        }
    }

    /// Nonces currently remembered.
    pub fn nonce_count(&self) -> usize {
        self.nonces.len()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
