//! The store, every case against both backends (`sqlite::` and `postgres::` variants of
//! each test): round trip, restart, migrations, expiry, claims, writer thread. The
//! PostgreSQL variants use the throwaway cluster of [`super::test_cluster`]; each test has a
//! database of its own.

use super::*;
use std::sync::Arc;

/// One test's database on one backend; [`TestDb::open`] opens it again (a new connection,
/// as after a restart).
enum TestDb {
    Sqlite(tempfile::TempDir),
    Postgres(PgPool),
}

impl TestDb {
    fn sqlite() -> TestDb {
        TestDb::Sqlite(tempfile::tempdir().unwrap())
    }

    fn postgres() -> TestDb {
        let url = test_cluster::TestCluster::shared().create_database();
        TestDb::Postgres(PgPool::new(&url).unwrap())
    }

    fn open(&self) -> Store {
        self.try_open().unwrap()
    }

    fn try_open(&self) -> Result<Store, StoreError> {
        match self {
            TestDb::Sqlite(dir) => Store::open(&dir.path().join("gw.db")),
            TestDb::Postgres(pool) => Store::open_postgres(pool),
        }
    }
}

/// Runs each listed test (a `fn(TestDb)`) once per backend.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $test() {
                super::$test(super::TestDb::sqlite())
            })*
        }
        mod postgres {
            $(#[test]
            fn $test() {
                super::$test(super::TestDb::postgres())
            })*
        }
    };
}

on_both_backends!(
    bindings_survive_a_reopen,
    replace_overwrites_and_empty_removes,
    migrations_are_idempotent_and_newer_schemas_refused,
    writer_thread_applies_commands_in_order,
    group_pickup_claims_the_oldest_eligible_call_once,
    directed_pickup_checks_groups_and_leg_lookup_works,
    connections_claiming_at_once_claim_each_call_once,
    racing_pickers_of_one_call_have_exactly_one_winner,
    cdrs_are_listed_newest_first_with_their_media,
    a_batch_is_one_transaction_whose_commands_see_each_other,
    a_failed_command_spoils_nothing_else_in_its_batch,
    the_writer_answers_only_after_the_batch_is_committed,
    a_cdr_replaces_its_call_context_and_failed_pickups_are_kept,
    calls_left_by_a_crash_get_interrupted_cdrs_billed_to_their_last_mark,
    subscriptions_survive_reopening_and_expired_ones_are_dropped,
    nodes_keep_their_own_registrations_and_find_the_live_others,
    a_silent_node_is_taken_over_by_exactly_one_survivor,
    after_an_outage_of_the_database_itself_nobody_is_taken_over,
    a_claim_in_a_cluster_takes_the_calls_of_live_nodes_and_names_the_owner,
    a_call_has_one_cdr_and_a_real_record_replaces_an_interrupted_one,
    the_migration_to_one_cdr_per_call_keeps_the_first_of_duplicates,
    blf_dialogs_are_read_by_the_other_nodes_changed_ones_and_tombstones_too,
    a_takeover_deletes_the_dead_node_s_blf_dialogs_and_heartbeats_name_what_others_watch,
    subscriptions_are_restored_by_the_node_that_holds_them,
    the_writer_publishes_and_reads_blf_dialogs,
    the_rows_of_a_node_s_engine_shards_are_its_own,
);

fn binding(contact: &str, expires_at: u64) -> Binding {
    Binding {
        contact: contact.into(),
        expires_at,
        call_id: "cid".into(),
        cseq: 3,
        source: Peer {
            protocol: Protocol::Tcp,
            addr: "[::1]:5071".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
        },
        q: Some(0.5),
        user_agent: None,
    }
}

#[test]
fn sqlite_creates_the_directory_of_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/dir/gw.db");
    drop(Store::open(&path).unwrap());
    assert!(path.exists());
}

fn bindings_survive_a_reopen(db: TestDb) {
    let mut store = db.open();
    store
        .replace_bindings(
            "gw1",
            "201",
            &[binding("sip:201@a", 500), binding("sip:201@b", 50)],
        )
        .unwrap();
    // A phone registered over TLS is restored as one: it must never be reached in clear.
    let mut secure = binding("sips:202@c", 500);
    secure.source.protocol = Protocol::Tls;
    store
        .replace_bindings("gw1", "202", std::slice::from_ref(&secure))
        .unwrap();
    drop(store);
    let store = db.open();
    let mut loaded = store.load_bindings("gw1", 100).unwrap();
    loaded.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        loaded,
        [
            ("201".to_string(), binding("sip:201@a", 500)),
            ("202".to_string(), secure)
        ]
    );
    assert_eq!(
        store.load_bindings("gw1", 100).unwrap().len(),
        2,
        "the expired row is gone"
    );
}

fn replace_overwrites_and_empty_removes(db: TestDb) {
    let mut store = db.open();
    store
        .replace_bindings("gw1", "201", &[binding("sip:201@a", 500)])
        .unwrap();
    store
        .replace_bindings("gw1", "201", &[binding("sip:201@c", 600)])
        .unwrap();
    let loaded = store.load_bindings("gw1", 0).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].1.contact, "sip:201@c");
    store.replace_bindings("gw1", "201", &[]).unwrap();
    assert!(store.load_bindings("gw1", 0).unwrap().is_empty());
}

fn schema_version(store: &Store) -> u64 {
    store
        .db
        .first("SELECT version FROM schema_version", &[], |r| r.u64(0))
        .unwrap()
        .unwrap()
}

fn migrations_are_idempotent_and_newer_schemas_refused(db: TestDb) {
    let first = db.open();
    assert_eq!(first.migrated(), (0, SCHEMA_VERSION));
    drop(first);
    let store = db.open();
    assert_eq!(
        store.migrated(),
        (SCHEMA_VERSION, SCHEMA_VERSION),
        "nothing left to apply"
    );
    assert_eq!(schema_version(&store), u64::from(SCHEMA_VERSION));
    let rows = store
        .db
        .first("SELECT COUNT(*) FROM schema_version", &[], |r| r.u64(0))
        .unwrap();
    assert_eq!(rows, Some(1));
    let name = store.name().to_string();
    store
        .db
        .execute("UPDATE schema_version SET version = 99", &[])
        .unwrap();
    drop(store);
    let error = db.try_open().err().unwrap();
    assert!(
        matches!(error, StoreError::TooNew { found: 99, .. }),
        "{error:?}"
    );
    let error = error.to_string();
    assert!(
        error.contains("schema version 99") && error.contains(&name),
        "names the database: {error}"
    );
}

#[test]
fn gateways_migrating_one_postgres_database_at_once_apply_each_migration_once() {
    let url = test_cluster::TestCluster::shared().create_database();
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let pool = PgPool::new(&url).unwrap();
                barrier.wait();
                Store::open_postgres(&pool).unwrap().migrated()
            })
        })
        .collect();
    let mut migrated: Vec<(u32, u32)> = opened.into_iter().map(|t| t.join().unwrap()).collect();
    migrated.sort();
    let applied = (0, SCHEMA_VERSION);
    let current = (SCHEMA_VERSION, SCHEMA_VERSION);
    assert_eq!(migrated, [applied, current, current, current]);
}

#[test]
fn unusable_paths_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "not a directory").unwrap();
    let error = Store::open(&file.join("gw.db")).err().unwrap().to_string();
    assert!(error.contains("plain-file"), "{error}");
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x42u8; 4096]).unwrap();
    let error = Store::open(&garbage).err().unwrap().to_string();
    assert!(error.contains("garbage.db"), "{error}");
}

fn writer_thread_applies_commands_in_order(db: TestDb) {
    let writer = StoreWriter::start(db.open(), |_| {});
    for expires in [100, 200, 300] {
        writer.send(StoreCommand::ReplaceBindings {
            node: "gw1".into(),
            aor: "202".into(),
            bindings: vec![binding("sip:202@x", expires)],
        });
    }
    // A turn's commands handed over together keep their order too, after those before.
    let together = [400, 500]
        .map(|expires| StoreCommand::ReplaceBindings {
            node: "gw1".into(),
            aor: "202".into(),
            bindings: vec![binding("sip:202@x", expires)],
        })
        .to_vec();
    writer.send_all(together);
    writer.send_all(Vec::new());
    writer.flush();
    let loaded = db.open().load_bindings("gw1", 0).unwrap();
    assert_eq!(loaded[0].1.expires_at, 500);
}

fn context(key: &str, called: &str, groups: &[&str], ring_started_ms: u64) -> CallContext {
    CallContext {
        call_key: key.into(),
        node: "gw1".into(),
        caller_display: Some("Reception".into()),
        caller_number: "204".into(),
        caller_uri: "sip:204@127.0.0.1".into(),
        caller_offer: b"v=0\r\n".to_vec(),
        called: called.into(),
        call_groups: groups.iter().map(|g| g.to_string()).collect(),
        legs: vec![LegIds {
            call_id: format!("leg-{key}"),
            local_tag: "gt".into(),
            remote_tag: None,
        }],
        ring_started_ms,
    }
}

fn claim(picker: &str, groups: &[&str], target: PickupTarget) -> ClaimRequest {
    ClaimRequest {
        picker: picker.into(),
        pickup_groups: groups.iter().map(|g| g.to_string()).collect(),
        target,
        node: "gw1".into(),
        now_ms: 5000,
        other_nodes_seen_since_ms: None,
    }
}

/// The leg `call_id` of a test context, named by its gateway tag (the far end sent none).
fn leg(call_id: &str) -> NamedLeg {
    NamedLeg {
        call_id: call_id.into(),
        tags: ["gt".into(), "x".into()],
    }
}

fn claimed_key(outcome: ClaimOutcome) -> String {
    match outcome {
        ClaimOutcome::Claimed(context) => context.call_key,
        other => panic!("expected a claim, got {other:?}"),
    }
}

fn group_pickup_claims_the_oldest_eligible_call_once(db: TestDb) {
    let mut store = db.open();
    store
        .insert_ringing(&context("new", "201", &["sales"], 2000))
        .unwrap();
    store
        .insert_ringing(&context("old", "203", &["sales", "support"], 1000))
        .unwrap();
    store
        .insert_ringing(&context("other", "205", &["support"], 500))
        .unwrap();
    let first = store
        .claim(&claim("202", &["sales"], PickupTarget::Group))
        .unwrap();
    let first = match first {
        ClaimOutcome::Claimed(context) => context,
        other => panic!("{other:?}"),
    };
    assert_eq!(first.call_key, "old");
    assert_eq!(first.call_groups, ["sales", "support"]);
    assert_eq!(first.legs[0].call_id, "leg-old");
    assert_eq!(first.caller_offer, b"v=0\r\n");
    assert_eq!(
        claimed_key(
            store
                .claim(&claim("203", &["sales"], PickupTarget::Group))
                .unwrap()
        ),
        "new"
    );
    assert_eq!(
        store
            .claim(&claim("204", &["sales"], PickupTarget::Group))
            .unwrap(),
        ClaimOutcome::NothingRinging
    );
}

fn directed_pickup_checks_groups_and_leg_lookup_works(db: TestDb) {
    let mut store = db.open();
    store
        .insert_ringing(&context("c1", "201", &["sales"], 1000))
        .unwrap();
    assert_eq!(
        store
            .claim(&claim("205", &[], PickupTarget::Directed("201".into())))
            .unwrap(),
        ClaimOutcome::NotAllowed
    );
    assert_eq!(
        store
            .claim(&claim("205", &[], PickupTarget::Group))
            .unwrap(),
        ClaimOutcome::NothingRinging,
        "calls ring, but 205 has no pickup group: a group pickup reveals none of them"
    );
    assert_eq!(
        store
            .claim(&claim("204", &["sales"], PickupTarget::Group))
            .unwrap(),
        ClaimOutcome::NothingRinging,
        "the caller cannot pick up its own call"
    );
    assert_eq!(
        store
            .claim(&claim(
                "202",
                &["sales"],
                PickupTarget::Directed("203".into())
            ))
            .unwrap(),
        ClaimOutcome::NothingRinging
    );
    assert_eq!(
        claimed_key(
            store
                .claim(&claim("202", &["sales"], PickupTarget::Leg(leg("leg-c1"))))
                .unwrap()
        ),
        "c1"
    );
    store.release("c1").unwrap();
    assert_eq!(
        claimed_key(
            store
                .claim(&claim(
                    "203",
                    &["sales"],
                    PickupTarget::Directed("201".into())
                ))
                .unwrap()
        ),
        "c1",
        "a released call can be picked again"
    );
    store.mark_answered("c1", &answer("203", 6000)).unwrap();
    store.release("c2-unknown").unwrap();
    store.write_cdr(&cdr("c1", Some("203"))).unwrap();
    assert_eq!(
        store
            .claim(&claim("202", &["sales"], PickupTarget::Group))
            .unwrap(),
        ClaimOutcome::NothingRinging
    );
}

/// Four connections (nodes) claim 20 ringing calls, each until nothing is left for it:
/// every call is claimed exactly once.
fn connections_claiming_at_once_claim_each_call_once(db: TestDb) {
    let mut store = db.open();
    for i in 0..20 {
        store
            .insert_ringing(&context(&format!("c{i}"), "201", &["sales"], 1000 + i))
            .unwrap();
    }
    let db = Arc::new(db);
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (db, barrier) = (db.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut store = db.open();
                barrier.wait();
                let mut won = Vec::new();
                loop {
                    match store
                        .claim(&claim(&format!("20{w}"), &["sales"], PickupTarget::Group))
                        .unwrap()
                    {
                        ClaimOutcome::Claimed(c) => won.push(c.call_key),
                        ClaimOutcome::NothingRinging => return won,
                        ClaimOutcome::NotAllowed => panic!("a group pickup never hears that"),
                        ClaimOutcome::StoreFailed => panic!("the claim itself succeeded"),
                        ClaimOutcome::Elsewhere { .. } => panic!("one node"),
                    }
                }
            })
        })
        .collect();
    let mut all: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    all.sort();
    let unique = all.len();
    all.dedup();
    assert_eq!(all.len(), unique, "no call was claimed twice");
    assert_eq!(unique, 20, "every call was claimed once");
}

/// Round after round, eight connections go for the same ringing call at once (directed,
/// group and BLF pickups mixed): exactly one wins; the others hear that nothing rings.
fn racing_pickers_of_one_call_have_exactly_one_winner(db: TestDb) {
    const PICKERS: usize = 8;
    let db = Arc::new(db);
    let mut stores: Vec<Store> = (0..PICKERS).map(|_| db.open()).collect();
    let mut setup = db.open();
    for round in 0..10 {
        let key = format!("r{round}");
        setup
            .insert_ringing(&context(&key, "201", &["sales"], 1000 + round))
            .unwrap();
        let barrier = Arc::new(std::sync::Barrier::new(PICKERS));
        let outcomes: Vec<ClaimOutcome> = std::thread::scope(|scope| {
            let pickers: Vec<_> = stores
                .iter_mut()
                .enumerate()
                .map(|(i, store)| {
                    let (barrier, key) = (barrier.clone(), key.clone());
                    scope.spawn(move || {
                        let target = match i % 3 {
                            0 => PickupTarget::Group,
                            1 => PickupTarget::Directed("201".into()),
                            _ => PickupTarget::Leg(leg(&format!("leg-{key}"))),
                        };
                        let request = claim(&format!("3{i:02}"), &["sales"], target);
                        barrier.wait();
                        store.claim(&request).unwrap()
                    })
                })
                .collect();
            pickers.into_iter().map(|p| p.join().unwrap()).collect()
        });
        let winners: Vec<String> = outcomes
            .iter()
            .filter_map(|o| match o {
                ClaimOutcome::Claimed(c) => Some(c.call_key.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            winners,
            std::slice::from_ref(&key),
            "round {round}: {outcomes:?}"
        );
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, ClaimOutcome::Claimed(_) | ClaimOutcome::NothingRinging)),
            "the losers may pick up, the call is just gone: {outcomes:?}"
        );
        setup.write_cdr(&cdr(&key, Some("202"))).unwrap();
    }
}

/// A node whose claim of the oldest call is not committed yet holds its row: another node's
/// group pickup takes the next call at once instead of waiting for that row (and then
/// finding it gone).
#[test]
fn a_postgres_claim_skips_the_call_another_connection_is_claiming() {
    let db = TestDb::postgres();
    let mut first = db.open();
    for (key, ring) in [("old", 1000), ("new", 2000)] {
        first
            .insert_ringing(&context(key, "201", &["sales"], ring))
            .unwrap();
    }
    first.begin_batch().unwrap();
    let held = first
        .claim(&claim("202", &["sales"], PickupTarget::Group))
        .unwrap();
    assert_eq!(claimed_key(held), "old");
    let mut second = db.open();
    // Waiting for the held row would fail here instead of hanging the test.
    second.db.execute("SET lock_timeout = '2s'", &[]).unwrap();
    let outcome = second
        .claim(&claim("203", &["sales"], PickupTarget::Group))
        .unwrap();
    assert_eq!(claimed_key(outcome), "new");
    // A directed pickup of the held call: the call is being picked up, not forbidden.
    let outcome = second
        .claim(&claim(
            "203",
            &["sales"],
            PickupTarget::Directed("201".into()),
        ))
        .unwrap();
    assert_eq!(outcome, ClaimOutcome::NothingRinging);
    first.commit_batch().unwrap();
}

fn cdrs_are_listed_newest_first_with_their_media(db: TestDb) {
    let mut store = db.open();
    for (key, picker) in [("a", None), ("b", Some("202"))] {
        store.write_cdr(&cdr(key, picker)).unwrap();
    }
    store
        .set_cdr_media("b", "A:10p/0lost/0.5ms B:9p/1lost/0.7ms")
        .unwrap();
    let cdrs = store.recent_cdrs(10).unwrap();
    assert_eq!(cdrs.len(), 2);
    assert_eq!(
        cdrs[0].media.as_deref(),
        Some("A:10p/0lost/0.5ms B:9p/1lost/0.7ms")
    );
    assert_eq!(cdrs[1].media, None);
    assert_eq!(cdrs[0].call_key, "b");
    assert_eq!(cdrs[0].billed.as_deref(), Some("202"));
    assert_eq!(cdrs[1].pickup_ms, None);
}

fn cdr(key: &str, picker: Option<&str>) -> Cdr {
    Cdr {
        call_key: key.into(),
        caller: "204".into(),
        called: "201".into(),
        answered_by: picker.map(str::to_string).or(Some("201".into())),
        pickup_method: if picker.is_some() { "group" } else { "none" }.into(),
        billed: picker.map(str::to_string),
        ring_start_ms: 1,
        pickup_ms: picker.map(|_| 2),
        answer_ms: Some(3),
        end_ms: 10,
        duration_ms: 7,
        disposition: "answered".into(),
        hangup_cause: "BYE from caller".into(),
        node: "gw1".into(),
        media: None,
    }
}

fn a_batch_is_one_transaction_whose_commands_see_each_other(db: TestDb) {
    let mut store = db.open();
    // Committed: the claim inside the batch sees the ringing call inserted before it.
    store.begin_batch().unwrap();
    store
        .insert_ringing(&context("c1", "201", &["sales"], 1000))
        .unwrap();
    let outcome = store
        .claim(&claim("202", &["sales"], PickupTarget::Group))
        .unwrap();
    assert_eq!(claimed_key(outcome), "c1");
    store.write_cdr(&cdr("c0", None)).unwrap();
    store.commit_batch().unwrap();
    // What the writer's sync thread syncs to make the commit durable: SQLite's write-ahead
    // log; a PostgreSQL commit is durable as it returns.
    match &db {
        TestDb::Sqlite(_) => assert!(store.wal_path().unwrap().ends_with("gw.db-wal")),
        TestDb::Postgres(_) => assert_eq!(store.wal_path(), None),
    }
    // Begun but never committed (the process died): none of it is stored.
    store.begin_batch().unwrap();
    store
        .insert_ringing(&context("c2", "203", &["sales"], 2000))
        .unwrap();
    drop(store);
    let mut store = db.open();
    assert_eq!(store.recent_cdrs(10).unwrap().len(), 1);
    assert_eq!(
        store
            .claim(&claim("204", &["sales"], PickupTarget::Group))
            .unwrap(),
        ClaimOutcome::NothingRinging,
        "c1 stays claimed and c2 was never stored"
    );
}

/// In a batch on PostgreSQL a failed statement would abort the transaction: each command
/// runs in a savepoint, so the commands around a failing one are still committed.
fn a_failed_command_spoils_nothing_else_in_its_batch(db: TestDb) {
    let mut store = db.open();
    store.begin_batch().unwrap();
    execute(
        &mut store,
        StoreCommand::InsertRinging(Box::new(context("c1", "201", &["sales"], 1000))),
    );
    // Sabotage: the next command's table is gone (as if a DBA dropped it by mistake).
    store.db.execute("DROP TABLE cdrs", &[]).unwrap();
    execute(
        &mut store,
        StoreCommand::WriteCdr {
            cdr: Box::new(cdr("c0", None)),
            confirm: false,
        },
    );
    let claimed = execute(
        &mut store,
        StoreCommand::Claim {
            pickup: 1,
            request: claim("202", &["sales"], PickupTarget::Group),
        },
    );
    assert!(
        matches!(&claimed, Some(StoreResult::Claim { outcome: ClaimOutcome::Claimed(c), .. }) if c.call_key == "c1"),
        "{claimed:?}"
    );
    assert!(store.in_batch(), "the batch survived the failed command");
    store.commit_batch().unwrap();
    let store = db.open();
    let states = store
        .db
        .rows("SELECT state FROM call_contexts", &[], |r| r.text(0))
        .unwrap();
    assert_eq!(states, ["claimed"]);
}

fn the_writer_answers_only_after_the_batch_is_committed(db: TestDb) {
    let db = Arc::new(db);
    let answers = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = answers.clone();
    let checker = db.clone();
    let writer = StoreWriter::start(db.open(), move |result| {
        // Another connection sees everything the answer is about: it was committed first.
        let cdrs = checker.open().recent_cdrs(10).unwrap();
        seen.lock().unwrap().push((result, cdrs.len()));
    });
    writer.send(StoreCommand::InsertRinging(Box::new(context(
        "c1",
        "201",
        &["sales"],
        1000,
    ))));
    writer.send(StoreCommand::Claim {
        pickup: 7,
        request: claim("202", &["sales"], PickupTarget::Group),
    });
    writer.send(StoreCommand::WriteCdr {
        cdr: Box::new(cdr("c1", Some("202"))),
        confirm: true,
    });
    writer.flush();
    let answers = answers.lock().unwrap();
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(matches!(
        &answers[0].0,
        StoreResult::Claim { pickup: 7, outcome: ClaimOutcome::Claimed(context) } if context.call_key == "c1"
    ));
    assert_eq!(
        answers[1],
        (
            StoreResult::CdrWritten {
                call_key: "c1".into()
            },
            1
        )
    );
}

/// 202 answered at `answer_ms` after picking the call up (claimed at 5000).
fn answer(picker: &str, answer_ms: u64) -> Answer {
    Answer {
        answer_ms,
        answered_by: picker.into(),
        billed: picker.into(),
        pickup_method: PickupMethod::Group,
        pickup_ms: Some(5000),
    }
}

fn a_cdr_replaces_its_call_context_and_failed_pickups_are_kept(db: TestDb) {
    let mut store = db.open();
    store
        .insert_ringing(&context("c1", "201", &["sales"], 1000))
        .unwrap();
    let declined = FailedPickup {
        picker: "202".into(),
        method: "group".into(),
        claimed_ms: 5000,
        failed_ms: 7000,
        reason: "603 Decline".into(),
    };
    store.record_failed_pickup("c1", &declined).unwrap();
    store.write_cdr(&cdr("c1", None)).unwrap();
    assert_eq!(
        store.recover_interrupted("gw1").unwrap(),
        Interrupted::default(),
        "the ended call left no context behind"
    );
    assert_eq!(store.failed_pickups("c1").unwrap(), [declined]);
    assert!(store.failed_pickups("c2").unwrap().is_empty());
}

fn calls_left_by_a_crash_get_interrupted_cdrs_billed_to_their_last_mark(db: TestDb) {
    let mut store = db.open();
    // c1 was picked up by 202 and is up; c2 rings 203; 203 is picking up c3 (ringing 205).
    for (key, called, ring) in [
        ("c1", "201", 1000),
        ("c2", "203", 2000),
        ("c3", "205", 3000),
    ] {
        store
            .insert_ringing(&context(key, called, &["sales"], ring))
            .unwrap();
    }
    let mut other_node = context("c4", "201", &["sales"], 4000);
    other_node.node = "gw2".into();
    store.insert_ringing(&other_node).unwrap();
    claimed_key(
        store
            .claim(&claim(
                "202",
                &["sales"],
                PickupTarget::Directed("201".into()),
            ))
            .unwrap(),
    );
    store.mark_answered("c1", &answer("202", 6000)).unwrap();
    assert_eq!(store.mark_up("gw1", 9000).unwrap(), 1, "only c1 is up");
    assert_eq!(store.mark_up("gw2", 9500).unwrap(), 0);
    claimed_key(
        store
            .claim(&claim(
                "203",
                &["sales"],
                PickupTarget::Directed("205".into()),
            ))
            .unwrap(),
    );
    // The process dies; the next start finds the contexts.
    drop(store);
    let mut store = db.open();
    assert_eq!(
        store.recover_interrupted("gw1").unwrap(),
        Interrupted {
            answered: 1,
            unanswered: 2
        }
    );
    let cdrs = store.recent_cdrs(10).unwrap();
    let by_key = |key: &str| cdrs.iter().find(|c| c.call_key == key).unwrap().clone();
    let up = by_key("c1");
    assert_eq!(
        (
            up.disposition.as_str(),
            up.answer_ms,
            up.end_ms,
            up.duration_ms
        ),
        (INTERRUPTED, Some(6000), 9000, 3000),
        "billed from the answer to the last mark: {up:?}"
    );
    assert_eq!(up.answered_by.as_deref(), Some("202"));
    assert_eq!(up.billed.as_deref(), Some("202"));
    assert_eq!(
        (up.pickup_method.as_str(), up.pickup_ms),
        ("group", Some(5000))
    );
    let ringing = by_key("c2");
    assert_eq!(
        (
            ringing.disposition.as_str(),
            ringing.answered_by,
            ringing.duration_ms
        ),
        (INTERRUPTED, None, 0)
    );
    assert_eq!(
        ringing.billed.as_deref(),
        Some("204"),
        "the caller, as for any call"
    );
    assert_eq!(by_key("c3").disposition, INTERRUPTED);
    let failed = store.failed_pickups("c3").unwrap();
    assert_eq!(
        failed.len(),
        1,
        "the pickup in progress is recorded as failed"
    );
    assert_eq!(
        (
            failed[0].picker.as_str(),
            failed[0].method.as_str(),
            failed[0].claimed_ms
        ),
        ("203", "directed", 5000)
    );
    assert!(
        cdrs.iter().all(|c| c.call_key != "c4"),
        "another node's call"
    );
    assert_eq!(
        store.recover_interrupted("gw1").unwrap(),
        Interrupted::default(),
        "recorded once"
    );
    assert_eq!(
        store.recover_interrupted("gw2").unwrap().unanswered,
        1,
        "another node's call stays for that node"
    );
}

fn subscriptions_survive_reopening_and_expired_ones_are_dropped(db: TestDb) {
    let mut sub = StoredSubscription {
        node: "gw1".into(),
        subscriber: "202".into(),
        target: "201".into(),
        call_id: "sub1".into(),
        local_tag: "ours".into(),
        remote_tag: "theirs".into(),
        local_uri: "<sip:201@127.0.0.1>".into(),
        remote_uri: "<sip:202@127.0.0.1>".into(),
        remote_target: "sip:202@127.0.0.1:5072".into(),
        peer: Peer {
            protocol: Protocol::Tcp,
            addr: "127.0.0.1:5072".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
        },
        cseq: 3,
        version: 2,
        event_id: Some("x".into()),
        expires_at: 1_000,
    };
    {
        let mut store = db.open();
        store.save_subscription(&sub).unwrap();
        sub.cseq = 4;
        store.save_subscription(&sub).unwrap();
        let mut gone = sub.clone();
        gone.call_id = "sub2".into();
        gone.expires_at = 10;
        store.save_subscription(&gone).unwrap();
        let mut deleted = sub.clone();
        deleted.call_id = "sub3".into();
        store.save_subscription(&deleted).unwrap();
        store.delete_subscription("sub3", "ours").unwrap();
    }
    let store = db.open();
    assert_eq!(store.load_subscriptions("gw1", 500).unwrap(), vec![sub]);
}

fn addr(text: &str) -> std::net::SocketAddr {
    text.parse().unwrap()
}

fn nodes_keep_their_own_registrations_and_find_the_live_others(db: TestDb) {
    let mut store = db.open();
    store
        .register_node("a", addr("10.0.0.1:5060"), 100_000)
        .unwrap();
    store
        .register_node("b", addr("10.0.0.2:5060"), 100_000)
        .unwrap();
    store
        .replace_bindings("a", "201", &[binding("sip:201@phone-a", 500)])
        .unwrap();
    store
        .replace_bindings("b", "201", &[binding("sip:201@phone-b", 500)])
        .unwrap();
    store
        .replace_bindings("b", "202", &[binding("sip:202@x", 500)])
        .unwrap();
    // Each node restores its own.
    let of = |store: &Store, node: &str| -> Vec<String> {
        store
            .load_bindings(node, 100)
            .unwrap()
            .into_iter()
            .map(|(aor, b)| format!("{aor} {}", b.contact))
            .collect()
    };
    assert_eq!(of(&store, "a"), ["201 sip:201@phone-a"]);
    assert_eq!(of(&store, "b"), ["201 sip:201@phone-b", "202 sip:202@x"]);
    // Node a unregistering 201 leaves b's binding of it.
    store.replace_bindings("a", "201", &[]).unwrap();
    assert_eq!(of(&store, "b").len(), 2);
    store
        .replace_bindings("a", "201", &[binding("sip:201@phone-a", 500)])
        .unwrap();
    // What node a finds of 201 and 202 elsewhere: b, at its address.
    let found = store
        .remote_bindings("a", &["201".into(), "202".into()], 100_000, 10_000)
        .unwrap();
    let found: Vec<(String, String, String)> = found
        .into_iter()
        .map(|r| (r.aor, r.node, r.peer.addr.to_string()))
        .collect();
    assert_eq!(
        found,
        [
            ("201".into(), "b".into(), "10.0.0.2:5060".into()),
            ("202".into(), "b".into(), "10.0.0.2:5060".into()),
        ]
    );
    // Expired bindings and silent nodes are not routed to.
    assert!(store
        .remote_bindings("a", &["201".into()], 600_000, 1_000_000)
        .unwrap()
        .is_empty());
    assert!(store
        .remote_bindings("a", &["201".into()], 109_000, 5_000)
        .unwrap()
        .is_empty());
    // The phone of 202 now registers through a (the same contact): a takes it over.
    store
        .replace_bindings("a", "202", &[binding("sip:202@x", 700)])
        .unwrap();
    assert_eq!(of(&store, "b"), ["201 sip:201@phone-b"]);
    assert_eq!(of(&store, "a"), ["201 sip:201@phone-a", "202 sip:202@x"]);
}

fn a_silent_node_is_taken_over_by_exactly_one_survivor(db: TestDb) {
    const SURVIVORS: usize = 4;
    let db = Arc::new(db);
    let mut setup = db.open();
    let t0 = 1_000_000;
    setup
        .register_node("dead", addr("10.0.0.9:5060"), t0)
        .unwrap();
    for i in 0..SURVIVORS {
        setup
            .register_node(&format!("s{i}"), addr("10.0.0.1:5060"), t0 + 5_000)
            .unwrap();
    }
    setup
        .replace_bindings(
            "dead",
            "201",
            &[binding("sip:201@a", 5000), binding("sip:201@b", 5000)],
        )
        .unwrap();
    setup
        .replace_bindings("s0", "202", &[binding("sip:202@a", 5000)])
        .unwrap();
    // The dead node had one call up (answered, marked) and one ringing.
    for (key, ring) in [("up", 1000), ("ringing", 2000)] {
        let mut ctx = context(key, "201", &["sales"], ring);
        ctx.node = "dead".into();
        setup.insert_ringing(&ctx).unwrap();
    }
    setup.mark_answered("up", &answer("201", 3000)).unwrap();
    setup.mark_up("dead", 8000).unwrap();
    // Within the takeover time nothing happens.
    let early = setup
        .heartbeat("s0", addr("10.0.0.1:5060"), t0 + 10_000, 10_000)
        .unwrap();
    assert!(!early.revived && early.taken_over.is_empty(), "{early:?}");
    let others: Vec<&str> = early
        .others
        .iter()
        .flatten()
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(
        others,
        ["dead", "s1", "s2", "s3"],
        "every other node, alive"
    );

    let mut stores: Vec<Store> = (0..SURVIVORS).map(|_| db.open()).collect();
    let barrier = Arc::new(std::sync::Barrier::new(SURVIVORS));
    let beats: Vec<Heartbeat> = std::thread::scope(|scope| {
        let threads: Vec<_> = stores
            .iter_mut()
            .enumerate()
            .map(|(i, store)| {
                let barrier = barrier.clone();
                scope.spawn(move || {
                    barrier.wait();
                    store
                        .heartbeat(&format!("s{i}"), addr("10.0.0.1:5060"), t0 + 10_001, 10_000)
                        .unwrap()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let takeovers: Vec<&TakenOver> = beats.iter().flat_map(|b| &b.taken_over).collect();
    assert_eq!(
        takeovers,
        [&TakenOver {
            node: "dead".into(),
            registrations: 2,
            interrupted: Interrupted {
                answered: 1,
                unanswered: 1
            },
        }],
        "exactly one survivor cleans up: {beats:?}"
    );
    assert!(beats.iter().all(|b| !b.revived));
    let store = db.open();
    assert!(store
        .load_bindings("dead", 0)
        .unwrap()
        .iter()
        .all(|(aor, _)| aor != "201"));
    assert_eq!(
        store.load_bindings("s0", 0).unwrap().len(),
        1,
        "survivors keep theirs"
    );
    let cdrs = store.recent_cdrs(10).unwrap();
    assert_eq!(cdrs.len(), 2, "{cdrs:?}");
    assert!(cdrs
        .iter()
        .all(|c| c.disposition == INTERRUPTED && c.node == "dead"));
    let up = cdrs.iter().find(|c| c.call_key == "up").unwrap();
    assert_eq!(
        up.duration_ms, 5000,
        "billed from the answer to the last mark"
    );
    let nodes: Vec<String> = store.nodes().unwrap().into_iter().map(|n| n.0).collect();
    assert_eq!(nodes, ["s0", "s1", "s2", "s3"]);
    // The dead node comes back: its row is written again, and it learns it was taken over.
    let mut back = db.open();
    let beat = back
        .heartbeat("dead", addr("10.0.0.9:5060"), t0 + 20_000, 10_000)
        .unwrap();
    assert!(beat.revived, "{beat:?}");
    assert!(beat.taken_over.is_empty(), "the others heartbeat on time");
}

#[test]
fn a_lost_postgres_connection_fails_writes_at_once_and_is_made_again_when_the_server_is_back() {
    let cluster = test_cluster::TestCluster::shared();
    let url = cluster.create_database();
    let pool = PgPool::new(&url).unwrap();
    let mut store = Store::open_postgres(&pool).unwrap();
    store
        .replace_bindings("a", "201", &[binding("sip:201@a", 500)])
        .unwrap();
    cluster.refuse_connections(&url);
    let first = store.replace_bindings("a", "202", &[binding("sip:202@a", 500)]);
    assert!(first.is_err(), "the write on the lost connection fails");
    let started = std::time::Instant::now();
    let refused = store.replace_bindings("a", "203", &[binding("sip:203@a", 500)]);
    assert!(
        refused.as_ref().is_err_and(StoreError::is_unavailable),
        "within the backoff: refused without an attempt ({refused:?})"
    );
    assert!(started.elapsed() < reconnect::FIRST_BACKOFF, "at once");
    cluster.allow_connections(&url);
    // The next attempt comes once the backoff has passed (bounded: 100 tries).
    let mut written = Err(StoreError::Url {
        detail: String::new(),
    });
    for _ in 0..100 {
        written = store.replace_bindings("a", "204", &[binding("sip:204@a", 500)]);
        if written.is_ok() {
            break;
        }
        std::thread::sleep(reconnect::FIRST_BACKOFF / 5);
    }
    written.expect("written once the connection is made again");
    let mut users: Vec<String> = store
        .load_bindings("a", 100)
        .unwrap()
        .into_iter()
        .map(|(aor, _)| aor)
        .collect();
    users.sort();
    assert_eq!(users, ["201", "204"], "what was refused is not there");
}

fn a_claim_in_a_cluster_takes_the_calls_of_live_nodes_and_names_the_owner(db: TestDb) {
    let mut store = db.open();
    store
        .register_node("gw1", addr("10.0.0.1:5060"), 4_000)
        .unwrap();
    store
        .register_node("gw2", addr("10.0.0.2:5060"), 4_000)
        .unwrap();
    store
        .register_node("gone", addr("10.0.0.3:5060"), 10)
        .unwrap();
    let mut on_gw2 = context("far", "201", &["sales"], 1000);
    on_gw2.node = "gw2".into();
    store.insert_ringing(&on_gw2).unwrap();
    let mut on_gone = context("stale", "203", &["sales"], 500);
    on_gone.node = "gone".into();
    store.insert_ringing(&on_gone).unwrap();
    // Not clustered: only this node's calls.
    assert_eq!(
        store
            .claim(&claim("202", &["sales"], PickupTarget::Group))
            .unwrap(),
        ClaimOutcome::NothingRinging
    );
    // Clustered: gw2's call (live), never the silent node's, with gw2's address.
    let cluster_claim = |picker: &str, target: PickupTarget| ClaimRequest {
        other_nodes_seen_since_ms: Some(1_000),
        ..claim(picker, &["sales"], target)
    };
    match store
        .claim(&cluster_claim("202", PickupTarget::Group))
        .unwrap()
    {
        ClaimOutcome::Elsewhere { context, owner } => {
            assert_eq!(
                (context.call_key.as_str(), context.node.as_str()),
                ("far", "gw2")
            );
            assert_eq!(owner, addr("10.0.0.2:5060"));
            assert_eq!(context.legs.len(), 1, "with its legs");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store
            .claim(&cluster_claim("204", PickupTarget::Group))
            .unwrap(),
        ClaimOutcome::NothingRinging,
        "taken once, across nodes too"
    );
    // The owner loads the claim the other node made, for that picker only.
    assert_eq!(
        store.claimed_by_other_node("far", "204", "gw2").unwrap(),
        ClaimOutcome::NothingRinging
    );
    assert_eq!(
        store.claimed_by_other_node("far", "202", "gw1").unwrap(),
        ClaimOutcome::NothingRinging,
        "only on the owner"
    );
    assert_eq!(
        claimed_key(store.claimed_by_other_node("far", "202", "gw2").unwrap()),
        "far"
    );
    // Released (the pickup failed): a BLF key's Replaces naming its leg finds it too, but
    // only with the leg's tags.
    store.release("far").unwrap();
    let wrong_tags = NamedLeg {
        call_id: "leg-far".into(),
        tags: ["nope".into(), "x".into()],
    };
    assert_eq!(
        store
            .claim(&cluster_claim("202", PickupTarget::Leg(wrong_tags)))
            .unwrap(),
        ClaimOutcome::NothingRinging
    );
    assert!(matches!(
        store
            .claim(&cluster_claim("202", PickupTarget::Leg(leg("leg-far"))))
            .unwrap(),
        ClaimOutcome::Elsewhere { .. }
    ));
}

/// A CDR written again (a replay from the spool) is not counted twice; the node's real
/// record replaces the `interrupted` one a restart or takeover wrote meanwhile, never the
/// reverse.
fn a_call_has_one_cdr_and_a_real_record_replaces_an_interrupted_one(db: TestDb) {
    let mut store = db.open();
    let real = cdr("c1", Some("202"));
    store.write_cdr(&real).unwrap();
    store.write_cdr(&real).unwrap();
    let mut changed = real.clone();
    changed.hangup_cause = "BYE from callee".into();
    store.write_cdr(&changed).unwrap();
    assert_eq!(
        store.recent_cdrs(10).unwrap(),
        std::slice::from_ref(&real),
        "the first stays"
    );

    // The call rang on when the node lost the database; its restart (or a takeover) wrote
    // the interrupted guess; then the node's own record arrives.
    store
        .insert_ringing(&context("c2", "201", &["sales"], 1000))
        .unwrap();
    assert_eq!(store.recover_interrupted("gw1").unwrap().unanswered, 1);
    let guess = store.recent_cdrs(1).unwrap().remove(0);
    assert_eq!(guess.disposition, INTERRUPTED);
    let mut own = cdr("c2", None);
    own.media = Some("A:10p/0lost/0.5ms".into());
    store.write_cdr(&own).unwrap();
    // And the reverse: an interrupted record for a call that has its real one changes nothing.
    let mut late_guess = guess.clone();
    late_guess.call_key = "c1".into();
    store.write_cdr(&late_guess).unwrap();
    let mut cdrs = store.recent_cdrs(10).unwrap();
    cdrs.sort_by(|a, b| a.call_key.cmp(&b.call_key));
    assert_eq!(cdrs, [real, own]);
}

fn the_migration_to_one_cdr_per_call_keeps_the_first_of_duplicates(db: TestDb) {
    let store = db.open();
    // A database of schema 7, written before a call had one CDR: duplicates (and before
    // the tables of migration 9).
    store
        .db
        .execute_script(
            "DROP INDEX cdrs_call_key; DROP TABLE blf_dialogs; DROP INDEX subscriptions_target; \
             ALTER TABLE subscriptions DROP COLUMN node; ALTER TABLE registrations DROP COLUMN user_agent; \
             UPDATE schema_version SET version = 7",
        )
        .unwrap();
    for (key, cause) in [
        ("c1", "first"),
        ("c2", "only"),
        ("c1", "second"),
        ("c1", "third"),
    ] {
        let mut record = cdr(key, None);
        record.hangup_cause = cause.into();
        insert_plain_cdr(&store, &record);
    }
    drop(store);
    let mut store = db.open();
    assert_eq!(store.migrated(), (7, SCHEMA_VERSION));
    let mut kept: Vec<(String, String)> = store
        .recent_cdrs(10)
        .unwrap()
        .into_iter()
        .map(|c| (c.call_key, c.hangup_cause))
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        [("c1".into(), "first".into()), ("c2".into(), "only".into())]
    );
    store.write_cdr(&cdr("c1", None)).unwrap();
    assert_eq!(
        store.recent_cdrs(10).unwrap().len(),
        2,
        "unique from now on"
    );
}

/// A CDR row as schema 7 inserted it (no conflict clause: duplicates possible).
fn insert_plain_cdr(store: &Store, cdr: &Cdr) {
    store
        .db
        .execute(
            "INSERT INTO cdrs (call_key, caller, called, pickup_method, ring_start_ms, end_ms, \
             duration_ms, disposition, hangup_cause, node) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            &[
                (&cdr.call_key).into(),
                (&cdr.caller).into(),
                (&cdr.called).into(),
                (&cdr.pickup_method).into(),
                cdr.ring_start_ms.into(),
                cdr.end_ms.into(),
                cdr.duration_ms.into(),
                (&cdr.disposition).into(),
                (&cdr.hangup_cause).into(),
                (&cdr.node).into(),
            ],
        )
        .unwrap();
}

#[test]
fn a_postgres_connection_lost_during_a_batch_is_made_again_for_the_next_batch() {
    let cluster = test_cluster::TestCluster::shared();
    let url = cluster.create_database();
    let pool = PgPool::new(&url).unwrap();
    let mut store = Store::open_postgres(&pool).unwrap();
    store.begin_batch().unwrap();
    store
        .replace_bindings("a", "201", &[binding("sip:201@a", 500)])
        .unwrap();
    cluster.refuse_connections(&url);
    assert!(store
        .replace_bindings("a", "202", &[binding("sip:202@a", 500)])
        .is_err());
    assert!(!store.in_batch(), "the batch went with the connection");
    cluster.allow_connections(&url);
    // A new batch once the backoff has passed (bounded: 100 tries).
    let mut begun = false;
    for _ in 0..100 {
        if store.begin_batch().is_ok() {
            begun = true;
            break;
        }
        std::thread::sleep(reconnect::FIRST_BACKOFF / 5);
    }
    assert!(begun, "a new batch begins on a new connection");
    store
        .replace_bindings("a", "203", &[binding("sip:203@a", 500)])
        .unwrap();
    store.commit_batch().unwrap();
    let users: Vec<String> = store
        .load_bindings("a", 100)
        .unwrap()
        .into_iter()
        .map(|(aor, _)| aor)
        .collect();
    assert_eq!(users, ["203"]);
}

/// A PostgreSQL database the tests can make unreachable, a spool file beside, and the CDR
/// confirmations of the writers started on them.
struct Outage {
    cluster: &'static test_cluster::TestCluster,
    url: String,
    pool: PgPool,
    dir: tempfile::TempDir,
    confirmed: std::sync::mpsc::Receiver<String>,
    confirm: std::sync::mpsc::Sender<String>,
}

impl Outage {
    fn new() -> Outage {
        let cluster = test_cluster::TestCluster::shared();
        let url = cluster.create_database();
        let pool = PgPool::new(&url).unwrap();
        let (confirm, confirmed) = std::sync::mpsc::channel();
        Outage {
            cluster,
            url,
            pool,
            dir: tempfile::tempdir().unwrap(),
            confirmed,
            confirm,
        }
    }

    fn store(&self) -> Store {
        Store::open_postgres(&self.pool).unwrap()
    }

    fn spool(&self) -> Spool {
        Spool::open(&self.dir.path().join("cdr-spool.db")).unwrap()
    }

    /// A writer on the database with the spool (the database must be reachable to open).
    fn writer(&self, spool: Spool) -> StoreWriter {
        let confirm = self.confirm.clone();
        StoreWriter::with_spool(self.store(), Some(spool), move |result| {
            if let StoreResult::CdrWritten { call_key } = result {
                let _ = confirm.send(call_key);
            }
        })
    }

    /// Waits for the writer's confirmation of the CDR of `key` (bounded).
    fn confirmed(&self, key: &str) {
        let got = self
            .confirmed
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("a CDR confirmation");
        assert_eq!(got, key);
    }

    fn refuse(&self) {
        self.cluster.refuse_connections(&self.url);
    }

    fn allow(&self) {
        self.cluster.allow_connections(&self.url);
    }

    /// The CDRs in the database, oldest first.
    fn cdrs(&self) -> Vec<Cdr> {
        let mut cdrs = self.store().recent_cdrs(100).unwrap();
        cdrs.reverse();
        cdrs
    }

    /// Waits (polling, bounded: the reconnect backoff grows up to 30 s) until the database
    /// holds `count` CDRs; they, oldest first.
    fn wait_for_cdrs(&self, count: usize) -> Vec<Cdr> {
        let deadline = std::time::Instant::now() + reconnect::MAX_BACKOFF * 2;
        loop {
            let cdrs = self.cdrs();
            if cdrs.len() >= count || std::time::Instant::now() > deadline {
                return cdrs;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

fn write_cdr(key: &str, confirm: bool) -> StoreCommand {
    StoreCommand::WriteCdr {
        cdr: Box::new(cdr(key, None)),
        confirm,
    }
}

fn keys(cdrs: &[Cdr]) -> Vec<&str> {
    cdrs.iter().map(|c| c.call_key.as_str()).collect()
}

#[test]
fn cdrs_written_while_postgres_is_unreachable_reach_it_exactly_once_and_in_order_when_it_is_back() {
    let outage = Outage::new();
    let writer = outage.writer(outage.spool());
    writer.send(write_cdr("before", true));
    outage.confirmed("before");
    outage.refuse();
    // The first batch meets the broken connection, the others the outage.
    for key in ["c1", "c2", "c3"] {
        writer.send(write_cdr(key, true));
        outage.confirmed(key);
    }
    writer.send(StoreCommand::SetCdrMedia {
        call_key: "c2".into(),
        media: "A:10p/0lost/0.5ms".into(),
    });
    writer.send(StoreCommand::SetCdrMedia {
        call_key: "before".into(),
        media: "A:5p/0lost/0.1ms".into(),
    });
    writer.flush();
    outage.allow();
    // Nothing else is sent: the store thread replays by itself once the backoff allows.
    let cdrs = outage.wait_for_cdrs(4);
    assert_eq!(
        keys(&cdrs),
        ["before", "c1", "c2", "c3"],
        "once each, in order"
    );
    assert_eq!(cdrs[2].media.as_deref(), Some("A:10p/0lost/0.5ms"));
    assert_eq!(cdrs[0].media.as_deref(), Some("A:5p/0lost/0.1ms"));
    // Behind them, in order, what comes after.
    writer.send(write_cdr("after", true));
    outage.confirmed("after");
    drop(writer);
    assert_eq!(keys(&outage.cdrs()), ["before", "c1", "c2", "c3", "after"]);
    assert!(outage.spool().is_empty(), "the spool is emptied");
}

#[test]
fn the_spool_survives_its_writer_and_a_new_one_replays_it_at_start() {
    let outage = Outage::new();
    let writer = outage.writer(outage.spool());
    outage.refuse();
    for key in ["c1", "c2"] {
        writer.send(write_cdr(key, false));
    }
    writer.flush();
    drop(writer);
    let spool = outage.spool();
    assert_eq!(spool.len(), 2, "on disk, not in the dropped writer");
    outage.allow();
    let _writer = outage.writer(spool);
    assert_eq!(keys(&outage.wait_for_cdrs(2)), ["c1", "c2"]);
}

#[test]
fn a_replay_done_twice_writes_nothing_twice() {
    let outage = Outage::new();
    let mut store = outage.store();
    let mut spool = outage.spool();
    let mut with_media = cdr("c2", None);
    with_media.media = Some("A:1p/0lost/0.1ms".into());
    let records = [
        spool::Spooled::Cdr(Box::new(cdr("c1", None))),
        spool::Spooled::Cdr(Box::new(with_media)),
        spool::Spooled::Media {
            call_key: "c1".into(),
            media: "A:2p/0lost/0.2ms".into(),
        },
    ];
    assert_eq!(spool.push(&records).unwrap(), 0);
    spool.replay(&mut store);
    assert!(spool.is_empty());
    // A crash after the database's commit, before the spool's delete: the same again.
    assert_eq!(spool.push(&records).unwrap(), 0);
    spool.replay(&mut store);
    assert!(spool.is_empty());
    let cdrs = outage.cdrs();
    assert_eq!(keys(&cdrs), ["c1", "c2"]);
    assert_eq!(cdrs[0].media.as_deref(), Some("A:2p/0lost/0.2ms"));
    assert_eq!(cdrs[1].media.as_deref(), Some("A:1p/0lost/0.1ms"));
}

#[test]
fn a_spooled_real_cdr_replaces_the_interrupted_one_a_restart_wrote_but_not_the_reverse() {
    let outage = Outage::new();
    let mut store = outage.store();
    store
        .insert_ringing(&context("c1", "201", &["sales"], 1000))
        .unwrap();
    store.write_cdr(&cdr("c2", None)).unwrap();
    drop(store);
    let writer = outage.writer(outage.spool());
    outage.refuse();
    // c1 ends while the database is unreachable; the gateway stops.
    writer.send(write_cdr("c1", true));
    outage.confirmed("c1");
    drop(writer);
    outage.allow();
    // The restart finds c1's context and guesses; a takeover would do the same.
    let mut store = outage.store();
    assert_eq!(store.recover_interrupted("gw1").unwrap().unanswered, 1);
    let guess = store.recent_cdrs(1).unwrap().remove(0);
    assert_eq!(
        (guess.call_key.as_str(), guess.disposition.as_str()),
        ("c1", INTERRUPTED)
    );
    // And a guess for c2 waits in the spool too: c2's real record must stay.
    let mut spool = outage.spool();
    let mut late_guess = guess.clone();
    late_guess.call_key = "c2".into();
    spool
        .push(&[spool::Spooled::Cdr(Box::new(late_guess))])
        .unwrap();
    spool.replay(&mut store);
    let mut cdrs = outage.cdrs();
    cdrs.sort_by(|a, b| a.call_key.cmp(&b.call_key));
    assert_eq!(cdrs, [cdr("c1", None), cdr("c2", None)]);
}

#[test]
fn a_full_spool_loses_what_does_not_fit_without_failing() {
    let outage = Outage::new();
    let writer = outage.writer(outage.spool().with_capacity(2));
    outage.refuse();
    for key in ["c1", "c2", "c3"] {
        writer.send(write_cdr(key, true));
        outage.confirmed(key);
    }
    writer.flush();
    outage.allow();
    assert_eq!(keys(&outage.wait_for_cdrs(2)), ["c1", "c2"]);
    writer.send(write_cdr("c4", true));
    outage.confirmed("c4");
    drop(writer);
    assert_eq!(keys(&outage.cdrs()), ["c1", "c2", "c4"]);
}

#[test]
fn a_spool_file_has_one_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/cdr-spool.db");
    let first = Spool::open(&path).unwrap();
    let error = Spool::open(&path).unwrap_err();
    assert!(
        matches!(&error, StoreError::SpoolInUse { path: p } if *p == path),
        "{error:?}"
    );
    assert!(error.to_string().contains("database.spool"), "{error}");
    drop(first);
    Spool::open(&path).expect("free again");
}

fn after_an_outage_of_the_database_itself_nobody_is_taken_over(db: TestDb) {
    let mut store = db.open();
    let t0 = 1_000_000;
    for node in ["a", "b"] {
        store
            .register_node(node, addr("10.0.0.1:5060"), t0)
            .unwrap();
    }
    store
        .replace_bindings("b", "202", &[binding("sip:202@b", 5000)])
        .unwrap();
    // The database was unreachable for 20 s (takeover after 10 s): a's first heartbeat
    // after it finds b as stale as itself, and leaves it alone.
    let first = store
        .heartbeat("a", addr("10.0.0.1:5060"), t0 + 20_000, 10_000)
        .unwrap();
    assert!(first.taken_over.is_empty(), "{first:?}");
    assert_eq!(store.load_bindings("b", 0).unwrap().len(), 1);
    // b beats again; a's next heartbeat finds it alive.
    store
        .heartbeat("b", addr("10.0.0.1:5060"), t0 + 20_500, 10_000)
        .unwrap();
    let next = store
        .heartbeat("a", addr("10.0.0.1:5060"), t0 + 21_000, 10_000)
        .unwrap();
    assert!(next.taken_over.is_empty(), "{next:?}");
    // A node that then really stops is taken over as usual.
    store
        .heartbeat("a", addr("10.0.0.1:5060"), t0 + 29_000, 10_000)
        .unwrap();
    let later = store
        .heartbeat("a", addr("10.0.0.1:5060"), t0 + 31_000, 10_000)
        .unwrap();
    let taken: Vec<&str> = later.taken_over.iter().map(|t| t.node.as_str()).collect();
    assert_eq!(taken, ["b"]);
}

#[test]
fn the_writer_says_when_the_database_is_back_after_a_lost_connection() {
    let cluster = test_cluster::TestCluster::shared();
    let url = cluster.create_database();
    let pool = PgPool::new(&url).unwrap();
    let answers = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = answers.clone();
    let writer = StoreWriter::start(Store::open_postgres(&pool).unwrap(), move |result| {
        seen.lock().unwrap().push(result);
    });
    let register = |aor: &str| StoreCommand::ReplaceBindings {
        node: "a".into(),
        aor: aor.into(),
        bindings: vec![binding(&format!("sip:{aor}@a"), 500)],
    };
    writer.send(register("201"));
    writer.flush();
    cluster.refuse_connections(&url);
    writer.send(register("202"));
    writer.flush();
    assert!(answers.lock().unwrap().is_empty(), "not back yet");
    cluster.allow_connections(&url);
    // Writes are tried again once the backoff allows (bounded: 100 tries).
    for _ in 0..100 {
        writer.send(register("203"));
        writer.flush();
        if !answers.lock().unwrap().is_empty() {
            break;
        }
        std::thread::sleep(reconnect::FIRST_BACKOFF / 5);
    }
    assert_eq!(*answers.lock().unwrap(), [StoreResult::DatabaseBack]);
}

/// The rows `node` reads with `query`, as (extension, node, dialogs).
fn shared(store: &Store, node: &str, query: &DialogsQuery) -> Vec<(String, String, String)> {
    store
        .shared_dialogs(node, query)
        .unwrap()
        .into_iter()
        .map(|row| (row.extension, row.node, row.dialogs))
        .collect()
}

fn row(extension: &str, node: &str, dialogs: &str) -> (String, String, String) {
    (extension.into(), node.into(), dialogs.into())
}

fn blf_dialogs_are_read_by_the_other_nodes_changed_ones_and_tombstones_too(db: TestDb) {
    let mut store = db.open();
    store.publish_dialogs("a", "201", "x", 1_000).unwrap();
    store.publish_dialogs("a", "202", "y", 2_000).unwrap();
    store.publish_dialogs("b", "201", "z", 1_500).unwrap();
    // b reads a's rows, never its own.
    assert_eq!(
        shared(&store, "b", &DialogsQuery::All),
        [row("201", "a", "x"), row("202", "a", "y")]
    );
    assert_eq!(
        shared(&store, "a", &DialogsQuery::All),
        [row("201", "b", "z")]
    );
    assert_eq!(
        shared(&store, "b", &DialogsQuery::Since(1_000)),
        [row("202", "a", "y")],
        "written after"
    );
    let named = DialogsQuery::Rows(vec![
        ("a".into(), "201".into()),
        ("a".into(), "299".into()),
        ("b".into(), "201".into()),
    ]);
    assert_eq!(
        shared(&store, "b", &named),
        [row("201", "a", "x")],
        "the named rows that exist, not this node's"
    );
    // A row is replaced; no dialogs is a tombstone, which a poll for changes sees.
    store.publish_dialogs("a", "202", "y2", 2_500).unwrap();
    store.publish_dialogs("a", "201", "", 3_000).unwrap();
    assert_eq!(
        shared(&store, "b", &DialogsQuery::Since(2_000)),
        [row("201", "a", ""), row("202", "a", "y2")]
    );
    let updated = store
        .shared_dialogs("b", &DialogsQuery::Since(2_900))
        .unwrap();
    assert_eq!(updated[0].updated_ms, 3_000);
    // A restarting node's rows of an earlier run become tombstones.
    assert_eq!(store.clear_dialogs("a", 4_000).unwrap(), 1);
    assert_eq!(
        shared(&store, "b", &DialogsQuery::Since(3_500)),
        [row("202", "a", "")]
    );
    assert_eq!(store.clear_dialogs("a", 4_500).unwrap(), 0, "once");
    // Heartbeats delete tombstones once every poll has seen them.
    store
        .register_node("b", addr("10.0.0.2:5060"), 4_000)
        .unwrap();
    store
        .heartbeat(
            "b",
            addr("10.0.0.2:5060"),
            3_500 + TOMBSTONE_KEEP_MS,
            10_000,
        )
        .unwrap();
    assert_eq!(
        shared(&store, "a", &DialogsQuery::All),
        [row("201", "b", "z")],
        "kept"
    );
    assert_eq!(
        shared(&store, "b", &DialogsQuery::All),
        [row("202", "a", "")],
        "the newer tombstone is kept"
    );
}

fn subscription(node: &str, target: &str, call_id: &str, expires_at: u64) -> StoredSubscription {
    StoredSubscription {
        node: node.into(),
        subscriber: "203".into(),
        target: target.into(),
        call_id: call_id.into(),
        local_tag: "ours".into(),
        remote_tag: "theirs".into(),
        local_uri: format!("<sip:{target}@127.0.0.1>"),
        remote_uri: "<sip:203@127.0.0.1>".into(),
        remote_target: "sip:203@127.0.0.1:5073".into(),
        peer: Peer {
            protocol: Protocol::Udp,
            addr: "127.0.0.1:5073".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
        },
        cseq: 1,
        version: 1,
        event_id: None,
        expires_at,
    }
}

/// A store with nodes a (10.0.0.1) and b (10.0.0.2) registered at the time returned.
fn nodes_a_and_b(db: &TestDb) -> (Store, u64) {
    let mut store = db.open();
    let t0 = 1_000_000;
    store.register_node("a", addr("10.0.0.1:5060"), t0).unwrap();
    store.register_node("b", addr("10.0.0.2:5060"), t0).unwrap();
    (store, t0)
}

/// Node b heartbeats alone until it takes a over (10 s takeover): its last heartbeat.
fn b_takes_a_over(store: &mut Store, t0: u64) -> Heartbeat {
    store
        .heartbeat("b", addr("10.0.0.2:5060"), t0 + 6_000, 10_000)
        .unwrap();
    let beat = store
        .heartbeat("b", addr("10.0.0.2:5060"), t0 + 12_000, 10_000)
        .unwrap();
    assert_eq!(beat.taken_over.len(), 1, "{beat:?}");
    beat
}

fn a_takeover_deletes_the_dead_node_s_blf_dialogs_and_heartbeats_name_what_others_watch(
    db: TestDb,
) {
    let (mut store, t0) = nodes_a_and_b(&db);
    store.publish_dialogs("a", "201", "x", t0).unwrap();
    store.publish_dialogs("b", "202", "y", t0).unwrap();
    // Keys on a watch 201 and 202, one on b watches 203; one on b has expired.
    let expiry = t0 / 1000 + 600;
    for (node, target, call_id) in [("a", "201", "s1"), ("a", "202", "s2"), ("b", "203", "s3")] {
        store
            .save_subscription(&subscription(node, target, call_id, expiry))
            .unwrap();
    }
    store
        .save_subscription(&subscription("b", "204", "s4", t0 / 1000))
        .unwrap();
    let beat = store
        .heartbeat("a", addr("10.0.0.1:5060"), t0 + 1_000, 10_000)
        .unwrap();
    assert_eq!(
        beat.watched,
        Some(vec!["203".to_string()]),
        "by b, unexpired"
    );
    let beat = store
        .heartbeat("b", addr("10.0.0.2:5060"), t0 + 1_000, 10_000)
        .unwrap();
    assert_eq!(beat.watched, Some(vec!["201".into(), "202".into()]));
    // a falls silent while b beats on: b's takeover deletes a's dialogs with the rest of
    // it; what a's keys watch no longer counts (their rows stay for a's restart).
    let beat = b_takes_a_over(&mut store, t0);
    assert_eq!(beat.watched, Some(vec![]));
    assert_eq!(store.load_subscriptions("a", t0 / 1000).unwrap().len(), 2);
    assert!(shared(&store, "b", &DialogsQuery::All).is_empty());
    assert_eq!(
        shared(&store, "a", &DialogsQuery::All),
        [row("202", "b", "y")],
        "the survivor's stay"
    );
}

fn subscriptions_are_restored_by_the_node_that_holds_them(db: TestDb) {
    let mut store = db.open();
    store
        .save_subscription(&subscription("a", "201", "s1", 500))
        .unwrap();
    store
        .save_subscription(&subscription("b", "202", "s2", 500))
        .unwrap();
    // A row from before subscriptions were kept per node: whoever loads it.
    store
        .db
        .execute(
            "UPDATE subscriptions SET node = NULL WHERE call_id = 's2'",
            &[],
        )
        .unwrap();
    let targets = |node: &str| -> Vec<String> {
        store
            .load_subscriptions(node, 100)
            .unwrap()
            .into_iter()
            .map(|sub| sub.target)
            .collect()
    };
    assert_eq!(targets("a"), ["201", "202"]);
    assert_eq!(targets("b"), ["202"], "not a's");
}

fn the_writer_publishes_and_reads_blf_dialogs(db: TestDb) {
    let mut store = db.open();
    let published = execute(
        &mut store,
        StoreCommand::PublishDialogs {
            row_owner: "a".into(),
            extension: "201".into(),
            dialogs: "x".into(),
            now_ms: 7,
        },
    );
    assert_eq!(
        published,
        Some(StoreResult::DialogsPublished {
            row_owner: "a".into(),
            extension: "201".into(),
            stored: true
        })
    );
    let read = execute(
        &mut store,
        StoreCommand::ReadDialogs {
            node: "b".into(),
            query: DialogsQuery::Since(0),
        },
    );
    assert_eq!(
        read,
        Some(StoreResult::Dialogs {
            query: DialogsQuery::Since(0),
            rows: Some(vec![SharedDialogs {
                extension: "201".into(),
                node: "a".into(),
                dialogs: "x".into(),
                updated_ms: 7,
            }]),
        })
    );
}

#[test]
fn a_listening_node_hears_of_the_other_nodes_blf_writes_but_not_of_its_own() {
    let url = test_cluster::TestCluster::shared().create_database();
    let pool = PgPool::new(&url).unwrap();
    let mut store = Store::open_postgres(&pool).unwrap();
    let (heard, hear) = std::sync::mpsc::channel();
    let listener = BlfListener::start(pool.clone(), "a".into(), move |result| {
        let _ = heard.send(result);
    });
    let changed = |node: &str, extension: &str| StoreResult::DialogsChanged {
        node: node.into(),
        extension: extension.into(),
    };
    // Until the listener listens, writes go unheard: write until one is heard (each
    // round a's own first, then b's).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let first = loop {
        store.publish_dialogs("a", "201", "x", 1).unwrap();
        store.publish_dialogs("b", "202", "y", 1).unwrap();
        if let Ok(result) = hear.recv_timeout(std::time::Duration::from_millis(100)) {
            break result;
        }
        assert!(std::time::Instant::now() < deadline, "nothing heard");
    };
    assert_eq!(first, changed("b", "202"));
    // Listening now: a's own write is not passed on, b's next one is, in order.
    store.publish_dialogs("a", "203", "x", 2).unwrap();
    store.publish_dialogs("b", "204", "", 2).unwrap();
    let next = loop {
        let result = hear
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("b's next write is heard");
        if result != changed("b", "202") {
            break result;
        }
    };
    assert_eq!(next, changed("b", "204"));
    // A write rolled back is never heard; a start's clearing is.
    store.begin_batch().unwrap();
    store.publish_dialogs("b", "205", "z", 3).unwrap();
    store.rollback_batch();
    store.publish_dialogs("b", "206", "z", 3).unwrap();
    assert_eq!(store.clear_dialogs("b", 4).unwrap(), 2, "202 and 206");
    let mut heard: Vec<String> = (0..3)
        .map(
            |_| match hear.recv_timeout(std::time::Duration::from_secs(10)) {
                Ok(StoreResult::DialogsChanged { node, extension }) => {
                    format!("{node} {extension}")
                }
                other => panic!("{other:?}"),
            },
        )
        .collect();
    assert_eq!(heard.remove(0), "b 206", "the rolled-back 205 is not heard");
    heard.sort();
    assert_eq!(heard, ["b 202", "b 206"], "the clearing of both");
    // A key of b's watching an extension is heard of; one of a's own is not.
    store
        .save_subscription(&subscription("a", "207", "s7", 900))
        .unwrap();
    store
        .save_subscription(&subscription("b", "208", "s8", 900))
        .unwrap();
    assert_eq!(
        hear.recv_timeout(std::time::Duration::from_secs(10))
            .unwrap(),
        StoreResult::Watched {
            node: "b".into(),
            extension: "208".into()
        }
    );
    assert!(!listener.has_ended());
    drop(listener);
}

#[test]
fn postgres_over_tls_checks_the_server_certificate_against_the_configured_ca() {
    let cluster = test_cluster::TestCluster::start_tls();
    let in_clear = cluster.create_database();
    let name = in_clear.rsplit('/').next().unwrap().to_string();
    let (url, ca) = cluster.tls_url(&name);
    let pool = PgPool::with_tls_ca(&url, Some(&ca)).unwrap();
    let mut store = Store::open_postgres(&pool).unwrap();
    store
        .replace_bindings("a", "201", &[binding("sip:201@a", 500)])
        .unwrap();
    let encrypted = cluster.encrypted_connections(&name);
    assert!(encrypted >= 1, "the store's connection is over TLS");
    // Checked against the system's CAs instead, the test CA's certificate is refused.
    let refused = Store::open_postgres(&PgPool::new(&url).unwrap())
        .err()
        .expect("an untrusted server certificate is refused")
        .to_string();
    assert!(refused.contains("certificate"), "{refused}");
}

fn the_rows_of_a_node_s_engine_shards_are_its_own(db: TestDb) {
    let (mut store, t0) = nodes_a_and_b(&db);
    // Node a's two shards write rows of their own; so does b's first, and a node whose id
    // merely starts like a's.
    store.publish_dialogs("a", "201", "x", t0).unwrap();
    store.publish_dialogs("a;1", "201", "x1", t0).unwrap();
    store.publish_dialogs("b", "202", "y", t0).unwrap();
    store.publish_dialogs("ab", "203", "w", t0).unwrap();
    assert_eq!(
        shared(&store, "b", &DialogsQuery::All),
        [
            row("201", "a", "x"),
            row("201", "a;1", "x1"),
            row("203", "ab", "w")
        ],
        "b reads both of a's shards"
    );
    assert_eq!(
        shared(&store, "a", &DialogsQuery::All),
        [row("202", "b", "y"), row("203", "ab", "w")],
        "a reads none of its own shards' rows"
    );
    let named = DialogsQuery::Rows(vec![("a;1".into(), "201".into())]);
    assert_eq!(shared(&store, "a", &named), []);
    assert_eq!(shared(&store, "b", &named), [row("201", "a;1", "x1")]);
    // A restart clears what every shard of the node wrote.
    assert_eq!(store.clear_dialogs("a", t0 + 1).unwrap(), 2);
    assert_eq!(
        shared(&store, "b", &DialogsQuery::Since(t0)),
        [row("201", "a", ""), row("201", "a;1", "")]
    );
    // A takeover deletes every shard's rows of the dead node, and only its.
    store.publish_dialogs("a;1", "204", "z", t0 + 2).unwrap();
    b_takes_a_over(&mut store, t0);
    assert_eq!(
        shared(&store, "b", &DialogsQuery::All),
        [row("203", "ab", "w")]
    );
}
