//! The one interface the store's logic is written against: statements with positional
//! parameters (`?1`, `?2`, ... as SQLite writes them; the PostgreSQL backend renumbers them
//! `$1`, `$2`, ...), rows of plain values, transactions and savepoints. The SQLite and
//! PostgreSQL backends implement [`Db`]; everything else in the store (registrations, call
//! contexts and the claim, CDRs, subscriptions, migrations) exists once, with the few
//! dialect differences in [`Dialect`].

use super::StoreError;
use std::borrow::Cow;
use std::path::Path;

/// A statement parameter (borrowed: binding clones nothing).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Param<'a> {
    /// SQL NULL.
    Null,
    /// An integer (INTEGER in SQLite, BIGINT in PostgreSQL).
    Int(i64),
    /// A float (REAL, DOUBLE PRECISION).
    Real(f64),
    /// Text.
    Text(&'a str),
    /// Bytes (BLOB, BYTEA).
    Blob(&'a [u8]),
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(text: &'a str) -> Param<'a> {
        Param::Text(text)
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(text: &'a String) -> Param<'a> {
        Param::Text(text)
    }
}

impl<'a> From<Option<&'a String>> for Param<'a> {
    fn from(text: Option<&'a String>) -> Param<'a> {
        text.map_or(Param::Null, |t| Param::Text(t))
    }
}

impl<'a> From<&'a Option<String>> for Param<'a> {
    fn from(text: &'a Option<String>) -> Param<'a> {
        text.as_ref().into()
    }
}

impl From<u64> for Param<'_> {
    fn from(value: u64) -> Self {
        Param::Int(i64::try_from(value).unwrap_or(i64::MAX))
    }
}

impl From<u32> for Param<'_> {
    fn from(value: u32) -> Self {
        Param::Int(value.into())
    }
}

impl From<Option<u64>> for Param<'_> {
    fn from(value: Option<u64>) -> Self {
        value.map_or(Param::Null, Param::from)
    }
}

impl From<Option<f32>> for Param<'_> {
    fn from(value: Option<f32>) -> Self {
        value.map_or(Param::Null, |v| Param::Real(v.into()))
    }
}

/// A column value read back.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// A float.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

/// A column that does not hold what the store wrote there (a row edited by hand, a
/// foreign table).
#[derive(Debug)]
pub(super) struct ColumnError {
    column: usize,
    expected: &'static str,
    found: Value,
}

/// One result row.
#[derive(Debug)]
pub(super) struct Row(pub(super) Vec<Value>);

impl Row {
    fn value(&self, column: usize) -> &Value {
        self.0.get(column).unwrap_or(&Value::Null)
    }

    fn wrong(&self, column: usize, expected: &'static str) -> ColumnError {
        ColumnError {
            column,
            expected,
            found: self.value(column).clone(),
        }
    }

    /// A text column that may be NULL.
    pub(super) fn opt_text(&self, column: usize) -> Result<Option<String>, ColumnError> {
        match self.value(column) {
            Value::Null => Ok(None),
            Value::Text(text) => Ok(Some(text.clone())),
            _ => Err(self.wrong(column, "text")),
        }
    }

    /// A text column.
    pub(super) fn text(&self, column: usize) -> Result<String, ColumnError> {
        self.opt_text(column)?
            .ok_or_else(|| self.wrong(column, "text"))
    }

    /// An integer column that may be NULL.
    pub(super) fn opt_int(&self, column: usize) -> Result<Option<i64>, ColumnError> {
        match self.value(column) {
            Value::Null => Ok(None),
            Value::Int(value) => Ok(Some(*value)),
            _ => Err(self.wrong(column, "an integer")),
        }
    }

    /// An integer column.
    pub(super) fn int(&self, column: usize) -> Result<i64, ColumnError> {
        self.opt_int(column)?
            .ok_or_else(|| self.wrong(column, "an integer"))
    }

    /// A non-negative integer column that may be NULL (negative values read as 0).
    pub(super) fn opt_u64(&self, column: usize) -> Result<Option<u64>, ColumnError> {
        Ok(self.opt_int(column)?.map(|v| u64::try_from(v).unwrap_or(0)))
    }

    /// A non-negative integer column (negative values read as 0).
    pub(super) fn u64(&self, column: usize) -> Result<u64, ColumnError> {
        Ok(u64::try_from(self.int(column)?).unwrap_or(0))
    }

    /// A 32-bit counter column.
    pub(super) fn u32(&self, column: usize) -> Result<u32, ColumnError> {
        u32::try_from(self.int(column)?).map_err(|_| self.wrong(column, "a 32-bit counter"))
    }

    /// A float column that may be NULL.
    pub(super) fn opt_real(&self, column: usize) -> Result<Option<f64>, ColumnError> {
        match self.value(column) {
            Value::Null => Ok(None),
            Value::Real(value) => Ok(Some(*value)),
            Value::Int(value) => Ok(Some(*value as f64)),
            _ => Err(self.wrong(column, "a number")),
        }
    }

    /// A bytes column.
    pub(super) fn blob(&self, column: usize) -> Result<Vec<u8>, ColumnError> {
        match self.value(column) {
            Value::Blob(bytes) => Ok(bytes.clone()),
            Value::Text(text) => Ok(text.clone().into_bytes()),
            _ => Err(self.wrong(column, "bytes")),
        }
    }
}

/// What differs between the SQL of the two engines beyond what [`Db`] hides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    /// The embedded default.
    Sqlite,
    /// The shared database of several nodes.
    Postgres,
}

impl Dialect {
    /// Appended to the claim's choice of a ringing call. PostgreSQL: the chosen row is
    /// locked, and a row another picker's claim holds is skipped (its claim decides it), so
    /// concurrent claims on different connections each take a different call or nothing.
    /// SQLite has one writer at a time: the claim's transaction already holds the lock.
    pub(super) fn claim_lock(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE OF c SKIP LOCKED",
        }
    }

    /// Whether a failed statement aborts the whole transaction (PostgreSQL) rather than
    /// just itself (SQLite): the writer then runs each command of a batch in a savepoint.
    pub(super) fn errors_abort_transaction(self) -> bool {
        self == Dialect::Postgres
    }

    /// A migration as this engine runs it. Migrations are written in SQLite's types; the
    /// PostgreSQL spelling of each is mechanical (every integer is 64-bit there, as in
    /// SQLite).
    pub(super) fn schema(self, sql: &str) -> Cow<'_, str> {
        if self == Dialect::Sqlite {
            return Cow::Borrowed(sql);
        }
        let sql = sql.replace(
            "INTEGER PRIMARY KEY AUTOINCREMENT",
            "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        );
        Cow::Owned(replace_words(
            &sql,
            &[
                ("INTEGER", "BIGINT"),
                ("REAL", "DOUBLE PRECISION"),
                ("BLOB", "BYTEA"),
            ],
        ))
    }
}

/// Replaces whole words (identifier characters around them are not part of them).
fn replace_words(sql: &str, words: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(sql.len() + 32);
    let mut rest = sql;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let (word, after) = if end == 0 {
            let len = rest.chars().next().map_or(1, char::len_utf8);
            rest.split_at(len)
        } else {
            rest.split_at(end)
        };
        match words.iter().find(|(from, _)| *from == word) {
            Some((_, to)) => out.push_str(to),
            None => out.push_str(word),
        }
        rest = after;
    }
    out
}

/// A connection to the store's database: the SQLite file or a PostgreSQL server.
pub(super) trait Db: Send {
    /// Which SQL this engine speaks.
    fn dialect(&self) -> Dialect;
    /// The database as messages name it (file path or URL without password).
    fn name(&self) -> &str;
    /// Runs one statement; the number of rows it changed.
    fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<usize, StoreError>;
    /// Runs one statement that returns rows (SELECT, or a write with RETURNING).
    fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError>;
    /// Runs several statements without parameters (migrations).
    fn execute_script(&self, sql: &str) -> Result<(), StoreError>;
    /// Begins a write transaction (SQLite: taking the write lock at once).
    fn begin(&self) -> Result<(), StoreError>;
    /// Commits the open transaction (rolling it back if the commit fails).
    fn commit(&self) -> Result<(), StoreError>;
    /// Rolls back the open transaction, if any.
    fn rollback(&self);
    /// Whether a transaction is open.
    fn in_transaction(&self) -> bool;
    /// The write-ahead log whose sync makes commits durable; None when each commit is
    /// durable as it returns (SQLite not in WAL mode with [`Db::set_full_sync`]; PostgreSQL).
    fn wal_path(&self) -> Option<&Path> {
        None
    }
    /// Whether commits are synced to disk before they return (SQLite's `synchronous`;
    /// PostgreSQL's commits always are).
    fn set_full_sync(&self, _full: bool) -> Result<(), StoreError> {
        Ok(())
    }
    /// Whether the connection to the database is known to be lost (PostgreSQL; a local
    /// file never is): what was written in its open transaction is gone.
    fn connection_lost(&self) -> bool {
        false
    }
    /// When a lost connection may be tried again (the reconnect backoff); None when it is
    /// not lost.
    fn retry_at(&self) -> Option<std::time::Instant> {
        None
    }
    /// Maps a row that does not decode to an error naming the database.
    fn column_error(&self, error: ColumnError) -> StoreError {
        StoreError::Column {
            database: self.name().to_string(),
            column: error.column,
            expected: error.expected,
            found: format!("{:?}", error.found),
        }
    }
}

impl dyn Db + '_ {
    /// The rows of a query, decoded by `decode`.
    pub(super) fn rows<T>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        decode: impl Fn(&Row) -> Result<T, ColumnError>,
    ) -> Result<Vec<T>, StoreError> {
        self.query(sql, params)?
            .iter()
            .map(|row| decode(row).map_err(|e| self.column_error(e)))
            .collect()
    }

    /// The first row of a query, decoded, if there is one.
    pub(super) fn first<T>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        decode: impl Fn(&Row) -> Result<T, ColumnError>,
    ) -> Result<Option<T>, StoreError> {
        Ok(self.rows(sql, params, decode)?.into_iter().next())
    }

    /// Runs `work` atomically: in a savepoint inside an open transaction, else in a
    /// transaction of its own. On error its writes are undone and the error returned.
    pub(super) fn atomically<T>(
        &self,
        work: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let step = self.begin_step()?;
        let result = work();
        let ended = self.end_step(step, result.is_ok());
        let value = result?;
        ended?;
        Ok(value)
    }

    /// The start of an atomic step ([`Self::atomically`] for work that needs the store
    /// mutably).
    pub(super) fn begin_step(&self) -> Result<Step, StoreError> {
        if self.in_transaction() {
            self.execute("SAVEPOINT store_step", &[])?;
            Ok(Step::Savepoint)
        } else {
            self.begin()?;
            Ok(Step::Transaction)
        }
    }

    /// The end of an atomic step: its writes kept, or undone.
    pub(super) fn end_step(&self, step: Step, keep: bool) -> Result<(), StoreError> {
        match (step, keep) {
            (Step::Savepoint, true) => self.execute("RELEASE store_step", &[]).map(drop),
            (Step::Savepoint, false) => {
                // Fails when the engine already rolled the whole transaction back (the
                // writer notices that through in_transaction).
                let _ = self
                    .execute("ROLLBACK TO store_step", &[])
                    .and_then(|_| self.execute("RELEASE store_step", &[]));
                Ok(())
            }
            (Step::Transaction, true) => self.commit(),
            (Step::Transaction, false) => {
                self.rollback();
                Ok(())
            }
        }
    }
}

/// How an atomic step began.
#[must_use]
pub(super) enum Step {
    /// A savepoint of the open transaction.
    Savepoint,
    /// A transaction of its own.
    Transaction,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_types_are_spelled_for_postgres_word_by_word() {
        let sql = "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER, q REAL, \
                   b BLOB, realm TEXT, blobs_at INTEGER);";
        assert_eq!(
            Dialect::Postgres.schema(sql),
            "CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, n BIGINT, \
             q DOUBLE PRECISION, b BYTEA, realm TEXT, blobs_at BIGINT);"
        );
        assert_eq!(Dialect::Sqlite.schema(sql), sql);
    }
}
