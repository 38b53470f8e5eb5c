//! TLS (ARCHITECTURE §9): rustls configurations from PEM files, for the daemon's TLS listeners
//! (with mutual TLS when `client_ca` is set) and for a-chat's own clients; the handshake
//! as a step before the login; and why a handshake failed, for the metrics.
//!
//! Certificates are read at start and again on SIGHUP: [`Server`] holds the current
//! configuration, and each handshake takes it as it is when the connection arrives, so a
//! renewed certificate reaches new connections while live ones keep theirs.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use futures_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use futures_rustls::TlsConnector;
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, InvalidDnsNameError, PrivateKeyDer, ServerName};

use crate::config::TlsConfig;
use crate::runtime::Sock;
/// The server side of an accepted TLS connection (defined with the sockets, in the runtime).
pub use crate::runtime::TlsServerStream as ServerStream;

/// Why a TLS configuration (the daemon's, or a client's) could not be made. Each message
/// names the config key or command-line option that gave the file, and the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A PEM file (certificate, key or CA) cannot be read, or one of its sections is not
    /// valid PEM.
    #[error("{key} ({}): {source}", path.display())]
    Pem {
        /// The key or option that named the file (`tls.cert`, `--ca`), first in the
        /// message so a reader (and [`LoadError::key`]) knows what to fix.
        key: &'static str,
        /// The file, as configured.
        path: PathBuf,
        /// What reading or decoding it said.
        source: pem::Error,
    },
    /// A certificate or CA file holds no PEM certificate at all.
    #[error("{key} ({}): no PEM certificate in the file", path.display())]
    NoCertificate {
        /// The key or option that named the file.
        key: &'static str,
        /// The file, as configured.
        path: PathBuf,
    },
    /// A CA file's certificate cannot be a trust anchor.
    #[error("{key} ({}): {source}", path.display())]
    Anchor {
        /// The key or option that named the CA file.
        key: &'static str,
        /// The CA file, as configured.
        path: PathBuf,
        /// Why rustls refused the certificate.
        source: rustls::Error,
    },
    /// rustls refused its own default protocol versions for the ring provider.
    #[error("TLS: {0}")]
    Versions(rustls::Error),
    /// The client CA (`tls.client_ca`) cannot verify client certificates.
    #[error("tls.client_ca ({}): {source}", path.display())]
    ClientCa {
        /// The client CA file, as configured.
        path: PathBuf,
        /// Why the verifier could not be built from it.
        source: VerifierBuilderError,
    },
    /// The daemon's key (`tls.key`) is not the key of its certificate (`tls.cert`).
    #[error("tls.key ({}) does not fit tls.cert ({}): {source}", key.display(), cert.display())]
    ServerKeyMismatch {
        /// The key file, as configured.
        key: PathBuf,
        /// The certificate file, as configured.
        cert: PathBuf,
        /// What rustls said of the pair.
        source: rustls::Error,
    },
    /// A client's key is not the key of its certificate.
    #[error("{key_name} does not fit {cert_name}: {source}")]
    ClientKeyMismatch {
        /// The option or key that named the key file (`--key`, `cluster.tls_key`).
        key_name: &'static str,
        /// The option or key that named the certificate file.
        cert_name: &'static str,
        /// What rustls said of the pair.
        source: rustls::Error,
    },
    /// A client given no CA found none it could use on this system.
    #[error(
        "no trusted certificate authorities found on this system{}: give the server's CA with --ca",
        first.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
    )]
    NoSystemRoots {
        /// The first error met reading the system's CA bundle, when there was one.
        first: Option<rustls_native_certs::Error>,
    },
    /// The host a client connects to cannot be a TLS server name.
    #[error("{host:?} cannot name a TLS server: {source}")]
    ServerName {
        /// The host, as given (from the address or `--server-name`).
        host: String,
        /// Why it is not a DNS name or an IP address.
        source: InvalidDnsNameError,
    },
}

impl LoadError {
    /// The config key or option that gave the file this error is about; `None` when it
    /// is about no file in particular.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            LoadError::Pem { key, .. }
            | LoadError::NoCertificate { key, .. }
            | LoadError::Anchor { key, .. } => Some(key),
            LoadError::ClientCa { .. } => Some("tls.client_ca"),
            LoadError::ServerKeyMismatch { .. } => Some("tls.key"),
            LoadError::ClientKeyMismatch { key_name, .. } => Some(key_name),
            LoadError::Versions(_)
            | LoadError::NoSystemRoots { .. }
            | LoadError::ServerName { .. } => None,
        }
    }
}

/// The daemon's TLS settings, swapped whole on reload.
pub struct Server {
    /// The configuration new handshakes use.
    current: RwLock<Arc<ServerConfig>>,
    /// `[tls] client_identity = "login"`: each connection's login must be a name of its
    /// client certificate (set at start; a change needs a restart).
    pub client_identity: bool,
}

impl Server {
    /// Reads the certificate, key and client CA named in `[tls]`.
    pub fn load(config: &TlsConfig) -> Result<Server, LoadError> {
        Ok(Server {
            current: RwLock::new(Arc::new(server_config(config)?)),
            client_identity: config.client_identity == crate::config::ClientIdentity::Login,
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
        crate::runtime::tls_accept(sock, config)
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
pub fn server_config(config: &TlsConfig) -> Result<ServerConfig, LoadError> {
    server_config_of(config, ["tls.cert", "tls.key", "tls.client_ca"])
}

/// A server configuration from `config`'s files, whose errors name the keys `keys`
/// (certificate, key, client CA): `[tls]`'s, or the admin endpoint's own.
pub fn server_config_of(
    config: &TlsConfig,
    keys: [&'static str; 3],
) -> Result<ServerConfig, LoadError> {
    let certs = certificates(&config.cert, keys[0])?;
    let key = private_key(&config.key, keys[1])?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(LoadError::Versions)?;
    let builder = if config.client_ca.is_empty() {
        builder.with_no_client_auth()
    } else {
        let roots = roots(&config.client_ca, keys[2])?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|source| LoadError::ClientCa {
                path: config.client_ca.clone().into(),
                source,
            })?;
        builder.with_client_cert_verifier(verifier)
    };
    builder
        .with_single_cert(certs, key)
        .map_err(|source| LoadError::ServerKeyMismatch {
            key: config.key.clone().into(),
            cert: config.cert.clone().into(),
            source,
        })
}

/// A client configuration for a-chat's own clients: trusts `ca` (PEM), and presents
/// `cert` and `key` when given (mutual TLS).
pub fn client_config(
    ca: Option<&Path>,
    cert_and_key: Option<(&Path, &Path)>,
) -> Result<ClientConfig, LoadError> {
    let roots = match ca {
        Some(ca) => roots(ca, "--ca")?,
        None => system_roots()?,
    };
    with_roots(roots, cert_and_key, ["--cert", "--key"])
}

/// The certificate authorities this system trusts (its CA bundle, or `SSL_CERT_FILE` /
/// `SSL_CERT_DIR` when set), for a client given no `--ca`.
fn system_roots() -> Result<RootCertStore, LoadError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(LoadError::NoSystemRoots {
            first: found.errors.into_iter().next(),
        });
    }
    Ok(roots)
}

/// [`client_config`], its errors naming the options or config keys `names` (CA,
/// certificate, key) that gave the files.
pub fn client_config_named(
    ca: &Path,
    cert_and_key: Option<(&Path, &Path)>,
    names: [&'static str; 3],
) -> Result<ClientConfig, LoadError> {
    let [ca_name, cert_name, key_name] = names;
    let roots = roots(ca, ca_name)?;
    with_roots(roots, cert_and_key, [cert_name, key_name])
}

/// A client configuration trusting `roots`, presenting `cert_and_key` when given; errors
/// name the options or keys `names` (certificate, key) that gave the files.
fn with_roots(
    roots: RootCertStore,
    cert_and_key: Option<(&Path, &Path)>,
    names: [&'static str; 2],
) -> Result<ClientConfig, LoadError> {
    let [cert_name, key_name] = names;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(LoadError::Versions)?
        .with_root_certificates(roots);
    match cert_and_key {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let certs = certificates(cert, cert_name)?;
            let key = private_key(key, key_name)?;
            builder.with_client_auth_cert(certs, key).map_err(|source| {
                LoadError::ClientKeyMismatch {
                    key_name,
                    cert_name,
                    source,
                }
            })
        }
    }
}

/// A connector for `config`, and the name the server's certificate must carry for `host`
/// (an IP address or a DNS name).
pub fn connector(
    config: ClientConfig,
    host: &str,
) -> Result<(TlsConnector, ServerName<'static>), LoadError> {
    let name = ServerName::try_from(host.to_owned()).map_err(|source| LoadError::ServerName {
        host: host.to_owned(),
        source,
    })?;
    Ok((TlsConnector::from(Arc::new(config)), name))
}

/// The certificates of the PEM file at `path`, which the key or option `key` names.
fn certificates(
    path: impl AsRef<Path>,
    key: &'static str,
) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let path = path.as_ref();
    let pem = |source| LoadError::Pem {
        key,
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(LoadError::NoCertificate {
            key,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The private key of the PEM file at `path`, which the key or option `key` names.
fn private_key(
    path: impl AsRef<Path>,
    key: &'static str,
) -> Result<PrivateKeyDer<'static>, LoadError> {
    let path = path.as_ref();
    PrivateKeyDer::from_pem_file(path).map_err(|source| LoadError::Pem {
        key,
        path: path.to_owned(),
        source,
    })
}

/// The CA certificates of the PEM file at `path`, which the key or option `key` names.
fn roots(path: impl AsRef<Path>, key: &'static str) -> Result<RootCertStore, LoadError> {
    let path = path.as_ref();
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, key)? {
        roots.add(cert).map_err(|source| LoadError::Anchor {
            key,
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}
