//! Policy tests: the decision as a pure function of observations and time.
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

fn cfg(min: u32, max: u32) -> AutoscaleConfig {
    AutoscaleConfig {
        min_workers: min,
        max_workers: max,
        target_drain: Duration::from_secs(60),
        scale_up_cooldown: Duration::from_secs(5),
        scale_down_window: Duration::from_secs(30),
        rate_half_life: Duration::from_secs(10),
        tolerance: 0.1,
    }
}

fn obs(backlog: u64, completed: u64, live: u32) -> Observation {
    Observation {
        backlog,
        completed,
        live_workers: live,
    }
}

fn secs(t0: Instant, s: f64) -> Instant {
    t0 + Duration::from_secs_f64(s)
}

/// Drives a simulated pool: `rate(t)` images/s per worker, workers appear as
/// soon as they are wanted. Returns the targets, one per second.
fn simulate(
    a: &mut Autoscaler,
    total: u64,
    seconds: u32,
    mut rate: impl FnMut(u32) -> f64,
) -> Vec<u32> {
    let t0 = Instant::now();
    let (mut backlog, mut completed, mut live) = (total, 0u64, 0u32);
    let mut out = Vec::new();
    let mut carry = 0.0f64;
    for s in 0..seconds {
        let d = a.observe(obs(backlog, completed, live), secs(t0, f64::from(s)));
        out.push(d.desired);
        live = d.desired;
        carry += rate(s) * f64::from(live);
        let done = (carry.floor() as u64).min(backlog);
        carry -= carry.floor();
        backlog -= done;
        completed += done;
    }
    out
}

#[test]
fn invalid_settings_are_refused() {
    assert!(Autoscaler::new(cfg(0, 0)).is_err());
    assert!(Autoscaler::new(cfg(3, 2)).is_err());
    let mut c = cfg(0, 2);
    c.target_drain = Duration::ZERO;
    assert_eq!(Autoscaler::new(c).err(), Some(AutoscaleError::Target));
    let mut c = cfg(0, 2);
    c.tolerance = 2.0;
    assert!(Autoscaler::new(c).is_err());
    assert!(Autoscaler::new(cfg(2, 2)).is_ok());
}

#[test]
fn idle_stays_at_the_minimum() {
    let mut a = Autoscaler::new(cfg(1, 8)).unwrap();
    let t0 = Instant::now();
    for s in 0..100 {
        let d = a.observe(obs(0, 0, 1), secs(t0, f64::from(s)));
        assert_eq!(d.desired, 1);
        assert!(!d.changed());
    }
}

#[test]
fn a_backlog_with_no_workers_starts_one_then_scales_on_measured_rate() {
    let mut a = Autoscaler::new(cfg(0, 8)).unwrap();
    let t0 = Instant::now();
    let d = a.observe(obs(6000, 0, 0), t0);
    assert_eq!(d.desired, 1);
    assert_eq!(d.reason, Reason::Measuring);
    // The worker joins and does 10 images/s: 6000 images need 10 workers for
    // 60 s, clamped to 8.
    let d = a.observe(obs(6000, 0, 1), secs(t0, 1.0));
    assert_eq!(d.desired, 1, "no measurement yet: hold");
    let d = a.observe(obs(5990, 10, 1), secs(t0, 6.0));
    assert_eq!(d.rate_per_worker, Some(2.0));
    assert_eq!(d.desired, 8);
    assert!(matches!(d.reason, Reason::Backlog { backlog: 5990, .. }));
    assert!(d.reason.to_string().contains("5990 images left"));
}

#[test]
fn the_need_follows_the_backlog_and_the_rate() {
    let mut a = Autoscaler::new(cfg(0, 100)).unwrap();
    let t0 = Instant::now();
    a.observe(obs(10_000, 0, 2), t0);
    // 2 workers did 200 images in 10 s: 10 images/s each. 9800 / (10 * 60)
    // = 16.3 -> 17.
    let d = a.observe(obs(9800, 200, 2), secs(t0, 10.0));
    assert_eq!(d.need, 17);
    assert_eq!(d.desired, 17);
    let eta = d.eta_s.unwrap();
    assert!((eta - 9800.0 / 170.0).abs() < 1e-9, "{eta}");
}

#[test]
fn scale_ups_respect_the_cooldown() {
    let mut a = Autoscaler::new(cfg(1, 100)).unwrap();
    let t0 = Instant::now();
    a.observe(obs(10_000, 0, 1), t0);
    let d = a.observe(obs(9990, 10, 1), secs(t0, 1.0));
    assert_eq!(d.desired, 17);
    // A second job doubles the backlog: the need grows, but the last
    // scale-up was 1 s ago.
    let d = a.observe(obs(20_000, 15, 17), secs(t0, 2.0));
    assert!(d.need > 17, "{d:?}");
    assert_eq!(d.desired, 17);
    assert!(matches!(d.reason, Reason::Cooldown { .. }));
    let d = a.observe(obs(19_950, 65, 17), secs(t0, 6.5));
    assert!(d.desired > 17, "{d:?}");
}

#[test]
fn within_tolerance_no_scale_up() {
    let mut a = Autoscaler::new(cfg(0, 100)).unwrap();
    let t0 = Instant::now();
    a.observe(obs(600, 0, 1), t0);
    // 1 worker at 10 images/s: 590 left take 59 s <= 60 s.
    let d = a.observe(obs(590, 10, 1), secs(t0, 1.0));
    assert_eq!(d.desired, 1);
    // 650 left at 10/s = 65 s: over the target but within 10 %.
    let mut a = Autoscaler::new(cfg(0, 100)).unwrap();
    a.observe(obs(660, 0, 1), t0);
    let d = a.observe(obs(650, 10, 1), secs(t0, 1.0));
    assert_eq!(d.need, 2);
    assert_eq!(d.desired, 1, "{d:?}");
}

#[test]
fn scale_down_waits_for_the_whole_window() {
    let mut a = Autoscaler::new(cfg(1, 8)).unwrap();
    let t0 = Instant::now();
    a.observe(obs(100_000, 0, 1), t0);
    let d = a.observe(obs(99_990, 10, 1), secs(t0, 1.0));
    assert_eq!(d.desired, 8);
    // The backlog empties at t = 2 s.
    let mut last = 8;
    for s in 2u32..40 {
        let d = a.observe(obs(0, 100_000, 8), secs(t0, f64::from(s)));
        if f64::from(s) - 1.0 <= 30.0 {
            assert_eq!(d.desired, 8, "at {s} s: {d:?}");
        }
        last = d.desired;
    }
    assert_eq!(last, 1);
}

#[test]
fn a_dip_shorter_than_the_window_removes_no_worker() {
    let mut a = Autoscaler::new(cfg(1, 8)).unwrap();
    let t0 = Instant::now();
    a.observe(obs(50_000, 0, 1), t0);
    let d = a.observe(obs(49_990, 10, 1), secs(t0, 1.0));
    assert_eq!(d.desired, 8);
    // The backlog reads 0 for 10 s (e.g. between two jobs), then a new job.
    for s in 2u32..12 {
        assert_eq!(
            a.observe(obs(0, 50_000, 8), secs(t0, f64::from(s))).desired,
            8
        );
    }
    for s in 12u32..60 {
        let d = a.observe(
            obs(50_000, 50_000 + u64::from(s) * 80, 8),
            secs(t0, f64::from(s)),
        );
        assert_eq!(d.desired, 8, "at {s} s: {d:?}");
    }
}

#[test]
fn rate_is_not_learned_from_idle_or_stalled_intervals() {
    let mut a = Autoscaler::new(cfg(0, 8)).unwrap();
    let t0 = Instant::now();
    a.observe(obs(0, 0, 4), t0);
    a.observe(obs(0, 0, 4), secs(t0, 1.0));
    assert_eq!(a.rate_per_worker(), None, "idle");
    a.observe(obs(100, 0, 4), secs(t0, 2.0));
    a.observe(obs(100, 0, 4), secs(t0, 3.0));
    assert_eq!(a.rate_per_worker(), None, "no progress (booting workers)");
    a.observe(obs(60, 40, 4), secs(t0, 4.0));
    assert_eq!(a.rate_per_worker(), Some(10.0));
}

#[test]
fn a_small_job_ramps_up_and_back_to_min() {
    let mut a = Autoscaler::new(AutoscaleConfig {
        target_drain: Duration::from_secs(20),
        ..cfg(0, 4)
    })
    .unwrap();
    let targets = simulate(&mut a, 2000, 200, |_| 10.0);
    assert_eq!(targets[0], 1);
    assert_eq!(targets.iter().copied().max(), Some(4));
    assert_eq!(targets.last(), Some(&0));
    // One rise, one fall: no flapping.
    assert!(reversals(&targets) <= 1, "{targets:?}");
}

fn reversals(t: &[u32]) -> usize {
    let moves: Vec<i8> = t
        .windows(2)
        .filter(|w| w[0] != w[1])
        .map(|w| if w[1] > w[0] { 1 } else { -1 })
        .collect();
    moves.windows(2).filter(|m| m[0] != m[1]).count()
}

proptest! {
    /// Whatever it observes, the target stays within bounds, never rises
    /// sooner than the cooldown after the last rise, and never falls sooner
    /// than one window after the last rise.
    #[test]
    fn bounds_and_timing_hold(
        min in 0u32..3,
        extra in 1u32..10,
        steps in proptest::collection::vec((0u64..100_000, 0u64..500, 0u32..12, 1u64..4000), 1..120),
    ) {
        let max = min + extra;
        let c = cfg(min, max);
        let mut a = Autoscaler::new(c.clone()).unwrap();
        let t0 = Instant::now();
        let (mut now, mut completed) = (t0, 0u64);
        let mut last_up: Option<Instant> = None;
        for (backlog, done, live, ms) in steps {
            now += Duration::from_millis(ms);
            completed += done;
            let d = a.observe(obs(backlog, completed, live), now);
            prop_assert!(d.desired >= min && d.desired <= max, "{d:?}");
            if d.desired > d.previous {
                if let Some(t) = last_up {
                    prop_assert!(now - t >= c.scale_up_cooldown);
                }
                last_up = Some(now);
            } else if d.desired < d.previous
                && let Some(t) = last_up
            {
                prop_assert!(now - t > c.scale_down_window, "fell {:?} after a rise", now - t);
            }
        }
    }

    /// Throughput that swings by up to ±60 % every second on a long job never
    /// makes the target flap.
    #[test]
    fn noisy_throughput_does_not_flap(seed in any::<u64>(), total in 5_000u64..50_000) {
        let mut a = Autoscaler::new(cfg(0, 8)).unwrap();
        let mut x = seed | 1;
        let targets = simulate(&mut a, total, 900, |_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x % 1000) as f64 / 1000.0;
            10.0 * (0.4 + 1.2 * u)
        });
        prop_assert_eq!(targets.last(), Some(&0));
        let changes = targets.windows(2).filter(|w| w[0] != w[1]).count();
        prop_assert!(reversals(&targets) <= 2 && changes <= 12, "{:?}", targets);
    }
}
