//! `--autoscale slurm` on a real Slurm cluster (scripts/slurm-up.sh starts a
//! single-node one): an autoscaled job over TLS through Slurm worker jobs
//! matches `centralized`, also when a running worker job is `scancel`led
//! mid-job; a master stopped with SIGTERM cancels what it submitted; the
//! backend keeps the contract of `imgnorm::autoscale::harness`; the static
//! job scripts of deploy/slurm/ run a job to the same bytes. After each
//! test no job of the master is left in `squeue`.
//!
//! Skipped with a loud message when `sbatch` is missing or no node is up;
//! FAILS instead under `IMGNORM_REQUIRE_SLURM=1` (CI). The tests share the
//! cluster's few CPUs, so they run one at a time.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use imgnorm::autoscale::harness::{self, Probe};
use imgnorm::autoscale::slurm::{Slurm, SlurmConfig};

use crate::helpers::{self, assert_same_dataset, bin, poll_until};

/// One Slurm test at a time: the test cluster has the CPUs of this machine.
static CLUSTER: Mutex<()> = Mutex::new(());

/// Whether a Slurm cluster answers here; panics under IMGNORM_REQUIRE_SLURM=1
/// when not, else says loudly that the test is skipped.
fn slurm_ready(test: &str) -> bool {
    // Asked once: with slurmctld down, `sinfo` waits out its message timeout.
    static WHY_NOT: OnceLock<Option<String>> = OnceLock::new();
    let Some(why) = WHY_NOT.get_or_init(why_no_slurm) else {
        return true;
    };
    if std::env::var("IMGNORM_REQUIRE_SLURM").as_deref() == Ok("1") {
        panic!("IMGNORM_REQUIRE_SLURM=1 but {why}; start one with scripts/slurm-up.sh");
    }
    eprintln!(
        "\n########################################################################\n\
         ##  WARNING: {test} SKIPPED: {why}.\n\
         ##  Start a test cluster with scripts/slurm-up.sh (root); CI sets\n\
         ##  IMGNORM_REQUIRE_SLURM=1 to make this a failure.\n\
         ########################################################################"
    );
    false
}

/// Why no Slurm cluster answers here, if it does not.
fn why_no_slurm() -> Option<String> {
    let answers = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    if answers("sbatch", &["--version"]).is_none() {
        Some("`sbatch` is not installed".to_string())
    } else {
        match answers("sinfo", &["-h", "-o", "%T"]) {
            None => Some("`sinfo` fails: slurmctld is not running".to_string()),
            Some(s)
                if !s
                    .lines()
                    .any(|l| matches!(l.trim(), "idle" | "mixed" | "allocated")) =>
            {
                Some(format!("no Slurm node is up (sinfo: {:?})", s.trim()))
            }
            Some(_) => None,
        }
    }
}

/// A file for a child's output (a pipe left unread could fill and block it).
fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::File::create(dir.join(name)).expect("log file")
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    CLUSTER.lock().unwrap_or_else(|p| p.into_inner())
}

/// `(id, state, name)` of this user's jobs that `squeue` lists (pending,
/// running, completing: the default states).
fn queue() -> Vec<(String, String, String)> {
    let out = Command::new("squeue")
        .args(["-h", "--me", "-o", "%i|%T|%j"])
        .output()
        .expect("squeue");
    assert!(out.status.success(), "squeue failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.trim().splitn(3, '|');
            Some((
                f.next()?.to_string(),
                f.next()?.to_string(),
                f.next()?.to_string(),
            ))
        })
        .collect()
}

/// The job-name prefix of the one master that used `slurm_dir` (its job
/// folder is named after it).
fn prefix_in(slurm_dir: &Path) -> Option<String> {
    std::fs::read_dir(slurm_dir)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("imgnorm-"))
}

fn jobs_of(prefix: &str) -> Vec<(String, String, String)> {
    queue()
        .into_iter()
        .filter(|(_, _, name)| name.starts_with(&format!("{prefix}-")))
        .collect()
}

fn generate(dir: &Path, count: u64) -> PathBuf {
    let input = dir.join("input");
    let st = Command::new(bin())
        .args([
            "gen", "--format", "mixed", "--size", "24x16", "--seed", "11",
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

const SCALE: &[&str] = &[
    "--autoscale",
    "slurm",
    "--max-workers",
    "2",
    "--target-drain",
    "1",
    "--scale-up-cooldown",
    "1",
    "--scale-down-window",
    "2",
    "--drain-grace",
    "15",
    "--heartbeat-interval",
    "0.2",
    "--heartbeat-timeout",
    "1.5",
    "--batch-size",
    "4",
    "--slurm-time",
    "10:00",
];

/// The number after `word` in the autoscaler's summary line.
fn summary_count(stderr: &str, word: &str) -> u32 {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("autoscale (slurm):"))
        .unwrap_or_else(|| panic!("no autoscale summary line:\n{stderr}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .iter()
        .position(|w| w.trim_end_matches([',', ';']) == word)
        .and_then(|i| words.get(i - 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count before {word:?} in {line:?}"))
}

#[test]
fn slurm_worker_jobs_over_tls_survive_a_scancel_and_leave_no_job() {
    if !slurm_ready("slurm_worker_jobs_over_tls_survive_a_scancel_and_leave_no_job") {
        return;
    }
    let _cluster = lock();
    let dir = helpers::tempdir();
    let input = generate(dir.path(), 300);
    let c = dir.path().join("c");
    assert_eq!(helpers::centralized(&input, &c, &[]).code, 0);
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "slurm-test-secret-0123456789\n").expect("secret");
    let slurm_dir = dir.path().join("slurm");
    let out = dir.path().join("o");
    let mut child = Command::new(bin())
        .args(["master", "-q", "--listen", "127.0.0.1:0", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&out)
        .arg("--tls-self-signed")
        .arg(dir.path().join("tls"))
        .arg("--secret-file")
        .arg(&secret)
        .arg("--slurm-dir")
        .arg(&slurm_dir)
        .args(SCALE)
        .env("IMGNORM_TEST_DELAY_PER_IMAGE_MS", "40")
        .env("IMGNORM_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log_file(dir.path(), "master.log"))
        .spawn()
        .expect("master");
    // A worker job is running and images are done: cancel it from outside,
    // as preemption or a node failure would.
    let mut prefix = None;
    let mut victim = None;
    let found = poll_until(Duration::from_secs(90), || {
        prefix = prefix.clone().or_else(|| prefix_in(&slurm_dir));
        let Some(p) = &prefix else { return false };
        let done = std::fs::read_dir(&out).map_or(0, |d| d.count());
        victim = jobs_of(p)
            .into_iter()
            .find(|(_, state, _)| state == "RUNNING")
            .map(|(id, _, _)| id);
        victim.is_some() && done > 20
    });
    let prefix = prefix.expect("the master made no job folder under --slurm-dir");
    let run_dir = slurm_dir.join(&prefix);
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777)
    };
    assert_eq!(mode(&run_dir).ok(), Some(0o700), "job folder mode");
    assert_eq!(
        mode(&run_dir.join("secret")).ok(),
        Some(0o600),
        "secret file mode"
    );
    if found {
        let id = victim.clone().unwrap_or_default();
        // The secret is in neither the job's script nor its command line.
        let script = Command::new("scontrol")
            .args(["write", "batch_script", &id, "-"])
            .output()
            .expect("scontrol");
        let script = String::from_utf8_lossy(&script.stdout);
        assert!(script.contains("--secret-file"), "{script}");
        assert!(!script.contains("slurm-test-secret"), "{script}");
        let st = Command::new("scancel").arg(&id).status().expect("scancel");
        assert!(st.success());
    }
    let status = child.wait().expect("master");
    let stderr = std::fs::read_to_string(dir.path().join("master.log")).unwrap_or_default();
    assert!(found, "no running worker job with images done:\n{stderr}");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_same_dataset(&c, &out);
    assert!(
        summary_count(&stderr, "died") >= 1,
        "the cancelled job was not noticed as a dead worker:\n{stderr}"
    );
    assert!(stderr.contains("worker died; replacing it"), "{stderr}");
    let left = jobs_of(&prefix);
    assert!(
        left.is_empty(),
        "jobs left after the master exited: {left:?}"
    );
    assert!(!run_dir.join("secret").exists(), "secret file left behind");
}

#[test]
fn slurm_master_stopped_with_sigterm_cancels_its_jobs() {
    if !slurm_ready("slurm_master_stopped_with_sigterm_cancels_its_jobs") {
        return;
    }
    let _cluster = lock();
    let dir = helpers::tempdir();
    let input = generate(dir.path(), 400);
    let slurm_dir = dir.path().join("slurm");
    let mut child = Command::new(bin())
        .args(["run", "-q", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(dir.path().join("o"))
        .arg("--slurm-dir")
        .arg(&slurm_dir)
        .args(SCALE)
        .env("IMGNORM_TEST_DELAY_PER_IMAGE_MS", "200")
        .env("IMGNORM_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log_file(dir.path(), "run.log"))
        .spawn()
        .expect("run");
    let mut prefix = None;
    let up = poll_until(Duration::from_secs(90), || {
        prefix = prefix.clone().or_else(|| prefix_in(&slurm_dir));
        prefix
            .as_deref()
            .is_some_and(|p| jobs_of(p).iter().any(|(_, s, _)| s == "RUNNING"))
    });
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().expect("run");
    let stderr = std::fs::read_to_string(dir.path().join("run.log")).unwrap_or_default();
    assert!(up, "no worker job ran:\n{stderr}");
    assert_ne!(
        status.code(),
        Some(0),
        "a run stopped mid-job must not succeed:\n{stderr}"
    );
    let prefix = prefix.unwrap_or_default();
    let left = jobs_of(&prefix);
    assert!(
        left.is_empty(),
        "jobs left after SIGTERM: {left:?}\n{stderr}"
    );
}

fn job_listed(id: &str) -> bool {
    queue().iter().any(|(j, _, _)| j == id)
}

/// The job runs and its worker has started (it logged to the job's output
/// file in `run_dir`): a job Slurm only allocated has no worker yet.
fn job_running(run_dir: &Path, id: &str) -> bool {
    let started = std::fs::read_dir(run_dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with(&format!("-{id}.out"))
                && e.metadata().is_ok_and(|m| m.len() > 0)
        });
    started && queue().iter().any(|(j, s, _)| j == id && s == "RUNNING")
}

#[test]
fn slurm_backend_keeps_the_backend_contract() {
    if !slurm_ready("slurm_backend_keeps_the_backend_contract") {
        return;
    }
    let _cluster = lock();
    let dir = helpers::tempdir();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let backend = rt
        .block_on(Slurm::new(SlurmConfig {
            exe: bin().into(),
            // Nothing listens there: the workers keep retrying until stopped.
            master_url: "http://127.0.0.1:1".into(),
            flags: imgnorm::app::WorkerFlags {
                threads: 1,
                memory_budget_mib: Some(512),
            },
            access: Default::default(),
            copy_tls_ca: false,
            partition: None,
            account: None,
            time: Some("5:00".into()),
            extra: Vec::new(),
            dir: dir.path().to_path_buf(),
            drain_grace: Duration::from_secs(10),
        }))
        .expect("slurm backend");
    let prefix = backend.prefix().to_string();
    let run_dir = dir.path().join(&prefix);
    let running = |id: &str| job_running(&run_dir, id);
    let kill = |id: &str| {
        let _ = Command::new("scancel").arg(id).status();
    };
    let r = rt.block_on(harness::check(
        backend,
        Probe {
            alive: &job_listed,
            running: &running,
            kill_outside: &kill,
        },
        Duration::from_secs(60),
    ));
    let left = jobs_of(&prefix);
    assert!(left.is_empty(), "jobs left: {left:?}");
    r.unwrap();
}

/// `--export` value for `sbatch`: ALL plus these variables.
fn export(vars: &[(&str, &Path)]) -> String {
    let mut s = "--export=ALL".to_string();
    for (k, v) in vars {
        s.push_str(&format!(",{k}={}", v.display()));
    }
    s
}

/// The final (or current) state of a job Slurm still knows.
fn job_state(id: &str) -> String {
    let out = Command::new("squeue")
        .args(["-h", "--states=all", "-o", "%T", "-j", id])
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn deploy_slurm_scripts_run_a_job_and_release_the_worker_array() {
    if !slurm_ready("deploy_slurm_scripts_run_a_job_and_release_the_worker_array") {
        return;
    }
    let _cluster = lock();
    let dir = helpers::tempdir();
    let input = generate(dir.path(), 80);
    let c = dir.path().join("c");
    assert_eq!(helpers::centralized(&input, &c, &[]).code, 0);
    let shared = dir.path().join("shared");
    let out = dir.path().join("o");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
        .to_string();
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/slurm");
    let bin_path = Path::new(bin());
    let port_path = Path::new(&port);
    // One CPU each (the test node may have two), short limits.
    let small = ["--cpus-per-task=1", "--mem=1024M", "--time=10:00"];
    let submit = |script: &str, vars: &[(&str, &Path)], more: &[&str]| {
        let o = Command::new("sbatch")
            .arg("--parsable")
            .arg(export(vars))
            .args(small)
            .args(more)
            .arg(format!("--chdir={}", dir.path().display()))
            .arg(scripts.join(script))
            .output()
            .expect("sbatch");
        assert!(o.status.success(), "sbatch {script}: {o:?}");
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .split(';')
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let master = submit(
        "master.sbatch",
        &[
            ("IMGNORM", bin_path),
            ("IMGNORM_SHARED", &shared),
            ("INPUT", &input),
            ("OUTPUT", &out),
            ("PORT", port_path),
        ],
        &["--output=master-%j.out"],
    );
    let dependency = format!("--dependency=after:{master}");
    let workers = submit(
        "workers.sbatch",
        &[("IMGNORM", bin_path), ("IMGNORM_SHARED", &shared)],
        &["--array=1-2", "--output=worker-%A_%a.out", &dependency],
    );
    let listed = |id: &str| {
        queue()
            .iter()
            .any(|(j, _, _)| j == id || j.starts_with(&format!("{id}_")))
    };
    let done = poll_until(Duration::from_secs(180), || {
        !listed(&master) && !listed(&workers)
    });
    let logs: String = std::fs::read_dir(dir.path())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".out"))
        .map(|e| {
            format!(
                "--- {}\n{}",
                e.file_name().to_string_lossy(),
                std::fs::read_to_string(e.path()).unwrap_or_default()
            )
        })
        .collect();
    if !done {
        let _ = Command::new("scancel").args([&master, &workers]).status();
    }
    assert!(done, "the master or its workers are still queued:\n{logs}");
    assert_eq!(job_state(&master), "COMPLETED", "{logs}");
    assert_same_dataset(&c, &out);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(shared.join("secret"))
        .map(|m| m.permissions().mode() & 0o777)
        .ok();
    assert_eq!(mode, Some(0o600), "secret file mode");
}
