//! Finishing a dataset, the one way every mode does it: complete the output
//! layout (shards, stack), sweep temporary files left by killed writers,
//! write the manifest (results merged with discovery problems), the
//! provenance file when there is one, and `stats.json`. The centralized run
//! and the master both call [`finish`]; only what they pass differs.
use std::path::Path;
use std::time::{Duration, Instant};

use imgnorm_core::dataset::DatasetParams;
use imgnorm_core::options::EngineOptions;
use imgnorm_core::record::Record;
use imgnorm_core::rerun::InputStamp;
use imgnorm_core::stats::DatasetStats;

use crate::formats::FormatError;
use crate::output::{
    self, DatasetSection, Normalization, OutputError, StageSeconds, Stats, Summary,
};

/// Finishing a dataset failed.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    /// Completing the output layout (`--format`) failed.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Writing the manifest, provenance or statistics failed.
    #[error(transparent)]
    Output(#[from] OutputError),
}

/// How long the job took, for the summary and `stats.json`.
#[derive(Debug, Clone, Copy)]
pub enum Elapsed {
    /// Measured when the manifest is written, from this start.
    Since(Instant),
    /// Measured by the caller already.
    Fixed(Duration),
}

/// Everything a finished job writes its dataset from, except the rows.
#[derive(Debug)]
pub struct Job<'a> {
    /// The input folder or prefix, as `stats.json` names it.
    pub input: &'a Path,
    /// The output folder.
    pub out: &'a Path,
    /// The job's options.
    pub options: &'a EngineOptions,
    /// The job's files in path order, when the output layout (shards,
    /// stack) is to be completed here; `None` when there is nothing to
    /// complete (object-store runs write `.npy` files only).
    pub layout: Option<&'a [String]>,
    /// `stats.json`'s `mode`.
    pub mode: &'static str,
    /// Workers that took part (0 in the centralized run).
    pub workers: usize,
    /// How long the job took.
    pub elapsed: Elapsed,
    /// Time per stage (zero where the stages ran elsewhere).
    pub stage_seconds: StageSeconds,
    /// Statistics of the outputs, folded in path order.
    pub dataset: &'a DatasetStats,
    /// The dataset parameters the job normalized with.
    pub params: &'a DatasetParams,
    /// One JSON line per image saying who produced it, written to
    /// [`output::PROVENANCE`]; `None` writes no such file (and removes
    /// one an earlier run left).
    pub provenance: Option<&'a [String]>,
    /// The job's files (sorted) and the stamps [`crate::rerun::INPUTS`]
    /// records for them; `None` writes no such file.
    pub inputs: Option<(&'a [String], &'a [Option<InputStamp>])>,
    /// What a rerun kept and processed, for the summary.
    pub rerun: Option<&'a crate::rerun::Report>,
}

/// Writes the dataset of a finished job: `rows` are the per-image results
/// (any order), `problems` the files discovery refused. Returns the summary.
pub fn finish(
    job: &Job<'_>,
    mut rows: Vec<Record>,
    problems: Vec<Record>,
) -> Result<Summary, FinishError> {
    if let Some(files) = job.layout {
        crate::formats::finish(job.out, job.options, files, &mut rows)?;
    }
    // Leftovers of writers that were killed (an earlier run into the same
    // folder, or a reaped worker).
    let swept = output::sweep_temp_files(job.out);
    if swept > 0 {
        tracing::info!(
            files = swept,
            "removed temporary files left by killed writers"
        );
    }
    let rows = output::merge_sorted(rows, problems);
    let counts = output::write_manifest(job.out, &rows)?;
    if let Some(lines) = job.provenance {
        let mut p = lines.join("\n");
        if !p.is_empty() {
            p.push('\n');
        }
        output::write_file(job.out, output::PROVENANCE, p.as_bytes())?;
    } else if !crate::storage::is_object_url(job.out) {
        // A distributed run's record in a folder a centralized run now
        // rewrites: it no longer says who made these outputs.
        match std::fs::remove_file(job.out.join(output::PROVENANCE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(output::OutputError {
                    path: job.out.join(output::PROVENANCE).display().to_string(),
                    source: e,
                }
                .into());
            }
            _ => {}
        }
    }
    if let Some((files, stamps)) = job.inputs {
        crate::rerun::write_inputs(job.out, files, stamps)?;
    }
    let elapsed = match job.elapsed {
        Elapsed::Since(started) => started.elapsed(),
        Elapsed::Fixed(d) => d,
    };
    let mut summary = Summary::new(counts, elapsed);
    summary.rerun = job.rerun.map(|r| r.summary(&rows));
    output::write_stats(
        job.out,
        &Stats {
            tool: "imgnorm",
            version: env!("CARGO_PKG_VERSION"),
            mode: job.mode,
            input: job.input.display().to_string(),
            counts,
            options: job.options,
            workers: job.workers,
            elapsed_s: summary.seconds,
            images_per_s: summary.images_per_s,
            stage_seconds: job.stage_seconds,
            peak_rss_mib: output::peak_rss_mib(),
            dataset: DatasetSection::new(job.dataset, &rows),
            normalization: Normalization::new(job.options, job.params),
        },
    )?;
    Ok(summary)
}
