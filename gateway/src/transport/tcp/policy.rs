//! The TCP transport's connection policy, sans-IO: which new connections are admitted,
//! when an open one must be closed, and how often a repeated event may be logged. The
//! socket code in the parent module only asks these questions and acts on the answers.

use crate::config::TcpConfig;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The effective limits of the TCP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// A message must be complete this long after its first byte.
    pub message_timeout: Duration,
    /// A connection without a registration is closed after this long without input.
    pub idle_timeout: Duration,
    /// Open connections per remote IP address.
    pub max_per_source: usize,
    /// Open connections in total.
    pub max_total: usize,
}

impl TcpLimits {
    /// The `[tcp]` settings, with the total cap lowered to `max_total` (what the
    /// descriptor limit allows, see [`crate::descriptors`]).
    pub fn from_config(config: &TcpConfig, max_total: usize) -> TcpLimits {
        TcpLimits {
            message_timeout: Duration::from_secs(config.message_timeout_secs),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs),
            max_per_source: config.max_connections_per_source.min(max_total),
            max_total,
        }
    }
}

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Its IP address already holds `max_per_source` connections.
    #[error("{max} connections already open from that address (tcp.max_connections_per_source)")]
    PerSource {
        /// The cap.
        max: usize,
    },
    /// `max_total` connections are open.
    #[error("{max} connections already open in total (tcp.max_connections, lowered to fit the descriptor limit)")]
    Total {
        /// The cap.
        max: usize,
    },
}

/// Open connections, by remote IP address and in total.
#[derive(Debug)]
pub struct Admission {
    max_per_source: usize,
    max_total: usize,
    per_source: HashMap<IpAddr, usize>,
    total: usize,
}

impl Admission {
    /// No connection open yet.
    pub fn new(limits: &TcpLimits) -> Admission {
        Admission {
            max_per_source: limits.max_per_source,
            max_total: limits.max_total,
            per_source: HashMap::new(),
            total: 0,
        }
    }

    /// Admits a connection accepted from `ip`, or says why not (then it must be closed).
    pub fn admit(&mut self, ip: IpAddr) -> Result<(), Refusal> {
        if self.total >= self.max_total {
            return Err(Refusal::Total {
                max: self.max_total,
            });
        }
        if self
            .per_source
            .get(&ip.to_canonical())
            .copied()
            .unwrap_or(0)
            >= self.max_per_source
        {
            return Err(Refusal::PerSource {
                max: self.max_per_source,
            });
        }
        self.add(ip);
        Ok(())
    }

    /// Counts a connection the gateway opened itself (to reach a registered phone): it
    /// holds a descriptor like any other, but is never refused.
    pub fn add(&mut self, ip: IpAddr) {
        *self.per_source.entry(ip.to_canonical()).or_default() += 1;
        self.total += 1;
    }

    /// A connection from `ip` closed.
    pub fn release(&mut self, ip: IpAddr) {
        let ip = ip.to_canonical();
        if let Some(count) = self.per_source.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&ip);
            }
            self.total -= 1;
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.total
    }
}

/// Why the policy closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Expiry {
    /// A message's first byte arrived, its last did not in time (slowloris).
    #[error("no complete message within {0:?} of its first byte (tcp.message_timeout_secs)")]
    MessageTimeout(Duration),
    /// Nothing arrived for the idle timeout and the remote address holds no registration.
    #[error("idle for {0:?} without a registration (tcp.idle_timeout_secs)")]
    Idle(Duration),
}

/// One connection's clocks: when its current message began and when it last sent
/// anything.
#[derive(Debug, Clone)]
pub struct ConnectionTimers {
    message_timeout: Duration,
    idle_timeout: Duration,
    message_started: Option<Instant>,
    last_activity: Instant,
}

impl ConnectionTimers {
    /// A connection opened at `now`.
    pub fn new(now: Instant, limits: &TcpLimits) -> ConnectionTimers {
        ConnectionTimers {
            message_timeout: limits.message_timeout,
            idle_timeout: limits.idle_timeout,
            message_started: None,
            last_activity: now,
        }
    }

    /// Bytes arrived at `now`; `completed` if they completed a message, `partial` if part
    /// of a message is now buffered (its clock starts now unless it had started before
    /// and no message completed since).
    pub fn on_read(&mut self, now: Instant, completed: bool, partial: bool) {
        self.last_activity = now;
        self.message_started = match self.message_started {
            _ if !partial => None,
            Some(started) if !completed => Some(started),
            _ => Some(now),
        };
    }

    /// When [`ConnectionTimers::on_deadline`] must next be called.
    pub fn deadline(&self) -> Instant {
        let idle = self.last_activity + self.idle_timeout;
        match self.message_started {
            Some(started) => idle.min(started + self.message_timeout),
            None => idle,
        }
    }

    /// The deadline passed: whether the connection must close. A registered phone's idle
    /// connection stays open (its idle clock restarts); a late message closes any
    /// connection.
    pub fn on_deadline(&mut self, now: Instant, registered: bool) -> Option<Expiry> {
        if self
            .message_started
            .is_some_and(|started| now >= started + self.message_timeout)
        {
            return Some(Expiry::MessageTimeout(self.message_timeout));
        }
        if now >= self.last_activity + self.idle_timeout {
            if !registered {
                return Some(Expiry::Idle(self.idle_timeout));
            }
            self.last_activity = now;
        }
        None
    }
}

/// Counts a repeated event and allows a log line about it at most once per interval.
#[derive(Debug, Clone)]
pub struct RateLimitedLog {
    interval: Duration,
    last_line: Option<Instant>,
    since_line: u64,
    total: u64,
}

/// What a log line about a repeated event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCount {
    /// Events since the previous line (this one included).
    pub since_last: u64,
    /// Events since start.
    pub total: u64,
}

impl RateLimitedLog {
    /// At most one line per `interval`.
    pub fn new(interval: Duration) -> RateLimitedLog {
        RateLimitedLog {
            interval,
            last_line: None,
            since_line: 0,
            total: 0,
        }
    }

    /// Counts an event at `now`; returns the counts when a line may be logged.
    pub fn record(&mut self, now: Instant) -> Option<EventCount> {
        self.since_line += 1;
        self.total += 1;
        if self
            .last_line
            .is_some_and(|last| now.duration_since(last) < self.interval)
        {
            return None;
        }
        self.last_line = Some(now);
        let count = EventCount {
            since_last: self.since_line,
            total: self.total,
        };
        self.since_line = 0;
        Some(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> TcpLimits {
        TcpLimits {
            message_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_per_source: 2,
            max_total: 3,
        }
    }

    #[test]
    fn admission_caps_per_source_and_in_total() {
        let mut admission = Admission::new(&limits());
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        assert_eq!(admission.admit(a), Ok(()));
        assert_eq!(admission.admit(a), Ok(()));
        assert_eq!(admission.admit(a), Err(Refusal::PerSource { max: 2 }));
        // The IPv4-mapped spelling is the same source.
        assert_eq!(
            admission.admit("::ffff:127.0.0.2".parse().unwrap()),
            Err(Refusal::PerSource { max: 2 })
        );
        assert_eq!(admission.admit(b), Ok(()));
        assert_eq!(admission.admit(b), Err(Refusal::Total { max: 3 }));
        admission.release(a);
        assert_eq!(admission.open(), 2);
        assert_eq!(admission.admit(b), Ok(()));
        // Connections the gateway opens count, and are never refused.
        admission.add(b);
        assert_eq!(admission.open(), 4);
        assert!(admission.admit("127.0.0.4".parse().unwrap()).is_err());
    }

    #[test]
    fn idle_connections_close_unless_registered() {
        let start = Instant::now();
        let mut timers = ConnectionTimers::new(start, &limits());
        assert_eq!(timers.deadline(), start + Duration::from_secs(60));
        let later = start + Duration::from_secs(60);
        assert_eq!(timers.on_deadline(later, true), None, "registered: kept");
        assert_eq!(timers.deadline(), later + Duration::from_secs(60));
        let much_later = later + Duration::from_secs(60);
        assert_eq!(
            timers.on_deadline(much_later, false),
            Some(Expiry::Idle(Duration::from_secs(60)))
        );
        // Any input is activity.
        let mut timers = ConnectionTimers::new(start, &limits());
        timers.on_read(start + Duration::from_secs(50), false, false);
        assert_eq!(
            timers.on_deadline(start + Duration::from_secs(60), false),
            None
        );
    }

    #[test]
    fn a_message_must_complete_in_time_whatever_trickles_in() {
        let start = Instant::now();
        let second = |n| start + Duration::from_secs(n);
        let mut timers = ConnectionTimers::new(start, &limits());
        timers.on_read(second(1), false, true);
        for n in 2..11 {
            timers.on_read(second(n), false, true); // one byte a second
        }
        assert_eq!(timers.deadline(), second(11));
        assert_eq!(
            timers.on_deadline(second(11), true),
            Some(Expiry::MessageTimeout(Duration::from_secs(10)))
        );
        // A message that completes resets the clock; one starting in the same read
        // starts its own.
        let mut timers = ConnectionTimers::new(start, &limits());
        timers.on_read(second(1), false, true);
        timers.on_read(second(9), true, true);
        assert_eq!(timers.deadline(), second(19));
        timers.on_read(second(10), true, false);
        assert_eq!(timers.deadline(), second(70));
    }

    #[test]
    fn repeated_events_are_logged_once_per_interval_with_their_count() {
        let start = Instant::now();
        let mut log = RateLimitedLog::new(Duration::from_secs(1));
        assert_eq!(
            log.record(start),
            Some(EventCount {
                since_last: 1,
                total: 1
            })
        );
        for ms in 1..100 {
            assert_eq!(log.record(start + Duration::from_millis(ms * 5)), None);
        }
        assert_eq!(
            log.record(start + Duration::from_secs(1)),
            Some(EventCount {
                since_last: 100,
                total: 101
            })
        );
    }
}
