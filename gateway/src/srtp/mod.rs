//! SRTP with SDES keying (RFC 3711, RFC 4568, RFC 7714): the crypto suites the gateway
//! terminates, `a=crypto` attributes read and written ([`sdes`]), the per-call contexts
//! that protect what an analog port sends and unprotect what it receives ([`session`],
//! rtc-srtp with ring), and the rules the engine applies to offers ([`policy`]: keys only
//! over TLS, each phone's `srtp` policy).
//!
//! Keys come from the operating system's CSPRNG, not from the engine's seeded RNG (a key a
//! replayed run can reproduce is no key); they are never logged (their `Debug` is
//! redacted) and are erased from memory when dropped, that is when the call's media ends.

pub mod policy;
pub mod sdes;
pub mod session;
