//! Per-channel cost of an analog line's receive DSP: G.711 decode + DTMF detection of one
//! 20 ms frame. Prints how many channels one core keeps in real time (target: 2,000).

use bench::{line_frames, FRAME};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Instant;
use telephony_hw::dsp::dtmf::DtmfDetector;
use telephony_hw::dsp::g711::Law;

/// Decode + detect one frame of one channel.
fn receive(detector: &mut DtmfDetector, frame: &[u8; FRAME], pcm: &mut [i16; FRAME]) -> usize {
    Law::Ulaw.decode(frame, pcm);
    let mut events = 0;
    detector.process(pcm, |_| events += 1);
    events
}

fn dsp(c: &mut Criterion) {
    let frames = line_frames();
    let mut detector = DtmfDetector::default();
    let mut pcm = [0i16; FRAME];
    let mut next = 0;
    c.bench_function("g711 decode + dtmf detect, one 20 ms frame", |b| {
        b.iter(|| {
            next = (next + 1) % frames.len();
            black_box(receive(&mut detector, &frames[next], &mut pcm))
        })
    });

    // The capacity statement: many channels, each its own detector, one core.
    let channels = 2000;
    let mut detectors: Vec<DtmfDetector> = (0..channels).map(|_| DtmfDetector::default()).collect();
    let seconds = 2;
    let started = Instant::now();
    for tick in 0..50 * seconds {
        for (channel, detector) in detectors.iter_mut().enumerate() {
            let frame = &frames[(tick + channel) % frames.len()];
            black_box(receive(detector, frame, &mut pcm));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let per_frame_us = elapsed * 1e6 / (channels * 50 * seconds) as f64;
    let capacity = (20_000.0 / per_frame_us) as u64;
    println!(
        "{channels} channels x {seconds} s of audio took {elapsed:.3} s: {per_frame_us:.2} us per channel-frame, \
         so one core keeps {capacity} channels in real time (target: 2000) -> {}",
        if capacity >= 2000 { "MET" } else { "NOT MET" }
    );
}

criterion_group!(benches, dsp);
criterion_main!(benches);
