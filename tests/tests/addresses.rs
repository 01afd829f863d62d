//! Addresses in real deployments: a gateway listening on every address answers from the
//! address each request arrived at and names that address, toward each phone, in the Via,
//! Contact and SDP it sends (phones on two networks each see their own); `[::]` serves IPv4
//! and IPv6 phones; `sip.advertise` and `media.advertise` replace the local address.
//!
//! The two-network tests move their thread into a private network namespace whose
//! loopback carries the gateway's addresses (10.1.0.1, 10.2.0.1, fd00:1::1) and the
//! phones' (10.1.0.2, 10.2.0.2, fd00:1::2): they need root, like the loss tests.

use bench::netns::LossyLoopback;
use e2e_tests::{free_port, options_request, status_of, Gateway, GatewayOptions, Sipp};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

/// Sends an OPTIONS from `from` to the gateway at `to`; returns the answer's status and the
/// address it came from.
fn ask(gateway: &Gateway, from: &str, to: &str) -> (Option<u16>, SocketAddr) {
    let socket = UdpSocket::bind((from.parse::<IpAddr>().unwrap(), 0)).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let request = options_request(gateway.port, &format!("ask{}", free_port()))
        .replace(&format!("sip:{}@", gateway.port), "sip:");
    let target = SocketAddr::new(to.parse().unwrap(), gateway.port);
    socket.send_to(request.as_bytes(), target).expect("send");
    let mut buffer = [0u8; 4096];
    let (n, source) = socket.recv_from(&mut buffer).expect("an answer within 5 s");
    (status_of(&String::from_utf8_lossy(&buffer[..n])), source)
}

fn wildcard(listen_ip: &'static str, backend: Option<&'static str>) -> Gateway {
    Gateway::start(GatewayOptions {
        listen_ip: Some(listen_ip),
        fastpath_backend: backend,
        media_anchor: Some("always"),
        udp_only_without_analog: true,
        ..GatewayOptions::default()
    })
}

#[test]
fn a_wildcard_gateway_answers_from_the_address_it_was_asked_at() {
    // 127.0.0.2 is the host's too (all of 127/8 is local): asked there from 127.0.0.1, a
    // reply left to the kernel would come from 127.0.0.1.
    for backend in ["io_uring", "epoll", "off"] {
        let gateway = wildcard("0.0.0.0", Some(backend));
        for to in ["127.0.0.2", "127.0.0.1"] {
            let (status, source) = ask(&gateway, "127.0.0.1", to);
            assert_eq!(status, Some(200), "{backend}");
            assert_eq!(
                source,
                SocketAddr::new(to.parse().unwrap(), gateway.port),
                "{backend}: answered from the address asked"
            );
        }
    }
}

/// 201 registers at `callee_gateway` from `callee`, 202 at `caller_gateway` from `caller`;
/// 202 calls 201, and each phone checks that the gateway named, in what it sent that
/// phone, the address the phone reaches it at.
fn call_between(
    gateway: &Gateway,
    (callee, callee_gateway): (&str, &str),
    (caller, caller_gateway): (&str, &str),
) {
    let host_port = |ip: &str| match ip.parse::<IpAddr>().unwrap() {
        IpAddr::V6(v6) => format!("[{v6}]:{}", gateway.port),
        IpAddr::V4(v4) => format!("{v4}:{}", gateway.port),
    };
    let (callee_port, caller_port) = (free_port(), free_port());
    for (ext, ip, at, port) in [
        ("201", callee, callee_gateway, callee_port),
        ("202", caller, caller_gateway, caller_port),
    ] {
        Sipp::new("register.xml", port)
            .local_ip(ip)
            .gateway_ip(at)
            .service(ext)
            .credentials(ext, &format!("pw{ext}"))
            .key("expires", "3600")
            .expect(200)
            .run(gateway);
    }
    let answering = Sipp::new("uas_answer.xml", callee_port)
        .local_ip(callee)
        .gateway_ip(callee_gateway)
        .expect_gateway_at(&host_port(callee_gateway), callee_gateway)
        .spawn(gateway);
    Sipp::new("uac_call.xml", caller_port)
        .local_ip(caller)
        .gateway_ip(caller_gateway)
        .service("201")
        .credentials("202", "pw202")
        .key("caller", "202")
        .expect_gateway_at(&host_port(caller_gateway), caller_gateway)
        .run(gateway);
    answering.wait();
}

/// A private network namespace whose loopback has the gateway's and the phones' addresses.
fn two_networks() -> LossyLoopback {
    let network = LossyLoopback::enter();
    for address in [
        "10.1.0.1/24",
        "10.1.0.2/24",
        "10.2.0.1/24",
        "10.2.0.2/24",
        "fd00:1::1/64",
        "fd00:1::2/64",
    ] {
        network.add_address(address);
    }
    network
}

#[test]
fn phones_on_two_networks_are_each_told_their_own_address() {
    let _network = two_networks();
    for listen in ["0.0.0.0", "[::]"] {
        let gateway = wildcard(listen, None);
        // Asked on the other network's address, the answer still comes from it.
        let (status, source) = ask(&gateway, "10.1.0.2", "10.2.0.1");
        assert_eq!(status, Some(200));
        assert_eq!(
            source,
            SocketAddr::new("10.2.0.1".parse().unwrap(), gateway.port)
        );
        call_between(&gateway, ("10.1.0.2", "10.1.0.1"), ("10.2.0.2", "10.2.0.1"));
        call_between(&gateway, ("10.2.0.2", "10.2.0.1"), ("10.1.0.2", "10.1.0.1"));
    }
}

#[test]
fn a_dual_stack_gateway_connects_an_ipv4_phone_and_an_ipv6_phone() {
    let _network = two_networks();
    let gateway = wildcard("[::]", None);
    let (status, source) = ask(&gateway, "fd00:1::2", "fd00:1::1");
    assert_eq!(status, Some(200));
    assert_eq!(
        source,
        SocketAddr::new("fd00:1::1".parse().unwrap(), gateway.port)
    );
    call_between(
        &gateway,
        ("fd00:1::2", "fd00:1::1"),
        ("10.2.0.2", "10.2.0.1"),
    );
    call_between(
        &gateway,
        ("10.2.0.2", "10.2.0.1"),
        ("fd00:1::2", "fd00:1::1"),
    );
}

#[test]
fn advertised_addresses_are_named_instead_of_the_local_one() {
    let gateway = Gateway::start(GatewayOptions {
        listen_ip: Some("0.0.0.0"),
        media_anchor: Some("always"),
        udp_only_without_analog: true,
        keys: vec![
            ("sip", "advertise = \"pbx.example.com\"".into()),
            ("media", "advertise = \"203.0.113.5\"".into()),
        ],
        ..GatewayOptions::default()
    });
    let named = format!("pbx.example.com:{}", gateway.port);
    let phone = free_port();
    e2e_tests::register(&gateway, "201", phone, 3600, 200);
    let answering = Sipp::new("uas_answer.xml", phone)
        .expect_gateway_at(&named, "203.0.113.5")
        .spawn(&gateway);
    Sipp::new("uac_call.xml", free_port())
        .service("201")
        .credentials("202", "pw202")
        .key("caller", "202")
        .expect_gateway_at(&named, "203.0.113.5")
        .run(&gateway);
    answering.wait();
}
