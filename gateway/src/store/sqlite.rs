//! The embedded backend: one SQLite file (rusqlite, bundled), in WAL mode, with a statement
//! cache (the hot writes repeat a handful of statements thousands of times a second).

use super::sql::{Db, Dialect, Param, Row, Value};
use super::StoreError;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::Connection;
use std::path::{Path, PathBuf};

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Param::Null => ValueRef::Null,
            Param::Int(v) => ValueRef::Integer(v),
            Param::Real(v) => ValueRef::Real(v),
            Param::Text(text) => ValueRef::Text(text.as_bytes()),
            Param::Blob(bytes) => ValueRef::Blob(bytes),
        }))
    }
}

/// A SQLite database file.
pub(super) struct SqliteDb {
    conn: Connection,
    path: PathBuf,
    name: String,
    /// The write-ahead log SQLite writes (named after the resolved database path), when the
    /// database is in WAL mode.
    wal: Option<PathBuf>,
}

impl SqliteDb {
    /// Opens (creating it and its directory if needed) the file, in WAL mode.
    pub(super) fn open(path: &Path) -> Result<SqliteDb, StoreError> {
        SqliteDb::open_waiting(path, std::time::Duration::from_secs(5))
    }

    /// [`SqliteDb::open`], waiting up to `busy` for another connection's lock.
    pub(super) fn open_waiting(
        path: &Path,
        busy: std::time::Duration,
    ) -> Result<SqliteDb, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                dir: dir.to_path_buf(),
                source,
            })?;
        }
        let error = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(error)?;
        conn.busy_timeout(busy).map_err(error)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(error)?;
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
            .map_err(error)?;
        Ok(SqliteDb {
            conn,
            path: path.to_path_buf(),
            name: path.display().to_string(),
            wal,
        })
    }

    fn error(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }
}

fn value(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(v) => Value::Int(v),
        ValueRef::Real(v) => Value::Real(v),
        ValueRef::Text(text) => Value::Text(String::from_utf8_lossy(text).into_owned()),
        ValueRef::Blob(bytes) => Value::Blob(bytes.to_vec()),
    }
}

impl Db for SqliteDb {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<usize, StoreError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut statement| statement.execute(rusqlite::params_from_iter(params)))
            .map_err(|e| self.error(e))
    }

    fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let run = || -> rusqlite::Result<Vec<Row>> {
            let mut statement = self.conn.prepare_cached(sql)?;
            let columns = statement.column_count();
            let mut rows = statement.query(rusqlite::params_from_iter(params))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(Row((0..columns)
                    .map(|i| row.get_ref(i).map(value))
                    .collect::<Result<_, _>>()?));
            }
            Ok(out)
        };
        run().map_err(|e| self.error(e))
    }

    fn execute_script(&self, sql: &str) -> Result<(), StoreError> {
        self.conn.execute_batch(sql).map_err(|e| self.error(e))
    }

    fn begin(&self) -> Result<(), StoreError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.error(e))
    }

    fn commit(&self) -> Result<(), StoreError> {
        let committed = self.conn.execute_batch("COMMIT").map_err(|e| self.error(e));
        if committed.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        committed
    }

    fn rollback(&self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    fn in_transaction(&self) -> bool {
        !self.conn.is_autocommit()
    }

    fn wal_path(&self) -> Option<&Path> {
        self.wal.as_deref()
    }

    fn set_full_sync(&self, full: bool) -> Result<(), StoreError> {
        let mode = if full { "FULL" } else { "NORMAL" };
        self.conn
            .pragma_update(None, "synchronous", mode)
            .map_err(|e| self.error(e))
    }
}
