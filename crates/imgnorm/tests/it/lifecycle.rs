//! A job's life on a running cluster, with real processes: two unfinished
//! jobs never share an output folder (same master, two masters, a master
//! and `centralized`); an autoscaled two-phase job starts its workers and
//! completes; `master`, `run` and `resume` stop promptly on SIGTERM/SIGINT
//! with a documented exit code, leave no worker behind, and `resume` then
//! finishes the job; a serving master gives back the memory of finished
//! jobs.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::distributed::{Master, Proc, wait_for};
use crate::helpers::{self, assert_same_dataset, bin, files_under, poll_until};

/// `count` generated images (no hostile fixtures: every run exits 0).
fn images(dir: &Path, count: u64) -> PathBuf {
    let input = dir.join("input");
    let st = Command::new(bin())
        .args([
            "gen", "--format", "mixed", "--size", "40x32", "--seed", "11",
        ])
        .arg("--count")
        .arg(count.to_string())
        .arg("--out")
        .arg(&input)
        .stdout(Stdio::null())
        .status()
        .expect("run gen");
    assert!(st.success());
    input
}

/// A process whose stderr is collected line by line while it runs.
struct Watched {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Watched {
    fn spawn(cmd: &mut Command) -> Watched {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().expect("stderr");
        let keep = Arc::clone(&lines);
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                keep.lock().expect("lines").push(l);
            }
        });
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(
                move || {
                    for _ in BufReader::new(out).lines().map_while(Result::ok) {}
                },
            );
        }
        Watched {
            child,
            stderr: lines,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("lines").join("\n")
    }

    fn url(&self) -> Option<String> {
        self.stderr.lock().expect("lines").iter().find_map(|l| {
            l.strip_prefix("imgnorm master listening on ")
                .map(|a| format!("http://{}", a.trim()))
        })
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the exit (at most `timeout`); `None` if still running.
    fn exit_within(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                // Let the reader thread drain what is left.
                std::thread::sleep(Duration::from_millis(100));
                return Some(st.code().unwrap_or(-1));
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pids of live processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
        };
        let zombie = field("State:").is_some_and(|s| s.starts_with('Z'));
        if !zombie && field("PPid:").and_then(|p| p.parse().ok()) == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// Whether process `pid` is still running (a zombie is not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| {
            !s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
        .unwrap_or(false)
}

fn status(url: &str) -> serde_json::Value {
    let out = Command::new(bin())
        .args(["status", "--json", "--master", url])
        .output()
        .expect("status");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn submit(url: &str, input: &Path, output: &Path, extra: &[&str]) -> helpers::Run {
    let mut args: Vec<std::ffi::OsString> = vec!["submit".into(), "--master".into(), url.into()];
    args.extend(["--input".into(), input.into()]);
    args.extend(["--output".into(), output.into()]);
    args.extend(extra.iter().map(Into::into));
    helpers::imgnorm(args)
}

const STACK: &[&str] = &[
    "--format",
    "stack",
    "--resize",
    "16x16",
    "--channels",
    "rgb",
];

/// Issue 16, item 1: `submit` of the same job twice (a retry) on a serving
/// master. The second is refused, naming the running job, and the first
/// ends with exactly the bytes `centralized` writes.
#[test]
fn a_second_job_on_a_running_jobs_output_is_refused_and_the_first_is_intact() {
    let dir = helpers::tempdir();
    let input = images(dir.path(), 40);
    let c = dir.path().join("c");
    let r = helpers::centralized(&input, &c, STACK);
    assert_eq!(r.code, 0, "{r}");
    let master = Master::serve(dir.path());
    let url = master.url().to_string();
    let out = dir.path().join("o");
    let first = submit(&url, &input, &out, STACK);
    assert_eq!(first.code, 0, "{first}");
    assert!(first.stdout.contains("submitted job-1"), "{first}");
    let _w = master.worker("slow", 40);
    wait_for(
        "the first job to be under way",
        Duration::from_secs(60),
        || status(&url)["jobs"][0]["done"].as_u64().unwrap_or(0) > 0,
    );
    let second = submit(&url, &input, &out, STACK);
    assert_ne!(second.code, 0, "the second job is refused\n{second}");
    assert!(
        second.stderr.contains("job-1") && second.stderr.contains("in use"),
        "the refusal names the running job\n{second}"
    );
    // An output nested inside the running job's output is refused too.
    let nested = submit(&url, &input, &out.join("sub"), STACK);
    assert_ne!(nested.code, 0, "{nested}");
    wait_for("the first job to finish", Duration::from_secs(120), || {
        status(&url)["jobs"][0]["state"] == "done"
    });
    assert_same_dataset(&c, &out);
    // Once the first job is over, the output may be used again.
    let again = submit(&url, &input, &out, STACK);
    assert_eq!(again.code, 0, "{again}");
    wait_for("the third job", Duration::from_secs(120), || {
        status(&url)["jobs"].as_array().is_some_and(|j| {
            j.iter()
                .any(|j| j["job_id"] == "job-2" && j["state"] == "done")
        })
    });
    assert_same_dataset(&c, &out);
}

/// Issue 16, item 1: two processes (a second master, a `centralized` run)
/// on the output of a master whose job is not finished are refused before
/// they touch a file; the first job then completes intact.
#[test]
fn another_process_cannot_write_into_an_unfinished_jobs_output() {
    let dir = helpers::tempdir();
    let input = images(dir.path(), 12);
    let c = dir.path().join("c");
    let r = helpers::centralized(&input, &c, STACK);
    assert_eq!(r.code, 0, "{r}");
    let out = dir.path().join("o");
    // No worker yet: the job waits, holding its output.
    let master = Master::start(&input, &out, &[&["--batch-size", "4"], STACK].concat());
    wait_for("the job to be listed", Duration::from_secs(30), || {
        status(master.url())["jobs"][0]["state"] == "running"
    });
    let before = files_under(&out);
    let mut other = Watched::spawn(
        Command::new(bin())
            .args(["master", "-q", "--listen", "127.0.0.1:0", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .args(STACK)
            .env("IMGNORM_LOG", "warn"),
    );
    let code = other.exit_within(Duration::from_secs(30));
    assert_eq!(
        code,
        Some(2),
        "the second master is refused\n{}",
        other.stderr()
    );
    assert!(other.stderr().contains("in use"), "{}", other.stderr());
    let cen = helpers::centralized(&input, &out, STACK);
    assert_eq!(cen.code, 2, "{cen}");
    assert!(cen.stderr.contains("in use"), "{cen}");
    assert_eq!(files_under(&out), before, "nothing touched");
    let _w = master.worker("w", 0);
    assert_eq!(master.wait(Duration::from_secs(120)), 0);
    assert_same_dataset(&c, &out);
}

/// Issue 16, item 2: an autoscaled two-phase job (its statistics phase
/// first) starts workers and writes what `centralized` writes.
#[test]
fn an_autoscaled_dataset_scope_job_starts_workers_and_completes() {
    let dir = helpers::tempdir();
    let input = images(dir.path(), 6);
    let c = dir.path().join("c");
    let r = helpers::centralized(&input, &c, &["--scope", "dataset"]);
    assert_eq!(r.code, 0, "{r}");
    let out = dir.path().join("o");
    let mut run = Watched::spawn(
        Command::new(bin())
            .args(["run", "-q", "--autoscale", "local", "--max-workers", "2"])
            .args(["--scope", "dataset", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .env("IMGNORM_LOG", "warn"),
    );
    let code = run.exit_within(Duration::from_secs(90));
    assert_eq!(code, Some(0), "the job completes\n{}", run.stderr());
    assert_same_dataset(&c, &out);
}

/// Issue 16, item 3: a one-job master with no worker stops on SIGTERM
/// (exit 143) and SIGINT (exit 130) within seconds, saying how to resume.
#[test]
fn a_master_without_workers_stops_on_sigterm_and_sigint() {
    let dir = helpers::tempdir();
    let input = images(dir.path(), 4);
    for (sig, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let out = dir.path().join(format!("o{sig}"));
        let data = dir.path().join(format!("state{sig}"));
        let mut m = Watched::spawn(
            Command::new(bin())
                .args(["master", "-q", "--listen", "127.0.0.1:0", "--input"])
                .arg(&input)
                .arg("--output")
                .arg(&out)
                .arg("--data-dir")
                .arg(&data)
                .env("IMGNORM_LOG", "warn"),
        );
        wait_for("the master to listen", Duration::from_secs(30), || {
            m.url().is_some()
        });
        let url = m.url().expect("url");
        wait_for("the job to be listed", Duration::from_secs(30), || {
            status(&url)["jobs"][0]["state"] == "running"
        });
        m.signal(sig);
        let got = m.exit_within(Duration::from_secs(8));
        assert_eq!(got, Some(code), "signal {sig}\n{}", m.stderr());
        let err = m.stderr();
        assert!(
            err.contains("imgnorm resume") && err.contains(data.to_str().expect("utf-8")),
            "says how to resume\n{err}"
        );
    }
}

/// Issue 16, item 3: SIGTERM to `run --data-dir` in the middle of a job
/// stops it and its worker processes; `resume` then completes the job with
/// the bytes `centralized` writes.
#[test]
fn run_stops_with_its_workers_on_sigterm_and_resume_completes() {
    let dir = helpers::tempdir();
    let input = images(dir.path(), 80);
    let c = dir.path().join("c");
    let r = helpers::centralized(&input, &c, &[]);
    assert_eq!(r.code, 0, "{r}");
    let (out, data) = (dir.path().join("o"), dir.path().join("state"));
    let mut run = Watched::spawn(
        Command::new(bin())
            .args([
                "run",
                "-q",
                "--workers",
                "2",
                "--batch-size",
                "4",
                "--input",
            ])
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .arg("--data-dir")
            .arg(&data)
            .env("IMGNORM_TEST_DELAY_PER_IMAGE_MS", "40")
            .env("IMGNORM_LOG", "warn"),
    );
    let npys = |o: &Path| {
        o.is_dir()
            && files_under(o)
                .iter()
                .filter(|f| f.ends_with(".npy"))
                .count()
                >= 10
    };
    wait_for("part of the job", Duration::from_secs(60), || npys(&out));
    let workers = children_of(run.pid());
    assert_eq!(workers.len(), 2, "two worker processes");
    run.signal(libc::SIGTERM);
    let code = run.exit_within(Duration::from_secs(15));
    assert_eq!(code, Some(143), "{}", run.stderr());
    assert!(run.stderr().contains("imgnorm resume"), "{}", run.stderr());
    assert!(
        poll_until(Duration::from_secs(5), || !workers
            .iter()
            .any(|&p| alive(p))),
        "no worker left behind"
    );
    assert!(
        files_under(&out).len() < files_under(&c).len(),
        "stopped before the end"
    );
    let r = helpers::imgnorm([
        "resume".as_ref(),
        "-q".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--workers".as_ref(),
        "2".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
    ]);
    assert_eq!(r.code, 0, "{r}");
    assert_same_dataset(&c, &out);
}

/// Resident memory of a process in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Issue 16, item 6: ten dry-run jobs through one serving master; its
/// resident memory after the tenth is within a small bound of its level
/// after the first (the finished jobs' file lists, records, provenance and
/// scheduler state are released).
#[test]
fn a_serving_master_releases_finished_jobs() {
    let dir = helpers::tempdir();
    let input = dir.path().join("input");
    // Many tiny files: per-image state dominates the master's memory.
    let sub = input.join("a");
    std::fs::create_dir_all(&sub).expect("mkdir");
    // Dry run: workers never read the files, so they may be empty.
    for k in 0..20_000 {
        std::fs::write(
            sub.join(format!("image-with-a-longish-name-{k:06}.png")),
            b"",
        )
        .expect("write");
    }
    let mut m = Watched::spawn(
        Command::new(bin())
            .args(["master", "-q", "--serve", "--listen", "127.0.0.1:0"])
            .args(["--batch-size", "512"])
            .current_dir(dir.path())
            .env("IMGNORM_LOG", "warn"),
    );
    wait_for("the master to listen", Duration::from_secs(30), || {
        m.url().is_some()
    });
    let url = m.url().expect("url");
    let _w = Proc(
        Command::new(bin())
            .args(["worker", "--master", &url, "--name", "w"])
            .env("IMGNORM_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("worker"),
    );
    let (mut after_first, mut after_third) = (0, 0);
    for k in 1..=10 {
        let out = dir.path().join(format!("o{k}"));
        let r = submit(&url, &input, &out, &["--dry-run"]);
        assert_eq!(r.code, 0, "{r}");
        let id = format!("job-{k}");
        wait_for("the job to finish", Duration::from_secs(120), || {
            status(&url)["jobs"]
                .as_array()
                .is_some_and(|j| j.iter().any(|j| j["job_id"] == id && j["state"] == "done"))
        });
        let rss = rss_kib(m.pid());
        eprintln!("RSS after job {k}: {rss} KiB");
        match k {
            1 => after_first = rss,
            3 => after_third = rss,
            _ => {}
        }
    }
    let after_ten = rss_kib(m.pid());
    // Each job holds 20,000 file names, records and provenance: kept, nine
    // more jobs add over 60 MiB (measured before the fix: 41 -> 108 MiB).
    // Released, the level is flat once the allocator is warm: a job's work
    // may land in a new malloc arena (a thread's first large allocation), a
    // one-time step of 5-7 MiB at a job that varies with the machine's load,
    // so the bound after the third job allows one such step but not the
    // 45+ MiB that seven kept jobs add.
    assert!(
        after_ten < after_first + 20 * 1024 && after_ten < after_third + 12 * 1024,
        "RSS after the first job {after_first} KiB, the third {after_third} KiB, the tenth {after_ten} KiB"
    );
    let s = status(&url);
    assert_eq!(s["jobs"].as_array().map(Vec::len), Some(10), "{s}");
    assert_eq!(s["jobs"][0]["done"], 20_000, "{s}");
    assert!(m.exit_within(Duration::ZERO).is_none());
}
