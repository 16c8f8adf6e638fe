//! Flags shared by several commands and the dashboard, with their
//! conversion into domain options: engine options ([`EngineArgs::to_options`]),
//! scheduling, autoscaling and dashboard flags, and the value types and
//! parsers the tools' own arguments (`imgnorm bench`) use. The subcommands
//! themselves (`cli`) flatten these; nothing below this layer sees clap.
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use imgnorm_core::options::{
    ChannelMode, DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_PIXELS, DEFAULT_SHARD_SIZE, Dtype,
    EngineOptions, Filter, Geometry, OptionsError, Orientation, OutputFormat, Resize, Scope,
    Standardize,
};

/// `--transfer`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TransferArg {
    /// Shared filesystem.
    Shared,
    /// Through the master.
    Stream,
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

/// What to do with an output folder that already holds something (every
/// command that runs a job). See README, "Rerunning into an output".
#[derive(Debug, Clone, Copy, Args)]
pub struct RerunArgs {
    /// Delete everything in the output folder first and start afresh:
    /// needed when it holds a run made with other options or another
    /// --format, files imgnorm did not write, or a run that was killed.
    #[arg(long)]
    pub overwrite: bool,
    /// Process only the failed rows of the output's manifest; every other
    /// row is kept and files new to the input are not added.
    #[arg(long, conflicts_with = "overwrite")]
    pub retry_failed: bool,
    /// Delete the outputs of files that left the input (without it they
    /// stay, and a warning says how many).
    #[arg(long)]
    pub prune: bool,
}

impl RerunArgs {
    /// The flags as the engine and the master take them.
    pub fn flags(&self) -> imgnorm_core::rerun::RerunFlags {
        imgnorm_core::rerun::RerunFlags {
            overwrite: self.overwrite,
            retry_failed: self.retry_failed,
            prune: self.prune,
        }
    }
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
    /// Reuse a previous run's normalization (its stats.json "normalization":
    /// scope, per-channel, range, dataset min/max, mean/std) and class list,
    /// e.g. the training split's for validation and test. FILE is a
    /// stats.json or the output folder holding it.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["scope", "range", "per_channel", "standardize", "mean", "std"])]
    pub stats_from: Option<PathBuf>,
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
    /// Axis order of every array (every format; the stack is N×C×H×W with
    /// chw): H×W×C as numpy/OpenCV/PIL, or C×H×W as PyTorch expects.
    #[arg(long, value_enum, default_value = "hwc")]
    pub layout: LayoutArg,
    /// Samples (ok images) per webdataset shard.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SHARD_SIZE)]
    pub shard_size: u64,
}

/// `--layout`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LayoutArg {
    /// Height × width × channels.
    Hwc,
    /// Channels × height × width.
    Chw,
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
            layout: match self.layout.layout {
                LayoutArg::Hwc => imgnorm_core::options::ArrayLayout::Hwc,
                LayoutArg::Chw => imgnorm_core::options::ArrayLayout::Chw,
            },
            ..EngineOptions::default()
        };
        self.dataset_options(&mut opts);
        if let Some(path) = &self.stats_from {
            stats_from(path, &mut opts)?;
        }
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

/// `--stats-from`: sets `opts`' normalization and class list to those a
/// previous run recorded in its `stats.json` (and `classes.json` beside it,
/// when it has one).
fn stats_from(path: &Path, opts: &mut EngineOptions) -> Result<(), OptionsError> {
    let file = if path.is_dir() {
        path.join("stats.json")
    } else {
        path.to_path_buf()
    };
    let fail = |why: String| OptionsError::StatsFrom {
        path: file.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(&file).map_err(|e| fail(e.to_string()))?;
    let stats: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| fail(format!("not JSON: {e}")))?;
    let prev: EngineOptions = serde_json::from_value(stats["options"].clone())
        .map_err(|e| fail(format!("no usable \"options\": {e}")))?;
    if (prev.dtype, prev.channels) != (opts.dtype, opts.channels) {
        return Err(fail(format!(
            "that run wrote --dtype {} with --channels {:?}; give the same here (this run: --dtype {}, --channels {:?})",
            prev.dtype.name(),
            prev.channels,
            opts.dtype.name(),
            opts.channels
        )));
    }
    let n = &stats["normalization"];
    let numbers = |key: &str| -> Vec<f64> {
        n[key]
            .as_array()
            .map(|v| v.iter().filter_map(serde_json::Value::as_f64).collect())
            .unwrap_or_default()
    };
    opts.scope = prev.scope;
    opts.range = prev.range;
    opts.per_channel = prev.per_channel;
    if prev.scope == Scope::Dataset {
        opts.dataset_min = numbers("min").iter().map(|v| *v as u32).collect();
        opts.dataset_max = numbers("max").iter().map(|v| *v as u32).collect();
        if opts.dataset_min.is_empty() {
            return Err(fail("its \"normalization\" has no dataset min/max".into()));
        }
    }
    if prev.standardize.is_some() {
        let (mean, std) = (numbers("mean"), numbers("std"));
        if mean.is_empty() || mean.len() != std.len() {
            return Err(fail("its \"normalization\" has no mean/std".into()));
        }
        // A channel with no spread was applied with std 1 (docs/FORMAT.md).
        let std = std
            .into_iter()
            .map(|s| if s > 0.0 { s } else { 1.0 })
            .collect();
        opts.standardize = Some(Standardize { mean, std });
    } else {
        opts.standardize = None;
    }
    let listed = file.with_file_name("classes.json");
    let classes: Option<Vec<String>> = match std::fs::read_to_string(&listed) {
        Ok(t) => {
            Some(serde_json::from_str(&t).map_err(|e| fail(format!("{}: {e}", listed.display())))?)
        }
        Err(_) => stats["dataset"]["classes"]
            .as_object()
            .map(|m| m.keys().cloned().collect()),
    };
    opts.classes = classes;
    Ok(())
}
