//! Two gateway nodes on one throwaway PostgreSQL cluster (loopback, two ports): a call
//! reaching node b for a phone registered through node a connects through a; a request
//! signed as a node from an address that is no node is challenged; a node killed with
//! `kill -9` is taken over by the survivor (registrations removed, the call it had up
//! closed with an interrupted CDR); a call ringing on node a is picked up by a picker on
//! node b, with Replaces (the seed's flow across the nodes) and bridged, and an analog
//! caller on node a talks to the picker on node b through a's relay; a BLF key on node b
//! sees a call ringing on node a, with a's ids, and goes dark when a is killed. Needs
//! Debian's `postgresql` and SIPp.

use e2e_tests::analog::{analog_to_sip_audio, sip_to_analog_audio, RtpPeer};
use e2e_tests::blf::{key, logged_ids, wait_validated};
use e2e_tests::pickup::{call_id_on_shard, picker, ringing, ringing_on_shard};
use e2e_tests::{free_port, register, udp_exchange, Gateway, GatewayOptions, Sipp};
use gateway::store::test_cluster::TestCluster;
use std::time::{Duration, Instant};

const SECRET: &str = "e2e-cluster-secret-0123";

/// Nodes a and b on `url`, each naming the other as its peer.
fn two_nodes(url: &str, options: impl Fn() -> GatewayOptions) -> (Gateway, Gateway) {
    let mut nodes = cluster_of(url, &["a", "b"], options).into_iter();
    let (Some(a), Some(b)) = (nodes.next(), nodes.next()) else {
        unreachable!("two nodes started")
    };
    (a, b)
}

/// One node per id on `url`, each naming all the others as its peers.
fn cluster_of(url: &str, ids: &[&str], options: impl Fn() -> GatewayOptions) -> Vec<Gateway> {
    let ports: Vec<u16> = ids.iter().map(|_| free_port()).collect();
    let node = |id: &str, own: u16| {
        let peers: Vec<String> = ports
            .iter()
            .filter(|&&port| port != own)
            .map(|port| format!("\"127.0.0.1:{port}\""))
            .collect();
        format!(
            "id = \"{id}\"\npeers = [{}]\nsecret = \"{SECRET}\"\n\
             heartbeat_secs = 1\ntakeover_secs = 3",
            peers.join(", ")
        )
    };
    let nodes: Vec<Gateway> = ids
        .iter()
        .zip(&ports)
        .map(|(id, &port)| {
            Gateway::start(GatewayOptions {
                database_url: Some(url.to_string()),
                port: Some(port),
                node: Some(node(id, port)),
                ..options()
            })
        })
        .collect();
    for (id, node) in ids.iter().zip(&nodes) {
        node.wait_for_log(&format!("node {id}: in a cluster with"));
    }
    nodes
}

/// Polls `query` (one integer) until it is `want`, for up to 10 s; returns the last value.
fn wait_for_count(client: &mut postgres::Client, query: &str, want: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = client.query_one(query, &[]).unwrap().get(0);
        if n == want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_call_reaching_node_b_connects_through_node_a_where_the_phone_registered() {
    let cluster = TestCluster::shared();
    let url = cluster.create_database();
    let (a, b) = two_nodes(&url, GatewayOptions::default);
    let phone = free_port();
    register(&a, "201", phone, 600, 200);
    let callee = Sipp::new("uas_answer.xml", phone).spawn(&a);
    Sipp::new("uac_call.xml", free_port())
        .service("201")
        .credentials("202", "pw202")
        .key("caller", "202")
        .run(&b);
    callee.wait();
    b.wait_for_log("ringing 1 contact(s) (1 through other nodes)");
    a.wait_for_log("routed here by node b");
    a.wait_for_log("answered by 201");

    // One CDR, by the node the caller reached; no contexts left.
    let mut client = cluster.client(&url);
    let cdrs = "SELECT COUNT(*) FROM cdrs";
    assert_eq!(wait_for_count(&mut client, cdrs, 1), 1, "{}", b.log());
    let row = client
        .query_one(
            "SELECT caller, called, answered_by, disposition, node FROM cdrs",
            &[],
        )
        .unwrap();
    let fields: Vec<String> = (0..5).map(|i| row.get(i)).collect();
    assert_eq!(fields, ["202", "201", "201", "answered", "b"]);
    let contexts = "SELECT COUNT(*) FROM call_contexts";
    assert_eq!(wait_for_count(&mut client, contexts, 0), 0);
}

#[test]
fn a_node_signature_from_an_address_that_is_no_node_is_challenged() {
    let cluster = TestCluster::shared();
    let url = cluster.create_database();
    let (a, _b) = two_nodes(&url, GatewayOptions::default);
    let phone = free_port();
    register(&a, "201", phone, 600, 200);
    // A correctly signed INVITE (the forger knows the secret), from a SIPp-like port.
    let text = format!(
        "INVITE sip:201@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKforged;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:202@127.0.0.1>;tag=forger\r\nTo: <sip:201@127.0.0.1>\r\n\
Call-ID: forged@e2e\r\nCSeq: 1 INVITE\r\nContact: <sip:202@127.0.0.1:5999>\r\nContent-Length: 0\r\n\r\n",
        port = a.port
    );
    let mut msg = gateway::sip::message::SipMessage::parse_datagram(text.as_bytes()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    gateway::auth::node::sign(&mut msg, SECRET.as_bytes(), "b", now);
    let reply = udp_exchange(&a, &msg.to_bytes(), Duration::from_secs(5))
        .expect("an answer to the forged request");
    assert!(
        reply.starts_with("SIP/2.0 407 "),
        "challenged as outside traffic: {reply}\n{}",
        a.log()
    );
    a.wait_for_log(
        "claims to be a gateway node, not trusted: it does not come from a node address",
    );
}

#[test]
fn a_node_killed_is_taken_over_by_the_survivor() {
    let cluster = TestCluster::shared();
    let url = cluster.create_database();
    let (mut a, b) = two_nodes(&url, || GatewayOptions {
        billing_mark_secs: 1,
        ..GatewayOptions::default()
    });
    // On a: 201 registered and up in a call from 202 (held a minute).
    let phone = free_port();
    register(&a, "201", phone, 600, 200);
    let callee = Sipp::new("uas_answer.xml", phone).spawn(&a);
    let caller = Sipp::new("uac_call.xml", free_port())
        .service("201")
        .credentials("202", "pw202")
        .key("caller", "202")
        .fill("@HOLD_MS@", "60000")
        .spawn(&a);
    a.wait_for_log("answered by 201");
    let mut client = cluster.client(&url);
    let marked = "SELECT COUNT(*) FROM call_contexts WHERE node = 'a' AND up_ms > answer_ms";
    assert_eq!(wait_for_count(&mut client, marked, 1), 1, "{}", a.log());
    let registrations = "SELECT COUNT(*) FROM registrations WHERE node = 'a'";
    assert_eq!(wait_for_count(&mut client, registrations, 1), 1);

    a.kill();
    caller.kill();
    callee.kill();
    b.wait_for_log(
        "node a stopped heartbeating for over 3 s: took over, 1 registration(s) removed, 1 call(s) up and 0 ringing closed with interrupted CDRs",
    );
    assert_eq!(wait_for_count(&mut client, registrations, 0), 0);
    let contexts = "SELECT COUNT(*) FROM call_contexts WHERE node = 'a'";
    assert_eq!(wait_for_count(&mut client, contexts, 0), 0);
    let row = client
        .query_one(
            "SELECT caller, called, disposition, node, duration_ms FROM cdrs",
            &[],
        )
        .unwrap();
    let fields: Vec<String> = (0..4).map(|i| row.get(i)).collect();
    assert_eq!(fields, ["202", "201", "interrupted", "a"]);
    let talk: i64 = row.get(4);
    assert!(talk > 0, "billed to the last mark");
    let nodes: Vec<String> = client
        .query("SELECT node_id FROM nodes ORDER BY node_id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(nodes, ["b"]);
}

/// The CDR columns a pickup across nodes is checked on, once the one CDR is there (the
/// nodes' logs shown if it is not).
fn the_one_cdr(url: &str, nodes: &[&Gateway]) -> Vec<String> {
    let mut client = TestCluster::shared().client(url);
    let logs: Vec<String> = nodes.iter().map(|node| node.log()).collect();
    assert_eq!(
        wait_for_count(&mut client, "SELECT COUNT(*) FROM cdrs", 1),
        1,
        "{}",
        logs.join("\n")
    );
    let row = client
        .query_one(
            "SELECT caller, called, answered_by, pickup_method, billed, disposition, node FROM cdrs",
            &[],
        )
        .unwrap();
    (0..7).map(|i| row.get(i)).collect()
}

/// An analog caller on port 1 of `owner` rings 201, whose phone registered through
/// `callee_node`; `picker` on `picker_node` takes the call with `*8` (Replaces), they talk
/// both ways through `owner`'s relay, and the analog side hangs up.
fn analog_call_picked_up(
    owner: &Gateway,
    callee_node: &Gateway,
    picker_node: &Gateway,
    picker_ext: &str,
) {
    let (mut peer, unused) = (RtpPeer::new(), RtpPeer::new());
    let phone = free_port();
    register(callee_node, "201", phone, 600, 200);
    let callee = Sipp::new("uas_ring_picked.xml", phone)
        .fill("@MEDIA_PORT@", &unused.port().to_string())
        .spawn(callee_node);
    owner.analog("lift 1");
    owner.analog("dial 1 201");
    owner.wait_for_log("ringing 1 contact(s)");
    let pickup = picker("uac_pickup.xml", "*8", picker_ext)
        .out_of_call("uas_replaces.xml")
        .caller_id("\"Analog 101\" <sip:101@")
        .fill("@PICKED_CALL_MS@", "15000")
        .fill("@MEDIA_PORT@", &peer.port().to_string())
        .spawn(picker_node);
    owner.wait_for_log("analog port 1: call answered");
    picker_node.wait_for_log("the pickup goes to node a, where the call rings");
    let analog_rtp = analog_to_sip_audio(owner, 1, &peer);
    sip_to_analog_audio(owner, 1, &mut peer, analog_rtp);
    owner.analog("hangup 1");
    pickup.wait();
    callee.wait();
}

#[test]
fn a_picker_on_node_b_takes_a_call_ringing_on_node_a_through_replaces() {
    let cluster = TestCluster::shared();
    let url = cluster.create_database();
    let (a, b) = two_nodes(&url, GatewayOptions::default);
    let (callee, caller) = ringing(&a, "uas_ring_picked.xml", "uac_call.xml");
    picker("uac_pickup.xml", "*8", "202")
        .out_of_call("uas_replaces.xml")
        .run(&b);
    caller.wait();
    callee.wait();
    b.wait_for_log("the pickup goes to node a, where the call rings");
    a.wait_for_log("connected through Replaces");
    b.wait_for_log("node a hands the call to its picker here (Replaces)");
    assert_eq!(
        the_one_cdr(&url, &[&a, &b]),
        ["204", "201", "202", "group", "202", "answered", "a"]
    );
}

/// Two nodes of two engine shards each. The call rings on a's shard 0, the picker's INVITE
/// reaches b's shard 1; b's INVITE to a (a Call-ID of b's shard 1) reaches a's shard 1,
/// which hands the forwarded pickup to the call's shard 0; a's INVITE with Replaces (a
/// Call-ID of a's shard 0) reaches b's shard 0, which hands it to shard 1, where the
/// picker's dialog is.
#[test]
fn a_pickup_across_nodes_crosses_engine_shards_on_both() {
    let url = TestCluster::shared().create_database();
    let (a, b) = two_nodes(&url, GatewayOptions::two_shards);
    let (callee, caller) = ringing_on_shard(&a, 0);
    picker("uac_pickup.xml", "*8", "202")
        .call_id(&call_id_on_shard(1, "picker"))
        .out_of_call("uas_replaces.xml")
        .run(&b);
    caller.wait();
    callee.wait();
    a.wait_for_log("of engine shard 0: handed over");
    b.wait_for_log("for a dialog of engine shard 1: handed over");
    b.wait_for_log("node a hands the call to its picker here (Replaces)");
    assert_eq!(
        the_one_cdr(&url, &[&a, &b]),
        ["204", "201", "202", "group", "202", "answered", "a"]
    );
}

#[test]
fn a_picker_on_node_b_without_replaces_is_bridged_through_both_nodes() {
    let cluster = TestCluster::shared();
    let url = cluster.create_database();
    let (a, b) = two_nodes(&url, GatewayOptions::default);
    let (callee, caller) = ringing(&a, "uas_ring_picked.xml", "uac_call.xml");
    picker("uac_pickup_bridge.xml", "**201", "203").run(&b);
    caller.wait();
    callee.wait();
    assert_eq!(
        the_one_cdr(&url, &[&a, &b]),
        ["204", "201", "203", "directed", "203", "answered", "a"]
    );
}

#[test]
fn an_analog_caller_on_node_a_picked_up_on_node_b_talks_to_the_picker() {
    let url = TestCluster::shared().create_database();
    let (a, b) = two_nodes(&url, GatewayOptions::default);
    analog_call_picked_up(&a, &a, &b, "202");
    assert_eq!(
        the_one_cdr(&url, &[&a, &b]),
        ["101", "201", "202", "group", "202", "answered", "a"]
    );
}

#[test]
fn a_caller_ringing_through_a_node_killed_mid_ring_is_told_at_the_takeover() {
    let cluster = TestCluster::shared();
    let url = cluster.create_database();
    // Two engine shards on b, the call on its second: the first shard's heartbeat finds a
    // gone, and every shard hears it.
    let (mut a, b) = two_nodes(&url, GatewayOptions::two_shards);
    let phone = free_port();
    register(&a, "201", phone, 600, 200);
    let callee = Sipp::new("uas_ring_picked.xml", phone).spawn(&a);
    let caller = Sipp::new("uac_fail.xml", free_port())
        .call_id(&call_id_on_shard(1, "caller"))
        .service("201")
        .credentials("202", "pw202")
        .key("caller", "202")
        .expect(480)
        .spawn(&b);
    a.wait_for_log("routed here by node b");
    a.kill();
    callee.kill();
    caller.wait();
    b.wait_for_log("node a is gone: ending 1 call(s) and 0 pickup(s) through it");
    b.wait_for_log("failed with 480 Temporarily Unavailable (node a stopped)");
    assert!(
        !b.log().contains("no answer within the ring timeout"),
        "{}",
        b.log()
    );
}

#[test]
fn two_hundred_ringing_calls_are_each_picked_up_once_by_pickers_racing_on_both_nodes() {
    const CALLS: u32 = 200;
    let cluster = TestCluster::shared();
    let url = cluster.create_database();
    // The race is the point, not overload: a debug build on a loaded CI machine may take
    // longer than the default 100 ms to serve a burst, which would answer 503.
    let (a, b) = two_nodes(&url, || GatewayOptions {
        ring_timeout_secs: 300,
        extra: "[overload]\nmax_queue_delay_ms = 30000\n".into(),
        ..GatewayOptions::default()
    });
    let limit = Duration::from_secs(120);
    let phone = free_port();
    register(&a, "201", phone, 600, 200);
    let callee = Sipp::new("uas_ring_picked.xml", phone)
        .calls(CALLS)
        .time_limit(limit)
        .spawn(&a);
    let callers = Sipp::new("uac_call.xml", free_port())
        .service("201")
        .credentials("204", "pw204")
        .key("caller", "204")
        .calls(CALLS)
        .rate(100)
        .time_limit(limit)
        .spawn(&a);
    let mut client = cluster.client(&url);
    let ringing = "SELECT COUNT(*) FROM call_contexts WHERE state = 'ringing'";
    let mut rang = 0;
    for _ in 0..12 {
        rang = wait_for_count(&mut client, ringing, i64::from(CALLS));
        if rang == i64::from(CALLS) {
            break;
        }
    }
    assert_eq!(rang, i64::from(CALLS), "{}", a.log());
    // 202 on node a and 203 on node b each ask for every call at once.
    let pickers: Vec<_> = [(&a, "202"), (&b, "203")]
        .into_iter()
        .map(|(node, picker)| {
            Sipp::new("uac_pickup_race.xml", free_port())
                .service("**201")
                .credentials(picker, &format!("pw{picker}"))
                .key("caller", picker)
                .calls(CALLS)
                .rate(100)
                .time_limit(limit)
                .spawn(node)
        })
        .collect();
    for picker in pickers {
        picker.wait();
    }
    callers.wait();
    callee.wait();
    let cdrs = "SELECT COUNT(*) FROM cdrs";
    assert_eq!(
        wait_for_count(&mut client, cdrs, i64::from(CALLS)),
        i64::from(CALLS)
    );
    let row = client
        .query_one(
            "SELECT COUNT(DISTINCT call_key), \
             COUNT(*) FILTER (WHERE disposition = 'answered' AND pickup_method = 'directed' \
             AND answered_by = billed AND answered_by IN ('202', '203')), \
             COUNT(*) FILTER (WHERE answered_by = '203'), COUNT(DISTINCT node) FROM cdrs",
            &[],
        )
        .unwrap();
    let (distinct, picked, by_b, nodes): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(
        (distinct, picked, nodes),
        (i64::from(CALLS), i64::from(CALLS), 1)
    );
    assert!(by_b > 0, "node b's picker won some: {by_b}");
    assert_eq!(
        wait_for_count(&mut client, "SELECT COUNT(*) FROM call_contexts", 0),
        0
    );
}

#[test]
fn three_nodes_an_analog_caller_on_a_rings_a_phone_on_b_and_a_picker_on_c_takes_the_call() {
    let url = TestCluster::shared().create_database();
    let nodes = cluster_of(&url, &["a", "b", "c"], GatewayOptions::default);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    // 201's phone registered through node b (it checks the CANCEL's Reason); 203 on c.
    analog_call_picked_up(a, b, c, "203");
    a.wait_for_log("ringing 1 contact(s) (1 through other nodes)");
    b.wait_for_log("routed here by node a");
    assert_eq!(
        the_one_cdr(&url, &[a, b, c]),
        ["101", "201", "203", "group", "203", "answered", "a"]
    );
}

#[test]
fn a_key_on_node_b_sees_a_call_ringing_on_node_a_and_goes_dark_when_a_is_killed() {
    let cluster = TestCluster::shared();
    let url = cluster.create_database();
    // Two engine shards on each node, the call on a's second: its BLF row is that shard's.
    let (mut a, b) = two_nodes(&url, GatewayOptions::two_shards);
    // 203's key on b watches 201: the idle state, then it waits for 201 to ring, then for
    // the dialog to end; then it refreshes and unsubscribes (with b).
    let watcher = key("uac_subscribe.xml", "203", "201")
        .fill("@WAIT_FOR@", "&lt;state&gt;early&lt;/state&gt;")
        .fill("@THEN_WAIT_FOR@", "event=&quot;cancelled&quot;")
        .spawn(&b);
    b.wait_for_log("203 subscribed to the dialogs of 201");
    // 201 rings on a, with a call from 204 there, on a's shard 1.
    let (callee, caller) = ringing_on_shard(&a, 1);
    let (call_id, phone_tag, gateway_tag) = logged_ids(&watcher);
    // The ids are those of a's leg to the phone, which the store knows the call by.
    let mut client = cluster.client(&url);
    let leg: i64 = client
        .query_one(
            "SELECT COUNT(*) FROM call_legs l JOIN call_contexts c ON c.call_key = l.call_key \
             WHERE c.node = 'a' AND l.call_id = $1 AND l.local_tag = $2 AND l.remote_tag = $3",
            &[&call_id, &gateway_tag, &phone_tag],
        )
        .unwrap()
        .get(0);
    assert_eq!(leg, 1, "{call_id} {phone_tag} {gateway_tag}\n{}", b.log());

    // kill -9 of a mid-ring: once b takes a over (3 s of silence), the key is told.
    a.kill();
    callee.kill();
    caller.kill();
    let ended = watcher.wait_for_log_line("then dialog");
    assert_eq!(
        ended,
        format!("{call_id} {phone_tag} {gateway_tag}"),
        "the same dialog"
    );
    // By the takeover, not by the subscription's expiry or the phone giving up.
    b.wait_for_log("node a stopped heartbeating for over 3 s: took over");
    let bodies = wait_validated(watcher);
    let early = bodies
        .iter()
        .find(|body| body.contains("<state>early</state>"))
        .unwrap();
    assert!(
        early.contains("<dialog id=\"a-") && early.contains("direction=\"recipient\""),
        "a's call: {early}"
    );
    assert!(early.contains("display=\"Reception 204\""), "{early}");
    let dark = bodies
        .iter()
        .find(|body| body.contains("event=\"cancelled\""))
        .unwrap();
    assert!(!dark.contains("<state>early</state>"), "{dark}");
}
