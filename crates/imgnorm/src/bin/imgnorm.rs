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
use imgnorm::cli::{Cli, Command, GenFormatArg};
use imgnorm::output::Summary;
use imgnorm::synth::{GenFormat, GenOptions};
use imgnorm::worker::WorkerConfig;
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
    init_tracing(default_level);
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
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
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

fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IMGNORM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Exit code for a finished run.
/// The human line, the dataset statistics (one or two lines), then the JSON
/// summary, which stays the last line on stdout.
fn report(summary: &Summary, out: &std::path::Path) {
    println!("{}", summary.human(out));
    if let Some(lines) = imgnorm::output::dataset_lines(out) {
        println!("{lines}");
    }
    println!("{}", summary.json());
}

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
            report(&s, &a.output);
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
        Command::Master(a) => {
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
                        (Some(addr), Some(cfg)) => {
                            let l = app::bind(addr).await?;
                            let http_addr = l.local_addr().context("dashboard address")?;
                            security.check_dashboard(http_addr)?;
                            eprintln!(
                                "imgnorm dashboard listening on {}://{http_addr}",
                                security.scheme()
                            );
                            Some((l, cfg))
                        }
                        _ => None,
                    };
                    app::master_serve(listener, security, config, scaler, http).await?;
                    return Ok(ExitCode::SUCCESS);
                }
                let (Some(input), Some(output)) = (a.input.as_ref(), a.output.as_ref()) else {
                    anyhow::bail!("--input and --output are required without --serve");
                };
                let s = app::master_one_job(
                    listener,
                    security,
                    config,
                    input,
                    output,
                    a.sched.transfer(),
                    opts,
                    a.quiet,
                    None,
                    scaler,
                )
                .await
                .context("distributed run failed")?;
                report(&s, output);
                Ok(finished(&s))
            })
        }
        Command::Worker(a) => {
            let cfg = WorkerConfig {
                master: a.master.clone(),
                threads: a.threads.max(1),
                name: a.name.clone(),
                prefetch: a.prefetch.max(1),
                // Test hook: workers started by the autoscaler inherit the
                // master's environment, not its flags.
                delay_per_image: Duration::from_millis(if a.delay_per_image_ms > 0 {
                    a.delay_per_image_ms
                } else {
                    std::env::var("IMGNORM_TEST_DELAY_PER_IMAGE_MS")
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                }),
                connect_timeout: a.connect_timeout.map(Duration::from_secs_f64),
                memory_budget_mib: a.memory_budget,
                security: a
                    .security
                    .resolve()
                    .context("transport security settings")?,
            };
            runtime()?
                .block_on(imgnorm::worker::run(cfg, imgnorm::shutdown::signal()))
                .context("worker failed")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(a) => {
            let opts = a.engine.to_options().context("invalid options")?;
            let mut config = a.sched.to_config()?;
            config.state_dir = a.data_dir.clone();
            if a.workers == 0 && a.autoscale.autoscale.is_none() {
                anyhow::bail!("--workers must be at least 1 (or use --autoscale local)");
            }
            let s = serve(
                runtime()?,
                app::run_local(
                    &a.input,
                    &a.output,
                    a.workers,
                    app::WorkerFlags {
                        threads: a.threads.max(1),
                        memory_budget_mib: a.memory_budget,
                    },
                    config,
                    a.sched.transfer(),
                    opts,
                    a.quiet,
                    Some(&a.autoscale),
                ),
            )
            .context("distributed run failed")?;
            report(&s, &a.output);
            Ok(finished(&s))
        }
        Command::Resume(a) => {
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
                        let scheme = if security.tls.is_some() { "https" } else { "http" };
                        let host = if addr.ip().is_unspecified() {
                            std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
                        } else {
                            addr
                        };
                        let url = format!("{scheme}://{host}");
                        app::LocalWorkers::spawn(a.workers, flags, &url, &security.worker_access())
                    })
                    .transpose()?;
                let outcomes =
                    app::master_resume(listener, security, config, a.quiet, local).await?;
                if outcomes.is_empty() {
                    println!("nothing to resume: every job in {} is finished", a.data_dir.display());
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
                            eprintln!("imgnorm: {e:#}");
                            code = ExitCode::from(2);
                        }
                    }
                }
                Ok(code)
            })
        }
        Command::Submit(a) => {
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
                Ok(match j.state.as_str() {
                    "done" if j.failed == 0 => ExitCode::SUCCESS,
                    "done" => ExitCode::from(3),
                    _ => ExitCode::from(2),
                })
            })
        }
        Command::Status(a) => runtime()?.block_on(async {
            let security = a
                .security
                .resolve()
                .context("transport security settings")?;
            let s = app::status(&a.master, a.job.as_deref(), &security).await?;
            if a.json {
                let jobs: Vec<_> = s.jobs.iter().map(|j| serde_json::json!({
                    "job_id": j.job_id, "state": j.state, "phase": j.phase, "images": j.images, "done": j.done,
                    "ok": j.ok, "failed": j.failed, "skipped": j.skipped, "elapsed_s": j.elapsed_s,
                    "input": j.input, "output": j.output, "error": j.error,
                })).collect();
                let workers: Vec<_> = s.workers.iter().map(|w| serde_json::json!({
                    "worker_id": w.worker_id, "name": w.name, "hostname": w.hostname, "state": w.state,
                    "images_done": w.images_done, "leases": w.leases, "last_seen_s_ago": w.last_seen_s_ago,
                })).collect();
                let autoscale = s.autoscale.as_ref().map(|a| serde_json::json!({
                    "backend": a.backend, "min_workers": a.min_workers, "max_workers": a.max_workers,
                    "desired": a.desired, "starting": a.starting, "running": a.running,
                    "draining": a.draining, "worker_seconds": a.worker_seconds,
                    "started_total": a.started_total, "stopped_total": a.stopped_total,
                    "died_total": a.died_total, "last_decision": a.last_decision,
                    "rate_per_worker": a.rate_per_worker,
                }));
                println!("{}", serde_json::json!({"jobs": jobs, "workers": workers, "autoscale": autoscale}));
            } else {
                print!("{}", app::status_table(&s));
            }
            Ok(ExitCode::SUCCESS)
        }),
        Command::Health(a) => {
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
