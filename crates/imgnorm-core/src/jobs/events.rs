//! What the scheduler's events do to jobs ([`Jobs::apply`]) and how leases
//! are handed to workers with credits ([`Jobs::dispatch`]).
use std::time::Instant;

use crate::ids::{JobId, WorkerId};
use crate::record::{Record, Status};
use crate::scheduler::Event;

use super::history::{LeaseInfo, WorkerEventKind};
use super::machine::Jobs;
use super::{Effect, Effects, JobState, LeaseItem, LeaseOrder, Phase, PhaseJob, ResultRow};

impl Jobs {
    /// Turns scheduler events into changes of the jobs and effects.
    pub(super) fn apply(&mut self, events: Vec<Event>, now: Instant) -> Effects {
        let mut fx = Effects::default();
        for e in events {
            match e {
                Event::WorkerDead {
                    worker,
                    reason,
                    requeued,
                } => {
                    let kind = match reason {
                        crate::scheduler::DeathReason::Disconnected => {
                            WorkerEventKind::Disconnected
                        }
                        crate::scheduler::DeathReason::Timeout => WorkerEventKind::TimedOut,
                    };
                    self.history.worker_event(worker, kind, now);
                    self.credits.remove(&worker);
                    self.bury(worker);
                    fx.push(Effect::WorkerDead {
                        worker,
                        reason,
                        requeued,
                    });
                }
                Event::Requeued { .. } => {}
                Event::Quarantined { job, item, crashes } => {
                    fx.merge(self.quarantined(&job, item, crashes));
                }
                Event::Revoke { job, worker, lease } => {
                    if let Some(job) = self.phase_of(&job) {
                        fx.push(Effect::Revoke { worker, job, lease });
                    }
                }
                Event::JobComplete(job) => fx.merge(self.phase_complete(&job, now)),
            }
        }
        fx
    }

    /// An image crashed its worker too often: its row is failed and final.
    fn quarantined(&mut self, job: &JobId, item: u64, crashes: u32) -> Effects {
        let mut fx = Effects::default();
        let Some(pj) = self.phase_of(job) else {
            return fx;
        };
        let persist = self.persist;
        let Some(jr) = self.jobs.get_mut(&pj.key) else {
            return fx;
        };
        // The scheduler counts in the phase's indexes.
        let item = jr.two.item(item);
        let Some(path) = jr.files.get(item as usize) else {
            return fx;
        };
        if let Some(fold) = jr.two.fold.as_mut() {
            fold.settle(item, None);
        }
        let reason =
            format!("quarantined: a worker died {crashes} times while processing this image alone");
        let r = Record::bare(path.clone(), Status::Failed, Some(reason.clone()));
        jr.counts.add(Status::Failed);
        self.history.failure(&pj.name(), &r.path, &reason, crashes);
        self.completed += 1;
        fx.push(Effect::Quarantined {
            job: pj,
            path: path.clone(),
            crashes,
        });
        if persist {
            fx.push(Effect::PersistResult(Box::new(ResultRow {
                job: pj.key,
                phase: jr.two.phase,
                index: item,
                record: r.clone(),
                stats: None,
                raw: None,
                worker: String::new(),
                worker_id: 0,
                lease: 0,
                attempt: crashes,
            })));
        }
        jr.rows.put(item, r, None);
        jr.stats.settle(item, None);
        fx
    }

    /// Every item of a phase is completed: a statistics phase hands over to
    /// the writing phase; a writing phase's dataset can be written (once the
    /// last streamed output is committed).
    fn phase_complete(&mut self, job: &JobId, now: Instant) -> Effects {
        let mut fx = Effects::default();
        match self.phase_of(job) {
            Some(PhaseJob {
                key,
                phase: Phase::Stats,
            }) => fx.merge(self.start_write_phase(key, now)),
            Some(PhaseJob {
                key,
                phase: Phase::Write,
            }) => {
                if let Some(jr) = self.jobs.get_mut(&key)
                    && jr.state != JobState::Cancelled
                {
                    jr.finished = Some(now);
                    // Stream mode: an accepted output is committed (renamed
                    // into place, its statistics settled) by the runtime
                    // after this transition; the dataset waits for the last.
                    if jr.streamed.is_empty() {
                        fx.push(Effect::WriteDataset(key));
                    } else {
                        jr.complete_pending = true;
                    }
                }
            }
            None => {}
        }
        fx
    }

    /// Hands leases to every worker with credits left.
    pub(super) fn dispatch_all(&mut self, now: Instant) -> Effects {
        let mut fx = Effects::default();
        let ids: Vec<WorkerId> = self
            .credits
            .iter()
            .filter(|(_, c)| **c > 0)
            .map(|(id, _)| *id)
            .collect();
        for w in ids {
            fx.merge(self.dispatch(w, now));
        }
        fx
    }

    /// Hands leases to `w` while it has credits and there is work.
    pub(super) fn dispatch(&mut self, w: WorkerId, now: Instant) -> Effects {
        let mut fx = Effects::default();
        while self.credits.get(&w).is_some_and(|c| *c > 0) {
            let Ok(Some(lease)) = self.sched.lease(w, now) else {
                break;
            };
            let Some(pj) = self.phase_of(&lease.job) else {
                break;
            };
            let Some(jr) = self.jobs.get_mut(&pj.key) else {
                break;
            };
            if jr.state == JobState::Queued {
                jr.state = JobState::Running;
            }
            let items = lease
                .items
                .iter()
                .map(|&k| jr.two.item(k))
                .map(|i| LeaseItem {
                    index: i,
                    path: jr.files.get(i as usize).unwrap_or_default(),
                })
                .collect();
            let params = (jr.options.two_phase() && jr.two.phase == Phase::Write)
                .then(|| jr.two.params.clone());
            self.history.lease_started(
                lease.id.0,
                LeaseInfo {
                    key: pj.key,
                    job: lease.job.0.clone(),
                    batch: lease.batch.0,
                    attempt: lease.attempt,
                    items: lease.items.len(),
                },
            );
            if let Some(c) = self.credits.get_mut(&w) {
                *c -= 1;
            }
            fx.push(Effect::SendLease(LeaseOrder {
                worker: w,
                job: pj,
                lease: lease.id,
                attempt: lease.attempt,
                batch: lease.batch,
                items,
                params,
            }));
        }
        fx
    }
}
