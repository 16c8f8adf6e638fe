//! The autoscaler's `local` backend with real processes: workers rise toward
//! the maximum while the queue is long, a SIGKILLed worker is replaced, the
//! pool falls back to the minimum when idle, every worker is gone after the
//! master stops, and the dataset is identical to `centralized`. Workers are
//! slowed with the test hook `IMGNORM_TEST_DELAY_PER_IMAGE_MS` so a small
//! dataset keeps the queue long enough to scale on. The `local` and
//! `external` backends also go through the backend contract of
//! `imgnorm::autoscale::harness` (tests/it/slurm.rs runs it for `slurm`).
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{self, assert_same_dataset, bin, poll_until};

const SCALE: &[&str] = &[
    "--autoscale",
    "local",
    "--target-drain",
    "1",
    "--scale-up-cooldown",
    "1",
    "--scale-down-window",
    "3",
    "--drain-grace",
    "20",
    "--heartbeat-interval",
    "0.2",
    "--heartbeat-timeout",
    "1.5",
    "--batch-size",
    "4",
];

fn generate(dir: &Path, count: u64) -> std::path::PathBuf {
    let input = dir.join("input");
    let st = Command::new(bin())
        .args(["gen", "--format", "mixed", "--size", "40x32", "--seed", "7"])
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

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Pids of live `imgnorm worker` processes pointed at `url`, by name.
fn workers_of(url: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        // Zombies have an empty cmdline and do not count.
        if args.get(1).map(String::as_str) == Some("worker") && args.iter().any(|a| a == url) {
            let name = args
                .iter()
                .position(|a| a == "--name")
                .and_then(|i| args.get(i + 1))
                .cloned()
                .unwrap_or_default();
            out.push((pid, name));
        }
    }
    out
}

fn status(url: &str) -> Value {
    let out = Command::new(bin())
        .args(["status", "--json", "--master", url])
        .output()
        .expect("status");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn wait_for(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    assert!(poll_until(timeout, cond), "timed out waiting for {what}");
}

#[test]
fn autoscaled_run_rises_toward_max_and_matches_centralized() {
    let dir = helpers::tempdir();
    let input = generate(dir.path(), 240);
    let c = dir.path().join("c");
    let r = helpers::centralized(&input, &c, &[]);
    assert_eq!(r.code, 0, "{r}");
    let out = dir.path().join("o");
    let o = Command::new(bin())
        .args(["run", "-q", "--max-workers", "3", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&out)
        .args(SCALE)
        .env("IMGNORM_TEST_DELAY_PER_IMAGE_MS", "25")
        .env("IMGNORM_LOG", "info")
        .env("NO_COLOR", "1")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert_same_dataset(&c, &out);
    // Every decision is logged with its reason; the pool reached the maximum.
    assert!(
        stderr.contains("autoscale decision") && stderr.contains("to=3"),
        "{stderr}"
    );
    assert!(stderr.contains("images left at"), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("autoscale (local):"))
        .unwrap_or_else(|| panic!("no autoscale summary line:\n{stderr}"));
    let started: u32 = line
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(started >= 3, "{line}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("json");
    let ws = summary["worker_seconds"].as_f64().expect("worker_seconds");
    assert!(
        ws > 0.0 && ws < 3.0 * summary["seconds"].as_f64().unwrap_or(0.0) + 5.0,
        "{summary}"
    );
}

#[test]
fn serving_master_scales_with_the_queue_replaces_the_dead_and_returns_to_min() {
    let dir = helpers::tempdir();
    let input = generate(dir.path(), 400);
    let c = dir.path().join("c");
    assert_eq!(helpers::centralized(&input, &c, &[]).code, 0);
    let mut child = Command::new(bin())
        .args(["master", "--serve", "--listen", "127.0.0.1:0"])
        .args(["--min-workers", "1", "--max-workers", "3"])
        .args(SCALE)
        .env("IMGNORM_TEST_DELAY_PER_IMAGE_MS", "80")
        .env("IMGNORM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("imgnorm master listening on ") {
                let _ = tx.send(a.trim().to_string());
            }
        }
    });
    let mut master = Proc(child);
    let url = format!(
        "http://{}",
        rx.recv_timeout(Duration::from_secs(30)).expect("address")
    );
    let scale = |field: &str| {
        status(&url)["autoscale"][field]
            .as_u64()
            .unwrap_or(u64::MAX)
    };
    // Idle: the minimum, and it is registered.
    wait_for("one idle worker", Duration::from_secs(30), || {
        scale("running") == 1 && scale("desired") == 1
    });
    let out = dir.path().join("o");
    let o = Command::new(bin())
        .args(["submit", "--master", &url, "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&out)
        .output()
        .expect("submit");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_for(
        "the pool to reach the maximum",
        Duration::from_secs(30),
        || scale("desired") == 3 && scale("running") >= 2,
    );
    // A worker dies: the autoscaler replaces it.
    let victims = workers_of(&url);
    assert!(victims.len() >= 2, "{victims:?}");
    kill(victims[0].0, libc::SIGKILL);
    wait_for("the death to be noticed", Duration::from_secs(20), || {
        scale("died_total") >= 1
    });
    // Replaced while the queue is still long (a young death holds starts
    // back for 2 s; at 80 ms per image the job lasts well beyond that).
    wait_for(
        "the dead worker to be replaced",
        Duration::from_secs(20),
        || scale("started_total") >= 4,
    );
    let job_state = || {
        status(&url)["jobs"][0]["state"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    wait_for("the job", Duration::from_secs(120), || {
        job_state() == "done"
    });
    assert_same_dataset(&c, &out);
    assert!(scale("started_total") >= 4, "{}", status(&url));
    // Idle again: back to the minimum, the others drained (not killed).
    wait_for(
        "the pool to fall back to the minimum",
        Duration::from_secs(40),
        || scale("desired") == 1 && scale("running") == 1 && scale("draining") == 0,
    );
    assert!(scale("stopped_total") >= 2, "{}", status(&url));
    assert_eq!(workers_of(&url).len(), 1, "{:?}", workers_of(&url));
    // Stopping the master stops its workers.
    kill(master.0.id(), libc::SIGTERM);
    wait_for("the master to exit", Duration::from_secs(30), || {
        matches!(master.0.try_wait(), Ok(Some(_)))
    });
    wait_for("its workers to exit", Duration::from_secs(10), || {
        workers_of(&url).is_empty()
    });
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn pid_alive(handle: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{handle}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

#[test]
fn local_backend_keeps_the_backend_contract() {
    use imgnorm::autoscale::harness::{self, Probe};
    use imgnorm::autoscale::local::{Local, LocalConfig};
    let backend = Local::new(LocalConfig {
        exe: bin().into(),
        // Nothing listens there: the workers keep retrying until stopped.
        master_url: "http://127.0.0.1:1".into(),
        flags: imgnorm::app::WorkerFlags {
            threads: 1,
            memory_budget_mib: Some(512),
        },
        access: Default::default(),
    });
    let kill_outside = |h: &str| kill(h.parse().expect("pid"), libc::SIGKILL);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(harness::check(
        backend,
        Probe {
            alive: &pid_alive,
            running: &pid_alive,
            kill_outside: &kill_outside,
        },
        Duration::from_secs(30),
    ))
    .unwrap();
}

#[test]
fn external_backend_starts_nothing_and_reports_nothing() {
    use imgnorm::autoscale::Backend;
    use imgnorm::autoscale::backend::External;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut b = External;
        assert!(!b.converges());
        let h = b.start("auto-1").await.unwrap();
        b.drain(&h).await.unwrap();
        b.kill(&h).await.unwrap();
        assert!(b.reap().await.unwrap().is_empty());
        b.stop_all(Duration::from_secs(1)).await;
    });
}
