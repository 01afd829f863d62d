//! The digest computation itself (RFC 7616 §3.4.1 with qop=auth).

use crate::config::DigestAlgorithm;
use md5::Md5;
use sha2::{Digest, Sha256};

/// Everything the response hash depends on.
#[derive(Debug, Clone, Copy)]
pub struct DigestInput<'a> {
    /// MD5 or SHA-256.
    pub algorithm: DigestAlgorithm,
    /// User name.
    pub username: &'a str,
    /// Realm.
    pub realm: &'a str,
    /// Password.
    pub password: &'a str,
    /// Request method.
    pub method: &'a str,
    /// The digest-uri as sent.
    pub uri: &'a str,
    /// Server nonce.
    pub nonce: &'a str,
    /// Nonce count, 8 hex digits as sent.
    pub nc: &'a str,
    /// Client nonce.
    pub cnonce: &'a str,
    /// Quality of protection (`auth`).
    pub qop: &'a str,
}

fn hash(algorithm: DigestAlgorithm, text: &str) -> String {
    match algorithm {
        DigestAlgorithm::Md5 => hex::encode(Md5::digest(text.as_bytes())),
        DigestAlgorithm::Sha256 => hex::encode(Sha256::digest(text.as_bytes())),
    }
}

/// The expected `response` value, lower-case hex.
pub fn digest_response(input: &DigestInput<'_>) -> String {
    let DigestInput {
        algorithm,
        username,
        realm,
        password,
        method,
        uri,
        nonce,
        nc,
        cnonce,
        qop,
    } = *input;
    let ha1 = hash(algorithm, &format!("{username}:{realm}:{password}"));
    let ha2 = hash(algorithm, &format!("{method}:{uri}"));
    hash(
        algorithm,
        &format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"),
    )
}
