//! The operator interface of demo mode: commands that act as the analog phones and the
//! central office of the emulated card, over a Unix socket. One command line per
//! connection; the answer is `ok` or `error: ...` on the first line, then `key=value` lines.
//! `gateway analog --config FILE <command...>` is the client.

use crate::control_socket::ClientError;
use std::path::Path;
use std::time::Duration;

/// How long a command waits for the analog service's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// An operator command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// List the ports.
    Ports,
    /// The phone lifts its handset.
    Lift(u32),
    /// The phone hangs up.
    HangUp(u32),
    /// A hook flash.
    Flash(u32),
    /// Touch-tone dialling.
    Dial(u32, String),
    /// Rotary dialling.
    Pulse(u32, String),
    /// The phone's user (or the far end of a line) makes a tone: Hz, ms.
    Say(u32, f32, u32),
    /// The office rings a line, with optional caller ID number and name.
    Ring(u32, Option<String>, Option<String>),
    /// The caller on a line gives up.
    StopRing(u32),
    /// The office drops battery (disconnect).
    BatteryDrop(u32),
    /// The office reverses polarity (answer or disconnect signal).
    Reverse(u32),
    /// The office plays busy tone.
    Busy(u32),
    /// A port's state.
    Status(u32),
    /// What the phone (or the office) heard since the last `listen`: tone, DTMF, caller ID.
    Listen(u32),
}

/// What was wrong with a command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} (commands: ports | lift|hangup|flash|status|listen|stop-ring|battery-drop|reverse|busy PORT | dial|pulse PORT DIGITS | say PORT HZ MS | ring PORT [NUMBER [NAME]])")]
pub struct CommandError(pub String);

impl Command {
    /// Parses a command line.
    pub fn parse(line: &str) -> Result<Command, CommandError> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let bad = |what: String| CommandError(what);
        let port = |i: usize| -> Result<u32, CommandError> {
            let word = words
                .get(i)
                .ok_or_else(|| bad("missing port number".into()))?;
            word.parse()
                .map_err(|_| bad(format!("{word:?} is not a port number")))
        };
        let digits = |i: usize| -> Result<String, CommandError> {
            let word = words.get(i).ok_or_else(|| bad("missing digits".into()))?;
            if word.is_empty()
                || !word
                    .chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D'))
            {
                return Err(bad(format!("{word:?} is not a string of DTMF digits")));
            }
            Ok(word.to_string())
        };
        let number = |i: usize, what: &str, range: std::ops::RangeInclusive<f32>| {
            let word = words.get(i).ok_or_else(|| bad(format!("missing {what}")))?;
            word.parse::<f32>()
                .ok()
                .filter(|v| range.contains(v))
                .ok_or_else(|| bad(format!("{what} {word:?} out of range {range:?}")))
        };
        let command = match words.first().copied() {
            Some("ports") => Command::Ports,
            Some("lift") => Command::Lift(port(1)?),
            Some("hangup") => Command::HangUp(port(1)?),
            Some("flash") => Command::Flash(port(1)?),
            Some("dial") => Command::Dial(port(1)?, digits(2)?),
            Some("pulse") => Command::Pulse(port(1)?, digits(2)?),
            Some("say") => Command::Say(
                port(1)?,
                number(2, "frequency", 100.0..=3800.0)?,
                number(3, "duration (ms)", 20.0..=10_000.0)? as u32,
            ),
            Some("ring") => Command::Ring(
                port(1)?,
                words.get(2).map(|s| s.to_string()),
                (words.len() > 3).then(|| words[3..].join(" ")),
            ),
            Some("stop-ring") => Command::StopRing(port(1)?),
            Some("battery-drop") => Command::BatteryDrop(port(1)?),
            Some("reverse") => Command::Reverse(port(1)?),
            Some("busy") => Command::Busy(port(1)?),
            Some("status") => Command::Status(port(1)?),
            Some("listen") => Command::Listen(port(1)?),
            Some(other) => return Err(bad(format!("unknown command {other:?}"))),
            None => return Err(bad("empty command".into())),
        };
        Ok(command)
    }
}

/// A command received, with the way back to its client.
pub struct Request {
    /// The command.
    pub command: Command,
    /// Where the answer goes.
    pub answer: std::sync::mpsc::Sender<String>,
}

/// Serves the socket at `path` on a thread of its own, handing each command to `deliver`
/// (false: the service is gone). A stale socket file from an earlier run is replaced.
pub fn serve(
    path: &Path,
    deliver: impl Fn(Request) -> bool + Send + 'static,
) -> std::io::Result<()> {
    crate::control_socket::serve(path, "analog-control", move |line| {
        let command = match Command::parse(line) {
            Err(e) => return Some(format!("error: {e}\n")),
            Ok(command) => command,
        };
        let (answer, answered) = std::sync::mpsc::channel();
        if !deliver(Request { command, answer }) {
            return None;
        }
        Some(
            answered
                .recv_timeout(ANSWER_TIMEOUT)
                .unwrap_or_else(|_| "error: no answer from the analog service\n".into()),
        )
    })
}

/// Sends one command line to the demo-mode interface of the gateway at `path`; returns
/// its whole answer.
pub fn request(path: &Path, command: &str) -> Result<String, ClientError> {
    crate::control_socket::request(
        path,
        command,
        "is the gateway running with this config, in demo mode?",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(Command::parse("lift 1"), Ok(Command::Lift(1)));
        assert_eq!(
            Command::parse("dial 2 *8#"),
            Ok(Command::Dial(2, "*8#".into()))
        );
        assert_eq!(
            Command::parse("say 1 1004 500"),
            Ok(Command::Say(1, 1004.0, 500))
        );
        assert_eq!(
            Command::parse("ring 3 5551234 Jane Doe"),
            Ok(Command::Ring(
                3,
                Some("5551234".into()),
                Some("Jane Doe".into())
            ))
        );
        assert_eq!(Command::parse("ring 3"), Ok(Command::Ring(3, None, None)));
    }

    #[test]
    fn bad_commands_say_what_is_wrong() {
        for (line, problem) in [
            ("", "empty command"),
            ("jump 1", "unknown command"),
            ("lift", "missing port"),
            ("lift one", "not a port number"),
            ("dial 1 12x", "not a string of DTMF digits"),
            ("say 1 50 100", "out of range"),
            ("say 1 1000 999999", "out of range"),
        ] {
            let error = Command::parse(line).unwrap_err().to_string();
            assert!(error.contains(problem), "{line:?}: {error}");
        }
    }

    #[test]
    fn the_socket_answers_and_refuses_garbage() {
        let dir = std::env::temp_dir().join(format!("analog-control-{}", std::process::id()));
        let path = dir.join("control.sock");
        serve(&path, |request| {
            let _ = request
                .answer
                .send(format!("ok\ncommand={:?}\n", request.command));
            true
        })
        .unwrap();
        let answer = request(&path, "lift 4").unwrap();
        assert_eq!(answer, "ok\ncommand=Lift(4)\n");
        assert!(request(&path, "fly 4")
            .unwrap()
            .starts_with("error: unknown command"));
        let missing = request(&dir.join("nothing.sock"), "ports").unwrap_err();
        assert!(
            missing.to_string().contains("is the gateway running"),
            "{missing}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
