//! Versioned schema migrations: each entry brings the schema from version N to N+1. They
//! are written in SQLite's types and run on PostgreSQL as [`Dialect::schema`] spells them.

use super::sql::{Db, Dialect};
use super::StoreError;

/// The migrations, in order. Never edit a released one; append a new one.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE registrations (
        aor TEXT NOT NULL,
        contact TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        call_id TEXT NOT NULL,
        cseq INTEGER NOT NULL,
        source_proto TEXT NOT NULL,
        source_addr TEXT NOT NULL,
        q REAL,
        PRIMARY KEY (aor, contact)
    );
    CREATE INDEX registrations_expiry ON registrations (expires_at);",
    "CREATE TABLE call_contexts (
        call_key TEXT PRIMARY KEY,
        node TEXT NOT NULL,
        state TEXT NOT NULL,
        caller_display TEXT,
        caller_number TEXT NOT NULL,
        caller_uri TEXT NOT NULL,
        caller_offer BLOB NOT NULL,
        called TEXT NOT NULL,
        ring_started_ms INTEGER NOT NULL,
        claimed_by TEXT,
        claimed_at_ms INTEGER
    );
    CREATE INDEX call_contexts_ringing ON call_contexts (state, node, ring_started_ms);
    CREATE TABLE call_groups (
        call_key TEXT NOT NULL,
        group_name TEXT NOT NULL,
        PRIMARY KEY (call_key, group_name)
    );
    CREATE TABLE call_legs (
        call_key TEXT NOT NULL,
        call_id TEXT NOT NULL,
        local_tag TEXT NOT NULL,
        remote_tag TEXT,
        PRIMARY KEY (call_key, call_id)
    );
    CREATE INDEX call_legs_call_id ON call_legs (call_id);
    CREATE TABLE cdrs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        call_key TEXT NOT NULL,
        caller TEXT NOT NULL,
        called TEXT NOT NULL,
        answered_by TEXT,
        pickup_method TEXT NOT NULL,
        billed TEXT,
        ring_start_ms INTEGER NOT NULL,
        pickup_ms INTEGER,
        answer_ms INTEGER,
        end_ms INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        disposition TEXT NOT NULL,
        hangup_cause TEXT NOT NULL,
        node TEXT NOT NULL
    );",
    // 3: media counters of anchored calls.
    "ALTER TABLE cdrs ADD COLUMN media TEXT;",
    // 4: what a crash must not lose: how a claimed call is being picked up, who answered a
    // call and who pays (written at the answer), the last time it was known to be up; and
    // the pickups that failed, for the auditors.
    "ALTER TABLE call_contexts ADD COLUMN claim_method TEXT;
    ALTER TABLE call_contexts ADD COLUMN answer_ms INTEGER;
    ALTER TABLE call_contexts ADD COLUMN answered_by TEXT;
    ALTER TABLE call_contexts ADD COLUMN billed TEXT;
    ALTER TABLE call_contexts ADD COLUMN pickup_method TEXT;
    ALTER TABLE call_contexts ADD COLUMN pickup_ms INTEGER;
    ALTER TABLE call_contexts ADD COLUMN up_ms INTEGER;
    CREATE TABLE failed_pickups (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        call_key TEXT NOT NULL,
        picker TEXT NOT NULL,
        method TEXT NOT NULL,
        claimed_ms INTEGER NOT NULL,
        failed_ms INTEGER NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX failed_pickups_call ON failed_pickups (call_key);",
    // 5: the gateway's address each registration reached (requests to the contact leave
    // from it and name it); NULL for rows written before.
    "ALTER TABLE registrations ADD COLUMN local_addr TEXT;",
    // 6: dialog subscriptions (BLF keys), kept across a restart.
    "CREATE TABLE subscriptions (
        call_id TEXT NOT NULL,
        local_tag TEXT NOT NULL,
        subscriber TEXT NOT NULL,
        target TEXT NOT NULL,
        remote_tag TEXT NOT NULL,
        local_uri TEXT NOT NULL,
        remote_uri TEXT NOT NULL,
        remote_target TEXT NOT NULL,
        peer_proto TEXT NOT NULL,
        peer_addr TEXT NOT NULL,
        peer_local TEXT,
        cseq INTEGER NOT NULL,
        version INTEGER NOT NULL,
        event_id TEXT,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (call_id, local_tag)
    );",
    // 7: several nodes on one database: each node's heartbeat and advertised SIP address,
    // and the node each registration came through (NULL for rows written before: they
    // belong to whichever node loads them).
    "CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        sip_addr TEXT NOT NULL,
        heartbeat_ms INTEGER NOT NULL
    );
    ALTER TABLE registrations ADD COLUMN node TEXT;
    CREATE INDEX registrations_node ON registrations (node);",
    // 8: one CDR per call. A CDR written again (replayed from the spool after an outage,
    // when the first write may have committed after all) must not count twice, and a
    // node's real record replaces the `interrupted` one a takeover or restart wrote
    // meanwhile (`ON CONFLICT (call_key)` in the insert). Duplicates from before: the
    // first row stays.
    "DELETE FROM cdrs WHERE id NOT IN (SELECT MIN(id) FROM cdrs GROUP BY call_key);
    CREATE UNIQUE INDEX cdrs_call_key ON cdrs (call_key);",
    // 9: BLF across nodes. Each node's dialogs of each extension a key watches (the
    // engine's text format, `engine/blf/wire.rs`; an empty text is a tombstone, kept a
    // while so that nodes polling for changes see the dialogs go), written as they change
    // and read by the other nodes; and the node each subscription is kept by (NULL for
    // rows written before: they belong to whichever node loads them).
    "CREATE TABLE blf_dialogs (
        extension TEXT NOT NULL,
        node TEXT NOT NULL,
        dialogs TEXT NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (extension, node)
    );
    CREATE INDEX blf_dialogs_updated ON blf_dialogs (updated_ms);
    ALTER TABLE subscriptions ADD COLUMN node TEXT;
    CREATE INDEX subscriptions_target ON subscriptions (target);",
    // 10: the User-Agent of each registration, for the operator's status view (NULL for
    // rows written before, and for phones that send none).
    "ALTER TABLE registrations ADD COLUMN user_agent TEXT;",
];

/// Newest schema version this build knows.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Any constant naming the migrations' advisory lock in PostgreSQL.
const MIGRATION_LOCK: i64 = 0x6761_7465_7761_7931;

/// Applies the missing migrations in one transaction; the versions before and after. In
/// PostgreSQL, gateways starting at once on one database take turns (an advisory lock), so
/// each migration runs once.
pub(super) fn apply(db: &dyn Db) -> Result<(u32, u32), StoreError> {
    db.atomically(|| {
        if db.dialect() == Dialect::Postgres {
            db.execute(
                "SELECT pg_advisory_xact_lock(?1)",
                &[super::sql::Param::Int(MIGRATION_LOCK)],
            )?;
        }
        db.execute_script(
            &db.dialect()
                .schema("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"),
        )?;
        let current = db
            .first(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version",
                &[],
                |row| row.u64(0),
            )?
            .unwrap_or(0);
        let current = u32::try_from(current).unwrap_or(u32::MAX);
        if current > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                database: db.name().to_string(),
                found: current,
                supported: SCHEMA_VERSION,
            });
        }
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            db.execute_script(&db.dialect().schema(migration))?;
            db.execute("DELETE FROM schema_version", &[])?;
            db.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                &[(index as u32 + 1).into()],
            )?;
        }
        Ok((current, SCHEMA_VERSION))
    })
}
