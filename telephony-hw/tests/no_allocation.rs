//! The per-frame paths allocate nothing: G.711, DTMF detection and tone generation run
//! under a counting allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use telephony_hw::dsp::dtmf::{DtmfDetector, DtmfGenerator};
use telephony_hw::dsp::g711::Law;
use telephony_hw::dsp::tones::{zone, ProgressDetector, TonePlayer, FRAME};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates to the system allocator and only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn per_frame_processing_does_not_allocate() {
    let audio = DtmfGenerator::new(-10.0, -10.0).dial("159#", 60, 60);
    let mut detector = DtmfDetector::default();
    let mut progress = ProgressDetector::new(zone("us").unwrap());
    let mut player = TonePlayer::new(zone("us").unwrap().busy.clone(), -13.0);
    let mut generator = DtmfGenerator::new(-10.0, -10.0);
    let (mut codes, mut pcm, mut tone) = ([0u8; FRAME], [0i16; FRAME], [0i16; FRAME]);
    let mut digits = 0;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for chunk in audio.chunks_exact(FRAME) {
        Law::Alaw.encode(chunk, &mut codes);
        Law::Alaw.decode(&codes, &mut pcm);
        detector.process(&pcm, |_| digits += 1);
        progress.process_frame(&pcm);
        player.fill(&mut tone);
        generator.render('5', &mut tone);
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(after - before, 0, "allocations on the per-frame path");
    assert!(digits >= 4, "the detector really ran ({digits} events)");
}
