//! The worker's engine threads: plain OS threads, each with its own reusable
//! [`Engine`], fed image by image from the leases of the current session. A
//! panic inside the engine is caught and reported as that image's failure, so
//! one bad file can never take the worker down.
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use imgnorm_core::dataset::DatasetParams;
use imgnorm_core::options::EngineOptions;
use imgnorm_core::record::{Record, Status};
use imgnorm_core::stats::ImageStats;
use imgnorm_proto::v1 as pb;
use imgnorm_proto::v1::worker_message::Msg as WMsg;
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedSender;

use crate::budget::MemoryBudget;
use crate::engine::{Engine, Sink, Source};
use crate::limits::CHUNK;
use crate::storage::{self, Location, Store};

/// Output bytes queued for sending before engine threads wait.
const MAX_QUEUED_BYTES: usize = 32 * 1024 * 1024;
use crate::wire::{self, Transfer};

/// One lease as the worker holds it.
pub struct LeaseCtx {
    job_id: String,
    lease_id: u64,
    attempt: u32,
    input_root: PathBuf,
    output_root: PathBuf,
    transfer: Transfer,
    options_json: String,
    options: EngineOptions,
    /// Two-phase jobs: the phase and the writing phase's parameters.
    dataset: LeasePhase,
    items: Vec<pb::Item>,
    remaining: AtomicUsize,
    revoked: AtomicBool,
    started: AtomicBool,
    /// Object-store locations, when input or output is an `s3://` prefix.
    objects: Option<Objects>,
}

/// A lease's object-store side: stores and the inputs being fetched ahead.
struct Objects {
    input: Location,
    output: Location,
    /// Opened when the lease arrives; the error is every image's reason.
    source: Option<Result<Store, String>>,
    sink: Option<Result<Store, String>>,
    /// One slot per item, filled by [`SessionHandle::submit`] when the input
    /// is in an object store (GETs start as soon as the lease arrives).
    fetched: Vec<Mutex<Option<storage::Fetch>>>,
}

impl Objects {
    fn new(input: &str, output: &str, items: usize) -> Result<Option<Objects>, String> {
        let input = Location::parse(input).map_err(|e| e.to_string())?;
        let output = Location::parse(output).map_err(|e| e.to_string())?;
        if input.s3().is_none() && output.s3().is_none() {
            return Ok(None);
        }
        let open = |l: &Location| {
            l.s3()
                .map(|u| Store::open(u).map_err(|e| storage::chain(&e)))
        };
        Ok(Some(Objects {
            source: open(&input),
            sink: open(&output),
            input,
            output,
            fetched: (0..items).map(|_| Mutex::new(None)).collect(),
        }))
    }
}

impl LeaseCtx {
    /// Checks a lease from the wire; on error returns (lease id, job id, why).
    pub fn from_pb(l: pb::Lease) -> Result<LeaseCtx, (u64, String, String)> {
        let fail = |e: String| (l.lease_id, l.job_id.clone(), e);
        let spec = l
            .spec
            .clone()
            .ok_or_else(|| fail("lease without a job spec".into()))?;
        let options =
            wire::options_from_json(&spec.engine_options_json).map_err(|e| fail(e.to_string()))?;
        let transfer = Transfer::parse(&spec.transfer).map_err(|e| fail(e.to_string()))?;
        let dataset = LeasePhase::from_pb(&spec);
        let objects =
            Objects::new(&spec.input_root, &spec.output_root, l.items.len()).map_err(fail)?;
        Ok(LeaseCtx {
            job_id: l.job_id,
            lease_id: l.lease_id,
            attempt: l.attempt,
            input_root: PathBuf::from(spec.input_root),
            output_root: PathBuf::from(spec.output_root),
            transfer,
            options_json: spec.engine_options_json,
            options,
            dataset,
            remaining: AtomicUsize::new(l.items.len()),
            items: l.items,
            revoked: AtomicBool::new(false),
            started: AtomicBool::new(false),
            objects,
        })
    }
}

/// The phase of a two-phase job a lease belongs to (see
/// [`imgnorm_core::dataset`]).
#[derive(Debug, Clone, PartialEq)]
struct LeasePhase {
    /// Statistics phase: decode and report raw statistics, write nothing.
    stats: bool,
    /// Writing phase: the dataset's parameters (`None` for single-phase jobs).
    params: Option<DatasetParams>,
}

impl LeasePhase {
    fn from_pb(spec: &pb::JobSpec) -> LeasePhase {
        LeasePhase {
            stats: spec.phase() == pb::Phase::Stats,
            params: spec.params.clone().map(wire::params_from_pb),
        }
    }

    /// A fresh engine for this lease's options and phase.
    fn engine(&self, options: &EngineOptions) -> Engine {
        let mut e = Engine::new(options.clone());
        if let Some(p) = &self.params {
            e.set_params(p.clone());
        }
        e
    }
}

struct Task {
    session: Arc<SessionShared>,
    lease: Arc<LeaseCtx>,
    index: usize,
}

struct SessionShared {
    out: UnboundedSender<pb::WorkerMessage>,
    client: crate::security::Coordinator,
    runtime: tokio::runtime::Handle,
    queued: Arc<AtomicUsize>,
    draining: Arc<AtomicBool>,
    ended: AtomicBool,
    leases: Mutex<HashMap<u64, Arc<LeaseCtx>>>,
    idle: Notify,
}

impl SessionShared {
    fn send(&self, m: WMsg) {
        if !self.ended.load(Ordering::Relaxed) {
            let _ = self.out.send(pb::WorkerMessage { msg: Some(m) });
        }
    }

    /// Sends an output file as chunks, waiting while too much is queued.
    fn send_output(&self, lease: &LeaseCtx, index: u64, bytes: &[u8]) {
        for (k, chunk) in bytes.chunks(CHUNK).enumerate() {
            while self.queued.load(Ordering::Acquire) > MAX_QUEUED_BYTES
                && !self.ended.load(Ordering::Relaxed)
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            self.queued.fetch_add(chunk.len(), Ordering::AcqRel);
            self.send(WMsg::OutputChunk(pb::OutputChunk {
                job_id: lease.job_id.clone(),
                lease_id: lease.lease_id,
                index,
                offset: (k * CHUNK) as u64,
                data: chunk.to_vec(),
            }));
        }
    }

    /// Reads a large stream-mode input from the master in chunks, at most
    /// `limit` bytes (its admitted size, or `--max-input-bytes` when the
    /// master did not know it): more is refused, never buffered.
    fn fetch(&self, job: &str, index: u64, limit: u64) -> Result<Vec<u8>, String> {
        let mut client = self.client.clone();
        let req = pb::ReadInputRequest {
            job_id: job.to_string(),
            index,
        };
        self.runtime.block_on(async move {
            let mut s = client
                .read_input(req)
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner();
            let mut data = Vec::new();
            while let Some(c) = s.message().await.map_err(|e| e.message().to_string())? {
                if (data.len() + c.data.len()) as u64 > limit {
                    return Err(format!(
                        "input file changed size while it was read (more than {limit} bytes)"
                    ));
                }
                data.extend_from_slice(&c.data);
            }
            Ok(data)
        })
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<LeaseCtx>>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One item of `lease` is finished (processed or skipped).
    fn item_finished(&self, lease: &LeaseCtx) {
        if lease.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        self.send(WMsg::LeaseDone(pb::LeaseDone {
            job_id: lease.job_id.clone(),
            lease_id: lease.lease_id,
        }));
        if !self.draining.load(Ordering::Relaxed) {
            self.send(WMsg::Ready(pb::Ready { credits: 1 }));
        }
        let empty = {
            let mut l = self.leases();
            l.remove(&lease.lease_id);
            l.is_empty()
        };
        if empty {
            self.idle.notify_waiters();
        }
    }
}

/// The engine threads, shared by every session of this worker process.
pub struct Pool {
    tx: Mutex<Option<mpsc::Sender<Task>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The engine threads' memory budget (object-store fetches check
    /// input sizes against it before reading).
    budget: Arc<MemoryBudget>,
}

impl Pool {
    /// Starts `threads` engine threads, admitting images against `budget`.
    pub fn new(threads: usize, delay: Duration, budget: Arc<MemoryBudget>) -> Pool {
        let (tx, rx) = mpsc::channel::<Task>();
        let rx = Arc::new(Mutex::new(rx));
        let handles = (0..threads)
            .map(|i| {
                let rx = Arc::clone(&rx);
                let budget = Arc::clone(&budget);
                std::thread::Builder::new()
                    .name(format!("engine-{i}"))
                    .spawn(move || engine_thread(rx, delay, budget))
            })
            .filter_map(Result::ok)
            .collect();
        Pool {
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(handles),
            budget,
        }
    }

    /// A handle for a new session that sends results on `out`.
    pub fn new_session(
        self: &Arc<Self>,
        out: UnboundedSender<pb::WorkerMessage>,
        client: crate::security::Coordinator,
        runtime: tokio::runtime::Handle,
        queued: Arc<AtomicUsize>,
    ) -> SessionHandle {
        SessionHandle {
            pool: Arc::clone(self),
            shared: Arc::new(SessionShared {
                out,
                client,
                runtime,
                queued,
                draining: Arc::new(AtomicBool::new(false)),
                ended: AtomicBool::new(false),
                leases: Mutex::new(HashMap::new()),
                idle: Notify::new(),
            }),
        }
    }

    fn push(&self, t: Task) {
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = guard.as_ref() {
            let _ = tx.send(t);
        }
    }

    /// Stops the threads after the queued tasks and joins them.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let handles = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for h in handles {
            let _ = h.join();
        }
    }
}

/// A session's view of the pool.
pub struct SessionHandle {
    pool: Arc<Pool>,
    shared: Arc<SessionShared>,
}

impl SessionHandle {
    /// The flag the heartbeat task reports.
    pub fn draining_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.shared.draining)
    }

    /// Sends a message on this session.
    pub fn send(&self, m: WMsg) {
        self.shared.send(m);
    }

    /// Queues every image of a lease (and, for an object-store input, starts
    /// fetching its images: memory is bounded by the leases held, `--prefetch`).
    pub fn submit(&self, ctx: LeaseCtx) {
        if let Some(Objects {
            source: Some(Ok(store)),
            fetched,
            ..
        }) = &ctx.objects
            && !ctx.options.dry_run
        {
            let check =
                crate::engine::input_check(&ctx.options, Some(Arc::clone(&self.pool.budget)));
            for (slot, item) in fetched.iter().zip(&ctx.items) {
                let rx = storage::prefetch(store, &item.path, Arc::clone(&check));
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(rx);
            }
        }
        let lease = Arc::new(ctx);
        if lease.items.is_empty() {
            self.shared
                .leases()
                .insert(lease.lease_id, Arc::clone(&lease));
            lease.remaining.store(1, Ordering::Relaxed);
            self.shared.item_finished(&lease);
            return;
        }
        self.shared
            .leases()
            .insert(lease.lease_id, Arc::clone(&lease));
        for index in 0..lease.items.len() {
            self.pool.push(Task {
                session: Arc::clone(&self.shared),
                lease: Arc::clone(&lease),
                index,
            });
        }
    }

    /// The master no longer wants this lease.
    pub fn revoke(&self, lease_id: u64) {
        if let Some(l) = self.shared.leases().get(&lease_id) {
            l.revoked.store(true, Ordering::Relaxed);
        }
    }

    /// Stop taking work: leases not started yet are handed back.
    pub fn drain(&self) {
        self.shared.draining.store(true, Ordering::Relaxed);
    }

    /// Resolves when no lease is held any more.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.shared.idle.notified();
            if self.shared.leases().is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// The session is over: queued images of it are dropped unsent.
    pub fn end(&self) {
        self.shared.ended.store(true, Ordering::Relaxed);
    }
}

/// Fault injection for tests and demos: a worker whose environment sets this
/// variable aborts (as a segfaulting decoder would) when it starts an image
/// whose path contains the value. Used to check poison-image quarantine.
pub const CRASH_ON_ENV: &str = "IMGNORM_FAULT_CRASH_ON";

/// Test hook: a worker whose environment names a file here appends one
/// line `JOB<TAB>INDEX` to it for every image it has processed (before it
/// reports it), so the chaos test can count images processed more than once.
pub const TRACE_ENV: &str = "IMGNORM_TEST_TRACE";

fn trace(file: Option<&std::fs::File>, job: &str, index: u64) {
    use std::io::Write;
    if let Some(mut f) = file {
        // One write of a whole line on an O_APPEND file: lines of several
        // workers never interleave.
        let _ = f.write_all(format!("{job}\t{index}\n").as_bytes());
    }
}

fn engine_thread(rx: Arc<Mutex<mpsc::Receiver<Task>>>, delay: Duration, budget: Arc<MemoryBudget>) {
    let mut engine: Option<((String, LeasePhase), Engine)> = None;
    let crash_on = std::env::var(CRASH_ON_ENV).ok().filter(|s| !s.is_empty());
    let trace_file = std::env::var_os(TRACE_ENV).and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    loop {
        let task = {
            let guard = rx.lock().unwrap_or_else(|p| p.into_inner());
            guard.recv()
        };
        let Ok(task) = task else { return };
        let Task {
            session,
            lease,
            index,
        } = task;
        let skip = session.ended.load(Ordering::Relaxed)
            || lease.revoked.load(Ordering::Relaxed)
            || (session.draining.load(Ordering::Relaxed) && !lease.started.load(Ordering::Relaxed));
        if !skip {
            lease.started.store(true, Ordering::Relaxed);
            let item = &lease.items[index];
            if crash_on.as_deref().is_some_and(|c| item.path.contains(c)) {
                tracing::error!(path = %item.path, "fault injection: aborting");
                std::process::abort();
            }
            if engine
                .as_ref()
                .is_none_or(|((j, ph), _)| *j != lease.options_json || *ph != lease.dataset)
            {
                let mut e = lease.dataset.engine(&lease.options);
                e.set_budget(Arc::clone(&budget));
                engine = Some(((lease.options_json.clone(), lease.dataset.clone()), e));
            }
            if let Some((_, eng)) = engine.as_mut() {
                let mut raw = None;
                let result = catch_unwind(AssertUnwindSafe(|| match lease.transfer {
                    _ if lease.options.dry_run => Some((
                        Record::bare(item.path.clone(), Status::Skipped, Some("dry run".into())),
                        None,
                    )),
                    Transfer::Shared if lease.dataset.stats => {
                        let r = eng
                            .process(
                                Source::File {
                                    root: &lease.input_root,
                                    rel: &item.path,
                                },
                                Sink::Measure,
                            )
                            .record;
                        raw = eng.take_raw();
                        Some((r, None))
                    }
                    Transfer::Shared if lease.objects.is_some() => {
                        object_item(eng, &session, &lease, index)
                    }
                    Transfer::Shared => {
                        let r = eng
                            .process(
                                Source::File {
                                    root: &lease.input_root,
                                    rel: &item.path,
                                },
                                Sink::Output {
                                    root: &lease.output_root,
                                    index: item.index,
                                },
                            )
                            .record;
                        Some((r, eng.take_stats()))
                    }
                    Transfer::Stream => {
                        let fetched;
                        let data: &[u8] = if item.fetch {
                            // Admitted before a byte is fetched (size 0:
                            // the master could not tell; bounded by
                            // --max-input-bytes, admitted when decoded).
                            let admitted = match item.size {
                                0 => Ok(lease.options.max_input_bytes),
                                n => eng.admit_input(n).map(|()| n),
                            };
                            match admitted
                                .and_then(|limit| session.fetch(&lease.job_id, item.index, limit))
                            {
                                Ok(d) => {
                                    fetched = d;
                                    &fetched
                                }
                                Err(e) => {
                                    let r =
                                        Record::bare(item.path.clone(), Status::Failed, Some(e));
                                    return Some((r, None));
                                }
                            }
                        } else {
                            &item.data
                        };
                        let source = Source::Bytes {
                            rel: &item.path,
                            data,
                        };
                        if lease.dataset.stats {
                            let r = eng.process(source, Sink::Measure).record;
                            raw = eng.take_raw();
                            return Some((r, None));
                        }
                        let p = eng.process(source, Sink::Memory);
                        if let Some(npy) = p.npy {
                            session.send_output(&lease, item.index, npy);
                        }
                        let record = p.record;
                        Some((record, eng.take_stats()))
                    }
                }));
                // The image's share of the budget goes back (its buffers
                // above the retained size are freed) before it is reported.
                if let Some((_, eng)) = engine.as_mut() {
                    eng.release();
                }
                let done = match result {
                    Ok(done) => done,
                    Err(_) => {
                        engine = None;
                        let r = Record::bare(
                            item.path.clone(),
                            Status::Failed,
                            Some("internal error: the engine panicked on this image".into()),
                        );
                        Some((r, None))
                    }
                };
                if !delay.is_zero() {
                    std::thread::sleep(delay);
                }
                trace(trace_file.as_ref(), &lease.job_id, item.index);
                match done {
                    Some((record, stats)) => {
                        image_done(&session, &lease, index, &record, stats, raw.as_ref())
                    }
                    // An upload is in flight: its task reports and finishes the item.
                    None => continue,
                }
            }
        }
        session.item_finished(&lease);
    }
}

/// Reports one image's result to the master.
fn image_done(
    session: &SessionShared,
    lease: &LeaseCtx,
    index: usize,
    record: &Record,
    stats: Option<ImageStats>,
    raw: Option<&imgnorm_core::dataset::RawStats>,
) {
    session.send(WMsg::ImageDone(pb::ImageDone {
        job_id: lease.job_id.clone(),
        lease_id: lease.lease_id,
        attempt: lease.attempt,
        index: lease.items[index].index,
        record: Some(wire::record_to_pb(record)),
        output: Vec::new(),
        stats: stats.as_ref().map(wire::stats_to_pb),
        raw: raw.map(wire::raw_to_pb),
    }));
}

/// One image of a lease whose input or output is an object store: take the
/// prefetched bytes (or read the local file), decode here on the engine
/// thread, and write the `.npy` locally or hand it to an upload task on the
/// I/O runtime. `None`: the upload task reports the image and finishes the
/// item once the PUT is done (a failed PUT makes the image failed).
fn object_item(
    eng: &mut Engine,
    session: &Arc<SessionShared>,
    lease: &Arc<LeaseCtx>,
    index: usize,
) -> Option<(Record, Option<ImageStats>)> {
    let rel = &lease.items[index].path;
    let failed = |reason: String| {
        Some((
            Record::bare(rel.clone(), Status::Failed, Some(reason)),
            None,
        ))
    };
    let Some(objects) = lease.objects.as_ref() else {
        return failed("internal error: no object-store locations".into());
    };
    let data = match (&objects.source, &objects.input) {
        (Some(Ok(_)), _) => {
            let rx = objects.fetched[index]
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            match rx.map(|rx| rx.blocking_recv()) {
                // Fetched ahead once its size was checked; the image holds
                // its bytes' share of the budget from here on.
                Some(Ok(Ok(d))) => eng.admit_input(d.len() as u64).map(|()| d),
                Some(Ok(Err(e))) => Err(e),
                Some(Err(_)) | None => Err("internal error: the input fetch was lost".into()),
            }
        }
        (Some(Err(e)), _) => Err(format!("cannot read input: {e}")),
        (None, Location::Local(root)) => eng.read_input(root, rel).map(bytes::Bytes::from),
        (None, Location::S3(_)) => Err("internal error: no input store".into()),
    };
    let data = match data {
        Ok(d) => d,
        Err(reason) => return failed(reason),
    };
    let store = match (&objects.sink, &objects.output) {
        (Some(Ok(store)), _) => store.clone(),
        (Some(Err(e)), _) => return failed(format!("cannot write output: {e}")),
        (None, Location::Local(root)) => {
            let sink = Sink::Output {
                root,
                index: lease.items[index].index,
            };
            let r = eng.process(Source::Bytes { rel, data: &data }, sink).record;
            return Some((r, eng.take_stats()));
        }
        (None, Location::S3(_)) => return failed("internal error: no output store".into()),
    };
    let p = eng.process(Source::Bytes { rel, data: &data }, Sink::Memory);
    let Some(npy) = p.npy.map(bytes::Bytes::copy_from_slice) else {
        let record = p.record;
        return Some((record, eng.take_stats()));
    };
    let record = p.record;
    let stats = eng.take_stats();
    // The copy being uploaded keeps its part of the image's memory budget.
    let held = eng.split_permit(npy.len() as u64);
    let slot = match storage::put_slot() {
        Ok(s) => s,
        Err(e) => return failed(format!("cannot write output: {}", storage::chain(&e))),
    };
    let (session, lease) = (Arc::clone(session), Arc::clone(lease));
    storage::spawn(async move {
        let rel = lease.items[index].path.clone();
        let put = store.put(&format!("{rel}.npy"), npy).await;
        drop(slot);
        drop(held);
        match put {
            Ok(()) => image_done(&session, &lease, index, &record, stats, None),
            Err(e) => {
                let mut r = Record::bare(
                    rel,
                    Status::Failed,
                    Some(format!("cannot write output: {}", storage::chain(&e))),
                );
                r.format = record.format;
                image_done(&session, &lease, index, &r, None, None);
            }
        }
        session.item_finished(&lease);
    });
    None
}
