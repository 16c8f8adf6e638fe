//! The master's job logic as a pure state machine around the
//! [`Scheduler`](crate::scheduler::Scheduler): jobs keyed by [`JobKey`], each
//! in a [`Phase`] (a two-phase job measures its dataset, then writes it),
//! their collected records, statistics folds and worker credits. Every
//! method takes `now` and returns the [`Effect`]s the runtime applies (send a
//! lease, revoke one, persist a row, write a dataset...); nothing here touches
//! the network, the filesystem, a clock or a wire format.
//!
//! Names on the wire (`job-N`, and `job-N.stats` for the statistics phase,
//! kept for protocol compatibility) are produced and read only by
//! [`PhaseJob::name`] and [`PhaseJob::from_name`], which the runtime's wire
//! conversions call; the state machine itself maps scheduler ids back to
//! their typed [`PhaseJob`] through a table, never by reading a string.
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::dataset::{DatasetParams, RawStats};
use crate::ids::{BatchId, LeaseId, WorkerId};
use crate::record::Record;
use crate::scheduler::DeathReason;
use crate::stats::ImageStats;
use crate::validate::Refusal;

mod events;
pub mod history;
mod machine;
mod results;
pub mod rows;
mod run;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

pub use machine::{Jobs, ListedJob, NewJob, RestoredJob};
pub use results::ImageResult;
pub use rows::{KeptRow, MemRows, RowStore, RowStoreFactory, Rows};
pub use run::{JobRun, TwoPhase};

/// Dead workers listed in the status and dashboard (older ones are
/// forgotten).
pub const MAX_DEAD_WORKERS: usize = 64;

/// A job, as numbered by its master (`job-N` to users). Numbers are never
/// reused while the state database keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobKey(pub u64);

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job-{}", self.0)
    }
}

/// Which phase of its work a job is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// One phase of a job: what the scheduler runs as one of its jobs, and what
/// a lease and a result name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PhaseJob {
    /// The job.
    pub key: JobKey,
    /// Which phase.
    pub phase: Phase,
}

impl PhaseJob {
    /// The writing phase of `key` (the only phase of most jobs).
    pub fn write(key: JobKey) -> PhaseJob {
        PhaseJob {
            key,
            phase: Phase::Write,
        }
    }

    /// The name on the wire and in logs: `job-N` for the writing phase,
    /// `job-N.stats` for the statistics phase (protocol compatibility).
    pub fn name(self) -> String {
        match self.phase {
            Phase::Stats => format!("{}.stats", self.key),
            Phase::Write => self.key.to_string(),
        }
    }

    /// Reads a name of [`PhaseJob::name`] (only the canonical form: decimal
    /// digits without a leading zero). For the wire edge only.
    pub fn from_name(name: &str) -> Option<PhaseJob> {
        let n = name.strip_prefix("job-")?;
        let (n, phase) = match n.strip_suffix(".stats") {
            Some(n) => (n, Phase::Stats),
            None => (n, Phase::Write),
        };
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let key = JobKey(n.parse().ok()?);
        let pj = PhaseJob { key, phase };
        (pj.name() == name).then_some(pj)
    }
}

/// How images and arrays travel between master and workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transfer {
    /// Workers read inputs and write outputs by path (shared filesystem).
    #[default]
    Shared,
    /// The master sends image bytes and writes the arrays workers send back.
    Stream,
}

/// A transfer mode name that is neither `shared` nor `stream`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown transfer mode {0:?} (expected shared or stream)")]
pub struct UnknownTransfer(pub String);

impl Transfer {
    /// The protocol's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Transfer::Shared => "shared",
            Transfer::Stream => "stream",
        }
    }

    /// Parses the protocol's name; empty means shared.
    pub fn parse(s: &str) -> Result<Transfer, UnknownTransfer> {
        match s {
            "" | "shared" => Ok(Transfer::Shared),
            "stream" => Ok(Transfer::Stream),
            other => Err(UnknownTransfer(other.to_string())),
        }
    }
}

/// Lifecycle of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

/// A worker's self-description from its `Hello`.
#[derive(Debug, Clone, Default, Serialize)]
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

/// Which worker and attempt produced an image (written to provenance.jsonl).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// One final result of a phase, as it is made durable: an accepted result,
/// a quarantine, or a row the master failed itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    /// The job.
    pub job: JobKey,
    /// Phase.
    pub phase: Phase,
    /// Item index.
    pub index: u64,
    /// The row.
    pub record: Record,
    /// Output statistics (writing phase, `ok`).
    pub stats: Option<ImageStats>,
    /// Raw statistics (statistics phase, `ok`).
    pub raw: Option<RawStats>,
    /// Worker name (empty for rows the master made).
    pub worker: String,
    /// Worker id on the master that accepted it (0 for rows it made).
    pub worker_id: u64,
    /// Lease (0 for rows the master made).
    pub lease: u64,
    /// Attempt (the crash count for a quarantine).
    pub attempt: u32,
}

impl ResultRow {
    /// Who produced the row.
    pub fn provenance(&self) -> Provenance {
        Provenance {
            worker: self.worker.clone(),
            worker_id: self.worker_id,
            lease: self.lease,
            attempt: self.attempt,
        }
    }
}

/// One image of a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseItem {
    /// Index in the job's file list.
    pub index: u64,
    /// Relative path.
    pub path: String,
}

/// A lease to send to its worker.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseOrder {
    /// The holder.
    pub worker: WorkerId,
    /// Job and phase.
    pub job: PhaseJob,
    /// Lease id.
    pub lease: LeaseId,
    /// Attempt of the batch.
    pub attempt: u32,
    /// Batch.
    pub batch: BatchId,
    /// The images, ascending.
    pub items: Vec<LeaseItem>,
    /// The dataset parameters (writing phase of a two-phase job).
    pub params: Option<DatasetParams>,
}

/// Something the runtime must do after a transition, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a lease to its worker (one credit of the worker was spent).
    SendLease(LeaseOrder),
    /// Tell a worker to stop working on a lease.
    Revoke {
        /// The holder.
        worker: WorkerId,
        /// Job and phase of the lease.
        job: PhaseJob,
        /// The lease.
        lease: LeaseId,
    },
    /// A worker was declared dead: close its connection.
    WorkerDead {
        /// The worker.
        worker: WorkerId,
        /// Disconnect or timeout.
        reason: DeathReason,
        /// Items of its leases that went back to work.
        requeued: usize,
    },
    /// Make a new job durable (spec, file list, discovery rows).
    PersistJob(JobKey),
    /// Make a final result durable.
    PersistResult(Box<ResultRow>),
    /// The statistics phase of `key` fixed `params`: make them durable; the
    /// writing phase of `images` images starts.
    PersistPhase {
        /// The job.
        key: JobKey,
        /// The parameters.
        params: DatasetParams,
        /// Images the writing phase covers.
        images: u64,
    },
    /// Make a job's end durable.
    PersistEnd {
        /// The job.
        key: JobKey,
        /// Done, failed or cancelled.
        state: JobState,
        /// Why it failed.
        error: Option<String>,
    },
    /// An image was quarantined (for the log; its row is persisted too).
    Quarantined {
        /// Job and phase.
        job: PhaseJob,
        /// Relative path.
        path: String,
        /// How many times it crashed its worker.
        crashes: u32,
    },
    /// Every image of the job has its result: write its dataset, then call
    /// [`Jobs::finished`].
    WriteDataset(JobKey),
}

/// What a transition asks the runtime to do.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Effects {
    /// The effects, in order.
    pub effects: Vec<Effect>,
    /// The result just handled was accepted (stream mode then commits it).
    pub accepted: bool,
    /// ...and it was a statistics-phase result: there is no output to write.
    pub stats_result: bool,
}

impl Effects {
    /// Appends `o`'s effects and flags.
    pub fn merge(&mut self, o: Effects) {
        self.effects.extend(o.effects);
        self.accepted |= o.accepted;
        self.stats_result |= o.stats_result;
    }

    fn push(&mut self, e: Effect) {
        self.effects.push(e);
    }

    /// The jobs whose dataset must be written.
    pub fn datasets(&self) -> impl Iterator<Item = JobKey> + '_ {
        self.effects.iter().filter_map(|e| match e {
            Effect::WriteDataset(k) => Some(*k),
            _ => None,
        })
    }
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

/// Where a checked stream-mode output goes; the runtime derives the tree
/// root and size limit from the job's output and options.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSlot {
    /// The job's output root.
    pub output: PathBuf,
    /// `<path>.npy`, relative to the output tree.
    pub rel: String,
}
