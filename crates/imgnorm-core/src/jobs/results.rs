//! Results coming back: a worker's result for one image ([`Jobs::image_done`],
//! checked by [`crate::validate`]), the switch from a statistics phase to the
//! writing phase, and stream mode's outputs (checked chunks, committed or
//! failed writes).
use std::path::PathBuf;
use std::time::Instant;

use crate::dataset::RawStats;
use crate::ids::{JobId, LeaseId, WorkerId};
use crate::record::{Record, Status};
use crate::scheduler::ItemVerdict;
use crate::stats::{ImageStats, OrderedFold};
use crate::validate::{self, Claim, Expected, Refusal, ResultPhase};

use super::machine::Jobs;
use super::{
    Effect, Effects, JobKey, JobState, Phase, PhaseJob, Provenance, Rejected, ResultRow,
    StreamSlot, Transfer,
};

/// A worker's result for one image, as its session received it.
#[derive(Debug, Clone)]
pub struct ImageResult {
    /// The sending worker (known from its session).
    pub worker: WorkerId,
    /// Job and phase the result names.
    pub job: PhaseJob,
    /// Lease it names.
    pub lease: u64,
    /// Attempt it names.
    pub attempt: u32,
    /// Item index in the job's file list.
    pub index: u64,
    /// The manifest row.
    pub record: Record,
    /// Output statistics (writing phase, `ok`).
    pub stats: Option<ImageStats>,
    /// Raw statistics (statistics phase, `ok`).
    pub raw: Option<RawStats>,
}

/// A checked result, ready for the scheduler's verdict.
struct Checked {
    r: ImageResult,
    sched_index: u64,
}

impl Jobs {
    /// A result for one image. `Err(Rejected::Refused)`: the worker sent
    /// something an honest worker never sends (see [`crate::validate`]);
    /// `Err(Rejected::Stale)`: a late result (its job or phase is over, its
    /// worker was declared dead). A duplicate of an accepted result is
    /// discarded (`Ok` with nothing accepted).
    pub fn image_done(&mut self, r: ImageResult, now: Instant) -> Result<Effects, Rejected> {
        let c = self.check(r)?;
        let phase = c.r.job.phase;
        let verdict = self
            .sched
            .complete_item(c.r.worker, LeaseId(c.r.lease), c.sched_index, now)
            .map_err(|e| Rejected::Stale(e.to_string()))?;
        let ItemVerdict::Accepted { events } = verdict else {
            return Ok(Effects::default());
        };
        self.completed += 1;
        let mut fx = match phase {
            Phase::Stats => self.stats_accepted(c.r),
            Phase::Write => self.write_accepted(c.r),
        };
        fx.merge(self.apply(events, now));
        fx.accepted = true;
        fx.stats_result = phase == Phase::Stats;
        Ok(fx)
    }

    /// The checks of [`Jobs::image_done`] before the scheduler is asked.
    fn check(&self, r: ImageResult) -> Result<Checked, Rejected> {
        let name = r.job.name();
        let jr = self
            .jobs
            .get(&r.job.key)
            .ok_or_else(|| Rejected::Stale(format!("unknown job {name:?}")))?;
        if jr.state.is_final() {
            // Its file list is released: a late copy.
            return Err(Rejected::Stale(format!("{name} has ended")));
        }
        let i = usize::try_from(r.index).unwrap_or(usize::MAX);
        let expected = jr.files.get(i).ok_or(Refusal::IndexOutOfRange {
            job: name.clone(),
            index: r.index,
            files: jr.files.len(),
        })?;
        if r.job != jr.phase_job() {
            return Err(Rejected::Stale(format!(
                "result for {name}, which is not the job's current phase"
            )));
        }
        let sched_index = jr
            .two
            .sched_index(r.index)
            .ok_or(Refusal::NotInPhase(r.index))?;
        let claim = Claim {
            worker: r.worker,
            job: &name,
            lease: r.lease,
            attempt: r.attempt,
            item: sched_index,
        };
        validate::check_claim(&claim, self.sched.lease_facts(LeaseId(r.lease)))?;
        let want = Expected {
            path: &expected,
            options: &jr.options,
            phase: match jr.two.phase {
                Phase::Stats => ResultPhase::Stats,
                Phase::Write => ResultPhase::Write,
            },
        };
        validate::check_result(&want, &r.record, r.stats.as_ref(), r.raw.as_ref())?;
        Ok(Checked { r, sched_index })
    }

    fn provenance(&self, r: &ImageResult) -> Provenance {
        Provenance {
            worker: self
                .infos
                .get(&r.worker)
                .map(|i| i.name.clone())
                .unwrap_or_default(),
            worker_id: r.worker.0,
            lease: r.lease,
            attempt: r.attempt,
        }
    }

    fn persisted(
        &self,
        r: &ImageResult,
        stats: Option<&ImageStats>,
        raw: Option<&RawStats>,
        prov: &Provenance,
    ) -> Option<Effect> {
        self.persist.then(|| {
            Effect::PersistResult(Box::new(ResultRow {
                job: r.job.key,
                phase: r.job.phase,
                index: r.index,
                record: r.record.clone(),
                stats: stats.cloned(),
                raw: raw.cloned(),
                worker: prov.worker.clone(),
                worker_id: prov.worker_id,
                lease: prov.lease,
                attempt: prov.attempt,
            }))
        })
    }

    /// An accepted writing-phase result: the item's final row.
    fn write_accepted(&mut self, r: ImageResult) -> Effects {
        let mut fx = Effects::default();
        let stats = r.stats.clone().filter(|_| r.record.status == Status::Ok);
        let job = r.job.name();
        self.history.image_done(&job, r.worker);
        if r.record.status == Status::Failed {
            let reason = r.record.reason.as_deref().unwrap_or("");
            self.history
                .failure(&job, &r.record.path, reason, r.attempt);
        }
        let prov = self.provenance(&r);
        fx.effects
            .extend(self.persisted(&r, stats.as_ref(), None, &prov));
        if let Some(jr) = self.jobs.get_mut(&r.job.key) {
            match stats {
                // Settled once the runtime has committed the output.
                Some(s) if jr.transfer == Transfer::Stream => {
                    jr.streamed.insert(r.index, s);
                }
                s => jr.stats.settle(r.index, s),
            }
            jr.counts.add(r.record.status);
            jr.rows.put(r.index, r.record, Some(prov));
        }
        fx
    }

    /// An accepted statistics-phase result: an `ok` one folds its raw
    /// statistics; any other is the item's final row (it is not written).
    fn stats_accepted(&mut self, r: ImageResult) -> Effects {
        let mut fx = Effects::default();
        let raw = r.raw.clone().filter(|_| r.record.status == Status::Ok);
        let prov = self.provenance(&r);
        fx.effects
            .extend(self.persisted(&r, None, raw.as_ref(), &prov));
        if let Some(jr) = self.jobs.get_mut(&r.job.key) {
            if let Some(fold) = jr.two.fold.as_mut() {
                fold.settle(r.index, raw);
            }
            if r.record.status != Status::Ok {
                jr.counts.add(r.record.status);
                jr.rows.put(r.index, r.record, Some(prov));
            }
        }
        fx
    }

    /// The statistics phase of `key` is complete: fix the parameters and
    /// queue the writing phase over the items that came out `ok`.
    pub(super) fn start_write_phase(&mut self, key: JobKey, now: Instant) -> Effects {
        let mut fx = Effects::default();
        let Some(jr) = self.jobs.get_mut(&key) else {
            return fx;
        };
        if jr.state == JobState::Cancelled || jr.two.phase != Phase::Stats {
            return fx;
        }
        if let Some(fold) = jr.two.fold.take() {
            jr.two.params = fold.finish();
        }
        jr.two.phase = Phase::Write;
        let items: Vec<u64> = jr.rows.missing().collect();
        let n = items.len() as u64;
        jr.two.items = Some(items);
        fx.push(Effect::PersistPhase {
            key,
            params: jr.two.params.clone(),
            images: n,
        });
        jr.stats = OrderedFold::new(jr.two.params.output_range(&jr.options));
        for i in jr.rows.present() {
            jr.stats.settle(i, None);
        }
        let stats_id = JobId(
            PhaseJob {
                key,
                phase: Phase::Stats,
            }
            .name(),
        );
        // The scheduler forgets the finished phase (a speculative copy
        // still out is revoked).
        let forget = self.sched.cancel_job(&stats_id).unwrap_or_default();
        fx.merge(self.apply(forget, now));
        self.phases.remove(&stats_id);
        // An empty writing phase completes at once (JobComplete).
        let id = self.sched_id(PhaseJob::write(key));
        let events = self.sched.add_job(id, n, now).unwrap_or_default();
        fx.merge(self.apply(events, now));
        fx.merge(self.dispatch_all(now));
        fx
    }

    /// Input file of a stream-mode job's item (`ReadInput`); `None` for
    /// jobs of another mode, unknown items, and paths that could leave the
    /// input root.
    pub fn input_path(&self, key: JobKey, index: u64) -> Option<PathBuf> {
        let j = self.jobs.get(&key)?;
        if j.transfer != Transfer::Stream {
            return None;
        }
        let rel = j.files.get(usize::try_from(index).ok()?)?;
        crate::paths::check_relative(&rel).ok()?;
        Some(j.input.join(rel))
    }

    /// Where a stream-mode output chunk from worker `w` goes. `Ok(None)`: a
    /// late chunk (its job or lease is over); `Err`: a chunk an honest
    /// worker never sends (another worker's lease, an item not in the
    /// lease, a job not in stream mode).
    pub fn stream_slot(
        &self,
        w: WorkerId,
        pj: PhaseJob,
        lease: u64,
        index: u64,
    ) -> Result<Option<StreamSlot>, Refusal> {
        let Some(j) = self.jobs.get(&pj.key) else {
            return Ok(None);
        };
        if j.state.is_final() {
            return Ok(None);
        }
        let name = pj.name();
        let Some(rel) = j.files.get(usize::try_from(index).unwrap_or(usize::MAX)) else {
            return Err(Refusal::IndexOutOfRange {
                job: name,
                index,
                files: j.files.len(),
            });
        };
        if j.transfer != Transfer::Stream || pj.phase != Phase::Write || pj != j.phase_job() {
            return Err(Refusal::NotInPhase(index));
        }
        let item = j.two.sched_index(index).ok_or(Refusal::NotInPhase(index))?;
        let Some(facts) = self.sched.lease_facts(LeaseId(lease)) else {
            return Ok(None);
        };
        // The attempt is checked with the result (ImageDone) itself.
        let claim = Claim {
            worker: w,
            job: &name,
            lease,
            attempt: facts.attempt,
            item,
        };
        validate::check_claim(&claim, Some(facts))?;
        // The engine's rule: an honest worker fails an image whose output
        // cannot be named instead of sending it.
        let rel = crate::paths::output_name(&rel).map_err(Refusal::UnsafeOutput)?;
        Ok(Some(StreamSlot {
            output: j.output.clone(),
            rel,
        }))
    }

    /// The runtime wrote a streamed result's output: its statistics count.
    /// The dataset is written when this was the last output it waited for.
    pub fn stream_committed(&mut self, key: JobKey, index: u64) -> Effects {
        if let Some(j) = self.jobs.get_mut(&key)
            && let Some(s) = j.streamed.remove(&index)
        {
            j.stats.settle(index, Some(s));
        }
        self.finalize_if_committed(key)
    }

    /// A job waiting for its streamed outputs is finalized once none is left.
    fn finalize_if_committed(&mut self, key: JobKey) -> Effects {
        let mut fx = Effects::default();
        if let Some(j) = self.jobs.get_mut(&key)
            && j.complete_pending
            && j.streamed.is_empty()
        {
            j.complete_pending = false;
            if j.state != JobState::Cancelled {
                fx.push(Effect::WriteDataset(key));
            }
        }
        fx
    }

    /// The runtime could not write a streamed result: the row becomes
    /// failed. The dataset is written when this was the last output it
    /// waited for.
    pub fn write_failed(&mut self, key: JobKey, index: u64, error: &str) -> Effects {
        let mut fx = self.record_write_failure(key, index, error);
        fx.merge(self.finalize_if_committed(key));
        fx
    }

    fn record_write_failure(&mut self, key: JobKey, index: u64, error: &str) -> Effects {
        let mut fx = Effects::default();
        let persist = self.persist;
        let Some(j) = self.jobs.get_mut(&key) else {
            return fx;
        };
        if j.streamed.remove(&index).is_some() {
            j.stats.settle(index, None);
        }
        let Some((r, by)) = j.rows.get(index) else {
            return fx;
        };
        let was_ok = u64::from(r.status == Status::Ok);
        j.counts.ok = j.counts.ok.saturating_sub(was_ok);
        j.counts.failed += was_ok;
        let reason = format!("master could not write the output: {error}");
        self.history.failure(&key.to_string(), &r.path, &reason, 0);
        let mut f = Record::bare(r.path, Status::Failed, Some(reason));
        f.format = r.format;
        if persist {
            fx.push(Effect::PersistResult(Box::new(ResultRow {
                job: key,
                phase: Phase::Write,
                index,
                record: f.clone(),
                stats: None,
                raw: None,
                worker: String::new(),
                worker_id: 0,
                lease: 0,
                attempt: 0,
            })));
        }
        j.rows.put(index, f, by);
        fx
    }
}
