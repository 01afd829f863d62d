//! The emulated card's phone ports behave like DAHDI's FXO-signalled channels: open rules,
//! ELAST, whole blocks, the event queue, ringing, hook debouncing, kewlstart.

use std::path::Path;
use telephony_hw::dahdi::abi::{event, flush, hook, sig};
use telephony_hw::dahdi::channel::{Channel, ChannelError, BLOCK_SIZE};
use telephony_hw::dahdi::emulator::{EmulatedCard, EVENT_QUEUE};
use telephony_hw::dahdi::system_conf::SystemConf;
use telephony_hw::dsp::dtmf::{DtmfDetector, DtmfEvent};
use telephony_hw::dsp::g711::Law;

fn card(conf: &str) -> EmulatedCard {
    EmulatedCard::new(&SystemConf::parse(conf, Path::new("system.conf")).unwrap())
}

const OFFICE: &str = "fxoks=1-2\nfxsks=3\nloadzone=us\ndefaultzone=us\n";

fn events(channel: &mut impl Channel) -> Vec<i32> {
    std::iter::from_fn(|| Some(channel.get_event().unwrap()).filter(|&e| e != 0)).collect()
}

#[test]
fn open_rules_match_the_kernel() {
    let card = card(OFFICE);
    assert_eq!(card.open(7).unwrap_err(), ChannelError::NotConfigured(7));
    let first = card.open(1).unwrap();
    assert_eq!(card.open(1).unwrap_err(), ChannelError::InUse(1));
    drop(first);
    let mut again = card.open(1).expect("free again after close");
    assert_eq!(again.params().unwrap().sigtype, sig::FXOKS);
    let mut unspecified = card.open_unspecified();
    assert_eq!(
        unspecified.hook(hook::RING),
        Err(ChannelError::NotSpecified)
    );
    assert_eq!(
        again.set_blocksize(8),
        Err(ChannelError::Invalid("block size must be 16..=8192"))
    );
}

#[test]
fn reads_are_whole_blocks_and_refused_while_an_event_waits() {
    let card = card(OFFICE);
    let mut channel = card.open(1).unwrap();
    channel.set_blocksize(BLOCK_SIZE).unwrap();
    let mut block = [0u8; BLOCK_SIZE];
    assert_eq!(
        channel.read(&mut block),
        Err(ChannelError::WouldBlock),
        "no audio yet"
    );
    card.advance(19);
    assert_eq!(
        channel.read(&mut block),
        Err(ChannelError::WouldBlock),
        "19 ms is not a block"
    );
    card.advance(1);
    assert_eq!(channel.read(&mut block), Ok(BLOCK_SIZE));
    card.lift(1);
    card.advance(20);
    assert_eq!(
        channel.read(&mut block),
        Err(ChannelError::EventPending),
        "ELAST"
    );
    assert_eq!(channel.write(&block), Err(ChannelError::EventPending));
    assert_eq!(events(&mut channel), [event::RINGOFFHOOK]);
    assert_eq!(channel.read(&mut block), Ok(BLOCK_SIZE));
    assert!(channel.params().unwrap().rxisoffhook == 1);
}

#[test]
fn the_event_queue_holds_64() {
    let card = card(OFFICE);
    let mut channel = card.open(1).unwrap();
    card.lift(1);
    card.advance(10);
    for _ in 0..100 {
        card.flash(1, 300);
        card.advance(400);
    }
    let queued = events(&mut channel);
    assert_eq!(queued.len(), EVENT_QUEUE);
    assert_eq!(queued[0], event::RINGOFFHOOK);
    assert!(queued[1..].iter().all(|&e| e == event::WINKFLASH));
    channel.flush(flush::EVENT).unwrap();
}

#[test]
fn ringing_needs_a_zone_and_an_on_hook_phone_and_follows_the_cadence() {
    let no_zone = card("fxoks=1\n");
    assert_eq!(
        no_zone.open(1).unwrap().hook(hook::RING),
        Err(ChannelError::NoToneZone)
    );

    let card = card(OFFICE);
    let mut channel = card.open(1).unwrap();
    channel.set_cadence(&[2000, 4000]).unwrap();
    channel
        .hook(hook::RING)
        .expect("EINPROGRESS counts as success");
    card.advance(1);
    assert!(card.ringing(1));
    assert_eq!(events(&mut channel), [event::RINGERON]);
    card.advance(2000);
    assert_eq!(events(&mut channel), [event::RINGEROFF]);
    assert!(!card.ringing(1));
    card.advance(4000);
    assert_eq!(events(&mut channel), [event::RINGERON]);
    // The phone answers during the ring.
    card.lift(1);
    card.advance(5);
    assert_eq!(events(&mut channel), [event::RINGOFFHOOK]);
    assert!(!card.ringing(1));
    assert_eq!(channel.hook(hook::RING), Err(ChannelError::OffHook));
}

#[test]
fn hook_debouncing_pulses_flash_and_hangup() {
    let card = card(OFFICE);
    let mut channel = card.open(2).unwrap();
    card.lift(2);
    card.advance(50);
    assert_eq!(events(&mut channel), [event::RINGOFFHOOK]);
    card.flash(2, 10);
    card.advance(100);
    assert!(
        events(&mut channel).is_empty(),
        "10 ms on hook is contact bounce"
    );
    card.dial_pulse(2, '3');
    card.advance(1000);
    assert_eq!(
        events(&mut channel),
        [event::PULSE_START, event::PULSEDIGIT | '3' as i32]
    );
    card.dial_pulse(2, '0');
    card.advance(1500);
    assert_eq!(
        events(&mut channel),
        [event::PULSE_START, event::PULSEDIGIT | '0' as i32]
    );
    card.flash(2, 500);
    card.advance(600);
    assert_eq!(events(&mut channel), [event::WINKFLASH]);
    card.hang_up(2);
    card.advance(1200);
    assert!(
        events(&mut channel).is_empty(),
        "not yet: the flash timer runs 1250 ms"
    );
    card.advance(60);
    assert_eq!(events(&mut channel), [event::ONHOOK]);
    assert_eq!(channel.params().unwrap().rxisoffhook, 0);
}

#[test]
fn hanging_up_drops_battery_and_audio_reaches_both_ends() {
    let card = card(OFFICE);
    let mut channel = card.open(1).unwrap();
    channel.set_blocksize(BLOCK_SIZE).unwrap();
    card.lift(1);
    card.advance(1);
    events(&mut channel);
    // Gateway -> phone: a tone written in blocks is heard by the phone.
    let tone: Vec<u8> = (0..BLOCK_SIZE * 5)
        .map(|n| Law::Ulaw.encode_sample((8000.0 * (n as f32 * 0.3).sin()) as i16))
        .collect();
    for block in tone.chunks(BLOCK_SIZE) {
        channel.write(block).unwrap();
        card.advance(20);
    }
    let heard = card.take_heard(1);
    assert!(heard.len() >= BLOCK_SIZE * 4 && heard.iter().any(|s| s.abs() > 4000));
    // Phone -> gateway: DTMF keyed on the phone arrives in the blocks the gateway reads.
    card.dial_dtmf(1, '7', 80);
    let mut detector = DtmfDetector::default();
    let mut digits = Vec::new();
    let mut block = [0u8; BLOCK_SIZE];
    let mut pcm = [0i16; BLOCK_SIZE];
    for _ in 0..10 {
        card.advance(20);
        if channel.read(&mut block) == Ok(BLOCK_SIZE) {
            Law::Ulaw.decode(&block, &mut pcm);
            detector.process(&pcm, |e| digits.push(e));
        }
    }
    assert_eq!(digits.first(), Some(&DtmfEvent::Down('7')));
    // The gateway hangs up: kewlstart removes battery for 500 ms.
    channel.hook(hook::ONHOOK).unwrap();
    card.advance(100);
    assert!(!card.battery(1));
    card.advance(450);
    assert!(card.battery(1));
}
