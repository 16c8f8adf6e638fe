//! The output dataset's metadata files: `manifest.jsonl` (one row per input
//! file, sorted by path, byte-identical across modes), `stats.json` (counts,
//! options, version, timings, dataset statistics) and the one-line JSON
//! summary printed last.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use imgnorm_core::dataset::DatasetParams;
use imgnorm_core::options::{EngineOptions, Scope};
use imgnorm_core::record::{Counts, Record, Status};
use imgnorm_core::stats::{ChannelSummary, DatasetStats};
use serde::Serialize;

use crate::engine::StageTimes;
use crate::fsio::write_atomic;

/// Name of the manifest file in the output folder.
pub const MANIFEST: &str = "manifest.jsonl";
/// Name of the statistics file in the output folder.
pub const STATS: &str = "stats.json";
/// Name of the per-image provenance file (distributed runs only).
pub const PROVENANCE: &str = "provenance.jsonl";

/// Writing the dataset's metadata failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct OutputError {
    /// The file.
    pub path: String,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Removes what killed writers left in the output tree `out`: the engines'
/// temporary files (`.PID.TAG.N.tmp`, see
/// [`crate::fsio::unique_tmp_suffix`]), those of [`write_atomic`]
/// (`NAME.PID.TAG.N.tmp`) and the master's stream-mode partial files
/// (`.PID.LEASE.INDEX.part`; `NAME.PID.LEASE.part` from older versions).
/// Called by the job
/// owner once every image has its result, so no live writer of this job
/// still needs one (a late duplicate writer renames its own away at once).
/// Returns how many were removed. Object-store outputs have none.
pub fn sweep_temp_files(out: &Path) -> usize {
    if crate::storage::is_object_url(out) {
        return 0;
    }
    let mut removed = 0;
    for e in walkdir::WalkDir::new(out)
        .into_iter()
        .filter_map(Result::ok)
    {
        if !e.file_type().is_file() {
            continue;
        }
        let name = e.file_name().to_string_lossy();
        if is_temp_name(&name) && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether `name` is one of our temporary names (see [`sweep_temp_files`]).
pub(crate) fn is_temp_name(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let hex = |s: &str| s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let parts: Vec<&str> = name.rsplitn(5, '.').collect();
    match parts.as_slice() {
        ["tmp", n, tag, pid, _stem] => digits(n) && hex(tag) && digits(pid),
        ["part", lease, pid, _rest @ ..] => digits(lease) && digits(pid),
        _ => false,
    }
}

#[cfg(test)]
mod sweep_tests {
    use super::*;

    #[test]
    fn only_our_temporary_names_are_swept() {
        assert!(is_temp_name("a.png.npy.19914.f43c798f04240a67.0.tmp"));
        assert!(is_temp_name("x.npy.77.12.part"));
        assert!(is_temp_name(".1.f43c798f04240a67.12.tmp"));
        assert!(is_temp_name(".77.12.3.part"));
        assert!(!is_temp_name("a.png.npy"));
        assert!(!is_temp_name("notes.tmp"));
        assert!(!is_temp_name("a.1.2.tmp"));
        assert!(!is_temp_name("a.part"));
        let dir = tempfile::tempdir().expect("tmp");
        let sub = dir.path().join("d");
        std::fs::create_dir(&sub).expect("mkdir");
        std::fs::write(sub.join("k.npy"), b"k").expect("write");
        std::fs::write(sub.join("k.npy.5.00000000000000ff.3.tmp"), b"t").expect("write");
        std::fs::write(sub.join(".5.00000000000000ff.4.tmp"), b"t").expect("write");
        std::fs::write(sub.join(".5.8.2.part"), b"t").expect("write");
        assert_eq!(sweep_temp_files(dir.path()), 3);
        assert!(sub.join("k.npy").is_file());
    }
}

/// Writes `manifest.jsonl` from rows already sorted by path.
pub fn write_manifest<'a>(
    out: &Path,
    rows: impl IntoIterator<Item = &'a Record>,
) -> Result<Counts, OutputError> {
    let mut counts = Counts::default();
    let mut buf = Vec::with_capacity(1 << 16);
    for r in rows {
        counts.add(r.status);
        // Serialising a plain struct of strings and integers cannot fail.
        if serde_json::to_writer(&mut buf, r).is_ok() {
            buf.push(b'\n');
        }
    }
    write_file(out, MANIFEST, &buf)?;
    Ok(counts)
}

/// Merges two path-sorted row lists into one path-sorted list.
pub fn merge_sorted(a: Vec<Record>, b: Vec<Record>) -> Vec<Record> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let mut a = a.into_iter().peekable();
    let mut b = b.into_iter().peekable();
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.path <= y.path,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_a { a.next() } else { b.next() };
        out.extend(next);
    }
    out
}

/// Contents of `stats.json`.
#[derive(Debug, Serialize)]
pub struct Stats<'a> {
    /// Always "imgnorm".
    pub tool: &'static str,
    /// imgnorm's version.
    pub version: &'static str,
    /// "centralized" or "distributed".
    pub mode: &'a str,
    /// The input folder as given.
    pub input: String,
    /// Counts by status.
    pub counts: Counts,
    /// Engine options used.
    pub options: &'a EngineOptions,
    /// Number of worker processes (0 for centralized).
    pub workers: usize,
    /// Wall-clock seconds, discovery to last file written.
    pub elapsed_s: f64,
    /// Images per second over `elapsed_s`.
    pub images_per_s: f64,
    /// Seconds per stage summed over engines (centralized only; 0 otherwise).
    pub stage_seconds: StageSeconds,
    /// Peak resident memory of the process that wrote this file (the master
    /// in distributed runs), in MiB; absent where /proc is not available.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_mib: Option<f64>,
    /// Statistics of the output values; identical across modes and worker
    /// counts.
    pub dataset: DatasetSection,
    /// The parameters of a whole-dataset normalization (`--scope
    /// dataset|full`, `--standardize`); absent for per-image min-max.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalization: Option<Normalization>,
}

/// The `"normalization"` section of `stats.json` (see docs/FORMAT.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Normalization {
    /// The min-max scope.
    pub scope: Scope,
    /// `--per-channel` (dataset scope).
    pub per_channel: bool,
    /// Output range of the min-max stage.
    pub range: [f64; 2],
    /// Dataset scope: the dataset's minimum (one value, or one per channel).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub min: Vec<u32>,
    /// Dataset scope: the dataset's maximum.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub max: Vec<u32>,
    /// `--standardize`: where mean and std come from, `"dataset"` or
    /// `"given"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standardize: Option<&'static str>,
    /// Per-channel means subtracted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mean: Vec<f64>,
    /// Per-channel standard deviations divided by (a 0 is applied as 1).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub std: Vec<f64>,
}

impl Normalization {
    /// The section for a job, or `None` when it is a per-image min-max job.
    pub fn new(opts: &EngineOptions, params: &DatasetParams) -> Option<Normalization> {
        let mapped =
            matches!(opts.scope, Scope::Dataset | Scope::Full) || opts.standardize.is_some();
        mapped.then(|| Normalization {
            scope: opts.scope,
            per_channel: opts.per_channel,
            range: [opts.range.0, opts.range.1],
            min: params.min.clone(),
            max: params.max.clone(),
            standardize: opts
                .standardize
                .as_ref()
                .map(|z| if z.computed() { "dataset" } else { "given" }),
            mean: params.mean.clone(),
            std: params.std.clone(),
        })
    }
}

/// The `"dataset"` section of `stats.json` (see docs/FORMAT.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetSection {
    /// Images whose statistics were folded in (the `ok` ones).
    pub images: u64,
    /// `[lo, hi]` of the histograms: the output range, lower end first.
    pub histogram_range: [f64; 2],
    /// Per output channel.
    pub channels: Vec<ChannelSummary>,
    /// `ok` images per class folder, or `None` when the input is not laid out
    /// in class folders.
    pub classes: Option<BTreeMap<String, u64>>,
}

impl DatasetSection {
    /// The section for statistics folded in path order and the final rows.
    pub fn new(stats: &DatasetStats, rows: &[Record]) -> DatasetSection {
        DatasetSection {
            images: stats.images,
            histogram_range: [stats.binning.lo, stats.binning.hi],
            channels: stats.channels.iter().map(|c| c.summary()).collect(),
            classes: class_counts(rows),
        }
    }
}

/// ImageFolder layout: when every `ok` image lies inside a top-level folder,
/// that folder is its class and the result counts `ok` images per class.
/// `None` when some `ok` image sits directly in the input folder, or none is
/// `ok`.
pub fn class_counts(rows: &[Record]) -> Option<BTreeMap<String, u64>> {
    let mut classes = BTreeMap::new();
    for r in rows.iter().filter(|r| r.status == Status::Ok) {
        let (class, _) = r.path.split_once('/')?;
        *classes.entry(class.to_string()).or_insert(0) += 1;
    }
    (!classes.is_empty()).then_some(classes)
}

/// One or two human lines about the `"dataset"` section of the `stats.json`
/// in `out` (printed before the JSON summary); `None` if it cannot be read.
pub fn dataset_lines(out: &Path) -> Option<String> {
    let text = std::fs::read_to_string(out.join(STATS)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let d = v.get("dataset")?;
    let channels = d.get("channels")?.as_array()?;
    let list = |key: &str| {
        channels
            .iter()
            .map(|c| format!("{:.4}", c.get(key).and_then(|x| x.as_f64()).unwrap_or(0.0)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = format!(
        "dataset: {} images, {} channels, mean [{}], std [{}]",
        d.get("images")?.as_u64()?,
        channels.len(),
        list("mean"),
        list("std")
    );
    if let Some(classes) = d.get("classes").and_then(|c| c.as_object()) {
        let parts: Vec<String> = classes
            .iter()
            .map(|(k, n)| format!("{k} {}", n.as_u64().unwrap_or(0)))
            .collect();
        s.push_str(&format!(
            "\nclasses ({}): {}",
            parts.len(),
            parts.join(", ")
        ));
    }
    Some(s)
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0 * 10.0).round() / 10.0)
}

/// Stage times in seconds.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct StageSeconds {
    /// Reading input files.
    pub read: f64,
    /// Decoding.
    pub decode: f64,
    /// Channel conversion and scaling.
    pub scale: f64,
    /// Checksum and writing.
    pub write: f64,
}

impl From<StageTimes> for StageSeconds {
    fn from(t: StageTimes) -> Self {
        StageSeconds {
            read: t.read.as_secs_f64(),
            decode: t.decode.as_secs_f64(),
            scale: t.scale.as_secs_f64(),
            write: t.write.as_secs_f64(),
        }
    }
}

/// Writes `stats.json`.
pub fn write_stats(out: &Path, stats: &Stats<'_>) -> Result<(), OutputError> {
    let mut buf = serde_json::to_vec_pretty(stats).unwrap_or_default();
    buf.push(b'\n');
    write_file(out, STATS, &buf)
}

/// Writes a file in the output folder atomically.
///
/// When `out` is an `s3://` prefix the file is one PUT of the whole content
/// (atomic too). Call from synchronous code only: it waits for the upload.
pub fn write_file(out: &Path, name: &str, bytes: &[u8]) -> Result<(), OutputError> {
    if crate::storage::is_object_url(out) {
        return write_object(out, name, bytes);
    }
    let path = out.join(name);
    write_atomic(&path, bytes, ".tmp").map_err(|source| OutputError {
        path: path.display().to_string(),
        source,
    })
}

fn write_object(out: &Path, name: &str, bytes: &[u8]) -> Result<(), OutputError> {
    use crate::storage::{self, Location, Store};
    let err = |e: storage::StorageError| OutputError {
        path: format!("{}/{name}", out.display()),
        source: std::io::Error::other(storage::chain(&e)),
    };
    let url = match Location::of(out).map_err(err)? {
        Location::S3(u) => u,
        Location::Local(p) => return write_file(&p, name, bytes),
    };
    let store = Store::open(&url).map_err(err)?;
    let (name, bytes) = (name.to_string(), bytes::Bytes::copy_from_slice(bytes));
    storage::block_on(async move { store.put(&name, bytes).await })
        .map_err(err)?
        .map_err(err)
}

/// The final JSON line every run prints on stdout.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize)]
pub struct Summary {
    /// Every input file.
    pub images: u64,
    /// Status ok.
    pub ok: u64,
    /// Status failed.
    pub failed: u64,
    /// Status skipped.
    pub skipped: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// `images / seconds`.
    pub images_per_s: f64,
    /// With `--autoscale`: the sum of every worker's lifetime, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_seconds: Option<f64>,
    /// A rerun into an earlier run's output: what was kept, processed and
    /// deleted (see docs/FORMAT.md, "Rerunning").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun: Option<imgnorm_core::rerun::RerunSummary>,
}

impl Summary {
    /// A summary of `counts` over `elapsed`.
    pub fn new(counts: Counts, elapsed: Duration) -> Summary {
        let seconds = elapsed.as_secs_f64();
        Summary {
            images: counts.images,
            ok: counts.ok,
            failed: counts.failed,
            skipped: counts.skipped,
            seconds: round3(seconds),
            images_per_s: round3(if seconds > 0.0 {
                counts.images as f64 / seconds
            } else {
                0.0
            }),
            worker_seconds: None,
            rerun: None,
        }
    }

    /// The human line printed before the JSON.
    pub fn human(&self, out: &Path) -> String {
        format!(
            "{} files in {:.2}s ({:.1} images/s): {} ok, {} failed, {} skipped -> {}",
            self.images,
            self.seconds,
            self.images_per_s,
            self.ok,
            self.failed,
            self.skipped,
            out.display()
        )
    }

    /// The JSON line.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Rounds to milliseconds for display.
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
