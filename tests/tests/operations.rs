//! Operations against the real binary: `gateway status` over the control socket, the
//! Prometheus metrics (checked by `promtool`), the status page in headless Chromium, and
//! reloading the config without dropping calls.

use e2e_tests::analog::RtpPeer;
use e2e_tests::operations::{
    chromium_dom, get, http, http_listen, sample, scrape, status, table_rows, wait_for_status,
};
use e2e_tests::{free_port, register, Gateway, GatewayOptions, Sipp};
use std::net::SocketAddr;
use std::time::Duration;

/// A gateway with the HTTP listener on; its address.
fn with_http() -> (Gateway, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gateway = Gateway::start(GatewayOptions {
        keys: vec![http_listen(addr)],
        ..GatewayOptions::default()
    });
    gateway.wait_for_log(&format!("status page and metrics on http://{addr}/"));
    (gateway, addr)
}

/// The rows of the page's table `id` once the page shows `expected` in one of them.
fn page_rows(addr: SocketAddr, id: &str, expected: &[&str]) -> Vec<Vec<String>> {
    let url = format!("http://{addr}/");
    for _ in 0..10 {
        let rows = table_rows(&chromium_dom(&url, Duration::from_secs(3)), id);
        if rows.iter().any(|row| {
            expected
                .iter()
                .all(|want| row.iter().any(|cell| cell == want))
        }) {
            return rows;
        }
    }
    panic!("the status page's {id} table never showed {expected:?}");
}

#[test]
fn a_pstn_call_picked_up_shows_in_gateway_status_the_metrics_and_the_status_page() {
    let (gateway, addr) = with_http();
    let before = scrape(addr);
    assert_eq!(sample(&before, "potsgw_calls_started_total"), 0.0);
    let unused = RtpPeer::new();
    let peer = RtpPeer::new();
    let port = free_port();
    register(&gateway, "201", port, 600, 200);
    let callee = Sipp::new("uas_ring_picked.xml", port)
        .fill("@MEDIA_PORT@", &unused.port().to_string())
        .spawn(&gateway);

    // The registration, with the phone's User-Agent.
    let view = status(&gateway);
    let phone = view
        .registrations
        .iter()
        .find(|r| r.extension == "201")
        .unwrap_or_else(|| panic!("201 not registered: {view:#?}"));
    assert_eq!(phone.transport, "udp");
    assert_eq!(phone.user_agent.as_deref(), Some("SIPp phone 201"));

    // A PSTN caller rings the sales group.
    gateway.analog("ring 3 5551234 Jane Doe");
    let ringing = wait_for_status(&gateway, "the PSTN call ringing", |view| {
        view.calls
            .iter()
            .any(|c| c.caller == "5551234" && c.state == "ringing")
    });
    let line = ringing.ports.iter().find(|p| p.channel == 3).unwrap();
    assert_eq!(
        (line.kind.as_str(), line.call.as_str()),
        ("line", "calling")
    );
    let rows = page_rows(addr, "calls", &["5551234", "sales", "ringing"]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let tables = gateway.subcommand(&["status", "calls"]);
    let text = String::from_utf8_lossy(&tables.stdout);
    let row: Vec<&str> = text
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(row[..3], ["5551234", "sales", "ringing"], "{text}");

    // 202 picks it up with *8: the gateway hands it over with an INVITE with Replaces.
    let pickup = Sipp::new("uac_pickup.xml", free_port())
        .service("*8")
        .credentials("202", "pw202")
        .key("caller", "202")
        .out_of_call("uas_replaces.xml")
        .caller_id("\"Jane Doe\" <sip:5551234@")
        .fill("@PICKED_CALL_MS@", "15000")
        .fill("@MEDIA_PORT@", &peer.port().to_string())
        .spawn(&gateway);
    let answered = wait_for_status(&gateway, "the call picked up by 202", |view| {
        view.calls.iter().any(|c| {
            c.state == "answered"
                && c.answered_by.as_deref() == Some("202")
                && c.pickup.as_deref() == Some("group")
        }) && !view.recent_pickups.is_empty()
    });
    let recent = &answered.recent_pickups[0];
    assert_eq!(
        (
            recent.picker.as_str(),
            recent.path.as_str(),
            recent.outcome.as_str()
        ),
        ("202", "replaces", "connected")
    );
    page_rows(addr, "calls", &["5551234", "answered", "202", "group"]);
    page_rows(addr, "recent-pickups", &["202", "replaces", "connected"]);

    let during = scrape(addr);
    assert_eq!(sample(&during, "potsgw_calls_started_total"), 1.0);
    assert_eq!(
        sample(&during, "potsgw_calls_active{state=\"answered\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &during,
            "potsgw_pickups_total{path=\"replaces\",outcome=\"connected\"}"
        ),
        1.0
    );
    assert!(sample(&during, "potsgw_call_setup_seconds_count") >= 1.0);
    assert!(sample(&during, "potsgw_registrations") >= 1.0);
    assert!(
        sample(
            &during,
            "potsgw_analog_port_in_call{channel=\"3\",kind=\"line\"}"
        ) == 1.0,
        "{during}"
    );

    gateway.analog("battery-drop 3");
    pickup.wait();
    callee.wait();
    wait_for_status(&gateway, "the call over", |view| view.calls.is_empty());
    let after = scrape(addr);
    assert_eq!(
        sample(&after, "potsgw_calls_ended_total{disposition=\"answered\"}"),
        1.0
    );
    assert_eq!(
        sample(&after, "potsgw_calls_active{state=\"answered\"}"),
        0.0
    );
    assert!(sample(&after, "potsgw_store_commit_seconds_count") >= 1.0);

    // The CDR exported for billing, as CSV and as JSON, with the columns README lists.
    let csv = gateway.subcommand(&["cdr", "--format", "csv", "--since", "1h"]);
    let csv = String::from_utf8_lossy(&csv.stdout).to_string();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert_eq!(lines[0], gateway::report::export::COLUMNS.join(","));
    let fields: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(
        fields[2..7],
        ["5551234", "sales", "202", "group", "202"],
        "{csv}"
    );
    assert_eq!(fields[13], "answered", "{csv}");
    let json = gateway.subcommand(&["cdr", "--format", "json", "--since", "2000-01-01"]);
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(rows[0]["billed"], "202");
    assert_eq!(rows[0]["pickup_method"], "group");
    assert!(rows[0]["talk_ms"].as_u64().is_some());
    let future = gateway.subcommand(&["cdr", "--format", "csv", "--since", "2099-01-01"]);
    assert_eq!(
        String::from_utf8_lossy(&future.stdout).lines().count(),
        1,
        "the header only"
    );
    let bad = gateway.subcommand(&["cdr", "--since", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected a UTC date"));
}

#[test]
fn the_http_listener_answers_only_what_it_serves() {
    let (gateway, addr) = with_http();
    let (status_line, page) = get(addr, "/");
    assert_eq!(status_line, "HTTP/1.1 200 OK");
    assert!(page.contains("<table id=\"calls\">"), "{page}");
    let (_, head, _) = http(addr, "GET /status.js HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        head.contains("Content-Security-Policy: default-src 'self'"),
        "{head}"
    );
    assert_eq!(get(addr, "/nothing").0, "HTTP/1.1 404 Not Found");
    let (status_line, head, _) = http(addr, "POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_line, "HTTP/1.1 405 Method Not Allowed");
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    assert_eq!(
        http(addr, "NOT HTTP AT ALL\r\n\r\n").0,
        "HTTP/1.1 400 Bad Request"
    );
    let endless = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(10_000));
    assert_eq!(
        http(addr, &endless).0,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    let json: serde_json::Value = serde_json::from_str(&get(addr, "/status.json").1).unwrap();
    assert_eq!(json["node"], "gw1");
    // The gateway is still serving SIP.
    register(&gateway, "201", free_port(), 600, 200);
}

#[test]
fn a_reload_takes_a_new_extension_keeps_calls_up_and_refuses_a_broken_config() {
    let gateway = Gateway::start(GatewayOptions::default());
    register(&gateway, "205", free_port(), 600, 403);
    // A call up while the config is reloaded.
    let unused = RtpPeer::new();
    let port = free_port();
    register(&gateway, "201", port, 600, 200);
    let callee = Sipp::new("uas_answer.xml", port)
        .fill("@MEDIA_PORT@", &unused.port().to_string())
        .spawn(&gateway);
    let caller = Sipp::new("uac_call.xml", free_port())
        .service("201")
        .credentials("204", "pw204")
        .key("caller", "204")
        .fill("@HOLD_MS@", "4000")
        .spawn(&gateway);
    wait_for_status(&gateway, "the call answered", |view| {
        view.calls.iter().any(|c| c.state == "answered")
    });

    let config = gateway.config_path();
    let original = std::fs::read_to_string(config).unwrap();
    std::fs::write(
        config,
        format!("{original}\n[[extension]]\nnumber = \"205\"\npassword = \"pw205\"\n"),
    )
    .unwrap();
    let reloaded = gateway.subcommand(&["status", "reload"]);
    let said = String::from_utf8_lossy(&reloaded.stdout);
    assert!(
        reloaded.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&reloaded.stderr)
    );
    assert!(said.contains("reloaded: extension 205 added"), "{said}");
    register(&gateway, "205", free_port(), 600, 200);

    // A broken file: the error names the file, line and field; the running config stays.
    std::fs::write(config, format!("{original}\n[[extension]]\nnumber = 206\n")).unwrap();
    let refused = gateway.subcommand(&["status", "reload"]);
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        error.contains("not reloaded, the running config is kept")
            && error.contains(&config.display().to_string())
            && error.contains("line"),
        "{error}"
    );
    register(&gateway, "205", free_port(), 600, 200);

    // SIGHUP does the same: the extension removed again.
    std::fs::write(config, &original).unwrap();
    gateway.hang_up();
    gateway.wait_for_log("reloaded: extension 205 removed");
    register(&gateway, "205", free_port(), 600, 403);

    caller.wait();
    callee.wait();
    let (cdrs, fields) = gateway.last_cdr();
    assert_eq!(
        fields[2..8],
        ["204", "201", "201", "none", "204", "answered"],
        "{cdrs}"
    );
}
