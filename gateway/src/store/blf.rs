//! BLF across nodes: each node's dialogs of the extensions BLF keys watch, one row per
//! extension and node in `blf_dialogs` (the dialogs in the engine's text format, see
//! `engine/blf/wire.rs`, which the store does not read), written by their node as they
//! change and read by the others.
//!
//! A node that has no dialog of an extension any more writes an empty text: a tombstone,
//! which nodes polling for rows changed since their last poll see (a deleted row they would
//! not); tombstones older than [`TOMBSTONE_KEEP_MS`] are deleted with the heartbeats. With
//! PostgreSQL each write also `NOTIFY`s [`BLF_CHANNEL`] (delivered
//! at the commit), so that nodes listening read the row at once instead of at their next
//! poll; a subscription's save notifies which extension a key on its node watches, so that
//! the others start writing it at once rather than at their next heartbeat. A node taken over loses its rows in the takeover's transaction
//! ([`Store::heartbeat`]); a starting node turns the rows of its previous run into
//! tombstones ([`Store::clear_dialogs`]).

use super::sql::{Dialect, Param};
use super::{Store, StoreError};

/// The PostgreSQL notification channel of BLF changes; the payload is `dialogs <node>
/// <extension>` (that row changed) or `watch <node> <extension>` (a key on that node watches
/// the extension: [`Store::save_subscription`]).
pub const BLF_CHANNEL: &str = "gateway_blf";

/// What a notification on [`BLF_CHANNEL`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// `node`'s row of `extension` changed.
    Dialogs {
        /// The node.
        node: String,
        /// The extension.
        extension: String,
    },
    /// A key on `node` watches `extension`.
    Watch {
        /// The node.
        node: String,
        /// The extension.
        extension: String,
    },
}

impl Notification {
    /// Reads a payload.
    pub fn parse(payload: &str) -> Option<Notification> {
        let mut words = payload.split(' ');
        let (kind, node, extension) = (words.next()?, words.next()?, words.next()?);
        if words.next().is_some() || node.is_empty() || extension.is_empty() {
            return None;
        }
        let (node, extension) = (node.to_string(), extension.to_string());
        match kind {
            "dialogs" => Some(Notification::Dialogs { node, extension }),
            "watch" => Some(Notification::Watch { node, extension }),
            _ => None,
        }
    }

    /// The payload.
    fn payload(&self) -> String {
        match self {
            Notification::Dialogs { node, extension } => format!("dialogs {node} {extension}"),
            Notification::Watch { node, extension } => format!("watch {node} {extension}"),
        }
    }

    /// The node it comes from.
    pub fn node(&self) -> &str {
        match self {
            Notification::Dialogs { node, .. } | Notification::Watch { node, .. } => node,
        }
    }
}

/// How long a tombstone (a row whose node has no dialog of the extension any more) is
/// kept: nodes that polled within this time have seen it. A node that could not poll for
/// about half of it reads every row again ([`DialogsQuery::All`]).
pub const TOMBSTONE_KEEP_MS: u64 = 60_000;

/// One node's dialogs of one extension, as another node reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDialogs {
    /// The watched extension.
    pub extension: String,
    /// The node whose calls these are.
    pub node: String,
    /// The dialogs in the engine's text format; empty: none (a tombstone).
    pub dialogs: String,
    /// When the node wrote them (Unix ms, by its clock).
    pub updated_ms: u64,
}

/// Which rows of the other nodes a read returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogsQuery {
    /// Every row (tombstones too): the reader replaces what it knew.
    All,
    /// The rows written after this time (Unix ms, by the writers' clocks).
    Since(u64),
    /// These rows, as (node, extension): those a notification named. A row not returned
    /// does not exist (no dialogs).
    Rows(Vec<(String, String)>),
}

/// At most this many rows are named in one statement of a [`DialogsQuery::Rows`] read.
const ROWS_PER_STATEMENT: usize = 200;

impl Store {
    /// `node`'s dialogs of `extension` are now `dialogs` (empty: none, kept as a tombstone)
    /// at `now_ms`; with PostgreSQL the other nodes are notified on [`BLF_CHANNEL`].
    pub fn publish_dialogs(
        &mut self,
        node: &str,
        extension: &str,
        dialogs: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let db = self.db.as_ref();
        let notify_others = self.blf_notify;
        let notified = db.atomically(|| {
            db.execute(
                "INSERT INTO blf_dialogs (extension, node, dialogs, updated_ms) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (extension, node) DO UPDATE SET \
                 dialogs = excluded.dialogs, updated_ms = excluded.updated_ms",
                &[extension.into(), node.into(), dialogs.into(), now_ms.into()],
            )?;
            if notify_others {
                notify(db, &dialogs_changed(node, extension))
            } else {
                Ok(true)
            }
        })?;
        self.notifications_unsupported(notified);
        Ok(())
    }

    /// Stops notifying once the database turned out to have no `pg_notify` (a
    /// PostgreSQL-compatible engine without it): the other nodes poll.
    pub(super) fn notifications_unsupported(&mut self, notified: bool) {
        if !notified && self.blf_notify {
            self.blf_notify = false;
            tracing::warn!(
                "database {}: no pg_notify; the other nodes learn this node's BLF changes \
                 by polling (node.blf_poll_ms)",
                self.name()
            );
        }
    }

    /// The rows of nodes other than `node` (rows of its engine shards are its own) that
    /// `query` asks for, by extension and node.
    pub fn shared_dialogs(
        &self,
        node: &str,
        query: &DialogsQuery,
    ) -> Result<Vec<SharedDialogs>, StoreError> {
        const COLUMNS: &str = "SELECT extension, node, dialogs, updated_ms FROM blf_dialogs";
        let decode = |row: &super::sql::Row| {
            Ok(SharedDialogs {
                extension: row.text(0)?,
                node: row.text(1)?,
                dialogs: row.text(2)?,
                updated_ms: row.u64(3)?,
            })
        };
        let db = self.db.as_ref();
        match query {
            DialogsQuery::All => db.rows(
                &format!(
                    "{COLUMNS} WHERE NOT {} ORDER BY extension, node",
                    of_node("?1")
                ),
                &[node.into()],
                decode,
            ),
            DialogsQuery::Since(since_ms) => db.rows(
                &format!(
                    "{COLUMNS} WHERE updated_ms > ?2 AND NOT {} ORDER BY extension, node",
                    of_node("?1")
                ),
                &[node.into(), (*since_ms).into()],
                decode,
            ),
            DialogsQuery::Rows(keys) => {
                let mut found = Vec::new();
                for chunk in keys.chunks(ROWS_PER_STATEMENT) {
                    let pairs: Vec<String> = (0..chunk.len())
                        .map(|i| format!("(node = ?{} AND extension = ?{})", 2 * i + 2, 2 * i + 3))
                        .collect();
                    let sql = format!(
                        "{COLUMNS} WHERE NOT {} AND ({}) ORDER BY extension, node",
                        of_node("?1"),
                        pairs.join(" OR ")
                    );
                    let mut params: Vec<Param<'_>> = vec![node.into()];
                    for (other, extension) in chunk {
                        params.push(other.into());
                        params.push(extension.into());
                    }
                    found.extend(db.rows(&sql, &params, decode)?);
                }
                Ok(found)
            }
        }
    }

    /// At start: the dialogs `node` (and each of its engine shards) wrote in its previous
    /// run are over (its calls ended with it). They become tombstones at `now_ms` and the
    /// other nodes are notified; the number of rows.
    pub fn clear_dialogs(&mut self, node: &str, now_ms: u64) -> Result<usize, StoreError> {
        let db = self.db.as_ref();
        let notify_others = self.blf_notify;
        let (cleared, notified) = db.atomically(|| {
            let cleared = db.rows(
                &format!(
                    "UPDATE blf_dialogs SET dialogs = '', updated_ms = ?2 \
                     WHERE {} AND dialogs != '' RETURNING node, extension",
                    of_node("?1")
                ),
                &[node.into(), now_ms.into()],
                |row| Ok((row.text(0)?, row.text(1)?)),
            )?;
            let mut notified = true;
            for (owner, extension) in cleared.iter().filter(|_| notify_others) {
                if !notify(db, &dialogs_changed(owner, extension))? {
                    notified = false;
                    break;
                }
            }
            Ok((cleared.len(), notified))
        })?;
        self.notifications_unsupported(notified);
        Ok(cleared)
    }
}

/// An SQL condition: the row (its `node` column) was written by the node named by the
/// parameter `param`, or by one of its engine shards
/// ([`crate::engine::shard::ShardId::row_owner`]: `<node>;<index>`).
pub(super) fn of_node(param: &str) -> String {
    let node = format!("CAST({param} AS TEXT)");
    let separator = crate::engine::shard::ROW_OWNER_SEPARATOR;
    format!("(node = {node} OR substr(node, 1, length({node}) + 1) = {node} || '{separator}')")
}

fn dialogs_changed(node: &str, extension: &str) -> Notification {
    Notification::Dialogs {
        node: node.to_string(),
        extension: extension.to_string(),
    }
}

/// Tells the listening nodes (PostgreSQL) `what`, delivered when the transaction commits
/// (nothing if it rolls back). False when the database has no `pg_notify` (the statement
/// is undone alone, in a savepoint).
pub(super) fn notify(db: &dyn super::sql::Db, what: &Notification) -> Result<bool, StoreError> {
    if db.dialect() != Dialect::Postgres {
        return Ok(true);
    }
    let payload = what.payload();
    let sent = db.atomically(|| {
        db.execute(
            "SELECT pg_notify(?1, ?2)",
            &[BLF_CHANNEL.into(), (&payload).into()],
        )
    });
    match sent {
        Ok(_) => Ok(true),
        // Undefined function, or not supported: the server answered, the connection is fine.
        Err(StoreError::Postgres { detail, .. })
            if detail.contains("(42883)") || detail.contains("(0A000)") =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::Notification;

    #[test]
    fn notifications_read_back_and_anything_else_is_ignored() {
        for what in [
            Notification::Dialogs {
                node: "a".into(),
                extension: "201".into(),
            },
            Notification::Watch {
                node: "b".into(),
                extension: "+4930".into(),
            },
        ] {
            assert_eq!(Notification::parse(&what.payload()), Some(what));
        }
        for junk in [
            "",
            "a 201",
            "dialogs a",
            "dialogs  201",
            "watch a 201 x",
            "nope a 201",
        ] {
            assert_eq!(Notification::parse(junk), None, "{junk:?}");
        }
    }
}
