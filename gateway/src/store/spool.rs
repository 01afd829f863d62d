//! The CDR spool: while the PostgreSQL database is unreachable, CDRs (and the media
//! counters added to them) go into a local SQLite file instead of being lost, synced to
//! disk before the engine hears they are written. The store thread, their one owner, writes
//! them to the database once it is reachable again (trying as often as the reconnect
//! backoff allows), oldest first, in transactions of [`REPLAY_CHUNK`] records, and deletes
//! them from the file after each commit. A crash between the commit and the delete writes
//! them again, which changes nothing: a call has one CDR (`ON CONFLICT (call_key)`). While
//! the spool holds records, new CDRs queue behind them (their order is kept). An exclusive
//! lock on the file keeps a second gateway off it. A SQLite store needs no spool: it is
//! local.

use super::calls::{CallStore, Cdr};
use super::reconnect::{FIRST_BACKOFF, MAX_BACKOFF};
use super::sql::{Db, Param, Row};
use super::sqlite::SqliteDb;
use super::writer::{StoreCommand, StoreResult};
use super::{Store, StoreError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Records the spool holds at most; CDRs beyond are lost (logged once, counted).
pub const SPOOL_CAPACITY: u64 = 1_000_000;

/// Records written to the database per transaction of a replay; the store thread serves
/// its queue between two (claims do not wait for a long replay).
const REPLAY_CHUNK: usize = 1000;

/// The spool file's format (`PRAGMA user_version`).
const FORMAT: u64 = 1;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS spooled (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    -- 'cdr': a call's CDR; 'media': the media counters of the call's CDR
    kind TEXT NOT NULL,
    call_key TEXT NOT NULL,
    caller TEXT,
    called TEXT,
    answered_by TEXT,
    pickup_method TEXT,
    billed TEXT,
    ring_start_ms INTEGER,
    pickup_ms INTEGER,
    answer_ms INTEGER,
    end_ms INTEGER,
    duration_ms INTEGER,
    disposition TEXT,
    hangup_cause TEXT,
    node TEXT,
    media TEXT
)";

const COLUMNS: &str = "seq, kind, call_key, caller, called, answered_by, pickup_method, billed, \
     ring_start_ms, pickup_ms, answer_ms, end_ms, duration_ms, disposition, hangup_cause, node, \
     media";

/// A write the spool keeps for the database.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Spooled {
    /// [`StoreCommand::WriteCdr`].
    Cdr(Box<Cdr>),
    /// [`StoreCommand::SetCdrMedia`].
    Media {
        /// The call.
        call_key: String,
        /// Its counters.
        media: String,
    },
}

impl Spooled {
    /// The record of a CDR command; None for any other command.
    fn of(command: StoreCommand) -> Option<Spooled> {
        match command {
            StoreCommand::WriteCdr { cdr, .. } => Some(Spooled::Cdr(cdr)),
            StoreCommand::SetCdrMedia { call_key, media } => {
                Some(Spooled::Media { call_key, media })
            }
            _ => None,
        }
    }

    fn call_key(&self) -> &str {
        match self {
            Spooled::Cdr(cdr) => &cdr.call_key,
            Spooled::Media { call_key, .. } => call_key,
        }
    }

    fn from_row(row: &Row) -> Result<(i64, Spooled), super::sql::ColumnError> {
        let seq = row.int(0)?;
        let call_key = row.text(2)?;
        if row.text(1)? == "media" {
            let media = row.text(16)?;
            return Ok((seq, Spooled::Media { call_key, media }));
        }
        let cdr = Cdr {
            call_key,
            caller: row.text(3)?,
            called: row.text(4)?,
            answered_by: row.opt_text(5)?,
            pickup_method: row.text(6)?,
            billed: row.opt_text(7)?,
            ring_start_ms: row.u64(8)?,
            pickup_ms: row.opt_u64(9)?,
            answer_ms: row.opt_u64(10)?,
            end_ms: row.u64(11)?,
            duration_ms: row.u64(12)?,
            disposition: row.text(13)?,
            hangup_cause: row.text(14)?,
            node: row.text(15)?,
            media: row.opt_text(16)?,
        };
        Ok((seq, Spooled::Cdr(Box::new(cdr))))
    }
}

/// Why records could not be written to the database.
enum Failure {
    /// It is unreachable (refused during the outage, or the connection broke): none of
    /// them counts as written.
    Unreachable,
    /// The transaction failed otherwise (logged where it happened).
    Failed,
}

/// Writes `records` to the database in one transaction. A record that fails for a reason
/// of its own (not the connection) is logged and skipped, as without a spool: kept, it
/// would block every record behind it.
fn write_records(store: &mut Store, records: &[Spooled]) -> Result<(), Failure> {
    let unreachable =
        |store: &Store, error: &StoreError| error.is_unavailable() || store.db.connection_lost();
    if let Err(e) = store.begin_batch() {
        if unreachable(store, &e) {
            return Err(Failure::Unreachable);
        }
        tracing::error!("CDR transaction not begun: {e}");
        return Err(Failure::Failed);
    }
    for record in records {
        let step = match store.db.begin_step() {
            Ok(step) => step,
            Err(e) => {
                store.rollback_batch();
                if unreachable(store, &e) {
                    return Err(Failure::Unreachable);
                }
                tracing::error!("CDR savepoint not set: {e}");
                return Err(Failure::Failed);
            }
        };
        let written = match record {
            Spooled::Cdr(cdr) => store.write_cdr(cdr),
            Spooled::Media { call_key, media } => store.set_cdr_media(call_key, media),
        };
        let ended = store.db.end_step(step, written.is_ok());
        if let Some(e) = written.err().or(ended.err()) {
            if unreachable(store, &e) || !store.in_batch() {
                store.rollback_batch();
                return Err(Failure::Unreachable);
            }
            tracing::error!("CDR of call {} not saved: {e}", record.call_key());
        }
    }
    match store.commit_batch() {
        Ok(()) => Ok(()),
        Err(e) if unreachable(store, &e) => Err(Failure::Unreachable),
        Err(e) => {
            tracing::error!("CDR transaction not committed: {e}");
            Err(Failure::Failed)
        }
    }
}

/// The spool file, and what the store thread knows of the outage it serves.
pub struct Spool {
    db: SqliteDb,
    path: PathBuf,
    /// Records in the file.
    len: u64,
    /// Records it may hold.
    capacity: u64,
    /// No replay before this (a replay failed for another reason than the connection).
    hold: Option<Instant>,
    /// Whether this outage's spooling was logged.
    announced: bool,
    /// CDRs written from the spool since it last was empty.
    replayed: u64,
    /// Records lost since it last was empty (the spool was full, or failed).
    lost: u64,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Spool({}, {} records)", self.path.display(), self.len)
    }
}

impl Spool {
    /// Opens (creating it and its directory if needed) the spool file and locks it for
    /// this process.
    pub fn open(path: &Path) -> Result<Spool, StoreError> {
        let in_use = |error: StoreError| match &error {
            StoreError::Sqlite { source, .. }
                if matches!(
                    source.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                ) =>
            {
                StoreError::SpoolInUse {
                    path: path.to_path_buf(),
                }
            }
            _ => error,
        };
        // No waiting for a lock: its holder keeps it for as long as it runs.
        let file = SqliteDb::open_waiting(path, Duration::ZERO).map_err(in_use)?;
        let db: &dyn Db = &file;
        // Held until closed: a second gateway on the same file fails at once instead of
        // writing the same records too. Every commit is synced to disk: a spooled CDR is
        // confirmed to the engine.
        db.execute_script(
            "PRAGMA locking_mode = EXCLUSIVE; PRAGMA synchronous = FULL; \
             BEGIN EXCLUSIVE; COMMIT;",
        )
        .map_err(in_use)?;
        let format = db
            .first("PRAGMA user_version", &[], |row| row.u64(0))?
            .unwrap_or(0);
        if format > FORMAT {
            return Err(StoreError::TooNew {
                database: path.display().to_string(),
                found: u32::try_from(format).unwrap_or(u32::MAX),
                supported: FORMAT as u32,
            });
        }
        db.execute_script(&format!("{SCHEMA}; PRAGMA user_version = {FORMAT};"))?;
        let len = db
            .first("SELECT COUNT(*) FROM spooled", &[], |row| row.u64(0))?
            .unwrap_or(0);
        if len > 0 {
            tracing::warn!(
                "CDR spool {}: {len} record(s) from an earlier run, written to the database when it is reachable",
                path.display()
            );
        }
        Ok(Spool {
            db: file,
            path: path.to_path_buf(),
            len,
            capacity: SPOOL_CAPACITY,
            hold: None,
            announced: false,
            replayed: 0,
            lost: 0,
        })
    }

    /// A spool that holds at most `capacity` records (tests of a full spool).
    #[cfg(test)]
    pub(super) fn with_capacity(mut self, capacity: u64) -> Spool {
        self.capacity = capacity;
        self
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records waiting for the database.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing waits for the database.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `records` in one transaction, synced to disk; how many did not fit (lost).
    pub(super) fn push(&mut self, records: &[Spooled]) -> Result<usize, StoreError> {
        let room = usize::try_from(self.capacity.saturating_sub(self.len)).unwrap_or(usize::MAX);
        let kept = &records[..records.len().min(room)];
        let db: &dyn Db = &self.db;
        db.atomically(|| {
            for record in kept {
                insert(db, record)?;
            }
            Ok(())
        })?;
        self.len += kept.len() as u64;
        Ok(records.len() - kept.len())
    }

    /// The oldest `limit` records, with their sequence numbers.
    pub(super) fn oldest(&self, limit: usize) -> Result<Vec<(i64, Spooled)>, StoreError> {
        let db: &dyn Db = &self.db;
        db.rows(
            &format!("SELECT {COLUMNS} FROM spooled ORDER BY seq LIMIT ?1"),
            &[Param::Int(i64::try_from(limit).unwrap_or(i64::MAX))],
            Spooled::from_row,
        )
    }

    /// Deletes the records up to `seq` (written to the database).
    pub(super) fn remove_through(&mut self, seq: i64) -> Result<(), StoreError> {
        let db: &dyn Db = &self.db;
        db.execute("DELETE FROM spooled WHERE seq <= ?1", &[Param::Int(seq)])?;
        self.len = db
            .first("SELECT COUNT(*) FROM spooled", &[], |row| row.u64(0))?
            .unwrap_or(0);
        Ok(())
    }

    /// When the store thread should try a replay next: None when the spool is empty;
    /// else when the reconnect backoff allows (at once when the connection is up).
    pub(super) fn next_replay(&self, store: &Store) -> Option<Instant> {
        if self.is_empty() {
            return None;
        }
        let at = store.db.retry_at().unwrap_or_else(Instant::now);
        Some(self.hold.map_or(at, |hold| hold.max(at)))
    }

    /// Replays if it is time ([`Spool::next_replay`]).
    pub(super) fn replay_if_due(&mut self, store: &mut Store) {
        if self
            .next_replay(store)
            .is_some_and(|at| at <= Instant::now())
        {
            self.replay(store);
        }
    }

    /// Writes the oldest records to the database in one transaction and, once it is
    /// committed, deletes them from the spool.
    pub(super) fn replay(&mut self, store: &mut Store) {
        let batch = match self.oldest(REPLAY_CHUNK) {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!(
                    "CDR spool {} not read: {e}; trying again in {} s",
                    self.path.display(),
                    MAX_BACKOFF.as_secs()
                );
                self.hold = Some(Instant::now() + MAX_BACKOFF);
                return;
            }
        };
        let Some(&(last, _)) = batch.last() else {
            // Nothing there after all: nothing to wake up for.
            self.len = 0;
            return;
        };
        let records: Vec<Spooled> = batch.into_iter().map(|(_, record)| record).collect();
        match write_records(store, &records) {
            Ok(()) => {}
            Err(Failure::Unreachable) => {
                // Tried again as the reconnect backoff allows; never in a busy loop.
                if store.db.retry_at().is_none() {
                    self.hold = Some(Instant::now() + FIRST_BACKOFF);
                }
                return;
            }
            Err(Failure::Failed) => {
                self.hold = Some(Instant::now() + MAX_BACKOFF);
                return;
            }
        }
        self.hold = None;
        self.replayed += records
            .iter()
            .filter(|r| matches!(r, Spooled::Cdr(_)))
            .count() as u64;
        if let Err(e) = self.remove_through(last) {
            // Written again on the next try, which changes nothing in the database.
            tracing::error!(
                "CDR spool {}: records written to the database but not deleted here: {e}; trying again in {} s",
                self.path.display(),
                MAX_BACKOFF.as_secs()
            );
            self.hold = Some(Instant::now() + MAX_BACKOFF);
            return;
        }
        if self.is_empty() {
            let lost = match self.lost {
                0 => String::new(),
                n => format!("; {n} record(s) were lost (the spool was full or failed)"),
            };
            tracing::warn!(
                "database {}: {} CDRs written from the spool {}{lost}",
                store.name(),
                self.replayed,
                self.path.display()
            );
            self.announced = false;
            self.replayed = 0;
            self.lost = 0;
        }
    }

    /// The CDR commands of a batch: written to the database, unless it is unreachable or
    /// records wait in the spool (a replay is tried first when it is time); then they go
    /// into the spool, behind the records there. The answers, given once they are
    /// committed to one or the other.
    pub(super) fn write(
        &mut self,
        store: &mut Store,
        commands: Vec<StoreCommand>,
    ) -> Vec<StoreResult> {
        let answers = commands
            .iter()
            .filter_map(|command| match command {
                StoreCommand::WriteCdr { cdr, confirm: true } => Some(StoreResult::CdrWritten {
                    call_key: cdr.call_key.clone(),
                }),
                _ => None,
            })
            .collect();
        let records: Vec<Spooled> = commands.into_iter().filter_map(Spooled::of).collect();
        self.replay_if_due(store);
        if self.is_empty() && write_records(store, &records).is_ok() {
            return answers;
        }
        self.keep(store, &records);
        answers
    }

    /// Puts `records` into the spool (the database is unreachable, or records wait there).
    fn keep(&mut self, store: &Store, records: &[Spooled]) {
        if records.is_empty() {
            return;
        }
        if !self.announced {
            self.announced = true;
            tracing::warn!(
                "database {}: CDRs are kept in the spool {} until they can be written there",
                store.name(),
                self.path.display()
            );
        }
        let lost = match self.push(records) {
            Ok(0) => return,
            Ok(lost) => {
                if self.lost == 0 {
                    tracing::error!(
                        "CDR spool {} is full ({} records): CDRs are lost until the database {} is back",
                        self.path.display(),
                        self.capacity,
                        store.name()
                    );
                }
                lost
            }
            Err(e) => {
                tracing::error!(
                    "{} CDR record(s) lost: the database {} is unreachable and the spool failed: {e}",
                    records.len(),
                    store.name()
                );
                records.len()
            }
        };
        self.lost += lost as u64;
    }
}

fn insert(db: &dyn Db, record: &Spooled) -> Result<(), StoreError> {
    match record {
        Spooled::Media { call_key, media } => db.execute(
            "INSERT INTO spooled (kind, call_key, media) VALUES ('media', ?1, ?2)",
            &[call_key.into(), media.into()],
        ),
        Spooled::Cdr(cdr) => db.execute(
            "INSERT INTO spooled (kind, call_key, caller, called, answered_by, pickup_method, \
             billed, ring_start_ms, pickup_ms, answer_ms, end_ms, duration_ms, disposition, \
             hangup_cause, node, media) \
             VALUES ('cdr', ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            &super::calls::cdr_params(cdr),
        ),
    }
    .map(drop)
}
