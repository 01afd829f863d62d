//! The line-port state machine driven against the emulated card and its central office:
//! incoming calls with caller ID offered after two rings, answer, the three disconnect
//! signals, abandoned ringing, outgoing calls with dial tone, digits and answer supervision,
//! red alarm and missing dial tone.

mod common;

use std::path::Path;
use telephony_hw::dahdi::emulator::{EmulatedCard, EmulatedChannel};
use telephony_hw::dahdi::system_conf::SystemConf;
use telephony_hw::dsp::callerid::CallerId;
use telephony_hw::dsp::tones::zone;
use telephony_hw::line::driver::{DialMode, LinePortDriver, PortDriver};
use telephony_hw::line::line_port::{Disconnect, LineAction, LineCommand};

const LINE: u32 = 3;

struct Bench {
    card: EmulatedCard,
    driver: LinePortDriver<EmulatedChannel>,
}

impl Bench {
    fn new() -> Bench {
        Bench::with_dialling(DialMode::Dtmf)
    }

    fn with_dialling(mode: DialMode) -> Bench {
        let conf = SystemConf::parse("fxoks=1-2\nfxsks=3\nloadzone=us\n", Path::new("s")).unwrap();
        let card = EmulatedCard::new(&conf);
        let driver =
            LinePortDriver::new(card.open(LINE).unwrap(), zone("us").unwrap(), 2, mode).unwrap();
        Bench { card, driver }
    }

    /// Runs `ms` in 20 ms steps; returns the notices for the control plane.
    fn run(&mut self, ms: u64) -> Vec<LineAction> {
        common::run(&self.card, &mut self.driver, ms)
    }

    fn command(&mut self, command: LineCommand) -> Vec<LineAction> {
        self.driver.command(self.card.now_ms(), command).unwrap()
    }

    /// An answered incoming call.
    fn answered_call(&mut self) {
        self.card.co_ring(LINE, None);
        let offers = self.run(8500);
        assert_eq!(offers, [LineAction::Offer(None)]);
        self.command(LineCommand::Answer);
        self.run(200);
        assert!(self.card.co_loop_closed(LINE));
    }
}

#[test]
fn an_incoming_call_is_offered_after_two_rings_with_its_caller_id() {
    let mut b = Bench::new();
    let caller = CallerId {
        date_time: Some((1, 2, 3, 4)),
        number: Some("3125550100".into()),
        name: Some("PSTN CALLER".into()),
        ..CallerId::default()
    };
    b.card.co_ring(LINE, Some(&caller));
    let first = b.run(2200);
    assert!(first.is_empty(), "not offered after one ring: {first:?}");
    let offered = b.run(6000);
    assert_eq!(offered, [LineAction::Offer(Some(caller))]);
    b.command(LineCommand::Answer);
    b.run(100);
    assert!(b.card.co_loop_closed(LINE), "answering closes the loop");
}

/// Something the central office does to the line.
type Signal = fn(&EmulatedCard);

#[test]
fn each_disconnect_signal_ends_the_call() {
    let cases: [(Signal, Disconnect); 3] = [
        (
            |card| card.co_battery_drop(LINE, 300),
            Disconnect::BatteryDrop,
        ),
        (
            |card| card.co_reverse_polarity(LINE),
            Disconnect::PolarityReversal,
        ),
        (|card| card.co_busy_tone(LINE), Disconnect::BusyTone),
    ];
    for (signal, expected) in cases {
        let mut b = Bench::new();
        b.answered_call();
        signal(&b.card);
        let notices = b.run(3000);
        assert_eq!(
            notices,
            [LineAction::Disconnected(expected)],
            "{expected:?}"
        );
        assert!(!b.card.co_loop_closed(LINE), "the line was hung up");
    }
}

#[test]
fn ringing_that_stops_is_an_abandoned_call() {
    let mut b = Bench::new();
    b.card.co_ring(LINE, None);
    b.run(2500);
    b.card.co_stop_ringing(LINE);
    assert!(b.run(7000).is_empty());
    assert_eq!(b.run(2000), [LineAction::Abandoned]);
}

#[test]
fn an_outgoing_call_waits_for_dial_tone_dials_and_sees_the_answer() {
    let mut b = Bench::new();
    b.command(LineCommand::Dial("5550123".into()));
    b.run(3500);
    assert_eq!(b.card.co_digits(LINE), "5550123");
    b.card.co_reverse_polarity(LINE);
    assert_eq!(b.run(200), [LineAction::RemoteAnswered]);
    b.command(LineCommand::HangUp);
    b.run(100);
    assert!(!b.card.co_loop_closed(LINE));
}

#[test]
fn no_line_means_red_alarm_and_no_dial_tone() {
    let mut b = Bench::new();
    assert!(!b.driver.in_alarm());
    b.card.unplug_line(LINE, true);
    assert_eq!(b.run(1200), [LineAction::Alarm(true)]);
    assert!(b.driver.in_alarm(), "the operator's status shows the alarm");
    b.command(LineCommand::Dial("5550123".into()));
    let notices = b.run(4000);
    assert_eq!(notices, [LineAction::NoDialTone]);
    assert_eq!(b.driver.state_name(), "idle");
    b.card.unplug_line(LINE, false);
    assert_eq!(b.run(200), [LineAction::Alarm(false)]);
    assert!(!b.driver.in_alarm());
}

#[test]
fn pulse_dialling_out_is_counted_by_the_office() {
    let mut b = Bench::with_dialling(DialMode::Pulse);
    b.command(LineCommand::Dial("5550123".into()));
    b.run(12_000);
    assert_eq!(b.card.co_digits(LINE), "5550123");
    assert!(b.card.co_loop_closed(LINE), "pulses are not a hangup");
    b.card.co_reverse_polarity(LINE);
    assert_eq!(b.run(200), [LineAction::RemoteAnswered]);
}
