//! Runs the autoscaling policy ([`imgnorm_core::autoscale`]) against a live
//! master: observes the queue once per interval, converges a [`Backend`]
//! (local processes, Docker containers, Slurm jobs) to the decided worker
//! count, drains
//! surplus workers gracefully (SIGTERM: they finish their batch, hand back
//! what they prefetched and leave), replaces workers that died, and publishes
//! what it did for `/metrics`, the dashboard and the logs.
pub mod backend;
pub mod docker;
pub mod harness;
pub mod local;
pub mod slurm;

use std::collections::VecDeque;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use imgnorm_core::autoscale::{AutoscaleConfig, AutoscaleError, Autoscaler, Decision};

pub use crate::master::autoscale_view::{AutoscaleView, DecisionLog};
pub use backend::Backend;

use crate::master::Master;

/// Decisions kept in the view.
const DECISIONS_KEPT: usize = 50;

/// Autoscaler failures.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    /// Invalid policy settings.
    #[error(transparent)]
    Policy(#[from] AutoscaleError),
    /// A local worker process could not be started.
    #[error("cannot start a local worker: {0}")]
    Spawn(#[source] std::io::Error),
    /// The Docker Engine API refused or failed.
    #[error(transparent)]
    Docker(#[from] docker::DockerError),
    /// A Slurm command refused or failed.
    #[error(transparent)]
    Slurm(#[from] slurm::SlurmError),
}

/// Where workers come from.
#[derive(Debug, Clone)]
pub enum BackendSpec {
    /// Worker processes of this executable on this host.
    Local(local::LocalConfig),
    /// Worker containers through the Docker Engine API.
    Docker(docker::DockerConfig),
    /// Worker jobs submitted to Slurm with `sbatch`.
    Slurm(slurm::SlurmConfig),
    /// Nothing is started: the target is only published (`/metrics`,
    /// status) for an outside scaler such as a Kubernetes HPA.
    External,
}

/// Everything the autoscaler needs.
#[derive(Debug, Clone)]
pub struct AutoscaleSettings {
    /// The policy.
    pub policy: AutoscaleConfig,
    /// How often to observe and reconcile.
    pub interval: Duration,
    /// A draining worker still running after this long is killed.
    pub drain_grace: Duration,
    /// Where workers come from.
    pub backend: BackendSpec,
}

/// Lifecycle of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    Running,
    Draining(Instant),
}

#[derive(Debug)]
struct Instance {
    name: String,
    handle: String,
    started: Instant,
    phase: Phase,
}

/// How an instance ended.
#[derive(Debug, Clone)]
pub struct Exit {
    /// Backend handle (pid, container id, Slurm job id).
    pub handle: String,
    /// Exit status as text.
    pub status: String,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The running autoscaler: policy, backend and the instances it owns.
pub struct Controller {
    master: Master,
    settings: AutoscaleSettings,
    policy: Autoscaler,
    backend: Box<dyn backend::Dyn>,
    instances: Vec<Instance>,
    next: u64,
    decisions: VecDeque<DecisionLog>,
    finished_seconds: f64,
    started_total: u64,
    stopped_total: u64,
    died_total: u64,
    /// Starts are held back until then after instances died young.
    hold_starts_until: Option<Instant>,
    young_deaths: u32,
    last: Option<Decision>,
    ups: u64,
    downs: u64,
    /// Workers taking work at the last observation.
    live: u32,
}

impl Controller {
    async fn step(&mut self) -> Result<(), ScaleError> {
        let now = Instant::now();
        // 1. Instances that ended.
        for exit in self.backend.reap().await? {
            let Some(pos) = self.instances.iter().position(|i| i.handle == exit.handle) else {
                continue;
            };
            let inst = self.instances.remove(pos);
            let lived = now.saturating_duration_since(inst.started);
            self.finished_seconds += lived.as_secs_f64();
            if matches!(inst.phase, Phase::Draining(_)) {
                self.stopped_total += 1;
                tracing::info!(worker = %inst.name, status = %exit.status, "autoscale: worker drained and stopped");
            } else {
                self.died_total += 1;
                tracing::warn!(worker = %inst.name, status = %exit.status, "autoscale: worker died; replacing it");
                if lived < Duration::from_secs(10) {
                    self.young_deaths += 1;
                    let backoff = Duration::from_secs(1 << self.young_deaths.min(6));
                    self.hold_starts_until = Some(now + backoff);
                    tracing::warn!(
                        backoff_s = backoff.as_secs(),
                        "autoscale: workers die right after starting; holding back new starts"
                    );
                } else {
                    self.young_deaths = 0;
                }
            }
        }
        // 2. Registration, and drains that take too long.
        let workers = self.master.status(None).workers;
        for inst in &mut self.instances {
            if inst.phase == Phase::Starting
                && workers
                    .iter()
                    .any(|w| w.name == inst.name && w.state == "alive")
            {
                inst.phase = Phase::Running;
            }
        }
        let mut overdue = Vec::new();
        for inst in &self.instances {
            if let Phase::Draining(since) = inst.phase
                && now.saturating_duration_since(since) > self.settings.drain_grace
            {
                overdue.push(inst.handle.clone());
            }
        }
        for h in overdue {
            tracing::warn!(handle = %h, "autoscale: worker still draining after the grace period; killing it");
            self.backend.kill(&h).await?;
        }
        // 3. Decide.
        let obs = self.master.autoscale_observation();
        self.live = obs.live_workers;
        let d = self.policy.observe(obs, now);
        if d.changed() {
            if d.desired > d.previous {
                self.ups += 1;
            } else {
                self.downs += 1;
            }
            tracing::info!(from = d.previous, to = d.desired, reason = %d.reason, "autoscale decision");
            if self.decisions.len() == DECISIONS_KEPT {
                self.decisions.pop_front();
            }
            self.decisions.push_back(DecisionLog {
                at_unix_s: unix_now(),
                from: d.previous,
                to: d.desired,
                reason: d.reason.to_string(),
            });
        }
        // 4. Converge (an outside scaler does that for `external`).
        if !self.backend.converges() {
            self.last = Some(d);
            self.publish(now, obs.backlog);
            return Ok(());
        }
        let active = self
            .instances
            .iter()
            .filter(|i| !matches!(i.phase, Phase::Draining(_)))
            .count() as u32;
        if active < d.desired {
            if self.hold_starts_until.is_none_or(|t| now >= t) {
                for _ in active..d.desired {
                    let name = format!("auto-{}", self.next);
                    self.next += 1;
                    let handle = match self.backend.start(&name).await {
                        Ok(h) => h,
                        Err(e) => {
                            // Same backoff as for workers that die young: a
                            // missing image or a full host is not retried
                            // every second.
                            self.young_deaths += 1;
                            let backoff = Duration::from_secs(1 << self.young_deaths.min(6));
                            self.hold_starts_until = Some(now + backoff);
                            return Err(e);
                        }
                    };
                    tracing::info!(worker = %name, handle = %handle, "autoscale: worker started");
                    self.started_total += 1;
                    self.instances.push(Instance {
                        name,
                        handle,
                        started: now,
                        phase: Phase::Starting,
                    });
                }
            }
        } else if active > d.desired {
            let surplus = (active - d.desired) as usize;
            for handle in self.pick_for_drain(&workers, surplus) {
                if let Some(inst) = self.instances.iter_mut().find(|i| i.handle == handle) {
                    tracing::info!(worker = %inst.name, "autoscale: draining worker");
                    inst.phase = Phase::Draining(now);
                }
                self.backend.drain(&handle).await?;
            }
        }
        self.last = Some(d);
        self.publish(now, obs.backlog);
        Ok(())
    }

    /// Surplus instances to drain: not registered yet first, then those
    /// holding no lease, then the newest.
    fn pick_for_drain(&self, workers: &[imgnorm_proto::v1::WorkerStatus], n: usize) -> Vec<String> {
        let leases = |name: &str| {
            workers
                .iter()
                .filter(|w| w.name == name && w.state != "dead")
                .map(|w| w.leases)
                .sum::<u32>()
        };
        let mut c: Vec<(u8, u32, Instant, String)> = self
            .instances
            .iter()
            .filter(|i| !matches!(i.phase, Phase::Draining(_)))
            .map(|i| {
                let rank = match i.phase {
                    Phase::Starting => 0,
                    _ => 1,
                };
                (rank, leases(&i.name), i.started, i.handle.clone())
            })
            .collect();
        c.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then(b.2.cmp(&a.2)));
        c.into_iter().take(n).map(|x| x.3).collect()
    }

    fn publish(&self, now: Instant, backlog: u64) {
        self.master.set_autoscale_view(self.view(now, backlog));
    }

    fn view(&self, now: Instant, backlog: u64) -> AutoscaleView {
        let count =
            |f: fn(&Phase) -> bool| self.instances.iter().filter(|i| f(&i.phase)).count() as u32;
        let live: f64 = self
            .instances
            .iter()
            .map(|i| now.saturating_duration_since(i.started).as_secs_f64())
            .sum();
        let cfg = self.policy.config();
        AutoscaleView {
            backend: self.backend.kind(),
            min_workers: cfg.min_workers,
            max_workers: cfg.max_workers,
            desired: self.policy.desired(),
            starting: count(|p| *p == Phase::Starting),
            running: if !self.backend.converges() {
                self.live
            } else {
                count(|p| *p == Phase::Running)
            },
            draining: count(|p| matches!(p, Phase::Draining(_))),
            backlog,
            rate_per_worker: self.policy.rate_per_worker(),
            eta_s: self.last.and_then(|d| d.eta_s),
            worker_seconds: self.finished_seconds + live,
            started_total: self.started_total,
            stopped_total: self.stopped_total,
            died_total: self.died_total,
            scale_ups_total: self.ups,
            scale_downs_total: self.downs,
            decisions: self.decisions.iter().cloned().collect(),
        }
    }
}

/// Connects the backend (adopting workers left by an earlier master) and
/// returns the controller, ready to [`Controller::run`].
pub async fn prepare(
    master: Master,
    settings: AutoscaleSettings,
) -> Result<Controller, ScaleError> {
    let policy = Autoscaler::new(settings.policy.clone())?;
    let mut backend: Box<dyn backend::Dyn> = match &settings.backend {
        BackendSpec::Local(c) => Box::new(local::Local::new(c.clone())),
        BackendSpec::External => Box::new(backend::External),
        BackendSpec::Docker(c) => Box::new(docker::Docker::connect(c.clone()).await?),
        BackendSpec::Slurm(c) => Box::new(slurm::Slurm::new(c.clone()).await?),
    };
    let adopted = backend.adopted();
    let now = Instant::now();
    let next = adopted
        .iter()
        .filter_map(|(name, _)| {
            name.strip_prefix("auto-")
                .and_then(|n| n.parse::<u64>().ok())
        })
        .max()
        .map_or(1, |n| n + 1);
    if !adopted.is_empty() {
        tracing::info!(
            count = adopted.len(),
            "autoscale: adopted running workers left by an earlier master"
        );
    }
    Ok(Controller {
        master,
        policy,
        backend,
        instances: adopted
            .into_iter()
            .map(|(name, handle)| Instance {
                name,
                handle,
                started: now,
                phase: Phase::Starting,
            })
            .collect(),
        next,
        decisions: VecDeque::new(),
        finished_seconds: 0.0,
        started_total: 0,
        stopped_total: 0,
        died_total: 0,
        hold_starts_until: None,
        young_deaths: 0,
        last: None,
        ups: 0,
        downs: 0,
        live: 0,
        settings,
    })
}

impl Controller {
    /// Observes and converges once per interval until `shutdown` resolves,
    /// then stops every instance it owns (drain first, kill after the grace
    /// period) and returns the final view. A failed step (say, the Docker
    /// Engine briefly unreachable) is logged and retried at the next tick.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> AutoscaleView {
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {
                    if let Err(e) = self.step().await {
                        tracing::warn!(error = %e, "autoscale step failed; retrying");
                    }
                }
            }
        }
        let grace = self.settings.drain_grace;
        self.backend.stop_all(grace).await;
        let end = Instant::now();
        self.stopped_total += self.instances.len() as u64;
        self.finished_seconds += self
            .instances
            .drain(..)
            .map(|i| end.saturating_duration_since(i.started).as_secs_f64())
            .sum::<f64>();
        self.publish(end, 0);
        self.view(end, 0)
    }
}
