//! Certificates for TLS tests (the gateway's SIP over TLS, the PostgreSQL test cluster),
//! made by the `openssl` command line tool in a directory the test owns: a test CA, a
//! server certificate for `gateway.test`, `localhost` and 127.0.0.1 that it signed, one that expired in 2020, a client certificate, and a key that belongs to none.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The host name the server certificates are issued for (and `localhost`, 127.0.0.1, ::1).
pub const SERVER_NAME: &str = "gateway.test";

/// What makes a certificate an end entity's (`openssl req -x509` makes CAs by default).
const LEAF: &str = "basicConstraints=critical,CA:FALSE";

/// A throwaway public key infrastructure: every file is PEM, under `dir`.
#[derive(Debug, Clone)]
pub struct TestPki {
    dir: PathBuf,
}

impl TestPki {
    /// Makes the CA and every certificate and key in `dir` (which must exist).
    pub fn create(dir: &Path) -> TestPki {
        let pki = TestPki {
            dir: dir.to_path_buf(),
        };
        pki.self_signed("ca", "/CN=Gateway Test CA", false);
        pki.issue("server", &format!("/CN={SERVER_NAME}"), true);
        pki.issue("client", "/CN=trunk.test", false);
        pki.self_signed("stranger", "/CN=stranger", true);
        pki.expired_server_certificate();
        pki
    }

    /// The CA's certificate (what clients trust, and what `tls.client_ca` names).
    pub fn ca_certificate(&self) -> String {
        self.path("ca.crt")
    }

    /// The server certificate (valid for two days), signed by the CA.
    pub fn server_certificate(&self) -> String {
        self.path("server.crt")
    }

    /// The server certificate's key.
    pub fn server_key(&self) -> String {
        self.path("server.key")
    }

    /// A certificate for the server key that ended on 2020-01-02.
    pub fn expired_certificate(&self) -> String {
        self.path("expired.crt")
    }

    /// A client certificate signed by the CA.
    pub fn client_certificate(&self) -> String {
        self.path("client.crt")
    }

    /// The client certificate's key.
    pub fn client_key(&self) -> String {
        self.path("client.key")
    }

    /// A self-signed certificate no CA here vouches for.
    pub fn stranger_certificate(&self) -> String {
        self.path("stranger.crt")
    }

    /// The stranger's key: belongs to no certificate the CA signed.
    pub fn stranger_key(&self) -> String {
        self.path("stranger.key")
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// A key `<stem>.key` and a self-signed certificate `<stem>.crt` for `subject`: a CA's,
    /// or an end entity's when `leaf`.
    fn self_signed(&self, stem: &str, subject: &str, leaf: bool) {
        let (key, certificate) = (
            self.path(&format!("{stem}.key")),
            self.path(&format!("{stem}.crt")),
        );
        let mut args = vec![
            "req",
            "-x509",
            "-days",
            "2",
            "-subj",
            subject,
            "-keyout",
            &key,
            "-out",
            &certificate,
        ];
        if leaf {
            args.extend(["-addext", LEAF]);
        }
        self.openssl(&args);
    }

    /// A key and a certificate signed by the CA; a server's names the test host and
    /// loopback addresses.
    fn issue(&self, name: &str, subject: &str, server: bool) {
        let names = format!("subjectAltName=DNS:{SERVER_NAME},DNS:localhost,IP:127.0.0.1,IP:::1");
        let usage = match server {
            true => "extendedKeyUsage=serverAuth,clientAuth",
            false => "extendedKeyUsage=clientAuth",
        };
        let (ca, ca_key) = (self.ca_certificate(), self.path("ca.key"));
        let (key, certificate) = (
            self.path(&format!("{name}.key")),
            self.path(&format!("{name}.crt")),
        );
        let mut args = vec![
            "req",
            "-x509",
            "-days",
            "2",
            "-subj",
            subject,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-keyout",
            &key,
            "-out",
            &certificate,
            "-addext",
            usage,
            "-addext",
            LEAF,
        ];
        if server {
            args.extend(["-addext", &names]);
        }
        self.openssl(&args);
    }

    /// The server key certified from 2020-01-01 to 2020-01-02, by `openssl ca` (the only
    /// way the command line tool sets dates in the past).
    fn expired_server_certificate(&self) {
        std::fs::write(self.dir.join("index.txt"), "").expect("write the CA's index");
        std::fs::write(self.dir.join("serial"), "1000\n").expect("write the CA's serial");
        let config = format!(
            "[ca]\ndefault_ca = test\n[test]\ndatabase = {dir}/index.txt\n\
             new_certs_dir = {dir}\nserial = {dir}/serial\ndefault_md = sha256\n\
             policy = any\nx509_extensions = server\n[any]\ncommonName = supplied\n\
             [server]\nbasicConstraints = critical,CA:FALSE\nsubjectAltName = DNS:{SERVER_NAME},IP:127.0.0.1\n\
             extendedKeyUsage = serverAuth\n",
            dir = self.dir.display()
        );
        let config_path = self.path("ca.cnf");
        std::fs::write(&config_path, config).expect("write the CA's config");
        let request = self.path("expired.csr");
        self.openssl(&[
            "req",
            "-new",
            "-subj",
            &format!("/CN={SERVER_NAME}"),
            "-key",
            &self.server_key(),
            "-out",
            &request,
        ]);
        self.openssl(&[
            "ca",
            "-batch",
            "-notext",
            "-config",
            &config_path,
            "-cert",
            &self.ca_certificate(),
            "-keyfile",
            &self.path("ca.key"),
            "-in",
            &request,
            "-out",
            &self.expired_certificate(),
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200102000000Z",
        ]);
    }

    /// Runs `openssl` with EC P-256 keys and no passphrase; panics with its complaint.
    fn openssl(&self, args: &[&str]) {
        let mut command = Command::new("openssl");
        command.args(args).current_dir(&self.dir);
        if args.first() == Some(&"req") && args.contains(&"-keyout") {
            command.args([
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ]);
        }
        let output = command
            .output()
            .expect("openssl runs (Debian package openssl; scripts/test.sh installs it)");
        assert!(
            output.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
