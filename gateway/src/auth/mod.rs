//! Digest authentication (RFC 3261 §22, RFC 7616, RFC 8760): challenges, verification,
//! nonce lifetime and nonce-count replay protection. Sans-IO: time comes in as `now`.

mod credentials;
mod digest;
pub mod guard;
pub mod node;
pub mod nonce;

pub use credentials::{parse_credentials, Credentials};
pub use digest::{digest_response, DigestInput};

use crate::config::DigestAlgorithm;
use crate::sip::message::RequestUri;
use nonce::{NonceCheck, NonceIssuer};
use std::time::{Duration, Instant};

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
    /// The digest `uri` is not the request's Request-URI: credentials computed for one
    /// request presented on another (toll fraud by retargeting).
    #[error("digest uri {digest_uri:?} does not match the Request-URI")]
    UriMismatch {
        /// The uri the credentials were computed for.
        digest_uri: String,
    },
    /// The nonce count did not increase: a replayed request.
    #[error("nonce count did not increase (replay)")]
    Replay,
    /// Unknown user or wrong password.
    #[error("wrong user name or password")]
    BadCredentials,
    /// The extension is locked after repeated failures and this source may not
    /// authenticate as it (answered like a wrong password: a guesser learns nothing).
    #[error("extension locked after repeated failures")]
    Locked,
}

impl RejectReason {
    /// The response status and reason phrase for a request refused for this reason.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            RejectReason::UriMismatch { .. } => (
                400,
                "Bad Request (digest uri does not match the Request-URI)",
            ),
            RejectReason::Malformed(_) => (400, "Bad Request (malformed credentials)"),
            _ => (403, "Forbidden"),
        }
    }
}

/// The result of checking credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The credentials are valid for this user.
    Authenticated {
        /// The authenticated user name.
        user: String,
    },
    /// The nonce expired, was forgotten or is not ours: challenge again with `stale=true`.
    Stale,
    /// Refused; answer with [`RejectReason::status`].
    Rejected {
        /// Why.
        reason: RejectReason,
        /// The digest user name the credentials claimed, when they could be read.
        username: Option<String>,
    },
}

/// Issues challenges and verifies digest responses for one realm. Challenges are
/// stateless (see [`nonce`]): only a nonce that authenticated a request is remembered.
pub struct DigestAuthenticator {
    realm: String,
    nonces: NonceIssuer,
    /// Password for unknown users: the work and the answer are those of a wrong password.
    decoy_password: String,
}

impl DigestAuthenticator {
    /// An authenticator for `realm` whose nonces live `lifetime`; `secret` keys the nonces'
    /// HMAC and `now` is the clock origin.
    pub fn new(realm: String, lifetime: Duration, secret: [u8; 32], now: Instant) -> Self {
        use sha2::{Digest, Sha256};
        let decoy = Sha256::new_with_prefix(b"decoy password").chain_update(secret);
        DigestAuthenticator {
            nonces: NonceIssuer::new(realm.clone(), lifetime, secret, now),
            realm,
            decoy_password: hex::encode(decoy.finalize()),
        }
    }

    /// The same authenticator as engine shard `shard`: its nonces are good on that shard
    /// only (another shard answers them with a `stale=true` challenge of its own).
    pub fn on_shard(self, shard: crate::engine::shard::ShardId) -> Self {
        DigestAuthenticator {
            nonces: self.nonces.on_shard(shard),
            ..self
        }
    }

    /// Header values for WWW-Authenticate or Proxy-Authenticate: one per algorithm, in the
    /// order given, sharing one fresh nonce. No `opaque`: it is optional (RFC 7616
    /// §3.3) and would only add bytes to every challenge.
    pub fn challenge(
        &mut self,
        now: Instant,
        algorithms: &[DigestAlgorithm],
        stale: bool,
    ) -> Vec<String> {
        let nonce = self.nonces.issue(now);
        algorithms
            .iter()
            .map(|algorithm| {
                let mut value = format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"",
                    self.realm,
                    algorithm.token()
                );
                if stale {
                    value.push_str(", stale=true");
                }
                value
            })
            .collect()
    }

    /// Checks an Authorization / Proxy-Authorization value for a request with `method`
    /// and `request_uri`.
    pub fn verify(
        &mut self,
        now: Instant,
        request: (&str, &RequestUri),
        header_value: &str,
        allowed: &[DigestAlgorithm],
        password_of: impl Fn(&str) -> Option<String>,
    ) -> AuthOutcome {
        let credentials = match parse_credentials(header_value) {
            Ok(credentials) => credentials,
            Err(problem) => {
                return AuthOutcome::Rejected {
                    reason: RejectReason::Malformed(problem),
                    username: None,
                }
            }
        };
        let username = credentials.username.clone();
        match self.check(now, request, &credentials, allowed, password_of) {
            Ok(true) => AuthOutcome::Authenticated { user: username },
            Ok(false) => AuthOutcome::Stale,
            Err(reason) => AuthOutcome::Rejected {
                reason,
                username: Some(username),
            },
        }
    }

    /// Ok(true): authenticated; Ok(false): stale nonce; Err: refused.
    fn check(
        &mut self,
        now: Instant,
        (method, request_uri): (&str, &RequestUri),
        credentials: &Credentials,
        allowed: &[DigestAlgorithm],
        password_of: impl Fn(&str) -> Option<String>,
    ) -> Result<bool, RejectReason> {
        if credentials.realm != self.realm {
            return Err(RejectReason::WrongRealm);
        }
        let algorithm = match credentials.algorithm.as_deref() {
            None => DigestAlgorithm::Md5,
            Some(name) if name.eq_ignore_ascii_case("MD5") => DigestAlgorithm::Md5,
            Some(name) if name.eq_ignore_ascii_case("SHA-256") => DigestAlgorithm::Sha256,
            Some(other) => return Err(RejectReason::AlgorithmNotOffered(other.to_string())),
        };
        if !allowed.contains(&algorithm) {
            return Err(RejectReason::AlgorithmNotOffered(
                algorithm.token().to_string(),
            ));
        }
        let same_target = RequestUri::parse(&credentials.uri)
            .is_ok_and(|digest_uri| crate::sip::uri::equivalent(&digest_uri, request_uri));
        if !same_target {
            return Err(RejectReason::UriMismatch {
                digest_uri: credentials.uri.chars().take(80).collect(),
            });
        }
        let (Some(qop), Some(cnonce), Some(count_text)) =
            (&credentials.qop, &credentials.cnonce, &credentials.nc)
        else {
            return Err(RejectReason::QopRequired);
        };
        if !qop.eq_ignore_ascii_case("auth") {
            return Err(RejectReason::QopRequired);
        }
        let Ok(count) = u32::from_str_radix(count_text, 16) else {
            return Err(RejectReason::Malformed(format!("nc={count_text}")));
        };
        let NonceCheck::Valid {
            serial,
            issued,
            last_count,
        } = self.nonces.check(now, &credentials.nonce)
        else {
            return Ok(false);
        };
        if count <= last_count {
            return Err(RejectReason::Replay);
        }
        // Unknown users are checked against a password nobody has, so the work (and the
        // answer) is the same as for a wrong password.
        let known = password_of(&credentials.username);
        let password = known.as_deref().unwrap_or(&self.decoy_password);
        let expected = digest_response(&DigestInput {
            algorithm,
            username: &credentials.username,
            realm: &self.realm,
            password,
            method,
            uri: &credentials.uri,
            nonce: &credentials.nonce,
            nc: count_text,
            cnonce,
            qop,
        });
        let matches = constant_time_eq(
            expected.as_bytes(),
            credentials.response.to_ascii_lowercase().as_bytes(),
        );
        if known.is_none() || !matches {
            return Err(RejectReason::BadCredentials);
        }
        self.nonces.record_use(serial, issued, count);
        Ok(true)
    }

    /// Forgets nonces in use whose lifetime is over.
    pub fn purge(&mut self, now: Instant) {
        self.nonces.purge(now);
    }

    /// Nonces currently remembered (only those that authenticated a request).
    pub fn nonce_count(&self) -> usize {
        self.nonces.in_use()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
