//! Phone ports (FXS hardware, FXO signalling): the virtual phone's script, the kernel's hook
//! debouncing (bounce, pulses, flash, hangup), the ringer cadence, audio both ways.

use super::{
    PhoneAction, Port, DEBOUNCE_MS, FLASH_MAX_MS, PULSE_DIGIT_GAP_MS, PULSE_MAX_MS, RX_BLOCKS,
};
use crate::dahdi::abi::event;
use crate::dahdi::channel::BLOCK_SIZE;
use crate::dsp::dtmf::DtmfGenerator;

/// One millisecond of a phone port: the phone's script, hook debouncing, ringing, audio.
pub(super) fn tick(port: &mut Port, now: u64) {
    while let Some(&(at, action)) = port.phone.script.front() {
        if at > now {
            break;
        }
        port.phone.script.pop_front();
        match action {
            PhoneAction::Handset(off) => set_handset(port, now, off),
            PhoneAction::Dtmf(digit, ms) => port.phone.sending = Some((digit, ms)),
        }
    }
    // A long on-hook becomes a hangup when the flash timer ends.
    if let Some(since) = port.on_hook_since {
        if port.kernel_off_hook && now - since >= FLASH_MAX_MS {
            port.kernel_off_hook = false;
            port.on_hook_since = None;
            port.pulses = 0;
            port.queue_event(event::ONHOOK);
        }
    }
    // A pulse-dialled digit ends when the line stays closed long enough.
    if let Some(end) = port.last_pulse_end {
        if port.phone.off_hook && now - end >= PULSE_DIGIT_GAP_MS && port.pulses > 0 {
            let digit = if port.pulses == 10 {
                b'0'
            } else {
                b'0' + port.pulses
            };
            port.queue_event(event::PULSEDIGIT | i32::from(digit));
            port.pulses = 0;
            port.last_pulse_end = None;
        }
    }
    // Ringing follows the cadence: on/off pairs, repeating.
    if let Some(since) = port.ringing_since {
        let period: u64 = port
            .cadence
            .iter()
            .map(|&ms| u64::from(ms))
            .sum::<u64>()
            .max(1);
        let mut position = (now - since) % period;
        let mut on = false;
        for (i, &ms) in port.cadence.iter().enumerate() {
            if position < u64::from(ms) {
                on = i % 2 == 0;
                break;
            }
            position -= u64::from(ms);
        }
        if on != port.ringer_on {
            port.ringer_on = on;
            port.queue_event(if on {
                event::RINGERON
            } else {
                event::RINGEROFF
            });
        }
    }
    // Audio, 8 samples per millisecond, both ways.
    let mut mic = [0i16; 8];
    if let Some((digit, left)) = port.phone.sending {
        port.phone
            .generator
            .get_or_insert_with(|| DtmfGenerator::new(-8.0, -6.0))
            .render(digit, &mut mic);
        port.phone.sending = (left > 1).then_some((digit, left - 1));
    } else if port.phone.off_hook {
        for sample in mic.iter_mut() {
            *sample = port.phone.speech.pop_front().unwrap_or(0);
        }
    }
    for sample in mic {
        if port.rx.len() >= RX_BLOCKS * BLOCK_SIZE {
            port.rx.pop_front();
        }
        port.rx.push_back(port.law.encode_sample(sample));
    }
    let mut heard = [0i16; 8];
    let mut count = 0;
    while count < 8 {
        let Some(code) = port.tx.pop_front() else {
            break;
        };
        heard[count] = port.law.decode_sample(code);
        count += 1;
    }
    // The phone listens on hook too: that is how caller ID reaches it between rings.
    Port::keep_heard(&mut port.phone.heard, &heard[..count]);
}

/// The phone's handset changes; the kernel debounces what it reports.
pub(super) fn set_handset(port: &mut Port, now: u64, off: bool) {
    if port.phone.off_hook == off {
        return;
    }
    port.phone.off_hook = off;
    if !off {
        port.on_hook_since = Some(now);
        return;
    }
    if port.ringing_since.take().is_some() {
        port.ringer_on = false;
    }
    match port.on_hook_since.take() {
        None if !port.kernel_off_hook => {
            port.kernel_off_hook = true;
            port.queue_event(event::RINGOFFHOOK);
        }
        None => {}
        Some(since) => {
            let length = now - since;
            if !port.kernel_off_hook {
                port.kernel_off_hook = true;
                port.queue_event(event::RINGOFFHOOK);
            } else if length < DEBOUNCE_MS {
                // Contact bounce: nothing happened.
            } else if length <= PULSE_MAX_MS {
                if port.pulses == 0 {
                    port.queue_event(event::PULSE_START);
                }
                port.pulses = (port.pulses + 1).min(10);
                port.last_pulse_end = Some(now);
            } else {
                port.queue_event(event::WINKFLASH);
            }
        }
    }
}
