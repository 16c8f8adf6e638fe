//! The ML engineer's workflow (issue 20), run through the real binary: error
//! messages and flags a new user meets first (each error once, colour only on
//! a terminal, refused no-op flags, the JSON line of `submit --wait`).
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::distributed::Master;
use crate::helpers::{bin, imgnorm, tempdir};

/// `imgnorm gen` of `count` PNG images in `classes` class folders.
fn gen_classes(dir: &Path, count: u32, classes: u32) -> PathBuf {
    let input = dir.join("in");
    let r = imgnorm([
        "gen",
        "--format",
        "png",
        "--size",
        "24x16",
        "--seed",
        "7",
        "--count",
        &count.to_string(),
        "--classes",
        &classes.to_string(),
        "--out",
        input.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(r.code, 0, "{r}");
    input
}

#[test]
fn os_errors_are_printed_once_with_their_cause() {
    let dir = tempdir();
    let r = imgnorm([
        "centralized",
        "--input",
        dir.path().join("missing").to_str().expect("utf-8"),
        "--output",
        dir.path().join("out").to_str().expect("utf-8"),
    ]);
    assert_eq!(r.code, 2, "{r}");
    assert_eq!(r.stderr.matches("os error 2").count(), 1, "{r}");
    assert_eq!(r.stderr.lines().count(), 1, "{r}");
}

#[test]
fn an_output_that_is_a_file_says_so() {
    let dir = tempdir();
    let input = gen_classes(dir.path(), 2, 1);
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    let r = imgnorm([
        "centralized",
        "--quiet",
        "--input",
        input.to_str().expect("utf-8"),
        "--output",
        file.to_str().expect("utf-8"),
    ]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("is a file, not a folder"), "{r}");
}

#[test]
fn standardize_with_an_integer_dtype_names_the_flag_value() {
    let dir = tempdir();
    let input = gen_classes(dir.path(), 2, 1);
    let r = imgnorm([
        "centralized",
        "--input",
        input.to_str().expect("utf-8"),
        "--output",
        dir.path().join("out").to_str().expect("utf-8"),
        "--dtype",
        "u8",
        "--standardize",
    ]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("got --dtype u8"), "{r}");
    assert!(!r.stderr.contains("|u1"), "{r}");
}

/// `imgnorm run` with info logging, stderr into a pipe, plus `extra` env/flags.
fn logged_run(dir: &Path, flags: &[&str], env: &[(&str, &str)]) -> String {
    let input = gen_classes(dir, 2, 1);
    let out = dir.join(format!("out-{}", flags.len() + env.len()));
    let mut cmd = Command::new(bin());
    cmd.args(["run", "--quiet", "--workers", "1", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&out)
        .args(flags)
        .env("IMGNORM_LOG", "info")
        .env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("run");
    assert_eq!(o.status.code(), Some(0));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn logs_into_a_pipe_have_no_colour_unless_asked() {
    let dir = tempdir();
    let plain = logged_run(&dir.path().join("a"), &[], &[]);
    assert!(plain.contains("INFO"), "{plain}");
    assert!(!plain.contains('\u{1b}'), "{plain}");
    let forced = logged_run(&dir.path().join("b"), &["--color", "always"], &[]);
    assert!(forced.contains('\u{1b}'), "{forced}");
    let never = logged_run(&dir.path().join("c"), &["--color", "never"], &[]);
    assert!(!never.contains('\u{1b}'), "{never}");
}

#[test]
fn master_refuses_the_dashboard_without_serve_and_creates_nothing() {
    let dir = tempdir();
    let input = gen_classes(dir.path(), 2, 1);
    let o = Command::new(bin())
        .args(["master", "--http", "127.0.0.1:0", "--listen", "127.0.0.1:0"])
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(dir.path().join("out"))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("master");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--http"), "{stderr}");
    assert!(!dir.path().join("imgnorm-data").exists());
    assert!(!dir.path().join("out").exists());
}

#[test]
fn unknown_jobs_are_errors_and_submit_wait_ends_with_the_json_line() {
    let dir = tempdir();
    let input = gen_classes(dir.path(), 3, 1);
    let master = Master::serve(dir.path());
    let r = imgnorm(["status", "--master", master.url(), "--job", "job-99"]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("no job job-99"), "{r}");
    // A queued job with no worker says why it waits.
    let out = dir.path().join("out");
    let r = imgnorm([
        "submit",
        "--master",
        master.url(),
        "--input",
        input.to_str().expect("utf-8"),
        "--output",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(r.code, 0, "{r}");
    let r = imgnorm(["status", "--master", master.url()]);
    assert!(r.stdout.contains("no worker connected"), "{r}");
    let _w = master.worker("w", 0);
    let out2 = dir.path().join("out2");
    let r = imgnorm([
        "submit",
        "--wait",
        "--master",
        master.url(),
        "--input",
        input.to_str().expect("utf-8"),
        "--output",
        out2.to_str().expect("utf-8"),
    ]);
    assert_eq!(r.code, 0, "{r}");
    let s = r.summary();
    assert_eq!(s["images"], 3, "{r}");
    assert_eq!(s["ok"], 3, "{r}");
}
