//! The status control socket, like `kamcmd`'s: `status` answers the [`StatusView`] as
//! JSON, `metrics` the Prometheus text, `reload` re-reads the config. `gateway status`
//! is the client; the socket is for its owner and group only.

use super::{prometheus, Detail, Sources, StatusView};
use crate::control_socket::{self, ClientError};
use std::path::Path;

/// What the client's error says to check when nothing listens on the socket.
const HINT: &str = "is the gateway running with this config? the socket is [status] control_socket";

/// What reloads the config when the operator asks: the answer says what happened.
pub type Reload = Box<dyn Fn() -> Result<String, String> + Send>;

/// Serves the control socket at `path` on a thread of its own.
pub fn serve(path: &Path, sources: Sources, reload: Reload) -> std::io::Result<()> {
    control_socket::serve(path, "status-control", move |command| {
        Some(match command {
            "status" => match serde_json::to_string(&sources.snapshot(Detail::Lists).view()) {
                Ok(json) => json + "\n",
                Err(e) => format!("error: {e}\n"),
            },
            "metrics" => prometheus::render(&sources.snapshot(Detail::Counts)),
            "reload" => match reload() {
                Ok(said) => format!("ok\n{said}\n"),
                Err(why) => format!("error: {why}\n"),
            },
            other => {
                format!("error: unknown command {other:?} (commands: status, metrics, reload)\n")
            }
        })
    })
}

/// Why `gateway status` got no status.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The socket could not be reached or read.
    #[error(transparent)]
    Socket(#[from] ClientError),
    /// The gateway refused the command.
    #[error("the gateway says: {0}")]
    Refused(String),
    /// The answer is not a status (a gateway of another version?).
    #[error(
        "the gateway's answer is no status ({0}); is the gateway the same version as this command?"
    )]
    Garbled(String),
}

/// Sends `command` to the control socket at `path`; the gateway's answer, or what it
/// refused.
pub fn ask(path: &Path, command: &str) -> Result<String, StatusError> {
    let answer = control_socket::request(path, command, HINT)?;
    match answer.strip_prefix("error: ") {
        Some(why) => Err(StatusError::Refused(why.trim_end().to_string())),
        None => Ok(answer),
    }
}

/// Asks the gateway at `path` for its status.
pub fn fetch(path: &Path) -> Result<StatusView, StatusError> {
    let answer = ask(path, "status")?;
    serde_json::from_str(&answer).map_err(|e| StatusError::Garbled(e.to_string()))
}
