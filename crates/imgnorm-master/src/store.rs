//! The master's durable state: jobs (file lists, options, phase, outcome)
//! and every accepted per-image result, in an SQLite database in WAL mode
//! under the master's data directory. Writes go through one writer thread
//! that groups them into a transaction per [`COMMIT_EVERY`] (so persistence
//! never holds the scheduler lock and is not the bottleneck); reads happen
//! once, when a master starts and resumes what an earlier one left
//! unfinished (see docs/RELIABILITY.md).
//!
//! A result lost in the last commit window of a killed master is simply
//! processed again after the restart; a result on disk is trusted only
//! after its output was verified against the recorded checksum
//! (`Master::resume`).
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use imgnorm_core::dataset::DatasetParams;
pub use imgnorm_core::jobs::ResultRow;
use imgnorm_core::jobs::{JobKey, Phase};
use imgnorm_core::pathlist::PathList;
use imgnorm_core::record::Record;
use rusqlite::{Connection, params};

mod rows;
mod v1;

/// The database file under the data directory.
pub const DB_FILE: &str = "imgnorm-state.sqlite";
/// Longest time an accepted result waits before it is committed.
pub const COMMIT_EVERY: Duration = Duration::from_millis(50);
/// Most operations in one transaction.
const MAX_BATCH: usize = 20_000;
/// Schema version stored in `PRAGMA user_version`. Version 1 stored each
/// result as a protobuf `ImageDone`; version 2 stores its own row types
/// (`store/rows.rs`). A version-1 database is migrated in place when opened.
pub const SCHEMA_VERSION: i64 = 2;

/// The results table of [`SCHEMA_VERSION`]: the manifest row as JSON, the
/// statistics as JSON of the database's own row types ([`rows`]).
const CREATE_RESULTS: &str = "CREATE TABLE IF NOT EXISTS results (
    job INTEGER NOT NULL,
    phase INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    record TEXT NOT NULL,
    stats TEXT,
    raw TEXT,
    worker TEXT NOT NULL,
    worker_id INTEGER NOT NULL,
    lease INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    PRIMARY KEY (job, phase, idx)
);";

const PUT_RESULT: &str = "INSERT OR REPLACE INTO results
    (job, phase, idx, record, stats, raw, worker, worker_id, lease, attempt)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// Opening or reading the state database failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    Dir {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// SQLite refused.
    #[error("state database {path}: {source}")]
    Sql {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The database was written by a newer imgnorm.
    #[error(
        "state database {path} has schema version {found}; this imgnorm reads versions 1 to {SCHEMA_VERSION}: run the imgnorm version that wrote it, or move the data directory aside to start afresh (its unfinished jobs are then not resumed)"
    )]
    Schema {
        /// The database file.
        path: PathBuf,
        /// Version found.
        found: i64,
    },
    /// A stored value does not decode.
    #[error("state database {path}: job {job}: {what}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// The job.
        job: u64,
        /// What is wrong.
        what: String,
    },
    /// Another master holds the data directory.
    #[error(
        "the data directory {path} is in use by another imgnorm master{holder}; give each master its own"
    )]
    Locked {
        /// The folder.
        path: PathBuf,
        /// ` (pid N)` when known.
        holder: String,
    },
    /// The writer thread could not be started.
    #[error("cannot start the state writer thread: {0}")]
    Thread(std::io::Error),
}

/// Which phase a stored result belongs to.
pub type StoredPhase = Phase;

/// The number a phase is stored as.
fn phase_code(p: Phase) -> i64 {
    match p {
        Phase::Stats => 1,
        Phase::Write => 2,
    }
}

/// A job as submitted.
pub struct NewJob {
    /// The job.
    pub key: JobKey,
    /// Input root.
    pub input: String,
    /// Output root.
    pub output: String,
    /// `shared` or `stream`.
    pub transfer: String,
    /// Engine options as JSON (`wire::options_to_json`).
    pub options_json: String,
    /// Relative paths, indexed by item.
    pub files: Arc<PathList>,
    /// Rows found at discovery.
    pub problems: Vec<Record>,
    /// Submission time, seconds since the Unix epoch.
    pub submitted_unix: f64,
}

enum Op {
    Job(NewJob),
    Result(Box<ResultRow>),
    Phase {
        job: JobKey,
        params: String,
    },
    End {
        job: JobKey,
        state: &'static str,
        error: Option<String>,
        summary: Option<String>,
        finished_unix: f64,
    },
    Flush(mpsc::SyncSender<()>),
}

/// A job read back from the database.
pub struct SavedJob {
    /// Job number.
    pub key: u64,
    /// Input root.
    pub input: PathBuf,
    /// Output root.
    pub output: PathBuf,
    /// `shared` or `stream`.
    pub transfer: String,
    /// Engine options as JSON.
    pub options_json: String,
    /// Relative paths.
    pub files: Vec<String>,
    /// Discovery rows.
    pub problems: Vec<Record>,
    /// Submission time (Unix seconds).
    pub submitted_unix: f64,
    /// `queued`/`running` (unfinished), `done`, `failed` or `cancelled`.
    pub state: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Parameters fixed by a completed statistics phase.
    pub params: Option<DatasetParams>,
    /// Accepted results (only loaded for unfinished jobs).
    pub results: Vec<ResultRow>,
    /// Images in the job, discovery rows included.
    pub images: u64,
    /// A finished job's summary (`done` jobs).
    pub summary: Option<crate::output::Summary>,
    /// When it finished (Unix seconds).
    pub finished_unix: Option<f64>,
}

impl SavedJob {
    /// Still to be completed.
    pub fn unfinished(&self) -> bool {
        matches!(self.state.as_str(), "queued" | "running")
    }
}

/// Handle on the writer thread (cheap to clone).
#[derive(Clone)]
pub struct Store {
    tx: Sender<Op>,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sql {
        path: path.to_path_buf(),
        source,
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Store {
    /// Opens (creating if needed) the database under `dir`, reads every
    /// job in it, and starts the writer thread.
    pub fn open(dir: &Path) -> Result<(Store, Vec<SavedJob>), StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let lock = lock_dir(dir)?;
        let path = dir.join(DB_FILE);
        let e = sql(&path);
        let conn = Connection::open(&path).map_err(&e)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(&e)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(&e)?;
        // WAL + NORMAL: a commit survives a killed process (the WAL is in
        // the page cache); only a power loss can drop the last commits.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(&e)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(&e)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Schema {
                path: path.clone(),
                found: version,
            });
        }
        // Space freed by finished jobs goes back to the file system (set
        // before the first table exists; a no-op afterwards).
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(&e)?;
        let mut conn = conn;
        if version == 1 {
            migrate_v1(&mut conn, &path)?;
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS jobs (
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
             );",
        )
        .map_err(&e)?;
        conn.execute_batch(CREATE_RESULTS).map_err(&e)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(&e)?;
        let saved = load(&conn, &path)?;
        let (tx, rx) = mpsc::channel();
        let thread_path = path.clone();
        std::thread::Builder::new()
            .name("imgnorm-state".into())
            .spawn(move || {
                // The lock lives as long as the writer, which outlives every
                // handle; the kernel drops it when the process dies.
                let _lock = lock;
                writer(conn, rx, &thread_path)
            })
            .map_err(StoreError::Thread)?;
        Ok((
            Store {
                tx,
                path: Arc::new(path.clone()),
            },
            saved,
        ))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a new job (with its file list).
    pub fn job(&self, job: NewJob) {
        let _ = self.tx.send(Op::Job(job));
    }

    /// Records an accepted result.
    pub fn result(&self, row: ResultRow) {
        let _ = self.tx.send(Op::Result(Box::new(row)));
    }

    /// Records that job `job`'s statistics phase fixed `params`.
    pub fn phase_done(&self, job: JobKey, params: &DatasetParams) {
        let params = serde_json::to_string(params).unwrap_or_default();
        let _ = self.tx.send(Op::Phase { job, params });
    }

    /// Records how a job ended (`done`, `failed`, `cancelled`).
    pub fn end(
        &self,
        job: JobKey,
        state: &'static str,
        error: Option<String>,
        summary: Option<String>,
    ) {
        let _ = self.tx.send(Op::End {
            job,
            state,
            error,
            summary,
            finished_unix: unix_now(),
        });
    }

    /// Waits until everything sent so far is committed (or the writer is
    /// gone).
    pub fn flush(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.tx.send(Op::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

/// The lock file beside the database.
pub const LOCK_FILE: &str = "imgnorm-state.lock";

/// Takes the data directory's lock (`flock`), waiting a little for a master
/// that is just exiting; fails clearly when another master holds it.
fn lock_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let path = dir.join(LOCK_FILE);
    let io = |source| StoreError::Dir {
        path: path.clone(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        // SAFETY: flock(2) on a descriptor this function owns.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            break;
        }
        if Instant::now() >= deadline {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(StoreError::Locked {
                path: dir.to_path_buf(),
                holder: if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                },
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f.set_len(0).map_err(io)?;
    f.rewind().map_err(io)?;
    write!(f, "{}", std::process::id()).map_err(io)?;
    Ok(f)
}

fn writer(mut conn: Connection, rx: Receiver<Op>, path: &Path) {
    let mut failing = false;
    while let Ok(first) = rx.recv() {
        let started = Instant::now();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let left = COMMIT_EVERY.saturating_sub(started.elapsed());
            match rx.recv_timeout(left) {
                Ok(op) => {
                    let flush = matches!(op, Op::Flush(_));
                    batch.push(op);
                    if flush {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let mut flushes = Vec::new();
        let ended = batch.iter().any(|op| matches!(op, Op::End { .. }));
        match commit(&mut conn, batch, &mut flushes) {
            Ok(()) => {
                if ended {
                    let _ = conn.execute_batch("PRAGMA incremental_vacuum");
                }
                if failing {
                    tracing::info!(db = %path.display(), "state database writable again");
                    failing = false;
                }
            }
            Err(e) => {
                // The job goes on from memory; only a restart would redo
                // more work than necessary. Said once per failing spell.
                if !failing {
                    tracing::error!(db = %path.display(), error = %e, "cannot write the state database: a restarted master will redo the unsaved results");
                    failing = true;
                }
            }
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}

fn commit(
    conn: &mut Connection,
    batch: Vec<Op>,
    flushes: &mut Vec<mpsc::SyncSender<()>>,
) -> rusqlite::Result<()> {
    let txn = conn.transaction()?;
    {
        let mut put = txn.prepare(PUT_RESULT)?;
        for op in batch {
            match op {
                Op::Result(r) => put_result(&mut put, &r)?,
                Op::Job(j) => {
                    // A JSON array, written path by path from the
                    // compressed list.
                    let files = serde_json::to_string(&JsonSeq(&j.files)).unwrap_or_default();
                    let problems = serde_json::to_string(&j.problems).unwrap_or_default();
                    txn.execute(
                        "INSERT OR REPLACE INTO jobs
                         (key, input, output, transfer, options, files, problems, submitted, state)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'running')",
                        params![
                            j.key.0 as i64,
                            j.input,
                            j.output,
                            j.transfer,
                            j.options_json,
                            files,
                            problems,
                            j.submitted_unix
                        ],
                    )?;
                    txn.execute(
                        "DELETE FROM results WHERE job = ?1",
                        params![j.key.0 as i64],
                    )?;
                }
                Op::Phase { job, params } => {
                    txn.execute(
                        "UPDATE jobs SET params = ?2 WHERE key = ?1",
                        params![job.0 as i64, params],
                    )?;
                }
                Op::End {
                    job,
                    state,
                    error,
                    summary,
                    finished_unix,
                } => {
                    txn.execute(
                        "UPDATE jobs SET state = ?2, error = ?3, summary = ?4, finished = ?5
                         WHERE key = ?1",
                        params![job.0 as i64, state, error, summary, finished_unix],
                    )?;
                    // A finished job's results are in its manifest now.
                    txn.execute("DELETE FROM results WHERE job = ?1", params![job.0 as i64])?;
                }
                Op::Flush(f) => flushes.push(f),
            }
        }
    }
    txn.commit()
}

fn load(conn: &Connection, path: &Path) -> Result<Vec<SavedJob>, StoreError> {
    let e = sql(path);
    let mut stmt = conn
        .prepare(
            "SELECT key, input, output, transfer, options,
                    CASE WHEN state IN ('queued', 'running') THEN files ELSE '[]' END,
                    CASE WHEN state IN ('queued', 'running') THEN problems ELSE '[]' END,
                    submitted, state, error, params, summary, finished,
                    json_array_length(files) + json_array_length(problems)
             FROM jobs ORDER BY key",
        )
        .map_err(&e)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, f64>(7)?,
                r.get::<_, String>(8)?,
                r.get::<_, Option<String>>(9)?,
                r.get::<_, Option<String>>(10)?,
                r.get::<_, Option<String>>(11)?,
                r.get::<_, Option<f64>>(12)?,
                r.get::<_, i64>(13)?,
            ))
        })
        .map_err(&e)?;
    let mut jobs = Vec::new();
    for row in rows {
        let (
            key,
            input,
            output,
            transfer,
            options,
            files,
            problems,
            submitted,
            state,
            error,
            p,
            summary,
            finished_unix,
            images,
        ) = row.map_err(&e)?;
        let key = key as u64;
        let corrupt = |what: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            job: key,
            what,
        };
        let unfinished = matches!(state.as_str(), "queued" | "running");
        // Finished jobs are listed, not run: their lists are not read.
        let files = serde_json::from_str(&files).map_err(|x| corrupt(format!("file list: {x}")))?;
        let problems =
            serde_json::from_str(&problems).map_err(|x| corrupt(format!("problems: {x}")))?;
        let summary = summary.and_then(|s| serde_json::from_str(&s).ok());
        let params = match p {
            Some(p) => {
                Some(serde_json::from_str(&p).map_err(|x| corrupt(format!("parameters: {x}")))?)
            }
            None => None,
        };
        let results = if unfinished {
            load_results(conn, path, key)?
        } else {
            Vec::new()
        };
        jobs.push(SavedJob {
            key,
            input: PathBuf::from(input),
            output: PathBuf::from(output),
            transfer,
            options_json: options,
            files,
            problems,
            submitted_unix: submitted,
            state,
            error,
            params,
            results,
            images: images.max(0) as u64,
            summary,
            finished_unix,
        });
    }
    Ok(jobs)
}

fn load_results(conn: &Connection, path: &Path, job: u64) -> Result<Vec<ResultRow>, StoreError> {
    let e = sql(path);
    let mut stmt = conn
        .prepare(
            "SELECT phase, idx, record, stats, raw, worker, worker_id, lease, attempt
             FROM results WHERE job = ?1",
        )
        .map_err(&e)?;
    let rows = stmt
        .query_map(params![job as i64], |r| {
            Ok((
                (r.get::<_, i64>(0)?, r.get::<_, i64>(1)?),
                r.get::<_, String>(2)?,
                (
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ),
                (r.get::<_, String>(5)?, r.get::<_, i64>(6)?),
                (r.get::<_, i64>(7)?, r.get::<_, i64>(8)?),
            ))
        })
        .map_err(&e)?;
    let mut out = Vec::new();
    for row in rows {
        let ((phase, index), record, (stats, raw), (worker, worker_id), (lease, attempt)) =
            row.map_err(&e)?;
        let corrupt = |what: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            job,
            what: format!("result {index}: {what}"),
        };
        let record = serde_json::from_str(&record).map_err(|x| corrupt(x.to_string()))?;
        let stats = match stats {
            Some(s) => Some(
                serde_json::from_str::<rows::StatsRow>(&s)
                    .map_err(|x| corrupt(x.to_string()))?
                    .into(),
            ),
            None => None,
        };
        let raw = match raw {
            Some(s) => Some(
                serde_json::from_str::<rows::RawRow>(&s)
                    .map_err(|x| corrupt(x.to_string()))?
                    .into(),
            ),
            None => None,
        };
        out.push(ResultRow {
            job: JobKey(job),
            phase: if phase == phase_code(Phase::Stats) {
                Phase::Stats
            } else {
                Phase::Write
            },
            index: index as u64,
            record,
            stats,
            raw,
            worker,
            worker_id: worker_id as u64,
            lease: lease as u64,
            attempt: attempt as u32,
        });
    }
    Ok(out)
}

/// Writes one result row of [`SCHEMA_VERSION`] with `put` ([`PUT_RESULT`]).
fn put_result(put: &mut rusqlite::Statement<'_>, r: &ResultRow) -> rusqlite::Result<()> {
    let record = serde_json::to_string(&r.record).unwrap_or_default();
    let stats = r
        .stats
        .as_ref()
        .and_then(|s| serde_json::to_string(&rows::StatsRow::from(s)).ok());
    let raw = r
        .raw
        .as_ref()
        .and_then(|s| serde_json::to_string(&rows::RawRow::from(s)).ok());
    put.execute(params![
        r.job.0 as i64,
        phase_code(r.phase),
        r.index as i64,
        record,
        stats,
        raw,
        r.worker,
        r.worker_id as i64,
        r.lease as i64,
        r.attempt
    ])?;
    Ok(())
}

/// Migrates a schema-1 database in place, in one transaction: every stored
/// result is decoded from its version-1 protobuf blob ([`v1`]) and written
/// as a row of [`SCHEMA_VERSION`]. A blob that does not decode fails the
/// open (the database is left as it was).
fn migrate_v1(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let e = sql(path);
    let txn = conn.transaction().map_err(&e)?;
    txn.execute_batch("ALTER TABLE results RENAME TO results_v1;")
        .map_err(&e)?;
    txn.execute_batch(CREATE_RESULTS).map_err(&e)?;
    let mut migrated = 0u64;
    {
        let mut get = txn
            .prepare("SELECT job, phase, idx, result, worker, worker_id FROM results_v1")
            .map_err(&e)?;
        let mut put = txn.prepare(PUT_RESULT).map_err(&e)?;
        let mut rows = get.query([]).map_err(&e)?;
        while let Some(r) = rows.next().map_err(&e)? {
            let job: i64 = r.get(0).map_err(&e)?;
            let phase: i64 = r.get(1).map_err(&e)?;
            let index: i64 = r.get(2).map_err(&e)?;
            let blob: Vec<u8> = r.get(3).map_err(&e)?;
            let old = v1::decode(&blob).map_err(|what| StoreError::Corrupt {
                path: path.to_path_buf(),
                job: job as u64,
                what: format!("result {index} (schema version 1): {what}"),
            })?;
            let row = ResultRow {
                job: JobKey(job as u64),
                phase: if phase == phase_code(Phase::Stats) {
                    Phase::Stats
                } else {
                    Phase::Write
                },
                index: index as u64,
                record: old.record,
                stats: old.stats,
                raw: old.raw,
                worker: r.get(4).map_err(&e)?,
                worker_id: r.get::<_, i64>(5).map_err(&e)? as u64,
                lease: old.lease,
                attempt: old.attempt,
            };
            put_result(&mut put, &row).map_err(&e)?;
            migrated += 1;
        }
    }
    txn.execute_batch("DROP TABLE results_v1;").map_err(&e)?;
    txn.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(&e)?;
    txn.commit().map_err(&e)?;
    tracing::info!(db = %path.display(), results = migrated, "state database migrated from schema version 1 to {SCHEMA_VERSION}");
    Ok(())
}

/// The highest job number in the database (so new jobs never reuse one).
pub fn max_key(saved: &[SavedJob]) -> u64 {
    saved.iter().map(|j| j.key).max().unwrap_or(0)
}

#[cfg(test)]
mod tests;

/// A [`PathList`] serialized as a JSON array of its paths, one at a time.
struct JsonSeq<'a>(&'a PathList);

impl serde::Serialize for JsonSeq<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}
