//! Which received RTP packets continue the stream being played, and when another stream
//! takes over. A stream is one SSRC with sequence numbers and timestamps that follow on
//! (RFC 3550 §5.1, with the sequence tolerances of its appendix A.1); a packet that does
//! not fit it — another SSRC (a picker's phone replacing the callee's, a transfer), a
//! sequence number far off, a timestamp that moved backwards while the sequence went on, or
//! one outside the playout window — is held. If the next such packet continues the held
//! one (same SSRC, the next sequence number, a later timestamp), the two start a new
//! stream; otherwise the held packet was a stray and is dropped. So one odd packet never
//! disturbs playout, and a real change costs the wait for its second packet (and what was
//! still buffered of the old stream).

/// How far (in samples) from the playout point a packet of the stream may land, behind
/// (late) or ahead (early): 512 ms. Beyond it the timestamps have jumped.
pub const WINDOW: u32 = 4096;
/// A sequence number this far ahead of the highest one is still the stream's (packets lost).
const MAX_DROPOUT: i16 = 3000;
/// A sequence number this far behind the highest one is still the stream's (reordered).
const MAX_MISORDER: i16 = 100;

/// The header fields of a received audio packet that decide where it belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeader {
    /// Synchronisation source.
    pub ssrc: u32,
    /// Sequence number.
    pub sequence: u16,
    /// Timestamp of its first sample.
    pub timestamp: u32,
    /// Samples it carries.
    pub samples: u32,
}

/// `next` continues `held` (a packet that did not fit): same SSRC, the next sequence
/// number, a later timestamp within the window.
fn continues(held: PacketHeader, next: PacketHeader) -> bool {
    let ahead = next.timestamp.wrapping_sub(held.timestamp);
    next.ssrc == held.ssrc
        && next.sequence == held.sequence.wrapping_add(1)
        && ahead > 0
        && ahead.saturating_add(next.samples) <= WINDOW
}

/// What [`StreamTracker::admit`] decided about a packet.
#[derive(Debug, Clone, Copy)]
pub enum Admission {
    /// The first packet ever: it starts the stream.
    Starts,
    /// It belongs to the stream being played.
    Continues,
    /// It does not fit the stream and is held (the caller keeps its payload until the
    /// next packet that does not fit). `dropped_stray`: an earlier held packet that nothing
    /// continued was dropped for it.
    Held {
        /// An earlier held packet was dropped.
        dropped_stray: bool,
    },
    /// It continues the held packet (this header): the two start a new stream, the held
    /// one first.
    TakesOver(PacketHeader),
}

/// The stream being played: its SSRC and its newest packet.
#[derive(Debug, Clone, Copy)]
struct Identity {
    ssrc: u32,
    highest_sequence: u16,
    /// The timestamp of the packet with the highest sequence number.
    highest_timestamp: u32,
}

impl Identity {
    fn of(header: PacketHeader) -> Identity {
        Identity {
            ssrc: header.ssrc,
            highest_sequence: header.sequence,
            highest_timestamp: header.timestamp,
        }
    }

    /// `header` is this stream's, with playout at timestamp `playout`.
    fn continued_by(&self, header: PacketHeader, playout: u32) -> bool {
        let newer = header.sequence.wrapping_sub(self.highest_sequence) as i16;
        let offset = header.timestamp.wrapping_sub(playout) as i32;
        header.ssrc == self.ssrc
            && (-MAX_MISORDER..=MAX_DROPOUT).contains(&newer)
            // A newer packet with an older timestamp: the timestamp base moved back.
            && (newer <= 0 || header.timestamp.wrapping_sub(self.highest_timestamp) as i32 >= 0)
            && offset > -(WINDOW as i32)
            && i64::from(offset) + i64::from(header.samples) <= i64::from(WINDOW)
    }

    fn advance(&mut self, header: PacketHeader) {
        if (header.sequence.wrapping_sub(self.highest_sequence) as i16) > 0 {
            self.highest_sequence = header.sequence;
            self.highest_timestamp = header.timestamp;
        }
    }
}

/// Follows the stream being played; fixed size, no allocation.
#[derive(Debug, Clone, Default)]
pub struct StreamTracker {
    current: Option<Identity>,
    held: Option<PacketHeader>,
}

impl StreamTracker {
    /// Whether a stream has started.
    pub fn started(&self) -> bool {
        self.current.is_some()
    }

    /// Where the packet of `header` belongs, with playout at timestamp `playout`.
    pub fn admit(&mut self, header: PacketHeader, playout: u32) -> Admission {
        let Some(current) = &mut self.current else {
            self.current = Some(Identity::of(header));
            return Admission::Starts;
        };
        if current.continued_by(header, playout) {
            current.advance(header);
            return Admission::Continues;
        }
        match self.held.take() {
            Some(held) if continues(held, header) => {
                self.current = Some(Identity::of(header));
                Admission::TakesOver(held)
            }
            earlier => {
                self.held = Some(header);
                Admission::Held {
                    dropped_stray: earlier.is_some(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ssrc: u32, sequence: u16, timestamp: u32) -> PacketHeader {
        PacketHeader {
            ssrc,
            sequence,
            timestamp,
            samples: 160,
        }
    }

    fn admit(tracker: &mut StreamTracker, header: PacketHeader, playout: u32) -> Admission {
        tracker.admit(header, playout)
    }

    #[test]
    fn a_stream_continues_through_loss_reordering_and_lateness() {
        let mut tracker = StreamTracker::default();
        assert!(matches!(
            admit(&mut tracker, header(1, 65_535, 1000), 1000),
            Admission::Starts
        ));
        for (sequence, timestamp) in [(0, 1160), (50, 8000), (10, 2600), (51, 8160)] {
            assert!(
                matches!(
                    admit(&mut tracker, header(1, sequence, timestamp), 5000),
                    Admission::Continues
                ),
                "{sequence}"
            );
        }
    }

    #[test]
    fn one_odd_packet_is_held_and_dropped_and_a_second_in_line_takes_over() {
        let mut tracker = StreamTracker::default();
        admit(&mut tracker, header(1, 10, 1000), 1000);
        // Another SSRC, then the stream again: the odd one was a stray.
        assert!(matches!(
            admit(&mut tracker, header(2, 500, 7), 1160),
            Admission::Held {
                dropped_stray: false
            }
        ));
        assert!(matches!(
            admit(&mut tracker, header(1, 11, 1160), 1160),
            Admission::Continues
        ));
        // A sequence jump (with the timestamp going on), then its continuation.
        assert!(matches!(
            admit(&mut tracker, header(1, 20_000, 1320), 1320),
            Admission::Held {
                dropped_stray: true
            }
        ));
        assert!(matches!(
            admit(&mut tracker, header(1, 20_001, 1480), 1320),
            Admission::TakesOver(held) if held == header(1, 20_000, 1320)
        ));
        assert!(matches!(
            admit(&mut tracker, header(1, 20_002, 1640), 1480),
            Admission::Continues
        ));
    }

    #[test]
    fn a_newer_packet_with_an_older_timestamp_does_not_fit() {
        let mut tracker = StreamTracker::default();
        admit(&mut tracker, header(1, 10, 100_000), 100_000);
        // Within the window behind playout, but the sequence went on: a new timestamp base.
        assert!(matches!(
            admit(&mut tracker, header(1, 11, 99_000), 100_160),
            Admission::Held { .. }
        ));
        assert!(matches!(
            admit(&mut tracker, header(1, 12, 99_160), 100_160),
            Admission::TakesOver(_)
        ));
    }
}
