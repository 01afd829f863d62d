//! Control plane of the POTS-to-SIP gateway.
//!
//! Protocol logic (transactions, registrar, B2BUA) is sans-IO: state machines that take
//! events and an explicit `now` and return actions. The tokio runtime in [`runtime`] is the
//! only place that touches sockets and clocks.
#![forbid(unsafe_code)]

pub mod analog;
pub mod auth;
pub mod config;
pub mod control_socket;
pub mod descriptors;
pub mod engine;
pub mod hashing;
pub mod log_limit;
pub mod overload;
pub mod queue_wait;
pub mod registrar;
pub mod relay;
pub mod report;
pub mod runtime;
pub mod service_manager;
pub mod shard;
pub mod sip;
pub mod srtp;
pub mod status;
pub mod store;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod trace;
pub mod transport;
