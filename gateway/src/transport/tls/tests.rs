//! Loading and reloading the TLS settings from files made by `openssl`.

use super::*;
use crate::test_support::pki::TestPki;

fn config(certificate: &str, key: &str) -> TlsConfig {
    TlsConfig {
        certificate: Some(certificate.into()),
        private_key: Some(key.into()),
        ..TlsConfig::default()
    }
}

fn pki() -> (tempfile::TempDir, TestPki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    (dir, pki)
}

#[test]
fn a_matching_certificate_and_key_load_and_say_when_they_expire() {
    let (_dir, pki) = pki();
    let server = TlsServer::load(
        &config(&pki.server_certificate(), &pki.server_key()),
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(
        server.certificate_path(),
        Path::new(&pki.server_certificate())
    );
    let expiry = server.reload(SystemTime::now()).unwrap();
    assert!(
        !expiry.expired && expiry.soon,
        "{expiry:?}: valid for two days"
    );
}

#[test]
fn an_expired_certificate_loads_with_its_date() {
    let (_dir, pki) = pki();
    let server = TlsServer::load(
        &config(&pki.expired_certificate(), &pki.server_key()),
        SystemTime::now(),
    )
    .unwrap();
    let expiry = server.reload(SystemTime::now()).unwrap();
    assert!(expiry.expired, "{expiry:?}");
    assert_eq!(expiry.not_after, "2020-01-02T00:00:00Z");
}

#[test]
fn every_broken_file_is_named_with_what_is_wrong() {
    let (dir, pki) = pki();
    let missing = dir.path().join("missing.key").display().to_string();
    let cases = [
        (
            config(&pki.server_certificate(), &pki.stranger_key()),
            "does not belong to the certificate",
        ),
        (
            config(&pki.server_certificate(), &missing),
            "tls.private_key",
        ),
        (
            config(&pki.server_certificate(), &pki.server_certificate()),
            "no private key in it",
        ),
        (
            config(&pki.server_key(), &pki.server_key()),
            "no certificate in it",
        ),
    ];
    for (config, expected) in cases {
        let error = TlsServer::load(&config, SystemTime::now())
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{error}");
        let named = [&config.certificate, &config.private_key];
        assert!(
            named
                .into_iter()
                .flatten()
                .any(|file| error.contains(&file.display().to_string())),
            "{error}: names the file"
        );
    }
    let mut with_ca = config(&pki.server_certificate(), &pki.server_key());
    with_ca.client_ca = Some(pki.server_key().into());
    let error = TlsServer::load(&with_ca, SystemTime::now())
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("tls.client_ca") && error.contains("no certificate"),
        "{error}"
    );
}

#[test]
fn a_reload_takes_new_files_and_a_failed_one_keeps_the_old_settings() {
    let (dir, pki) = pki();
    let certificate = dir.path().join("live.crt");
    let key = dir.path().join("live.key");
    std::fs::copy(pki.server_certificate(), &certificate).unwrap();
    std::fs::copy(pki.server_key(), &key).unwrap();
    let live = config(
        &certificate.display().to_string(),
        &key.display().to_string(),
    );
    let server = TlsServer::load(&live, SystemTime::now()).unwrap();
    let first = server.current();

    std::fs::copy(pki.stranger_certificate(), &certificate).unwrap();
    std::fs::copy(pki.stranger_key(), &key).unwrap();
    server.reload(SystemTime::now()).unwrap();
    let second = server.current();
    assert!(
        !Arc::ptr_eq(&first, &second),
        "new handshakes get the new files"
    );

    std::fs::copy(pki.server_key(), &key).unwrap(); // no longer the certificate's key
    let error = server.reload(SystemTime::now()).unwrap_err();
    assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error}");
    assert!(
        Arc::ptr_eq(&second, &server.current()),
        "the old settings stay"
    );
}
