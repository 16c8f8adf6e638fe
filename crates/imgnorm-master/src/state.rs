//! The runtime around the pure job logic ([`Jobs`]): the workers' outgoing
//! channels, the state database, output claims and reservations, and the
//! summaries of written datasets. Each method feeds one event to [`Jobs`]
//! and applies its effects: revokes are sent and rows persisted at once
//! (unbounded channels, so nothing blocks under the lock); leases and
//! dataset writes are returned to the caller as [`Effects`] to apply after
//! the lock is released. The lock is a `std::sync::Mutex` held only for
//! short, non-blocking sections.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imgnorm_core::ids::{JobId, LeaseId, WorkerId};
use imgnorm_core::jobs::{self, Effect, ImageResult, JobKey, Jobs, NewJob, RestoredJob};
use imgnorm_core::options::EngineOptions;
use imgnorm_core::record::Counts;
use imgnorm_core::scheduler::{DeathReason, JobProgress, Scheduler, WorkerView};
use imgnorm_core::validate::Refusal;
use imgnorm_proto::v1 as pb;
use tokio::sync::mpsc::UnboundedSender;

use super::convert;
use super::store::{self, SavedJob, Store};
use crate::output::Summary;
use crate::wire::{self, Transfer};

pub use imgnorm_core::jobs::{
    JobRun, JobState, MAX_DEAD_WORKERS, Phase, Provenance, Rejected, TwoPhase, WorkerInfo,
};

/// What a session sends to its worker.
pub type Outbox = UnboundedSender<Result<pb::MasterMessage, tonic::Status>>;

/// The master's state. See the module docs.
pub struct State {
    /// The job logic.
    pub core: Jobs,
    outboxes: HashMap<WorkerId, Outbox>,
    heartbeat_interval: Duration,
    /// Where jobs and accepted results are persisted (`--data-dir`).
    store: Option<Store>,
    /// Outputs of jobs being submitted (discovery and `prepare` run before
    /// the job is added): no other job may take them meanwhile.
    reserved_outputs: Vec<PathBuf>,
    /// Each unfinished job's output folder, held from before the job
    /// touched it until it ends (see [`crate::claim`]).
    pub claims: HashMap<JobKey, crate::claim::OutputClaim>,
    /// The summary of each job whose dataset was written.
    pub summaries: HashMap<JobKey, Summary>,
    /// Each unfinished job's input stamps and rerun report (see
    /// [`crate::rerun`]), written out with its dataset. A job resumed by a
    /// later master has none: its stamps are then taken when it finishes.
    pub reruns: HashMap<JobKey, RerunState>,
}

/// What a job's setup decided that its dataset is finished with.
pub struct RerunState {
    /// Per file, the stamp [`crate::rerun::INPUTS`] records.
    pub stamps: Vec<Option<imgnorm_core::rerun::InputStamp>>,
    /// What a rerun kept and processed (`None` into an empty folder).
    pub report: Option<crate::rerun::Report>,
}

/// A finished job that must be written out (outside the lock).
pub struct ToFinalize {
    /// The job.
    pub key: JobKey,
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

/// Where a stream-mode output goes (see [`State::stream_target`]).
pub struct StreamTarget {
    /// The job's output tree root.
    pub root: PathBuf,
    /// `<path>.npy`, relative to `root`.
    pub rel: String,
    /// Largest output the job's options allow.
    pub max_bytes: u64,
}

impl State {
    /// New state around `sched`.
    pub fn new(sched: Scheduler, heartbeat_interval: Duration) -> State {
        State {
            core: Jobs::new(sched),
            outboxes: HashMap::new(),
            heartbeat_interval,
            store: None,
            reserved_outputs: Vec::new(),
            claims: HashMap::new(),
            summaries: HashMap::new(),
            reruns: HashMap::new(),
        }
    }

    /// Who holds an output overlapping `out` (the same folder, or one
    /// inside the other): an unfinished job's id, or "a job being
    /// submitted". Two unfinished jobs never share an output.
    pub fn output_holder(&self, out: &std::path::Path) -> Option<String> {
        let overlap = |o: &std::path::Path| crate::claim::overlap(o, out);
        if let Some(j) = self
            .core
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

    /// Persists jobs and results from now on.
    pub fn set_store(&mut self, store: Store) {
        self.store = Some(store);
        self.core.set_persistent(true);
    }

    /// The state database, when there is one.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// New jobs are numbered after `key` (numbers stored in the state
    /// database are never reused: job outputs may be named after them).
    pub fn reserve_keys(&mut self, key: u64) {
        self.core.reserve_keys(JobKey(key));
    }

    /// Applies the effects of one transition: revokes sent, rows persisted,
    /// dead workers' channels dropped, logs written; leases and dataset
    /// writes returned for the caller.
    fn absorb(&mut self, fx: jobs::Effects) -> Effects {
        let mut out = Effects {
            accepted: fx.accepted,
            stats_result: fx.stats_result,
            ..Effects::default()
        };
        for e in fx.effects {
            match e {
                Effect::SendLease(order) => {
                    let (Some(tx), Some(j)) = (
                        self.outboxes.get(&order.worker),
                        self.core.jobs.get(&order.job.key),
                    ) else {
                        continue;
                    };
                    let (transfer, input) = (j.transfer, j.input.clone());
                    out.leases
                        .push((tx.clone(), convert::lease(order, j), transfer, input));
                }
                Effect::Revoke { worker, job, lease } => {
                    if let Some(tx) = self.outboxes.get(&worker) {
                        let _ = tx.send(Ok(convert::revoke(job, lease.0)));
                    }
                }
                Effect::WorkerDead {
                    worker,
                    reason,
                    requeued,
                } => {
                    match reason {
                        DeathReason::Disconnected => {
                            tracing::info!(worker = %worker, requeued, "worker disconnected")
                        }
                        DeathReason::Timeout => {
                            tracing::warn!(worker = %worker, requeued, "worker silent past the heartbeat timeout: declared dead")
                        }
                    }
                    // Dropping the sender ends the worker's response stream.
                    self.outboxes.remove(&worker);
                }
                Effect::Quarantined { job, path, crashes } => {
                    tracing::warn!(job = %job.name(), path = %path, crashes, "image quarantined");
                }
                Effect::WriteDataset(key) => out.finalize.push(ToFinalize { key }),
                Effect::PersistJob(key) => self.persist_job(key),
                Effect::PersistResult(row) => {
                    if let Some(store) = &self.store {
                        store.result(*row);
                    }
                }
                Effect::PersistPhase {
                    key,
                    params,
                    images,
                } => {
                    tracing::info!(job = %key, images, params = ?params, "statistics phase done: writing");
                    if let Some(store) = &self.store {
                        store.phase_done(key, &params);
                    }
                }
                Effect::PersistEnd { key, state, error } => {
                    if let Some(store) = &self.store {
                        let summary = self
                            .summaries
                            .get(&key)
                            .and_then(|s| serde_json::to_string(s).ok());
                        store.end(key, state.as_str(), error, summary);
                    }
                }
            }
        }
        out
    }

    fn persist_job(&self, key: JobKey) {
        let (Some(store), Some(j)) = (&self.store, self.core.jobs.get(&key)) else {
            return;
        };
        store.job(store::NewJob {
            key,
            input: j.input.display().to_string(),
            output: j.output.display().to_string(),
            transfer: j.transfer.as_str().to_string(),
            options_json: wire::options_to_json(&j.options),
            files: Arc::clone(&j.files),
            problems: j.problems.clone(),
            submitted_unix: store::unix_now(),
        });
    }

    /// Registers a worker that said `Hello`; returns its id and the `Welcome`.
    pub fn register(
        &mut self,
        info: WorkerInfo,
        tx: Outbox,
        now: Instant,
    ) -> (WorkerId, pb::Welcome) {
        tracing::info!(name = %info.name, host = %info.hostname, "worker joined");
        let id = self.core.register(info, now);
        self.outboxes.insert(id, tx);
        (id, convert::welcome(id, self.heartbeat_interval))
    }

    /// Adds a job; the caller already discovered its files.
    pub fn add_job(&mut self, job: NewJob, now: Instant) -> (JobId, Effects) {
        let (key, fx) = self.core.add_job(job, now);
        (JobId(key.to_string()), self.absorb(fx))
    }

    /// Adds a job whose `kept` rows an earlier run in its output already
    /// has (see [`Jobs::add_job_kept`]).
    pub fn add_job_kept(
        &mut self,
        job: NewJob,
        kept: Vec<imgnorm_core::jobs::ResultRow>,
        now: Instant,
    ) -> (JobId, Effects) {
        let (key, fx) = self.core.add_job_kept(job, kept, now);
        (JobId(key.to_string()), self.absorb(fx))
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
        let key = JobKey(saved.key);
        let n = saved.files.len();
        let restored = RestoredJob {
            key,
            job: NewJob {
                input: saved.input,
                output: saved.output,
                transfer,
                options,
                files: saved.files,
                problems: saved.problems,
            },
            params: saved.params,
            results: saved.results,
            submitted,
        };
        let (pending, fx) = self.core.restore_job(restored, now);
        let phase = self
            .core
            .jobs
            .get(&key)
            .map_or("write", |j| j.two.phase.as_str());
        tracing::info!(job = %key, images = n, pending, phase, "job resumed");
        (JobId(key.to_string()), self.absorb(fx))
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
        let key = JobKey(saved.key);
        let state = match saved.state.as_str() {
            "done" => JobState::Done,
            "cancelled" => JobState::Cancelled,
            _ => JobState::Failed,
        };
        if let Some(s) = saved.summary {
            self.summaries.insert(key, s);
        }
        self.core.list_finished(jobs::ListedJob {
            key,
            input: saved.input,
            output: saved.output,
            transfer,
            options,
            state,
            counts: saved.summary.map(|s| Counts {
                images: s.images,
                ok: s.ok,
                failed: s.failed,
                skipped: s.skipped,
            }),
            error: saved.error,
            images: saved.images,
            submitted,
            finished,
        });
    }

    /// Cancels a job: pending work dropped, leases revoked.
    pub fn cancel(&mut self, id: &JobId, now: Instant) -> bool {
        let Some(key) = convert::job_key(id) else {
            return false;
        };
        let Some(fx) = self.core.cancel(key, now) else {
            return false;
        };
        let _ = self.absorb(fx);
        self.claims.remove(&key);
        self.reruns.remove(&key);
        true
    }

    /// Any message from a worker proves it alive.
    pub fn touch(&mut self, w: WorkerId, now: Instant) -> bool {
        self.core.touch(w, now)
    }

    /// A heartbeat, possibly announcing a drain.
    pub fn heartbeat(&mut self, w: WorkerId, draining: bool, now: Instant) {
        if self.core.heartbeat(w, draining, now) {
            tracing::info!(worker = %w, "worker draining");
        }
    }

    /// The worker wants `credits` more leases.
    pub fn ready(&mut self, w: WorkerId, credits: u32, now: Instant) -> Effects {
        let fx = self.core.ready(w, credits, now);
        self.absorb(fx)
    }

    /// A result for one image (see [`Jobs::image_done`]).
    pub fn image_done(&mut self, r: ImageResult, now: Instant) -> Result<Effects, Rejected> {
        let fx = self.core.image_done(r, now)?;
        Ok(self.absorb(fx))
    }

    /// Input file of a stream-mode job's item (`ReadInput`); `None` for
    /// jobs of another mode, unknown items, and paths that could leave the
    /// input root.
    pub fn input_path(&self, job: &str, index: u64) -> Option<PathBuf> {
        self.core.input_path(convert::phase_job(job)?.key, index)
    }

    /// Where a stream-mode output chunk from worker `w` goes. `Ok(None)`: a
    /// late chunk (its job or lease is over); `Err`: a chunk an honest
    /// worker never sends (see [`Jobs::stream_slot`]).
    pub fn stream_target(
        &self,
        w: WorkerId,
        job: &str,
        lease: u64,
        index: u64,
    ) -> Result<Option<StreamTarget>, Refusal> {
        let Some(pj) = convert::phase_job(job) else {
            return Ok(None);
        };
        let Some(slot) = self.core.stream_slot(w, pj, lease, index)? else {
            return Ok(None);
        };
        let Some(j) = self.core.jobs.get(&pj.key) else {
            return Ok(None);
        };
        Ok(Some(StreamTarget {
            root: crate::formats::tree_root(&slot.output, &j.options.format),
            rel: slot.rel,
            max_bytes: crate::limits::max_npy_bytes(&j.options),
        }))
    }

    /// Output root and transfer mode of a job.
    pub fn output_of(&self, job: &str) -> Option<(PathBuf, Transfer)> {
        let key = convert::phase_job(job)?.key;
        self.core
            .jobs
            .get(&key)
            .map(|j| (j.output.clone(), j.transfer))
    }

    /// The master wrote a streamed result's output: its statistics count.
    /// Returns the job to finalize when this was the last output it waited
    /// for.
    pub fn stream_committed(&mut self, job: &str, index: u64) -> Effects {
        let Some(pj) = convert::phase_job(job) else {
            return Effects::default();
        };
        let fx = self.core.stream_committed(pj.key, index);
        self.absorb(fx)
    }

    /// The master could not write a streamed result: the row becomes failed.
    /// Returns the job to finalize when this was the last output it waited
    /// for.
    pub fn write_failed(&mut self, job: &str, index: u64, error: &str) -> Effects {
        let Some(pj) = convert::phase_job(job) else {
            return Effects::default();
        };
        let fx = self.core.write_failed(pj.key, index, error);
        self.absorb(fx)
    }

    /// The worker closed a lease (done, or handed back on shutdown).
    pub fn lease_done(&mut self, w: WorkerId, lease: u64, now: Instant) -> Effects {
        let fx = self.core.lease_done(w, LeaseId(lease), now);
        self.absorb(fx)
    }

    /// The worker's stream ended.
    pub fn disconnect(&mut self, w: WorkerId, now: Instant) -> Effects {
        self.outboxes.remove(&w);
        let fx = self.core.disconnect(w, now);
        self.absorb(fx)
    }

    /// Periodic expiry of silent workers.
    pub fn tick(&mut self, now: Instant) -> Effects {
        let fx = self.core.tick(now);
        self.absorb(fx)
    }

    /// Progress of a job's current phase as the scheduler sees it.
    pub fn progress(&self, key: JobKey) -> Option<JobProgress> {
        self.core.progress(key)
    }

    /// Every worker ever seen, as the scheduler sees it.
    pub fn worker_views(&self) -> impl Iterator<Item = WorkerView> + '_ {
        self.core.worker_views()
    }

    /// A worker's self-description.
    pub fn worker_info(&self, w: WorkerId) -> Option<&WorkerInfo> {
        self.core.worker_info(w)
    }

    /// What the autoscaler sees (see [`Jobs::autoscale_observation`]).
    pub fn autoscale_observation(&self) -> imgnorm_core::autoscale::Observation {
        self.core.autoscale_observation()
    }

    /// Workers ever registered with this master (dead ones included, the
    /// forgotten ones too).
    pub fn workers_seen(&self) -> usize {
        self.core.workers_seen()
    }

    /// Status of every worker ever seen.
    pub fn worker_status(&self, now: Instant) -> Vec<pb::WorkerStatus> {
        self.core
            .worker_views()
            .map(|v| {
                let info = self.core.worker_info(v.id).cloned().unwrap_or_default();
                convert::worker_status(&v, info, now)
            })
            .collect()
    }

    /// Marks a finalized job done (or failed) and starts the next queued one.
    pub fn finished(
        &mut self,
        key: JobKey,
        result: Result<Summary, String>,
        now: Instant,
    ) -> Effects {
        let result = result.map(|s| {
            self.summaries.insert(key, s);
        });
        let fx = self.core.finished(key, result, now);
        let fx = self.absorb(fx);
        self.claims.remove(&key);
        self.reruns.remove(&key);
        fx
    }

    /// The summary of a job whose dataset was written.
    pub fn summary(&self, key: JobKey) -> Option<Summary> {
        self.summaries.get(&key).copied()
    }
}

#[cfg(test)]
mod tests;
