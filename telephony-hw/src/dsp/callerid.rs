//! Caller ID for analog lines: the message (SDMF and MDMF, GR-30 / ETSI EN 300 659-3), its
//! FSK spill (Bell 202 and ETSI V.23, 1200 baud) and DTMF CLIP, each with an encoder and a
//! decoder. A bad checksum is reported, never accepted.

use super::level::amplitude_for_dbm0;
use std::f32::consts::TAU;

/// Why a number or name is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absence {
    /// `P`: withheld by the caller.
    Private,
    /// `O`: not available (out of area).
    Unavailable,
}

impl Absence {
    fn code(self) -> u8 {
        match self {
            Absence::Private => b'P',
            Absence::Unavailable => b'O',
        }
    }

    fn from_code(code: u8) -> Option<Absence> {
        match code {
            b'P' => Some(Absence::Private),
            b'O' => Some(Absence::Unavailable),
            _ => None,
        }
    }
}

/// Month, day, hour, minute (local time of the call).
pub type DateTime = (u8, u8, u8, u8);

/// What caller ID tells the called phone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallerId {
    /// Date and time of the call.
    pub date_time: Option<DateTime>,
    /// Calling number.
    pub number: Option<String>,
    /// Why there is no number.
    pub number_absent: Option<Absence>,
    /// Calling name (MDMF only).
    pub name: Option<String>,
    /// Why there is no name.
    pub name_absent: Option<Absence>,
}

/// Why a caller ID message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallerIdError {
    /// The checksum does not match: the spill was corrupted.
    #[error("caller ID checksum mismatch (computed {computed:#04x}, received {received:#04x})")]
    Checksum {
        /// What the bytes add up to.
        computed: u8,
        /// What the spill carried.
        received: u8,
    },
    /// Fewer bytes than the length field announces.
    #[error("caller ID message truncated")]
    Truncated,
    /// Neither SDMF (0x04) nor MDMF (0x80).
    #[error("unknown caller ID message type {0:#04x}")]
    UnknownType(u8),
    /// No message start found in the demodulated bytes.
    #[error("no caller ID message found")]
    NotFound,
    /// A field holds something that is not a date, digits or text.
    #[error("malformed caller ID field {0:#04x}")]
    Field(u8),
}

/// Message type: single data message format.
pub const SDMF: u8 = 0x04;
/// Message type: multiple data message format.
pub const MDMF: u8 = 0x80;

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, b| sum.wrapping_add(*b))
        .wrapping_neg()
}

fn date_field(date_time: Option<DateTime>) -> Vec<u8> {
    let (month, day, hour, minute) = date_time.unwrap_or((1, 1, 0, 0));
    format!("{month:02}{day:02}{hour:02}{minute:02}").into_bytes()
}

fn parse_date(field: &[u8], kind: u8) -> Result<DateTime, CallerIdError> {
    let text = std::str::from_utf8(field).map_err(|_| CallerIdError::Field(kind))?;
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CallerIdError::Field(kind));
    }
    let part = |i: usize| {
        text[i..i + 2]
            .parse::<u8>()
            .map_err(|_| CallerIdError::Field(kind))
    };
    Ok((part(0)?, part(2)?, part(4)?, part(6)?))
}

fn text_field(field: &[u8], kind: u8) -> Result<String, CallerIdError> {
    if field.iter().all(|b| (0x20..0x7F).contains(b)) {
        Ok(String::from_utf8_lossy(field).to_string())
    } else {
        Err(CallerIdError::Field(kind))
    }
}

impl CallerId {
    /// The MDMF message bytes: type, length, parameters, checksum.
    pub fn encode_mdmf(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let mut param = |kind: u8, value: &[u8]| {
            body.push(kind);
            body.push(value.len().min(255) as u8);
            body.extend_from_slice(&value[..value.len().min(255)]);
        };
        param(0x01, &date_field(self.date_time));
        match (&self.number, self.number_absent) {
            (Some(number), _) => param(0x02, number.as_bytes()),
            (None, Some(absence)) => param(0x04, &[absence.code()]),
            (None, None) => param(0x04, b"O"),
        }
        match (&self.name, self.name_absent) {
            (Some(name), _) => param(0x07, name.as_bytes()),
            (None, Some(absence)) => param(0x08, &[absence.code()]),
            (None, None) => {}
        }
        let mut message = vec![MDMF, body.len() as u8];
        message.extend(body);
        message.push(checksum(&message));
        message
    }

    /// The SDMF message bytes: date/time then number (or `O`/`P`), no name.
    pub fn encode_sdmf(&self) -> Vec<u8> {
        let mut body = date_field(self.date_time);
        match (&self.number, self.number_absent) {
            (Some(number), _) => body.extend_from_slice(number.as_bytes()),
            (None, absence) => body.push(absence.unwrap_or(Absence::Unavailable).code()),
        }
        let mut message = vec![SDMF, body.len() as u8];
        message.extend(body);
        message.push(checksum(&message));
        message
    }

    /// Decodes one message (SDMF or MDMF) that starts at `bytes[0]`.
    pub fn decode(bytes: &[u8]) -> Result<CallerId, CallerIdError> {
        let [kind, length, ..] = *bytes else {
            return Err(CallerIdError::Truncated);
        };
        let end = 2 + length as usize;
        if bytes.len() < end + 1 {
            return Err(CallerIdError::Truncated);
        }
        let computed = checksum(&bytes[..end]);
        if computed != bytes[end] {
            return Err(CallerIdError::Checksum {
                computed,
                received: bytes[end],
            });
        }
        let body = &bytes[2..end];
        let mut id = CallerId::default();
        match kind {
            SDMF => {
                if body.len() < 8 {
                    return Err(CallerIdError::Field(SDMF));
                }
                id.date_time = Some(parse_date(&body[..8], SDMF)?);
                match &body[8..] {
                    [code] if Absence::from_code(*code).is_some() => {
                        id.number_absent = Absence::from_code(*code);
                    }
                    number => id.number = Some(text_field(number, SDMF)?),
                }
            }
            MDMF => {
                let mut rest = body;
                while let [param, len, tail @ ..] = rest {
                    let len = *len as usize;
                    if tail.len() < len {
                        return Err(CallerIdError::Truncated);
                    }
                    let value = &tail[..len];
                    match *param {
                        0x01 => id.date_time = Some(parse_date(value, 0x01)?),
                        0x02 => id.number = Some(text_field(value, 0x02)?),
                        0x04 => {
                            id.number_absent = value.first().and_then(|c| Absence::from_code(*c))
                        }
                        0x07 => id.name = Some(text_field(value, 0x07)?),
                        0x08 => id.name_absent = value.first().and_then(|c| Absence::from_code(*c)),
                        _ => {} // other parameters (e.g. call type) are skipped
                    }
                    rest = &tail[len..];
                }
            }
            other => return Err(CallerIdError::UnknownType(other)),
        }
        Ok(id)
    }

    /// DTMF CLIP digits (ETSI EN 300 659-1 Annex B style): `A<number>C`, or `D1C` (private)
    /// / `D2C` (unavailable) when there is no number.
    pub fn to_dtmf(&self) -> String {
        match (&self.number, self.number_absent) {
            (Some(number), _) => format!(
                "A{}C",
                number
                    .chars()
                    .filter(|c| c.is_ascii_digit())
                    .collect::<String>()
            ),
            (None, Some(Absence::Private)) => "D1C".into(),
            (None, _) => "D2C".into(),
        }
    }

    /// Reads DTMF CLIP digits as [`CallerId::to_dtmf`] writes them.
    pub fn from_dtmf(digits: &str) -> Option<CallerId> {
        let inner = digits.strip_suffix('C')?;
        if let Some(number) = inner
            .strip_prefix('A')
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            return Some(CallerId {
                number: Some(number.to_string()),
                ..CallerId::default()
            });
        }
        let absence = match inner {
            "D1" => Absence::Private,
            "D2" => Absence::Unavailable,
            _ => return None,
        };
        Some(CallerId {
            number_absent: Some(absence),
            ..CallerId::default()
        })
    }
}

/// The FSK variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modem {
    /// Bell 202: mark 1200 Hz, space 2200 Hz (North America, GR-30).
    Bell202,
    /// ITU-T V.23: mark 1300 Hz, space 2100 Hz (ETSI EN 300 659).
    V23,
}

impl Modem {
    /// (mark, space) frequencies in Hz.
    pub fn frequencies(self) -> (f32, f32) {
        match self {
            Modem::Bell202 => (1200.0, 2200.0),
            Modem::V23 => (1300.0, 2100.0),
        }
    }
}

const BAUD: f32 = 1200.0;
const SAMPLES_PER_BIT: f32 = 8000.0 / BAUD;

/// The whole FSK spill for `message`: channel seizure (300 alternating bits), 150 ms of
/// mark, then each byte as start bit, 8 data bits LSB first, stop bit; at `dbm0`.
pub fn modulate(modem: Modem, message: &[u8], dbm0: f32) -> Vec<i16> {
    let mut bits: Vec<bool> = (0..300).map(|i| i % 2 == 1).collect();
    bits.extend(std::iter::repeat_n(true, 180));
    for &byte in message {
        bits.push(false);
        bits.extend((0..8).map(|i| byte >> i & 1 == 1));
        bits.push(true);
    }
    bits.extend(std::iter::repeat_n(true, 6));
    let (mark, space) = modem.frequencies();
    let amplitude = amplitude_for_dbm0(dbm0);
    let total = (bits.len() as f32 * SAMPLES_PER_BIT).ceil() as usize;
    let mut phase = 0f32;
    (0..total)
        .map(|n| {
            let bit = bits[((n as f32 / SAMPLES_PER_BIT) as usize).min(bits.len() - 1)];
            phase = (phase + TAU * if bit { mark } else { space } / 8000.0) % TAU;
            (amplitude * phase.sin()) as i16
        })
        .collect()
}

/// Demodulates an FSK signal to the bytes of its asynchronous characters.
pub fn demodulate(modem: Modem, samples: &[i16]) -> Vec<u8> {
    // Per sample: mark energy minus space energy over the last bit period, from sliding
    // complex correlators, then a start-bit-synchronised UART.
    const WINDOW: usize = 7;
    let (mark, space) = modem.frequencies();
    let mut history = [[0f32; 4]; WINDOW];
    let mut sums = [0f32; 4];
    let mut decisions = Vec::with_capacity(samples.len());
    for (n, &sample) in samples.iter().enumerate() {
        let x = sample as f32;
        let (wm, ws) = (
            TAU * mark * n as f32 / 8000.0,
            TAU * space * n as f32 / 8000.0,
        );
        let products = [x * wm.cos(), x * wm.sin(), x * ws.cos(), x * ws.sin()];
        let slot = n % WINDOW;
        for i in 0..4 {
            sums[i] += products[i] - history[slot][i];
        }
        history[slot] = products;
        let mark_energy = sums[0] * sums[0] + sums[1] * sums[1];
        let space_energy = sums[2] * sums[2] + sums[3] * sums[3];
        decisions.push(mark_energy >= space_energy);
    }
    // The decisions lag the signal by half a window, and so does the detected edge: bit
    // centres measured from the detected edge need no correction.
    let mut bytes = Vec::new();
    let mut n = 0usize;
    let mut previous = true;
    while n < decisions.len() {
        let bit = decisions[n];
        if previous && !bit {
            // A start bit's falling edge: read 8 data bits and the stop bit at their centres.
            let edge = n as f32;
            let at = |k: f32| {
                decisions
                    .get((edge + SAMPLES_PER_BIT * k) as usize)
                    .copied()
            };
            let centre = |k: usize| at(k as f32 + 0.5);
            if centre(0) == Some(false) {
                let data: Option<Vec<bool>> = (1..=8).map(centre).collect();
                if let (Some(data), Some(true)) = (data, centre(9)) {
                    let byte = data
                        .iter()
                        .enumerate()
                        .fold(0u8, |b, (i, &bit)| b | (u8::from(bit) << i));
                    bytes.push(byte);
                    n = (edge + SAMPLES_PER_BIT * 9.5) as usize;
                    previous = true;
                    continue;
                }
            }
        }
        previous = bit;
        n += 1;
    }
    bytes
}

/// Finds and decodes the caller ID message in demodulated bytes (after the seizure `0x55`s).
pub fn decode_spill(bytes: &[u8]) -> Result<CallerId, CallerIdError> {
    let mut last_error = CallerIdError::NotFound;
    for (i, &b) in bytes.iter().enumerate() {
        if b == MDMF || b == SDMF {
            match CallerId::decode(&bytes[i..]) {
                Ok(id) => return Ok(id),
                Err(e) => last_error = e,
            }
        }
    }
    Err(last_error)
}
