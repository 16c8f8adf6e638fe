//! Limits on the distributed path, with real processes: a valid 30000×30000
//! PNG (1 MB on disk, 900 MB of samples) and the engine's hostile fixtures go
//! through `run` and through `master` + `worker`; every bad file is a failed
//! row with a clear reason, no worker dies, and a worker's peak memory
//! (VmHWM) stays within its `--memory-budget`. Also: gRPC messages over the
//! size limit are refused with a clear status, and a worker that lies about
//! its results is refused and then cut off. An input file larger than the
//! budget is refused from its size, before it is read.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use imgnorm_proto::v1 as pb;
use imgnorm_proto::v1::coordinator_client::CoordinatorClient;
use imgnorm_proto::v1::worker_message::Msg as WMsg;

use crate::distributed::{Master, Proc};
use crate::helpers::{self, bin, fixtures, rows_by_path, run_local};

/// Writes a constant gray `w`×`h` PNG row by row (the test never holds the
/// image in memory).
fn constant_png(path: &Path, w: u32, h: u32) {
    let file = std::fs::File::create(path).expect("create png");
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    let mut stream = enc
        .write_header()
        .expect("png header")
        .into_stream_writer()
        .expect("png stream");
    let row = vec![77u8; w as usize];
    for _ in 0..h {
        stream.write_all(&row).expect("png row");
    }
    stream.finish().expect("png end");
}

/// Input: the hostile fixtures, the format fixtures (good images), and
/// `big.png`, a valid 30000×30000 image.
fn hostile_input(dir: &Path) -> PathBuf {
    let input = dir.join("input");
    for sub in ["hostile", "formats"] {
        let to = input.join(sub);
        std::fs::create_dir_all(&to).expect("mkdir");
        for e in std::fs::read_dir(fixtures().join(sub)).expect("fixtures") {
            let p = e.expect("entry").path();
            if p.is_file() {
                std::fs::copy(&p, to.join(p.file_name().expect("name"))).expect("copy");
            }
        }
    }
    constant_png(&input.join("big.png"), 30_000, 30_000);
    let size = std::fs::metadata(input.join("big.png")).expect("big").len();
    assert!(size < 8 << 20, "the big PNG is {size} bytes on disk");
    input
}

/// Every hostile fixture is a failed or skipped row with a reason (the same
/// rows `centralized` writes: compared by the caller), and every format
/// fixture is ok.
fn assert_rows(out: &Path) -> serde_json::Value {
    let rows = rows_by_path(out);
    for (path, row) in &rows {
        if path.starts_with("hostile/") {
            assert_ne!(row["status"], "ok", "{path}: {row}");
            assert!(
                row["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "{path} has no reason: {row}"
            );
            assert!(
                !row["reason"].as_str().unwrap_or("").contains("quarantined"),
                "{path} killed a worker: {row}"
            );
        } else if path.starts_with("formats/") {
            assert_eq!(row["status"], "ok", "{path}: {row}");
        }
    }
    rows["big.png"].clone()
}

/// No worker died: every image was produced by the first hand-out of its
/// batch (speculation is off), by one of the `n` workers that were started.
fn assert_no_worker_died(out: &Path, n: usize) {
    let stats: serde_json::Value =
        serde_json::from_slice(&helpers::read(&out.join("stats.json"))).expect("stats.json");
    assert_eq!(stats["workers"], n, "a worker reconnected: {stats}");
    let prov = std::fs::read_to_string(out.join("provenance.jsonl")).expect("provenance");
    for line in prov.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("row");
        assert_eq!(v["attempt"], 1, "re-issued after a worker died: {v}");
    }
}

#[test]
fn a_huge_png_and_hostile_files_through_run_fail_cleanly() {
    let dir = helpers::tempdir();
    let input = hostile_input(dir.path());
    let c = dir.path().join("c");
    let r = helpers::centralized(&input, &c, &[]);
    assert_eq!(r.code, 3, "{r}");
    let out = dir.path().join("run");
    let r = run_local(
        &input,
        &out,
        &[
            "--workers",
            "2",
            "--memory-budget",
            "512",
            "--no-speculation",
        ],
    );
    assert_eq!(r.code, 3, "hostile files fail: exit 3\n{r}");
    let big = assert_rows(&out);
    assert_eq!(big["status"], "failed", "{big}");
    let reason = big["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("30000x30000 = 900000000 pixels, over the limit of 100000000"),
        "{reason}"
    );
    helpers::assert_same_dataset(&c, &out);
    assert_no_worker_died(&out, 2);
}

/// Peak resident memory (VmHWM) of a running process, in MiB.
fn vm_hwm_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    kb / 1024.0
}

#[test]
fn the_memory_budget_refuses_what_the_pixel_limit_allows() {
    let dir = helpers::tempdir();
    let input = hostile_input(dir.path());
    // Within any budget here: 3000x3000 gray needs about 45 MiB.
    constant_png(&input.join("mid.png"), 3000, 3000);
    let out = dir.path().join("out");
    let master = Master::start(
        &input,
        &out,
        &["--max-pixels", "1000000000", "--no-speculation"],
    );
    let budget_mib = 256.0;
    let worker = Proc::spawn(
        Command::new(bin())
            .args(["worker", "--master", master.url(), "--name", "w1"])
            .args(["--memory-budget", "256"])
            .env("IMGNORM_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let code = master.wait(Duration::from_secs(180));
    // The worker keeps running (waiting for a master): its peak so far is
    // the peak of the whole job.
    let peak = vm_hwm_mib(worker.id());
    drop(worker);
    assert_eq!(code, 3, "hostile files fail: exit 3");
    let big = assert_rows(&out);
    let reason = big["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("30000x30000 with 1 channel(s) of 8 bits")
            && reason.contains("memory budget")
            && reason.contains("--memory-budget 256 MiB"),
        "{big}"
    );
    let rows = rows_by_path(&out);
    assert_eq!(rows["mid.png"]["status"], "ok", "{}", rows["mid.png"]);
    assert!(
        peak < budget_mib,
        "worker peak {peak:.0} MiB over its budget of {budget_mib} MiB"
    );
    // The mid image really was decoded and normalized: 9 MB of samples
    // plus the decoder's buffers (the 36 MB float array is written tile by
    // tile and never held whole, see `tiles.rs`); an idle worker peaks
    // near 20 MiB.
    assert!(
        peak > 28.0,
        "worker peak {peak:.0} MiB: the mid image was not processed"
    );
    assert_no_worker_died(&out, 1);
}

/// Writes `bytes` of pseudo-random data (no image format) to `path`, in
/// chunks (the test never holds the file in memory).
fn random_file(path: &Path, bytes: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for w in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(chunk.len());
        f.write_all(&chunk[..n]).expect("write");
        left -= n;
    }
    f.flush().expect("flush");
}

/// Reading the input is inside the memory budget: a 400 MB file named
/// `big.png` on a `--memory-budget 256` worker fails from its size alone
/// (never read), in shared and in stream mode, without the worker dying or
/// its peak memory passing the budget; the small images beside it are ok.
/// `--max-input-bytes` refuses it the same way in every mode, centralized
/// included, so those manifests agree.
#[test]
fn an_input_larger_than_the_memory_budget_is_refused_before_it_is_read() {
    let dir = helpers::tempdir();
    let input = dir.path().join("input");
    std::fs::create_dir_all(&input).expect("mkdir");
    for i in 0..3 {
        constant_png(&input.join(format!("small{i}.png")), 64 + i, 48);
    }
    const BIG: usize = 400_000_000;
    random_file(&input.join("big.png"), BIG);
    let budget_mib = 256.0;
    for transfer in ["shared", "stream"] {
        let out = dir.path().join(format!("out-{transfer}"));
        let master = Master::start(&input, &out, &["--no-speculation", "--transfer", transfer]);
        let worker = Proc::spawn(
            Command::new(bin())
                .args(["worker", "--master", master.url(), "--name", "w1"])
                .args(["--memory-budget", "256"])
                .env("IMGNORM_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let code = master.wait(Duration::from_secs(180));
        let peak = vm_hwm_mib(worker.id());
        drop(worker);
        eprintln!("{transfer}: worker peak {peak:.1} MiB");
        assert!(
            peak < budget_mib,
            "{transfer}: worker peak {peak:.0} MiB over its budget of {budget_mib} MiB"
        );
        assert_eq!(code, 3, "{transfer}: big.png fails: exit 3");
        let rows = rows_by_path(&out);
        let big = &rows["big.png"];
        assert_eq!(big["status"], "failed", "{transfer}: {big}");
        let reason = big["reason"].as_str().unwrap_or("");
        assert!(
            reason.contains("input file is 400000000 bytes")
                && reason.contains("--memory-budget 256 MiB"),
            "{transfer}: {big}"
        );
        for i in 0..3 {
            let r = &rows[&format!("small{i}.png")];
            assert_eq!(r["status"], "ok", "{transfer}: {r}");
        }
        assert_no_worker_died(&out, 1);
    }

    // --max-input-bytes: one rule and one reason in every mode.
    let limit = ["--max-input-bytes", "300000000"];
    let c = dir.path().join("c");
    let r = helpers::centralized(&input, &c, &limit);
    assert_eq!(r.code, 3, "{r}");
    let want =
        "input file is 400000000 bytes, over the limit of 300000000 bytes (--max-input-bytes)";
    assert_eq!(rows_by_path(&c)["big.png"]["reason"], want);
    let out = dir.path().join("limit-stream");
    let master = Master::start(
        &input,
        &out,
        &[&limit[..], &["--transfer", "stream"]].concat(),
    );
    let worker = Proc::spawn(
        Command::new(bin())
            .args(["worker", "--master", master.url(), "--name", "w1"])
            .env("IMGNORM_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert_eq!(master.wait(Duration::from_secs(180)), 3);
    drop(worker);
    helpers::assert_same_dataset(&c, &out);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn connect(url: &str) -> CoordinatorClient<tonic::transport::Channel> {
    CoordinatorClient::connect(url.to_string())
        .await
        .expect("connect")
        .max_encoding_message_size(64 << 20)
}

#[test]
fn messages_over_the_size_limit_are_refused_with_a_clear_status() {
    let dir = helpers::tempdir();
    let master = Master::serve(dir.path());
    runtime().block_on(async {
        let mut c = connect(master.url()).await;
        let err = c
            .submit(pb::SubmitRequest {
                input: "x".repeat(6 << 20),
                output: "y".into(),
                ..Default::default()
            })
            .await
            .expect_err("a 6 MiB request is refused");
        assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
        assert!(
            err.message().contains("message length too large"),
            "{err:?}"
        );
        // The master still serves.
        let ok = c.status(pb::StatusRequest::default()).await;
        assert!(ok.is_ok(), "{ok:?}");
    });
}

fn msg(m: WMsg) -> pb::WorkerMessage {
    pb::WorkerMessage { msg: Some(m) }
}

/// A worker that answers its lease with a result whose output lies outside
/// the output root, three times: each is refused, then the master ends its
/// session with PERMISSION_DENIED, re-queues its lease, and an honest worker
/// finishes the job with nothing written outside the output folder.
#[test]
fn a_lying_worker_is_refused_then_disconnected() {
    let dir = helpers::tempdir();
    let input = dir.path().join("in");
    let generated = Command::new(bin())
        .args(["gen", "--format", "png", "--size", "16x12", "--count", "3"])
        .arg("--out")
        .arg(&input)
        .stdout(Stdio::null())
        .status()
        .expect("gen");
    assert!(generated.success());
    let out = dir.path().join("out");
    let master = Master::start(&input, &out, &["--no-speculation"]);
    let status = runtime().block_on(async {
        let mut c = connect(master.url()).await;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send(msg(WMsg::Hello(pb::Hello {
            protocol_version: imgnorm_proto::PROTOCOL_VERSION,
            name: "liar".into(),
            threads: 1,
            ..Default::default()
        })))
        .expect("send");
        tx.send(msg(WMsg::Ready(pb::Ready { credits: 1 })))
            .expect("send");
        let mut inbound = c
            .session(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await
            .expect("session")
            .into_inner();
        let mut lease = None;
        while lease.is_none() {
            match inbound
                .message()
                .await
                .expect("stream")
                .expect("message")
                .msg
            {
                Some(pb::master_message::Msg::Lease(l)) => lease = Some(l),
                _ => continue,
            }
        }
        let lease = lease.expect("lease");
        for item in lease.items.iter().cycle().take(3) {
            let record = pb::Record {
                path: item.path.clone(),
                status: "ok".into(),
                output: format!("../../{}.npy", item.path),
                width: 16,
                height: 12,
                channels: 3,
                bit_depth: 8,
                sample_type: "uint8".into(),
                min: vec![0.0],
                max: vec![255.0],
                checksum: "0".repeat(32),
                format: "png".into(),
                ..Default::default()
            };
            tx.send(msg(WMsg::ImageDone(pb::ImageDone {
                job_id: lease.job_id.clone(),
                lease_id: lease.lease_id,
                attempt: lease.attempt,
                index: item.index,
                record: Some(record),
                ..Default::default()
            })))
            .expect("send");
        }
        loop {
            match tokio::time::timeout(Duration::from_secs(20), inbound.message())
                .await
                .expect("the master ends the session")
            {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("session ended without a status"),
                Err(s) => break s,
            }
        }
    });
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("3 refused")
            && status.message().contains("is not")
            && status.message().contains(".npy"),
        "{status:?}"
    );
    let honest = master.worker("honest", 0);
    assert_eq!(master.wait(Duration::from_secs(60)), 0, "the job finishes");
    drop(honest);
    let rows = rows_by_path(&out);
    assert_eq!(rows.len(), 3);
    assert!(rows.values().all(|r| r["status"] == "ok"), "{rows:?}");
    let prov = std::fs::read_to_string(out.join("provenance.jsonl")).expect("provenance");
    assert!(!prov.contains("liar"), "{prov}");
    let stray: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(stray.len(), 2, "only in/ and out/: {stray:?}");
}
