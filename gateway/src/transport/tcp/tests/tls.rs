//! The TLS listener: handshakes with a rustls client trusting the test CA, messages that
//! arrive as TLS peers, clear text on the TLS port, client certificates, and a TLS peer
//! never reached in clear.

use super::*;
use crate::config::TlsConfig;
use crate::sip::message::SipMessage;
use crate::test_support::pki::{TestPki, SERVER_NAME};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::client::TlsStream;

struct Setup {
    transport: TcpTransport,
    inbound: mpsc::Receiver<Inbound>,
    pki: TestPki,
    _dir: tempfile::TempDir,
}

/// A transport serving TLS only, with the test server certificate; `client_ca` and
/// `require` as `[tls]` would say.
async fn tls_transport(client_ca: bool, require: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    serving(pki, dir, client_ca, require, HashSet::new())
}

/// A transport serving TLS with the certificates of `pki`, opening TLS connections to
/// `tls_peers` (the other nodes).
fn serving(
    pki: TestPki,
    dir: tempfile::TempDir,
    client_ca: bool,
    require: bool,
    tls_peers: HashSet<SocketAddr>,
) -> Setup {
    let config = TlsConfig {
        certificate: Some(pki.server_certificate().into()),
        private_key: Some(pki.server_key().into()),
        client_ca: client_ca.then(|| pki.ca_certificate().into()),
        require_client_certificate: require,
        ..TlsConfig::default()
    };
    let server = Arc::new(TlsServer::load(&config, std::time::SystemTime::now()).unwrap());
    let (tx, inbound) = mpsc::channel(64);
    let listeners = Listeners {
        tcp: None,
        tls: Some((listen("127.0.0.1:0".parse().unwrap()).unwrap(), server)),
        tls_peers,
    };
    let settings = TcpSettings {
        limits: limits(),
        max_message_size: 65_535,
    };
    let transport = TcpTransport::start(listeners, tx, settings).unwrap();
    Setup {
        transport,
        inbound,
        pki,
        _dir: dir,
    }
}

/// A TLS client trusting the test CA, with the client certificate when `identify`.
async fn tls_client(setup: &Setup, identify: bool) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(setup.pki.ca_certificate()).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identify {
        true => {
            let chain = CertificateDer::pem_file_iter(setup.pki.client_certificate())
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(setup.pki.client_key()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        false => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(setup.transport.local_addr(Protocol::Tls).unwrap()).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut stream = connector
        .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
        .await?;
    // A server that refuses a client certificate says so after the client's last flight
    // (TLS 1.3): a ping and its pong prove the connection is served.
    stream.write_all(b"\r\n\r\n").await?;
    let mut pong = [0u8; 2];
    tokio::time::timeout(GUARD, stream.read_exact(&mut pong))
        .await
        .map_err(|_| std::io::Error::other("no pong"))??;
    Ok(stream)
}

/// The next message delivered to the core, and its peer.
async fn next_message(inbound: &mut mpsc::Receiver<Inbound>) -> (Peer, Box<SipMessage>) {
    match tokio::time::timeout(GUARD, inbound.recv()).await.unwrap() {
        Some(Inbound::Message { peer, message }) => (peer, message),
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn a_message_over_tls_arrives_from_a_tls_peer_and_its_answer_goes_back_encrypted() {
    let mut setup = tls_transport(false, false).await;
    let mut client = tls_client(&setup, false).await.unwrap();
    client
        .write_all(options("secure", "").as_bytes())
        .await
        .unwrap();
    let (peer, message) = next_message(&mut setup.inbound).await;
    assert_eq!(message.call_id(), Some("secure"));
    assert_eq!(peer.protocol, Protocol::Tls);
    assert_eq!(peer.addr, client.get_ref().0.local_addr().unwrap());
    assert_eq!(
        peer.local,
        setup.transport.local_addr(Protocol::Tls).unwrap()
    );
    setup
        .transport
        .send(
            peer,
            Bytes::from_static(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"),
        )
        .unwrap();
    let mut answer = [0u8; 15];
    tokio::time::timeout(GUARD, client.read_exact(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&answer, b"SIP/2.0 200 OK\r");
}

#[tokio::test]
async fn clear_text_on_the_tls_port_is_closed_without_reaching_the_core() {
    let mut setup = tls_transport(false, false).await;
    let mut clear = TcpStream::connect(setup.transport.local_addr(Protocol::Tls).unwrap())
        .await
        .unwrap();
    clear
        .write_all(options("clear", "").as_bytes())
        .await
        .unwrap();
    let answer = read_until_closed(&mut clear).await;
    assert!(
        !answer.contains("SIP/2.0"),
        "no SIP answer in clear: {answer:?}"
    );
    // The listener still serves TLS, and the clear text never reached the core.
    let mut client = tls_client(&setup, false).await.unwrap();
    client
        .write_all(options("after", "").as_bytes())
        .await
        .unwrap();
    let (_, message) = next_message(&mut setup.inbound).await;
    assert_eq!(
        message.call_id(),
        Some("after"),
        "the clear text was not delivered"
    );
}

#[tokio::test]
async fn a_required_client_certificate_must_chain_to_the_client_ca() {
    let mut setup = tls_transport(true, true).await;
    assert!(
        tls_client(&setup, false).await.is_err(),
        "no client certificate: refused"
    );
    let mut client = tls_client(&setup, true).await.unwrap();
    client
        .write_all(options("trunk", "").as_bytes())
        .await
        .unwrap();
    let (peer, _) = next_message(&mut setup.inbound).await;
    assert_eq!(peer.protocol, Protocol::Tls);
    // Optional: a client without a certificate is served as well.
    let setup = tls_transport(true, false).await;
    assert!(tls_client(&setup, false).await.is_ok());
}

#[tokio::test]
async fn a_tls_peer_without_a_connection_is_never_reached_in_clear() {
    let setup = tls_transport(false, false).await;
    // The message for the TLS peer is sent first, then one for the same address over
    // TCP: the phone's first connection carries the TCP one, and only it.
    let phone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = |protocol| Peer {
        protocol,
        addr: phone.local_addr().unwrap(),
        local: setup.transport.local_addr(Protocol::Tls).unwrap(),
    };
    setup
        .transport
        .send(at(Protocol::Tls), Bytes::from(options("secret", "")))
        .unwrap();
    setup
        .transport
        .send(at(Protocol::Tcp), Bytes::from(options("clear", "")))
        .unwrap();
    let (mut stream, _) = tokio::time::timeout(GUARD, phone.accept())
        .await
        .unwrap()
        .unwrap();
    let received = read_until_closed_or(&mut stream, "clear").await;
    assert!(received.contains("Call-ID: clear"), "{received}");
    assert!(!received.contains("secret"), "{received}");
}

/// Reads until `marker` has arrived (or the connection closes).
async fn read_until_closed_or(stream: &mut TcpStream, marker: &str) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(GUARD, async {
        while !String::from_utf8_lossy(&received).contains(marker) {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await
    .expect("the message arrived");
    String::from_utf8_lossy(&received).into_owned()
}

/// Nodes talk mutual TLS: a transport opens a TLS connection to another node (its
/// certificate checked against the CA, its own presented and required there), the request
/// arrives as a TLS peer, and the answer comes back over the same connection.
#[tokio::test]
async fn a_node_opens_a_mutual_tls_connection_to_another_and_is_answered_over_it() {
    let mut b = tls_transport(true, true).await;
    let b_addr = b.transport.local_addr(Protocol::Tls).unwrap();
    let mut a = serving(
        b.pki.clone(),
        tempfile::tempdir().unwrap(),
        true,
        false,
        HashSet::from([b_addr]),
    );
    let a_addr = a.transport.local_addr(Protocol::Tls).unwrap();
    let to_b = Peer {
        protocol: Protocol::Tls,
        addr: b_addr,
        local: a_addr,
    };
    a.transport
        .send(to_b, Bytes::from(options("node", "")))
        .unwrap();
    let (from_a, message) = next_message(&mut b.inbound).await;
    assert_eq!(message.call_id(), Some("node"));
    assert_eq!(from_a.protocol, Protocol::Tls);
    let answer = message.response(200, "OK", Some("b"));
    b.transport.send(from_a, answer.to_bytes()).unwrap();
    match tokio::time::timeout(GUARD, a.inbound.recv()).await.unwrap() {
        Some(Inbound::Message { peer, message }) => {
            assert_eq!((peer.protocol, peer.addr), (Protocol::Tls, b_addr));
            assert_eq!(message.status(), Some(200));
        }
        other => panic!("expected the answer, got {other:?}"),
    }
}
