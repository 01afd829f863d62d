//! The SIP layer: message facade, stream framing, validation, transactions.

pub mod framing;
pub mod headers;
pub mod ids;
pub mod message;
pub mod response_route;
pub mod target;
pub mod transaction;
pub mod uri;
pub mod validate;
