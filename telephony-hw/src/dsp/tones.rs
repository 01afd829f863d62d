//! Call-progress tones per country, from DAHDI's tone zones (dahdi-tools zonedata, mirrored
//! by Asterisk's indications.conf): a parser for the tone syntax, the zones, a generator
//! that plays a tone with its cadence, and a detector for dial tone, busy and congestion
//! (FXO disconnect supervision and outgoing seizure).
//!
//! Tone syntax: comma-separated segments `[!]f1[+f2|*f2][/ms]`; `+` sums two tones, `*`
//! amplitude-modulates `f1` by `f2`; `0` is silence; a segment without duration lasts
//! forever; segments marked `!` play once, the others repeat.

use super::level::amplitude_for_dbm0;
use std::f32::consts::TAU;
use std::sync::LazyLock;

/// One segment of a tone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    /// First frequency (Hz), 0 for silence.
    pub f1: f32,
    /// Second frequency (Hz), 0 for none.
    pub f2: f32,
    /// `f1*f2`: f1 amplitude-modulated by f2 (else `f1+f2`).
    pub modulated: bool,
    /// Length in ms; None = until stopped.
    pub duration_ms: Option<u32>,
    /// `!`: played once, not part of the repeating cadence.
    pub once: bool,
}

impl Segment {
    /// Whether this segment is audible.
    pub fn is_tone(&self) -> bool {
        self.f1 > 0.0 || self.f2 > 0.0
    }
}

/// A tone: its segments.
#[derive(Debug, Clone, PartialEq)]
pub struct Tone {
    /// The segments in order.
    pub segments: Vec<Segment>,
}

/// A tone definition that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tone {text:?}: segment {segment:?}: {problem}")]
pub struct ToneError {
    /// The whole definition.
    pub text: String,
    /// The offending segment.
    pub segment: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl std::str::FromStr for Tone {
    type Err = ToneError;

    fn from_str(text: &str) -> Result<Tone, ToneError> {
        let mut segments = Vec::new();
        for raw in text.split(',') {
            let error = |problem| ToneError {
                text: text.into(),
                segment: raw.into(),
                problem,
            };
            let part = raw.trim();
            let (once, part) = match part.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, part),
            };
            let (freqs, duration_ms) = match part.split_once('/') {
                Some((f, d)) => (
                    f,
                    Some(
                        d.trim()
                            .parse::<u32>()
                            .map_err(|_| error("duration is not a number of ms"))?,
                    ),
                ),
                None => (part, None),
            };
            let (f1, f2, modulated) = if let Some((a, b)) = freqs.split_once('+') {
                (a, b, false)
            } else if let Some((a, b)) = freqs.split_once('*') {
                (a, b, true)
            } else {
                (freqs, "0", false)
            };
            let freq = |f: &str| {
                f.trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|f| (0.0..4000.0).contains(f))
                    .ok_or_else(|| error("frequency is not a number below 4000 Hz"))
            };
            segments.push(Segment {
                f1: freq(f1)?,
                f2: freq(f2)?,
                modulated,
                duration_ms,
                once,
            });
        }
        if segments.is_empty() {
            return Err(ToneError {
                text: text.into(),
                segment: String::new(),
                problem: "no segments",
            });
        }
        Ok(Tone { segments })
    }
}

/// A country's tones and ring cadence.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    /// Short name (`us`, `uk`, ...).
    pub name: &'static str,
    /// Country.
    pub description: &'static str,
    /// Ringing on/off times (ms) for the ringer, as DAHDI's SETCADENCE takes them.
    pub ring_cadence: Vec<u32>,
    /// Dial tone.
    pub dial: Tone,
    /// Ringback (what a caller hears while the far end rings).
    pub ringback: Tone,
    /// Busy.
    pub busy: Tone,
    /// Congestion (reorder / fast busy).
    pub congestion: Tone,
    /// Call waiting beep.
    pub call_waiting: Tone,
    /// Stutter dial tone (message waiting / recall).
    pub stutter: Tone,
}

/// Zone data: name, description, ring cadence, dial, ringback, busy, congestion, call
/// waiting, stutter — as in dahdi-tools zonedata / Asterisk indications.conf.
const ZONE_DATA: [[&str; 9]; 7] = [
    ["us", "United States / North America", "2000,4000", "350+440", "440+480/2000,0/4000",
     "480+620/500,0/500", "480+620/250,0/250", "440/300,0/10000",
     "!350+440/100,!0/100,!350+440/100,!0/100,!350+440/100,!0/100,!350+440/100,!0/100,!350+440/100,!0/100,!350+440/100,!0/100,350+440"],
    ["uk", "United Kingdom", "400,200,400,2000", "350+440", "400+450/400,0/200,400+450/400,0/2000",
     "400/375,0/375", "400/400,0/350,400/225,0/525", "400/100,0/4000", "350+440/750,440/750"],
    ["de", "Germany", "1000,4000", "425", "425/1000,0/4000", "425/480,0/480", "425/240,0/240",
     "!425/200,!0/200,!425/200,!0/5000,!425/200,!0/200,!425/200,!0/5000,!425/200,!0/200,!425/200,0",
     "425+400"],
    ["fr", "France", "1500,3500", "440", "440/1500,0/3500", "440/500,0/500", "440/250,0/250",
     "440/300,0/10000",
     "!440/100,!0/100,!440/100,!0/100,!440/100,!0/100,!440/100,!0/100,!440/100,!0/100,!440/100,!0/100,440"],
    ["nl", "Netherlands", "1000,4000", "425", "425/1000,0/4000", "425/500,0/500", "425/250,0/250",
     "425/500,0/9500", "425/500,0/50"],
    ["au", "Australia", "400,200,400,2000", "413+438", "413+438/400,0/200,413+438/400,0/2000",
     "425/375,0/375", "425/375,0/375,420/375,0/375", "425/200,0/200,425/200,0/4400", "413+438/100,0/40"],
    ["jp", "Japan", "1000,2000", "400", "400+15/1000,0/2000", "400/500,0/500", "400/500,0/500",
     "400+16/500,0/8000",
     "!400/100,!0/100,!400/100,!0/100,!400/100,!0/100,!400/100,!0/100,!400/100,!0/100,!400/100,!0/100,400"],
];

static ZONES: LazyLock<Vec<Zone>> = LazyLock::new(|| {
    ZONE_DATA
        .iter()
        .map(
            |[name, description, cadence, dial, ring, busy, congestion, waiting, stutter]| {
                let tone = |t: &str| t.parse::<Tone>().expect("built-in zone data parses");
                Zone {
                    name,
                    description,
                    ring_cadence: cadence
                        .split(',')
                        .map(|ms| ms.parse().expect("built-in cadence"))
                        .collect(),
                    dial: tone(dial),
                    ringback: tone(ring),
                    busy: tone(busy),
                    congestion: tone(congestion),
                    call_waiting: tone(waiting),
                    stutter: tone(stutter),
                }
            },
        )
        .collect()
});

/// The zone with this name (`us`, `uk`, `de`, `fr`, `nl`, `au`, `jp`).
pub fn zone(name: &str) -> Option<&'static Zone> {
    ZONES.iter().find(|z| z.name.eq_ignore_ascii_case(name))
}

/// Every built-in zone.
pub fn zones() -> &'static [Zone] {
    &ZONES
}

/// Plays a tone with its cadence, phase-continuously, 20 ms at a time or any length.
#[derive(Debug, Clone)]
pub struct TonePlayer {
    tone: Tone,
    amplitude: f32,
    segment: usize,
    /// Samples already played of the current segment.
    elapsed: u32,
    phases: [f32; 2],
}

impl TonePlayer {
    /// Plays `tone` at `dbm0` per frequency.
    pub fn new(tone: Tone, dbm0: f32) -> TonePlayer {
        TonePlayer {
            tone,
            amplitude: amplitude_for_dbm0(dbm0),
            segment: 0,
            elapsed: 0,
            phases: [0.0; 2],
        }
    }

    /// Fills `out` with the next samples. No allocation.
    pub fn fill(&mut self, out: &mut [i16]) {
        for sample in out.iter_mut() {
            let segment = self.tone.segments[self.segment];
            let value = if segment.is_tone() {
                let (a, b) = (self.phases[0].sin(), self.phases[1].sin());
                if segment.modulated {
                    self.amplitude * a * (0.5 + 0.5 * b)
                } else if segment.f2 > 0.0 {
                    self.amplitude * (a + b)
                } else {
                    self.amplitude * a
                }
            } else {
                0.0
            };
            *sample = value.clamp(-32768.0, 32767.0) as i16;
            self.phases[0] = (self.phases[0] + TAU * segment.f1 / 8000.0) % TAU;
            self.phases[1] = (self.phases[1] + TAU * segment.f2 / 8000.0) % TAU;
            self.elapsed += 1;
            if segment.duration_ms.is_some_and(|ms| self.elapsed >= ms * 8) {
                self.elapsed = 0;
                self.segment = self.next_segment();
            }
        }
    }

    /// After the last segment, the cadence restarts at the first repeating segment.
    fn next_segment(&self) -> usize {
        let next = self.segment + 1;
        if next < self.tone.segments.len() {
            return next;
        }
        self.tone
            .segments
            .iter()
            .position(|s| !s.once)
            .unwrap_or(self.tone.segments.len() - 1)
    }
}

/// What the progress detector heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A continuous dial tone for 300 ms: the line is ready to dial.
    DialTone,
    /// Two cycles of the zone's busy cadence.
    Busy,
    /// Two cycles of the zone's congestion cadence.
    Congestion,
}

/// Frequencies the detector measures, at most this many.
const MAX_FREQS: usize = 6;
/// Samples per analysis frame (20 ms).
pub const FRAME: usize = 160;

/// Detects dial tone, busy and congestion of one zone on a line, frame by frame.
#[derive(Debug, Clone)]
pub struct ProgressDetector {
    freqs: [f32; MAX_FREQS],
    count: usize,
    dial_freqs: [bool; MAX_FREQS],
    busy: Vec<(bool, u32)>,
    congestion: Vec<(bool, u32)>,
    /// Current run: tone on/off and its length in frames.
    on: bool,
    run_frames: u32,
    /// Completed runs, newest last (bounded).
    runs: [(bool, u32); 8],
    run_count: usize,
    dial_frames: u32,
    /// How long the dial frequencies must sound without a break: at least 300 ms, and
    /// longer than any busy or congestion tone burst (some zones use one frequency for all).
    dial_threshold_ms: u32,
    reported: Option<Progress>,
    min_energy: f32,
}

fn cadence_of(tone: &Tone) -> Vec<(bool, u32)> {
    tone.segments
        .iter()
        .filter_map(|s| s.duration_ms.map(|ms| (s.is_tone(), ms)))
        .collect()
}

impl ProgressDetector {
    /// A detector for `zone`'s dial, busy and congestion tones.
    pub fn new(zone: &Zone) -> ProgressDetector {
        let mut freqs = [0f32; MAX_FREQS];
        let mut count = 0;
        let mut dial_freqs = [false; MAX_FREQS];
        for (tone, is_dial) in [
            (&zone.dial, true),
            (&zone.busy, false),
            (&zone.congestion, false),
        ] {
            for s in tone.segments.iter().filter(|s| s.is_tone()) {
                for f in [s.f1, s.f2] {
                    if f < 100.0 {
                        continue; // modulation or none
                    }
                    let index = freqs[..count].iter().position(|&g| (g - f).abs() < 1.0);
                    let index = match index {
                        Some(i) => i,
                        None if count < MAX_FREQS => {
                            freqs[count] = f;
                            count += 1;
                            count - 1
                        }
                        None => continue,
                    };
                    dial_freqs[index] |= is_dial;
                }
            }
        }
        let amplitude = amplitude_for_dbm0(-40.0);
        let (busy, congestion) = (cadence_of(&zone.busy), cadence_of(&zone.congestion));
        // Bursts of other tones made only of dial-tone frequencies (Germany's busy and
        // ringback are 425 Hz like its dial tone) must not pass for dial tone.
        let dial_set: Vec<f32> = freqs[..count]
            .iter()
            .zip(dial_freqs)
            .filter(|(_, is_dial)| *is_dial)
            .map(|(f, _)| *f)
            .collect();
        let only_dial_freqs = |s: &Segment| {
            [s.f1, s.f2]
                .iter()
                .filter(|f| **f >= 100.0)
                .all(|f| dial_set.iter().any(|d| (d - f).abs() < 1.0))
        };
        let longest_burst = [&zone.busy, &zone.congestion, &zone.ringback]
            .iter()
            .flat_map(|tone| tone.segments.iter())
            .filter(|s| s.is_tone() && only_dial_freqs(s))
            .filter_map(|s| s.duration_ms)
            .max()
            .unwrap_or(0);
        ProgressDetector {
            freqs,
            count,
            dial_freqs,
            busy,
            congestion,
            dial_threshold_ms: 300.max(longest_burst + 100),
            on: false,
            run_frames: 0,
            runs: [(false, 0); 8],
            run_count: 0,
            dial_frames: 0,
            reported: None,
            min_energy: amplitude * amplitude * FRAME as f32 / 2.0,
        }
    }

    /// Processes one 20 ms frame ([`FRAME`] samples); returns a detection when one completes.
    pub fn process_frame(&mut self, frame: &[i16]) -> Option<Progress> {
        let energy: f32 = frame.iter().map(|&s| (s as f32) * (s as f32)).sum();
        let mut tone_energy = 0.0;
        let mut dial_energy = 0.0;
        for i in 0..self.count {
            let power = goertzel(frame, self.freqs[i]) * 2.0 / frame.len() as f32;
            tone_energy += power;
            if self.dial_freqs[i] {
                dial_energy += power;
            }
        }
        let on = energy > self.min_energy && tone_energy > 0.7 * energy;
        let dial = energy > self.min_energy && dial_energy > 0.7 * energy;
        self.dial_frames = if dial { self.dial_frames + 1 } else { 0 };
        if on == self.on {
            self.run_frames += 1;
        } else {
            self.push_run((self.on, self.run_frames * 20));
            self.on = on;
            self.run_frames = 1;
        }
        let found = if self.dial_frames * 20 >= self.dial_threshold_ms {
            Some(Progress::DialTone)
        } else if self.matches(&self.busy) {
            Some(Progress::Busy)
        } else if self.matches(&self.congestion) {
            Some(Progress::Congestion)
        } else {
            None
        };
        if found.is_some() && found != self.reported {
            self.reported = found;
            return found;
        }
        None
    }

    fn push_run(&mut self, run: (bool, u32)) {
        if self.run_count == self.runs.len() {
            self.runs.rotate_left(1);
            self.run_count -= 1;
        }
        self.runs[self.run_count] = run;
        self.run_count += 1;
    }

    /// True when the last completed runs repeat `cadence` twice (±20 %, ±40 ms).
    fn matches(&self, cadence: &[(bool, u32)]) -> bool {
        let needed = cadence.len() * 2;
        if cadence.is_empty() || self.run_count < needed {
            return false;
        }
        let recent = &self.runs[self.run_count - needed..self.run_count];
        // Align on a tone run: try each rotation of the cadence.
        (0..cadence.len()).any(|start| {
            recent.iter().enumerate().all(|(i, &(on, ms))| {
                let (want_on, want_ms) = cadence[(start + i) % cadence.len()];
                let tolerance = want_ms / 5 + 40;
                on == want_on && ms.abs_diff(want_ms) <= tolerance
            })
        })
    }
}

/// Goertzel power |X(f)|^2 of a frame.
fn goertzel(frame: &[i16], freq: f32) -> f32 {
    let coefficient = 2.0 * (TAU * freq / 8000.0).cos();
    let (mut s1, mut s2) = (0f32, 0f32);
    for &x in frame {
        let s = x as f32 + coefficient * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - coefficient * s1 * s2
}
