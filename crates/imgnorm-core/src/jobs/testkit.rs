//! Helpers shared by the job logic's unit and property tests: honest
//! results for any item, leases read from effects, a clock from one base.
use std::time::{Duration, Instant};

use crate::dataset::raw_stats;
use crate::ids::WorkerId;
use crate::normalize::Pixels;
use crate::options::{EngineOptions, Scope};
use crate::record::{Record, Status};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::stats::{Binning, ChannelStats, ImageStats};

use super::{
    Effect, Effects, ImageResult, JobKey, Jobs, LeaseOrder, NewJob, Phase, Transfer, WorkerInfo,
};

pub fn secs(base: Instant, s: u64) -> Instant {
    base + Duration::from_secs(s)
}

pub fn config(batch_size: u64) -> SchedulerConfig {
    SchedulerConfig {
        batch_size,
        min_batch_size: batch_size,
        heartbeat_timeout: Duration::from_secs(5),
        max_crashes: 3,
        speculate: false,
    }
}

pub fn machine(config: SchedulerConfig) -> Jobs {
    Jobs::new(Scheduler::new(config).expect("valid config"))
}

pub fn worker(j: &mut Jobs, now: Instant) -> WorkerId {
    j.register(WorkerInfo::default(), now)
}

pub fn files(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("d/{i:03}.png")).collect()
}

pub fn two_phase() -> EngineOptions {
    EngineOptions {
        scope: Scope::Dataset,
        ..EngineOptions::default()
    }
}

pub fn job(files: Vec<String>, options: EngineOptions, transfer: Transfer) -> NewJob {
    NewJob {
        input: "in".into(),
        output: "out".into(),
        transfer,
        options,
        files: files.into_iter().collect(),
        problems: Vec::new(),
    }
}

pub fn leases(fx: &Effects) -> Vec<LeaseOrder> {
    fx.effects
        .iter()
        .filter_map(|e| match e {
            Effect::SendLease(l) => Some(l.clone()),
            _ => None,
        })
        .collect()
}

pub fn datasets(fx: &Effects) -> Vec<JobKey> {
    fx.datasets().collect()
}

pub fn stats_of(values: &[f64]) -> ImageStats {
    ImageStats {
        channels: vec![ChannelStats::from_values(values, &Binning::new((0.0, 1.0)))],
    }
}

/// An honest writing-phase `ok` row for `path` (a 2x1 grey image).
pub fn ok_record(path: &str) -> Record {
    let mut r = Record::bare(path, Status::Ok, None);
    r.output = Some(format!("{path}.npy"));
    r.width = Some(2);
    r.height = Some(1);
    r.channels = Some(1);
    r.bit_depth = Some(8);
    r.sample_type = Some(crate::sample::SampleType::Uint8);
    r.min = vec![0.0];
    r.max = vec![255.0];
    r.checksum = Some("0".repeat(32));
    r
}

/// The honest result of `l`'s item `index`: `ok` (with the statistics its
/// phase calls for) or failed.
pub fn result(l: &LeaseOrder, index: u64, ok: bool) -> ImageResult {
    let path = l
        .items
        .iter()
        .find(|i| i.index == index)
        .map(|i| i.path.clone())
        .unwrap_or_default();
    let mut r = ImageResult {
        worker: l.worker,
        job: l.job,
        lease: l.lease.0,
        attempt: l.attempt,
        index,
        record: Record::bare(path.clone(), Status::Failed, Some("decode error".into())),
        stats: None,
        raw: None,
    };
    if !ok {
        return r;
    }
    match l.job.phase {
        Phase::Write => {
            r.record = ok_record(&path);
            r.stats = Some(stats_of(&[0.0, 1.0]));
        }
        Phase::Stats => {
            let px = [3u8, 9 + (index % 7) as u8];
            let raw = raw_stats(Pixels::U8(&px), 1);
            let mut rec = Record::bare(path, Status::Ok, None);
            rec.width = Some(2);
            rec.height = Some(1);
            rec.channels = Some(1);
            rec.bit_depth = Some(raw.sample_type.bits());
            rec.sample_type = Some(raw.sample_type);
            rec.min = raw.channels.iter().map(|c| c.min).collect();
            rec.max = raw.channels.iter().map(|c| c.max).collect();
            r.record = rec;
            r.raw = Some(raw);
        }
    }
    r
}
