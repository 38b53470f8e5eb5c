//! Certificates for the TLS tests, made with the `openssl` command in a directory of the
//! test's own.

use std::process::Command;

/// Certificates for TLS tests, made with the `openssl` command: a CA, a server
/// certificate for 127.0.0.1 and localhost, a client certificate from the same CA, and a
/// client certificate from another CA.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = Pki { dir };
        pki.ca("ca");
        pki.ca("other-ca");
        pki.issue("server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1");
        pki.issue("client", "ca", "extendedKeyUsage=clientAuth");
        pki.issue("stranger", "other-ca", "extendedKeyUsage=clientAuth");
        pki
    }

    /// The path of `name` (e.g. "ca.pem", "server.key").
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    /// A fresh server certificate from the same CA, written over `server.pem`/`server.key`
    /// (a renewal); returns its serial number as openssl prints it.
    pub fn renew_server(&self) -> String {
        self.issue("server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1");
        self.serial("server.pem")
    }

    /// A renewal valid for `days` days (the first certificates are valid for 2).
    pub fn renew_server_for(&self, days: u32) -> String {
        self.issue_for(
            "server",
            "ca",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            days,
        );
        self.serial("server.pem")
    }

    pub fn serial(&self, cert: &str) -> String {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-serial", "-in", &self.path(cert)])
            .output()
            .expect("openssl x509");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn ca(&self, name: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=a-chat test {name}"),
            "-keyout",
            &self.path(&format!("{name}.key")),
            "-out",
            &self.path(&format!("{name}.pem")),
        ]);
    }

    fn issue(&self, name: &str, ca: &str, ext: &str) {
        self.issue_for(name, ca, ext, 2)
    }

    fn issue_for(&self, name: &str, ca: &str, ext: &str, days: u32) {
        let days = days.to_string();
        let csr = self.path(&format!("{name}.csr"));
        let extfile = self.path(&format!("{name}.ext"));
        std::fs::write(&extfile, format!("{ext}\n")).unwrap();
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &self.path(&format!("{name}.key")),
            "-out",
            &csr,
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &self.path(&format!("{ca}.pem")),
            "-CAkey",
            &self.path(&format!("{ca}.key")),
            "-set_serial",
            &format!(
                "{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
                    % 1_000_000_007
            ),
            "-days",
            &days,
            "-extfile",
            &extfile,
            "-out",
            &self.path(&format!("{name}.pem")),
        ]);
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("the openssl command (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The `[tls]` section for a daemon with a TLS listener on port 0 (mutual TLS with
    /// `client_ca`).
    pub fn toml(&self, mutual: bool) -> String {
        let mut t = format!(
            "[tls]\nlisten = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\n",
            self.path("server.pem"),
            self.path("server.key")
        );
        if mutual {
            t.push_str(&format!("client_ca = \"{}\"\n", self.path("ca.pem")));
        }
        t
    }
}
