//! SIP capture (`[trace]`) from the real binary, decoded by tshark: the pcap file holds the
//! REGISTER exchanges over UDP and TCP with their addresses, and the HEP3 packets a
//! collector socket receives are unwrapped by sngrep's HEP parser into the same SIP
//! messages (Debian's tshark 4.0 has no HEP dissector yet).

use e2e_tests::{free_port, Gateway, GatewayOptions, Sipp};
use gateway::trace::packet::{ip_packet, Carrier};
use gateway::trace::pcap::RotatingPcap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

/// tshark's fields of every SIP message in `pcap`, one line each, tab-separated.
fn tshark(pcap: &Path, decode_as: &[&str], fields: &[&str]) -> Vec<Vec<String>> {
    let mut command = Command::new("tshark");
    command
        .arg("-r")
        .arg(pcap)
        .args(decode_as)
        .args(["-Y", "sip", "-T", "fields"]);
    for field in fields {
        command.args(["-e", field]);
    }
    let output = command
        .output()
        .expect("tshark (Debian package tshark) must be installed: scripts/test.sh installs it");
    assert!(
        output.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.split('\t').map(str::to_string).collect())
        .collect()
}

/// Reads the capture until tshark finds `count` SIP messages (the capture thread writes
/// them as they come; panics after 15 s).
fn wait_for_messages(pcap: &Path, fields: &[&str], count: usize) -> Vec<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows = if pcap.exists() {
            tshark(pcap, &[], fields)
        } else {
            Vec::new()
        };
        if rows.len() >= count {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "only {} SIP message(s) captured: {rows:?}",
            rows.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sip_over_udp_and_tcp_is_captured_to_pcap_and_to_a_hep_collector() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("sip.pcap");
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    collector
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let collector_addr = collector.local_addr().unwrap();
    let gateway = Gateway::start(GatewayOptions {
        extra: format!(
            "[trace]\npcap = \"{}\"\nhep = \"{collector_addr}\"\nhep_capture_id = 4242\n",
            pcap.display()
        ),
        ..GatewayOptions::default()
    });
    gateway.wait_for_log("SIP capture to the HEP3 collector");

    let udp_port = free_port();
    Sipp::new("register.xml", udp_port)
        .service("201")
        .credentials("201", "pw201")
        .key("expires", "600")
        .expect(200)
        .run(&gateway);
    let tcp_port = free_port();
    Sipp::new("register.xml", tcp_port)
        .tcp()
        .service("202")
        .credentials("202", "pw202")
        .key("expires", "600")
        .expect(200)
        .run(&gateway);

    let fields = [
        "ip.src",
        "udp.srcport",
        "tcp.srcport",
        "udp.dstport",
        "tcp.dstport",
        "sip.Method",
        "sip.Status-Code",
    ];
    let rows = wait_for_messages(&pcap, &fields, 8);
    let gateway_port = gateway.port.to_string();
    let exchange = |port: u16, tcp: bool| -> Vec<(String, String)> {
        let port = port.to_string();
        let (src, dst) = if tcp { (2, 4) } else { (1, 3) };
        rows.iter()
            .filter(|row| row[src] == port || row[dst] == port)
            .map(|row| {
                let from_phone = row[src] == port;
                assert_eq!(
                    if from_phone { &row[dst] } else { &row[src] },
                    &gateway_port,
                    "{row:?}"
                );
                (row[5].clone(), row[6].clone())
            })
            .collect()
    };
    let expected: Vec<(String, String)> =
        [("REGISTER", ""), ("", "401"), ("REGISTER", ""), ("", "200")]
            .iter()
            .map(|(m, c)| (m.to_string(), c.to_string()))
            .collect();
    assert_eq!(exchange(udp_port, false), expected, "UDP: {rows:?}");
    assert_eq!(exchange(tcp_port, true), expected, "TCP: {rows:?}");

    // Nothing was left out of the capture, and the metrics say so.
    let metrics = gateway.subcommand(&["status", "metrics"]);
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains("\npotsgw_capture_dropped_total 0\n"),
        "{metrics}"
    );

    // The collector got the same messages as HEP3.
    let mut received = Vec::new();
    let mut buffer = [0u8; 65_535];
    while received.len() < 8 {
        let (length, from) = collector.recv_from(&mut buffer).expect("a HEP packet");
        received.push((from, buffer[..length].to_vec()));
    }
    let heps = dir.path().join("hep.pcap");
    let mut file = RotatingPcap::open(&heps, 10_000_000, 1).unwrap();
    let to: SocketAddr = "127.0.0.1:9060".parse().unwrap();
    for (from, datagram) in &received {
        let packet = ip_packet(Carrier::Udp, *from, to, datagram).unwrap();
        file.write(SystemTime::now(), &packet).unwrap();
    }
    file.flush().unwrap();
    drop(file);
    // sngrep's HEP/EEP parser (an implementation apart from ours; tshark 4.0 has none)
    // takes the SIP out of the HEP packets and writes it as a pcap again.
    let unwrapped = dir.path().join("unwrapped.pcap");
    let sngrep = Command::new("timeout")
        .args(["30", "sngrep", "-N", "-q", "-E", "-I"])
        .arg(&heps)
        .arg("-O")
        .arg(&unwrapped)
        .output()
        .expect("sngrep (Debian package sngrep) must be installed: scripts/test.sh installs it");
    assert!(
        sngrep.status.success() && unwrapped.exists(),
        "sngrep: {}{}",
        String::from_utf8_lossy(&sngrep.stdout),
        String::from_utf8_lossy(&sngrep.stderr)
    );
    // sngrep 1.6.0 writes Ethernet frames under the input's link type (RAW here), each
    // message twice and every one as UDP: the link type is set right, doubles are dropped.
    let mut bytes = std::fs::read(&unwrapped).unwrap();
    bytes[20..24].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(&unwrapped, bytes).unwrap();
    let mut decoded = tshark(
        &unwrapped,
        &[],
        &[
            "udp.srcport",
            "udp.dstport",
            "sip.Method",
            "sip.Status-Code",
            "sip.CSeq",
        ],
    );
    decoded.dedup();
    assert_eq!(decoded.len(), 8, "{decoded:?}");
    let registers = decoded.iter().filter(|row| row[2] == "REGISTER").count();
    let okays = decoded.iter().filter(|row| row[3] == "200").count();
    assert_eq!((registers, okays), (4, 2), "{decoded:?}");
    for phone in [udp_port, tcp_port] {
        let phone = phone.to_string();
        let seen = decoded
            .iter()
            .filter(|row| {
                (row[0] == phone && row[1] == gateway_port)
                    || (row[1] == phone && row[0] == gateway_port)
            })
            .count();
        assert_eq!(
            seen, 4,
            "phone {phone}'s exchange with the gateway: {decoded:?}"
        );
    }
}
