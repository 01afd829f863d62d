//! Strict source filtering for one RTP stream (the RTP Bleed defence), shared by the relay's
//! legs and the gateway's analog ports.
//!
//! Which source a stream accepts, in the spirit of Asterisk's `strictrtp` with probation:
//! - the address signalled in SDP is accepted at once and latches;
//! - any other source is learned only while nothing is latched, and only after probation:
//!   a run of consecutive packets from one address that parse as RTP, with one SSRC and
//!   consecutive sequence numbers (a phone behind a NAT it does not know about signals its
//!   private address and sends from the NAT's public one). A learned source stands in for
//!   the signalled address: a packet from the signalled address still takes the stream over;
//! - once the signalled address latched, the stream moves only with new SDP
//!   ([`StrictSource::signal`] with a different address);
//! - RTCP is accepted only from the latched source's IP with its RTP port + 1, or its RTP
//!   port itself (rtcp-mux); it is never learned on its own.
//!
//! Everything else is foreign: the caller drops it, counts it, and does not treat it as
//! activity.

use std::net::SocketAddr;

/// Probation length when none is configured: four packets, as Asterisk's `probation`.
pub const DEFAULT_PROBATION_PACKETS: u32 = 4;

/// The fields of an RTP header (RFC 3550 §5.1) that source learning and the receive
/// statistics read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
}

impl RtpHeader {
    /// The header of `packet`, or None when it is not RTP: not version 2, shorter than its
    /// fixed header, CSRC list and extension header, or an RTCP packet type (RFC 5761 §4:
    /// the payload types 64-95 are RTCP's when both share a port).
    pub fn parse(packet: &[u8]) -> Option<RtpHeader> {
        let first = *packet.first()?;
        if first >> 6 != 2 || (64..=95).contains(&(packet.get(1)? & 0x7f)) {
            return None;
        }
        let csrc_end = 12 + 4 * usize::from(first & 0x0f);
        let header_end = if first & 0x10 != 0 {
            let words = packet.get(csrc_end + 2..csrc_end + 4)?;
            csrc_end + 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]))
        } else {
            csrc_end
        };
        if packet.len() < header_end {
            return None;
        }
        let word = |at: usize| {
            u32::from_be_bytes([packet[at], packet[at + 1], packet[at + 2], packet[at + 3]])
        };
        Some(RtpHeader {
            sequence: u16::from_be_bytes([packet[2], packet[3]]),
            timestamp: word(4),
            ssrc: word(8),
        })
    }
}

/// What to do with a packet, as [`StrictSource::admit`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// From the latched source: pass it on.
    Accepted,
    /// It latched the stream on its source (the signalled address, or a source that has
    /// just passed probation): pass it on.
    Latched,
    /// Not from the latched source, or still on probation: drop it and count it.
    Foreign,
}

impl Admission {
    /// Whether the packet is passed on.
    pub fn is_accepted(self) -> bool {
        self != Admission::Foreign
    }
}

/// A source on probation: its run of consecutive packets so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Candidate {
    addr: SocketAddr,
    ssrc: u32,
    last_sequence: u16,
    packets: u32,
}

/// Where a stream's packets are taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Latch {
    /// Nothing latched yet; `candidate` is the source on probation, if any.
    Open { candidate: Option<Candidate> },
    /// A source learned by probation, standing in for a signalled address that never sent.
    Learned(SocketAddr),
    /// The signalled address: fixed until new SDP.
    Signalled(SocketAddr),
}

/// One RTP stream's source filter: which address its packets are accepted from, and where
/// the packets for it go. See the module documentation for the rules.
#[derive(Debug, Clone)]
pub struct StrictSource {
    probation: u32,
    signalled: Option<SocketAddr>,
    latch: Latch,
}

impl StrictSource {
    /// A stream with no address known yet; another source needs `probation` consecutive
    /// RTP packets to be learned (at least one).
    pub fn new(probation: u32) -> StrictSource {
        StrictSource {
            probation: probation.max(1),
            signalled: None,
            latch: Latch::Open { candidate: None },
        }
    }

    /// SDP named `addr` as the far end's RTP address (an offer, an answer, a re-INVITE or
    /// an UPDATE). The same address again changes nothing (a hold/resume re-INVITE keeps a
    /// learned NAT source). A new address moves a stream latched on the signalled address
    /// to it at once; a stream running on a learned source (behind a NAT) goes back to
    /// learning, where the new address latches on its first packet.
    pub fn signal(&mut self, addr: SocketAddr) {
        if self.signalled == Some(addr) {
            return;
        }
        self.signalled = Some(addr);
        self.latch = match self.latch {
            Latch::Signalled(_) => Latch::Signalled(addr),
            Latch::Open { .. } | Latch::Learned(_) => Latch::Open { candidate: None },
        };
    }

    /// Decides on an RTP packet from `from`, learning its source when the rules allow.
    pub fn admit(&mut self, from: SocketAddr, packet: &[u8]) -> Admission {
        if self.signalled == Some(from) {
            return if self.latch == Latch::Signalled(from) {
                Admission::Accepted
            } else {
                self.latch = Latch::Signalled(from);
                Admission::Latched
            };
        }
        match self.latch {
            Latch::Learned(addr) if addr == from => Admission::Accepted,
            Latch::Learned(_) | Latch::Signalled(_) => Admission::Foreign,
            Latch::Open { candidate } => self.probation(candidate, from, packet),
        }
    }

    /// One packet of a source that is not signalled, while nothing is latched.
    fn probation(
        &mut self,
        candidate: Option<Candidate>,
        from: SocketAddr,
        packet: &[u8],
    ) -> Admission {
        let Some(header) = RtpHeader::parse(packet) else {
            // Not RTP: it breaks its own source's run and never starts one.
            if candidate.is_some_and(|c| c.addr == from) {
                self.latch = Latch::Open { candidate: None };
            }
            return Admission::Foreign;
        };
        let continues = candidate.filter(|c| {
            c.addr == from
                && c.ssrc == header.ssrc
                && header.sequence == c.last_sequence.wrapping_add(1)
        });
        let packets = continues.map_or(1, |c| c.packets + 1);
        if packets >= self.probation {
            self.latch = Latch::Learned(from);
            return Admission::Latched;
        }
        self.latch = Latch::Open {
            candidate: Some(Candidate {
                addr: from,
                ssrc: header.ssrc,
                last_sequence: header.sequence,
                packets,
            }),
        };
        Admission::Foreign
    }

    /// Whether an RTCP packet from `from` is accepted: only from the latched source's IP,
    /// on its RTP port + 1 or on the RTP port itself (rtcp-mux).
    pub fn admits_rtcp(&self, from: SocketAddr) -> bool {
        self.latched().is_some_and(|rtp| {
            from.ip() == rtp.ip()
                && (from.port() == rtp.port() || Some(from.port()) == rtp.port().checked_add(1))
        })
    }

    /// The latched source, if any.
    pub fn latched(&self) -> Option<SocketAddr> {
        match self.latch {
            Latch::Open { .. } => None,
            Latch::Learned(addr) | Latch::Signalled(addr) => Some(addr),
        }
    }

    /// Where the stream's far end takes RTP: the latched source (symmetric RTP), else the
    /// signalled address.
    pub fn destination(&self) -> Option<SocketAddr> {
        self.latched().or(self.signalled)
    }

    /// Where the far end takes RTCP: the RTP destination's port + 1 (RFC 3550 §11).
    pub fn rtcp_destination(&self) -> Option<SocketAddr> {
        self.destination()
            .and_then(|rtp| Some(SocketAddr::new(rtp.ip(), rtp.port().checked_add(1)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn rtp(sequence: u16, ssrc: u32) -> Vec<u8> {
        let mut packet = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0, 0, 0, 0];
        packet[2..4].copy_from_slice(&sequence.to_be_bytes());
        packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
        packet.extend_from_slice(&[0xd5; 160]);
        packet
    }

    const SDP: &str = "192.0.2.10:4000";
    const NAT: &str = "198.51.100.7:34000";
    const ATTACKER: &str = "203.0.113.66:5004";

    fn signalled() -> StrictSource {
        let mut source = StrictSource::new(4);
        source.signal(addr(SDP));
        source
    }

    #[test]
    fn the_header_parser_takes_rtp_and_refuses_the_rest() {
        assert_eq!(
            RtpHeader::parse(&rtp(7, 9)),
            Some(RtpHeader {
                sequence: 7,
                timestamp: 160,
                ssrc: 9
            })
        );
        assert_eq!(RtpHeader::parse(&rtp(7, 9)[..11]), None, "short");
        let mut v1 = rtp(7, 9);
        v1[0] = 0x40;
        assert_eq!(RtpHeader::parse(&v1), None, "version 1");
        let mut csrcs = rtp(7, 9)[..12].to_vec();
        csrcs[0] = 0x83;
        assert_eq!(RtpHeader::parse(&csrcs), None, "CSRC list missing");
        csrcs.extend_from_slice(&[0; 12]);
        assert!(RtpHeader::parse(&csrcs).is_some());
        let mut extension = rtp(7, 9)[..12].to_vec();
        extension[0] = 0x90;
        extension.extend_from_slice(&[0xbe, 0xde, 0, 2, 0, 0, 0, 0]);
        assert_eq!(RtpHeader::parse(&extension), None, "extension cut short");
        extension.extend_from_slice(&[0; 4]);
        assert!(RtpHeader::parse(&extension).is_some());
        let mut rtcp = rtp(7, 9);
        rtcp[1] = 200; // a sender report on a muxed port
        assert_eq!(RtpHeader::parse(&rtcp), None, "RTCP");
    }

    #[test]
    fn the_signalled_address_latches_at_once_and_holds() {
        let mut source = signalled();
        assert_eq!(source.destination(), Some(addr(SDP)));
        assert_eq!(source.admit(addr(SDP), b"anything"), Admission::Latched);
        assert_eq!(source.admit(addr(SDP), &rtp(1, 1)), Admission::Accepted);
        for sequence in 0..25 {
            assert_eq!(
                source.admit(addr(ATTACKER), &rtp(sequence, 66)),
                Admission::Foreign
            );
        }
        assert_eq!(source.latched(), Some(addr(SDP)));
    }

    #[test]
    fn another_source_needs_a_clean_run_of_probation_packets() {
        let mut source = signalled();
        let nat = addr(NAT);
        for sequence in 10..13 {
            assert_eq!(source.admit(nat, &rtp(sequence, 5)), Admission::Foreign);
        }
        assert_eq!(source.admit(nat, &rtp(13, 5)), Admission::Latched);
        assert_eq!(source.admit(nat, &rtp(14, 5)), Admission::Accepted);
        assert_eq!(source.destination(), Some(nat), "symmetric RTP");

        // A gap, a new SSRC, garbage or another source in between restart the run.
        let breaks: [(&str, Vec<u8>); 4] = [
            (NAT, rtp(12, 5)),
            (NAT, rtp(11, 6)),
            (NAT, b"not rtp".to_vec()),
            (ATTACKER, rtp(0, 66)),
        ];
        for (breaker, packet) in breaks {
            let mut source = signalled();
            for sequence in 0..3 {
                assert_eq!(source.admit(nat, &rtp(sequence, 5)), Admission::Foreign);
            }
            source.admit(addr(breaker), &packet);
            for sequence in 3..6 {
                assert_eq!(
                    source.admit(nat, &rtp(sequence, 5)),
                    Admission::Foreign,
                    "{breaker}: the run restarted"
                );
            }
            assert_eq!(source.admit(nat, &rtp(6, 5)), Admission::Latched);
        }
    }

    #[test]
    fn garbage_from_another_address_does_not_break_a_run() {
        let mut source = signalled();
        let nat = addr(NAT);
        for sequence in 0..3 {
            source.admit(nat, &rtp(sequence, 5));
            assert_eq!(source.admit(addr(ATTACKER), b"junk"), Admission::Foreign);
        }
        assert_eq!(source.admit(nat, &rtp(3, 5)), Admission::Latched);
    }

    #[test]
    fn garbage_never_latches() {
        let mut source = StrictSource::new(4);
        for n in 0..100u8 {
            assert_eq!(source.admit(addr(ATTACKER), &[n; 40]), Admission::Foreign);
        }
        assert_eq!(source.latched(), None);
    }

    #[test]
    fn nothing_is_learned_once_latched_but_the_signalled_address_takes_over_a_learned_one() {
        let mut source = signalled();
        for sequence in 0..4 {
            source.admit(addr(NAT), &rtp(sequence, 5));
        }
        assert_eq!(source.latched(), Some(addr(NAT)));
        for sequence in 0..25 {
            assert_eq!(
                source.admit(addr(ATTACKER), &rtp(sequence, 66)),
                Admission::Foreign,
                "a latched stream learns nothing more"
            );
        }
        assert_eq!(source.admit(addr(SDP), &rtp(0, 1)), Admission::Latched);
        assert_eq!(source.admit(addr(NAT), &rtp(4, 5)), Admission::Foreign);
        for sequence in 4..10 {
            source.admit(addr(NAT), &rtp(sequence, 5));
        }
        assert_eq!(source.latched(), Some(addr(SDP)), "and then it holds");
    }

    #[test]
    fn new_sdp_moves_the_latch_and_the_same_sdp_keeps_it() {
        let mut source = signalled();
        source.admit(addr(SDP), &rtp(0, 1));
        let moved = addr("192.0.2.20:6000");
        source.signal(moved);
        assert_eq!(source.latched(), Some(moved));
        assert_eq!(source.admit(addr(SDP), &rtp(1, 1)), Admission::Foreign);
        assert_eq!(source.admit(moved, &rtp(0, 2)), Admission::Accepted);

        // Behind a NAT: a re-INVITE with the same address keeps the learned source...
        let mut natted = signalled();
        for sequence in 0..4 {
            natted.admit(addr(NAT), &rtp(sequence, 5));
        }
        natted.signal(addr(SDP));
        assert_eq!(natted.latched(), Some(addr(NAT)));
        // ...and one with a new address starts learning again.
        natted.signal(moved);
        assert_eq!(natted.latched(), None);
        assert_eq!(natted.destination(), Some(moved));
        assert_eq!(natted.admit(moved, &rtp(0, 2)), Admission::Latched);
    }

    #[test]
    fn rtcp_follows_the_rtp_latch() {
        let mut source = signalled();
        let rtcp = addr("192.0.2.10:4001");
        assert!(!source.admits_rtcp(rtcp), "nothing latched: no RTCP");
        assert_eq!(source.rtcp_destination(), Some(rtcp));
        source.admit(addr(SDP), &rtp(0, 1));
        assert!(source.admits_rtcp(rtcp));
        assert!(source.admits_rtcp(addr(SDP)), "rtcp-mux");
        assert!(!source.admits_rtcp(addr("192.0.2.10:4003")));
        assert!(!source.admits_rtcp(addr("203.0.113.66:4001")));
    }
}
