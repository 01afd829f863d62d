//! Dialog subscriptions (BLF keys) kept across a restart: the subscription dialog, its
//! expiry in Unix seconds, and the NOTIFY counters (CSeq, document version) that must keep
//! rising after the restart, so the subscriber accepts the next NOTIFY.

use super::{cached_execute, Store, StoreError};
use crate::transport::Peer;
use rusqlite::params;

/// One subscription as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubscription {
    /// The subscribing extension.
    pub subscriber: String,
    /// The watched extension.
    pub target: String,
    /// The subscription dialog's Call-ID.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
    /// The subscriber's tag.
    pub remote_tag: String,
    /// Our name-addr (the watched extension's URI, without tag).
    pub local_uri: String,
    /// The subscriber's name-addr, without tag.
    pub remote_uri: String,
    /// The subscriber's Contact: where NOTIFYs go.
    pub remote_target: String,
    /// The transport address NOTIFYs are sent to.
    pub peer: Peer,
    /// The CSeq of the last NOTIFY.
    pub cseq: u32,
    /// The version the next document gets.
    pub version: u32,
    /// The `id` of the Event header, if any.
    pub event_id: Option<String>,
    /// Unix seconds when the subscription ends.
    pub expires_at: u64,
}

impl Store {
    /// Inserts or updates a subscription (keyed by its dialog).
    pub fn save_subscription(&mut self, sub: &StoredSubscription) -> Result<(), StoreError> {
        cached_execute(
            &self.conn,
            "INSERT OR REPLACE INTO subscriptions (call_id, local_tag, subscriber, target, \
             remote_tag, local_uri, remote_uri, remote_target, peer_proto, peer_addr, cseq, \
             version, event_id, expires_at, peer_local) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            params![
                sub.call_id,
                sub.local_tag,
                sub.subscriber,
                sub.target,
                sub.remote_tag,
                sub.local_uri,
                sub.remote_uri,
                sub.remote_target,
                sub.peer.protocol.uri_param(),
                sub.peer.addr.to_string(),
                sub.cseq,
                sub.version,
                sub.event_id,
                i64::try_from(sub.expires_at).unwrap_or(i64::MAX),
                sub.peer.local.to_string(),
            ],
        )
        .map(drop)
        .map_err(|e| self.error(e))
    }

    /// Forgets the subscription of dialog (Call-ID, our tag).
    pub fn delete_subscription(
        &mut self,
        call_id: &str,
        local_tag: &str,
    ) -> Result<(), StoreError> {
        cached_execute(
            &self.conn,
            "DELETE FROM subscriptions WHERE call_id = ?1 AND local_tag = ?2",
            params![call_id, local_tag],
        )
        .map(drop)
        .map_err(|e| self.error(e))
    }

    /// Every subscription still running at `now` (Unix seconds); the expired ones are
    /// deleted on the way (their subscribers re-subscribe when they notice).
    pub fn load_subscriptions(&self, now: u64) -> Result<Vec<StoredSubscription>, StoreError> {
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        self.conn
            .execute(
                "DELETE FROM subscriptions WHERE expires_at <= ?1",
                params![now],
            )
            .map_err(|e| self.error(e))?;
        let mut statement = self
            .conn
            .prepare(
                "SELECT call_id, local_tag, subscriber, target, remote_tag, local_uri, \
                 remote_uri, remote_target, peer_proto, peer_addr, cseq, version, event_id, \
                 expires_at, peer_local FROM subscriptions ORDER BY target, subscriber",
            )
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], |row| {
                let proto: String = row.get(8)?;
                let addr: String = row.get(9)?;
                let expires_at: i64 = row.get(13)?;
                let local: Option<String> = row.get(14)?;
                Ok((
                    StoredSubscription {
                        call_id: row.get(0)?,
                        local_tag: row.get(1)?,
                        subscriber: row.get(2)?,
                        target: row.get(3)?,
                        remote_tag: row.get(4)?,
                        local_uri: row.get(5)?,
                        remote_uri: row.get(6)?,
                        remote_target: row.get(7)?,
                        peer: crate::transport::ANALOG_PEER,
                        cseq: row.get(10)?,
                        version: row.get(11)?,
                        event_id: row.get(12)?,
                        expires_at: u64::try_from(expires_at).unwrap_or(0),
                    },
                    (proto, addr, local),
                ))
            })
            .map_err(|e| self.error(e))?;
        let mut subscriptions = Vec::new();
        for row in rows {
            let (mut sub, (proto, addr, local)) = row.map_err(|e| self.error(e))?;
            // A row that does not parse (edited by hand) is skipped, not fatal.
            let Ok(addr) = addr.parse() else {
                tracing::warn!(
                    "{}: skipping the subscription of {} to {} with bad address {addr:?}",
                    self.path.display(),
                    sub.subscriber,
                    sub.target
                );
                continue;
            };
            sub.peer = super::stored_peer(&proto, addr, local.as_deref());
            subscriptions.push(sub);
        }
        Ok(subscriptions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Protocol;

    #[test]
    fn subscriptions_survive_reopening_and_expired_ones_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.db");
        let mut sub = StoredSubscription {
            subscriber: "202".into(),
            target: "201".into(),
            call_id: "sub1".into(),
            local_tag: "ours".into(),
            remote_tag: "theirs".into(),
            local_uri: "<sip:201@127.0.0.1>".into(),
            remote_uri: "<sip:202@127.0.0.1>".into(),
            remote_target: "sip:202@127.0.0.1:5072".into(),
            peer: Peer {
                protocol: Protocol::Tcp,
                addr: "127.0.0.1:5072".parse().unwrap(),
                local: "127.0.0.1:5060".parse().unwrap(),
            },
            cseq: 3,
            version: 2,
            event_id: Some("x".into()),
            expires_at: 1_000,
        };
        {
            let mut store = Store::open(&path).unwrap();
            store.save_subscription(&sub).unwrap();
            sub.cseq = 4;
            store.save_subscription(&sub).unwrap();
            let mut gone = sub.clone();
            gone.call_id = "sub2".into();
            gone.expires_at = 10;
            store.save_subscription(&gone).unwrap();
            let mut deleted = sub.clone();
            deleted.call_id = "sub3".into();
            store.save_subscription(&deleted).unwrap();
            store.delete_subscription("sub3", "ours").unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.load_subscriptions(500).unwrap(), vec![sub]);
    }
}
