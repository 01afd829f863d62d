//! The store's writer thread: the engine queues commands and never waits for SQLite.

use super::Store;
use crate::registrar::Binding;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// A write the engine asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreCommand {
    /// Store exactly these bindings for the extension.
    ReplaceBindings {
        /// The extension.
        aor: String,
        /// Its current bindings.
        bindings: Vec<Binding>,
    },
}

enum Message {
    Command(StoreCommand),
    Flush(mpsc::Sender<()>),
}

/// Handle to the writer thread. Dropping it drains the queue and joins the thread.
pub struct StoreWriter {
    sender: Option<mpsc::Sender<Message>>,
    thread: Option<JoinHandle<()>>,
}

impl StoreWriter {
    /// Moves `store` to a new thread that applies commands in order.
    pub fn start(mut store: Store) -> StoreWriter {
        let (sender, receiver) = mpsc::channel::<Message>();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                for message in receiver {
                    match message {
                        Message::Command(StoreCommand::ReplaceBindings { aor, bindings }) => {
                            if let Err(e) = store.replace_bindings(&aor, &bindings) {
                                tracing::error!("registration of {aor} not saved: {e}");
                            }
                        }
                        Message::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .expect("spawning the store writer thread");
        StoreWriter {
            sender: Some(sender),
            thread: Some(thread),
        }
    }

    /// Queues a command (never blocks).
    pub fn send(&self, command: StoreCommand) {
        if let Some(sender) = &self.sender {
            if sender.send(Message::Command(command)).is_err() {
                tracing::error!("store writer thread has stopped; a write was lost");
            }
        }
    }

    /// Blocks until every command queued so far is written (shutdown, tests).
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if let Some(sender) = &self.sender {
            if sender.send(Message::Flush(done)).is_ok() {
                let _ = wait.recv();
            }
        }
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
