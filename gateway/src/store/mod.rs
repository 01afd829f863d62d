//! Persistent state in SQLite (rusqlite, bundled): versioned schema migrations, WAL, and a
//! writer thread so SIP handling never waits for the disk.

mod calls;
mod migrations;
mod subscriptions;
mod writer;

pub use calls::{
    Answer, CallContext, CallStore, Cdr, ClaimOutcome, ClaimRequest, FailedPickup, Interrupted,
    LegIds, PickupMethod, PickupTarget, INTERRUPTED,
};
pub use subscriptions::StoredSubscription;
pub use writer::{execute, StoreCommand, StoreResult, StoreWriter};

use crate::registrar::Binding;
use crate::transport::{Peer, Protocol};
use rusqlite::{params, Connection};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// A database problem, with the file and what to check.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory for the database could not be created.
    #[error("cannot create directory {dir} for the database: {source} (check permissions and free space)")]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// SQLite failed.
    #[error("database {path}: {source} (check that the file is a gateway database, is writable, and the disk is not full)")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// The file was written by a newer gateway.
    #[error("database {path} has schema version {found}, newer than this gateway's {supported}: upgrade the gateway or use another file")]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Version in the file.
        found: u32,
        /// Newest version this build knows.
        supported: u32,
    },
}

/// Maps SQLite errors to [`StoreError`] naming the database file; borrows only the path, so
/// it can be used while the connection is borrowed for a transaction.
fn sqlite_error(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + Copy + '_ {
    move |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs a statement through the connection's statement cache (the hot writes repeat a
/// handful of statements thousands of times a second).
fn cached_execute(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// The gateway's SQLite database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The write-ahead log SQLite writes (named after the resolved database path), when the
    /// database is in WAL mode.
    wal: Option<PathBuf>,
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                dir: dir.to_path_buf(),
                source,
            })?;
        }
        let sqlite = sqlite_error(path);
        let mut conn = Connection::open(path).map_err(sqlite)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(sqlite)?;
        let wal = match (mode.eq_ignore_ascii_case("wal"), conn.path()) {
            (true, Some(db)) if !db.is_empty() => Some(PathBuf::from(format!("{db}-wal"))),
            _ => {
                tracing::warn!(
                    "{}: journal mode {mode}, not WAL: every CDR commit is synced in the store thread",
                    path.display()
                );
                None
            }
        };
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sqlite)?;
        migrations::apply(&mut conn, path)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            wal,
        })
    }

    /// Starts a batch: the writer applies many commands in one IMMEDIATE transaction with one
    /// commit instead of one each. Commands inside run as savepoints of the batch. The commit
    /// is not synced to disk here: the writer's sync thread does that for CDRs, off the path
    /// of pickup claims.
    pub fn begin_batch(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.error(e))
    }

    /// Rolls back whatever transaction is open (a batch that can no longer commit).
    pub fn rollback_batch(&mut self) {
        if self.in_batch() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// Commits the batch [`Store::begin_batch`] started (rolling it back if the commit fails).
    pub fn commit_batch(&mut self) -> Result<(), StoreError> {
        let committed = self.conn.execute_batch("COMMIT").map_err(|e| self.error(e));
        if committed.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        committed
    }

    /// The write-ahead log whose sync makes commits durable; None when the database is not
    /// in WAL mode (commits must then be synced as they are made: [`Store::set_full_sync`]).
    pub fn wal_path(&self) -> Option<&Path> {
        self.wal.as_deref()
    }

    /// Whether each commit is synced to disk before it returns (`synchronous=FULL`) or not
    /// (`NORMAL`, the default: durable once the WAL is synced).
    pub fn set_full_sync(&mut self, full: bool) -> Result<(), StoreError> {
        let mode = if full { "FULL" } else { "NORMAL" };
        self.conn
            .pragma_update(None, "synchronous", mode)
            .map_err(|e| self.error(e))
    }

    /// Whether a batch is open (commands then run as savepoints of it).
    pub fn in_batch(&self) -> bool {
        !self.conn.is_autocommit()
    }

    fn error(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Replaces every stored binding of `aor` with `bindings`.
    pub fn replace_bindings(&mut self, aor: &str, bindings: &[Binding]) -> Result<(), StoreError> {
        let sqlite = sqlite_error(&self.path);
        let tx = self.conn.savepoint().map_err(sqlite)?;
        cached_execute(
            &tx,
            "DELETE FROM registrations WHERE aor = ?1",
            params![aor],
        )
        .map_err(sqlite)?;
        for b in bindings {
            cached_execute(
                &tx,
                "INSERT INTO registrations (aor, contact, expires_at, call_id, cseq, source_proto, source_addr, q, local_addr) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    aor,
                    b.contact,
                    i64::try_from(b.expires_at).unwrap_or(i64::MAX),
                    b.call_id,
                    b.cseq,
                    b.source.protocol.uri_param(),
                    b.source.addr.to_string(),
                    b.q.map(f64::from),
                    b.source.local.to_string(),
                ],
            )
            .map_err(sqlite)?;
        }
        tx.commit().map_err(sqlite)
    }

    /// Every unexpired binding; expired rows are deleted on the way.
    pub fn load_bindings(&self, now: u64) -> Result<Vec<(String, Binding)>, StoreError> {
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        self.conn
            .execute(
                "DELETE FROM registrations WHERE expires_at <= ?1",
                params![now],
            )
            .map_err(|e| self.error(e))?;
        let mut statement = self
            .conn
            .prepare(
                "SELECT aor, contact, expires_at, call_id, cseq, source_proto, source_addr, q, local_addr \
                 FROM registrations ORDER BY aor, contact",
            )
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], |row| {
                let proto: String = row.get(5)?;
                let addr: String = row.get(6)?;
                let expires_at: i64 = row.get(2)?;
                let q: Option<f64> = row.get(7)?;
                let local: Option<String> = row.get(8)?;
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    expires_at,
                    row.get::<_, String>(3)?,
                    row.get::<_, u32>(4)?,
                    (proto, addr, local),
                    q,
                ))
            })
            .map_err(|e| self.error(e))?;
        let mut bindings = Vec::new();
        for row in rows {
            let (aor, contact, expires_at, call_id, cseq, (proto, addr, local), q) =
                row.map_err(|e| self.error(e))?;
            // A row that does not parse (edited by hand) is skipped, not fatal.
            let Ok(addr) = addr.parse::<SocketAddr>() else {
                tracing::warn!(
                    "{}: skipping registration of {aor} with bad address {addr:?}",
                    self.path.display()
                );
                continue;
            };
            bindings.push((
                aor,
                Binding {
                    contact,
                    expires_at: u64::try_from(expires_at).unwrap_or(0),
                    call_id,
                    cseq,
                    source: stored_peer(&proto, addr, local.as_deref()),
                    q: q.map(|q| q as f32),
                },
            ));
        }
        Ok(bindings)
    }
}

/// A peer as a row keeps it: protocol, address and the local address it reached. Rows
/// written before the local address was kept have none: it is left unspecified, and the
/// runtime asks the kernel which address reaches the peer
/// (`transport::addressing::fill_local`).
fn stored_peer(protocol: &str, addr: SocketAddr, local: Option<&str>) -> Peer {
    let protocol = if protocol == "tcp" {
        Protocol::Tcp
    } else {
        Protocol::Udp
    };
    let local = local.and_then(|l| l.parse().ok()).unwrap_or_else(|| {
        let unspecified: IpAddr = match addr {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        SocketAddr::new(unspecified, 0)
    });
    Peer {
        protocol,
        addr,
        local,
    }
}

#[cfg(test)]
mod tests;
