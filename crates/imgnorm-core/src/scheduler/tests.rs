//! Unit tests of every scheduler transition, plus a property test over random
//! interleavings of leases, results, deaths and ticks. Time is plain `Instant`
//! arithmetic from one base: nothing sleeps.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;

use super::*;

const W1: WorkerId = WorkerId(1);
const W2: WorkerId = WorkerId(2);
const W3: WorkerId = WorkerId(3);

fn job(name: &str) -> JobId {
    JobId(name.to_string())
}

fn secs(base: Instant, s: u64) -> Instant {
    base + Duration::from_secs(s)
}

fn sched(config: SchedulerConfig) -> Scheduler {
    Scheduler::new(config).expect("valid config")
}

fn config(batch_size: u64) -> SchedulerConfig {
    SchedulerConfig {
        batch_size,
        ..SchedulerConfig::default()
    }
}

fn lease(s: &mut Scheduler, w: WorkerId, now: Instant) -> Lease {
    s.lease(w, now).expect("worker ok").expect("work available")
}

/// Completes an item that must be accepted; returns the follow-up events.
fn accept(s: &mut Scheduler, w: WorkerId, l: LeaseId, item: u64, now: Instant) -> Vec<Event> {
    match s.complete_item(w, l, item, now) {
        Ok(ItemVerdict::Accepted { events }) => events,
        other => panic!("item {item} of {l} not accepted: {other:?}"),
    }
}

fn discarded(s: &mut Scheduler, w: WorkerId, l: LeaseId, item: u64, now: Instant) -> DiscardReason {
    match s.complete_item(w, l, item, now) {
        Ok(ItemVerdict::Discarded(reason)) => reason,
        other => panic!("item {item} of {l} not discarded: {other:?}"),
    }
}

fn complete_all(s: &mut Scheduler, w: WorkerId, l: &Lease, now: Instant) -> Vec<Event> {
    let mut events = Vec::new();
    for &item in &l.items {
        events.extend(accept(s, w, l.id, item, now));
    }
    events.extend(s.finish_lease(w, l.id, now).expect("finish"));
    events
}

fn count_complete(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::JobComplete(_)))
        .count()
}

#[test]
fn config_is_validated() {
    assert_eq!(
        Scheduler::new(config(0)).err(),
        Some(SchedError::ZeroSetting {
            field: "batch_size"
        })
    );
    let bad = SchedulerConfig {
        batch_size: 4,
        min_batch_size: 8,
        ..SchedulerConfig::default()
    };
    assert_eq!(
        Scheduler::new(bad).err(),
        Some(SchedError::MinBatchAboveMax { min: 8, max: 4 })
    );
    let bad = SchedulerConfig {
        max_crashes: 0,
        ..SchedulerConfig::default()
    };
    assert!(matches!(
        Scheduler::new(bad),
        Err(SchedError::ZeroSetting {
            field: "max_crashes"
        })
    ));
}

#[test]
fn batches_are_cut_in_order_and_shrink_at_the_tail() {
    let t = Instant::now();
    let mut s = sched(config(64));
    s.add_job(job("a"), 200, t).unwrap();
    s.register(W1, t).unwrap();
    let mut sizes = Vec::new();
    let mut next = 0;
    let mut batches = BTreeSet::new();
    while let Some(l) = s.lease(W1, t).unwrap() {
        assert_eq!(l.attempt, 1);
        assert!(!l.speculative);
        assert_eq!(
            l.items,
            (next..next + l.items.len() as u64).collect::<Vec<_>>()
        );
        next += l.items.len() as u64;
        assert!(batches.insert(l.batch), "fresh batch id");
        sizes.push(l.items.len());
        complete_all(&mut s, W1, &l, t);
    }
    // ceil(remaining / (2 * 1 worker)), at most 64.
    assert_eq!(sizes, vec![64, 64, 36, 18, 9, 5, 2, 1, 1]);

    // More workers: smaller share each; min_batch_size is a floor.
    let mut s = sched(SchedulerConfig {
        batch_size: 64,
        min_batch_size: 4,
        ..SchedulerConfig::default()
    });
    s.add_job(job("b"), 100, t).unwrap();
    for w in [W1, W2, W3] {
        s.register(w, t).unwrap();
    }
    s.register(WorkerId(4), t).unwrap();
    // 4 workers: ceil(100 / 8) = 13.
    assert_eq!(lease(&mut s, W1, t).items.len(), 13);
    // 87 left: ceil(87 / 8) = 11.
    assert_eq!(lease(&mut s, W2, t).items.len(), 11);
    let mut total = 24;
    let mut last = 0;
    while let Some(l) = s.lease(W3, t).unwrap() {
        last = l.items.len();
        total += last;
        assert!(last >= 1);
    }
    assert_eq!(total, 100);
    assert!(last <= 4, "tail batches are small, got {last}");
}

#[test]
fn only_dead_workers_are_forgotten_and_their_late_results_refused() {
    let t = Instant::now();
    let mut s = sched(config(2));
    s.add_job(job("j"), 4, t).expect("job");
    s.register(W1, t).expect("w1");
    s.register(W2, t).expect("w2");
    let l = lease(&mut s, W1, t);
    assert!(!s.forget_worker(W1), "a live worker is kept");
    assert!(!s.forget_worker(W3), "an unknown worker is not forgotten");
    s.disconnect(W1, t);
    assert!(s.forget_worker(W1));
    assert_eq!(s.workers().count(), 1);
    assert!(s.complete_item(W1, l.id, l.items[0], t).is_err());
    // Its work went back and is done by the other worker.
    let l2 = lease(&mut s, W2, t);
    assert_eq!(l2.items, l.items);
}

#[test]
fn lease_ids_are_monotonic() {
    let t = Instant::now();
    let mut s = sched(config(2));
    s.add_job(job("a"), 10, t).unwrap();
    s.register(W1, t).unwrap();
    let ids: Vec<LeaseId> = (0..4).map(|_| lease(&mut s, W1, t).id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn heartbeat_keeps_a_worker_alive() {
    let t = Instant::now();
    let mut s = sched(SchedulerConfig::default()); // 10 s timeout
    s.register(W1, t).unwrap();
    s.heartbeat(W1, secs(t, 8)).unwrap();
    assert!(s.tick(secs(t, 15)).is_empty());
    assert_eq!(s.live_workers(), 1);
    // A result counts as liveness too.
    s.add_job(job("a"), 4, t).unwrap();
    let l = lease(&mut s, W1, secs(t, 16));
    accept(&mut s, W1, l.id, l.items[0], secs(t, 24));
    assert!(s.tick(secs(t, 33)).is_empty());
    let view = s.workers().next().unwrap();
    assert_eq!(view.state, WorkerState::Alive);
    assert_eq!(view.last_seen, secs(t, 24));
    assert_eq!(view.items_done, 1);
    assert_eq!(view.leases, vec![l.id]);
}

#[test]
fn silent_worker_expires_on_tick_and_its_items_are_requeued() {
    let t = Instant::now();
    let mut s = sched(config(4));
    s.add_job(job("a"), 4, t).unwrap();
    s.register(W1, t).unwrap();
    s.register(W2, t).unwrap();
    let l = lease(&mut s, W1, t);
    assert_eq!(l.items.len(), 1, "ceil(4 / (2 * 2))");
    s.heartbeat(W2, secs(t, 9)).unwrap();
    assert!(s.tick(secs(t, 10)).is_empty(), "not yet past the timeout");
    let events = s.tick(secs(t, 11));
    assert_eq!(
        events,
        vec![
            Event::WorkerDead {
                worker: W1,
                reason: DeathReason::Timeout,
                requeued: 1
            },
            Event::Requeued {
                job: job("a"),
                lease: l.id,
                items: 1
            },
        ]
    );
    assert_eq!(s.live_workers(), 1);
    // The suspect comes first, alone, as the next attempt of its batch.
    let again = lease(&mut s, W2, secs(t, 11));
    assert_eq!(again.items, l.items);
    assert_eq!(again.batch, l.batch);
    assert_eq!(again.attempt, 2);
    assert_eq!(s.job_progress(&job("a")).unwrap().reissued, 1);
}

#[test]
fn disconnect_requeues_at_once_and_dead_worker_must_register_again() {
    let t = Instant::now();
    let mut s = sched(config(8));
    s.add_job(job("a"), 8, t).unwrap();
    s.register(W1, t).unwrap();
    let l = lease(&mut s, W1, t);
    assert_eq!(l.items.len(), 4);
    let events = s.disconnect(W1, t);
    assert_eq!(
        events[0],
        Event::WorkerDead {
            worker: W1,
            reason: DeathReason::Disconnected,
            requeued: 4
        }
    );
    assert!(s.disconnect(W1, t).is_empty(), "already dead");
    assert_eq!(s.heartbeat(W1, t), Err(SchedError::WorkerDead(W1)));
    assert_eq!(s.lease(W1, t), Err(SchedError::WorkerDead(W1)));
    assert_eq!(s.heartbeat(W2, t), Err(SchedError::UnknownWorker(W2)));
    let p = s.job_progress(&job("a")).unwrap();
    assert_eq!((p.pending, p.suspects, p.in_flight), (8, 4, 0));
    s.register(W1, t).unwrap();
    assert_eq!(s.register(W1, t), Err(SchedError::AlreadyRegistered(W1)));
    assert_eq!(lease(&mut s, W1, t).items, vec![0]);
}

#[test]
fn late_result_after_expiry_is_discarded() {
    let t = Instant::now();
    let mut s = sched(config(4));
    s.add_job(job("a"), 2, t).unwrap();
    s.register(W1, t).unwrap();
    let l = lease(&mut s, W1, t);
    s.tick(secs(t, 60));
    // While dead: an error, nothing recorded.
    assert_eq!(
        s.complete_item(W1, l.id, l.items[0], secs(t, 61)),
        Err(SchedError::WorkerDead(W1))
    );
    // Registered again: the old lease is gone for good.
    s.register(W1, secs(t, 62)).unwrap();
    assert_eq!(
        discarded(&mut s, W1, l.id, l.items[0], secs(t, 62)),
        DiscardReason::UnknownLease
    );
    assert_eq!(
        s.finish_lease(W1, l.id, secs(t, 62)),
        Err(SchedError::UnknownLease {
            worker: W1,
            lease: l.id
        })
    );
    let newer = lease(&mut s, W1, secs(t, 62));
    assert_eq!(newer.items, vec![l.items[0]]);
    accept(&mut s, W1, newer.id, newer.items[0], secs(t, 63));
}

#[test]
fn duplicate_and_foreign_results_are_discarded() {
    let t = Instant::now();
    let mut s = sched(config(4));
    s.add_job(job("a"), 16, t).unwrap();
    s.register(W1, t).unwrap();
    s.register(W2, t).unwrap();
    let l1 = lease(&mut s, W1, t);
    let l2 = lease(&mut s, W2, t);
    accept(&mut s, W1, l1.id, l1.items[0], t);
    assert_eq!(
        discarded(&mut s, W1, l1.id, l1.items[0], t),
        DiscardReason::AlreadyCompleted
    );
    assert_eq!(
        discarded(&mut s, W1, l1.id, l2.items[0], t),
        DiscardReason::NotInLease
    );
    assert_eq!(
        discarded(&mut s, W1, l2.id, l2.items[0], t),
        DiscardReason::NotLeaseHolder
    );
    assert_eq!(
        s.finish_lease(W1, l2.id, t),
        Err(SchedError::NotLeaseHolder {
            worker: W1,
            lease: l2.id,
            holder: W2
        })
    );
    assert_eq!(
        discarded(&mut s, W1, LeaseId(999), 0, t),
        DiscardReason::UnknownLease
    );
    assert_eq!(s.job_progress(&job("a")).unwrap().completed, 1);
}

#[test]
fn completed_items_of_a_dead_worker_are_not_redone() {
    let t = Instant::now();
    let mut s = sched(config(4));
    s.add_job(job("a"), 8, t).unwrap();
    s.register(W1, t).unwrap();
    let l = lease(&mut s, W1, t);
    assert_eq!(l.items, vec![0, 1, 2, 3]);
    accept(&mut s, W1, l.id, 0, t);
    accept(&mut s, W1, l.id, 1, t);
    let events = s.disconnect(W1, t);
    assert!(events.contains(&Event::Requeued {
        job: job("a"),
        lease: l.id,
        items: 2
    }));
    s.register(W2, t).unwrap();
    let mut seen = Vec::new();
    while let Some(l) = s.lease(W2, t).unwrap() {
        seen.extend(l.items.iter().copied());
        complete_all(&mut s, W2, &l, t);
    }
    seen.sort_unstable();
    assert_eq!(seen, vec![2, 3, 4, 5, 6, 7]);
    assert!(s.job_progress(&job("a")).unwrap().finished);
}

#[test]
fn poison_image_is_quarantined_while_innocent_neighbours_complete() {
    let t = Instant::now();
    let mut s = sched(SchedulerConfig {
        batch_size: 8,
        min_batch_size: 8,
        ..SchedulerConfig::default()
    });
    const POISON: u64 = 5;
    s.add_job(job("a"), 8, t).unwrap();
    let mut next_worker = 1;
    let mut quarantined = Vec::new();
    let mut completes = 0;
    // Workers that crash on the poison image and process everything else.
    'outer: for _ in 0..20 {
        let w = WorkerId(next_worker);
        next_worker += 1;
        s.register(w, t).unwrap();
        while let Some(l) = s.lease(w, t).unwrap() {
            for &item in &l.items {
                if item == POISON {
                    let events = s.disconnect(w, t);
                    completes += count_complete(&events);
                    for e in events {
                        if let Event::Quarantined { item, crashes, .. } = e {
                            quarantined.push((item, crashes));
                        }
                    }
                    continue 'outer;
                }
                completes += count_complete(&accept(&mut s, w, l.id, item, t));
            }
            completes += count_complete(&s.finish_lease(w, l.id, t).unwrap());
        }
        break;
    }
    assert_eq!(quarantined, vec![(POISON, 3)]);
    assert_eq!(completes, 1);
    let p = s.job_progress(&job("a")).unwrap();
    assert_eq!((p.completed, p.quarantined, p.pending), (8, 1, 0));
    // One batch crash, then three single-image crashes; the fifth worker
    // found nothing left to do.
    assert_eq!(next_worker - 1, 5);
}

#[test]
fn suspect_given_back_stays_suspect_without_a_crash() {
    let t = Instant::now();
    let mut s = sched(SchedulerConfig {
        max_crashes: 1,
        ..config(4)
    });
    s.add_job(job("a"), 2, t).unwrap();
    s.register(W1, t).unwrap();
    lease(&mut s, W1, t);
    s.disconnect(W1, t);
    s.register(W2, t).unwrap();
    let l = lease(&mut s, W2, t);
    assert_eq!(l.items, vec![0]);
    s.finish_lease(W2, l.id, t).unwrap();
    let p = s.job_progress(&job("a")).unwrap();
    assert_eq!((p.suspects, p.quarantined), (1, 0));
    let again = lease(&mut s, W2, t);
    assert_eq!((again.items.clone(), again.attempt), (vec![0], 3));
}

#[test]
fn draining_worker_gets_nothing_new_but_finishes_its_lease() {
    let t = Instant::now();
    let mut s = sched(config(4));
    s.add_job(job("a"), 16, t).unwrap();
    s.register(W1, t).unwrap();
    let l = lease(&mut s, W1, t);
    s.set_draining(W1).unwrap();
    s.set_draining(W1).unwrap();
    assert_eq!(s.lease(W1, t), Ok(None));
    assert_eq!(s.live_workers(), 1);
    complete_all(&mut s, W1, &l, t);
    assert_eq!(s.workers().next().unwrap().state, WorkerState::Draining);
    // Giving back a batch: the items go back to pending, same batch, next attempt.
    s.register(W2, t).unwrap();
    let l2 = lease(&mut s, W2, t);
    let events = s.finish_lease(W2, l2.id, t).unwrap();
    assert_eq!(
        events,
        vec![Event::Requeued {
            job: job("a"),
            lease: l2.id,
            items: l2.items.len()
        }]
    );
    let l3 = lease(&mut s, W2, t);
    assert_eq!((l3.batch, l3.attempt, &l3.items), (l2.batch, 2, &l2.items));
    assert_eq!(s.set_draining(W3), Err(SchedError::UnknownWorker(W3)));
}

#[test]
fn speculative_copy_first_result_wins_and_the_other_copy_is_revoked() {
    let t = Instant::now();
    let mut s = sched(SchedulerConfig {
        batch_size: 4,
        min_batch_size: 4,
        ..SchedulerConfig::default()
    });
    s.add_job(job("a"), 4, t).unwrap();
    s.register(W1, t).unwrap();
    s.register(W2, t).unwrap();
    let orig = lease(&mut s, W1, t);
    assert_eq!(orig.items, vec![0, 1, 2, 3]);
    accept(&mut s, W1, orig.id, 0, t);
    // W1 cannot copy its own lease.
    assert_eq!(s.lease(W1, t), Ok(None));
    let copy = lease(&mut s, W2, t);
    assert!(copy.speculative);
    assert_eq!(copy.items, vec![1, 2, 3]);
    assert_eq!((copy.batch, copy.attempt), (orig.batch, 2));
    // Only one copy per lease.
    s.register(W3, t).unwrap();
    assert_eq!(s.lease(W3, t), Ok(None));

    accept(&mut s, W2, copy.id, 1, t);
    assert_eq!(
        discarded(&mut s, W1, orig.id, 1, t),
        DiscardReason::AlreadyCompleted
    );
    assert!(accept(&mut s, W1, orig.id, 2, t).is_empty());
    let events = accept(&mut s, W2, copy.id, 3, t);
    assert_eq!(
        events,
        vec![
            Event::Revoke {
                job: job("a"),
                worker: W1,
                lease: orig.id
            },
            Event::JobComplete(job("a")),
        ]
    );
    assert_eq!(
        discarded(&mut s, W1, orig.id, 3, t),
        DiscardReason::UnknownLease
    );
    assert!(s.finish_lease(W2, copy.id, t).unwrap().is_empty());
    let views: BTreeMap<WorkerId, u64> = s.workers().map(|v| (v.id, v.items_done)).collect();
    assert_eq!(views[&W1], 2);
    assert_eq!(views[&W2], 2);
}

#[test]
fn dead_original_leaves_its_items_to_the_speculative_copy() {
    let t = Instant::now();
    let mut s = sched(SchedulerConfig {
        batch_size: 4,
        min_batch_size: 4,
        ..SchedulerConfig::default()
    });
    s.add_job(job("a"), 4, t).unwrap();
    s.register(W1, t).unwrap();
    s.register(W2, t).unwrap();
    let orig = lease(&mut s, W1, t);
    let copy = lease(&mut s, W2, t);
    let events = s.disconnect(W1, t);
    assert_eq!(
        events,
        vec![Event::WorkerDead {
            worker: W1,
            reason: DeathReason::Disconnected,
            requeued: 0
        }]
    );
    assert_eq!(s.job_progress(&job("a")).unwrap().pending, 0);
    let events = complete_all(&mut s, W2, &copy, t);
    assert_eq!(events, vec![Event::JobComplete(job("a"))]);
    let _ = orig;
}

#[test]
fn no_speculation_when_disabled_or_on_suspects() {
    let t = Instant::now();
    let mut s = sched(SchedulerConfig {
        speculate: false,
        ..config(4)
    });
    s.add_job(job("a"), 2, t).unwrap();
    s.register(W1, t).unwrap();
    s.register(W2, t).unwrap();
    lease(&mut s, W1, t);
    lease(&mut s, W1, t);
    assert_eq!(s.lease(W2, t), Ok(None));

    let mut s = sched(config(4));
    s.add_job(job("a"), 1, t).unwrap();
    s.register(W1, t).unwrap();
    lease(&mut s, W1, t);
    s.disconnect(W1, t);
    s.register(W2, t).unwrap();
    s.register(W3, t).unwrap();
    let suspect = lease(&mut s, W2, t);
    assert_eq!(suspect.items, vec![0]);
    assert_eq!(s.lease(W3, t), Ok(None), "suspects are never copied");
}

#[test]
fn busy_worker_gets_no_speculative_copy() {
    let t = Instant::now();
    let mut s = sched(SchedulerConfig {
        batch_size: 2,
        min_batch_size: 2,
        ..SchedulerConfig::default()
    });
    s.add_job(job("a"), 4, t).unwrap();
    s.register(W1, t).unwrap();
    s.register(W2, t).unwrap();
    lease(&mut s, W1, t);
    let mine = lease(&mut s, W2, t);
    assert_eq!(s.lease(W2, t), Ok(None), "W2 still has work");
    accept(&mut s, W2, mine.id, mine.items[0], t);
    accept(&mut s, W2, mine.id, mine.items[1], t);
    assert!(lease(&mut s, W2, t).speculative, "idle now");
}

#[test]
fn jobs_are_served_fifo() {
    let t = Instant::now();
    let mut s = sched(SchedulerConfig {
        batch_size: 2,
        min_batch_size: 2,
        speculate: false,
        ..SchedulerConfig::default()
    });
    s.add_job(job("a"), 4, t).unwrap();
    s.add_job(job("b"), 4, t).unwrap();
    assert_eq!(
        s.add_job(job("a"), 1, t),
        Err(SchedError::DuplicateJob(job("a")))
    );
    s.register(W1, t).unwrap();
    let order: Vec<JobId> = std::iter::from_fn(|| s.lease(W1, t).unwrap())
        .map(|l| l.job)
        .collect();
    assert_eq!(order, vec![job("a"), job("a"), job("b"), job("b")]);
}

#[test]
fn cancel_drops_pending_work_and_revokes_leases() {
    let t = Instant::now();
    let mut s = sched(config(2));
    s.add_job(job("a"), 10, t).unwrap();
    s.add_job(job("b"), 2, t).unwrap();
    s.register(W1, t).unwrap();
    let l = lease(&mut s, W1, t);
    assert_eq!(l.job, job("a"));
    let events = s.cancel_job(&job("a")).unwrap();
    assert_eq!(
        events,
        vec![Event::Revoke {
            job: job("a"),
            worker: W1,
            lease: l.id
        }]
    );
    assert_eq!(
        discarded(&mut s, W1, l.id, l.items[0], t),
        DiscardReason::UnknownLease
    );
    assert!(s.job_progress(&job("a")).is_none());
    assert_eq!(
        s.cancel_job(&job("a")),
        Err(SchedError::UnknownJob(job("a")))
    );
    assert!(s.workers().next().unwrap().leases.is_empty());
    assert_eq!(lease(&mut s, W1, t).job, job("b"));
    // The id may be reused after a cancel.
    s.add_job(job("a"), 1, t).unwrap();
}

#[test]
fn job_complete_is_emitted_exactly_once() {
    let t = Instant::now();
    let mut s = sched(config(3));
    s.add_job(job("a"), 7, t).unwrap();
    s.register(W1, t).unwrap();
    s.register(W2, t).unwrap();
    let mut completes = 0;
    let mut held = Vec::new();
    while let Some(l) = s.lease(W1, t).unwrap() {
        held.push(l);
    }
    for l in &held {
        for &i in &l.items {
            completes += count_complete(&accept(&mut s, W1, l.id, i, t));
            // Duplicates after completion produce nothing.
            assert_eq!(
                discarded(&mut s, W1, l.id, i, t),
                DiscardReason::AlreadyCompleted
            );
        }
    }
    for l in &held {
        completes += count_complete(&s.finish_lease(W1, l.id, t).unwrap());
    }
    completes += count_complete(&s.disconnect(W1, t));
    completes += count_complete(&s.tick(secs(t, 100)));
    assert_eq!(completes, 1);
    let p = s.job_progress(&job("a")).unwrap();
    assert!(p.finished);
    assert_eq!(
        (p.completed, p.pending, p.in_flight, p.leases_active),
        (7, 0, 0, 0)
    );
    assert_eq!(s.lease(W2, secs(t, 100)), Err(SchedError::WorkerDead(W2)));
}

#[test]
fn zero_image_job_completes_at_once() {
    let t = Instant::now();
    let mut s = sched(SchedulerConfig::default());
    assert_eq!(
        s.add_job(job("empty"), 0, t).unwrap(),
        vec![Event::JobComplete(job("empty"))]
    );
    s.register(W1, t).unwrap();
    assert_eq!(s.lease(W1, t), Ok(None));
    assert!(s.job_progress(&job("empty")).unwrap().finished);
}

#[test]
fn job_waits_without_workers_and_resumes_when_one_registers() {
    let t = Instant::now();
    let mut s = sched(config(8));
    s.add_job(job("a"), 3, t).unwrap();
    assert!(s.tick(secs(t, 3600)).is_empty());
    assert_eq!(s.live_workers(), 0);
    let p = s.job_progress(&job("a")).unwrap();
    assert_eq!((p.pending, p.finished), (3, false));
    s.register(W1, secs(t, 3600)).unwrap();
    let mut completes = 0;
    while let Some(l) = s.lease(W1, secs(t, 3600)).unwrap() {
        completes += count_complete(&complete_all(&mut s, W1, &l, secs(t, 3600)));
    }
    assert_eq!(completes, 1);
}

#[test]
fn progress_counts_add_up() {
    let t = Instant::now();
    let mut s = sched(config(4));
    s.add_job(job("a"), 20, t).unwrap();
    s.register(W1, t).unwrap();
    let l = lease(&mut s, W1, t);
    accept(&mut s, W1, l.id, l.items[0], t);
    let p = s.job_progress(&job("a")).unwrap();
    assert_eq!(p.completed, 1);
    assert_eq!(p.in_flight, l.items.len() as u64 - 1);
    assert_eq!(p.pending, 20 - l.items.len() as u64);
    assert_eq!(p.leases_active, 1);
    assert_eq!(p.added, t);
}

// ----- property test -----------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Register(u64),
    Heartbeat(u64),
    Lease(u64),
    /// Report up to `n` not yet reported items of the worker's oldest lease.
    Complete(u64, usize),
    /// Report an item of a lease the worker may no longer hold.
    Stale(u64, usize),
    Finish(u64),
    Drain(u64),
    Disconnect(u64),
    Advance(u64),
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    let w = 0..4u64;
    prop_oneof![
        1 => w.clone().prop_map(Op::Register),
        2 => w.clone().prop_map(Op::Heartbeat),
        4 => w.clone().prop_map(Op::Lease),
        6 => (w.clone(), 1..6usize).prop_map(|(w, n)| Op::Complete(w, n)),
        1 => (w.clone(), 0..64usize).prop_map(|(w, i)| Op::Stale(w, i)),
        2 => w.clone().prop_map(Op::Finish),
        1 => w.clone().prop_map(Op::Drain),
        1 => w.prop_map(Op::Disconnect),
        2 => (1..8u64).prop_map(Op::Advance),
        1 => Just(Op::Tick),
    ]
}

/// What the caller side records: every accepted or quarantined image, and
/// every `JobComplete`.
#[derive(Default)]
struct Model {
    /// Leases each worker believes it holds, with how many items it reported.
    held: HashMap<u64, Vec<(Lease, usize)>>,
    /// Every lease ever handed out, for stale results.
    all: Vec<(u64, Lease)>,
    recorded: HashMap<(JobId, u64), &'static str>,
    completes: HashMap<JobId, usize>,
}

impl Model {
    fn events(&mut self, events: Vec<Event>) {
        for e in events {
            match e {
                Event::JobComplete(j) => *self.completes.entry(j).or_default() += 1,
                Event::Quarantined { job, item, .. } => {
                    let prev = self.recorded.insert((job, item), "quarantined");
                    assert!(prev.is_none(), "quarantined after {prev:?}");
                }
                Event::Revoke { worker, lease, .. } => {
                    if let Some(h) = self.held.get_mut(&worker.0) {
                        h.retain(|(l, _)| l.id != lease);
                    }
                }
                Event::WorkerDead { .. } | Event::Requeued { .. } => {}
            }
        }
    }

    fn verdict(&mut self, lease: &Lease, item: u64, v: Result<ItemVerdict, SchedError>) {
        if let Ok(ItemVerdict::Accepted { events }) = v {
            let prev = self.recorded.insert((lease.job.clone(), item), "accepted");
            assert!(prev.is_none(), "item {item} accepted after {prev:?}");
            self.events(events);
        }
    }
}

fn check_progress(s: &Scheduler, jobs: &[(JobId, u64)]) {
    for (j, n) in jobs {
        let p = s.job_progress(j).expect("job known");
        assert_eq!(p.total, *n);
        assert_eq!(p.completed + p.pending + p.in_flight, p.total, "{p:?}");
        assert!(p.suspects <= p.pending);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_item_is_recorded_exactly_once(
        sizes in proptest::collection::vec(0..50u64, 1..4),
        batch_size in 1..8u64,
        max_crashes in 1..4u32,
        speculate in any::<bool>(),
        ops in proptest::collection::vec(op(), 0..200),
    ) {
        let base = Instant::now();
        let mut now = base;
        let mut s = sched(SchedulerConfig {
            batch_size,
            min_batch_size: 1,
            heartbeat_timeout: Duration::from_secs(10),
            max_crashes,
            speculate,
        });
        let mut m = Model::default();
        let jobs: Vec<(JobId, u64)> = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| (job(&format!("job-{i}")), *n))
            .collect();
        for (j, n) in &jobs {
            let events = s.add_job(j.clone(), *n, now).unwrap();
            m.events(events);
        }
        for op in ops {
            match op {
                Op::Register(w) => {
                    if s.register(WorkerId(w), now).is_ok() {
                        m.held.remove(&w);
                    }
                }
                Op::Heartbeat(w) => {
                    let _ = s.heartbeat(WorkerId(w), now);
                }
                Op::Lease(w) => {
                    if let Ok(Some(l)) = s.lease(WorkerId(w), now) {
                        m.all.push((w, l.clone()));
                        m.held.entry(w).or_default().push((l, 0));
                    }
                }
                Op::Complete(w, n) => {
                    let Some((l, done)) = m.held.get_mut(&w).and_then(|h| h.first_mut()) else {
                        continue;
                    };
                    let todo: Vec<u64> = l.items.iter().skip(*done).take(n).copied().collect();
                    *done += todo.len();
                    let l = l.clone();
                    for item in todo {
                        let v = s.complete_item(WorkerId(w), l.id, item, now);
                        m.verdict(&l, item, v);
                    }
                }
                Op::Stale(w, i) => {
                    if m.all.is_empty() {
                        continue;
                    }
                    let (_, l) = m.all[i % m.all.len()].clone();
                    let item = l.items[i % l.items.len()];
                    let v = s.complete_item(WorkerId(w), l.id, item, now);
                    m.verdict(&l, item, v);
                }
                Op::Finish(w) => {
                    let Some(h) = m.held.get_mut(&w) else { continue };
                    if h.is_empty() {
                        continue;
                    }
                    let (l, _) = h.remove(0);
                    if let Ok(events) = s.finish_lease(WorkerId(w), l.id, now) {
                        m.events(events);
                    }
                }
                Op::Drain(w) => {
                    let _ = s.set_draining(WorkerId(w));
                }
                Op::Disconnect(w) => {
                    let events = s.disconnect(WorkerId(w), now);
                    m.events(events);
                }
                Op::Advance(secs) => now += Duration::from_secs(secs),
                Op::Tick => {
                    let events = s.tick(now);
                    m.events(events);
                }
            }
            check_progress(&s, &jobs);
        }

        // Everyone still around leaves; one reliable worker finishes the rest.
        for w in 0..4 {
            let events = s.disconnect(WorkerId(w), now);
            m.events(events);
        }
        let last = WorkerId(100);
        s.register(last, now).unwrap();
        let mut rounds = 0;
        while let Some(l) = s.lease(last, now).unwrap() {
            rounds += 1;
            prop_assert!(rounds < 10_000, "does not terminate");
            for &item in &l.items {
                let v = s.complete_item(last, l.id, item, now);
                m.verdict(&l, item, v);
            }
            let events = s.finish_lease(last, l.id, now).unwrap();
            m.events(events);
            check_progress(&s, &jobs);
        }
        for (j, n) in &jobs {
            prop_assert_eq!(m.completes.get(j).copied().unwrap_or(0), 1, "JobComplete of {}", j);
            for item in 0..*n {
                prop_assert!(m.recorded.contains_key(&(j.clone(), item)), "{} item {} never recorded", j, item);
            }
            let p = s.job_progress(j).unwrap();
            prop_assert!(p.finished);
            prop_assert_eq!(p.completed, *n);
            let quarantined = m
                .recorded
                .iter()
                .filter(|((jj, _), how)| jj == j && **how == "quarantined")
                .count() as u64;
            prop_assert_eq!(p.quarantined, quarantined);
        }
        prop_assert_eq!(m.recorded.len() as u64, jobs.iter().map(|(_, n)| n).sum::<u64>());
    }
}

#[test]
fn suspects_are_leased_only_to_idle_workers_which_then_get_nothing_else() {
    let t = Instant::now();
    let mut s = sched(SchedulerConfig {
        batch_size: 4,
        min_batch_size: 4,
        ..SchedulerConfig::default()
    });
    s.add_job(job("a"), 12, t).unwrap();
    let (w1, w2) = (WorkerId(1), WorkerId(2));
    s.register(w1, t).unwrap();
    s.register(w2, t).unwrap();
    let first = lease(&mut s, w1, t);
    let busy = lease(&mut s, w2, t);
    // w1 dies holding 4 images: they become suspects.
    s.disconnect(w1, t);
    // w2 still holds a batch: it gets normal work, not a suspect.
    let next = lease(&mut s, w2, t);
    assert!(
        next.items.iter().all(|i| !first.items.contains(i)),
        "{next:?}"
    );
    complete_all(&mut s, w2, &busy, t);
    complete_all(&mut s, w2, &next, t);
    // Idle now: one suspect, alone, and nothing more while it is held.
    let suspect = lease(&mut s, w2, t);
    assert_eq!(suspect.items.len(), 1);
    assert!(first.items.contains(&suspect.items[0]));
    assert!(
        s.lease(w2, t).unwrap().is_none(),
        "no prefetch beside a suspect"
    );
}
