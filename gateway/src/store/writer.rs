//! The store's worker thread: the engine queues commands and never waits for the database;
//! answers (claim outcomes) come back through a callback the runtime turns into events.
//! Commands that queued up while the previous batch was written go into one transaction
//! (group commit): at hundreds of calls per second that is one commit instead of five per
//! call. Answers leave only after the commit. CDRs must also survive a power cut: they are
//! committed after the rest of the batch and a second thread syncs the write-ahead log
//! before confirming them (one sync for all CDRs committed meanwhile), so a pickup's claim
//! never waits behind a disk sync. What billing needs before a call's CDR exists (the answer,
//! the marks of calls up, failed pickups) is synced the same way. With PostgreSQL each
//! commit is durable when it returns (the server syncs its WAL), so the sync thread only
//! passes the answers on; the engine-facing side is the same for both backends. With
//! PostgreSQL the CDRs the database cannot take go into the spool ([`super::Spool`]) and
//! from there to the database when it is back; the store thread then also wakes for the
//! replay, not only for commands.

use super::calls::{Answer, CallContext, CallStore, Cdr, ClaimOutcome, ClaimRequest, FailedPickup};
use super::spool::Spool;
use super::{Store, StoreError};
use crate::registrar::Binding;
use crate::status::histogram::{LatencyHistogram, COMMIT_BOUNDS_US};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

/// Work the engine asks of the store.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreCommand {
    /// Store exactly these bindings for the extension.
    ReplaceBindings {
        /// The node the phone registered through (this one).
        node: String,
        /// The extension.
        aor: String,
        /// Its current bindings.
        bindings: Vec<Binding>,
    },
    /// A call started ringing.
    InsertRinging(Box<CallContext>),
    /// A ringing leg got the far end's tag.
    SetLegRemoteTag {
        /// The leg's Call-ID.
        call_id: String,
        /// The far end's tag.
        remote_tag: String,
    },
    /// Claim a ringing call for a pickup; the outcome comes back as [`StoreResult::Claim`].
    Claim {
        /// The engine's pickup number, echoed in the result.
        pickup: u64,
        /// What to claim.
        request: ClaimRequest,
    },
    /// Another node claimed a call of this node for a picker and forwarded the pickup here:
    /// load the claimed context; the outcome comes back as [`StoreResult::Claim`].
    LoadClaim {
        /// The engine's pickup number, echoed in the result.
        pickup: u64,
        /// The claimed call.
        call_key: String,
        /// The picker the claim is for.
        picker: String,
        /// This node (the call's owner).
        node: String,
    },
    /// A failed pickup gives the call back (it rings again).
    Release {
        /// The call.
        call_key: String,
    },
    /// The call was answered.
    MarkAnswered {
        /// The call.
        call_key: String,
        /// Who answered, who pays, when.
        answer: Answer,
    },
    /// The answered calls of a node are still up (their talk time so far survives a crash).
    MarkUp {
        /// The node.
        node: String,
        /// Unix milliseconds.
        now_ms: u64,
    },
    /// A pickup of the call failed.
    RecordFailedPickup {
        /// The call.
        call_key: String,
        /// Who tried, when, and why it failed.
        failed: FailedPickup,
    },
    /// Commit a call detail record and forget the call's context; with `confirm`, answer
    /// [`StoreResult::CdrWritten`].
    WriteCdr {
        /// The record.
        cdr: Box<Cdr>,
        /// Whether the engine waits for the commit (to release a held response).
        confirm: bool,
    },
    /// Insert or update a dialog subscription (BLF).
    SaveSubscription(Box<super::StoredSubscription>),
    /// A dialog subscription ended.
    DeleteSubscription {
        /// Its dialog's Call-ID.
        call_id: String,
        /// Our tag in it.
        local_tag: String,
    },
    /// This node is alive (and takes over the nodes that are not); answered with
    /// [`StoreResult::Heartbeat`].
    Heartbeat {
        /// This node.
        node: String,
        /// Its advertised inter-node SIP address.
        address: std::net::SocketAddr,
        /// Unix milliseconds.
        now_ms: u64,
        /// A node silent longer than this (ms) is taken over.
        takeover_ms: u64,
    },
    /// Which other live nodes hold registrations of these extensions; answered with
    /// [`StoreResult::Registrations`].
    LookupRegistrations {
        /// The engine's lookup number, echoed in the result.
        lookup: u64,
        /// This node (its own bindings are not asked for).
        node: String,
        /// The extensions.
        aors: Vec<String>,
        /// Unix milliseconds.
        now_ms: u64,
        /// Nodes silent longer than this (ms) count as gone.
        takeover_ms: u64,
    },
    /// This node's dialogs of a watched extension changed (BLF across nodes): store them
    /// (empty: none) and, with PostgreSQL, notify the other nodes; answered with
    /// [`StoreResult::DialogsPublished`].
    PublishDialogs {
        /// Who writes the row: this node, or one of its engine shards
        /// ([`crate::engine::shard::ShardId::row_owner`]).
        row_owner: String,
        /// The extension.
        extension: String,
        /// Its dialogs on this node, in the engine's text format.
        dialogs: String,
        /// Unix milliseconds.
        now_ms: u64,
    },
    /// Read other nodes' dialogs; answered with [`StoreResult::Dialogs`].
    ReadDialogs {
        /// This node (its own rows are not read).
        node: String,
        /// Which rows.
        query: super::DialogsQuery,
    },
    /// Add an anchored call's media counters to its CDR.
    SetCdrMedia {
        /// The call.
        call_key: String,
        /// The counters, as `gateway cdr` shows them.
        media: String,
    },
}

impl StoreCommand {
    /// Whether billing depends on this write before the call's CDR exists (it must survive
    /// a power cut, like the CDR).
    fn is_billing_record(&self) -> bool {
        matches!(
            self,
            StoreCommand::MarkAnswered { .. }
                | StoreCommand::MarkUp { .. }
                | StoreCommand::RecordFailedPickup { .. }
                // A takeover writes the dead node's interrupted CDRs.
                | StoreCommand::Heartbeat { .. }
        )
    }
}

/// An answer from the store to the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreResult {
    /// The outcome of a [`StoreCommand::Claim`].
    Claim {
        /// The pickup number from the command.
        pickup: u64,
        /// What happened (a database error counts as nothing claimed).
        outcome: ClaimOutcome,
    },
    /// The outcome of a [`StoreCommand::Heartbeat`] (a database error: nothing taken over).
    Heartbeat(super::Heartbeat),
    /// The answer to a [`StoreCommand::LookupRegistrations`] (a database error: none).
    Registrations {
        /// The lookup number from the command.
        lookup: u64,
        /// The bindings other nodes hold.
        found: Vec<super::RemoteBinding>,
    },
    /// The database is reachable again after its connection was lost: what was not
    /// written meanwhile (registrations) is written again by the engine.
    DatabaseBack,
    /// A CDR written with `confirm` is committed (or failed and was logged).
    CdrWritten {
        /// The call's key.
        call_key: String,
    },
    /// The outcome of a [`StoreCommand::PublishDialogs`].
    DialogsPublished {
        /// Who wrote the row (from the command).
        row_owner: String,
        /// The extension.
        extension: String,
        /// Whether the dialogs are in the database (false: write them again later).
        stored: bool,
    },
    /// The answer to a [`StoreCommand::ReadDialogs`].
    Dialogs {
        /// The query from the command.
        query: super::DialogsQuery,
        /// The rows; None when the database could not be read.
        rows: Option<Vec<super::SharedDialogs>>,
    },
    /// Another node's dialogs of an extension changed (a PostgreSQL notification on
    /// [`super::BLF_CHANNEL`], from the listener thread: [`super::BlfListener`]).
    DialogsChanged {
        /// The node.
        node: String,
        /// The extension.
        extension: String,
    },
    /// A key on another node watches an extension (a PostgreSQL notification, from the
    /// listener thread): this node writes its dialogs of it from now on.
    Watched {
        /// The node.
        node: String,
        /// The extension.
        extension: String,
    },
}

/// Logs a failed store operation, unless it failed because the database is known to be
/// down (the store logged that once for the whole outage).
fn report(what: &str, error: &StoreError) {
    if !error.is_unavailable() {
        tracing::error!("{what}: {error}");
    }
}

/// Applies one command to the store; returns the answer the engine waits for, if any.
/// Where a failed statement would spoil the open batch (PostgreSQL), the command runs in a
/// savepoint of its own, undone alone if it fails.
pub fn execute(store: &mut Store, command: StoreCommand) -> Option<StoreResult> {
    if !(store.errors_abort_batch() && store.in_batch()) {
        return apply(store, command).0;
    }
    let step = match store.db.begin_step() {
        Ok(step) => step,
        // The batch is lost already (the connection broke); the writer starts a new one.
        Err(e) => {
            report("store savepoint not set", &e);
            return apply(store, command).0;
        }
    };
    let (answer, applied) = apply(store, command);
    if let Err(e) = store.db.end_step(step, applied) {
        report("store savepoint not released", &e);
    }
    answer
}

/// [`execute`]'s work: the answer, and whether the command was applied (failures are
/// logged here).
fn apply(store: &mut Store, command: StoreCommand) -> (Option<StoreResult>, bool) {
    let result = match command {
        StoreCommand::ReplaceBindings {
            node,
            aor,
            bindings,
        } => store.replace_bindings(&node, &aor, &bindings),
        StoreCommand::Heartbeat {
            node,
            address,
            now_ms,
            takeover_ms,
        } => {
            let (beat, applied) = match store.heartbeat(&node, address, now_ms, takeover_ms) {
                Ok(beat) => (beat, true),
                Err(e) => {
                    tracing::error!("node heartbeat not recorded: {e}");
                    (super::Heartbeat::default(), false)
                }
            };
            return (Some(StoreResult::Heartbeat(beat)), applied);
        }
        StoreCommand::LookupRegistrations {
            lookup,
            node,
            aors,
            now_ms,
            takeover_ms,
        } => {
            let found = store
                .remote_bindings(&node, &aors, now_ms, takeover_ms)
                .unwrap_or_else(|e| {
                    tracing::error!("registrations of other nodes not read: {e}");
                    Vec::new()
                });
            return (Some(StoreResult::Registrations { lookup, found }), true);
        }
        StoreCommand::InsertRinging(context) => store.insert_ringing(&context),
        StoreCommand::SetLegRemoteTag {
            call_id,
            remote_tag,
        } => store.set_leg_remote_tag(&call_id, &remote_tag),
        StoreCommand::Claim { pickup, request } => {
            let (outcome, applied) = match store.claim(&request) {
                Ok(outcome) => (outcome, true),
                Err(e) => {
                    report("pickup claim failed", &e);
                    (ClaimOutcome::StoreFailed, false)
                }
            };
            return (Some(StoreResult::Claim { pickup, outcome }), applied);
        }
        StoreCommand::LoadClaim {
            pickup,
            call_key,
            picker,
            node,
        } => {
            let outcome = store
                .claimed_by_other_node(&call_key, &picker, &node)
                .unwrap_or_else(|e| {
                    report("forwarded pickup's claim not read", &e);
                    ClaimOutcome::StoreFailed
                });
            return (Some(StoreResult::Claim { pickup, outcome }), true);
        }
        StoreCommand::Release { call_key } => store.release(&call_key),
        StoreCommand::MarkAnswered { call_key, answer } => store.mark_answered(&call_key, &answer),
        StoreCommand::MarkUp { node, now_ms } => store.mark_up(&node, now_ms).map(|marked| {
            tracing::debug!("{marked} answered call(s) marked up at {now_ms}");
        }),
        StoreCommand::RecordFailedPickup { call_key, failed } => {
            store.record_failed_pickup(&call_key, &failed)
        }
        StoreCommand::SetCdrMedia { call_key, media } => store.set_cdr_media(&call_key, &media),
        StoreCommand::PublishDialogs {
            row_owner,
            extension,
            dialogs,
            now_ms,
        } => {
            let written = store.publish_dialogs(&row_owner, &extension, &dialogs, now_ms);
            if let Err(e) = &written {
                report(&format!("BLF dialogs of {extension} not published"), e);
            }
            let stored = written.is_ok();
            return (
                Some(StoreResult::DialogsPublished {
                    row_owner,
                    extension,
                    stored,
                }),
                stored,
            );
        }
        StoreCommand::ReadDialogs { node, query } => {
            let rows = match store.shared_dialogs(&node, &query) {
                Ok(rows) => Some(rows),
                Err(e) => {
                    report("other nodes' BLF dialogs not read", &e);
                    None
                }
            };
            return (Some(StoreResult::Dialogs { query, rows }), true);
        }
        StoreCommand::SaveSubscription(sub) => store.save_subscription(&sub),
        StoreCommand::DeleteSubscription { call_id, local_tag } => {
            store.delete_subscription(&call_id, &local_tag)
        }
        StoreCommand::WriteCdr { cdr, confirm } => {
            let written = store.write_cdr(&cdr);
            if let Err(e) = &written {
                report(&format!("CDR of call {} not saved", cdr.call_key), e);
            }
            let answer = confirm.then(|| StoreResult::CdrWritten {
                call_key: cdr.call_key.clone(),
            });
            return (answer, written.is_ok());
        }
    };
    if let Err(e) = &result {
        report("store write failed", e);
    }
    (None, result.is_ok())
}

enum Message {
    Command(StoreCommand),
    /// Commands queued together (an engine turn's): one queue entry.
    Commands(Vec<StoreCommand>),
    Flush(mpsc::Sender<()>),
}

/// Work for the sync thread, in commit order.
enum SyncJob {
    /// CDRs (or other billing records) are committed: make them durable, then pass on these
    /// answers.
    Cdrs(Vec<StoreResult>),
    /// Everything queued before is durable once this is reached.
    Flush(mpsc::Sender<()>),
}

/// Where answers go; called from the store thread (claims) and the sync thread (CDRs).
type OnResult = Arc<dyn Fn(StoreResult) + Send + Sync>;

/// At most this many queue entries (a command, or an engine turn's commands) share one
/// transaction (bounds the time answers wait).
const MAX_BATCH: usize = 512;

/// How long the store thread (on SQLite) waits for more commands to share a transaction
/// with the first, when nothing in the batch is awaited (a commit costs far more than a statement:
/// at 1,000 calls/s, committing each engine turn's commands apart cost the store a quarter
/// of a core; at 1,500 calls/s, 10 ms against 2 ms took the gateway's CPU per call down by
/// 7%). Nothing waits for these commands: claims, lookups and flushes end the wait.
const GATHER: std::time::Duration = std::time::Duration::from_millis(10);

/// How long the store thread works through a batch before it offers its core to a thread
/// waiting for one (`sched_yield`; it carries on at once when none waits). A batch is a
/// burst of about a millisecond every [`GATHER`] at 1,500 calls/s, and an engine shard woken
/// by a datagram meanwhile waited for the whole burst on a busy machine: at 1,500 calls/s
/// on 2 cores, call setup p99 2.3-3.0 ms without the yields, 1.1-1.8 ms with them
/// (paired trials), 1.6 -> 2.4 ms with bursts four times as long (a 40 ms window).
const WORK_BEFORE_YIELD: std::time::Duration = std::time::Duration::from_micros(100);

/// The store thread offers its core only while it keeps up: while its last batch took less
/// than this. Past it (the engines keep every core busy, as at twice the sustainable call
/// rate) it works at its fair share: yielding then starved it, its queue grew, and calls
/// already up timed out waiting for their BYE's 200.
const KEEPING_UP: std::time::Duration = std::time::Duration::from_millis(5);

/// When the store thread last offered its core (see [`WORK_BEFORE_YIELD`]), and whether it
/// does in this batch ([`KEEPING_UP`]).
struct Courtesy {
    since: std::time::Instant,
    offers: bool,
}

impl Courtesy {
    /// For a batch started at `now` after one that took `last_batch`.
    fn new(now: std::time::Instant, last_batch: std::time::Duration) -> Courtesy {
        Courtesy {
            since: now,
            offers: last_batch < KEEPING_UP,
        }
    }

    /// Whether the thread has worked long enough at `now` to offer its core; if so, the
    /// count starts again.
    fn due(&mut self, now: std::time::Instant) -> bool {
        let due = self.offers && now.saturating_duration_since(self.since) >= WORK_BEFORE_YIELD;
        if due {
            self.since = now;
        }
        due
    }

    /// Offers the core if due.
    fn offer(&mut self) {
        if self.due(std::time::Instant::now()) {
            std::thread::yield_now();
        }
    }
}

impl StoreCommand {
    /// Whether SIP handling waits for this one's answer: a pickup's claim, the lookup of a
    /// phone registered elsewhere.
    fn is_awaited(&self) -> bool {
        matches!(
            self,
            StoreCommand::Claim { .. }
                | StoreCommand::LoadClaim { .. }
                | StoreCommand::LookupRegistrations { .. }
        )
    }
}

impl Message {
    /// Whether someone waits for this one: SIP handling for an awaited command's answer,
    /// a caller blocked on a flush. It goes in at once.
    fn is_awaited(&self) -> bool {
        match self {
            Message::Flush(_) => true,
            Message::Command(command) => command.is_awaited(),
            Message::Commands(commands) => commands.iter().any(StoreCommand::is_awaited),
        }
    }
}

/// Adds to `batch` what arrives within `window` ([`GATHER`]) of now, unless something in
/// it is awaited or it is full. The store thread sleeps through the window instead of waking for every
/// message (each wake-up is a context switch on both sides at thousands of commands a
/// second); a sender of an awaited command or a flush wakes it (`StoreWriter::queue`),
/// which ends the wait.
fn gather(
    receiver: &mpsc::Receiver<Message>,
    batch: &mut Vec<Message>,
    window: std::time::Duration,
) {
    if batch.iter().any(Message::is_awaited) {
        return;
    }
    let until = std::time::Instant::now() + window;
    while batch.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(message) => {
                let awaited = message.is_awaited();
                batch.push(message);
                if awaited {
                    return;
                }
            }
            Err(mpsc::TryRecvError::Disconnected) => return,
            Err(mpsc::TryRecvError::Empty) => {
                let wait = until.saturating_duration_since(std::time::Instant::now());
                if wait.is_zero() {
                    return;
                }
                std::thread::park_timeout(wait);
            }
        }
    }
}

/// Applies `messages`: first everything but the CDRs in one transaction, answered at once;
/// then the CDRs, in their order, in another, handed to the sync thread which makes them
/// durable before answering (and the first transaction too when it holds billing records).
/// CDRs touch only their own table and their call's context, which nothing in the batch
/// needs after the call ended, so moving them behind the rest changes no outcome, and a
/// pickup's claim never waits for a disk sync.
fn apply_batch(
    store: &mut Store,
    mut spool: Option<&mut Spool>,
    messages: Vec<Message>,
    on_result: &OnResult,
    sync: &mpsc::Sender<SyncJob>,
    courtesy: &mut Courtesy,
) {
    let mut flushes = Vec::new();
    let (mut cdrs, mut rest) = (Vec::new(), Vec::new());
    let mut sort = |command: StoreCommand| match command {
        StoreCommand::WriteCdr { .. } | StoreCommand::SetCdrMedia { .. } => cdrs.push(command),
        command => rest.push(command),
    };
    for message in messages {
        match message {
            Message::Flush(done) => flushes.push(done),
            Message::Command(command) => sort(command),
            Message::Commands(commands) => commands.into_iter().for_each(&mut sort),
        }
    }
    // The database is reachable again: the spooled CDRs first, forgetting their calls'
    // contexts before anything else in the batch (a claim) could see them.
    if let Some(spool) = spool.as_deref_mut() {
        spool.replay_if_due(store);
    }
    // Without a WAL to sync later, each durable commit is synced as it is made.
    let sync_now = store.wal_path().is_none();
    let billing = rest.iter().any(StoreCommand::is_billing_record);
    if !rest.is_empty() {
        apply_transaction(store, rest, sync_now && billing, courtesy)
            .into_iter()
            .for_each(|result| on_result(result));
        if billing {
            tracing::debug!("billing records committed");
        }
    }
    if !cdrs.is_empty() {
        let results = match spool {
            Some(spool) => spool.write(store, cdrs),
            None => apply_transaction(store, cdrs, sync_now, courtesy),
        };
        let _ = sync.send(SyncJob::Cdrs(results));
    } else if billing {
        let _ = sync.send(SyncJob::Cdrs(Vec::new()));
    }
    for done in flushes {
        let _ = sync.send(SyncJob::Flush(done));
    }
}

/// Applies `commands` in one transaction (synced to disk as it commits with `full_sync`);
/// returns the answers. If the database rolls the batch back on its own (SQLite: disk full,
/// I/O error; PostgreSQL: the connection broke), the claims made in it are answered as
/// failed and the remaining commands go into a new batch.
fn apply_transaction(
    store: &mut Store,
    commands: Vec<StoreCommand>,
    full_sync: bool,
    courtesy: &mut Courtesy,
) -> Vec<StoreResult> {
    if full_sync {
        let _ = store.set_full_sync(true);
    }
    let results = apply_commands(store, commands, courtesy);
    if full_sync {
        let _ = store.set_full_sync(false);
    }
    results
}

/// [`apply_transaction`]'s work.
fn apply_commands(
    store: &mut Store,
    commands: Vec<StoreCommand>,
    courtesy: &mut Courtesy,
) -> Vec<StoreResult> {
    let mut results = Vec::new();
    // Answers given inside the current batch (index into `results` where it began).
    let mut batch_start = 0;
    let mut batched = begin(store);
    for command in commands {
        let result = execute(store, command);
        courtesy.offer();
        if batched && !store.in_batch() {
            tracing::error!("the store batch was rolled back by the database; starting a new one");
            fail_claims(&mut results[batch_start..]);
            // The command during which it happened failed; its answer already says so.
            results.extend(result);
            batch_start = results.len();
            batched = begin(store);
            continue;
        }
        results.extend(result);
    }
    if batched {
        if let Err(e) = store.commit_batch() {
            report("store batch not committed", &e);
            fail_claims(&mut results[batch_start..]);
        }
    }
    results
}

/// Opens a batch, clearing a transaction a failed rollback left open; false when the
/// commands must run one by one.
fn begin(store: &mut Store) -> bool {
    if store.in_batch() {
        store.rollback_batch();
    }
    match store.begin_batch() {
        Ok(()) => true,
        Err(e) => {
            report("store batch not begun; applying commands one by one", &e);
            false
        }
    }
}

/// Claims, takeovers and BLF writes of a batch that was not stored hold nothing.
fn fail_claims(results: &mut [StoreResult]) {
    for result in results {
        match result {
            StoreResult::Claim { outcome, .. } => *outcome = ClaimOutcome::StoreFailed,
            // Nothing was taken over either.
            StoreResult::Heartbeat(beat) => *beat = super::Heartbeat::default(),
            // Nor BLF dialogs published (the engine writes them again).
            StoreResult::DialogsPublished { stored, .. } => *stored = false,
            _ => {}
        }
    }
}

/// The sync thread: syncs the write-ahead log once for all the jobs that queued up meanwhile
/// (group sync), then answers them in order. Without a WAL (`wal` None) the commits were
/// synced as they were made.
fn run_sync(wal: Option<&Path>, jobs: mpsc::Receiver<SyncJob>, on_result: &OnResult) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        batch.extend(jobs.try_iter());
        if let Some(wal) = wal.filter(|_| batch.iter().any(|job| matches!(job, SyncJob::Cdrs(_)))) {
            match std::fs::File::open(wal).and_then(|file| file.sync_data()) {
                Ok(()) => {}
                // The connection closed (shutdown without a flush): closing checkpointed
                // the WAL into the synced database and removed it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::debug!("{}: gone at shutdown, already checkpointed", wal.display())
                }
                Err(e) => tracing::error!(
                    "CDRs committed but not synced to disk ({}: {e}); a power cut could lose them",
                    wal.display()
                ),
            }
        }
        for job in batch {
            match job {
                SyncJob::Cdrs(results) => results.into_iter().for_each(|result| on_result(result)),
                SyncJob::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    }
}

/// Handle to the store thread and its sync thread. Dropping it drains the queue and joins
/// both.
pub struct StoreWriter {
    sender: Option<mpsc::Sender<Message>>,
    /// The store thread, woken by hand for what someone waits for ([`gather`]).
    store_thread: std::thread::Thread,
    threads: Vec<JoinHandle<()>>,
    /// How long each batch took to apply and commit.
    commits: Arc<Mutex<LatencyHistogram>>,
}

impl StoreWriter {
    /// Moves `store` to a new thread that applies commands in order, in batches, and passes
    /// answers to `on_result` once their batch is committed (CDR confirmations once synced
    /// to disk, by a second thread).
    pub fn start(
        store: Store,
        on_result: impl Fn(StoreResult) + Send + Sync + 'static,
    ) -> StoreWriter {
        StoreWriter::with_spool(store, None, on_result)
    }

    /// [`StoreWriter::start`] with a CDR spool (a PostgreSQL store): CDRs the database
    /// cannot take go there, and from there to the database once it is reachable (at
    /// start too, when the spool holds records).
    pub fn with_spool(
        mut store: Store,
        mut spool: Option<Spool>,
        on_result: impl Fn(StoreResult) + Send + Sync + 'static,
    ) -> StoreWriter {
        let on_result: OnResult = Arc::new(on_result);
        let (sender, receiver) = mpsc::channel::<Message>();
        let (sync, jobs) = mpsc::channel::<SyncJob>();
        let wal = store.wal_path().map(Path::to_path_buf);
        let sync_answers = on_result.clone();
        let commits = Arc::new(Mutex::new(LatencyHistogram::new(COMMIT_BOUNDS_US)));
        let commit_latency = commits.clone();
        let syncer = std::thread::Builder::new()
            .name("store-sync".into())
            .spawn(move || run_sync(wal.as_deref(), jobs, &sync_answers))
            .expect("spawning the store sync thread");
        let writer = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || {
                let mut last_batch = std::time::Duration::ZERO;
                loop {
                    // While CDRs wait in the spool, the queue is watched only until the
                    // next replay is due (the reconnect backoff; at once with the
                    // connection up, a chunk at a time between batches).
                    let replay_at = spool.as_ref().and_then(|s| s.next_replay(&store));
                    let first = match replay_at {
                        None => match receiver.recv() {
                            Ok(first) => first,
                            Err(mpsc::RecvError) => break,
                        },
                        Some(at) => {
                            let wait = at.saturating_duration_since(std::time::Instant::now());
                            match receiver.recv_timeout(wait) {
                                Ok(first) => first,
                                Err(mpsc::RecvTimeoutError::Timeout) => {
                                    if let Some(spool) = spool.as_mut() {
                                        spool.replay(&mut store);
                                    }
                                    continue;
                                }
                                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                            }
                        }
                    };
                    let mut batch = vec![first];
                    batch.extend(receiver.try_iter().take(MAX_BATCH - 1));
                    // SQLite only, where the cost was measured: a PostgreSQL commit is a
                    // network round trip and its server's own group commit.
                    if store.wal_path().is_some() {
                        gather(&receiver, &mut batch, GATHER);
                    }
                    let was_lost = store.db.connection_lost();
                    let started = std::time::Instant::now();
                    let mut courtesy = Courtesy::new(started, last_batch);
                    apply_batch(
                        &mut store,
                        spool.as_mut(),
                        batch,
                        &on_result,
                        &sync,
                        &mut courtesy,
                    );
                    last_batch = started.elapsed();
                    let took = u64::try_from(last_batch.as_micros()).unwrap_or(u64::MAX);
                    if let Ok(mut histogram) = commit_latency.lock() {
                        histogram.record(took);
                    }
                    if was_lost && !store.db.connection_lost() {
                        on_result(StoreResult::DatabaseBack);
                    }
                }
            })
            .expect("spawning the store thread");
        StoreWriter {
            sender: Some(sender),
            store_thread: writer.thread().clone(),
            // The writer first: it ends when the queue closes, and closes the sync queue.
            threads: vec![writer, syncer],
            commits,
        }
    }

    /// How long the batches took to apply and commit so far.
    pub fn commit_latency(&self) -> LatencyHistogram {
        self.commits
            .lock()
            .map(|histogram| histogram.clone())
            .unwrap_or_else(|_| LatencyHistogram::new(COMMIT_BOUNDS_US))
    }

    /// Queues a command (never blocks).
    pub fn send(&self, command: StoreCommand) {
        self.queue(Message::Command(command), "a write was lost");
    }

    /// Queues `commands` together, as one queue entry (never blocks).
    pub fn send_all(&self, commands: Vec<StoreCommand>) {
        if commands.is_empty() {
            return;
        }
        self.queue(Message::Commands(commands), "writes were lost");
    }

    /// Queues `message`, waking the store thread if someone waits for it (a gathering store
    /// thread sleeps through everything else).
    fn queue(&self, message: Message, lost: &str) {
        let Some(sender) = &self.sender else { return };
        let awaited = message.is_awaited();
        if sender.send(message).is_err() {
            tracing::error!("store thread has stopped; {lost}");
        } else if awaited {
            self.store_thread.unpark();
        }
    }

    /// Blocks until every command queued so far is applied and its CDRs synced (shutdown,
    /// tests).
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        let Some(sender) = &self.sender else { return };
        if sender.send(Message::Flush(done)).is_ok() {
            self.store_thread.unpark();
            let _ = wait.recv();
        }
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        self.sender.take();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark_up(now_ms: u64) -> Message {
        Message::Command(StoreCommand::MarkUp {
            node: "gw1".into(),
            now_ms,
        })
    }

    fn lookup() -> StoreCommand {
        StoreCommand::LookupRegistrations {
            lookup: 1,
            node: "gw1".into(),
            aors: vec!["201".into()],
            now_ms: 0,
            takeover_ms: 0,
        }
    }

    /// Commands nobody waits for share a transaction with what follows; one that SIP
    /// handling waits for (here a lookup of a phone registered elsewhere) ends the gathering
    /// at once, so it is never held back.
    #[test]
    fn gathering_stops_at_a_command_someone_waits_for() {
        let (sender, receiver) = mpsc::channel();
        for message in [mark_up(2), Message::Commands(vec![lookup()]), mark_up(3)] {
            sender.send(message).unwrap();
        }
        let mut batch = vec![mark_up(1)];
        gather(&receiver, &mut batch, GATHER);
        assert_eq!(batch.len(), 3, "up to and with the awaited one");
        assert!(batch[2].is_awaited());
        assert!(!batch[0].is_awaited() && !batch[1].is_awaited());
        assert!(
            receiver.try_recv().is_ok(),
            "the rest waits for the next batch"
        );
        // A batch that starts with one is not held back at all.
        let mut batch = vec![Message::Command(lookup())];
        gather(&receiver, &mut batch, GATHER);
        assert_eq!(batch.len(), 1);
        let (done, _) = mpsc::channel();
        assert!(Message::Flush(done).is_awaited());
    }

    #[test]
    fn the_store_thread_offers_its_core_after_each_stretch_of_work() {
        let start = std::time::Instant::now();
        let mut courtesy = Courtesy::new(start, std::time::Duration::from_millis(1));
        let at = |us| start + std::time::Duration::from_micros(us);
        assert!(!courtesy.due(at(40)), "not after 40 µs");
        assert!(!courtesy.due(at(99)));
        assert!(courtesy.due(at(100)), "after 100 µs");
        assert!(!courtesy.due(at(150)), "counted again from the offer");
        assert!(courtesy.due(at(260)));
        // A clock that did not move (or a stale reading) never counts as due.
        assert!(!courtesy.due(at(200)));
    }

    /// The failure the yields caused at twice the sustainable call rate: a store thread
    /// that yields to engines keeping every core busy falls behind for good.
    #[test]
    fn a_store_thread_behind_its_work_keeps_its_core() {
        let start = std::time::Instant::now();
        let mut courtesy = Courtesy::new(start, KEEPING_UP);
        for us in [100, 1_000, 100_000] {
            assert!(!courtesy.due(start + std::time::Duration::from_micros(us)));
        }
    }

    /// A gathering store thread sleeps through commands nobody waits for (no wake-up per
    /// command) and still takes them; the sender of an awaited one wakes it. The window is
    /// a minute: without the wake-up the gathering would end with the window, the awaited
    /// command left out.
    #[test]
    fn gathering_sleeps_through_writes_and_wakes_for_an_awaited_command() {
        let (sender, receiver) = mpsc::channel();
        let gatherer = std::thread::spawn(move || {
            let mut batch = vec![mark_up(1)];
            gather(&receiver, &mut batch, std::time::Duration::from_secs(60));
            batch
        });
        sender.send(mark_up(2)).unwrap();
        sender.send(Message::Commands(vec![lookup()])).unwrap();
        gatherer.thread().unpark();
        let batch = gatherer.join().unwrap();
        assert_eq!(batch.len(), 3);
        assert!(batch[2].is_awaited());
    }
}
