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
    let writer = StoreWriter::start(Store::open(&path).unwrap());
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
