//! The failed-authentication guard: blocks, locks, the allowlist, bounds.

use super::*;

fn config() -> GuardConfig {
    GuardConfig {
        max_failures_per_source: 5,
        max_failures_per_extension: 20,
        failure_window: Duration::from_secs(60),
        block: Duration::from_secs(900),
        trusted_networks: vec!["10.0.0.0/8".parse().unwrap()],
        log_per_second: 10,
        max_challenges_per_source: 3,
    }
}

fn fail(guard: &mut AuthGuard, now: Instant, source: &str, user: &str) {
    guard.record_failure(
        now,
        Failure {
            source: source.parse().unwrap(),
            method: "REGISTER",
            user: Some(user),
            known_extension: user.starts_with('2'),
            reason: &"wrong user name or password",
        },
    );
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn a_source_is_blocked_at_the_limit_and_released_after_the_block() {
    let now = Instant::now();
    let mut guard = AuthGuard::new(config());
    for _ in 0..4 {
        fail(&mut guard, now, "192.0.2.7:5060", "201");
    }
    assert!(guard.admits(now, ip("192.0.2.7")), "4 failures: not yet");
    fail(&mut guard, now, "192.0.2.7:5061", "201");
    assert!(
        !guard.admits(now, ip("192.0.2.7")),
        "5th failure blocks (any port)"
    );
    assert!(
        guard.admits(now, ip("192.0.2.8")),
        "other sources are not affected"
    );
    assert!(!guard.admits(now + Duration::from_secs(899), ip("192.0.2.7")));
    let stats = guard.stats();
    assert_eq!(stats.sources_blocked, 1);
    assert_eq!(stats.blocked_requests_dropped, 2);
    assert_eq!(stats.failures, 5);
    guard.purge(now + Duration::from_secs(900));
    assert!(guard.admits(now + Duration::from_secs(900), ip("192.0.2.7")));
}

#[test]
fn failures_spread_over_more_than_the_window_do_not_block() {
    let start = Instant::now();
    let mut guard = AuthGuard::new(config());
    for i in 0..20 {
        fail(
            &mut guard,
            start + Duration::from_secs(i * 15),
            "192.0.2.7:5060",
            "201",
        );
    }
    assert!(guard.admits(start + Duration::from_secs(300), ip("192.0.2.7")));
}

#[test]
fn trusted_networks_are_never_blocked() {
    let now = Instant::now();
    let mut guard = AuthGuard::new(config());
    for _ in 0..50 {
        fail(&mut guard, now, "10.1.2.3:5060", "201");
    }
    assert!(guard.admits(now, ip("10.1.2.3")));
    assert!(guard.is_trusted(ip("10.1.2.3")));
    assert_eq!(guard.stats().failures, 50);
}

#[test]
fn an_extension_guessed_from_many_sources_is_locked() {
    let now = Instant::now();
    let mut guard = AuthGuard::new(config());
    for i in 0..19 {
        fail(&mut guard, now, &format!("198.51.100.{i}:5060"), "201");
    }
    assert!(!guard.is_locked(now, "201"));
    fail(&mut guard, now, "198.51.100.200:5060", "201");
    assert!(guard.is_locked(now, "201"));
    assert!(!guard.is_locked(now, "202"));
    assert!(!guard.is_locked(now + Duration::from_secs(900), "201"));
    assert_eq!(guard.stats().extensions_locked, 1);
}

#[test]
fn made_up_user_names_are_not_tracked_as_extensions() {
    let now = Instant::now();
    let mut guard = AuthGuard::new(config());
    for i in 0..1000 {
        fail(
            &mut guard,
            now,
            &format!("10.9.{}.{}:5060", i / 250, i % 250),
            &format!("x{i}"),
        );
    }
    assert!(guard.extensions.is_empty());
}

#[test]
fn memory_is_bounded_for_any_number_of_sources() {
    let now = Instant::now();
    let mut guard = AuthGuard::new(GuardConfig {
        max_failures_per_source: 1,
        ..config()
    });
    for i in 0..(MAX_TRACKED as u32 + 10_000) {
        let source = SocketAddr::new(
            IpAddr::from(std::net::Ipv4Addr::from(0x2000_0000u32 + i)),
            5060,
        );
        fail(&mut guard, now, &source.to_string(), "999");
    }
    assert!(guard.blocked.len() <= MAX_TRACKED);
    assert!(guard.sources.len() <= MAX_TRACKED);
    assert!(guard.block_order.len() <= MAX_TRACKED + 1);
    guard.purge(now + Duration::from_secs(901));
    assert!(guard.blocked.is_empty() && guard.block_order.is_empty());
    assert!(guard.sources.is_empty() && guard.source_order.is_empty());
}

#[test]
fn challenges_per_source_are_limited_each_second() {
    let now = Instant::now();
    let mut guard = AuthGuard::new(config());
    let victim = ip("192.0.2.9");
    assert_eq!(
        (0..10)
            .filter(|_| guard.allows_challenge(now, victim))
            .count(),
        3
    );
    assert!(guard.allows_challenge(now, ip("192.0.2.10")), "per source");
    assert!(
        (0..10).all(|_| guard.allows_challenge(now, ip("10.0.0.1"))),
        "trusted: no limit"
    );
    assert!(
        guard.allows_challenge(now + Duration::from_secs(1), victim),
        "next second"
    );
    assert_eq!(guard.stats().challenges_dropped, 7);
    guard.purge(now + Duration::from_secs(3));
    assert!(guard.challenges.is_empty());
}
