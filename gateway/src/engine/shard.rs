//! Which engine shard an engine is, and what that decides: the pre-parser's Call-ID hash
//! picks a message's shard, so every Call-ID this shard creates (B legs, the INVITE with
//! Replaces of a pickup) is drawn until it hashes here; every number it hands out that
//! leaves the shard and may come back through someone else (call numbers, inside call
//! keys; pickup and lookup numbers in store answers; media relay numbers; digest nonce
//! serials) is `index + k * count`, so the number alone names its shard.

use super::blf::DialogView;
use super::handover::HandedPickup;
use crate::registrar::Binding;
use crate::sip::message::SipMessage;
use crate::store::StoreResult;
use crate::transport::Peer;
use fastpath::preparse::shard_of;

/// Where a store answer goes ([`ShardId::of_result`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultFor {
    /// One shard.
    Shard(usize),
    /// Every shard (a copy each).
    Every,
}

/// Between a node id and a shard index in a BLF row's owner ([`ShardId::row_owner`]).
pub const ROW_OWNER_SEPARATOR: char = ';';

/// The node whose shard wrote a BLF row of this owner ([`ShardId::row_owner`]).
pub fn node_of_row(owner: &str) -> &str {
    owner
        .split_once(ROW_OWNER_SEPARATOR)
        .map_or(owner, |(node, _)| node)
}

/// The shard of its node that wrote a BLF row of this owner; None for an owner that is
/// not of that form.
pub fn shard_of_row(owner: &str) -> Option<usize> {
    match owner.split_once(ROW_OWNER_SEPARATOR) {
        None => Some(0),
        Some((_, index)) => index.parse().ok(),
    }
}

/// What an engine shard hands the runtime for the other shards.
#[derive(Debug, Clone)]
pub enum ShardOutput {
    /// For every other shard.
    Notice(ShardNotice),
    /// For shard `.0` only.
    To(usize, ShardMessage),
    /// Messages with `call_id` go to `shard` from now on, whatever the Call-ID hashes to
    /// (None: to its own shard again). Applied before anything queued after it leaves.
    Route {
        /// The Call-ID.
        call_id: String,
        /// Its shard now.
        shard: Option<usize>,
    },
}

/// What one shard hands one other.
#[derive(Debug, Clone)]
pub enum ShardMessage {
    /// A pickup claimed there for a call of the receiving shard ([`super::handover`]).
    Pickup(Box<HandedPickup>),
    /// A request handed over unanswered, to be handled here afresh (its Call-ID now
    /// routed here): an INVITE with Replaces naming a dialog of this shard.
    Request {
        /// Its sender.
        peer: Peer,
        /// The request.
        msg: Box<SipMessage>,
    },
    /// A message of a Call-ID handed over, queued there before its route changed.
    Message {
        /// Its sender.
        peer: Peer,
        /// The message.
        msg: Box<SipMessage>,
    },
}

/// What one shard tells every other, so that each can act alone on what it is handed.
#[derive(Debug, Clone, PartialEq)]
pub enum ShardNotice {
    /// An extension's bindings changed (a REGISTER handled there): hold exactly these.
    Bindings {
        /// The extension.
        aor: String,
        /// Its bindings now (none: unregistered), shared with the shard that tells.
        bindings: std::sync::Arc<Vec<Binding>>,
    },
    /// Keys on shard `shard` started (or stopped) watching an extension: the others tell
    /// it their dialogs of it from now on (or no more).
    Watch {
        /// The shard telling.
        shard: usize,
        /// The extension.
        extension: String,
        /// Whether any key there watches it now.
        watching: bool,
    },
    /// Shard `shard`'s dialogs of an extension watched on another shard, as they are now.
    Dialogs {
        /// The shard telling.
        shard: usize,
        /// The extension.
        extension: String,
        /// Its dialogs on that shard (none: no more).
        dialogs: Vec<DialogView>,
    },
}

/// One shard among `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardId {
    index: usize,
    count: usize,
}

impl ShardId {
    /// The only shard of an unsharded engine.
    pub const SOLE: ShardId = ShardId { index: 0, count: 1 };

    /// Shard `index` of `count`; None unless `index < count`.
    pub fn new(index: usize, count: usize) -> Option<ShardId> {
        (index < count).then_some(ShardId { index, count })
    }

    /// Its position, from 0.
    pub fn index(self) -> usize {
        self.index
    }

    /// How many shards there are.
    pub fn count(self) -> usize {
        self.count
    }

    /// Whether this is the shard that does what one shard does for all (heartbeats,
    /// registration expiry in the store, the media relay's sweep).
    pub fn is_first(self) -> bool {
        self.index == 0
    }

    /// The shard a message with `call_id` goes to.
    pub fn of_call_id(self, call_id: &str) -> usize {
        shard_of(call_id, self.count)
    }

    /// Whether messages with `call_id` come to this shard.
    pub fn owns_call_id(self, call_id: &str) -> bool {
        self.of_call_id(call_id) == self.index
    }

    /// The shard that handed out `number` (see [`Numbers`]).
    pub fn of_number(self, number: u64) -> usize {
        (number % self.count as u64) as usize
    }

    /// The shard whose call a call key (`<node>-<unix ms>-<call number>`) names; None for
    /// a key of another form.
    pub fn of_call_key(self, key: &str) -> Option<usize> {
        let number = key.rsplit('-').next()?.parse().ok()?;
        Some(self.of_number(number))
    }

    /// Where a store answer goes: to the shard that handed out the number in it (claims,
    /// lookups), whose call it names (CDRs) or whose BLF row it wrote; to every shard
    /// what each acts on for its own calls and keys (heartbeats: nodes gone; other nodes'
    /// dialogs, read by the first shard; an extension now watched on another node); to
    /// the first shard what it does for all (reading a row another node changed, the
    /// registrations written again when the database is back).
    pub fn of_result(self, result: &StoreResult) -> ResultFor {
        match result {
            StoreResult::Claim { pickup, .. } => ResultFor::Shard(self.of_number(*pickup)),
            StoreResult::Registrations { lookup, .. } => ResultFor::Shard(self.of_number(*lookup)),
            StoreResult::CdrWritten { call_key } => {
                ResultFor::Shard(self.of_call_key(call_key).unwrap_or(0))
            }
            StoreResult::DialogsPublished { row_owner, .. } => ResultFor::Shard(
                shard_of_row(row_owner)
                    .filter(|&s| s < self.count)
                    .unwrap_or(0),
            ),
            StoreResult::Heartbeat(_)
            | StoreResult::Dialogs { .. }
            | StoreResult::Watched { .. } => ResultFor::Every,
            StoreResult::DialogsChanged { .. } | StoreResult::DatabaseBack => ResultFor::Shard(0),
        }
    }

    /// Who writes this shard's BLF rows in the shared database: the node id on the first
    /// shard, `<node id>;<index>` on the others (a node id has no `;`), so each shard
    /// writes rows of its own and the shards of a node never overwrite each other's.
    pub fn row_owner(self, node: &str) -> String {
        match self.index {
            0 => node.to_string(),
            index => format!("{node}{ROW_OWNER_SEPARATOR}{index}"),
        }
    }

    /// A fresh Call-ID at `host` that hashes to this shard (a draw lands here with
    /// probability 1/count).
    pub fn draw_call_id(self, host: &str) -> String {
        loop {
            let call_id = crate::sip::ids::call_id(host);
            if self.owns_call_id(&call_id) {
                return call_id;
            }
        }
    }

    /// The numbers this shard hands out, the first at least `min`.
    pub fn numbers(self, min: u64) -> Numbers {
        let count = self.count as u64;
        let index = self.index as u64;
        let first = min + (index + count - min % count) % count;
        Numbers {
            next: first,
            step: count,
        }
    }
}

impl Default for ShardId {
    fn default() -> Self {
        ShardId::SOLE
    }
}

/// A counter of numbers owned by one shard: `index`, `index + count`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numbers {
    next: u64,
    step: u64,
}

impl Numbers {
    /// The next number (and moves on).
    pub fn take(&mut self) -> u64 {
        let number = self.next;
        self.next += self.step;
        number
    }

    /// The number [`Numbers::take`] gives next.
    pub fn peek(&self) -> u64 {
        self.next
    }
}

impl Default for Numbers {
    /// 0, 1, 2, ...: an unsharded engine's.
    fn default() -> Self {
        ShardId::SOLE.numbers(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_name_the_shard_that_handed_them_out() {
        for count in 1..5 {
            for index in 0..count {
                let shard = ShardId::new(index, count).unwrap();
                let mut numbers = shard.numbers(1);
                let first = numbers.take();
                assert!(first >= 1, "{first}");
                assert!(first <= count as u64, "{first}");
                for number in std::iter::once(first).chain((0..20).map(|_| numbers.take())) {
                    assert_eq!(shard.of_number(number), index);
                }
            }
        }
        let mut sole = Numbers::default();
        assert_eq!((sole.take(), sole.take()), (0, 1));
    }

    #[test]
    fn a_shard_s_blf_rows_name_it_and_its_node() {
        for index in 0..3 {
            let shard = ShardId::new(index, 3).unwrap();
            let owner = shard.row_owner("gw-1");
            assert_eq!(node_of_row(&owner), "gw-1");
            assert_eq!(shard_of_row(&owner), Some(index));
            let published = StoreResult::DialogsPublished {
                row_owner: owner,
                extension: "201".into(),
                stored: true,
            };
            assert_eq!(shard.of_result(&published), ResultFor::Shard(index));
        }
        assert_eq!(ShardId::SOLE.row_owner("gw-1"), "gw-1", "as before shards");
        assert_eq!(shard_of_row("gw-1;x"), None);
        // A row of a shard this node does not have (an earlier run had more): the first.
        let published = StoreResult::DialogsPublished {
            row_owner: "gw-1;7".into(),
            extension: "201".into(),
            stored: false,
        };
        assert_eq!(ShardId::SOLE.of_result(&published), ResultFor::Shard(0));
    }

    #[test]
    fn what_concerns_the_node_reaches_every_shard_or_the_first() {
        let shard = ShardId::new(1, 2).unwrap();
        let every = [
            StoreResult::Heartbeat(Default::default()),
            StoreResult::Dialogs {
                query: crate::store::DialogsQuery::All,
                rows: None,
            },
            StoreResult::Watched {
                node: "b".into(),
                extension: "201".into(),
            },
        ];
        for result in every {
            assert_eq!(shard.of_result(&result), ResultFor::Every, "{result:?}");
        }
        let first = [
            StoreResult::DatabaseBack,
            StoreResult::DialogsChanged {
                node: "b;1".into(),
                extension: "201".into(),
            },
        ];
        for result in first {
            assert_eq!(shard.of_result(&result), ResultFor::Shard(0), "{result:?}");
        }
    }

    #[test]
    fn drawn_call_ids_and_call_keys_come_back_to_their_shard() {
        let shard = ShardId::new(2, 3).unwrap();
        for _ in 0..50 {
            let call_id = shard.draw_call_id("gw.example");
            assert!(call_id.ends_with("@gw.example"));
            assert_eq!(shard.of_call_id(&call_id), 2);
        }
        let mut numbers = shard.numbers(0);
        let key = format!("gw1-1700000000000-{}", numbers.take());
        assert_eq!(shard.of_call_key(&key), Some(2));
        assert_eq!(shard.of_call_key("no number"), None);
        assert!(ShardId::new(3, 3).is_none());
    }
}
