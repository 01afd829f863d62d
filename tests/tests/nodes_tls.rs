//! Two gateway nodes talking mutual TLS to each other (`[node] transport = "tls"`), on one
//! throwaway PostgreSQL cluster: baresip registered over TLS on node b calls baresip
//! registered over TLS on node a with mandatory SRTP; the INVITE crosses the nodes over a
//! TLS connection whose certificates both sides check, and each phone decodes the other's
//! audio. Needs Debian's `postgresql`, baresip and openssl.

use e2e_tests::baresip::Baresip;
use e2e_tests::tls::TlsSetup;
use e2e_tests::{free_port, Gateway, GatewayOptions};
use gateway::store::test_cluster::TestCluster;

#[test]
fn a_secure_call_crosses_nodes_over_mutual_tls_with_its_srtp_keys() {
    let cluster = TestCluster::shared();
    let url = cluster.create_database();
    let tls = TlsSetup::new();
    let ids = ["a", "b"];
    let sip: Vec<u16> = ids.iter().map(|_| free_port()).collect();
    let secure: Vec<u16> = ids.iter().map(|_| free_port()).collect();
    let nodes: Vec<Gateway> = (0..2)
        .map(|i| {
            let other = secure[1 - i];
            Gateway::start(GatewayOptions {
                database_url: Some(url.clone()),
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
                ..GatewayOptions::default()
            })
        })
        .collect();
    for (id, node) in ids.iter().zip(&nodes) {
        node.wait_for_log(&format!("node {id}: in a cluster with"));
    }
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
