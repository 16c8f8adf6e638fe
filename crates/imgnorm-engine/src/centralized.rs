//! The single-thread baseline: discover, then process every file in order on
//! the calling thread, then write the manifest and statistics. Every other mode
//! must produce the same dataset as this one. With an `s3://` input or output
//! the loop is the same, with inputs fetched ahead and outputs uploaded
//! behind it on the object-store I/O runtime ([`crate::storage`]).
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use imgnorm_core::dataset::{DatasetParams, ParamsFold};
use imgnorm_core::options::EngineOptions;
use imgnorm_core::record::{Record, Status};
use imgnorm_core::rerun::{InputStamp, RerunFlags};
use imgnorm_core::stats::{DatasetStats, ImageStats};

use crate::discovery::{DiscoveryError, discover};
use crate::engine::{Engine, Sink, Source};
use crate::finish;
use crate::output::{OutputError, Summary};
use crate::progress::Progress;
use crate::storage::{self, Location, StorageError, Store};

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
    /// The object store could not be listed, read or written.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Another unfinished job writes to the output.
    #[error(transparent)]
    Claim(#[from] crate::claim::ClaimError),
    /// The output holds something a run cannot use as it is.
    #[error(transparent)]
    Rerun(#[from] crate::rerun::RerunError),
}

impl From<finish::FinishError> for RunError {
    fn from(e: finish::FinishError) -> Self {
        match e {
            finish::FinishError::Format(e) => RunError::Format(e),
            finish::FinishError::Output(e) => RunError::Output(e),
        }
    }
}

/// Creates the output folder.
pub fn create_output(out: &Path) -> Result<(), RunError> {
    crate::fsio::create_output_dir(out).map_err(|source| RunError::CreateOutput {
        path: out.to_path_buf(),
        source,
    })
}

/// Runs the whole job on this thread and returns the summary (into an
/// empty output folder, or as a rerun without flags: see [`run_with`]).
pub fn run(
    input: &Path,
    out: &Path,
    opts: &EngineOptions,
    quiet: bool,
) -> Result<Summary, RunError> {
    run_with(input, out, opts, RerunFlags::default(), quiet)
}

/// Runs the whole job on this thread and returns the summary. An output
/// folder holding an earlier run is taken as [`crate::rerun::setup`]
/// decides with `flags`: unchanged images are kept, the rest processed.
pub fn run_with(
    input: &Path,
    out: &Path,
    opts: &EngineOptions,
    flags: RerunFlags,
    quiet: bool,
) -> Result<Summary, RunError> {
    if storage::is_object_url(input) || storage::is_object_url(out) {
        if let Some(what) = storage::unsupported_with_objects(opts) {
            return Err(StorageError::Unsupported(what).into());
        }
        if flags != RerunFlags::default() {
            return Err(StorageError::Unsupported(
                "rerunning into an existing output (--overwrite, --retry-failed, --prune)",
            )
            .into());
        }
        return run_objects(input, out, opts, quiet);
    }
    let started = Instant::now();
    create_output(out)?;
    // Held until the run returns: no other job may use the output meanwhile.
    let claim = crate::claim::OutputClaim::acquire(out)?;
    let found = discover(input, Some(out))?;
    let setup = crate::rerun::setup(&claim, input, opts, flags, found)?;
    if let Some(r) = &setup.report {
        for w in r.warnings() {
            tracing::warn!("{w}");
        }
    }
    crate::formats::prepare(&claim, opts, &setup.files)?;
    let total = (setup.files.len() + setup.problems.len()) as u64;
    let mut progress = Progress::new(total, quiet);
    for _ in &setup.problems {
        progress.inc(false);
    }
    let mut engine = Engine::new(opts.clone());
    // Two-phase options keep nothing (`rerun::keeps_nothing`): every file
    // is measured.
    let (params, mut early) = statistics_phase(&mut engine, input, &setup.files);
    engine.set_params(params.clone());
    let mut rows = Vec::with_capacity(setup.files.len());
    // Files are in sorted path order: the fold order every mode uses.
    let mut dataset = DatasetStats::new(params.output_range(opts));
    for ((index, rel), kept) in (0u64..).zip(&setup.files).zip(&setup.kept) {
        if let Some(k) = kept {
            if let Some(s) = &k.stats {
                dataset.add(s);
            }
            progress.inc(k.record.status == Status::Failed);
            rows.push(k.record.clone());
            continue;
        }
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
        let r = engine
            .process(
                Source::File { root: input, rel },
                Sink::Output { root: out, index },
            )
            .record;
        if let Some(s) = engine.take_stats() {
            dataset.add(&s);
        }
        progress.inc(r.status == Status::Failed);
        rows.push(r);
    }
    progress.finish();
    finish_run(
        &Finished {
            input,
            out,
            opts,
            layout: Some(&setup.files),
            engine: &engine,
            dataset: &dataset,
            params: &params,
            started,
            inputs: Some((&setup.files, &setup.stamps)),
            rerun: setup.report.as_ref(),
        },
        rows,
        setup.problems,
    )
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
        let r = engine
            .process(Source::File { root: input, rel }, Sink::Measure)
            .record;
        fold.settle(i as u64, engine.take_raw());
        early.push((r.status != Status::Ok).then_some(r));
    }
    (fold.finish(), early)
}

/// One image on its way through [`run_objects`]: processed, maybe still
/// uploading. Kept in input order, so statistics fold in path order.
struct InFlight {
    record: Record,
    stats: Option<ImageStats>,
    upload: Option<tokio::task::JoinHandle<Result<(), StorageError>>>,
}

/// [`run`] when the input or the output (or both) is an `s3://` prefix:
/// up to [`storage::GET_CONCURRENCY`] inputs are fetched ahead and up to
/// [`storage::PUT_CONCURRENCY`] outputs upload behind, while decoding stays
/// on this thread.
fn run_objects(
    input: &Path,
    out: &Path,
    opts: &EngineOptions,
    quiet: bool,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let (inp, outp) = (Location::of(input)?, Location::of(out)?);
    let found = {
        let (i, o) = (inp.clone(), outp.clone());
        storage::block_on(async move { storage::prepare(&i, &o).await })??
    };
    let source = inp.s3().map(Store::open).transpose()?;
    let sink = outp.s3().map(Store::open).transpose()?;
    let mut progress = Progress::new(found.total(), quiet);
    for _ in &found.problems {
        progress.inc(false);
    }
    let files = &found.files;
    let mut engine = Engine::new(opts.clone());
    // Single-phase options only (see `storage::unsupported_with_objects`).
    let params = DatasetParams::from_options(opts);
    engine.set_params(params.clone());
    let mut rows = Vec::with_capacity(files.len());
    let mut dataset = DatasetStats::new(params.output_range(opts));
    let mut fetches = VecDeque::new();
    let mut next_fetch = 0;
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    // Inputs over --max-input-bytes are refused from the GET's size,
    // before their bodies are read (as on a worker).
    let check = crate::engine::input_check(opts, None);
    for (i, rel) in files.iter().enumerate() {
        if let Some(store) = &source {
            while next_fetch < files.len() && next_fetch < i + storage::GET_CONCURRENCY {
                let (store, rel) = (store.clone(), files[next_fetch].clone());
                let check = Arc::clone(&check);
                fetches.push_back(storage::spawn(async move {
                    store.get_checked(&rel, |n| check(n)).await
                }));
                next_fetch += 1;
            }
        }
        let data = match (&source, &inp) {
            (Some(_), _) => match fetches.pop_front() {
                Some(h) => match storage::join(h) {
                    Ok(r) => r,
                    Err(e) => Err(format!("cannot read input: {}", storage::chain(&e))),
                },
                None => Err("internal error: input fetch missing".to_string()),
            },
            (None, Location::Local(root)) => engine.read_input(root, rel).map(bytes::Bytes::from),
            (None, Location::S3(_)) => Err("internal error: no input store".to_string()),
        };
        let f = process_one(&mut engine, rel, i as u64, data, sink.as_ref(), &outp);
        in_flight.push_back(f);
        while in_flight.len() > storage::PUT_CONCURRENCY
            || in_flight.front().is_some_and(|f| f.upload.is_none())
        {
            match in_flight.pop_front() {
                Some(f) => settle(f, &mut rows, &mut progress, &mut dataset),
                None => break,
            }
        }
    }
    while let Some(f) = in_flight.pop_front() {
        settle(f, &mut rows, &mut progress, &mut dataset);
    }
    progress.finish();
    finish_run(
        &Finished {
            input,
            out,
            opts,
            layout: None,
            engine: &engine,
            dataset: &dataset,
            params: &params,
            started,
            inputs: None,
            rerun: None,
        },
        rows,
        found.problems,
    )
}

/// One fetched (or unreadable) input of [`run_objects`], processed: into
/// the local output folder, or into memory with its upload started.
fn process_one(
    engine: &mut Engine,
    rel: &str,
    index: u64,
    data: Result<bytes::Bytes, String>,
    sink: Option<&Store>,
    outp: &Location,
) -> InFlight {
    match (data, sink, outp) {
        (Err(reason), _, _) => InFlight {
            record: Record::bare(rel, Status::Failed, Some(reason)),
            stats: None,
            upload: None,
        },
        (Ok(bytes), Some(store), _) => {
            let p = engine.process(Source::Bytes { rel, data: &bytes }, Sink::Memory);
            let npy = p.npy.map(bytes::Bytes::copy_from_slice);
            let record = p.record;
            let upload = npy.map(|npy| {
                let (store, key) = (store.clone(), format!("{rel}.npy"));
                storage::spawn(async move { store.put(&key, npy).await })
            });
            InFlight {
                record,
                stats: engine.take_stats(),
                upload,
            }
        }
        (Ok(bytes), None, Location::Local(root)) => InFlight {
            record: engine
                .process(
                    Source::Bytes { rel, data: &bytes },
                    Sink::Output { root, index },
                )
                .record,
            stats: engine.take_stats(),
            upload: None,
        },
        (Ok(_), None, Location::S3(_)) => InFlight {
            record: Record::bare(
                rel,
                Status::Failed,
                Some("internal error: no output store".into()),
            ),
            stats: None,
            upload: None,
        },
    }
}

/// An image of [`run_objects`] leaves the queue in input order: its upload
/// is awaited (a failed upload fails the row), its statistics folded, its
/// row kept.
fn settle(
    f: InFlight,
    rows: &mut Vec<Record>,
    progress: &mut Progress,
    dataset: &mut DatasetStats,
) {
    let mut record = f.record;
    let mut stats = f.stats;
    if let Some(upload) = f.upload {
        let done = storage::join(upload);
        if let Err(e) = done {
            let mut r = Record::bare(
                record.path.clone(),
                Status::Failed,
                Some(format!("cannot write output: {}", storage::chain(&e))),
            );
            r.format = record.format.take();
            record = r;
            stats = None;
        }
    }
    if let Some(s) = &stats {
        dataset.add(s);
    }
    progress.inc(record.status == Status::Failed);
    rows.push(record);
}

/// What a finished centralized run (local or object store) writes its
/// manifest and `stats.json` from.
struct Finished<'a> {
    input: &'a Path,
    out: &'a Path,
    opts: &'a EngineOptions,
    /// The files, when the output layout (shards, stack) is completed here.
    layout: Option<&'a [String]>,
    engine: &'a Engine,
    dataset: &'a DatasetStats,
    params: &'a DatasetParams,
    started: Instant,
    /// The files and their stamps ([`crate::rerun::INPUTS`]), local runs.
    inputs: Option<(&'a [String], &'a [Option<InputStamp>])>,
    /// What a rerun kept and processed.
    rerun: Option<&'a crate::rerun::Report>,
}

/// Finishes the dataset of a centralized run ([`crate::finish`]): layout,
/// manifest (rows merged with discovery problems) and `stats.json`; returns
/// its summary.
fn finish_run(
    f: &Finished<'_>,
    rows: Vec<Record>,
    problems: Vec<Record>,
) -> Result<Summary, RunError> {
    let job = finish::Job {
        input: f.input,
        out: f.out,
        options: f.opts,
        layout: f.layout,
        mode: "centralized",
        workers: 0,
        elapsed: finish::Elapsed::Since(f.started),
        stage_seconds: f.engine.times().into(),
        dataset: f.dataset,
        params: f.params,
        provenance: None,
        inputs: f.inputs,
        rerun: f.rerun,
    };
    Ok(finish::finish(&job, rows, problems)?)
}
