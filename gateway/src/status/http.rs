//! The HTTP listener of `[status] http_listen`: `/metrics` for Prometheus, `/status.json`
//! and the read-only status page (`/`, which refreshes itself from `/status.json`).
//! GET and HEAD only, one request per connection, bounded: a request head of at most
//! [`MAX_HEAD`] bytes read within [`REQUEST_TIMEOUT`], at most [`MAX_CONNECTIONS`] at
//! once (more are closed unanswered). The page writes every value as text, never as
//! markup: a User-Agent or a caller ID from the network cannot script it.

use super::{prometheus, Detail, Sources};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The longest request head read (bytes).
pub const MAX_HEAD: usize = 8192;
/// How long a client has to send its request and read the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;

/// The status page.
const PAGE: &str = include_str!("page/index.html");
/// Its script and style sheet (served apart: the page's Content-Security-Policy allows
/// no inline code or style).
const SCRIPT: &str = include_str!("page/status.js");
const STYLE: &str = include_str!("page/status.css");

/// One answer.
struct Answer {
    status: &'static str,
    content_type: &'static str,
    body: String,
    extra: &'static str,
}

impl Answer {
    fn ok(content_type: &'static str, body: String) -> Answer {
        Answer {
            status: "200 OK",
            content_type,
            body,
            extra: "",
        }
    }

    fn error(status: &'static str, extra: &'static str) -> Answer {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{status}\n"),
            extra,
        }
    }
}

/// Serves `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, sources: Sources) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("status http: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, sources)).await;
        });
    }
}

/// Reads one request head and writes its answer.
async fn answer(mut stream: TcpStream, sources: Sources) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let request = loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..read]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                break Ok((
                    parsed.method.unwrap_or_default().to_string(),
                    parsed.path.unwrap_or_default().to_string(),
                ))
            }
            Ok(httparse::Status::Partial) if head.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                break Err(Answer::error("431 Request Header Fields Too Large", ""))
            }
            Err(_) => break Err(Answer::error("400 Bad Request", "")),
        }
    };
    let (answer, head_only) = match request {
        Err(answer) => (answer, false),
        Ok((method, path)) => (route(&method, &path, sources).await, method == "HEAD"),
    };
    let response = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
         X-Content-Type-Options: nosniff\r\nContent-Security-Policy: default-src 'self'\r\n\
         {}Connection: close\r\n\r\n",
        answer.status,
        answer.content_type,
        answer.body.len(),
        answer.extra
    );
    stream.write_all(response.as_bytes()).await?;
    if !head_only {
        stream.write_all(answer.body.as_bytes()).await?;
    }
    stream.shutdown().await
}

/// What a GET or HEAD of `path` answers.
async fn route(method: &str, path: &str, sources: Sources) -> Answer {
    if method != "GET" && method != "HEAD" {
        return Answer::error("405 Method Not Allowed", "Allow: GET, HEAD\r\n");
    }
    let path = path.split('?').next().unwrap_or_default();
    let snapshot = |detail| async move {
        tokio::task::spawn_blocking(move || sources.snapshot(detail))
            .await
            .ok()
    };
    match path {
        "/" | "/index.html" => Answer::ok("text/html; charset=utf-8", PAGE.into()),
        "/status.js" => Answer::ok("text/javascript; charset=utf-8", SCRIPT.into()),
        "/status.css" => Answer::ok("text/css; charset=utf-8", STYLE.into()),
        "/metrics" => match snapshot(Detail::Counts).await {
            Some(snapshot) => Answer::ok(prometheus::CONTENT_TYPE, prometheus::render(&snapshot)),
            None => Answer::error("503 Service Unavailable", ""),
        },
        "/status.json" => match snapshot(Detail::Lists)
            .await
            .map(|s| serde_json::to_string(&s.view()))
        {
            Some(Ok(json)) => Answer::ok("application/json", json),
            _ => Answer::error("503 Service Unavailable", ""),
        },
        _ => Answer::error("404 Not Found", ""),
    }
}
