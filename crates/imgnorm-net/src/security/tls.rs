//! Certificates: the master's PEM certificate and key (from files, or a
//! self-signed pair generated once into a directory and reused), the CA a
//! client trusts, the rustls server configuration of the dashboard, and
//! [`TlsListener`], which lets `axum::serve` (and its graceful shutdown)
//! run over TLS. rustls always uses the *ring* provider
//! ([`crate::storage::install_crypto_provider`]).
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::SecurityError;

/// File name of the certificate in a `--tls-self-signed` directory.
pub const CERT_FILE: &str = "cert.pem";
/// File name of the private key in a `--tls-self-signed` directory.
pub const KEY_FILE: &str = "key.pem";
/// File name of the list of names the generated certificate holds.
pub const NAMES_FILE: &str = "names.txt";

/// The master's certificate chain and private key (PEM). `Debug` shows the
/// certificate's path only.
#[derive(Clone)]
pub struct ServerTls {
    cert_pem: Arc<[u8]>,
    key_pem: Arc<[u8]>,
    cert_path: PathBuf,
    key_path: PathBuf,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|source| SecurityError::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate of a PEM file; an error when there is none.
fn certificates(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let bad = |reason: String| SecurityError::BadPem {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

impl ServerTls {
    /// Reads and checks `--tls-cert` and `--tls-key` (PEM; the key may be
    /// PKCS#8, PKCS#1 or SEC1).
    pub fn from_files(cert: &Path, key: &Path) -> Result<ServerTls, SecurityError> {
        let tls = ServerTls {
            cert_pem: read("certificate", cert)?.into(),
            key_pem: read("private key", key)?.into(),
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
        };
        // Fails now, with the file names, rather than at the first connection.
        tls.rustls_config()?;
        Ok(tls)
    }

    /// The self-signed pair in `dir` (`cert.pem`, `key.pem`): reused when it
    /// exists and already names every one of `extra_names`; otherwise
    /// generated for `localhost`, `127.0.0.1`, `::1`, this host's name and
    /// `extra_names`, and written atomically (temporary file, then rename).
    pub fn self_signed(dir: &Path, extra_names: &[String]) -> Result<ServerTls, SecurityError> {
        let (cert, key, names) = (
            dir.join(CERT_FILE),
            dir.join(KEY_FILE),
            dir.join(NAMES_FILE),
        );
        if cert.is_file() && key.is_file() {
            let held = std::fs::read_to_string(&names).unwrap_or_default();
            let held: Vec<&str> = held.lines().collect();
            if extra_names.iter().all(|n| held.contains(&n.as_str())) {
                tracing::info!(cert = %cert.display(), "reusing the self-signed certificate");
                return ServerTls::from_files(&cert, &key);
            }
            tracing::warn!(
                cert = %cert.display(),
                "the self-signed certificate lacks a --tls-san name: generating a new one (clients must trust the new file)"
            );
        }
        let mut wanted = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        // The host's name only when it is a plain DNS name; --tls-san names
        // are the user's and go in as given (a bad one is an error).
        let host = crate::host::hostname();
        let plain = |h: &str| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        };
        let host = plain(&host).then_some(host);
        for n in host.iter().chain(extra_names) {
            if !n.is_empty() && !wanted.contains(n) {
                wanted.push(n.clone());
            }
        }
        let generate = |names: Vec<String>| -> Result<(String, String), rcgen::Error> {
            let mut params = rcgen::CertificateParams::new(names)?;
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "imgnorm self-signed");
            let key = rcgen::KeyPair::generate()?;
            let cert = params.self_signed(&key)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (cert_pem, key_pem) = generate(wanted.clone()).map_err(SecurityError::Generate)?;
        std::fs::create_dir_all(dir).map_err(|source| SecurityError::WriteFile {
            path: dir.to_path_buf(),
            source,
        })?;
        write_atomically(&key, key_pem.as_bytes(), 0o600)?;
        write_atomically(&cert, cert_pem.as_bytes(), 0o644)?;
        write_atomically(&names, (wanted.join("\n") + "\n").as_bytes(), 0o644)?;
        eprintln!(
            "imgnorm: generated a self-signed certificate for {} in {} (point workers at it with --tls-ca)",
            wanted.join(", "),
            cert.display()
        );
        ServerTls::from_files(&cert, &key)
    }

    /// Where the certificate was read from (what clients pass as `--tls-ca`
    /// for a self-signed one).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The gRPC server's TLS settings.
    pub fn tonic_config(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &*self.cert_pem,
                &*self.key_pem,
            ))
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// The dashboard's rustls settings (HTTP/1.1).
    pub fn rustls_config(&self) -> Result<Arc<rustls::ServerConfig>, SecurityError> {
        crate::storage::install_crypto_provider();
        let certs = certificates("certificate", &self.cert_path, &self.cert_pem)?;
        let key =
            PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|e| SecurityError::BadPem {
                what: "private key",
                path: self.key_path.clone(),
                reason: e.to_string(),
            })?;
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| SecurityError::KeyMismatch {
                cert: self.cert_path.clone(),
                key: self.key_path.clone(),
                reason: e.to_string(),
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Writes `data` to `path` through a temporary file in the same folder, so
/// a reader never sees half a file.
fn write_atomically(path: &Path, data: &[u8], mode: u32) -> Result<(), SecurityError> {
    use std::io::Write;
    let err = |source| SecurityError::WriteFile {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let written = opts
        .open(&tmp)
        .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

/// The certificates a client trusts: `--tls-ca`, else the system bundle
/// (`$SSL_CERT_FILE`, else `/etc/ssl/certs/ca-certificates.crt`).
pub fn trusted_roots(ca: Option<&Path>) -> Result<Vec<u8>, SecurityError> {
    let path = match ca {
        Some(p) => p.to_path_buf(),
        None => {
            let p = std::env::var_os("SSL_CERT_FILE")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
            if !p.is_file() {
                return Err(SecurityError::NoRoots);
            }
            p
        }
    };
    let pem = read("CA certificate", &path)?;
    certificates("CA certificate", &path, &pem)?;
    Ok(pem)
}

/// Longest a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP listener whose connections are TLS streams, for `axum::serve`.
/// Handshakes run in their own tasks, so a slow or broken client never holds
/// up the others; failed handshakes are logged at debug level and dropped.
/// The accept loop stops when the listener is dropped.
pub struct TlsListener {
    addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Wraps a bound listener.
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<TlsListener> {
        let addr = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let accept_loop = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, go on.
                        tracing::debug!(error = %e, "dashboard accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "dashboard TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "dashboard TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            addr,
            ready,
            accept_loop,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop holds a sender until the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_generated_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("tls");
        let a = ServerTls::self_signed(&d, &["master".into()]).unwrap();
        let names = std::fs::read_to_string(d.join(NAMES_FILE)).unwrap();
        assert!(names.lines().any(|l| l == "master"), "{names}");
        assert!(names.lines().any(|l| l == "127.0.0.1"), "{names}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the key is private");
        }
        let b = ServerTls::self_signed(&d, &["master".into()]).unwrap();
        assert_eq!(a.cert_pem, b.cert_pem, "reused, not regenerated");
        let c = ServerTls::self_signed(&d, &["other.example".into()]).unwrap();
        assert_ne!(a.cert_pem, c.cert_pem, "a new name needs a new certificate");
        assert!(trusted_roots(Some(&d.join(CERT_FILE))).is_ok());
        let leftovers: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = ServerTls::from_files(&junk, &junk).unwrap_err().to_string();
        assert!(e.contains("junk.pem"), "{e}");
        let e = trusted_roots(Some(&junk)).unwrap_err().to_string();
        assert!(
            e.contains("junk.pem") && e.contains("CA certificate"),
            "{e}"
        );
        let missing = dir.path().join("missing.pem");
        let e = ServerTls::from_files(&missing, &junk)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
