//! The single-thread baseline: discover, then process every file in order on
//! the calling thread, then write the manifest and statistics. Every other mode
//! must produce the same dataset as this one.
use std::path::{Path, PathBuf};
use std::time::Instant;

use imgnorm_core::dataset::{DatasetParams, ParamsFold};
use imgnorm_core::options::EngineOptions;
use imgnorm_core::record::{Record, Status};
use imgnorm_core::stats::DatasetStats;

use crate::discovery::{DiscoveryError, discover};
use crate::engine::Engine;
use crate::output::{self, DatasetSection, Normalization, OutputError, Stats, Summary};
use crate::progress::Progress;

/// A centralized run failed as a whole (per-image problems are not errors).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The input could not be listed.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The output folder could not be created.
    #[error("cannot create output folder {path}: {source}")]
    CreateOutput {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing manifest or stats failed.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// Preparing or completing the output layout (`--format`) failed.
    #[error(transparent)]
    Format(#[from] crate::formats::FormatError),
}

/// Creates the output folder.
pub fn create_output(out: &Path) -> Result<(), RunError> {
    std::fs::create_dir_all(out).map_err(|source| RunError::CreateOutput {
        path: out.to_path_buf(),
        source,
    })
}

/// Runs the whole job on this thread and returns the summary.
pub fn run(
    input: &Path,
    out: &Path,
    opts: &EngineOptions,
    quiet: bool,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    create_output(out)?;
    let found = discover(input, Some(out))?;
    crate::formats::prepare(out, opts, &found.files)?;
    let mut progress = Progress::new(found.total(), quiet);
    for _ in &found.problems {
        progress.inc(false);
    }
    let mut engine = Engine::new(opts.clone());
    let (params, mut early) = statistics_phase(&mut engine, input, &found.files);
    engine.set_params(params.clone());
    let mut rows = Vec::with_capacity(found.files.len());
    // Files are in sorted path order: the fold order every mode uses.
    let mut dataset = DatasetStats::new(params.output_range(opts));
    for (index, rel) in (0u64..).zip(&found.files) {
        // Not ok in the statistics phase: that row is final.
        if let Some(r) = usize::try_from(index)
            .ok()
            .and_then(|i| early.get_mut(i))
            .and_then(Option::take)
        {
            progress.inc(r.status == Status::Failed);
            rows.push(r);
            continue;
        }
        let r = engine.process_file_at(input, rel, index, out);
        if let Some(s) = engine.take_stats() {
            dataset.add(&s);
        }
        progress.inc(r.status == Status::Failed);
        rows.push(r);
    }
    progress.finish();
    crate::formats::finish(out, opts, &found.files, &mut rows)?;
    let rows = output::merge_sorted(rows, found.problems);
    let counts = output::write_manifest(out, &rows)?;
    let elapsed = started.elapsed();
    let summary = Summary::new(counts, elapsed);
    output::write_stats(
        out,
        &Stats {
            tool: "imgnorm",
            version: env!("CARGO_PKG_VERSION"),
            mode: "centralized",
            input: input.display().to_string(),
            counts,
            options: opts,
            workers: 0,
            elapsed_s: summary.seconds,
            images_per_s: summary.images_per_s,
            stage_seconds: engine.times().into(),
            peak_rss_mib: output::peak_rss_mib(),
            dataset: DatasetSection::new(&dataset, &rows),
            normalization: Normalization::new(opts, &params),
        },
    )?;
    Ok(summary)
}

/// The statistics phase of a two-phase job (see
/// [`imgnorm_core::dataset`]): every file decoded once and measured, in path
/// order. Returns the parameters and, per file, its final row when it is not
/// `ok` (such files are not processed again). Jobs that need no statistics
/// get their parameters from the options and no rows.
pub fn statistics_phase(
    engine: &mut Engine,
    input: &Path,
    files: &[String],
) -> (DatasetParams, Vec<Option<Record>>) {
    let opts = engine.options().clone();
    if !opts.two_phase() {
        return (DatasetParams::from_options(&opts), Vec::new());
    }
    let mut fold = ParamsFold::new(&opts);
    let mut early = Vec::with_capacity(files.len());
    for (i, rel) in files.iter().enumerate() {
        let r = engine.stats_file(input, rel);
        fold.settle(i as u64, engine.take_raw());
        early.push((r.status != Status::Ok).then_some(r));
    }
    (fold.finish(), early)
}
