//! The master's mutable state around the pure [`Scheduler`]: connected workers
//! and their outgoing channels, jobs with their file lists and collected
//! records. Methods take `now` and return what must be sent; the lock is a
//! `std::sync::Mutex` held only for short, non-blocking sections (sends go to
//! unbounded channels whose size is bounded by the workers' credits).
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imgnorm_core::dataset::{DatasetParams, ParamsFold, RawStats};
use imgnorm_core::ids::{JobId, LeaseId, WorkerId};
use imgnorm_core::options::EngineOptions;
use imgnorm_core::record::{Counts, Record, Status};
use imgnorm_core::scheduler::{
    DeathReason, Event, ItemVerdict, JobProgress, Scheduler, WorkerState, WorkerView,
};
use imgnorm_core::stats::{ImageStats, OrderedFold};
use imgnorm_core::validate::{self, Claim, Expected, Refusal, ResultPhase};
use imgnorm_proto::v1 as pb;
use tokio::sync::mpsc::UnboundedSender;

use super::history::{History, LeaseInfo, WorkerEventKind};
use super::phase_job::{PhaseJob, job_key};
use super::store::{NewJob, ResultRow, SavedJob, Store, StoredPhase};
use crate::output::Summary;
use crate::wire::{self, Transfer};

/// Dead workers listed in the status and dashboard (older ones are
/// forgotten).
pub const MAX_DEAD_WORKERS: usize = 64;

/// What a session sends to its worker.
pub type Outbox = UnboundedSender<Result<pb::MasterMessage, tonic::Status>>;

/// A worker's self-description from its `Hello`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WorkerInfo {
    /// Name given with `--name` (or the host name).
    pub name: String,
    /// Host name.
    pub hostname: String,
    /// Engine threads.
    pub threads: u32,
    /// Process id on its host.
    pub pid: u32,
}

struct Conn {
    tx: Outbox,
    credits: u32,
}

/// Lifecycle of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for earlier jobs.
    Queued,
    /// Being processed.
    Running,
    /// Every image accounted for, dataset written.
    Done,
    /// Could not complete (e.g. the output could not be written).
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl JobState {
    /// Done, failed or cancelled: nothing more happens to the job.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Cancelled
        )
    }

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// Which worker and attempt produced an image (written to provenance.jsonl).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Provenance {
    /// Worker name.
    pub worker: String,
    /// Worker id on this master.
    pub worker_id: u64,
    /// Lease id.
    pub lease: u64,
    /// Attempt of the batch (1 = first hand-out).
    pub attempt: u32,
}

/// A job and everything collected for it.
pub struct JobRun {
    /// Number (the `N` of `job-N`).
    pub key: u64,
    /// Id.
    pub id: JobId,
    /// Input root.
    pub input: PathBuf,
    /// Output root.
    pub output: PathBuf,
    /// Data path.
    pub transfer: Transfer,
    /// Engine options.
    pub options: EngineOptions,
    options_json: String,
    /// Relative paths, indexed by item.
    pub files: Arc<Vec<String>>,
    /// Rows found at discovery (loops, unreadable entries).
    pub problems: Vec<Record>,
    /// One slot per item, filled by accepted results.
    pub records: Vec<Option<Record>>,
    /// Who produced each item.
    pub provenance: Vec<Option<Provenance>>,
    /// Counts of accepted rows so far (problems included).
    pub counts: Counts,
    /// When it was submitted.
    pub submitted: Instant,
    /// When it finished.
    pub finished: Option<Instant>,
    /// State.
    pub state: JobState,
    /// Why it failed.
    pub error: Option<String>,
    /// Final summary once done.
    pub summary: Option<Summary>,
    /// Output statistics folded in item index order (see
    /// [`OrderedFold`]): the same numbers whatever the arrival order.
    pub stats: OrderedFold,
    /// Stream mode: statistics of accepted `ok` results whose output the
    /// master has not committed yet (settled once it has, or dropped).
    streamed: HashMap<u64, ImageStats>,
    /// Whole-dataset normalization: the statistics phase and its outcome.
    pub two: TwoPhase,
    /// A finished job listed from the state database: its image count
    /// (its file list is not loaded).
    listed_images: Option<u64>,
    /// The output folder, held from before the job touched it until it
    /// ends (see [`crate::claim`]).
    pub claim: Option<crate::claim::OutputClaim>,
    /// Every item has its result but a streamed output is still being
    /// committed: the dataset is written once the last one is.
    complete_pending: bool,
}

/// Which phase of its work a job is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Decoding every image for the dataset's statistics; nothing written.
    Stats,
    /// Normalizing and writing (the only phase of a single-phase job).
    Write,
}

impl Phase {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Stats => "stats",
            Phase::Write => "write",
        }
    }
}

/// A job's phases (see [`imgnorm_core::dataset`]). A two-phase job first
/// runs a scheduler job `job-N.stats` over every item; images not `ok` there
/// are final; the others form the scheduler job `job-N` of the writing
/// phase, whose scheduler index `k` is item `items[k]`.
pub struct TwoPhase {
    /// The phase running now.
    pub phase: Phase,
    /// The statistics fold, until the statistics phase completes.
    fold: Option<ParamsFold>,
    /// The parameters of the writing phase.
    pub params: DatasetParams,
    /// The items the current phase's scheduler job covers, ascending
    /// (`None`: every item, identity mapping): the writing phase of a
    /// two-phase job covers the items found `ok` by its statistics phase,
    /// and a resumed phase only the items without a (verified) result.
    items: Option<Vec<u64>>,
}

impl TwoPhase {
    fn new(options: &EngineOptions) -> TwoPhase {
        let two = options.two_phase();
        TwoPhase {
            phase: if two { Phase::Stats } else { Phase::Write },
            fold: two.then(|| ParamsFold::new(options)),
            params: DatasetParams::from_options(options),
            items: None,
        }
    }

    /// The scheduler index of item `index` in the current phase.
    fn sched_index(&self, index: u64) -> Option<u64> {
        match &self.items {
            Some(items) => items.binary_search(&index).ok().map(|k| k as u64),
            None => Some(index),
        }
    }

    /// The item of scheduler index `k` in the current phase.
    fn item(&self, k: u64) -> u64 {
        match &self.items {
            Some(items) => items.get(k as usize).copied().unwrap_or(u64::MAX),
            None => k,
        }
    }
}

impl JobRun {
    /// Job `key` with no result yet: an empty slot per file, the discovery
    /// rows counted, the first phase its options call for.
    #[allow(clippy::too_many_arguments)]
    fn new(
        key: u64,
        input: PathBuf,
        output: PathBuf,
        transfer: Transfer,
        options: EngineOptions,
        files: Arc<Vec<String>>,
        problems: Vec<Record>,
        submitted: Instant,
        state: JobState,
    ) -> JobRun {
        let n = files.len();
        let mut counts = Counts::default();
        for p in &problems {
            counts.add(p.status);
        }
        JobRun {
            key,
            id: JobId(format!("job-{key}")),
            input,
            output,
            transfer,
            options_json: wire::options_to_json(&options),
            stats: OrderedFold::new(options.range),
            two: TwoPhase::new(&options),
            options,
            files,
            problems,
            records: vec![None; n],
            provenance: vec![None; n],
            counts,
            submitted,
            finished: None,
            state,
            error: None,
            summary: None,
            streamed: HashMap::new(),
            listed_images: None,
            claim: None,
            complete_pending: false,
        }
    }

    /// Images in the job, discovery rows included.
    pub fn images(&self) -> u64 {
        self.listed_images
            .unwrap_or((self.files.len() + self.problems.len()) as u64)
    }

    /// Items outside the current phase's scheduler job: rows made final by
    /// the statistics phase (not `ok` there), and results restored from the
    /// state database; the current phase's progress does not count them.
    pub fn final_before_phase(&self) -> u64 {
        match &self.two.items {
            Some(items) => (self.files.len() - items.len()) as u64,
            None => 0,
        }
    }

    /// The current phase of this job, as the scheduler knows it.
    pub fn phase_job(&self) -> PhaseJob {
        PhaseJob {
            key: self.key,
            phase: self.two.phase,
        }
    }

    /// The scheduler's id for the current phase of this job.
    pub fn sched_id(&self) -> JobId {
        self.phase_job().sched_id()
    }

    /// Rows known to be final (discovery rows included): results of the
    /// writing phase, rows not `ok` in the statistics phase, quarantines.
    /// Never decreases while the job runs (the phase switch keeps them).
    pub fn rows_final(&self) -> u64 {
        if self.state == JobState::Done {
            self.images()
        } else {
            self.counts.images
        }
    }
}

/// The master's state. See the module docs.
pub struct State {
    sched: Scheduler,
    conns: HashMap<WorkerId, Conn>,
    infos: HashMap<WorkerId, WorkerInfo>,
    /// Jobs by id, in submission order of their numeric suffix.
    pub jobs: BTreeMap<u64, JobRun>,
    next_worker: u64,
    next_job: u64,
    heartbeat_interval: Duration,
    /// Worker histories, lease contents and progress samples (dashboard).
    pub history: History,
    /// Where jobs and accepted results are persisted (`--data-dir`).
    store: Option<Store>,
    /// Outputs of jobs being submitted (discovery and `prepare` run before
    /// the job is added): no other job may take them meanwhile.
    reserved_outputs: Vec<PathBuf>,
    /// Dead workers, oldest death first (at most [`MAX_DEAD_WORKERS`]).
    dead: std::collections::VecDeque<WorkerId>,
    /// Workers registered since the master started.
    registered: u64,
    /// Image passes completed since the master started, in every phase of
    /// every job (accepted results and quarantines): only ever grows.
    completed: u64,
}

/// A finished job that must be written out (outside the lock).
pub struct ToFinalize {
    /// Job number.
    pub key: u64,
}

/// What a state change asks the caller to do after releasing the lock.
#[derive(Default)]
pub struct Effects {
    /// Jobs whose every item is accounted for.
    pub finalize: Vec<ToFinalize>,
    /// Leases to send (stream mode needs file bytes read first).
    pub leases: Vec<(Outbox, pb::Lease, Transfer, PathBuf)>,
    /// The result just handled was accepted (stream mode then writes it).
    pub accepted: bool,
    /// ...and it was a statistics-phase result: there is no output to write.
    pub stats_result: bool,
}

impl Effects {
    fn merge(&mut self, o: Effects) {
        self.finalize.extend(o.finalize);
        self.leases.extend(o.leases);
        self.accepted |= o.accepted;
        self.stats_result |= o.stats_result;
    }
}

/// Where a stream-mode output goes (see [`State::stream_target`]).
pub struct StreamTarget {
    /// The job's output tree root.
    pub root: PathBuf,
    /// `<path>.npy`, relative to `root`.
    pub rel: String,
    /// Largest output the job's options allow.
    pub max_bytes: u64,
}

/// Why a worker's result was not recorded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejected {
    /// Something an honest worker never sends: counted against the worker.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    /// Late: its job or phase is over, or its worker was declared dead.
    #[error("stale: {0}")]
    Stale(String),
}

impl State {
    /// New state around `sched`.
    pub fn new(sched: Scheduler, heartbeat_interval: Duration) -> State {
        State {
            sched,
            conns: HashMap::new(),
            infos: HashMap::new(),
            jobs: BTreeMap::new(),
            next_worker: 1,
            next_job: 1,
            heartbeat_interval,
            history: History::default(),
            store: None,
            reserved_outputs: Vec::new(),
            dead: std::collections::VecDeque::new(),
            registered: 0,
            completed: 0,
        }
    }

    /// Who holds an output overlapping `out` (the same folder, or one
    /// inside the other): an unfinished job's id, or "a job being
    /// submitted". Two unfinished jobs never share an output.
    pub fn output_holder(&self, out: &std::path::Path) -> Option<String> {
        let overlap = |o: &std::path::Path| crate::claim::overlap(o, out);
        if let Some(j) = self
            .jobs
            .values()
            .find(|j| !j.state.is_final() && overlap(&j.output))
        {
            return Some(format!("{} ({})", j.id, j.state.as_str()));
        }
        self.reserved_outputs
            .iter()
            .any(|o| overlap(o))
            .then(|| "a job being submitted".to_string())
    }

    /// Keeps `out` for a job being submitted (see [`State::output_holder`]).
    pub fn reserve_output(&mut self, out: PathBuf) {
        self.reserved_outputs.push(out);
    }

    /// Ends a reservation of [`State::reserve_output`].
    pub fn unreserve_output(&mut self, out: &std::path::Path) {
        if let Some(i) = self.reserved_outputs.iter().position(|o| o == out) {
            self.reserved_outputs.swap_remove(i);
        }
    }

    /// Remembers a dead worker for the dashboard and status; beyond
    /// [`MAX_DEAD_WORKERS`], the longest dead is forgotten (autoscaled pools
    /// and restarts would otherwise grow the master forever), and so are the
    /// lease records no worker holds any more.
    fn bury(&mut self, w: WorkerId) {
        self.dead.push_back(w);
        while self.dead.len() > MAX_DEAD_WORKERS {
            let Some(old) = self.dead.pop_front() else {
                break;
            };
            if self.sched.forget_worker(old) {
                self.infos.remove(&old);
                self.history.forget_worker(old);
            }
        }
        let sched = &self.sched;
        self.history
            .retain_leases(|l| sched.lease_facts(LeaseId(l)).is_some());
    }

    /// Persists jobs and results from now on.
    pub fn set_store(&mut self, store: Store) {
        self.store = Some(store);
    }

    /// The state database, when there is one.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// New jobs are numbered after `key` (numbers stored in the state
    /// database are never reused: job outputs may be named after them).
    pub fn reserve_keys(&mut self, key: u64) {
        self.next_job = self.next_job.max(key + 1);
    }

    #[allow(clippy::too_many_arguments)]
    fn persist(
        &self,
        key: u64,
        phase: StoredPhase,
        index: u64,
        record: &Record,
        stats: Option<&ImageStats>,
        raw: Option<&RawStats>,
        prov: &Provenance,
    ) {
        if let Some(store) = &self.store {
            store.result(ResultRow {
                job: key,
                phase,
                index,
                record: record.clone(),
                stats: stats.cloned(),
                raw: raw.cloned(),
                worker: prov.worker.clone(),
                worker_id: prov.worker_id,
                lease: prov.lease,
                attempt: prov.attempt,
            });
        }
    }

    /// Registers a worker that said `Hello`; returns its id and the `Welcome`.
    pub fn register(
        &mut self,
        info: WorkerInfo,
        tx: Outbox,
        now: Instant,
    ) -> (WorkerId, pb::Welcome) {
        let id = WorkerId(self.next_worker);
        self.next_worker += 1;
        self.registered += 1;
        // A fresh id cannot be registered already.
        let _ = self.sched.register(id, now);
        tracing::info!(worker = %id, name = %info.name, host = %info.hostname, "worker joined");
        self.infos.insert(id, info);
        self.history.worker_event(id, WorkerEventKind::Joined, now);
        self.conns.insert(id, Conn { tx, credits: 0 });
        let welcome = pb::Welcome {
            worker_id: id.0.to_string(),
            heartbeat_interval_ms: self.heartbeat_interval.as_millis() as u32,
            protocol_version: imgnorm_proto::PROTOCOL_VERSION,
        };
        (id, welcome)
    }

    /// Adds a job; the caller already discovered its files.
    #[allow(clippy::too_many_arguments)]
    pub fn add_job(
        &mut self,
        input: PathBuf,
        output: PathBuf,
        transfer: Transfer,
        options: EngineOptions,
        files: Vec<String>,
        problems: Vec<Record>,
        now: Instant,
    ) -> (JobId, Effects) {
        let key = self.next_job;
        self.next_job += 1;
        let n = files.len() as u64;
        let state = self.initial_state();
        let job = JobRun::new(
            key,
            input,
            output,
            transfer,
            options,
            Arc::new(files),
            problems,
            now,
            state,
        );
        if let Some(store) = &self.store {
            store.job(NewJob {
                key,
                input: job.input.display().to_string(),
                output: job.output.display().to_string(),
                transfer: transfer.as_str().to_string(),
                options_json: job.options_json.clone(),
                files: Arc::clone(&job.files),
                problems: job.problems.clone(),
                submitted_unix: super::store::unix_now(),
            });
        }
        let id = job.id.clone();
        let fx = self.schedule(key, job, n, now);
        (id, fx)
    }

    /// A new job waits behind a running one.
    fn initial_state(&self) -> JobState {
        if self.jobs.values().any(|j| j.state == JobState::Running) {
            JobState::Queued
        } else {
            JobState::Running
        }
    }

    /// Adds `job` and queues the `items` images of its current phase.
    fn schedule(&mut self, key: u64, job: JobRun, items: u64, now: Instant) -> Effects {
        let sched_id = job.sched_id();
        // The dashboard lists discovery problems first among the failures.
        for p in job.problems.iter().filter(|p| p.status == Status::Failed) {
            let reason = p.reason.as_deref().unwrap_or("");
            self.history.failure(&job.id.0, &p.path, reason, 0);
        }
        self.jobs.insert(key, job);
        let events = self.sched.add_job(sched_id, items, now).unwrap_or_default();
        let mut fx = self.apply(events, now);
        fx.merge(self.dispatch_all(now));
        fx
    }

    /// Puts back an unfinished job read from the state database, whose
    /// results the caller has already checked (`Master::resume` drops those
    /// whose output does not match its checksum). Items with a result are
    /// final; the scheduler job of the current phase covers the others.
    pub fn restore_job(
        &mut self,
        saved: SavedJob,
        options: EngineOptions,
        transfer: Transfer,
        submitted: Instant,
        now: Instant,
    ) -> (JobId, Effects) {
        let key = saved.key;
        self.reserve_keys(key);
        let n = saved.files.len();
        let state = self.initial_state();
        let mut job = JobRun::new(
            key,
            saved.input,
            saved.output,
            transfer,
            options,
            Arc::new(saved.files),
            saved.problems,
            submitted,
            state,
        );
        let prov = |r: &ResultRow| Provenance {
            worker: r.worker.clone(),
            worker_id: r.worker_id,
            lease: r.lease,
            attempt: r.attempt,
        };
        let (stats_rows, write_rows): (Vec<ResultRow>, Vec<ResultRow>) = saved
            .results
            .into_iter()
            .filter(|r| (r.index as usize) < n)
            .partition(|r| r.phase == StoredPhase::Stats);
        // Statistics phase: rows not `ok` there are final.
        let mut seen = vec![false; n];
        let mut raws = Vec::new();
        for r in stats_rows {
            let i = r.index as usize;
            seen[i] = true;
            if r.record.status == Status::Ok {
                raws.push((r.index, r.raw));
            } else {
                job.provenance[i] = Some(prov(&r));
                job.counts.add(r.record.status);
                job.records[i] = Some(r.record);
            }
        }
        let two = &mut job.two;
        if two.phase == Phase::Stats && saved.params.is_none() {
            if let Some(fold) = two.fold.as_mut() {
                for (index, raw) in raws {
                    fold.settle(index, raw);
                }
                for (i, r) in job.records.iter().enumerate() {
                    if r.is_some() {
                        fold.settle(i as u64, None);
                    }
                }
            }
            two.items = Some((0..n as u64).filter(|&i| !seen[i as usize]).collect());
        } else {
            if let Some(params) = saved.params {
                two.params = params;
                two.fold = None;
                two.phase = Phase::Write;
                job.stats = OrderedFold::new(two.params.output_range(&job.options));
            }
            let final_before: Vec<bool> = job.records.iter().map(Option::is_some).collect();
            for (i, done) in final_before.iter().enumerate() {
                if *done {
                    job.stats.settle(i as u64, None);
                }
            }
            for r in write_rows {
                let i = r.index as usize;
                if final_before[i] || job.records[i].is_some() {
                    continue;
                }
                job.stats.settle(r.index, r.stats.clone());
                job.provenance[i] = Some(prov(&r));
                job.counts.add(r.record.status);
                job.records[i] = Some(r.record);
            }
            two.items = Some(
                (0..n as u64)
                    .filter(|&i| job.records[i as usize].is_none())
                    .collect(),
            );
        }
        let pending = job.two.items.as_ref().map_or(n, Vec::len) as u64;
        let id = job.id.clone();
        tracing::info!(job = %id, images = n, pending, phase = job.two.phase.as_str(), "job resumed");
        let fx = self.schedule(key, job, pending, now);
        (id, fx)
    }

    /// Lists a job that an earlier master finished (done, failed or
    /// cancelled), so that `status` and the dashboard still show it.
    pub fn list_finished(
        &mut self,
        saved: SavedJob,
        options: EngineOptions,
        transfer: Transfer,
        submitted: Instant,
        finished: Instant,
    ) {
        let key = saved.key;
        self.reserve_keys(key);
        let state = match saved.state.as_str() {
            "done" => JobState::Done,
            "cancelled" => JobState::Cancelled,
            _ => JobState::Failed,
        };
        let mut job = JobRun::new(
            key,
            saved.input,
            saved.output,
            transfer,
            options,
            Arc::new(Vec::new()),
            Vec::new(),
            submitted,
            state,
        );
        if let Some(s) = saved.summary {
            job.counts = Counts {
                images: s.images,
                ok: s.ok,
                failed: s.failed,
                skipped: s.skipped,
            };
        }
        job.finished = Some(finished);
        job.error = saved.error;
        job.summary = saved.summary;
        job.listed_images = Some(saved.images);
        self.jobs.insert(key, job);
    }

    /// Cancels a job: pending work dropped, leases revoked.
    pub fn cancel(&mut self, id: &JobId, now: Instant) -> bool {
        let Some(key) = job_key(&id.0) else {
            return false;
        };
        let Some(job) = self.jobs.get_mut(&key) else {
            return false;
        };
        // A job whose every image has its result is writing its dataset
        // (`finished` is set then): it ends done or failed, never cancelled
        // halfway through its manifest.
        if job.state.is_final() || job.finished.is_some() {
            return false;
        }
        job.state = JobState::Cancelled;
        job.finished = Some(now);
        if let Some(store) = &self.store {
            store.end(key, "cancelled", None, None);
        }
        self.release(key, now);
        self.promote_next();
        true
    }

    fn promote_next(&mut self) {
        if self.jobs.values().any(|j| j.state == JobState::Running) {
            return;
        }
        if let Some(j) = self.jobs.values_mut().find(|j| j.state == JobState::Queued) {
            j.state = JobState::Running;
        }
    }

    /// Any message from a worker proves it alive.
    pub fn touch(&mut self, w: WorkerId, now: Instant) -> bool {
        self.sched.heartbeat(w, now).is_ok()
    }

    /// A heartbeat, possibly announcing a drain.
    pub fn heartbeat(&mut self, w: WorkerId, draining: bool, now: Instant) {
        if self.touch(w, now) && draining {
            tracing::info!(worker = %w, "worker draining");
            self.history.worker_event(w, WorkerEventKind::Draining, now);
            let _ = self.sched.set_draining(w);
        }
    }

    /// The worker wants `credits` more leases.
    pub fn ready(&mut self, w: WorkerId, credits: u32, now: Instant) -> Effects {
        if let Some(c) = self.conns.get_mut(&w) {
            c.credits = c.credits.saturating_add(credits).min(64);
        }
        self.dispatch(w, now)
    }

    /// A result for one image. `Err(Rejected::Refused)`: the worker sent
    /// something an honest worker never sends (see
    /// [`imgnorm_core::validate`]); `Err(Rejected::Stale)`: a late result
    /// (its job or phase is over, its worker was declared dead).
    #[allow(clippy::too_many_arguments)]
    pub fn image_done(
        &mut self,
        w: WorkerId,
        job: &str,
        lease: u64,
        attempt: u32,
        index: u64,
        record: Record,
        stats: Option<ImageStats>,
        raw: Option<RawStats>,
        now: Instant,
    ) -> Result<Effects, Rejected> {
        let unknown = || Rejected::Stale(format!("unknown job {job:?}"));
        let pj = PhaseJob::parse(job).ok_or_else(unknown)?;
        let key = pj.key;
        let jr = self.jobs.get(&key).ok_or_else(unknown)?;
        if jr.state.is_final() {
            // Its file list is released (`State::release`): a late copy.
            return Err(Rejected::Stale(format!("{job} has ended")));
        }
        let i = usize::try_from(index).unwrap_or(usize::MAX);
        let expected = jr.files.get(i).ok_or(Refusal::IndexOutOfRange {
            job: job.to_string(),
            index,
            files: jr.files.len(),
        })?;
        if pj != jr.phase_job() {
            return Err(Rejected::Stale(format!(
                "result for {job}, which is not the job's current phase"
            )));
        }
        let sched_index = jr
            .two
            .sched_index(index)
            .ok_or(Refusal::NotInPhase(index))?;
        let phase = match jr.two.phase {
            Phase::Stats => ResultPhase::Stats,
            Phase::Write => ResultPhase::Write,
        };
        let claim = Claim {
            worker: w,
            job,
            lease,
            attempt,
            item: sched_index,
        };
        validate::check_claim(&claim, self.sched.lease_facts(LeaseId(lease)))?;
        let want = Expected {
            path: expected,
            options: &jr.options,
            phase,
        };
        validate::check_result(&want, &record, stats.as_ref(), raw.as_ref())?;
        if phase == ResultPhase::Stats {
            return self.stats_done(
                w,
                key,
                lease,
                attempt,
                (index, sched_index),
                record,
                raw,
                now,
            );
        }
        let stats = stats.filter(|_| record.status == Status::Ok);
        let stream = jr.transfer == Transfer::Stream;
        let verdict = self
            .sched
            .complete_item(w, LeaseId(lease), sched_index, now)
            .map_err(|e| Rejected::Stale(e.to_string()))?;
        match verdict {
            ItemVerdict::Discarded(reason) => {
                tracing::debug!(worker = %w, lease, index, ?reason, "result discarded");
                Ok(Effects::default())
            }
            ItemVerdict::Accepted { events } => {
                self.completed += 1;
                let name = self
                    .infos
                    .get(&w)
                    .map(|i| i.name.clone())
                    .unwrap_or_default();
                self.history.image_done(job, w);
                if record.status == Status::Failed {
                    self.history.failure(
                        job,
                        &record.path,
                        record.reason.as_deref().unwrap_or(""),
                        attempt,
                    );
                }
                let prov = Provenance {
                    worker: name,
                    worker_id: w.0,
                    lease,
                    attempt,
                };
                self.persist(
                    key,
                    StoredPhase::Write,
                    index,
                    &record,
                    stats.as_ref(),
                    None,
                    &prov,
                );
                if let Some(jr) = self.jobs.get_mut(&key) {
                    match stats {
                        // Settled once the master has written the output.
                        Some(s) if stream => {
                            jr.streamed.insert(index, s);
                        }
                        s => jr.stats.settle(index, s),
                    }
                    jr.counts.add(record.status);
                    jr.records[i] = Some(record);
                    jr.provenance[i] = Some(prov);
                }
                let mut fx = self.apply(events, now);
                fx.accepted = true;
                Ok(fx)
            }
        }
    }

    /// A statistics-phase result (already checked): an `ok` one folds its
    /// raw statistics; any other is the item's final row (it is not written).
    #[allow(clippy::too_many_arguments)]
    fn stats_done(
        &mut self,
        w: WorkerId,
        key: u64,
        lease: u64,
        attempt: u32,
        (index, sched_index): (u64, u64),
        record: Record,
        raw: Option<RawStats>,
        now: Instant,
    ) -> Result<Effects, Rejected> {
        let i = index as usize;
        let raw = raw.filter(|_| record.status == Status::Ok);
        let verdict = self
            .sched
            .complete_item(w, LeaseId(lease), sched_index, now)
            .map_err(|e| Rejected::Stale(e.to_string()))?;
        let ItemVerdict::Accepted { events } = verdict else {
            return Ok(Effects::default());
        };
        self.completed += 1;
        let name = self
            .infos
            .get(&w)
            .map(|i| i.name.clone())
            .unwrap_or_default();
        let prov = Provenance {
            worker: name,
            worker_id: w.0,
            lease,
            attempt,
        };
        self.persist(
            key,
            StoredPhase::Stats,
            index,
            &record,
            None,
            raw.as_ref(),
            &prov,
        );
        if let Some(jr) = self.jobs.get_mut(&key) {
            if let Some(fold) = jr.two.fold.as_mut() {
                fold.settle(index, raw);
            }
            if record.status != Status::Ok {
                jr.counts.add(record.status);
                jr.records[i] = Some(record);
                jr.provenance[i] = Some(prov);
            }
        }
        let mut fx = self.apply(events, now);
        fx.accepted = true;
        fx.stats_result = true;
        Ok(fx)
    }

    /// The statistics phase of job `key` is complete: fix the parameters
    /// and queue the writing phase over the items that came out `ok`.
    fn start_write_phase(&mut self, key: u64, now: Instant) -> Effects {
        let Some(jr) = self.jobs.get_mut(&key) else {
            return Effects::default();
        };
        if jr.state == JobState::Cancelled || jr.two.phase != Phase::Stats {
            return Effects::default();
        }
        if let Some(fold) = jr.two.fold.take() {
            jr.two.params = fold.finish();
        }
        jr.two.phase = Phase::Write;
        let items: Vec<u64> = (0..jr.records.len() as u64)
            .filter(|&i| jr.records[i as usize].is_none())
            .collect();
        let n = items.len() as u64;
        jr.two.items = Some(items);
        if let Some(store) = &self.store {
            store.phase_done(key, &jr.two.params);
        }
        jr.stats = OrderedFold::new(jr.two.params.output_range(&jr.options));
        for (i, r) in jr.records.iter().enumerate() {
            if r.is_some() {
                jr.stats.settle(i as u64, None);
            }
        }
        tracing::info!(job = %jr.id, images = n, params = ?jr.two.params, "statistics phase done: writing");
        let id = jr.id.clone();
        let stats_id = PhaseJob {
            key,
            phase: Phase::Stats,
        }
        .sched_id();
        // The scheduler forgets the finished phase (a speculative copy
        // still out is revoked).
        let forget = self.sched.cancel_job(&stats_id).unwrap_or_default();
        let mut fx = self.apply(forget, now);
        // An empty writing phase completes at once (JobComplete below).
        let events = self.sched.add_job(id, n, now).unwrap_or_default();
        let more = self.apply(events, now);
        fx.merge(more);
        fx.merge(self.dispatch_all(now));
        fx
    }

    /// Input file of a stream-mode job's item (`ReadInput`); `None` for
    /// jobs of another mode, unknown items, and paths that could leave the
    /// input root.
    pub fn input_path(&self, job: &str, index: u64) -> Option<PathBuf> {
        let j = self.jobs.get(&PhaseJob::parse(job)?.key)?;
        if j.transfer != Transfer::Stream {
            return None;
        }
        let rel = j.files.get(usize::try_from(index).ok()?)?;
        imgnorm_core::paths::check_relative(rel).ok()?;
        Some(j.input.join(rel))
    }

    /// Where a stream-mode output chunk from worker `w` goes: (output root,
    /// relative path). `Ok(None)`: a late chunk (its job or lease is over);
    /// `Err`: a chunk an honest worker never sends (another worker's lease,
    /// an item not in the lease, a job not in stream mode).
    pub fn stream_target(
        &self,
        w: WorkerId,
        job: &str,
        lease: u64,
        index: u64,
    ) -> Result<Option<StreamTarget>, Refusal> {
        let Some((pj, j)) =
            PhaseJob::parse(job).and_then(|p| self.jobs.get(&p.key).map(|j| (p, j)))
        else {
            return Ok(None);
        };
        if j.state.is_final() {
            return Ok(None);
        }
        let Some(rel) = j.files.get(usize::try_from(index).unwrap_or(usize::MAX)) else {
            return Err(Refusal::IndexOutOfRange {
                job: job.to_string(),
                index,
                files: j.files.len(),
            });
        };
        if j.transfer != Transfer::Stream || pj.phase != Phase::Write || pj != j.phase_job() {
            return Err(Refusal::NotInPhase(index));
        }
        let item = j.two.sched_index(index).ok_or(Refusal::NotInPhase(index))?;
        let Some(facts) = self.sched.lease_facts(LeaseId(lease)) else {
            return Ok(None);
        };
        // The attempt is checked with the result (ImageDone) itself.
        let claim = Claim {
            worker: w,
            job,
            lease,
            attempt: facts.attempt,
            item,
        };
        validate::check_claim(&claim, Some(facts))?;
        // The engine's rule: an honest worker fails an image whose output
        // cannot be named instead of sending it.
        let out = imgnorm_core::paths::output_name(rel).map_err(Refusal::UnsafeOutput)?;
        Ok(Some(StreamTarget {
            root: crate::formats::tree_root(&j.output, &j.options.format),
            rel: out,
            max_bytes: crate::limits::max_npy_bytes(&j.options),
        }))
    }

    /// Output root and transfer mode of a job.
    pub fn output_of(&self, job: &str) -> Option<(PathBuf, Transfer)> {
        let key = PhaseJob::parse(job)?.key;
        self.jobs.get(&key).map(|j| (j.output.clone(), j.transfer))
    }

    /// The master wrote a streamed result's output: its statistics count.
    /// Returns the job to finalize when this was the last output it waited
    /// for.
    pub fn stream_committed(&mut self, job: &str, index: u64) -> Effects {
        let Some(key) = PhaseJob::parse(job).map(|p| p.key) else {
            return Effects::default();
        };
        if let Some(j) = self.jobs.get_mut(&key)
            && let Some(s) = j.streamed.remove(&index)
        {
            j.stats.settle(index, Some(s));
        }
        self.finalize_if_committed(key)
    }

    /// A job waiting for its streamed outputs ([`JobRun::complete_pending`])
    /// is finalized once none is left.
    fn finalize_if_committed(&mut self, key: u64) -> Effects {
        let mut fx = Effects::default();
        if let Some(j) = self.jobs.get_mut(&key)
            && j.complete_pending
            && j.streamed.is_empty()
        {
            j.complete_pending = false;
            if j.state != JobState::Cancelled {
                fx.finalize.push(ToFinalize { key });
            }
        }
        fx
    }

    /// The master could not write a streamed result: the row becomes failed.
    /// Returns the job to finalize when this was the last output it waited
    /// for.
    pub fn write_failed(&mut self, job: &str, index: u64, error: &str) -> Effects {
        let Some(key) = PhaseJob::parse(job).map(|p| p.key) else {
            return Effects::default();
        };
        self.record_write_failure(key, job, index, error);
        self.finalize_if_committed(key)
    }

    fn record_write_failure(&mut self, key: u64, job: &str, index: u64, error: &str) {
        let Some(j) = self.jobs.get_mut(&key) else {
            return;
        };
        if j.streamed.remove(&index).is_some() {
            j.stats.settle(index, None);
        }
        let Some(slot) = j.records.get_mut(index as usize) else {
            return;
        };
        if let Some(r) = slot.take() {
            j.counts.ok = j
                .counts
                .ok
                .saturating_sub(u64::from(r.status == Status::Ok));
            j.counts.failed += u64::from(r.status == Status::Ok);
            let reason = format!("master could not write the output: {error}");
            self.history.failure(job, &r.path, &reason, 0);
            let mut f = Record::bare(r.path, Status::Failed, Some(reason));
            f.format = r.format;
            if let Some(store) = &self.store {
                store.result(ResultRow {
                    job: key,
                    phase: StoredPhase::Write,
                    index,
                    record: f.clone(),
                    stats: None,
                    raw: None,
                    worker: String::new(),
                    worker_id: 0,
                    lease: 0,
                    attempt: 0,
                });
            }
            *slot = Some(f);
        }
    }

    /// The worker closed a lease (done, or handed back on shutdown).
    pub fn lease_done(&mut self, w: WorkerId, lease: u64, now: Instant) -> Effects {
        let events = self
            .sched
            .finish_lease(w, LeaseId(lease), now)
            .unwrap_or_default();
        if self.sched.lease_facts(LeaseId(lease)).is_none() {
            self.history.forget_lease(lease);
        }
        let mut fx = self.apply(events, now);
        fx.merge(self.dispatch_all(now));
        fx
    }

    /// The worker's stream ended.
    pub fn disconnect(&mut self, w: WorkerId, now: Instant) -> Effects {
        self.conns.remove(&w);
        let events = self.sched.disconnect(w, now);
        let mut fx = self.apply(events, now);
        fx.merge(self.dispatch_all(now));
        fx
    }

    /// Periodic expiry of silent workers.
    pub fn tick(&mut self, now: Instant) -> Effects {
        let events = self.sched.tick(now);
        if events.is_empty() {
            return Effects::default();
        }
        let mut fx = self.apply(events, now);
        fx.merge(self.dispatch_all(now));
        fx
    }

    fn apply(&mut self, events: Vec<Event>, now: Instant) -> Effects {
        let mut fx = Effects::default();
        for e in events {
            match e {
                Event::WorkerDead {
                    worker,
                    reason,
                    requeued,
                } => {
                    let kind = match reason {
                        DeathReason::Disconnected => WorkerEventKind::Disconnected,
                        DeathReason::Timeout => WorkerEventKind::TimedOut,
                    };
                    self.history.worker_event(worker, kind, now);
                    match reason {
                        DeathReason::Disconnected => {
                            tracing::info!(worker = %worker, requeued, "worker disconnected")
                        }
                        DeathReason::Timeout => {
                            tracing::warn!(worker = %worker, requeued, "worker silent past the heartbeat timeout: declared dead")
                        }
                    }
                    // Dropping the sender ends the worker's response stream.
                    self.conns.remove(&worker);
                    self.bury(worker);
                }
                Event::Requeued { job, lease, items } => {
                    tracing::debug!(%job, %lease, items, "re-queued");
                }
                Event::Quarantined { job, item, crashes } => {
                    let Some(pj) = PhaseJob::parse(&job.0) else {
                        continue;
                    };
                    let Some(jr) = self.jobs.get_mut(&pj.key) else {
                        continue;
                    };
                    // The scheduler counts in the phase's indexes.
                    let item = jr.two.item(item);
                    if let Some(path) = jr.files.get(item as usize) {
                        if let Some(fold) = jr.two.fold.as_mut() {
                            fold.settle(item, None);
                        }
                        tracing::warn!(%job, path = %path, crashes, "image quarantined");
                        let r = Record::bare(
                            path.clone(),
                            Status::Failed,
                            Some(format!(
                                "quarantined: a worker died {crashes} times while processing this image alone"
                            )),
                        );
                        jr.counts.add(Status::Failed);
                        self.history.failure(
                            &job.0,
                            &r.path,
                            r.reason.as_deref().unwrap_or(""),
                            crashes,
                        );
                        self.completed += 1;
                        if let Some(store) = &self.store {
                            store.result(ResultRow {
                                job: pj.key,
                                phase: match jr.two.phase {
                                    Phase::Stats => StoredPhase::Stats,
                                    Phase::Write => StoredPhase::Write,
                                },
                                index: item,
                                record: r.clone(),
                                stats: None,
                                raw: None,
                                worker: String::new(),
                                worker_id: 0,
                                lease: 0,
                                attempt: crashes,
                            });
                        }
                        jr.records[item as usize] = Some(r);
                        jr.stats.settle(item, None);
                    }
                }
                Event::Revoke { job, worker, lease } => {
                    if let Some(c) = self.conns.get(&worker) {
                        let _ = c.tx.send(Ok(pb::MasterMessage {
                            msg: Some(pb::master_message::Msg::Revoke(pb::Revoke {
                                job_id: job.0,
                                lease_id: lease.0,
                            })),
                        }));
                    }
                }
                Event::JobComplete(job) => match PhaseJob::parse(&job.0) {
                    Some(PhaseJob {
                        key,
                        phase: Phase::Stats,
                    }) => fx.merge(self.start_write_phase(key, now)),
                    Some(PhaseJob {
                        key,
                        phase: Phase::Write,
                    }) => {
                        if let Some(jr) = self.jobs.get_mut(&key)
                            && jr.state != JobState::Cancelled
                        {
                            jr.finished = Some(now);
                            // Stream mode: an accepted output is committed
                            // (renamed into place, its statistics settled)
                            // after the lock that accepted it is released;
                            // the dataset waits for the last one.
                            if jr.streamed.is_empty() {
                                fx.finalize.push(ToFinalize { key });
                            } else {
                                jr.complete_pending = true;
                            }
                        }
                    }
                    None => {}
                },
            }
        }
        fx
    }

    fn dispatch_all(&mut self, now: Instant) -> Effects {
        let mut fx = Effects::default();
        let ids: Vec<WorkerId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.credits > 0)
            .map(|(id, _)| *id)
            .collect();
        for w in ids {
            fx.merge(self.dispatch(w, now));
        }
        fx
    }

    fn dispatch(&mut self, w: WorkerId, now: Instant) -> Effects {
        let mut fx = Effects::default();
        while self.conns.get(&w).is_some_and(|c| c.credits > 0) {
            let Ok(Some(lease)) = self.sched.lease(w, now) else {
                break;
            };
            let Some(key) = PhaseJob::parse(&lease.job.0).map(|p| p.key) else {
                break;
            };
            let Some(jr) = self.jobs.get_mut(&key) else {
                break;
            };
            if jr.state == JobState::Queued {
                jr.state = JobState::Running;
            }
            let items = lease
                .items
                .iter()
                .map(|&k| jr.two.item(k))
                .map(|i| pb::Item {
                    index: i,
                    path: jr.files.get(i as usize).cloned().unwrap_or_default(),
                    data: Vec::new(),
                    fetch: false,
                    size: 0,
                })
                .collect();
            let msg = pb::Lease {
                job_id: lease.job.0.clone(),
                lease_id: lease.id.0,
                attempt: lease.attempt,
                batch_id: lease.batch.0,
                spec: Some(pb::JobSpec {
                    input_root: jr.input.display().to_string(),
                    output_root: jr.output.display().to_string(),
                    transfer: jr.transfer.as_str().to_string(),
                    engine_options_json: jr.options_json.clone(),
                    phase: match jr.two.phase {
                        Phase::Stats => pb::Phase::Stats,
                        Phase::Write => pb::Phase::Write,
                    }
                    .into(),
                    params: (jr.options.two_phase() && jr.two.phase == Phase::Write)
                        .then(|| wire::params_to_pb(&jr.two.params)),
                }),
                items,
            };
            self.history.lease_started(
                lease.id.0,
                LeaseInfo {
                    job: lease.job.0.clone(),
                    batch: lease.batch.0,
                    attempt: lease.attempt,
                    items: lease.items.len(),
                },
            );
            let transfer = jr.transfer;
            let input = jr.input.clone();
            if let Some(conn) = self.conns.get_mut(&w) {
                conn.credits -= 1;
                fx.leases.push((conn.tx.clone(), msg, transfer, input));
            }
        }
        fx
    }

    /// Progress of a job's current phase as the scheduler sees it.
    pub fn progress(&self, key: u64) -> Option<JobProgress> {
        self.jobs
            .get(&key)
            .and_then(|j| self.sched.job_progress(&j.sched_id()))
    }

    /// Every worker ever seen, as the scheduler sees it.
    pub fn worker_views(&self) -> impl Iterator<Item = WorkerView> + '_ {
        self.sched.workers()
    }

    /// A worker's self-description.
    pub fn worker_info(&self, w: WorkerId) -> Option<&WorkerInfo> {
        self.infos.get(&w)
    }

    /// What the autoscaler sees: the work left over unfinished jobs, the
    /// work completed so far (monotonic), and workers taking work. Work is
    /// counted in image passes: a two-phase job passes each image once per
    /// phase, so in its statistics phase its backlog is what that phase has
    /// left plus every image the writing phase may still have to write.
    pub fn autoscale_observation(&self) -> imgnorm_core::autoscale::Observation {
        let mut o = imgnorm_core::autoscale::Observation {
            completed: self.completed,
            ..Default::default()
        };
        for (key, j) in &self.jobs {
            if !matches!(j.state, JobState::Queued | JobState::Running) {
                continue;
            }
            if let Some(p) = self.progress(*key) {
                o.backlog += p.total - p.completed;
            }
            if j.two.phase == Phase::Stats {
                let final_rows = j.counts.images.saturating_sub(j.problems.len() as u64);
                o.backlog += (j.files.len() as u64).saturating_sub(final_rows);
            }
        }
        o.live_workers = self
            .sched
            .workers()
            .filter(|v| v.state == WorkerState::Alive)
            .count() as u32;
        o
    }

    /// Workers ever registered with this master (dead ones included, the
    /// forgotten ones too).
    pub fn workers_seen(&self) -> usize {
        self.registered as usize
    }

    /// Status of every worker ever seen.
    pub fn worker_status(&self, now: Instant) -> Vec<pb::WorkerStatus> {
        self.sched
            .workers()
            .map(|v| {
                let info = self.infos.get(&v.id).cloned().unwrap_or_default();
                pb::WorkerStatus {
                    worker_id: v.id.0.to_string(),
                    name: info.name,
                    hostname: info.hostname,
                    state: match v.state {
                        WorkerState::Alive => "alive",
                        WorkerState::Draining => "draining",
                        WorkerState::Dead => "dead",
                    }
                    .to_string(),
                    images_done: v.items_done,
                    leases: v.leases.len() as u32,
                    last_seen_s_ago: now.saturating_duration_since(v.last_seen).as_secs_f64(),
                }
            })
            .collect()
    }

    /// Marks a finalized job done (or failed) and starts the next queued one.
    pub fn finished(&mut self, key: u64, result: Result<Summary, String>, now: Instant) -> Effects {
        if let Some(j) = self.jobs.get_mut(&key) {
            match result {
                Ok(s) => {
                    j.state = JobState::Done;
                    j.summary = Some(s);
                }
                Err(e) => {
                    j.state = JobState::Failed;
                    j.error = Some(e);
                }
            }
            j.finished.get_or_insert(now);
            if let Some(store) = &self.store {
                let summary = j.summary.and_then(|s| serde_json::to_string(&s).ok());
                store.end(key, j.state.as_str(), j.error.clone(), summary);
            }
        }
        self.release(key, now);
        self.promote_next();
        self.dispatch_all(now)
    }

    /// Frees what an ended job no longer needs: its file list, records,
    /// provenance, folds, the scheduler's record of it (its leases revoked)
    /// and its lease history, and gives its output back. What stays is
    /// bounded whatever the job's size: its counts, summary, options, first
    /// failures and progress samples (the dashboard shows those; the files
    /// in its output and the state database have the rest).
    fn release(&mut self, key: u64, now: Instant) {
        let Some(j) = self.jobs.get_mut(&key) else {
            return;
        };
        j.listed_images = Some(j.images());
        j.files = Arc::new(Vec::new());
        j.problems = Vec::new();
        j.records = Vec::new();
        j.provenance = Vec::new();
        j.streamed = HashMap::new();
        j.stats = OrderedFold::new(j.options.range);
        j.two.items = None;
        j.two.fold = None;
        j.claim = None;
        let (sched_id, id) = (j.sched_id(), j.id.0.clone());
        let events = self.sched.cancel_job(&sched_id).unwrap_or_default();
        let _ = self.apply(events, now);
        self.history.forget_job_leases(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgnorm_core::scheduler::SchedulerConfig;
    use imgnorm_core::stats::{Binning, ChannelStats};

    fn ok_record(path: &str) -> Record {
        let mut r = Record::bare(path, Status::Ok, None);
        r.output = Some(format!("{path}.npy"));
        r.width = Some(2);
        r.height = Some(1);
        r.channels = Some(1);
        r.bit_depth = Some(8);
        r.min = vec![0];
        r.max = vec![255];
        r.checksum = Some("0".repeat(32));
        r
    }

    fn stats_of(values: &[f64]) -> ImageStats {
        ImageStats {
            channels: vec![ChannelStats::from_values(values, &Binning::new((0.0, 1.0)))],
        }
    }

    /// One worker holding one lease over a two-image job.
    fn leased() -> (State, WorkerId, u64, String) {
        let now = Instant::now();
        let sched = Scheduler::new(SchedulerConfig {
            min_batch_size: 2,
            ..SchedulerConfig::default()
        })
        .expect("config");
        let mut st = State::new(sched, Duration::from_secs(1));
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let (w, _) = st.register(WorkerInfo::default(), tx, now);
        let files = vec!["a/x.png".to_string(), "a/y.png".to_string()];
        let (job, _) = st.add_job(
            "in".into(),
            "out".into(),
            Transfer::Shared,
            EngineOptions::default(),
            files,
            Vec::new(),
            now,
        );
        let fx = st.ready(w, 1, now);
        let lease = fx.leases.first().expect("a lease").1.lease_id;
        (st, w, lease, job.0)
    }

    #[test]
    fn lies_about_the_lease_are_refused_and_late_results_are_stale() {
        let (mut st, w, lease, job) = leased();
        let now = Instant::now();
        let stats = || Some(stats_of(&[0.0, 1.0]));
        let refused = |r: Result<Effects, Rejected>| matches!(r, Err(Rejected::Refused(_)));
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let (other, _) = st.register(WorkerInfo::default(), tx, now);
        let x = || ok_record("a/x.png");
        let r = st.image_done(other, &job, lease, 1, 0, x(), stats(), None, now);
        assert!(refused(r), "another worker's lease");
        let r = st.image_done(w, &job, lease, 2, 0, x(), stats(), None, now);
        assert!(refused(r), "wrong attempt");
        let r = st.image_done(w, &job, lease, 1, 7, x(), stats(), None, now);
        assert!(refused(r), "index out of range");
        let (second, _) = st.add_job(
            "in2".into(),
            "out2".into(),
            Transfer::Shared,
            EngineOptions::default(),
            vec!["a/x.png".to_string()],
            Vec::new(),
            now,
        );
        let r = st.image_done(w, &second.0, lease, 1, 0, x(), stats(), None, now);
        assert!(refused(r), "a lease of another job");
        let mut outside = x();
        outside.output = Some("../../etc/x.npy".into());
        let r = st.image_done(w, &job, lease, 1, 0, outside, stats(), None, now);
        assert!(refused(r), "output outside the root");
        let r = st.image_done(w, "job-9", lease, 1, 0, x(), stats(), None, now);
        assert!(matches!(r, Err(Rejected::Stale(_))), "unknown job");
        assert!(st.jobs[&1].records.iter().all(Option::is_none));
        st.image_done(w, &job, lease, 1, 0, x(), stats(), None, now)
            .expect("the honest result is accepted");
    }

    #[test]
    fn stream_chunks_are_checked_against_the_lease() {
        let now = Instant::now();
        let sched = Scheduler::new(SchedulerConfig::default()).expect("config");
        let mut st = State::new(sched, Duration::from_secs(1));
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let (w, _) = st.register(WorkerInfo::default(), tx, now);
        let (tx, _rx2) = tokio::sync::mpsc::unbounded_channel();
        let (other, _) = st.register(WorkerInfo::default(), tx, now);
        let (job, _) = st.add_job(
            "in".into(),
            "out".into(),
            Transfer::Stream,
            EngineOptions::default(),
            vec!["a.png".to_string()],
            Vec::new(),
            now,
        );
        let lease = st
            .ready(w, 1, now)
            .leases
            .first()
            .expect("a lease")
            .1
            .lease_id;
        let t = st
            .stream_target(w, &job.0, lease, 0)
            .expect("honest")
            .expect("a target");
        assert_eq!(t.rel, "a.png.npy");
        assert!(st.stream_target(other, &job.0, lease, 0).is_err());
        assert!(st.stream_target(w, &job.0, lease, 5).is_err());
        assert!(matches!(
            st.stream_target(w, &job.0, lease + 100, 0),
            Ok(None)
        ));
        assert_eq!(
            st.input_path(&job.0, 0),
            Some(PathBuf::from("in").join("a.png"))
        );
        assert_eq!(st.input_path(&job.0, 1), None);
    }

    #[test]
    fn results_with_missing_or_inconsistent_stats_are_refused() {
        let (mut st, w, lease, job) = leased();
        let now = Instant::now();
        let r = ok_record("a/x.png");
        let missing = st.image_done(w, &job, lease, 1, 0, r.clone(), None, None, now);
        assert!(missing.is_err());
        let three = stats_of(&[0.0, 1.0, 0.5]);
        let wrong_count = st.image_done(w, &job, lease, 1, 0, r.clone(), Some(three), None, now);
        assert!(
            wrong_count
                .err()
                .unwrap()
                .to_string()
                .contains("inconsistent statistics")
        );
        let mut two_channels = stats_of(&[0.0, 1.0]);
        two_channels.channels.push(two_channels.channels[0].clone());
        let wrong_channels = st.image_done(w, &job, lease, 1, 0, r, Some(two_channels), None, now);
        assert!(wrong_channels.is_err());
    }

    #[test]
    fn stats_fold_in_index_order_whatever_the_arrival_order() {
        let (mut st, w, lease, job) = leased();
        let now = Instant::now();
        let (sx, sy) = (stats_of(&[0.0, 1.0]), stats_of(&[0.25, 0.125]));
        st.image_done(
            w,
            &job,
            lease,
            1,
            1,
            ok_record("a/y.png"),
            Some(sy.clone()),
            None,
            now,
        )
        .expect("accepted");
        assert_eq!(st.jobs[&1].stats.held(), 1);
        st.image_done(
            w,
            &job,
            lease,
            1,
            0,
            ok_record("a/x.png"),
            Some(sx.clone()),
            None,
            now,
        )
        .expect("accepted");
        assert_eq!(st.jobs[&1].stats.held(), 0);
        let mut want = imgnorm_core::stats::DatasetStats::new((0.0, 1.0));
        want.add(&sx);
        want.add(&sy);
        let got = std::mem::replace(
            &mut st.jobs.get_mut(&1).unwrap().stats,
            OrderedFold::new((0.0, 1.0)),
        );
        assert_eq!(got.finish(), want);
    }

    fn saved(files: &[&str], results: Vec<ResultRow>, params: Option<DatasetParams>) -> SavedJob {
        SavedJob {
            key: 4,
            input: "in".into(),
            output: "out".into(),
            transfer: "shared".into(),
            options_json: String::new(),
            files: files.iter().map(|f| f.to_string()).collect(),
            problems: Vec::new(),
            submitted_unix: 0.0,
            state: "running".into(),
            error: None,
            params,
            results,
            images: files.len() as u64,
            summary: None,
            finished_unix: None,
        }
    }

    fn row(phase: StoredPhase, index: u64, record: Record, stats: Option<ImageStats>) -> ResultRow {
        ResultRow {
            job: 4,
            phase,
            index,
            record,
            stats,
            raw: None,
            worker: "old".into(),
            worker_id: 1,
            lease: 1,
            attempt: 1,
        }
    }

    #[test]
    fn a_restored_job_leases_only_the_images_without_a_result() {
        let now = Instant::now();
        let sched = Scheduler::new(SchedulerConfig::default()).expect("config");
        let mut st = State::new(sched, Duration::from_secs(1));
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let (w, _) = st.register(WorkerInfo::default(), tx, now);
        let job = saved(
            &["a.png", "b.png", "c.png"],
            vec![
                row(
                    StoredPhase::Write,
                    1,
                    ok_record("b.png"),
                    Some(stats_of(&[0.0, 1.0])),
                ),
                row(
                    StoredPhase::Write,
                    2,
                    Record::bare("c.png", Status::Failed, Some("bad".into())),
                    None,
                ),
            ],
            None,
        );
        let (id, _) = st.restore_job(job, EngineOptions::default(), Transfer::Shared, now, now);
        assert_eq!(id.0, "job-4");
        assert_eq!(st.jobs[&4].final_before_phase(), 2);
        assert_eq!((st.jobs[&4].counts.ok, st.jobs[&4].counts.failed), (1, 1));
        // New jobs never reuse a stored number.
        assert_eq!(st.next_job, 5);
        let fx = st.ready(w, 4, now);
        let items: Vec<u64> = fx
            .leases
            .iter()
            .flat_map(|(_, l, _, _)| l.items.iter().map(|i| i.index))
            .collect();
        assert_eq!(items, vec![0], "only a.png is left");
        let lease = fx.leases[0].1.lease_id;
        let stats = Some(stats_of(&[0.0, 1.0]));
        let fx = st
            .image_done(
                w,
                "job-4",
                lease,
                1,
                0,
                ok_record("a.png"),
                stats,
                None,
                now,
            )
            .expect("accepted");
        assert_eq!(fx.finalize.len(), 1, "job complete");
        assert!(st.jobs[&4].records.iter().all(Option::is_some));
        assert_eq!(st.jobs[&4].stats.held(), 0, "every item settled");
    }

    #[test]
    fn two_phase_job_writes_only_what_the_statistics_phase_found_ok() {
        use imgnorm_core::dataset::raw_stats;
        use imgnorm_core::normalize::Pixels;
        use imgnorm_core::options::Scope;
        let now = Instant::now();
        let sched = Scheduler::new(SchedulerConfig {
            min_batch_size: 3,
            ..SchedulerConfig::default()
        })
        .expect("config");
        let mut st = State::new(sched, Duration::from_secs(1));
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let (w, _) = st.register(WorkerInfo::default(), tx, now);
        let files: Vec<String> = ["a.png", "b.png", "c.png"].map(String::from).to_vec();
        let opts = EngineOptions {
            scope: Scope::Dataset,
            ..EngineOptions::default()
        };
        let (job, _) = st.add_job(
            "in".into(),
            "out".into(),
            Transfer::Shared,
            opts,
            files,
            Vec::new(),
            now,
        );
        let fx = st.ready(w, 2, now);
        let lease = &fx.leases.first().expect("a statistics lease").1;
        let spec = lease.spec.as_ref().expect("spec");
        assert_eq!(spec.phase(), pb::Phase::Stats);
        assert_eq!(lease.job_id, "job-1.stats");
        assert!(spec.params.is_none());
        let id = lease.lease_id;
        let measured = |path: &str, px: &[u8]| {
            let mut r = Record::bare(path, Status::Ok, None);
            r.width = Some(px.len() as u32);
            r.height = Some(1);
            r.channels = Some(1);
            let raw = raw_stats(Pixels::U8(px), 1);
            r.bit_depth = Some(raw.bit_depth);
            r.min = raw.channels.iter().map(|c| c.min).collect();
            r.max = raw.channels.iter().map(|c| c.max).collect();
            (r, Some(raw))
        };
        // A result for the writing phase is refused while statistics run.
        assert!(
            st.image_done(w, &job.0, id, 1, 0, ok_record("a.png"), None, None, now)
                .is_err()
        );
        let (r, raw) = measured("c.png", &[7, 200]);
        st.image_done(w, "job-1.stats", id, 1, 2, r, None, raw, now)
            .expect("accepted");
        // Raw statistics that do not fit the record are refused.
        let (mut r, raw) = measured("a.png", &[3, 9]);
        r.width = Some(5);
        assert!(
            st.image_done(w, "job-1.stats", id, 1, 0, r, None, raw.clone(), now)
                .is_err()
        );
        let bad = Record::bare("b.png", Status::Failed, Some("decode error".into()));
        st.image_done(w, "job-1.stats", id, 1, 1, bad, None, None, now)
            .expect("accepted");
        let (r, raw) = measured("a.png", &[3, 9]);
        let fx = st
            .image_done(w, "job-1.stats", id, 1, 0, r, None, raw, now)
            .expect("accepted");
        assert!(fx.stats_result);
        // The writing phase starts at once, over items 0 and 2 only.
        let jr = &st.jobs[&1];
        assert_eq!(jr.two.phase, Phase::Write);
        assert_eq!(jr.two.params.min, vec![3]);
        assert_eq!(jr.two.params.max, vec![200]);
        assert_eq!(jr.final_before_phase(), 1);
        assert_eq!(jr.counts.failed, 1);
        let lease = &fx.leases.first().expect("a writing lease").1;
        let spec = lease.spec.as_ref().expect("spec");
        assert_eq!(spec.phase(), pb::Phase::Write);
        assert_eq!(lease.job_id, "job-1");
        assert_eq!(spec.params.as_ref().map(|p| p.min.clone()), Some(vec![3]));
        let items: Vec<u64> = lease.items.iter().map(|i| i.index).collect();
        assert_eq!(items, vec![0, 2]);
        let id = lease.lease_id;
        let stats = || Some(stats_of(&[0.0, 1.0]));
        assert!(
            st.image_done(w, "job-1", id, 1, 1, ok_record("b.png"), stats(), None, now)
                .is_err(),
            "item 1 is not part of the writing phase"
        );
        st.image_done(w, "job-1", id, 1, 2, ok_record("c.png"), stats(), None, now)
            .expect("accepted");
        let fx = st
            .image_done(w, "job-1", id, 1, 0, ok_record("a.png"), stats(), None, now)
            .expect("accepted");
        assert_eq!(fx.finalize.len(), 1, "job complete");
        assert!(st.jobs[&1].records.iter().all(Option::is_some));
    }

    /// Issue 16, item 2: the backlog of a two-phase job is right in its
    /// statistics phase (the autoscaler saw none), and neither the work
    /// completed nor the job's progress drops at the phase switch.
    #[test]
    fn two_phase_backlog_and_progress_are_right_in_every_phase() {
        use imgnorm_core::dataset::raw_stats;
        use imgnorm_core::normalize::Pixels;
        use imgnorm_core::options::Scope;
        let now = Instant::now();
        let sched = Scheduler::new(SchedulerConfig {
            min_batch_size: 3,
            ..SchedulerConfig::default()
        })
        .expect("config");
        let mut st = State::new(sched, Duration::from_secs(1));
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let (w, _) = st.register(WorkerInfo::default(), tx, now);
        let files: Vec<String> = ["a.png", "b.png", "c.png"].map(String::from).to_vec();
        let opts = EngineOptions {
            scope: Scope::Dataset,
            ..EngineOptions::default()
        };
        st.add_job(
            "in".into(),
            "out".into(),
            Transfer::Shared,
            opts,
            files,
            Vec::new(),
            now,
        );
        let obs = st.autoscale_observation();
        assert_eq!(
            (obs.backlog, obs.completed),
            (6, 0),
            "3 to measure, 3 to write"
        );
        let lease = st.ready(w, 1, now).leases[0].1.lease_id;
        let measured = |path: &str| {
            let mut r = Record::bare(path, Status::Ok, None);
            let raw = raw_stats(Pixels::U8(&[3, 9]), 1);
            r.width = Some(2);
            r.height = Some(1);
            r.channels = Some(1);
            r.bit_depth = Some(raw.bit_depth);
            r.min = raw.channels.iter().map(|c| c.min).collect();
            r.max = raw.channels.iter().map(|c| c.max).collect();
            (r, Some(raw))
        };
        let (r, raw) = measured("a.png");
        st.image_done(w, "job-1.stats", lease, 1, 0, r, None, raw, now)
            .expect("accepted");
        let bad = Record::bare("b.png", Status::Failed, Some("decode error".into()));
        st.image_done(w, "job-1.stats", lease, 1, 1, bad, None, None, now)
            .expect("accepted");
        let obs = st.autoscale_observation();
        assert_eq!(
            (obs.backlog, obs.completed),
            (3, 2),
            "1 to measure, 2 to write"
        );
        assert_eq!(st.jobs[&1].rows_final(), 1, "b.png is final");
        let (r, raw) = measured("c.png");
        st.image_done(w, "job-1.stats", lease, 1, 2, r, None, raw, now)
            .expect("accepted");
        assert_eq!(st.jobs[&1].two.phase, Phase::Write);
        let obs = st.autoscale_observation();
        assert_eq!((obs.backlog, obs.completed), (2, 3), "a and c to write");
        assert_eq!(st.jobs[&1].rows_final(), 1, "no drop at the switch");
        st.lease_done(w, lease, now);
        let fx = st.ready(w, 1, now);
        let lease = fx.leases[0].1.lease_id;
        let stats = || Some(stats_of(&[0.0, 1.0]));
        st.image_done(
            w,
            "job-1",
            lease,
            1,
            0,
            ok_record("a.png"),
            stats(),
            None,
            now,
        )
        .expect("accepted");
        let obs = st.autoscale_observation();
        assert_eq!((obs.backlog, obs.completed), (1, 4));
        assert_eq!(st.jobs[&1].rows_final(), 2);
    }
}
