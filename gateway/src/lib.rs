//! Control plane of the POTS-to-SIP gateway.
//!
//! Protocol logic (transactions, registrar, B2BUA) is sans-IO: state machines that take
//! events and an explicit `now` and return actions. The tokio runtime in [`runtime`] is the
//! only place that touches sockets and clocks.
#![forbid(unsafe_code)]

pub mod sip;
pub mod config;
pub mod transport;
pub mod auth;
pub mod registrar;
pub mod store;
// pub mod engine;
// pub mod runtime;
