//! The worker: connects to the master (retrying with backoff, and again after
//! the master restarts), opens a session, pulls leases with credits, runs the
//! engine on its own OS threads (never on the async runtime, so heartbeats are
//! never starved), reports each image as soon as it is done, and drains on
//! shutdown: it stops asking for work, finishes the lease it has started,
//! hands back the ones it has not, and leaves.
#![warn(missing_docs)]
mod pool;

// Lower layers' modules under the `crate::` paths these files used before
// the split into crates (issue 17), so moved files kept their imports and
// concurrent branches still merge by rename. Not re-exported.
use imgnorm_engine::{budget, engine, output, storage};
use imgnorm_net::{host, limits, security, wire};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use imgnorm_proto::PROTOCOL_VERSION;
use imgnorm_proto::v1 as pb;
use imgnorm_proto::v1::coordinator_client::CoordinatorClient;
use imgnorm_proto::v1::master_message::Msg as MMsg;
use imgnorm_proto::v1::worker_message::Msg as WMsg;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Endpoint;

use crate::limits::{FROM_MASTER_MAX, TO_MASTER_MAX};
use crate::security::{ClientSecurity, SecurityError};
use pool::{LeaseCtx, Pool};

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Master URL, e.g. `http://127.0.0.1:50051`.
    pub master: String,
    /// Engine threads.
    pub threads: usize,
    /// Name shown by the master.
    pub name: String,
    /// Leases held at once (one being processed, the rest prefetched).
    pub prefetch: u32,
    /// Artificial delay after each image (demos and fault tests).
    pub delay_per_image: Duration,
    /// Give up after this long without reaching a master (None: never).
    pub connect_timeout: Option<Duration>,
    /// Memory budget in MiB (`--memory-budget`); `None`: the default for
    /// the thread count ([`crate::budget::default_mib`]).
    pub memory_budget_mib: Option<u64>,
    /// TLS trust, the secret to present, and whether plain text off
    /// loopback is allowed.
    pub security: ClientSecurity,
}

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The master refused this worker: an incompatible protocol version, or
    /// a missing or wrong secret.
    #[error("the master refused this worker: {0}")]
    Refused(String),
    /// The URL or the TLS settings are unusable, or plain text to a
    /// non-loopback host without `--insecure`.
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// The TLS handshake with the master failed: retrying cannot help.
    #[error("cannot connect to the master at {url}: {reason}")]
    Tls {
        /// The URL.
        url: String,
        /// What went wrong, with a hint.
        reason: String,
    },
    /// No master answered within the connect timeout.
    #[error("no master reachable at {0} within the connect timeout")]
    Unreachable(String),
    /// The memory budget cannot hold the worker's reserves.
    #[error(transparent)]
    Budget(#[from] crate::budget::BudgetTooSmall),
}

enum SessionEnd {
    /// Shut down on request, after draining.
    Shutdown,
    /// The connection or the session was lost; reconnect.
    Lost { established: bool },
}

fn msg(m: WMsg) -> pb::WorkerMessage {
    pb::WorkerMessage { msg: Some(m) }
}

/// Runs a worker until `shutdown` resolves (then drains) or a fatal error.
pub async fn run(
    cfg: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let endpoint = cfg
        .security
        .endpoint(&cfg.master)?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20));
    let (stop_tx, mut stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let threads = cfg.threads.max(1);
    let mib = cfg
        .memory_budget_mib
        .unwrap_or_else(|| crate::budget::default_mib(threads));
    let budget = crate::budget::MemoryBudget::new(mib, threads)?;
    tracing::info!(
        budget_mib = mib,
        images_mib = budget.capacity() >> 20,
        "memory budget"
    );
    let pool = Arc::new(Pool::new(threads, cfg.delay_per_image, budget));
    let mut backoff = Duration::from_millis(100);
    let mut unreachable_since = tokio::time::Instant::now();
    let mut logged_waiting = false;
    loop {
        if *stop_rx.borrow() {
            break;
        }
        match session(&cfg, &endpoint, &pool, &mut stop_rx).await {
            Ok(SessionEnd::Shutdown) => break,
            Ok(SessionEnd::Lost { established }) => {
                if established {
                    tracing::warn!(master = %cfg.master, "lost the master; reconnecting");
                    backoff = Duration::from_millis(100);
                    unreachable_since = tokio::time::Instant::now();
                }
            }
            Err(SessionError::Refused(e)) => return Err(WorkerError::Refused(e)),
            Err(SessionError::Tls(reason)) => {
                return Err(WorkerError::Tls {
                    url: cfg.master.clone(),
                    reason,
                });
            }
            Err(SessionError::Connect(e)) => {
                if !logged_waiting {
                    tracing::info!(master = %cfg.master, error = %e, "waiting for the master");
                    logged_waiting = true;
                }
                if let Some(limit) = cfg.connect_timeout
                    && unreachable_since.elapsed() > limit
                {
                    return Err(WorkerError::Unreachable(cfg.master.clone()));
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop_rx.changed() => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    pool.close();
    tracing::info!(
        peak_rss_mib = crate::output::peak_rss_mib().unwrap_or(0.0),
        budget_mib = mib,
        "worker stopped"
    );
    Ok(())
}

enum SessionError {
    /// Refused by the master: fatal.
    Refused(String),
    /// The TLS handshake failed (untrusted certificate, TLS against plain
    /// text): fatal, the same settings would fail again.
    Tls(String),
    /// Not reachable (yet): retry.
    Connect(String),
}

/// Whether a failed call means the master refused this worker for good.
fn refused(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::FailedPrecondition | tonic::Code::Unauthenticated
    )
}

async fn session(
    cfg: &WorkerConfig,
    endpoint: &Endpoint,
    pool: &Arc<Pool>,
    stop_rx: &mut watch::Receiver<bool>,
) -> Result<SessionEnd, SessionError> {
    let channel = endpoint.connect().await.map_err(|e| {
        if crate::security::tls_failure(&e).is_some() {
            SessionError::Tls(crate::security::explain(&e))
        } else {
            SessionError::Connect(crate::security::error_chain(&e))
        }
    })?;
    let mut client = CoordinatorClient::with_interceptor(channel, cfg.security.interceptor())
        .max_decoding_message_size(FROM_MASTER_MAX)
        .max_encoding_message_size(TO_MASTER_MAX);
    let (out_tx, out_rx) = mpsc::unbounded_channel::<pb::WorkerMessage>();
    // Bytes of output chunks queued but not yet taken by the transport: the
    // engine threads wait while this is high, bounding the worker's memory.
    let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let outbound = {
        let queued = Arc::clone(&queued);
        UnboundedReceiverStream::new(out_rx).map(move |m: pb::WorkerMessage| {
            if let Some(WMsg::OutputChunk(c)) = &m.msg {
                queued.fetch_sub(c.data.len(), std::sync::atomic::Ordering::AcqRel);
            }
            m
        })
    };
    let hostname = crate::host::hostname();
    let _ = out_tx.send(msg(WMsg::Hello(pb::Hello {
        protocol_version: PROTOCOL_VERSION,
        name: if cfg.name.is_empty() {
            format!("{hostname}-{}", std::process::id())
        } else {
            cfg.name.clone()
        },
        hostname,
        threads: cfg.threads as u32,
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        shared_storage: true,
    })));
    let fetcher = client.clone();
    let response = match client.session(outbound).await {
        Ok(r) => r,
        Err(s) if refused(&s) => {
            return Err(SessionError::Refused(s.message().to_string()));
        }
        Err(s) => return Err(SessionError::Connect(s.to_string())),
    };
    let mut inbound = response.into_inner();
    let welcome = match inbound.message().await {
        Ok(Some(pb::MasterMessage {
            msg: Some(MMsg::Welcome(w)),
        })) => w,
        Ok(_) => return Ok(SessionEnd::Lost { established: false }),
        Err(s) if refused(&s) => {
            return Err(SessionError::Refused(s.message().to_string()));
        }
        Err(s) => return Err(SessionError::Connect(s.to_string())),
    };
    tracing::info!(worker_id = %welcome.worker_id, master = %cfg.master, "registered with the master");
    let session = pool.new_session(
        out_tx.clone(),
        fetcher,
        tokio::runtime::Handle::current(),
        queued,
    );
    let _ = out_tx.send(msg(WMsg::Ready(pb::Ready {
        credits: cfg.prefetch.max(1),
    })));
    let beat = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(50)));
    let hb = {
        let tx = out_tx.clone();
        let draining = session.draining_flag();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(beat);
            loop {
                t.tick().await;
                let d = draining.load(std::sync::atomic::Ordering::Relaxed);
                if tx
                    .send(msg(WMsg::Heartbeat(pb::Heartbeat { draining: d })))
                    .is_err()
                {
                    break;
                }
            }
        })
    };
    let credit = out_tx.downgrade();
    drop(out_tx);
    let mut unusable = Unusable::default();
    let end = loop {
        tokio::select! {
            m = inbound.message() => match m {
                Ok(Some(pb::MasterMessage { msg: Some(MMsg::Lease(l)) })) => {
                    match LeaseCtx::from_pb(l) {
                        Ok(ctx) => {
                            unusable.reset();
                            session.submit(ctx);
                        }
                        Err((lease_id, job_id, e)) => {
                            tracing::error!(error = %e, "lease with an unusable job spec: handing it back");
                            session.send(WMsg::LeaseDone(pb::LeaseDone { job_id, lease_id }));
                            unusable.credit_back_later(credit.clone());
                        }
                    }
                }
                Ok(Some(pb::MasterMessage { msg: Some(MMsg::Revoke(r)) })) => session.revoke(r.lease_id),
                Ok(Some(_)) => {}
                Ok(None) => break SessionEnd::Lost { established: true },
                Err(s) => {
                    tracing::warn!(code = ?s.code(), message = %s.message(), "the master ended the session");
                    break SessionEnd::Lost { established: true };
                }
            },
            _ = stop_rx.changed() => {
                tracing::info!("shutdown requested: draining (finishing the lease in progress, handing back the rest)");
                session.drain();
                session.send(WMsg::Heartbeat(pb::Heartbeat { draining: true }));
                // Keep reading so revokes still arrive, until the work in hand is done.
                let drained = session.wait_idle();
                tokio::pin!(drained);
                loop {
                    tokio::select! {
                        _ = &mut drained => break,
                        m = inbound.message() => match m {
                            Ok(Some(pb::MasterMessage { msg: Some(MMsg::Revoke(r)) })) => session.revoke(r.lease_id),
                            // Sent before the master saw the drain: handed
                            // back at once, so its images go to another
                            // worker without a crash counted against them.
                            Ok(Some(pb::MasterMessage { msg: Some(MMsg::Lease(l)) })) => {
                                tracing::info!(lease = l.lease_id, "lease arrived while draining: handing it back");
                                session.send(WMsg::LeaseDone(pb::LeaseDone { job_id: l.job_id, lease_id: l.lease_id }));
                            }
                            Ok(Some(_)) => {}
                            Ok(None) | Err(_) => break,
                        },
                    }
                }
                break SessionEnd::Shutdown;
            }
        }
    };
    hb.abort();
    session.end();
    Ok(end)
}

/// Leases this worker could not use (an unusable job spec, e.g. options
/// from another version, or an object store it cannot open): each is
/// handed back, and its credit is returned after a delay that doubles with
/// every unusable lease in a row (1 s up to 30 s). The master can then hand
/// it to another worker, and this worker keeps taking work, without the two
/// passing the same lease back and forth in a tight loop.
#[derive(Default)]
struct Unusable {
    in_a_row: u32,
}

impl Unusable {
    fn reset(&mut self) {
        self.in_a_row = 0;
    }

    fn credit_back_later(&mut self, tx: mpsc::WeakUnboundedSender<pb::WorkerMessage>) {
        let delay = Duration::from_secs(1 << self.in_a_row.min(5)).min(Duration::from_secs(30));
        self.in_a_row += 1;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // Gone with its session: the next session starts with credits.
            if let Some(tx) = tx.upgrade() {
                let _ = tx.send(msg(WMsg::Ready(pb::Ready { credits: 1 })));
            }
        });
    }
}
