//! TLS for the connections the gateway accepts and opens: the listener's certificate
//! (reloaded from disk without dropping open connections), optional client-certificate
//! verification, and the trust anchors and client certificate of the upstream client.
//!
//! rustls with the ring provider: ring builds with `cc` alone (no cmake, no Go), the
//! shortest clean build; aws-lc-rs would only be needed for a FIPS build.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// Why a certificate, key or CA file could not be used.
#[derive(Debug)]
pub enum TlsFileError {
    /// The file could not be read or is not PEM.
    Unreadable(PathBuf, String),
    /// The file holds no certificate.
    NoCertificate(PathBuf),
    /// The file holds no private key.
    NoKey(PathBuf),
    /// The key is not one rustls can sign with, or does not match the certificate.
    BadKey(PathBuf, rustls::Error),
    /// A CA file's certificate is not a usable trust anchor, or the verifier could not
    /// be built from it.
    BadCa(PathBuf, String),
    /// The crypto provider offers no protocol version rustls accepts (a build problem).
    Provider(rustls::Error),
}

impl std::fmt::Display for TlsFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsFileError::Unreadable(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            TlsFileError::NoCertificate(p) => {
                write!(f, "{}: no PEM certificate in the file", p.display())
            }
            TlsFileError::NoKey(p) => write!(f, "{}: no PEM private key in the file", p.display()),
            TlsFileError::BadKey(p, e) => write!(f, "{}: unusable private key: {e}", p.display()),
            TlsFileError::BadCa(p, e) => write!(f, "{}: unusable CA: {e}", p.display()),
            TlsFileError::Provider(e) => write!(f, "the TLS provider is unusable: {e}"),
        }
    }
}

impl std::error::Error for TlsFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsFileError::BadKey(_, e) | TlsFileError::Provider(e) => Some(e),
            TlsFileError::Unreadable(..)
            | TlsFileError::NoCertificate(_)
            | TlsFileError::BadCa(..)
            | TlsFileError::NoKey(_) => None,
        }
    }
}

/// The crypto provider every TLS configuration of the gateway uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let unreadable =
        |e: rustls::pki_types::pem::Error| TlsFileError::Unreadable(path.to_owned(), e.to_string());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(unreadable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unreadable)?;
    if certs.is_empty() {
        return Err(TlsFileError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsFileError::NoKey(path.to_owned()),
        e => TlsFileError::Unreadable(path.to_owned(), e.to_string()),
    })
}

/// The trust anchors in a PEM CA file (every certificate in it).
pub fn roots(path: &Path) -> Result<RootCertStore, TlsFileError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(path)? {
        store
            .add(cert)
            .map_err(|e| TlsFileError::BadCa(path.to_owned(), e.to_string()))?;
    }
    Ok(store)
}

/// A certificate chain and its key, checked to match.
fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsFileError> {
    CertifiedKey::from_der(certificates(cert)?, private_key(key)?, &provider())
        .map_err(|e| TlsFileError::BadKey(key.to_owned(), e))
}

/// The modification times of the two files, to notice a change on disk.
fn stamps(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

/// The listener's certificate, swapped as a whole when the files change: a handshake
/// takes the certificate current at its start, and connections already open keep the
/// session they negotiated.
#[derive(Debug)]
pub struct ReloadingCertificate {
    current: RwLock<Arc<CertifiedKey>>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl ReloadingCertificate {
    /// Loads the pair; a bad pair refuses startup.
    pub fn load(cert_file: PathBuf, key_file: PathBuf) -> Result<Self, TlsFileError> {
        let key = certified_key(&cert_file, &key_file)?;
        Ok(ReloadingCertificate {
            current: RwLock::new(Arc::new(key)),
            cert_file,
            key_file,
        })
    }

    /// Loads the pair again; on an error (a half-written file, a key that does not
    /// match yet) the certificate in use stays.
    fn reload(&self) -> Result<(), TlsFileError> {
        let key = Arc::new(certified_key(&self.cert_file, &self.key_file)?);
        if let Ok(mut current) = self.current.write() {
            *current = key;
        }
        Ok(())
    }

    /// Checks the files' modification times every `every` and reloads on a change,
    /// counting each reload and each failed one.
    pub fn watch(self: &Arc<Self>, every: Duration, reloads: prometheus::IntCounterVec) {
        let this = Arc::downgrade(self);
        let mut seen = stamps(&self.cert_file, &self.key_file);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = this.upgrade() else { return };
                let now = stamps(&this.cert_file, &this.key_file);
                if now.is_none() || now == seen {
                    continue;
                }
                match this.reload() {
                    Ok(()) => {
                        seen = now;
                        reloads.with_label_values(&["ok"]).inc();
                        tracing::info!(cert_file = %this.cert_file.display(), "server.tls: certificate reloaded");
                    }
                    Err(e) => {
                        // Retried on the next tick until the pair loads (the files
                        // may be replaced one at a time).
                        reloads.with_label_values(&["failed"]).inc();
                        tracing::warn!(error = %e, "server.tls: certificate not reloaded; the previous one stays in use");
                    }
                }
            }
        });
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|k| Arc::clone(&k))
    }
}

/// ALPN protocols the listener offers, in order of preference.
pub const LISTENER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The listener's TLS configuration: the reloading certificate, ALPN `h2` and
/// `http/1.1`, and client certificates required and verified against `client_ca`
/// when one is given (its file, for messages, and its roots, read once by [`roots`]).
pub fn server_config(
    cert: Arc<ReloadingCertificate>,
    client_ca: Option<(&Path, RootCertStore)>,
) -> Result<ServerConfig, TlsFileError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsFileError::Provider)?;
    let builder = match client_ca {
        Some((path, roots)) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsFileError::BadCa(path.to_owned(), e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = LISTENER_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// What the upstream (or chain node) client trusts and presents.
#[derive(Clone, Debug, Default)]
pub struct ClientTls<'a> {
    /// A private CA; without it the webpki roots (Mozilla's list, compiled in).
    pub ca_file: Option<&'a Path>,
    /// A client certificate and its key, for mTLS.
    pub client_cert: Option<(&'a Path, &'a Path)>,
}

/// A client configuration that verifies the server's certificate and name (SNI is the
/// host of the URL), without ALPN (the connector sets it). There is deliberately no
/// way to turn verification off.
pub fn client_config(tls: &ClientTls<'_>) -> Result<ClientConfig, TlsFileError> {
    let roots = match tls.ca_file {
        Some(path) => roots(path)?,
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsFileError::Provider)?
        .with_root_certificates(roots);
    match tls.client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(certificates(cert)?, private_key(key)?)
            .map_err(|e| TlsFileError::BadKey(key.to_owned(), e)),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// Why a request to the upstream failed before a response head arrived (the fixed
/// label set of `passport_gate_upstream_errors_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// The TCP connection could not be made.
    Connect,
    /// The TLS handshake failed (certificate not trusted, wrong name, client
    /// certificate refused, protocol mismatch).
    Tls,
    /// The connection was made but the exchange failed (closed early, bad HTTP).
    Protocol,
}

impl UpstreamFailure {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::Tls => "tls",
            UpstreamFailure::Protocol => "protocol",
        }
    }
}

/// Whether `e` or one of its sources is a rustls error, also inside `io::Error`s
/// (tokio-rustls reports a failed handshake as an `io::Error` holding the rustls
/// error, and hyper-rustls wraps that in another `io::Error`, whose `source` skips
/// both).
fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        let mut inner: &(dyn std::error::Error + 'static) = err;
        loop {
            if inner.is::<rustls::Error>() {
                return true;
            }
            match inner
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
            {
                Some(wrapped) => inner = wrapped,
                None => break,
            }
        }
        next = err.source();
    }
    false
}

/// The transport metrics: upstream failures by [`UpstreamFailure`], TLS handshake
/// failures by peer (`client` on the listener, `upstream`), certificate reloads.
#[derive(Clone)]
pub struct TransportMetrics {
    upstream_errors: prometheus::IntCounterVec,
    handshake_failures: prometheus::IntCounterVec,
    /// Listener certificate reloads by `result` (`ok`, `failed`).
    pub certificate_reloads: prometheus::IntCounterVec,
    /// Answers cut because their client stopped reading (`server.client_stall_timeout_ms`).
    pub client_stalls: prometheus::IntCounter,
}

impl TransportMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let vec = |name: &str, help: &str, label: &str| {
            prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), &[label])
        };
        let m = TransportMetrics {
            upstream_errors: vec(
                "passport_gate_upstream_errors_total",
                "Requests that got no response head from the upstream, by reason (connect, tls, protocol)",
                "reason",
            )?,
            handshake_failures: vec(
                "passport_gate_tls_handshake_failures_total",
                "Failed TLS handshakes, by peer (client: on the proxy listener; upstream)",
                "peer",
            )?,
            certificate_reloads: vec(
                "passport_gate_tls_certificate_reloads_total",
                "Reloads of the listener certificate from disk, by result (ok, failed)",
                "result",
            )?,
            client_stalls: prometheus::IntCounter::new(
                "passport_gate_client_stalls_total",
                "Answers cut because their client read nothing for server.client_stall_timeout_ms (the upstream request was released)",
            )?,
        };
        for r in ["connect", "tls", "protocol"] {
            m.upstream_errors.with_label_values(&[r]);
        }
        for p in ["client", "upstream"] {
            m.handshake_failures.with_label_values(&[p]);
        }
        for r in ["ok", "failed"] {
            m.certificate_reloads.with_label_values(&[r]);
        }
        registry.register(Box::new(m.upstream_errors.clone()))?;
        registry.register(Box::new(m.handshake_failures.clone()))?;
        registry.register(Box::new(m.certificate_reloads.clone()))?;
        registry.register(Box::new(m.client_stalls.clone()))?;
        Ok(m)
    }

    /// A failed handshake with a client of the proxy listener.
    pub fn client_handshake_failed(&self) {
        self.handshake_failures.with_label_values(&["client"]).inc();
    }

    /// The upstream side, for the proxy.
    pub fn upstream(&self) -> UpstreamErrors {
        UpstreamErrors {
            errors: self.upstream_errors.clone(),
            handshakes: self.handshake_failures.with_label_values(&["upstream"]),
        }
    }
}

/// Counts the upstream's failures.
#[derive(Clone)]
pub struct UpstreamErrors {
    errors: prometheus::IntCounterVec,
    handshakes: prometheus::IntCounter,
}

impl UpstreamErrors {
    /// Counts one failed request and says why it failed.
    pub fn count(&self, e: &hyper_util::client::legacy::Error) -> UpstreamFailure {
        let failure = if is_tls_error(e) {
            self.handshakes.inc();
            UpstreamFailure::Tls
        } else if e.is_connect() {
            UpstreamFailure::Connect
        } else {
            UpstreamFailure::Protocol
        };
        self.errors.with_label_values(&[failure.label()]).inc();
        failure
    }
}

/// Makes ring the process's default provider, for libraries that build their rustls
/// configurations with it (the Redis client). Idempotent.
pub fn install_default_provider() {
    // An error only says a default is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
