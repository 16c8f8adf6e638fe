//! The benchmark's results: every run, the per-configuration summary
//! (median, min, max, speedup, efficiency, peak memory), the machine they ran
//! on, and their two renderings, `results.json` and `results.md`.
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::runner::{Measured, PeakRss};
use super::{BenchArgs, BenchError, Config, Dataset, Mode};

/// The machine the benchmark ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Logical CPUs listed in /proc/cpuinfo.
    pub cpus_in_cpuinfo: usize,
    /// CPUs this process may use (`available_parallelism`: affinity, cgroup quota).
    pub cores_available: usize,
    /// `MemTotal` from /proc/meminfo, in MiB.
    pub memory_mb: u64,
    /// `PRETTY_NAME` from /etc/os-release.
    pub os: String,
    /// `uname -srm`.
    pub kernel: String,
    /// /proc/loadavg when the bench started: other load on the machine
    /// skews every number (a run of N processes gets a larger share of a
    /// busy machine than a run of one), so it is recorded.
    pub load_avg_at_start: String,
}

impl Machine {
    /// Reads the machine description; unknown parts say "unknown".
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |text: &str, key: &str| -> Option<String> {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(':').or_else(|| l.split_once('='))?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
            })
        };
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kb: u64 = field(&meminfo, "MemTotal")
            .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        Machine {
            cpu_model: field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into()),
            cpus_in_cpuinfo: cpuinfo
                .lines()
                .filter(|l| l.split(':').next().map(str::trim) == Some("processor"))
                .count(),
            cores_available: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_mb: memory_kb / 1024,
            os: field(&os_release, "PRETTY_NAME").unwrap_or_else(|| "unknown".into()),
            kernel: command_output("uname", &["-srm"]),
            load_avg_at_start: load_avg(),
        }
    }
}

/// The first three fields of /proc/loadavg (1, 5, 15 minutes), or "unknown".
pub fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// `git rev-parse HEAD`, plus `-dirty` if tracked files are modified.
fn git_commit() -> String {
    let head = command_output("git", &["rev-parse", "HEAD"]);
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    if dirty && head != "unknown" {
        format!("{head}-dirty")
    } else {
        head
    }
}

/// Trimmed stdout of a command, or "unknown".
fn command_output(prog: &str, args: &[&str]) -> String {
    std::process::Command::new(prog)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// One run of one configuration.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// What ran.
    pub mode: Mode,
    /// Worker processes.
    pub workers: usize,
    /// Engine threads per worker process (always 1).
    pub threads_per_worker: usize,
    /// Round (1-based).
    pub round: u32,
    /// Files seen.
    pub images: u64,
    /// Normalized.
    pub ok: u64,
    /// Failed.
    pub failed: u64,
    /// Skipped (not images).
    pub skipped: u64,
    /// Wall time reported by the run.
    pub seconds: f64,
    /// images / seconds.
    pub images_per_s: f64,
    /// Spawn to reap as measured by the bench (start-up and shutdown included).
    pub wall_s: f64,
    /// User + system CPU seconds of the whole process tree.
    pub cpu_s: f64,
    /// User + system CPU seconds of the main process alone (the master of
    /// `imgnorm run`; see [`Measured::main_cpu_s`]).
    pub main_cpu_s: f64,
    /// The family baseline's median seconds divided by this run's seconds
    /// (see [`Summary::speedup`]).
    pub speedup: f64,
    /// `speedup / workers`.
    pub efficiency: f64,
    /// Peak memory.
    pub peak_rss: PeakRss,
    /// Exit code.
    pub exit_code: i32,
    /// Process-seconds of the workers: what the autoscaler reports for
    /// autoscaled runs; `workers × seconds` for fixed pools (they live for
    /// the whole run) and single processes.
    pub worker_seconds: f64,
}

impl RunRecord {
    /// From a measured run.
    pub fn new(c: Config, round: u32, m: &Measured) -> RunRecord {
        RunRecord {
            mode: c.mode,
            workers: c.workers,
            threads_per_worker: 1,
            round,
            images: m.line.images,
            ok: m.line.ok,
            failed: m.line.failed,
            skipped: m.line.skipped,
            seconds: m.line.seconds,
            images_per_s: m.line.images as f64 / m.line.seconds.max(1e-9),
            wall_s: r3(m.wall_s),
            cpu_s: r3(m.cpu_s),
            main_cpu_s: r3(m.main_cpu_s),
            speedup: f64::NAN,
            efficiency: f64::NAN,
            peak_rss: m.rss.clone(),
            exit_code: m.exit_code,
            worker_seconds: r3(m
                .line
                .worker_seconds
                .unwrap_or(c.workers as f64 * m.line.seconds)),
        }
    }
}

/// Summary of all runs of one configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// What ran.
    pub mode: Mode,
    /// Name in tables.
    pub label: &'static str,
    /// Worker processes.
    pub workers: usize,
    /// Engine threads per worker.
    pub threads_per_worker: usize,
    /// Files per run.
    pub images: u64,
    /// Runs.
    pub runs: usize,
    /// Median seconds.
    pub median_s: f64,
    /// Fastest run.
    pub min_s: f64,
    /// Slowest run.
    pub max_s: f64,
    /// images / median seconds.
    pub images_per_s: f64,
    /// Median spawn-to-reap seconds measured by the bench.
    pub median_wall_s: f64,
    /// Median CPU seconds (user + system) of the whole process tree.
    pub median_cpu_s: f64,
    /// Median share of the main process in the tree's CPU seconds (for
    /// `imgnorm run`: the master's share).
    pub main_cpu_share: f64,
    /// Median time of the family's single-process baseline divided by this
    /// median (Rust: `centralized`; Python: one process).
    pub speedup: f64,
    /// `speedup / workers`.
    pub efficiency: f64,
    /// Rust centralized median divided by this median.
    pub speedup_vs_rust_centralized: f64,
    /// Largest peak RSS of the main process over the runs, MiB.
    pub peak_rss_main_mb: f64,
    /// Largest peak RSS of any worker process over the runs, MiB (0 if none).
    pub peak_rss_worker_mb: f64,
    /// Largest sum of the main and all worker peaks over the runs, MiB.
    pub peak_rss_total_mb: f64,
    /// Median worker-seconds (see [`RunRecord::worker_seconds`]).
    pub median_worker_seconds: f64,
}

/// Everything `results.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// imgnorm version.
    pub imgnorm_version: &'static str,
    /// The JPEG decoder this binary links, with or without SIMD (a build
    /// without `nasm` decodes JPEG at about 0.6× the speed).
    pub jpeg_decoder: &'static str,
    /// `git rev-parse HEAD` in the working directory, or "unknown"; with
    /// `-dirty` appended when tracked files differ from it.
    pub git_commit: String,
    /// The command line of the bench.
    pub command_line: String,
    /// UTC time when it finished (`date -u`), or "unknown".
    pub finished_at: String,
    /// The machine.
    pub machine: Machine,
    /// /proc/loadavg when the last run ended.
    pub load_avg_at_end: String,
    /// The dataset.
    pub dataset: Dataset,
    /// Repeats per configuration.
    pub repeat: u32,
    /// Transfer mode of the distributed runs.
    pub transfer: &'static str,
    /// Images per lease of the distributed runs.
    pub batch_size: u64,
    /// Whether the Python baseline ran.
    pub python: bool,
    /// How peak memory is measured.
    pub memory_method: &'static str,
    /// One row per configuration, in plan order.
    pub summary: Vec<Summary>,
    /// imgnorm against each peer that ran (see [`Results::peer_ratios`]).
    pub peers: Vec<PeerRatio>,
    /// Every run, in the order they ran.
    pub runs: Vec<RunRecord>,
}

/// Median of a non-empty slice (mean of the middle two for even lengths).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn r3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

impl Results {
    /// Summarizes the runs.
    pub fn build(
        machine: Machine,
        dataset: Dataset,
        args: &BenchArgs,
        python: bool,
        mut runs: Vec<RunRecord>,
    ) -> Results {
        let mut configs: Vec<Config> = Vec::new();
        for r in &runs {
            let c = Config {
                mode: r.mode,
                workers: r.workers,
            };
            if !configs.contains(&c) {
                configs.push(c);
            }
        }
        let med = |c: Config| {
            let t: Vec<f64> = runs
                .iter()
                .filter(|r| r.mode == c.mode && r.workers == c.workers)
                .map(|r| r.seconds)
                .collect();
            median(&t)
        };
        let base = |m: Mode| {
            med(Config {
                mode: m,
                workers: 1,
            })
        };
        let summary = configs
            .iter()
            .map(|&c| {
                let mine: Vec<&RunRecord> = runs
                    .iter()
                    .filter(|r| r.mode == c.mode && r.workers == c.workers)
                    .collect();
                let secs: Vec<f64> = mine.iter().map(|r| r.seconds).collect();
                let m = median(&secs);
                let speedup = base(c.mode.baseline()) / m;
                let fold = |f: &dyn Fn(&RunRecord) -> f64| {
                    mine.iter().map(|r| f(r)).fold(0.0_f64, f64::max)
                };
                Summary {
                    mode: c.mode,
                    label: c.mode.label(),
                    workers: c.workers,
                    threads_per_worker: 1,
                    images: mine.first().map_or(0, |r| r.images),
                    runs: mine.len(),
                    median_s: r3(m),
                    min_s: r3(secs.iter().copied().fold(f64::INFINITY, f64::min)),
                    max_s: r3(secs.iter().copied().fold(0.0, f64::max)),
                    images_per_s: r3(mine.first().map_or(0, |r| r.images) as f64 / m),
                    median_wall_s: r3(median(&mine.iter().map(|r| r.wall_s).collect::<Vec<_>>())),
                    median_cpu_s: r3(median(&mine.iter().map(|r| r.cpu_s).collect::<Vec<_>>())),
                    main_cpu_share: r3(median(
                        &mine
                            .iter()
                            .map(|r| r.main_cpu_s / r.cpu_s.max(1e-9))
                            .collect::<Vec<_>>(),
                    )),
                    speedup: r3(speedup),
                    efficiency: r3(speedup / c.workers as f64),
                    speedup_vs_rust_centralized: r3(base(Mode::Centralized) / m),
                    peak_rss_main_mb: fold(&|r| r.peak_rss.main_mb),
                    peak_rss_worker_mb: fold(&|r| {
                        r.peak_rss.children_mb.iter().copied().fold(0.0, f64::max)
                    }),
                    peak_rss_total_mb: (fold(&|r| r.peak_rss.total_mb()) * 10.0).round() / 10.0,
                    median_worker_seconds: r3(median(
                        &mine.iter().map(|r| r.worker_seconds).collect::<Vec<_>>(),
                    )),
                }
            })
            .collect();
        let bases: Vec<f64> = runs.iter().map(|r| base(r.mode.baseline())).collect();
        for (r, b) in runs.iter_mut().zip(bases) {
            let s = b / r.seconds;
            r.speedup = r3(s);
            r.efficiency = r3(s / r.workers as f64);
        }
        let mut results = Results {
            imgnorm_version: env!("CARGO_PKG_VERSION"),
            jpeg_decoder: imgnorm_engine::jpeg::DECODER,
            git_commit: git_commit(),
            command_line: std::env::args().collect::<Vec<_>>().join(" "),
            finished_at: command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
            machine,
            load_avg_at_end: load_avg(),
            dataset,
            repeat: args.repeat,
            transfer: match args.transfer {
                crate::args::TransferArg::Shared => "shared",
                crate::args::TransferArg::Stream => "stream",
            },
            batch_size: args.batch_size,
            python,
            memory_method: "main: ru_maxrss from wait4 (covers reaped descendants too); \
                workers: last VmHWM sample of each descendant process running the same program, \
                polled every 20 ms",
            summary,
            peers: Vec::new(),
            runs,
        };
        results.peers = results.peer_ratios();
        results
    }

    /// `results.md`.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let d = &self.dataset;
        let mut s = String::new();
        let _ = writeln!(s, "# imgnorm bench results\n");
        let _ = writeln!(s, "- Command: `{}`", self.command_line);
        let _ = writeln!(
            s,
            "- imgnorm {} at commit `{}`, finished {}",
            self.imgnorm_version, self.git_commit, self.finished_at
        );
        let _ = writeln!(s, "- JPEG decoder: {}", self.jpeg_decoder);
        let _ = writeln!(
            s,
            "- Machine: {} — {} CPUs usable ({} in /proc/cpuinfo), {} MiB RAM, {}, {}",
            m.cpu_model, m.cores_available, m.cpus_in_cpuinfo, m.memory_mb, m.os, m.kernel
        );
        let _ = writeln!(
            s,
            "- Load average (1/5/15 min) at start: {}; at end: {}",
            m.load_avg_at_start, self.load_avg_at_end
        );
        let _ = writeln!(
            s,
            "- Dataset: {} ({} files, {:.1} MB)",
            d.description,
            d.files,
            d.bytes as f64 / 1e6
        );
        let _ = writeln!(
            s,
            "- {} runs per configuration, interleaved; distributed: `--transfer {}`, \
             `--batch-size {}`, 1 engine thread per worker process\n",
            self.repeat, self.transfer, self.batch_size
        );
        let _ = writeln!(
            s,
            "| Mode | # of Workers | Dataset Size | Time (seconds) | Images/s | Speedup | Efficiency | Process wall (s) | CPU (s) | Peak RSS main (MiB) | Peak RSS per worker (MiB) |"
        );
        let _ = writeln!(s, "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|");
        for r in &self.summary {
            let worker_rss = if r.peak_rss_worker_mb > 0.0 {
                format!("{:.0}", r.peak_rss_worker_mb)
            } else {
                "–".into()
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.2} ({:.2}–{:.2}) | {:.1} | {:.2}× | {:.0}% | {:.2} | {:.2} | {:.0} | {} |",
                r.label,
                r.workers,
                r.images,
                r.median_s,
                r.min_s,
                r.max_s,
                r.images_per_s,
                r.speedup,
                r.efficiency * 100.0,
                r.median_wall_s,
                r.median_cpu_s,
                r.peak_rss_main_mb,
                worker_rss
            );
        }
        let _ = writeln!(
            s,
            "\nTime: median (min–max) wall seconds as reported by each run, start-up \
             included. Speedup: the family's single-process median (Rust: centralized; \
             Python: one process) divided by this median; efficiency = speedup / workers. \
             Process wall: median time from spawning the command to reaping it, measured \
             by the bench (process start-up, worker start-up and shutdown included). \
             CPU: median user + system seconds of the whole process tree (from `wait4`), \
             which other load on the machine does not inflate."
        );
        let cores = m.cores_available;
        let _ = writeln!(
            s,
            "\n**This machine has {cores} usable cores.** Each worker is a process with one \
             engine thread, so no speedup beyond {cores}× can appear, whatever the worker count."
        );
        let over: Vec<String> = self
            .summary
            .iter()
            .filter(|r| r.workers > cores)
            .map(|r| r.workers.to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !over.is_empty() {
            let _ = writeln!(
                s,
                "Rows with {} workers run more processes than there are cores: they measure \
                 oversubscription overhead, not scaling.",
                over.join(", ")
            );
        }
        if let Some(a) = self.summary.iter().find(|r| r.mode == Mode::Autoscale) {
            let fixed = self
                .summary
                .iter()
                .find(|r| r.mode == Mode::Distributed && r.workers == a.workers);
            let _ = writeln!(
                s,
                "\n### Autoscaling vs a fixed pool of {} workers\n\n\
                 | Mode | Workers | Time (seconds) | Worker-seconds | Images per worker-second |\n\
                 |---|---|---:|---:|---:|",
                a.workers
            );
            for r in fixed.into_iter().chain(std::iter::once(a)) {
                let workers = if r.mode == Mode::Autoscale {
                    format!("0..{}", r.workers)
                } else {
                    r.workers.to_string()
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.2} | {:.1} | {:.1} |",
                    r.label,
                    workers,
                    r.median_s,
                    r.median_worker_seconds,
                    r.images as f64 / r.median_worker_seconds.max(1e-9)
                );
            }
            let _ = writeln!(
                s,
                "\nWorker-seconds: the sum of the worker processes' lifetimes (median over the \
                 runs); a fixed pool lives for the whole run, the autoscaled one starts with no \
                 worker, measures, grows toward the maximum (`--autoscale-target-drain`) and \
                 drains at the end."
            );
        }
        self.peers_markdown(&mut s);
        let _ = writeln!(s, "\nPeak memory: {}.", self.memory_method);
        let _ = writeln!(
            s,
            "\n![time vs workers](time_vs_workers.png)\n\n![speedup vs workers](speedup_vs_workers.png)"
        );
        s
    }
}

/// One comparison of imgnorm with a peer on the same worker count: ratios
/// of the two runs of each round (interleaved, so each pair ran under the
/// same conditions), then their median.
#[derive(Debug, Clone, Serialize)]
pub struct PeerRatio {
    /// imgnorm's configuration (`centralized` or `run-wN`).
    pub imgnorm: String,
    /// The peer's configuration.
    pub peer: String,
    /// Median over rounds of peer wall / imgnorm wall (spawn to reap):
    /// above 1, imgnorm is faster.
    pub wall_ratio: f64,
    /// Median over rounds of peer CPU / imgnorm CPU: above 1, imgnorm uses
    /// fewer CPU-seconds.
    pub cpu_ratio: f64,
    /// Median CPU milliseconds per image, imgnorm.
    pub imgnorm_cpu_ms_per_image: f64,
    /// Median CPU milliseconds per image, the peer.
    pub peer_cpu_ms_per_image: f64,
    /// Rounds that paired.
    pub pairs: usize,
}

impl Results {
    /// imgnorm against each peer that ran with the same worker count:
    /// `centralized` against the OpenCV script in one process, `run` with N
    /// workers against the pool of N and each framework with N.
    pub fn peer_ratios(&self) -> Vec<PeerRatio> {
        let slug = |m: Mode, w: usize| {
            Config {
                mode: m,
                workers: w,
            }
            .slug()
        };
        let mut out = Vec::new();
        let mut pairs: Vec<((Mode, usize), (Mode, usize))> = Vec::new();
        for s in &self.summary {
            match s.mode {
                Mode::Python => pairs.push(((Mode::Centralized, 1), (Mode::Python, 1))),
                Mode::PythonPool | Mode::Dask | Mode::Ray | Mode::Daft => {
                    pairs.push(((Mode::Distributed, s.workers), (s.mode, s.workers)));
                }
                _ => {}
            }
        }
        for (a, b) in pairs {
            let of = |(m, w): (Mode, usize), round: u32| {
                self.runs
                    .iter()
                    .find(|r| r.mode == m && r.workers == w && r.round == round)
            };
            let (mut wall, mut cpu, mut ca, mut cb) = (vec![], vec![], vec![], vec![]);
            for round in 1..=self.repeat {
                if let (Some(x), Some(y)) = (of(a, round), of(b, round)) {
                    wall.push(y.wall_s / x.wall_s.max(1e-9));
                    cpu.push(y.cpu_s / x.cpu_s.max(1e-9));
                    ca.push(x.cpu_s * 1000.0 / x.images.max(1) as f64);
                    cb.push(y.cpu_s * 1000.0 / y.images.max(1) as f64);
                }
            }
            if wall.is_empty() {
                continue;
            }
            out.push(PeerRatio {
                imgnorm: slug(a.0, a.1),
                peer: slug(b.0, b.1),
                wall_ratio: r3(median(&wall)),
                cpu_ratio: r3(median(&cpu)),
                imgnorm_cpu_ms_per_image: r3(median(&ca)),
                peer_cpu_ms_per_image: r3(median(&cb)),
                pairs: wall.len(),
            });
        }
        out
    }

    /// The peers section of `results.md` (nothing when no peer ran), and
    /// the master's CPU share of each `imgnorm run`.
    fn peers_markdown(&self, s: &mut String) {
        let ratios = self.peer_ratios();
        if !ratios.is_empty() {
            let _ = writeln!(
                s,
                "\n### imgnorm against its peers (same dataset, same cores, interleaved)\n\n\
                 | imgnorm | Peer | Peer wall / imgnorm wall | Peer CPU / imgnorm CPU | \
                 imgnorm CPU ms/image | Peer CPU ms/image | Pairs |\n\
                 |---|---|---:|---:|---:|---:|---:|"
            );
            for r in &ratios {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
                    r.imgnorm,
                    r.peer,
                    r.wall_ratio,
                    r.cpu_ratio,
                    r.imgnorm_cpu_ms_per_image,
                    r.peer_cpu_ms_per_image,
                    r.pairs
                );
            }
            let _ = writeln!(
                s,
                "\nEach ratio is the median over rounds of the two runs of one round \
                 (whole processes, spawn to reap; CPU = user + system of the process tree \
                 from `wait4`). Above 1: imgnorm is faster, or uses fewer CPU-seconds."
            );
        }
        let runs: Vec<&Summary> = self
            .summary
            .iter()
            .filter(|r| r.mode == Mode::Distributed)
            .collect();
        if !runs.is_empty() {
            let _ = writeln!(s, "\n### The master's share of the CPU\n");
            for r in runs {
                let _ = writeln!(
                    s,
                    "- `imgnorm run --workers {}`: the master process used {:.1}% of the \
                     job's CPU-seconds (median over runs).",
                    r.workers,
                    r.main_cpu_share * 100.0
                );
            }
        }
    }
}

/// Writes `results.json` and `results.md` into `out`.
pub fn write(results: &Results, out: &Path) -> Result<(), BenchError> {
    let json = out.join("results.json");
    let text = serde_json::to_string_pretty(results)?;
    std::fs::write(&json, text + "\n").map_err(|source| BenchError::Io { path: json, source })?;
    let md = out.join("results.md");
    std::fs::write(&md, results.markdown()).map_err(|source| BenchError::Io { path: md, source })
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
