//! RFC 4733 telephone-event RTP payloads: DTMF digits sent as events, not audio.

/// One telephone-event payload (RFC 4733 §2.3): 4 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code: 0-9 digits, 10 `*`, 11 `#`, 12-15 `A`-`D`.
    pub event: u8,
    /// End of the event (the last packets of an event set it).
    pub end: bool,
    /// Power level as a positive number of dB below 0 dBm0 (0..=63).
    pub volume: u8,
    /// Duration so far, in timestamp units (samples at 8 kHz).
    pub duration: u16,
}

/// Why a payload is not a telephone event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Shorter than 4 bytes.
    #[error("telephone-event payload of {0} bytes (need 4)")]
    TooShort(usize),
}

impl TelephoneEvent {
    /// Event code for a DTMF key.
    pub fn code_for_digit(digit: char) -> Option<u8> {
        match digit.to_ascii_uppercase() {
            d @ '0'..='9' => Some(d as u8 - b'0'),
            '*' => Some(10),
            '#' => Some(11),
            d @ 'A'..='D' => Some(d as u8 - b'A' + 12),
            _ => None,
        }
    }

    /// DTMF key for an event code (other events, e.g. fax tones, give None).
    pub fn digit(&self) -> Option<char> {
        match self.event {
            0..=9 => Some((b'0' + self.event) as char),
            10 => Some('*'),
            11 => Some('#'),
            12..=15 => Some((b'A' + self.event - 12) as char),
            _ => None,
        }
    }

    /// The 4-byte payload.
    pub fn encode(&self) -> [u8; 4] {
        let duration = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3F),
            duration[0],
            duration[1],
        ]
    }

    /// Parses a payload (extra bytes, e.g. a second event, are ignored).
    pub fn decode(payload: &[u8]) -> Result<TelephoneEvent, EventError> {
        let [event, flags, d0, d1, ..] = *payload else {
            return Err(EventError::TooShort(payload.len()));
        };
        Ok(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4733_payloads_round_trip() {
        // RFC 4733 §2.3 layout: event, E|R|volume, duration.
        let event = TelephoneEvent {
            event: TelephoneEvent::code_for_digit('#').unwrap(),
            end: true,
            volume: 10,
            duration: 1280,
        };
        assert_eq!(event.encode(), [11, 0x8A, 0x05, 0x00]);
        assert_eq!(TelephoneEvent::decode(&event.encode()).unwrap(), event);
        assert_eq!(event.digit(), Some('#'));
        for digit in "0123456789*#ABCD".chars() {
            let code = TelephoneEvent::code_for_digit(digit).unwrap();
            let decoded = TelephoneEvent {
                event: code,
                end: false,
                volume: 0,
                duration: 0,
            };
            assert_eq!(decoded.digit(), Some(digit));
        }
        assert_eq!(
            TelephoneEvent::decode(&[1, 2, 3]),
            Err(EventError::TooShort(3))
        );
        let flash = TelephoneEvent::decode(&[16, 0x40, 0, 160]).unwrap();
        assert_eq!(flash.digit(), None, "event 16 is hook flash, not a digit");
        assert_eq!(flash.volume, 0, "the reserved R bit is not volume");
    }
}
