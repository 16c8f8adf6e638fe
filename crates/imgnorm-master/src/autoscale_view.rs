//! What the autoscaler is doing, as the master reports it (`Status`,
//! `/metrics`, the dashboard): the autoscaler above the master publishes it
//! here, so the master never depends on the autoscaler.
use serde::Serialize;

/// One logged change of the target.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionLog {
    /// Unix time, seconds.
    pub at_unix_s: f64,
    /// Previous target.
    pub from: u32,
    /// New target.
    pub to: u32,
    /// Why.
    pub reason: String,
}

/// What the autoscaler is doing, as `/metrics` and the dashboard show it.
#[derive(Debug, Clone, Serialize)]
pub struct AutoscaleView {
    /// `local`, `docker`, `slurm` or `external`.
    pub backend: &'static str,
    /// Bounds.
    pub min_workers: u32,
    /// Bounds.
    pub max_workers: u32,
    /// Target count.
    pub desired: u32,
    /// Instances started, not registered with the master yet.
    pub starting: u32,
    /// Instances registered and taking work.
    pub running: u32,
    /// Instances asked to drain, not gone yet.
    pub draining: u32,
    /// Images not completed.
    pub backlog: u64,
    /// Measured images/s per worker.
    pub rate_per_worker: Option<f64>,
    /// Seconds to drain the backlog at the target count.
    pub eta_s: Option<f64>,
    /// Sum over instances of their lifetime so far, seconds.
    pub worker_seconds: f64,
    /// Instances started since the master started.
    pub started_total: u64,
    /// Instances that left after being asked to.
    pub stopped_total: u64,
    /// Instances that died unasked (and were replaced).
    pub died_total: u64,
    /// Rises of the target.
    pub scale_ups_total: u64,
    /// Falls of the target.
    pub scale_downs_total: u64,
    /// Latest changes of the target, oldest first.
    pub decisions: Vec<DecisionLog>,
}

impl AutoscaleView {
    /// The wire form for `Status`.
    pub fn to_status(&self) -> imgnorm_proto::v1::AutoscaleStatus {
        imgnorm_proto::v1::AutoscaleStatus {
            backend: self.backend.to_string(),
            min_workers: self.min_workers,
            max_workers: self.max_workers,
            desired: self.desired,
            starting: self.starting,
            running: self.running,
            draining: self.draining,
            worker_seconds: self.worker_seconds,
            started_total: self.started_total,
            stopped_total: self.stopped_total,
            died_total: self.died_total,
            last_decision: self
                .decisions
                .last()
                .map(|d| format!("{} -> {}: {}", d.from, d.to, d.reason))
                .unwrap_or_default(),
            rate_per_worker: self.rate_per_worker.unwrap_or(0.0),
        }
    }

    /// One line for the end of a run.
    pub fn human(&self) -> String {
        format!(
            "autoscale ({}): {} workers started, {} drained, {} died; {:.1} worker-seconds",
            self.backend,
            self.started_total,
            self.stopped_total,
            self.died_total,
            self.worker_seconds
        )
    }
}
