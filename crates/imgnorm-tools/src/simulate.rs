//! `imgnorm simulate`: the flags of a deterministic cluster simulation
//! ([`imgnorm_core::sim`]: the real scheduler and master job logic under a
//! simulated clock and network) and its report: a few lines for people on
//! stderr, then the one JSON line every command ends with on stdout.
use clap::Args;
use imgnorm_core::sim::{FailureTimes, SimConfig, SimError, SimReport, simulate};

/// `imgnorm simulate`.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Virtual workers.
    #[arg(long, default_value_t = 100)]
    pub workers: u32,
    /// Images of the job.
    #[arg(long, default_value_t = 1_000_000)]
    pub images: u64,
    /// Seed of every random choice: the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Images per second of a nominal worker, for an image of average cost.
    #[arg(long, default_value_t = 100.0)]
    pub speed: f64,
    /// Worker speeds spread uniformly over speed × (1 ± this).
    #[arg(long, default_value_t = 0.2)]
    pub speed_spread: f64,
    /// σ of the log-normal image cost (mean 1; 0: every image costs the same).
    #[arg(long, default_value_t = 0.5)]
    pub cost_sigma: f64,
    /// Fraction of the workers that crash once, at a random time.
    #[arg(long, default_value_t = 0.0)]
    pub worker_failure_rate: f64,
    /// Fraction of the workers that hang once (connection open, silent).
    #[arg(long, default_value_t = 0.0)]
    pub hang_rate: f64,
    /// A crashed worker starts again after this many seconds (default: never).
    #[arg(long, value_name = "SECS")]
    pub restart_secs: Option<f64>,
    /// Fraction of the workers that are stragglers.
    #[arg(long, default_value_t = 0.0)]
    pub straggler_rate: f64,
    /// A straggler is this many times slower.
    #[arg(long, default_value_t = 4.0)]
    pub straggler_factor: f64,
    /// Network partitions during the run.
    #[arg(long, default_value_t = 0)]
    pub partitions: u32,
    /// Fraction of the workers each partition cuts off.
    #[arg(long, default_value_t = 0.1)]
    pub partition_fraction: f64,
    /// How long each partition lasts.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub partition_secs: f64,
    /// Master crashes during the run; each new master restores the job from
    /// what its state database held.
    #[arg(long, default_value_t = 0)]
    pub master_crashes: u32,
    /// Seconds until a crashed master is back.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub master_restart_secs: f64,
    /// One-way network latency.
    #[arg(long, value_name = "MS", default_value_t = 0.5)]
    pub latency_ms: f64,
    /// Worker heartbeat period.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub heartbeat_secs: f64,
    /// Silence after which the master declares a worker dead.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub heartbeat_timeout_secs: f64,
    /// Largest lease.
    #[arg(long, default_value_t = 64)]
    pub batch_size: u64,
    /// Leases a worker asks for at once.
    #[arg(long, default_value_t = 2)]
    pub credits: u32,
    /// No speculative copies of straggling leases at the tail.
    #[arg(long)]
    pub no_speculate: bool,
}

impl SimulateArgs {
    /// The simulation these flags describe.
    pub fn config(&self) -> SimConfig {
        SimConfig {
            workers: self.workers,
            images: self.images,
            seed: self.seed,
            speed: self.speed,
            speed_spread: self.speed_spread,
            cost_sigma: self.cost_sigma,
            worker_failure_rate: self.worker_failure_rate,
            hang_rate: self.hang_rate,
            restart_s: self.restart_secs,
            straggler_rate: self.straggler_rate,
            straggler_factor: self.straggler_factor,
            partitions: self.partitions,
            partition_fraction: self.partition_fraction,
            partition_s: self.partition_secs,
            master_crashes: self.master_crashes,
            master_restart_s: self.master_restart_secs,
            latency_s: self.latency_ms / 1000.0,
            heartbeat_s: self.heartbeat_secs,
            heartbeat_timeout_s: self.heartbeat_timeout_secs,
            speculate: !self.no_speculate,
            batch_size: self.batch_size,
            credits: self.credits,
            ..SimConfig::default()
        }
    }
}

/// Runs the simulation; the report's `lost`, `duplicated` and `stalled`
/// say whether the master kept its promise.
pub fn run(args: &SimulateArgs) -> Result<SimReport, SimError> {
    simulate(&args.config())
}

/// The lines for people: makespan against the ideal, and each failure kind.
pub fn human(r: &SimReport) -> String {
    let mut s = format!(
        "simulated {} images on {} workers (seed {}): makespan {:.1} s, ideal {:.1} s, ratio {:.3}\n\
         lost {}, duplicated {}, {} failures; {} leases, {} results accepted, {} late, {} quarantined\n\
         master: {} decisions, {:.0} per second of master time; simulation took {:.1} s\n",
        r.images,
        r.workers,
        r.seed,
        r.makespan_s,
        r.ideal_s,
        r.ratio,
        r.lost,
        r.duplicated,
        r.failures,
        r.leases,
        r.accepted,
        r.stale,
        r.quarantined,
        r.decisions,
        r.decisions_per_s,
        r.wall_s,
    );
    let kinds: [(&str, &FailureTimes); 4] = [
        ("worker crashes", &r.crashes),
        ("worker hangs", &r.hangs),
        ("workers cut off", &r.partitioned),
        ("master crashes", &r.master),
    ];
    let secs = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.2} s"));
    for (name, f) in kinds.iter().filter(|(_, f)| f.count > 0) {
        s.push_str(&format!(
            "{name}: {} ({} detected): detect mean {} max {}, recover mean {} max {}\n",
            f.count,
            f.detected,
            secs(f.detect_mean_s),
            secs(f.detect_max_s),
            secs(f.recover_mean_s),
            secs(f.recover_max_s),
        ));
    }
    if r.stalled {
        s.push_str("STALLED: the job never completed\n");
    }
    s
}

/// The JSON line: the fields the issue names first, then the rest.
pub fn json_line(r: &SimReport) -> String {
    serde_json::to_string(r).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
