//! SIP over UDP on the fast path: the engine shard's worker owns the socket and pre-parses
//! each datagram on its own thread ([`triage`]): malformed ones are dropped and counted
//! there, never reaching the engine, except broken requests it can still answer with 400;
//! the others are keyed by Call-ID to their shard and classed for the overload queues.

use crate::overload::{class_of, Class};
use crate::shard::routes::CallRoutes;
use fastpath::preparse::{preparse, shard_of, PreParseError};
use std::net::{SocketAddr, UdpSocket};

/// What the fast path does with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Triage {
    /// CRLFs or NULs only (RFC 5626 / NAT keep-alive): nothing to do.
    KeepAlive,
    /// Hand it to the engine: `shard`'s queue for `class`.
    Queue {
        /// The control-plane shard (by Call-ID).
        shard: usize,
        /// Its overload class.
        class: Class,
    },
    /// Not SIP the control plane could act on: dropped and counted.
    Drop(PreParseError),
}

/// Pre-parses a datagram and decides where it goes. A request the pre-parser cannot key
/// but the control plane can still answer (a malformed request line, Call-ID or CSeq:
/// [`PreParseError::answerable`]) goes to shard 0 as a new request, so it gets its 400
/// (stateless, never larger than the request) instead of silence; it belongs to no call.
///
/// The shard is the one its Call-ID hashes to, unless `routes` sends that Call-ID
/// elsewhere (a pickup handed to the call's shard).
pub(crate) fn triage(bytes: &[u8], shards: usize, routes: &CallRoutes) -> Triage {
    if bytes.iter().all(|&b| b == b'\r' || b == b'\n' || b == 0) {
        return Triage::KeepAlive;
    }
    match preparse(bytes) {
        Ok(keys) => Triage::Queue {
            shard: routes
                .route(keys.call_id)
                .unwrap_or_else(|| shard_of(keys.call_id, shards)),
            class: class_of(&keys),
        },
        Err(error) if error.answerable() && !bytes.starts_with(b"SIP/") => Triage::Queue {
            shard: 0,
            class: Class::New,
        },
        Err(error) => Triage::Drop(error),
    }
}

/// Binds the SIP UDP sockets for the fast path, one per engine shard on one port
/// (every address of both families for `[::]`, see [`fastpath::udp::bind_shared`]), their
/// buffers enlarged, and with several, has the kernel steer each datagram to the socket of
/// its Call-ID's shard ([`fastpath::udp::steer_by_call_id`]); without that (no `CAP_BPF`),
/// a datagram another shard's socket receives is handed to its shard.
pub(crate) fn bind(addr: SocketAddr, shards: usize) -> std::io::Result<Vec<UdpSocket>> {
    let sockets = fastpath::udp::bind_shared(addr, shards)?;
    for socket in &sockets {
        super::enlarge_sip_buffers(socket, addr);
        if let Err(e) = fastpath::udp::report_receive_times(socket) {
            tracing::warn!(
                "udp {addr}: no receive times ({e}): each message's time in the gateway goes unmeasured (its queue wait still is)"
            );
        }
    }
    if shards > 1 {
        match fastpath::udp::steer_by_call_id(&sockets[0], shards) {
            Ok(()) => tracing::info!(
                "udp {addr}: the kernel steers each datagram to its call's engine shard (BPF)"
            ),
            Err(e) => tracing::warn!(
                "udp {addr}: {e}; datagrams that reach another shard's socket are handed over"
            ),
        }
    }
    Ok(sockets)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADERS: &str = "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n\
To: <sip:b@h>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn broken_requests_reach_the_control_plane_for_their_400() {
        let new_request = Triage::Queue {
            shard: 0,
            class: Class::New,
        };
        let lwsruri = include_bytes!("../../tests/fixtures/rfc4475/lwsruri.dat");
        assert_eq!(
            triage(lwsruri, 4, &CallRoutes::default()),
            new_request,
            "RFC 4475 §3.1.2.8"
        );
        for line in [" sip:x SIP/2.0", "OPTIONS sip:a b SIP/2.0"] {
            let text = format!("{line}\r\n{HEADERS}");
            assert_eq!(
                triage(text.as_bytes(), 4, &CallRoutes::default()),
                new_request,
                "{line:?}"
            );
        }
        let no_call_id = format!(
            "OPTIONS sip:x SIP/2.0\r\n{}",
            HEADERS.replace("Call-ID: c1\r\n", "")
        );
        assert_eq!(
            triage(no_call_id.as_bytes(), 4, &CallRoutes::default()),
            new_request
        );
    }

    #[test]
    fn garbage_responses_and_keep_alives_are_not_queued() {
        assert_eq!(
            triage(b"\r\n\r\n", 4, &CallRoutes::default()),
            Triage::KeepAlive
        );
        assert_eq!(
            triage(b"hello world\r\n\r\n", 4, &CallRoutes::default()),
            Triage::Drop(PreParseError::StartLine)
        );
        let response = format!(
            "SIP/2.0 200 OK\r\n{}",
            HEADERS.replace("Call-ID: c1\r\n", "")
        );
        assert_eq!(
            triage(response.as_bytes(), 4, &CallRoutes::default()),
            Triage::Drop(PreParseError::CallId),
            "a broken response is never answered"
        );
        let ok = format!("OPTIONS sip:x SIP/2.0\r\n{HEADERS}");
        assert!(matches!(
            triage(ok.as_bytes(), 4, &CallRoutes::default()),
            Triage::Queue {
                class: Class::Priority | Class::New,
                ..
            }
        ));
    }
}
