//! The phone-port state machine driven against the emulated card in virtual time: dialling
//! (DTMF and pulse), dial plan and inter-digit timeout, ringback/busy/congestion, incoming
//! calls with caller ID between the first and second ring, answer, flash, hangup.

mod common;

use std::path::Path;
use telephony_hw::dahdi::emulator::{EmulatedCard, EmulatedChannel};
use telephony_hw::dahdi::system_conf::SystemConf;
use telephony_hw::dsp::callerid::{decode_spill, demodulate, CallerId, Modem};
use telephony_hw::dsp::tones::{zone, Progress, ProgressDetector};
use telephony_hw::line::dial_plan::DialPlan;
use telephony_hw::line::driver::{PhonePortDriver, PortDriver};
use telephony_hw::line::phone_port::{PhoneAction, PhoneCommand};

struct Bench {
    card: EmulatedCard,
    driver: PhonePortDriver<EmulatedChannel>,
}

impl Bench {
    fn new() -> Bench {
        let conf = SystemConf::parse("fxoks=1\nloadzone=us\n", Path::new("s")).unwrap();
        let card = EmulatedCard::new(&conf);
        let plan = DialPlan::new(["2XX", "10X", "*8", "**2XX", "9N."]);
        let driver =
            PhonePortDriver::new(card.open(1).unwrap(), plan, zone("us").unwrap()).unwrap();
        Bench { card, driver }
    }

    /// Runs `ms` in 20 ms steps; returns the notices for the control plane.
    fn run(&mut self, ms: u64) -> Vec<PhoneAction> {
        common::run(&self.card, &mut self.driver, ms)
    }

    /// What call-progress tone the phone heard since the last call.
    fn heard_tone(&mut self) -> Vec<Progress> {
        let heard = self.card.take_heard(1);
        let mut detector = ProgressDetector::new(zone("us").unwrap());
        heard
            .chunks_exact(160)
            .filter_map(|f| detector.process_frame(f))
            .collect()
    }
}

#[test]
fn dtmf_dialling_to_a_connected_call_and_hangup() {
    let mut b = Bench::new();
    b.card.lift(1);
    b.run(1000);
    assert_eq!(b.heard_tone(), [Progress::DialTone]);
    let mut notices = Vec::new();
    for digit in ['2', '0', '1'] {
        b.card.dial_dtmf(1, digit, 80);
        notices.extend(b.run(160));
    }
    notices.extend(b.run(200));
    assert_eq!(
        notices,
        [PhoneAction::Dialed("201".into())],
        "complete after the third digit"
    );
    b.driver
        .command(b.card.now_ms(), PhoneCommand::FarEndRinging)
        .unwrap();
    b.run(6000);
    let heard = b.card.take_heard(1);
    assert!(
        heard.iter().filter(|s| s.abs() > 2000).count() > 8000,
        "ringback plays"
    );
    b.driver
        .command(b.card.now_ms(), PhoneCommand::FarEndAnswered)
        .unwrap();
    b.card.flash(1, 500);
    assert_eq!(b.run(800), [PhoneAction::Flash]);
    b.card.hang_up(1);
    assert_eq!(b.run(1500), [PhoneAction::HungUp]);
}

#[test]
fn pulse_dialling_works_too() {
    let mut b = Bench::new();
    b.card.lift(1);
    b.run(500);
    for digit in ['1', '0', '3'] {
        b.card.dial_pulse(1, digit);
    }
    let notices = b.run(5000);
    assert_eq!(notices, [PhoneAction::Dialed("103".into())]);
}

#[test]
fn variable_length_numbers_end_with_the_inter_digit_timeout_and_bad_ones_get_congestion() {
    let mut b = Bench::new();
    b.card.lift(1);
    b.run(300);
    for digit in ['9', '5', '5'] {
        b.card.dial_dtmf(1, digit, 80);
        b.run(160);
    }
    assert!(b.run(3000).is_empty(), "still waiting for more digits");
    assert_eq!(b.run(2000), [PhoneAction::Dialed("955".into())]);
    b.card.hang_up(1);
    b.run(1500);

    b.card.lift(1);
    b.run(300);
    b.card.take_heard(1);
    b.card.dial_dtmf(1, '5', 80);
    b.run(3000);
    assert_eq!(
        b.heard_tone(),
        [Progress::Congestion],
        "5 matches no pattern"
    );
}

#[test]
fn busy_far_end_gives_busy_tone() {
    let mut b = Bench::new();
    b.card.lift(1);
    b.run(300);
    let mut notices = Vec::new();
    for digit in ['*', '8'] {
        b.card.dial_dtmf(1, digit, 80);
        notices.extend(b.run(160));
    }
    notices.extend(b.run(200));
    assert_eq!(notices, [PhoneAction::Dialed("*8".into())]);
    b.card.take_heard(1);
    b.driver
        .command(b.card.now_ms(), PhoneCommand::FarEndBusy)
        .unwrap();
    b.run(3000);
    assert_eq!(b.heard_tone(), [Progress::Busy]);
}

#[test]
fn incoming_call_rings_sends_caller_id_after_the_first_ring_and_is_answered() {
    let mut b = Bench::new();
    let caller = CallerId {
        date_time: Some((11, 24, 21, 5)),
        number: Some("202".into()),
        name: Some("Sales 202".into()),
        ..CallerId::default()
    };
    b.driver
        .command(b.card.now_ms(), PhoneCommand::Incoming(caller.clone()))
        .unwrap();
    b.run(100);
    assert!(b.card.ringing(1), "the phone rings");
    b.run(2000);
    assert!(!b.card.ringing(1), "US cadence: 2 s on, 4 s off");
    b.run(3000);
    let heard = b.card.take_heard(1);
    assert_eq!(
        decode_spill(&demodulate(Modem::Bell202, &heard)).unwrap(),
        caller
    );
    b.run(1000);
    assert!(b.card.ringing(1), "second ring");
    b.card.lift(1);
    assert_eq!(b.run(100), [PhoneAction::Answered]);
    assert!(!b.card.ringing(1));
}
