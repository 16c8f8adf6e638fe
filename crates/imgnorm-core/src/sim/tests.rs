//! Small simulations with several seeds: nothing lost or duplicated in any
//! failure mode, the same seed gives the same run, failures are detected.
use super::*;

fn small(seed: u64) -> SimConfig {
    SimConfig {
        workers: 8,
        images: 3_000,
        seed,
        ..SimConfig::default()
    }
}

fn check(r: &SimReport) {
    assert!(!r.stalled, "stalled: {r:?}");
    assert_eq!(r.lost, 0, "{r:?}");
    assert_eq!(r.duplicated, 0, "{r:?}");
    assert_eq!(r.refused, 0, "an honest worker was refused: {r:?}");
}

#[test]
fn a_healthy_cluster_finishes_near_the_ideal() {
    for seed in 1..=3 {
        let r = simulate(&small(seed)).unwrap();
        check(&r);
        assert!(r.ratio < 1.10, "{r:?}");
        assert_eq!(r.failures, 0);
    }
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let cfg = SimConfig {
        worker_failure_rate: 0.25,
        hang_rate: 0.125,
        partitions: 1,
        master_crashes: 1,
        restart_s: Some(3.0),
        ..small(9)
    };
    let (a, b) = (simulate(&cfg).unwrap(), simulate(&cfg).unwrap());
    let strip = |r: &SimReport| SimReport {
        wall_s: 0.0,
        decisions_per_s: 0.0,
        ..r.clone()
    };
    assert_eq!(strip(&a), strip(&b));
    let other = simulate(&SimConfig { seed: 10, ..cfg }).unwrap();
    assert_ne!(strip(&a).makespan_s, strip(&other).makespan_s);
}

#[test]
fn crashes_hangs_partitions_and_master_crashes_lose_nothing() {
    for seed in 1..=4 {
        let cfg = SimConfig {
            worker_failure_rate: 0.25,
            hang_rate: 0.125,
            straggler_rate: 0.125,
            partitions: 1,
            partition_s: 15.0,
            master_crashes: 1,
            restart_s: Some(3.0),
            ..small(seed)
        };
        let r = simulate(&cfg).unwrap();
        check(&r);
        assert_eq!(r.crashes.count, 2, "{r:#?}");
        assert_eq!(r.hangs.count, 1);
        assert_eq!(r.master.count, 1);
        // A crash closes the connection: noticed within the latency, unless
        // the master itself was down; a hang only by the heartbeat timeout.
        if let Some(d) = r.hangs.detect_max_s {
            assert!(
                d >= cfg.heartbeat_timeout_s - cfg.heartbeat_s && d < 13.0,
                "{r:?}"
            );
        }
        assert!(r.master.recover_max_s.is_some(), "{r:?}");
    }
}

#[test]
fn a_partition_longer_than_the_timeout_is_detected_and_recovered() {
    let cfg = SimConfig {
        partitions: 1,
        partition_fraction: 0.25,
        partition_s: 20.0,
        images: 20_000,
        ..small(5)
    };
    let r = simulate(&cfg).unwrap();
    check(&r);
    assert_eq!(r.partitioned.count, 2);
    assert_eq!(r.partitioned.detected, 2, "{r:?}");
    assert!(r.stale > 0 || r.partitioned.recover_max_s.is_some());
}

#[test]
fn a_short_partition_is_only_a_delay() {
    let cfg = SimConfig {
        partitions: 1,
        partition_fraction: 0.25,
        partition_s: 3.0,
        ..small(6)
    };
    let r = simulate(&cfg).unwrap();
    check(&r);
    assert_eq!(r.partitioned.detected, 0, "{r:?}");
}

#[test]
fn settings_out_of_range_are_refused() {
    for bad in [
        SimConfig {
            workers: 0,
            ..SimConfig::default()
        },
        SimConfig {
            worker_failure_rate: 1.5,
            ..SimConfig::default()
        },
        SimConfig {
            heartbeat_timeout_s: 0.5,
            ..SimConfig::default()
        },
        SimConfig {
            speed: f64::NAN,
            ..SimConfig::default()
        },
    ] {
        assert!(simulate(&bad).is_err(), "{bad:?}");
    }
}

/// A big run, by hand: `SIM_WORKERS=1000 SIM_IMAGES=10000000 SIM_FAIL=0.01
/// cargo test --release -p imgnorm-core --lib sim::tests::by_hand -- --ignored --nocapture`
/// (the `imgnorm simulate` command runs the same with every option).
#[test]
#[ignore]
fn by_hand() {
    let var = |k: &str, d: f64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let cfg = SimConfig {
        workers: var("SIM_WORKERS", 100.0) as u32,
        images: var("SIM_IMAGES", 100_000.0) as u64,
        seed: var("SIM_SEED", 1.0) as u64,
        worker_failure_rate: var("SIM_FAIL", 0.0),
        hang_rate: var("SIM_HANG", 0.0),
        partitions: var("SIM_PARTITIONS", 0.0) as u32,
        master_crashes: var("SIM_MASTER_CRASHES", 0.0) as u32,
        restart_s: std::env::var("SIM_RESTART")
            .ok()
            .and_then(|v| v.parse().ok()),
        partition_s: var("SIM_PARTITION_S", 5.0),
        partition_fraction: var("SIM_PARTITION_FRACTION", 0.1),
        ..SimConfig::default()
    };
    let r = simulate(&cfg).unwrap();
    println!("{}", serde_json::to_string(&r).unwrap());
    check(&r);
}
