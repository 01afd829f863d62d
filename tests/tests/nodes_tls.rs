//! Two gateway nodes talking mutual TLS to each other (`[node] transport = "tls"`), on one
//! throwaway PostgreSQL cluster: baresip registered over TLS on node b calls baresip
//! registered over TLS on node a with mandatory SRTP (the INVITE crosses the nodes over a
//! TLS connection whose certificates both sides check, and each phone decodes the other's
//! audio); linphone on node b picks up an analog caller on node a with `*8`. Needs
//! Debian's `postgresql`, baresip, linphone and openssl.

use e2e_tests::baresip::{Baresip, TONE_HZ};
use e2e_tests::linphone::Linphone;
use e2e_tests::tls::TlsSetup;
use e2e_tests::{free_port, Gateway, GatewayOptions};
use gateway::store::test_cluster::TestCluster;

/// Nodes a and b on `url`, talking mutual TLS with the certificates of `tls`, serving
/// phones over TLS too (with `srtp`: `media.srtp` for both): the nodes and their TLS ports.
fn two_tls_nodes(url: &str, tls: &TlsSetup, srtp: &str) -> (Vec<Gateway>, Vec<u16>) {
    let ids = ["a", "b"];
    let sip: Vec<u16> = ids.iter().map(|_| free_port()).collect();
    let secure: Vec<u16> = ids.iter().map(|_| free_port()).collect();
    let nodes: Vec<Gateway> = (0..2)
        .map(|i| {
            let other = secure[1 - i];
            Gateway::start(GatewayOptions {
                database_url: Some(url.to_string()),
                port: Some(sip[i]),
                node: Some(format!(
                    "id = \"{}\"\npeers = [\"127.0.0.1:{other}\"]\n\
                     secret = \"e2e-cluster-secret-0123\"\ntransport = \"tls\"",
                    ids[i]
                )),
                tls: Some(format!(
                    "listen = \"127.0.0.1:{}\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\n\
                     client_ca = \"{}\"",
                    secure[i],
                    tls.certificate.display(),
                    tls.key.display(),
                    tls.pki.ca_certificate()
                )),
                keys: vec![("media", format!("srtp = \"{srtp}\""))],
                ..GatewayOptions::default()
            })
        })
        .collect();
    for (id, node) in ids.iter().zip(&nodes) {
        node.wait_for_log(&format!("node {id}: in a cluster with"));
    }
    (nodes, secure)
}

#[test]
fn a_secure_call_crosses_nodes_over_mutual_tls_with_its_srtp_keys() {
    let cluster = TestCluster::shared();
    let url = cluster.create_database();
    let tls = TlsSetup::new();
    let (nodes, secure) = two_tls_nodes(&url, &tls, "optional");
    let (a, b) = (&nodes[0], &nodes[1]);
    let ca = tls.pki.ca_certificate();
    let mut callee = Baresip::over_tls_with("201", secure[0], &ca, ";mediaenc=srtp-mand", &[]);
    callee.wait_registered(a);
    let mut caller =
        Baresip::over_tls_with("202", secure[1], &ca, ";mediaenc=srtp-mand", &["/dial 201"]);
    caller.wait_for("SRTP is Enabled");
    callee.wait_for("SRTP is Enabled");
    caller.wait_for_audio_received();
    callee.wait_for_audio_received();
    b.wait_for_log(&format!("tls: connected to node 127.0.0.1:{}", secure[0]));
    b.wait_for_log("ringing 1 contact(s) (1 through other nodes)");
    a.wait_for_log("routed here by node b");
}

/// The product's flow across nodes, secured: an analog caller on node a rings a phone
/// registered there; linphone registered over TLS on node b takes the call with `*8`; the
/// INVITE with Replaces comes from a through b over mutual TLS with the call's SRTP key,
/// and the analog phone hears linphone through SRTP.
#[test]
fn linphone_on_node_b_picks_up_an_analog_caller_on_node_a_with_srtp() {
    let cluster = TestCluster::shared();
    let url = cluster.create_database();
    let tls = TlsSetup::new();
    let (nodes, secure) = two_tls_nodes(&url, &tls, "required");
    let (a, b) = (&nodes[0], &nodes[1]);
    let ca = tls.pki.ca_certificate();
    let ringing = ";mediaenc=srtp-mand;answermode=manual";
    let mut callee = Baresip::over_tls_with("202", secure[0], &ca, ringing, &[]);
    callee.wait_registered(a);
    let mut picker = Linphone::over_tls("203", secure[1], &ca);
    picker.until("register-status ALL", "LinphoneRegistrationOk");
    a.analog("lift 1");
    a.analog("dial 1 202");
    callee.wait_for("Incoming call");
    picker.until("call sip:*8@127.0.0.1", "Status: Ok");
    b.wait_for_log("the pickup goes to node a, where the call rings");
    a.wait_for_log("as SRTP (AES_CM_128_HMAC_SHA1_80)");
    picker.until("call-status", "LinphoneCallStreamsRunning");
    picker.play_tone(TONE_HZ);
    a.hears_tone(
        1,
        "linphone's tone through SRTP across the nodes",
        &[TONE_HZ],
    );
    a.analog("hangup 1");
}
