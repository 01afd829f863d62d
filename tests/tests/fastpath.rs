//! UDP SIP on every fast path backend (io_uring, epoll) and without it: the gateway says
//! which one serves the socket, registrations and calls work, malformed datagrams are
//! dropped and counted on the fast path while broken requests still get their RFC answer,
//! and analog audio crosses the analog and relay workers on that backend.

use e2e_tests::{
    answers_options, free_port, logged_port, register, sipp_calls, status_of, udp_exchange,
    Gateway, GatewayOptions, Sipp,
};
use std::time::Duration;

fn gateway_on(backend: &'static str) -> Gateway {
    Gateway::start(GatewayOptions {
        fastpath_backend: Some(backend),
        ..GatewayOptions::default()
    })
}

fn a_call_works(gateway: &Gateway) {
    let phone = free_port();
    register(gateway, "201", phone, 600, 200);
    let callee = Sipp::new("uas_answer.xml", phone).spawn(gateway);
    Sipp::new("uac_call.xml", free_port())
        .service("201")
        .credentials("202", "pw202")
        .key("caller", "202")
        .run(gateway);
    callee.wait();
}

/// Analog phone 101 calls 102 (both on the analog worker, media through the relay worker):
/// a tone said into 101's handset is heard at 102.
fn analog_audio_crosses(gateway: &Gateway, backend: &str) {
    gateway.analog("lift 1");
    gateway.analog("dial 1 102");
    gateway.wait_for_analog(2, "ringing", "true", Duration::from_secs(15));
    gateway.analog("lift 2");
    gateway.wait_for_log("analog port 1: call answered");
    gateway.analog("listen 2");
    gateway.analog("say 1 1004 800");
    gateway.hears_tone(2, &format!("{backend}: 101's 1004 Hz"), &[1004.0]);
    gateway.analog("hangup 1");
    gateway.analog("hangup 2");
}

#[test]
fn every_backend_serves_registrations_calls_and_bad_input() {
    for (backend, log_line) in [
        ("io_uring", "(fast path on io_uring)"),
        ("epoll", "(fast path on epoll)"),
        ("off", "listening on udp"),
    ] {
        let mut gateway = gateway_on(backend);
        assert!(
            gateway.log().contains(log_line),
            "{backend}: {}",
            gateway.log()
        );
        a_call_works(&gateway);
        assert_eq!(
            udp_exchange(
                &gateway,
                b"not sip at all\r\n\r\n",
                Duration::from_millis(300)
            ),
            None
        );
        let no_call_id = "OPTIONS sip:201@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKfp;rport\r\n\
From: <sip:probe@127.0.0.1>;tag=fp\r\nTo: <sip:201@127.0.0.1>\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        let answer = udp_exchange(&gateway, no_call_id.as_bytes(), Duration::from_secs(2));
        assert_eq!(
            answer.as_deref().and_then(status_of),
            Some(400),
            "{backend}"
        );
        assert!(answers_options(&gateway), "{backend}");
        analog_audio_crosses(&gateway, backend);
        assert!(
            gateway.terminate().is_some_and(|s| s.success()),
            "{backend}"
        );
        if backend != "off" {
            assert!(
                gateway
                    .log()
                    .contains(" 1 malformed dropped, 0 too large, 0 send(s) dropped"),
                "{backend}: {}",
                gateway.log()
            );
        }
    }
}

#[test]
fn anchored_sip_calls_send_their_rtp_through_the_relay() {
    use e2e_tests::analog::RtpPeer;
    use telephony_hw::dsp::analysis::dominant_frequency;
    use telephony_hw::dsp::g711::Law;
    let gateway = Gateway::start(GatewayOptions {
        media_anchor: Some("always"),
        ..GatewayOptions::default()
    });
    let (mut phone_a, mut phone_b) = (RtpPeer::new(), RtpPeer::new());
    let port = free_port();
    register(&gateway, "201", port, 600, 200);
    let callee = Sipp::new("uas_answer.xml", port)
        .fill("@MEDIA_PORT@", &phone_b.port().to_string())
        .spawn(&gateway);
    let caller = Sipp::new("uac_call.xml", free_port())
        .service("201")
        .credentials("202", "pw202")
        .key("caller", "202")
        .fill("@MEDIA_PORT@", &phone_a.port().to_string())
        .fill("@HOLD_MS@", "3000")
        .spawn(&gateway);
    let relay_b: std::net::SocketAddr = (
        [127, 0, 0, 1],
        logged_port(&callee.wait_for_log_line("offered")),
    )
        .into();
    let relay_a: std::net::SocketAddr = (
        [127, 0, 0, 1],
        logged_port(&caller.wait_for_log_line("answered")),
    )
        .into();
    assert_ne!(
        relay_a.port(),
        phone_b.port(),
        "the caller is pointed at the relay"
    );
    assert_ne!(
        relay_b.port(),
        phone_a.port(),
        "the callee is pointed at the relay"
    );
    let check = |to: &RtpPeer, relay_out, hz: f32| {
        let received = to.receive(Duration::from_millis(300), Law::Ulaw, 101);
        assert_eq!(
            received.source,
            Some(relay_out),
            "relayed from the gateway's port"
        );
        let tone = dominant_frequency(&received.audio).expect("audio relayed");
        assert!((tone.frequency_hz - hz).abs() < 5.0, "{tone:?}");
    };
    phone_a.send_tone(relay_a, Law::Ulaw, 0, 1004.0, 600);
    check(&phone_b, relay_b, 1004.0);
    phone_b.send_tone(relay_b, Law::Ulaw, 0, 1400.0, 600);
    check(&phone_a, relay_a, 1400.0);
    caller.wait();
    callee.wait();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !gateway.cdrs().contains("A:") {
        assert!(std::time::Instant::now() < deadline, "{}", gateway.cdrs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The descriptor number, in process `pid`, of its UDP socket bound to 127.0.0.1:`port`.
fn udp_socket_fd(pid: u32, port: u16) -> i32 {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/udp")).unwrap();
    let local = format!("0100007F:{port:04X}");
    let inode = table
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.get(1) == Some(&local.as_str()))
        .and_then(|fields| fields.get(9).map(|inode| inode.to_string()))
        .unwrap_or_else(|| panic!("no UDP socket on {local} in {table}"));
    let link = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(Result::ok)
        .find(|entry| {
            std::fs::read_link(entry.path()).is_ok_and(|target| target.as_os_str() == link.as_str())
        })
        .and_then(|entry| entry.file_name().to_str()?.parse().ok())
        .unwrap_or_else(|| panic!("no descriptor of {link} in process {pid}"))
}

#[test]
fn a_sip_socket_shut_down_underneath_stops_the_gateway_with_the_cause_and_a_failure_exit() {
    use rustix::process::{pidfd_getfd, pidfd_open, Pid, PidfdFlags, PidfdGetfdFlags};
    for backend in ["io_uring", "epoll"] {
        let mut gateway = gateway_on(backend);
        assert!(answers_options(&gateway), "{backend}");
        // Another process takes a copy of the gateway's SIP socket (as one it was passed to
        // would hold it) and shuts it down for reading: the socket can never receive again.
        let pid = gateway.pid();
        let pidfd = pidfd_open(Pid::from_raw(pid as i32).unwrap(), PidfdFlags::empty()).unwrap();
        let socket = pidfd_getfd(
            &pidfd,
            udp_socket_fd(pid, gateway.port),
            PidfdGetfdFlags::empty(),
        )
        .unwrap();
        // Unconnected UDP answers ENOTCONN, and shuts down all the same.
        let _ = rustix::net::shutdown(&socket, rustix::net::Shutdown::Read);
        let status = gateway.wait_for_exit(Duration::from_secs(10));
        assert_eq!(status.code(), Some(1), "{backend}: {}", gateway.log());
        let log = gateway.log();
        assert!(
            log.contains("fast path worker sip-engine")
                && log.contains(&format!(
                    "stopped and no longer serves its sockets: socket 0 (127.0.0.1:{}) was shut down for reading",
                    gateway.port
                ))
                && log.contains("the gateway stops so that its supervisor restarts it"),
            "{backend}: the cause is logged: {log}"
        );
    }
}

#[test]
fn a_udp_only_gateway_keeps_serving() {
    // Only the fast path feeds the control plane here: no TCP task, no analog ports.
    let gateway = Gateway::start(GatewayOptions {
        udp_only_without_analog: true,
        ..GatewayOptions::default()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(answers_options(&gateway), "{}", gateway.log());
}

/// Two engine shards on two SO_REUSEPORT sockets: SIPp's calls (one source port, so one
/// socket receives them all and hands about half to the other shard), each registration
/// seen by both shards, an analog call through whichever shard its Call-ID names.
#[test]
fn two_engine_shards_serve_calls_whichever_shard_their_call_ids_name() {
    let mut gateway = Gateway::start(GatewayOptions {
        fastpath_backend: Some("io_uring"),
        ..GatewayOptions::two_shards()
    });
    assert!(
        gateway
            .log()
            .contains("2 engine shards on SO_REUSEPORT sockets"),
        "{}",
        gateway.log()
    );
    sipp_calls(&gateway, 40, 20);
    analog_audio_crosses(&gateway, "two shards");
    assert!(answers_options(&gateway));
    assert!(gateway.terminate().is_some_and(|s| s.success()));
    let log = gateway.log();
    assert!(
        log.contains("0 on their way to another shard"),
        "nothing dropped between the shards: {log}"
    );
}

/// With two engine shards every datagram reaches the socket of its call's shard: the
/// kernel steers by Call-ID (the BPF program), so no shard hands one to another. Requests
/// come from many source ports, which the kernel's own hash would spread over both sockets
/// whatever their Call-IDs (about half of them handed over without the program).
#[test]
fn with_two_shards_the_kernel_steers_each_datagram_to_its_call_s_shard() {
    use e2e_tests::operations::sample;
    let gateway = Gateway::start(GatewayOptions::two_shards());
    assert!(
        gateway
            .log()
            .contains("the kernel steers each datagram to its call's engine shard (BPF)"),
        "{}",
        gateway.log()
    );
    for i in 0..40 {
        let options = format!(
            "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKst{i};rport\r\n\
From: <sip:probe@127.0.0.1>;tag=st{i}\r\nTo: <sip:127.0.0.1>\r\nCall-ID: steer-{i}@probe\r\n\
CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        let answer = udp_exchange(&gateway, options.as_bytes(), Duration::from_secs(5));
        assert_eq!(answer.as_deref().and_then(status_of), Some(200), "{i}");
    }
    let metrics = gateway.subcommand(&["status", "metrics"]);
    let text = String::from_utf8_lossy(&metrics.stdout);
    assert_eq!(
        sample(&text, "potsgw_engine_handed_over_total"),
        0.0,
        "{text}"
    );
}
