//! Shared test helpers, generic over the mode under test: run the built
//! `imgnorm` binary, make temp folders, read manifest rows as JSON values,
//! compare two output datasets byte for byte (except `stats.json`), and poll
//! for a condition instead of sleeping a fixed time.
#![allow(dead_code)] // Not every test module uses every helper.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Path of the `imgnorm` binary cargo built for these tests.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_imgnorm")
}

/// The repository's `tests/fixtures` folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// A fresh temporary folder, removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("imgnorm-it-")
        .tempdir()
        .expect("create temp dir")
}

/// The result of one run of the binary.
#[derive(Debug)]
pub struct Run {
    /// Exit code (`-1` when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// The last stdout line parsed as JSON (every run ends with one).
    pub fn summary(&self) -> Value {
        let line = self.stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("last stdout line is not JSON ({e}):\n{self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `imgnorm args...` to completion.
pub fn imgnorm<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out: Output = Command::new(bin())
        .args(args)
        .env("IMGNORM_LOG", "warn")
        .output()
        .expect("spawn imgnorm");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `imgnorm centralized --quiet --input IN --output OUT extra...`.
pub fn centralized(input: &Path, output: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<std::ffi::OsString> = vec![
        "centralized".into(),
        "--quiet".into(),
        "--input".into(),
        input.into(),
        "--output".into(),
        output.into(),
    ];
    args.extend(extra.iter().map(Into::into));
    imgnorm(args)
}

/// Runs `imgnorm run --quiet --input IN --output OUT extra...` (a master and
/// local worker processes).
pub fn run_local(input: &Path, output: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<std::ffi::OsString> = vec![
        "run".into(),
        "--quiet".into(),
        "--input".into(),
        input.into(),
        "--output".into(),
        output.into(),
    ];
    args.extend(extra.iter().map(Into::into));
    imgnorm(args)
}

/// The rows of `out/manifest.jsonl`, in file order.
pub fn manifest(out: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(out.join("manifest.jsonl"))
        .unwrap_or_else(|e| panic!("read manifest in {}: {e}", out.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad row {l:?}: {e}")))
        .collect()
}

/// Manifest rows keyed by their `path`.
pub fn rows_by_path(out: &Path) -> BTreeMap<String, Value> {
    manifest(out)
        .into_iter()
        .map(|r| (r["path"].as_str().expect("path").to_string(), r))
        .collect()
}

/// Every file under `root`, as sorted `/`-separated relative paths.
pub fn files_under(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("under root");
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Asserts two output datasets hold the same files with the same bytes,
/// `stats.json` (timings) and `provenance.jsonl` (which worker did what)
/// excepted, and that no temporary file was left behind.
pub fn assert_same_dataset(a: &Path, b: &Path) {
    let keep = |v: Vec<String>| -> Vec<String> {
        v.into_iter()
            .filter(|f| f != "stats.json" && f != "provenance.jsonl")
            .collect()
    };
    let fa = keep(files_under(a));
    let fb = keep(files_under(b));
    assert_eq!(
        fa,
        fb,
        "different file sets in {} and {}",
        a.display(),
        b.display()
    );
    assert!(
        !fb.iter()
            .any(|f| f.ends_with(".tmp") || f.ends_with(".part")),
        "temporary files left in {}",
        b.display()
    );
    for f in &fa {
        let (x, y) = (read(&a.join(f)), read(&b.join(f)));
        assert!(
            x == y,
            "{f} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

/// Reads a file, panicking with its path.
pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// A parsed `.npy` header: (descr, shape) and the data offset.
pub fn npy_shape(bytes: &[u8]) -> (String, Vec<usize>, usize) {
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00", "npy magic/version");
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + len]).expect("utf-8 header");
    let descr = header
        .split("'descr': '")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .expect("descr")
        .to_string();
    let shape = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("shape")
        .split(',')
        .filter_map(|d| d.trim().parse().ok())
        .collect();
    (descr, shape, 10 + len)
}

/// Calls `cond` until it returns true or `timeout` passes; returns whether it
/// became true. Polls every 20 ms, so tests never depend on a fixed sleep.
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
