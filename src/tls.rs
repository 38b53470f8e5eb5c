//! TLS (ARCHITECTURE §9): rustls configurations from PEM files, for the daemon's TLS listeners
//! (with mutual TLS when `client_ca` is set) and for a-chat's own clients; the handshake
//! as a step before the login; and why a handshake failed, for the metrics.
//!
//! Certificates are read at start and again on SIGHUP: [`Server`] holds the current
//! configuration, and each handshake takes it as it is when the connection arrives, so a
//! renewed certificate reaches new connections while live ones keep theirs.

use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock};

use futures_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use futures_rustls::{TlsAcceptor, TlsConnector};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::config::TlsConfig;
use crate::runtime::Sock;
/// The server side of an accepted TLS connection (defined with the sockets, in the runtime).
pub use crate::runtime::TlsServerStream as ServerStream;

/// The daemon's TLS settings, swapped whole on reload.
pub struct Server {
    /// The configuration new handshakes use.
    current: RwLock<Arc<ServerConfig>>,
}

impl Server {
    /// Reads the certificate, key and client CA named in `[tls]`.
    pub fn load(config: &TlsConfig) -> Result<Server, String> {
        Ok(Server {
            current: RwLock::new(Arc::new(server_config(config)?)),
        })
    }

    /// Puts a configuration in force for the handshakes that start from now on.
    pub fn set(&self, config: ServerConfig) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }

    /// Runs the server side of a handshake on `sock`.
    pub async fn accept(&self, sock: Sock) -> Result<ServerStream, Failure> {
        let config = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        TlsAcceptor::from(config)
            .accept(sock)
            .await
            .map_err(|e| Failure::of(&e))
    }
}

/// Why a handshake failed: the `reason` label of `achat_tls_handshake_failures_total`.
pub use crate::metrics::TlsFailure as Failure;

impl Failure {
    fn of(e: &io::Error) -> Failure {
        let Some(tls) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        else {
            return Failure::Closed;
        };
        match tls {
            rustls::Error::InvalidMessage(_) => Failure::NotTls,
            rustls::Error::NoCertificatesPresented
            | rustls::Error::InvalidCertificate(_)
            | rustls::Error::UnsupportedNameType => Failure::ClientCertificate,
            _ => Failure::Protocol,
        }
    }
}

/// The server configuration of `[tls]`: TLS 1.2 and 1.3 at rustls's defaults, the ring
/// provider, and client certificates required when `client_ca` is set.
pub fn server_config(config: &TlsConfig) -> Result<ServerConfig, String> {
    let certs = certificates(&config.cert, "tls.cert")?;
    let key = private_key(&config.key, "tls.key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = if config.client_ca.is_empty() {
        builder.with_no_client_auth()
    } else {
        let roots = roots(&config.client_ca, "tls.client_ca")?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("tls.client_ca ({}): {e}", config.client_ca))?;
        builder.with_client_cert_verifier(verifier)
    };
    builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "tls.key ({}) does not fit tls.cert ({}): {e}",
            config.key, config.cert
        )
    })
}

/// A client configuration for a-chat's own clients: trusts `ca` (PEM), and presents
/// `cert` and `key` when given (mutual TLS).
pub fn client_config(
    ca: Option<&Path>,
    cert_and_key: Option<(&Path, &Path)>,
) -> Result<ClientConfig, String> {
    let roots = match ca {
        Some(ca) => roots(&ca.to_string_lossy(), "--ca")?,
        None => system_roots()?,
    };
    with_roots(roots, cert_and_key, ["--cert", "--key"])
}

/// The certificate authorities this system trusts (its CA bundle, or `SSL_CERT_FILE` /
/// `SSL_CERT_DIR` when set), for a client given no `--ca`.
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        return Err(format!(
            "no trusted certificate authorities found on this system{why}: give the server's CA with --ca"
        ));
    }
    Ok(roots)
}

/// [`client_config`], its errors naming the options or config keys `names` (CA,
/// certificate, key) that gave the files.
pub fn client_config_named(
    ca: &Path,
    cert_and_key: Option<(&Path, &Path)>,
    names: [&str; 3],
) -> Result<ClientConfig, String> {
    let [ca_name, cert_name, key_name] = names;
    let roots = roots(&ca.to_string_lossy(), ca_name)?;
    with_roots(roots, cert_and_key, [cert_name, key_name])
}

/// A client configuration trusting `roots`, presenting `cert_and_key` when given; errors
/// name the options or keys `names` (certificate, key) that gave the files.
fn with_roots(
    roots: RootCertStore,
    cert_and_key: Option<(&Path, &Path)>,
    names: [&str; 2],
) -> Result<ClientConfig, String> {
    let [cert_name, key_name] = names;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    match cert_and_key {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let certs = certificates(&cert.to_string_lossy(), cert_name)?;
            let key = private_key(&key.to_string_lossy(), key_name)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("{key_name} does not fit {cert_name}: {e}"))
        }
    }
}

/// A connector for `config`, and the name the server's certificate must carry for `host`
/// (an IP address or a DNS name).
pub fn connector(
    config: ClientConfig,
    host: &str,
) -> Result<(TlsConnector, ServerName<'static>), String> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host:?} cannot name a TLS server: {e}"))?;
    Ok((TlsConnector::from(Arc::new(config)), name))
}

fn certificates(path: &str, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{key} ({path}): {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{key} ({path}): {e}"))?;
    if certs.is_empty() {
        return Err(format!("{key} ({path}): no PEM certificate in the file"));
    }
    Ok(certs)
}

fn private_key(path: &str, key: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{key} ({path}): {e}"))
}

fn roots(path: &str, key: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, key)? {
        roots
            .add(cert)
            .map_err(|e| format!("{key} ({path}): {e}"))?;
    }
    Ok(roots)
}
