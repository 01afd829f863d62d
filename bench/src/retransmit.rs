//! RFC 3261 retransmission schedules for the generated phones, with an explicit `now`: a
//! request until its answer (Timer A for an INVITE, doubling from T1 without a cap; Timer E
//! for the others, doubling up to T2), given up at Timer B/F (64·T1); and a final response
//! to an INVITE until its ACK (Timer G, or the UAS core's 2xx rule of §13.3.1.4: doubling up
//! to T2), given up at Timer H (64·T1).

use gateway::sip::transaction::TimerConfig;
use std::time::{Duration, Instant};

/// What a schedule asks for at `now`.
#[derive(Debug, PartialEq, Eq)]
pub enum Due<'a> {
    /// Nothing yet.
    Wait,
    /// Send these bytes again.
    Send(&'a [u8]),
    /// 64·T1 passed without an answer: the transaction failed.
    GiveUp,
}

/// One message sent again and again until answered.
#[derive(Debug, Clone)]
pub struct Retransmit {
    bytes: Vec<u8>,
    next: Instant,
    interval: Duration,
    capped: bool,
    give_up: Instant,
}

impl Retransmit {
    /// A request just sent at `now`: Timer A (an INVITE) or E, until Timer B or F.
    pub fn request(bytes: Vec<u8>, invite: bool, now: Instant) -> Retransmit {
        Retransmit::starting(bytes, !invite, now)
    }

    /// A final response to an INVITE just sent at `now`, until its ACK (Timer G/H).
    pub fn response(bytes: Vec<u8>, now: Instant) -> Retransmit {
        Retransmit::starting(bytes, true, now)
    }

    fn starting(bytes: Vec<u8>, capped: bool, now: Instant) -> Retransmit {
        let timers = TimerConfig::default();
        Retransmit {
            bytes,
            next: now + timers.t1,
            interval: timers.t1,
            capped,
            give_up: now + timers.transaction_timeout(),
        }
    }

    /// A non-INVITE request got a provisional response: from now on every T2
    /// (RFC 3261 §17.1.2.2).
    pub fn proceeding(&mut self, now: Instant) {
        let t2 = TimerConfig::default().t2;
        if self.interval < t2 {
            self.interval = t2;
            self.next = now + t2;
        }
    }

    /// The bytes retransmitted.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// When [`Retransmit::poll`] has something to do next.
    pub fn deadline(&self) -> Instant {
        self.next.min(self.give_up)
    }

    /// Runs the schedule at `now`.
    pub fn poll(&mut self, now: Instant) -> Due<'_> {
        if now >= self.give_up {
            return Due::GiveUp;
        }
        if now < self.next {
            return Due::Wait;
        }
        self.interval = TimerConfig::default().back_off(self.interval, self.capped);
        self.next = now + self.interval;
        Due::Send(&self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The times (ms after the first send) at which `schedule` sends again, until it gives up.
    fn sends(mut schedule: Retransmit, start: Instant) -> (Vec<u64>, u64) {
        let mut at = Vec::new();
        for ms in 0..=40_000u64 {
            let now = start + Duration::from_millis(ms);
            match schedule.poll(now) {
                Due::Wait => {}
                Due::Send(_) => at.push(ms),
                Due::GiveUp => return (at, ms),
            }
        }
        (at, u64::MAX)
    }

    #[test]
    fn an_invite_doubles_from_t1_and_gives_up_at_timer_b() {
        let start = Instant::now();
        let (at, gave_up) = sends(Retransmit::request(b"INVITE".to_vec(), true, start), start);
        assert_eq!(at, [500, 1500, 3500, 7500, 15_500, 31_500]);
        assert_eq!(gave_up, 32_000);
    }

    #[test]
    fn a_non_invite_request_and_a_final_response_double_up_to_t2() {
        let start = Instant::now();
        let (at, gave_up) = sends(Retransmit::request(b"BYE".to_vec(), false, start), start);
        assert_eq!(
            at,
            [500, 1500, 3500, 7500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]
        );
        assert_eq!(gave_up, 32_000);
        let (again, _) = sends(Retransmit::response(b"SIP/2.0 200".to_vec(), start), start);
        assert_eq!(again, at);
    }

    #[test]
    fn a_provisional_answer_slows_a_non_invite_request_to_t2() {
        let start = Instant::now();
        let mut schedule = Retransmit::request(b"BYE".to_vec(), false, start);
        schedule.proceeding(start + Duration::from_millis(100));
        assert_eq!(schedule.deadline(), start + Duration::from_millis(4100));
        assert_eq!(schedule.bytes(), b"BYE");
    }
}
