//! The lease scheduler: a pure, synchronous state machine that decides which
//! worker processes which images of which job. It owns job progress, worker
//! liveness and the set of active leases; it never sleeps, reads a clock or
//! touches the network. Time comes in as `now`, and every decision the caller
//! must act on (a dead worker, a revoked copy, a finished job) comes back as an
//! [`Event`].
//!
//! A job is `N` images, named by their index `0..N` (the master maps indexes to
//! paths). Work is handed out as [`Lease`]s: a batch of indexes, for one worker,
//! with a fresh [`LeaseId`] and an attempt number. Results are reported per
//! image with [`Scheduler::complete_item`]; only an
//! [`ItemVerdict::Accepted`] result may be recorded, which guarantees that every
//! image is counted exactly once and that a late result (from a worker that was
//! declared dead, or for a revoked copy) never overwrites a newer one.
//!
//! # Lifecycle of an image (and of the lease that carries it)
//!
//! ```text
//!             lease(): cut in ascending order, smaller near the tail
//!   Pending ─────────────────────────────────────────────► Leased (attempt n)
//!      ▲                                                    │
//!      │ finish_lease() with items left (Requeued;          ├─ complete_item(): first result ───► Completed
//!      └──── next hand-out of the batch is attempt n+1) ◄───┤  per image Accepted, later ones      ▲
//!                                                           │  Discarded                          │
//!      idle worker, nothing pending: Speculative copy   ◄───┤                                     │
//!      (attempt n+1); first result per image wins ──────────┼─────────────────────────────────────┤
//!      once the batch is done, the other copy is Revoked    │                                     │
//!                                                           │ holder dies (disconnect / timeout)  │
//!                                                           ▼                                     │
//!                 Suspect: leased alone, before any Pending work ── completes ────────────────────┤
//!                   │ given back unfinished: stays Suspect                                        │
//!                   └─ holder dies: crashes += 1; at max_crashes ──────► Quarantined ───────────┘
//!                                                                          (completed as failed)
//! ```
//!
//! Only the items of a dead worker's lease that are not completed go back, and
//! none do while a speculative twin of that lease is still alive (the twin
//! keeps them). A job whose images are all completed (accepted or quarantined)
//! emits [`Event::JobComplete`] exactly once. A job with no live worker simply
//! waits.
//!
//! # Cost
//!
//! Pending work is a cursor over the never-leased suffix of the job plus
//! queues of explicit re-queued item lists and suspects; completion is one bit
//! per image. Leasing, completing and finishing cost `O(batch + log n)`.
//! [`Scheduler::tick`] is `O(workers)` plus the leases of the dead, and looking
//! for a straggler to copy is `O(active leases)` (only done once no work is
//! pending).
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::ids::{BatchId, JobId, LeaseId, WorkerId};

#[cfg(test)]
mod tests;

/// Tunables of the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Largest batch handed out in one lease (default 64).
    pub batch_size: u64,
    /// Smallest batch cut from fresh work while at least that much remains
    /// (default 1). The batch size shrinks toward this at the tail of a job.
    pub min_batch_size: u64,
    /// A worker not heard from for longer than this is declared dead by
    /// [`Scheduler::tick`] (default 10 s).
    pub heartbeat_timeout: Duration,
    /// A suspect image whose single-image lease died with its worker this many
    /// times is quarantined (default 3).
    pub max_crashes: u32,
    /// Hand idle workers speculative copies of straggling leases once nothing
    /// is pending (default true).
    pub speculate: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            batch_size: 64,
            min_batch_size: 1,
            heartbeat_timeout: Duration::from_secs(10),
            max_crashes: 3,
            speculate: true,
        }
    }
}

/// Errors of scheduler calls. Every variant carries the id it is about.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SchedError {
    /// A configuration value that must be at least 1 was 0.
    #[error("scheduler setting `{field}` must be at least 1")]
    ZeroSetting {
        /// Name of the offending [`SchedulerConfig`] field.
        field: &'static str,
    },
    /// `min_batch_size` is larger than `batch_size`.
    #[error("min_batch_size {min} exceeds batch_size {max}")]
    MinBatchAboveMax {
        /// The configured `min_batch_size`.
        min: u64,
        /// The configured `batch_size`.
        max: u64,
    },
    /// The worker never registered.
    #[error("unknown worker {0}")]
    UnknownWorker(WorkerId),
    /// The worker was declared dead; it must register again before anything
    /// it sends is taken into account.
    #[error("worker {0} was declared dead and must register again")]
    WorkerDead(WorkerId),
    /// `register` for a worker that is already alive (or draining).
    #[error("worker {0} is already registered")]
    AlreadyRegistered(WorkerId),
    /// `add_job` with an id that is already known.
    #[error("job {0} already exists")]
    DuplicateJob(JobId),
    /// The job is not known (never added, or cancelled).
    #[error("unknown job {0}")]
    UnknownJob(JobId),
    /// The lease is not active: finished, revoked, expired with its worker, or
    /// dropped with its job. Usually a benign race; the caller may ignore it.
    #[error("lease {lease} of worker {worker} is not active")]
    UnknownLease {
        /// The worker that named the lease.
        worker: WorkerId,
        /// The lease it named.
        lease: LeaseId,
    },
    /// The lease is active but held by another worker.
    #[error("lease {lease} is held by worker {holder}, not by {worker}")]
    NotLeaseHolder {
        /// The worker that named the lease.
        worker: WorkerId,
        /// The lease it named.
        lease: LeaseId,
        /// The worker actually holding it.
        holder: WorkerId,
    },
}

/// One hand-out of work to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Fresh for every hand-out; results name it.
    pub id: LeaseId,
    /// The job the images belong to.
    pub job: JobId,
    /// The batch this hand-out carries (kept across re-hand-outs).
    pub batch: BatchId,
    /// 1 for the first hand-out of a batch, +1 for each re-hand-out
    /// (re-queue, suspect isolation, speculative copy).
    pub attempt: u32,
    /// Image indexes within the job, ascending.
    pub items: Vec<u64>,
    /// True for a speculative copy of a lease another worker still holds.
    pub speculative: bool,
}

/// Why a worker was declared dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeathReason {
    /// Its stream dropped ([`Scheduler::disconnect`]).
    Disconnected,
    /// Not heard from within the heartbeat timeout ([`Scheduler::tick`]).
    Timeout,
}

/// Something the caller must act on or report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A worker was declared dead; its unfinished items went back to work.
    WorkerDead {
        /// The dead worker.
        worker: WorkerId,
        /// Disconnect or timeout.
        reason: DeathReason,
        /// How many of its items were re-queued (as suspects).
        requeued: usize,
    },
    /// Items of a closed lease went back to pending work.
    Requeued {
        /// Their job.
        job: JobId,
        /// The lease they were taken from.
        lease: LeaseId,
        /// How many items.
        items: usize,
    },
    /// An image crashed its worker `crashes` times; it now counts as completed
    /// and failed. Write a failed manifest row for it.
    Quarantined {
        /// Its job.
        job: JobId,
        /// Its index in the job.
        item: u64,
        /// How many single-image leases of it died with their worker.
        crashes: u32,
    },
    /// Tell `worker` to stop working on `lease`: its work is done elsewhere or
    /// its job was cancelled. Results it still sends are discarded.
    Revoke {
        /// The job of the revoked lease.
        job: JobId,
        /// The holder of the revoked lease.
        worker: WorkerId,
        /// The revoked lease.
        lease: LeaseId,
    },
    /// Every image of the job is completed (accepted or quarantined). Emitted
    /// exactly once per job.
    JobComplete(JobId),
}

/// Why a result was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiscardReason {
    /// The lease is not active: it expired with its worker, was revoked,
    /// finished, or its job was cancelled.
    UnknownLease,
    /// The lease is held by another worker.
    NotLeaseHolder,
    /// The image is not part of that lease.
    NotInLease,
    /// The image was already completed (e.g. by the other copy of a
    /// speculative lease).
    AlreadyCompleted,
}

/// Answer to [`Scheduler::complete_item`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemVerdict {
    /// The result is the first for this image: record it.
    Accepted {
        /// Follow-ups: [`Event::Revoke`] for a speculative twin made obsolete,
        /// [`Event::JobComplete`] if this was the job's last image.
        events: Vec<Event>,
    },
    /// Do not record this result.
    Discarded(DiscardReason),
}

/// Liveness of a worker as the scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkerState {
    /// Takes new leases.
    Alive,
    /// Finishes what it holds, gets no new lease.
    Draining,
    /// Declared dead; must register again.
    Dead,
}

/// Read-only snapshot of one worker, for status pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerView {
    /// The worker.
    pub id: WorkerId,
    /// Its liveness.
    pub state: WorkerState,
    /// The leases it holds, ascending.
    pub leases: Vec<LeaseId>,
    /// Results accepted from it over its lifetime (re-registrations included).
    pub items_done: u64,
    /// When it was last heard from.
    pub last_seen: Instant,
}

/// Read-only progress of one job. `completed + pending + in_flight == total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobProgress {
    /// Number of images.
    pub total: u64,
    /// Images completed, accepted or quarantined.
    pub completed: u64,
    /// Of `completed`, the images quarantined as failed.
    pub quarantined: u64,
    /// Images waiting for a lease, suspects included.
    pub pending: u64,
    /// Of `pending`, the suspects waiting to be leased alone.
    pub suspects: u64,
    /// Images held by active leases and not completed yet.
    pub in_flight: u64,
    /// Active leases of the job (speculative copies included).
    pub leases_active: usize,
    /// Image hand-outs beyond the first (re-queues, suspects, speculative
    /// copies).
    pub reissued: u64,
    /// When the job was added.
    pub added: Instant,
    /// True once [`Event::JobComplete`] was emitted.
    pub finished: bool,
}

/// One bit per image: set once completed.
#[derive(Debug, Default)]
struct Bitset {
    words: Vec<u64>,
}

impl Bitset {
    fn new(len: u64) -> Self {
        let words = usize::try_from(len.div_ceil(64)).unwrap_or(usize::MAX);
        Bitset {
            words: vec![0; words],
        }
    }

    fn get(&self, i: u64) -> bool {
        let word = usize::try_from(i / 64).ok();
        word.and_then(|w| self.words.get(w))
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Sets bit `i`; returns true if it was clear (and in range).
    fn insert(&mut self, i: u64) -> bool {
        let Some(word) = usize::try_from(i / 64)
            .ok()
            .and_then(|w| self.words.get_mut(w))
        else {
            return false;
        };
        let mask = 1 << (i % 64);
        let fresh = *word & mask == 0;
        *word |= mask;
        fresh
    }
}

/// Items of a closed lease, waiting to be handed out again as one lease.
#[derive(Debug)]
struct Requeue {
    batch: BatchId,
    last_attempt: u32,
    items: Vec<u64>,
}

/// An image whose worker died holding it; leased alone.
#[derive(Debug)]
struct Suspect {
    item: u64,
    batch: BatchId,
    last_attempt: u32,
}

#[derive(Debug)]
struct JobState {
    id: JobId,
    total: u64,
    added: Instant,
    /// Items `cursor..total` were never leased.
    cursor: u64,
    requeued: VecDeque<Requeue>,
    requeued_items: u64,
    suspects: VecDeque<Suspect>,
    /// Crash counts of suspect images (only those that crashed at least once).
    crashes: HashMap<u64, u32>,
    /// Completion bits; freed once the job is finished.
    done: Bitset,
    completed: u64,
    quarantined: u64,
    leases: BTreeSet<LeaseId>,
    reissued: u64,
    finished: bool,
}

impl JobState {
    fn is_done(&self, item: u64) -> bool {
        self.finished || self.done.get(item)
    }

    fn pending(&self) -> u64 {
        (self.total - self.cursor) + self.requeued_items + self.suspects.len() as u64
    }

    fn has_batch_work(&self) -> bool {
        self.cursor < self.total || !self.requeued.is_empty()
    }
}

/// What a lease carries, which decides where its leftovers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseKind {
    /// Fresh or re-queued batch work; may be copied speculatively.
    Batch,
    /// A single suspect image; its death counts as a crash.
    Suspect,
    /// A speculative copy of a `Batch` lease.
    Speculative,
}

#[derive(Debug)]
struct ActiveLease {
    worker: WorkerId,
    job: u64,
    batch: BatchId,
    /// Highest attempt issued for this batch known to this lease (its own, or
    /// its speculative copy's).
    last_attempt: u32,
    /// This hand-out's own attempt number.
    attempt: u32,
    kind: LeaseKind,
    /// Ascending.
    items: Vec<u64>,
    /// Items of `items` not completed yet.
    remaining: u64,
    /// The other copy, while both are active.
    twin: Option<LeaseId>,
}

#[derive(Debug)]
struct WorkerEntry {
    state: WorkerState,
    leases: BTreeSet<LeaseId>,
    items_done: u64,
    last_seen: Instant,
}

/// The scheduler state machine. See the [module docs](self).
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    /// Jobs by arrival order (FIFO).
    jobs: BTreeMap<u64, JobState>,
    job_seqs: HashMap<JobId, u64>,
    /// Jobs with suspects waiting.
    suspect_jobs: BTreeSet<u64>,
    /// Jobs with fresh or re-queued batch work waiting.
    work_jobs: BTreeSet<u64>,
    workers: BTreeMap<WorkerId, WorkerEntry>,
    leases: BTreeMap<LeaseId, ActiveLease>,
    /// Workers alive or draining.
    live: usize,
    /// Workers alive and not draining.
    assignable: usize,
    next_job: u64,
    next_lease: u64,
    next_batch: u64,
}

impl Scheduler {
    /// A scheduler with no jobs and no workers. Fails if `batch_size`,
    /// `min_batch_size` or `max_crashes` is 0, or `min_batch_size >
    /// batch_size`.
    pub fn new(config: SchedulerConfig) -> Result<Self, SchedError> {
        for (field, zero) in [
            ("batch_size", config.batch_size == 0),
            ("min_batch_size", config.min_batch_size == 0),
            ("max_crashes", config.max_crashes == 0),
        ] {
            if zero {
                return Err(SchedError::ZeroSetting { field });
            }
        }
        if config.min_batch_size > config.batch_size {
            return Err(SchedError::MinBatchAboveMax {
                min: config.min_batch_size,
                max: config.batch_size,
            });
        }
        Ok(Scheduler {
            config,
            jobs: BTreeMap::new(),
            job_seqs: HashMap::new(),
            suspect_jobs: BTreeSet::new(),
            work_jobs: BTreeSet::new(),
            workers: BTreeMap::new(),
            leases: BTreeMap::new(),
            live: 0,
            assignable: 0,
            next_job: 0,
            next_lease: 1,
            next_batch: 1,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    // ----- jobs -------------------------------------------------------------

    /// Queues a job of `images` images (indexes `0..images`) behind the jobs
    /// already queued. A job of 0 images is complete at once: the returned
    /// events then hold its [`Event::JobComplete`].
    pub fn add_job(
        &mut self,
        job: JobId,
        images: u64,
        now: Instant,
    ) -> Result<Vec<Event>, SchedError> {
        if self.job_seqs.contains_key(&job) {
            return Err(SchedError::DuplicateJob(job));
        }
        let seq = self.next_job;
        self.next_job += 1;
        self.job_seqs.insert(job.clone(), seq);
        self.jobs.insert(
            seq,
            JobState {
                id: job,
                total: images,
                added: now,
                cursor: 0,
                requeued: VecDeque::new(),
                requeued_items: 0,
                suspects: VecDeque::new(),
                crashes: HashMap::new(),
                done: Bitset::new(images),
                completed: 0,
                quarantined: 0,
                leases: BTreeSet::new(),
                reissued: 0,
                finished: false,
            },
        );
        let mut events = Vec::new();
        self.sync_ready(seq);
        self.check_complete(seq, &mut events);
        Ok(events)
    }

    /// Removes a job: its pending work is dropped and its active leases are
    /// revoked (the returned [`Event::Revoke`]s); results that still arrive for
    /// them are discarded. Also use it to forget a finished job.
    pub fn cancel_job(&mut self, job: &JobId) -> Result<Vec<Event>, SchedError> {
        let seq = self
            .job_seqs
            .remove(job)
            .ok_or_else(|| SchedError::UnknownJob(job.clone()))?;
        self.suspect_jobs.remove(&seq);
        self.work_jobs.remove(&seq);
        let Some(state) = self.jobs.remove(&seq) else {
            return Ok(Vec::new());
        };
        let mut events = Vec::new();
        for id in state.leases {
            if let Some(lease) = self.leases.remove(&id) {
                if let Some(w) = self.workers.get_mut(&lease.worker) {
                    w.leases.remove(&id);
                }
                events.push(Event::Revoke {
                    job: job.clone(),
                    worker: lease.worker,
                    lease: id,
                });
            }
        }
        Ok(events)
    }

    /// Progress of a job, `None` if unknown.
    pub fn job_progress(&self, job: &JobId) -> Option<JobProgress> {
        let state = self.jobs.get(self.job_seqs.get(job)?)?;
        let pending = state.pending();
        Some(JobProgress {
            total: state.total,
            completed: state.completed,
            quarantined: state.quarantined,
            pending,
            suspects: state.suspects.len() as u64,
            in_flight: state.total.saturating_sub(state.completed + pending),
            leases_active: state.leases.len(),
            reissued: state.reissued,
            added: state.added,
            finished: state.finished,
        })
    }

    // ----- workers ----------------------------------------------------------

    /// Registers a worker as alive, seen at `now`. A worker declared dead may
    /// register again (it starts with no leases); registering a live one fails.
    pub fn register(&mut self, worker: WorkerId, now: Instant) -> Result<(), SchedError> {
        match self.workers.get_mut(&worker) {
            Some(entry) if entry.state != WorkerState::Dead => {
                Err(SchedError::AlreadyRegistered(worker))
            }
            Some(entry) => {
                entry.state = WorkerState::Alive;
                entry.leases.clear();
                entry.last_seen = now;
                self.live += 1;
                self.assignable += 1;
                Ok(())
            }
            None => {
                self.workers.insert(
                    worker,
                    WorkerEntry {
                        state: WorkerState::Alive,
                        leases: BTreeSet::new(),
                        items_done: 0,
                        last_seen: now,
                    },
                );
                self.live += 1;
                self.assignable += 1;
                Ok(())
            }
        }
    }

    /// Records that the worker is alive at `now`.
    pub fn heartbeat(&mut self, worker: WorkerId, now: Instant) -> Result<(), SchedError> {
        self.touch(worker, now).map(|_| ())
    }

    /// The worker finishes what it holds but gets no new lease. Idempotent.
    /// Liveness is not updated here: pair it with [`Scheduler::heartbeat`].
    pub fn set_draining(&mut self, worker: WorkerId) -> Result<(), SchedError> {
        let entry = self
            .workers
            .get_mut(&worker)
            .ok_or(SchedError::UnknownWorker(worker))?;
        match entry.state {
            WorkerState::Dead => Err(SchedError::WorkerDead(worker)),
            WorkerState::Draining => Ok(()),
            WorkerState::Alive => {
                entry.state = WorkerState::Draining;
                self.assignable -= 1;
                Ok(())
            }
        }
    }

    /// The worker's stream dropped: it is dead now and its unfinished items
    /// are re-queued at once. Unknown or already dead workers: no events.
    pub fn disconnect(&mut self, worker: WorkerId, _now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        if self
            .workers
            .get(&worker)
            .is_some_and(|w| w.state != WorkerState::Dead)
        {
            self.kill(worker, DeathReason::Disconnected, &mut events);
        }
        events
    }

    /// Declares dead every worker not heard from for longer than the
    /// heartbeat timeout, and re-queues their unfinished items.
    pub fn tick(&mut self, now: Instant) -> Vec<Event> {
        let timeout = self.config.heartbeat_timeout;
        let expired: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                w.state != WorkerState::Dead && now.saturating_duration_since(w.last_seen) > timeout
            })
            .map(|(id, _)| *id)
            .collect();
        let mut events = Vec::new();
        for worker in expired {
            self.kill(worker, DeathReason::Timeout, &mut events);
        }
        events
    }

    /// Snapshots of every worker ever registered, by id.
    pub fn workers(&self) -> impl Iterator<Item = WorkerView> + '_ {
        self.workers.iter().map(|(id, w)| WorkerView {
            id: *id,
            state: w.state,
            leases: w.leases.iter().copied().collect(),
            items_done: w.items_done,
            last_seen: w.last_seen,
        })
    }

    /// Forgets a dead worker, so that a long-running master does not keep
    /// every worker it ever saw. Returns whether it was forgotten: unknown
    /// and live workers are not (a dead worker holds no lease). Calls about
    /// a forgotten worker then fail with [`SchedError::UnknownWorker`], as
    /// for any stranger: a late result of it is never accepted.
    pub fn forget_worker(&mut self, worker: WorkerId) -> bool {
        if self
            .workers
            .get(&worker)
            .is_some_and(|w| w.state == WorkerState::Dead)
        {
            self.workers.remove(&worker);
            return true;
        }
        false
    }

    /// Workers alive or draining.
    pub fn live_workers(&self) -> usize {
        self.live
    }

    // ----- leases -----------------------------------------------------------

    /// Work for `worker`, or `None` if it is draining or there is nothing to
    /// do. In order: a suspect image alone (oldest job first, only to an idle
    /// worker); a re-queued batch; a fresh batch of the oldest job with work;
    /// and, if the worker is idle and speculation is on, a speculative copy of
    /// a straggling lease. A worker holding a suspect gets nothing more until
    /// it is done with it, so that if it dies, the suspect alone is blamed
    /// (not an innocent image prefetched beside it).
    pub fn lease(&mut self, worker: WorkerId, now: Instant) -> Result<Option<Lease>, SchedError> {
        if self.touch(worker, now)? != WorkerState::Alive {
            return Ok(None);
        }
        if self.holds_suspect(worker) {
            return Ok(None);
        }
        if self.is_idle(worker)
            && let Some(lease) = self.lease_suspect(worker)
        {
            return Ok(Some(lease));
        }
        if let Some(lease) = self.lease_batch(worker) {
            return Ok(Some(lease));
        }
        if self.config.speculate && self.is_idle(worker) {
            return Ok(self.lease_speculative(worker));
        }
        Ok(None)
    }

    /// Reports one image of a lease as done. Only
    /// [`ItemVerdict::Accepted`] may be recorded. Fails only if the worker is
    /// unknown or dead (then the result must be dropped too, and the worker
    /// told to register again).
    pub fn complete_item(
        &mut self,
        worker: WorkerId,
        lease: LeaseId,
        item: u64,
        now: Instant,
    ) -> Result<ItemVerdict, SchedError> {
        self.touch(worker, now)?;
        let Some(held) = self.leases.get(&lease) else {
            return Ok(ItemVerdict::Discarded(DiscardReason::UnknownLease));
        };
        if held.worker != worker {
            return Ok(ItemVerdict::Discarded(DiscardReason::NotLeaseHolder));
        }
        if held.items.binary_search(&item).is_err() {
            return Ok(ItemVerdict::Discarded(DiscardReason::NotInLease));
        }
        let (seq, twin) = (held.job, held.twin);
        let Some(job) = self.jobs.get_mut(&seq) else {
            return Ok(ItemVerdict::Discarded(DiscardReason::UnknownLease));
        };
        if job.finished || !job.done.insert(item) {
            return Ok(ItemVerdict::Discarded(DiscardReason::AlreadyCompleted));
        }
        job.completed += 1;
        if let Some(entry) = self.workers.get_mut(&worker) {
            entry.items_done += 1;
        }
        let mut own_left = 0;
        if let Some(held) = self.leases.get_mut(&lease) {
            held.remaining = held.remaining.saturating_sub(1);
            own_left = held.remaining;
        }
        let mut events = Vec::new();
        if let Some(twin) = twin {
            let mut obsolete = false;
            if let Some(other) = self.leases.get_mut(&twin) {
                if other.items.binary_search(&item).is_ok() {
                    other.remaining = other.remaining.saturating_sub(1);
                }
                obsolete = other.remaining == 0 && own_left == 0;
            }
            if obsolete && let Some((other, _)) = self.remove_lease(twin) {
                let job = self.jobs.get(&seq).map(|j| j.id.clone());
                events.extend(job.map(|job| Event::Revoke {
                    job,
                    worker: other.worker,
                    lease: twin,
                }));
            }
        }
        self.check_complete(seq, &mut events);
        Ok(ItemVerdict::Accepted { events })
    }

    /// The holder, job, attempt and items of an active lease (`None` once
    /// it ended), for the master to check what a result claims
    /// ([`crate::validate::check_claim`]).
    pub fn lease_facts(&self, lease: LeaseId) -> Option<crate::validate::LeaseFacts<'_>> {
        let l = self.leases.get(&lease)?;
        let job = &self.jobs.get(&l.job)?.id;
        Some(crate::validate::LeaseFacts {
            worker: l.worker,
            job,
            attempt: l.attempt,
            items: &l.items,
        })
    }

    /// Closes a lease. Its items not completed go back to work (suspects stay
    /// suspects) unless a speculative twin still holds them; the returned
    /// events then hold an [`Event::Requeued`]. A worker that gives back its
    /// batch on shutdown uses this too.
    pub fn finish_lease(
        &mut self,
        worker: WorkerId,
        lease: LeaseId,
        now: Instant,
    ) -> Result<Vec<Event>, SchedError> {
        self.touch(worker, now)?;
        match self.leases.get(&lease) {
            None => return Err(SchedError::UnknownLease { worker, lease }),
            Some(held) if held.worker != worker => {
                return Err(SchedError::NotLeaseHolder {
                    worker,
                    lease,
                    holder: held.worker,
                });
            }
            Some(_) => {}
        }
        let mut events = Vec::new();
        let Some((held, twin_alive)) = self.remove_lease(lease) else {
            return Ok(events);
        };
        if twin_alive {
            return Ok(events);
        }
        let seq = held.job;
        let Some(job) = self.jobs.get_mut(&seq) else {
            return Ok(events);
        };
        let left: Vec<u64> = held
            .items
            .iter()
            .copied()
            .filter(|&i| !job.is_done(i))
            .collect();
        if left.is_empty() {
            return Ok(events);
        }
        events.push(Event::Requeued {
            job: job.id.clone(),
            lease,
            items: left.len(),
        });
        if held.kind == LeaseKind::Suspect {
            job.suspects.extend(left.into_iter().map(|item| Suspect {
                item,
                batch: held.batch,
                last_attempt: held.last_attempt,
            }));
        } else {
            job.requeued_items += left.len() as u64;
            job.requeued.push_back(Requeue {
                batch: held.batch,
                last_attempt: held.last_attempt,
                items: left,
            });
        }
        self.sync_ready(seq);
        Ok(events)
    }

    // ----- internals --------------------------------------------------------

    /// Liveness from any message: unknown and dead workers are refused.
    fn touch(&mut self, worker: WorkerId, now: Instant) -> Result<WorkerState, SchedError> {
        let entry = self
            .workers
            .get_mut(&worker)
            .ok_or(SchedError::UnknownWorker(worker))?;
        if entry.state == WorkerState::Dead {
            return Err(SchedError::WorkerDead(worker));
        }
        entry.last_seen = entry.last_seen.max(now);
        Ok(entry.state)
    }

    /// No active lease of the worker has items left.
    fn holds_suspect(&self, worker: WorkerId) -> bool {
        self.workers.get(&worker).is_some_and(|w| {
            w.leases.iter().any(|id| {
                self.leases
                    .get(id)
                    .is_some_and(|l| l.kind == LeaseKind::Suspect && l.remaining > 0)
            })
        })
    }

    fn is_idle(&self, worker: WorkerId) -> bool {
        self.workers.get(&worker).is_some_and(|w| {
            w.leases
                .iter()
                .all(|id| self.leases.get(id).is_none_or(|l| l.remaining == 0))
        })
    }

    /// Keeps `suspect_jobs` and `work_jobs` in step with a job's queues.
    fn sync_ready(&mut self, seq: u64) {
        let (suspects, work) = match self.jobs.get(&seq) {
            Some(job) if !job.finished => (!job.suspects.is_empty(), job.has_batch_work()),
            _ => (false, false),
        };
        if suspects {
            self.suspect_jobs.insert(seq);
        } else {
            self.suspect_jobs.remove(&seq);
        }
        if work {
            self.work_jobs.insert(seq);
        } else {
            self.work_jobs.remove(&seq);
        }
    }

    /// Emits `JobComplete` the first time every item of the job is completed.
    fn check_complete(&mut self, seq: u64, events: &mut Vec<Event>) {
        let Some(job) = self.jobs.get_mut(&seq) else {
            return;
        };
        if job.finished || job.completed < job.total {
            return;
        }
        job.finished = true;
        job.done = Bitset::default();
        job.crashes = HashMap::new();
        events.push(Event::JobComplete(job.id.clone()));
        self.sync_ready(seq);
    }

    #[allow(clippy::too_many_arguments)]
    fn issue(
        &mut self,
        worker: WorkerId,
        seq: u64,
        batch: BatchId,
        attempt: u32,
        items: Vec<u64>,
        kind: LeaseKind,
        twin: Option<LeaseId>,
    ) -> Option<Lease> {
        let id = LeaseId(self.next_lease);
        self.next_lease += 1;
        let job = self.jobs.get_mut(&seq)?;
        job.leases.insert(id);
        if attempt > 1 {
            job.reissued += items.len() as u64;
        }
        let lease = Lease {
            id,
            job: job.id.clone(),
            batch,
            attempt,
            items: items.clone(),
            speculative: kind == LeaseKind::Speculative,
        };
        if let Some(w) = self.workers.get_mut(&worker) {
            w.leases.insert(id);
        }
        self.leases.insert(
            id,
            ActiveLease {
                worker,
                job: seq,
                batch,
                last_attempt: attempt,
                attempt,
                kind,
                remaining: items.len() as u64,
                items,
                twin,
            },
        );
        Some(lease)
    }

    fn lease_suspect(&mut self, worker: WorkerId) -> Option<Lease> {
        loop {
            let seq = *self.suspect_jobs.first()?;
            let suspect = self.jobs.get_mut(&seq).and_then(|j| {
                let s = j.suspects.pop_front()?;
                (!j.is_done(s.item)).then_some(s)
            });
            self.sync_ready(seq);
            if let Some(s) = suspect {
                let attempt = s.last_attempt.saturating_add(1);
                return self.issue(
                    worker,
                    seq,
                    s.batch,
                    attempt,
                    vec![s.item],
                    LeaseKind::Suspect,
                    None,
                );
            }
        }
    }

    fn lease_batch(&mut self, worker: WorkerId) -> Option<Lease> {
        loop {
            let seq = *self.work_jobs.first()?;
            let Some(job) = self.jobs.get_mut(&seq) else {
                self.work_jobs.remove(&seq);
                continue;
            };
            if let Some(requeue) = job.requeued.pop_front() {
                job.requeued_items -= requeue.items.len() as u64;
                let items: Vec<u64> = requeue
                    .items
                    .into_iter()
                    .filter(|&i| !job.is_done(i))
                    .collect();
                self.sync_ready(seq);
                if items.is_empty() {
                    continue;
                }
                let attempt = requeue.last_attempt.saturating_add(1);
                return self.issue(
                    worker,
                    seq,
                    requeue.batch,
                    attempt,
                    items,
                    LeaseKind::Batch,
                    None,
                );
            }
            let unassigned = job.total - job.cursor;
            if unassigned == 0 {
                self.sync_ready(seq);
                continue;
            }
            let share = 2 * (self.assignable.max(1) as u64);
            let size = unassigned
                .div_ceil(share)
                .max(self.config.min_batch_size)
                .min(self.config.batch_size)
                .min(unassigned)
                .max(1);
            let start = job.cursor;
            job.cursor += size;
            let batch = BatchId(self.next_batch);
            self.next_batch += 1;
            self.sync_ready(seq);
            return self.issue(
                worker,
                seq,
                batch,
                1,
                (start..start + size).collect(),
                LeaseKind::Batch,
                None,
            );
        }
    }

    /// Copies the straggler with the most items left (oldest first on ties)
    /// that another worker holds and that has no copy yet.
    fn lease_speculative(&mut self, worker: WorkerId) -> Option<Lease> {
        let (&original, _) = self
            .leases
            .iter()
            .filter(|(_, l)| {
                l.worker != worker
                    && l.kind == LeaseKind::Batch
                    && l.twin.is_none()
                    && l.remaining > 0
            })
            .max_by(|(a_id, a), (b_id, b)| a.remaining.cmp(&b.remaining).then(b_id.cmp(a_id)))?;
        let held = self.leases.get(&original)?;
        let job = self.jobs.get(&held.job)?;
        let items: Vec<u64> = held
            .items
            .iter()
            .copied()
            .filter(|&i| !job.is_done(i))
            .collect();
        let (seq, batch, attempt) = (held.job, held.batch, held.last_attempt.saturating_add(1));
        let lease = self.issue(
            worker,
            seq,
            batch,
            attempt,
            items,
            LeaseKind::Speculative,
            Some(original),
        )?;
        if let Some(held) = self.leases.get_mut(&original) {
            held.twin = Some(lease.id);
            held.last_attempt = attempt;
        }
        Some(lease)
    }

    /// Drops a lease from every index. Returns it, and whether its twin is
    /// still active (the twin is unlinked and inherits the attempt count).
    fn remove_lease(&mut self, id: LeaseId) -> Option<(ActiveLease, bool)> {
        let lease = self.leases.remove(&id)?;
        if let Some(w) = self.workers.get_mut(&lease.worker) {
            w.leases.remove(&id);
        }
        if let Some(job) = self.jobs.get_mut(&lease.job) {
            job.leases.remove(&id);
        }
        let mut twin_alive = false;
        if let Some(twin) = lease.twin.and_then(|t| self.leases.get_mut(&t)) {
            twin.twin = None;
            twin.last_attempt = twin.last_attempt.max(lease.last_attempt);
            twin_alive = true;
        }
        Some((lease, twin_alive))
    }

    /// Declares a worker dead and sends its unfinished items back as
    /// suspects; a suspect whose single-image lease died once more is counted
    /// as a crash and quarantined at `max_crashes`.
    fn kill(&mut self, worker: WorkerId, reason: DeathReason, events: &mut Vec<Event>) {
        let Some(entry) = self.workers.get_mut(&worker) else {
            return;
        };
        match entry.state {
            WorkerState::Dead => return,
            WorkerState::Alive => self.assignable -= 1,
            WorkerState::Draining => {}
        }
        self.live -= 1;
        entry.state = WorkerState::Dead;
        let held = std::mem::take(&mut entry.leases);
        let mut requeued = 0;
        let mut details = Vec::new();
        for id in held {
            let Some((lease, twin_alive)) = self.remove_lease(id) else {
                continue;
            };
            if twin_alive {
                continue;
            }
            let seq = lease.job;
            let max_crashes = self.config.max_crashes;
            let Some(job) = self.jobs.get_mut(&seq) else {
                continue;
            };
            let mut back = 0;
            for &item in &lease.items {
                if job.is_done(item) {
                    continue;
                }
                let mut crashes = 0;
                if lease.kind == LeaseKind::Suspect {
                    let count = job.crashes.entry(item).or_insert(0);
                    *count += 1;
                    crashes = *count;
                }
                if crashes >= max_crashes {
                    job.crashes.remove(&item);
                    job.done.insert(item);
                    job.completed += 1;
                    job.quarantined += 1;
                    details.push(Event::Quarantined {
                        job: job.id.clone(),
                        item,
                        crashes,
                    });
                } else {
                    job.suspects.push_back(Suspect {
                        item,
                        batch: lease.batch,
                        last_attempt: lease.last_attempt,
                    });
                    back += 1;
                }
            }
            if back > 0 {
                details.push(Event::Requeued {
                    job: job.id.clone(),
                    lease: id,
                    items: back,
                });
            }
            requeued += back;
            self.sync_ready(seq);
            self.check_complete(seq, &mut details);
        }
        events.push(Event::WorkerDead {
            worker,
            reason,
            requeued,
        });
        events.extend(details);
    }
}
