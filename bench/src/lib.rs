//! Benchmark harness (not built yet).
//!
//! This crate will own the side-by-side benchmarks against real peers (rtpengine, Kamailio,
//! SIPp) with hdrhistogram latency reports. It holds no code yet, on purpose.
