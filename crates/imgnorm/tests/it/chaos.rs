//! Chaos and recovery: a master with a state database (`--data-dir`)
//! SIGKILLed in the middle of a job and restarted with the same command,
//! workers SIGKILLed at random and replaced, the whole cluster stopped and
//! taken up again with `imgnorm resume`. The dataset must be byte-identical
//! to `centralized`, with each image exactly once in the manifest; images
//! processed more than once (counted from the workers' trace) are reported
//! and may only come from batches in flight at a kill.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::distributed::{FAST, Master, Proc, assert_once_each, dataset, wait_for};
use crate::helpers::{self, assert_same_dataset, bin};

/// Images per lease and leases a worker holds (its prefetch): the most a
/// worker can have in flight when it is killed.
const BATCH: u64 = 8;
const PREFETCH: u64 = 2;

/// A small deterministic generator: the seed is printed, so a failing run
/// can be replayed with `IMGNORM_CHAOS_SEED`.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

fn traced_worker(url: &str, name: &str, trace: &Path, delay_ms: u64) -> Proc {
    Proc(
        Command::new(bin())
            .args(["worker", "--master", url, "--name", name])
            .args(["--prefetch", &PREFETCH.to_string()])
            .arg("--delay-per-image-ms")
            .arg(delay_ms.to_string())
            .env("IMGNORM_LOG", "warn")
            .env("IMGNORM_TEST_TRACE", trace)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start worker"),
    )
}

/// Images processed more than once, from the workers' trace lines.
fn redone(trace: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(trace).unwrap_or_default();
    let mut seen: HashMap<&str, u64> = HashMap::new();
    for line in text.lines() {
        *seen.entry(line).or_default() += 1;
    }
    let processed = seen.values().sum::<u64>();
    (processed, processed - seen.len() as u64)
}

fn done(m: &Master) -> u64 {
    m.status()["jobs"][0]["done"].as_u64().unwrap_or(0)
}

/// A generated dataset (plus every fixture), its `centralized` reference
/// under `c`, and where the master writes (`d`) and keeps its state.
struct Job {
    dir: tempfile::TempDir,
    input: PathBuf,
    c: PathBuf,
    out: PathBuf,
    data: PathBuf,
}

impl Job {
    fn new(count: u64, opts: &[&str]) -> Job {
        let dir = helpers::tempdir();
        let input = dataset(dir.path(), count);
        let c = dir.path().join("c");
        let r = helpers::centralized(&input, &c, opts);
        assert_eq!(r.code, 3, "fixtures include failures\n{r}");
        let (out, data) = (dir.path().join("d"), dir.path().join("state"));
        Job {
            dir,
            input,
            c,
            out,
            data,
        }
    }

    /// Master flags: fast failure detection, `opts`, the data directory.
    fn flags<'a>(&'a self, opts: &[&'a str]) -> Vec<&'a str> {
        let mut extra: Vec<&str> = FAST.to_vec();
        extra.extend(opts);
        extra.extend(["--data-dir", self.data.to_str().expect("utf-8 path")]);
        extra
    }

    fn master(&self, extra: &[&str]) -> Master {
        Master::start(&self.input, &self.out, extra)
    }

    fn trace(&self) -> PathBuf {
        self.dir.path().join("trace.tsv")
    }

    /// The output equals `centralized`'s, each image once.
    fn check(&self) {
        assert_same_dataset(&self.c, &self.out);
        assert_once_each(&self.out, &self.input);
    }
}

#[test]
fn workers_and_master_killed_at_random_dataset_identical_to_centralized() {
    let seed = std::env::var("IMGNORM_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("chaos seed {seed} (replay with IMGNORM_CHAOS_SEED={seed})");
    let mut rng = Rng(seed);
    let job = Job::new(1000, &[]);
    let total = helpers::files_under(&job.input).len() as u64;
    let trace = job.trace();
    // FAST leases BATCH images at a time.
    let extra = job.flags(&["--no-speculation"]);
    let started = Instant::now();
    let master = job.master(&extra);
    let addr = master.addr().to_string();
    let url = master.url().to_string();
    let delay = 12;
    let mut workers: Vec<Proc> = (0..3)
        .map(|i| traced_worker(&url, &format!("w{i}"), &trace, delay))
        .collect();
    let mut next_name = 3;

    // Worker kills at these fractions of the job, the master's at 45 %.
    let mut worker_kills = 0u64;
    let mut master = Some(master);
    for (at, who) in [
        (0.10, "worker"),
        (0.25, "worker"),
        (0.45, "master"),
        (0.60, "worker"),
        (0.80, "worker"),
    ] {
        let target = (at * total as f64) as u64;
        let m = master.as_ref().expect("a master");
        wait_for(
            &format!("{}% of the job", at * 100.0),
            Duration::from_secs(120),
            || done(m) >= target,
        );
        if who == "master" {
            let before = done(m);
            master.take().expect("master").kill();
            eprintln!("chaos: master SIGKILLed at {before}/{total} images");
            let m = Master::start_on(&addr, &job.input, &job.out, &extra);
            wait_for("the restarted master", Duration::from_secs(30), || {
                done(&m) > 0
            });
            eprintln!("chaos: master restarted: {}/{total} images kept", done(&m));
            master = Some(m);
        } else {
            let k = rng.below(workers.len() as u64) as usize;
            let mut victim = workers.swap_remove(k);
            let _ = victim.0.kill();
            let _ = victim.0.wait();
            worker_kills += 1;
            workers.push(traced_worker(&url, &format!("w{next_name}"), &trace, delay));
            next_name += 1;
        }
    }
    let code = master
        .take()
        .expect("master")
        .wait(Duration::from_secs(180));
    assert_eq!(code, 3, "the job completes (fixtures fail: exit 3)");
    drop(workers);
    let elapsed = started.elapsed();
    job.check();
    let (processed, twice) = redone(&trace);
    // In flight at a kill: a killed worker's leases; at the master's kill,
    // every worker's leases plus the results of the last commit window.
    let bound = (worker_kills + 3) * BATCH * PREFETCH + 3 * BATCH * PREFETCH;
    eprintln!(
        "chaos report: {total} images, {worker_kills} worker kills, 1 master kill, \
         {processed} images processed, {twice} processed more than once (bound {bound}), {:.1}s",
        elapsed.as_secs_f64()
    );
    assert!(
        twice <= bound,
        "{twice} images were processed more than once; only batches in flight may be redone (bound {bound})"
    );
}

#[test]
fn a_stopped_cluster_is_taken_up_with_resume() {
    let job = Job::new(200, &[]);
    let master = job.master(&job.flags(&[]));
    let trace = job.trace();
    let w = traced_worker(master.url(), "w0", &trace, 15);
    wait_for("a third of the job", Duration::from_secs(60), || {
        done(&master) >= 70
    });
    // The whole cluster goes down.
    drop(w);
    master.kill();
    let (processed_before, _) = redone(&trace);

    // `resume` with its own local workers finishes the job.
    let o = Command::new(bin())
        .args(["resume", "-q", "--listen", "127.0.0.1:0", "--workers", "2"])
        .arg("--data-dir")
        .arg(&job.data)
        .env("IMGNORM_TEST_TRACE", &trace)
        .output()
        .expect("run resume");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(3),
        "resume finishes the job\n{stderr}"
    );
    assert!(
        stderr.contains("resuming job-1"),
        "resume says what it takes up\n{stderr}"
    );
    job.check();
    let (processed, twice) = redone(&trace);
    assert!(processed_before >= 70);
    assert!(
        processed >= processed_before + 130,
        "the rest was processed"
    );
    assert!(
        twice <= BATCH * PREFETCH + BATCH,
        "only the batches in flight at the stop are redone: {twice}"
    );

    // Nothing left: a second resume says so and succeeds.
    let o = Command::new(bin())
        .args(["resume", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&job.data)
        .output()
        .expect("run resume");
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing to resume"));

    // A serving master on the same directory lists the finished job, and
    // numbers new jobs after it.
    let serving = serve(&job.data);
    let url = serving.url().to_string();
    let s = serving.status();
    let listed = &s["jobs"][0];
    assert_eq!(listed["job_id"], "job-1", "{s}");
    assert_eq!(listed["state"], "done", "{s}");
    assert_eq!(
        listed["images"].as_u64(),
        Some(helpers::files_under(&job.input).len() as u64)
    );
    assert_eq!(listed["done"], listed["images"]);
    let o = Command::new(bin())
        .args(["submit", "--master", &url, "--input"])
        .arg(&job.input)
        .arg("--output")
        .arg(job.dir.path().join("again"))
        .output()
        .expect("submit");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("submitted job-2"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `imgnorm master --serve --data-dir DIR` on a free port.
fn serve(data: &Path) -> Master {
    let mut cmd = Command::new(bin());
    cmd.args([
        "master",
        "-q",
        "--serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(data);
    Master::launch(cmd)
}

#[test]
fn a_resumed_job_redoes_outputs_that_were_damaged_or_removed() {
    let job = Job::new(80, &[]);
    let out = &job.out;
    let master = job.master(&job.flags(&[]));
    let w = traced_worker(master.url(), "w0", &job.trace(), 25);
    wait_for("half the job", Duration::from_secs(60), || {
        done(&master) >= 40
    });
    drop(w);
    master.kill();
    // Damage one finished output and delete another behind the master's back.
    let outputs: Vec<String> = helpers::files_under(out)
        .into_iter()
        .filter(|f| f.ends_with(".npy"))
        .collect();
    assert!(outputs.len() >= 2, "outputs written before the kill");
    let damaged = out.join(&outputs[0]);
    let mut bytes = helpers::read(&damaged);
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&damaged, bytes).expect("damage");
    std::fs::remove_file(out.join(&outputs[1])).expect("remove");

    let o = Command::new(bin())
        .args(["resume", "-q", "--listen", "127.0.0.1:0", "--workers", "1"])
        .arg("--data-dir")
        .arg(&job.data)
        .output()
        .expect("run resume");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("resuming job-1"))
        .unwrap_or_else(|| panic!("resume line\n{stderr}"));
    assert!(
        !line.contains(" 0 to redo"),
        "the damaged and removed outputs are redone: {line}"
    );
    job.check();
}

#[test]
fn a_two_phase_stack_job_survives_master_kills_in_both_phases() {
    // Dataset-wide scaling needs a statistics phase; the stack layout and
    // the resize exercise the stored-row check.
    let opts = [
        "--scope",
        "dataset",
        "--resize",
        "16x12",
        "--channels",
        "rgb",
        "--format",
        "stack",
    ];
    let job = Job::new(150, &opts);
    let extra = job.flags(&opts);
    let mut master = job.master(&extra);
    let addr = master.addr().to_string();
    let url = master.url().to_string();
    let trace = job.trace();
    let _workers: Vec<Proc> = (0..2)
        .map(|i| traced_worker(&url, &format!("w{i}"), &trace, 20))
        .collect();
    for phase in ["stats", "write"] {
        wait_for(
            &format!("a third of the {phase} phase"),
            Duration::from_secs(120),
            || {
                // `done` counts final rows, few in the statistics phase;
                // there, count the workers' accepted results instead.
                let s = master.status();
                let progress = if phase == "stats" {
                    s["workers"]
                        .as_array()
                        .map(|ws| ws.iter().filter_map(|w| w["images_done"].as_u64()).sum())
                        .unwrap_or(0)
                } else {
                    s["jobs"][0]["done"].as_u64().unwrap_or(0)
                };
                s["jobs"][0]["phase"] == phase && progress >= 60
            },
        );
        master.kill();
        master = Master::start_on(&addr, &job.input, &job.out, &extra);
        wait_for("the restarted master", Duration::from_secs(30), || {
            master.status()["jobs"][0]["phase"] == phase
        });
    }
    assert_eq!(master.wait(Duration::from_secs(120)), 3);
    assert_same_dataset(&job.c, &job.out);
    let (_, twice) = redone(&trace);
    eprintln!("two-phase chaos: {twice} images processed more than once");
    assert!(twice <= 2 * 2 * BATCH * PREFETCH);
}
