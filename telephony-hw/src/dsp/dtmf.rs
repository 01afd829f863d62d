//! DTMF (ITU-T Q.23/Q.24): a generator and a detector.
//!
//! The detector works on blocks of 102 samples (12.75 ms, as spandsp and Asterisk do). For
//! each of the eight DTMF frequencies it correlates the block with a precomputed complex
//! phasor, separately for the two half-blocks: the sum gives the tone's energy, the phase
//! turn between the halves its frequency offset (unambiguous to ±78 Hz), which is how it
//! accepts ±1.5 % and rejects beyond ±3.5 % although one block's bins are ~78 Hz wide.
//! A digit needs two consecutive valid blocks (≥ 25.5 ms, so every ≥ 40 ms tone counts)
//! and ends after two blocks without it (every ≥ 40 ms pause counts). Checks per block:
//! level, twist (+4 dB high group / +8 dB low group), the strongest row and column standing
//! 8 dB above the others of their group, the two tones carrying most of the block's energy
//! (speech and noise do not), and the frequency offsets.

use super::level::amplitude_for_dbm0;
use std::f32::consts::TAU;
use std::sync::LazyLock;

/// Low-group (row) frequencies, Hz.
pub const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
/// High-group (column) frequencies, Hz.
pub const COLUMNS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
/// The keypad, by row then column.
pub const KEYPAD: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// Samples per analysis block.
pub const BLOCK: usize = 102;
const HALF: usize = BLOCK / 2;

/// The (row, column) frequencies of a DTMF key, if it is one.
pub fn frequencies(digit: char) -> Option<(f32, f32)> {
    let digit = digit.to_ascii_uppercase();
    KEYPAD.iter().enumerate().find_map(|(row, keys)| {
        keys.iter()
            .position(|&k| k == digit)
            .map(|col| (ROWS[row], COLUMNS[col]))
    })
}

/// Phase-continuous dual-tone generator for one channel.
#[derive(Debug, Clone)]
pub struct DtmfGenerator {
    low_amplitude: f32,
    high_amplitude: f32,
    phases: [f32; 2],
}

impl DtmfGenerator {
    /// Tones at `low_dbm0` and `high_dbm0` per tone (e.g. -10 and -8: 2 dB twist).
    pub fn new(low_dbm0: f32, high_dbm0: f32) -> Self {
        DtmfGenerator {
            low_amplitude: amplitude_for_dbm0(low_dbm0),
            high_amplitude: amplitude_for_dbm0(high_dbm0),
            phases: [0.0; 2],
        }
    }

    /// Writes `out.len()` samples of `digit` (silence for an unknown digit).
    pub fn render(&mut self, digit: char, out: &mut [i16]) {
        let Some((low, high)) = frequencies(digit) else {
            out.fill(0);
            return;
        };
        let steps = [TAU * low / 8000.0, TAU * high / 8000.0];
        for sample in out.iter_mut() {
            let value = self.low_amplitude * self.phases[0].sin()
                + self.high_amplitude * self.phases[1].sin();
            *sample = value.clamp(-32768.0, 32767.0) as i16;
            for (phase, step) in self.phases.iter_mut().zip(steps) {
                *phase = (*phase + step) % TAU;
            }
        }
    }

    /// A whole dialling string: each digit `on_ms` long, followed by `off_ms` of silence.
    pub fn dial(&mut self, digits: &str, on_ms: u32, off_ms: u32) -> Vec<i16> {
        let (on, off) = ((on_ms * 8) as usize, (off_ms * 8) as usize);
        let mut out = vec![0i16; digits.chars().count() * (on + off)];
        for (chunk, digit) in out.chunks_mut(on + off).zip(digits.chars()) {
            self.render(digit, &mut chunk[..on]);
        }
        out
    }
}

/// Per-frequency correlation phasors for one block: e^{-j 2π f n / 8000}, n = 0..BLOCK.
struct Phasors {
    cos: [[f32; BLOCK]; 8],
    sin: [[f32; BLOCK]; 8],
}

static PHASORS: LazyLock<Phasors> = LazyLock::new(|| {
    let mut phasors = Phasors {
        cos: [[0.0; BLOCK]; 8],
        sin: [[0.0; BLOCK]; 8],
    };
    for (i, f) in ROWS.iter().chain(COLUMNS.iter()).enumerate() {
        for n in 0..BLOCK {
            let angle = TAU * f * n as f32 / 8000.0;
            phasors.cos[i][n] = angle.cos();
            phasors.sin[i][n] = -angle.sin();
        }
    }
    phasors
});

/// Detector thresholds; the defaults meet Q.24 as summarised in DESIGN.md §6.
#[derive(Debug, Clone, Copy)]
pub struct DtmfThresholds {
    /// Weakest tone accepted, dBm0 per tone.
    pub min_level_dbm0: f32,
    /// High group may exceed the low group by this much (dB).
    pub normal_twist_db: f32,
    /// Low group may exceed the high group by this much (dB).
    pub reverse_twist_db: f32,
    /// Strongest tone of a group over the next one of the same group (dB).
    pub relative_peak_db: f32,
    /// Share of the block's energy the two tones must carry.
    pub min_tone_share: f32,
    /// Largest accepted frequency error (fraction of the nominal frequency).
    pub max_frequency_error: f32,
}

impl Default for DtmfThresholds {
    fn default() -> Self {
        DtmfThresholds {
            min_level_dbm0: -38.0,
            // Q.24 asks to accept +4 / -8 dB; one block's leakage from the stronger tone moves
            // the measured twist by about 1 dB, hence the margin.
            normal_twist_db: 5.5,
            reverse_twist_db: 9.5,
            relative_peak_db: 8.0,
            min_tone_share: 0.8,
            max_frequency_error: 0.025,
        }
    }
}

/// A digit starting or ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfEvent {
    /// The key went down (reported ~25 ms into the tone).
    Down(char),
    /// The key went up.
    Up(char),
}

/// Streaming DTMF detector for one channel. Feed samples with [`DtmfDetector::process`].
#[derive(Debug, Clone)]
pub struct DtmfDetector {
    thresholds: DtmfThresholds,
    min_energy: f32,
    re: [[f32; 2]; 8],
    im: [[f32; 2]; 8],
    energy: f32,
    position: usize,
    candidate: Option<char>,
    candidate_blocks: u8,
    silent_blocks: u8,
    other_blocks: u8,
    current: Option<char>,
    /// Block energy below which a block counts as quiet (a pause).
    quiet_energy: f32,
}

/// What one analysis block held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// A valid digit.
    Digit(char),
    /// Too little energy for any digit: a pause.
    Quiet,
    /// Energy, but no valid digit (speech, noise, a tone cut by a drop-out).
    Other,
}

impl Default for DtmfDetector {
    fn default() -> Self {
        DtmfDetector::new(DtmfThresholds::default())
    }
}

fn db_ratio(db: f32) -> f32 {
    10f32.powf(db / 10.0)
}

impl DtmfDetector {
    /// A detector with these thresholds.
    pub fn new(thresholds: DtmfThresholds) -> Self {
        LazyLock::force(&PHASORS);
        // A sine of amplitude A correlated over BLOCK samples gives |X|^2 = (A * BLOCK / 2)^2.
        let amplitude = amplitude_for_dbm0(thresholds.min_level_dbm0);
        let min_energy = (amplitude * BLOCK as f32 / 2.0).powi(2);
        DtmfDetector {
            thresholds,
            min_energy,
            re: [[0.0; 2]; 8],
            im: [[0.0; 2]; 8],
            energy: 0.0,
            position: 0,
            candidate: None,
            candidate_blocks: 0,
            silent_blocks: 0,
            other_blocks: 0,
            current: None,
            // Time-domain energy of one minimum-level tone over a block: A^2 N / 2.
            quiet_energy: amplitude * amplitude * BLOCK as f32 / 2.0,
        }
    }

    /// The digit currently held down, if any.
    pub fn current(&self) -> Option<char> {
        self.current
    }

    /// Processes samples; `on_event` is called for each key down/up. No allocation.
    pub fn process(&mut self, samples: &[i16], mut on_event: impl FnMut(DtmfEvent)) {
        let phasors = &*PHASORS;
        for &sample in samples {
            let x = sample as f32;
            let half = usize::from(self.position >= HALF);
            for f in 0..8 {
                self.re[f][half] += x * phasors.cos[f][self.position];
                self.im[f][half] += x * phasors.sin[f][self.position];
            }
            self.energy += x * x;
            self.position += 1;
            if self.position == BLOCK {
                let block = match self.classify_block() {
                    Some(digit) => Block::Digit(digit),
                    None if self.energy < self.quiet_energy => Block::Quiet,
                    None => Block::Other,
                };
                self.update_state(block, &mut on_event);
                self.re = [[0.0; 2]; 8];
                self.im = [[0.0; 2]; 8];
                self.energy = 0.0;
                self.position = 0;
            }
        }
    }

    /// The digit this block carries, if it passes every check.
    fn classify_block(&self) -> Option<char> {
        let t = &self.thresholds;
        let mut power = [0f32; 8];
        for (f, p) in power.iter_mut().enumerate() {
            let re = self.re[f][0] + self.re[f][1];
            let im = self.im[f][0] + self.im[f][1];
            *p = re * re + im * im;
        }
        let best = |range: std::ops::Range<usize>| {
            range
                .clone()
                .max_by(|&a, &b| power[a].total_cmp(&power[b]))
                .unwrap_or(range.start)
        };
        let (row, col) = (best(0..4), best(4..8));
        let (row_power, col_power) = (power[row], power[col]);
        if row_power < self.min_energy || col_power < self.min_energy {
            return None;
        }
        if col_power > row_power * db_ratio(t.normal_twist_db)
            || row_power > col_power * db_ratio(t.reverse_twist_db)
        {
            return None;
        }
        let peak = db_ratio(t.relative_peak_db);
        let stands_out = |winner: usize, group: std::ops::Range<usize>| {
            group
                .filter(|&other| other != winner)
                .all(|other| power[winner] > power[other] * peak)
        };
        if !stands_out(row, 0..4) || !stands_out(col, 4..8) {
            return None;
        }
        // |X|^2 of a sine is (A N / 2)^2 while its time-domain energy is A^2 N / 2.
        let tone_energy = (row_power + col_power) * 2.0 / BLOCK as f32;
        if tone_energy < t.min_tone_share * self.energy {
            return None;
        }
        if !self.frequency_ok(row) || !self.frequency_ok(col) {
            return None;
        }
        Some(KEYPAD[row][col - 4])
    }

    /// The tone's frequency offset, from the phase turn between the two half-blocks.
    fn frequency_ok(&self, f: usize) -> bool {
        let nominal = if f < 4 { ROWS[f] } else { COLUMNS[f - 4] };
        let (r1, i1) = (self.re[f][0], self.im[f][0]);
        let (r2, i2) = (self.re[f][1], self.im[f][1]);
        let (m1, m2) = (r1 * r1 + i1 * i1, r2 * r2 + i2 * i2);
        if m1.min(m2) * 16.0 < m1.max(m2) {
            // The tone starts or stops inside this block: one half holds too little of it to
            // measure a phase turn. The energy checks decide alone for this block.
            return true;
        }
        // arg(X2 * conj(X1)); the second half's phasors continue the first half's, so a
        // tone exactly on frequency gives zero turn.
        let turn = (i2 * r1 - r2 * i1).atan2(r2 * r1 + i2 * i1);
        let offset_hz = turn * 8000.0 / (TAU * HALF as f32);
        (offset_hz / nominal).abs() <= self.thresholds.max_frequency_error
    }

    fn update_state(&mut self, block: Block, on_event: &mut impl FnMut(DtmfEvent)) {
        match block {
            Block::Digit(d) => {
                self.silent_blocks = 0;
                self.other_blocks = 0;
                if self.candidate == Some(d) {
                    self.candidate_blocks = self.candidate_blocks.saturating_add(1);
                } else {
                    self.candidate = Some(d);
                    self.candidate_blocks = 1;
                }
                if self.candidate_blocks >= 2 && self.current != Some(d) {
                    if let Some(previous) = self.current.take() {
                        on_event(DtmfEvent::Up(previous));
                    }
                    self.current = Some(d);
                    on_event(DtmfEvent::Down(d));
                }
            }
            Block::Quiet | Block::Other => {
                self.candidate = None;
                self.candidate_blocks = 0;
                if block == Block::Quiet {
                    self.silent_blocks = self.silent_blocks.saturating_add(1);
                }
                self.other_blocks = self.other_blocks.saturating_add(1);
                // Two quiet blocks end a digit (any >= 40 ms pause has them); blocks that
                // are loud but no valid digit (a tone cut by a short drop-out smears its
                // spectrum) end it only after three (~38 ms).
                if self.silent_blocks >= 2 || self.other_blocks >= 3 {
                    if let Some(previous) = self.current.take() {
                        on_event(DtmfEvent::Up(previous));
                    }
                }
            }
        }
    }
}

/// Runs a detector over a whole signal and returns the digits it reported.
pub fn detect_digits(samples: &[i16], thresholds: DtmfThresholds) -> String {
    let mut detector = DtmfDetector::new(thresholds);
    let mut digits = String::new();
    detector.process(samples, |event| {
        if let DtmfEvent::Down(d) = event {
            digits.push(d);
        }
    });
    detector.process(&[0; 2 * BLOCK], |_| {});
    digits
}
