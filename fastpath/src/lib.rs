//! The gateway's fast path: the SIP pre-parser ([`preparse`]), which frames a UDP datagram
//! and extracts the routing keys without copying, and UDP workers ([`udp`]) on io_uring (with
//! an epoll + recvmmsg/sendmmsg fallback) pinned to cores.
// Unsafe code only in the backends that hand memory to the kernel (udp/uring.rs,
// udp/epoll.rs, udp/single.rs; a layout test in udp/cmsg.rs) and the pre-parser's SSE2 line feed scan
// (preparse/line_feeds.rs), each block with a SAFETY note.
#![deny(unsafe_code)]

pub mod preparse;
pub mod relay;
pub mod udp;
