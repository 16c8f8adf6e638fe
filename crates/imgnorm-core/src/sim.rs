//! A deterministic simulation of a whole cluster: the real master job logic
//! ([`crate::jobs::Jobs`], and the scheduler inside it) driven by a
//! simulated clock and a simulated network, with virtual workers that
//! process, crash, hang, straggle and get cut off, and a master that crashes
//! and recovers from its (simulated) state database.
//!
//! No sockets, no threads, no wall clock inside: one event queue ordered by
//! virtual time, and every random choice drawn from one seeded generator, so
//! a seed reproduces a run exactly (the FoundationDB style of deterministic
//! simulation testing). Only [`SimReport::wall_s`] and
//! [`SimReport::decisions_per_s`] measure the machine the simulation ran on.
//!
//! What is modelled, and how:
//! - **Workers** process their leases one image at a time; an image of cost
//!   `c` takes `c / speed` seconds. Speeds spread uniformly around
//!   [`SimConfig::speed`]; stragglers are slower by
//!   [`SimConfig::straggler_factor`]. Image costs follow a log-normal
//!   distribution of mean 1. Like the real worker, a worker sends one result
//!   per image, closes a finished (or revoked) lease and asks for one more
//!   lease, and sends a heartbeat every [`SimConfig::heartbeat_s`].
//! - **Crashes**: the process dies, its connection closes (the master learns
//!   it one latency later), and with [`SimConfig::restart_s`] it comes back
//!   as a new worker (a fresh session, as a restarted container would).
//! - **Hangs**: the process stops but its connection stays open; only the
//!   heartbeat timeout finds it. It never comes back.
//! - **Partitions**: a set of workers is cut off for a while; messages both
//!   ways wait (TCP retransmits) and arrive when it heals, unless the master
//!   declared the worker dead meanwhile, in which case the master has closed
//!   the connection: the worker's late messages are lost and it reconnects.
//! - **Master crashes**: everything in the master's memory is lost, every
//!   connection drops, and after [`SimConfig::master_restart_s`] a new master
//!   restores the unfinished job from the rows it had made durable
//!   ([`crate::jobs::Effect::PersistResult`]), exactly what the real state
//!   database holds; workers reconnect with a back-off.
//!
//! Images use the dry-run path (the real worker's row for `--dry-run`), so
//! every result goes through the master's checks, the scheduler's verdict
//! and the job's bookkeeping as in a real run.
use serde::Serialize;

mod rng;
mod world;

#[cfg(test)]
mod tests;

pub use world::simulate;

/// What to simulate. [`SimConfig::default`] is a small healthy cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Virtual workers at the start.
    pub workers: u32,
    /// Images of the one job.
    pub images: u64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Images per second of a nominal worker, for an image of cost 1.
    pub speed: f64,
    /// Worker speeds spread uniformly over `speed × (1 ± spread)`.
    pub speed_spread: f64,
    /// σ of the log-normal image cost (mean 1); 0 makes every image equal.
    pub cost_sigma: f64,
    /// Fraction of the workers that crash once, at a random time.
    pub worker_failure_rate: f64,
    /// Fraction of the workers that hang once (connection open, silent).
    pub hang_rate: f64,
    /// A crashed worker starts again after this many seconds (None: never).
    pub restart_s: Option<f64>,
    /// Fraction of the workers that are stragglers.
    pub straggler_rate: f64,
    /// A straggler's speed is the nominal one divided by this.
    pub straggler_factor: f64,
    /// Network partitions during the run.
    pub partitions: u32,
    /// Fraction of the workers each partition cuts off.
    pub partition_fraction: f64,
    /// How long a partition lasts.
    pub partition_s: f64,
    /// Master crashes during the run (each restores from the state database).
    pub master_crashes: u32,
    /// Seconds from a master crash to the new master accepting workers.
    pub master_restart_s: f64,
    /// One-way network latency, seconds.
    pub latency_s: f64,
    /// Worker heartbeat period.
    pub heartbeat_s: f64,
    /// Silence after which the master declares a worker dead.
    pub heartbeat_timeout_s: f64,
    /// Period of the master's expiry tick.
    pub tick_s: f64,
    /// Largest lease (the scheduler's batch size).
    pub batch_size: u64,
    /// Leases a worker asks for at once (its prefetch).
    pub credits: u32,
    /// Speculative copies of straggling leases at the tail.
    pub speculate: bool,
    /// Give up when virtual time passes this many ideal makespans (a stall).
    pub give_up_factor: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            workers: 10,
            images: 10_000,
            seed: 1,
            speed: 100.0,
            speed_spread: 0.2,
            cost_sigma: 0.5,
            worker_failure_rate: 0.0,
            hang_rate: 0.0,
            restart_s: None,
            straggler_rate: 0.0,
            straggler_factor: 4.0,
            partitions: 0,
            partition_fraction: 0.1,
            partition_s: 5.0,
            master_crashes: 0,
            master_restart_s: 2.0,
            latency_s: 0.000_5,
            heartbeat_s: 1.0,
            heartbeat_timeout_s: 10.0,
            tick_s: 1.0,
            batch_size: 64,
            credits: 2,
            speculate: true,
            give_up_factor: 50.0,
        }
    }
}

/// A configuration the simulation cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    /// A value out of its range.
    #[error("invalid simulation setting: {0}")]
    Invalid(String),
}

/// How one kind of failure went: counts, and how long detection and
/// recovery took (virtual seconds; `None` without such a failure).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FailureTimes {
    /// Failures injected.
    pub count: u32,
    /// Of those, the ones the master noticed (declared the worker dead).
    pub detected: u32,
    /// Mean seconds from the failure to the master declaring the worker dead.
    pub detect_mean_s: Option<f64>,
    /// Longest such time.
    pub detect_max_s: Option<f64>,
    /// Mean seconds from the failure until every image the failed party held
    /// unfinished had its result accepted (for a master crash: until the
    /// accepted count was back where it was).
    pub recover_mean_s: Option<f64>,
    /// Longest such time.
    pub recover_max_s: Option<f64>,
}

/// What a simulation found. The first fields are the one JSON line the
/// `imgnorm simulate` command ends with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimReport {
    /// Workers at the start.
    pub workers: u32,
    /// Images of the job.
    pub images: u64,
    /// The seed.
    pub seed: u64,
    /// Virtual seconds from submission to the dataset being written.
    pub makespan_s: f64,
    /// Total work over total worker speed: no scheduling cost, no failure.
    pub ideal_s: f64,
    /// `makespan_s / ideal_s`.
    pub ratio: f64,
    /// Images without a final row when the job ended (must be 0).
    pub lost: u64,
    /// Images whose result was accepted twice (must be 0).
    pub duplicated: u64,
    /// Failures injected: worker crashes, hangs, partitions, master crashes.
    pub failures: u32,
    /// Master decisions (calls into the job logic) per second of the wall
    /// time spent in them: the rate one master core sustains.
    pub decisions_per_s: f64,
    /// Wall-clock seconds the whole simulation took.
    pub wall_s: f64,
    /// The job never completed (every event ran out, or time gave up).
    pub stalled: bool,
    /// Master decisions made.
    pub decisions: u64,
    /// Events processed.
    pub events: u64,
    /// Results the master accepted (re-runs after failures included).
    pub accepted: u64,
    /// Results discarded as late (their lease or worker was gone).
    pub stale: u64,
    /// Results refused as dishonest (must be 0: the workers are honest).
    pub refused: u64,
    /// Images quarantined.
    pub quarantined: u64,
    /// Leases sent.
    pub leases: u64,
    /// Worker crashes.
    pub crashes: FailureTimes,
    /// Worker hangs.
    pub hangs: FailureTimes,
    /// Workers cut off by partitions (each worker counts once per partition).
    pub partitioned: FailureTimes,
    /// Master crashes.
    pub master: FailureTimes,
}

impl SimConfig {
    /// Checks every setting's range.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |s: &str| Err(SimError::Invalid(s.to_string()));
        let fraction = |x: f64| (0.0..=1.0).contains(&x);
        if self.workers == 0 || self.images == 0 {
            return bad("--workers and --images must be at least 1");
        }
        if !(self.speed.is_finite() && self.speed > 0.0) {
            return bad("--speed must be a positive number of images per second");
        }
        if !(0.0..1.0).contains(&self.speed_spread) {
            return bad("--speed-spread must be in [0, 1)");
        }
        if !(0.0..=3.0).contains(&self.cost_sigma) {
            return bad("--cost-sigma must be in [0, 3]");
        }
        for (name, x) in [
            ("--worker-failure-rate", self.worker_failure_rate),
            ("--hang-rate", self.hang_rate),
            ("--straggler-rate", self.straggler_rate),
            ("--partition-fraction", self.partition_fraction),
        ] {
            if !fraction(x) {
                return Err(SimError::Invalid(format!("{name} must be in [0, 1]")));
            }
        }
        if self.worker_failure_rate + self.hang_rate > 1.0 {
            return bad("--worker-failure-rate plus --hang-rate must be at most 1");
        }
        let positive = [
            ("--straggler-factor", self.straggler_factor, 1.0),
            ("--heartbeat", self.heartbeat_s, f64::MIN_POSITIVE),
            (
                "--heartbeat-timeout",
                self.heartbeat_timeout_s,
                f64::MIN_POSITIVE,
            ),
            ("--tick", self.tick_s, f64::MIN_POSITIVE),
            ("--give-up-factor", self.give_up_factor, 1.0),
        ];
        for (name, x, min) in positive {
            if !(x.is_finite() && x >= min) {
                return Err(SimError::Invalid(format!("{name} must be at least {min}")));
            }
        }
        for (name, x) in [
            ("--latency", self.latency_s),
            ("--partition-secs", self.partition_s),
            ("--master-restart-secs", self.master_restart_s),
            ("--restart-secs", self.restart_s.unwrap_or(0.0)),
        ] {
            if !(x.is_finite() && x >= 0.0) {
                return Err(SimError::Invalid(format!("{name} must be 0 or more")));
            }
        }
        if self.heartbeat_timeout_s <= self.heartbeat_s {
            return bad("--heartbeat-timeout must be longer than --heartbeat");
        }
        if self.batch_size == 0 || self.credits == 0 {
            return bad("--batch-size and --credits must be at least 1");
        }
        Ok(())
    }
}
