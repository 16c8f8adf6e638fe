//! `imgnorm bench`: the scaling benchmark. Owns the plan (which
//! configurations, in which order), the cached dataset, the machine
//! description and the loop that runs everything; measuring one run lives in
//! [`runner`], the tables in [`report`], the charts in [`chart`].
//!
//! Every configuration runs as a child process of the current executable
//! (`imgnorm centralized`, `imgnorm run --workers N --threads 1`, and with
//! `--python` the OpenCV script), into a fresh output folder that is deleted
//! afterwards. Repeats are interleaved — round `r` runs every configuration
//! once — so slow drift of the machine (thermal, page cache, other load) hits
//! all configurations alike instead of biasing the last ones.
pub mod chart;
pub mod report;
pub mod runner;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::args::parse_size;
use crate::synth::{GenError, GenFormat, GenOptions};
use report::{Machine, Results, RunRecord};

/// `imgnorm bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Number of images to generate (ignored with --input).
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// Worker counts to try, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub workers: Vec<usize>,
    /// Runs of every configuration (interleaved rounds).
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
    /// Use this folder of images instead of a generated dataset.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Folder for the dataset cache, scratch outputs, logs, results and charts.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// How the distributed runs move images.
    #[arg(long, value_enum, default_value = "shared")]
    pub transfer: crate::args::TransferArg,
    /// Also run the Python/OpenCV baseline (1 process and a pool of N).
    #[arg(long)]
    pub python: bool,
    /// The Python baseline script.
    #[arg(long, default_value = "benchmarks/python/normalize_cv2.py")]
    pub python_script: PathBuf,
    /// Also run the peers, comma separated (all when given alone):
    /// `opencv` (the OpenCV script in one process and a pool of N, as
    /// --python), `dask`, `ray` (Ray Data), `daft`; the frameworks run with
    /// N workers for each N > 1 of --workers. A peer whose Python packages
    /// do not import is skipped with a message (scripts/bench-peers.sh
    /// installs them). results.md then compares imgnorm with each peer.
    #[arg(long, value_enum, value_delimiter = ',', num_args = 0..)]
    pub peers: Option<Vec<Peer>>,
    /// The frameworks' runner script.
    #[arg(long, default_value = "benchmarks/python/normalize_peers.py")]
    pub peers_script: PathBuf,
    /// Folder the runs write their outputs into (each run's output is
    /// deleted after it): put it on the file system to measure, e.g. a
    /// tmpfs. Default: OUT/scratch.
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// Size of generated images, WxH.
    #[arg(long, value_parser = parse_size, default_value = "512x512")]
    pub size: (u32, u32),
    /// Format of generated images.
    #[arg(long, value_enum, default_value = "jpeg")]
    pub format: BenchFormat,
    /// Images per lease in the distributed runs.
    #[arg(long, default_value_t = 32)]
    pub batch_size: u64,
    /// Also run `imgnorm run --autoscale local` with the largest worker count
    /// as its maximum, and report its time and worker-seconds next to the
    /// fixed pool of that size.
    #[arg(long)]
    pub autoscale: bool,
    /// `--target-drain` of the autoscaled runs, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub autoscale_target_drain: f64,
}

/// `--format`.
#[derive(Debug, Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchFormat {
    /// JPEG.
    Jpeg,
    /// PNG.
    Png,
    /// Mostly JPEG plus every other format.
    Mixed,
}

/// `--peers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Peer {
    /// The OpenCV script, one process and `multiprocessing.Pool(N)`.
    Opencv,
    /// Dask `distributed.LocalCluster`.
    Dask,
    /// Ray Data.
    Ray,
    /// Daft's native runner.
    Daft,
}

impl Peer {
    /// The framework's mode (`None` for the OpenCV script).
    fn mode(self) -> Option<Mode> {
        match self {
            Peer::Opencv => None,
            Peer::Dask => Some(Mode::Dask),
            Peer::Ray => Some(Mode::Ray),
            Peer::Daft => Some(Mode::Daft),
        }
    }

    /// What must import for this peer to run.
    fn module(self) -> &'static str {
        match self {
            Peer::Opencv => "cv2, numpy",
            Peer::Dask => "cv2, numpy, dask.distributed",
            Peer::Ray => "cv2, numpy, ray.data",
            Peer::Daft => "cv2, numpy, daft",
        }
    }
}

/// Failures of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad flags.
    #[error("invalid option: {0}")]
    Invalid(&'static str),
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Generating the dataset failed.
    #[error("generating the dataset failed: {0}")]
    Gen(#[from] GenError),
    /// A child process could not be started or waited for.
    #[error("cannot run {command}: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A child ended without printing its JSON result line.
    #[error(
        "{command} exited with {exit_code} without a result line; stderr ends with:\n{stderr_tail}"
    )]
    NoResult {
        /// The command.
        command: String,
        /// Its exit code.
        exit_code: i32,
        /// Last lines of its stderr.
        stderr_tail: String,
    },
    /// Writing results.json failed.
    #[error("cannot encode results: {0}")]
    Json(#[from] serde_json::Error),
    /// Drawing a chart failed.
    #[error("chart {}: {message}", path.display())]
    Chart {
        /// The chart file.
        path: PathBuf,
        /// The backend's message.
        message: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |source| BenchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a configuration runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// `imgnorm centralized`: one process, one engine thread.
    Centralized,
    /// `imgnorm run --workers N --threads 1`.
    Distributed,
    /// The OpenCV script in one process.
    Python,
    /// The OpenCV script with `--processes N`.
    PythonPool,
    /// `imgnorm run --autoscale local --max-workers N --threads 1`.
    Autoscale,
    /// The OpenCV job on a Dask LocalCluster of N processes.
    Dask,
    /// The OpenCV job on Ray Data with N CPUs.
    Ray,
    /// The OpenCV job as a Daft UDF with N workers.
    Daft,
}

impl Mode {
    /// Name in tables and charts.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Centralized => "Centralized (Rust, 1 thread)",
            Mode::Distributed => "Distributed (Rust, N workers x 1 thread)",
            Mode::Python => "Python OpenCV (1 process)",
            Mode::PythonPool => "Python OpenCV (Pool of N)",
            Mode::Autoscale => "Autoscaled (Rust, 0..N workers x 1 thread)",
            Mode::Dask => "Dask LocalCluster (N processes)",
            Mode::Ray => "Ray Data (N CPUs)",
            Mode::Daft => "Daft native runner (N UDF workers)",
        }
    }

    /// Whether this is the baseline of its family (speedups are relative to it).
    pub fn is_baseline(self) -> bool {
        matches!(self, Mode::Centralized | Mode::Python)
    }

    /// The family's baseline.
    pub fn baseline(self) -> Mode {
        match self {
            Mode::Centralized | Mode::Distributed | Mode::Autoscale => Mode::Centralized,
            Mode::Python | Mode::PythonPool | Mode::Dask | Mode::Ray | Mode::Daft => Mode::Python,
        }
    }

    /// Whether this is a peer (not imgnorm).
    pub fn is_peer(self) -> bool {
        !matches!(
            self,
            Mode::Centralized | Mode::Distributed | Mode::Autoscale
        )
    }
}

/// One configuration: a mode and its number of processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Config {
    /// What runs.
    pub mode: Mode,
    /// Worker processes (1 for the single-process modes).
    pub workers: usize,
}

impl Config {
    /// Short name for logs and file names.
    pub fn slug(&self) -> String {
        match self.mode {
            Mode::Centralized => "centralized".into(),
            Mode::Distributed => format!("run-w{}", self.workers),
            Mode::Python => "python".into(),
            Mode::PythonPool => format!("python-p{}", self.workers),
            Mode::Autoscale => format!("autoscale-max{}", self.workers),
            Mode::Dask => format!("dask-p{}", self.workers),
            Mode::Ray => format!("ray-p{}", self.workers),
            Mode::Daft => format!("daft-p{}", self.workers),
        }
    }
}

/// The configurations of one round, in run order: imgnorm's, then the
/// OpenCV script's (`python`), then each framework in `frameworks` with N
/// workers for each N > 1 of `workers` (or 1 when there is none).
pub fn plan(workers: &[usize], python: bool, autoscale: bool, frameworks: &[Mode]) -> Vec<Config> {
    let mut w: Vec<usize> = workers.iter().copied().filter(|&n| n > 0).collect();
    w.sort_unstable();
    w.dedup();
    let mut out = vec![Config {
        mode: Mode::Centralized,
        workers: 1,
    }];
    out.extend(w.iter().map(|&n| Config {
        mode: Mode::Distributed,
        workers: n,
    }));
    if autoscale && let Some(&max) = w.last() {
        out.push(Config {
            mode: Mode::Autoscale,
            workers: max,
        });
    }
    if python {
        out.push(Config {
            mode: Mode::Python,
            workers: 1,
        });
        // --processes 1 is the single process above.
        out.extend(w.iter().filter(|&&n| n > 1).map(|&n| Config {
            mode: Mode::PythonPool,
            workers: n,
        }));
    }
    let mut pools: Vec<usize> = w.iter().copied().filter(|&n| n > 1).collect();
    if pools.is_empty() {
        pools.push(1);
    }
    for &mode in frameworks {
        out.extend(pools.iter().map(|&n| Config { mode, workers: n }));
    }
    out
}

/// Where the dataset is and what it holds.
#[derive(Debug, Clone, Serialize)]
pub struct Dataset {
    /// Folder.
    pub path: PathBuf,
    /// Files in it.
    pub files: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// How it was made.
    pub description: String,
}

/// Generates the dataset into `out/dataset/<key>` unless a complete copy is
/// there already (the marker `out/dataset/<key>.complete`, outside the image
/// folder so no run sees it, is written last), or describes `--input`.
pub fn dataset(args: &BenchArgs) -> Result<Dataset, BenchError> {
    if let Some(input) = &args.input {
        let (files, bytes) = folder_size(input)?;
        return Ok(Dataset {
            path: input.clone(),
            files,
            bytes,
            description: format!("user-supplied folder {}", input.display()),
        });
    }
    let (w, h) = args.size;
    let fmt = match args.format {
        BenchFormat::Jpeg => "jpeg",
        BenchFormat::Png => "png",
        BenchFormat::Mixed => "mixed",
    };
    let key = format!("{fmt}-{}-{w}x{h}-seed0", args.count);
    let path = args.out.join("dataset").join(&key);
    let marker = args.out.join("dataset").join(format!("{key}.complete"));
    let description = format!(
        "{} synthetic {fmt} images, {w}x{h}, seed 0 (imgnorm gen)",
        args.count
    );
    if !marker.exists() {
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
        }
        eprintln!("bench: generating {description} into {}", path.display());
        let mut opts = GenOptions::new(&path, args.count);
        opts.size = Some(args.size);
        opts.format = match args.format {
            BenchFormat::Jpeg => GenFormat::Jpeg,
            BenchFormat::Png => GenFormat::Png,
            BenchFormat::Mixed => GenFormat::Mixed,
        };
        crate::synth::generate(&opts)?;
        std::fs::write(&marker, b"").map_err(io_err(&marker))?;
    } else {
        eprintln!("bench: reusing dataset {}", path.display());
    }
    let (files, bytes) = folder_size(&path)?;
    Ok(Dataset {
        path,
        files,
        bytes,
        description,
    })
}

fn folder_size(dir: &Path) -> Result<(u64, u64), BenchError> {
    let mut files = 0;
    let mut bytes = 0;
    for e in walkdir::WalkDir::new(dir) {
        let e = e.map_err(|e| BenchError::Io {
            path: dir.to_path_buf(),
            source: e.into(),
        })?;
        if e.file_type().is_file() {
            files += 1;
            bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    Ok((files, bytes))
}

/// Whether `python3` can import `modules` (`import` syntax) and `script`
/// exists; `Err` says why not.
fn python_ready(script: &Path, modules: &str) -> Result<(), String> {
    if !script.is_file() {
        return Err(format!("{} not found", script.display()));
    }
    match Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
    {
        Err(e) => Err(format!("python3 cannot be started: {e}")),
        Ok(o) if !o.status.success() => Err(format!(
            "python3 cannot import {modules} (scripts/py-deps.sh installs the OpenCV \
             peer, scripts/bench-peers.sh the frameworks): {}",
            String::from_utf8_lossy(&o.stderr)
                .trim()
                .lines()
                .last()
                .unwrap_or_default()
        )),
        Ok(_) => Ok(()),
    }
}

/// The peers that will run: `--python` and `--peers` (all when empty),
/// those that cannot run left out with a message on stderr. Returns whether
/// the OpenCV script runs and the framework modes.
fn ready_peers(args: &BenchArgs) -> (bool, Vec<Mode>) {
    let mut wanted: Vec<Peer> = match &args.peers {
        Some(p) if p.is_empty() => vec![Peer::Opencv, Peer::Dask, Peer::Ray, Peer::Daft],
        Some(p) => p.clone(),
        None => Vec::new(),
    };
    if args.python && !wanted.contains(&Peer::Opencv) {
        wanted.insert(0, Peer::Opencv);
    }
    wanted.dedup();
    let mut opencv = false;
    let mut frameworks = Vec::new();
    for p in wanted {
        let script = match p {
            Peer::Opencv => &args.python_script,
            _ => &args.peers_script,
        };
        match python_ready(script, p.module()) {
            Err(why) => {
                let name = p.to_possible_value().map(|v| v.get_name().to_string());
                eprintln!("bench: skipping peer {}: {why}", name.unwrap_or_default());
            }
            Ok(()) => match p.mode() {
                None => opencv = true,
                Some(m) if !frameworks.contains(&m) => frameworks.push(m),
                Some(_) => {}
            },
        }
    }
    (opencv, frameworks)
}

/// The child command for a configuration.
fn command(args: &BenchArgs, exe: &Path, c: Config, input: &Path, output: &Path) -> Command {
    let mut cmd;
    match c.mode {
        Mode::Centralized => {
            cmd = Command::new(exe);
            cmd.arg("centralized").arg("--quiet");
        }
        Mode::Distributed | Mode::Autoscale => {
            cmd = Command::new(exe);
            let transfer = match args.transfer {
                crate::args::TransferArg::Shared => "shared",
                crate::args::TransferArg::Stream => "stream",
            };
            cmd.args(["run", "--quiet", "--threads", "1"]);
            if c.mode == Mode::Autoscale {
                cmd.args(["--autoscale", "local", "--max-workers"])
                    .arg(c.workers.to_string())
                    .arg("--target-drain")
                    .arg(args.autoscale_target_drain.to_string());
            } else {
                cmd.arg("--workers").arg(c.workers.to_string());
            }
            cmd.arg("--transfer")
                .arg(transfer)
                .arg("--batch-size")
                .arg(args.batch_size.to_string());
        }
        Mode::Python | Mode::PythonPool => {
            cmd = Command::new("python3");
            cmd.arg(&args.python_script);
            if c.mode == Mode::PythonPool {
                cmd.arg("--processes").arg(c.workers.to_string());
            }
        }
        Mode::Dask | Mode::Ray | Mode::Daft => {
            cmd = Command::new("python3");
            let name = match c.mode {
                Mode::Dask => "dask",
                Mode::Ray => "ray",
                _ => "daft",
            };
            cmd.arg(&args.peers_script)
                .arg(name)
                .arg("--processes")
                .arg(c.workers.to_string());
        }
    }
    cmd.arg("--input").arg(input).arg("--output").arg(output);
    cmd
}

/// Runs the whole benchmark and writes results.json, results.md and the
/// charts into `args.out`.
pub fn run(args: &BenchArgs) -> Result<Results, BenchError> {
    if args.repeat == 0 {
        return Err(BenchError::Invalid("--repeat must be at least 1"));
    }
    if args.workers.iter().all(|&w| w == 0) {
        return Err(BenchError::Invalid("--workers needs a positive count"));
    }
    if args.batch_size == 0 {
        return Err(BenchError::Invalid("--batch-size must be at least 1"));
    }
    std::fs::create_dir_all(&args.out).map_err(io_err(&args.out))?;
    let exe = std::env::current_exe().map_err(io_err(Path::new("current executable")))?;
    let data = dataset(args)?;
    let (python, frameworks) = ready_peers(args);
    if args.autoscale
        && !(args.autoscale_target_drain.is_finite() && args.autoscale_target_drain > 0.0)
    {
        return Err(BenchError::Invalid(
            "--autoscale-target-drain must be positive",
        ));
    }
    let configs = plan(&args.workers, python, args.autoscale, &frameworks);
    let machine = Machine::probe();
    if !imgnorm_engine::jpeg::SIMD {
        eprintln!(
            "bench: warning: JPEG decoder is {}; JPEG timings will understate imgnorm",
            imgnorm_engine::jpeg::DECODER
        );
    }
    if let Some(&max) = args.workers.iter().max()
        && max > machine.cores_available
    {
        eprintln!(
            "bench: note: {max} workers on {} cores; no speedup beyond {}x can appear",
            machine.cores_available, machine.cores_available
        );
    }
    let logs = args.out.join("logs");
    std::fs::create_dir_all(&logs).map_err(io_err(&logs))?;
    let scratch = match &args.scratch {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
            dir.join(format!("imgnorm-bench-{}", std::process::id()))
        }
        None => args.out.join("scratch"),
    };
    let total = configs.len() * args.repeat as usize;
    let start = Instant::now();
    let mut records = Vec::with_capacity(total);
    let mut n = 0;
    for round in 1..=args.repeat {
        for &c in &configs {
            n += 1;
            if scratch.exists() {
                std::fs::remove_dir_all(&scratch).map_err(io_err(&scratch))?;
            }
            runner::settle(&data.path);
            eprint!(
                "bench: [{n}/{total}] round {round}/{} {:<14} elapsed {:>6.1}s ... ",
                args.repeat,
                c.slug(),
                runner::since(start)
            );
            let log = logs.join(format!("{}-r{round}", c.slug()));
            let m = runner::run_measured(command(args, &exe, c, &data.path, &scratch), &log)?;
            eprintln!(
                "{:.2}s ({:.1} images/s, {} failed)",
                m.line.seconds,
                m.line.images as f64 / m.line.seconds.max(1e-9),
                m.line.failed
            );
            records.push(RunRecord::new(c, round, &m));
            if scratch.exists() {
                std::fs::remove_dir_all(&scratch).map_err(io_err(&scratch))?;
            }
        }
    }
    eprintln!(
        "bench: {total} runs in {:.1}s; writing results to {}",
        runner::since(start),
        args.out.display()
    );
    let results = Results::build(machine, data, args, python, records);
    report::write(&results, &args.out)?;
    chart::write_all(&results, &args.out)?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_sorted_deduplicated_and_interleavable() {
        let p = plan(&[4, 1, 2, 2], true, true, &[Mode::Dask]);
        let slugs: Vec<String> = p.iter().map(Config::slug).collect();
        assert_eq!(
            slugs,
            [
                "centralized",
                "run-w1",
                "run-w2",
                "run-w4",
                "autoscale-max4",
                "python",
                "python-p2",
                "python-p4",
                "dask-p2",
                "dask-p4"
            ]
        );
        assert_eq!(plan(&[1], false, false, &[]).len(), 2);
        assert_eq!(plan(&[1], false, false, &[Mode::Ray])[2].slug(), "ray-p1");
    }
}
