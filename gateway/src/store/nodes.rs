//! Several gateway nodes on one database: each node's heartbeat and advertised SIP address
//! (`nodes`), the registrations other nodes hold (a call for such a phone is routed through
//! its node), and the takeover of a node that stopped heartbeating: exactly one survivor
//! wins the conditional `DELETE ... RETURNING` of the dead node's row, and in the same
//! transaction removes its registrations and gives its calls `interrupted` CDRs (the crash
//! recovery of a restarting node, [`super::CallStore::recover_interrupted`]) and deletes
//! its BLF dialogs. Each heartbeat also reads which extensions the other nodes' BLF keys
//! watch, and deletes old BLF tombstones (`super::blf`).

use super::calls::recover;
use super::sql::{Db, Param};
use super::{stored_peer, Interrupted, Store, StoreError};
use crate::transport::Peer;
use std::net::SocketAddr;

/// What one node left behind when it was taken over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenOver {
    /// The dead node's id.
    pub node: String,
    /// Its registrations, removed.
    pub registrations: usize,
    /// Its calls, closed with `interrupted` CDRs.
    pub interrupted: Interrupted,
}

/// The outcome of a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// This node's row was gone: another node took it over while it was silent, so its
    /// registrations are no longer in the database (the engine writes them again).
    pub revived: bool,
    /// The dead nodes this heartbeat took over (none, almost always).
    pub taken_over: Vec<TakenOver>,
    /// The other nodes alive after it, with their advertised addresses; None when the
    /// heartbeat failed (nothing is known then). A node missing here that was there
    /// before was taken over (by this node or another).
    pub others: Option<Vec<(String, SocketAddr)>>,
    /// The extensions that subscriptions kept by the other live nodes watch (BLF across
    /// nodes: this node writes its dialogs of those for them, `super::blf`); None when the
    /// heartbeat failed.
    pub watched: Option<Vec<String>>,
}

/// A phone registered through another live node: calls for it go to that node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteBinding {
    /// The extension.
    pub aor: String,
    /// The node holding the phone's flow.
    pub node: String,
    /// The node's advertised SIP address (over UDP; the local address is left
    /// unspecified for the runtime to fill in).
    pub peer: Peer,
}

impl Store {
    /// Records that `node` is alive at `now_ms` and reachable at `sip_addr` (start).
    pub fn register_node(
        &mut self,
        node: &str,
        sip_addr: SocketAddr,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let addr = sip_addr.to_string();
        self.db
            .execute(
                "INSERT INTO nodes (node_id, sip_addr, heartbeat_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (node_id) DO UPDATE SET sip_addr = excluded.sip_addr, \
                 heartbeat_ms = excluded.heartbeat_ms",
                &[node.into(), (&addr).into(), now_ms.into()],
            )
            .map(drop)
    }

    /// `node`'s heartbeat at `now_ms`, then the takeover of every other node silent for
    /// more than `takeover_ms`: its row is deleted conditionally (`DELETE ... RETURNING`,
    /// so among survivors heartbeating at once exactly one gets it), its registrations
    /// removed and its calls given `interrupted` CDRs, all in one transaction. A node that
    /// was silent that long itself (the database was unreachable for everyone, or this
    /// node stalled, or it was taken over) takes over nobody this time: the others' old
    /// heartbeats say nothing about them then, and they beat again within an interval.
    pub fn heartbeat(
        &mut self,
        node: &str,
        sip_addr: SocketAddr,
        now_ms: u64,
        takeover_ms: u64,
    ) -> Result<Heartbeat, StoreError> {
        let db = self.db.as_ref();
        let addr = sip_addr.to_string();
        db.atomically(|| {
            let previous = db.first(
                "SELECT heartbeat_ms FROM nodes WHERE node_id = ?1",
                &[node.into()],
                |row| row.u64(0),
            )?;
            let may_judge = previous.is_some_and(|at| now_ms.saturating_sub(at) <= takeover_ms);
            let updated = db.execute(
                "UPDATE nodes SET heartbeat_ms = ?2, sip_addr = ?3 WHERE node_id = ?1",
                &[node.into(), now_ms.into(), (&addr).into()],
            )?;
            let revived = updated == 0;
            if revived {
                db.execute(
                    "INSERT INTO nodes (node_id, sip_addr, heartbeat_ms) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (node_id) DO UPDATE SET sip_addr = excluded.sip_addr, \
                     heartbeat_ms = excluded.heartbeat_ms",
                    &[node.into(), (&addr).into(), now_ms.into()],
                )?;
            }
            let cutoff = now_ms.saturating_sub(takeover_ms);
            let dead = if may_judge {
                db.rows(
                    "DELETE FROM nodes WHERE node_id != ?1 AND heartbeat_ms < ?2 RETURNING node_id",
                    &[node.into(), cutoff.into()],
                    |row| row.text(0),
                )?
            } else {
                Vec::new()
            };
            let mut taken_over = Vec::new();
            for dead in dead {
                let registrations = db.execute(
                    "DELETE FROM registrations WHERE node = ?1",
                    &[Param::Text(&dead)],
                )?;
                let interrupted = recover(db, &dead)?;
                // Its calls are over: no key stays lit by them.
                db.execute(
                    &format!(
                        "DELETE FROM blf_dialogs WHERE {}",
                        super::blf::of_node("?1")
                    ),
                    &[Param::Text(&dead)],
                )?;
                taken_over.push(TakenOver {
                    node: dead,
                    registrations,
                    interrupted,
                });
            }
            let others = db
                .rows(
                    "SELECT node_id, sip_addr FROM nodes WHERE node_id != ?1 ORDER BY node_id",
                    &[node.into()],
                    |row| Ok((row.text(0)?, row.text(1)?)),
                )?
                .into_iter()
                .filter_map(|(id, addr)| Some((id, addr.parse().ok()?)))
                .collect();
            db.execute(
                "DELETE FROM blf_dialogs WHERE dialogs = '' AND updated_ms < ?1",
                &[now_ms.saturating_sub(super::blf::TOMBSTONE_KEEP_MS).into()],
            )?;
            // Those of live nodes (a dead node's are kept for its restart).
            let watched = db.rows(
                "SELECT DISTINCT target FROM subscriptions WHERE expires_at > ?2 AND \
                 (node IS NULL OR (node != ?1 AND node IN (SELECT node_id FROM nodes))) \
                 ORDER BY target",
                &[node.into(), (now_ms / 1000).into()],
                |row| row.text(0),
            )?;
            Ok(Heartbeat {
                revived,
                taken_over,
                others: Some(others),
                watched: Some(watched),
            })
        })
    }

    /// The bindings of `aors` that other nodes than `node` hold and that are unexpired at
    /// `now_ms`, one per extension and node, from nodes that heartbeated within
    /// `takeover_ms`.
    pub fn remote_bindings(
        &self,
        node: &str,
        aors: &[String],
        now_ms: u64,
        takeover_ms: u64,
    ) -> Result<Vec<RemoteBinding>, StoreError> {
        if aors.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (0..aors.len()).map(|i| format!("?{}", i + 4)).collect();
        let sql = format!(
            "SELECT DISTINCT r.aor, r.node, n.sip_addr FROM registrations r \
             JOIN nodes n ON n.node_id = r.node \
             WHERE r.node != ?1 AND r.expires_at > ?2 AND n.heartbeat_ms >= ?3 \
             AND r.aor IN ({}) ORDER BY r.aor, r.node",
            placeholders.join(", ")
        );
        let mut params: Vec<Param<'_>> = vec![
            node.into(),
            (now_ms / 1000).into(),
            now_ms.saturating_sub(takeover_ms).into(),
        ];
        params.extend(aors.iter().map(Param::from));
        let rows = self.db.rows(&sql, &params, |row| {
            Ok((row.text(0)?, row.text(1)?, row.text(2)?))
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(aor, node, addr)| {
                let Ok(addr) = addr.parse::<SocketAddr>() else {
                    tracing::warn!(
                        "{}: node {node} advertises a bad SIP address {addr:?}",
                        self.name()
                    );
                    return None;
                };
                Some(RemoteBinding {
                    aor,
                    node,
                    peer: stored_peer("udp", addr, None),
                })
            })
            .collect())
    }

    /// Every node row: id, advertised address, last heartbeat (Unix ms), by id.
    pub fn nodes(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        self.db.rows(
            "SELECT node_id, sip_addr, heartbeat_ms FROM nodes ORDER BY node_id",
            &[],
            |row| Ok((row.text(0)?, row.text(1)?, row.u64(2)?)),
        )
    }
}

/// The advertised SIP address of `node`, if it has a row (and a readable address).
pub(super) fn node_address(db: &dyn Db, node: &str) -> Result<Option<SocketAddr>, StoreError> {
    let addr = db.first(
        "SELECT sip_addr FROM nodes WHERE node_id = ?1",
        &[node.into()],
        |row| row.text(0),
    )?;
    Ok(addr.and_then(|addr| addr.parse().ok()))
}
