//! Whole-dataset normalizations (`--scope dataset`, `--standardize`): the
//! same bytes from `centralized`, one and three worker processes, stream
//! transfer, and a worker SIGKILLed during the statistics phase; options
//! that cannot work are refused. The values themselves are checked against
//! NumPy in tests/python/test_scope.py.
use std::path::Path;
use std::time::Duration;

use crate::distributed::{FAST, Master, assert_once_each, dataset, signal, wait_for};
use crate::helpers::{self, assert_same_dataset, run_local};

fn stats_json(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("stats.json")).expect("stats.json");
    serde_json::from_str(&text).expect("stats json")
}

/// Same dataset bytes, and the same parameters and statistics in stats.json.
fn assert_same_run(a: &Path, b: &Path) {
    assert_same_dataset(a, b);
    let (x, y) = (stats_json(a), stats_json(b));
    assert_eq!(x["normalization"], y["normalization"], "parameters differ");
    assert_eq!(x["dataset"], y["dataset"], "output statistics differ");
}

const OPTION_SETS: &[&[&str]] = &[
    &["--scope", "dataset"],
    &[
        "--scope",
        "dataset",
        "--per-channel",
        "--standardize",
        "--range",
        "-1,1",
    ],
    &["--standardize", "--dtype", "f16"],
    &["--scope", "channel", "--standardize"],
];

#[test]
fn one_and_three_workers_write_what_centralized_writes() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dataset(dir.path(), 30);
    for (k, opts) in OPTION_SETS.iter().enumerate() {
        let c = dir.path().join(format!("c{k}"));
        let r = helpers::centralized(&input, &c, opts);
        assert_eq!(r.code, 3, "fixtures include failures: exit 3\n{r}");
        let n = &stats_json(&c)["normalization"];
        assert!(n.is_object(), "{opts:?}: no normalization section");
        for w in ["1", "3"] {
            let out = dir.path().join(format!("r{k}-{w}"));
            let mut args = vec!["--workers", w, "--batch-size", "4"];
            args.extend_from_slice(opts);
            let r = run_local(&input, &out, &args);
            assert_eq!(r.code, 3, "{opts:?} with {w} workers\n{r}");
            assert_same_run(&c, &out);
            assert_once_each(&out, &input);
        }
    }
}

#[test]
fn stream_transfer_writes_what_centralized_writes() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dataset(dir.path(), 20);
    let opts = ["--scope", "dataset", "--standardize"];
    let c = dir.path().join("c");
    assert_eq!(helpers::centralized(&input, &c, &opts).code, 3);
    let out = dir.path().join("s");
    let mut args = vec!["--workers", "2", "--transfer", "stream"];
    args.extend_from_slice(&opts);
    let r = run_local(&input, &out, &args);
    assert_eq!(r.code, 3, "{r}");
    assert_same_run(&c, &out);
}

#[test]
fn worker_sigkilled_in_the_statistics_phase_changes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dataset(dir.path(), 60);
    let opts = ["--scope", "dataset", "--per-channel", "--standardize"];
    let c = dir.path().join("c");
    assert_eq!(helpers::centralized(&input, &c, &opts).code, 3);
    let out = dir.path().join("o");
    let mut args = FAST.to_vec();
    args.extend_from_slice(&opts);
    let m = Master::start(&input, &out, &args);
    let victim = m.worker("victim", 40);
    wait_for(
        "the victim to measure a few images",
        Duration::from_secs(30),
        || {
            m.worker_field("victim", "images_done")
                .as_u64()
                .unwrap_or(0)
                >= 3
        },
    );
    assert_eq!(
        m.status()["jobs"][0]["phase"],
        "stats",
        "still in the statistics phase"
    );
    signal(&victim, libc::SIGKILL);
    let _survivor = m.worker("survivor", 0);
    assert_eq!(m.wait(Duration::from_secs(90)), 3);
    assert_same_run(&c, &out);
    assert_once_each(&out, &input);
}

#[test]
fn options_that_cannot_work_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).expect("mkdir");
    let out = dir.path().join("o");
    for (opts, why) in [
        (&["--standardize", "--dtype", "u8"][..], "float output"),
        (&["--per-channel"][..], "--scope dataset"),
        (
            &["--mean", "0.5,0.5", "--std", "0.2"][..],
            "same number of values",
        ),
        (&["--mean", "0.5", "--std", "0"][..], "> 0"),
    ] {
        let r = helpers::centralized(&input, &out, opts);
        assert_eq!(r.code, 2, "{opts:?}\n{r}");
        assert!(r.stderr.contains(why), "{opts:?}: {}", r.stderr);
    }
}
