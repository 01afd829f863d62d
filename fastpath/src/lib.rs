//! Kernel-bypass-style fast path of the gateway (not built yet).
//!
//! This crate will own the io_uring worker threads pinned to cores: receiving and sending SIP
//! datagrams with a zero-copy pre-parser, relaying RTP, and reading/writing DAHDI audio
//! (issue "fastpath"). Until then the control plane serves UDP through its own tokio
//! transport (`gateway::transport`), behind the same transport trait this crate will implement.
//! It holds no code yet, on purpose: nothing here pretends to work.
