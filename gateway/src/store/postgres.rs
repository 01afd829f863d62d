//! The shared backend: a PostgreSQL server (tokio-postgres through its blocking client,
//! `postgres`, which runs each connection on a small runtime of its own, so the store
//! thread stays an ordinary thread). Connections come from a small pool; statements are
//! prepared once per connection.
//!
//! TLS to the server with `sslmode=require` (rustls with ring, TLS 1.2 or 1.3): the server's certificate is checked against `database.tls_ca` or the system's
//! CAs, and its name against the URL's host. The default `prefer` and `disable` connect in
//! clear (a unix socket, or a trusted network).

use super::reconnect::{Notice, Reconnect, MAX_BACKOFF};
use super::sql::{Db, Dialect, Param, Row, Value};
use super::StoreError;
use crate::config::DatabaseConfig;
use postgres::config::{Host, SslMode};
use postgres::types::{IsNull, ToSql, Type};
use postgres::{Client, NoTls, Statement};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::error::Error;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How long a connection attempt may take unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections kept open for reuse.
const MAX_IDLE: usize = 8;

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match *self {
            Param::Null => Ok(IsNull::Yes),
            Param::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
                Type::FLOAT8 => (v as f64).to_sql(ty, out),
                Type::BOOL => (v != 0).to_sql(ty, out),
                _ => Err(format!("an integer for a parameter of type {ty}").into()),
            },
            Param::Real(v) => match *ty {
                Type::FLOAT8 => v.to_sql(ty, out),
                Type::FLOAT4 => (v as f32).to_sql(ty, out),
                _ => Err(format!("a number for a parameter of type {ty}").into()),
            },
            Param::Text(text) if <&str as ToSql>::accepts(ty) => text.to_sql(ty, out),
            Param::Blob(bytes) if <&[u8] as ToSql>::accepts(ty) => bytes.to_sql(ty, out),
            Param::Text(_) | Param::Blob(_) => {
                Err(format!("text or bytes for a parameter of type {ty}").into())
            }
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// A column of a result row as a plain value.
fn value(row: &postgres::Row, index: usize) -> Result<Value, postgres::Error> {
    let ty = row.columns()[index].type_().clone();
    Ok(match ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(index)?.map(Value::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(index)?
            .map(|v| Value::Int(v.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(index)?
            .map(|v| Value::Int(v.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(index)?
            .map(|v| Value::Int(v.into())),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(index)?.map(Value::Real),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(index)?
            .map(|v| Value::Real(v.into())),
        Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(index)?.map(Value::Blob),
        // Text and anything else that reads as text (names, varchar).
        _ => row.try_get::<_, Option<String>>(index)?.map(Value::Text),
    }
    .unwrap_or(Value::Null))
}

/// The whole story of an error: tokio-postgres keeps the server's message in the source.
fn detail(error: &postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} ({}): {}", db.severity(), db.code().code(), db.message());
    }
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The database a URL names, for messages: `postgres://user@host:port/db`, never the
/// password.
fn display_name(config: &postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = config
                .get_ports()
                .get(i)
                .or(config.get_ports().first())
                .map(|p| format!(":{p}"))
                .unwrap_or_default();
            match host {
                Host::Tcp(name) => format!("{name}{port}"),
                Host::Unix(dir) => format!("{}{port}", dir.display()),
            }
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// Parses a `database.url`: the connection settings, and the name messages use.
pub(crate) fn parse_url(url: &str) -> Result<(postgres::Config, String), String> {
    let mut config: postgres::Config = url.parse().map_err(|e: postgres::Error| detail(&e))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("pots-gateway");
    }
    let name = display_name(&config);
    Ok((config, name))
}

struct PoolInner {
    config: postgres::Config,
    name: String,
    /// With `sslmode=require`: TLS, the server's certificate checked against the CA of
    /// `database.tls_ca` (else the system's) and its name against the host's.
    tls: Option<MakeRustlsConnect>,
    idle: Mutex<Vec<Client>>,
}

impl PoolInner {
    /// A new connection, over TLS when the URL asks for it.
    fn connect(&self) -> Result<Client, StoreError> {
        let connected = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        };
        connected.map_err(|e| StoreError::Postgres {
            database: self.name.clone(),
            detail: detail(&e),
        })
    }
}

/// The TLS setup for `sslmode=require`: the CA certificates of `ca` (PEM), else the
/// system's trusted ones; TLS 1.2 or 1.3 (rustls with ring).
fn tls_connector(ca: Option<&Path>) -> Result<MakeRustlsConnect, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(ca) => {
            let unreadable = |why: String| {
                format!(
                    "database.tls_ca {}: {why} (expected a PEM file of CA certificates)",
                    ca.display()
                )
            };
            let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
                .and_then(|certificates| certificates.collect())
                .map_err(|e| unreadable(e.to_string()))?;
            if certificates.is_empty() {
                return Err(unreadable("no certificate in it".into()));
            }
            for certificate in certificates {
                roots
                    .add(certificate)
                    .map_err(|e| unreadable(e.to_string()))?;
            }
        }
        None => {
            // A system certificate that does not parse is skipped; none at all makes every
            // connection fail with "unknown issuer", which names the problem.
            for certificate in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(certificate);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// A small pool of connections to one PostgreSQL database (cheap to clone).
#[derive(Clone)]
pub struct PgPool {
    inner: Arc<PoolInner>,
}

impl std::fmt::Debug for PgPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgPool({})", self.inner.name)
    }
}

impl PgPool {
    /// A pool for `url` (`postgres://user@host/db`); connects lazily. With
    /// `sslmode=require` over TLS, the server checked against the system's CAs.
    pub fn new(url: &str) -> Result<PgPool, StoreError> {
        PgPool::with_tls_ca(url, None)
    }

    /// The pool `[database]` names: `url`, with `tls_ca` for `sslmode=require`.
    pub fn for_config(database: &DatabaseConfig) -> Result<PgPool, StoreError> {
        let url = database.url.as_deref().unwrap_or_default();
        PgPool::with_tls_ca(url, database.tls_ca.as_deref())
    }

    /// [`PgPool::new`], the server's certificate checked against the CA certificates in
    /// the PEM file `ca` when given.
    pub fn with_tls_ca(url: &str, ca: Option<&Path>) -> Result<PgPool, StoreError> {
        let (config, name) = parse_url(url).map_err(|detail| StoreError::Url { detail })?;
        let tls = match config.get_ssl_mode() {
            SslMode::Require => {
                Some(tls_connector(ca).map_err(|detail| StoreError::Url { detail })?)
            }
            // `prefer` (the default) and `disable`: in clear, as before TLS was offered.
            _ => None,
        };
        Ok(PgPool {
            inner: Arc::new(PoolInner {
                config,
                name,
                tls,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The database, as messages name it (without password).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// An open connection: an idle one, else a new one.
    fn get(&self) -> Result<PooledClient, StoreError> {
        let idle = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let client = match idle.filter(|client| !client.is_closed()) {
            Some(client) => client,
            None => self.inner.connect()?,
        };
        Ok(PooledClient {
            client: Some(client),
            pool: self.inner.clone(),
        })
    }

    /// A new connection of its own, never lent by the pool (the BLF listener's: a
    /// connection that LISTENs must not serve anyone else).
    pub(super) fn connect(&self) -> Result<Client, StoreError> {
        self.inner.connect()
    }

    /// A connection as the store's backend.
    pub(super) fn db(&self) -> Result<PgDb, StoreError> {
        Ok(PgDb {
            conn: RefCell::new(Connection {
                client: self.get()?,
                statements: HashMap::new(),
            }),
            name: self.inner.name.clone(),
            in_transaction: Cell::new(false),
            pool: self.clone(),
            health: RefCell::new(Reconnect::default()),
        })
    }
}

/// A connection lent by the pool; back to it when dropped (unless closed).
struct PooledClient {
    client: Option<Client>,
    pool: Arc<PoolInner>,
}

impl Drop for PooledClient {
    fn drop(&mut self) {
        if let Some(client) = self.client.take().filter(|c| !c.is_closed()) {
            let mut idle = self
                .pool
                .idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(client);
            }
        }
    }
}

impl PooledClient {
    fn client(&mut self) -> &mut Client {
        self.client
            .as_mut()
            .expect("present until dropped or discarded")
    }

    /// Whether the connection is gone (closed, or discarded as broken).
    fn is_closed(&self) -> bool {
        self.client.as_ref().is_none_or(Client::is_closed)
    }

    /// Drops a broken connection instead of handing it back to the pool.
    fn discard(&mut self) {
        self.client = None;
    }
}

struct Connection {
    client: PooledClient,
    /// Prepared statements by their SQLite spelling.
    statements: HashMap<String, Statement>,
}

/// `?1` -> `$1`: the store writes SQLite's numbered parameters.
fn numbered_parameters(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// One connection to the PostgreSQL database.
pub(super) struct PgDb {
    conn: RefCell<Connection>,
    name: String,
    in_transaction: Cell<bool>,
    /// Where a lost connection is made again from.
    pool: PgPool,
    /// Whether the database is reachable, and when to try again if not.
    health: RefCell<Reconnect>,
}

impl PgDb {
    fn error(&self, error: &postgres::Error) -> StoreError {
        // The client marks itself closed only once its connection task has seen the end,
        // which may come after the failed call: an I/O error already means it is gone.
        let io_failed = error
            .source()
            .is_some_and(|source| source.is::<std::io::Error>());
        // FATAL or PANIC: the server ends the session (e.g. terminated by an administrator,
        // shutting down).
        let session_ended = error.as_db_error().is_some_and(|db| {
            matches!(
                db.parsed_severity(),
                Some(postgres::error::Severity::Fatal | postgres::error::Severity::Panic)
            )
        });
        if error.is_closed() || io_failed || session_ended || self.conn.borrow().client.is_closed()
        {
            self.conn.borrow_mut().client.discard();
            self.lost(Instant::now(), &detail(error));
        }
        StoreError::Postgres {
            database: self.name.clone(),
            detail: detail(error),
        }
    }

    /// The connection broke or could not be made at `now`.
    fn lost(&self, now: Instant, why: &str) {
        if let Some(Notice::Lost) = self.health.borrow_mut().failed(now) {
            tracing::error!(
                "database {} unreachable ({why}): writes are not applied until it is back; \
                 retrying with backoff (up to {} s apart)",
                self.name,
                MAX_BACKOFF.as_secs()
            );
        }
    }

    fn unavailable(&self, now: Instant) -> StoreError {
        StoreError::Unavailable {
            database: self.name.clone(),
            down_secs: self
                .health
                .borrow()
                .down_for(now)
                .unwrap_or_default()
                .as_secs(),
        }
    }

    /// Makes a lost connection again when the backoff allows, outside a transaction (one
    /// that broke is lost: the writer begins a new batch); else fails at once.
    fn reconnect_if_lost(&self) -> Result<(), StoreError> {
        if !self.conn.borrow().client.is_closed() {
            return Ok(());
        }
        let now = Instant::now();
        if self.in_transaction.get() || !self.health.borrow().may_attempt(now) {
            self.health.borrow_mut().refused();
            return Err(self.unavailable(now));
        }
        match self.pool.get() {
            Ok(client) => {
                let mut conn = self.conn.borrow_mut();
                conn.client = client;
                conn.statements.clear();
                if let Some(Notice::Back { down, refused }) =
                    self.health.borrow_mut().connected(now)
                {
                    tracing::warn!(
                        "database {} reachable again after {} s; {refused} write(s) were not applied meanwhile",
                        self.name,
                        down.as_secs()
                    );
                }
                Ok(())
            }
            Err(e) => {
                self.lost(now, &e.to_string());
                Err(self.unavailable(now))
            }
        }
    }

    /// Runs `work` on the connection with the statement prepared.
    fn with_statement<T>(
        &self,
        sql: &str,
        work: impl FnOnce(&mut Client, &Statement) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        self.reconnect_if_lost()?;
        let done = {
            let mut conn = self.conn.borrow_mut();
            let Connection { client, statements } = &mut *conn;
            let client = client.client();
            let prepared = match statements.get(sql) {
                Some(statement) => Ok(statement.clone()),
                None => client
                    .prepare(&numbered_parameters(sql))
                    .inspect(|statement| {
                        statements.insert(sql.to_string(), statement.clone());
                    }),
            };
            prepared.and_then(|statement| work(client, &statement))
        };
        // The connection is not borrowed here: the error looks at it.
        done.map_err(|e| self.error(&e))
    }

    fn simple(&self, sql: &str) -> Result<(), StoreError> {
        self.reconnect_if_lost()?;
        let done = self.conn.borrow_mut().client.client().batch_execute(sql);
        done.map_err(|e| self.error(&e))
    }
}

impl Drop for PgDb {
    /// A transaction left open (a batch begun, never committed) is not handed on with the
    /// connection to the pool's next user.
    fn drop(&mut self) {
        self.rollback();
    }
}

fn as_params<'a>(params: &'a [Param<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl Db for PgDb {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<usize, StoreError> {
        self.with_statement(sql, |client, statement| {
            client.execute(statement, &as_params(params))
        })
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let rows = self.with_statement(sql, |client, statement| {
            client.query(statement, &as_params(params))
        })?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| value(row, i))
                    .collect::<Result<_, _>>()
                    .map(Row)
            })
            .collect::<Result<_, _>>()
            .map_err(|e| self.error(&e))
    }

    fn execute_script(&self, sql: &str) -> Result<(), StoreError> {
        self.simple(sql)
    }

    fn begin(&self) -> Result<(), StoreError> {
        // A transaction that went with a lost connection is over: this one may make the
        // connection again (else the connection would be refused for good).
        if self.conn.borrow().client.is_closed() {
            self.in_transaction.set(false);
        }
        self.simple("BEGIN")?;
        self.in_transaction.set(true);
        Ok(())
    }

    fn commit(&self) -> Result<(), StoreError> {
        self.in_transaction.set(false);
        if self.conn.borrow().client.is_closed() {
            // The transaction went with the connection: never COMMIT on a new one.
            let now = Instant::now();
            self.lost(now, "the connection closed during a transaction");
            return Err(self.unavailable(now));
        }
        let committed = self.simple("COMMIT");
        if committed.is_err() {
            let _ = self.simple("ROLLBACK");
        }
        committed
    }

    fn rollback(&self) {
        // A lost connection took its transaction with it: nothing to roll back.
        if self.in_transaction.replace(false) && !self.conn.borrow().client.is_closed() {
            let _ = self.simple("ROLLBACK");
        }
    }

    fn in_transaction(&self) -> bool {
        // A lost connection took its transaction with it.
        self.in_transaction.get() && !self.conn.borrow().client.is_closed()
    }

    fn connection_lost(&self) -> bool {
        self.conn.borrow().client.is_closed()
    }

    fn retry_at(&self) -> Option<Instant> {
        if !self.connection_lost() {
            return None;
        }
        // Closed without a failure seen (the server ended it while idle): at once.
        Some(
            self.health
                .borrow()
                .next_attempt()
                .unwrap_or_else(Instant::now),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_renumbered_and_urls_shown_without_password() {
        assert_eq!(
            numbered_parameters("SELECT ?1, ?12 WHERE a = '?' AND b = ?2"),
            "SELECT $1, $12 WHERE a = '?' AND b = $2"
        );
        let (_, name) = parse_url("postgres://gw:secret@db.example:5433/calls").unwrap();
        assert_eq!(name, "postgres://gw@db.example:5433/calls");
        let (_, name) = parse_url("postgres://gw@%2Frun%2Fpostgresql/calls").unwrap();
        assert_eq!(name, "postgres://gw@/run/postgresql:5432/calls");
    }

    #[test]
    fn tls_is_asked_for_by_sslmode_require_and_a_bad_ca_file_is_named() {
        let pool = PgPool::new("postgres://gw@db/calls?sslmode=require").unwrap();
        assert!(pool.inner.tls.is_some());
        let pool = PgPool::new("postgres://gw@db/calls").unwrap();
        assert!(pool.inner.tls.is_none(), "prefer: in clear, as before");
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "not a certificate").unwrap();
        let error = PgPool::with_tls_ca("postgres://gw@db/calls?sslmode=require", Some(&not_pem))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("database.tls_ca") && error.contains("ca.pem"),
            "{error}"
        );
    }
}
