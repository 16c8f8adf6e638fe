//! Command-line arguments (clap) and their conversion into validated options:
//! raw flags here, checked [`EngineOptions`] out, so nothing deeper parses text.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use imgnorm_core::options::{
    ChannelMode, DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_PIXELS, DEFAULT_SHARD_SIZE, Dtype,
    EngineOptions, Filter, Geometry, OptionsError, Orientation, OutputFormat, Resize, Scope,
    Standardize,
};

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
}

/// Scheduling flags shared by `master` and `run`.
#[derive(Debug, Clone, Args)]
pub struct SchedArgs {
    /// Largest number of images per lease (smaller near the end of a job;
    /// at most 4096, which bounds a lease message).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=crate::limits::MAX_BATCH_SIZE))]
    pub batch_size: u64,
    /// Seconds without a heartbeat before a worker is declared dead.
    #[arg(long, default_value_t = 5.0)]
    pub heartbeat_timeout: f64,
    /// Seconds between worker heartbeats.
    #[arg(long, default_value_t = 1.0)]
    pub heartbeat_interval: f64,
    /// Worker deaths while holding an image alone before it is quarantined.
    #[arg(long, default_value_t = 3)]
    pub max_crashes: u32,
    /// Do not re-issue straggling batches to idle workers.
    #[arg(long)]
    pub no_speculation: bool,
    /// How images travel: workers read/write by path (shared), or through the
    /// master over gRPC (stream; no shared storage needed).
    #[arg(long, value_enum, default_value = "shared")]
    pub transfer: TransferArg,
}

/// `--transfer`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TransferArg {
    /// Shared filesystem.
    Shared,
    /// Through the master.
    Stream,
}

/// `--autoscale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AutoscaleBackendArg {
    /// Worker processes on the master's host.
    Local,
    /// Worker containers through the Docker Engine API.
    Docker,
    /// Worker jobs submitted to Slurm with `sbatch` (docs/SLURM.md).
    Slurm,
    /// Start nothing: publish the target on `/metrics` and in `status` for an
    /// outside scaler (a Kubernetes HPA, see deploy/k8s/overlays/autoscaled).
    External,
}

/// Autoscaling flags (`master` and `run`). See docs/AUTOSCALE.md.
#[derive(Debug, Clone, Args)]
pub struct AutoscaleArgs {
    /// Start and stop workers from the queue: `local` processes, `docker`
    /// containers or `slurm` batch jobs.
    #[arg(long, value_enum)]
    pub autoscale: Option<AutoscaleBackendArg>,
    /// Fewest workers, also when idle.
    #[arg(long, default_value_t = 0, requires = "autoscale")]
    pub min_workers: u32,
    /// Most workers.
    #[arg(long, default_value_t = 4, requires = "autoscale")]
    pub max_workers: u32,
    /// Wanted seconds to drain the queue: more workers when it would take longer.
    #[arg(long, default_value_t = 60.0, requires = "autoscale")]
    pub target_drain: f64,
    /// Least seconds between two scale-ups.
    #[arg(long, default_value_t = 5.0, requires = "autoscale")]
    pub scale_up_cooldown: f64,
    /// Seconds a lower need must hold before workers are removed.
    #[arg(long, default_value_t = 30.0, requires = "autoscale")]
    pub scale_down_window: f64,
    /// Seconds a draining worker may take before it is killed.
    #[arg(long, default_value_t = 60.0, requires = "autoscale")]
    pub drain_grace: f64,
    /// Engine threads per started worker.
    #[arg(long, default_value_t = 1, requires = "autoscale")]
    pub worker_threads: usize,
    /// Memory budget of each started worker in MiB (default: the worker's,
    /// 256 + 2048 per thread).
    #[arg(long, value_name = "MIB", requires = "autoscale")]
    pub worker_memory_budget: Option<u64>,
    /// The master URL as started workers reach it (default: this master's
    /// loopback address for `local`; required for `docker`, e.g.
    /// https://master:50051).
    #[arg(long, requires = "autoscale")]
    pub worker_master_url: Option<String>,
    /// The CA certificate started workers trust, as they see the file
    /// (default: the master's own certificate file, when it serves TLS).
    #[arg(long, value_name = "FILE", requires = "autoscale")]
    pub worker_tls_ca: Option<PathBuf>,
    /// Image of worker containers.
    #[arg(long, default_value = "imgnorm:latest", requires = "autoscale")]
    pub docker_image: String,
    /// Docker network the worker containers join.
    #[arg(long, requires = "autoscale")]
    pub docker_network: Option<String>,
    /// Bind mount for worker containers, `host:container[:ro]` (repeatable).
    #[arg(long = "docker-volume", requires = "autoscale")]
    pub docker_volumes: Vec<String>,
    /// `uid:gid` worker containers run as (default: the image's user).
    #[arg(long, requires = "autoscale")]
    pub docker_user: Option<String>,
    /// Label value marking this master's worker containers; a master started
    /// again with the same value adopts the running ones and removes the
    /// exited ones.
    #[arg(long, default_value = "imgnorm", requires = "autoscale")]
    pub docker_owner: String,
    /// Slurm partition of the worker jobs (default: the cluster's default).
    #[arg(long, value_name = "PARTITION", requires = "autoscale")]
    pub slurm_partition: Option<String>,
    /// Slurm account the worker jobs are charged to.
    #[arg(long, value_name = "ACCOUNT", requires = "autoscale")]
    pub slurm_account: Option<String>,
    /// Time limit of each worker job (`sbatch --time`, e.g. 2:00:00); the
    /// worker gets SIGTERM --drain-grace seconds before it and is replaced.
    #[arg(long, value_name = "TIME", requires = "autoscale")]
    pub slurm_time: Option<String>,
    /// More `sbatch` options for the worker jobs, e.g. "--qos=low
    /// --constraint=avx2" (split on whitespace; quotes group words).
    #[arg(long, value_name = "OPTIONS", requires = "autoscale")]
    pub slurm_extra: Option<String>,
    /// Folder on a filesystem the compute nodes share: each master makes
    /// its own 0700 folder in it for the secret file (0600), the CA
    /// certificate and the worker jobs' output.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "imgnorm-slurm",
        requires = "autoscale"
    )]
    pub slurm_dir: PathBuf,
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

/// The web dashboard of `imgnorm master --serve`.
#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Serve the web dashboard and its JSON API on this address (needs
    /// --serve; port 0 picks a free port; the URL is printed).
    #[arg(long, requires = "serve", value_name = "ADDR")]
    pub http: Option<String>,
    /// Data directory: the master's state database (jobs and accepted
    /// results; a restarted master resumes its unfinished jobs), and for the
    /// dashboard uploaded datasets (DIR/datasets/NAME) and job outputs
    /// (DIR/jobs/DATASET-N). Default with --http: imgnorm-data; otherwise
    /// none, and nothing is persisted.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Dashboard access token (else $IMGNORM_TOKEN; else one is generated
    /// and printed). At least 16 of A-Z a-z 0-9 . _ ~ -.
    #[arg(long)]
    pub token: Option<String>,
    /// Largest upload in MiB (request body, and again the extracted files).
    #[arg(long, default_value_t = 1024)]
    pub upload_max_mib: u64,
    /// Most files in one upload (archive entries included).
    #[arg(long, default_value_t = 10_000)]
    pub upload_max_files: u64,
    /// Largest single file of an upload, in MiB.
    #[arg(long, default_value_t = 64)]
    pub upload_max_file_mib: u64,
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

/// Engine options as flags, shared by every command that processes images.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Min/max over the whole image (all channels, like OpenCV), per channel,
    /// over the whole dataset, or the sample type's full range (default:
    /// image; full with --standardize).
    #[arg(long, value_enum)]
    pub scope: Option<ScopeArg>,
    /// Output range A,B (default 0,1 for f32/f16, full range for u8/u16).
    #[arg(long, value_parser = parse_range, allow_hyphen_values = true)]
    pub range: Option<(f64, f64)>,
    /// Output element type.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DtypeArg,
    /// Keep channels as stored, force RGB, or convert to gray (BT.601).
    #[arg(long, value_enum, default_value = "keep")]
    pub channels: ChannelsArg,
    /// Ignore the EXIF orientation (like OpenCV IMREAD_UNCHANGED) or apply it.
    #[arg(long, value_enum, default_value = "ignore")]
    pub exif_orientation: OrientationArg,
    /// Refuse images with more pixels than this, before decoding.
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// Refuse input files larger than this many bytes, before reading them
    /// (default 1 GiB). A worker also refuses files its --memory-budget
    /// cannot hold.
    #[arg(long, default_value_t = DEFAULT_MAX_INPUT_BYTES)]
    pub max_input_bytes: u64,
    /// Accept truncated JPEGs (missing part filled) with a warning.
    #[arg(long)]
    pub allow_truncated: bool,
    /// Coordination only: workers do not read or decode, every file is
    /// reported as skipped. For measuring the master's own throughput.
    #[arg(long)]
    pub dry_run: bool,
    /// With --scope dataset: one min/max per channel instead of one overall.
    #[arg(long)]
    pub per_channel: bool,
    /// Z-score per channel after the min-max stage, with the dataset's mean
    /// and std (a statistics phase) or the given --mean/--std. Float dtypes only.
    #[arg(long)]
    pub standardize: bool,
    /// Per-channel means for --standardize (implies it), e.g. 0.485,0.456,0.406.
    #[arg(long, value_parser = parse_list, allow_hyphen_values = true, requires = "std")]
    pub mean: Option<Floats>,
    /// Per-channel standard deviations for --standardize, e.g. 0.229,0.224,0.225.
    #[arg(long, value_parser = parse_list, requires = "mean")]
    pub std: Option<Floats>,
    /// Geometry and output layout (`--resize`, `--format`, ...).
    #[command(flatten)]
    pub layout: LayoutArgs,
}

/// Geometry and output-format flags (part of the engine options).
#[derive(Debug, Clone, Args)]
pub struct LayoutArgs {
    /// Resize every image to exactly WxH (the aspect ratio may change).
    #[arg(long, value_name = "WxH", value_parser = parse_size, conflicts_with_all = ["resize_shorter", "fit"])]
    pub resize: Option<(u32, u32)>,
    /// Resize so the shorter side is N, keeping the aspect ratio
    /// (torchvision Resize(N)); with --center-crop for a fixed size.
    #[arg(long, value_name = "N", conflicts_with = "fit",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub resize_shorter: Option<u32>,
    /// Resize to the largest size that fits inside WxH, keeping the aspect
    /// ratio (no padding: sizes vary).
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    pub fit: Option<(u32, u32)>,
    /// Cut the central WxH region (after any resize); smaller images fail.
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    pub center_crop: Option<(u32, u32)>,
    /// Resampling filter of the resize.
    #[arg(long, value_enum, default_value = "bilinear")]
    pub filter: FilterArg,
    /// Output layout: a .npy per image, webdataset tar shards, or one stacked
    /// N×H×W×C array (needs a fixed shape).
    #[arg(long, value_enum, default_value = "npy")]
    pub format: FormatArg,
    /// Samples (ok images) per webdataset shard.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SHARD_SIZE)]
    pub shard_size: u64,
}

/// `--filter`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FilterArg {
    /// Bilinear (triangle), antialiased when shrinking.
    Bilinear,
    /// Lanczos3.
    Lanczos3,
}

/// `--format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// One .npy per image (the default tree).
    Npy,
    /// Tar shards of `<key>.npy` + `<key>.json`.
    Webdataset,
    /// images.npy (N×H×W×C), labels.npy, valid.npy, classes.json.
    Stack,
}

impl LayoutArgs {
    /// The geometry these flags ask for.
    pub fn geometry(&self) -> Geometry {
        let resize = match (self.resize, self.resize_shorter, self.fit) {
            (Some((width, height)), _, _) => Some(Resize::Exact { width, height }),
            (None, Some(size), _) => Some(Resize::Shorter { size }),
            (None, None, Some((width, height))) => Some(Resize::Fit { width, height }),
            (None, None, None) => None,
        };
        Geometry {
            resize,
            center_crop: self.center_crop,
            filter: match self.filter {
                FilterArg::Bilinear => Filter::Bilinear,
                FilterArg::Lanczos3 => Filter::Lanczos3,
            },
        }
    }

    /// The output format these flags ask for.
    pub fn format(&self) -> OutputFormat {
        match self.format {
            FormatArg::Npy => OutputFormat::Npy,
            FormatArg::Webdataset => OutputFormat::Webdataset {
                shard_size: self.shard_size,
            },
            FormatArg::Stack => OutputFormat::Stack,
        }
    }
}

/// `--scope`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScopeArg {
    /// One min/max over all pixels and channels.
    Image,
    /// One min/max per channel.
    Channel,
    /// One min/max over the whole dataset (two phases).
    Dataset,
    /// 0..255 / 0..65535 as the full range (torchvision ToTensor).
    Full,
}

/// `--dtype`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DtypeArg {
    /// float32.
    F32,
    /// float16.
    F16,
    /// uint8.
    U8,
    /// uint16.
    U16,
}

/// `--channels`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ChannelsArg {
    /// As stored.
    Keep,
    /// Three channels.
    Rgb,
    /// One channel.
    Gray,
}

/// `--exif-orientation`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OrientationArg {
    /// Pixels as stored.
    Ignore,
    /// Apply the EXIF rotation.
    Apply,
}

impl EngineArgs {
    /// Validated engine options.
    pub fn to_options(&self) -> Result<EngineOptions, OptionsError> {
        let dtype = match self.dtype {
            DtypeArg::F32 => Dtype::F32,
            DtypeArg::F16 => Dtype::F16,
            DtypeArg::U8 => Dtype::U8,
            DtypeArg::U16 => Dtype::U16,
        };
        let mut opts = EngineOptions {
            scope: self.scope_option(),
            range: self.range.unwrap_or(dtype.default_range()),
            dtype,
            channels: match self.channels {
                ChannelsArg::Keep => ChannelMode::Keep,
                ChannelsArg::Rgb => ChannelMode::Rgb,
                ChannelsArg::Gray => ChannelMode::Gray,
            },
            orientation: match self.exif_orientation {
                OrientationArg::Ignore => Orientation::Ignore,
                OrientationArg::Apply => Orientation::Apply,
            },
            max_pixels: self.max_pixels,
            max_input_bytes: self.max_input_bytes,
            allow_truncated: self.allow_truncated,
            dry_run: self.dry_run,
            geometry: self.layout.geometry(),
            format: self.layout.format(),
            ..EngineOptions::default()
        };
        self.dataset_options(&mut opts);
        opts.validate()?;
        Ok(opts)
    }

    /// `--scope`, whose default depends on `--standardize`.
    fn scope_option(&self) -> Scope {
        match self.scope {
            Some(ScopeArg::Image) => Scope::Image,
            Some(ScopeArg::Channel) => Scope::Channel,
            Some(ScopeArg::Dataset) => Scope::Dataset,
            Some(ScopeArg::Full) => Scope::Full,
            None if self.standardizes() => Scope::Full,
            None => Scope::Image,
        }
    }

    fn standardizes(&self) -> bool {
        self.standardize || self.mean.is_some()
    }

    /// `--per-channel`, `--standardize`, `--mean`, `--std`.
    fn dataset_options(&self, opts: &mut EngineOptions) {
        opts.per_channel = self.per_channel;
        if self.standardizes() {
            opts.standardize = Some(Standardize {
                mean: self.mean.clone().map(|f| f.0).unwrap_or_default(),
                std: self.std.clone().map(|f| f.0).unwrap_or_default(),
            });
        }
    }
}

/// A comma-separated list of numbers (`--mean`, `--std`), one flag value.
#[derive(Debug, Clone, PartialEq)]
pub struct Floats(pub Vec<f64>);

/// Parses `V[,V...]` (at most 4 numbers).
pub fn parse_list(s: &str) -> Result<Floats, String> {
    let v = s
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .map_err(|e| format!("{v:?} is not a number: {e}"))
        })
        .collect::<Result<Vec<f64>, String>>()?;
    if v.is_empty() || v.len() > 4 {
        return Err(format!(
            "expected 1 to 4 comma-separated numbers, got {s:?}"
        ));
    }
    Ok(Floats(v))
}

/// Parses `A,B`.
pub fn parse_range(s: &str) -> Result<(f64, f64), String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| format!("expected A,B (e.g. 0,1 or -1,1), got {s:?}"))?;
    let p = |v: &str| {
        v.trim()
            .parse::<f64>()
            .map_err(|e| format!("{v:?} is not a number: {e}"))
    };
    let (a, b) = (p(a)?, p(b)?);
    if !a.is_finite() || !b.is_finite() {
        return Err("range bounds must be finite".into());
    }
    if a == b {
        return Err("range bounds must differ".into());
    }
    Ok((a, b))
}

/// Parses `WxH`.
pub fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("expected WxH (e.g. 512x512), got {s:?}"))?;
    let p = |v: &str| {
        v.trim()
            .parse::<u32>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{v:?} is not a positive integer"))
    };
    Ok((p(w)?, p(h)?))
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
