//! One job and everything collected for it ([`JobRun`]), and its phases
//! ([`TwoPhase`]): which items the current phase's scheduler job covers.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::dataset::{DatasetParams, ParamsFold};
use crate::ids::JobId;
use crate::options::EngineOptions;
use crate::pathlist::PathList;
use crate::record::{Counts, Record};
use crate::stats::{ImageStats, OrderedFold};

use super::rows::{RowStore, Rows};
use super::{JobKey, JobState, Phase, PhaseJob, Transfer};

/// A job and everything collected for it.
pub struct JobRun {
    /// Number.
    pub key: JobKey,
    /// Id as users see it (`job-N`).
    pub id: JobId,
    /// Input root.
    pub input: PathBuf,
    /// Output root.
    pub output: PathBuf,
    /// Data path.
    pub transfer: Transfer,
    /// Engine options.
    pub options: EngineOptions,
    /// Relative paths, indexed by item (compressed: see [`PathList`]).
    pub files: Arc<PathList>,
    /// Rows found at discovery (loops, unreadable entries).
    pub problems: Vec<Record>,
    /// The final rows (filled by accepted results) and who produced each.
    pub rows: Rows,
    /// Counts of accepted rows so far (problems included).
    pub counts: Counts,
    /// When it was submitted.
    pub submitted: Instant,
    /// When it finished.
    pub finished: Option<Instant>,
    /// State.
    pub state: JobState,
    /// Why it failed.
    pub error: Option<String>,
    /// Output statistics folded in item index order (see
    /// [`OrderedFold`]): the same numbers whatever the arrival order.
    pub stats: OrderedFold,
    /// Stream mode: statistics of accepted `ok` results whose output the
    /// master has not committed yet (settled once it has, or dropped).
    pub(super) streamed: HashMap<u64, ImageStats>,
    /// Whole-dataset normalization: the statistics phase and its outcome.
    pub two: TwoPhase,
    /// A finished job listed from the state database, or a released one:
    /// its image count (its file list is not kept).
    pub(super) listed_images: Option<u64>,
    /// Every item has its result but a streamed output is still being
    /// committed: the dataset is written once the last one is.
    pub(super) complete_pending: bool,
}

/// A job's phases (see [`crate::dataset`]). A two-phase job first runs a
/// scheduler job for its statistics phase over every item; images not `ok`
/// there are final; the others form the scheduler job of the writing phase,
/// whose scheduler index `k` is item `items[k]`.
pub struct TwoPhase {
    /// The phase running now.
    pub phase: Phase,
    /// The statistics fold, until the statistics phase completes.
    pub(super) fold: Option<ParamsFold>,
    /// The parameters of the writing phase.
    pub params: DatasetParams,
    /// The items the current phase's scheduler job covers, ascending
    /// (`None`: every item, identity mapping): the writing phase of a
    /// two-phase job covers the items found `ok` by its statistics phase,
    /// and a resumed phase only the items without a (verified) result.
    pub(super) items: Option<Vec<u64>>,
}

impl TwoPhase {
    fn new(options: &EngineOptions) -> TwoPhase {
        let two = options.two_phase();
        TwoPhase {
            phase: if two { Phase::Stats } else { Phase::Write },
            fold: two.then(|| ParamsFold::new(options)),
            params: DatasetParams::from_options(options),
            items: None,
        }
    }

    /// The scheduler index of item `index` in the current phase.
    pub(super) fn sched_index(&self, index: u64) -> Option<u64> {
        match &self.items {
            Some(items) => items.binary_search(&index).ok().map(|k| k as u64),
            None => Some(index),
        }
    }

    /// The item of scheduler index `k` in the current phase.
    pub(super) fn item(&self, k: u64) -> u64 {
        match &self.items {
            Some(items) => items.get(k as usize).copied().unwrap_or(u64::MAX),
            None => k,
        }
    }
}

/// What a job is made of when it is created.
pub(super) struct JobParts {
    pub key: JobKey,
    pub input: PathBuf,
    pub output: PathBuf,
    pub transfer: Transfer,
    pub options: EngineOptions,
    pub files: Arc<PathList>,
    pub problems: Vec<Record>,
    pub submitted: Instant,
    pub state: JobState,
    pub store: Box<dyn RowStore>,
}

impl JobRun {
    /// A job with no result yet: an empty slot per file, the discovery rows
    /// counted, the first phase its options call for.
    pub(super) fn new(p: JobParts) -> JobRun {
        let n = p.files.len();
        let mut counts = Counts::default();
        for r in &p.problems {
            counts.add(r.status);
        }
        JobRun {
            key: p.key,
            id: JobId(p.key.to_string()),
            input: p.input,
            output: p.output,
            transfer: p.transfer,
            stats: OrderedFold::new(p.options.range),
            two: TwoPhase::new(&p.options),
            options: p.options,
            files: p.files,
            problems: p.problems,
            rows: Rows::new(n as u64, p.store),
            counts,
            submitted: p.submitted,
            finished: None,
            state: p.state,
            error: None,
            streamed: HashMap::new(),
            listed_images: None,
            complete_pending: false,
        }
    }

    /// Images in the job, discovery rows included.
    pub fn images(&self) -> u64 {
        self.listed_images
            .unwrap_or((self.files.len() + self.problems.len()) as u64)
    }

    /// Items outside the current phase's scheduler job: rows made final by
    /// the statistics phase (not `ok` there), and results restored from the
    /// state database; the current phase's progress does not count them.
    pub fn final_before_phase(&self) -> u64 {
        match &self.two.items {
            Some(items) => (self.files.len() - items.len()) as u64,
            None => 0,
        }
    }

    /// The current phase of this job.
    pub fn phase_job(&self) -> PhaseJob {
        PhaseJob {
            key: self.key,
            phase: self.two.phase,
        }
    }

    /// Rows known to be final (discovery rows included): results of the
    /// writing phase, rows not `ok` in the statistics phase, quarantines.
    /// Never decreases while the job runs (the phase switch keeps them).
    pub fn rows_final(&self) -> u64 {
        if self.state == JobState::Done {
            self.images()
        } else {
            self.counts.images
        }
    }

    /// Stream mode: results accepted whose output is not committed yet.
    pub fn uncommitted(&self) -> usize {
        self.streamed.len()
    }

    /// Frees what an ended job no longer needs (its file list, records,
    /// provenance, folds). What stays is bounded whatever its size.
    pub(super) fn release(&mut self) {
        self.listed_images = Some(self.images());
        self.files = Arc::new(PathList::new());
        self.problems = Vec::new();
        drop(self.rows.take());
        self.streamed = HashMap::new();
        self.stats = OrderedFold::new(self.options.range);
        self.two.items = None;
        self.two.fold = None;
    }
}
