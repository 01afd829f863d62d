//! Fresh random identifiers: Via branches, tags and Call-IDs.

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn random_token(len: usize) -> String {
    (0..len)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A Via branch with the RFC 3261 magic cookie.
pub fn branch() -> String {
    format!("z9hG4bK{}", random_token(16))
}

/// A From/To tag.
pub fn tag() -> String {
    random_token(12)
}

/// A Call-ID unique to this gateway.
pub fn call_id(host: &str) -> String {
    format!("{}@{host}", random_token(20))
}
