//! Runs one benchmark configuration as a child process and measures it: the
//! wall time comes from the child's own last-line JSON, the peak memory from
//! the kernel.
//!
//! Peak memory is measured from outside, so `imgnorm run`, the master and the
//! workers need no changes: while the child runs, every [`POLL`] we read
//! `VmHWM` (the peak resident set) from `/proc/<pid>/status` of the child and
//! of all its descendants (worker processes, Python pool processes); after it
//! exits, `wait4(2)` gives `ru_maxrss`, the exact peak of the child itself.
//! `VmHWM` never decreases, so the last sample of a descendant is at most one
//! poll interval late; it is a lower bound on that process's true peak.
//! Only descendants running the same program as the child (`comm`) count as
//! workers: helpers such as a shell started by a library are left out.
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::BenchError;

/// How often the process tree is sampled.
pub const POLL: Duration = Duration::from_millis(20);

/// The last stdout line of every imgnorm and Python run.
#[derive(Debug, Clone, Deserialize)]
pub struct RunLine {
    /// Files seen.
    pub images: u64,
    /// Normalized.
    pub ok: u64,
    /// Failed.
    pub failed: u64,
    /// Not images.
    #[serde(default)]
    pub skipped: u64,
    /// Wall time of the run, as measured by the child.
    pub seconds: f64,
    /// Autoscaled runs: the sum of the workers' lifetimes.
    #[serde(default)]
    pub worker_seconds: Option<f64>,
}

/// Peak resident memory of one run, in MiB.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeakRss {
    /// The process started by the bench (`imgnorm centralized`, the
    /// in-process master of `imgnorm run`, or the Python main process):
    /// `ru_maxrss` from `wait4`, which also covers its reaped descendants,
    /// so it is `max(main, children)`; see `main_sampled_mb` for the main
    /// process alone.
    pub main_mb: f64,
    /// The main process alone, from its last `VmHWM` sample.
    pub main_sampled_mb: f64,
    /// Each descendant process (workers), from its last `VmHWM` sample,
    /// ordered by pid.
    pub children_mb: Vec<f64>,
}

impl PeakRss {
    /// Main plus all descendants, each at its own peak (an upper bound on
    /// the tree's peak at any one moment). Without descendants, `main_mb`.
    pub fn total_mb(&self) -> f64 {
        if self.children_mb.is_empty() {
            self.main_mb
        } else {
            self.main_sampled_mb + self.children_mb.iter().sum::<f64>()
        }
    }
}

/// Outcome of one child run.
#[derive(Debug, Clone)]
pub struct Measured {
    /// The parsed last line.
    pub line: RunLine,
    /// Peak memory.
    pub rss: PeakRss,
    /// Exit code of the child.
    pub exit_code: i32,
    /// User + system CPU seconds of the child and the descendants it reaped
    /// (`wait4`): independent of other load on the machine, unlike wall time.
    pub cpu_s: f64,
    /// Spawn to reap, measured by the bench (process start-up and shutdown
    /// included; resolution [`POLL`]).
    pub wall_s: f64,
    /// User + system CPU seconds of the main process alone (the master of
    /// `imgnorm run`), without its children: its last sample of
    /// `/proc/<pid>/stat`, at most one [`POLL`] before it exited.
    pub main_cpu_s: f64,
}

/// Runs `cmd` to completion with stdout/stderr sent to `log` (`.out`/`.err`),
/// sampling memory, and parses its last stdout line.
pub fn run_measured(mut cmd: Command, log: &Path) -> Result<Measured, BenchError> {
    let describe = format!("{cmd:?}");
    let out_path = log.with_extension("out");
    let err_path = log.with_extension("err");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BenchError::Io { path, source }
    };
    let stdout = File::create(&out_path).map_err(io(&out_path))?;
    let stderr = File::create(&err_path).map_err(io(&err_path))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr));
    let started = Instant::now();
    let child = cmd.spawn().map_err(|source| BenchError::Spawn {
        command: describe.clone(),
        source,
    })?;
    let pid = child.id();
    let mut peaks: BTreeMap<u32, (String, u64)> = BTreeMap::new();
    let mut main_cpu_s = 0.0_f64;
    let (status, maxrss_kb, cpu_s) = loop {
        sample_tree(pid, &mut peaks);
        if let Some(c) = own_cpu(pid) {
            main_cpu_s = main_cpu_s.max(c);
        }
        if let Some(done) = try_wait4(pid).map_err(|source| BenchError::Spawn {
            command: describe.clone(),
            source,
        })? {
            break done;
        }
        std::thread::sleep(POLL);
    };
    let wall_s = since(started);
    // The std handle must not wait again: the child is already reaped.
    drop(child);
    let text = std::fs::read_to_string(&out_path).map_err(io(&out_path))?;
    let last = text.lines().rev().find(|l| !l.trim().is_empty());
    let line: RunLine = last
        .and_then(|l| serde_json::from_str(l.trim()).ok())
        .ok_or_else(|| BenchError::NoResult {
            command: describe,
            exit_code: status,
            stderr_tail: tail(&err_path),
        })?;
    let (comm, main_sampled) = peaks.remove(&pid).unwrap_or_default();
    let rss = PeakRss {
        main_mb: mib(maxrss_kb.max(main_sampled)),
        main_sampled_mb: mib(main_sampled),
        children_mb: peaks
            .values()
            .filter(|(c, _)| *c == comm)
            .map(|&(_, kb)| mib(kb))
            .collect(),
    };
    Ok(Measured {
        line,
        rss,
        exit_code: status,
        cpu_s,
        wall_s,
        main_cpu_s,
    })
}

/// User + system CPU seconds of process `pid` itself (children excluded),
/// from `/proc/<pid>/stat`.
fn own_cpu(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name: state is field 3, utime 14, stime 15.
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Some((utime + stime) as f64 / hz)
}

fn mib(kb: u64) -> f64 {
    (kb as f64 / 1024.0 * 10.0).round() / 10.0
}

/// Last lines of a log file, for error messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// `wait4(pid, WNOHANG)`: `Some((exit code, ru_maxrss in KiB, user + system
/// CPU seconds))` once exited.
fn try_wait4(pid: u32) -> std::io::Result<Option<(i32, u64, f64)>> {
    let pid = i32::try_from(pid).map_err(std::io::Error::other)?;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: the pointers are valid for the duration of the call.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == 0 {
            return Ok(None);
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else if libc::WIFSIGNALED(status) {
            128 + libc::WTERMSIG(status)
        } else {
            -1
        };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let cpu = secs(ru.ru_utime) + secs(ru.ru_stime);
        return Ok(Some((code, u64::try_from(ru.ru_maxrss).unwrap_or(0), cpu)));
    }
}

/// Records the program name and `VmHWM` (KiB) of `root` and of every
/// descendant into `peaks`.
fn sample_tree(root: u32, peaks: &mut BTreeMap<u32, (String, u64)>) {
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if let Some((name, kb)) = vm_hwm(pid) {
            let e = peaks.entry(pid).or_insert((String::new(), 0));
            // The newest name: the first sample can land between fork and
            // exec, while the child still carries the bench's name.
            e.0 = name;
            e.1 = e.1.max(kb);
        }
        stack.extend(children(pid));
    }
}

/// `Name` and `VmHWM` (KiB) of a live process.
fn vm_hwm(pid: u32) -> Option<(String, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let name = s.lines().find_map(|l| l.strip_prefix("Name:"))?.trim();
    let kb = s
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    Some((name.to_string(), kb))
}

/// Direct children of `pid`: `/proc/<pid>/task/*/children`, or a scan of
/// `/proc/*/stat` where that file does not exist.
fn children(pid: u32) -> Vec<u32> {
    let tasks = PathBuf::from(format!("/proc/{pid}/task"));
    if let Ok(rd) = std::fs::read_dir(&tasks) {
        let mut out = Vec::new();
        let mut any = false;
        for t in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                any = true;
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
        if any {
            return out;
        }
    }
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| parent(p) == Some(pid))
        .collect()
}

fn parent(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Puts the machine in the same state before every run: the previous run's
/// output written back (sync), the page cache dropped when we may (root on
/// Linux; otherwise silently skipped), then the dataset read once so every
/// run starts with warm inputs. Without this, a run's kernel time for writing
/// its float32 output depended on what the run before it left in the page
/// cache (measured: 1.4 s vs 5.9 s of system time for the same run).
pub fn settle(dataset: &Path) {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    let _ = std::fs::write("/proc/sys/vm/drop_caches", b"1\n");
    warm(dataset);
    std::thread::sleep(Duration::from_millis(200));
}

fn warm(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            warm(&p);
        } else if let Ok(mut f) = std::fs::File::open(&p) {
            let _ = std::io::copy(&mut f, &mut std::io::sink());
        }
    }
}

/// Seconds since `t`.
pub fn since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}
