//! The tonic implementation of `imgnorm.v1.Coordinator`: converts protocol
//! messages to calls on [`Master`] and its state, and maps errors to `Status`.
//! No scheduling decisions are made here.
use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Instant;

use imgnorm_core::ids::WorkerId;
use imgnorm_core::jobs::ImageResult;
use imgnorm_proto::PROTOCOL_VERSION;
use imgnorm_proto::v1 as pb;
use imgnorm_proto::v1::coordinator_server::{Coordinator, CoordinatorServer};
use imgnorm_proto::v1::worker_message::Msg;
use tokio_stream::Stream;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Master;
use super::state::WorkerInfo;
use super::state::{Effects, Rejected, StreamTarget};
use crate::limits;
use crate::wire::{self, Transfer};

/// The gRPC face of a [`Master`].
pub struct CoordinatorService {
    master: Master,
}

impl CoordinatorService {
    /// Wraps a master.
    pub fn new(master: Master) -> CoordinatorService {
        CoordinatorService { master }
    }

    /// The tonic server with message limits set: a bigger message is
    /// refused with `OUT_OF_RANGE` naming both sizes (see [`crate::limits`]).
    pub fn into_server(self) -> CoordinatorServer<CoordinatorService> {
        CoordinatorServer::new(self)
            .max_decoding_message_size(limits::TO_MASTER_MAX)
            .max_encoding_message_size(limits::FROM_MASTER_MAX)
    }
}

type MasterStream = Pin<Box<dyn Stream<Item = Result<pb::MasterMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    type SessionStream = MasterStream;

    async fn session(
        &self,
        request: Request<Streaming<pb::WorkerMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("session closed before Hello"))?;
        let Some(Msg::Hello(hello)) = first.msg else {
            return Err(Status::invalid_argument(
                "the first message of a session must be Hello",
            ));
        };
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "incompatible protocol: worker speaks imgnorm.v1 protocol version {}, this master (imgnorm {}) speaks {}; run the same imgnorm version on both",
                hello.protocol_version,
                env!("CARGO_PKG_VERSION"),
                PROTOCOL_VERSION
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let hostname = limits::truncate(&hello.hostname, limits::MAX_NAME_BYTES).to_string();
        let info = WorkerInfo {
            name: if hello.name.is_empty() {
                hostname.clone()
            } else {
                limits::truncate(&hello.name, limits::MAX_NAME_BYTES).to_string()
            },
            hostname,
            threads: hello.threads,
            pid: hello.pid,
        };
        let (id, welcome) = self
            .master
            .lock()
            .register(info, tx.clone(), Instant::now());
        let _ = tx.send(Ok(pb::MasterMessage {
            msg: Some(pb::master_message::Msg::Welcome(welcome)),
        }));
        // Only the state holds the sender (dropping it ends the stream); the
        // session keeps a weak one to tell a worker why it is cut off.
        let weak = tx.downgrade();
        drop(tx);
        let master = self.master.clone();
        tokio::spawn(async move {
            let mut partials = Partials::default();
            let mut refusals = 0u32;
            loop {
                match inbound.message().await {
                    Ok(Some(m)) => {
                        let Some(why) = handle(&master, id, m, &mut partials).await else {
                            continue;
                        };
                        refusals += 1;
                        tracing::warn!(worker = %id, refusals, reason = %why, "worker message refused");
                        if refusals >= limits::MAX_REFUSALS {
                            tracing::error!(worker = %id, refusals, last = %why, "worker disconnected: too many refused messages (its leases go back to the queue)");
                            if let Some(tx) = weak.upgrade() {
                                let _ = tx.send(Err(Status::permission_denied(format!(
                                    "disconnected by the master after {refusals} refused messages; last: {why}"
                                ))));
                            }
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) if e.code() == tonic::Code::OutOfRange => {
                        tracing::warn!(worker = %id, error = %e, "worker message over the size limit: session closed");
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(worker = %id, error = %e, "session stream error");
                        break;
                    }
                }
            }
            partials.discard_all().await;
            let fx = master.lock().disconnect(id, Instant::now());
            master.apply(fx).await;
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }

    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let r = request.into_inner();
        let options = if r.engine_options_json.is_empty() {
            Default::default()
        } else {
            wire::options_from_json(&r.engine_options_json)
                .map_err(|e| Status::invalid_argument(e.to_string()))?
        };
        let transfer =
            Transfer::parse(&r.transfer).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if r.input.is_empty() || r.output.is_empty() {
            return Err(Status::invalid_argument("input and output are required"));
        }
        let (id, images) = self
            .master
            .submit_with(
                super::absolute(r.input.as_ref()),
                super::absolute(r.output.as_ref()),
                transfer,
                options,
                imgnorm_core::rerun::RerunFlags {
                    overwrite: r.overwrite,
                    retry_failed: r.retry_failed,
                    prune: r.prune,
                },
            )
            .await
            .map_err(|e| Status::failed_precondition(format!("{e:#}")))?;
        Ok(Response::new(pb::SubmitResponse {
            job_id: id.0,
            images,
        }))
    }

    type ReadInputStream = Pin<Box<dyn Stream<Item = Result<pb::InputChunk, Status>> + Send>>;

    async fn read_input(
        &self,
        request: Request<pb::ReadInputRequest>,
    ) -> Result<Response<Self::ReadInputStream>, Status> {
        let r = request.into_inner();
        let path = self
            .master
            .lock()
            .input_path(&r.job_id, r.index)
            .ok_or_else(|| Status::not_found(format!("no item {} in job {}", r.index, r.job_id)))?;
        // A small bounded channel: the reader thread stays at most a few
        // chunks ahead of the network, so memory is bounded per request.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) => {
                    let _ =
                        tx.blocking_send(Err(Status::not_found(format!("cannot read input: {e}"))));
                    return;
                }
            };
            loop {
                let mut buf = vec![0u8; super::CHUNK];
                match f.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.blocking_send(Ok(pb::InputChunk { data: buf })).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::data_loss(format!(
                            "cannot read input: {e}"
                        ))));
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let r = request.into_inner();
        let job = (!r.job_id.is_empty()).then_some(r.job_id.as_str());
        Ok(Response::new(self.master.status(job)))
    }
}

/// One message of an established session. `Some(why)`: the message was
/// refused (something an honest worker never sends); the caller counts it.
async fn handle(
    master: &Master,
    id: WorkerId,
    m: pb::WorkerMessage,
    partials: &mut Partials,
) -> Option<String> {
    let now = Instant::now();
    let fx = match m.msg {
        Some(Msg::OutputChunk(c)) => return output_chunk(master, id, c, partials).await,
        Some(Msg::Hello(_)) => return Some("a second Hello".into()),
        None => return Some("an empty message".into()),
        Some(Msg::Heartbeat(h)) => {
            master.lock().heartbeat(id, h.draining, now);
            return None;
        }
        Some(Msg::Ready(r)) => {
            let mut st = master.lock();
            st.touch(id, now);
            st.ready(id, r.credits, now)
        }
        Some(Msg::LeaseDone(d)) => {
            let mut st = master.lock();
            st.touch(id, now);
            st.lease_done(id, d.lease_id, now)
        }
        Some(Msg::ImageDone(d)) => match image_done(master, id, d, partials).await {
            Ok(fx) => fx,
            Err(refused) => return refused,
        },
    };
    master.apply(fx).await;
    None
}

/// A stream-mode output chunk: written to its partial output (off the
/// runtime). `Some(why)`: refused.
async fn output_chunk(
    master: &Master,
    id: WorkerId,
    c: pb::OutputChunk,
    partials: &mut Partials,
) -> Option<String> {
    let target = {
        let mut st = master.lock();
        st.touch(id, Instant::now());
        st.stream_target(id, &c.job_id, c.lease_id, c.index)
    };
    match target {
        Ok(Some(t)) => {
            let stopped = Some("the output writer stopped".to_string());
            partials
                .off_runtime(stopped, move |p| p.write(&t, &c).err())
                .await
        }
        Ok(None) => {
            tracing::debug!(worker = %id, job = %c.job_id, lease = c.lease_id, "late output chunk dropped");
            None
        }
        Err(r) => {
            partials.discard(c.lease_id, c.index).await;
            Some(format!("output chunk: {r}"))
        }
    }
}

/// A result for one image: handed to the job logic, and in stream mode its
/// output committed (renamed into place, off the runtime) once accepted.
/// `Err(Some(why))`: refused; `Err(None)`: late, nothing to do.
async fn image_done(
    master: &Master,
    id: WorkerId,
    d: pb::ImageDone,
    partials: &mut Partials,
) -> Result<Effects, Option<String>> {
    let now = Instant::now();
    let Some(rec) = d.record else {
        partials.discard(d.lease_id, d.index).await;
        return Err(Some("ImageDone without a record".into()));
    };
    let record = match wire::record_from_pb(rec) {
        Ok(r) => r,
        Err(e) => {
            partials.discard(d.lease_id, d.index).await;
            return Err(Some(format!("malformed result: {e}")));
        }
    };
    let ok = record.status == imgnorm_core::record::Status::Ok;
    let checksum = record.checksum.clone().unwrap_or_default();
    let result = {
        let mut st = master.lock();
        st.touch(id, now);
        match super::convert::phase_job(&d.job_id) {
            None => Err(Rejected::Stale(format!("unknown job {:?}", d.job_id))),
            Some(job) => {
                let r = ImageResult {
                    worker: id,
                    job,
                    lease: d.lease_id,
                    attempt: d.attempt,
                    index: d.index,
                    record,
                    stats: d.stats.map(wire::stats_from_pb),
                    raw: d.raw.map(wire::raw_from_pb),
                };
                st.image_done(r, now)
                    .map(|fx| (fx, st.output_of(&d.job_id)))
            }
        }
    };
    match result {
        Err(Rejected::Refused(r)) => {
            partials.discard(d.lease_id, d.index).await;
            Err(Some(format!(
                "result for {} item {}: {r}",
                d.job_id, d.index
            )))
        }
        Err(Rejected::Stale(why)) => {
            partials.discard(d.lease_id, d.index).await;
            tracing::debug!(worker = %id, reason = %why, "late result discarded");
            Err(None)
        }
        Ok((mut fx, Some((_, Transfer::Stream)))) if ok && fx.accepted && !fx.stats_result => {
            // Another session may deliver the job's last result before
            // this rename: the job then waits for this commit before its
            // dataset is written (`State::stream_committed`).
            let (lease, index) = (d.lease_id, d.index);
            let stopped = Err("the output writer stopped".to_string());
            let commit = move |p: &mut Partials| p.commit(lease, index, &checksum);
            let committed = match partials.off_runtime(stopped, commit).await {
                Ok(()) => master.lock().stream_committed(&d.job_id, d.index),
                Err(e) => master.lock().write_failed(&d.job_id, d.index, &e),
            };
            fx.finalize.extend(committed.finalize);
            Ok(fx)
        }
        Ok((fx, _)) => {
            partials.discard(d.lease_id, d.index).await;
            Ok(fx)
        }
    }
}

/// Stream-mode outputs being received on one session: written to a
/// temporary file chunk by chunk, hashed on the way, renamed into place only
/// when the result is accepted and its checksum matches. The file work runs
/// on the blocking pool ([`Partials::off_runtime`]), never on the async
/// runtime that also carries every session's heartbeats.
#[derive(Default)]
struct Partials {
    open: HashMap<(u64, u64), Partial>,
}

struct Partial {
    file: std::fs::File,
    tmp: PathBuf,
    dest: PathBuf,
    /// `dest` relative to the output tree: what manifest reasons show.
    rel: String,
    len: u64,
    hash: xxhash_rust::xxh3::Xxh3,
    broken: Option<String>,
}

impl Partials {
    /// Runs `f` (file creation, writes, renames, removals) on the blocking
    /// pool, the session waiting for it, so chunks keep their order.
    /// `stopped`: the answer when the runtime shuts down meanwhile.
    async fn off_runtime<R: Send + 'static>(
        &mut self,
        stopped: R,
        f: impl FnOnce(&mut Partials) -> R + Send + 'static,
    ) -> R {
        let mut me = std::mem::take(self);
        match tokio::task::spawn_blocking(move || {
            let r = f(&mut me);
            (me, r)
        })
        .await
        {
            Ok((me, r)) => {
                *self = me;
                r
            }
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => stopped,
            },
        }
    }

    /// Drops a partial output (its temporary file removed off the runtime);
    /// nothing to do, and no thread used, when none is open.
    async fn discard(&mut self, lease: u64, index: u64) {
        if self.open.contains_key(&(lease, index)) {
            self.off_runtime((), move |p| p.discard_now(lease, index))
                .await;
        }
    }

    /// Drops every partial output (the session ended).
    async fn discard_all(&mut self) {
        if !self.open.is_empty() {
            self.off_runtime((), Partials::discard_all_now).await;
        }
    }

    /// Appends a chunk. `Err`: a chunk an honest worker never sends (too
    /// many files open, past the largest output the job allows, out of
    /// order); the output is then dropped or marked broken.
    fn write(&mut self, t: &StreamTarget, c: &pb::OutputChunk) -> Result<(), String> {
        use std::io::Write;
        let key = (c.lease_id, c.index);
        if c.offset == 0 {
            self.discard_now(c.lease_id, c.index);
            if self.open.len() >= limits::MAX_OPEN_OUTPUTS {
                return Err(format!(
                    "more than {} outputs open at once",
                    limits::MAX_OPEN_OUTPUTS
                ));
            }
            let dest = t.root.join(&t.rel);
            // A short name beside the output, whatever the output's length
            // (`crate::output::sweep_temp_files` knows it).
            let name = format!(".{}.{}.{}.part", std::process::id(), c.lease_id, c.index);
            let tmp = dest.parent().unwrap_or(&t.root).join(name);
            let file = crate::formats::make_parent_dirs(&t.root, &dest)
                .and_then(|()| std::fs::File::create(&tmp));
            match file {
                Ok(file) => {
                    self.open.insert(
                        key,
                        Partial {
                            file,
                            tmp,
                            dest,
                            rel: t.rel.clone(),
                            len: 0,
                            hash: xxhash_rust::xxh3::Xxh3::new(),
                            broken: None,
                        },
                    );
                }
                Err(e) => {
                    tracing::error!(path = %tmp.display(), error = %e, "cannot create output");
                    return Ok(());
                }
            }
        }
        let Some(p) = self.open.get_mut(&key) else {
            return Ok(());
        };
        if p.broken.is_some() {
            return Ok(());
        }
        if c.offset != p.len {
            p.broken = Some(format!(
                "chunk at offset {} but {} bytes received",
                c.offset, p.len
            ));
            return Err(p.broken.clone().unwrap_or_default());
        }
        if p.len + c.data.len() as u64 > t.max_bytes {
            p.broken = Some(format!(
                "output larger than the {} bytes the job's --max-pixels allows",
                t.max_bytes
            ));
            return Err(p.broken.clone().unwrap_or_default());
        }
        if let Err(e) = p.file.write_all(&c.data) {
            p.broken = Some(format!("cannot write output {}: {e}", p.rel));
            return Ok(());
        }
        p.hash.update(&c.data);
        p.len += c.data.len() as u64;
        Ok(())
    }

    fn commit(&mut self, lease: u64, index: u64, checksum: &str) -> Result<(), String> {
        let p = self
            .open
            .remove(&(lease, index))
            .ok_or_else(|| "no output data was received".to_string())?;
        let result = (|| {
            if let Some(b) = &p.broken {
                return Err(b.clone());
            }
            let got = format!("{:032x}", p.hash.digest128());
            if got != checksum {
                return Err(format!(
                    "output checksum {got} does not match the reported {checksum}"
                ));
            }
            std::fs::rename(&p.tmp, &p.dest)
                .map_err(|e| format!("cannot write output {}: {e}", p.rel))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&p.tmp);
        }
        result
    }

    fn discard_now(&mut self, lease: u64, index: u64) {
        if let Some(p) = self.open.remove(&(lease, index)) {
            let _ = std::fs::remove_file(&p.tmp);
        }
    }

    fn discard_all_now(&mut self) {
        for (_, p) in self.open.drain() {
            let _ = std::fs::remove_file(&p.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream-mode output whose file cannot be opened at once (here a
    /// FIFO without a reader, where `open` blocks) must not stall the
    /// runtime that also carries the sessions' heartbeats: on a
    /// single-threaded runtime another task still runs meanwhile. (With
    /// the file work on the runtime itself, the other task never ran.)
    #[tokio::test(flavor = "current_thread")]
    async fn stream_file_work_leaves_the_runtime_free() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join(format!(".{}.7.0.part", std::process::id()));
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: mkfifo(3) on a NUL-terminated path this test owns.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let t = StreamTarget {
            root: dir.path().to_path_buf(),
            rel: "x.png.npy".into(),
            max_bytes: 1 << 20,
        };
        let c = pb::OutputChunk {
            job_id: "job-1".into(),
            lease_id: 7,
            index: 0,
            offset: 0,
            data: vec![1, 2, 3],
        };
        // A reader that never reads (non-blocking open), after a while: the
        // blocked open then returns, so the test fails instead of hanging
        // when the open blocks the runtime.
        let late = fifo.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(2));
            let _ = reader(&late);
        });
        let mut partials = Partials::default();
        let write = partials.off_runtime(None, move |p| p.write(&t, &c).err());
        let other = tokio::time::sleep(std::time::Duration::from_millis(50));
        tokio::select! {
            _ = write => panic!("the output opened although nothing reads the FIFO"),
            () = other => {}
        }
        // Let the blocked open finish, so the runtime can shut down.
        let _reader = reader(&fifo).expect("open the FIFO for reading");
    }

    fn reader(path: &std::path::Path) -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
    }
}
