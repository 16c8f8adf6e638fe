//! Transport security of the master, its workers and clients: TLS (rustls
//! with *ring*) for gRPC and the dashboard, the shared secret every
//! `Coordinator` call must carry, and the rule that plain connections are
//! allowed by default only on loopback. See docs/SECURITY.md.
//!
//! The flags become a [`ServerSecurity`] (master) or a [`ClientSecurity`]
//! (worker, `submit`, `status`, `health`); a master starting workers itself
//! hands them a [`WorkerAccess`].
pub mod secret;
pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use imgnorm_proto::v1::coordinator_client::CoordinatorClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

pub use secret::{PresentSecret, RequireSecret, SECRET_ENV, Secret};
pub use tls::{ServerTls, TlsListener};

/// A `Coordinator` client that presents the secret on every call.
pub type Coordinator = CoordinatorClient<InterceptedService<Channel, PresentSecret>>;

/// What the flags ask for cannot be done safely, or a file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A file could not be read.
    #[error("cannot read the {what} {path}: {source}")]
    ReadFile {
        /// What the file is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file holds nothing usable.
    #[error("the {what} {path} is not usable PEM: {reason}")]
    BadPem {
        /// What the file is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key does not fit the certificate (or either is unsupported).
    #[error("the certificate {cert} and the key {key} cannot be used together: {reason}")]
    KeyMismatch {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
        /// Why.
        reason: String,
    },
    /// Generating a self-signed certificate failed.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing a generated file failed.
    #[error("cannot write {path}: {source}")]
    WriteFile {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No random source for a generated secret.
    #[error("cannot generate a secret (reading /dev/urandom): {0}")]
    Random(std::io::Error),
    /// The secret is too short or has characters gRPC metadata cannot carry.
    #[error(
        "the secret from {origin} must have at least {min} characters, all visible ASCII (no spaces)",
        min = secret::MIN_SECRET_LEN
    )]
    BadSecret {
        /// Where it came from (`--secret`, a file, the variable).
        origin: String,
    },
    /// An https:// URL without --tls-ca, and no system CA bundle.
    #[error(
        "no CA certificate to check the master's certificate with: pass --tls-ca FILE (for a self-signed master, its cert.pem), or set SSL_CERT_FILE"
    )]
    NoRoots,
    /// A master would serve plain text on a non-loopback address.
    #[error(
        "refusing to serve {what} unencrypted on {addr}, which is not a loopback address: give the master a certificate (--tls-cert FILE --tls-key FILE, or --tls-self-signed DIR), or pass --insecure to allow plain connections"
    )]
    PlainServer {
        /// `gRPC` or `the dashboard`.
        what: &'static str,
        /// The bound address.
        addr: SocketAddr,
    },
    /// A master would accept anyone as a worker on a non-loopback address.
    #[error(
        "refusing to accept workers on {addr}, which is not a loopback address, without a shared secret: set ${SECRET_ENV}, --secret-file FILE or --secret, or pass --insecure to let anyone who can reach the port join"
    )]
    NoSecret {
        /// The bound address.
        addr: SocketAddr,
    },
    /// A client would talk plain text to a non-loopback host.
    #[error(
        "refusing to connect to {url} unencrypted (not a loopback address): use an https:// URL (with --tls-ca FILE for a self-signed master), or pass --insecure"
    )]
    PlainClient {
        /// The master URL.
        url: String,
    },
    /// `--tls-ca` with an http:// URL: a sign the URL is wrong.
    #[error("--tls-ca is for https:// master URLs, but the URL is {url}")]
    CaWithPlain {
        /// The master URL.
        url: String,
    },
    /// The master URL is malformed.
    #[error("invalid master URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// True for `localhost` and loopback IP addresses (`127.0.0.0/8`, `::1`).
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The master's side: its certificate, its secret, and whether plain
/// connections are allowed off loopback.
#[derive(Debug, Clone, Default)]
pub struct ServerSecurity {
    /// Certificate and key; None serves plain text.
    pub tls: Option<ServerTls>,
    /// The secret every `Coordinator` call must carry; None checks nothing.
    pub secret: Option<Secret>,
    /// `--insecure`: plain text and no secret allowed on any address.
    pub insecure: bool,
}

impl ServerSecurity {
    /// Checks the gRPC address: off loopback, TLS and a secret are required
    /// unless `--insecure`.
    pub fn check_grpc(&self, addr: SocketAddr) -> Result<(), SecurityError> {
        if self.insecure || addr.ip().is_loopback() {
            return Ok(());
        }
        if self.tls.is_none() {
            return Err(SecurityError::PlainServer { what: "gRPC", addr });
        }
        if self.secret.is_none() {
            return Err(SecurityError::NoSecret { addr });
        }
        Ok(())
    }

    /// Checks the dashboard address: off loopback, TLS is required unless
    /// `--insecure` (its token would travel in clear text).
    pub fn check_dashboard(&self, addr: SocketAddr) -> Result<(), SecurityError> {
        if self.insecure || addr.ip().is_loopback() || self.tls.is_some() {
            return Ok(());
        }
        Err(SecurityError::PlainServer {
            what: "the dashboard",
            addr,
        })
    }

    /// `https` with TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// What workers started by this master need: the secret, and the
    /// certificate to trust (the master's own file, as this host sees it).
    pub fn worker_access(&self) -> WorkerAccess {
        WorkerAccess {
            tls_ca: self.tls.as_ref().map(|t| t.cert_path().to_path_buf()),
            secret: self.secret.clone(),
            insecure: self.insecure,
        }
    }
}

/// How a worker started by the master (`run`, autoscaling) reaches it: flags
/// (`--tls-ca`, `--insecure`) and the secret, passed in the environment so
/// it never shows in a process list.
#[derive(Debug, Clone, Default)]
pub struct WorkerAccess {
    /// `--tls-ca` as the worker sees the file.
    pub tls_ca: Option<PathBuf>,
    /// The secret, given as `$IMGNORM_SECRET`.
    pub secret: Option<Secret>,
    /// Pass `--insecure`.
    pub insecure: bool,
}

impl WorkerAccess {
    /// Command-line arguments for `imgnorm worker`.
    pub fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(ca) = &self.tls_ca {
            a.push("--tls-ca".to_string());
            a.push(ca.display().to_string());
        }
        if self.insecure {
            a.push("--insecure".to_string());
        }
        a
    }

    /// Environment variables for `imgnorm worker`.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.secret
            .iter()
            .map(|s| (SECRET_ENV, s.expose().to_string()))
            .collect()
    }
}

/// A client's side: the CA to trust, the secret to present, and whether a
/// plain URL off loopback is allowed.
#[derive(Debug, Clone, Default)]
pub struct ClientSecurity {
    /// `--tls-ca`; None trusts the system's CA bundle for https:// URLs.
    pub tls_ca: Option<PathBuf>,
    /// The secret to present.
    pub secret: Option<Secret>,
    /// `--insecure`: allow http:// to a non-loopback host.
    pub insecure: bool,
}

impl ClientSecurity {
    /// An endpoint for `url`: TLS for `https://` (checked against
    /// `--tls-ca`), and `http://` only to loopback unless `--insecure`.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, SecurityError> {
        let bad = |reason: String| SecurityError::Url {
            url: url.to_string(),
            reason,
        };
        let uri: axum::http::Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
        let host = uri
            .host()
            .ok_or_else(|| bad("no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| bad(format!("{e}")))?;
        match uri.scheme_str() {
            Some("https") => {
                let roots = tls::trusted_roots(self.tls_ca.as_deref())?;
                crate::storage::install_crypto_provider();
                endpoint
                    .tls_config(
                        ClientTlsConfig::new()
                            .ca_certificate(Certificate::from_pem(roots))
                            .domain_name(host),
                    )
                    .map_err(|e| bad(error_chain(&e)))
            }
            Some("http") => {
                if self.tls_ca.is_some() {
                    return Err(SecurityError::CaWithPlain {
                        url: url.to_string(),
                    });
                }
                if !self.insecure && !is_loopback_host(&host) {
                    return Err(SecurityError::PlainClient {
                        url: url.to_string(),
                    });
                }
                Ok(endpoint)
            }
            _ => Err(bad("the scheme must be http:// or https://".into())),
        }
    }

    /// The interceptor presenting the secret.
    pub fn interceptor(&self) -> PresentSecret {
        PresentSecret::new(self.secret.as_ref())
    }

    /// A connected `Coordinator` client (for `submit` and `status`).
    pub async fn coordinator(
        &self,
        url: &str,
        connect_timeout: Duration,
    ) -> Result<Coordinator, ConnectError> {
        let channel = self
            .endpoint(url)?
            .connect_timeout(connect_timeout)
            .connect()
            .await
            .map_err(|e| ConnectError::Connect(explain(&e)))?;
        Ok(
            CoordinatorClient::with_interceptor(channel, self.interceptor())
                .max_decoding_message_size(crate::limits::FROM_MASTER_MAX)
                .max_encoding_message_size(crate::limits::TO_MASTER_MAX),
        )
    }
}

/// Why a client could not connect.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The flags or files are unusable.
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// The connection failed (the error chain, explained).
    #[error("{0}")]
    Connect(String),
}

/// The error and its sources on one line (tonic's transport error alone
/// says only "transport error").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// The TLS error inside a connection failure, if that is what it was.
pub fn tls_failure<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(t) = c.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        if let Some(t) = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(t);
        }
        cur = c.source();
    }
    None
}

/// A connection failure in words, with a hint when TLS was the cause.
pub fn explain(e: &(dyn std::error::Error + 'static)) -> String {
    match tls_failure(e) {
        Some(t @ rustls::Error::InvalidCertificate(_)) => format!(
            "the master's TLS certificate is not trusted ({t}): check --tls-ca (for a self-signed master, its cert.pem) and that the URL's host is one of the certificate's names"
        ),
        Some(t) => format!(
            "TLS with the master failed ({t}): is it serving TLS (https://) or plain text (http://)?"
        ),
        None => error_chain(e),
    }
}

/// `imgnorm health`: TLS only. The health service needs no secret and
/// sends nothing worth hiding, so a plain URL is allowed anywhere.
pub fn health_client(tls_ca: Option<&Path>) -> ClientSecurity {
    ClientSecurity {
        tls_ca: tls_ca.map(Path::to_path_buf),
        secret: None,
        insecure: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.1.2.3",
            "[::1]",
            "::1",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["master", "0.0.0.0", "10.0.0.1", "[::]", "example.com"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn plain_only_on_loopback_unless_insecure() {
        let any: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        let plain = ServerSecurity::default();
        assert!(plain.check_grpc(lo).is_ok());
        assert!(plain.check_dashboard(lo).is_ok());
        let e = plain.check_grpc(any).unwrap_err().to_string();
        assert!(e.contains("--insecure") && e.contains("--tls-cert"), "{e}");
        assert!(plain.check_dashboard(any).is_err());
        let insecure = ServerSecurity {
            insecure: true,
            ..Default::default()
        };
        assert!(insecure.check_grpc(any).is_ok());
        assert!(insecure.check_dashboard(any).is_ok());

        let c = ClientSecurity::default();
        assert!(c.endpoint("http://127.0.0.1:1").is_ok());
        assert!(c.endpoint("http://localhost:1").is_ok());
        let e = c.endpoint("http://master:50051").unwrap_err().to_string();
        assert!(e.contains("refusing") && e.contains("--insecure"), "{e}");
        let c = ClientSecurity {
            insecure: true,
            ..Default::default()
        };
        assert!(c.endpoint("http://master:50051").is_ok());
        let c = ClientSecurity {
            tls_ca: Some("ca.pem".into()),
            ..Default::default()
        };
        assert!(matches!(
            c.endpoint("http://127.0.0.1:1"),
            Err(SecurityError::CaWithPlain { .. })
        ));
        assert!(ClientSecurity::default().endpoint("ftp://x").is_err());
    }

    #[test]
    fn worker_access_keeps_the_secret_out_of_the_arguments() {
        let a = WorkerAccess {
            tls_ca: Some("/tls/cert.pem".into()),
            secret: Some(Secret::parse("0123456789abcdef", "test").unwrap()),
            insecure: false,
        };
        assert_eq!(a.args(), ["--tls-ca", "/tls/cert.pem"]);
        assert!(!a.args().iter().any(|x| x.contains("0123456789abcdef")));
        assert_eq!(a.env(), [(SECRET_ENV, "0123456789abcdef".to_string())]);
    }
}
