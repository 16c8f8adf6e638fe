//! Property test: whatever the order of credits, results (honest, repeated,
//! late), lease hand-backs, worker losses and ticks, once the job is driven
//! to its end every image ends exactly once as done, failed or quarantined,
//! and the dataset is written exactly once.
use std::collections::HashMap;
use std::time::Instant;

use proptest::prelude::*;

use crate::ids::WorkerId;
use crate::record::Status;
use crate::scheduler::SchedulerConfig;

use super::testkit::*;
use super::*;

#[derive(Debug, Clone)]
enum Op {
    /// Slot `w` asks for `n` leases.
    Ready(usize, u32),
    /// The holder of an outstanding lease sends its next item's result.
    Result { pick: usize, ok: bool },
    /// A result already sent is sent again.
    Repeat(usize),
    /// The holder of an outstanding lease closes it.
    LeaseDone(usize),
    /// Slot `w`'s worker disconnects; a new worker takes the slot.
    Lose(usize),
    /// Time passes.
    Tick(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, 1..4u32).prop_map(|(w, n)| Op::Ready(w, n)),
        (any::<usize>(), prop::bool::weighted(0.8)).prop_map(|(pick, ok)| Op::Result { pick, ok }),
        any::<usize>().prop_map(Op::Repeat),
        any::<usize>().prop_map(Op::LeaseDone),
        (0..3usize).prop_map(Op::Lose),
        (1..4u64).prop_map(Op::Tick),
    ]
}

/// The test's view of the world: live workers by slot, leases seen.
struct World {
    j: Jobs,
    now: Instant,
    slots: Vec<WorkerId>,
    /// Leases handed out, with the items their holder has not answered.
    out: Vec<(LeaseOrder, Vec<u64>)>,
    sent: Vec<ImageResult>,
    /// Final rows per item (persisted results and quarantines).
    finals: HashMap<u64, u32>,
    datasets: u32,
}

impl World {
    fn absorb(&mut self, fx: Effects) {
        for e in fx.effects {
            match e {
                Effect::SendLease(l) => {
                    let items = l.items.iter().map(|i| i.index).collect();
                    self.out.push((l, items));
                }
                Effect::WorkerDead { worker, .. } => {
                    if let Some(i) = self.slots.iter().position(|w| *w == worker) {
                        self.slots[i] = self.j.register(WorkerInfo::default(), self.now);
                    }
                }
                Effect::PersistResult(r) => {
                    let last = r.phase == Phase::Write || r.record.status != Status::Ok;
                    if last {
                        *self.finals.entry(r.index).or_default() += 1;
                    }
                }
                Effect::WriteDataset(_) => self.datasets += 1,
                _ => {}
            }
        }
    }

    fn step(&mut self, op: Op) {
        let now = self.now;
        match op {
            Op::Ready(w, n) => {
                let w = self.slots[w];
                self.j.touch(w, now);
                let fx = self.j.ready(w, n, now);
                self.absorb(fx);
            }
            Op::Result { pick, ok } => self.answer(pick, ok),
            Op::Repeat(pick) if !self.sent.is_empty() => {
                let r = self.sent[pick % self.sent.len()].clone();
                if let Ok(fx) = self.j.image_done(r, now) {
                    assert!(!fx.accepted, "a repeated result was accepted");
                }
            }
            Op::Repeat(_) => {}
            Op::LeaseDone(pick) if !self.out.is_empty() => {
                let (l, _) = self.out.remove(pick % self.out.len());
                let fx = self.j.lease_done(l.worker, l.lease, now);
                self.absorb(fx);
            }
            Op::LeaseDone(_) => {}
            Op::Lose(w) => {
                let fx = self.j.disconnect(self.slots[w], now);
                self.slots[w] = self.j.register(WorkerInfo::default(), now);
                self.absorb(fx);
            }
            Op::Tick(s) => {
                self.now = secs(self.now, s);
                let fx = self.j.tick(self.now);
                self.absorb(fx);
            }
        }
    }

    /// The holder of outstanding lease `pick` answers its next item.
    fn answer(&mut self, pick: usize, ok: bool) {
        if self.out.is_empty() {
            return;
        }
        let k = pick % self.out.len();
        let Some(index) = self.out[k].1.first().copied() else {
            return;
        };
        self.out[k].1.remove(0);
        let r = result(&self.out[k].0, index, ok);
        self.j.touch(r.worker, self.now);
        if let Ok(fx) = self.j.image_done(r.clone(), self.now) {
            self.absorb(fx);
        }
        self.sent.push(r);
    }

    /// Honest workers finish the job: every live slot asks for work and
    /// answers every lease it holds, until the dataset is written.
    fn drain(&mut self) {
        for _ in 0..200 {
            if self.datasets > 0 {
                return;
            }
            for w in 0..self.slots.len() {
                self.step(Op::Ready(w, 2));
            }
            while !self.out.is_empty() {
                while !self.out[0].1.is_empty() {
                    self.answer(0, true);
                }
                self.step(Op::LeaseDone(0));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_image_is_lost_or_counted_twice(
        n in 1..12usize,
        two in any::<bool>(),
        speculate in any::<bool>(),
        ops in prop::collection::vec(op(), 0..60),
    ) {
        let now = Instant::now();
        let mut j = machine(SchedulerConfig { speculate, ..config(3) });
        j.set_persistent(true);
        let slots = (0..3).map(|_| worker(&mut j, now)).collect();
        let options = if two { two_phase() } else { Default::default() };
        let (key, fx) = j.add_job(job(files(n), options, Transfer::Shared), now);
        let mut world = World { j, now, slots, out: Vec::new(), sent: Vec::new(), finals: HashMap::new(), datasets: 0 };
        world.absorb(fx);
        for op in ops {
            world.step(op);
        }
        world.drain();
        prop_assert_eq!(world.datasets, 1, "the dataset is written exactly once");
        for i in 0..n as u64 {
            prop_assert_eq!(world.finals.get(&i).copied(), Some(1), "image {} final rows", i);
        }
        let jr = &world.j.jobs[&key];
        prop_assert_eq!(jr.rows.filled(), jr.rows.len());
        prop_assert_eq!(jr.counts.images, n as u64);
        prop_assert_eq!(jr.counts.ok + jr.counts.failed, n as u64);
        prop_assert_eq!(jr.stats.held(), 0);
    }
}
