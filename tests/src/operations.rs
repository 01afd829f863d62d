//! The operator's views of a running gateway, as an operator reaches them: `gateway status`
//! (its JSON), the HTTP listener's `/metrics` checked by Prometheus's own `promtool`, and
//! the status page rendered by headless Chromium.

use crate::Gateway;
use gateway::status::StatusView;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `[status]` line that turns the HTTP listener on at `addr`.
pub fn http_listen(addr: SocketAddr) -> (&'static str, String) {
    ("status", format!("http_listen = \"{addr}\""))
}

/// `gateway status --json`, parsed.
pub fn status(gateway: &Gateway) -> StatusView {
    let output = gateway.subcommand(&["status", "--json"]);
    assert!(
        output.status.success(),
        "gateway status failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "gateway status --json printed no status ({e}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Asks `gateway status` until `ready` holds (panics after 15 s, showing the last one).
pub fn wait_for_status(
    gateway: &Gateway,
    what: &str,
    ready: impl Fn(&StatusView) -> bool,
) -> StatusView {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let view = status(gateway);
        if ready(&view) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "gateway status never showed {what}:\n{view:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One HTTP/1.1 request: the status line, the head and the body of the answer.
pub fn http(addr: SocketAddr, request: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the status listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream.write_all(request.as_bytes()).expect("send request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read answer");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, head.to_string(), body.to_string())
}

/// GET `path`: the status line and the body.
pub fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let (status, _, body) = http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    );
    (status, body)
}

/// The metrics text, checked by `promtool check metrics` (panics with what it found).
pub fn scrape(addr: SocketAddr) -> String {
    let (status, text) = get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{text}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "promtool (Debian package prometheus) must be installed: scripts/test.sh installs it",
        );
    promtool
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let checked = promtool.wait_with_output().expect("promtool ran");
    assert!(
        checked.status.success(),
        "promtool check metrics refused the metrics: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    text
}

/// The value of the sample `series` (name with its labels, as written) in `text`.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("sample {series}: {e}"))
}

/// The page at `url` as headless Chromium leaves its DOM after running its scripts for
/// up to `budget` of virtual time.
pub fn chromium_dom(url: &str, budget: Duration) -> String {
    let profile = tempfile::tempdir().expect("chromium profile dir");
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={}", budget.as_millis()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect(
            "chromium (Debian package chromium) must be installed: scripts/test.sh installs it",
        );
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// The text of the cells of each row of the table with `id` in a dumped DOM.
pub fn table_rows(dom: &str, id: &str) -> Vec<Vec<String>> {
    let start = dom
        .find(&format!("<table id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no table {id} in:\n{dom}"));
    let table = &dom[start..start + dom[start..].find("</table>").unwrap_or(0)];
    table
        .split("<tr")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let text = cell.split_once('>').map_or("", |(_, rest)| rest);
                    text.split("</td>").next().unwrap_or_default().to_string()
                })
                .collect::<Vec<String>>()
        })
        .filter(|cells| !cells.is_empty())
        .collect()
}
