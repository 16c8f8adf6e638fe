//! The tonic implementation of `imgnorm.v1.Coordinator`: converts protocol
//! messages to calls on [`Master`] and its state, and maps errors to `Status`.
//! No scheduling decisions are made here.
use std::pin::Pin;
use std::time::Instant;

use imgnorm_core::ids::WorkerId;
use imgnorm_proto::PROTOCOL_VERSION;
use imgnorm_proto::v1 as pb;
use imgnorm_proto::v1::coordinator_server::{Coordinator, CoordinatorServer};
use imgnorm_proto::v1::worker_message::Msg;
use tokio_stream::Stream;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Master;
use super::state::WorkerInfo;
use crate::wire::{self, Transfer};

/// Largest gRPC message accepted or sent (stream mode carries whole images).
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// The gRPC face of a [`Master`].
pub struct CoordinatorService {
    master: Master,
}

impl CoordinatorService {
    /// Wraps a master.
    pub fn new(master: Master) -> CoordinatorService {
        CoordinatorService { master }
    }

    /// The tonic server with message limits set.
    pub fn into_server(self) -> CoordinatorServer<CoordinatorService> {
        CoordinatorServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
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
        let info = WorkerInfo {
            name: if hello.name.is_empty() {
                hello.hostname.clone()
            } else {
                hello.name.clone()
            },
            hostname: hello.hostname,
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
        drop(tx);
        let master = self.master.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(m)) => handle(&master, id, m).await,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(worker = %id, error = %e, "session stream error");
                        break;
                    }
                }
            }
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
            .submit(
                super::absolute(r.input.as_ref()),
                super::absolute(r.output.as_ref()),
                transfer,
                options,
            )
            .await
            .map_err(|e| Status::failed_precondition(format!("{e:#}")))?;
        Ok(Response::new(pb::SubmitResponse {
            job_id: id.0,
            images,
        }))
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

/// One message of an established session.
async fn handle(master: &Master, id: WorkerId, m: pb::WorkerMessage) {
    let now = Instant::now();
    let fx = match m.msg {
        Some(Msg::Hello(_)) | None => return,
        Some(Msg::Heartbeat(h)) => {
            master.lock().heartbeat(id, h.draining, now);
            return;
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
        Some(Msg::ImageDone(d)) => {
            let Some(rec) = d.record else {
                tracing::warn!(worker = %id, "ImageDone without a record: refused");
                return;
            };
            let record = match wire::record_from_pb(rec) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(worker = %id, error = %e, "malformed result refused");
                    return;
                }
            };
            let out_rel = record.output.clone();
            let ok = record.status == imgnorm_core::record::Status::Ok;
            let result = {
                let mut st = master.lock();
                st.touch(id, now);
                st.image_done(id, &d.job_id, d.lease_id, d.attempt, d.index, record, now)
                    .map(|fx| (fx, st.output_of(&d.job_id)))
            };
            match result {
                Err(e) => {
                    tracing::warn!(worker = %id, error = %e, "result refused");
                    return;
                }
                Ok((fx, Some((out, Transfer::Stream)))) if ok && fx.accepted => {
                    let bytes = d.output;
                    let rel = out_rel.unwrap_or_default();
                    let written = tokio::task::spawn_blocking(move || {
                        super::write_streamed(&out, &rel, &bytes)
                    })
                    .await;
                    let err = match written {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(e) => Some(e.to_string()),
                    };
                    if let Some(e) = err {
                        master.lock().write_failed(&d.job_id, d.index, &e);
                    }
                    fx
                }
                Ok((fx, _)) => fx,
            }
        }
    };
    master.apply(fx).await;
}
