//! The master: serves the `Coordinator` gRPC service on a listener it is given,
//! runs the reaper that expires silent workers, accepts jobs (discovering their
//! files), and writes each finished job's dataset. `Master::serve` takes an
//! already bound listener and a shutdown future, so tests bind port 0.
#![warn(missing_docs)]
pub mod autoscale_view;
pub mod convert;
pub use imgnorm_core::jobs::history;
pub mod resume;
pub mod service;
pub mod state;
pub mod store;
pub mod view;

// Lower layers' modules under the `crate::` paths these files used before
// the split into crates (issue 17), so moved files kept their imports and
// concurrent branches still merge by rename. Not re-exported.
use imgnorm_engine::{claim, discovery, formats, fsio, output, rerun};
use imgnorm_net::{health, limits, security, wire};

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use imgnorm_core::ids::JobId;
use imgnorm_core::jobs::{JobKey, NewJob, ResultRow};
use imgnorm_core::options::EngineOptions;
use imgnorm_core::record::Record;
use imgnorm_core::rerun::RerunFlags;
use imgnorm_core::scheduler::{Scheduler, SchedulerConfig};
use imgnorm_core::stats::OrderedFold;
use imgnorm_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::discovery::{DiscoveryError, discover};
use crate::output::{StageSeconds, Summary};
use crate::wire::Transfer;
use autoscale_view::AutoscaleView;
use imgnorm_engine::finish;
use imgnorm_engine::storage::{self, Location, StorageError};
use state::{Effects, JobState, State};

pub use crate::limits::{CHUNK, INLINE_INPUT_MAX};

/// Master settings.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// Largest batch handed out.
    pub batch_size: u64,
    /// How often workers send heartbeats.
    pub heartbeat_interval: Duration,
    /// A worker silent for this long is declared dead.
    pub heartbeat_timeout: Duration,
    /// Deaths of a worker holding an image alone before it is quarantined.
    pub max_crashes: u32,
    /// Issue speculative copies of straggling batches to idle workers.
    pub speculate: bool,
    /// Keep jobs and accepted results in a database in this folder, and
    /// resume the unfinished jobs found there (`--data-dir`).
    pub state_dir: Option<PathBuf>,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            batch_size: 32,
            heartbeat_interval: Duration::from_millis(1000),
            heartbeat_timeout: Duration::from_secs(5),
            max_crashes: 3,
            speculate: true,
            state_dir: None,
        }
    }
}

/// Master-level failures.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// Invalid scheduler settings.
    #[error("invalid master settings: {0}")]
    Config(#[from] imgnorm_core::scheduler::SchedError),
    /// The input could not be listed.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The output folder could not be created.
    #[error("cannot create output folder {path}: {source}")]
    CreateOutput {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The object store could not be listed or written (`s3://` jobs).
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// The job id is unknown.
    #[error("unknown job {0}")]
    UnknownJob(String),
    /// Preparing the output layout (`--format`) failed.
    #[error(transparent)]
    Format(#[from] crate::formats::FormatError),
    /// The state database could not be opened or read.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// A stored job cannot be resumed.
    #[error("cannot resume job-{key} from the state database: {reason}")]
    Resume {
        /// Job number.
        key: u64,
        /// Why.
        reason: String,
    },
    /// Another unfinished job of this master writes to the output (or to a
    /// folder inside it, or around it).
    #[error(
        "output {output} is in use by {holder}, which has not finished: wait for it, cancel it, or choose another output"
    )]
    OutputInUse {
        /// The output asked for.
        output: PathBuf,
        /// The job holding it.
        holder: String,
    },
    /// Another process holds the output (see [`crate::claim`]).
    #[error(transparent)]
    Claim(#[from] crate::claim::ClaimError),
    /// The output holds something a job cannot use as it is.
    #[error(transparent)]
    Rerun(#[from] crate::rerun::RerunError),
    /// The job ended without a dataset.
    #[error("job {id} {state}: {reason}")]
    JobEnded {
        /// Job id.
        id: String,
        /// Final state.
        state: &'static str,
        /// Why.
        reason: String,
    },
}

/// Shared master handle (cheap to clone).
#[derive(Clone)]
pub struct Master {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    config: MasterConfig,
    /// Bumped whenever a job changes state, so waiters can re-check.
    changed: watch::Sender<u64>,
    started: Instant,
    /// The autoscaler's latest view, when one runs beside this master.
    autoscale: Mutex<Option<AutoscaleView>>,
    /// Unfinished jobs read from the state database, until [`Master::resume`].
    saved: Mutex<Vec<store::SavedJob>>,
}

/// A job taken up again from the state database.
#[derive(Debug, Clone)]
pub struct Resumed {
    /// Its id (the same as before the restart).
    pub id: JobId,
    /// Input root.
    pub input: PathBuf,
    /// Output root.
    pub output: PathBuf,
    /// Data path.
    pub transfer: Transfer,
    /// Options, as JSON (`wire::options_to_json`).
    pub options_json: String,
    /// Images in the job (discovery rows included).
    pub images: u64,
    /// What the output check kept and dropped.
    pub checked: resume::Checked,
}

/// A job's final result as the master reports it.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    /// Job id.
    pub id: String,
    /// Summary of the run.
    pub summary: Summary,
}

impl Master {
    /// A master with no jobs.
    pub fn new(config: MasterConfig) -> Result<Master, MasterError> {
        let sched = Scheduler::new(SchedulerConfig {
            batch_size: config.batch_size,
            min_batch_size: 1,
            heartbeat_timeout: config.heartbeat_timeout,
            max_crashes: config.max_crashes,
            speculate: config.speculate,
        })?;
        let (changed, _) = watch::channel(0);
        let mut state = State::new(sched, config.heartbeat_interval);
        let mut saved = Vec::new();
        if let Some(dir) = &config.state_dir {
            let (db, jobs) = store::Store::open(dir)?;
            tracing::info!(db = %db.path().display(), jobs = jobs.len(), "state database open");
            state.reserve_keys(store::max_key(&jobs));
            state.set_store(db);
            // Finished jobs are listed as they ended; unfinished ones wait
            // for `resume`, which checks their outputs first.
            let now = Instant::now();
            let ago = |t: f64| {
                now.checked_sub(Duration::from_secs_f64((store::unix_now() - t).max(0.0)))
                    .unwrap_or(now)
            };
            for job in jobs {
                if job.unfinished() {
                    saved.push(job);
                    continue;
                }
                let (Ok(options), Ok(transfer)) = (
                    crate::wire::options_from_json(&job.options_json),
                    Transfer::parse(&job.transfer),
                ) else {
                    continue;
                };
                let (submitted, finished) = (
                    ago(job.submitted_unix),
                    ago(job.finished_unix.unwrap_or(job.submitted_unix)),
                );
                state.list_finished(job, options, transfer, submitted, finished);
            }
        }
        Ok(Master {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                config,
                changed,
                started: Instant::now(),
                autoscale: Mutex::new(None),
                saved: Mutex::new(saved),
            }),
        })
    }

    /// Takes up the unfinished jobs found in the state database (none
    /// without `state_dir`): checks their stored outputs against the
    /// recorded checksums, then queues what is left, in job order. Call it
    /// once the server is up; workers reconnect by themselves.
    pub async fn resume(&self) -> Result<Vec<Resumed>, MasterError> {
        let saved =
            std::mem::take(&mut *self.inner.saved.lock().unwrap_or_else(|p| p.into_inner()));
        let mut resumed = Vec::new();
        for mut job in saved {
            let key = job.key;
            let bad = |reason: String| MasterError::Resume { key, reason };
            let options = crate::wire::options_from_json(&job.options_json)
                .map_err(|e| bad(e.to_string()))?;
            let transfer = Transfer::parse(&job.transfer).map_err(|e| bad(e.to_string()))?;
            let opts = options.clone();
            let (job, checked) = tokio::task::spawn_blocking(move || {
                // A resumed job holds its output as a new one does, before
                // the check below may recreate its layout.
                let checked = resume::claim_output(&job.output).and_then(|claim| {
                    let c = resume::check_outputs(&mut job, &opts, transfer, &claim)?;
                    Ok((c, claim))
                });
                (job, checked)
            })
            .await
            .map_err(|e| bad(e.to_string()))?;
            let (checked, claim) = checked.map_err(bad)?;
            let info = Resumed {
                id: JobId(format!("job-{key}")),
                input: job.input.clone(),
                output: job.output.clone(),
                transfer,
                options_json: job.options_json.clone(),
                images: (job.files.len() + job.problems.len()) as u64,
                checked,
            };
            tracing::info!(
                job = %info.id,
                images = info.images,
                verified = checked.kept,
                redo = checked.dropped,
                "resuming: stored results checked"
            );
            // Elapsed time keeps counting from the first submission.
            let age = (store::unix_now() - job.submitted_unix).max(0.0);
            let now = Instant::now();
            let submitted = now.checked_sub(Duration::from_secs_f64(age)).unwrap_or(now);
            let fx = {
                let mut st = self.lock();
                let fx = st.restore_job(job, options, transfer, submitted, now).1;
                st.claims.insert(JobKey(key), claim);
                fx
            };
            self.inner.changed.send_modify(|v| *v += 1);
            self.apply(fx).await;
            resumed.push(info);
        }
        Ok(resumed)
    }

    /// Waits until every result sent to the state database is committed.
    pub fn flush_state(&self) {
        let store = self.lock().store().cloned();
        if let Some(s) = store {
            s.flush();
        }
    }

    /// Settings.
    pub fn config(&self) -> &MasterConfig {
        &self.inner.config
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug; the state is still usable.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seconds since the master started.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Serves plain gRPC on `listener`, with no secret, until `shutdown`
    /// resolves.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), MasterError> {
        let plain = crate::security::ServerSecurity::default();
        self.serve_secured(listener, &plain, shutdown).await
    }

    /// Serves gRPC on `listener` until `shutdown` resolves: over TLS when
    /// `security` has a certificate, and every `Coordinator` call must carry
    /// its secret when it has one (the health service stays open).
    pub async fn serve_secured(
        &self,
        listener: TcpListener,
        security: &crate::security::ServerSecurity,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), MasterError> {
        let mut server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)));
        if let Some(tls) = &security.tls {
            server = server.tls_config(tls.tonic_config())?;
        }
        let reaper = {
            let m = self.clone();
            tokio::spawn(async move { m.reap_loop().await })
        };
        let svc = tonic::service::interceptor::InterceptedService::new(
            service::CoordinatorService::new(self.clone()).into_server(),
            crate::security::RequireSecret::new(security.secret.clone()),
        );
        let (_health_reporter, health) = crate::health::serving().await;
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let result = server
            .add_service(svc)
            .add_service(health)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        reaper.abort();
        result.map_err(MasterError::from)
    }

    async fn reap_loop(&self) {
        let every = (self.inner.config.heartbeat_timeout / 4).max(Duration::from_millis(50));
        let mut t = tokio::time::interval(every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            t.tick().await;
            let fx = self.lock().tick(Instant::now());
            self.apply(fx).await;
        }
    }

    /// Carries out what a state change asked for: send leases (reading input
    /// bytes first in stream mode) and write finished jobs.
    pub(crate) async fn apply(&self, fx: Effects) {
        for (tx, mut lease, transfer, input) in fx.leases {
            if transfer == Transfer::Stream {
                lease = tokio::task::spawn_blocking(move || {
                    // Inline bytes per lease are bounded too, so a lease
                    // message stays under `limits::FROM_MASTER_MAX`.
                    let mut inline = 0u64;
                    for item in &mut lease.items {
                        let path = input.join(&item.path);
                        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                        if size > INLINE_INPUT_MAX as u64
                            || inline + size > crate::limits::LEASE_INLINE_MAX as u64
                        {
                            item.fetch = true;
                            item.size = size;
                        } else {
                            // Unreadable files travel empty; the worker fetches
                            // them and gets the read error as the reason.
                            // (A file that grew since its size was read is
                            // fetched instead.)
                            match std::fs::read(&path) {
                                Ok(d) if d.len() as u64 <= size => {
                                    inline += size;
                                    item.data = d;
                                }
                                _ => item.fetch = true,
                            }
                        }
                    }
                    lease
                })
                .await
                .unwrap_or_default();
            }
            let _ = tx.send(Ok(pb::MasterMessage {
                msg: Some(pb::master_message::Msg::Lease(lease)),
            }));
        }
        for f in fx.finalize {
            // Not awaited here: the caller may be the session of the worker
            // that delivered the last result, whose heartbeats would go
            // unread for as long as the dataset takes to write.
            tokio::spawn(self.finalize(f.key));
        }
    }

    /// Writes a completed job's dataset on a blocking thread, then marks
    /// it done (or failed) and starts what waited for it. (A named future
    /// type: `apply` spawns it and it awaits `apply`.)
    fn finalize(&self, key: JobKey) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let m = self.clone();
        Box::pin(async move {
            let writer = m.clone();
            let result = tokio::task::spawn_blocking(move || writer.write_dataset(key))
                .await
                .unwrap_or_else(|e| Err(format!("writer panicked: {e}")));
            if let Err(e) = &result {
                tracing::error!(error = %e, "writing the dataset failed");
            }
            let more = m.lock().finished(key, result, Instant::now());
            m.inner.changed.send_modify(|v| *v += 1);
            m.apply(more).await;
        })
    }

    /// Writes manifest, provenance and stats of a completed job
    /// ([`crate::finish`], as the centralized run does).
    fn write_dataset(&self, key: JobKey) -> Result<Summary, String> {
        /// What a completed job's dataset is written from, taken out of the state
        /// under its lock.
        struct Written {
            records: Vec<Record>,
            files: Arc<Vec<String>>,
            problems: Vec<Record>,
            provenance: Vec<String>,
            out: PathBuf,
            input: PathBuf,
            options: EngineOptions,
            transfer: Transfer,
            elapsed: Duration,
            dataset: imgnorm_core::stats::DatasetStats,
            workers: usize,
            params: imgnorm_core::dataset::DatasetParams,
            rerun: Option<crate::state::RerunState>,
        }
        // Every result is committed before the job counts as done, so the
        // job's time includes the state database keeping up.
        self.flush_state();
        let mut done = {
            let mut st = self.lock();
            let workers = st.workers_seen();
            let Some(j) = st.core.jobs.get_mut(&key) else {
                return Err("job vanished".into());
            };
            let records: Vec<Record> = j.records.iter_mut().filter_map(Option::take).collect();
            if records.len() != j.files.len() {
                return Err(format!(
                    "{} of {} images have no result",
                    j.files.len() - records.len(),
                    j.files.len()
                ));
            }
            let provenance: Vec<String> = j
                .files
                .iter()
                .zip(&j.provenance)
                .filter_map(|(path, p)| {
                    p.as_ref().map(|p| {
                        serde_json::json!({"path": path, "worker": p.worker, "worker_id": p.worker_id, "lease": p.lease, "attempt": p.attempt})
                            .to_string()
                    })
                })
                .collect();
            Written {
                records,
                files: Arc::clone(&j.files),
                problems: j.problems.clone(),
                provenance,
                out: j.output.clone(),
                input: j.input.clone(),
                options: j.options.clone(),
                transfer: j.transfer,
                elapsed: j.submitted.elapsed(),
                dataset: std::mem::replace(&mut j.stats, OrderedFold::new(j.options.range))
                    .finish(),
                workers,
                params: j.two.params.clone(),
                rerun: None,
            }
        };
        done.rerun = self.lock().reruns.remove(&key);
        let local = !storage::is_object_url(&done.input) && !storage::is_object_url(&done.out);
        // A job resumed by a later master lost its listing's stamps: they are
        // taken now.
        let stamps = match done.rerun.as_mut() {
            Some(r) => std::mem::take(&mut r.stamps),
            None if local => done
                .files
                .iter()
                .map(|f| rerun::stamp(&done.input.join(f)))
                .collect(),
            None => Vec::new(),
        };
        // Shards or stack are completed outside the lock: this is file I/O.
        let job = finish::Job {
            input: &done.input,
            out: &done.out,
            options: &done.options,
            layout: Some(&done.files),
            mode: if done.transfer == Transfer::Stream {
                "distributed-stream"
            } else {
                "distributed"
            },
            workers: done.workers,
            elapsed: finish::Elapsed::Fixed(done.elapsed),
            stage_seconds: StageSeconds::default(),
            dataset: &done.dataset,
            params: &done.params,
            provenance: Some(&done.provenance),
            inputs: local.then_some((&done.files[..], &stamps[..])),
            rerun: done.rerun.as_ref().and_then(|r| r.report.as_ref()),
        };
        finish::finish(&job, done.records, done.problems).map_err(|e| e.to_string())
    }

    /// What the autoscaler observes now (see [`State::autoscale_observation`]).
    pub fn autoscale_observation(&self) -> imgnorm_core::autoscale::Observation {
        self.lock().autoscale_observation()
    }

    /// Publishes the autoscaler's view (for `/metrics` and the dashboard).
    pub fn set_autoscale_view(&self, view: AutoscaleView) {
        *self
            .inner
            .autoscale
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(view);
    }

    /// The autoscaler's latest view, when one runs.
    pub fn autoscale_view(&self) -> Option<AutoscaleView> {
        self.inner
            .autoscale
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Discovers `input` and queues a job writing to `output` (an empty
    /// folder, or a rerun without flags: see [`Master::submit_with`]).
    pub async fn submit(
        &self,
        input: PathBuf,
        output: PathBuf,
        transfer: Transfer,
        options: EngineOptions,
    ) -> Result<(JobId, u64), MasterError> {
        self.submit_with(input, output, transfer, options, RerunFlags::default())
            .await
    }

    /// Discovers `input` and queues a job writing to `output`. An output
    /// holding an earlier run is taken as [`crate::rerun::setup`] decides
    /// with `flags`: here, where the job is set up, so workers are never
    /// leased a kept file.
    pub async fn submit_with(
        &self,
        input: PathBuf,
        output: PathBuf,
        transfer: Transfer,
        options: EngineOptions,
        flags: RerunFlags,
    ) -> Result<(JobId, u64), MasterError> {
        let started = Instant::now();
        let _reserved = self.reserve_output(&output)?;
        let (inp, out, opts) = (input.clone(), output.clone(), options.clone());
        let (found, claim) = if storage::is_object_url(&input) || storage::is_object_url(&output) {
            if transfer == Transfer::Stream {
                return Err(StorageError::StreamWithObjects.into());
            }
            if let Some(what) = storage::unsupported_with_objects(&options) {
                return Err(StorageError::Unsupported(what).into());
            }
            if flags != RerunFlags::default() {
                return Err(StorageError::Unsupported(
                    "rerunning into an existing output (--overwrite, --retry-failed, --prune)",
                )
                .into());
            }
            // Lists the input and test-writes the output before anything is
            // leased: bad credentials or endpoints fail here, clearly.
            let (i, o) = (Location::of(&input)?, Location::of(&output)?);
            let found = storage::spawn(async move { storage::prepare(&i, &o).await })
                .await
                .map_err(|e| StorageError::Task(e.to_string()))??;
            let setup = crate::rerun::Setup {
                kept: vec![None; found.files.len()],
                files: found.files,
                problems: found.problems,
                ..Default::default()
            };
            (setup, crate::claim::OutputClaim::acquire(&output)?)
        } else {
            tokio::task::spawn_blocking(move || {
                crate::fsio::create_output_dir(&out).map_err(|source| {
                    MasterError::CreateOutput {
                        path: out.clone(),
                        source,
                    }
                })?;
                // Before anything in the output is touched: another
                // process's unfinished job there is refused, untouched.
                let claim = crate::claim::OutputClaim::acquire(&out)?;
                let found = discover(&inp, Some(&out))?;
                let setup = crate::rerun::setup(&claim, &inp, &opts, flags, found)?;
                crate::formats::prepare(&claim, &opts, &setup.files)?;
                Ok::<_, MasterError>((setup, claim))
            })
            .await
            .map_err(|e| MasterError::JobEnded {
                id: String::new(),
                state: "failed",
                reason: e.to_string(),
            })??
        };
        let total = (found.files.len() + found.problems.len()) as u64;
        tracing::info!(input = %input.display(), files = found.files.len(), pending = found.pending(), "job submitted");
        if let Some(r) = &found.report {
            for w in r.warnings() {
                tracing::warn!("{w}");
            }
        }
        let crate::rerun::Setup {
            files,
            problems,
            kept,
            stamps,
            report,
        } = found;
        let (id, fx) = {
            let mut st = self.lock();
            let job = NewJob {
                input,
                output,
                transfer,
                options,
                files,
                problems,
            };
            let kept = kept
                .into_iter()
                .enumerate()
                .filter_map(|(i, k)| {
                    k.map(|k| ResultRow {
                        job: JobKey(0),
                        phase: imgnorm_core::jobs::Phase::Write,
                        index: i as u64,
                        record: k.record,
                        stats: k.stats,
                        raw: None,
                        worker: String::new(),
                        worker_id: 0,
                        lease: 0,
                        attempt: 0,
                    })
                })
                .collect();
            let (id, fx) = st.add_job_kept(job, kept, Instant::now());
            // Elapsed time counts discovery, as centralized's does.
            if let Some(j) = st.core.jobs.values_mut().find(|j| j.id == id) {
                j.submitted = started;
                let key = j.key;
                st.claims.insert(key, claim);
                st.reruns
                    .insert(key, crate::state::RerunState { stamps, report });
            }
            (id, fx)
        };
        self.inner.changed.send_modify(|v| *v += 1);
        self.apply(fx).await;
        Ok((id, total))
    }

    /// Keeps `output` for a job being submitted until the guard drops (the
    /// job is listed by then); refused when an unfinished job of this master
    /// uses it, or a folder inside or around it.
    fn reserve_output(&self, output: &Path) -> Result<Reserved, MasterError> {
        let mut st = self.lock();
        if let Some(holder) = st.output_holder(output) {
            return Err(MasterError::OutputInUse {
                output: output.to_path_buf(),
                holder,
            });
        }
        st.reserve_output(output.to_path_buf());
        Ok(Reserved {
            master: self.clone(),
            output: output.to_path_buf(),
        })
    }

    /// Cancels a job (not one already writing its dataset).
    pub fn cancel(&self, id: &JobId) -> bool {
        let ok = self.lock().cancel(id, Instant::now());
        self.inner.changed.send_modify(|v| *v += 1);
        ok
    }

    /// Waits until the job is done (or failed/cancelled).
    pub async fn wait(&self, id: &JobId) -> Result<JobOutcome, MasterError> {
        let mut rx = self.inner.changed.subscribe();
        loop {
            {
                let st = self.lock();
                let job = st
                    .core
                    .jobs
                    .values()
                    .find(|j| &j.id == id)
                    .ok_or_else(|| MasterError::UnknownJob(id.0.clone()))?;
                match job.state {
                    JobState::Done => {
                        if let Some(s) = st.summary(job.key) {
                            return Ok(JobOutcome {
                                id: id.0.clone(),
                                summary: s,
                            });
                        }
                    }
                    JobState::Failed | JobState::Cancelled => {
                        return Err(MasterError::JobEnded {
                            id: id.0.clone(),
                            state: job.state.as_str(),
                            reason: job.error.clone().unwrap_or_else(|| "cancelled".into()),
                        });
                    }
                    JobState::Queued | JobState::Running => {}
                }
            }
            if rx.changed().await.is_err() {
                return Err(MasterError::UnknownJob(id.0.clone()));
            }
        }
    }

    /// Status of jobs (all, or one) and workers.
    pub fn status(&self, job: Option<&str>) -> pb::StatusResponse {
        let st = self.lock();
        let now = Instant::now();
        let jobs = st
            .core
            .jobs
            .values()
            .filter(|j| job.is_none_or(|id| j.id.0 == id))
            .map(|j| {
                // Final rows only: monotonic across the phase switch of a
                // two-phase job (whose statistics phase writes nothing).
                let done = j.rows_final();
                let end = j.finished.unwrap_or(now);
                pb::JobStatus {
                    job_id: j.id.0.clone(),
                    state: j.state.as_str().to_string(),
                    images: j.images(),
                    done,
                    ok: j.counts.ok,
                    failed: j.counts.failed,
                    skipped: j.counts.skipped,
                    elapsed_s: end.saturating_duration_since(j.submitted).as_secs_f64(),
                    input: j.input.display().to_string(),
                    output: j.output.display().to_string(),
                    error: j.error.clone().unwrap_or_default(),
                    phase: j.two.phase.as_str().to_string(),
                }
            })
            .collect();
        let workers = st.worker_status(now);
        drop(st);
        pb::StatusResponse {
            jobs,
            workers,
            autoscale: self.autoscale_view().map(|v| v.to_status()),
        }
    }
}

/// An output kept for a job being submitted (see `Master::reserve_output`).
struct Reserved {
    master: Master,
    output: PathBuf,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.master.lock().unreserve_output(&self.output);
    }
}

/// Absolute form of a path (without resolving symlinks), so workers started
/// elsewhere on the same host see the same folder. `s3://` URLs are kept as
/// they are.
pub fn absolute(p: &Path) -> PathBuf {
    if storage::is_object_url(p) {
        return p.to_path_buf();
    }
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
