//! The command line: `imgnorm`'s subcommands and their arguments (clap),
//! converted into validated options at this edge (the shared flags and
//! their conversions are in [`crate::args`]), so nothing deeper parses text.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::args::{
    AutoscaleArgs, AutoscaleBackendArg, ChannelsArg, DashboardArgs, DtypeArg, EngineArgs,
    FilterArg, Floats, FormatArg, LayoutArgs, OrientationArg, RerunArgs, SchedArgs, ScopeArg,
    TransferArg, parse_list, parse_range, parse_size,
};
use crate::security;
#[cfg(test)]
use imgnorm_core::options::{Dtype, EngineOptions, OutputFormat, Resize, Scope};

/// imgnorm: decode and min-max normalize image datasets, on one machine or many.
#[derive(Debug, Parser)]
#[command(
    name = "imgnorm",
    version,
    about,
    long_about = None,
    after_help = "Environment: IMGNORM_LOG sets the log filter (e.g. info, imgnorm=debug); \
IMGNORM_SECRET the shared secret (see --secret); IMGNORM_TOKEN the dashboard token; \
IMGNORM_WORKER_LOG the log filter of the workers a master starts; AWS_* the S3 settings."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Colour in log lines: only when stderr is a terminal and NO_COLOR is
    /// unset (auto), always, or never.
    #[arg(long, value_enum, global = true, default_value = "auto")]
    pub color: ColorArg,
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorArg {
    /// On a terminal, unless NO_COLOR is set to a non-empty value.
    Auto,
    /// Always (even into a pipe or a file).
    Always,
    /// Never.
    Never,
}

impl ColorArg {
    /// Whether log lines on stderr get ANSI colour codes.
    pub fn enabled(self) -> bool {
        use std::io::IsTerminal;
        match self {
            ColorArg::Always => true,
            ColorArg::Never => false,
            ColorArg::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && std::io::stderr().is_terminal()
            }
        }
    }
}

/// Subcommands.
// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a sample dataset, normalize it centralized and distributed, and
    /// show the results. Needs no data of yours.
    Demo(DemoArgs),
    /// Normalize a folder on one thread (the baseline).
    Centralized(CentralizedArgs),
    /// Generate a deterministic dataset of natural-looking images.
    Gen(GenArgs),
    /// Coordinate workers: run one job (--input/--output) or serve jobs (--serve).
    Master(MasterArgs),
    /// Pull batches from a master and process them.
    Worker(WorkerArgs),
    /// Master plus N local worker processes in one command.
    Run(RunArgs),
    /// Take up the unfinished jobs of a master's data directory (after the
    /// master or the whole cluster was stopped) and serve until they are done.
    Resume(ResumeArgs),
    /// Queue a job on a serving master.
    Submit(SubmitArgs),
    /// Show jobs and workers of a master.
    Status(StatusArgs),
    /// Check a master's gRPC health (grpc.health.v1): exit 0 when SERVING,
    /// 1 otherwise. Meant as a container healthcheck (the image has no shell).
    Health(HealthArgs),
    /// Benchmark centralized vs N workers (and Python); writes tables and charts.
    Bench(crate::bench::BenchArgs),
    /// Simulate a cluster (virtual workers, failures, partitions, master
    /// crashes) around the real scheduler and job logic; deterministic for a
    /// seed. Ends with one JSON line; exit 1 when an image was lost or
    /// duplicated or the job stalled.
    Simulate(crate::simulate::SimulateArgs),
}

/// `imgnorm master`.
#[derive(Debug, Args)]
pub struct MasterArgs {
    /// Folder of images or `s3://bucket/prefix` (run one job, then exit).
    #[arg(long, required_unless_present = "serve")]
    pub input: Option<PathBuf>,
    /// Folder or `s3://bucket/prefix` for the dataset.
    #[arg(long, required_unless_present = "serve")]
    pub output: Option<PathBuf>,
    /// Keep running and accept jobs with `imgnorm submit`.
    #[arg(long, conflicts_with_all = ["input", "output"])]
    pub serve: bool,
    /// gRPC address to listen on (port 0 picks a free port; the address is
    /// printed). Loopback by default: a non-loopback address (e.g.
    /// 0.0.0.0:50051) needs TLS and a secret, or --insecure.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: String,
    /// Also serve the gRPC health service (grpc.health.v1 only: no data,
    /// no secret) in plain text on this address, for probes that cannot
    /// speak TLS, such as Kubernetes' `grpc:` probe (deploy/k8s).
    #[arg(long, value_name = "ADDR")]
    pub health_listen: Option<String>,
    /// Transport security.
    #[command(flatten)]
    pub security: ServerSecurityArgs,
    /// Dashboard.
    #[command(flatten)]
    pub dashboard: DashboardArgs,
    /// Scheduling.
    #[command(flatten)]
    pub sched: SchedArgs,
    /// Engine options.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Rerunning into an output that holds an earlier run.
    #[command(flatten)]
    pub rerun: RerunArgs,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
    /// Autoscaling.
    #[command(flatten)]
    pub autoscale: AutoscaleArgs,
}

/// Transport security of `imgnorm master` (docs/SECURITY.md): TLS for gRPC
/// and the dashboard, and the secret workers and clients must present.
#[derive(Debug, Clone, Args)]
pub struct ServerSecurityArgs {
    /// TLS certificate (PEM, chain allowed) for gRPC and the dashboard.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve TLS with a self-signed certificate kept in DIR (cert.pem,
    /// key.pem): generated on first use for localhost, 127.0.0.1, ::1, this
    /// host's name and the --tls-san names, reused afterwards. Clients trust
    /// it with --tls-ca DIR/cert.pem.
    #[arg(long, value_name = "DIR")]
    pub tls_self_signed: Option<PathBuf>,
    /// One more name or IP address for the self-signed certificate
    /// (repeatable), e.g. the host name workers use in the master URL.
    #[arg(long = "tls-san", value_name = "NAME", requires = "tls_self_signed")]
    pub tls_sans: Vec<String>,
    /// Shared secret every worker and client must present (else
    /// --secret-file, else $IMGNORM_SECRET). At least 16 visible ASCII
    /// characters. Shows in process lists: prefer the file or the variable.
    #[arg(long, value_name = "SECRET", conflicts_with = "secret_file")]
    pub secret: Option<String>,
    /// File holding the shared secret (surrounding whitespace is ignored).
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// Allow unencrypted connections and no secret on a non-loopback
    /// address: anyone who can reach the port can read the traffic and join
    /// as a worker. Only for trusted private networks.
    #[arg(long)]
    pub insecure: bool,
}

/// Transport security of the clients (`worker`, `submit`, `status`).
#[derive(Debug, Clone, Args)]
pub struct ClientSecurityArgs {
    /// CA certificate (PEM) to trust for an https:// master, e.g. the
    /// master's self-signed cert.pem (default: the system's CA bundle).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Shared secret to present to the master (else --secret-file, else
    /// $IMGNORM_SECRET). Shows in process lists: prefer the file or the
    /// variable.
    #[arg(long, value_name = "SECRET", conflicts_with = "secret_file")]
    pub secret: Option<String>,
    /// File holding the shared secret (surrounding whitespace is ignored).
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// Allow a plain http:// master URL whose host is not loopback (the
    /// traffic, secret included, is then readable on the network).
    #[arg(long)]
    pub insecure: bool,
}

impl ServerSecurityArgs {
    /// The master's security settings: reads or generates the certificate
    /// and reads the secret.
    pub fn resolve(&self) -> Result<security::ServerSecurity, security::SecurityError> {
        let tls = match (&self.tls_cert, &self.tls_key, &self.tls_self_signed) {
            (Some(c), Some(k), _) => Some(security::ServerTls::from_files(c, k)?),
            (_, _, Some(dir)) => Some(security::ServerTls::self_signed(dir, &self.tls_sans)?),
            _ => None,
        };
        Ok(security::ServerSecurity {
            tls,
            secret: security::Secret::from_sources(
                self.secret.as_deref(),
                self.secret_file.as_deref(),
            )?,
            insecure: self.insecure,
        })
    }
}

impl ClientSecurityArgs {
    /// A client's security settings (reads the secret).
    pub fn resolve(&self) -> Result<security::ClientSecurity, security::SecurityError> {
        Ok(security::ClientSecurity {
            tls_ca: self.tls_ca.clone(),
            secret: security::Secret::from_sources(
                self.secret.as_deref(),
                self.secret_file.as_deref(),
            )?,
            insecure: self.insecure,
        })
    }
}

/// `imgnorm worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Master URL: https://HOST:PORT, or http:// on loopback (elsewhere
    /// only with --insecure).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub master: String,
    /// Engine threads in this worker.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Name shown by the master (default: host name and pid).
    #[arg(long, default_value = "")]
    pub name: String,
    /// Leases held at once (the one in progress plus prefetched ones).
    #[arg(long, default_value_t = 2)]
    pub prefetch: u32,
    /// Memory budget of this worker in MiB (default: 256 + 2048 per engine
    /// thread). Images are admitted against it from their header; one that
    /// alone needs more fails (see docs/DISTRIBUTED.md, "Limits").
    #[arg(long, value_name = "MIB")]
    pub memory_budget: Option<u64>,
    /// Milliseconds to sleep after each image (simulate a slow node in demos
    /// and fault tests).
    #[arg(long, default_value_t = 0, hide = true)]
    pub delay_per_image_ms: u64,
    /// Exit with an error if no master answers for this many seconds
    /// (default: keep trying).
    #[arg(long)]
    pub connect_timeout: Option<f64>,
    /// Transport security.
    #[command(flatten)]
    pub security: ClientSecurityArgs,
}

/// `imgnorm run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Folder of images or `s3://bucket/prefix`.
    #[arg(long)]
    pub input: PathBuf,
    /// Folder or `s3://bucket/prefix` for the dataset.
    #[arg(long)]
    pub output: PathBuf,
    /// Worker processes to start.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Engine threads per worker.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Memory budget of each worker in MiB (default: 256 + 2048 per thread).
    #[arg(long, value_name = "MIB")]
    pub memory_budget: Option<u64>,
    /// Scheduling.
    #[command(flatten)]
    pub sched: SchedArgs,
    /// Engine options.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Rerunning into an output that holds an earlier run.
    #[command(flatten)]
    pub rerun: RerunArgs,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
    /// Autoscaling instead of a fixed `--workers` pool (`--autoscale local`).
    #[command(flatten)]
    pub autoscale: AutoscaleArgs,
    /// Keep the job's state in a database in DIR: rerunning the same command
    /// after a crash resumes the job instead of starting over.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// `imgnorm resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The data directory of the stopped master (`--data-dir`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// gRPC address to listen on (workers reconnect here).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: String,
    /// Also start this many local worker processes.
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Engine threads per local worker.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Scheduling (`--transfer` is ignored: each job keeps its own).
    #[command(flatten)]
    pub sched: SchedArgs,
    /// Transport security, as for `imgnorm master` (workers reconnecting
    /// after the restart must find the same TLS and secret).
    #[command(flatten)]
    pub security: ServerSecurityArgs,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `imgnorm submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Master URL: https://HOST:PORT, or http:// on loopback (elsewhere
    /// only with --insecure).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub master: String,
    /// Folder of images as the master sees it, or `s3://bucket/prefix`.
    #[arg(long)]
    pub input: PathBuf,
    /// Folder for the dataset as the master sees it, or `s3://bucket/prefix`.
    #[arg(long)]
    pub output: PathBuf,
    /// Transfer mode.
    #[arg(long, value_enum, default_value = "shared")]
    pub transfer: TransferArg,
    /// Wait for the job to finish and print its summary.
    #[arg(long)]
    pub wait: bool,
    /// Transport security.
    #[command(flatten)]
    pub security: ClientSecurityArgs,
    /// Engine options.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Rerunning into an output that holds an earlier run.
    #[command(flatten)]
    pub rerun: RerunArgs,
}

/// `imgnorm status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Master URL: https://HOST:PORT, or http:// on loopback (elsewhere
    /// only with --insecure).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub master: String,
    /// Only this job.
    #[arg(long)]
    pub job: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Transport security.
    #[command(flatten)]
    pub security: ClientSecurityArgs,
}

/// `imgnorm health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Master URL: https://HOST:PORT or http://HOST:PORT (the probe sends
    /// no secret, so plain text is allowed anywhere).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub master: String,
    /// Seconds to wait for an answer (connect included).
    #[arg(long, default_value_t = 3.0)]
    pub timeout: f64,
    /// Service to ask about ("" = the whole server).
    #[arg(long, default_value = "")]
    pub service: String,
    /// CA certificate (PEM) to trust for an https:// master (default: the
    /// system's CA bundle). The health service needs no secret.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

/// `imgnorm demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the sample dataset and the outputs go.
    #[arg(long, default_value = "demo")]
    pub dir: PathBuf,
    /// Number of sample images.
    #[arg(long, default_value_t = 200)]
    pub count: u64,
}

/// `imgnorm centralized`.
#[derive(Debug, Args)]
pub struct CentralizedArgs {
    /// Folder of images (searched recursively) or `s3://bucket/prefix`
    /// (S3 settings from the `AWS_*` environment variables).
    #[arg(long)]
    pub input: PathBuf,
    /// Folder for the dataset (created if missing) or `s3://bucket/prefix`.
    #[arg(long)]
    pub output: PathBuf,
    /// Engine options.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Rerunning into an output that holds an earlier run.
    #[command(flatten)]
    pub rerun: RerunArgs,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Image formats `imgnorm gen` writes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GenFormatArg {
    /// JPEG only.
    Jpeg,
    /// PNG only.
    Png,
    /// Mostly JPEG, plus PNG 8/16-bit, gray, RGBA, BMP, TIFF, WebP, GIF.
    Mixed,
}

/// `imgnorm gen`.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 100)]
    pub count: u64,
    /// Random seed: the same seed gives the same files, byte for byte.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// File format.
    #[arg(long, value_enum, default_value = "jpeg")]
    pub format: GenFormatArg,
    /// Fixed size WxH (default: varied, 256 to 768 per side).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<(u32, u32)>,
    /// Spread images over N class folders (ImageFolder layout); 0 = flat.
    #[arg(long, default_value_t = 0)]
    pub classes: u32,
    /// JPEG quality 1-100.
    #[arg(long, default_value_t = 90)]
    pub quality: u8,
}

impl GenArgs {
    /// The generator's options.
    pub fn to_options(&self) -> crate::synth::GenOptions {
        use crate::synth::GenFormat;
        crate::synth::GenOptions {
            out: self.out.clone(),
            count: self.count,
            seed: self.seed,
            format: match self.format {
                GenFormatArg::Jpeg => GenFormat::Jpeg,
                GenFormatArg::Png => GenFormat::Png,
                GenFormatArg::Mixed => GenFormat::Mixed,
            },
            size: self.size,
            classes: self.classes,
            jpeg_quality: self.quality,
        }
    }
}

impl WorkerArgs {
    /// The worker's settings (reads the secret).
    pub fn to_config(&self) -> Result<crate::worker::WorkerConfig, security::SecurityError> {
        Ok(crate::worker::WorkerConfig {
            master: self.master.clone(),
            threads: self.threads.max(1),
            name: self.name.clone(),
            prefetch: self.prefetch.max(1),
            // Test hook: workers started by the autoscaler inherit the
            // master's environment, not its flags.
            delay_per_image: std::time::Duration::from_millis(if self.delay_per_image_ms > 0 {
                self.delay_per_image_ms
            } else {
                std::env::var("IMGNORM_TEST_DELAY_PER_IMAGE_MS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            }),
            connect_timeout: self.connect_timeout.map(std::time::Duration::from_secs_f64),
            memory_budget_mib: self.memory_budget,
            security: self.security.resolve()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_sizes() {
        assert_eq!(parse_range("-1,1"), Ok((-1.0, 1.0)));
        assert!(parse_range("1").is_err());
        assert!(parse_range("1,1").is_err());
        assert!(parse_range("nan,1").is_err());
        assert_eq!(parse_size("512x384"), Ok((512, 384)));
        assert!(parse_size("0x3").is_err());
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "imgnorm",
            "centralized",
            "--input",
            "a",
            "--output",
            "b",
            "--range",
            "-1,1",
            "--dtype",
            "f16",
        ])
        .unwrap();
        let Command::Centralized(c) = cli.command else {
            panic!("wrong command")
        };
        let o = c.engine.to_options().unwrap();
        assert_eq!(o.range, (-1.0, 1.0));
        assert_eq!(o.dtype, Dtype::F16);
    }

    fn layout(extra: &[&str]) -> Result<EngineOptions, String> {
        let mut args = vec!["imgnorm", "centralized", "--input", "a", "--output", "b"];
        args.extend_from_slice(extra);
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        let Command::Centralized(c) = cli.command else {
            panic!("wrong command")
        };
        c.engine.to_options().map_err(|e| e.to_string())
    }

    #[test]
    fn geometry_and_format_flags() {
        let o = layout(&[
            "--resize-shorter",
            "256",
            "--center-crop",
            "224x200",
            "--channels",
            "rgb",
            "--format",
            "stack",
        ])
        .unwrap();
        assert_eq!(o.geometry.resize, Some(Resize::Shorter { size: 256 }));
        assert_eq!(o.stack_shape(), Some([200, 224, 3]));
        let o = layout(&["--format", "webdataset", "--shard-size", "7"]).unwrap();
        assert_eq!(o.format, OutputFormat::Webdataset { shard_size: 7 });
        assert!(layout(&["--resize", "8x8", "--fit", "4x4"]).is_err());
        assert!(layout(&["--resize-shorter", "0"]).is_err());
        let e = layout(&["--format", "stack", "--resize", "8x8"]).unwrap_err();
        assert!(e.contains("--format stack needs one shape"), "{e}");
        assert!(layout(&["--format", "webdataset", "--shard-size", "0"]).is_err());
    }

    #[test]
    fn standardize_flags_parse() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["imgnorm", "centralized", "--input", "a", "--output", "b"];
            args.extend_from_slice(extra);
            let cli = Cli::try_parse_from(args).unwrap();
            let Command::Centralized(c) = cli.command else {
                panic!("wrong command")
            };
            c.engine.to_options()
        };
        let o = parse(&["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]).unwrap();
        assert_eq!(
            o.scope,
            Scope::Full,
            "--standardize defaults to the full range"
        );
        let z = o.standardize.unwrap();
        assert_eq!(z.mean, vec![0.485, 0.456, 0.406]);
        assert_eq!(z.std, vec![0.229, 0.224, 0.225]);
        let o = parse(&["--scope", "dataset", "--per-channel", "--standardize"]).unwrap();
        assert!(o.per_channel && o.two_phase());
        assert!(o.standardize.unwrap().computed());
        assert_eq!(parse(&[]).unwrap().scope, Scope::Image);
        assert!(parse(&["--standardize", "--dtype", "u16"]).is_err());
        assert!(parse_list("1,2,3,4,5").is_err());
    }
}
