//! The distributed subcommands (`master`, `worker`, `run`, `submit`,
//! `status`) wired from parsed arguments to the master and worker: binding
//! listeners, starting local worker processes, showing progress, and turning
//! the outcome into a summary.
use imgnorm_core::rerun::RerunFlags;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use imgnorm_core::ids::JobId;
use imgnorm_core::options::EngineOptions;
use imgnorm_proto::v1 as pb;
use tokio::net::TcpListener;

use crate::args::{SchedArgs, TransferArg};
use crate::autoscale::{self, AutoscaleSettings, AutoscaleView};
use crate::master::{self, Master, MasterConfig, MasterError};
use crate::output::Summary;
use crate::progress::Progress;
use crate::security::{ClientSecurity, Secret, SecurityError, ServerSecurity, WorkerAccess};
use crate::wire::{self, Transfer};

pub use crate::launch::{WorkerFlags, terminate};

/// Failures of the distributed commands.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Bad scheduling flags.
    #[error("invalid option: {0}")]
    Invalid(String),
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The master failed.
    #[error(transparent)]
    Master(#[from] MasterError),
    /// Starting a local worker process failed.
    #[error("cannot start worker process: {0}")]
    Spawn(std::io::Error),
    /// The dashboard failed.
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    /// The autoscaler failed.
    #[error(transparent)]
    Autoscale(#[from] crate::autoscale::ScaleError),
    /// TLS or secret settings are unusable or unsafe.
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// Talking to a remote master failed.
    #[error("master at {url}: {message}")]
    Remote {
        /// URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// SIGINT or SIGTERM stopped the master before its work was done; the
    /// process exits with [`crate::shutdown::Signal::exit_code`].
    #[error("stopped by {} before {what} finished; {hint}", signal.name())]
    Interrupted {
        /// The signal.
        signal: crate::shutdown::Signal,
        /// What was left unfinished ("job-3", "the resumed jobs").
        what: String,
        /// How to take the work up again.
        hint: String,
    },
}

impl AppError {
    /// The exit code of an interrupted run (`None` for other failures).
    pub fn signal_exit_code(&self) -> Option<u8> {
        match self {
            AppError::Interrupted { signal, .. } => Some(signal.exit_code()),
            _ => None,
        }
    }
}

/// How to take up the work of a master stopped by a signal.
fn resume_hint(config: &MasterConfig) -> String {
    match &config.state_dir {
        Some(dir) => format!(
            "the accepted results are kept: run `imgnorm resume --data-dir {}` (or the same command again) to finish",
            dir.display()
        ),
        None => "without --data-dir no result is kept: run the same command again (add --data-dir DIR to be able to resume)".into(),
    }
}

/// Stops what runs beside a master that got a signal: its local workers and
/// autoscaled instances are told to stop while the server closes every
/// session (which ends their drain), then the state database is flushed.
async fn stop_interrupted(
    m: &Master,
    server: Server,
    local: Option<LocalWorkers>,
    scaler: Autoscaling,
    what: String,
) -> AppError {
    let signal = crate::shutdown::received().unwrap_or(crate::shutdown::Signal::Terminate);
    tracing::warn!(
        signal = signal.name(),
        "stopping: no more work is handed out"
    );
    eprintln!(
        "imgnorm: {} received: stopping workers and saving state",
        signal.name()
    );
    let local = async {
        if let Some(l) = local {
            l.stop_within(Duration::from_secs(5)).await;
        }
    };
    let (_, _, view) = tokio::join!(local, server.stop(), scaler.stop());
    if let Some(v) = view {
        eprintln!("{}", v.human());
    }
    let flush = m.clone();
    let _ = tokio::task::spawn_blocking(move || flush.flush_state()).await;
    AppError::Interrupted {
        signal,
        what,
        hint: resume_hint(m.config()),
    }
}

impl SchedArgs {
    /// Master settings from flags.
    pub fn to_config(&self) -> Result<MasterConfig, AppError> {
        let secs = |v: f64, what: &str| {
            if v.is_finite() && v > 0.0 {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(AppError::Invalid(format!(
                    "{what} must be a positive number of seconds"
                )))
            }
        };
        let interval = secs(self.heartbeat_interval, "--heartbeat-interval")?;
        let timeout = secs(self.heartbeat_timeout, "--heartbeat-timeout")?;
        if timeout <= interval {
            return Err(AppError::Invalid(
                "--heartbeat-timeout must be longer than --heartbeat-interval".into(),
            ));
        }
        if self.batch_size == 0 {
            return Err(AppError::Invalid("--batch-size must be at least 1".into()));
        }
        Ok(MasterConfig {
            batch_size: self.batch_size,
            heartbeat_interval: interval,
            heartbeat_timeout: timeout,
            max_crashes: self.max_crashes.max(1),
            speculate: !self.no_speculation,
            state_dir: None,
        })
    }

    /// The transfer mode.
    pub fn transfer(&self) -> Transfer {
        self.transfer.into()
    }
}

impl From<TransferArg> for Transfer {
    fn from(t: TransferArg) -> Transfer {
        match t {
            TransferArg::Shared => Transfer::Shared,
            TransferArg::Stream => Transfer::Stream,
        }
    }
}

/// A flag's number of seconds, `>= 0`.
fn seconds(v: f64, what: &str) -> Result<Duration, AppError> {
    if v.is_finite() && v >= 0.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(AppError::Invalid(format!(
            "{what} must be a number of seconds >= 0"
        )))
    }
}

impl crate::args::AutoscaleArgs {
    /// Autoscaler settings from flags (None without `--autoscale`).
    /// `listen` is the master's bound address, the default worker URL for
    /// the local backend; started workers get what `security` asks of them.
    pub fn to_settings(
        &self,
        listen: SocketAddr,
        security: &ServerSecurity,
    ) -> Result<Option<AutoscaleSettings>, AppError> {
        let Some(kind) = self.autoscale else {
            return Ok(None);
        };
        let policy = imgnorm_core::autoscale::AutoscaleConfig {
            min_workers: self.min_workers,
            max_workers: self.max_workers,
            target_drain: seconds(self.target_drain, "--target-drain")?,
            scale_up_cooldown: seconds(self.scale_up_cooldown, "--scale-up-cooldown")?,
            scale_down_window: seconds(self.scale_down_window, "--scale-down-window")?,
            ..Default::default()
        };
        policy
            .validate()
            .map_err(|e| AppError::Invalid(e.to_string()))?;
        let drain_grace = seconds(self.drain_grace, "--drain-grace")?;
        let backend = self.backend(kind, listen, security, drain_grace)?;
        Ok(Some(AutoscaleSettings {
            policy,
            interval: Duration::from_secs(1),
            drain_grace,
            backend,
        }))
    }

    /// Where the autoscaler's workers come from, and how they reach this
    /// master (`listen`) with what `security` asks of them.
    fn backend(
        &self,
        kind: crate::args::AutoscaleBackendArg,
        listen: SocketAddr,
        security: &ServerSecurity,
        drain_grace: Duration,
    ) -> Result<autoscale::BackendSpec, AppError> {
        use crate::args::AutoscaleBackendArg as B;
        let loopback = {
            let ip = if listen.ip().is_unspecified() {
                std::net::IpAddr::from([127, 0, 0, 1])
            } else {
                listen.ip()
            };
            format!(
                "{}://{}",
                security.scheme(),
                SocketAddr::new(ip, listen.port())
            )
        };
        let mut access = security.worker_access();
        if let Some(ca) = &self.worker_tls_ca {
            access.tls_ca = Some(ca.clone());
        }
        let flags = WorkerFlags {
            threads: self.worker_threads.max(1),
            memory_budget_mib: self.worker_memory_budget,
        };
        let exe = || std::env::current_exe().map_err(AppError::Spawn);
        Ok(match kind {
            B::Local => autoscale::BackendSpec::Local(autoscale::local::LocalConfig {
                exe: exe()?,
                master_url: self.worker_master_url.clone().unwrap_or(loopback),
                flags,
                access,
            }),
            B::External => autoscale::BackendSpec::External,
            B::Docker => {
                let Some(url) = self.worker_master_url.clone() else {
                    return Err(AppError::Invalid(
                        "--autoscale docker needs --worker-master-url (how containers reach this master, e.g. https://master:50051)".into(),
                    ));
                };
                autoscale::BackendSpec::Docker(autoscale::docker::DockerConfig {
                    socket: autoscale::docker::DockerConfig::default_socket(),
                    image: self.docker_image.clone(),
                    network: self.docker_network.clone(),
                    volumes: self.docker_volumes.clone(),
                    user: self.docker_user.clone(),
                    master_url: url,
                    owner: self.docker_owner.clone(),
                    flags,
                    access,
                })
            }
            B::Slurm => autoscale::BackendSpec::Slurm(autoscale::slurm::SlurmConfig {
                exe: exe()?,
                master_url: self
                    .worker_master_url
                    .clone()
                    .unwrap_or_else(|| cluster_url(listen, security, loopback)),
                flags,
                copy_tls_ca: self.worker_tls_ca.is_none(),
                access,
                partition: self.slurm_partition.clone(),
                account: self.slurm_account.clone(),
                time: self.slurm_time.clone(),
                extra: autoscale::slurm::split_extra(self.slurm_extra.as_deref().unwrap_or(""))
                    .map_err(AppError::Invalid)?,
                dir: crate::master::absolute(&self.slurm_dir),
                drain_grace,
            }),
        })
    }
}

/// The URL compute nodes reach this master at: this host's name when it
/// listens on every address, else the address it listens on (`loopback`
/// for 127.0.0.1, which only a single-node cluster can reach).
fn cluster_url(listen: SocketAddr, security: &ServerSecurity, loopback: String) -> String {
    if !listen.ip().is_unspecified() {
        return loopback;
    }
    match std::fs::read_to_string("/proc/sys/kernel/hostname") {
        Ok(h) if !h.trim().is_empty() => {
            format!("{}://{}:{}", security.scheme(), h.trim(), listen.port())
        }
        _ => loopback,
    }
}

/// Binds the gRPC listener.
pub async fn bind(addr: &str) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// Shows a job's progress until it ends.
async fn show_progress(m: Master, id: JobId, quiet: bool) {
    let total = m
        .status(Some(&id.0))
        .jobs
        .first()
        .map(|j| j.images)
        .unwrap_or(0);
    let mut p = Progress::new(total, quiet);
    let mut t = tokio::time::interval(Duration::from_millis(250));
    loop {
        t.tick().await;
        let s = m.status(Some(&id.0));
        let Some(j) = s.jobs.first() else { break };
        let alive = s.workers.iter().filter(|w| w.state != "dead").count();
        p.set(j.done, j.failed, Some(alive));
        if !matches!(j.state.as_str(), "queued" | "running") {
            break;
        }
    }
    p.finish();
}

/// The one job a master started for it runs ([`master_one_job`],
/// [`run_local`]).
#[derive(Debug)]
pub struct OneJob<'a> {
    /// Input folder or `s3://` prefix.
    pub input: &'a Path,
    /// Output folder or `s3://` prefix.
    pub output: &'a Path,
    /// How images and arrays travel.
    pub transfer: Transfer,
    /// Validated engine options.
    pub options: EngineOptions,
    /// No progress bar.
    pub quiet: bool,
    /// What to do with an output holding an earlier run.
    pub rerun: RerunFlags,
}

/// `imgnorm master` for one job: serve until it is done, return its summary.
/// `local` workers (from `imgnorm run`) are stopped once the job is done.
/// Refuses to start when `security` is not enough for the listen address.
pub async fn master_one_job(
    listener: TcpListener,
    security: ServerSecurity,
    config: MasterConfig,
    job: OneJob<'_>,
    local: Option<LocalWorkers>,
    scaler: Option<AutoscaleSettings>,
) -> Result<Summary, AppError> {
    security.check_grpc(local_addr(&listener)?)?;
    crate::shutdown::install();
    let m = Master::new(config)?;
    let scaler = Autoscaling::start(&m, scaler).await?;
    let server = Server::start(&m, listener, security);
    // With a state database: unfinished jobs of an earlier master first;
    // the same job as this one (same input, output and options) is taken
    // up where it stopped instead of starting again.
    let OneJob {
        input,
        output,
        transfer,
        options,
        quiet,
        rerun,
    } = job;
    let (input, output) = (master::absolute(input), master::absolute(output));
    let options_json = wire::options_to_json(&options);
    let start = async {
        let resumed = m.resume().await?;
        announce(&resumed);
        let same = resumed.iter().find(|r| {
            r.input == input
                && r.output == output
                && r.transfer == transfer
                && r.options_json == options_json
        });
        Ok::<_, MasterError>(match same {
            Some(r) => r.id.clone(),
            None => {
                m.submit_with(input, output, transfer, options, rerun)
                    .await?
                    .0
            }
        })
    };
    let id = tokio::select! {
        id = start => id,
        _ = crate::shutdown::signal() => {
            return Err(stop_interrupted(&m, server, local, scaler, "the job".into()).await);
        }
    };
    let id = match id {
        Ok(id) => id,
        Err(e) => {
            if let Some(local) = local {
                local.stop().await;
            }
            scaler.stop().await;
            server.stop().await;
            return Err(e.into());
        }
    };
    let progress = tokio::spawn(show_progress(m.clone(), id.clone(), quiet));
    let outcome = tokio::select! {
        r = m.wait(&id) => r,
        _ = crate::shutdown::signal() => {
            progress.abort();
            return Err(stop_interrupted(&m, server, local, scaler, id.0).await);
        }
    };
    let _ = progress.await;
    if let Some(local) = local {
        local.stop().await;
    }
    let view = scaler.stop().await;
    server.stop().await;
    let mut summary = outcome?.summary;
    if let Some(v) = view {
        summary.worker_seconds = Some(crate::output::round3(v.worker_seconds));
        eprintln!("{}", v.human());
    }
    Ok(summary)
}

/// A master's gRPC server running until [`Server::stop`].
struct Server {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), MasterError>>,
}

impl Server {
    fn start(m: &Master, listener: TcpListener, security: ServerSecurity) -> Server {
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let m = m.clone();
        let task = tokio::spawn(async move {
            m.serve_secured(listener, &security, async {
                let _ = stop_rx.await;
            })
            .await
        });
        Server { stop, task }
    }

    /// Graceful shutdown waits for open sessions; remote workers keep theirs
    /// open (they stay for the next master), so give them
    /// [`SHUTDOWN_GRACE`], then go.
    async fn stop(mut self) {
        let _ = self.stop.send(());
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

/// Says on stderr which jobs were taken up from the state database.
fn announce(resumed: &[master::Resumed]) {
    for r in resumed {
        eprintln!(
            "imgnorm: resuming {} ({} images; {} stored results verified, {} to redo): {} -> {}",
            r.id,
            r.images,
            r.checked.kept,
            r.checked.dropped,
            r.input.display(),
            r.output.display()
        );
    }
}

/// `imgnorm resume`: serve until every unfinished job of the state
/// database is done; returns their summaries (an empty list when there was
/// nothing to resume). `local` workers are stopped at the end.
pub async fn master_resume(
    listener: TcpListener,
    security: ServerSecurity,
    config: MasterConfig,
    quiet: bool,
    local: Option<LocalWorkers>,
) -> Result<Vec<(String, Result<Summary, MasterError>)>, AppError> {
    security.check_grpc(local_addr(&listener)?)?;
    crate::shutdown::install();
    let m = Master::new(config)?;
    let server = Server::start(&m, listener, security);
    let none = || Autoscaling {
        stop: None,
        task: None,
    };
    let resumed = tokio::select! {
        r = m.resume() => r,
        _ = crate::shutdown::signal() => {
            return Err(stop_interrupted(&m, server, local, none(), "the resumed jobs".into()).await);
        }
    };
    let resumed = match resumed {
        Ok(r) => r,
        Err(e) => {
            if let Some(local) = local {
                local.stop().await;
            }
            server.stop().await;
            return Err(e.into());
        }
    };
    announce(&resumed);
    let mut outcomes = Vec::new();
    for r in &resumed {
        let progress = tokio::spawn(show_progress(m.clone(), r.id.clone(), quiet));
        let outcome = tokio::select! {
            o = m.wait(&r.id) => o.map(|o| o.summary),
            _ = crate::shutdown::signal() => {
                progress.abort();
                let what = r.id.0.clone();
                return Err(stop_interrupted(&m, server, local, none(), what).await);
            }
        };
        let _ = progress.await;
        outcomes.push((r.output.display().to_string(), outcome));
    }
    if let Some(local) = local {
        local.stop().await;
    }
    server.stop().await;
    Ok(outcomes)
}

/// The autoscaler running beside a master, if any.
struct Autoscaling {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<AutoscaleView>>,
}

impl Autoscaling {
    async fn start(
        m: &Master,
        settings: Option<AutoscaleSettings>,
    ) -> Result<Autoscaling, AppError> {
        let Some(settings) = settings else {
            return Ok(Autoscaling {
                stop: None,
                task: None,
            });
        };
        let controller = autoscale::prepare(m.clone(), settings).await?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(controller.run(async {
            let _ = rx.await;
        }));
        Ok(Autoscaling {
            stop: Some(tx),
            task: Some(task),
        })
    }

    /// Stops the autoscaler (draining its workers) and returns its last view.
    async fn stop(mut self) -> Option<AutoscaleView> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take()?.await {
            Ok(v) => Some(v),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => None,
        }
    }
}

/// `imgnorm master --serve`: accept jobs until Ctrl-C/SIGTERM.
///
/// Graceful shutdown would wait for every open session, and workers hold
/// theirs open forever (they wait for the next master), so `docker stop`
/// ended in SIGKILL after its timeout. As in [`master_one_job`], the server
/// gets [`SHUTDOWN_GRACE`] after the signal, then it is dropped.
///
/// With `http`, the dashboard ([`crate::http`]) is served on its listener
/// too (over TLS when `security` has a certificate), and stops on the same
/// signal. Refuses to start when `security` is not enough for an address.
pub async fn master_serve(
    listener: TcpListener,
    security: ServerSecurity,
    config: MasterConfig,
    scaler: Option<AutoscaleSettings>,
    http: Option<(TcpListener, crate::http::HttpConfig)>,
) -> Result<(), AppError> {
    security.check_grpc(local_addr(&listener)?)?;
    if let Some((l, _)) = &http {
        security.check_dashboard(local_addr(l)?)?;
    }
    let dashboard_tls = match &security.tls {
        Some(t) if http.is_some() => Some(t.rustls_config()?),
        _ => None,
    };
    let m = Master::new(config)?;
    let scaler = Autoscaling::start(&m, scaler).await?;
    announce(&m.resume().await?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let mut web = match http {
        Some((l, cfg)) => Some(start_dashboard(
            &m,
            l,
            cfg,
            dashboard_tls,
            stopped(stop_rx.clone()),
        )?),
        None => None,
    };
    let web_failed = async {
        match web.as_mut() {
            Some(w) => w.await,
            None => std::future::pending().await,
        }
    };
    let stop = stopped(stop_rx);
    let mut server = tokio::spawn(async move { m.serve_secured(listener, &security, stop).await });
    let ended = tokio::select! {
        r = &mut server => Some(r),
        _ = crate::shutdown::signal() => None,
        r = web_failed => {
            let _ = stop_tx.send(true);
            server.abort();
            if let Some(v) = scaler.stop().await {
                eprintln!("{}", v.human());
            }
            return match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.into()),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => Ok(()),
            };
        }
    };
    if let Some(v) = scaler.stop().await {
        eprintln!("{}", v.human());
    }
    let ended = match ended {
        Some(r) => Some(r),
        None => {
            let _ = stop_tx.send(true);
            tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.ok()
        }
    };
    let _ = stop_tx.send(true);
    if let Some(w) = web.as_mut()
        && tokio::time::timeout(SHUTDOWN_GRACE, &mut *w).await.is_err()
    {
        w.abort();
    }
    match ended {
        Some(Ok(r)) => r.map_err(AppError::from),
        Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Some(Err(_)) => Ok(()),
        None => {
            server.abort();
            Ok(())
        }
    }
}

/// Starts the dashboard on `listener` (over TLS with `tls`) for master `m`,
/// until `stop` resolves.
fn start_dashboard(
    m: &Master,
    listener: TcpListener,
    cfg: crate::http::HttpConfig,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<Result<(), crate::http::HttpError>>, AppError> {
    let state = crate::http::AppState::new(m.clone(), cfg)?;
    let router = crate::http::router(state.clone());
    Ok(match tls {
        Some(tls) => {
            let l = crate::security::TlsListener::new(listener, tls)
                .map_err(crate::http::HttpError::Serve)?;
            tokio::spawn(crate::http::serve(l, state, router, stop))
        }
        None => tokio::spawn(crate::http::serve(listener, state, router, stop)),
    })
}

/// Dashboard settings from flags: the token from `--token`, else
/// `$IMGNORM_TOKEN`, else a generated one printed on stderr (the dashboard
/// is never open without a token).
pub fn dashboard_config(
    a: &crate::args::DashboardArgs,
) -> Result<crate::http::HttpConfig, AppError> {
    let token = match a.token.clone().or_else(|| {
        std::env::var(crate::http::TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty())
    }) {
        Some(t) => {
            let ok = t.len() >= 16
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-'));
            if !ok {
                return Err(AppError::Invalid(
                    "the dashboard token must have at least 16 characters among A-Z a-z 0-9 . _ ~ -".into(),
                ));
            }
            t
        }
        None => {
            let t = crate::http::generate_token()?;
            eprintln!(
                "imgnorm dashboard token (generated; set --token or IMGNORM_TOKEN to choose one): {t}"
            );
            t
        }
    };
    let mib = |v: u64| v.saturating_mul(1 << 20);
    Ok(crate::http::HttpConfig {
        data_dir: a
            .data_dir
            .clone()
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
        token,
        limits: crate::http::UploadLimits {
            max_total: mib(a.upload_max_mib),
            max_files: a.upload_max_files,
            max_file: mib(a.upload_max_file_mib),
        },
    })
}

/// The dashboard's data directory when `--data-dir` is not given.
pub const DEFAULT_DATA_DIR: &str = "imgnorm-data";

/// The bound address of a listener.
fn local_addr(l: &TcpListener) -> Result<SocketAddr, AppError> {
    l.local_addr().map_err(|source| AppError::Bind {
        addr: "(bound listener)".into(),
        source,
    })
}

/// How long a stopping master waits for open sessions before dropping them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Local worker processes started by `imgnorm run`.
pub struct LocalWorkers {
    children: Vec<tokio::process::Child>,
}

impl LocalWorkers {
    /// Starts `n` workers of this executable connected to `url`, with
    /// `flags`, and with what `access` asks (the secret goes in their
    /// environment).
    pub fn spawn(
        n: usize,
        flags: WorkerFlags,
        url: &str,
        access: &WorkerAccess,
    ) -> Result<LocalWorkers, AppError> {
        let exe = std::env::current_exe().map_err(AppError::Spawn)?;
        let mut children = Vec::with_capacity(n);
        for i in 0..n {
            let child = tokio::process::Command::new(&exe)
                .arg("worker")
                .arg("--master")
                .arg(url)
                .args(flags.args())
                .arg("--name")
                .arg(format!("local-{}", i + 1))
                .arg("--connect-timeout")
                .arg("30")
                .args(access.args())
                .envs(access.env())
                .env(
                    "IMGNORM_LOG",
                    std::env::var("IMGNORM_WORKER_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(AppError::Spawn)?;
            children.push(child);
        }
        Ok(LocalWorkers { children })
    }

    /// Process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(|c| c.id()).collect()
    }

    /// Asks every worker to drain (SIGTERM), then waits; kills stragglers.
    pub async fn stop(self) {
        self.stop_within(Duration::from_secs(10)).await;
    }

    /// Asks every worker to drain (SIGTERM), waits at most `grace` in all,
    /// then kills those still running; returns once every one has exited.
    pub async fn stop_within(mut self, grace: Duration) {
        for c in &self.children {
            if let Some(pid) = c.id() {
                terminate(pid);
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        for c in &mut self.children {
            if tokio::time::timeout_at(deadline, c.wait()).await.is_err() {
                let _ = c.kill().await;
            }
        }
    }
}

/// What `imgnorm run` starts: the job, and the workers for it.
#[derive(Debug)]
pub struct LocalRun<'a> {
    /// The job.
    pub job: OneJob<'a>,
    /// Worker processes (unless `scale` autoscales).
    pub workers: usize,
    /// Their flags.
    pub flags: WorkerFlags,
    /// Master settings.
    pub config: MasterConfig,
    /// `--autoscale` and its flags, when given.
    pub scale: Option<&'a crate::args::AutoscaleArgs>,
}

/// `imgnorm run`: in-process master on loopback plus `workers` processes.
/// The master requires a secret generated for this run, which only its own
/// workers get (in their environment): other local users cannot join.
pub async fn run_local(run: LocalRun<'_>) -> Result<Summary, AppError> {
    let LocalRun {
        job,
        workers,
        flags,
        config,
        scale,
    } = run;
    let listener = bind("127.0.0.1:0").await?;
    let addr = listener.local_addr().map_err(|source| AppError::Bind {
        addr: "127.0.0.1:0".into(),
        source,
    })?;
    let security = ServerSecurity {
        secret: Some(Secret::generate()?),
        ..ServerSecurity::default()
    };
    let scaler = match scale {
        Some(a) => a.to_settings(addr, &security)?,
        None => None,
    };
    let pool = if scaler.is_some() {
        None
    } else {
        let url = format!("http://{addr}");
        Some(LocalWorkers::spawn(
            workers,
            flags,
            &url,
            &security.worker_access(),
        )?)
    };
    master_one_job(listener, security, config, job, pool, scaler).await
}

async fn client(
    url: &str,
    security: &ClientSecurity,
) -> Result<crate::security::Coordinator, AppError> {
    use crate::security::ConnectError;
    match security.coordinator(url, Duration::from_secs(5)).await {
        Ok(c) => Ok(c),
        Err(ConnectError::Security(e)) => Err(e.into()),
        Err(ConnectError::Connect(message)) => Err(AppError::Remote {
            url: url.to_string(),
            message,
        }),
    }
}

/// `imgnorm submit`.
pub async fn submit(
    url: &str,
    input: &Path,
    output: &Path,
    transfer: Transfer,
    options: &EngineOptions,
    rerun: RerunFlags,
    security: &ClientSecurity,
) -> Result<pb::SubmitResponse, AppError> {
    let mut c = client(url, security).await?;
    let r = c
        .submit(pb::SubmitRequest {
            input: master::absolute(input).display().to_string(),
            output: master::absolute(output).display().to_string(),
            batch_size: 0,
            transfer: transfer.as_str().to_string(),
            engine_options_json: wire::options_to_json(options),
            overwrite: rerun.overwrite,
            retry_failed: rerun.retry_failed,
            prune: rerun.prune,
        })
        .await
        .map_err(|s| AppError::Remote {
            url: url.to_string(),
            message: s.message().to_string(),
        })?;
    Ok(r.into_inner())
}

/// `imgnorm status`.
pub async fn status(
    url: &str,
    job: Option<&str>,
    security: &ClientSecurity,
) -> Result<pb::StatusResponse, AppError> {
    let mut c = client(url, security).await?;
    let r = c
        .status(pb::StatusRequest {
            job_id: job.unwrap_or_default().to_string(),
        })
        .await
        .map_err(|s| AppError::Remote {
            url: url.to_string(),
            message: s.message().to_string(),
        })?;
    let r = r.into_inner();
    // A job id the master does not know is an error, not an empty table
    // (and `submit --wait` does not poll it forever).
    if let Some(id) = job.filter(|id| !id.is_empty())
        && !r.jobs.iter().any(|j| j.job_id == id)
    {
        return Err(AppError::Remote {
            url: url.to_string(),
            message: format!("no job {id} (`imgnorm status` lists the jobs)"),
        });
    }
    Ok(r)
}

/// Polls a remote job until it ends.
pub async fn wait_remote(
    url: &str,
    job: &str,
    security: &ClientSecurity,
) -> Result<pb::JobStatus, AppError> {
    loop {
        let s = status(url, Some(job), security).await?;
        if let Some(j) = s.jobs.into_iter().next()
            && !matches!(j.state.as_str(), "queued" | "running")
        {
            return Ok(j);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `imgnorm status --json`: one JSON object with the jobs, the workers and
/// the autoscaler (null without one).
pub fn status_json(s: &pb::StatusResponse) -> serde_json::Value {
    let jobs: Vec<_> = s.jobs.iter().map(|j| serde_json::json!({
        "job_id": j.job_id, "state": j.state, "phase": j.phase, "images": j.images, "done": j.done,
        "ok": j.ok, "failed": j.failed, "skipped": j.skipped, "elapsed_s": j.elapsed_s,
        "input": j.input, "output": j.output, "error": j.error,
    })).collect();
    let workers: Vec<_> = s.workers.iter().map(|w| serde_json::json!({
        "worker_id": w.worker_id, "name": w.name, "hostname": w.hostname, "state": w.state,
        "images_done": w.images_done, "leases": w.leases, "last_seen_s_ago": w.last_seen_s_ago,
    })).collect();
    let autoscale = s.autoscale.as_ref().map(|a| {
        serde_json::json!({
            "backend": a.backend, "min_workers": a.min_workers, "max_workers": a.max_workers,
            "desired": a.desired, "starting": a.starting, "running": a.running,
            "draining": a.draining, "worker_seconds": a.worker_seconds,
            "started_total": a.started_total, "stopped_total": a.stopped_total,
            "died_total": a.died_total, "last_decision": a.last_decision,
            "rate_per_worker": a.rate_per_worker,
        })
    });
    serde_json::json!({"jobs": jobs, "workers": workers, "autoscale": autoscale})
}

/// Renders a status response as a table.
pub fn status_table(s: &pb::StatusResponse) -> String {
    let mut out = String::from(
        "JOB        STATE      DONE/TOTAL        OK  FAILED  SKIPPED  ELAPSED  OUTPUT\n",
    );
    for j in &s.jobs {
        // A two-phase job's statistics phase shows as e.g. `running:stats`.
        let state = match j.phase.as_str() {
            "stats" => format!("{}:stats", j.state),
            _ => j.state.clone(),
        };
        out.push_str(&format!(
            "{:<10} {:<10} {:>8}/{:<8} {:>6} {:>7} {:>8} {:>7.1}s  {}\n",
            j.job_id, state, j.done, j.images, j.ok, j.failed, j.skipped, j.elapsed_s, j.output
        ));
    }
    out.push_str(
        "\nWORKER  NAME                 HOST             STATE     IMAGES  LEASES  LAST SEEN\n",
    );
    for w in &s.workers {
        out.push_str(&format!(
            "{:<7} {:<20} {:<16} {:<9} {:>6} {:>7}  {:.1}s ago\n",
            w.worker_id, w.name, w.hostname, w.state, w.images_done, w.leases, w.last_seen_s_ago
        ));
    }
    let waiting = s
        .jobs
        .iter()
        .any(|j| matches!(j.state.as_str(), "queued" | "running"));
    if waiting && !s.workers.iter().any(|w| w.state != "dead") {
        out.push_str(
            "\nwaiting: no worker connected; start one with `imgnorm worker --master URL`\n",
        );
    }
    if let Some(a) = &s.autoscale {
        out.push_str(&format!(
            "\nAUTOSCALE ({}, {}..{}): desired {}, running {}, starting {}, draining {}; started {}, drained {}, died {}; {:.0} worker-seconds\n",
            a.backend, a.min_workers, a.max_workers, a.desired, a.running, a.starting, a.draining,
            a.started_total, a.stopped_total, a.died_total, a.worker_seconds
        ));
        if !a.last_decision.is_empty() {
            out.push_str(&format!("last decision: {}\n", a.last_decision));
        }
    }
    out
}
