//! `imgnorm simulate` as a user runs it: a small cluster with every kind of
//! failure ends with its JSON line, nothing lost or duplicated, and the same
//! seed prints the same simulated outcome.
use std::process::Command;

use crate::helpers::bin;

fn simulate(seed: &str) -> serde_json::Value {
    let out = Command::new(bin())
        .args([
            "simulate",
            "--workers",
            "12",
            "--images",
            "6000",
            "--worker-failure-rate",
            "0.2",
            "--hang-rate",
            "0.1",
            "--restart-secs",
            "2",
            "--partitions",
            "1",
            "--partition-secs",
            "12",
            "--master-crashes",
            "1",
            "--seed",
            seed,
        ])
        .output()
        .expect("run imgnorm simulate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("a JSON line");
    serde_json::from_str(last).expect("the last line is JSON")
}

#[test]
fn a_failing_cluster_loses_nothing_and_a_seed_reproduces_the_run() {
    let a = simulate("3");
    for key in [
        "workers",
        "images",
        "seed",
        "makespan_s",
        "ideal_s",
        "ratio",
        "lost",
        "duplicated",
        "failures",
        "decisions_per_s",
        "wall_s",
    ] {
        assert!(a.get(key).is_some(), "{key} missing from {a}");
    }
    assert_eq!(a["lost"], 0);
    assert_eq!(a["duplicated"], 0);
    assert_eq!(a["stalled"], false);
    assert_eq!(a["master"]["count"], 1);
    assert!(a["failures"].as_u64().unwrap() >= 4, "{a}");
    let b = simulate("3");
    for key in [
        "makespan_s",
        "ratio",
        "accepted",
        "leases",
        "stale",
        "crashes",
        "hangs",
    ] {
        assert_eq!(a[key], b[key], "{key} differs between two runs of one seed");
    }
    assert_ne!(a["makespan_s"], simulate("4")["makespan_s"]);
}

#[test]
fn a_bad_setting_is_a_usage_error() {
    let out = Command::new(bin())
        .args(["simulate", "--worker-failure-rate", "2"])
        .output()
        .expect("run imgnorm simulate");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--worker-failure-rate must be in [0, 1]"),
        "{err}"
    );
}
