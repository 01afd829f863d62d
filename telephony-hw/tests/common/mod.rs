//! Shared by the line tests: runs a port driver against the emulated card.

use telephony_hw::dahdi::emulator::EmulatedCard;
use telephony_hw::line::driver::{NoCallAudio, PortDriver};

/// Runs the card and `driver` for `ms` in 20 ms steps; returns the driver's notices.
pub fn run<D: PortDriver>(card: &EmulatedCard, driver: &mut D, ms: u64) -> Vec<D::Notice> {
    let mut notices = Vec::new();
    for _ in 0..ms / 20 {
        card.advance(20);
        notices.extend(driver.step(card.now_ms(), &mut NoCallAudio).unwrap());
    }
    notices
}
