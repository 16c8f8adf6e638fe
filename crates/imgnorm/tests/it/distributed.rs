//! Master and workers as real processes on loopback: identical output to
//! `centralized`, and the faults the scheduler exists for (SIGKILL, SIGSTOP,
//! no workers, late joiners, incompatible protocol). Ports are chosen by the
//! OS; the tests poll the master's status instead of sleeping.
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::helpers::{
    self, assert_same_dataset, bin, files_under, fixtures, poll_until, run_local,
};

/// A dataset of `count` generated images plus every fixture (formats and
/// hostile files), so the distributed path sees bad input too.
pub(crate) fn dataset(dir: &Path, count: u64) -> PathBuf {
    let input = dir.join("input");
    let st = Command::new(bin())
        .args(["gen", "--format", "mixed", "--size", "48x40", "--seed", "3"])
        .arg("--count")
        .arg(count.to_string())
        .arg("--out")
        .arg(input.join("gen"))
        .stdout(Stdio::null())
        .status()
        .expect("run gen");
    assert!(st.success());
    copy_dir(&fixtures(), &input.join("fixtures"));
    input
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read fixtures") {
        let e = e.expect("entry");
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy");
        }
    }
}

/// The reference dataset; the fixtures include failures, hence exit 3.
fn centralized(input: &Path, out: &Path) {
    let r = helpers::centralized(input, out, &[]);
    assert_eq!(r.code, 3, "fixtures include failures: exit 3\n{r}");
}

/// Each input file appears exactly once in the manifest.
pub(crate) fn assert_once_each(out: &Path, input: &Path) {
    let text = std::fs::read_to_string(out.join("manifest.jsonl")).expect("manifest");
    let mut seen = HashSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json row");
        let p = v["path"].as_str().expect("path").to_string();
        assert!(seen.insert(p.clone()), "{p} twice in the manifest");
    }
    let files = files_under(input).len();
    assert_eq!(seen.len(), files, "one row per input file");
}

pub(crate) fn wait_for(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    assert!(poll_until(timeout, cond), "timed out waiting for {what}");
}

pub(crate) struct Proc(pub(crate) Child);

impl Proc {
    pub(crate) fn spawn(cmd: &mut Command) -> Proc {
        Proc(cmd.spawn().expect("spawn"))
    }

    pub(crate) fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn signal(p: &Proc, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(p.0.id() as i32, sig);
    }
}

/// A master running one job; the address comes from its stderr.
pub(crate) struct Master {
    proc: Proc,
    url: String,
}

impl Master {
    pub(crate) fn start(input: &Path, out: &Path, extra: &[&str]) -> Master {
        Master::start_on("127.0.0.1:0", input, out, extra)
    }

    /// A master listening on `listen` (a restarted master takes the port of
    /// the one it replaces, so that workers find it again).
    pub(crate) fn start_on(listen: &str, input: &Path, out: &Path, extra: &[&str]) -> Master {
        let mut cmd = Command::new(bin());
        cmd.args(["master", "-q", "--listen", listen, "--input"])
            .arg(input)
            .arg("--output")
            .arg(out)
            .args(extra);
        Master::launch(cmd)
    }

    /// A master serving jobs (`--serve`) with its data under `dir`.
    pub(crate) fn serve(dir: &Path) -> Master {
        let mut cmd = Command::new(bin());
        cmd.args(["master", "-q", "--serve", "--listen", "127.0.0.1:0"])
            .current_dir(dir);
        Master::launch(cmd)
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn launch(mut cmd: Command) -> Master {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start master");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("imgnorm master listening on ") {
                    let _ = tx.send(a.trim().to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("master printed its address");
        Master {
            proc: Proc(child),
            url: format!("http://{addr}"),
        }
    }

    pub(crate) fn worker(&self, name: &str, delay_ms: u64) -> Proc {
        worker(&self.url, name, delay_ms)
    }

    /// `host:port` it listens on.
    pub(crate) fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// SIGKILL, and wait for the process to be gone.
    pub(crate) fn kill(mut self) {
        let _ = self.proc.0.kill();
        let _ = self.proc.0.wait();
    }

    pub(crate) fn status(&self) -> serde_json::Value {
        let out = Command::new(bin())
            .args(["status", "--json", "--master", &self.url])
            .output()
            .expect("status");
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    fn done(&self) -> u64 {
        self.status()["jobs"][0]["done"].as_u64().unwrap_or(0)
    }

    pub(crate) fn worker_field(&self, name: &str, field: &str) -> serde_json::Value {
        let s = self.status();
        s["workers"]
            .as_array()
            .and_then(|ws| {
                ws.iter()
                    .rev()
                    .find(|w| w["name"] == name)
                    .map(|w| w[field].clone())
            })
            .unwrap_or(serde_json::Value::Null)
    }

    /// Waits for the master to exit and returns its exit code.
    pub(crate) fn wait(mut self, timeout: Duration) -> i32 {
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.proc.0.try_wait() {
                return st.code().unwrap_or(-1);
            }
            assert!(start.elapsed() < timeout, "master did not finish in time");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub(crate) fn worker(url: &str, name: &str, delay_ms: u64) -> Proc {
    Proc(
        Command::new(bin())
            .args(["worker", "--master", url, "--name", name])
            .arg("--delay-per-image-ms")
            .arg(delay_ms.to_string())
            .env("IMGNORM_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start worker"),
    )
}

pub(crate) const FAST: &[&str] = &[
    "--heartbeat-interval",
    "0.2",
    "--heartbeat-timeout",
    "1.5",
    "--batch-size",
    "8",
];

#[test]
fn run_with_one_and_three_workers_matches_centralized() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dataset(dir.path(), 60);
    let c = dir.path().join("c");
    centralized(&input, &c);
    for n in ["1", "3"] {
        let out = dir.path().join(format!("run{n}"));
        let r = run_local(&input, &out, &["--workers", n, "--batch-size", "4"]);
        assert_eq!(r.code, 3, "hostile fixtures fail: exit 3\n{r}");
        assert_same_dataset(&c, &out);
        assert_once_each(&out, &input);
    }
}

#[test]
fn stream_transfer_matches_centralized() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dataset(dir.path(), 20);
    let c = dir.path().join("c");
    centralized(&input, &c);
    let out = dir.path().join("s");
    let r = run_local(&input, &out, &["--workers", "2", "--transfer", "stream"]);
    assert_eq!(r.code, 3, "{r}");
    assert_same_dataset(&c, &out);
}

#[test]
fn sigkilled_worker_mid_batch_loses_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dataset(dir.path(), 80);
    let c = dir.path().join("c");
    centralized(&input, &c);
    let out = dir.path().join("o");
    let m = Master::start(&input, &out, FAST);
    let victim = m.worker("victim", 40);
    wait_for(
        "the victim to finish a few images",
        Duration::from_secs(30),
        || {
            m.worker_field("victim", "images_done")
                .as_u64()
                .unwrap_or(0)
                >= 3
        },
    );
    signal(&victim, libc::SIGKILL);
    let _survivor = m.worker("survivor", 0);
    assert_eq!(m.wait(Duration::from_secs(60)), 3);
    assert_same_dataset(&c, &out);
    assert_once_each(&out, &input);
    // The victim's batch was handed out again: some image has attempt >= 2.
    let prov = std::fs::read_to_string(out.join("provenance.jsonl")).expect("provenance");
    assert!(
        prov.contains("\"victim\""),
        "victim's finished images were kept"
    );
    assert!(
        prov.contains("\"attempt\":2"),
        "the lost batch was re-leased"
    );
}

#[test]
fn sigstopped_worker_is_expired_and_its_late_results_discarded() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dataset(dir.path(), 80);
    let c = dir.path().join("c");
    centralized(&input, &c);
    let out = dir.path().join("o");
    let m = Master::start(&input, &out, FAST);
    let frozen = m.worker("frozen", 30);
    wait_for("the worker to start", Duration::from_secs(30), || {
        m.worker_field("frozen", "images_done")
            .as_u64()
            .unwrap_or(0)
            >= 2
    });
    signal(&frozen, libc::SIGSTOP);
    let _slow = m.worker("slow", 60);
    wait_for(
        "the frozen worker to be declared dead",
        Duration::from_secs(30),
        || m.worker_field("frozen", "state") == "dead",
    );
    // Wake it while the job still runs: whatever it sends for its old lease
    // must be discarded; it then re-registers and helps finish.
    assert!(m.done() < 80 + 35, "job still running");
    signal(&frozen, libc::SIGCONT);
    assert_eq!(m.wait(Duration::from_secs(90)), 3);
    assert_same_dataset(&c, &out);
    assert_once_each(&out, &input);
}

#[test]
fn job_waits_without_workers_and_late_joiner_finishes_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dataset(dir.path(), 40);
    let c = dir.path().join("c");
    centralized(&input, &c);
    let out = dir.path().join("o");
    let mut m = Master::start(&input, &out, FAST);
    let first = m.worker("first", 40);
    wait_for("some progress", Duration::from_secs(30), || m.done() >= 3);
    signal(&first, libc::SIGKILL);
    wait_for("the worker to be gone", Duration::from_secs(30), || {
        m.worker_field("first", "state") == "dead"
    });
    // With no worker the job neither fails nor finishes.
    let before = m.done();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        m.proc.0.try_wait().expect("try_wait").is_none(),
        "master still waiting"
    );
    assert_eq!(m.status()["jobs"][0]["state"], "running");
    assert_eq!(m.done(), before);
    let _late = m.worker("late", 0);
    assert_eq!(m.wait(Duration::from_secs(60)), 3);
    assert_same_dataset(&c, &out);
    assert_once_each(&out, &input);
}

#[test]
fn worker_drains_on_sigterm_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dataset(dir.path(), 40);
    let out = dir.path().join("o");
    let m = Master::start(&input, &out, FAST);
    let mut w = m.worker("drainer", 30);
    wait_for("work in hand", Duration::from_secs(30), || m.done() >= 2);
    signal(&w, libc::SIGTERM);
    let start = Instant::now();
    let code = loop {
        if let Some(st) = w.0.try_wait().expect("try_wait") {
            break st.code();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "worker did not drain"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0), "a drained worker exits 0");
    let _other = m.worker("other", 0);
    assert_eq!(m.wait(Duration::from_secs(60)), 3);
    assert_once_each(&out, &input);
}

#[test]
fn worker_with_another_protocol_version_is_refused() {
    use imgnorm_proto::v1 as pb;
    let dir = tempfile::tempdir().expect("tmp");
    let input = dataset(dir.path(), 2);
    let m = Master::start(&input, &dir.path().join("o"), FAST);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let status = rt.block_on(async {
        let mut c = pb::coordinator_client::CoordinatorClient::connect(m.url.clone())
            .await
            .expect("connect");
        let hello = pb::WorkerMessage {
            msg: Some(pb::worker_message::Msg::Hello(pb::Hello {
                protocol_version: 99,
                name: "old".into(),
                ..Default::default()
            })),
        };
        let r = c.session(tokio_stream::iter(vec![hello])).await;
        match r {
            Err(s) => s,
            Ok(resp) => resp
                .into_inner()
                .message()
                .await
                .expect_err("the session must be refused"),
        }
    });
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("protocol"),
        "{}",
        status.message()
    );
}

#[test]
fn stream_transfer_chunks_large_images() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("big");
    let st = Command::new(bin())
        .args([
            "gen",
            "--format",
            "png",
            "--size",
            "2600x1800",
            "--count",
            "2",
            "--out",
        ])
        .arg(&input)
        .stdout(Stdio::null())
        .status()
        .expect("gen");
    assert!(st.success());
    let biggest = std::fs::read_dir(&input)
        .expect("read")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0);
    assert!(
        biggest > 4 * 1024 * 1024,
        "inputs must exceed the inline limit ({biggest} bytes)"
    );
    let c = dir.path().join("c");
    let r = helpers::centralized(&input, &c, &[]);
    assert_eq!(r.code, 0, "{r}");
    let out = dir.path().join("s");
    let r = run_local(&input, &out, &["--workers", "2", "--transfer", "stream"]);
    assert_eq!(r.code, 0, "{r}");
    assert_same_dataset(&c, &out);
}

#[test]
fn poison_image_is_quarantined_and_the_rest_completes() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dataset(dir.path(), 30);
    let out = dir.path().join("o");
    let mut m = Master::start(&input, &out, &[FAST, &["--max-crashes", "2"]].concat());
    let poison = "gen/img_000007";
    // A supervisor that keeps two workers alive, like an orchestrator would;
    // every worker aborts on the poison image.
    let mut workers: Vec<Proc> = Vec::new();
    let start = Instant::now();
    let code = loop {
        if let Ok(Some(st)) = m.proc.0.try_wait() {
            break st.code();
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "job did not finish"
        );
        workers.retain_mut(|w| matches!(w.0.try_wait(), Ok(None)));
        while workers.len() < 2 {
            let w = Command::new(bin())
                .args(["worker", "--master", &m.url, "--name", "crashy"])
                .env("IMGNORM_FAULT_CRASH_ON", poison)
                .env("IMGNORM_LOG", "off")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("worker");
            workers.push(Proc(w));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(3));
    assert_once_each(&out, &input);
    let text = std::fs::read_to_string(out.join("manifest.jsonl")).expect("manifest");
    let mut quarantined = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("row");
        let path = v["path"].as_str().unwrap_or_default();
        if path.contains(poison) {
            assert_eq!(v["status"], "failed");
            assert!(
                v["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("quarantined"),
                "{v}"
            );
            quarantined += 1;
        } else if path.starts_with("gen/") {
            assert_eq!(v["status"], "ok", "innocent images complete: {v}");
        }
    }
    assert_eq!(quarantined, 1);
}

/// `--format stack` and `--format webdataset` (see formats.rs): a worker
/// SIGKILLed mid-batch (after writing stack rows in place or staged arrays)
/// changes nothing: the layout equals the centralized one byte for byte.
#[test]
fn sigkilled_worker_leaves_stack_and_shards_identical() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dataset(dir.path(), 60);
    let geometry = ["--resize", "16x12", "--channels", "rgb"];
    for format in [
        &["--format", "stack"][..],
        &["--format", "webdataset", "--shard-size", "7"][..],
    ] {
        let opts = [&geometry[..], format].concat();
        let c = dir.path().join(format!("c-{}", format[1]));
        let r = helpers::centralized(&input, &c, &opts);
        assert_eq!(r.code, 3, "fixtures include failures: exit 3\n{r}");
        let out = dir.path().join(format!("o-{}", format[1]));
        let m = Master::start(&input, &out, &[FAST, &opts].concat());
        let victim = m.worker("victim", 40);
        wait_for(
            "the victim to finish a few images",
            Duration::from_secs(30),
            || {
                m.worker_field("victim", "images_done")
                    .as_u64()
                    .unwrap_or(0)
                    >= 3
            },
        );
        signal(&victim, libc::SIGKILL);
        let _survivor = m.worker("survivor", 0);
        assert_eq!(m.wait(Duration::from_secs(60)), 3);
        assert_same_dataset(&c, &out);
        let prov = std::fs::read_to_string(out.join("provenance.jsonl")).expect("provenance");
        assert!(
            prov.contains("\"attempt\":2"),
            "the lost batch was re-leased"
        );
    }
}

#[test]
fn straggler_batch_is_speculatively_reissued() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dataset(dir.path(), 30);
    let c = dir.path().join("c");
    centralized(&input, &c);
    let out = dir.path().join("o");
    let m = Master::start(&input, &out, FAST);
    // Heartbeats flow (the engine runs on its own thread) but each image takes
    // ten minutes: only a speculative copy of its batch can finish the job.
    let _straggler = m.worker("straggler", 600_000);
    wait_for(
        "the straggler to hold a lease",
        Duration::from_secs(30),
        || m.worker_field("straggler", "leases").as_u64().unwrap_or(0) >= 1,
    );
    let _fast = m.worker("fast", 0);
    assert_eq!(m.wait(Duration::from_secs(90)), 3);
    assert_same_dataset(&c, &out);
    assert_once_each(&out, &input);
}

#[test]
fn serving_master_runs_submitted_jobs_one_after_another() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dataset(dir.path(), 20);
    let c = dir.path().join("c");
    centralized(&input, &c);
    let mut child = Command::new(bin())
        .args(["master", "--serve", "--listen", "127.0.0.1:0"])
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
    let master = Proc(child);
    let url = format!(
        "http://{}",
        rx.recv_timeout(Duration::from_secs(30)).expect("address")
    );
    let _w = worker(&url, "steady", 0);
    for name in ["first", "second"] {
        let out = dir.path().join(name);
        let o = Command::new(bin())
            .args(["submit", "--wait", "--master", &url, "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .output()
            .expect("submit");
        assert_eq!(
            o.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("submitted job-"), "{text}");
        assert_same_dataset(&c, &out);
    }
    let o = Command::new(bin())
        .args(["status", "--json", "--master", &url])
        .output()
        .expect("status");
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let states: Vec<_> = s["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["state"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(states, vec!["done", "done"]);
    // The same worker served both jobs: it stays for the next one.
    let workers = s["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert_eq!(workers[0]["state"], "alive");
    // SIGTERM stops a serving master even with a worker still connected.
    signal(&master, libc::SIGTERM);
    let mut master = master;
    assert!(
        poll_until(Duration::from_secs(15), || matches!(
            master.0.try_wait(),
            Ok(Some(_))
        )),
        "serving master exits on SIGTERM"
    );
}
