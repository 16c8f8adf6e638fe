//! What the dashboard shows beyond the scheduler's current state: each
//! worker's history (joined, draining, died), the batch each lease carries,
//! and periodic samples of progress from which throughput, per-worker rates
//! and ETAs are computed. Pure bookkeeping: every method takes `now`.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::ids::WorkerId;

/// One thing that happened to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerEventKind {
    /// Said `Hello`.
    Joined,
    /// Announced a drain (SIGTERM).
    Draining,
    /// Stream dropped.
    Disconnected,
    /// Silent past the heartbeat timeout.
    TimedOut,
}

/// A worker event with its time.
#[derive(Debug, Clone, Copy)]
pub struct WorkerEvent {
    /// What happened.
    pub kind: WorkerEventKind,
    /// When.
    pub at: Instant,
}

/// A lease as handed out: which job and batch, how many images.
#[derive(Debug, Clone)]
pub struct LeaseInfo {
    /// The job (whichever phase).
    pub key: super::JobKey,
    /// Job id (the name of the job's phase, as on the wire).
    pub job: String,
    /// Batch id within the job.
    pub batch: u64,
    /// Attempt of the batch.
    pub attempt: u32,
    /// Images in the lease.
    pub items: usize,
}

/// Samples kept per job for the throughput chart (one per sampling period;
/// older ones are thinned out).
pub const MAX_JOB_SAMPLES: usize = 600;
/// Window over which a rate (images/s) is computed.
pub const RATE_WINDOW: Duration = Duration::from_secs(5);

/// Dashboard bookkeeping kept next to the scheduler. See the module docs.
#[derive(Default)]
pub struct History {
    workers: BTreeMap<WorkerId, Vec<WorkerEvent>>,
    leases: HashMap<u64, LeaseInfo>,
    worker_samples: HashMap<WorkerId, VecDeque<(Instant, u64)>>,
    job_samples: HashMap<String, Vec<(Instant, u64)>>,
    job_workers: HashMap<String, BTreeMap<WorkerId, u64>>,
    failures: HashMap<String, Failures>,
}

/// The first failures of a job (at most [`MAX_FAILURES_KEPT`]) and how
/// many there were: bounded however many images fail.
#[derive(Debug, Default)]
struct Failures {
    first: Vec<Failure>,
    total: usize,
}

/// Failures kept per job for the dashboard; the manifest has them all.
pub const MAX_FAILURES_KEPT: usize = 200;

/// An image that failed during a job.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Failure {
    /// Relative path.
    pub path: String,
    /// Why.
    pub reason: String,
    /// Attempt of the batch that reported it (for a quarantined image: the
    /// number of worker deaths).
    pub attempts: u32,
}

impl History {
    /// Records a worker event.
    pub fn worker_event(&mut self, w: WorkerId, kind: WorkerEventKind, now: Instant) {
        self.workers
            .entry(w)
            .or_default()
            .push(WorkerEvent { kind, at: now });
    }

    /// A worker's events, oldest first.
    pub fn worker_events(&self, w: WorkerId) -> &[WorkerEvent] {
        self.workers.get(&w).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Records what a lease carries.
    pub fn lease_started(&mut self, lease: u64, info: LeaseInfo) {
        self.leases.insert(lease, info);
    }

    /// What a lease carries, if known.
    pub fn lease(&self, lease: u64) -> Option<&LeaseInfo> {
        self.leases.get(&lease)
    }

    /// Forgets leases no worker holds any more.
    pub fn retain_leases(&mut self, held: impl Fn(u64) -> bool) {
        self.leases.retain(|id, _| held(*id));
    }

    /// Credits one accepted result of `job` to worker `w`.
    pub fn image_done(&mut self, job: &str, w: WorkerId) {
        *self
            .job_workers
            .entry(job.to_string())
            .or_default()
            .entry(w)
            .or_default() += 1;
    }

    /// Accepted results of `job` per worker.
    pub fn job_workers(&self, job: &str) -> Option<&BTreeMap<WorkerId, u64>> {
        self.job_workers.get(job)
    }

    /// Records a failed image of `job` (only the first
    /// [`MAX_FAILURES_KEPT`] are kept; all are counted).
    pub fn failure(&mut self, job: &str, path: &str, reason: &str, attempts: u32) {
        let f = self.failures.entry(job.to_string()).or_default();
        f.total += 1;
        if f.first.len() < MAX_FAILURES_KEPT {
            f.first.push(Failure {
                path: path.to_string(),
                reason: reason.to_string(),
                attempts,
            });
        }
    }

    /// The first failed images of `job`, in arrival order, and how many
    /// failed in all.
    pub fn failures(&self, job: &str) -> (&[Failure], usize) {
        self.failures
            .get(job)
            .map(|f| (f.first.as_slice(), f.total))
            .unwrap_or((&[], 0))
    }

    /// Forgets the leases of a job that has ended.
    pub fn forget_job_leases(&mut self, key: super::JobKey) {
        self.leases.retain(|_, l| l.key != key);
    }

    /// Forgets a lease that is over.
    pub fn forget_lease(&mut self, lease: u64) {
        self.leases.remove(&lease);
    }

    /// Forgets everything about a worker.
    pub fn forget_worker(&mut self, w: WorkerId) {
        self.workers.remove(&w);
        self.worker_samples.remove(&w);
    }

    /// Samples a worker's lifetime count of images done.
    pub fn sample_worker(&mut self, w: WorkerId, done: u64, now: Instant) {
        let s = self.worker_samples.entry(w).or_default();
        s.push_back((now, done));
        // Keep the window plus the one sample just before it.
        while s.len() > 2
            && s.get(1)
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= RATE_WINDOW)
        {
            s.pop_front();
        }
    }

    /// A worker's recent rate in images/s (0 before two samples).
    pub fn worker_rate(&self, w: WorkerId) -> f64 {
        self.worker_samples
            .get(&w)
            .map(|s| rate(s.iter().copied()))
            .unwrap_or(0.0)
    }

    /// Samples a job's count of images done.
    pub fn sample_job(&mut self, job: &str, done: u64, now: Instant) {
        let s = self.job_samples.entry(job.to_string()).or_default();
        s.push((now, done));
        if s.len() > MAX_JOB_SAMPLES {
            // Keep the first sample and every other one after it: the chart
            // keeps its whole time span at half the resolution.
            let mut i = 0;
            s.retain(|_| {
                i += 1;
                i == 1 || i % 2 == 0
            });
        }
    }

    /// A job's samples, oldest first.
    pub fn job_samples(&self, job: &str) -> &[(Instant, u64)] {
        self.job_samples.get(job).map(Vec::as_slice).unwrap_or(&[])
    }

    /// A job's recent rate in images/s (0 before two samples).
    pub fn job_rate(&self, job: &str) -> f64 {
        let s = self.job_samples(job);
        let Some(&(last, _)) = s.last() else {
            return 0.0;
        };
        let start = s.partition_point(|(t, _)| last.saturating_duration_since(*t) > RATE_WINDOW);
        // Include the sample just before the window, so two samples a period
        // apart always give a rate.
        rate(s[start.saturating_sub(1)..].iter().copied())
    }
}

/// Images/s between the oldest and newest of `samples` within the window.
fn rate(samples: impl DoubleEndedIterator<Item = (Instant, u64)> + Clone) -> f64 {
    let mut it = samples.clone();
    let (Some(first), Some(last)) = (it.next(), samples.clone().next_back()) else {
        return 0.0;
    };
    let dt = last.0.saturating_duration_since(first.0).as_secs_f64();
    if dt <= 0.0 {
        return 0.0;
    }
    last.1.saturating_sub(first.1) as f64 / dt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_the_recent_window() {
        let t0 = Instant::now();
        let mut h = History::default();
        assert_eq!(h.job_rate("job-1"), 0.0);
        for s in 0..20u64 {
            // 10 images/s for the first 10 s, then 30 images/s.
            let done = if s <= 10 { s * 10 } else { 100 + (s - 10) * 30 };
            h.sample_job("job-1", done, t0 + Duration::from_secs(s));
        }
        let r = h.job_rate("job-1");
        assert!((r - 30.0).abs() < 1e-9, "{r}");
        let w = WorkerId(1);
        h.sample_worker(w, 0, t0);
        h.sample_worker(w, 50, t0 + Duration::from_secs(2));
        assert!((h.worker_rate(w) - 25.0).abs() < 1e-9);
        // Old samples fall out of the window.
        h.sample_worker(w, 50, t0 + Duration::from_secs(30));
        assert_eq!(h.worker_rate(w), 0.0);
    }

    #[test]
    fn long_jobs_keep_their_whole_span_in_bounded_samples() {
        let t0 = Instant::now();
        let mut h = History::default();
        for s in 0..5000u64 {
            h.sample_job("j", s, t0 + Duration::from_secs(s));
        }
        let s = h.job_samples("j");
        assert!(s.len() <= MAX_JOB_SAMPLES);
        assert_eq!(s[0].1, 0);
        assert!(s.last().unwrap().1 >= 4990);
    }
}
