//! Resident memory of the gateway per idle SIP connection: `--connections` clients (5,000
//! by default) open a TLS connection each to the gateway's TLS listener (rustls, TLS 1.3,
//! ECDSA P-256 certificate from a test CA), finish the handshake and send one RFC 5626
//! CRLFCRLF ping, whose pong proves the connection is served; then as many plain TCP
//! connections, the same way. Then Kamailio (its tls module, OpenSSL) takes as many TLS
//! connections with the same certificate. Each server's proportional set size (its
//! processes together, shared memory counted once) before and after, divided by the
//! count, is the cost of a connection held open (a registered phone's connection stays
//! open while idle).
//! Writes `target/bench-results/tls-memory.{md,svg}`.
//!
//! Run: `cargo run --release -p bench --bin tls-memory -- [--quick | --connections N]` after
//! `cargo build --release -p gateway`.

use bench::report::{self, BarChart, Table};
use bench::servers::{start_gateway_with_tls, start_kamailio_with, Server};
use gateway::test_support::pki::{TestPki, SERVER_NAME};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

/// One client's connection, kept open until the readings are taken.
enum Held {
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Tcp(TcpStream),
}

/// Sends a CRLFCRLF ping over `stream` and reads its CRLF pong.
fn ping(stream: &mut (impl Read + Write)) -> std::io::Result<()> {
    stream.write_all(b"\r\n\r\n")?;
    stream.flush()?;
    let mut pong = [0u8; 2];
    stream.read_exact(&mut pong)?;
    match &pong {
        b"\r\n" => Ok(()),
        other => Err(std::io::Error::other(format!("pong {other:?}"))),
    }
}

/// A TLS client configuration trusting the test CA.
fn client_config(pki: &TestPki) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(pki.ca_certificate()).expect("CA file") {
        roots.add(certificate.expect("CA certificate")).expect("CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Opens `count` connections to `addr`, each served (ping answered).
fn open(
    count: usize,
    addr: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> std::io::Result<Vec<Held>> {
    let mut held = Vec::with_capacity(count);
    for n in 0..count {
        let socket = TcpStream::connect(addr)?;
        socket.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        let mut connection = match tls {
            Some(config) => {
                let name = ServerName::try_from(SERVER_NAME).expect("server name");
                let client = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(std::io::Error::other)?;
                Held::Tls(Box::new(rustls::StreamOwned::new(client, socket)))
            }
            None => Held::Tcp(socket),
        };
        match &mut connection {
            Held::Tls(stream) => ping(stream.as_mut())?,
            Held::Tcp(stream) => ping(stream)?,
        }
        held.push(connection);
        if (n + 1) % 1000 == 0 {
            eprintln!("  {} connected", n + 1);
        }
    }
    Ok(held)
}

/// What one server used (PSS, KiB): idle, with the TLS connections, with TCP ones too.
struct Readings {
    idle: u64,
    with_tls: u64,
    with_tcp: Option<u64>,
}

/// Opens the connections to `server` (TLS on `tls_port`; TCP on its SIP port when
/// `tcp`) and reads its memory before and after.
fn measure(
    server: &Server,
    tls_port: u16,
    tcp: bool,
    config: &Arc<rustls::ClientConfig>,
    count: usize,
) -> std::io::Result<Readings> {
    let idle = server.settled_pss_kib();
    let tls_addr = SocketAddr::from(([127, 0, 0, 1], tls_port));
    let tls_connections = open(count, tls_addr, Some(config))?;
    let with_tls = server.settled_pss_kib();
    eprintln!(
        "  {}: {count} TLS connections: {with_tls} KiB (idle {idle} KiB)",
        server.name
    );
    let mut with_tcp = None;
    if tcp {
        let tcp_connections = open(count, server.addr, None)?;
        let reading = server.settled_pss_kib();
        eprintln!("  + {count} TCP connections: {reading} KiB");
        with_tcp = Some(reading);
        drop(tcp_connections);
    }
    drop(tls_connections);
    Ok(Readings {
        idle,
        with_tls,
        with_tcp,
    })
}

/// The gateway's readings, then Kamailio's (TLS with OpenSSL, two worker processes, the
/// same certificate).
fn run(count: usize) -> Result<(Readings, Readings, String), Box<dyn std::error::Error>> {
    let dir = tempfile_dir()?;
    let pki = TestPki::create(&dir);
    let config = client_config(&pki);
    let tls_port = bench::servers::free_port()?;
    let limits = format!(
        "[tcp]\nidle_timeout_secs = 3600\nmax_connections_per_source = {0}\nmax_connections = {0}\n",
        count * 2 + 16
    );
    let tls = format!(
        "listen = \"127.0.0.1:{tls_port}\"\ncertificate = \"{}\"\nprivate_key = \"{}\"",
        pki.server_certificate(),
        pki.server_key()
    );
    let gateway = start_gateway_with_tls(&tls, &limits)?;
    let ours = measure(&gateway, tls_port, true, &config, count)?;
    drop(gateway);
    let tls_port = bench::servers::free_port()?;
    let defines = [
        format!("TLS_LISTEN=tls:127.0.0.1:{tls_port}"),
        format!("TLS_CERTIFICATE=\"{}\"", pki.server_certificate()),
        format!("TLS_KEY=\"{}\"", pki.server_key()),
    ];
    let kamailio = start_kamailio_with(2, &defines)?;
    let name = kamailio.name.clone();
    let theirs = measure(&kamailio, tls_port, false, &config, count)?;
    drop(kamailio);
    let _ = std::fs::remove_dir_all(&dir);
    Ok((ours, theirs, name))
}

/// A fresh directory for the test CA.
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("bench-tls-pki-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let default = if args.iter().any(|arg| arg == "--quick") {
        1_000
    } else {
        5_000
    };
    let count = args
        .iter()
        .position(|arg| arg == "--connections")
        .and_then(|at| args.get(at + 1))
        .map_or(default, |n| n.parse().expect("--connections N"));
    if let Err(e) = gateway::descriptors::raise_limit() {
        eprintln!("  {e}");
    }
    let (ours, theirs, kamailio) =
        run(count).unwrap_or_else(|e| panic!("TLS memory benchmark: {e}"));
    let per = |more: u64, less: u64| more.saturating_sub(less) as f64 * 1024.0 / count as f64;
    let ours_tls = per(ours.with_tls, ours.idle);
    let ours_tcp = ours.with_tcp.map_or(0.0, |tcp| per(tcp, ours.with_tls));
    let theirs_tls = per(theirs.with_tls, theirs.idle);
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    let mut table = Table::new(&[
        "server",
        "connections held open",
        "PSS MiB",
        "bytes per connection",
    ]);
    let gateway = "gateway (ours)".to_string();
    table.row(vec![
        gateway.clone(),
        "none (idle)".into(),
        mib(ours.idle),
        String::new(),
    ]);
    table.row(vec![
        gateway.clone(),
        format!("{count} TLS"),
        mib(ours.with_tls),
        format!("{ours_tls:.0}"),
    ]);
    if let Some(tcp) = ours.with_tcp {
        table.row(vec![
            gateway,
            format!("+ {count} TCP"),
            mib(tcp),
            format!("{ours_tcp:.0}"),
        ]);
    }
    table.row(vec![
        kamailio.clone(),
        "none (idle)".into(),
        mib(theirs.idle),
        String::new(),
    ]);
    table.row(vec![
        kamailio.clone(),
        format!("{count} TLS"),
        mib(theirs.with_tls),
        format!("{theirs_tls:.0}"),
    ]);
    table.row(vec![
        "ratio, TLS (ours / theirs)".into(),
        String::new(),
        String::new(),
        format!("{:.2}", ours_tls / theirs_tls.max(1.0)),
    ]);
    print!("{}", table.render());
    let chart = BarChart {
        title: "Memory per idle TLS connection (PSS)".into(),
        unit: "KiB".into(),
        categories: vec!["TLS".into()],
        series: vec![
            ("gateway (ours)".into(), vec![ours_tls / 1024.0]),
            (kamailio, vec![theirs_tls / 1024.0]),
        ],
    };
    match report::write("tls-memory", &table, &chart) {
        Ok((md, svg)) => eprintln!("wrote {} and {}", md.display(), svg.display()),
        Err(e) => eprintln!("could not write the results: {e}"),
    }
}
