//! The state database's tests: jobs and results survive a reopen, a second
//! master is refused, and a database of schema version 1 (written here with
//! that version's SQL and protobuf encoding) is migrated in place.
use super::*;
use imgnorm_core::record::Status;

#[test]
fn jobs_and_results_survive_a_reopen_and_end_clears_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, saved) = Store::open(dir.path()).expect("open");
    assert!(saved.is_empty());
    store.job(NewJob {
        key: JobKey(3),
        input: "/in".into(),
        output: "/out".into(),
        transfer: "shared".into(),
        options_json: "{}".into(),
        files: Arc::new(["a.png", "b\nc.png"].into_iter().collect()),
        problems: vec![Record::bare("x", Status::Failed, Some("loop".into()))],
        submitted_unix: 12.5,
    });
    let mut r = Record::bare("a.png", Status::Ok, None);
    r.width = Some(3);
    store.result(ResultRow {
        job: JobKey(3),
        phase: StoredPhase::Write,
        index: 0,
        record: r.clone(),
        stats: None,
        raw: None,
        worker: "w1".into(),
        worker_id: 7,
        lease: 9,
        attempt: 2,
    });
    store.phase_done(JobKey(3), &DatasetParams::default());
    store.flush();
    drop(store);
    let (store, saved) = Store::open(dir.path()).expect("reopen");
    assert_eq!(saved.len(), 1);
    let j = &saved[0];
    assert!(j.unfinished());
    assert_eq!(j.files, vec!["a.png".to_string(), "b\nc.png".to_string()]);
    assert_eq!(j.problems.len(), 1);
    assert!(j.params.is_some());
    assert_eq!(j.results.len(), 1);
    assert_eq!(j.results[0].record, r);
    assert_eq!((j.results[0].lease, j.results[0].attempt), (9, 2));
    let summary = crate::output::Summary::new(
        imgnorm_core::record::Counts {
            images: 3,
            ok: 1,
            failed: 2,
            skipped: 0,
        },
        Duration::from_secs(2),
    );
    store.end(
        JobKey(3),
        "done",
        None,
        serde_json::to_string(&summary).ok(),
    );
    store.flush();
    drop(store);
    let (_store, saved) = Store::open(dir.path()).expect("reopen");
    assert!(!saved[0].unfinished());
    assert!(saved[0].results.is_empty());
    assert_eq!(saved[0].images, 3, "two files and one discovery row");
    assert_eq!(saved[0].summary.map(|s| s.failed), Some(2));
    assert!(saved[0].finished_unix.is_some());
    assert_eq!(max_key(&saved), 3);
}

#[test]
fn a_second_master_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, _) = Store::open(dir.path()).expect("open");
    let Err(err) = Store::open(dir.path()) else {
        panic!("a second open of a locked directory succeeded");
    };
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(err.to_string().contains(&std::process::id().to_string()));
}

/// The SQL of schema version 1, as that version created it.
const V1_SCHEMA: &str = "CREATE TABLE jobs (
        key INTEGER PRIMARY KEY,
        input TEXT NOT NULL,
        output TEXT NOT NULL,
        transfer TEXT NOT NULL,
        options TEXT NOT NULL,
        files TEXT NOT NULL,
        problems TEXT NOT NULL,
        submitted REAL NOT NULL,
        state TEXT NOT NULL,
        error TEXT,
        params TEXT,
        summary TEXT,
        finished REAL
    );
    CREATE TABLE results (
        job INTEGER NOT NULL,
        phase INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        result BLOB NOT NULL,
        worker TEXT NOT NULL,
        worker_id INTEGER NOT NULL,
        PRIMARY KEY (job, phase, idx)
    );
    PRAGMA user_version = 1;";

/// Writes a schema-1 database as that version did: one running job with
/// a writing-phase result (output statistics) and a statistics-phase
/// result (raw statistics), each a protobuf `ImageDone` blob.
fn write_v1(dir: &Path, results: &[(i64, ResultRow)]) {
    let conn = Connection::open(dir.join(DB_FILE)).expect("create");
    conn.execute_batch(V1_SCHEMA).expect("schema 1");
    conn.execute(
        "INSERT INTO jobs (key, input, output, transfer, options, files, problems, submitted, state)
         VALUES (5, '/in', '/out', 'shared', '{}', '[\"a.png\",\"b.png\"]', '[]', 1.5, 'running')",
        [],
    )
    .expect("job");
    for (phase, r) in results {
        // Frozen version-1 messages: the current protocol encodes
        // extremes in other fields.
        let done = super::v1::encode(
            r.lease,
            r.attempt,
            &r.record,
            r.stats.as_ref(),
            r.raw.as_ref(),
        );
        conn.execute(
            "INSERT OR REPLACE INTO results (job, phase, idx, result, worker, worker_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                5i64,
                phase,
                r.index as i64,
                done,
                r.worker,
                r.worker_id as i64
            ],
        )
        .expect("result");
    }
}

#[test]
fn a_schema_1_database_is_migrated_in_place() {
    use imgnorm_core::dataset::{RawChannel, RawStats};
    use imgnorm_core::stats::{ChannelStats, ImageStats};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ok = Record::bare("a.png", Status::Ok, None);
    ok.width = Some(3);
    ok.output = Some("a.png.npy".into());
    ok.checksum = Some("0".repeat(32));
    let write = ResultRow {
        job: JobKey(5),
        phase: Phase::Write,
        index: 0,
        record: ok,
        stats: Some(ImageStats {
            channels: vec![ChannelStats {
                count: 3,
                mean: 0.1 + 0.2,
                m2: 1.0 / 3.0,
                min: 0.0,
                max: 1.0,
                histogram: vec![1, 2],
            }],
        }),
        raw: None,
        worker: "w1".into(),
        worker_id: 7,
        lease: 9,
        attempt: 2,
    };
    let stats = ResultRow {
        phase: Phase::Stats,
        index: 1,
        record: Record::bare("b.png", Status::Ok, None),
        stats: None,
        raw: Some(RawStats {
            sample_type: imgnorm_core::sample::SampleType::Uint8,
            channels: vec![RawChannel {
                count: 4,
                mean: 1.0 / 7.0,
                m2: 2.0,
                min: 1.0,
                max: 200.0,
            }],
        }),
        ..write.clone()
    };
    write_v1(dir.path(), &[(2, write.clone()), (1, stats.clone())]);
    let (store, saved) = Store::open(dir.path()).expect("a schema-1 database opens");
    assert_eq!(saved.len(), 1);
    let mut got = saved[0].results.clone();
    got.sort_by_key(|r| r.index);
    assert_eq!(got, vec![write.clone(), stats]);
    // New results are written in the new schema beside the migrated ones.
    store.result(ResultRow {
        index: 1,
        ..write.clone()
    });
    store.flush();
    drop(store);
    let conn = Connection::open(dir.path().join(DB_FILE)).expect("open");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("version");
    assert_eq!(version, SCHEMA_VERSION);
    drop(conn);
    let (_store, saved) = Store::open(dir.path()).expect("reopen");
    assert_eq!(saved[0].results.len(), 3);
}

#[test]
fn a_database_of_a_newer_schema_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = Connection::open(dir.path().join(DB_FILE)).expect("create");
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("version");
    drop(conn);
    let Err(err) = Store::open(dir.path()) else {
        panic!("a newer database was opened");
    };
    assert!(matches!(err, StoreError::Schema { .. }), "{err}");
    assert!(
        err.to_string().contains("move the data directory aside"),
        "{err}"
    );
}

#[test]
fn an_undecodable_schema_1_result_fails_the_open_and_leaves_the_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_v1(dir.path(), &[]);
    let conn = Connection::open(dir.path().join(DB_FILE)).expect("open");
    conn.execute(
        "INSERT INTO results (job, phase, idx, result, worker, worker_id) VALUES (5, 2, 0, x'ff', 'w', 1)",
        [],
    )
    .expect("insert");
    drop(conn);
    let Err(err) = Store::open(dir.path()) else {
        panic!("a corrupt result was migrated");
    };
    assert!(matches!(err, StoreError::Corrupt { job: 5, .. }), "{err}");
    let conn = Connection::open(dir.path().join(DB_FILE)).expect("open");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("version");
    assert_eq!(version, 1, "rolled back");
}
