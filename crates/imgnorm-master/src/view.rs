//! Read-only views of the master for the dashboard and its JSON API: job
//! summaries with rates and ETAs, one job's detail (throughput samples,
//! per-worker progress, failures), every worker with its history. Also the
//! sampler that records progress once per period. Views are plain
//! serializable structs built under the state lock in one short section.
use std::time::{Duration, Instant};

use imgnorm_core::ids::WorkerId;
use imgnorm_core::options::EngineOptions;
use imgnorm_core::scheduler::WorkerState;
use serde::Serialize;

use super::Master;
use super::history::{Failure, WorkerEventKind};
use super::state::{JobRun, JobState, State};

/// Most failures a job view carries (the manifest has them all).
pub const MAX_FAILURES_SHOWN: usize = super::history::MAX_FAILURES_KEPT;

/// One job in the jobs list.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobSummaryView {
    /// Job id (`job-N`).
    pub id: String,
    /// queued, running, done, failed, cancelled.
    pub state: JobState,
    /// Input folder.
    pub input: String,
    /// Output folder.
    pub output: String,
    /// Every input file.
    pub total: u64,
    /// Files accounted for so far.
    pub done: u64,
    /// Status ok so far.
    pub ok: u64,
    /// Status failed so far.
    pub failed: u64,
    /// Status skipped so far.
    pub skipped: u64,
    /// `done / total` in percent (100 for an empty job that is done).
    pub percent: f64,
    /// Recent rate while running, the average once finished.
    pub images_per_s: f64,
    /// Seconds since submission (until the end once finished).
    pub elapsed_s: f64,
    /// Seconds left at the recent rate; absent when unknown or finished.
    pub eta_s: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// A lease a worker holds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LeaseView {
    /// Lease id.
    pub lease: u64,
    /// Job id.
    pub job: String,
    /// Batch id within the job.
    pub batch: u64,
    /// Attempt of the batch.
    pub attempt: u32,
    /// Images in the lease.
    pub items: usize,
}

/// One event of a worker's history.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkerEventView {
    /// joined, draining, disconnected, timedout.
    pub kind: WorkerEventKind,
    /// Seconds ago.
    pub ago_s: f64,
}

/// A worker as the dashboard shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkerDashView {
    /// Worker id on this master.
    pub id: u64,
    /// Name (`--name` or host name).
    pub name: String,
    /// Host name.
    pub host: String,
    /// Engine threads.
    pub threads: u32,
    /// Process id on its host.
    pub pid: u32,
    /// alive, draining, dead.
    pub state: &'static str,
    /// Leases held now.
    pub current: Vec<LeaseView>,
    /// Results accepted over its lifetime (or, in a job view, for that job).
    pub images_done: u64,
    /// Recent rate.
    pub images_per_s: f64,
    /// Seconds since it was last heard from.
    pub last_heartbeat_s_ago: f64,
    /// Joined, drained, died, oldest first.
    pub history: Vec<WorkerEventView>,
}

/// One job in detail.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobDetailView {
    /// The summary.
    #[serde(flatten)]
    pub summary: JobSummaryView,
    /// Engine options.
    pub options: EngineOptions,
    /// `[seconds since submission, images done]`, oldest first.
    pub samples: Vec<[f64; 2]>,
    /// Workers that worked on this job or hold a lease of it.
    pub workers: Vec<WorkerDashView>,
    /// Failed images (at most [`MAX_FAILURES_SHOWN`]).
    pub failures: Vec<Failure>,
    /// Failed images in all.
    pub failures_total: usize,
}

fn state_name(s: WorkerState) -> &'static str {
    match s {
        WorkerState::Alive => "alive",
        WorkerState::Draining => "draining",
        WorkerState::Dead => "dead",
    }
}

impl Master {
    /// Records progress samples of running jobs and workers; the HTTP server
    /// calls it once per [`SAMPLE_PERIOD`].
    pub fn sample(&self, now: Instant) {
        let mut st = self.lock();
        let done: Vec<(String, u64)> = st
            .core
            .jobs
            .values()
            .filter(|j| j.state == JobState::Running)
            .map(|j| (j.id.0.clone(), done_of(j)))
            .collect();
        for (id, d) in done {
            st.core.history.sample_job(&id, d, now);
        }
        let workers: Vec<(WorkerId, u64, Vec<u64>)> = st
            .worker_views()
            .map(|v| (v.id, v.items_done, v.leases.iter().map(|l| l.0).collect()))
            .collect();
        let held: std::collections::HashSet<u64> =
            workers.iter().flat_map(|w| w.2.iter().copied()).collect();
        for (w, d, _) in workers {
            st.core.history.sample_worker(w, d, now);
        }
        st.core.history.retain_leases(|l| held.contains(&l));
    }

    /// Every job, oldest first.
    pub fn jobs_view(&self) -> Vec<JobSummaryView> {
        let st = self.lock();
        let now = Instant::now();
        st.core
            .jobs
            .values()
            .map(|j| summary(&st, j, now))
            .collect()
    }

    /// One job in detail.
    pub fn job_view(&self, id: &str) -> Option<JobDetailView> {
        let st = self.lock();
        let now = Instant::now();
        let j = st.core.jobs.values().find(|j| j.id.0 == id)?;
        let summary = summary(&st, j, now);
        let samples = st
            .core
            .history
            .job_samples(id)
            .iter()
            .map(|(t, d)| {
                [
                    t.saturating_duration_since(j.submitted).as_secs_f64(),
                    *d as f64,
                ]
            })
            .collect();
        let per_job = st.core.history.job_workers(id);
        let workers = workers(&st, now)
            .into_iter()
            .filter_map(|mut w| {
                let mine = per_job.and_then(|m| m.get(&WorkerId(w.id)).copied());
                w.current.retain(|l| l.job == id);
                if mine.is_none() && w.current.is_empty() {
                    return None;
                }
                w.images_done = mine.unwrap_or(0);
                Some(w)
            })
            .collect();
        // Discovery problems were recorded first (see `State::add_job`).
        let (first, failures_total) = st.core.history.failures(id);
        let mut failures = first.to_vec();
        failures.truncate(MAX_FAILURES_SHOWN);
        Some(JobDetailView {
            summary,
            options: j.options.clone(),
            samples,
            workers,
            failures,
            failures_total,
        })
    }

    /// Every worker ever seen, with its history.
    pub fn workers_view(&self) -> Vec<WorkerDashView> {
        let st = self.lock();
        workers(&st, Instant::now())
    }
}

/// How often [`Master::sample`] runs.
pub const SAMPLE_PERIOD: Duration = Duration::from_millis(500);

/// Final rows of a job: never decreases, the phase switch of a two-phase
/// job included (see [`JobRun::rows_final`]).
fn done_of(j: &JobRun) -> u64 {
    j.rows_final().min(j.images())
}

fn summary(st: &State, j: &JobRun, now: Instant) -> JobSummaryView {
    let total = j.images();
    let done = if j.state == JobState::Done {
        total
    } else {
        done_of(j)
    };
    let end = j.finished.unwrap_or(now);
    let elapsed = end.saturating_duration_since(j.submitted).as_secs_f64();
    let running = j.state == JobState::Running;
    let images_per_s = if running {
        st.core.history.job_rate(&j.id.0)
    } else if elapsed > 0.0 {
        done as f64 / elapsed
    } else {
        0.0
    };
    let eta_s =
        (running && images_per_s > 0.0).then(|| total.saturating_sub(done) as f64 / images_per_s);
    let percent = if total == 0 {
        if j.state == JobState::Done {
            100.0
        } else {
            0.0
        }
    } else {
        100.0 * done as f64 / total as f64
    };
    JobSummaryView {
        id: j.id.0.clone(),
        state: j.state,
        input: j.input.display().to_string(),
        output: j.output.display().to_string(),
        total,
        done,
        ok: j.counts.ok,
        failed: j.counts.failed,
        skipped: j.counts.skipped,
        percent,
        images_per_s,
        elapsed_s: elapsed,
        eta_s,
        error: j.error.clone(),
    }
}

fn workers(st: &State, now: Instant) -> Vec<WorkerDashView> {
    st.worker_views()
        .map(|v| {
            let info = st.worker_info(v.id).cloned().unwrap_or_default();
            WorkerDashView {
                id: v.id.0,
                name: info.name,
                host: info.hostname,
                threads: info.threads,
                pid: info.pid,
                state: state_name(v.state),
                current: v
                    .leases
                    .iter()
                    .filter_map(|l| {
                        st.core.history.lease(l.0).map(|i| LeaseView {
                            lease: l.0,
                            job: i.job.clone(),
                            batch: i.batch,
                            attempt: i.attempt,
                            items: i.items,
                        })
                    })
                    .collect(),
                images_done: v.items_done,
                images_per_s: if v.state == WorkerState::Dead {
                    0.0
                } else {
                    st.core.history.worker_rate(v.id)
                },
                last_heartbeat_s_ago: now.saturating_duration_since(v.last_seen).as_secs_f64(),
                history: st
                    .core
                    .history
                    .worker_events(v.id)
                    .iter()
                    .map(|e| WorkerEventView {
                        kind: e.kind,
                        ago_s: now.saturating_duration_since(e.at).as_secs_f64(),
                    })
                    .collect(),
            }
        })
        .collect()
}
