//! `imgnorm demo`: the README's first command. Generates a sample dataset (once;
//! reused when present), normalizes it, and tells the user what was produced.
use std::path::Path;

use imgnorm_core::options::EngineOptions;

use crate::centralized::{self, RunError};
use crate::synth::{self, GenError, GenFormat, GenOptions};

/// The demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Generating the sample dataset failed.
    #[error("generating the sample dataset failed")]
    Gen(#[from] GenError),
    /// The run failed.
    #[error("normalizing the sample dataset failed")]
    Run(#[from] RunError),
    /// The distributed run failed.
    #[error("the distributed run failed")]
    Distributed(#[from] crate::app::AppError),
    /// The scaling table could not be measured.
    #[error("the scaling benchmark failed")]
    Bench(#[from] crate::bench::BenchError),
    /// The async runtime could not start.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

/// Runs the demo in `dir` with `count` sample images.
pub fn run(dir: &Path, count: u64) -> Result<(), DemoError> {
    let input = dir.join("input");
    let marker = dir.join(format!(".sample-{count}-images-ready"));
    if marker.exists() {
        println!("Using the sample dataset already in {}", input.display());
    } else {
        println!(
            "Generating {count} sample images (JPEG, PNG 8/16-bit, BMP, TIFF, WebP, GIF) in {} ...",
            input.display()
        );
        let mut opts = GenOptions::new(&input, count);
        opts.format = GenFormat::Mixed;
        opts.seed = 7;
        opts.classes = 4;
        synth::generate(&opts)?;
        let _ = std::fs::write(&marker, b"");
    }
    let out = dir.join("output-centralized");
    println!("\n== centralized (one thread) ==");
    let s = centralized::run(&input, &out, &EngineOptions::default(), false)?;
    println!("{}", s.human(&out));

    let workers = 2;
    let dist = dir.join("output-distributed");
    println!("\n== distributed: a master and {workers} worker processes over gRPC ==");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(DemoError::Runtime)?;
    let d = rt.block_on(crate::app::run_local(crate::app::LocalRun {
        job: crate::app::OneJob {
            input: &input,
            output: &dist,
            transfer: crate::wire::Transfer::Shared,
            options: EngineOptions::default(),
            quiet: false,
            rerun: Default::default(),
        },
        workers,
        flags: crate::app::WorkerFlags {
            threads: 1,
            memory_budget_mib: None,
        },
        config: crate::master::MasterConfig::default(),
        scale: None,
    }))?;

    println!("{}", d.human(&dist));
    let same = same_dataset(&out, &dist);
    println!(
        "\ncentralized {:.1} images/s, distributed ({workers} workers) {:.1} images/s: {:.2}x on this {}-core machine",
        s.images_per_s,
        d.images_per_s,
        if s.images_per_s > 0.0 {
            d.images_per_s / s.images_per_s
        } else {
            0.0
        },
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    println!(
        "identical datasets (arrays and manifest, byte for byte): {}",
        if same {
            "yes"
        } else {
            "NO - please report a bug"
        }
    );
    println!("\n== scaling table: centralized vs 1 and 2 workers on the sample (imgnorm bench) ==");
    let table = crate::bench::run(&crate::bench::BenchArgs {
        count,
        workers: vec![1, 2],
        repeat: 1,
        input: Some(input.clone()),
        out: dir.join("bench"),
        transfer: crate::args::TransferArg::Shared,
        python: false,
        python_script: "benchmarks/python/normalize_cv2.py".into(),
        peers: None,
        peers_script: "benchmarks/python/normalize_peers.py".into(),
        scratch: None,
        size: (512, 512),
        format: crate::bench::BenchFormat::Jpeg,
        batch_size: 32,
        autoscale: false,
        autoscale_target_drain: 10.0,
    })?;
    print!("{}", table.markdown());
    println!(
        "(one repeat on a small sample: for numbers you can quote, run `imgnorm bench` - see docs/SCALING.md)"
    );

    println!("\nThe dataset in {}:", out.display());
    println!("  <class>/<image>.npy   one float32 array per image, shape HxWxC, values in [0, 1]");
    println!(
        "  manifest.jsonl        one row per input file: status, shape, source min/max, checksum"
    );
    println!("  stats.json            counts, options, timings");
    // The first array the manifest lists, so the hint names a file that
    // exists whatever the generator called its images.
    if let Some(first) = first_output(&out) {
        println!(
            "Load one in Python:  numpy.load('{}')",
            out.join(first).display()
        );
    }
    Ok(())
}

/// The `output` of the first `ok` row of a dataset's manifest.
fn first_output(out: &Path) -> Option<String> {
    let text = std::fs::read_to_string(out.join("manifest.jsonl")).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["status"] == "ok")
        .and_then(|r| r["output"].as_str().map(str::to_string))
}

/// Compares the two datasets' manifests and every array file.
fn same_dataset(a: &Path, b: &Path) -> bool {
    let read = |p: &Path| std::fs::read(p).ok();
    let (Some(ma), Some(mb)) = (
        read(&a.join("manifest.jsonl")),
        read(&b.join("manifest.jsonl")),
    ) else {
        return false;
    };
    if ma != mb {
        return false;
    }
    String::from_utf8_lossy(&ma).lines().all(|line| {
        let out = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v["output"].as_str().map(str::to_string));
        match out {
            Some(rel) => read(&a.join(&rel)).is_some_and(|x| Some(x) == read(&b.join(&rel))),
            None => true,
        }
    })
}
