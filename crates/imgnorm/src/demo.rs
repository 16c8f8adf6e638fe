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
    println!("\nThe dataset in {}:", out.display());
    println!("  <class>/<image>.npy   one float32 array per image, shape HxWxC, values in [0, 1]");
    println!(
        "  manifest.jsonl        one row per input file: status, shape, source min/max, checksum"
    );
    println!("  stats.json            counts, options, timings");
    println!(
        "Load one in Python:  numpy.load('{}/class_000/img_000000.jpg.npy')",
        out.display()
    );
    Ok(())
}
