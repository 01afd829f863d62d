//! SIP over TLS (RFC 3261 §26, RFC 5630): the server side's TLS settings, built from the
//! PEM files `[tls]` names and built again on SIGHUP. The connections are the stream
//! transport's ([`super::tcp`]), which takes the current settings for each handshake: a
//! reload changes what new connections get, and connections up keep theirs.
//!
//! TLS 1.2 and 1.3 only (rustls with ring); a client certificate is asked for when a CA
//! is configured, and required when `tls.require_client_certificate` says so.

use crate::config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use x509_cert::der::Decode;

/// A certificate closer than this to its end is warned about at each load.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why the TLS settings could not be built; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or is not PEM.
    #[error("{key} {}: cannot read it: {detail}", path.display())]
    Unreadable {
        /// The config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// No `CERTIFICATE` block in a file that must hold certificates.
    #[error("{key} {}: no certificate in it (expected PEM \"BEGIN CERTIFICATE\" blocks{})",
        path.display(), if *key == "tls.certificate" { ", the gateway's own first" } else { "" })]
    NoCertificate {
        /// The config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The gateway's own certificate does not parse, or is of a kind TLS cannot use.
    #[error("tls.certificate {}: the first certificate is not a usable X.509 v3 \
             certificate: {detail}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// No private key block in the key file.
    #[error("tls.private_key {}: no private key in it (expected a PEM \"PRIVATE KEY\", \
             \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block)", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is of a kind the TLS library cannot sign with.
    #[error("tls.private_key {}: {detail} (use an RSA, ECDSA P-256/P-384 or Ed25519 key)", path.display())]
    UnusableKey {
        /// The file.
        path: PathBuf,
        /// What the library said.
        detail: String,
    },
    /// The key is not the certificate's.
    #[error("tls.private_key {} does not belong to the certificate in tls.certificate {}: \
             name the key the certificate was issued for", key.display(), certificate.display())]
    KeyMismatch {
        /// The certificate file.
        certificate: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The client CA file holds something that is not a usable CA certificate.
    #[error("tls.client_ca {}: {detail}", path.display())]
    BadClientCa {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// Neither `tls.certificate` nor `tls.private_key` is configured.
    #[error("tls.certificate and tls.private_key are required to serve TLS")]
    NotConfigured,
}

/// The files the TLS settings are built from (`[tls]`).
#[derive(Debug, Clone)]
struct TlsFiles {
    certificate: PathBuf,
    private_key: PathBuf,
    client_ca: Option<PathBuf>,
    require_client_certificate: bool,
}

/// When the gateway's certificate stops being valid, as a load found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// The certificate's notAfter, e.g. `2027-01-31T12:00:00Z`.
    pub not_after: String,
    /// Whether that is past.
    pub expired: bool,
    /// Whether it is past or within 30 days.
    pub soon: bool,
}

/// The TLS settings built from the files: the server's, and, when a CA is configured, the
/// client's the gateway connects to the other nodes with (mutual TLS: it presents its own
/// certificate and checks theirs against that CA).
#[derive(Debug)]
struct Settings {
    server: Arc<ServerConfig>,
    client: Option<Arc<ClientConfig>>,
}

/// The server's TLS settings, replaceable while connections use the old ones.
#[derive(Debug)]
pub struct TlsServer {
    files: TlsFiles,
    current: RwLock<Settings>,
}

impl TlsServer {
    /// Builds the settings from `[tls]`, warning when the certificate has expired or
    /// expires within 30 days (clients that check it refuse the handshake).
    pub fn load(config: &TlsConfig, now: SystemTime) -> Result<TlsServer, TlsError> {
        let (Some(certificate), Some(private_key)) = (&config.certificate, &config.private_key)
        else {
            return Err(TlsError::NotConfigured);
        };
        let files = TlsFiles {
            certificate: certificate.clone(),
            private_key: private_key.clone(),
            client_ca: config.client_ca.clone(),
            require_client_certificate: config.require_client_certificate,
        };
        let (settings, expiry) = build(&files, now)?;
        warn_of(&files.certificate, &expiry);
        Ok(TlsServer {
            files,
            current: RwLock::new(settings),
        })
    }

    /// The settings for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.settings().server.clone()
    }

    /// The settings for the next connection the gateway opens to another node; None
    /// without `tls.client_ca` (there is nothing to check the node's certificate against).
    pub fn client(&self) -> Option<Arc<ClientConfig>> {
        self.settings().client.clone()
    }

    fn settings(&self) -> std::sync::RwLockReadGuard<'_, Settings> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the files again; on success new handshakes use them, on failure the old
    /// settings stay and the error says why.
    pub fn reload(&self, now: SystemTime) -> Result<Expiry, TlsError> {
        let (settings, expiry) = build(&self.files, now)?;
        warn_of(&self.files.certificate, &expiry);
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = settings;
        Ok(expiry)
    }

    /// The certificate file, for log lines.
    pub fn certificate_path(&self) -> &Path {
        &self.files.certificate
    }
}

fn warn_of(certificate: &Path, expiry: &Expiry) {
    if expiry.expired {
        tracing::warn!(
            "tls.certificate {}: expired on {}; clients that check it will refuse the \
             handshake: renew it and send SIGHUP",
            certificate.display(),
            expiry.not_after
        );
    } else if expiry.soon {
        tracing::warn!(
            "tls.certificate {}: expires on {}: renew it and send SIGHUP",
            certificate.display(),
            expiry.not_after
        );
    }
}

/// The rustls settings from the files, and the certificate's expiry.
fn build(files: &TlsFiles, now: SystemTime) -> Result<(Settings, Expiry), TlsError> {
    let chain = certificates("tls.certificate", &files.certificate)?;
    let expiry = expiry_of(&chain[0], now).map_err(|detail| TlsError::BadCertificate {
        path: files.certificate.clone(),
        detail,
    })?;
    let key = PrivateKeyDer::from_pem_file(&files.private_key).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: files.private_key.clone(),
        },
        other => TlsError::Unreadable {
            key: "tls.private_key",
            path: files.private_key.clone(),
            detail: other.to_string(),
        },
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .expect("ring supports TLS 1.2 and 1.3");
    let roots = match &files.client_ca {
        None => None,
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in certificates("tls.client_ca", ca)? {
                roots.add(certificate).map_err(|e| TlsError::BadClientCa {
                    path: ca.clone(),
                    detail: e.to_string(),
                })?;
            }
            Some((ca, Arc::new(roots)))
        }
    };
    let client_roots = roots.as_ref().map(|(_, roots)| roots.clone());
    let builder = match roots {
        None => builder.with_no_client_auth(),
        Some((ca, roots)) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
            let verifier = match files.require_client_certificate {
                true => verifier,
                false => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| {
                TlsError::BadClientCa {
                    path: ca.clone(),
                    detail: e.to_string(),
                }
            })?)
        }
    };
    let settings = builder
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                certificate: files.certificate.clone(),
                key: files.private_key.clone(),
            },
            rustls::Error::InvalidCertificate(e) => TlsError::BadCertificate {
                path: files.certificate.clone(),
                detail: format!("{e:?}"),
            },
            other => TlsError::UnusableKey {
                path: files.private_key.clone(),
                detail: other.to_string(),
            },
        })?;
    // After the server's: a key that is not the certificate's is named as such there.
    let client = match client_roots {
        None => None,
        Some(roots) => Some(Arc::new(
            ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
                .expect("ring supports TLS 1.2 and 1.3")
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::UnusableKey {
                    path: files.private_key.clone(),
                    detail: e.to_string(),
                })?,
        )),
    };
    let settings = Settings {
        server: Arc::new(settings),
        client,
    };
    Ok((settings, expiry))
}

/// The certificates of a PEM file; at least one.
fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect())
        .map_err(|e| TlsError::Unreadable {
            key,
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            key,
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

/// The notAfter of a DER certificate, measured against `now`.
fn expiry_of(certificate: &CertificateDer<'_>, now: SystemTime) -> Result<Expiry, String> {
    let parsed =
        x509_cert::Certificate::from_der(certificate.as_ref()).map_err(|e| e.to_string())?;
    let not_after = parsed.tbs_certificate.validity.not_after;
    let end = not_after.to_system_time();
    Ok(Expiry {
        not_after: not_after.to_string(),
        expired: end <= now,
        soon: end <= now + EXPIRY_WARNING,
    })
}

#[cfg(test)]
mod tests;
