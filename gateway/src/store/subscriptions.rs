//! Dialog subscriptions (BLF keys) kept across a restart: the subscription dialog, its
//! expiry in Unix seconds, and the NOTIFY counters (CSeq, document version) that must keep
//! rising after the restart, so the subscriber accepts the next NOTIFY. Each is kept by the
//! node that holds it (several nodes share the table: a node restores its own, and the
//! others learn from it which extensions keys watch, `super::nodes`).

use super::blf::{notify, Notification};
use super::sql::Param;
use super::{Store, StoreError};
use crate::transport::Peer;

/// One subscription as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubscription {
    /// The node holding the subscription (its NOTIFYs come from it).
    pub node: String,
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
    /// Inserts or updates a subscription (keyed by its dialog); with PostgreSQL the other
    /// nodes are told which extension a key on `sub.node` watches ([`Notification::Watch`]).
    pub fn save_subscription(&mut self, sub: &StoredSubscription) -> Result<(), StoreError> {
        let (addr, local) = (sub.peer.addr.to_string(), sub.peer.local.to_string());
        let db = self.db.as_ref();
        let notify_others = self.blf_notify;
        let watch = Notification::Watch {
            node: sub.node.clone(),
            extension: sub.target.clone(),
        };
        let notified = db.atomically(|| {
            db.execute(
                "INSERT INTO subscriptions (call_id, local_tag, subscriber, target, \
                 remote_tag, local_uri, remote_uri, remote_target, peer_proto, peer_addr, cseq, \
                 version, event_id, expires_at, peer_local, node) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
                 ON CONFLICT (call_id, local_tag) DO UPDATE SET subscriber = excluded.subscriber, \
                 target = excluded.target, remote_tag = excluded.remote_tag, \
                 local_uri = excluded.local_uri, remote_uri = excluded.remote_uri, \
                 remote_target = excluded.remote_target, peer_proto = excluded.peer_proto, \
                 peer_addr = excluded.peer_addr, cseq = excluded.cseq, version = excluded.version, \
                 event_id = excluded.event_id, expires_at = excluded.expires_at, \
                 peer_local = excluded.peer_local, node = excluded.node",
                &[
                    (&sub.call_id).into(),
                    (&sub.local_tag).into(),
                    (&sub.subscriber).into(),
                    (&sub.target).into(),
                    (&sub.remote_tag).into(),
                    (&sub.local_uri).into(),
                    (&sub.remote_uri).into(),
                    (&sub.remote_target).into(),
                    sub.peer.protocol.uri_param().into(),
                    (&addr).into(),
                    sub.cseq.into(),
                    sub.version.into(),
                    (&sub.event_id).into(),
                    sub.expires_at.into(),
                    (&local).into(),
                    (&sub.node).into(),
                ],
            )?;
            match notify_others {
                true => notify(db, &watch),
                false => Ok(true),
            }
        })?;
        self.notifications_unsupported(notified);
        Ok(())
    }

    /// Forgets the subscription of dialog (Call-ID, our tag).
    pub fn delete_subscription(
        &mut self,
        call_id: &str,
        local_tag: &str,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "DELETE FROM subscriptions WHERE call_id = ?1 AND local_tag = ?2",
                &[Param::Text(call_id), Param::Text(local_tag)],
            )
            .map(drop)
    }

    /// Every subscription `node` holds (and those of rows from before nodes were
    /// recorded) still running at `now` (Unix seconds); the expired ones of every node are
    /// deleted on the way (their subscribers re-subscribe when they notice).
    pub fn load_subscriptions(
        &self,
        node: &str,
        now: u64,
    ) -> Result<Vec<StoredSubscription>, StoreError> {
        self.db.execute(
            "DELETE FROM subscriptions WHERE expires_at <= ?1",
            &[now.into()],
        )?;
        let rows = self.db.rows(
            "SELECT call_id, local_tag, subscriber, target, remote_tag, local_uri, \
             remote_uri, remote_target, peer_proto, peer_addr, cseq, version, event_id, \
             expires_at, peer_local FROM subscriptions WHERE node = ?1 OR node IS NULL \
             ORDER BY target, subscriber",
            &[node.into()],
            |row| {
                Ok((
                    StoredSubscription {
                        node: node.to_string(),
                        call_id: row.text(0)?,
                        local_tag: row.text(1)?,
                        subscriber: row.text(2)?,
                        target: row.text(3)?,
                        remote_tag: row.text(4)?,
                        local_uri: row.text(5)?,
                        remote_uri: row.text(6)?,
                        remote_target: row.text(7)?,
                        peer: crate::transport::ANALOG_PEER,
                        cseq: row.u32(10)?,
                        version: row.u32(11)?,
                        event_id: row.opt_text(12)?,
                        expires_at: row.u64(13)?,
                    },
                    (row.text(8)?, row.text(9)?, row.opt_text(14)?),
                ))
            },
        )?;
        let mut subscriptions = Vec::new();
        for (mut sub, (proto, addr, local)) in rows {
            // A row that does not parse (edited by hand) is skipped, not fatal.
            let Ok(addr) = addr.parse() else {
                tracing::warn!(
                    "{}: skipping the subscription of {} to {} with bad address {addr:?}",
                    self.name(),
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
