//! The master's wire edge: job names read from and written to protocol
//! messages, and the protocol messages the master builds from the job
//! logic's domain types (leases, revokes, welcome, worker status). The
//! record and statistics conversions are in [`crate::wire`].
use std::time::{Duration, Instant};

use imgnorm_core::ids::JobId;
use imgnorm_core::jobs::{JobKey, JobRun, LeaseOrder, Phase, PhaseJob, WorkerInfo};
use imgnorm_core::scheduler::{WorkerState, WorkerView};
use imgnorm_proto::v1 as pb;

use crate::wire;

/// The job and phase a protocol message names (`job-N`, `job-N.stats`).
pub fn phase_job(name: &str) -> Option<PhaseJob> {
    PhaseJob::from_name(name)
}

/// The number of a job id as users see it (`job-N`; a phase's name such as
/// `job-N.stats` is not a job id).
pub fn job_key(id: &JobId) -> Option<JobKey> {
    phase_job(&id.0)
        .filter(|p| p.phase == Phase::Write)
        .map(|p| p.key)
}

/// The `Welcome` for worker `id`.
pub fn welcome(id: imgnorm_core::ids::WorkerId, heartbeat_interval: Duration) -> pb::Welcome {
    pb::Welcome {
        worker_id: id.0.to_string(),
        heartbeat_interval_ms: heartbeat_interval.as_millis() as u32,
        protocol_version: imgnorm_proto::PROTOCOL_VERSION,
    }
}

/// A `Revoke` message.
pub fn revoke(job: PhaseJob, lease: u64) -> pb::MasterMessage {
    pb::MasterMessage {
        msg: Some(pb::master_message::Msg::Revoke(pb::Revoke {
            job_id: job.name(),
            lease_id: lease,
        })),
    }
}

/// The `Lease` message of `order`, for a job `j` (its spec).
pub fn lease(order: LeaseOrder, j: &JobRun) -> pb::Lease {
    pb::Lease {
        job_id: order.job.name(),
        lease_id: order.lease.0,
        attempt: order.attempt,
        batch_id: order.batch.0,
        spec: Some(pb::JobSpec {
            input_root: j.input.display().to_string(),
            output_root: j.output.display().to_string(),
            transfer: j.transfer.as_str().to_string(),
            engine_options_json: wire::options_to_json(&j.options),
            phase: match order.job.phase {
                Phase::Stats => pb::Phase::Stats,
                Phase::Write => pb::Phase::Write,
            }
            .into(),
            params: order.params.as_ref().map(wire::params_to_pb),
        }),
        items: order
            .items
            .into_iter()
            .map(|i| pb::Item {
                index: i.index,
                path: i.path,
                data: Vec::new(),
                fetch: false,
                size: 0,
            })
            .collect(),
    }
}

/// One worker's line of the status.
pub fn worker_status(v: &WorkerView, info: WorkerInfo, now: Instant) -> pb::WorkerStatus {
    pb::WorkerStatus {
        worker_id: v.id.0.to_string(),
        name: info.name,
        hostname: info.hostname,
        state: match v.state {
            WorkerState::Alive => "alive",
            WorkerState::Draining => "draining",
            WorkerState::Dead => "dead",
        }
        .to_string(),
        images_done: v.items_done,
        leases: v.leases.len() as u32,
        last_seen_s_ago: now.saturating_duration_since(v.last_seen).as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_write_phase_names_only() {
        assert_eq!(job_key(&JobId("job-7".into())), Some(JobKey(7)));
        assert_eq!(job_key(&JobId("job-7.stats".into())), None);
        assert_eq!(job_key(&JobId("job-x".into())), None);
    }
}
