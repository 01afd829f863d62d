//! The shard's queues of received datagrams, one per overload class: the datagrams of one
//! worker turn are triaged into them, then served by priority (responses, ACK, CANCEL,
//! BYE and in-dialog requests first, then requests answering a challenge, then new ones),
//! new requests that waited too long answered 503 (see [`crate::overload`]).

use crate::engine::{Engine, Now};
use crate::overload::{Class, Shedder};
use crate::queue_wait::QueueWaits;
use crate::transport::Peer;
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Instant;

/// Drops logged one by one before only every thousandth is.
const LOGGED_DROPS: u64 = 10;

/// Messages served per turn, at most, before the worker receives, sends and runs timers
/// again; of them, new requests served and new requests shed.
const MESSAGES_PER_TURN: usize = 1024;
const NEW_SERVED_PER_TURN: usize = 32;
const NEW_SHED_PER_TURN: usize = 256;
/// How long a turn serves new requests, at most: then the worker takes in what arrived
/// meanwhile, so a priority message (an OPTIONS probe, a BYE) waits about this long behind
/// a flood of new ones, not a whole turn's worth of them.
const NEW_WORK_PER_TURN: std::time::Duration = std::time::Duration::from_millis(2);

/// A datagram waiting for the engine.
#[derive(Debug)]
pub struct Queued {
    /// Its sender.
    pub peer: Peer,
    /// Its bytes.
    pub bytes: Bytes,
    /// When the fast path received it (how long it waited decides whether it is served).
    pub received: Instant,
    /// When the kernel received it, where the socket reports it (the start of its time in
    /// the gateway).
    pub arrived: Option<std::time::SystemTime>,
    /// How urgent it is.
    pub class: Class,
}

/// Datagrams dropped because their class's queue was full.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueDrops {
    /// Priority messages dropped.
    pub priority: u64,
    /// New requests (answering a challenge or not) dropped.
    pub new: u64,
}

/// Bounded queues, one per class.
#[derive(Debug)]
pub struct ClassQueues {
    priority: VecDeque<Queued>,
    answering: VecDeque<Queued>,
    new: VecDeque<Queued>,
    capacity: usize,
    drops: QueueDrops,
}

impl ClassQueues {
    /// Queues of `capacity` datagrams each.
    pub fn new(capacity: usize) -> ClassQueues {
        ClassQueues {
            priority: VecDeque::new(),
            answering: VecDeque::new(),
            new: VecDeque::new(),
            capacity: capacity.max(1),
            drops: QueueDrops::default(),
        }
    }

    /// Queues a datagram in its class's queue; a full queue drops it and counts it
    /// (logged one by one at first, then every thousandth).
    pub fn push(&mut self, queued: Queued) {
        let (queue, dropped) = match queued.class {
            Class::Priority => (&mut self.priority, &mut self.drops.priority),
            Class::Answering => (&mut self.answering, &mut self.drops.new),
            Class::New => (&mut self.new, &mut self.drops.new),
        };
        if queue.len() < self.capacity {
            queue.push_back(queued);
            return;
        }
        *dropped += 1;
        if *dropped <= LOGGED_DROPS || *dropped % 1000 == 0 {
            tracing::warn!(
                "engine queue full: {:?} datagram from {} dropped ({dropped} so far)",
                queued.class,
                queued.peer.addr
            );
        }
    }

    /// When the datagram waiting longest arrived (None: nothing waits).
    pub fn oldest(&self) -> Option<Instant> {
        [&self.priority, &self.answering, &self.new]
            .into_iter()
            .filter_map(|queue| queue.front().map(|queued| queued.received))
            .min()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.priority.is_empty() && self.answering.is_empty() && self.new.is_empty()
    }

    /// How many datagrams wait.
    pub fn len(&self) -> usize {
        self.priority.len() + self.answering.len() + self.new.len()
    }

    /// The datagrams dropped on full queues so far.
    pub fn drops(&self) -> QueueDrops {
        self.drops
    }

    /// Puts back what [`ClassQueues::pop`] took, at the head of its queue.
    fn push_front(&mut self, queued: Queued) {
        match queued.class {
            Class::Priority => self.priority.push_front(queued),
            Class::Answering => self.answering.push_front(queued),
            Class::New => self.new.push_front(queued),
        }
    }

    fn pop(&mut self) -> Option<Queued> {
        self.priority
            .pop_front()
            .or_else(|| self.answering.pop_front())
            .or_else(|| self.new.pop_front())
    }

    /// Serves a turn's worth: priority messages first, then new requests, those that
    /// waited too long answered 503. `clock` is read per message (the shard passes
    /// [`Now::system`]); `after_each` runs after every message, so what it caused is handed
    /// on at once (the shard passes its outputs' drain).
    pub fn serve(
        &mut self,
        engine: &mut Engine,
        shedder: &Shedder,
        waits: &mut QueueWaits,
        clock: impl Fn() -> Now,
        after_each: &mut dyn FnMut(&mut Engine),
    ) {
        let (mut served, mut shed) = (0, 0);
        let started = clock().mono;
        for _ in 0..MESSAGES_PER_TURN {
            if served == NEW_SERVED_PER_TURN || shed == NEW_SHED_PER_TURN {
                break;
            }
            let Some(queued) = self.pop() else {
                break;
            };
            let now = clock();
            if queued.class != Class::Priority
                && now.mono.saturating_duration_since(started) >= NEW_WORK_PER_TURN
            {
                // The rest of the turn's new work waits for the next turn, first in line.
                self.push_front(queued);
                break;
            }
            waits.record(
                queued.class,
                now.mono.saturating_duration_since(queued.received),
            );
            waits.handling(queued.class, queued.arrived);
            match queued.class {
                Class::Priority => engine.handle_datagram(now, queued.peer, &queued.bytes),
                Class::Answering | Class::New if shedder.serves(now.mono, queued.received) => {
                    served += 1;
                    engine.handle_datagram(now, queued.peer, &queued.bytes);
                }
                Class::Answering | Class::New => {
                    shed += 1;
                    engine.reject_overloaded(now, queued.peer, &queued.bytes);
                }
            }
            after_each(engine);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::time::Duration;

    const CONFIG: &str = "[sip]\nlisten = \"127.0.0.1:5060\"\n[database]\npath = \"unused.db\"\n\
[overload]\nqueue_capacity = 200\nretry_after_secs = 7\n";

    fn request(method: &str, n: usize, to_tag: &str) -> Bytes {
        Bytes::from(format!(
            "{method} sip:201@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK{method}{n}\r\n\
Max-Forwards: 70\r\nFrom: <sip:202@127.0.0.1>;tag=f{n}\r\nTo: <sip:201@127.0.0.1>{to_tag}\r\n\
Call-ID: {method}{n}@test\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        ))
    }

    fn queued(bytes: Bytes, received: Instant, class: Class) -> Queued {
        Queued {
            arrived: None,
            peer: Peer {
                protocol: crate::transport::Protocol::Udp,
                addr: "127.0.0.1:5099".parse().unwrap(),
                local: "127.0.0.1:5060".parse().unwrap(),
            },
            bytes,
            received,
            class,
        }
    }

    /// New work stops when the turn's time for it is up (the worker then takes in what
    /// arrived: a probe behind a flood waits about that long); what is left is served next.
    #[test]
    fn a_turn_serves_new_requests_for_a_bounded_time() {
        let config = Config::from_toml(CONFIG, std::path::Path::new("t.toml")).unwrap();
        let start = Now::system();
        let mut engine = Engine::new(config, Default::default(), [7; 32], start);
        let mut queues = ClassQueues::new(200);
        for n in 0..10 {
            queues.push(queued(request("INVITE", n, ""), start.mono, Class::New));
        }
        // Each message takes a millisecond of the clock.
        let ticks = std::cell::Cell::new(0u32);
        let clock = || {
            ticks.set(ticks.get() + 1);
            Now {
                mono: start.mono + Duration::from_millis(u64::from(ticks.get()) - 1),
                ..start
            }
        };
        let shedder = Shedder::new(Duration::from_secs(10));
        let mut waits = QueueWaits::default();
        queues.serve(&mut engine, &shedder, &mut waits, clock, &mut |_| {});
        let answered = std::iter::from_fn(|| engine.poll_transmit()).count();
        // The turn starts at 0 ms; the first request is taken at 1 ms, the second at 2 ms,
        // when the turn's time for new work is up.
        assert_eq!(answered, 1, "served within the 2 ms the turn has for them");
        assert_eq!(
            queues.new.len(),
            9,
            "the rest waits, the next in line first"
        );
        assert_eq!(
            queues.new.front().map(|q| q.bytes.clone()),
            Some(request("INVITE", 1, ""))
        );
    }

    /// A request answering its challenge, left for the next turn, keeps the queues
    /// non-empty, and its arrival is the one the worker's deadline is set by.
    #[test]
    fn requests_answering_a_challenge_count_as_queued() {
        let mut queues = ClassQueues::new(8);
        assert!(queues.is_empty());
        assert_eq!(queues.oldest(), None);
        let received = Instant::now();
        queues.push(queued(request("INVITE", 1, ""), received, Class::Answering));
        assert!(!queues.is_empty(), "an answering request is waiting");
        assert_eq!(queues.oldest(), Some(received));
        assert!(queues.pop().is_some());
        assert!(queues.is_empty());
    }

    /// Under a backlog of new requests, the probe queued last is answered first, late new
    /// requests get 503 with Retry-After, fresh ones are served, and a full queue drops.
    #[test]
    fn priority_first_late_new_requests_shed_full_queues_drop() {
        let config = Config::from_toml(CONFIG, std::path::Path::new("t.toml")).unwrap();
        let mut engine = Engine::new(config, Default::default(), [7; 32], Now::system());
        let mut queues = ClassQueues::new(200);
        let clock = Now::system();
        let now = clock.mono;
        let late = now - Duration::from_secs(1);
        for n in 0..210 {
            let received = if n < 50 { late } else { now };
            queues.push(queued(request("INVITE", n, ""), received, Class::New));
        }
        assert_eq!(queues.drops().new, 10, "a full queue drops");
        queues.push(queued(request("OPTIONS", 0, ""), now, Class::Priority));
        // The second INVITE of a call (it answers its 407), queued last.
        let answering = String::from_utf8(request("INVITE", 999, "").to_vec())
            .unwrap()
            .replace(
                "Content-Length",
                "Proxy-Authorization: Digest username=\"202\"\r\nContent-Length",
            );
        queues.push(queued(answering.into(), now, Class::Answering));
        let shedder = Shedder::new(Duration::from_millis(100));
        // What each message causes leaves before the next is handled.
        let mut answers = Vec::new();
        let mut per_message = Vec::new();
        let mut waits = QueueWaits::default();
        queues.serve(&mut engine, &shedder, &mut waits, || clock, &mut |engine| {
            let before = answers.len();
            answers.extend(
                std::iter::from_fn(|| engine.poll_transmit()).map(|out| {
                    crate::sip::message::SipMessage::parse_datagram(&out.bytes).unwrap()
                }),
            );
            per_message.push(answers.len() - before);
        });
        assert!(
            per_message.iter().all(|&n| n == 1),
            "one answer after each message: {per_message:?}"
        );
        assert_eq!(answers[0].status(), Some(200), "the probe first");
        let count = |code| answers.iter().filter(|m| m.status() == Some(code)).count();
        assert_eq!(
            count(400) + count(403) + count(407),
            NEW_SERVED_PER_TURN,
            "a turn's worth served"
        );
        assert_eq!(
            answers[1].call_id(),
            Some("INVITE999@test"),
            "the call answering its challenge next, before new ones"
        );
        assert_eq!(count(503), 50, "the late ones are shed");
        assert!(answers
            .iter()
            .filter(|m| m.status() == Some(503))
            .all(|m| m.header(&ezk_sip_types::Name::RETRY_AFTER) == Some("7")));
        assert_eq!(
            count(407),
            NEW_SERVED_PER_TURN - 1,
            "then fresh new ones, to a turn's worth"
        );
        assert!(!queues.is_empty(), "the rest waits for the next turn");
        while !queues.is_empty() {
            queues.serve(&mut engine, &shedder, &mut waits, || clock, &mut |_| {});
        }
        let rest = std::iter::from_fn(|| engine.poll_transmit()).count();
        assert_eq!(rest, 150 - (NEW_SERVED_PER_TURN - 1));
        assert_eq!(engine.stats().overload_rejected, 50);
    }
}
