//! Persistent state: in SQLite (rusqlite, bundled; the embedded default) or PostgreSQL (the
//! shared database of several nodes), through one interface ([`sql::Db`]) so the logic
//! exists once: versioned schema migrations, and a writer thread so SIP handling never
//! waits for the database.

mod blf;
mod calls;
mod listener;
mod migrations;
mod nodes;
mod postgres;
mod reconnect;
mod spool;
mod sql;
mod sqlite;
mod subscriptions;
mod writer;

#[cfg(any(test, feature = "test-support"))]
pub mod test_cluster;

pub use blf::{DialogsQuery, Notification, SharedDialogs, BLF_CHANNEL, TOMBSTONE_KEEP_MS};
pub use calls::{
    Answer, CallContext, CallStore, Cdr, ClaimOutcome, ClaimRequest, FailedPickup, Interrupted,
    LegIds, NamedLeg, PickupMethod, PickupTarget, INTERRUPTED,
};
pub use listener::BlfListener;
pub use migrations::SCHEMA_VERSION;
pub use nodes::{Heartbeat, RemoteBinding, TakenOver};
pub use postgres::PgPool;
pub use spool::{Spool, SPOOL_CAPACITY};
pub use subscriptions::StoredSubscription;
pub use writer::{execute, StoreCommand, StoreResult, StoreWriter};

pub(crate) use postgres::parse_url as parse_postgres_url;

use crate::config::DatabaseConfig;
use crate::registrar::Binding;
use crate::transport::{Peer, Protocol};
use sql::{Db, Param};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// A database problem, naming the database and what to check.
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
    /// PostgreSQL failed.
    #[error("database {database}: {detail} (check that the server runs and is reachable, that it accepts this user, and that the database exists)")]
    Postgres {
        /// The database URL, without password.
        database: String,
        /// What the client or the server said.
        detail: String,
    },
    /// The database is unreachable (the connection was lost and not made again yet): the
    /// write is not applied. Logged once per outage by the store, not per write.
    #[error("database {database} unreachable for {down_secs} s: not applied (the connection is retried with backoff; check that the server runs and is reachable)")]
    Unavailable {
        /// The database URL, without password.
        database: String,
        /// Seconds since it became unreachable.
        down_secs: u64,
    },
    /// A pickup claimed a call of a node whose row vanished in the same instant (taken
    /// over): the claim is undone and the picker told to try again.
    #[error("node {0} was taken over while one of its calls was claimed: claim undone (the picker may try again)")]
    NodeVanished(String),
    /// Another process holds the CDR spool file.
    #[error("CDR spool {path} is in use by another process: give each gateway (node) a spool file of its own (database.spool)")]
    SpoolInUse {
        /// The spool file.
        path: PathBuf,
    },
    /// `database.url` does not parse.
    #[error("database.url: {detail} (expected e.g. postgres://gateway@db.example/gateway)")]
    Url {
        /// What is wrong with it.
        detail: String,
    },
    /// The database was written by a newer gateway.
    #[error("database {database} has schema version {found}, newer than this gateway's {supported}: upgrade the gateway or use another database")]
    TooNew {
        /// The database file or URL (without password).
        database: String,
        /// Version in the database.
        found: u32,
        /// Newest version this build knows.
        supported: u32,
    },
    /// A row holds something the gateway did not write there.
    #[error("database {database}: column {column} holds {found}, expected {expected} (a row edited by hand, or not a gateway database)")]
    Column {
        /// The database file or URL.
        database: String,
        /// Index of the column in its query.
        column: usize,
        /// What the gateway expected.
        expected: &'static str,
        /// What it found.
        found: String,
    },
}

impl StoreError {
    /// Whether this is a write refused during a known outage (already reported once).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// The gateway's database: a SQLite file or a PostgreSQL database.
pub struct Store {
    db: Box<dyn Db>,
    /// Schema versions before and after the migrations this open applied.
    migrated: (u32, u32),
    /// Whether BLF writes still NOTIFY the other nodes (PostgreSQL, until the database
    /// turns out to have no `pg_notify`).
    blf_notify: bool,
}

impl Store {
    /// Opens (creating if needed) the SQLite database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::with(Box::new(sqlite::SqliteDb::open(path)?))
    }

    /// Takes a connection of the PostgreSQL pool and brings the schema up to date.
    pub fn open_postgres(pool: &PgPool) -> Result<Store, StoreError> {
        Store::with(Box::new(pool.db()?))
    }

    /// Opens the database the config names (`database.url`, else `database.path`).
    pub fn open_config(config: &DatabaseConfig) -> Result<Store, StoreError> {
        match (&config.url, &config.path) {
            (Some(_), _) => Store::open_postgres(&PgPool::for_config(config)?),
            (None, Some(path)) => Store::open(path),
            // Config validation requires one of them.
            (None, None) => Err(StoreError::Url {
                detail: "neither database.url nor database.path is set".into(),
            }),
        }
    }

    fn with(db: Box<dyn Db>) -> Result<Store, StoreError> {
        let migrated = migrations::apply(db.as_ref())?;
        let blf_notify = db.dialect() == sql::Dialect::Postgres;
        Ok(Store {
            db,
            migrated,
            blf_notify,
        })
    }

    /// The database as messages name it (file path, or URL without password).
    pub fn name(&self) -> &str {
        self.db.name()
    }

    /// The schema version the database had when opened, and the one it has now.
    pub fn migrated(&self) -> (u32, u32) {
        self.migrated
    }

    /// Starts a batch: the writer applies many commands in one transaction with one
    /// commit instead of one each. Commands inside run as savepoints of the batch. A SQLite
    /// commit is not synced to disk here: the writer's sync thread does that for CDRs, off
    /// the path of pickup claims.
    pub fn begin_batch(&mut self) -> Result<(), StoreError> {
        self.db.begin()
    }

    /// Rolls back whatever transaction is open (a batch that can no longer commit).
    pub fn rollback_batch(&mut self) {
        self.db.rollback();
    }

    /// Commits the batch [`Store::begin_batch`] started (rolling it back if the commit fails).
    pub fn commit_batch(&mut self) -> Result<(), StoreError> {
        self.db.commit()
    }

    /// The write-ahead log whose sync makes commits durable; None when each commit must be
    /// (or is) synced as it is made: [`Store::set_full_sync`].
    pub fn wal_path(&self) -> Option<&Path> {
        self.db.wal_path()
    }

    /// Whether each commit is synced to disk before it returns (SQLite `synchronous=FULL`)
    /// or not (`NORMAL`, the default: durable once the WAL is synced). PostgreSQL commits
    /// always are.
    pub fn set_full_sync(&mut self, full: bool) -> Result<(), StoreError> {
        self.db.set_full_sync(full)
    }

    /// Whether a batch is open (commands then run as savepoints of it).
    pub fn in_batch(&self) -> bool {
        self.db.in_transaction()
    }

    /// Whether a failed statement spoils the open batch (PostgreSQL), so that each command
    /// in a batch needs a savepoint of its own.
    fn errors_abort_batch(&self) -> bool {
        self.db.dialect().errors_abort_transaction()
    }

    /// Replaces every binding of `aor` that `node` stored with `bindings` (the bindings
    /// other nodes hold for it stay; a contact another node held is taken over: the phone
    /// now registers through `node`).
    pub fn replace_bindings(
        &mut self,
        node: &str,
        aor: &str,
        bindings: &[Binding],
    ) -> Result<(), StoreError> {
        let db = self.db.as_ref();
        db.atomically(|| {
            db.execute(
                "DELETE FROM registrations WHERE aor = ?1 AND (node = ?2 OR node IS NULL)",
                &[Param::Text(aor), Param::Text(node)],
            )?;
            for b in bindings {
                let (proto, addr, local) = (
                    b.source.protocol.uri_param(),
                    b.source.addr.to_string(),
                    b.source.local.to_string(),
                );
                db.execute(
                    "INSERT INTO registrations (aor, contact, expires_at, call_id, cseq, source_proto, source_addr, q, local_addr, node, user_agent) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                     ON CONFLICT (aor, contact) DO UPDATE SET expires_at = excluded.expires_at, \
                     call_id = excluded.call_id, cseq = excluded.cseq, source_proto = excluded.source_proto, \
                     source_addr = excluded.source_addr, q = excluded.q, local_addr = excluded.local_addr, \
                     node = excluded.node, user_agent = excluded.user_agent",
                    &[
                        aor.into(),
                        (&b.contact).into(),
                        b.expires_at.into(),
                        (&b.call_id).into(),
                        b.cseq.into(),
                        proto.into(),
                        (&addr).into(),
                        b.q.into(),
                        (&local).into(),
                        node.into(),
                        (&b.user_agent).into(),
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// Every unexpired binding `node` holds (and those of rows from before nodes were
    /// recorded); expired rows of every node are deleted on the way.
    pub fn load_bindings(
        &self,
        node: &str,
        now: u64,
    ) -> Result<Vec<(String, Binding)>, StoreError> {
        self.db.execute(
            "DELETE FROM registrations WHERE expires_at <= ?1",
            &[now.into()],
        )?;
        let rows = self.db.rows(
            "SELECT aor, contact, expires_at, call_id, cseq, source_proto, source_addr, q, local_addr, user_agent \
             FROM registrations WHERE node = ?1 OR node IS NULL ORDER BY aor, contact",
            &[node.into()],
            |row| {
                Ok((
                    row.text(0)?,
                    Binding {
                        contact: row.text(1)?,
                        expires_at: row.u64(2)?,
                        call_id: row.text(3)?,
                        cseq: row.u32(4)?,
                        source: crate::transport::ANALOG_PEER,
                        q: row.opt_real(7)?.map(|q| q as f32),
                        user_agent: row.opt_text(9)?,
                    },
                    (row.text(5)?, row.text(6)?, row.opt_text(8)?),
                ))
            },
        )?;
        let mut bindings = Vec::new();
        for (aor, mut binding, (proto, addr, local)) in rows {
            // A row that does not parse (edited by hand) is skipped, not fatal.
            let Ok(addr) = addr.parse::<SocketAddr>() else {
                tracing::warn!(
                    "{}: skipping registration of {aor} with bad address {addr:?}",
                    self.name()
                );
                continue;
            };
            binding.source = stored_peer(&proto, addr, local.as_deref());
            bindings.push((aor, binding));
        }
        Ok(bindings)
    }
}

/// A peer as a row keeps it: protocol, address and the local address it reached. Rows
/// written before the local address was kept have none: it is left unspecified, and the
/// runtime asks the kernel which address reaches the peer
/// (`transport::addressing::fill_local`).
fn stored_peer(protocol: &str, addr: SocketAddr, local: Option<&str>) -> Peer {
    let protocol = match protocol {
        "tcp" => Protocol::Tcp,
        "tls" => Protocol::Tls,
        _ => Protocol::Udp,
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
