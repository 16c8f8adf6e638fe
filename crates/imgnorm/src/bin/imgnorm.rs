//! The `imgnorm` binary: parses arguments and dispatches to the library. The
//! only place `anyhow` is used; the whole error chain is printed once here.
//!
//! Exit codes: 0 all images ok (skipped files are not failures), 1 internal
//! error, 2 usage or I/O error (bad folder, unreachable master, ...), 3 the run
//! finished but some images failed.
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use imgnorm::app;
use imgnorm::cli::{
    CentralizedArgs, Cli, Command, GenArgs, HealthArgs, MasterArgs, ResumeArgs, RunArgs,
    StatusArgs, SubmitArgs, WorkerArgs,
};
use imgnorm::output::Summary;
use std::time::Duration;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs a long-running command's future, then shuts the runtime down
/// without waiting on blocking tasks that a signal left running (a
/// discovery, a dataset write whose job was interrupted) for more than a
/// moment.
fn serve<F: std::future::Future>(rt: tokio::runtime::Runtime, f: F) -> F::Output {
    let out = rt.block_on(f);
    rt.shutdown_timeout(Duration::from_secs(2));
    out
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    // Long-running services log their events; one-shot commands stay quiet
    // unless something is wrong (IMGNORM_LOG overrides either).
    let default_level = match cli.command {
        Command::Master(_) | Command::Worker(_) | Command::Resume(_) => "info",
        _ => "warn",
    };
    init_tracing(default_level, cli.color.enabled());
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            // A run stopped by SIGINT/SIGTERM says so and how to go on, and
            // exits 130/143 (docs/RELIABILITY.md, "Stopping").
            if let Some(a) = e.downcast_ref::<app::AppError>()
                && let Some(code) = a.signal_exit_code()
            {
                eprintln!("imgnorm: {a}");
                return ExitCode::from(code);
            }
            eprintln!("error: {}", chain_once(e.as_ref()));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes joined by ": ", each cause written once: a
/// cause whose text its parent already contains (an error type that
/// repeats its source in its message) is not repeated.
fn chain_once(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut next = Some(e);
    while let Some(cause) = next {
        next = cause.source();
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// glibc returns freed memory at the top of the main heap to the kernel as
/// soon as 128 KiB is free, so a decoder that allocates and frees a few MB per
/// image on the main thread (`centralized`) paid page faults for every image:
/// measured up to 2x the run time in system time. Keep up to 256 MiB instead.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TOP_PAD, 16 << 20);
    }
}

fn init_tracing(default_level: &str, ansi: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IMGNORM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The human line, the dataset statistics (one or two lines), then the JSON
/// summary, which stays the last line on stdout.
fn report(summary: &Summary, out: &std::path::Path) {
    println!("{}", summary.human(out));
    if let Some(lines) = imgnorm::output::dataset_lines(out) {
        println!("{lines}");
    }
    println!("{}", summary.json());
}

/// Exit code for a finished run.
fn finished(summary: &Summary) -> ExitCode {
    if summary.failed > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

/// One function per subcommand; each returns the exit code, or the error
/// whose chain `main` prints.
fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Centralized(a) => centralized(&a),
        Command::Gen(a) => generate(&a),
        Command::Master(a) => master(&a),
        Command::Worker(a) => worker(&a),
        Command::Run(a) => run(&a),
        Command::Resume(a) => resume(&a),
        Command::Submit(a) => submit(&a),
        Command::Status(a) => status(&a),
        Command::Health(a) => health(&a),
        Command::Simulate(a) => simulate(&a),
        Command::Bench(a) => {
            let r = imgnorm::bench::run(&a).context("benchmark failed")?;
            print!("{}", r.markdown());
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(a) => {
            imgnorm::demo::run(&a.dir, a.count)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `imgnorm centralized`.
fn centralized(a: &CentralizedArgs) -> anyhow::Result<ExitCode> {
    let opts = a.engine.to_options().context("invalid options")?;
    let s = imgnorm::centralized::run_with(&a.input, &a.output, &opts, a.rerun.flags(), a.quiet)
        .context("centralized run failed")?;
    report(&s, &a.output);
    Ok(finished(&s))
}

/// `imgnorm gen`.
fn generate(a: &GenArgs) -> anyhow::Result<ExitCode> {
    let r = imgnorm::synth::generate(&a.to_options()).context("generating images failed")?;
    println!(
        "generated {} images ({:.1} MB, {:.1} megapixels) in {}",
        r.files,
        r.bytes as f64 / 1e6,
        r.pixels as f64 / 1e6,
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `imgnorm master`: one job (`--input`/`--output`), or a long-running
/// service (`--serve`, optionally with the dashboard).
fn master(a: &MasterArgs) -> anyhow::Result<ExitCode> {
    // Flags that would do nothing are refused before anything is created
    // (the default data directory of the dashboard included).
    if !a.serve && a.dashboard.http.is_some() {
        anyhow::bail!("--http (the dashboard) needs --serve: a one-job master serves no dashboard");
    }
    if a.dashboard.http.is_none() && a.dashboard.token.is_some() {
        anyhow::bail!("--token is the dashboard's: it needs --http (and --serve)");
    }
    let opts = a.engine.to_options().context("invalid options")?;
    let mut config = a.sched.to_config()?;
    config.state_dir = a.dashboard.data_dir.clone().or_else(|| {
        a.dashboard
            .http
            .as_ref()
            .map(|_| app::DEFAULT_DATA_DIR.into())
    });
    let rt = runtime()?;
    // Checked before anything listens.
    let dashboard = match &a.dashboard.http {
        Some(_) => Some(app::dashboard_config(&a.dashboard)?),
        None => None,
    };
    let security = a
        .security
        .resolve()
        .context("transport security settings")?;
    serve(rt, async {
        let listener = app::bind(&a.listen).await?;
        let addr = listener.local_addr().context("listener address")?;
        // Refuse before announcing anything.
        security.check_grpc(addr)?;
        eprintln!("imgnorm master listening on {addr}");
        if let Some(h) = &a.health_listen {
            let l = app::bind(h).await?;
            let health_addr = l.local_addr().context("health listener address")?;
            eprintln!("imgnorm health (plain text) listening on {health_addr}");
            tokio::spawn(imgnorm::health::serve_plain(l));
        }
        let scaler = a.autoscale.to_settings(addr, &security)?;
        if a.serve {
            let http = match (&a.dashboard.http, dashboard) {
                (Some(addr), Some(cfg)) => Some((dashboard_listener(addr, &security).await?, cfg)),
                _ => None,
            };
            app::master_serve(listener, security, config, scaler, http).await?;
            return Ok(ExitCode::SUCCESS);
        }
        let (Some(input), Some(output)) = (a.input.as_ref(), a.output.as_ref()) else {
            anyhow::bail!("--input and --output are required without --serve");
        };
        let job = app::OneJob {
            input,
            output,
            transfer: a.sched.transfer(),
            options: opts,
            quiet: a.quiet,
            rerun: a.rerun.flags(),
        };
        let s = app::master_one_job(listener, security, config, job, None, scaler)
            .await
            .context("distributed run failed")?;
        report(&s, output);
        Ok(finished(&s))
    })
}

/// Binds the dashboard's address and announces it (refused without TLS or
/// `--insecure` off loopback).
async fn dashboard_listener(
    addr: &str,
    security: &imgnorm::security::ServerSecurity,
) -> anyhow::Result<tokio::net::TcpListener> {
    let l = app::bind(addr).await?;
    let http_addr = l.local_addr().context("dashboard address")?;
    security.check_dashboard(http_addr)?;
    eprintln!(
        "imgnorm dashboard listening on {}://{http_addr}",
        security.scheme()
    );
    Ok(l)
}

/// `imgnorm worker`.
fn worker(a: &WorkerArgs) -> anyhow::Result<ExitCode> {
    let cfg = a.to_config().context("transport security settings")?;
    runtime()?
        .block_on(imgnorm::worker::run(cfg, imgnorm::shutdown::signal()))
        .context("worker failed")?;
    Ok(ExitCode::SUCCESS)
}

/// `imgnorm run`: a master on loopback and local worker processes.
fn run(a: &RunArgs) -> anyhow::Result<ExitCode> {
    let opts = a.engine.to_options().context("invalid options")?;
    let mut config = a.sched.to_config()?;
    config.state_dir = a.data_dir.clone();
    if a.workers == 0 && a.autoscale.autoscale.is_none() {
        anyhow::bail!("--workers must be at least 1 (or use --autoscale local)");
    }
    let local = app::LocalRun {
        job: app::OneJob {
            input: &a.input,
            output: &a.output,
            transfer: a.sched.transfer(),
            options: opts,
            quiet: a.quiet,
            rerun: a.rerun.flags(),
        },
        workers: a.workers,
        flags: app::WorkerFlags {
            threads: a.threads.max(1),
            memory_budget_mib: a.memory_budget,
        },
        config,
        scale: Some(&a.autoscale),
    };
    let s = serve(runtime()?, app::run_local(local)).context("distributed run failed")?;
    report(&s, &a.output);
    Ok(finished(&s))
}

/// `imgnorm resume`: the unfinished jobs of a state database.
fn resume(a: &ResumeArgs) -> anyhow::Result<ExitCode> {
    let mut config = a.sched.to_config()?;
    if !a.data_dir.join(imgnorm::master::store::DB_FILE).is_file() {
        anyhow::bail!(
            "{} holds no imgnorm state database ({}): nothing to resume",
            a.data_dir.display(),
            imgnorm::master::store::DB_FILE
        );
    }
    config.state_dir = Some(a.data_dir.clone());
    let security = a
        .security
        .resolve()
        .context("transport security settings")?;
    serve(runtime()?, async {
        let listener = app::bind(&a.listen).await?;
        let addr = listener.local_addr().context("listener address")?;
        security.check_grpc(addr)?;
        eprintln!("imgnorm master listening on {addr}");
        let local = (a.workers > 0)
            .then(|| {
                let flags = app::WorkerFlags {
                    threads: a.threads.max(1),
                    memory_budget_mib: None,
                };
                let scheme = if security.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                let host = if addr.ip().is_unspecified() {
                    std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
                } else {
                    addr
                };
                let url = format!("{scheme}://{host}");
                app::LocalWorkers::spawn(a.workers, flags, &url, &security.worker_access())
            })
            .transpose()?;
        let outcomes = app::master_resume(listener, security, config, a.quiet, local).await?;
        if outcomes.is_empty() {
            println!(
                "nothing to resume: every job in {} is finished",
                a.data_dir.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        let mut code = ExitCode::SUCCESS;
        for (output, outcome) in outcomes {
            match outcome {
                Ok(s) => {
                    report(&s, std::path::Path::new(&output));
                    if finished(&s) != ExitCode::SUCCESS {
                        code = finished(&s);
                    }
                }
                Err(e) => {
                    eprintln!("imgnorm: {}", chain_once(&e));
                    code = ExitCode::from(2);
                }
            }
        }
        Ok(code)
    })
}

/// `imgnorm submit`: a job to a running master, optionally waiting for it.
fn submit(a: &SubmitArgs) -> anyhow::Result<ExitCode> {
    let opts = a.engine.to_options().context("invalid options")?;
    let security = a
        .security
        .resolve()
        .context("transport security settings")?;
    runtime()?.block_on(async {
        let r = app::submit(
            &a.master,
            &a.input,
            &a.output,
            a.transfer.into(),
            &opts,
            a.rerun.flags(),
            &security,
        )
        .await?;
        println!("submitted {} ({} files)", r.job_id, r.images);
        if !a.wait {
            return Ok(ExitCode::SUCCESS);
        }
        let j = app::wait_remote(&a.master, &r.job_id, &security).await?;
        println!(
            "{} {}: {} files, {} ok, {} failed, {} skipped in {:.2}s",
            j.job_id, j.state, j.images, j.ok, j.failed, j.skipped, j.elapsed_s
        );
        // The same last line as every other run (README, "Output").
        let counts = imgnorm_core::record::Counts {
            images: j.images,
            ok: j.ok,
            failed: j.failed,
            skipped: j.skipped,
        };
        let elapsed = Duration::try_from_secs_f64(j.elapsed_s).unwrap_or_default();
        println!("{}", Summary::new(counts, elapsed).json());
        Ok(match j.state.as_str() {
            "done" if j.failed == 0 => ExitCode::SUCCESS,
            "done" => ExitCode::from(3),
            _ => ExitCode::from(2),
        })
    })
}

/// `imgnorm status`: a table, or one JSON line with `--json`.
fn status(a: &StatusArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let security = a
            .security
            .resolve()
            .context("transport security settings")?;
        let s = app::status(&a.master, a.job.as_deref(), &security).await?;
        if a.json {
            println!("{}", app::status_json(&s));
        } else {
            print!("{}", app::status_table(&s));
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `imgnorm health`: 0 when serving, 1 otherwise.
fn health(a: &HealthArgs) -> anyhow::Result<ExitCode> {
    if !(a.timeout.is_finite() && a.timeout > 0.0) {
        anyhow::bail!("--timeout must be a positive number of seconds");
    }
    let timeout = Duration::from_secs_f64(a.timeout);
    let r = runtime()?.block_on(imgnorm::health::check(
        &a.master,
        a.tls_ca.as_deref(),
        &a.service,
        timeout,
    ));
    Ok(match r {
        Ok(s) => {
            println!("{}", s.as_str_name());
            if s == imgnorm::health::ServingStatus::Serving {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::from(1)
        }
    })
}

/// `imgnorm simulate`: the report for people on stderr, the JSON line on
/// stdout; a lost, duplicated or stalled job is a failure (exit 1).
fn simulate(a: &imgnorm::simulate::SimulateArgs) -> anyhow::Result<ExitCode> {
    let r = imgnorm::simulate::run(a)?;
    eprint!("{}", imgnorm::simulate::human(&r));
    println!("{}", imgnorm::simulate::json_line(&r));
    Ok(
        if r.lost == 0 && r.duplicated == 0 && !r.stalled && r.refused == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    )
}
