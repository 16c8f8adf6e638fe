//! The `imgnorm` binary: parses arguments and dispatches to the library. The
//! only place `anyhow` is used; the whole error chain is printed once here.
//!
//! Exit codes: 0 all images ok (skipped files are not failures), 1 internal
//! error, 2 usage or I/O error (bad folder, unreachable master, ...), 3 the run
//! finished but some images failed.
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use imgnorm::cli::{Cli, Command, GenFormatArg};
use imgnorm::output::Summary;
use imgnorm::synth::{GenFormat, GenOptions};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IMGNORM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Exit code for a finished run.
fn finished(summary: &Summary) -> ExitCode {
    if summary.failed > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Centralized(a) => {
            let opts = a.engine.to_options().context("invalid options")?;
            let s = imgnorm::centralized::run(&a.input, &a.output, &opts, a.quiet)
                .context("centralized run failed")?;
            println!("{}", s.human(&a.output));
            println!("{}", s.json());
            Ok(finished(&s))
        }
        Command::Gen(a) => {
            let opts = GenOptions {
                out: a.out.clone(),
                count: a.count,
                seed: a.seed,
                format: match a.format {
                    GenFormatArg::Jpeg => GenFormat::Jpeg,
                    GenFormatArg::Png => GenFormat::Png,
                    GenFormatArg::Mixed => GenFormat::Mixed,
                },
                size: a.size,
                classes: a.classes,
                jpeg_quality: a.quality,
            };
            let r = imgnorm::synth::generate(&opts).context("generating images failed")?;
            println!(
                "generated {} images ({:.1} MB, {:.1} megapixels) in {}",
                r.files,
                r.bytes as f64 / 1e6,
                r.pixels as f64 / 1e6,
                a.out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(a) => {
            imgnorm::demo::run(&a.dir, a.count)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
