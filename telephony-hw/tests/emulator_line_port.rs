//! The emulated card's line ports behave like DAHDI's FXS-signalled channels with a central
//! office behind them: ring bursts, caller ID between rings, answer, the three disconnect
//! signals, ring debounce after hangup, red alarm, outgoing seizure with dial tone and digits.

use std::path::Path;
use telephony_hw::dahdi::abi::{event, hook};
use telephony_hw::dahdi::channel::{Channel, ChannelError, BLOCK_SIZE};
use telephony_hw::dahdi::emulator::{EmulatedCard, EmulatedChannel};
use telephony_hw::dahdi::system_conf::SystemConf;
use telephony_hw::dsp::callerid::{decode_spill, demodulate, CallerId, Modem};
use telephony_hw::dsp::dtmf::DtmfGenerator;
use telephony_hw::dsp::g711::Law;
use telephony_hw::dsp::tones::{zone, Progress, ProgressDetector};

const LINE: u32 = 3;

fn setup() -> (EmulatedCard, EmulatedChannel) {
    let conf = SystemConf::parse(
        "fxoks=1-2\nfxsks=3\nloadzone=us\ndefaultzone=us\n",
        Path::new("s"),
    )
    .unwrap();
    let card = EmulatedCard::new(&conf);
    let mut channel = card.open(LINE).unwrap();
    channel.set_blocksize(BLOCK_SIZE).unwrap();
    (card, channel)
}

/// Runs `ms` of time, reading every block and event; returns (events, linear audio).
fn run(card: &EmulatedCard, channel: &mut EmulatedChannel, ms: u64) -> (Vec<(u64, i32)>, Vec<i16>) {
    let (mut events, mut audio) = (Vec::new(), Vec::new());
    let mut block = [0u8; BLOCK_SIZE];
    for _ in 0..ms / 20 {
        card.advance(20);
        loop {
            match channel.read(&mut block) {
                Ok(n) => audio.extend(block[..n].iter().map(|&c| Law::Ulaw.decode_sample(c))),
                Err(ChannelError::EventPending) => {
                    events.push((card.now_ms(), channel.get_event().unwrap()))
                }
                Err(_) => break,
            }
        }
    }
    (events, audio)
}

fn kinds(events: &[(u64, i32)]) -> Vec<i32> {
    events.iter().map(|(_, e)| *e).collect()
}

#[test]
fn ringing_with_caller_id_between_the_rings_then_answer() {
    let (card, mut channel) = setup();
    let caller = CallerId {
        date_time: Some((11, 24, 9, 30)),
        number: Some("3125550100".into()),
        name: Some("PSTN CALLER".into()),
        ..CallerId::default()
    };
    card.co_ring(LINE, Some(&caller));
    let (events, audio) = run(&card, &mut channel, 6200);
    // US cadence: 2 s burst then 4 s pause: RINGBEGIN at 0, RINGOFFHOOK 50 ms after 2 s.
    assert_eq!(
        kinds(&events),
        [event::RINGBEGIN, event::RINGOFFHOOK, event::RINGBEGIN]
    );
    assert!((2040..=2080).contains(&events[1].0), "trailer: {events:?}");
    let decoded =
        decode_spill(&demodulate(Modem::Bell202, &audio)).expect("caller ID between the rings");
    assert_eq!(decoded, caller);
    // The gateway answers: ringing stops, audio from the far end flows.
    channel.hook(hook::OFFHOOK).unwrap();
    card.co_send_audio(LINE, &DtmfGenerator::new(-10.0, -10.0).dial("5", 80, 20));
    let (events, audio) = run(&card, &mut channel, 6000);
    assert!(
        !kinds(&events).contains(&event::RINGBEGIN),
        "no more rings after answer"
    );
    let digits = telephony_hw::dsp::dtmf::detect_digits(&audio, Default::default());
    assert_eq!(digits, "5");
}

#[test]
fn disconnect_by_battery_drop_polarity_reversal_or_busy_tone() {
    let (card, mut channel) = setup();
    channel.hook(hook::OFFHOOK).unwrap();
    run(&card, &mut channel, 200);
    card.co_battery_drop(LINE, 300);
    let (events, _) = run(&card, &mut channel, 100);
    assert_eq!(
        kinds(&events),
        [event::ONHOOK],
        "battery drop while off hook"
    );
    card.co_reverse_polarity(LINE);
    let (events, _) = run(&card, &mut channel, 100);
    assert_eq!(kinds(&events), [event::POLARITY]);
    card.co_busy_tone(LINE);
    let (_, audio) = run(&card, &mut channel, 3000);
    let mut detector = ProgressDetector::new(zone("us").unwrap());
    let heard: Vec<Progress> = audio
        .chunks_exact(160)
        .filter_map(|f| detector.process_frame(f))
        .collect();
    assert_eq!(heard, [Progress::Busy]);
}

#[test]
fn rings_right_after_a_hangup_are_ignored() {
    let (card, mut channel) = setup();
    channel.hook(hook::OFFHOOK).unwrap();
    run(&card, &mut channel, 100);
    channel.hook(hook::ONHOOK).unwrap();
    card.co_ring(LINE, None);
    let (events, _) = run(&card, &mut channel, 1500);
    assert!(events.is_empty(), "within 2 s of the hangup: {events:?}");
    let (events, _) = run(&card, &mut channel, 6000);
    assert!(
        kinds(&events).contains(&event::RINGBEGIN),
        "later rings count"
    );
}

#[test]
fn no_line_plugged_is_a_red_alarm() {
    let (card, mut channel) = setup();
    card.unplug_line(LINE, true);
    let (events, _) = run(&card, &mut channel, 900);
    assert!(events.is_empty());
    let (events, _) = run(&card, &mut channel, 200);
    assert_eq!(kinds(&events), [event::ALARM]);
    card.unplug_line(LINE, false);
    let (events, _) = run(&card, &mut channel, 100);
    assert_eq!(kinds(&events), [event::NOALARM]);
}

#[test]
fn outgoing_seizure_dial_tone_digits_and_answer_supervision() {
    let (card, mut channel) = setup();
    channel.hook(hook::OFFHOOK).unwrap();
    let (_, audio) = run(&card, &mut channel, 600);
    let mut detector = ProgressDetector::new(zone("us").unwrap());
    let heard: Vec<Progress> = audio
        .chunks_exact(160)
        .filter_map(|f| detector.process_frame(f))
        .collect();
    assert_eq!(heard, [Progress::DialTone]);
    let digits = DtmfGenerator::new(-8.0, -6.0).dial("5550123", 80, 80);
    let mut codes = vec![0u8; digits.len()];
    Law::Ulaw.encode(&digits, &mut codes);
    for block in codes.chunks(BLOCK_SIZE) {
        while channel.write(block) == Err(ChannelError::WouldBlock) {
            run(&card, &mut channel, 20);
        }
    }
    run(&card, &mut channel, 400);
    assert_eq!(card.co_digits(LINE), "5550123");
    assert!(card.co_loop_closed(LINE));
    card.co_reverse_polarity(LINE);
    let (events, _) = run(&card, &mut channel, 100);
    assert_eq!(kinds(&events), [event::POLARITY], "answer supervision");
    assert_eq!(
        channel.hook(hook::RING),
        Err(ChannelError::Invalid("line ports take OFFHOOK and ONHOOK"))
    );
}
