//! The runtime state's tests: leases and results through the real job logic,
//! checked in the protocol messages a worker would receive.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use imgnorm_core::dataset::DatasetParams;
use imgnorm_core::ids::WorkerId;
use imgnorm_core::jobs::{ImageResult, JobKey, NewJob, PhaseJob, ResultRow};
use imgnorm_core::options::EngineOptions;
use imgnorm_core::record::{Record, Status};
use imgnorm_core::scheduler::{Scheduler, SchedulerConfig};
use imgnorm_core::stats::{ImageStats, OrderedFold};
use imgnorm_proto::v1 as pb;

use super::*;
use crate::store::{SavedJob, StoredPhase};

fn new_job(
    input: &str,
    output: &str,
    transfer: Transfer,
    options: EngineOptions,
    files: Vec<String>,
    problems: Vec<Record>,
) -> NewJob {
    NewJob {
        input: input.into(),
        output: output.into(),
        transfer,
        options,
        files: files.into_iter().collect(),
        problems,
    }
}

/// A result as a session receives it (statistics added with [`with`]).
fn res(
    w: WorkerId,
    job: &str,
    lease: u64,
    attempt: u32,
    index: u64,
    record: Record,
) -> ImageResult {
    ImageResult {
        worker: w,
        job: PhaseJob::from_name(job).expect("a job name"),
        lease,
        attempt,
        index,
        record,
        stats: None,
        raw: None,
    }
}

fn with(
    r: ImageResult,
    stats: Option<ImageStats>,
    raw: Option<imgnorm_core::dataset::RawStats>,
) -> ImageResult {
    ImageResult { stats, raw, ..r }
}

use imgnorm_core::stats::{Binning, ChannelStats};

fn ok_record(path: &str) -> Record {
    let mut r = Record::bare(path, Status::Ok, None);
    r.output = Some(format!("{path}.npy"));
    r.width = Some(2);
    r.height = Some(1);
    r.channels = Some(1);
    r.bit_depth = Some(8);
    r.sample_type = Some(imgnorm_core::sample::SampleType::Uint8);
    r.min = vec![0.0];
    r.max = vec![255.0];
    r.checksum = Some("0".repeat(32));
    r
}

fn stats_of(values: &[f64]) -> ImageStats {
    ImageStats {
        channels: vec![ChannelStats::from_values(values, &Binning::new((0.0, 1.0)))],
    }
}

/// One worker holding one lease over a two-image job.
fn leased() -> (State, WorkerId, u64, String) {
    let now = Instant::now();
    let sched = Scheduler::new(SchedulerConfig {
        min_batch_size: 2,
        ..SchedulerConfig::default()
    })
    .expect("config");
    let mut st = State::new(sched, Duration::from_secs(1));
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let (w, _) = st.register(WorkerInfo::default(), tx, now);
    let files = vec!["a/x.png".to_string(), "a/y.png".to_string()];
    let (job, _) = st.add_job(
        new_job(
            "in",
            "out",
            Transfer::Shared,
            EngineOptions::default(),
            files,
            Vec::new(),
        ),
        now,
    );
    let fx = st.ready(w, 1, now);
    let lease = fx.leases.first().expect("a lease").1.lease_id;
    (st, w, lease, job.0)
}

#[test]
fn lies_about_the_lease_are_refused_and_late_results_are_stale() {
    let (mut st, w, lease, job) = leased();
    let now = Instant::now();
    let stats = || Some(stats_of(&[0.0, 1.0]));
    let refused = |r: Result<Effects, Rejected>| matches!(r, Err(Rejected::Refused(_)));
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let (other, _) = st.register(WorkerInfo::default(), tx, now);
    let x = || ok_record("a/x.png");
    let r = st.image_done(with(res(other, &job, lease, 1, 0, x()), stats(), None), now);
    assert!(refused(r), "another worker's lease");
    let r = st.image_done(with(res(w, &job, lease, 2, 0, x()), stats(), None), now);
    assert!(refused(r), "wrong attempt");
    let r = st.image_done(with(res(w, &job, lease, 1, 7, x()), stats(), None), now);
    assert!(refused(r), "index out of range");
    let (second, _) = st.add_job(
        new_job(
            "in2",
            "out2",
            Transfer::Shared,
            EngineOptions::default(),
            vec!["a/x.png".to_string()],
            Vec::new(),
        ),
        now,
    );
    let r = st.image_done(
        with(res(w, &second.0, lease, 1, 0, x()), stats(), None),
        now,
    );
    assert!(refused(r), "a lease of another job");
    let mut outside = x();
    outside.output = Some("../../etc/x.npy".into());
    let r = st.image_done(with(res(w, &job, lease, 1, 0, outside), stats(), None), now);
    assert!(refused(r), "output outside the root");
    let r = st.image_done(with(res(w, "job-9", lease, 1, 0, x()), stats(), None), now);
    assert!(matches!(r, Err(Rejected::Stale(_))), "unknown job");
    assert_eq!(st.core.jobs[&JobKey(1)].rows.filled(), 0);
    st.image_done(with(res(w, &job, lease, 1, 0, x()), stats(), None), now)
        .expect("the honest result is accepted");
}

#[test]
fn stream_chunks_are_checked_against_the_lease() {
    let now = Instant::now();
    let sched = Scheduler::new(SchedulerConfig::default()).expect("config");
    let mut st = State::new(sched, Duration::from_secs(1));
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let (w, _) = st.register(WorkerInfo::default(), tx, now);
    let (tx, _rx2) = tokio::sync::mpsc::unbounded_channel();
    let (other, _) = st.register(WorkerInfo::default(), tx, now);
    let (job, _) = st.add_job(
        new_job(
            "in",
            "out",
            Transfer::Stream,
            EngineOptions::default(),
            vec!["a.png".to_string()],
            Vec::new(),
        ),
        now,
    );
    let lease = st
        .ready(w, 1, now)
        .leases
        .first()
        .expect("a lease")
        .1
        .lease_id;
    let t = st
        .stream_target(w, &job.0, lease, 0)
        .expect("honest")
        .expect("a target");
    assert_eq!(t.rel, "a.png.npy");
    assert!(st.stream_target(other, &job.0, lease, 0).is_err());
    assert!(st.stream_target(w, &job.0, lease, 5).is_err());
    assert!(matches!(
        st.stream_target(w, &job.0, lease + 100, 0),
        Ok(None)
    ));
    assert_eq!(
        st.input_path(&job.0, 0),
        Some(PathBuf::from("in").join("a.png"))
    );
    assert_eq!(st.input_path(&job.0, 1), None);
}

#[test]
fn results_with_missing_or_inconsistent_stats_are_refused() {
    let (mut st, w, lease, job) = leased();
    let now = Instant::now();
    let r = ok_record("a/x.png");
    let missing = st.image_done(with(res(w, &job, lease, 1, 0, r.clone()), None, None), now);
    assert!(missing.is_err());
    let three = stats_of(&[0.0, 1.0, 0.5]);
    let wrong_count = st.image_done(
        with(res(w, &job, lease, 1, 0, r.clone()), Some(three), None),
        now,
    );
    assert!(
        wrong_count
            .err()
            .unwrap()
            .to_string()
            .contains("inconsistent statistics")
    );
    let mut two_channels = stats_of(&[0.0, 1.0]);
    two_channels.channels.push(two_channels.channels[0].clone());
    let wrong_channels = st.image_done(
        with(res(w, &job, lease, 1, 0, r), Some(two_channels), None),
        now,
    );
    assert!(wrong_channels.is_err());
}

#[test]
fn stats_fold_in_index_order_whatever_the_arrival_order() {
    let (mut st, w, lease, job) = leased();
    let now = Instant::now();
    let (sx, sy) = (stats_of(&[0.0, 1.0]), stats_of(&[0.25, 0.125]));
    st.image_done(
        with(
            res(w, &job, lease, 1, 1, ok_record("a/y.png")),
            Some(sy.clone()),
            None,
        ),
        now,
    )
    .expect("accepted");
    assert_eq!(st.core.jobs[&JobKey(1)].stats.held(), 1);
    st.image_done(
        with(
            res(w, &job, lease, 1, 0, ok_record("a/x.png")),
            Some(sx.clone()),
            None,
        ),
        now,
    )
    .expect("accepted");
    assert_eq!(st.core.jobs[&JobKey(1)].stats.held(), 0);
    let mut want = imgnorm_core::stats::DatasetStats::new((0.0, 1.0));
    want.add(&sx);
    want.add(&sy);
    let got = std::mem::replace(
        &mut st.core.jobs.get_mut(&JobKey(1)).unwrap().stats,
        OrderedFold::new((0.0, 1.0)),
    );
    assert_eq!(got.finish(), want);
}

fn saved(files: &[&str], results: Vec<ResultRow>, params: Option<DatasetParams>) -> SavedJob {
    SavedJob {
        key: 4,
        input: "in".into(),
        output: "out".into(),
        transfer: "shared".into(),
        options_json: String::new(),
        files: files.iter().map(|f| f.to_string()).collect(),
        problems: Vec::new(),
        submitted_unix: 0.0,
        state: "running".into(),
        error: None,
        params,
        results,
        images: files.len() as u64,
        summary: None,
        finished_unix: None,
    }
}

fn row(phase: StoredPhase, index: u64, record: Record, stats: Option<ImageStats>) -> ResultRow {
    ResultRow {
        job: JobKey(4),
        phase,
        index,
        record,
        stats,
        raw: None,
        worker: "old".into(),
        worker_id: 1,
        lease: 1,
        attempt: 1,
    }
}

#[test]
fn a_restored_job_leases_only_the_images_without_a_result() {
    let now = Instant::now();
    let sched = Scheduler::new(SchedulerConfig::default()).expect("config");
    let mut st = State::new(sched, Duration::from_secs(1));
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let (w, _) = st.register(WorkerInfo::default(), tx, now);
    let job = saved(
        &["a.png", "b.png", "c.png"],
        vec![
            row(
                StoredPhase::Write,
                1,
                ok_record("b.png"),
                Some(stats_of(&[0.0, 1.0])),
            ),
            row(
                StoredPhase::Write,
                2,
                Record::bare("c.png", Status::Failed, Some("bad".into())),
                None,
            ),
        ],
        None,
    );
    let (id, _) = st.restore_job(job, EngineOptions::default(), Transfer::Shared, now, now);
    assert_eq!(id.0, "job-4");
    assert_eq!(st.core.jobs[&JobKey(4)].final_before_phase(), 2);
    assert_eq!(
        (
            st.core.jobs[&JobKey(4)].counts.ok,
            st.core.jobs[&JobKey(4)].counts.failed
        ),
        (1, 1)
    );
    // New jobs never reuse a stored number.
    assert_eq!(st.core.next_job, 5);
    let fx = st.ready(w, 4, now);
    let items: Vec<u64> = fx
        .leases
        .iter()
        .flat_map(|(_, l, _, _)| l.items.iter().map(|i| i.index))
        .collect();
    assert_eq!(items, vec![0], "only a.png is left");
    let lease = fx.leases[0].1.lease_id;
    let stats = Some(stats_of(&[0.0, 1.0]));
    let fx = st
        .image_done(
            with(
                res(w, "job-4", lease, 1, 0, ok_record("a.png")),
                stats,
                None,
            ),
            now,
        )
        .expect("accepted");
    assert_eq!(fx.finalize.len(), 1, "job complete");
    let r = &st.core.jobs[&JobKey(4)].rows;
    assert_eq!(r.filled(), r.len());
    assert_eq!(
        st.core.jobs[&JobKey(4)].stats.held(),
        0,
        "every item settled"
    );
}

#[test]
fn two_phase_job_writes_only_what_the_statistics_phase_found_ok() {
    use imgnorm_core::dataset::raw_stats;
    use imgnorm_core::normalize::Pixels;
    use imgnorm_core::options::Scope;
    let now = Instant::now();
    let sched = Scheduler::new(SchedulerConfig {
        min_batch_size: 3,
        ..SchedulerConfig::default()
    })
    .expect("config");
    let mut st = State::new(sched, Duration::from_secs(1));
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let (w, _) = st.register(WorkerInfo::default(), tx, now);
    let files: Vec<String> = ["a.png", "b.png", "c.png"].map(String::from).to_vec();
    let opts = EngineOptions {
        scope: Scope::Dataset,
        ..EngineOptions::default()
    };
    let (job, _) = st.add_job(
        new_job("in", "out", Transfer::Shared, opts, files, Vec::new()),
        now,
    );
    let fx = st.ready(w, 2, now);
    let lease = &fx.leases.first().expect("a statistics lease").1;
    let spec = lease.spec.as_ref().expect("spec");
    assert_eq!(spec.phase(), pb::Phase::Stats);
    assert_eq!(lease.job_id, "job-1.stats");
    assert!(spec.params.is_none());
    let id = lease.lease_id;
    let measured = |path: &str, px: &[u8]| {
        let mut r = Record::bare(path, Status::Ok, None);
        r.width = Some(px.len() as u32);
        r.height = Some(1);
        r.channels = Some(1);
        let raw = raw_stats(Pixels::U8(px), 1);
        r.bit_depth = Some(raw.sample_type.bits());
        r.sample_type = Some(raw.sample_type);
        r.min = raw.channels.iter().map(|c| c.min).collect();
        r.max = raw.channels.iter().map(|c| c.max).collect();
        (r, Some(raw))
    };
    // A result for the writing phase is refused while statistics run.
    assert!(
        st.image_done(
            with(res(w, &job.0, id, 1, 0, ok_record("a.png")), None, None),
            now
        )
        .is_err()
    );
    let (r, raw) = measured("c.png", &[7, 200]);
    st.image_done(with(res(w, "job-1.stats", id, 1, 2, r), None, raw), now)
        .expect("accepted");
    // Raw statistics that do not fit the record are refused.
    let (mut r, raw) = measured("a.png", &[3, 9]);
    r.width = Some(5);
    assert!(
        st.image_done(
            with(res(w, "job-1.stats", id, 1, 0, r), None, raw.clone()),
            now
        )
        .is_err()
    );
    let bad = Record::bare("b.png", Status::Failed, Some("decode error".into()));
    st.image_done(with(res(w, "job-1.stats", id, 1, 1, bad), None, None), now)
        .expect("accepted");
    let (r, raw) = measured("a.png", &[3, 9]);
    let fx = st
        .image_done(with(res(w, "job-1.stats", id, 1, 0, r), None, raw), now)
        .expect("accepted");
    assert!(fx.stats_result);
    // The writing phase starts at once, over items 0 and 2 only.
    let jr = &st.core.jobs[&JobKey(1)];
    assert_eq!(jr.two.phase, Phase::Write);
    assert_eq!(jr.two.params.min, vec![3.0]);
    assert_eq!(jr.two.params.max, vec![200.0]);
    assert_eq!(jr.final_before_phase(), 1);
    assert_eq!(jr.counts.failed, 1);
    let lease = &fx.leases.first().expect("a writing lease").1;
    let spec = lease.spec.as_ref().expect("spec");
    assert_eq!(spec.phase(), pb::Phase::Write);
    assert_eq!(lease.job_id, "job-1");
    assert_eq!(spec.params.as_ref().map(|p| p.min.clone()), Some(vec![3.0]));
    let items: Vec<u64> = lease.items.iter().map(|i| i.index).collect();
    assert_eq!(items, vec![0, 2]);
    let id = lease.lease_id;
    let stats = || Some(stats_of(&[0.0, 1.0]));
    assert!(
        st.image_done(
            with(res(w, "job-1", id, 1, 1, ok_record("b.png")), stats(), None),
            now
        )
        .is_err(),
        "item 1 is not part of the writing phase"
    );
    st.image_done(
        with(res(w, "job-1", id, 1, 2, ok_record("c.png")), stats(), None),
        now,
    )
    .expect("accepted");
    let fx = st
        .image_done(
            with(res(w, "job-1", id, 1, 0, ok_record("a.png")), stats(), None),
            now,
        )
        .expect("accepted");
    assert_eq!(fx.finalize.len(), 1, "job complete");
    let r = &st.core.jobs[&JobKey(1)].rows;
    assert_eq!(r.filled(), r.len());
}

/// Issue 16, item 2: the backlog of a two-phase job is right in its
/// statistics phase (the autoscaler saw none), and neither the work
/// completed nor the job's progress drops at the phase switch.
#[test]
fn two_phase_backlog_and_progress_are_right_in_every_phase() {
    use imgnorm_core::dataset::raw_stats;
    use imgnorm_core::normalize::Pixels;
    use imgnorm_core::options::Scope;
    let now = Instant::now();
    let sched = Scheduler::new(SchedulerConfig {
        min_batch_size: 3,
        ..SchedulerConfig::default()
    })
    .expect("config");
    let mut st = State::new(sched, Duration::from_secs(1));
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let (w, _) = st.register(WorkerInfo::default(), tx, now);
    let files: Vec<String> = ["a.png", "b.png", "c.png"].map(String::from).to_vec();
    let opts = EngineOptions {
        scope: Scope::Dataset,
        ..EngineOptions::default()
    };
    st.add_job(
        new_job("in", "out", Transfer::Shared, opts, files, Vec::new()),
        now,
    );
    let obs = st.autoscale_observation();
    assert_eq!(
        (obs.backlog, obs.completed),
        (6, 0),
        "3 to measure, 3 to write"
    );
    let lease = st.ready(w, 1, now).leases[0].1.lease_id;
    let measured = |path: &str| {
        let mut r = Record::bare(path, Status::Ok, None);
        let raw = raw_stats(Pixels::U8(&[3, 9]), 1);
        r.width = Some(2);
        r.height = Some(1);
        r.channels = Some(1);
        r.bit_depth = Some(raw.sample_type.bits());
        r.sample_type = Some(raw.sample_type);
        r.min = raw.channels.iter().map(|c| c.min).collect();
        r.max = raw.channels.iter().map(|c| c.max).collect();
        (r, Some(raw))
    };
    let (r, raw) = measured("a.png");
    st.image_done(with(res(w, "job-1.stats", lease, 1, 0, r), None, raw), now)
        .expect("accepted");
    let bad = Record::bare("b.png", Status::Failed, Some("decode error".into()));
    st.image_done(
        with(res(w, "job-1.stats", lease, 1, 1, bad), None, None),
        now,
    )
    .expect("accepted");
    let obs = st.autoscale_observation();
    assert_eq!(
        (obs.backlog, obs.completed),
        (3, 2),
        "1 to measure, 2 to write"
    );
    assert_eq!(st.core.jobs[&JobKey(1)].rows_final(), 1, "b.png is final");
    let (r, raw) = measured("c.png");
    st.image_done(with(res(w, "job-1.stats", lease, 1, 2, r), None, raw), now)
        .expect("accepted");
    assert_eq!(st.core.jobs[&JobKey(1)].two.phase, Phase::Write);
    let obs = st.autoscale_observation();
    assert_eq!((obs.backlog, obs.completed), (2, 3), "a and c to write");
    assert_eq!(
        st.core.jobs[&JobKey(1)].rows_final(),
        1,
        "no drop at the switch"
    );
    st.lease_done(w, lease, now);
    let fx = st.ready(w, 1, now);
    let lease = fx.leases[0].1.lease_id;
    let stats = || Some(stats_of(&[0.0, 1.0]));
    st.image_done(
        with(
            res(w, "job-1", lease, 1, 0, ok_record("a.png")),
            stats(),
            None,
        ),
        now,
    )
    .expect("accepted");
    let obs = st.autoscale_observation();
    assert_eq!((obs.backlog, obs.completed), (1, 4));
    assert_eq!(st.core.jobs[&JobKey(1)].rows_final(), 2);
}
