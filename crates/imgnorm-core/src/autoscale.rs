//! The autoscaling policy: how many workers the queue needs, as a pure
//! function of what the master observes and the time it observed it.
//!
//! Every [`Autoscaler::observe`] call takes an [`Observation`] (images not yet
//! completed, a monotonic count of completed images, the live workers) and
//! `now`, and returns a [`Decision`]: the worker count the backend should
//! converge to, with the reason. Nothing here spawns or stops anything.
//!
//! The rules, in order:
//! - **Throughput** is learned per worker: an exponentially weighted moving
//!   average (half-life [`AutoscaleConfig::rate_half_life`]) of completed
//!   images per second per live worker, updated only over intervals in which
//!   the workers had work and made progress (an idle or still-booting pool
//!   says nothing about speed).
//! - **Need**: with a backlog of `B` images and a per-worker rate `r`, the
//!   job needs `ceil(B / (r · target_drain))` workers to drain in
//!   [`AutoscaleConfig::target_drain`]; clamped to `[max(min, 1), max]`. With
//!   a backlog but no rate yet, one worker (or the minimum) is started and
//!   the rest waits for a measurement. With no backlog, the need is `min`.
//! - **Scaling up** happens at once when the current count would take longer
//!   than `target_drain · (1 + tolerance)`, at most once per
//!   [`AutoscaleConfig::scale_up_cooldown`].
//! - **Scaling down** follows the highest need seen during the last
//!   [`AutoscaleConfig::scale_down_window`] (the stabilisation window of
//!   Kubernetes' HPA): a short dip in measured throughput or backlog never
//!   removes a worker, only a need that stayed lower for the whole window.
//!
//! Dead workers are not the policy's business: the decision is a target
//! count, and the backend replaces instances that died to keep that count.
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// Autoscaler settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoscaleConfig {
    /// Fewest workers, also when idle.
    pub min_workers: u32,
    /// Most workers.
    pub max_workers: u32,
    /// Wanted time to drain the backlog.
    pub target_drain: Duration,
    /// Least time between two scale-ups.
    pub scale_up_cooldown: Duration,
    /// A lower need must hold this long before workers are removed.
    pub scale_down_window: Duration,
    /// Half-life of the per-worker throughput average.
    pub rate_half_life: Duration,
    /// Relative slack before scaling up (0.1: only when the current pool
    /// would take more than 110 % of the target).
    pub tolerance: f64,
}

impl Default for AutoscaleConfig {
    fn default() -> Self {
        AutoscaleConfig {
            min_workers: 0,
            max_workers: 4,
            target_drain: Duration::from_secs(60),
            scale_up_cooldown: Duration::from_secs(5),
            scale_down_window: Duration::from_secs(30),
            rate_half_life: Duration::from_secs(10),
            tolerance: 0.1,
        }
    }
}

/// Invalid autoscaler settings.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AutoscaleError {
    /// `max_workers` is 0 or below `min_workers`.
    #[error("autoscale: max workers ({max}) must be at least 1 and at least min workers ({min})")]
    Bounds {
        /// Minimum.
        min: u32,
        /// Maximum.
        max: u32,
    },
    /// A zero target drain time.
    #[error("autoscale: the target drain time must be positive")]
    Target,
    /// Tolerance outside `[0, 1]`.
    #[error("autoscale: tolerance {0} must be between 0 and 1")]
    Tolerance(f64),
}

impl AutoscaleConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), AutoscaleError> {
        if self.max_workers == 0 || self.max_workers < self.min_workers {
            return Err(AutoscaleError::Bounds {
                min: self.min_workers,
                max: self.max_workers,
            });
        }
        if self.target_drain.is_zero() {
            return Err(AutoscaleError::Target);
        }
        if !(0.0..=1.0).contains(&self.tolerance) {
            return Err(AutoscaleError::Tolerance(self.tolerance));
        }
        Ok(())
    }
}

/// What the master sees at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observation {
    /// Images not completed yet over all queued and running jobs (pending
    /// and in flight).
    pub backlog: u64,
    /// Images completed since the master started (monotonic).
    pub completed: u64,
    /// Connected workers that take work (draining ones excluded).
    pub live_workers: u32,
}

/// Why the target is what it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reason {
    /// No backlog: the minimum.
    Idle,
    /// A backlog but no throughput measured yet: start small and measure.
    Measuring,
    /// Scaled up because the backlog would take too long to drain.
    Backlog {
        /// Images not completed.
        backlog: u64,
        /// Measured images/s per worker.
        rate: f64,
        /// Seconds the previous count would have needed.
        eta_s: f64,
    },
    /// Scaled down after the need stayed lower for the whole window.
    Surplus {
        /// Highest need seen during the window.
        need: u32,
    },
    /// Wanted more, but the last scale-up is too recent.
    Cooldown {
        /// What the need was.
        need: u32,
    },
    /// Nothing to change.
    Steady,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Reason::Idle => write!(f, "no backlog"),
            Reason::Measuring => write!(f, "backlog but no throughput measured yet"),
            Reason::Backlog {
                backlog,
                rate,
                eta_s,
            } => write!(
                f,
                "{backlog} images left at {rate:.1} images/s per worker: {eta_s:.0} s to drain with the previous count"
            ),
            Reason::Surplus { need } => {
                write!(f, "need stayed at or below {need} for the whole window")
            }
            Reason::Cooldown { need } => {
                write!(f, "need {need}, waiting for the scale-up cooldown")
            }
            Reason::Steady => write!(f, "steady"),
        }
    }
}

/// The target worker count and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Workers the backend should converge to.
    pub desired: u32,
    /// The target before this observation.
    pub previous: u32,
    /// Workers the backlog needs right now (before hysteresis).
    pub need: u32,
    /// Why.
    pub reason: Reason,
    /// Measured images/s per worker, once known.
    pub rate_per_worker: Option<f64>,
    /// Seconds to drain the backlog with `desired` workers, once known.
    pub eta_s: Option<f64>,
}

impl Decision {
    /// True when the target changed.
    pub fn changed(&self) -> bool {
        self.desired != self.previous
    }
}

/// The policy's memory between observations. See the module docs.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    cfg: AutoscaleConfig,
    desired: u32,
    rate: Option<f64>,
    last: Option<(Instant, Observation)>,
    last_up: Option<Instant>,
    /// Needs seen during the scale-down window, oldest first.
    needs: VecDeque<(Instant, u32)>,
}

impl Autoscaler {
    /// A policy starting at the minimum.
    pub fn new(cfg: AutoscaleConfig) -> Result<Autoscaler, AutoscaleError> {
        cfg.validate()?;
        Ok(Autoscaler {
            desired: cfg.min_workers,
            cfg,
            rate: None,
            last: None,
            last_up: None,
            needs: VecDeque::new(),
        })
    }

    /// Settings.
    pub fn config(&self) -> &AutoscaleConfig {
        &self.cfg
    }

    /// The current target.
    pub fn desired(&self) -> u32 {
        self.desired
    }

    /// Measured images/s per worker, once known.
    pub fn rate_per_worker(&self) -> Option<f64> {
        self.rate
    }

    fn learn(&mut self, obs: &Observation, now: Instant) {
        if let Some((t0, prev)) = self.last {
            let dt = now.saturating_duration_since(t0).as_secs_f64();
            let done = obs.completed.saturating_sub(prev.completed);
            // Only intervals in which the pool was busy throughout and made
            // progress say something about a worker's speed.
            if dt > 0.0 && prev.live_workers > 0 && prev.backlog > 0 && obs.backlog > 0 && done > 0
            {
                let sample = done as f64 / dt / f64::from(prev.live_workers);
                let hl = self.cfg.rate_half_life.as_secs_f64().max(1e-9);
                let alpha = 1.0 - 0.5f64.powf(dt / hl);
                self.rate = Some(match self.rate {
                    Some(r) => r + alpha * (sample - r),
                    None => sample,
                });
            }
        }
        self.last = Some((now, *obs));
    }

    fn need(&self, backlog: u64) -> u32 {
        let floor = self.cfg.min_workers.max(1);
        if backlog == 0 {
            return self.cfg.min_workers;
        }
        let Some(rate) = self.rate.filter(|r| *r > 0.0) else {
            return floor.max(self.desired).min(self.cfg.max_workers);
        };
        let per_worker = rate * self.cfg.target_drain.as_secs_f64();
        let n = (backlog as f64 / per_worker).ceil();
        let n = if n.is_finite() {
            n.min(f64::from(u32::MAX)) as u32
        } else {
            self.cfg.max_workers
        };
        n.clamp(floor, self.cfg.max_workers)
    }

    /// Takes one observation and returns the target. See the module docs.
    pub fn observe(&mut self, obs: Observation, now: Instant) -> Decision {
        self.learn(&obs, now);
        let previous = self.desired;
        let need = self.need(obs.backlog);
        self.needs.push_back((now, need));
        while let Some(&(t, _)) = self.needs.front() {
            if now.saturating_duration_since(t) > self.cfg.scale_down_window {
                self.needs.pop_front();
            } else {
                break;
            }
        }
        let eta = |n: u32| {
            self.rate
                .filter(|r| *r > 0.0 && n > 0)
                .map(|r| obs.backlog as f64 / (r * f64::from(n)))
        };
        let mut reason = Reason::Steady;
        if need > previous {
            let slow = match eta(previous) {
                Some(e) => e > self.cfg.target_drain.as_secs_f64() * (1.0 + self.cfg.tolerance),
                // No worker at all, or no measurement: more is needed.
                None => true,
            };
            let cooled = self
                .last_up
                .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.scale_up_cooldown);
            if slow && cooled {
                self.desired = need;
                self.last_up = Some(now);
                reason = match (self.rate, eta(previous)) {
                    (Some(rate), Some(eta_s)) => Reason::Backlog {
                        backlog: obs.backlog,
                        rate,
                        eta_s,
                    },
                    _ => Reason::Measuring,
                };
            } else if slow {
                reason = Reason::Cooldown { need };
            }
        } else {
            let window_need = self.needs.iter().map(|&(_, n)| n).max().unwrap_or(need);
            // The need that set the current target stays in the window until
            // it ages out, so a target is never lowered sooner than one window
            // after it was set.
            if window_need < previous {
                self.desired = window_need;
                reason = if window_need == self.cfg.min_workers && obs.backlog == 0 {
                    Reason::Idle
                } else {
                    Reason::Surplus { need: window_need }
                };
            }
        }
        Decision {
            desired: self.desired,
            previous,
            need,
            reason,
            rate_per_worker: self.rate,
            eta_s: eta(self.desired),
        }
    }
}

#[cfg(test)]
mod tests;
