//! Reruns into an output folder that already holds something: the I/O edge
//! around [`imgnorm_core::rerun`]. Before a job touches its output, the job's
//! owner (the centralized run, or the master setting up a job) calls
//! [`setup`], which
//!
//! * accepts an empty folder (no files; folders alone are fine) as is;
//! * refuses a folder holding files imgnorm does not write, a folder with
//!   no finished run (no manifest or `stats.json`: a killed run), and a
//!   finished run made with other options (naming each difference), unless
//!   `--overwrite`, which deletes everything in the folder first;
//! * with the same options, keeps every row whose input is unchanged (same
//!   size and modification time as recorded in [`INPUTS`]) and, for an `ok`
//!   row, whose output file still has the manifest's checksum (one read of
//!   the file, which also recovers the image's statistics for `stats.json`,
//!   see [`imgnorm_core::rerun::stats_from_array`]); everything else is
//!   processed again;
//! * deletes the old output of a file about to be processed again (a file
//!   that fails now leaves no stale array), and with `--prune` every array
//!   no file of the job writes (inputs that left, now or in an earlier
//!   rerun without `--prune`).
//!
//! Options whose outputs depend on the whole dataset (`--scope dataset`,
//! `--scope full`, `--standardize`) or that pack images into shared files
//! (`--format webdataset|stack`) keep nothing: the folder is emptied and
//! everything is processed again, which gives the bytes of a clean run.
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use imgnorm_core::options::{EngineOptions, OutputFormat, Scope};
use imgnorm_core::record::{Record, Status};
use imgnorm_core::rerun::{
    Decision, Earlier, InputStamp, Listed, RerunCounts, RerunFlags, RerunSummary, Why, plan,
    stats_from_array,
};
use imgnorm_core::stats::ImageStats;
use serde::{Deserialize, Serialize};

use crate::claim::OutputClaim;
use crate::discovery::Discovered;
use crate::formats;
use crate::output::{MANIFEST, PROVENANCE, STATS};

/// Name of the file recording each input's size and modification time
/// when it was listed (one JSON line per file, sorted by path), so that a
/// rerun can tell unchanged inputs from changed ones.
pub const INPUTS: &str = ".imgnorm-inputs.jsonl";

/// Why an output folder cannot be used as it is.
#[derive(Debug, thiserror::Error)]
pub enum RerunError {
    /// Files imgnorm does not write.
    #[error(
        "output {out} holds {count} file(s) imgnorm did not write (e.g. {example}): choose an empty folder, or pass --overwrite to delete everything in it"
    )]
    Foreign {
        /// The output folder.
        out: PathBuf,
        /// How many such files.
        count: usize,
        /// One of them, relative to the folder.
        example: String,
    },
    /// Not empty, and no finished run.
    #[error(
        "output {out} is not empty but holds no finished imgnorm run (no {missing}; a run that was killed?): pass --overwrite to delete everything in it and start afresh, or choose an empty folder"
    )]
    Unfinished {
        /// The output folder.
        out: PathBuf,
        /// The file that is missing.
        missing: &'static str,
    },
    /// A finished run with other options.
    #[error(
        "output {out} holds a run made with other options ({differences}): pass --overwrite to replace it (everything in the folder is deleted first), or choose another output"
    )]
    OptionsDiffer {
        /// The output folder.
        out: PathBuf,
        /// `name: earlier -> now`, comma-separated.
        differences: String,
    },
    /// The earlier run's metadata cannot be read.
    #[error("cannot read {path}: {reason} (pass --overwrite to replace the output)")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `--retry-failed` into a folder with no earlier run.
    #[error("--retry-failed: output {out} holds no earlier run to retry")]
    NothingToRetry {
        /// The output folder.
        out: PathBuf,
    },
    /// `--overwrite` would delete the input.
    #[error("--overwrite would delete the input: {input} lies inside the output {out}")]
    InputInside {
        /// The input folder.
        input: PathBuf,
        /// The output folder.
        out: PathBuf,
    },
    /// A file or folder could not be read or deleted.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// An earlier row kept as it is.
#[derive(Debug, Clone)]
pub struct Kept {
    /// The row.
    pub record: Record,
    /// Its output statistics (`ok` rows), read back from its array.
    pub stats: Option<ImageStats>,
}

/// What a job does with its output, decided by [`setup`].
#[derive(Debug, Default)]
pub struct Setup {
    /// The job's files, sorted by path (today's listing, less the files
    /// `--retry-failed` leaves out).
    pub files: Vec<String>,
    /// Discovery's own rows.
    pub problems: Vec<Record>,
    /// Per file: its kept row, or `None` when it is processed.
    pub kept: Vec<Option<Kept>>,
    /// Per file: the stamp [`INPUTS`] records for it.
    pub stamps: Vec<Option<InputStamp>>,
    /// What the rerun did, `None` for a job into an empty folder.
    pub report: Option<Report>,
}

impl Setup {
    /// Files to process (not kept).
    pub fn pending(&self) -> usize {
        self.kept.iter().filter(|k| k.is_none()).count()
    }
}

/// What a rerun kept, processed and deleted; finished into the summary by
/// [`Report::summary`].
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The plan's counts.
    pub counts: RerunCounts,
    /// Kept `ok` rows whose output was missing or damaged (or whose
    /// statistics cannot be read back): processed again.
    pub repaired: u64,
    /// Outputs of files that left the input, deleted (`--prune`).
    pub pruned: u64,
    /// Outputs of files that left the input, left in place (no `--prune`).
    pub left: u64,
    /// Paths retried (`--retry-failed`), sorted.
    pub retried: Vec<String>,
    /// Why nothing was kept, when the options keep nothing.
    pub redo_all: Option<String>,
}

impl Report {
    /// The summary fields, given the job's final rows (sorted by path).
    pub fn summary(&self, rows: &[Record]) -> RerunSummary {
        let recovered = self
            .retried
            .iter()
            .filter(|p| {
                rows.binary_search_by(|r| r.path.as_str().cmp(p))
                    .is_ok_and(|i| rows[i].status == Status::Ok)
            })
            .count() as u64;
        RerunSummary {
            kept: self.counts.kept - self.repaired,
            new: self.counts.new,
            changed: self.counts.changed,
            retried: self.counts.retried,
            recovered,
            repaired: self.repaired,
            gone: self.counts.gone,
            pruned: self.pruned,
            not_added: self.counts.not_added,
        }
    }

    /// Lines for the user (stderr) about what was not done.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if let Some(why) = &self.redo_all {
            w.push(format!("rerun: {why}: every image is processed again"));
        }
        if self.left > 0 {
            w.push(format!(
                "rerun: {} input(s) left the input folder; their outputs stay in the output folder (pass --prune to delete them)",
                self.left
            ));
        }
        if self.counts.not_added > 0 {
            w.push(format!(
                "rerun: --retry-failed leaves out {} file(s) new to the input (run without --retry-failed to add them)",
                self.counts.not_added
            ));
        }
        if self.counts.stale > 0 {
            w.push(format!(
                "rerun: --retry-failed keeps {} row(s) whose input changed since (run without --retry-failed to process them)",
                self.counts.stale
            ));
        }
        w
    }
}

/// Why options keep nothing from an earlier run, or `None` when they do.
pub fn keeps_nothing(opts: &EngineOptions) -> Option<String> {
    if opts.dry_run {
        return Some("--dry-run writes no arrays".into());
    }
    if !matches!(opts.scope, Scope::Image | Scope::Channel) || opts.standardize.is_some() {
        return Some(
            "--scope dataset|full and --standardize map every image through statistics of the whole dataset".into(),
        );
    }
    match opts.format {
        OutputFormat::Npy => None,
        OutputFormat::Webdataset { .. } | OutputFormat::Stack => Some(
            "--format webdataset and --format stack pack every image into files shared with the others".into(),
        ),
    }
}

/// Decides what a job does with the output `claim` holds (see the module
/// docs); deletes what must go before any image is processed. `found` is
/// the listing of `input`.
pub fn setup(
    claim: &OutputClaim,
    input: &Path,
    opts: &EngineOptions,
    flags: RerunFlags,
    found: Discovered,
) -> Result<Setup, RerunError> {
    let out = claim.path();
    let fresh = |found: Discovered, report: Option<Report>| {
        let stamps = found.files.iter().map(|f| stamp(&input.join(f))).collect();
        Setup {
            kept: vec![None; found.files.len()],
            files: found.files,
            problems: found.problems,
            stamps,
            report,
        }
    };
    if is_empty(out)? {
        if flags.retry_failed {
            return Err(RerunError::NothingToRetry {
                out: out.to_path_buf(),
            });
        }
        return Ok(fresh(found, None));
    }
    if flags.overwrite {
        clear(out, input)?;
        return Ok(fresh(found, None));
    }
    check_ours(out)?;
    let earlier_opts = read_options(out)?;
    let differences = differences(&earlier_opts, opts);
    if !differences.is_empty() {
        return Err(RerunError::OptionsDiffer {
            out: out.to_path_buf(),
            differences: differences.join(", "),
        });
    }
    if let Some(why) = keeps_nothing(opts) {
        clear(out, input)?;
        let report = Report {
            counts: RerunCounts {
                new: found.files.len() as u64,
                ..RerunCounts::default()
            },
            redo_all: Some(why),
            ..Report::default()
        };
        return Ok(fresh(found, Some(report)));
    }
    let earlier = read_earlier(out)?;
    let listed: Vec<Listed> = found
        .files
        .iter()
        .map(|f| Listed {
            path: f.clone(),
            stamp: stamp(&input.join(f)),
        })
        .collect();
    let problems: Vec<&str> = found.problems.iter().map(|p| p.path.as_str()).collect();
    let plan = plan(&earlier, &listed, &problems, flags.mode());
    let mut report = Report {
        counts: plan.counts,
        ..Report::default()
    };
    let mut setup = Setup {
        problems: found.problems.clone(),
        report: None,
        ..Setup::default()
    };
    for (file, decision) in listed.into_iter().zip(&plan.decisions) {
        let kept = match *decision {
            Decision::Leave => continue,
            Decision::Keep(i) => {
                let e = &earlier[i];
                match keep(out, &e.record, opts)? {
                    Some(k) => Some((k, e.stamp)),
                    None => {
                        report.repaired += 1;
                        None
                    }
                }
            }
            Decision::Process(why) => {
                if let Some(e) = earlier_row(&earlier, &file.path) {
                    remove_output(out, &e.record)?;
                }
                if why == Why::Retry {
                    report.retried.push(file.path.clone());
                }
                None
            }
        };
        setup.files.push(file.path);
        match kept {
            Some((k, s)) => {
                setup.kept.push(Some(k));
                // A row kept by --retry-failed keeps its earlier stamp, so
                // the next ordinary rerun still sees the change.
                setup.stamps.push(s);
            }
            None => {
                setup.kept.push(None);
                setup.stamps.push(file.stamp);
            }
        }
    }
    if flags.prune {
        report.pruned = prune(out, &setup.files)?;
    } else {
        report.left = plan
            .gone
            .iter()
            .filter(|&&i| output_of(&earlier[i].record).is_some())
            .count() as u64;
    }
    setup.report = Some(report);
    Ok(setup)
}

/// `--prune`: deletes every array in the `npy` tree under `out` that no file
/// of the job (`files`) writes: the arrays of inputs that left, whether they
/// left now or in an earlier rerun without `--prune`. Returns how many.
fn prune(out: &Path, files: &[String]) -> Result<u64, RerunError> {
    let wanted: std::collections::HashSet<String> =
        files.iter().map(|f| format!("{f}.npy")).collect();
    let mut pruned = 0;
    let walker = walkdir::WalkDir::new(out)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !(e.depth() == 1 && e.file_name() == formats::STAGING));
    for e in walker.filter_map(Result::ok) {
        if !e.file_type().is_file() || !e.file_name().to_string_lossy().ends_with(".npy") {
            continue;
        }
        let Ok(rel) = e.path().strip_prefix(out) else {
            continue;
        };
        let rel = rel
            .to_string_lossy()
            .replace(std::path::MAIN_SEPARATOR, "/");
        if wanted.contains(&rel) {
            continue;
        }
        std::fs::remove_file(e.path()).map_err(|source| RerunError::Io {
            path: e.path().to_path_buf(),
            source,
        })?;
        pruned += 1;
    }
    Ok(pruned)
}

fn earlier_row<'a>(earlier: &'a [Earlier], path: &str) -> Option<&'a Earlier> {
    earlier
        .binary_search_by(|e| e.record.path.as_str().cmp(path))
        .ok()
        .map(|i| &earlier[i])
}

/// An earlier row kept: `ok` rows only when their output has the row's
/// checksum and their statistics can be read back (else `None`: processed
/// again, the damaged output removed first).
fn keep(out: &Path, row: &Record, opts: &EngineOptions) -> Result<Option<Kept>, RerunError> {
    if row.status != Status::Ok {
        return Ok(Some(Kept {
            record: row.clone(),
            stats: None,
        }));
    }
    let Some(rel) = output_of(row) else {
        return Ok(None);
    };
    let path = out.join(rel);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(RerunError::Io { path, source }),
    };
    let sum = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes));
    let stats = (row.checksum.as_deref() == Some(sum.as_str()))
        .then(|| stats_from_array(row, &bytes[formats::npy_data_offset(&bytes)..], opts))
        .flatten();
    match stats {
        Some(stats) => Ok(Some(Kept {
            record: row.clone(),
            stats: Some(stats),
        })),
        None => {
            remove_output(out, row)?;
            Ok(None)
        }
    }
}

/// The output file of an `ok` row, when it is a plain relative path.
fn output_of(row: &Record) -> Option<&str> {
    let rel = row.output.as_deref().filter(|_| row.status == Status::Ok)?;
    Path::new(rel)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then_some(rel)
}

fn remove_output(out: &Path, row: &Record) -> Result<(), RerunError> {
    let Some(rel) = output_of(row) else {
        return Ok(());
    };
    let path = out.join(rel);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(RerunError::Io { path, source: e })
        }
        _ => Ok(()),
    }
}

/// The stamp of the file at `path` (symlinks followed, as discovery does).
pub fn stamp(path: &Path) -> Option<InputStamp> {
    let m = std::fs::metadata(path).ok()?;
    let t = m.modified().ok()?;
    let mtime_ns = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).ok()?,
        Err(e) => -i64::try_from(e.duration().as_nanos()).ok()?,
    };
    Some(InputStamp {
        size: m.len(),
        mtime_ns,
    })
}

/// One line of [`INPUTS`].
#[derive(Serialize, Deserialize)]
struct InputLine {
    path: String,
    size: u64,
    mtime_ns: i64,
}

/// Writes [`INPUTS`] for `files` (sorted) and their stamps; files without
/// a stamp get no line.
pub fn write_inputs(
    out: &Path,
    files: &[String],
    stamps: &[Option<InputStamp>],
) -> Result<(), crate::output::OutputError> {
    let mut buf = Vec::with_capacity(files.len() * 64);
    for (path, s) in files.iter().zip(stamps) {
        let Some(s) = s else { continue };
        let line = InputLine {
            path: path.clone(),
            size: s.size,
            mtime_ns: s.mtime_ns,
        };
        if serde_json::to_writer(&mut buf, &line).is_ok() {
            buf.push(b'\n');
        }
    }
    crate::output::write_file(out, INPUTS, &buf)
}

/// Whether `out` holds no file (folders alone, as a user may create them
/// beforehand, do not count).
fn is_empty(out: &Path) -> Result<bool, RerunError> {
    for e in walkdir::WalkDir::new(out).min_depth(1) {
        let e = e.map_err(|e| RerunError::Io {
            path: e.path().unwrap_or(out).to_path_buf(),
            source: e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("folder loop")),
        })?;
        if !e.file_type().is_dir() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Deletes everything in `out` (not `out` itself: its lock is held).
fn clear(out: &Path, input: &Path) -> Result<(), RerunError> {
    if let (Ok(i), Ok(o)) = (input.canonicalize(), out.canonicalize())
        && i.starts_with(&o)
    {
        return Err(RerunError::InputInside {
            input: input.to_path_buf(),
            out: out.to_path_buf(),
        });
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RerunError::Io { path, source }
    };
    for entry in std::fs::read_dir(out).map_err(io(out))? {
        let entry = entry.map_err(io(out))?;
        let path = entry.path();
        let is_dir = entry.file_type().map_err(io(&path))?.is_dir();
        if is_dir {
            std::fs::remove_dir_all(&path).map_err(io(&path))?;
        } else {
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// Refuses a folder with files imgnorm does not write, or with no
/// finished run.
fn check_ours(out: &Path) -> Result<(), RerunError> {
    let mut count = 0;
    let mut example = None;
    let walker = walkdir::WalkDir::new(out)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !(e.depth() == 1 && e.file_name() == formats::STAGING));
    for e in walker {
        let e = e.map_err(|e| RerunError::Io {
            path: e.path().unwrap_or(out).to_path_buf(),
            source: e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("folder loop")),
        })?;
        if e.file_type().is_dir() {
            continue;
        }
        let rel = e.path().strip_prefix(out).unwrap_or(e.path());
        if !is_ours(rel, e.depth()) {
            count += 1;
            example.get_or_insert_with(|| rel.display().to_string());
        }
    }
    if let Some(example) = example {
        return Err(RerunError::Foreign {
            out: out.to_path_buf(),
            count,
            example,
        });
    }
    for name in [MANIFEST, STATS] {
        if !out.join(name).is_file() {
            return Err(RerunError::Unfinished {
                out: out.to_path_buf(),
                missing: name,
            });
        }
    }
    Ok(())
}

/// Whether `rel` (at `depth` in the output) is a name imgnorm writes, in any
/// format.
fn is_ours(rel: &Path, depth: usize) -> bool {
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let name: &str = &name;
    if crate::output::is_temp_name(name) || name.ends_with(".npy") {
        return true;
    }
    depth == 1
        && ([MANIFEST, STATS, PROVENANCE, INPUTS].contains(&name)
            || [
                formats::STACK_PARTIAL,
                formats::CLASSES,
                formats::PATHS,
                formats::LABELS,
                formats::VALID,
            ]
            .contains(&name)
            || (name.starts_with("shard-") && name.ends_with(".tar")))
}

fn read_options(out: &Path) -> Result<serde_json::Value, RerunError> {
    let path = out.join(STATS);
    let unreadable = |reason: String| RerunError::Unreadable {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| unreadable(e.to_string()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
    v.get("options")
        .cloned()
        .ok_or_else(|| unreadable("no \"options\"".into()))
}

/// `name: earlier -> now` for every option that differs. The earlier
/// options are read back as [`EngineOptions`] first when they parse, so a
/// field an older version did not write compares as its default.
fn differences(earlier: &serde_json::Value, opts: &EngineOptions) -> Vec<String> {
    let earlier = serde_json::from_value::<EngineOptions>(earlier.clone())
        .ok()
        .and_then(|o| serde_json::to_value(o).ok())
        .unwrap_or_else(|| earlier.clone());
    let earlier = &earlier;
    let now = serde_json::to_value(opts).unwrap_or_default();
    let empty = serde_json::Map::new();
    let (a, b) = (
        earlier.as_object().unwrap_or(&empty),
        now.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let show = |v: Option<&serde_json::Value>| v.map_or("(none)".to_string(), |v| v.to_string());
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: {} -> {}", show(a.get(k)), show(b.get(k))))
        .collect()
}

/// The earlier manifest's rows with their stamps from [`INPUTS`] (none when
/// that file is missing: every file then counts as changed).
fn read_earlier(out: &Path) -> Result<Vec<Earlier>, RerunError> {
    let path = out.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|e| RerunError::Unreadable {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let mut stamps = HashMap::new();
    if let Ok(inputs) = std::fs::read_to_string(out.join(INPUTS)) {
        for line in inputs.lines().filter(|l| !l.is_empty()) {
            if let Ok(l) = serde_json::from_str::<InputLine>(line) {
                stamps.insert(
                    l.path,
                    InputStamp {
                        size: l.size,
                        mtime_ns: l.mtime_ns,
                    },
                );
            }
        }
    }
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let record: Record = serde_json::from_str(line).map_err(|e| RerunError::Unreadable {
            path: path.clone(),
            reason: format!("line {}: {e}", n + 1),
        })?;
        let stamp = stamps.get(&record.path).copied();
        rows.push(Earlier { record, stamp });
    }
    rows.sort_by(|a, b| a.record.path.cmp(&b.record.path));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgnorm_core::options::Dtype;

    #[test]
    fn differences_name_each_option_and_take_missing_fields_as_defaults() {
        let opts = EngineOptions::default();
        let mut older = serde_json::to_value(&opts).expect("json");
        // A field an older version did not write yet.
        older
            .as_object_mut()
            .expect("object")
            .remove("max_input_bytes");
        assert!(differences(&older, &opts).is_empty());
        let f16 = EngineOptions {
            dtype: Dtype::F16,
            ..EngineOptions::default()
        };
        assert_eq!(differences(&older, &f16), ["dtype: \"f32\" -> \"f16\""]);
    }

    #[test]
    fn only_names_imgnorm_writes_are_its_own() {
        for (rel, depth) in [
            ("manifest.jsonl", 1),
            (".imgnorm-inputs.jsonl", 1),
            ("a/b/x.png.npy", 3),
            ("shard-000003.tar", 1),
            ("a/.1.f43c798f04240a67.12.tmp", 2),
        ] {
            assert!(is_ours(Path::new(rel), depth), "{rel}");
        }
        for (rel, depth) in [
            ("notes.txt", 1),
            ("a/manifest.jsonl", 2),
            ("a/shard-1.tar", 2),
        ] {
            assert!(!is_ours(Path::new(rel), depth), "{rel}");
        }
    }
}
