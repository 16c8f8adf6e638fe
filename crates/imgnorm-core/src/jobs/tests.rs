//! Unit tests of every transition of the job logic: leasing by credits, the
//! queue of jobs, results (accepted, duplicate, late, refused), the two
//! phases, worker loss and quarantine, cancellation (also while the dataset
//! is written), stream mode's commits, restore and persistence effects.
//! Time is `Instant` arithmetic from one base: nothing sleeps.
use std::time::Instant;

use crate::ids::WorkerId;
use crate::record::Status;
use crate::scheduler::{DeathReason, SchedulerConfig};

use super::testkit::*;
use super::*;

#[test]
fn names_round_trip_and_strangers_are_refused() {
    for phase in [Phase::Stats, Phase::Write] {
        let p = PhaseJob {
            key: JobKey(42),
            phase,
        };
        assert_eq!(PhaseJob::from_name(&p.name()), Some(p));
    }
    assert_eq!(PhaseJob::write(JobKey(7)).name(), "job-7");
    for bad in [
        "job-",
        "job-x",
        "job-1.stat",
        "job-+1",
        "jobs-1",
        "job-1.stats.stats",
        "job-01",
    ] {
        assert_eq!(PhaseJob::from_name(bad), None, "{bad}");
    }
    assert_eq!(Transfer::parse(""), Ok(Transfer::Shared));
    assert!(Transfer::parse("carrier-pigeon").is_err());
}

#[test]
fn leases_go_only_to_workers_with_credits() {
    let now = Instant::now();
    let mut j = machine(config(2));
    let w = worker(&mut j, now);
    let (key, fx) = j.add_job(job(files(3), Default::default(), Transfer::Shared), now);
    assert_eq!(key, JobKey(1));
    assert!(leases(&fx).is_empty(), "no credit yet");
    assert_eq!(fx.effects[0], Effect::PersistJob(key));
    let fx = j.ready(w, 1, now);
    let l = leases(&fx);
    assert_eq!(l.len(), 1, "one credit, one lease");
    assert_eq!(l[0].job, PhaseJob::write(key));
    assert_eq!(
        l[0].items.iter().map(|i| i.index).collect::<Vec<_>>(),
        [0, 1]
    );
    assert_eq!(l[0].items[0].path, "d/000.png");
    assert_eq!(l[0].params, None, "a single-phase job has no parameters");
    assert_eq!(j.connected().collect::<Vec<_>>(), [(w, 0)]);
    assert_eq!(j.jobs[&key].state, JobState::Running);
}

#[test]
fn a_second_job_waits_for_the_first_and_starts_when_it_ends() {
    let now = Instant::now();
    let mut j = machine(config(4));
    let w = worker(&mut j, now);
    let (a, _) = j.add_job(job(files(1), Default::default(), Transfer::Shared), now);
    let (b, _) = j.add_job(job(files(1), Default::default(), Transfer::Shared), now);
    assert_eq!(j.jobs[&b].state, JobState::Queued);
    let l = leases(&j.ready(w, 1, now)).remove(0);
    let fx = j.image_done(result(&l, 0, true), now).expect("accepted");
    assert_eq!(datasets(&fx), [a]);
    let fx = j.finished(a, Ok(()), now);
    assert_eq!(j.jobs[&a].state, JobState::Done);
    assert_eq!(j.jobs[&b].state, JobState::Running);
    assert!(fx.effects.contains(&Effect::PersistEnd {
        key: a,
        state: JobState::Done,
        error: None
    }));
    // The ended job's per-image state is gone; its count stays.
    assert!(j.jobs[&a].files.is_empty() && j.jobs[&a].records.is_empty());
    assert_eq!(j.jobs[&a].images(), 1);
}

#[test]
fn a_failed_dataset_write_fails_the_job() {
    let now = Instant::now();
    let mut j = machine(config(4));
    let w = worker(&mut j, now);
    let (a, _) = j.add_job(job(files(1), Default::default(), Transfer::Shared), now);
    let l = leases(&j.ready(w, 1, now)).remove(0);
    j.image_done(result(&l, 0, false), now).expect("accepted");
    j.finished(a, Err("disk full".into()), now);
    assert_eq!(j.jobs[&a].state, JobState::Failed);
    assert_eq!(j.jobs[&a].error.as_deref(), Some("disk full"));
}

#[test]
fn a_duplicate_result_is_discarded_and_a_late_one_is_stale() {
    let now = Instant::now();
    let mut j = machine(config(2));
    let w = worker(&mut j, now);
    let (key, _) = j.add_job(job(files(2), Default::default(), Transfer::Shared), now);
    let l = leases(&j.ready(w, 1, now)).remove(0);
    let r = result(&l, 0, true);
    assert!(j.image_done(r.clone(), now).expect("accepted").accepted);
    let again = j.image_done(r.clone(), now).expect("not refused");
    assert!(!again.accepted && again.effects.is_empty(), "{again:?}");
    assert_eq!(j.jobs[&key].counts.ok, 1, "counted once");
    let fx = j.image_done(result(&l, 1, true), now).expect("accepted");
    assert_eq!(datasets(&fx), [key]);
    j.finished(key, Ok(()), now);
    assert!(matches!(j.image_done(r, now), Err(Rejected::Stale(_))));
}

#[test]
fn lies_are_refused() {
    let now = Instant::now();
    let mut j = machine(config(2));
    let w = worker(&mut j, now);
    let other = worker(&mut j, now);
    j.add_job(job(files(2), Default::default(), Transfer::Shared), now);
    let l = leases(&j.ready(w, 1, now)).remove(0);
    let refused = |r: Result<Effects, Rejected>| matches!(r, Err(Rejected::Refused(_)));
    let mut r = result(&l, 0, true);
    r.worker = other;
    assert!(refused(j.image_done(r, now)), "another worker's lease");
    let mut r = result(&l, 0, true);
    r.attempt = 2;
    assert!(refused(j.image_done(r, now)), "wrong attempt");
    let mut r = result(&l, 0, true);
    r.index = 9;
    assert!(refused(j.image_done(r, now)), "index out of range");
    let mut r = result(&l, 0, true);
    r.job.phase = Phase::Stats;
    assert!(
        matches!(j.image_done(r, now), Err(Rejected::Stale(_))),
        "a phase the job is not in"
    );
    let mut r = result(&l, 0, true);
    r.stats = None;
    assert!(refused(j.image_done(r, now)), "missing statistics");
}

#[test]
fn a_lost_worker_gives_its_leases_back_and_its_late_results_are_stale() {
    let now = Instant::now();
    let mut j = machine(config(2));
    let (w1, w2) = (worker(&mut j, now), worker(&mut j, now));
    let (key, _) = j.add_job(job(files(2), Default::default(), Transfer::Shared), now);
    let l = leases(&j.ready(w1, 1, now)).remove(0);
    j.image_done(result(&l, 0, true), now).expect("accepted");
    let fx = j.disconnect(w1, now);
    assert!(matches!(
        fx.effects[0],
        Effect::WorkerDead {
            worker,
            reason: DeathReason::Disconnected,
            requeued: 1
        } if worker == w1
    ));
    assert!(matches!(
        j.image_done(result(&l, 1, true), now),
        Err(Rejected::Stale(_))
    ));
    let l2 = leases(&j.ready(w2, 1, now)).remove(0);
    assert_eq!(l2.items.iter().map(|i| i.index).collect::<Vec<_>>(), [1]);
    assert_eq!(l2.attempt, 2);
    let fx = j.image_done(result(&l2, 1, true), now).expect("accepted");
    assert_eq!(datasets(&fx), [key]);
    assert_eq!(
        j.jobs[&key].provenance[0].as_ref().map(|p| p.worker_id),
        Some(w1.0)
    );
    assert_eq!(
        j.jobs[&key].provenance[1].as_ref().map(|p| p.worker_id),
        Some(w2.0)
    );
}

#[test]
fn a_silent_worker_is_declared_dead_on_tick() {
    let base = Instant::now();
    let mut j = machine(config(2));
    let (w1, w2) = (worker(&mut j, base), worker(&mut j, base));
    j.add_job(job(files(2), Default::default(), Transfer::Shared), base);
    j.ready(w1, 1, base);
    j.ready(w2, 1, base);
    assert!(j.tick(secs(base, 1)).effects.is_empty());
    assert!(!j.heartbeat(w2, false, secs(base, 4)), "a plain heartbeat");
    let fx = j.tick(secs(base, 6));
    assert!(matches!(
        fx.effects[0],
        Effect::WorkerDead { worker, reason: DeathReason::Timeout, requeued: 2 } if worker == w1
    ));
    // w2 had a credit left: it gets the requeued items at once.
    let l = leases(&fx);
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].worker, w2);
    assert_eq!(j.connected().count(), 1);
}

#[test]
fn an_image_that_keeps_killing_workers_is_quarantined() {
    let now = Instant::now();
    let mut j = machine(SchedulerConfig {
        max_crashes: 1,
        ..config(2)
    });
    j.set_persistent(true);
    let w1 = worker(&mut j, now);
    let (key, _) = j.add_job(job(files(1), Default::default(), Transfer::Shared), now);
    j.ready(w1, 1, now);
    j.disconnect(w1, now);
    let w2 = worker(&mut j, now);
    let l = leases(&j.ready(w2, 1, now)).remove(0);
    assert_eq!(l.items.len(), 1, "a suspect is leased alone");
    let fx = j.disconnect(w2, now);
    assert!(
        fx.effects
            .iter()
            .any(|e| matches!(e, Effect::Quarantined { crashes: 1, .. }))
    );
    assert!(
        fx.effects
            .iter()
            .any(|e| matches!(e, Effect::PersistResult(r) if r.record.status == Status::Failed))
    );
    assert_eq!(datasets(&fx), [key]);
    let r = j.jobs[&key].records[0].as_ref().expect("a final row");
    assert!(r.reason.as_deref().unwrap_or("").starts_with("quarantined"));
    assert_eq!(j.jobs[&key].counts.failed, 1);
}

#[test]
fn cancel_revokes_leases_and_later_results_are_stale() {
    let now = Instant::now();
    let mut j = machine(config(2));
    let w = worker(&mut j, now);
    let (key, _) = j.add_job(job(files(4), Default::default(), Transfer::Shared), now);
    let l = leases(&j.ready(w, 1, now)).remove(0);
    let fx = j.cancel(key, now).expect("cancelled");
    assert_eq!(
        fx.effects,
        [
            Effect::PersistEnd {
                key,
                state: JobState::Cancelled,
                error: None
            },
            Effect::Revoke {
                worker: w,
                job: PhaseJob::write(key),
                lease: l.lease
            }
        ]
    );
    assert_eq!(j.jobs[&key].state, JobState::Cancelled);
    assert!(matches!(
        j.image_done(result(&l, 0, true), now),
        Err(Rejected::Stale(_))
    ));
    assert!(j.cancel(key, now).is_none(), "cancelled once");
    assert!(
        leases(&j.ready(w, 1, now)).is_empty(),
        "nothing left to lease"
    );
}

#[test]
fn cancel_is_refused_while_the_dataset_is_written() {
    let now = Instant::now();
    let mut j = machine(config(2));
    let w = worker(&mut j, now);
    let (key, _) = j.add_job(job(files(1), Default::default(), Transfer::Shared), now);
    let l = leases(&j.ready(w, 1, now)).remove(0);
    let fx = j.image_done(result(&l, 0, true), now).expect("accepted");
    assert_eq!(datasets(&fx), [key]);
    assert!(
        j.cancel(key, now).is_none(),
        "the manifest is being written"
    );
    j.finished(key, Ok(()), now);
    assert_eq!(j.jobs[&key].state, JobState::Done);
}

#[test]
fn a_queued_job_can_be_cancelled_and_the_next_one_runs() {
    let now = Instant::now();
    let mut j = machine(config(2));
    let (a, _) = j.add_job(job(files(1), Default::default(), Transfer::Shared), now);
    let (b, _) = j.add_job(job(files(1), Default::default(), Transfer::Shared), now);
    let (c, _) = j.add_job(job(files(1), Default::default(), Transfer::Shared), now);
    j.cancel(b, now).expect("cancelled while queued");
    j.cancel(a, now).expect("cancelled while running");
    assert_eq!(j.jobs[&c].state, JobState::Running);
}

/// Drives a two-phase job over `n` images whose item 1 fails to decode in
/// the statistics phase; returns the machine and the job.
fn measured(n: usize) -> (Jobs, WorkerId, JobKey, Effects) {
    let now = Instant::now();
    let mut j = machine(config(8));
    let w = worker(&mut j, now);
    let (key, _) = j.add_job(job(files(n), two_phase(), Transfer::Shared), now);
    let l = leases(&j.ready(w, 1, now)).remove(0);
    assert_eq!(l.job.phase, Phase::Stats);
    assert_eq!(l.params, None);
    let mut last = Effects::default();
    for i in 0..n as u64 {
        last = j.image_done(result(&l, i, i != 1), now).expect("accepted");
        assert!(last.stats_result);
    }
    j.lease_done(w, l.lease, now);
    (j, w, key, last)
}

#[test]
fn two_phase_jobs_measure_then_write_what_measured_ok() {
    let (mut j, w, key, fx) = measured(3);
    let jr = &j.jobs[&key];
    assert_eq!(jr.two.phase, Phase::Write);
    assert_eq!(
        jr.final_before_phase(),
        1,
        "b failed in the statistics phase"
    );
    assert!(matches!(
        &fx.effects[0],
        Effect::PersistPhase { key: k, images: 2, .. } if *k == key
    ));
    let now = Instant::now();
    let l = leases(&j.ready(w, 1, now)).remove(0);
    assert_eq!(l.job, PhaseJob::write(key));
    assert_eq!(l.items.iter().map(|i| i.index).collect::<Vec<_>>(), [0, 2]);
    assert!(
        l.params.is_some(),
        "the writing phase carries the parameters"
    );
    let mut stale = result(&l, 0, true);
    stale.job.phase = Phase::Stats;
    assert!(matches!(j.image_done(stale, now), Err(Rejected::Stale(_))));
    j.image_done(result(&l, 0, true), now).expect("accepted");
    let fx = j.image_done(result(&l, 2, true), now).expect("accepted");
    assert_eq!(datasets(&fx), [key]);
    let jr = &j.jobs[&key];
    assert_eq!((jr.counts.ok, jr.counts.failed), (2, 1));
    assert!(jr.records.iter().all(Option::is_some));
}

#[test]
fn two_phase_backlog_and_progress_are_right_in_each_phase() {
    let now = Instant::now();
    let mut j = machine(config(8));
    let w = worker(&mut j, now);
    let (key, _) = j.add_job(job(files(3), two_phase(), Transfer::Shared), now);
    let o = j.autoscale_observation();
    assert_eq!((o.backlog, o.completed, o.live_workers), (6, 0, 1));
    let l = leases(&j.ready(w, 1, now)).remove(0);
    j.image_done(result(&l, 0, true), now).expect("accepted");
    j.image_done(result(&l, 1, false), now).expect("accepted");
    let o = j.autoscale_observation();
    assert_eq!((o.backlog, o.completed), (3, 2), "1 to measure, 2 to write");
    assert_eq!(
        j.progress(key).map(|p| (p.total, p.completed)),
        Some((3, 2))
    );
    assert_eq!(j.jobs[&key].rows_final(), 1);
    j.image_done(result(&l, 2, true), now).expect("accepted");
    let o = j.autoscale_observation();
    assert_eq!((o.backlog, o.completed), (2, 3), "2 to write");
    assert_eq!(
        j.progress(key).map(|p| (p.total, p.completed)),
        Some((2, 0))
    );
    assert_eq!(j.jobs[&key].rows_final(), 1, "no drop at the switch");
}

#[test]
fn a_two_phase_job_with_nothing_to_write_completes_at_the_switch() {
    let now = Instant::now();
    let mut j = machine(config(8));
    let w = worker(&mut j, now);
    let (key, _) = j.add_job(job(files(2), two_phase(), Transfer::Shared), now);
    let l = leases(&j.ready(w, 1, now)).remove(0);
    j.image_done(result(&l, 0, false), now).expect("accepted");
    let fx = j.image_done(result(&l, 1, false), now).expect("accepted");
    assert_eq!(datasets(&fx), [key]);
}

#[test]
fn cancelling_in_the_statistics_phase_stops_both_phases() {
    let now = Instant::now();
    let mut j = machine(config(8));
    let w = worker(&mut j, now);
    let (key, _) = j.add_job(job(files(2), two_phase(), Transfer::Shared), now);
    let l = leases(&j.ready(w, 1, now)).remove(0);
    let fx = j.cancel(key, now).expect("cancelled");
    assert!(
        fx.effects
            .iter()
            .any(|e| matches!(e, Effect::Revoke { job, .. } if job.phase == Phase::Stats))
    );
    assert!(matches!(
        j.image_done(result(&l, 0, true), now),
        Err(Rejected::Stale(_))
    ));
    assert_eq!(j.jobs[&key].two.phase, Phase::Stats);
}

#[test]
fn stream_mode_writes_the_dataset_after_the_last_commit() {
    let now = Instant::now();
    let mut j = machine(config(2));
    let w = worker(&mut j, now);
    let (key, _) = j.add_job(job(files(2), Default::default(), Transfer::Stream), now);
    let l = leases(&j.ready(w, 1, now)).remove(0);
    let slot = j
        .stream_slot(w, l.job, l.lease.0, 0)
        .expect("honest")
        .expect("a slot");
    assert_eq!(slot.rel, "d/000.png.npy");
    assert!(j.stream_slot(w, l.job, l.lease.0, 7).is_err());
    assert_eq!(j.stream_slot(w, l.job, l.lease.0 + 9, 0), Ok(None));
    assert_eq!(j.input_path(key, 1), Some("in/d/001.png".into()));
    j.image_done(result(&l, 0, true), now).expect("accepted");
    let fx = j.image_done(result(&l, 1, true), now).expect("accepted");
    assert!(datasets(&fx).is_empty(), "two outputs not committed yet");
    assert_eq!(j.jobs[&key].uncommitted(), 2);
    assert!(datasets(&j.stream_committed(key, 0)).is_empty());
    assert!(j.cancel(key, now).is_none(), "complete: no cancel");
    let fx = j.write_failed(key, 1, "disk full");
    assert_eq!(datasets(&fx), [key]);
    let jr = &j.jobs[&key];
    assert_eq!((jr.counts.ok, jr.counts.failed), (1, 1));
    let r = jr.records[1].as_ref().expect("row");
    assert_eq!(r.status, Status::Failed);
    assert_eq!(jr.stats.held(), 0, "every item settled");
}

#[test]
fn persistence_effects_follow_the_switch() {
    let now = Instant::now();
    let mut j = machine(config(2));
    let w = worker(&mut j, now);
    j.add_job(job(files(1), Default::default(), Transfer::Shared), now);
    let l = leases(&j.ready(w, 1, now)).remove(0);
    let fx = j.image_done(result(&l, 0, true), now).expect("accepted");
    assert!(
        !fx.effects
            .iter()
            .any(|e| matches!(e, Effect::PersistResult(_)))
    );
    j.set_persistent(true);
    let (key, _) = j.add_job(job(files(1), Default::default(), Transfer::Shared), now);
    j.finished(JobKey(1), Ok(()), now);
    let l = leases(&j.ready(w, 1, now)).remove(0);
    let fx = j.image_done(result(&l, 0, true), now).expect("accepted");
    let Some(Effect::PersistResult(row)) = fx.effects.first() else {
        panic!("no row persisted: {fx:?}");
    };
    assert_eq!(
        (row.job, row.phase, row.index, row.lease),
        (key, Phase::Write, 0, l.lease.0)
    );
}

#[test]
fn a_restored_job_leases_only_what_has_no_result() {
    let now = Instant::now();
    let mut j = machine(config(8));
    let w = worker(&mut j, now);
    let row = |index: u64, ok: bool| ResultRow {
        job: JobKey(4),
        phase: Phase::Write,
        index,
        record: if ok {
            ok_record(&format!("d/{index:03}.png"))
        } else {
            crate::record::Record::bare("x", Status::Failed, None)
        },
        stats: ok.then(|| stats_of(&[0.0, 1.0])),
        raw: None,
        worker: "old".into(),
        worker_id: 1,
        lease: 1,
        attempt: 1,
    };
    let restored = RestoredJob {
        key: JobKey(4),
        job: job(files(3), Default::default(), Transfer::Shared),
        params: None,
        results: vec![row(1, true), row(2, false), row(9, true)],
        submitted: now,
    };
    let (pending, _) = j.restore_job(restored, now);
    assert_eq!(pending, 1);
    assert_eq!(j.next_job, 5, "stored numbers are not reused");
    let l = leases(&j.ready(w, 1, now)).remove(0);
    assert_eq!(l.items.iter().map(|i| i.index).collect::<Vec<_>>(), [0]);
    let fx = j.image_done(result(&l, 0, true), now).expect("accepted");
    assert_eq!(datasets(&fx), [JobKey(4)]);
    assert_eq!(
        j.jobs[&JobKey(4)].provenance[1]
            .as_ref()
            .map(|p| p.worker.as_str()),
        Some("old")
    );
}

#[test]
fn draining_is_recorded_once_a_worker_says_so() {
    let now = Instant::now();
    let mut j = machine(config(2));
    let w = worker(&mut j, now);
    assert!(!j.heartbeat(w, false, now));
    assert!(j.heartbeat(w, true, now));
    assert!(
        !j.heartbeat(crate::ids::WorkerId(99), true, now),
        "unknown worker"
    );
    let o = j.autoscale_observation();
    assert_eq!(o.live_workers, 0, "a draining worker takes no work");
}

/// A kept row of an earlier run for item `index` of `key`.
fn kept_row(key: JobKey, index: u64, path: &str) -> ResultRow {
    ResultRow {
        job: key,
        phase: Phase::Write,
        index,
        record: ok_record(path),
        stats: Some(stats_of(&[0.5])),
        raw: None,
        worker: String::new(),
        worker_id: 0,
        lease: 0,
        attempt: 0,
    }
}

#[test]
fn kept_rows_of_a_rerun_are_never_leased_and_fold_in_path_order() {
    let now = Instant::now();
    let mut j = machine(config(8));
    let w = worker(&mut j, now);
    let f = files(3);
    let kept = vec![kept_row(JobKey(1), 1, &f[1])];
    let (key, _) = j.add_job_kept(job(f, Default::default(), Transfer::Shared), kept, now);
    let l = leases(&j.ready(w, 1, now)).remove(0);
    assert_eq!(
        l.items.iter().map(|i| i.index).collect::<Vec<_>>(),
        [0, 2],
        "the kept item is not leased"
    );
    assert_eq!(j.jobs[&key].counts.ok, 1, "the kept row counts");
    j.image_done(result(&l, 0, true), now).expect("accepted");
    let fx = j.image_done(result(&l, 2, true), now).expect("accepted");
    assert_eq!(datasets(&fx), [key], "done once the leased items are");
    assert_eq!(j.jobs[&key].counts.ok, 3);
}

#[test]
fn a_rerun_keeping_every_row_is_done_at_once() {
    let now = Instant::now();
    let mut j = machine(config(8));
    let f = files(2);
    let kept = vec![kept_row(JobKey(1), 0, &f[0]), kept_row(JobKey(1), 1, &f[1])];
    let (key, fx) = j.add_job_kept(job(f, Default::default(), Transfer::Shared), kept, now);
    assert_eq!(datasets(&fx), [key]);
}
