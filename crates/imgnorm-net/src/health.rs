//! The standard `grpc.health.v1.Health` service on the master, and the client
//! behind `imgnorm health`, which a container healthcheck runs (the image has
//! no shell, so the probe has to be our own binary).
//!
//! The master reports `SERVING` for the whole server (`""`) and for
//! [`COORDINATOR_SERVICE`] as soon as its listener accepts connections: the
//! listener is bound before `Master::serve` starts, so "listening" and
//! "serving" are the same moment.
//!
//! The health service needs no secret (a probe knows none), so the
//! container healthcheck works on a master that requires one; it answers
//! over TLS when the master serves TLS, and also in plain text on
//! `--health-listen` ([`serve_plain`]) for probes without TLS.
use std::time::Duration;

use tonic::transport::Channel;
pub use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_server::HealthServer};
use tonic_health::server::HealthReporter;

/// The fully qualified name of the coordinator service, as health checks name it.
pub const COORDINATOR_SERVICE: &str = "imgnorm.v1.Coordinator";

/// Why a health probe did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The URL or the TLS settings are unusable.
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
    /// No connection within the timeout.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// Why (the error chain, explained).
        reason: String,
    },
    /// The server answered the check with an error (e.g. unknown service).
    #[error("health check on {url} failed: {status}")]
    Rpc {
        /// The URL.
        url: String,
        /// The gRPC status.
        status: tonic::Status,
    },
    /// No answer within the timeout.
    #[error("health check on {url} timed out after {timeout:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// The limit.
        timeout: Duration,
    },
}

/// A health service whose server-wide and coordinator statuses are `SERVING`,
/// and the reporter that can change them (e.g. to `NOT_SERVING` on shutdown).
pub async fn serving() -> (
    HealthReporter,
    HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (reporter, server) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(COORDINATOR_SERVICE, tonic_health::ServingStatus::Serving)
        .await;
    (reporter, server)
}

/// Serves only the health service, in plain text, on `listener` until the
/// process exits (`master --health-listen`): probes that cannot speak TLS
/// (Kubernetes' `grpc:` probe) check a TLS master here. It reports
/// `SERVING` while the process runs; it reveals nothing and takes no secret.
pub async fn serve_plain(listener: tokio::net::TcpListener) {
    let (_reporter, svc) = serving().await;
    let r = tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "the plain-text health listener stopped");
    }
}

/// Asks the master at `url` for the status of `service` (`""` = the whole
/// server), giving up after `timeout` in total. `tls_ca` is the CA to trust
/// for an `https://` URL (None: the system's bundle).
pub async fn check(
    url: &str,
    tls_ca: Option<&std::path::Path>,
    service: &str,
    timeout: Duration,
) -> Result<ServingStatus, HealthError> {
    let probe = async {
        let ep = crate::security::health_client(tls_ca)
            .endpoint(url)?
            .connect_timeout(timeout)
            .timeout(timeout);
        let ch: Channel = ep.connect().await.map_err(|e| HealthError::Connect {
            url: url.to_string(),
            reason: crate::security::explain(&e),
        })?;
        let r = HealthClient::new(ch)
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .map_err(|status| HealthError::Rpc {
                url: url.to_string(),
                status,
            })?;
        Ok(ServingStatus::try_from(r.into_inner().status).unwrap_or(ServingStatus::Unknown))
    };
    tokio::time::timeout(timeout, probe)
        .await
        .unwrap_or_else(|_| {
            Err(HealthError::Timeout {
                url: url.to_string(),
                timeout,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serving_once_listening_and_unknown_service_is_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_reporter, svc) = serving().await;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = rx.await;
                    },
                ),
        );
        let url = format!("http://{addr}");
        let t = Duration::from_secs(5);
        assert_eq!(
            check(&url, None, "", t).await.unwrap(),
            ServingStatus::Serving
        );
        assert_eq!(
            check(&url, None, COORDINATOR_SERVICE, t).await.unwrap(),
            ServingStatus::Serving
        );
        assert!(matches!(
            check(&url, None, "no.such.Service", t).await,
            Err(HealthError::Rpc { .. })
        ));
        let _ = tx.send(());
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn nobody_listening_is_a_connect_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        drop(l);
        let r = check(&url, None, "", Duration::from_millis(500)).await;
        assert!(
            matches!(
                r,
                Err(HealthError::Connect { .. } | HealthError::Timeout { .. })
            ),
            "{r:?}"
        );
    }
}
