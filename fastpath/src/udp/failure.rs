//! Why a running worker stopped by itself, and how that reaches its owner: the worker thread
//! records the failure once, and the owner either asks for it ([`super::Worker::failure`]) or
//! is called with it ([`super::Worker::on_failure`]), whichever comes first.

use nix::errno::Errno;
use std::sync::{Mutex, PoisonError};

/// A worker stopped after it had started: its sockets are no longer served.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("fast path worker {worker} stopped and no longer serves its sockets: {cause}")]
pub struct WorkerFailure {
    /// The worker's thread name ([`super::WorkerConfig::name`]).
    pub worker: String,
    /// What went wrong.
    pub cause: FailureCause,
}

/// What made a worker stop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailureCause {
    /// Waiting for readiness (epoll_wait) or completions (io_uring_enter) failed.
    #[error("waiting for events failed ({0}): restart the process (a supervisor restarts it on its non-zero exit); if it happens again, run the fast path on the other backend")]
    Wait(Errno),
    /// io_uring_enter (submitting operations and waiting for completions) failed.
    #[error("io_uring_enter failed ({0}): restart the process (a supervisor restarts it on its non-zero exit); if it happens again, run the fast path on epoll")]
    Ring(Errno),
    /// A socket was shut down for reading by something else holding it (another process it
    /// was passed to, a debugger); it can never receive again.
    #[error("socket {socket} ({local}) was shut down for reading by another holder of it: find what shares the process's sockets, then restart the process")]
    SocketShutDown {
        /// The socket's number in the worker.
        socket: usize,
        /// Its local address (or "unknown").
        local: String,
    },
    /// A socket failed with an error that no retry cures (closed underneath, not a socket).
    #[error("socket {socket} ({local}) cannot be read ({errno}): restart the process")]
    Socket {
        /// The socket's number in the worker.
        socket: usize,
        /// Its local address (or "unknown").
        local: String,
        /// The error.
        errno: Errno,
    },
    /// The handler panicked: a bug.
    #[error(
        "its handler panicked ({0}), which is a bug: restart the process and report the message"
    )]
    Panicked(String),
}

/// Whether a receive error means the socket itself is unusable (as opposed to an ICMP error
/// reported on it, or memory pressure, which pass).
pub(super) fn is_fatal_receive_error(errno: Errno) -> bool {
    matches!(
        errno,
        Errno::EBADF | Errno::ENOTSOCK | Errno::EFAULT | Errno::EINVAL | Errno::EOPNOTSUPP
    )
}

type Watcher = Box<dyn FnOnce(WorkerFailure) + Send>;

/// The failure slot a worker shares with its owner.
#[derive(Default)]
pub(super) struct FailureSlot {
    state: Mutex<State>,
}

#[derive(Default)]
enum State {
    /// Running, nobody watching.
    #[default]
    Running,
    /// Running, with the owner's watcher waiting.
    Watched(Watcher),
    /// Stopped by this failure.
    Failed(WorkerFailure),
}

impl FailureSlot {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The worker thread: records the failure and calls the watcher (outside the lock).
    pub(super) fn report(&self, failure: WorkerFailure) {
        let previous = std::mem::replace(&mut *self.state(), State::Failed(failure.clone()));
        if let State::Watched(watcher) = previous {
            watcher(failure);
        }
    }

    /// The owner: `watcher` is called once with the failure, at once if it already happened.
    /// It replaces an earlier watcher.
    pub(super) fn watch(&self, watcher: Watcher) {
        let mut state = self.state();
        match &*state {
            State::Failed(failure) => {
                let failure = failure.clone();
                drop(state);
                watcher(failure);
            }
            _ => *state = State::Watched(watcher),
        }
    }

    /// The failure, if the worker failed.
    pub(super) fn get(&self) -> Option<WorkerFailure> {
        match &*self.state() {
            State::Failed(failure) => Some(failure.clone()),
            _ => None,
        }
    }
}
