//! SQLite store: round trip, restart, migrations, expiry, writer thread.

use super::*;

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
    }
}

#[test]
fn bindings_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/dir/gw.db");
    let mut store = Store::open(&path).unwrap();
    store
        .replace_bindings(
            "201",
            &[binding("sip:201@a", 500), binding("sip:201@b", 50)],
        )
        .unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    let loaded = store.load_bindings(100).unwrap();
    assert_eq!(loaded, [("201".to_string(), binding("sip:201@a", 500))]);
    assert_eq!(
        store.load_bindings(100).unwrap().len(),
        1,
        "the expired row is gone"
    );
}

#[test]
fn replace_overwrites_and_empty_removes() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("gw.db")).unwrap();
    store
        .replace_bindings("201", &[binding("sip:201@a", 500)])
        .unwrap();
    store
        .replace_bindings("201", &[binding("sip:201@c", 600)])
        .unwrap();
    let loaded = store.load_bindings(0).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].1.contact, "sip:201@c");
    store.replace_bindings("201", &[]).unwrap();
    assert!(store.load_bindings(0).unwrap().is_empty());
}

#[test]
fn migrations_are_idempotent_and_newer_schemas_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.db");
    drop(Store::open(&path).unwrap());
    drop(Store::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    let version: u32 = conn
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, migrations::SCHEMA_VERSION);
    conn.execute("UPDATE schema_version SET version = 99", [])
        .unwrap();
    drop(conn);
    let error = Store::open(&path).err().unwrap().to_string();
    assert!(error.contains("schema version 99"), "{error}");
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

#[test]
fn writer_thread_applies_commands_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.db");
    let writer = StoreWriter::start(Store::open(&path).unwrap(), |_| {});
    for expires in [100, 200, 300] {
        writer.send(StoreCommand::ReplaceBindings {
            aor: "202".into(),
            bindings: vec![binding("sip:202@x", expires)],
        });
    }
    writer.flush();
    let loaded = Store::open(&path).unwrap().load_bindings(0).unwrap();
    assert_eq!(loaded[0].1.expires_at, 300);
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
    }
}

fn claimed_key(outcome: ClaimOutcome) -> String {
    match outcome {
        ClaimOutcome::Claimed(context) => context.call_key,
        other => panic!("expected a claim, got {other:?}"),
    }
}

#[test]
fn group_pickup_claims_the_oldest_eligible_call_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("gw.db")).unwrap();
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

#[test]
fn directed_pickup_checks_groups_and_leg_lookup_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("gw.db")).unwrap();
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
                .claim(&claim(
                    "202",
                    &["sales"],
                    PickupTarget::Leg("leg-c1".into())
                ))
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

#[test]
fn two_connections_claiming_at_once_give_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.db");
    let mut store = Store::open(&path).unwrap();
    for i in 0..20 {
        store
            .insert_ringing(&context(&format!("c{i}"), "201", &["sales"], 1000 + i))
            .unwrap();
    }
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut store = Store::open(&path).unwrap();
                let mut won = Vec::new();
                for _ in 0..20 {
                    if let ClaimOutcome::Claimed(c) = store
                        .claim(&claim(&format!("20{w}"), &["sales"], PickupTarget::Group))
                        .unwrap()
                    {
                        won.push(c.call_key);
                    }
                }
                won
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

#[test]
fn cdrs_are_listed_newest_first_with_their_media() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("gw.db")).unwrap();
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

#[test]
fn a_batch_is_one_transaction_whose_commands_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.db");
    let mut store = Store::open(&path).unwrap();
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
    // What the writer's sync thread syncs to make the commit durable: the write-ahead log.
    assert!(store.wal_path().unwrap().ends_with("gw.db-wal"));
    // Begun but never committed (the process died): none of it is stored.
    store.begin_batch().unwrap();
    store
        .insert_ringing(&context("c2", "203", &["sales"], 2000))
        .unwrap();
    drop(store);
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.recent_cdrs(10).unwrap().len(), 1);
    assert_eq!(
        store
            .claim(&claim("204", &["sales"], PickupTarget::Group))
            .unwrap(),
        ClaimOutcome::NothingRinging,
        "c1 stays claimed and c2 was never stored"
    );
}

#[test]
fn the_writer_answers_only_after_the_batch_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.db");
    let answers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = answers.clone();
    let check_path = path.clone();
    let writer = StoreWriter::start(Store::open(&path).unwrap(), move |result| {
        // Another connection sees everything the answer is about: it was committed first.
        let cdrs = Store::open(&check_path).unwrap().recent_cdrs(10).unwrap();
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

#[test]
fn a_cdr_replaces_its_call_context_and_failed_pickups_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("gw.db")).unwrap();
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

#[test]
fn calls_left_by_a_crash_get_interrupted_cdrs_billed_to_their_last_mark() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.db");
    let mut store = Store::open(&path).unwrap();
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
    let mut store = Store::open(&path).unwrap();
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
