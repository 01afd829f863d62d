//! Call contexts (what a pickup needs to know about a ringing call), the atomic claim that
//! lets exactly one picker win, call detail records and failed pickups. What a crash must not
//! lose is in the context before the crash: who answered and when, and the last time the
//! call was known to be up; the next start turns each context left behind into a CDR.
//!
//! The SQL is written so that a PostgreSQL implementation of [`CallStore`] can keep the same
//! guarantee across nodes: the claim is one conditional `UPDATE ... WHERE state = 'ringing'`
//! on a row chosen in the same statement (PostgreSQL would add `FOR UPDATE SKIP LOCKED`).

use super::{cached_execute, sqlite_error, Store, StoreError};
use rusqlite::{params, params_from_iter, OptionalExtension, Row};

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
    /// INVITE with Replaces (BLF key): the call with a leg of this Call-ID.
    Leg(String),
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
    /// This node (only its calls can be picked up for now).
    pub node: String,
    /// Unix milliseconds of the claim.
    pub now_ms: u64,
}

/// The result of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This picker won the call.
    Claimed(Box<CallContext>),
    /// The call a directed or BLF pickup names rings, but the picker's groups do not allow
    /// it (a group pickup gets [`ClaimOutcome::NothingRinging`] instead).
    NotAllowed,
    /// Nothing (left) to pick up.
    NothingRinging,
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

/// Persistence of call contexts and CDRs; SQLite here, PostgreSQL for several nodes later.
pub trait CallStore {
    /// Records a call that starts ringing.
    fn insert_ringing(&mut self, context: &CallContext) -> Result<(), StoreError>;
    /// Records the far end's tag of a ringing leg (needed to match a BLF Replaces).
    fn set_leg_remote_tag(&mut self, call_id: &str, remote_tag: &str) -> Result<(), StoreError>;
    /// Atomically claims one ringing call for a picker: exactly one concurrent claim wins.
    fn claim(&mut self, request: &ClaimRequest) -> Result<ClaimOutcome, StoreError>;
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
    fn recent_cdrs(&self, limit: usize) -> Result<Vec<Cdr>, StoreError>;
    /// Adds the media counters to a call's CDR.
    fn set_cdr_media(&mut self, call_key: &str, media: &str) -> Result<(), StoreError>;
}

const CONTEXT_COLUMNS: &str = "call_key, node, caller_display, caller_number, caller_uri, \
     caller_offer, called, ring_started_ms";

fn context_from_row(row: &Row<'_>) -> rusqlite::Result<CallContext> {
    Ok(CallContext {
        call_key: row.get(0)?,
        node: row.get(1)?,
        caller_display: row.get(2)?,
        caller_number: row.get(3)?,
        caller_uri: row.get(4)?,
        caller_offer: row.get(5)?,
        called: row.get(6)?,
        ring_started_ms: u64::try_from(row.get::<_, i64>(7)?).unwrap_or(0),
        call_groups: Vec::new(),
        legs: Vec::new(),
    })
}

/// The columns [`interrupted_from_row`] reads.
const INTERRUPTED_COLUMNS: &str = "call_key, caller_number, called, ring_started_ms, state, \
     claimed_by, claimed_at_ms, claim_method, answer_ms, answered_by, billed, pickup_method, \
     pickup_ms, up_ms";

/// The CDR of a call left behind by a run that stopped, and its pickup in progress, if any.
fn interrupted_from_row(
    row: &Row<'_>,
    node: &str,
) -> rusqlite::Result<(Cdr, Option<FailedPickup>)> {
    let as_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
    let opt_u64 = |index: usize| -> rusqlite::Result<Option<u64>> {
        Ok(row.get::<_, Option<i64>>(index)?.map(as_u64))
    };
    let call_key: String = row.get(0)?;
    let caller: String = row.get(1)?;
    let ring_start_ms = as_u64(row.get(3)?);
    let state: String = row.get(4)?;
    let claimed_ms = opt_u64(6)?;
    // A context written before schema 4 has no answer time: it counts as unanswered.
    let answer_ms = opt_u64(8)?;
    let mut cdr = Cdr {
        call_key,
        caller: caller.clone(),
        called: row.get(2)?,
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
        let up_to = opt_u64(13)?.unwrap_or(answer_ms).max(answer_ms);
        cdr.answered_by = row.get(9)?;
        cdr.billed = row.get::<_, Option<String>>(10)?.or(cdr.billed);
        if let Some(method) = row.get::<_, Option<String>>(11)? {
            cdr.pickup_method = method;
        }
        cdr.pickup_ms = opt_u64(12)?;
        cdr.end_ms = up_to;
        cdr.duration_ms = up_to - answer_ms;
        cdr.hangup_cause =
            "the gateway stopped while the call was up (talk time to its last mark)".into();
        return Ok((cdr, None));
    }
    let failed = match (state.as_str(), row.get::<_, Option<String>>(5)?, claimed_ms) {
        ("claimed", Some(picker), Some(claimed_ms)) => Some(FailedPickup {
            picker,
            method: row
                .get::<_, Option<String>>(7)?
                .unwrap_or_else(|| "unknown".into()),
            claimed_ms,
            failed_ms: claimed_ms,
            reason: "the gateway stopped during the pickup".into(),
        }),
        _ => None,
    };
    Ok((cdr, failed))
}

fn insert_cdr(conn: &rusqlite::Connection, cdr: &Cdr) -> rusqlite::Result<()> {
    cached_execute(
        conn,
        "INSERT INTO cdrs (call_key, caller, called, answered_by, pickup_method, billed, ring_start_ms, \
         pickup_ms, answer_ms, end_ms, duration_ms, disposition, hangup_cause, node) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![
            cdr.call_key,
            cdr.caller,
            cdr.called,
            cdr.answered_by,
            cdr.pickup_method,
            cdr.billed,
            ms(cdr.ring_start_ms),
            opt_ms(cdr.pickup_ms),
            opt_ms(cdr.answer_ms),
            ms(cdr.end_ms),
            ms(cdr.duration_ms),
            cdr.disposition,
            cdr.hangup_cause,
            cdr.node,
        ],
    )
    .map(|_| ())
}

fn insert_failed_pickup(
    conn: &rusqlite::Connection,
    call_key: &str,
    failed: &FailedPickup,
) -> rusqlite::Result<()> {
    cached_execute(
        conn,
        "INSERT INTO failed_pickups (call_key, picker, method, claimed_ms, failed_ms, reason) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            call_key,
            failed.picker,
            failed.method,
            ms(failed.claimed_ms),
            ms(failed.failed_ms),
            failed.reason,
        ],
    )
    .map(|_| ())
}

/// Deletes a call's context (its groups, legs and row).
fn forget_context(conn: &rusqlite::Connection, call_key: &str) -> rusqlite::Result<()> {
    for sql in [
        "DELETE FROM call_groups WHERE call_key = ?1",
        "DELETE FROM call_legs WHERE call_key = ?1",
        "DELETE FROM call_contexts WHERE call_key = ?1",
    ] {
        cached_execute(conn, sql, [call_key])?;
    }
    Ok(())
}

/// [`CallStore::recover_interrupted`] in one transaction.
fn recover(conn: &mut rusqlite::Connection, node: &str) -> rusqlite::Result<Interrupted> {
    let tx = conn.transaction()?;
    let calls: Vec<(Cdr, Option<FailedPickup>)> = tx
        .prepare(&format!(
            "SELECT {INTERRUPTED_COLUMNS} FROM call_contexts WHERE node = ?1 \
             ORDER BY ring_started_ms, call_key"
        ))?
        .query_map([node], |row| interrupted_from_row(row, node))?
        .collect::<Result<_, _>>()?;
    let mut found = Interrupted::default();
    for (cdr, failed) in &calls {
        if let Some(failed) = failed {
            insert_failed_pickup(&tx, &cdr.call_key, failed)?;
        }
        insert_cdr(&tx, cdr)?;
        forget_context(&tx, &cdr.call_key)?;
        match cdr.answer_ms {
            Some(_) => found.answered += 1,
            None => found.unanswered += 1,
        }
    }
    tx.commit()?;
    Ok(found)
}

fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn opt_ms(value: Option<u64>) -> Option<i64> {
    value.map(ms)
}

impl Store {
    fn load_details(&self, mut context: CallContext) -> Result<CallContext, StoreError> {
        let sqlite = |e| self.error(e);
        let mut groups = self
            .conn
            .prepare_cached(
                "SELECT group_name FROM call_groups WHERE call_key = ?1 ORDER BY group_name",
            )
            .map_err(sqlite)?;
        context.call_groups = groups
            .query_map([&context.call_key], |row| row.get(0))
            .map_err(sqlite)?
            .collect::<Result<_, _>>()
            .map_err(sqlite)?;
        let mut legs = self
            .conn
            .prepare_cached("SELECT call_id, local_tag, remote_tag FROM call_legs WHERE call_key = ?1 ORDER BY call_id")
            .map_err(sqlite)?;
        context.legs = legs
            .query_map([&context.call_key], |row| {
                Ok(LegIds {
                    call_id: row.get(0)?,
                    local_tag: row.get(1)?,
                    remote_tag: row.get(2)?,
                })
            })
            .map_err(sqlite)?
            .collect::<Result<_, _>>()
            .map_err(sqlite)?;
        Ok(context)
    }

    /// Runs one cached statement outside any transaction of its own.
    fn run(&self, sql: &str, params: impl rusqlite::Params) -> Result<(), StoreError> {
        cached_execute(&self.conn, sql, params)
            .map(|_| ())
            .map_err(|e| self.error(e))
    }
}

impl CallStore for Store {
    fn insert_ringing(&mut self, context: &CallContext) -> Result<(), StoreError> {
        let sqlite = sqlite_error(&self.path);
        let tx = self.conn.savepoint().map_err(sqlite)?;
        cached_execute(
            &tx,
            "INSERT OR REPLACE INTO call_contexts (call_key, node, state, caller_display, caller_number, \
             caller_uri, caller_offer, called, ring_started_ms) VALUES (?1, ?2, 'ringing', ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                context.call_key,
                context.node,
                context.caller_display,
                context.caller_number,
                context.caller_uri,
                context.caller_offer,
                context.called,
                ms(context.ring_started_ms),
            ],
        )
        .map_err(sqlite)?;
        for group in &context.call_groups {
            cached_execute(
                &tx,
                "INSERT OR IGNORE INTO call_groups (call_key, group_name) VALUES (?1, ?2)",
                params![context.call_key, group],
            )
            .map_err(sqlite)?;
        }
        for leg in &context.legs {
            cached_execute(
                &tx,
                "INSERT OR REPLACE INTO call_legs (call_key, call_id, local_tag, remote_tag) VALUES (?1, ?2, ?3, ?4)",
                params![context.call_key, leg.call_id, leg.local_tag, leg.remote_tag],
            )
            .map_err(sqlite)?;
        }
        tx.commit().map_err(sqlite)
    }

    fn set_leg_remote_tag(&mut self, call_id: &str, remote_tag: &str) -> Result<(), StoreError> {
        self.run(
            "UPDATE call_legs SET remote_tag = ?2 WHERE call_id = ?1",
            params![call_id, remote_tag],
        )
    }

    fn claim(&mut self, request: &ClaimRequest) -> Result<ClaimOutcome, StoreError> {
        let sqlite = sqlite_error(&self.path);
        // Which ringing calls the target names, regardless of groups.
        let (filter, target_value) = match &request.target {
            // `?3` is always referenced so every statement binds the same parameters.
            PickupTarget::Group => ("?3 = ''", String::new()),
            PickupTarget::Directed(ext) => ("c.called = ?3", ext.clone()),
            PickupTarget::Leg(call_id) => (
                "EXISTS (SELECT 1 FROM call_legs l WHERE l.call_key = c.call_key AND l.call_id = ?3)",
                call_id.clone(),
            ),
        };
        let candidates = format!(
            "FROM call_contexts c WHERE c.state = 'ringing' AND c.node = ?1 AND c.called != ?2 \
             AND c.caller_number != ?2 AND ({filter})"
        );
        let placeholders: Vec<String> = (0..request.pickup_groups.len())
            .map(|i| format!("?{}", i + 7))
            .collect();
        let eligible = if placeholders.is_empty() {
            "0 = 1".to_string()
        } else {
            format!(
                "EXISTS (SELECT 1 FROM call_groups g WHERE g.call_key = c.call_key AND g.group_name IN ({}))",
                placeholders.join(", ")
            )
        };
        let mut values: Vec<rusqlite::types::Value> = vec![
            request.node.clone().into(),
            request.picker.clone().into(),
            target_value.into(),
            request.picker.clone().into(),
            ms(request.now_ms).into(),
            request.target.method().as_str().to_string().into(),
        ];
        values.extend(request.pickup_groups.iter().map(|g| g.clone().into()));

        // Alone: an IMMEDIATE transaction (the write lock before reading); in a batch (already
        // IMMEDIATE) the statements run in it: the claim is one UPDATE, atomic by itself.
        let tx = if self.in_batch() {
            None
        } else {
            Some(
                rusqlite::Transaction::new_unchecked(
                    &self.conn,
                    rusqlite::TransactionBehavior::Immediate,
                )
                .map_err(sqlite)?,
            )
        };
        let tx_conn = &self.conn;
        let claimed: Option<CallContext> = tx_conn
            .query_row(
                &format!(
                    "UPDATE call_contexts SET state = 'claimed', claimed_by = ?4, claimed_at_ms = ?5, claim_method = ?6 \
                     WHERE state = 'ringing' AND call_key = (SELECT c.call_key {candidates} AND {eligible} \
                     ORDER BY c.ring_started_ms, c.call_key LIMIT 1) RETURNING {CONTEXT_COLUMNS}"
                ),
                params_from_iter(values.iter()),
                context_from_row,
            )
            .optional()
            .map_err(sqlite)?;
        let outcome = match claimed {
            Some(context) => ClaimOutcome::Claimed(Box::new(context)),
            // A group pickup names no call: one the picker may not take is none of its
            // business, so it hears what it would hear if nothing rang (no leak of calls).
            None if request.target == PickupTarget::Group => ClaimOutcome::NothingRinging,
            None => {
                let ringing: i64 = tx_conn
                    .query_row(
                        &format!("SELECT COUNT(*) {candidates}"),
                        params_from_iter(values.iter().take(3)),
                        |row| row.get(0),
                    )
                    .map_err(sqlite)?;
                if ringing > 0 {
                    ClaimOutcome::NotAllowed
                } else {
                    ClaimOutcome::NothingRinging
                }
            }
        };
        if let Some(tx) = tx {
            tx.commit().map_err(sqlite)?;
        }
        match outcome {
            ClaimOutcome::Claimed(context) => Ok(ClaimOutcome::Claimed(Box::new(
                self.load_details(*context)?,
            ))),
            other => Ok(other),
        }
    }

    fn release(&mut self, call_key: &str) -> Result<(), StoreError> {
        self.run(
            "UPDATE call_contexts SET state = 'ringing', claimed_by = NULL, claimed_at_ms = NULL, \
             claim_method = NULL WHERE call_key = ?1",
            params![call_key],
        )
    }

    fn mark_answered(&mut self, call_key: &str, answer: &Answer) -> Result<(), StoreError> {
        self.run(
            "UPDATE call_contexts SET state = 'answered', answer_ms = ?2, up_ms = ?2, answered_by = ?3, \
             billed = ?4, pickup_method = ?5, pickup_ms = ?6 WHERE call_key = ?1",
            params![
                call_key,
                ms(answer.answer_ms),
                answer.answered_by,
                answer.billed,
                answer.pickup_method.as_str(),
                opt_ms(answer.pickup_ms),
            ],
        )
    }

    fn mark_up(&mut self, node: &str, now_ms: u64) -> Result<usize, StoreError> {
        cached_execute(
            &self.conn,
            "UPDATE call_contexts SET up_ms = ?2 WHERE node = ?1 AND state = 'answered'",
            params![node, ms(now_ms)],
        )
        .map_err(|e| self.error(e))
    }

    fn record_failed_pickup(
        &mut self,
        call_key: &str,
        failed: &FailedPickup,
    ) -> Result<(), StoreError> {
        insert_failed_pickup(&self.conn, call_key, failed).map_err(|e| self.error(e))
    }

    fn failed_pickups(&self, call_key: &str) -> Result<Vec<FailedPickup>, StoreError> {
        let sqlite = |e| self.error(e);
        let as_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT picker, method, claimed_ms, failed_ms, reason FROM failed_pickups \
                 WHERE call_key = ?1 ORDER BY id",
            )
            .map_err(sqlite)?;
        let rows = statement
            .query_map([call_key], |row| {
                Ok(FailedPickup {
                    picker: row.get(0)?,
                    method: row.get(1)?,
                    claimed_ms: as_u64(row.get(2)?),
                    failed_ms: as_u64(row.get(3)?),
                    reason: row.get(4)?,
                })
            })
            .map_err(sqlite)?;
        rows.collect::<Result<_, _>>().map_err(sqlite)
    }

    fn recover_interrupted(&mut self, node: &str) -> Result<Interrupted, StoreError> {
        // Billing records: synced to disk before the run goes on, like every CDR.
        let sqlite = sqlite_error(&self.path);
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite)?;
        let found = recover(&mut self.conn, node);
        let restored = self.conn.pragma_update(None, "synchronous", "NORMAL");
        let found = found.map_err(sqlite)?;
        restored.map_err(sqlite)?;
        Ok(found)
    }

    fn write_cdr(&mut self, cdr: &Cdr) -> Result<(), StoreError> {
        // A completed call's record must survive a power cut: sync this commit to disk when
        // it is alone (in the writer's batches the sync thread syncs the WAL instead).
        let sqlite = sqlite_error(&self.path);
        let alone = !self.in_batch();
        if alone {
            self.conn
                .pragma_update(None, "synchronous", "FULL")
                .map_err(sqlite)?;
        }
        let result = self.conn.savepoint().and_then(|tx| {
            insert_cdr(&tx, cdr)?;
            forget_context(&tx, &cdr.call_key)?;
            tx.commit()
        });
        if alone {
            self.conn
                .pragma_update(None, "synchronous", "NORMAL")
                .map_err(sqlite)?;
        }
        result.map_err(sqlite)
    }

    fn set_cdr_media(&mut self, call_key: &str, media: &str) -> Result<(), StoreError> {
        self.run(
            "UPDATE cdrs SET media = ?2 WHERE call_key = ?1",
            params![call_key, media],
        )
    }

    fn recent_cdrs(&self, limit: usize) -> Result<Vec<Cdr>, StoreError> {
        let sqlite = |e| self.error(e);
        let mut statement = self
            .conn
            .prepare(
                "SELECT call_key, caller, called, answered_by, pickup_method, billed, ring_start_ms, pickup_ms, \
                 answer_ms, end_ms, duration_ms, disposition, hangup_cause, node, media FROM cdrs ORDER BY id DESC LIMIT ?1",
            )
            .map_err(sqlite)?;
        let as_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
        let rows = statement
            .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
                Ok(Cdr {
                    call_key: row.get(0)?,
                    caller: row.get(1)?,
                    called: row.get(2)?,
                    answered_by: row.get(3)?,
                    pickup_method: row.get(4)?,
                    billed: row.get(5)?,
                    ring_start_ms: as_u64(row.get(6)?),
                    pickup_ms: row.get::<_, Option<i64>>(7)?.map(as_u64),
                    answer_ms: row.get::<_, Option<i64>>(8)?.map(as_u64),
                    end_ms: as_u64(row.get(9)?),
                    duration_ms: as_u64(row.get(10)?),
                    disposition: row.get(11)?,
                    hangup_cause: row.get(12)?,
                    node: row.get(13)?,
                    media: row.get(14)?,
                })
            })
            .map_err(sqlite)?;
        rows.collect::<Result<_, _>>().map_err(sqlite)
    }
}
