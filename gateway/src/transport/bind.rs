//! Binding the listening sockets at startup, waiting for a port a previous instance left.
//!
//! After `kill -9` the kernel releases an io_uring ring (and the sockets registered with
//! it) in deferred work that may run milliseconds after the process was reaped: a
//! supervisor restarting the gateway at once finds the SIP port still in use. Startup
//! therefore retries a bind refused with `EADDRINUSE` for a bounded time before it gives
//! up with the operator's error.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long startup waits for a port to be released before it reports it in use.
pub const PORT_RELEASE_WAIT: Duration = Duration::from_secs(3);

/// Pause between two bind attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(5);

/// Runs `attempt` until it succeeds, fails for another reason than the address being in
/// use (`in_use` says which errors are), or `wait` has passed since the first attempt.
pub async fn retry_while_port_in_use<T, E, F, Fut>(
    what: &str,
    wait: Duration,
    mut attempt: F,
    in_use: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut retries = 0u32;
    loop {
        match attempt().await {
            Err(e) if in_use(&e) && started.elapsed() < wait => {
                if retries == 0 {
                    tracing::info!(
                        "{what}: address in use, waiting up to {wait:?} for it to be released"
                    );
                }
                retries += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(e) => return Err(e),
            Ok(bound) => {
                if retries > 0 {
                    tracing::info!("{what}: bound after {retries} retry(ies)");
                }
                return Ok(bound);
            }
        }
    }
}

/// Binds a socket with `attempt`, waiting [`PORT_RELEASE_WAIT`] for a port in use.
pub async fn bind_waiting<T, F, Fut>(what: &str, attempt: F) -> std::io::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::io::Result<T>>,
{
    retry_while_port_in_use(what, PORT_RELEASE_WAIT, attempt, is_addr_in_use).await
}

/// Whether an I/O error means the address is bound by someone else.
pub fn is_addr_in_use(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::AddrInUse
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::io::{Error, ErrorKind};

    /// Binds with attempts that fail with `refusals` in turn, then succeed; returns the
    /// result and how many attempts were made.
    async fn bind_after(wait: Duration, refusals: &[ErrorKind]) -> (Result<u8, ErrorKind>, usize) {
        let attempts = Cell::new(0);
        let bound = retry_while_port_in_use(
            "udp",
            wait,
            || {
                let result = match refusals.get(attempts.get()) {
                    Some(&kind) => Err(Error::from(kind)),
                    None => Ok(7),
                };
                attempts.set(attempts.get() + 1);
                async move { result }
            },
            is_addr_in_use,
        )
        .await;
        (bound.map_err(|e| e.kind()), attempts.get())
    }

    #[tokio::test]
    async fn a_port_released_while_waiting_is_bound() {
        let in_use = [ErrorKind::AddrInUse; 3];
        assert_eq!(bind_after(PORT_RELEASE_WAIT, &in_use).await, (Ok(7), 4));
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let refusals = [ErrorKind::AddrNotAvailable];
        assert_eq!(
            bind_after(PORT_RELEASE_WAIT, &refusals).await,
            (Err(ErrorKind::AddrNotAvailable), 1)
        );
    }

    #[tokio::test]
    async fn a_port_kept_in_use_is_reported_once_the_wait_is_over() {
        let in_use = [ErrorKind::AddrInUse; 3];
        assert_eq!(
            bind_after(Duration::ZERO, &in_use).await,
            (Err(ErrorKind::AddrInUse), 1)
        );
    }
}
