//! Finishing a dataset, the one way every mode does it: complete the output
//! layout (shards, stack), sweep temporary files left by killed writers,
//! write the manifest (results merged with discovery problems), the
//! provenance file when there is one, and `stats.json`. The centralized run
//! and the master both call [`finish`]; only what they pass differs.
use std::path::Path;
use std::time::{Duration, Instant};

use imgnorm_core::dataset::DatasetParams;
use imgnorm_core::jobs::RowStore;
use imgnorm_core::options::EngineOptions;
use imgnorm_core::pathlist::PathList;
use imgnorm_core::record::Record;
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
    /// The job's rows could not be read back from where they were kept.
    #[error("{0}")]
    Rows(String),
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
    /// Write [`output::PROVENANCE`] from the rows' provenance (rows from a
    /// [`RowStore`] only).
    pub provenance: bool,
}

/// The per-image rows of a finished job, in index (= path) order.
pub enum JobRows<'a> {
    /// In memory.
    Vec(Vec<Record>),
    /// Kept by a store (the master's, on disk), read back while the
    /// manifest and provenance are written; `files[i]` names item `i`.
    Store {
        /// The rows.
        rows: &'a dyn RowStore,
        /// The job's files.
        files: &'a PathList,
    },
}

/// Writes `provenance.jsonl`: one JSON object per image a worker produced,
/// in index order, its keys sorted.
fn write_provenance(out: &Path, rows: &dyn RowStore, files: &PathList) -> Result<(), FinishError> {
    output::write_streamed(out, output::PROVENANCE, |w| {
        for r in rows.rows() {
            let (i, _, p) = r.map_err(std::io::Error::other)?;
            let Some(p) = p else { continue };
            let path = usize::try_from(i).ok().and_then(|i| files.get(i));
            let path = path.as_deref();
            let line = serde_json::json!({"path": path, "worker": p.worker, "worker_id": p.worker_id, "lease": p.lease, "attempt": p.attempt});
            serde_json::to_writer(&mut *w, &line).map_err(std::io::Error::other)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Every row of `rows`, in index order, in memory (for the layouts that
/// complete from them: shards, stack).
fn read_all(rows: &dyn RowStore) -> Result<Vec<Record>, FinishError> {
    rows.rows()
        .map(|r| r.map(|(_, r, _)| r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(FinishError::Rows)
}

/// Writes the dataset of a finished job: `rows` are the per-image results
/// in path order, `problems` the files discovery refused, also in path
/// order. The manifest and provenance are written as the rows are read:
/// from a store, no more than a window of rows is in memory at once
/// (except for the layouts that complete from every row). Returns the
/// summary.
pub fn finish(
    job: &Job<'_>,
    rows: JobRows<'_>,
    problems: Vec<Record>,
) -> Result<Summary, FinishError> {
    let (mut held, store) = match rows {
        JobRows::Vec(v) => (Some(v), None),
        JobRows::Store { rows, files } => (None, Some((rows, files))),
    };
    if let Some(files) = job.layout {
        if let (None, Some((s, _))) = (&held, store)
            && crate::formats::needs_rows(job.options)
        {
            held = Some(read_all(s)?);
        }
        let mut none = Vec::new();
        let rows = held.as_mut().unwrap_or(&mut none);
        crate::formats::finish(job.out, job.options, files, rows)?;
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
    let (counts, classes) = match (held, store) {
        (Some(v), _) => {
            output::write_manifest(job.out, output::merge_sorted(v, problems), || None)?
        }
        (None, Some((s, _))) => {
            let failed = std::cell::RefCell::new(None);
            let read = s.rows().map_while(|r| match r {
                Ok((_, r, _)) => Some(r),
                Err(e) => {
                    *failed.borrow_mut() = Some(e);
                    None
                }
            });
            output::write_manifest(job.out, output::merge_sorted(read, problems), || {
                failed.borrow_mut().take()
            })?
        }
        (None, None) => output::write_manifest(job.out, problems, || None)?,
    };
    if let (true, Some((s, files))) = (job.provenance, store) {
        write_provenance(job.out, s, files)?;
    }
    let elapsed = match job.elapsed {
        Elapsed::Since(started) => started.elapsed(),
        Elapsed::Fixed(d) => d,
    };
    let summary = Summary::new(counts, elapsed);
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
            dataset: DatasetSection::with_classes(job.dataset, classes),
            normalization: Normalization::new(job.options, job.params),
        },
    )?;
    Ok(summary)
}
