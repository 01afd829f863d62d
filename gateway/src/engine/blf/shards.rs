//! BLF across the engine shards of one gateway: a key's subscription lives on the shard its
//! SUBSCRIBE's Call-ID names, the calls it shows on any shard. Like the nodes of a cluster
//! (`cluster.rs`), but through the shards' queues instead of the database:
//!
//! - A shard whose keys start watching an extension (its first subscription to it) tells
//!   the others, and that it stopped when its last one ends ([`ShardNotice::Watch`]).
//! - After every event it handles, a shard tells the others its dialogs of each extension
//!   watched on another shard, where they differ from what it told last (an empty list
//!   when it has none any more, or nobody watches any more: [`ShardNotice::Dialogs`]).
//!   Every shard hears every notice, so what a shard told last is what all the others hold.
//! - A shard shows the others' dialogs after its own, as it shows other nodes'.
//! - A shard answers a `Watch` with its dialogs of the extension at once, even none, and
//!   the watching shard holds its keys' first NOTIFY until every other shard answered, so
//!   that a key never shows an idle extension for a moment while a call rings on another
//!   shard.
//!
//! [`ShardNotice::Watch`]: crate::engine::shard::ShardNotice::Watch
//! [`ShardNotice::Dialogs`]: crate::engine::shard::ShardNotice::Dialogs

use super::dialog_info::DialogView;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A shard's BLF state about the other shards.
#[derive(Debug, Default)]
pub struct ShardDialogs {
    /// The other shards' dialogs: extension -> shard -> dialogs.
    remote: HashMap<String, BTreeMap<usize, Vec<DialogView>>>,
    /// The extensions keys on other shards watch, and on which shards.
    watchers: HashMap<String, BTreeSet<usize>>,
    /// What this shard last told the others, per extension (absent: no dialogs).
    told: HashMap<String, Vec<DialogView>>,
    /// Extensions whose dialogs on other shards, or whose watchers there, changed since
    /// the engine last asked.
    changed: BTreeSet<String>,
    /// Extensions another shard just started watching: told at the next turn whatever
    /// this shard told before (its answer to the `Watch`).
    owed: BTreeSet<String>,
    /// Extensions this shard started watching, with the shards that have not answered yet.
    awaiting: HashMap<String, BTreeSet<usize>>,
    /// Extensions every other shard has answered for since the engine last asked.
    ready: Vec<String>,
}

impl ShardDialogs {
    /// Whether a key on another shard watches `extension`.
    pub fn watched_elsewhere(&self, extension: &str) -> bool {
        self.watchers.contains_key(extension)
    }

    /// Whether this shard has anything to tell (or to take back) for other shards.
    pub fn publishes(&self) -> bool {
        !(self.watchers.is_empty() && self.told.is_empty())
    }

    /// The extensions whose dialogs or watchers on other shards changed since the last
    /// call.
    pub fn take_changed(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.changed)
    }

    /// The other shards' dialogs of `extension`.
    pub fn remote_dialogs<'a>(&'a self, extension: &str) -> impl Iterator<Item = &'a DialogView> {
        self.remote
            .get(extension)
            .into_iter()
            .flat_map(|shards| shards.values().flatten())
    }

    /// This shard's keys started watching `extension`: their first NOTIFY waits until
    /// each of `others` told its dialogs of it.
    pub fn await_answers(&mut self, extension: &str, others: impl Iterator<Item = usize>) {
        let others: BTreeSet<usize> = others.collect();
        if !others.is_empty() {
            self.awaiting.insert(extension.to_string(), others);
        }
    }

    /// Whether the first NOTIFY of `extension`'s keys still waits for other shards.
    pub fn is_awaited(&self, extension: &str) -> bool {
        self.awaiting.contains_key(extension)
    }

    /// The extensions every other shard has answered for since the last call.
    pub fn take_ready(&mut self) -> Vec<String> {
        std::mem::take(&mut self.ready)
    }

    /// Shard `shard` holds `dialogs` of `extension` now.
    pub fn on_dialogs(&mut self, shard: usize, extension: String, dialogs: Vec<DialogView>) {
        if let Some(waiting) = self.awaiting.get_mut(&extension) {
            waiting.remove(&shard);
            if waiting.is_empty() {
                self.awaiting.remove(&extension);
                self.ready.push(extension.clone());
            }
        }
        let shards = self.remote.entry(extension.clone()).or_default();
        if dialogs.is_empty() {
            shards.remove(&shard);
            if shards.is_empty() {
                self.remote.remove(&extension);
            }
        } else {
            shards.insert(shard, dialogs);
        }
        self.changed.insert(extension);
    }

    /// Keys on shard `shard` started (or stopped) watching `extension`.
    pub fn on_watch(&mut self, shard: usize, extension: String, watching: bool) {
        let shards = self.watchers.entry(extension.clone()).or_default();
        if watching {
            shards.insert(shard);
            self.owed.insert(extension.clone());
        } else {
            shards.remove(&shard);
            if shards.is_empty() {
                self.watchers.remove(&extension);
            }
        }
        self.changed.insert(extension);
    }

    /// What to tell the others, of the extensions in `changed`: for each watched on
    /// another shard or told before, this shard's dialogs now (`current` holds those of
    /// the watched ones) where they differ from what it told last.
    pub fn take_news(
        &mut self,
        changed: &BTreeSet<String>,
        current: &HashMap<String, Vec<DialogView>>,
    ) -> Vec<(String, Vec<DialogView>)> {
        let mut tell = Vec::new();
        let owed = std::mem::take(&mut self.owed);
        for extension in changed.iter().chain(owed.difference(changed)) {
            let watched = self.watchers.contains_key(extension);
            if !watched && !self.told.contains_key(extension) {
                continue;
            }
            let dialogs = match watched {
                true => current.get(extension).cloned().unwrap_or_default(),
                false => Vec::new(),
            };
            let last = self.told.get(extension).map_or(&[][..], Vec::as_slice);
            if last == dialogs.as_slice() && !owed.contains(extension) {
                continue;
            }
            if dialogs.is_empty() {
                self.told.remove(extension);
            } else {
                self.told.insert(extension.clone(), dialogs.clone());
            }
            tell.push((extension.clone(), dialogs));
        }
        tell
    }
}
