//! Reruns into an output that holds an earlier run (README, "Rerunning into
//! an output"): unchanged images are kept (their files not rewritten),
//! deleted or damaged outputs repaired, new inputs added, inputs that left
//! dropped (and their outputs deleted with `--prune`), `--retry-failed`,
//! and the refusals (other options, foreign files) with `--overwrite` as
//! the way out; in the centralized run and in `run --workers 2`. After
//! every rerun the folder equals a clean centralized run's, byte for byte,
//! `stats.json`'s deterministic sections included.
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::Value;

use crate::distributed::dataset;
use crate::helpers::{Run, assert_same_dataset, centralized, run_local, tempdir};

type Mode = fn(&Path, &Path, &[&str]) -> Run;

fn two_workers(input: &Path, output: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["--workers", "2"];
    args.extend_from_slice(extra);
    run_local(input, output, &args)
}

/// `stats.json` without what differs from run to run (timings, memory,
/// mode).
fn stable_stats(out: &Path) -> Value {
    let text = std::fs::read_to_string(out.join("stats.json")).expect("stats.json");
    let v: Value = serde_json::from_str(&text).expect("stats.json is JSON");
    serde_json::json!({
        "counts": v["counts"], "options": v["options"], "dataset": v["dataset"],
        "normalization": v["normalization"], "input": v["input"],
    })
}

/// Asserts `out` holds what a clean centralized run of `input` with `extra`
/// writes into an empty folder.
fn assert_clean(input: &Path, out: &Path, extra: &[&str]) {
    let dir = tempdir();
    let clean = dir.path().join("clean");
    let r = centralized(input, &clean, extra);
    assert!(r.code == 0 || r.code == 3, "{r}");
    assert_same_dataset(&clean, out);
    assert_eq!(stable_stats(&clean), stable_stats(out));
}

fn ok(r: &Run) -> Value {
    assert!(r.code == 0 || r.code == 3, "{r}");
    r.summary()
}

/// The generated images' names (`input/gen`), sorted.
fn generated(input: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(input.join("gen"))
        .expect("ls gen")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Input `gen/NAME` and its output.
fn pair(input: &Path, out: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    (
        input.join("gen").join(name),
        out.join("gen").join(format!("{name}.npy")),
    )
}

fn inode(p: &Path) -> u64 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .ino()
}

fn reruns_keep_repair_add_and_prune(mode: Mode) {
    let dir = tempdir();
    let input = dataset(dir.path(), 10);
    let out = dir.path().join("out");
    let first = ok(&mode(&input, &out, &[]));
    assert!(first.get("rerun").is_none(), "a first run is no rerun");
    let images = first["images"].as_u64().expect("images");
    let names = generated(&input);
    let kept_file = pair(&input, &out, &names[1]).1;
    let before = inode(&kept_file);

    // The same command again: every row kept, no array rewritten.
    let again = ok(&mode(&input, &out, &[]));
    let rerun = &again["rerun"];
    assert_eq!(rerun["new"], 0, "{again}");
    assert_eq!(rerun["changed"], 0, "{again}");
    assert_eq!(rerun["repaired"], 0, "{again}");
    assert!(rerun["kept"].as_u64().expect("kept") > 0, "{again}");
    assert_eq!(again["images"].as_u64(), Some(images));
    assert_eq!(inode(&kept_file), before, "a kept array is not rewritten");
    assert_clean(&input, &out, &[]);

    // One output deleted, one truncated: both repaired, nothing else.
    std::fs::remove_file(pair(&input, &out, &names[2]).1).expect("rm");
    let cut = pair(&input, &out, &names[3]).1;
    let len = std::fs::metadata(&cut).expect("stat").len();
    std::fs::File::options()
        .write(true)
        .open(&cut)
        .and_then(|f| f.set_len(len / 2))
        .expect("truncate");
    let repaired = ok(&mode(&input, &out, &[]));
    assert_eq!(repaired["rerun"]["repaired"], 2, "{repaired}");
    assert_eq!(inode(&kept_file), before);
    assert_clean(&input, &out, &[]);

    // A new input, a changed one and one that left: without --prune the
    // output of the one that left stays (and the folder is no clean run's);
    // with --prune it goes.
    std::fs::copy(
        pair(&input, &out, &names[1]).0,
        input.join("gen/zz_new.jpg"),
    )
    .expect("add");
    std::fs::copy(
        pair(&input, &out, &names[4]).0,
        pair(&input, &out, &names[5]).0,
    )
    .expect("change");
    let (left, left_out) = pair(&input, &out, &names[6]);
    std::fs::remove_file(&left).expect("remove");
    let moved = ok(&mode(&input, &out, &[]));
    let r = &moved["rerun"];
    assert_eq!(
        (&r["new"], &r["changed"], &r["gone"]),
        (&1.into(), &1.into(), &1.into()),
        "{moved}"
    );
    assert_eq!(r["pruned"], 0);
    assert!(left_out.is_file(), "kept without --prune");
    assert!(
        !crate::helpers::rows_by_path(&out).contains_key(&format!("gen/{}", names[6])),
        "the row leaves the manifest"
    );
    let pruned = ok(&mode(&input, &out, &["--prune"]));
    assert_eq!(pruned["rerun"]["new"], 0, "{pruned}");
    assert_eq!(pruned["rerun"]["pruned"], 1, "{pruned}");
    assert!(!left_out.exists(), "pruned");
    assert_eq!(inode(&kept_file), before);
    assert_clean(&input, &out, &[]);
}

#[test]
fn centralized_reruns_keep_repair_add_and_prune() {
    reruns_keep_repair_add_and_prune(centralized);
}

#[test]
fn distributed_reruns_keep_repair_add_and_prune() {
    reruns_keep_repair_add_and_prune(two_workers);
}

fn retry_failed_recovers_only_failed_rows(mode: Mode) {
    let dir = tempdir();
    let input = dataset(dir.path(), 4);
    let out = dir.path().join("out");
    let first = ok(&mode(&input, &out, &[]));
    let failed = first["failed"].as_u64().expect("failed");
    assert!(failed >= 2, "the fixtures have failing files: {first}");
    let broken = input.join("fixtures/hostile/truncated.png");
    assert_eq!(
        crate::helpers::rows_by_path(&out)["fixtures/hostile/truncated.png"]["status"],
        "failed"
    );
    // Mended in place; and a new file, which --retry-failed does not add.
    std::fs::copy(input.join("fixtures/formats/png_rgb8.png"), &broken).expect("mend");
    let names = generated(&input);
    std::fs::copy(
        pair(&input, &out, &names[1]).0,
        input.join("gen/zz_new.jpg"),
    )
    .expect("add");
    let kept_file = pair(&input, &out, &names[1]).1;
    let before = inode(&kept_file);
    let retried = ok(&mode(&input, &out, &["--retry-failed"]));
    let r = &retried["rerun"];
    assert_eq!(r["retried"].as_u64(), Some(failed), "{retried}");
    assert_eq!(r["recovered"], 1, "{retried}");
    assert_eq!(r["not_added"], 1, "{retried}");
    assert_eq!(retried["failed"].as_u64(), Some(failed - 1));
    assert_eq!(inode(&kept_file), before, "ok rows are not redone");
    assert!(!crate::helpers::rows_by_path(&out).contains_key("gen/zz_new.jpg"));
    // Without the new file the folder is a clean run's.
    std::fs::remove_file(input.join("gen/zz_new.jpg")).expect("rm");
    assert_clean(&input, &out, &[]);
}

#[test]
fn centralized_retry_failed_recovers_only_failed_rows() {
    retry_failed_recovers_only_failed_rows(centralized);
}

#[test]
fn distributed_retry_failed_recovers_only_failed_rows() {
    retry_failed_recovers_only_failed_rows(two_workers);
}

fn other_runs_are_refused_until_overwrite(mode: Mode) {
    let dir = tempdir();
    let input = dataset(dir.path(), 3);
    let out = dir.path().join("out");
    ok(&mode(&input, &out, &[]));
    let refused = mode(&input, &out, &["--dtype", "f16"]);
    assert_eq!(refused.code, 2, "{refused}");
    assert!(
        refused.stderr.contains("dtype: \"f32\" -> \"f16\"")
            && refused.stderr.contains("--overwrite"),
        "{refused}"
    );
    let wds = mode(&input, &out, &["--format", "webdataset"]);
    assert_eq!(wds.code, 2, "{wds}");
    assert!(wds.stderr.contains("format"), "{wds}");
    // --overwrite replaces it: nothing of the npy tree stays.
    ok(&mode(
        &input,
        &out,
        &["--format", "webdataset", "--overwrite"],
    ));
    assert!(!pair(&input, &out, &generated(&input)[0]).1.exists());
    assert_clean(&input, &out, &["--format", "webdataset"]);
    // The same webdataset run again keeps nothing (shared shards) and still
    // writes a clean run's bytes.
    let again = ok(&mode(&input, &out, &["--format", "webdataset"]));
    assert_eq!(again["rerun"]["kept"], 0, "{again}");
    assert_clean(&input, &out, &["--format", "webdataset"]);
    // Files imgnorm does not write.
    std::fs::write(out.join("notes.txt"), b"mine").expect("write");
    let foreign = mode(&input, &out, &["--format", "webdataset"]);
    assert_eq!(foreign.code, 2, "{foreign}");
    assert!(foreign.stderr.contains("notes.txt"), "{foreign}");
    assert!(out.join("notes.txt").is_file(), "refused, untouched");
}

#[test]
fn centralized_refuses_other_runs_until_overwrite() {
    other_runs_are_refused_until_overwrite(centralized);
}

#[test]
fn distributed_refuses_other_runs_until_overwrite() {
    other_runs_are_refused_until_overwrite(two_workers);
}

#[test]
fn a_killed_runs_folder_is_refused_and_overwrite_keeps_the_input_safe() {
    let dir = tempdir();
    let input = dataset(dir.path(), 2);
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("gen")).expect("mkdir");
    std::fs::write(pair(&input, &out, &generated(&input)[0]).1, b"partial").expect("write");
    let r = centralized(&input, &out, &[]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("no finished imgnorm run"), "{r}");
    ok(&centralized(&input, &out, &["--overwrite"]));
    assert_clean(&input, &out, &[]);
    // An output that contains the input is never emptied.
    let r = centralized(&input, dir.path(), &["--overwrite"]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("would delete the input"), "{r}");
    assert!(pair(&input, dir.path(), &generated(&input)[0]).0.is_file());
}
