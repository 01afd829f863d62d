//! The gateway on PostgreSQL (`database.url`), against a throwaway cluster the tests start
//! themselves (`initdb` in a temporary directory, a unix socket there; needs Debian's
//! `postgresql` package and fails saying so without it): a call and a `*8` pickup billed in
//! PostgreSQL, registrations restored from it after a restart, and `gateway migrate` on
//! both backends.

use e2e_tests::pickup::{picker, ringing};
use e2e_tests::{free_port, gateway_binary, register, Gateway, GatewayOptions, Sipp};
use gateway::store::test_cluster::TestCluster;
use gateway::store::SCHEMA_VERSION;
use std::path::Path;

/// 202 calls 203 (a SIPp phone registered at `phone`), which answers; both hang up.
/// A gateway whose database is `url`.
fn on_postgres(url: &str) -> Gateway {
    Gateway::start(GatewayOptions {
        database_url: Some(url.to_string()),
        ..GatewayOptions::default()
    })
}

fn call_203_from_202(gateway: &Gateway, phone: u16) {
    let answering = Sipp::new("uas_answer.xml", phone).spawn(gateway);
    Sipp::new("uac_call.xml", free_port())
        .service("203")
        .credentials("202", "pw202")
        .key("caller", "202")
        .run(gateway);
    answering.wait();
}

#[test]
fn a_call_and_a_group_pickup_are_billed_in_postgres() {
    let cluster = TestCluster::shared();
    let url = cluster.create_database();
    let mut gateway = on_postgres(&url);
    // 204 calls 201; 202 takes the call with *8 (Replaces).
    let (callee, caller) = ringing(&gateway, "uas_ring_picked.xml", "uac_call.xml");
    picker("uac_pickup.xml", "*8", "202")
        .out_of_call("uas_replaces.xml")
        .run(&gateway);
    caller.wait();
    callee.wait();
    gateway.wait_for_log("connected through Replaces");
    // 202 calls 203, which answers.
    let phone = free_port();
    register(&gateway, "203", phone, 600, 200);
    call_203_from_202(&gateway, phone);

    // The CDRs, as the server has them (committed before the callers got their 200 OK to
    // the BYE; the last one may still be on its way to the server).
    let cdrs = |client: &mut postgres::Client| -> Vec<Vec<Option<String>>> {
        client
            .query(
                "SELECT caller, called, answered_by, pickup_method, billed, disposition, node \
                 FROM cdrs ORDER BY id",
                &[],
            )
            .expect("reading cdrs")
            .iter()
            .map(|row| (0..row.len()).map(|i| row.get(i)).collect())
            .collect()
    };
    let mut client = cluster.client(&url);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut rows = cdrs(&mut client);
    while rows.len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        rows = cdrs(&mut client);
    }
    let text =
        |row: &[&str]| -> Vec<Option<String>> { row.iter().map(|v| Some(v.to_string())).collect() };
    assert_eq!(
        rows,
        [
            text(&["204", "201", "202", "group", "202", "answered", "gw1"]),
            text(&["202", "203", "203", "none", "202", "answered", "gw1"]),
        ],
        "{}",
        gateway.log()
    );
    let contexts: i64 = client
        .query_one("SELECT COUNT(*) FROM call_contexts", &[])
        .unwrap()
        .get(0);
    assert_eq!(contexts, 0, "the ended calls' contexts are gone");
    // `gateway cdr` reads them from the same database.
    let (table, newest) = gateway.last_cdr();
    assert_eq!(&newest[2..4], ["202", "203"], "{table}");

    // The registrations are in the database: a restart finds both.
    gateway.restart();
    assert!(
        gateway.log().contains("2 registration(s) restored"),
        "{}",
        gateway.log()
    );
}

/// `gateway migrate --config <config>`: whether it succeeded, and what it printed.
fn migrate(config: &Path) -> (bool, String) {
    let output = std::process::Command::new(gateway_binary())
        .arg("migrate")
        .arg("--config")
        .arg(config)
        .output()
        .expect("run gateway migrate");
    let mut text = String::from_utf8_lossy(&output.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// `gateway migrate` on a new database with `[database]` holding `database`: applies every
/// migration, then has nothing left to do; after `make_newer` it refuses, naming `name`.
fn migrate_then_refuse_a_newer_schema(database: &str, name: &str, make_newer: impl FnOnce()) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[sip]\nlisten = \"127.0.0.1:{}\"\n[database]\n{database}\n\
             [[extension]]\nnumber = \"201\"\npassword = \"pw201\"\n",
            free_port()
        ),
    )
    .unwrap();
    let (ok, text) = migrate(&config);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!(
            "database {name}: schema migrated from version 0 to {SCHEMA_VERSION}"
        )),
        "{text}"
    );
    let (ok, text) = migrate(&config);
    assert!(
        ok && text.contains(&format!("schema version {SCHEMA_VERSION}, up to date")),
        "idempotent: {text}"
    );
    make_newer();
    let (ok, text) = migrate(&config);
    assert!(!ok, "a newer schema is refused: {text}");
    assert!(
        text.contains(&format!(
            "database {name} has schema version 99, newer than this gateway's {SCHEMA_VERSION}"
        )),
        "{text}"
    );
}

#[test]
fn gateway_migrate_brings_postgres_up_to_date_and_refuses_a_newer_schema() {
    let cluster = TestCluster::shared();
    let url = cluster.create_database();
    let name = gateway::config::DatabaseConfig {
        path: None,
        url: Some(url.clone()),
        tls_ca: None,
        spool: gateway::config::default_spool(),
    }
    .describe();
    migrate_then_refuse_a_newer_schema(&format!("url = \"{url}\""), &name, || {
        cluster
            .client(&url)
            .batch_execute("UPDATE schema_version SET version = 99")
            .unwrap();
    });
}

#[test]
fn gateway_migrate_brings_sqlite_up_to_date_and_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.db");
    migrate_then_refuse_a_newer_schema(
        &format!("path = \"{}\"", path.display()),
        &path.display().to_string(),
        || {
            rusqlite::Connection::open(&path)
                .unwrap()
                .execute_batch("UPDATE schema_version SET version = 99")
                .unwrap();
        },
    );
}

#[test]
fn calls_between_phones_go_on_while_postgres_is_unreachable_and_the_outage_is_logged_once() {
    let cluster = TestCluster::shared();
    let url = cluster.create_database();
    let gateway = on_postgres(&url);
    let phone = free_port();
    register(&gateway, "203", phone, 600, 200);
    cluster.refuse_connections(&url);
    // Two calls 202 -> 203 while the database is down: both are answered and hung up.
    for _ in 0..2 {
        call_203_from_202(&gateway, phone);
    }
    gateway.wait_for_log("unreachable");
    let log = gateway.log();
    assert_eq!(
        log.matches("writes are not applied until it is back")
            .count(),
        1,
        "one line for the outage, not one per write:\n{log}"
    );
    assert!(!log.contains("store write failed"), "{log}");
}

#[test]
fn cdrs_of_calls_completed_while_postgres_is_unreachable_reach_it_once_when_it_is_back() {
    let cluster = TestCluster::shared();
    let url = cluster.create_database();
    let gateway = on_postgres(&url);
    let phone = free_port();
    register(&gateway, "203", phone, 600, 200);
    call_203_from_202(&gateway, phone);
    cluster.refuse_connections(&url);
    // Each caller's 200 OK to its BYE waits until the CDR is safe: in the spool now.
    for _ in 0..2 {
        call_203_from_202(&gateway, phone);
    }
    gateway.wait_for_log("CDRs are kept in the spool");
    cluster.allow_connections(&url);
    // The store thread writes them by itself, as soon as the reconnect backoff (at most
    // 30 s) allows.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !gateway.log().contains("CDRs written from the spool") {
        assert!(
            std::time::Instant::now() < deadline,
            "the spool was not written to the database:\n{}",
            gateway.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let log = gateway.log();
    assert!(log.contains("2 CDRs written from the spool"), "{log}");
    assert_eq!(
        log.matches("CDRs are kept in the spool").count(),
        1,
        "one line for the outage, not one per CDR:\n{log}"
    );
    let rows = cluster
        .client(&url)
        .query(
            "SELECT call_key, caller, called, disposition FROM cdrs ORDER BY id",
            &[],
        )
        .expect("reading cdrs");
    let mut keys: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
    let calls: Vec<(String, String, String)> = rows
        .iter()
        .map(|row| (row.get(1), row.get(2), row.get(3)))
        .collect();
    let answered = ("202".to_string(), "203".to_string(), "answered".to_string());
    assert_eq!(calls, vec![answered; 3], "{log}");
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 3, "each call once: {keys:?}");
    // `gateway cdr` shows them too.
    let table = gateway.cdrs();
    assert_eq!(table.lines().skip(1).count(), 3, "{table}");
}

#[test]
fn under_load_no_cdr_is_lost_or_doubled_when_postgres_is_restarted() {
    const CALLS: u32 = 100;
    // A cluster of its own: it is restarted under the other tests' feet otherwise.
    let cluster = TestCluster::start();
    let url = cluster.create_database();
    let gateway = on_postgres(&url);
    let limit = std::time::Duration::from_secs(120);
    let phone = free_port();
    register(&gateway, "203", phone, 600, 200);
    let callee = Sipp::new("uas_answer.xml", phone)
        .calls(CALLS)
        .time_limit(limit)
        .spawn(&gateway);
    let callers = Sipp::new("uac_call.xml", free_port())
        .service("203")
        .credentials("202", "pw202")
        .key("caller", "202")
        .calls(CALLS)
        .rate(20)
        .time_limit(limit)
        .spawn(&gateway);
    let mut client = cluster.client(&url);
    let count = |client: &mut postgres::Client| -> i64 {
        client
            .query_one("SELECT COUNT(*) FROM cdrs", &[])
            .map(|row| row.get(0))
            .unwrap_or(0)
    };
    // A fifth of the calls done, PostgreSQL is restarted while the rest come and go; while
    // it is away (and until the gateway's backoff lets it connect again) CDRs go to the
    // spool.
    let deadline = std::time::Instant::now() + limit;
    while count(&mut client) < i64::from(CALLS / 5) {
        assert!(std::time::Instant::now() < deadline, "{}", gateway.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(client);
    cluster.restart();
    // The gateway felt it (its connections were dropped).
    gateway.wait_for_log("unreachable");
    callers.wait();
    callee.wait();
    let mut client = cluster.client(&url);
    while count(&mut client) < i64::from(CALLS) {
        assert!(
            std::time::Instant::now() < deadline,
            "{} CDRs of {CALLS}:\n{}",
            count(&mut client),
            gateway.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let row = client
        .query_one("SELECT COUNT(*), COUNT(DISTINCT call_key) FROM cdrs", &[])
        .unwrap();
    let (all, distinct): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!((all, distinct), (i64::from(CALLS), i64::from(CALLS)));
}

#[test]
fn the_gateway_reaches_postgres_over_tls_trusting_the_configured_ca() {
    let cluster = TestCluster::start_tls();
    let in_clear = cluster.create_database();
    let name = in_clear.rsplit('/').next().unwrap().to_string();
    let (url, ca) = cluster.tls_url(&name);
    let gateway = Gateway::start(GatewayOptions {
        database_url: Some(url),
        keys: vec![("database", format!("tls_ca = \"{}\"", ca.display()))],
        ..GatewayOptions::default()
    });
    register(&gateway, "203", free_port(), 600, 200);
    let mut client = cluster.client(&in_clear);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let stored: i64 = client
            .query_one("SELECT COUNT(*) FROM registrations WHERE aor = '203'", &[])
            .unwrap()
            .get(0);
        if stored == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", gateway.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let encrypted = cluster.encrypted_connections(&name);
    assert!(encrypted >= 1, "the gateway's connections are over TLS");
}
