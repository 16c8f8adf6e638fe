//! The simulation's event loop: virtual time, the network, the workers, and
//! the master (the real [`Jobs`]) with its state database, as described in
//! [`super`].
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ids::{LeaseId, WorkerId};
use crate::jobs::{
    Effect, Effects, ImageResult, JobKey, Jobs, NewJob, PhaseJob, Rejected, RestoredJob, ResultRow,
    Transfer, WorkerInfo,
};
use crate::options::EngineOptions;
use crate::pathlist::PathList;
use crate::record::{Record, Status};
use crate::scheduler::{Scheduler, SchedulerConfig};

use super::rng::Rng;
use super::{FailureTimes, SimConfig, SimError, SimReport};

/// Seconds a disconnected worker waits before it connects again.
const RECONNECT_S: f64 = 1.0;

/// Runs one simulation to the end of its job (or until it gives up).
pub fn simulate(cfg: &SimConfig) -> Result<SimReport, SimError> {
    cfg.validate()?;
    let wall = std::time::Instant::now();
    let mut w = World::new(cfg.clone())?;
    w.run();
    Ok(w.report(wall.elapsed().as_secs_f64()))
}

/// A message to the master.
enum ToM {
    Hello,
    Result {
        job: PhaseJob,
        lease: u64,
        attempt: u32,
        index: u64,
    },
    LeaseDone(LeaseId),
    Ready(u32),
    Heartbeat,
    /// The connection closed (the master's side of a dead process).
    Closed,
}

/// A message to a worker.
enum ToW {
    Lease(SimLease),
    Revoke(LeaseId),
    /// The master closed the connection.
    Closed,
}

enum Ev {
    Tick,
    ToMaster { w: usize, session: u32, msg: ToM },
    ToWorker { w: usize, session: u32, msg: ToW },
    Finish { w: usize, session: u32, work: u64 },
    Beat { w: usize, session: u32 },
    Connect { w: usize },
    Crash { w: usize },
    Hang { w: usize },
    PartitionStart { p: usize },
    PartitionEnd { p: usize },
    MasterCrash,
    MasterUp,
}

struct Entry {
    t: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.t, self.seq) == (o.t, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    /// Reversed: the heap pops the earliest event, ties in insertion order.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.t, o.seq).cmp(&(self.t, self.seq))
    }
}

struct SimLease {
    id: LeaseId,
    job: PhaseJob,
    attempt: u32,
    items: Vec<u64>,
    next: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Up,
    /// Lost its connection; connects again after a back-off.
    Down,
    Crashed,
    Hung,
}

struct Worker {
    speed: f64,
    life: Life,
    session: u32,
    /// The master's id for this session, once registered.
    id: Option<WorkerId>,
    queue: VecDeque<SimLease>,
    /// Bumped whenever the image in progress is abandoned.
    work: u64,
    busy: bool,
    /// Cut off by a partition: messages wait in `held_*`.
    cut: bool,
    held_out: Vec<ToM>,
    held_in: Vec<ToW>,
    /// The failure this worker is in, for detection times.
    failure: Option<usize>,
    /// A crashed worker comes back.
    restarts: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Crash,
    Hang,
    Partition,
    Master,
}

struct Failure {
    kind: Kind,
    at: u64,
    detected: Option<u64>,
    /// Images held unfinished at the failure and not accepted since.
    pending: usize,
    recovered: Option<u64>,
    /// Master crash: the accepted count to get back to.
    target: u64,
}

struct Master {
    jobs: Jobs,
    by_id: HashMap<WorkerId, usize>,
}

struct World {
    cfg: SimConfig,
    rng: Rng,
    base: Instant,
    now: u64,
    seq: u64,
    heap: BinaryHeap<Entry>,
    workers: Vec<Worker>,
    master: Option<Master>,
    key: JobKey,
    files: Arc<PathList>,
    costs: Vec<f32>,
    partitions: Vec<Vec<usize>>,
    /// Rows made durable (the state database), when the master can crash.
    store: Vec<ResultRow>,
    persist: bool,
    accepted_once: Vec<bool>,
    unique: u64,
    waiting: HashMap<u64, Vec<usize>>,
    failures: Vec<Failure>,
    ideal_s: f64,
    give_up: u64,
    done_at: Option<u64>,
    lost: u64,
    duplicated: u64,
    accepted: u64,
    stale: u64,
    refused: u64,
    quarantined: u64,
    leases: u64,
    events: u64,
    decisions: u64,
    master_ns: u128,
}

fn ns(s: f64) -> u64 {
    (s * 1e9).round() as u64
}

impl World {
    fn new(cfg: SimConfig) -> Result<World, SimError> {
        let mut rng = Rng::new(cfg.seed);
        let n = usize::try_from(cfg.images)
            .map_err(|_| SimError::Invalid("--images does not fit in memory".into()))?;
        let costs: Vec<f32> = (0..n).map(|_| rng.cost(cfg.cost_sigma) as f32).collect();
        let nw = cfg.workers as usize;
        let mut speeds: Vec<f64> = (0..nw)
            .map(|_| cfg.speed * rng.range(1.0 - cfg.speed_spread, 1.0 + cfg.speed_spread))
            .collect();
        let stragglers = (cfg.straggler_rate * nw as f64).round() as usize;
        for i in rng.choose(nw, stragglers) {
            speeds[i] /= cfg.straggler_factor;
        }
        let total: f64 = costs.iter().map(|&c| f64::from(c)).sum();
        let ideal_s = total / speeds.iter().sum::<f64>();
        let workers = speeds
            .into_iter()
            .map(|speed| Worker {
                speed,
                life: Life::Down,
                session: 0,
                id: None,
                queue: VecDeque::new(),
                work: 0,
                busy: false,
                cut: false,
                held_out: Vec::new(),
                held_in: Vec::new(),
                failure: None,
                restarts: cfg.restart_s.is_some(),
            })
            .collect();
        let files = PathList::from_sorted((0..n).map(|i| format!("{i:09}.png")))
            .ok_or_else(|| SimError::Invalid("file names out of order".into()))?;
        let persist = cfg.master_crashes > 0;
        let mut w = World {
            give_up: ns(ideal_s * cfg.give_up_factor + 60.0),
            cfg,
            rng,
            base: Instant::now(),
            now: 0,
            seq: 0,
            heap: BinaryHeap::new(),
            workers,
            master: None,
            key: JobKey(0),
            files: Arc::new(PathList::new()),
            costs,
            partitions: Vec::new(),
            store: Vec::new(),
            persist,
            accepted_once: vec![false; n],
            unique: 0,
            waiting: HashMap::new(),
            failures: Vec::new(),
            ideal_s,
            done_at: None,
            lost: 0,
            duplicated: 0,
            accepted: 0,
            stale: 0,
            refused: 0,
            quarantined: 0,
            leases: 0,
            events: 0,
            decisions: 0,
            master_ns: 0,
        };
        w.start_master(Some(files))?;
        w.plan_failures();
        for i in 0..nw {
            let jitter = w.rng.range(0.0, 0.01);
            w.at(ns(jitter), Ev::Connect { w: i });
        }
        w.at(ns(w.cfg.tick_s), Ev::Tick);
        Ok(w)
    }

    fn scheduler(&self) -> Result<Scheduler, SimError> {
        Scheduler::new(SchedulerConfig {
            batch_size: self.cfg.batch_size,
            min_batch_size: 1,
            heartbeat_timeout: Duration::from_secs_f64(self.cfg.heartbeat_timeout_s),
            max_crashes: 3,
            speculate: self.cfg.speculate,
        })
        .map_err(|e| SimError::Invalid(e.to_string()))
    }

    fn new_job(&self, files: PathList) -> NewJob {
        NewJob {
            input: "in".into(),
            output: "out".into(),
            transfer: Transfer::Shared,
            options: EngineOptions {
                dry_run: true,
                ..EngineOptions::default()
            },
            files,
            problems: Vec::new(),
        }
    }

    /// The first master (with the job's files) or a restarted one.
    fn start_master(&mut self, files: Option<PathList>) -> Result<(), SimError> {
        let mut jobs = Jobs::new(self.scheduler()?);
        jobs.set_persistent(self.persist);
        let now = self.instant();
        let fx = match files {
            Some(files) => {
                let (key, fx) = jobs.add_job(self.new_job(files), now);
                self.key = key;
                if let Some(j) = jobs.jobs.get(&key) {
                    self.files = Arc::clone(&j.files);
                }
                fx
            }
            None => {
                let files = self.files.as_ref().clone();
                let saved = RestoredJob {
                    key: self.key,
                    job: self.new_job(files),
                    params: None,
                    results: self.store.clone(),
                    submitted: self.base,
                };
                self.accepted_once.iter_mut().for_each(|a| *a = false);
                self.unique = 0;
                for r in &self.store {
                    if let Some(a) = self.accepted_once.get_mut(r.index as usize)
                        && !*a
                    {
                        *a = true;
                        self.unique += 1;
                    }
                }
                jobs.restore_job(saved, now).1
            }
        };
        self.master = Some(Master {
            jobs,
            by_id: HashMap::new(),
        });
        self.effects(fx);
        Ok(())
    }

    fn plan_failures(&mut self) {
        let nw = self.workers.len();
        let horizon = self.ideal_s;
        let crashes = (self.cfg.worker_failure_rate * nw as f64).round() as usize;
        let hangs = (self.cfg.hang_rate * nw as f64).round() as usize;
        let picked = self.rng.choose(nw, (crashes + hangs).min(nw));
        for (k, &i) in picked.iter().enumerate() {
            let t = ns(self.rng.range(0.05, 0.95) * horizon);
            let ev = if k < crashes {
                Ev::Crash { w: i }
            } else {
                Ev::Hang { w: i }
            };
            self.at(t, ev);
        }
        for p in 0..self.cfg.partitions as usize {
            let k = ((self.cfg.partition_fraction * nw as f64).round() as usize).clamp(1, nw);
            self.partitions.push(self.rng.choose(nw, k));
            let t = ns(self.rng.range(0.1, 0.8) * horizon);
            self.at(t, Ev::PartitionStart { p });
        }
        for _ in 0..self.cfg.master_crashes {
            let t = ns(self.rng.range(0.1, 0.9) * horizon);
            self.at(t, Ev::MasterCrash);
        }
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_nanos(self.now)
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Entry {
            t,
            seq: self.seq,
            ev,
        });
    }

    fn after(&mut self, s: f64, ev: Ev) {
        self.at(self.now + ns(s), ev);
    }

    /// One call into the master's job logic, timed and counted.
    fn call<T>(&mut self, f: impl FnOnce(&mut Jobs, Instant) -> T) -> Option<T> {
        let now = self.instant();
        let m = self.master.as_mut()?;
        let t0 = std::time::Instant::now();
        let r = f(&mut m.jobs, now);
        self.master_ns += t0.elapsed().as_nanos();
        self.decisions += 1;
        Some(r)
    }

    fn run(&mut self) {
        while let Some(e) = self.heap.pop() {
            if self.done_at.is_some() || e.t > self.give_up {
                break;
            }
            self.now = e.t;
            self.events += 1;
            self.event(e.ev);
        }
        if self.done_at.is_none() {
            self.lost = self.accepted_once.iter().filter(|a| !**a).count() as u64;
        }
    }

    fn event(&mut self, ev: Ev) {
        match ev {
            Ev::Tick => {
                if let Some(fx) = self.call(|j, now| j.tick(now)) {
                    self.effects(fx);
                }
                self.after(self.cfg.tick_s, Ev::Tick);
            }
            Ev::ToMaster { w, session, msg } => self.master_gets(w, session, msg),
            Ev::ToWorker { w, session, msg } => {
                if self.workers[w].life == Life::Up && self.workers[w].session == session {
                    self.worker_gets(w, msg);
                }
            }
            Ev::Finish { w, session, work } => {
                let wk = &self.workers[w];
                if wk.life == Life::Up && wk.session == session && wk.work == work {
                    self.finish(w);
                }
            }
            Ev::Beat { w, session } => {
                if self.workers[w].life == Life::Up && self.workers[w].session == session {
                    self.send(w, ToM::Heartbeat);
                    self.after(self.cfg.heartbeat_s, Ev::Beat { w, session });
                }
            }
            Ev::Connect { w } => self.connect(w),
            Ev::Crash { w } => self.crash(w),
            Ev::Hang { w } => self.hang(w),
            Ev::PartitionStart { p } => self.partition(p, true),
            Ev::PartitionEnd { p } => self.partition(p, false),
            Ev::MasterCrash => self.master_crash(),
            Ev::MasterUp => {
                // The configuration was checked when the first master started.
                let _ = self.start_master(None);
            }
        }
    }

    fn send(&mut self, w: usize, msg: ToM) {
        let wk = &mut self.workers[w];
        if wk.cut {
            wk.held_out.push(msg);
            return;
        }
        let session = wk.session;
        self.after(self.cfg.latency_s, Ev::ToMaster { w, session, msg });
    }

    fn tell(&mut self, w: usize, msg: ToW) {
        let wk = &mut self.workers[w];
        if wk.cut {
            wk.held_in.push(msg);
            return;
        }
        let session = wk.session;
        self.after(self.cfg.latency_s, Ev::ToWorker { w, session, msg });
    }

    fn connect(&mut self, w: usize) {
        let wk = &mut self.workers[w];
        let comes_back = match wk.life {
            Life::Down => true,
            Life::Crashed => wk.restarts,
            Life::Up | Life::Hung => false,
        };
        if !comes_back {
            return;
        }
        if self.master.is_none() {
            let backoff = RECONNECT_S * self.rng.range(0.5, 1.5);
            self.after(backoff, Ev::Connect { w });
            return;
        }
        let wk = &mut self.workers[w];
        wk.life = Life::Up;
        wk.session += 1;
        wk.id = None;
        wk.queue.clear();
        wk.busy = false;
        wk.work += 1;
        wk.failure = None;
        let session = wk.session;
        self.send(w, ToM::Hello);
        self.after(self.cfg.heartbeat_s, Ev::Beat { w, session });
    }

    fn master_gets(&mut self, w: usize, session: u32, msg: ToM) {
        if self.master.is_none() || self.workers[w].session != session {
            return; // the connection this came on is gone
        }
        if let ToM::Hello = msg {
            let credits = self.cfg.credits;
            let Some(id) = self.call(|j, now| j.register(WorkerInfo::default(), now)) else {
                return;
            };
            if let Some(m) = self.master.as_mut() {
                m.by_id.insert(id, w);
            }
            self.workers[w].id = Some(id);
            if let Some(fx) = self.call(|j, now| j.ready(id, credits, now)) {
                self.effects(fx);
            }
            return;
        }
        let Some(id) = self.workers[w].id else {
            return; // declared dead: the master closed this connection
        };
        let fx = match msg {
            ToM::Hello => None,
            ToM::Heartbeat => {
                self.call(|j, now| j.heartbeat(id, false, now));
                None
            }
            ToM::Ready(c) => self.call(|j, now| j.ready(id, c, now)),
            ToM::LeaseDone(l) => self.call(|j, now| j.lease_done(id, l, now)),
            ToM::Closed => self.call(|j, now| j.disconnect(id, now)),
            ToM::Result {
                job,
                lease,
                attempt,
                index,
            } => self.result(id, job, lease, attempt, index),
        };
        if let Some(fx) = fx {
            self.effects(fx);
        }
    }

    fn result(
        &mut self,
        id: WorkerId,
        job: PhaseJob,
        lease: u64,
        attempt: u32,
        index: u64,
    ) -> Option<Effects> {
        let path = self.files.get(index as usize)?;
        let r = ImageResult {
            worker: id,
            job,
            lease,
            attempt,
            index,
            record: Record::bare(path, Status::Skipped, Some("dry run".into())),
            stats: None,
            raw: None,
        };
        self.call(|j, now| j.touch(id, now));
        match self.call(|j, now| j.image_done(r, now))? {
            Ok(fx) => {
                if fx.accepted {
                    self.accepted(index);
                }
                Some(fx)
            }
            Err(Rejected::Stale(_)) => {
                self.stale += 1;
                None
            }
            Err(Rejected::Refused(_)) => {
                self.refused += 1;
                None
            }
        }
    }

    fn accepted(&mut self, index: u64) {
        self.accepted += 1;
        let Some(a) = self.accepted_once.get_mut(index as usize) else {
            return;
        };
        if *a {
            self.duplicated += 1;
            return;
        }
        *a = true;
        self.unique += 1;
        if let Some(fs) = self.waiting.remove(&index) {
            for f in fs {
                let fl = &mut self.failures[f];
                fl.pending = fl.pending.saturating_sub(1);
                if fl.pending == 0 && fl.recovered.is_none() {
                    fl.recovered = Some(self.now);
                }
            }
        }
        for fl in self.failures.iter_mut() {
            if fl.kind == Kind::Master && fl.recovered.is_none() && self.unique >= fl.target {
                fl.recovered = Some(self.now);
            }
        }
    }

    fn effects(&mut self, fx: Effects) {
        for e in fx.effects {
            self.effect(e);
        }
    }

    fn effect(&mut self, e: Effect) {
        match e {
            Effect::SendLease(order) => {
                let Some(&w) = self
                    .master
                    .as_ref()
                    .and_then(|m| m.by_id.get(&order.worker))
                else {
                    return;
                };
                self.leases += 1;
                let lease = SimLease {
                    id: order.lease,
                    job: order.job,
                    attempt: order.attempt,
                    items: order.items.iter().map(|i| i.index).collect(),
                    next: 0,
                };
                self.tell(w, ToW::Lease(lease));
            }
            Effect::Revoke { worker, lease, .. } => {
                if let Some(&w) = self.master.as_ref().and_then(|m| m.by_id.get(&worker)) {
                    self.tell(w, ToW::Revoke(lease));
                }
            }
            Effect::WorkerDead { worker, .. } => {
                let Some(w) = self.master.as_mut().and_then(|m| m.by_id.remove(&worker)) else {
                    return;
                };
                if let Some(f) = self.workers[w].failure
                    && self.failures[f].detected.is_none()
                {
                    self.failures[f].detected = Some(self.now);
                }
                if self.workers[w].id == Some(worker) {
                    self.workers[w].id = None;
                    self.tell(w, ToW::Closed);
                }
            }
            Effect::PersistResult(row) => {
                if self.persist {
                    self.store.push(*row);
                }
            }
            Effect::Quarantined { .. } => self.quarantined += 1,
            Effect::WriteDataset(key) => self.write_dataset(key),
            Effect::PersistJob(_) | Effect::PersistPhase { .. } | Effect::PersistEnd { .. } => {}
        }
    }

    fn write_dataset(&mut self, key: JobKey) {
        let lost = self
            .master
            .as_ref()
            .and_then(|m| m.jobs.jobs.get(&key))
            .map(|j| j.rows.len() - j.rows.filled());
        self.lost = lost.unwrap_or(self.cfg.images);
        self.done_at = Some(self.now);
        if let Some(fx) = self.call(|j, now| j.finished(key, Ok(()), now)) {
            self.effects(fx);
        }
    }

    fn worker_gets(&mut self, w: usize, msg: ToW) {
        match msg {
            ToW::Lease(l) => {
                self.workers[w].queue.push_back(l);
                if !self.workers[w].busy {
                    self.start(w);
                }
            }
            ToW::Revoke(lease) => {
                let wk = &mut self.workers[w];
                let Some(pos) = wk.queue.iter().position(|l| l.id == lease) else {
                    return;
                };
                wk.queue.remove(pos);
                if pos == 0 {
                    wk.work += 1;
                    wk.busy = false;
                }
                self.send(w, ToM::LeaseDone(lease));
                self.send(w, ToM::Ready(1));
                if !self.workers[w].busy {
                    self.start(w);
                }
            }
            ToW::Closed => {
                let wk = &mut self.workers[w];
                wk.life = Life::Down;
                wk.id = None;
                wk.queue.clear();
                wk.busy = false;
                wk.work += 1;
                let backoff = RECONNECT_S * self.rng.range(0.5, 1.5);
                self.after(backoff, Ev::Connect { w });
            }
        }
    }

    /// Starts the next image of the worker's first lease, if any.
    fn start(&mut self, w: usize) {
        let wk = &mut self.workers[w];
        let Some(l) = wk.queue.front() else {
            wk.busy = false;
            return;
        };
        let cost = f64::from(self.costs[l.items[l.next] as usize]);
        wk.busy = true;
        let (session, work) = (wk.session, wk.work);
        let secs = cost / wk.speed;
        self.after(secs, Ev::Finish { w, session, work });
    }

    fn finish(&mut self, w: usize) {
        let Some(l) = self.workers[w].queue.front_mut() else {
            return;
        };
        let msg = ToM::Result {
            job: l.job,
            lease: l.id.0,
            attempt: l.attempt,
            index: l.items[l.next],
        };
        l.next += 1;
        let closed = (l.next == l.items.len()).then_some(l.id);
        self.send(w, msg);
        if let Some(id) = closed {
            self.workers[w].queue.pop_front();
            self.send(w, ToM::LeaseDone(id));
            self.send(w, ToM::Ready(1));
        }
        self.start(w);
    }

    /// Records a failure of worker `w` and the images it held unfinished.
    fn fail(&mut self, w: usize, kind: Kind) {
        let f = self.failures.len();
        let held: Vec<u64> = self.workers[w]
            .queue
            .iter()
            .flat_map(|l| l.items[l.next..].iter().copied())
            .filter(|&i| !self.accepted_once[i as usize])
            .collect();
        for &i in &held {
            self.waiting.entry(i).or_default().push(f);
        }
        self.failures.push(Failure {
            kind,
            at: self.now,
            detected: None,
            pending: held.len(),
            recovered: held.is_empty().then_some(self.now),
            target: 0,
        });
        self.workers[w].failure = Some(f);
    }

    fn crash(&mut self, w: usize) {
        if !matches!(self.workers[w].life, Life::Up | Life::Down) {
            return;
        }
        let was_up = self.workers[w].life == Life::Up;
        self.fail(w, Kind::Crash);
        let wk = &mut self.workers[w];
        wk.life = Life::Crashed;
        wk.work += 1;
        wk.busy = false;
        if was_up {
            // The kernel closes the dead process's connection.
            self.send(w, ToM::Closed);
        }
        self.workers[w].queue.clear();
        if let Some(s) = self.cfg.restart_s {
            self.after(s, Ev::Connect { w });
        }
    }

    fn hang(&mut self, w: usize) {
        if !matches!(self.workers[w].life, Life::Up | Life::Down) {
            return;
        }
        self.fail(w, Kind::Hang);
        let wk = &mut self.workers[w];
        wk.life = Life::Hung;
        wk.work += 1;
        wk.busy = false;
    }

    fn partition(&mut self, p: usize, start: bool) {
        let members = self.partitions[p].clone();
        for w in members {
            if start {
                if self.workers[w].life == Life::Up && !self.workers[w].cut {
                    self.fail(w, Kind::Partition);
                }
                self.workers[w].cut = true;
                continue;
            }
            let wk = &mut self.workers[w];
            wk.cut = false;
            let (held_in, held_out) = (
                std::mem::take(&mut wk.held_in),
                std::mem::take(&mut wk.held_out),
            );
            if let Some(f) = wk.failure.take()
                && self.failures[f].detected.is_none()
                && self.failures[f].kind == Kind::Partition
            {
                // Not declared dead: the partition cost time, not a failure.
                self.failures[f].recovered.get_or_insert(self.now);
            }
            for m in held_out {
                self.send(w, m);
            }
            for m in held_in {
                self.tell(w, m);
            }
        }
        if start {
            self.after(self.cfg.partition_s, Ev::PartitionEnd { p });
        }
    }

    fn master_crash(&mut self) {
        if self.master.is_none() || self.done_at.is_some() {
            return;
        }
        self.master = None;
        self.failures.push(Failure {
            kind: Kind::Master,
            at: self.now,
            detected: Some(self.now),
            pending: 0,
            recovered: None,
            target: self.unique,
        });
        for w in 0..self.workers.len() {
            let wk = &mut self.workers[w];
            if matches!(wk.life, Life::Up | Life::Down) {
                wk.life = Life::Down;
                wk.session += 1;
                wk.id = None;
                wk.queue.clear();
                wk.busy = false;
                wk.work += 1;
                wk.held_in.clear();
                wk.held_out.clear();
                let backoff = self.cfg.latency_s + RECONNECT_S * self.rng.range(0.5, 1.5);
                self.after(backoff, Ev::Connect { w });
            }
        }
        self.after(self.cfg.master_restart_s, Ev::MasterUp);
    }

    fn report(&self, wall_s: f64) -> SimReport {
        let makespan_s = self.done_at.unwrap_or(self.now) as f64 / 1e9;
        let times = |kind: Kind| {
            let fs: Vec<&Failure> = self.failures.iter().filter(|f| f.kind == kind).collect();
            let stat = |v: Vec<f64>| {
                let max = v
                    .iter()
                    .copied()
                    .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
                let mean = (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
                (mean, max)
            };
            let det: Vec<f64> = fs
                .iter()
                .filter_map(|f| f.detected.map(|d| (d - f.at) as f64 / 1e9))
                .collect();
            let rec: Vec<f64> = fs
                .iter()
                .filter_map(|f| f.recovered.map(|r| (r - f.at) as f64 / 1e9))
                .collect();
            let detected = det.len() as u32;
            let ((detect_mean_s, detect_max_s), (recover_mean_s, recover_max_s)) =
                (stat(det), stat(rec));
            FailureTimes {
                count: fs.len() as u32,
                detected,
                detect_mean_s,
                detect_max_s,
                recover_mean_s,
                recover_max_s,
            }
        };
        let (crashes, hangs, partitioned, master) = (
            times(Kind::Crash),
            times(Kind::Hang),
            times(Kind::Partition),
            times(Kind::Master),
        );
        let master_s = self.master_ns as f64 / 1e9;
        SimReport {
            workers: self.cfg.workers,
            images: self.cfg.images,
            seed: self.cfg.seed,
            makespan_s,
            ideal_s: self.ideal_s,
            ratio: makespan_s / self.ideal_s,
            lost: self.lost,
            duplicated: self.duplicated,
            failures: crashes.count + hangs.count + partitioned.count + master.count,
            decisions_per_s: if master_s > 0.0 {
                self.decisions as f64 / master_s
            } else {
                0.0
            },
            wall_s,
            stalled: self.done_at.is_none(),
            decisions: self.decisions,
            events: self.events,
            accepted: self.accepted,
            stale: self.stale,
            refused: self.refused,
            quarantined: self.quarantined,
            leases: self.leases,
            crashes,
            hangs,
            partitioned,
            master,
        }
    }
}
