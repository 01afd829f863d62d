//! Call contexts (what a pickup needs to know about a ringing call), the atomic claim that
//! lets exactly one picker win, call detail records and failed pickups. What a crash must not
//! lose is in the context before the crash: who answered and when, and the last time the
//! call was known to be up; the next start turns each context left behind into a CDR.
//!
//! The same SQL runs on SQLite and PostgreSQL, and keeps the guarantee across connections
//! (nodes): the claim is one conditional `UPDATE ... WHERE state = 'ringing' ... RETURNING`
//! on a row chosen in the same statement (PostgreSQL adds `FOR UPDATE SKIP LOCKED`).

use super::nodes::node_address;
use super::sql::{ColumnError, Db, Param, Row};
use super::{Store, StoreError};

/// A leg of a ringing call, by its dialog identifiers (the gateway's side of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegIds {
    /// Call-ID of the leg.
    pub call_id: String,
    /// The gateway's tag on that leg.
    pub local_tag: String,
    /// The far end's tag, once it answered with one.
    pub remote_tag: Option<String>,
}

/// Everything a pickup needs about a ringing call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    /// Unique key of the call (node + sequence).
    pub call_key: String,
    /// The node that owns the call.
    pub node: String,
    /// Caller's display name, if any.
    pub caller_display: Option<String>,
    /// Caller's number (extension, analog port or PSTN number).
    pub caller_number: String,
    /// Caller's URI.
    pub caller_uri: String,
    /// The caller's SDP offer.
    pub caller_offer: Vec<u8>,
    /// The called extension.
    pub called: String,
    /// The called extension's call groups.
    pub call_groups: Vec<String>,
    /// Every ringing leg.
    pub legs: Vec<LegIds>,
    /// When ringing started (Unix milliseconds).
    pub ring_started_ms: u64,
}

/// Which ringing call a picker asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickupTarget {
    /// `*8`: the oldest ringing call whose callee's call groups meet the picker's pickup groups.
    Group,
    /// `**<ext>`: the call ringing this extension.
    Directed(String),
    /// INVITE with Replaces (BLF key): the call with this leg.
    Leg(NamedLeg),
}

/// A leg an INVITE with Replaces names: its Call-ID and its two tags, in either order (a
/// leg whose far end has sent no tag yet matches on the gateway's tag alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedLeg {
    /// The leg's Call-ID.
    pub call_id: String,
    /// Its two tags, in either order.
    pub tags: [String; 2],
}

impl PickupTarget {
    /// How a pickup of this target takes the call, as CDRs name it.
    pub fn method(&self) -> PickupMethod {
        match self {
            PickupTarget::Group => PickupMethod::Group,
            PickupTarget::Directed(_) => PickupMethod::Directed,
            PickupTarget::Leg(_) => PickupMethod::Replaces,
        }
    }
}

/// A pickup's claim on a ringing call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    /// The picking extension.
    pub picker: String,
    /// Its pickup groups.
    pub pickup_groups: Vec<String>,
    /// What it asks for.
    pub target: PickupTarget,
    /// This node.
    pub node: String,
    /// Unix milliseconds of the claim.
    pub now_ms: u64,
    /// In a cluster, the calls of other nodes that heartbeat at or after this time (Unix
    /// ms) may be claimed too (the picker's node forwards the pickup to the owner); None:
    /// only this node's calls.
    pub other_nodes_seen_since_ms: Option<u64>,
}

/// The result of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This picker won the call.
    Claimed(Box<CallContext>),
    /// This picker won a call that rings on another node (`context.node`), reached at
    /// `owner`: the pickup is forwarded there.
    Elsewhere {
        /// The call.
        context: Box<CallContext>,
        /// The owner node's advertised SIP address.
        owner: std::net::SocketAddr,
    },
    /// The call a directed or BLF pickup names rings, but the picker's groups do not allow
    /// it (a group pickup gets [`ClaimOutcome::NothingRinging`] instead).
    NotAllowed,
    /// Nothing (left) to pick up.
    NothingRinging,
    /// The database could not answer (unreachable, or the claim's transaction failed): the
    /// picker is told to try again later (503), not that nothing rings.
    StoreFailed,
}

/// How a call was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickupMethod {
    /// Answered by the called extension.
    None,
    /// Group pickup (`*8`).
    Group,
    /// Directed pickup (`**<ext>`).
    Directed,
    /// INVITE with Replaces (BLF key).
    Replaces,
}

impl PickupMethod {
    /// The word stored in CDRs.
    pub fn as_str(self) -> &'static str {
        match self {
            PickupMethod::None => "none",
            PickupMethod::Group => "group",
            PickupMethod::Directed => "directed",
            PickupMethod::Replaces => "replaces",
        }
    }

    /// The method [`PickupMethod::as_str`] names.
    pub fn parse(word: &str) -> Option<PickupMethod> {
        [
            PickupMethod::None,
            PickupMethod::Group,
            PickupMethod::Directed,
            PickupMethod::Replaces,
        ]
        .into_iter()
        .find(|method| method.as_str() == word)
    }
}

/// Who answered a call and who pays for it: stored when the call is answered, so that a
/// crash leaves enough to bill it ([`CallStore::recover_interrupted`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// When the call was answered (Unix ms).
    pub answer_ms: u64,
    /// Whose answer connected the caller: the callee, or the picker who took the call.
    pub answered_by: String,
    /// Who pays: the picker when picked up, else the caller.
    pub billed: String,
    /// How it was answered.
    pub pickup_method: PickupMethod,
    /// When the pickup that answered claimed the call (Unix ms).
    pub pickup_ms: Option<u64>,
}

/// A pickup that claimed a call and did not take it (an auditor asks for them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedPickup {
    /// The picking extension.
    pub picker: String,
    /// group, directed, replaces.
    pub method: String,
    /// When it claimed the call (Unix ms).
    pub claimed_ms: u64,
    /// When it failed (Unix ms).
    pub failed_ms: u64,
    /// Why: the picker's final response ("603 Decline"), "timeout", "the picker hung up"...
    pub reason: String,
}

/// The calls a run left behind, recorded by [`CallStore::recover_interrupted`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Interrupted {
    /// Calls that were up: billed up to their last mark.
    pub answered: usize,
    /// Calls that were still ringing or being picked up.
    pub unanswered: usize,
}

/// The disposition of a call the gateway stopped under (crash, kill, power cut).
pub const INTERRUPTED: &str = "interrupted";

/// A call detail record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cdr {
    /// The call's key.
    pub call_key: String,
    /// Caller number.
    pub caller: String,
    /// Called extension.
    pub called: String,
    /// Who answered (the callee, or the picker).
    pub answered_by: Option<String>,
    /// none, group, directed, replaces.
    pub pickup_method: String,
    /// Who pays: the picker when picked up, else the caller.
    pub billed: Option<String>,
    /// Ringing started (Unix ms).
    pub ring_start_ms: u64,
    /// Pickup claimed (Unix ms).
    pub pickup_ms: Option<u64>,
    /// Answered (Unix ms).
    pub answer_ms: Option<u64>,
    /// Ended (Unix ms).
    pub end_ms: u64,
    /// Talk time in ms (0 if never answered).
    pub duration_ms: u64,
    /// answered, no-answer, busy, cancelled, failed, interrupted ([`INTERRUPTED`]).
    pub disposition: String,
    /// What ended it, e.g. "BYE from caller", "480 no answer".
    pub hangup_cause: String,
    /// The node that handled the call.
    pub node: String,
    /// Media counters of an anchored call (per side: packets, lost, jitter), once known.
    pub media: Option<String>,
}

/// Persistence of call contexts and CDRs, in SQLite or PostgreSQL.
pub trait CallStore {
    /// Records a call that starts ringing.
    fn insert_ringing(&mut self, context: &CallContext) -> Result<(), StoreError>;
    /// Records the far end's tag of a ringing leg (needed to match a BLF Replaces).
    fn set_leg_remote_tag(&mut self, call_id: &str, remote_tag: &str) -> Result<(), StoreError>;
    /// Atomically claims one ringing call for a picker: exactly one concurrent claim wins.
    fn claim(&mut self, request: &ClaimRequest) -> Result<ClaimOutcome, StoreError>;
    /// The claim another node made for `picker` on a call of this node (`node`): the
    /// forwarded pickup it sent here. [`ClaimOutcome::Claimed`] while the claim stands,
    /// else [`ClaimOutcome::NothingRinging`].
    fn claimed_by_other_node(
        &mut self,
        call_key: &str,
        picker: &str,
        node: &str,
    ) -> Result<ClaimOutcome, StoreError>;
    /// Puts a claimed call back to ringing (the pickup failed and the callee rings again).
    fn release(&mut self, call_key: &str) -> Result<(), StoreError>;
    /// Marks a call answered (no longer pickable), with who answered and who pays.
    fn mark_answered(&mut self, call_key: &str, answer: &Answer) -> Result<(), StoreError>;
    /// Records that the answered calls of `node` are still up at `now_ms`: a crash loses
    /// no talk time before it. Returns how many calls were marked.
    fn mark_up(&mut self, node: &str, now_ms: u64) -> Result<usize, StoreError>;
    /// Records a pickup of the call that failed.
    fn record_failed_pickup(
        &mut self,
        call_key: &str,
        failed: &FailedPickup,
    ) -> Result<(), StoreError>;
    /// The failed pickups of a call, oldest first.
    fn failed_pickups(&self, call_key: &str) -> Result<Vec<FailedPickup>, StoreError>;
    /// Gives every call a previous run of `node` left behind (it stopped without ending them)
    /// a CDR marked [`INTERRUPTED`] and forgets its context: an answered call is billed
    /// from its answer to its last mark; a pickup in progress is recorded as failed.
    fn recover_interrupted(&mut self, node: &str) -> Result<Interrupted, StoreError>;
    /// Commits a CDR and forgets its call's context, in one transaction: after a crash the
    /// call has either its CDR or a context to recover.
    fn write_cdr(&mut self, cdr: &Cdr) -> Result<(), StoreError>;
    /// The most recent CDRs, newest first.
    fn recent_cdrs(&self, limit: usize) -> Result<Vec<Cdr>, StoreError> {
        self.cdrs_since(0, limit)
    }
    /// The most recent `limit` CDRs of calls that started ringing at or after `since_ms`
    /// (Unix ms), newest first.
    fn cdrs_since(&self, since_ms: u64, limit: usize) -> Result<Vec<Cdr>, StoreError>;
    /// Adds the media counters to a call's CDR.
    fn set_cdr_media(&mut self, call_key: &str, media: &str) -> Result<(), StoreError>;
}

const CONTEXT_COLUMNS: &str = "call_key, node, caller_display, caller_number, caller_uri, \
     caller_offer, called, ring_started_ms";

fn context_from_row(row: &Row) -> Result<CallContext, ColumnError> {
    Ok(CallContext {
        call_key: row.text(0)?,
        node: row.text(1)?,
        caller_display: row.opt_text(2)?,
        caller_number: row.text(3)?,
        caller_uri: row.text(4)?,
        caller_offer: row.blob(5)?,
        called: row.text(6)?,
        ring_started_ms: row.u64(7)?,
        call_groups: Vec::new(),
        legs: Vec::new(),
    })
}

/// The columns [`interrupted_from_row`] reads.
const INTERRUPTED_COLUMNS: &str = "call_key, caller_number, called, ring_started_ms, state, \
     claimed_by, claimed_at_ms, claim_method, answer_ms, answered_by, billed, pickup_method, \
     pickup_ms, up_ms";

/// The CDR of a call left behind by a run that stopped, and its pickup in progress, if any.
fn interrupted_from_row(row: &Row, node: &str) -> Result<(Cdr, Option<FailedPickup>), ColumnError> {
    let call_key = row.text(0)?;
    let caller = row.text(1)?;
    let ring_start_ms = row.u64(3)?;
    let state = row.text(4)?;
    let claimed_ms = row.opt_u64(6)?;
    // A context written before schema 4 has no answer time: it counts as unanswered.
    let answer_ms = row.opt_u64(8)?;
    let mut cdr = Cdr {
        call_key,
        caller: caller.clone(),
        called: row.text(2)?,
        answered_by: None,
        pickup_method: PickupMethod::None.as_str().into(),
        billed: Some(caller),
        ring_start_ms,
        pickup_ms: None,
        answer_ms,
        end_ms: claimed_ms.unwrap_or(ring_start_ms).max(ring_start_ms),
        duration_ms: 0,
        disposition: INTERRUPTED.into(),
        hangup_cause: "the gateway stopped while the call rang".into(),
        node: node.into(),
        media: None,
    };
    if let Some(answer_ms) = answer_ms {
        let up_to = row.opt_u64(13)?.unwrap_or(answer_ms).max(answer_ms);
        cdr.answered_by = row.opt_text(9)?;
        cdr.billed = row.opt_text(10)?.or(cdr.billed);
        if let Some(method) = row.opt_text(11)? {
            cdr.pickup_method = method;
        }
        cdr.pickup_ms = row.opt_u64(12)?;
        cdr.end_ms = up_to;
        cdr.duration_ms = up_to - answer_ms;
        cdr.hangup_cause =
            "the gateway stopped while the call was up (talk time to its last mark)".into();
        return Ok((cdr, None));
    }
    let failed = match (state.as_str(), row.opt_text(5)?, claimed_ms) {
        ("claimed", Some(picker), Some(claimed_ms)) => Some(FailedPickup {
            picker,
            method: row.opt_text(7)?.unwrap_or_else(|| "unknown".into()),
            claimed_ms,
            failed_ms: claimed_ms,
            reason: "the gateway stopped during the pickup".into(),
        }),
        _ => None,
    };
    Ok((cdr, failed))
}

/// Inserts a call's CDR. A call has one: written again (a replay from the spool), the
/// first record stays, unless it is the [`INTERRUPTED`] guess a takeover or a restart wrote
/// while the node that had the call could not reach the database: the node's real record
/// replaces it.
fn insert_cdr(db: &dyn Db, cdr: &Cdr) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO cdrs (call_key, caller, called, answered_by, pickup_method, billed, ring_start_ms, \
         pickup_ms, answer_ms, end_ms, duration_ms, disposition, hangup_cause, node, media) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
         ON CONFLICT (call_key) DO UPDATE SET caller = excluded.caller, called = excluded.called, \
         answered_by = excluded.answered_by, pickup_method = excluded.pickup_method, \
         billed = excluded.billed, ring_start_ms = excluded.ring_start_ms, \
         pickup_ms = excluded.pickup_ms, answer_ms = excluded.answer_ms, end_ms = excluded.end_ms, \
         duration_ms = excluded.duration_ms, disposition = excluded.disposition, \
         hangup_cause = excluded.hangup_cause, node = excluded.node, media = excluded.media \
         WHERE cdrs.disposition = 'interrupted'",
        &cdr_params(cdr),
    )
    .map(drop)
}

/// A CDR's fields as `?1`..`?15`, in the order of the `cdrs` columns from `call_key` to
/// `media` (the spool keeps them in the same order).
pub(super) fn cdr_params(cdr: &Cdr) -> [Param<'_>; 15] {
    [
        (&cdr.call_key).into(),
        (&cdr.caller).into(),
        (&cdr.called).into(),
        (&cdr.answered_by).into(),
        (&cdr.pickup_method).into(),
        (&cdr.billed).into(),
        cdr.ring_start_ms.into(),
        cdr.pickup_ms.into(),
        cdr.answer_ms.into(),
        cdr.end_ms.into(),
        cdr.duration_ms.into(),
        (&cdr.disposition).into(),
        (&cdr.hangup_cause).into(),
        (&cdr.node).into(),
        (&cdr.media).into(),
    ]
}

fn insert_failed_pickup(
    db: &dyn Db,
    call_key: &str,
    failed: &FailedPickup,
) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO failed_pickups (call_key, picker, method, claimed_ms, failed_ms, reason) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        &[
            call_key.into(),
            (&failed.picker).into(),
            (&failed.method).into(),
            failed.claimed_ms.into(),
            failed.failed_ms.into(),
            (&failed.reason).into(),
        ],
    )
    .map(drop)
}

/// Deletes a call's context (its groups, legs and row).
fn forget_context(db: &dyn Db, call_key: &str) -> Result<(), StoreError> {
    for sql in [
        "DELETE FROM call_groups WHERE call_key = ?1",
        "DELETE FROM call_legs WHERE call_key = ?1",
        "DELETE FROM call_contexts WHERE call_key = ?1",
    ] {
        db.execute(sql, &[call_key.into()])?;
    }
    Ok(())
}

/// [`CallStore::recover_interrupted`] in one transaction.
pub(super) fn recover(db: &dyn Db, node: &str) -> Result<Interrupted, StoreError> {
    db.atomically(|| {
        let calls = db.rows(
            &format!(
                "SELECT {INTERRUPTED_COLUMNS} FROM call_contexts WHERE node = ?1 \
                 ORDER BY ring_started_ms, call_key"
            ),
            &[node.into()],
            |row| interrupted_from_row(row, node),
        )?;
        let mut found = Interrupted::default();
        for (cdr, failed) in &calls {
            if let Some(failed) = failed {
                insert_failed_pickup(db, &cdr.call_key, failed)?;
            }
            insert_cdr(db, cdr)?;
            forget_context(db, &cdr.call_key)?;
            match cdr.answer_ms {
                Some(_) => found.answered += 1,
                None => found.unanswered += 1,
            }
        }
        Ok(found)
    })
}

/// Runs `work` with every commit synced to disk (billing records written outside the
/// writer's batches, whose sync thread syncs the WAL instead).
fn fully_synced<T>(
    db: &dyn Db,
    work: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    db.set_full_sync(true)?;
    let result = work();
    let restored = db.set_full_sync(false);
    let value = result?;
    restored?;
    Ok(value)
}

impl Store {
    fn load_details(&self, mut context: CallContext) -> Result<CallContext, StoreError> {
        let key = [Param::Text(&context.call_key)];
        context.call_groups = self.db.rows(
            "SELECT group_name FROM call_groups WHERE call_key = ?1 ORDER BY group_name",
            &key,
            |row| row.text(0),
        )?;
        context.legs = self.db.rows(
            "SELECT call_id, local_tag, remote_tag FROM call_legs WHERE call_key = ?1 ORDER BY call_id",
            &key,
            |row| {
                Ok(LegIds {
                    call_id: row.text(0)?,
                    local_tag: row.text(1)?,
                    remote_tag: row.opt_text(2)?,
                })
            },
        )?;
        Ok(context)
    }

    /// Runs one statement.
    fn run(&self, sql: &str, params: &[Param<'_>]) -> Result<(), StoreError> {
        self.db.execute(sql, params).map(drop)
    }
}

impl CallStore for Store {
    fn insert_ringing(&mut self, context: &CallContext) -> Result<(), StoreError> {
        let db = self.db.as_ref();
        let key = Param::Text(&context.call_key);
        db.atomically(|| {
            // A context of the same key is replaced whole.
            db.execute("DELETE FROM call_contexts WHERE call_key = ?1", &[key])?;
            db.execute(
                "INSERT INTO call_contexts (call_key, node, state, caller_display, caller_number, \
                 caller_uri, caller_offer, called, ring_started_ms) VALUES (?1, ?2, 'ringing', ?3, ?4, ?5, ?6, ?7, ?8)",
                &[
                    key,
                    (&context.node).into(),
                    (&context.caller_display).into(),
                    (&context.caller_number).into(),
                    (&context.caller_uri).into(),
                    Param::Blob(&context.caller_offer),
                    (&context.called).into(),
                    context.ring_started_ms.into(),
                ],
            )?;
            for group in &context.call_groups {
                db.execute(
                    "INSERT INTO call_groups (call_key, group_name) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                    &[key, group.into()],
                )?;
            }
            for leg in &context.legs {
                db.execute(
                    "INSERT INTO call_legs (call_key, call_id, local_tag, remote_tag) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (call_key, call_id) DO UPDATE SET local_tag = excluded.local_tag, \
                     remote_tag = excluded.remote_tag",
                    &[
                        key,
                        (&leg.call_id).into(),
                        (&leg.local_tag).into(),
                        (&leg.remote_tag).into(),
                    ],
                )?;
            }
            Ok(())
        })
    }

    fn set_leg_remote_tag(&mut self, call_id: &str, remote_tag: &str) -> Result<(), StoreError> {
        self.run(
            "UPDATE call_legs SET remote_tag = ?2 WHERE call_id = ?1",
            &[call_id.into(), remote_tag.into()],
        )
    }

    fn claim(&mut self, request: &ClaimRequest) -> Result<ClaimOutcome, StoreError> {
        // Which ringing calls the target names, regardless of groups.
        // `?3`, `?5` and `?6` are always referenced so every statement binds the same
        // parameters.
        let (filter, target_value, tags) = match &request.target {
            PickupTarget::Group => ("?3 = '' AND ?5 = ?6", "", ["", ""]),
            PickupTarget::Directed(ext) => ("c.called = ?3 AND ?5 = ?6", ext.as_str(), ["", ""]),
            PickupTarget::Leg(leg) => (
                "EXISTS (SELECT 1 FROM call_legs l WHERE l.call_key = c.call_key AND l.call_id = ?3 \
                 AND ((l.local_tag = ?5 AND (l.remote_tag IS NULL OR l.remote_tag = ?6)) \
                 OR (l.local_tag = ?6 AND (l.remote_tag IS NULL OR l.remote_tag = ?5))))",
                leg.call_id.as_str(),
                [leg.tags[0].as_str(), leg.tags[1].as_str()],
            ),
        };
        // This node's calls, and in a cluster those of the other live nodes (`?4`).
        let candidates = format!(
            "FROM call_contexts c WHERE c.state = 'ringing' AND (c.node = ?1 OR c.node IN \
             (SELECT n.node_id FROM nodes n WHERE n.heartbeat_ms >= ?4)) AND c.called != ?2 \
             AND c.caller_number != ?2 AND ({filter})"
        );
        // The picker's groups meet the call's, with the groups bound from `?first` on.
        let eligible = |first: usize| {
            if request.pickup_groups.is_empty() {
                return "0 = 1".to_string();
            }
            let placeholders: Vec<String> = (0..request.pickup_groups.len())
                .map(|i| format!("?{}", i + first))
                .collect();
            format!(
                "EXISTS (SELECT 1 FROM call_groups g WHERE g.call_key = c.call_key AND g.group_name IN ({}))",
                placeholders.join(", ")
            )
        };
        let mut values: Vec<Param<'_>> = vec![
            (&request.node).into(),
            (&request.picker).into(),
            target_value.into(),
            request.other_nodes_seen_since_ms.unwrap_or(u64::MAX).into(),
            tags[0].into(),
            tags[1].into(),
            (&request.picker).into(),
            request.now_ms.into(),
            request.target.method().as_str().into(),
        ];
        values.extend(request.pickup_groups.iter().map(Param::from));
        let lock = self.db.dialect().claim_lock();
        let claim = format!(
            "UPDATE call_contexts SET state = 'claimed', claimed_by = ?7, claimed_at_ms = ?8, claim_method = ?9 \
             WHERE state = 'ringing' AND call_key = (SELECT c.call_key {candidates} AND {} \
             ORDER BY c.ring_started_ms, c.call_key LIMIT 1{lock}) RETURNING {CONTEXT_COLUMNS}",
            eligible(10)
        );
        // Whether a call the target names rings that the picker's groups do not allow (a
        // call the picker may take that rings still is one a concurrent claim holds).
        let forbidden = format!("SELECT COUNT(*) {candidates} AND NOT ({})", eligible(7));
        let forbidden_values: Vec<Param<'_>> = values[..6]
            .iter()
            .copied()
            .chain(request.pickup_groups.iter().map(Param::from))
            .collect();
        // Alone: a transaction of its own (SQLite takes the write lock before reading); in
        // a batch a savepoint of it. The claim itself is one UPDATE, atomic by itself.
        let db = self.db.as_ref();
        let outcome = db.atomically(|| {
            Ok(match db.first(&claim, &values, context_from_row)? {
                Some(context) if context.node == request.node => {
                    ClaimOutcome::Claimed(Box::new(context))
                }
                // The owner's row was read by the claim in this same transaction.
                Some(context) => match node_address(db, &context.node)? {
                    Some(owner) => ClaimOutcome::Elsewhere {
                        context: Box::new(context),
                        owner,
                    },
                    None => return Err(StoreError::NodeVanished(context.node)),
                },
                // A group pickup names no call: one the picker may not take is none of its
                // business, so it hears what it would hear if nothing rang (no leak of calls).
                None if request.target == PickupTarget::Group => ClaimOutcome::NothingRinging,
                None => {
                    let forbidden = db
                        .first(&forbidden, &forbidden_values, |row| row.int(0))?
                        .unwrap_or(0);
                    if forbidden > 0 {
                        ClaimOutcome::NotAllowed
                    } else {
                        ClaimOutcome::NothingRinging
                    }
                }
            })
        })?;
        match outcome {
            ClaimOutcome::Claimed(context) => Ok(ClaimOutcome::Claimed(Box::new(
                self.load_details(*context)?,
            ))),
            ClaimOutcome::Elsewhere { context, owner } => Ok(ClaimOutcome::Elsewhere {
                context: Box::new(self.load_details(*context)?),
                owner,
            }),
            other => Ok(other),
        }
    }

    fn claimed_by_other_node(
        &mut self,
        call_key: &str,
        picker: &str,
        node: &str,
    ) -> Result<ClaimOutcome, StoreError> {
        let claimed = self.db.first(
            &format!(
                "SELECT {CONTEXT_COLUMNS} FROM call_contexts WHERE call_key = ?1 \
                 AND state = 'claimed' AND claimed_by = ?2 AND node = ?3"
            ),
            &[call_key.into(), picker.into(), node.into()],
            context_from_row,
        )?;
        Ok(match claimed {
            Some(context) => ClaimOutcome::Claimed(Box::new(self.load_details(context)?)),
            None => ClaimOutcome::NothingRinging,
        })
    }

    fn release(&mut self, call_key: &str) -> Result<(), StoreError> {
        self.run(
            "UPDATE call_contexts SET state = 'ringing', claimed_by = NULL, claimed_at_ms = NULL, \
             claim_method = NULL WHERE call_key = ?1",
            &[call_key.into()],
        )
    }

    fn mark_answered(&mut self, call_key: &str, answer: &Answer) -> Result<(), StoreError> {
        self.run(
            "UPDATE call_contexts SET state = 'answered', answer_ms = ?2, up_ms = ?2, answered_by = ?3, \
             billed = ?4, pickup_method = ?5, pickup_ms = ?6 WHERE call_key = ?1",
            &[
                call_key.into(),
                answer.answer_ms.into(),
                (&answer.answered_by).into(),
                (&answer.billed).into(),
                answer.pickup_method.as_str().into(),
                answer.pickup_ms.into(),
            ],
        )
    }

    fn mark_up(&mut self, node: &str, now_ms: u64) -> Result<usize, StoreError> {
        self.db.execute(
            "UPDATE call_contexts SET up_ms = ?2 WHERE node = ?1 AND state = 'answered'",
            &[node.into(), now_ms.into()],
        )
    }

    fn record_failed_pickup(
        &mut self,
        call_key: &str,
        failed: &FailedPickup,
    ) -> Result<(), StoreError> {
        insert_failed_pickup(self.db.as_ref(), call_key, failed)
    }

    fn failed_pickups(&self, call_key: &str) -> Result<Vec<FailedPickup>, StoreError> {
        self.db.rows(
            "SELECT picker, method, claimed_ms, failed_ms, reason FROM failed_pickups \
             WHERE call_key = ?1 ORDER BY id",
            &[call_key.into()],
            |row| {
                Ok(FailedPickup {
                    picker: row.text(0)?,
                    method: row.text(1)?,
                    claimed_ms: row.u64(2)?,
                    failed_ms: row.u64(3)?,
                    reason: row.text(4)?,
                })
            },
        )
    }

    fn recover_interrupted(&mut self, node: &str) -> Result<Interrupted, StoreError> {
        // Billing records: synced to disk before the run goes on, like every CDR.
        let db = self.db.as_ref();
        fully_synced(db, || recover(db, node))
    }

    fn write_cdr(&mut self, cdr: &Cdr) -> Result<(), StoreError> {
        // A completed call's record must survive a power cut: sync this commit to disk when
        // it is alone (in the writer's batches the sync thread syncs the WAL instead).
        let db = self.db.as_ref();
        let write = || {
            db.atomically(|| {
                insert_cdr(db, cdr)?;
                forget_context(db, &cdr.call_key)
            })
        };
        if self.in_batch() {
            write()
        } else {
            fully_synced(db, write)
        }
    }

    fn set_cdr_media(&mut self, call_key: &str, media: &str) -> Result<(), StoreError> {
        self.run(
            "UPDATE cdrs SET media = ?2 WHERE call_key = ?1",
            &[call_key.into(), media.into()],
        )
    }

    fn cdrs_since(&self, since_ms: u64, limit: usize) -> Result<Vec<Cdr>, StoreError> {
        self.db.rows(
            "SELECT call_key, caller, called, answered_by, pickup_method, billed, ring_start_ms, pickup_ms, \
             answer_ms, end_ms, duration_ms, disposition, hangup_cause, node, media FROM cdrs \
             WHERE ring_start_ms >= ?2 ORDER BY id DESC LIMIT ?1",
            &[
                Param::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
                since_ms.into(),
            ],
            |row| {
                Ok(Cdr {
                    call_key: row.text(0)?,
                    caller: row.text(1)?,
                    called: row.text(2)?,
                    answered_by: row.opt_text(3)?,
                    pickup_method: row.text(4)?,
                    billed: row.opt_text(5)?,
                    ring_start_ms: row.u64(6)?,
                    pickup_ms: row.opt_u64(7)?,
                    answer_ms: row.opt_u64(8)?,
                    end_ms: row.u64(9)?,
                    duration_ms: row.u64(10)?,
                    disposition: row.text(11)?,
                    hangup_cause: row.text(12)?,
                    node: row.text(13)?,
                    media: row.opt_text(14)?,
                })
            },
        )
    }
}
