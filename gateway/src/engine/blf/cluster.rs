//! BLF across nodes, the engine's part (sans-IO: the database work is behind
//! [`StoreCommand::PublishDialogs`] and [`StoreCommand::ReadDialogs`]; PostgreSQL's
//! notifications come from the store's listener thread as
//! [`StoreResult::DialogsChanged`](crate::store::StoreResult)).
//!
//! - Publishing: after every event the engine handles, this node's dialogs of each
//!   extension a key on another node watches (the shared subscriptions table lists them,
//!   read with each heartbeat; with PostgreSQL a node saving a subscription notifies it at
//!   once) are compared with what the node last wrote, and a changed
//!   list is written: one write per extension per turn of the engine, whatever happened
//!   in it, inside the store's group commit. No dialog any more writes an empty list (a
//!   tombstone), and so does an extension no other node watches any more. A write that
//!   failed is made again at the next poll. Only the calls this node owns are shown (a
//!   call it carries for another node is that node's to show, with its ids: `view.rs`).
//! - Receiving: the other nodes' dialogs are read when a notification names one of their
//!   rows (exactly that row), and every `node.blf_poll_ms` (the rows written since the
//!   newest seen, less [`POLL_OVERLAP_MS`] for commits that lag their timestamp and clocks
//!   a little apart; every row at start and after a gap in the polls long enough to miss a
//!   tombstone). One read of each kind is in flight at a time: what comes meanwhile waits
//!   for its answer. They are kept per extension and node and shown after this node's own
//!   (`notify.rs`), under this node's privacy rules.
//! - Node death: at each heartbeat the dialogs of the nodes no longer alive are dropped,
//!   so their watchers here get a NOTIFY without them; a node that was taken over while
//!   silent (its rows deleted) writes its dialogs again.

use super::dialog_info::DialogView;
use super::wire;
use crate::config::NodeConfig;
use crate::engine::shard::{node_of_row, ShardId};
use crate::engine::{Engine, Now};
use crate::store::{DialogsQuery, SharedDialogs, StoreCommand, TOMBSTONE_KEEP_MS};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How far before the newest row seen a poll starts reading again: a row committed this
/// long after its timestamp, or written by a node whose clock is this much behind another's,
/// is still found (re-reading a row seen already changes nothing).
pub const POLL_OVERLAP_MS: u64 = 5_000;

/// A node that could not poll for this long may have missed tombstones (they are deleted
/// after [`TOMBSTONE_KEEP_MS`]): it reads every row again.
const FULL_READ_AFTER: Duration = Duration::from_millis(TOMBSTONE_KEEP_MS / 2);

/// One node's dialogs of one extension, as last read.
#[derive(Debug)]
struct Row {
    /// The text as stored (a row read again with the same text is not decoded again).
    text: String,
    dialogs: Vec<DialogView>,
}

/// The engine's BLF state across nodes.
#[derive(Debug, Default)]
pub struct Shared {
    /// The other nodes' dialogs: extension -> node -> row.
    remote: HashMap<String, BTreeMap<String, Row>>,
    /// What this node last wrote, per extension (none: an empty list).
    published: HashMap<String, Vec<DialogView>>,
    /// Extensions whose row may not hold what `published` says: written at the next turn
    /// whatever they hold.
    unsure: BTreeSet<String>,
    /// Extensions whose write failed: unsure from the next poll on.
    failed: BTreeSet<String>,
    /// The extensions keys on other nodes watch.
    elsewhere: HashSet<String>,
    /// Extensions whose dialogs on other nodes, or whose watchers elsewhere, changed since
    /// the engine last asked ([`Shared::take_changed`]).
    changed: BTreeSet<String>,
    /// When the next poll is due (None: not clustered).
    next_poll: Option<Instant>,
    /// When the poll in flight was sent, if one is.
    polling: Option<Instant>,
    /// When the last poll that was answered was sent.
    last_poll: Option<Instant>,
    /// The newest `updated_ms` read.
    newest_ms: u64,
    /// Whether a read of named rows is in flight.
    reading: bool,
    /// Rows named by notifications, to read next: (node, extension).
    to_read: BTreeSet<(String, String)>,
}

impl Shared {
    /// The state of engine shard `shard` started at `now`: in a cluster, the first poll
    /// (of every row) is due at once. The first shard polls and reads for all (its
    /// answers reach every shard).
    pub fn new(config: &NodeConfig, shard: ShardId, now: Instant) -> Shared {
        Shared {
            next_poll: (config.is_clustered() && shard.is_first()).then_some(now),
            ..Shared::default()
        }
    }

    /// When the next poll is due.
    pub fn next_poll(&self) -> Option<Instant> {
        self.next_poll
    }

    /// Whether a key on another node watches `extension`.
    pub fn watched_elsewhere(&self, extension: &str) -> bool {
        self.elsewhere.contains(extension)
    }

    /// Whether this node has anything to write (or tombstone) for other nodes.
    pub fn publishes(&self) -> bool {
        !(self.elsewhere.is_empty() && self.published.is_empty() && self.unsure.is_empty())
    }

    /// The extensions whose dialogs on other nodes, or whose watchers there, changed since
    /// the last call.
    /// The extensions to be written whatever they hold are in it too: the engine derives
    /// their dialogs.
    pub fn take_changed(&mut self) -> BTreeSet<String> {
        let mut changed = std::mem::take(&mut self.changed);
        changed.extend(self.unsure.iter().cloned());
        changed
    }

    /// Whether the last write of `extension`'s dialogs listed any.
    fn has_published(&self, extension: &str) -> bool {
        self.published.contains_key(extension)
    }

    /// The other nodes' dialogs of `extension`, by node.
    pub fn remote_dialogs<'a>(&'a self, extension: &str) -> impl Iterator<Item = &'a DialogView> {
        self.remote
            .get(extension)
            .into_iter()
            .flat_map(|nodes| nodes.values().flat_map(|row| row.dialogs.iter()))
    }
}

impl Engine {
    /// Writes this node's dialogs of the extensions watched on other nodes where they
    /// differ from what it wrote last (`changed`: the extensions whose dialogs may have
    /// changed; `current`: its dialogs of those watched).
    pub(super) fn publish_to_cluster(
        &mut self,
        now: Now,
        changed: &BTreeSet<String>,
        current: &HashMap<String, Vec<DialogView>>,
    ) {
        let shared = &mut self.shared;
        let mut targets: BTreeSet<String> = changed
            .iter()
            .filter(|extension| {
                shared.elsewhere.contains(*extension) || shared.has_published(extension)
            })
            .cloned()
            .collect();
        targets.append(&mut shared.unsure.clone());
        for extension in targets {
            let dialogs: &[DialogView] = match shared.elsewhere.contains(&extension) {
                true => current.get(&extension).map_or(&[], Vec::as_slice),
                false => &[],
            };
            let last = shared
                .published
                .get(&extension)
                .map_or(&[][..], Vec::as_slice);
            if !shared.unsure.remove(&extension) && last == dialogs {
                continue;
            }
            self.store_commands.push_back(StoreCommand::PublishDialogs {
                row_owner: self.shard.row_owner(&self.config.node.id),
                extension: extension.clone(),
                dialogs: wire::encode(dialogs),
                now_ms: now.unix_ms,
            });
            if dialogs.is_empty() {
                shared.published.remove(&extension);
            } else {
                shared.published.insert(extension, dialogs.to_vec());
            }
        }
    }

    /// A key on another node now watches `extension` (a notification; the next heartbeat
    /// reads it from the subscriptions table anyway): this node writes its dialogs of it.
    pub(in crate::engine) fn on_watched_elsewhere(&mut self, extension: String) {
        self.shared.changed.insert(extension.clone());
        self.shared.elsewhere.insert(extension);
    }

    /// A write of `extension`'s dialogs failed: it is made again at the next poll.
    pub(in crate::engine) fn on_publish_failed(&mut self, extension: String) {
        self.shared.failed.insert(extension);
    }

    /// Sends the poll when it is due (and the one before was answered).
    pub(in crate::engine) fn poll_shared_dialogs(&mut self, now: Now) {
        let interval = self.config.node.blf_poll();
        let shared = &mut self.shared;
        let Some(due) = shared.next_poll.filter(|due| now.mono >= *due) else {
            return;
        };
        shared.next_poll = Some((due + interval).max(now.mono));
        let failed = std::mem::take(&mut shared.failed);
        shared.unsure.extend(failed);
        if shared.polling.is_some() {
            return;
        }
        let full = shared
            .last_poll
            .is_none_or(|at| now.mono.saturating_duration_since(at) > FULL_READ_AFTER);
        let query = match full {
            true => DialogsQuery::All,
            false => DialogsQuery::Since(shared.newest_ms.saturating_sub(POLL_OVERLAP_MS)),
        };
        shared.polling = Some(now.mono);
        self.store_commands.push_back(StoreCommand::ReadDialogs {
            node: self.config.node.id.clone(),
            query,
        });
    }

    /// A notification: `node`'s row of `extension` changed; it is read (with the others
    /// named meanwhile, once the read in flight is answered).
    pub(in crate::engine) fn on_dialogs_changed(&mut self, node: String, extension: String) {
        self.shared.to_read.insert((node, extension));
        self.read_named_rows();
    }

    fn read_named_rows(&mut self) {
        let shared = &mut self.shared;
        if shared.reading || shared.to_read.is_empty() {
            return;
        }
        shared.reading = true;
        let rows = std::mem::take(&mut shared.to_read).into_iter().collect();
        self.store_commands.push_back(StoreCommand::ReadDialogs {
            node: self.config.node.id.clone(),
            query: DialogsQuery::Rows(rows),
        });
    }

    /// The store's answer to a read (`rows` None: it failed; the next poll tries again).
    pub(in crate::engine) fn on_shared_dialogs(
        &mut self,
        now: Now,
        query: DialogsQuery,
        rows: Option<Vec<SharedDialogs>>,
    ) {
        let polled = match &query {
            DialogsQuery::Rows(_) => {
                self.shared.reading = false;
                None
            }
            _ => self.shared.polling.take(),
        };
        if let Some(rows) = rows {
            match query {
                DialogsQuery::All => {
                    let shared = &mut self.shared;
                    shared.changed.extend(shared.remote.drain().map(|(e, _)| e));
                    for row in rows {
                        self.apply_row(now, row);
                    }
                }
                DialogsQuery::Since(_) => {
                    for row in rows {
                        self.apply_row(now, row);
                    }
                }
                DialogsQuery::Rows(named) => {
                    let mut rows: HashMap<(String, String), SharedDialogs> = rows
                        .into_iter()
                        .map(|row| ((row.node.clone(), row.extension.clone()), row))
                        .collect();
                    for (node, extension) in named {
                        let row = rows.remove(&(node.clone(), extension.clone()));
                        // No row: no dialogs (a tombstone deleted since).
                        self.apply_row(
                            now,
                            row.unwrap_or(SharedDialogs {
                                extension,
                                node,
                                dialogs: String::new(),
                                updated_ms: 0,
                            }),
                        );
                    }
                }
            }
            if polled.is_some() {
                self.shared.last_poll = polled;
            }
        }
        self.read_named_rows();
    }

    /// Takes one row as the current dialogs of its node and extension.
    fn apply_row(&mut self, now: Now, row: SharedDialogs) {
        let shared = &mut self.shared;
        shared.newest_ms = shared.newest_ms.max(row.updated_ms);
        // This node's other shards tell theirs directly (`ShardNotice::Dialogs`).
        if node_of_row(&row.node) == self.config.node.id {
            return;
        }
        let nodes = shared.remote.entry(row.extension.clone()).or_default();
        if nodes
            .get(&row.node)
            .is_some_and(|held| held.text == row.dialogs)
        {
            return;
        }
        let dialogs = match wire::decode(&row.dialogs) {
            Ok(dialogs) => dialogs,
            Err(error) => {
                if self.stats.should_log(now.mono) {
                    tracing::warn!(
                        "the BLF dialogs node {} wrote for {} do not read: {error}; shown as none",
                        row.node,
                        row.extension
                    );
                }
                Vec::new()
            }
        };
        shared.changed.insert(row.extension.clone());
        if dialogs.is_empty() {
            nodes.remove(&row.node);
        } else {
            nodes.insert(
                row.node,
                Row {
                    text: row.dialogs,
                    dialogs,
                },
            );
        }
        if nodes.is_empty() {
            shared.remote.remove(&row.extension);
        }
    }

    /// A heartbeat's news for BLF: the other live nodes (the dialogs of any other are
    /// dropped: that node is gone), the extensions their keys watch, and whether this node
    /// had been taken over (its rows deleted: it writes them again).
    pub(in crate::engine) fn blf_heartbeat(
        &mut self,
        live: Option<&HashMap<String, SocketAddr>>,
        watched: Option<Vec<String>>,
        revived: bool,
    ) {
        let shared = &mut self.shared;
        if let Some(live) = live {
            let changed = &mut shared.changed;
            shared.remote.retain(|extension, nodes| {
                let before = nodes.len();
                nodes.retain(|owner, _| live.contains_key(node_of_row(owner)));
                if nodes.len() != before {
                    changed.insert(extension.clone());
                }
                !nodes.is_empty()
            });
        }
        if let Some(watched) = watched {
            let watched: HashSet<String> = watched.into_iter().collect();
            let changed = &mut shared.changed;
            changed.extend(watched.symmetric_difference(&shared.elsewhere).cloned());
            shared.elsewhere = watched;
        }
        if revived {
            let published: Vec<String> = shared.published.keys().cloned().collect();
            shared.unsure.extend(published);
        }
    }
}
