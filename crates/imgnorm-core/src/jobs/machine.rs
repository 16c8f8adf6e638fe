//! [`Jobs`]: the state machine's tables (workers and their credits, jobs,
//! the scheduler) and the transitions that add, restore, list, cancel and
//! end jobs and that follow workers (register, ready, heartbeat, lost).
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::autoscale::Observation;
use crate::dataset::DatasetParams;
use crate::ids::{JobId, LeaseId, WorkerId};
use crate::options::EngineOptions;
use crate::record::{Counts, Record, Status};
use crate::scheduler::{JobProgress, Scheduler, WorkerState, WorkerView};
use crate::stats::OrderedFold;

use super::history::{History, WorkerEventKind};
use super::run::{JobParts, JobRun};
use super::{
    Effect, Effects, JobKey, JobState, MAX_DEAD_WORKERS, Phase, PhaseJob, ResultRow, Transfer,
    WorkerInfo,
};

/// Most credits a worker may hold (leases it asked for and not received).
const MAX_CREDITS: u32 = 64;

/// The master's job logic. See the module docs.
pub struct Jobs {
    pub(super) sched: Scheduler,
    /// Connected workers and the leases each still asked for.
    pub(super) credits: BTreeMap<WorkerId, u32>,
    pub(super) infos: HashMap<WorkerId, WorkerInfo>,
    /// Jobs by number, in submission order.
    pub jobs: BTreeMap<JobKey, JobRun>,
    /// The scheduler's id of each phase it runs, back to the typed phase.
    pub(super) phases: HashMap<JobId, PhaseJob>,
    next_worker: u64,
    /// The number the next job gets.
    pub next_job: u64,
    /// Worker histories, lease contents and progress samples (dashboard).
    pub history: History,
    /// Emit [`Effect::PersistResult`] (a state database is kept).
    pub(super) persist: bool,
    /// Dead workers, oldest death first (at most [`MAX_DEAD_WORKERS`]).
    dead: VecDeque<WorkerId>,
    /// Workers registered since the master started.
    registered: u64,
    /// Image passes completed since the master started, in every phase of
    /// every job (accepted results and quarantines): only ever grows.
    pub(super) completed: u64,
}

/// A job submitted with its discovered files.
pub struct NewJob {
    /// Input root.
    pub input: PathBuf,
    /// Output root.
    pub output: PathBuf,
    /// Data path.
    pub transfer: Transfer,
    /// Engine options.
    pub options: EngineOptions,
    /// Relative paths, sorted.
    pub files: Vec<String>,
    /// Rows found at discovery.
    pub problems: Vec<Record>,
}

/// An unfinished job read back from the state database, its results
/// already checked against the outputs.
pub struct RestoredJob {
    /// Its number (kept).
    pub key: JobKey,
    /// The job as submitted.
    pub job: NewJob,
    /// Parameters fixed by a completed statistics phase.
    pub params: Option<DatasetParams>,
    /// Results kept.
    pub results: Vec<ResultRow>,
    /// When it was first submitted.
    pub submitted: Instant,
}

/// A finished job read back from the state database, listed for status.
pub struct ListedJob {
    /// Its number.
    pub key: JobKey,
    /// Input root.
    pub input: PathBuf,
    /// Output root.
    pub output: PathBuf,
    /// Data path.
    pub transfer: Transfer,
    /// Engine options.
    pub options: EngineOptions,
    /// Done, failed or cancelled.
    pub state: JobState,
    /// Its counts, when it ended with a summary.
    pub counts: Option<Counts>,
    /// Why it failed.
    pub error: Option<String>,
    /// Images, discovery rows included.
    pub images: u64,
    /// When it was submitted.
    pub submitted: Instant,
    /// When it ended.
    pub finished: Instant,
}

impl Jobs {
    /// No job, no worker, around `sched`.
    pub fn new(sched: Scheduler) -> Jobs {
        Jobs {
            sched,
            credits: BTreeMap::new(),
            infos: HashMap::new(),
            jobs: BTreeMap::new(),
            phases: HashMap::new(),
            next_worker: 1,
            next_job: 1,
            history: History::default(),
            persist: false,
            dead: VecDeque::new(),
            registered: 0,
            completed: 0,
        }
    }

    /// Emits [`Effect::PersistResult`] from now on (a state database is kept).
    pub fn set_persistent(&mut self, on: bool) {
        self.persist = on;
    }

    /// New jobs are numbered after `key` (stored numbers are never reused:
    /// job outputs may be named after them).
    pub fn reserve_keys(&mut self, key: JobKey) {
        self.next_job = self.next_job.max(key.0 + 1);
    }

    /// The scheduler's id of a phase (recorded so its events map back).
    pub(super) fn sched_id(&mut self, pj: PhaseJob) -> JobId {
        let id = JobId(pj.name());
        self.phases.insert(id.clone(), pj);
        id
    }

    /// The typed phase of a scheduler id.
    pub(super) fn phase_of(&self, id: &JobId) -> Option<PhaseJob> {
        self.phases.get(id).copied()
    }

    /// Registers a worker that said `Hello`; it has no credit yet.
    pub fn register(&mut self, info: WorkerInfo, now: Instant) -> WorkerId {
        let id = WorkerId(self.next_worker);
        self.next_worker += 1;
        self.registered += 1;
        // A fresh id cannot be registered already.
        let _ = self.sched.register(id, now);
        self.infos.insert(id, info);
        self.history.worker_event(id, WorkerEventKind::Joined, now);
        self.credits.insert(id, 0);
        id
    }

    /// Remembers a dead worker for the dashboard and status; beyond
    /// [`MAX_DEAD_WORKERS`], the longest dead is forgotten (autoscaled pools
    /// and restarts would otherwise grow the master forever), and so are the
    /// lease records no worker holds any more.
    pub(super) fn bury(&mut self, w: WorkerId) {
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

    /// Adds a job whose files were discovered; its first phase is queued.
    pub fn add_job(&mut self, job: NewJob, now: Instant) -> (JobKey, Effects) {
        let key = JobKey(self.next_job);
        self.next_job += 1;
        let n = job.files.len() as u64;
        let run = self.new_run(key, job, now);
        let mut fx = Effects::default();
        fx.push(Effect::PersistJob(key));
        fx.merge(self.schedule(run, n, now));
        (key, fx)
    }

    /// Adds a job some of whose files keep an earlier run's row (a rerun
    /// into the same output, see [`crate::rerun`]): the `kept` rows (writing
    /// phase, with their statistics) are final from the start and only the
    /// other files are leased, so workers never see a kept file. For
    /// single-phase jobs; a two-phase job keeps nothing (its `kept` rows are
    /// ignored and every file is processed).
    pub fn add_job_kept(
        &mut self,
        job: NewJob,
        kept: Vec<ResultRow>,
        now: Instant,
    ) -> (JobKey, Effects) {
        if kept.is_empty() || job.options.two_phase() {
            return self.add_job(job, now);
        }
        let key = JobKey(self.next_job);
        self.next_job += 1;
        let n = job.files.len();
        let mut run = self.new_run(key, job, now);
        let kept = kept
            .into_iter()
            .filter(|r| (r.index as usize) < n && r.phase == Phase::Write)
            .map(|mut r| {
                r.job = key;
                r
            })
            .collect();
        restore_write_phase(&mut run, None, kept);
        let pending = run.two.items.as_ref().map_or(n, Vec::len) as u64;
        let mut fx = Effects::default();
        fx.push(Effect::PersistJob(key));
        fx.merge(self.schedule(run, pending, now));
        (key, fx)
    }

    fn new_run(&self, key: JobKey, job: NewJob, submitted: Instant) -> JobRun {
        JobRun::new(JobParts {
            key,
            input: job.input,
            output: job.output,
            transfer: job.transfer,
            options: job.options,
            files: Arc::new(job.files),
            problems: job.problems,
            submitted,
            state: self.initial_state(),
        })
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
    fn schedule(&mut self, job: JobRun, items: u64, now: Instant) -> Effects {
        let sched_id = self.sched_id(job.phase_job());
        // The dashboard lists discovery problems first among the failures.
        for p in job.problems.iter().filter(|p| p.status == Status::Failed) {
            let reason = p.reason.as_deref().unwrap_or("");
            self.history.failure(&job.id.0, &p.path, reason, 0);
        }
        self.jobs.insert(job.key, job);
        let events = self.sched.add_job(sched_id, items, now).unwrap_or_default();
        let mut fx = self.apply(events, now);
        fx.merge(self.dispatch_all(now));
        fx
    }

    /// Puts back an unfinished job read from the state database. Items with
    /// a result are final; the scheduler job of the current phase covers the
    /// others. Returns the images left to the current phase.
    pub fn restore_job(&mut self, saved: RestoredJob, now: Instant) -> (u64, Effects) {
        let key = saved.key;
        self.reserve_keys(key);
        let n = saved.job.files.len();
        let mut job = self.new_run(key, saved.job, saved.submitted);
        let (stats_rows, write_rows): (Vec<ResultRow>, Vec<ResultRow>) = saved
            .results
            .into_iter()
            .filter(|r| (r.index as usize) < n)
            .partition(|r| r.phase == Phase::Stats);
        // Statistics phase: rows not `ok` there are final.
        let mut seen = vec![false; n];
        let mut raws = Vec::new();
        for r in stats_rows {
            let i = r.index as usize;
            seen[i] = true;
            if r.record.status == Status::Ok {
                raws.push((r.index, r.raw));
            } else {
                job.provenance[i] = Some(r.provenance());
                job.counts.add(r.record.status);
                job.records[i] = Some(r.record);
            }
        }
        if job.two.phase == Phase::Stats && saved.params.is_none() {
            restore_stats_phase(&mut job, raws, &seen);
        } else {
            restore_write_phase(&mut job, saved.params, write_rows);
        }
        let pending = job.two.items.as_ref().map_or(n, Vec::len) as u64;
        (pending, self.schedule(job, pending, now))
    }

    /// Lists a job that an earlier master finished (done, failed or
    /// cancelled), so that status and the dashboard still show it.
    pub fn list_finished(&mut self, l: ListedJob) {
        self.reserve_keys(l.key);
        let mut job = JobRun::new(JobParts {
            key: l.key,
            input: l.input,
            output: l.output,
            transfer: l.transfer,
            options: l.options,
            files: Arc::new(Vec::new()),
            problems: Vec::new(),
            submitted: l.submitted,
            state: l.state,
        });
        if let Some(c) = l.counts {
            job.counts = c;
        }
        job.finished = Some(l.finished);
        job.error = l.error;
        job.listed_images = Some(l.images);
        self.jobs.insert(l.key, job);
    }

    /// Cancels a job: pending work dropped, leases revoked. `None`: no such
    /// job, or it has ended, or it is writing its dataset (then it ends done
    /// or failed, never cancelled halfway through its manifest).
    pub fn cancel(&mut self, key: JobKey, now: Instant) -> Option<Effects> {
        let job = self.jobs.get_mut(&key)?;
        if job.state.is_final() || job.finished.is_some() {
            return None;
        }
        job.state = JobState::Cancelled;
        job.finished = Some(now);
        let mut fx = Effects::default();
        fx.push(Effect::PersistEnd {
            key,
            state: JobState::Cancelled,
            error: None,
        });
        fx.merge(self.release(key, now));
        self.promote_next();
        Some(fx)
    }

    /// The dataset of `key` was written (`Ok`) or could not be (`Err`): the
    /// job is done (or failed) and the next queued one starts.
    pub fn finished(&mut self, key: JobKey, result: Result<(), String>, now: Instant) -> Effects {
        let mut fx = Effects::default();
        if let Some(j) = self.jobs.get_mut(&key) {
            match result {
                Ok(()) => j.state = JobState::Done,
                Err(e) => {
                    j.state = JobState::Failed;
                    j.error = Some(e);
                }
            }
            j.finished.get_or_insert(now);
            fx.push(Effect::PersistEnd {
                key,
                state: j.state,
                error: j.error.clone(),
            });
        }
        fx.merge(self.release(key, now));
        self.promote_next();
        fx.merge(self.dispatch_all(now));
        fx
    }

    fn promote_next(&mut self) {
        if self.jobs.values().any(|j| j.state == JobState::Running) {
            return;
        }
        if let Some(j) = self.jobs.values_mut().find(|j| j.state == JobState::Queued) {
            j.state = JobState::Running;
        }
    }

    /// Frees what an ended job no longer needs: its per-image state, the
    /// scheduler's record of it (its leases revoked: the only effects
    /// returned) and its lease history. What stays is bounded whatever the
    /// job's size: its counts, options, first failures and progress samples.
    fn release(&mut self, key: JobKey, now: Instant) -> Effects {
        let Some(j) = self.jobs.get_mut(&key) else {
            return Effects::default();
        };
        j.release();
        let pj = j.phase_job();
        let sched_id = JobId(pj.name());
        let events = self.sched.cancel_job(&sched_id).unwrap_or_default();
        let mut fx = self.apply(events, now);
        self.phases.remove(&sched_id);
        fx.effects
            .retain(|e| matches!(e, Effect::Revoke { .. } | Effect::WorkerDead { .. }));
        self.history.forget_job_leases(key);
        fx
    }

    /// Any message from a worker proves it alive.
    pub fn touch(&mut self, w: WorkerId, now: Instant) -> bool {
        self.sched.heartbeat(w, now).is_ok()
    }

    /// A heartbeat, possibly announcing a drain; `true` when a drain was
    /// recorded.
    pub fn heartbeat(&mut self, w: WorkerId, draining: bool, now: Instant) -> bool {
        if self.touch(w, now) && draining {
            self.history.worker_event(w, WorkerEventKind::Draining, now);
            let _ = self.sched.set_draining(w);
            return true;
        }
        false
    }

    /// The worker wants `credits` more leases.
    pub fn ready(&mut self, w: WorkerId, credits: u32, now: Instant) -> Effects {
        if let Some(c) = self.credits.get_mut(&w) {
            *c = c.saturating_add(credits).min(MAX_CREDITS);
        }
        self.dispatch(w, now)
    }

    /// The worker closed a lease (done, or handed back on shutdown).
    pub fn lease_done(&mut self, w: WorkerId, lease: LeaseId, now: Instant) -> Effects {
        let events = self.sched.finish_lease(w, lease, now).unwrap_or_default();
        if self.sched.lease_facts(lease).is_none() {
            self.history.forget_lease(lease.0);
        }
        let mut fx = self.apply(events, now);
        fx.merge(self.dispatch_all(now));
        fx
    }

    /// The worker's connection ended.
    pub fn disconnect(&mut self, w: WorkerId, now: Instant) -> Effects {
        self.credits.remove(&w);
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

    /// Progress of a job's current phase as the scheduler sees it.
    pub fn progress(&self, key: JobKey) -> Option<JobProgress> {
        let j = self.jobs.get(&key)?;
        self.sched.job_progress(&JobId(j.phase_job().name()))
    }

    /// Every worker ever seen (less the forgotten), as the scheduler sees it.
    pub fn worker_views(&self) -> impl Iterator<Item = WorkerView> + '_ {
        self.sched.workers()
    }

    /// A worker's self-description.
    pub fn worker_info(&self, w: WorkerId) -> Option<&WorkerInfo> {
        self.infos.get(&w)
    }

    /// Workers ever registered (dead and forgotten ones included).
    pub fn workers_seen(&self) -> usize {
        self.registered as usize
    }

    /// Workers connected now, with the credits each holds.
    pub fn connected(&self) -> impl Iterator<Item = (WorkerId, u32)> + '_ {
        self.credits.iter().map(|(w, c)| (*w, *c))
    }

    /// What the autoscaler sees: the work left over unfinished jobs, the
    /// work completed so far (monotonic), and workers taking work. Work is
    /// counted in image passes: a two-phase job passes each image once per
    /// phase, so in its statistics phase its backlog is what that phase has
    /// left plus every image the writing phase may still have to write.
    pub fn autoscale_observation(&self) -> Observation {
        let mut o = Observation {
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
}

/// A resumed statistics phase: the stored raw statistics are folded and
/// the phase covers the items without a stored result.
fn restore_stats_phase(
    job: &mut JobRun,
    raws: Vec<(u64, Option<crate::dataset::RawStats>)>,
    seen: &[bool],
) {
    let two = &mut job.two;
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
    let n = seen.len() as u64;
    two.items = Some((0..n).filter(|&i| !seen[i as usize]).collect());
}

/// A resumed writing phase (of a single-phase job, or after a completed
/// statistics phase): stored results are final, the phase covers the rest.
fn restore_write_phase(
    job: &mut JobRun,
    params: Option<DatasetParams>,
    write_rows: Vec<ResultRow>,
) {
    let two = &mut job.two;
    if let Some(params) = params {
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
        job.provenance[i] = Some(r.provenance());
        job.counts.add(r.record.status);
        job.records[i] = Some(r.record);
    }
    let n = job.records.len() as u64;
    job.two.items = Some(
        (0..n)
            .filter(|&i| job.records[i as usize].is_none())
            .collect(),
    );
}
