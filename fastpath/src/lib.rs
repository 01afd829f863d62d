//! The gateway's fast path.
//!
//! Today: the SIP pre-parser ([`preparse`]), which frames a UDP datagram and extracts the
//! routing keys without copying. Next (issue "fastpath"): io_uring workers pinned to cores
//! serving the SIP and RTP sockets, with an epoll fallback.
#![deny(unsafe_code)]

pub mod preparse;
