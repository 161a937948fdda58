//! A certificate authority made for one test, and a server certificate it signed for
//! `localhost` only: TLS to a real redis-server with nothing secret checked in, and a name that
//! does not match (`127.0.0.1`) to show that host names are checked.

use std::path::{Path, PathBuf};

/// The CA and the server's certificate and key, as PEM, with the CA also in a file (for
/// `--redis-ca`). The directory is removed on drop.
pub struct TestCa {
    dir: tempfile::TempDir,
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("dir", &self.dir.path())
            .finish()
    }
}

/// The one name the server's certificate holds.
pub const SERVER_NAME: &str = "localhost";

impl TestCa {
    /// A fresh CA, a server certificate for [`SERVER_NAME`] signed by it, and the CA in a file.
    pub fn new() -> TestCa {
        let ca_key = rcgen::KeyPair::generate().expect("a CA key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "ebb test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("a self-signed CA");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let server_key = rcgen::KeyPair::generate().expect("a server key");
        let server = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()])
            .expect("server params")
            .signed_by(&server_key, &issuer)
            .expect("a server certificate");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ca_pem = ca_cert.pem();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).expect("writing ca.pem");
        TestCa {
            dir,
            ca_pem,
            server_cert_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
        }
    }

    /// The CA's PEM file.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A file in the CA's directory holding `contents` (another CA, a broken PEM, ...).
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("writing a test file");
        path
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}
