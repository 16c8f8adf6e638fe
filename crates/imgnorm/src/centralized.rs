//! The single-thread baseline: discover, then process every file in order on
//! the calling thread, then write the manifest and statistics. Every other mode
//! must produce the same dataset as this one.
use std::path::{Path, PathBuf};
use std::time::Instant;

use imgnorm_core::options::EngineOptions;
use imgnorm_core::record::Status;
use imgnorm_core::stats::DatasetStats;

use crate::discovery::{DiscoveryError, discover};
use crate::engine::Engine;
use crate::output::{self, DatasetSection, OutputError, Stats, Summary};
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
    let mut rows = Vec::with_capacity(found.files.len());
    // Files are in sorted path order: the fold order every mode uses.
    let mut dataset = DatasetStats::new(opts.range);
    for (index, rel) in (0u64..).zip(&found.files) {
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
        },
    )?;
    Ok(summary)
}
