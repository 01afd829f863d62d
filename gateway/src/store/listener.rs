//! The BLF listener (PostgreSQL): a thread with a connection of its own that `LISTEN`s on
//! [`BLF_CHANNEL`] and hands each notification from another node to the engine as
//! [`StoreResult::DialogsChanged`] or [`StoreResult::Watched`] (through the runtime, like
//! the store thread's answers), so that a node learns another's BLF changes at once instead
//! of at its next poll, and what keys there watch at once instead of at its next heartbeat.
//!
//! The poll (`node.blf_poll_ms`) stays the safety net: where `LISTEN` is refused
//! (PostgreSQL-compatible engines without it, such as CockroachDB) the listener says so once
//! and ends; a lost connection is made again with backoff (one log line per outage), and
//! what was notified meanwhile arrives with the next poll.

use super::blf::{Notification, BLF_CHANNEL};
use super::reconnect::{Notice, Reconnect};
use super::{PgPool, StoreResult};
use crate::engine::shard::node_of_row;
use postgres::fallible_iterator::FallibleIterator;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the thread waits for a notification before it looks whether to stop.
const TICK: Duration = Duration::from_millis(200);

/// Handle to the listener thread; dropping it stops and joins the thread.
pub struct BlfListener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BlfListener {
    /// Starts listening for the BLF changes of nodes other than `node` on `pool`'s
    /// database; each goes to `on_result`.
    pub fn start(
        pool: PgPool,
        node: String,
        on_result: impl Fn(StoreResult) + Send + 'static,
    ) -> BlfListener {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("blf-listener".into())
            .spawn(move || listen(&pool, &node, &stopping, &on_result))
            .expect("spawning the BLF listener thread");
        BlfListener {
            stop,
            thread: Some(thread),
        }
    }

    /// Whether the thread has ended (LISTEN refused).
    pub fn has_ended(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for BlfListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread: connects, listens, passes notifications on, until `stop`.
fn listen(pool: &PgPool, node: &str, stop: &AtomicBool, on_result: &dyn Fn(StoreResult)) {
    let mut health = Reconnect::default();
    let lost = |health: &mut Reconnect, why: &str| {
        if health.failed(Instant::now()) == Some(Notice::Lost) {
            tracing::warn!(
                "database {}: the BLF listener's connection is lost ({why}); trying again \
                 with backoff, other nodes' BLF changes arrive by polling meanwhile",
                pool.name()
            );
        }
    };
    while !stop.load(Ordering::Relaxed) {
        if let Some(at) = health.next_attempt() {
            let wait = at.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait.min(TICK));
                continue;
            }
        }
        let mut client = match pool.connect() {
            Ok(client) => client,
            Err(e) => {
                lost(&mut health, &e.to_string());
                continue;
            }
        };
        if let Err(e) = client.batch_execute(&format!("LISTEN {BLF_CHANNEL}")) {
            if e.as_db_error().is_some() {
                tracing::warn!(
                    "database {}: LISTEN refused ({e}): other nodes' BLF changes arrive by \
                     polling only (node.blf_poll_ms)",
                    pool.name()
                );
                return;
            }
            lost(&mut health, &e.to_string());
            continue;
        }
        match health.connected(Instant::now()) {
            Some(Notice::Back { down, .. }) => tracing::warn!(
                "database {}: the BLF listener is connected again after {} s",
                pool.name(),
                down.as_secs()
            ),
            _ => tracing::info!(
                "database {}: listening for other nodes' BLF changes",
                pool.name()
            ),
        }
        while !stop.load(Ordering::Relaxed) {
            let next = client.notifications().timeout_iter(TICK).next();
            match next {
                Ok(Some(notification)) => match Notification::parse(notification.payload()) {
                    Some(Notification::Dialogs {
                        node: from,
                        extension,
                    }) if node_of_row(&from) != node => on_result(StoreResult::DialogsChanged {
                        node: from,
                        extension,
                    }),
                    Some(Notification::Watch {
                        node: from,
                        extension,
                    }) if from != node => on_result(StoreResult::Watched {
                        node: from,
                        extension,
                    }),
                    _ => {}
                },
                Ok(None) if client.is_closed() => {
                    lost(&mut health, "closed by the server");
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    lost(&mut health, &e.to_string());
                    break;
                }
            }
        }
    }
}
