//! Limits on failed authentication, against password guessing (svcrack and friends): a
//! source address with too many failures in a window is blocked (its requests dropped,
//! counted, logged once), and an extension with too many failures from anywhere is
//! locked (only trusted networks and the addresses it is registered from may still
//! authenticate as it). Trusted networks are never blocked. Sans-IO: time comes in as
//! `now`; memory is bounded however many sources an attacker uses.

use crate::log_limit::LogLimiter;
use ipnet::IpNet;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Sources (and blocks) tracked at most; beyond this the oldest record is forgotten.
const MAX_TRACKED: usize = 65_536;

/// Characters of an attacker-chosen user name written into a log line.
const LOGGED_NAME_CHARS: usize = 32;

/// The limits, from `[auth]`.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// Failures from one source address within the window that block it.
    pub max_failures_per_source: u32,
    /// Failures against one extension within the window, from any source, that lock it.
    pub max_failures_per_extension: u32,
    /// The window in which failures are counted.
    pub failure_window: Duration,
    /// How long a block or lock lasts.
    pub block: Duration,
    /// Networks never blocked (their failures are still logged).
    pub trusted_networks: Vec<IpNet>,
    /// Log lines about failures and blocks per second, at most.
    pub log_per_second: u32,
    /// Challenges sent to one source address per second, at most (trusted networks are
    /// not limited): a reflection attack with a spoofed source gets at most this many
    /// replies a second toward its victim.
    pub max_challenges_per_source: u32,
}

/// Failures counted in one window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

impl Window {
    /// Counts a failure at `now`; returns the failures in the current window.
    fn count(&mut self, now: Instant, length: Duration) -> u32 {
        if now.duration_since(self.start) >= length {
            *self = Window {
                start: now,
                failures: 0,
            };
        }
        self.failures += 1;
        self.failures
    }
}

#[derive(Debug, Clone, Copy)]
struct Block {
    until: Instant,
    dropped: u64,
}

/// Counters for operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardStats {
    /// Failed authentications.
    pub failures: u64,
    /// Sources blocked so far.
    pub sources_blocked: u64,
    /// Requests dropped because their source was blocked.
    pub blocked_requests_dropped: u64,
    /// Extensions locked so far.
    pub extensions_locked: u64,
    /// Requests left unanswered because their source had its challenges for the second.
    pub challenges_dropped: u64,
}

/// A failed authentication, as the guard records it.
#[derive(Clone, Copy)]
pub struct Failure<'a> {
    /// Where the request came from.
    pub source: SocketAddr,
    /// The method of the request.
    pub method: &'a str,
    /// The user name the request claimed (digest user name or From user), if any.
    pub user: Option<&'a str>,
    /// True when `user` is a configured extension (only those are tracked for locking:
    /// names an attacker makes up must not take memory).
    pub known_extension: bool,
    /// Why it failed, for the log.
    pub reason: &'a dyn std::fmt::Display,
}

/// One guard for every engine shard: a source's failures count wherever its requests
/// land, so sharding gives an attacker no extra guesses. Each request takes the lock once,
/// briefly; the shards rarely meet there.
#[derive(Clone)]
pub struct SharedGuard(std::sync::Arc<std::sync::Mutex<AuthGuard>>);

impl SharedGuard {
    /// A guard with these limits, to share.
    pub fn new(config: GuardConfig) -> Self {
        SharedGuard(std::sync::Arc::new(std::sync::Mutex::new(AuthGuard::new(
            config,
        ))))
    }

    /// The guard (a shard that panicked holding it left it whole: every method keeps its
    /// invariants before it returns).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, AuthGuard> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Failure counts, blocks and locks.
pub struct AuthGuard {
    config: GuardConfig,
    sources: HashMap<IpAddr, Window>,
    /// Sources in the order their windows started (entries whose start no longer matches
    /// are stale and skipped), so the oldest is found without a scan.
    source_order: VecDeque<(Instant, IpAddr)>,
    blocked: HashMap<IpAddr, Block>,
    /// Blocks in the order they end (an entry whose end no longer matches its source's
    /// block is stale and skipped).
    block_order: VecDeque<(Instant, IpAddr)>,
    extensions: HashMap<String, Window>,
    locked: HashMap<String, Instant>,
    /// Challenges sent per source in the current one-second window.
    challenges: HashMap<IpAddr, Window>,
    log: LogLimiter,
    stats: GuardStats,
}

impl AuthGuard {
    /// A guard with these limits.
    pub fn new(config: GuardConfig) -> Self {
        AuthGuard {
            log: LogLimiter::new(config.log_per_second),
            config,
            sources: HashMap::new(),
            source_order: VecDeque::new(),
            blocked: HashMap::new(),
            block_order: VecDeque::new(),
            extensions: HashMap::new(),
            locked: HashMap::new(),
            challenges: HashMap::new(),
            stats: GuardStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> GuardStats {
        self.stats
    }

    /// True when `ip` is in a trusted network.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.config
            .trusted_networks
            .iter()
            .any(|net| net.contains(&ip))
    }

    /// False when a request from `source` must be dropped (the source is blocked); the
    /// drop is counted.
    pub fn admits(&mut self, now: Instant, source: IpAddr) -> bool {
        let Some(block) = self.blocked.get_mut(&source) else {
            return true;
        };
        if now >= block.until {
            self.unblock(source);
            return true;
        }
        block.dropped += 1;
        self.stats.blocked_requests_dropped += 1;
        false
    }

    fn unblock(&mut self, source: IpAddr) {
        if let Some(block) = self.blocked.remove(&source) {
            tracing::info!(
                "auth: unblocked {source} ({} requests dropped while blocked)",
                block.dropped
            );
        }
    }

    /// True when a challenge may be sent to `source` at `now`; false (counted) when it had
    /// its share of challenges this second. When too many sources are tracked to count a
    /// new one, the challenge is allowed: the limit protects single victims of reflection.
    pub fn allows_challenge(&mut self, now: Instant, source: IpAddr) -> bool {
        if self.is_trusted(source) {
            return true;
        }
        if !self.challenges.contains_key(&source) && self.challenges.len() >= MAX_TRACKED {
            return true;
        }
        let sent = self
            .challenges
            .entry(source)
            .or_insert(Window {
                start: now,
                failures: 0,
            })
            .count(now, Duration::from_secs(1));
        if sent > self.config.max_challenges_per_source {
            self.stats.challenges_dropped += 1;
            return false;
        }
        true
    }

    /// True when `extension` is locked at `now` (too many failures against it).
    pub fn is_locked(&self, now: Instant, extension: &str) -> bool {
        self.locked.get(extension).is_some_and(|&until| now < until)
    }

    /// Records a failed authentication: logs it (within the log budget), and blocks the
    /// source or locks the extension when a limit is reached.
    pub fn record_failure(&mut self, now: Instant, failure: Failure<'_>) {
        self.stats.failures += 1;
        let window = self.config.failure_window;
        let ip = failure.source.ip();
        let user = failure
            .user
            .map(|u| {
                format!(
                    "{:?}",
                    u.chars().take(LOGGED_NAME_CHARS).collect::<String>()
                )
            })
            .unwrap_or_else(|| "(none)".to_string());
        let trusted = self.is_trusted(ip);
        let from_source = self.count_source(now, ip);
        if self.log.allows(now) {
            tracing::info!(
                "auth: failed {} from {} as user {user}: {} ({from_source} in {} s from this address)",
                failure.method,
                failure.source,
                failure.reason,
                window.as_secs()
            );
        }
        if !trusted && from_source >= self.config.max_failures_per_source {
            self.block_source(now, failure.source, &user, failure.reason);
        }
        if let (Some(name), true) = (failure.user, failure.known_extension) {
            let against = self
                .extensions
                .entry(name.to_string())
                .or_insert(Window {
                    start: now,
                    failures: 0,
                })
                .count(now, window);
            if against >= self.config.max_failures_per_extension && !self.is_locked(now, name) {
                self.lock_extension(now, name, failure.source);
            }
        }
    }

    fn count_source(&mut self, now: Instant, ip: IpAddr) -> u32 {
        let window = self.config.failure_window;
        if !self.sources.contains_key(&ip) {
            while self.sources.len() >= MAX_TRACKED {
                let Some((start, oldest)) = self.source_order.pop_front() else {
                    break;
                };
                if self.sources.get(&oldest).is_some_and(|w| w.start == start) {
                    self.sources.remove(&oldest);
                }
            }
        }
        let entry = self.sources.entry(ip).or_insert(Window {
            start: now,
            failures: 0,
        });
        let before = entry.start;
        let count = entry.count(now, window);
        if count == 1 || entry.start != before {
            self.source_order.push_back((entry.start, ip));
        }
        count
    }

    fn block_source(
        &mut self,
        now: Instant,
        source: SocketAddr,
        user: &str,
        reason: &dyn std::fmt::Display,
    ) {
        let ip = source.ip();
        if self.blocked.contains_key(&ip) {
            return;
        }
        while self.blocked.len() >= MAX_TRACKED {
            let Some((until, oldest)) = self.block_order.pop_front() else {
                break;
            };
            if self.blocked.get(&oldest).is_some_and(|b| b.until == until) {
                self.blocked.remove(&oldest);
            }
        }
        let until = now + self.config.block;
        self.blocked.insert(ip, Block { until, dropped: 0 });
        self.block_order.push_back((until, ip));
        self.sources.remove(&ip);
        self.stats.sources_blocked += 1;
        if self.log.allows(now) {
            tracing::warn!(
                "auth: blocked {source} for {} s after {} failed authentications in {} s (last as user {user}: {reason}); its requests are dropped",
                self.config.block.as_secs(),
                self.config.max_failures_per_source,
                self.config.failure_window.as_secs()
            );
        }
    }

    fn lock_extension(&mut self, now: Instant, name: &str, last_source: SocketAddr) {
        self.locked
            .insert(name.to_string(), now + self.config.block);
        self.extensions.remove(name);
        self.stats.extensions_locked += 1;
        if self.log.allows(now) {
            tracing::warn!(
                "auth: extension {name:?} locked for {} s after {} failed authentications in {} s (the last from {last_source}); only trusted networks and its registered addresses may authenticate as it",
                self.config.block.as_secs(),
                self.config.max_failures_per_extension,
                self.config.failure_window.as_secs()
            );
        }
    }

    /// Forgets windows, blocks and locks that are over.
    pub fn purge(&mut self, now: Instant) {
        let window = self.config.failure_window;
        while let Some(&(start, ip)) = self.source_order.front() {
            if now.duration_since(start) < window {
                break;
            }
            self.source_order.pop_front();
            if self.sources.get(&ip).is_some_and(|w| w.start == start) {
                self.sources.remove(&ip);
            }
        }
        while let Some(&(until, ip)) = self.block_order.front() {
            if now < until {
                break;
            }
            self.block_order.pop_front();
            if self.blocked.get(&ip).is_some_and(|b| b.until == until) {
                self.unblock(ip);
            }
        }
        self.extensions
            .retain(|_, w| now.duration_since(w.start) < window);
        self.locked.retain(|_, &mut until| now < until);
        self.challenges
            .retain(|_, w| now.duration_since(w.start) < Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests;
