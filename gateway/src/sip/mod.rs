//! The SIP layer: message facade, stream framing, validation, transactions.

pub mod framing;
pub mod message;
