//! Local operator sockets (Unix domain): one command line per connection, one text
//! answer, then the connection closes. `gateway analog` (demo mode) and `gateway status`
//! are the clients. The socket file is made readable and writable by its owner and group
//! only: whoever can reach it can see every call and reload the config.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest command line accepted (bytes).
const MAX_COMMAND: u64 = 1024;
/// How long a client may take to send its line, and waits for the answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Owner and group may read and write; others nothing.
const SOCKET_MODE: u32 = 0o660;

/// Serves the socket at `path` on a thread named `name`: each command line (trimmed) is
/// answered with what `answer` returns; `None` means the service behind it is gone,
/// and the socket stops. A stale socket file from an earlier run is replaced.
pub fn serve(
    path: &Path,
    name: &str,
    answer: impl Fn(&str) -> Option<String> + Send + 'static,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if !answer_one(stream, &answer) {
                    break;
                }
            }
        })?;
    Ok(())
}

/// Reads one command line and writes its answer. False once the service is gone.
fn answer_one(stream: UnixStream, answer: &impl Fn(&str) -> Option<String>) -> bool {
    let _ = stream.set_read_timeout(Some(ANSWER_TIMEOUT));
    let _ = stream.set_write_timeout(Some(ANSWER_TIMEOUT));
    let mut line = String::new();
    let Ok(mut writer) = stream.try_clone() else {
        return true;
    };
    if BufReader::new(stream.take(MAX_COMMAND))
        .read_line(&mut line)
        .is_err()
    {
        return true;
    }
    match answer(line.trim()) {
        Some(text) => {
            let _ = writer.write_all(text.as_bytes());
            true
        }
        None => {
            let _ = writer.write_all(b"error: the gateway is shutting down\n");
            false
        }
    }
}

/// Why the client could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error("cannot reach the gateway at {path}: {source} ({hint})")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
        /// What to check.
        hint: &'static str,
    },
    /// The exchange failed midway.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Sends one command line to the socket at `path`; returns the whole answer. `hint` is
/// what the error says to check when nothing listens there.
pub fn request(path: &Path, command: &str, hint: &'static str) -> Result<String, ClientError> {
    let mut stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
        path: path.to_path_buf(),
        source,
        hint,
    })?;
    let io = |source| ClientError::Io {
        path: path.to_path_buf(),
        source,
    };
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
    stream
        .write_all(format!("{}\n", command.trim()).as_bytes())
        .map_err(io)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(io)?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn the_socket_answers_each_line_and_is_for_owner_and_group_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("control.sock");
        serve(&path, "test-control", |line| match line {
            "stop" => None,
            other => Some(format!("got {other}\n")),
        })
        .unwrap();
        let metadata = std::fs::metadata(&path).unwrap();
        assert!(metadata.file_type().is_socket());
        assert_eq!(metadata.permissions().mode() & 0o777, 0o660);
        assert_eq!(request(&path, "  calls \n", "hint").unwrap(), "got calls\n");
        assert_eq!(
            request(&path, "stop", "hint").unwrap(),
            "error: the gateway is shutting down\n"
        );
        let gone = request(&dir.path().join("nothing.sock"), "calls", "is it running?")
            .unwrap_err()
            .to_string();
        assert!(gone.contains("is it running?"), "{gone}");
    }
}
