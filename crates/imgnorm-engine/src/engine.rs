//! The per-image engine every mode shares: sniff the content, decode with a
//! pixel limit, convert channels, min-max scale into a reused `.npy` buffer,
//! checksum, and write atomically. One `Engine` per thread; it never panics on
//! bad input: every problem becomes a manifest [`Record`] with a reason.
use std::collections::HashSet;
use std::fs::File;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::Arc;

use image::{ColorType, DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use imgnorm_core::dataset::{DatasetParams, RawStats, check_channels, raw_stats, transform};
use imgnorm_core::normalize::{
    Extremes, Kernel, Pixels, extremes, luma_u8, luma_u16, npy_header, output_value, round_to,
};
use imgnorm_core::options::{
    ArrayLayout, ChannelMode, EngineOptions, GeometryError, Orientation, Scope,
};
use imgnorm_core::record::{Record, Status};
use imgnorm_core::sample::SampleType;
use imgnorm_core::stats::{ImageStats, StatsScratch, image_stats_by, scale_domains};

use crate::budget::{MemoryBudget, Permit};
use crate::decode::Sniffed;
use crate::tiles::{Array, Scratch, SinkError, TileSink};

pub use crate::fsio::{unique_tmp_suffix, write_atomic};

/// Extensions that claim an image: a file with one of these whose content is
/// not a supported image is `failed`, not `skipped`.
const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "jpe", "jfif", "png", "bmp", "dib", "tif", "tiff", "webp", "gif", "pbm", "pgm",
    "ppm", "pnm", "pfm", "pam", "avif", "jp2", "j2k", "jpf", "jpx",
];

/// Time spent in each stage, summed over the images an engine processed.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct StageTimes {
    /// Reading input bytes.
    pub read: Duration,
    /// Sniffing and decoding.
    pub decode: Duration,
    /// Channel conversion, extremes and scaling.
    pub scale: Duration,
    /// Checksum and writing the output file.
    pub write: Duration,
}

impl StageTimes {
    /// Adds another set of times.
    pub fn add(&mut self, o: &StageTimes) {
        self.read += o.read;
        self.decode += o.decode;
        self.scale += o.scale;
        self.write += o.write;
    }
}

/// A decoded image's samples, held in reused buffers.
struct Decoded {
    width: u32,
    height: u32,
    channels: usize,
    sample: SampleType,
}

/// What an image's header says about the memory it will take.
#[derive(Debug, Clone, Copy)]
pub struct Footprint {
    /// Container format (decoders differ in the buffers they keep).
    pub format: ImageFormat,
    /// Width as decoded.
    pub width: u32,
    /// Height as decoded.
    pub height: u32,
    /// Channels as decoded.
    pub channels: usize,
    /// The samples' type.
    pub sample: SampleType,
    /// EXIF orientation will be applied (two more copies of the samples).
    pub rotates: bool,
    /// Bytes of the encoded input, already in memory.
    pub input: u64,
    /// Bytes the decoder allocates beside the samples (a TIFF's transposed
    /// copy for orientations 5-8, packed 12-bit rows, palette indices).
    pub scratch: u64,
}

impl Footprint {
    /// Upper estimate, in bytes, of the memory the engine needs for this
    /// image with options `o`: the input, the decoded samples and what the
    /// decoder keeps beside them (JPEG: 16-bit coefficients of every
    /// sample; TIFF, GIF, WebP: a full second image), the orientation
    /// copies, the resize buffers, the channel conversion, the output
    /// array and, for 32-bit samples, the statistics' f64 copy of the
    /// values. Saturates instead of overflowing.
    pub fn estimate(&self, o: &EngineOptions) -> u64 {
        let (w, h, c) = (
            u64::from(self.width),
            u64::from(self.height),
            self.channels as u64,
        );
        let bps = self.sample.size() as u64;
        let pixels = w.saturating_mul(h);
        let samples = pixels.saturating_mul(c).saturating_mul(bps);
        let decoder = match self.format {
            ImageFormat::Png | ImageFormat::Bmp | ImageFormat::Pnm => 0,
            ImageFormat::Jpeg => pixels.saturating_mul(c).saturating_mul(2),
            _ => samples.max(pixels.saturating_mul(4)),
        };
        let rotate = if self.rotates { 2 * samples } else { 0 };
        let plan = o.geometry.plan(self.width, self.height).ok();
        let (rw, rh) = plan
            .and_then(|p| p.resize_to)
            .map_or((w, h), |(a, b)| (u64::from(a), u64::from(b)));
        let resize = if plan.is_some_and(|p| p.resize_to.is_some()) {
            // The destination plus the horizontal pass's intermediate image.
            let dst = rw.saturating_mul(rh).saturating_mul(c * bps);
            dst.saturating_add(rw.saturating_mul(h).saturating_mul(c * bps * 2))
        } else {
            0
        };
        let (fw, fh) = plan
            .and_then(|p| p.crop)
            .map_or((rw, rh), |(_, _, a, b)| (u64::from(a), u64::from(b)));
        let target = match o.channels {
            ChannelMode::Keep => c,
            ChannelMode::Rgb => 3,
            ChannelMode::Gray => 1,
        };
        let shaped = fw.saturating_mul(fh);
        let convert = if target == c {
            0
        } else {
            // The converted samples, and for 8-bit a temporary copy.
            // Counted for every type (a 32-bit conversion needs none).
            shaped.saturating_mul(target).saturating_mul(bps + 1)
        };
        let out = shaped
            .saturating_mul(target)
            .saturating_mul(o.dtype.size() as u64)
            .saturating_add(256);
        // 32-bit samples: the statistics keep every value as an f64 and
        // sort them (`StatsScratch`), where narrower ones count a table.
        let stats = if self.sample.table_offset().is_none() {
            shaped.saturating_mul(target).saturating_mul(8)
        } else {
            0
        };
        [
            self.input,
            samples,
            decoder,
            rotate,
            resize,
            convert,
            out,
            stats,
            self.scratch,
        ]
        .into_iter()
        .fold(0u64, u64::saturating_add)
    }
}

/// Why an image could not be processed (becomes the manifest `reason`).
#[derive(Debug, thiserror::Error)]
enum Problem {
    #[error("empty file (0 bytes)")]
    Empty,
    #[error("content is not a supported image although the name ends in .{0}")]
    NotImage(String),
    #[error("unsupported image format ({0}); supported: {decoded}", decoded = crate::decode::DECODED)]
    Unsupported(&'static str),
    #[error("internal error: the decoder panicked on this image")]
    Panicked,
    #[error("truncated JPEG: no end-of-image marker after the last scan")]
    TruncatedJpeg,
    #[error(
        "image is {width}x{height} = {pixels} pixels, over the limit of {limit} pixels (--max-pixels)"
    )]
    TooLarge {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    #[error("image has zero width or height")]
    ZeroSize,
    #[error(
        "image is {width}x{height} with {channels} channel(s) of {bits} bits: it needs about {needed_mib} MiB to decode and normalize, more than this worker's memory budget leaves for images ({capacity_mib} MiB of --memory-budget {total_mib} MiB)"
    )]
    OverBudget {
        width: u32,
        height: u32,
        channels: usize,
        bits: u32,
        needed_mib: u64,
        capacity_mib: u64,
        total_mib: u64,
    },
    #[error("{}", input_too_large(*size, *limit))]
    InputTooLarge { size: u64, limit: u64 },
    #[error(
        "input file is {size} bytes ({size_mib} MiB): more than this worker's memory budget leaves for images ({capacity_mib} MiB of --memory-budget {total_mib} MiB)"
    )]
    InputOverBudget {
        size: u64,
        size_mib: u64,
        capacity_mib: u64,
        total_mib: u64,
    },
    #[error("input file changed size while it was read ({size} bytes when admitted)")]
    InputGrew { size: u64 },
    #[error("unsupported sample type {0:?} (only 8- and 16-bit integer samples)")]
    SampleType(ColorType),
    #[error(
        "{ty} sample {at} is {value}: min-max scaling is undefined for NaN and infinite samples (OpenCV gives NaN or zeros, depending on where they are), so the image is refused"
    )]
    NonFinite {
        ty: &'static str,
        at: usize,
        value: f64,
    },
    #[error(
        "--channels gray on {channels}-channel {ty} samples: luma is computed for uint8, uint16 and float32 samples only (OpenCV's cvtColor has no such conversion)"
    )]
    GrayOf { ty: &'static str, channels: usize },
    #[error(
        "--resize/--fit/--resize-shorter on {ty} samples with {channels} channel(s): resampling takes uint8, uint16 and float32 samples (1-4 channels)"
    )]
    ResizeOf { ty: &'static str, channels: usize },
    #[error("decode error: {0}")]
    Decode(#[from] image::ImageError),
    #[error("decode error: {0}")]
    Jpeg(#[from] crate::jpeg::JpegError),
    #[error("cannot read input: {0}")]
    Read(std::io::Error),
    #[error("{0}")]
    Geometry(#[from] GeometryError),
    #[error("resize failed: {0}")]
    Resize(#[from] fast_image_resize::ResizeError),
    #[error("resize buffer: {0}")]
    ResizeBuffer(#[from] fast_image_resize::ImageBufferError),
    #[error("shape {got} differs from stack shape {want}")]
    StackShape { got: String, want: String },
    #[error("the output's name (the input's name plus .npy) cannot be stored: {0}")]
    OutputName(imgnorm_core::paths::PathError),
    /// `path` is relative to the output folder (or its staging folder):
    /// manifests hold no machine-specific paths.
    #[error("cannot write output {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

impl From<SinkError> for Problem {
    fn from(e: SinkError) -> Problem {
        Problem::Write {
            path: e.path,
            source: e.source,
        }
    }
}

/// Turns input files into normalized arrays. Holds the buffers it reuses from
/// one image to the next, so the hot path allocates nothing per image.
pub struct Engine {
    opts: EngineOptions,
    kernel: Kernel,
    input: Vec<u8>,
    /// Decoded samples, native-endian, of any [`SampleType`] (`u32` words
    /// keep every type aligned).
    samples: Vec<u32>,
    converted: Vec<u32>,
    out: Vec<u8>,
    made_dirs: HashSet<PathBuf>,
    /// The tile an output file is written from (see [`TileSink`]).
    tile: Vec<u8>,
    /// Set while an image goes to a per-image file: the tree root it goes
    /// under; `scale` takes it and writes the file as it scales.
    direct: Option<PathBuf>,
    /// Time the last image spent in `write` calls inside `scale`.
    fused_write: Duration,
    times: StageTimes,
    tmp_suffix: String,
    stats_scratch: StatsScratch,
    /// Output statistics of the last image, when it came out ok.
    stats: Option<ImageStats>,
    /// Resampler and its output buffer (`--resize`, `--fit`, ...).
    resizer: fast_image_resize::Resizer,
    resized: Vec<u32>,
    /// The layout writes each image as a slice of one preallocated file
    /// (`--format stack`), not as a file of its own.
    slices: bool,
    /// `--format stack`: the open stack file and where its data starts.
    stack: Option<crate::formats::StackWriter>,
    /// Whole-dataset normalization: the parameters of the writing phase and
    /// the last statistics-phase result (see [`Engine::set_params`]).
    dataset: DatasetState,
    /// The worker's memory budget, when it has one, and the share the
    /// image in hand holds (see [`crate::budget`]).
    budget: Option<Arc<MemoryBudget>>,
    permit: Option<Permit>,
}

/// The engine's part of a two-phase job.
#[derive(Default)]
struct DatasetState {
    params: Option<DatasetParams>,
    raw: Option<RawStats>,
}

/// Where an image comes from ([`Engine::process`]).
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// `root/rel`, admitted against the memory budget from its size, then
    /// read by the engine.
    File {
        /// The input folder.
        root: &'a Path,
        /// The file, relative to `root` (the manifest's path).
        rel: &'a str,
    },
    /// Bytes already in memory (stream mode, object stores), admitted by the
    /// caller ([`Engine::admit_input`]).
    Bytes {
        /// The manifest's path of the image.
        rel: &'a str,
        /// The file's bytes.
        data: &'a [u8],
    },
}

/// Where an image's result goes ([`Engine::process`]).
#[derive(Debug, Clone, Copy)]
pub enum Sink<'a> {
    /// The job's output folder, as its format says: `rel.npy` in the tree
    /// (`npy`), in the staging tree (`webdataset`), or slice `index` of the
    /// preallocated stack (`stack`); written atomically.
    Output {
        /// The job's output folder.
        root: &'a Path,
        /// The file's number in the job (its stack slice).
        index: u64,
    },
    /// Memory: the `.npy` bytes come back in [`Processed::npy`].
    Memory,
    /// Nowhere: the statistics phase of a two-phase job measures the image
    /// (see [`Engine::take_raw`]).
    Measure,
}

/// The result of processing one image ([`Engine::process`]).
pub struct Processed<'a> {
    /// The manifest row.
    pub record: Record,
    /// The `.npy` file's bytes when the sink is [`Sink::Memory`] and the
    /// status is `ok`.
    pub npy: Option<&'a [u8]>,
}

impl Engine {
    /// An engine for `opts` (already validated).
    pub fn new(opts: EngineOptions) -> Engine {
        let slices = !crate::formats::layout(&opts.format).per_image_files();
        Engine {
            slices,
            opts,
            kernel: Kernel::new(),
            input: Vec::new(),
            samples: Vec::new(),
            converted: Vec::new(),
            out: Vec::new(),
            made_dirs: HashSet::new(),
            tile: Vec::new(),
            direct: None,
            fused_write: Duration::ZERO,
            times: StageTimes::default(),
            tmp_suffix: unique_tmp_suffix(),
            stats_scratch: StatsScratch::default(),
            stats: None,
            resizer: fast_image_resize::Resizer::new(),
            resized: Vec::new(),
            stack: None,
            dataset: DatasetState::default(),
            budget: None,
            permit: None,
        }
    }

    /// Admits every image against `budget` from now on: an image whose
    /// estimated footprint exceeds the budget's capacity fails, the others
    /// wait for their share (see [`crate::budget`]).
    pub fn set_budget(&mut self, budget: Arc<MemoryBudget>) {
        self.budget = Some(budget);
    }

    /// Ends the current image's hold on the memory budget: buffers above
    /// [`crate::budget::RETAIN_PER_THREAD`] are freed, then the share is
    /// given back. Called before each image and by the worker after each.
    pub fn release(&mut self) {
        if self.permit.is_none() {
            return;
        }
        let kept = self.input.capacity()
            + 4 * (self.samples.capacity() + self.converted.capacity() + self.resized.capacity())
            + self.out.capacity();
        if kept as u64 > crate::budget::RETAIN_PER_THREAD {
            self.input = Vec::new();
            self.samples = Vec::new();
            self.converted = Vec::new();
            self.resized = Vec::new();
            self.out = Vec::new();
            self.resizer = fast_image_resize::Resizer::new();
        }
        self.permit = None;
    }

    /// Moves `bytes` of the current image's share of the budget into a
    /// permit of its own, for a copy of the output that outlives this
    /// image's processing (an upload in flight). `None` without a budget.
    pub fn split_permit(&mut self, bytes: u64) -> Option<Permit> {
        self.permit.as_mut().map(|p| p.split(bytes))
    }

    /// The options this engine applies.
    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Stage times accumulated so far.
    pub fn times(&self) -> StageTimes {
        self.times
    }

    /// Output statistics of the image processed last, when its status is
    /// `ok` (taken: a second call returns `None`).
    pub fn take_stats(&mut self) -> Option<ImageStats> {
        self.stats.take()
    }

    /// The one way an image goes through the engine: from `source` (a file
    /// the engine reads, or bytes in memory) to `sink` (the job's output
    /// folder as its format says, memory, or nowhere: the statistics phase).
    /// Returns the manifest row, and for [`Sink::Memory`] the `.npy` bytes
    /// when the row is `ok` (borrowed from the engine's buffer, for the
    /// caller to send or upload). Never panics on bad input.
    ///
    /// With a memory budget, the image gives its share back before this
    /// returns, except when its output comes back in memory, or when the
    /// caller handed in the bytes and they were only measured: then the
    /// share is kept until [`Engine::release`] or the next image.
    pub fn process(&mut self, source: Source<'_>, sink: Sink<'_>) -> Processed<'_> {
        match sink {
            Sink::Measure => self.dataset.raw = None,
            Sink::Output { .. } | Sink::Memory => self.stats = None,
        }
        let record = match source {
            Source::Bytes { rel, data } => self.process_in(rel, data, sink),
            Source::File { root, rel } => {
                let t0 = Instant::now();
                let mut input = std::mem::take(&mut self.input);
                let read = self.read_admitted(&root.join(rel), &mut input);
                self.times.read += t0.elapsed();
                let record = match read {
                    Err(p) => Record::bare(rel, Status::Failed, Some(p.to_string())),
                    Ok(()) => self.process_in(rel, &input, sink),
                };
                self.input = input;
                record
            }
        };
        let keep = match sink {
            Sink::Memory => true,
            Sink::Measure => matches!(source, Source::Bytes { .. }),
            Sink::Output { .. } => false,
        };
        if !keep {
            self.release();
        }
        let npy =
            (matches!(sink, Sink::Memory) && record.status == Status::Ok).then_some(&self.out[..]);
        Processed { record, npy }
    }

    /// [`Engine::process`] once the bytes are in hand.
    fn process_in(&mut self, rel: &str, data: &[u8], sink: Sink<'_>) -> Record {
        match sink {
            Sink::Output { root, index } => self.process_to_file(rel, data, index, root),
            Sink::Memory => self.process_bytes_inner(rel, data),
            Sink::Measure => self.measure(rel, data),
        }
    }

    /// Processes `data` into the job's output: per-image files are written
    /// while they are scaled, tile by tile (see [`TileSink`]); a stack slice
    /// is written from the whole array afterwards.
    fn process_to_file(
        &mut self,
        rel: &str,
        data: &[u8],
        index: u64,
        output_root: &Path,
    ) -> Record {
        // Per-image files are written while scaled (H×W×C tiles); a C×H×W
        // array is reordered in memory first, then written whole.
        self.direct = (!self.slices && self.opts.layout == ArrayLayout::Hwc)
            .then(|| crate::formats::tree_root(output_root, &self.opts.format));
        let direct = self.direct.is_some();
        self.fused_write = Duration::ZERO;
        let mut record = self.process_bytes_inner(rel, data);
        // `scale` took the root when it wrote (or failed to write) the file.
        let fused = direct && self.direct.take().is_none();
        self.times.scale = self.times.scale.saturating_sub(self.fused_write);
        self.times.write += self.fused_write;
        if record.status == Status::Ok && !fused {
            let t = Instant::now();
            if let Err(p) = self.write_output(output_root, rel, index) {
                record = failed_from(rel, &record, p);
                self.stats = None;
            }
            self.times.write += t.elapsed();
        }
        record
    }

    /// Reads the local input `input_root/rel` into a new buffer (for outputs
    /// that go to an object store); the error is the manifest reason.
    /// The input is admitted against the memory budget before it is read
    /// (see [`Engine::admit_input`]); the image keeps that share.
    pub fn read_input(&mut self, input_root: &Path, rel: &str) -> Result<Vec<u8>, String> {
        let t0 = Instant::now();
        let mut buf = Vec::new();
        let r = self.read_admitted(&input_root.join(rel), &mut buf);
        self.times.read += t0.elapsed();
        r.map(|()| buf).map_err(|p| p.to_string())
    }

    /// Admits an input of `size` bytes before it is read: refused (the
    /// error is the manifest reason) when over `--max-input-bytes` or, on a
    /// worker, over what the memory budget leaves for images; otherwise
    /// the image takes `size` bytes of the budget (waiting for them), and
    /// its decode estimate later grows that share. Ends the previous
    /// image's hold first.
    pub fn admit_input(&mut self, size: u64) -> Result<(), String> {
        self.admit_input_inner(size).map_err(|p| p.to_string())
    }

    fn admit_input_inner(&mut self, size: u64) -> Result<(), Problem> {
        self.release();
        check_input_size(size, self.opts.max_input_bytes, self.budget.as_deref())?;
        if let Some(budget) = &self.budget {
            self.permit = budget.acquire_input(size);
        }
        Ok(())
    }

    /// Reads `path` into `buf` after admitting its size (from its
    /// metadata): an oversize file is never read, and one that grew since
    /// is refused rather than read past its admitted size.
    fn read_admitted(&mut self, path: &Path, buf: &mut Vec<u8>) -> Result<(), Problem> {
        buf.clear();
        let f = File::open(path).map_err(Problem::Read)?;
        let meta = f.metadata().map_err(Problem::Read)?;
        if meta.is_dir() {
            return Err(Problem::Read(std::io::Error::other("is a directory")));
        }
        let size = meta.len();
        self.admit_input_inner(size)?;
        buf.try_reserve_exact(usize::try_from(size).unwrap_or(usize::MAX))
            .map_err(|e| Problem::Read(std::io::Error::other(e)))?;
        f.take(size.saturating_add(1))
            .read_to_end(buf)
            .map_err(Problem::Read)?;
        if buf.len() as u64 > size {
            return Err(Problem::InputGrew { size });
        }
        Ok(())
    }

    fn process_bytes_inner(&mut self, rel: &str, data: &[u8]) -> Record {
        self.stats = None;
        let t = Instant::now();
        let (format, warning, d) = match self.decode_shaped(rel, data, t) {
            Ok(v) => v,
            Err(r) => return *r,
        };
        let record = self.scale(rel, format, warning, &d);
        self.times.scale += t.elapsed();
        record
    }

    /// Decodes `data` and applies the geometry: the array both phases work
    /// on. `Err` is the image's final row (skipped or failed). `t` starts the
    /// scale stage's timer once decoding is done (the geometry counts there).
    fn decode_shaped(
        &mut self,
        rel: &str,
        data: &[u8],
        t: Instant,
    ) -> Result<(ImageFormat, Option<String>, Decoded), Box<Record>> {
        // A decoder that panics (an assertion on a file it misjudges) costs
        // this image, not the run: the same row in every mode.
        let decoded =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.decode(rel, data)))
                .unwrap_or(Err(Problem::Panicked));
        self.times.decode += t.elapsed();
        let (format, warning, d) = match decoded {
            Ok(Some(v)) => v,
            Ok(None) => {
                return Err(Box::new(Record::bare(
                    rel,
                    Status::Skipped,
                    Some("not an image (content matches no image format)".into()),
                )));
            }
            Err(p) => {
                return Err(Box::new(Record::bare(
                    rel,
                    Status::Failed,
                    Some(p.to_string()),
                )));
            }
        };
        match self.apply_geometry(d) {
            Ok(d) => Ok((format, warning, d)),
            Err(p) => {
                let mut r = Record::bare(rel, Status::Failed, Some(p.to_string()));
                r.format = Some(format_name(format).to_string());
                Err(Box::new(r))
            }
        }
    }

    /// `--resize`/`--fit`/`--resize-shorter`, then `--center-crop`, on the
    /// decoded samples in `self.samples` (same channels and bit depth).
    fn apply_geometry(&mut self, d: Decoded) -> Result<Decoded, Problem> {
        use fast_image_resize::images::{Image, ImageRef};
        use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions};
        use imgnorm_core::options::Filter;
        let geometry = self.opts.geometry;
        if geometry.is_identity() {
            return Ok(d);
        }
        let plan = geometry.plan(d.width, d.height)?;
        let mut d = d;
        let bpp = d.channels * d.sample.size();
        if let Some((w, h)) = plan.resize_to {
            let pixels = u64::from(w) * u64::from(h);
            if pixels > self.opts.max_pixels {
                return Err(Problem::TooLarge {
                    width: w,
                    height: h,
                    pixels,
                    limit: self.opts.max_pixels,
                });
            }
            let pixel_type = match (d.channels, d.sample) {
                (1, SampleType::Uint8) => PixelType::U8,
                (2, SampleType::Uint8) => PixelType::U8x2,
                (3, SampleType::Uint8) => PixelType::U8x3,
                (4, SampleType::Uint8) => PixelType::U8x4,
                (1, SampleType::Uint16) => PixelType::U16,
                (2, SampleType::Uint16) => PixelType::U16x2,
                (3, SampleType::Uint16) => PixelType::U16x3,
                (4, SampleType::Uint16) => PixelType::U16x4,
                (1, SampleType::Float32) => PixelType::F32,
                (2, SampleType::Float32) => PixelType::F32x2,
                (3, SampleType::Float32) => PixelType::F32x3,
                (4, SampleType::Float32) => PixelType::F32x4,
                (channels, ty) => {
                    return Err(Problem::ResizeOf {
                        ty: ty.name(),
                        channels,
                    });
                }
            };
            let src_len = d.width as usize * d.height as usize * bpp;
            let dst_len = w as usize * h as usize * bpp;
            if self.resized.len() < dst_len.div_ceil(4) {
                self.resized.resize(dst_len.div_ceil(4), 0);
            }
            let src_bytes: &[u8] = bytemuck::cast_slice(&self.samples[..]);
            let src = ImageRef::new(d.width, d.height, &src_bytes[..src_len], pixel_type)?;
            let dst_bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut self.resized[..]);
            let mut dst = Image::from_slice_u8(w, h, &mut dst_bytes[..dst_len], pixel_type)?;
            let filter = match geometry.filter {
                Filter::Bilinear => FilterType::Bilinear,
                Filter::Lanczos3 => FilterType::Lanczos3,
            };
            let options = ResizeOptions::new()
                .resize_alg(ResizeAlg::Convolution(filter))
                .use_alpha(false);
            self.resizer.resize(&src, &mut dst, &options)?;
            std::mem::swap(&mut self.samples, &mut self.resized);
            d.width = w;
            d.height = h;
        }
        if let Some((left, top, w, h)) = plan.crop {
            // Rows move towards the start of the buffer: copy_within in order
            // never overwrites a row before it is read.
            let buf: &mut [u8] = bytemuck::cast_slice_mut(&mut self.samples[..]);
            let (row, src_row) = (w as usize * bpp, d.width as usize * bpp);
            for y in 0..h as usize {
                let from = (top as usize + y) * src_row + left as usize * bpp;
                buf.copy_within(from..from + row, y * row);
            }
            d.width = w;
            d.height = h;
        }
        Ok(d)
    }

    /// Sniffs and decodes into `self.samples`; `Ok(None)` means "not an image".
    fn decode(
        &mut self,
        rel: &str,
        data: &[u8],
    ) -> Result<Option<(ImageFormat, Option<String>, Decoded)>, Problem> {
        let ext = extension(rel);
        let claims_image = ext
            .as_deref()
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e));
        let format = match crate::decode::sniff(data) {
            Sniffed::Image(f) => f,
            Sniffed::Unknown => {
                return if data.is_empty() && claims_image {
                    Err(Problem::Empty)
                } else if claims_image {
                    Err(Problem::NotImage(ext.unwrap_or_default()))
                } else {
                    Ok(None)
                };
            }
            Sniffed::Unsupported(name) => return Err(Problem::Unsupported(name)),
        };
        let mut warning = None;
        if format == ImageFormat::Jpeg && !jpeg_complete(data) {
            if !self.opts.allow_truncated {
                return Err(Problem::TruncatedJpeg);
            }
            warning = Some(
                "truncated JPEG accepted (--allow-truncated): missing part filled grey, as libjpeg-turbo (OpenCV) does"
                    .into(),
            );
        }
        if format == ImageFormat::Jpeg {
            let d = self.decode_jpeg(data, &mut warning)?;
            return Ok(Some((format, warning, d)));
        }
        let mut limits = Limits::default();
        let max_alloc = self.decoder_room();
        limits.max_alloc = Some(max_alloc);
        // Decoders of types `ColorType` has no name for say so here.
        let mut layout: Option<(usize, SampleType)> = None;
        let mut scratch = 0;
        let mut decoder: Box<dyn ImageDecoder + '_> = match format {
            ImageFormat::Tiff => {
                let d = crate::decode::tiff::TiffDecoder::new(data, max_alloc)?;
                if d.multi_page() {
                    warning = Some("multi-page TIFF: only the first page was read".into());
                }
                layout = d.samples();
                scratch = d.scratch_bytes();
                Box::new(d)
            }
            ImageFormat::Pnm => {
                let d = crate::decode::pnm::PnmDecoder::new(data)?;
                layout = d.samples();
                Box::new(d)
            }
            ImageFormat::Bmp => Box::new(crate::decode::bmp::BmpDecoder::new(data)?),
            ImageFormat::Gif => Box::new(crate::decode::gif::GifDecoder::new(data)?),
            _ => {
                let mut reader = ImageReader::with_format(Cursor::new(data), format);
                reader.limits(limits);
                let d = reader.into_decoder()?;
                if format != ImageFormat::Png {
                    Box::new(d)
                } else {
                    match crate::decode::GrayNoAlpha::wrap(d, data) {
                        Ok(gray) => Box::new(gray),
                        Err(d) => Box::new(d),
                    }
                }
            }
        };
        let (width, height) = decoder.dimensions();
        self.check_size(width, height)?;
        let color = decoder.color_type();
        let (channels, sample) = match (layout, color) {
            (Some(l), _) => l,
            (None, ColorType::L8) => (1, SampleType::Uint8),
            (None, ColorType::La8) => (2, SampleType::Uint8),
            (None, ColorType::Rgb8) => (3, SampleType::Uint8),
            (None, ColorType::Rgba8) => (4, SampleType::Uint8),
            (None, ColorType::L16) => (1, SampleType::Uint16),
            (None, ColorType::La16) => (2, SampleType::Uint16),
            (None, ColorType::Rgb16) => (3, SampleType::Uint16),
            (None, ColorType::Rgba16) => (4, SampleType::Uint16),
            (None, other) => return Err(Problem::SampleType(other)),
        };
        let orientation = match self.opts.orientation {
            Orientation::Apply => Some(decoder.orientation()?),
            Orientation::Ignore => None,
        };
        let rotates = orientation.is_some_and(|o| o != image::metadata::Orientation::NoTransforms);
        self.admit(Footprint {
            format,
            width,
            height,
            channels,
            sample,
            rotates,
            input: data.len() as u64,
            scratch,
        })?;
        let decoded = match orientation {
            Some(o) if o != image::metadata::Orientation::NoTransforms => {
                let mut img = DynamicImage::from_decoder(decoder)?;
                img.apply_orientation(o);
                self.load_dynamic(&img);
                Decoded {
                    width: img.width(),
                    height: img.height(),
                    channels,
                    sample,
                }
            }
            _ => {
                let bytes = (width as usize)
                    .saturating_mul(height as usize)
                    .saturating_mul(channels * sample.size());
                let words = bytes.div_ceil(4);
                // The decoder overwrites all `bytes`; only grow, never re-zero.
                if self.samples.len() < words {
                    self.samples.resize(words, 0);
                }
                let buf: &mut [u8] = bytemuck::cast_slice_mut(&mut self.samples[..]);
                decoder.read_image(&mut buf[..bytes])?;
                if let Some(at) = Pixels::from_bytes(sample, &buf[..bytes]).non_finite() {
                    return Err(Problem::NonFinite {
                        ty: sample.name(),
                        at,
                        value: Pixels::from_bytes(sample, &buf[..bytes]).value(at),
                    });
                }
                Decoded {
                    width,
                    height,
                    channels,
                    sample,
                }
            }
        };
        Ok(Some((format, warning, decoded)))
    }

    /// The most one decoder allocation may take: room for the largest
    /// allowed image at 4 channels x 16 bit (or 4 JPEG components of 16-bit
    /// coefficients), plus slack; with a memory budget, never more than it.
    fn decoder_room(&self) -> u64 {
        let room = self
            .opts
            .max_pixels
            .saturating_mul(8)
            .saturating_add(1 << 26);
        self.budget
            .as_ref()
            .map_or(room, |b| room.min(b.capacity()))
    }

    /// Refuses an image by its header's size: over `--max-pixels`, or empty.
    fn check_size(&self, width: u32, height: u32) -> Result<(), Problem> {
        let pixels = u64::from(width) * u64::from(height);
        if pixels > self.opts.max_pixels {
            return Err(Problem::TooLarge {
                width,
                height,
                pixels,
                limit: self.opts.max_pixels,
            });
        }
        if pixels == 0 {
            return Err(Problem::ZeroSize);
        }
        Ok(())
    }

    /// JPEG through libjpeg-turbo's decoder ([`crate::jpeg`]): pixels
    /// identical to OpenCV's. The header is checked against the pixel limit
    /// and the memory budget before anything image-sized is allocated.
    /// libjpeg's warnings (corrupt data it skipped) become the row's warning.
    fn decode_jpeg(
        &mut self,
        data: &[u8],
        warning: &mut Option<String>,
    ) -> Result<Decoded, Problem> {
        let apply = self.opts.orientation == Orientation::Apply;
        let reader = crate::jpeg::Reader::new(data, apply, self.decoder_room())?;
        let h = reader.header();
        let (width, height, channels) = (h.width, h.height, h.channels());
        self.check_size(width, height)?;
        let orientation = h
            .exif
            .as_deref()
            .and_then(image::metadata::Orientation::from_exif_chunk)
            .filter(|o| *o != image::metadata::Orientation::NoTransforms);
        self.admit(Footprint {
            format: ImageFormat::Jpeg,
            width,
            height,
            channels,
            sample: SampleType::Uint8,
            rotates: orientation.is_some(),
            input: data.len() as u64,
            scratch: 0,
        })?;
        let bytes = h.output_len();
        // The decoder overwrites all `bytes`; only grow, never re-zero.
        if self.samples.len() < bytes.div_ceil(4) {
            self.samples.resize(bytes.div_ceil(4), 0);
        }
        let buf: &mut [u8] = bytemuck::cast_slice_mut(&mut self.samples[..]);
        let report = reader.decode_into(&mut buf[..bytes])?;
        if let (Some(first), None) = (report.first_warning, &warning) {
            *warning = Some(format!(
                "JPEG data is corrupt ({} warning(s), first: {first}); decoded as libjpeg-turbo (OpenCV) does",
                report.warnings
            ));
        }
        let Some(o) = orientation else {
            return Ok(Decoded {
                width,
                height,
                channels,
                sample: SampleType::Uint8,
            });
        };
        let pixels = buf[..bytes].to_vec();
        let mut img = match channels {
            1 => image::GrayImage::from_raw(width, height, pixels).map(DynamicImage::ImageLuma8),
            _ => image::RgbImage::from_raw(width, height, pixels).map(DynamicImage::ImageRgb8),
        }
        .ok_or(crate::jpeg::JpegError::Buffer {
            have: bytes,
            need: bytes,
        })?;
        img.apply_orientation(o);
        self.load_dynamic(&img);
        Ok(Decoded {
            width: img.width(),
            height: img.height(),
            channels,
            sample: SampleType::Uint8,
        })
    }

    /// Takes the image's share of the memory budget (waiting for it), or
    /// fails the image when it alone exceeds the budget. Without a budget,
    /// admits everything. An input admitted by [`Engine::admit_input`]
    /// keeps its share, which grows to the whole estimate (the estimate
    /// counts the input).
    fn admit(&mut self, f: Footprint) -> Result<(), Problem> {
        let Some(budget) = self.budget.clone() else {
            return Ok(());
        };
        let needed = f.estimate(&self.opts);
        let admitted = match self.permit.as_mut() {
            Some(p) if p.is_input() => budget.grow(p, needed),
            _ => {
                self.release();
                self.permit = budget.acquire(needed);
                self.permit.is_some()
            }
        };
        if admitted {
            Ok(())
        } else {
            Err(Problem::OverBudget {
                width: f.width,
                height: f.height,
                channels: f.channels,
                bits: f.sample.bits(),
                needed_mib: needed.div_ceil(1 << 20),
                capacity_mib: budget.capacity() >> 20,
                total_mib: budget.total() >> 20,
            })
        }
    }

    /// Copies a `DynamicImage`'s samples into `self.samples` (orientation path).
    fn load_dynamic(&mut self, img: &DynamicImage) {
        let bytes = img.as_bytes();
        self.samples.clear();
        self.samples.resize(bytes.len().div_ceil(4), 0);
        let buf: &mut [u8] = bytemuck::cast_slice_mut(&mut self.samples[..]);
        buf[..bytes.len()].copy_from_slice(bytes);
    }

    /// Channel conversion, extremes, scaling into `self.out`.
    fn scale(
        &mut self,
        rel: &str,
        format: ImageFormat,
        warning: Option<String>,
        d: &Decoded,
    ) -> Record {
        let failed = |p: Problem| {
            let mut r = Record::bare(rel, Status::Failed, Some(p.to_string()));
            r.format = Some(format_name(format).to_string());
            r
        };
        if let Err(e) = imgnorm_core::paths::output_name(rel) {
            return failed(Problem::OutputName(e));
        }
        let sink = match self.direct.take() {
            Some(root) => match self.open_output(&root, rel) {
                Ok(sink) => Some(sink),
                Err(p) => return failed(p),
            },
            None => None,
        };
        if self.mapped() {
            return self.scale_mapped(rel, format, warning, d, sink);
        }
        let n = d.width as usize * d.height as usize * d.channels;
        let (px, channels) =
            match convert(&self.samples, &mut self.converted, self.opts.channels, d, n) {
                Ok(v) => v,
                Err(p) => {
                    if let Some(sink) = sink {
                        sink.abandon();
                    }
                    return failed(p);
                }
            };
        if let Some(want) = self.opts.stack_shape().filter(|_| self.slices)
            && want != [d.height as usize, d.width as usize, channels]
        {
            let shape = |s: [usize; 3]| format!("{}x{}x{}", s[0], s[1], s[2]);
            let p = Problem::StackShape {
                got: shape([d.height as usize, d.width as usize, channels]),
                want: shape(want),
            };
            let mut r = Record::bare(rel, Status::Failed, Some(p.to_string()));
            r.format = Some(format_name(format).to_string());
            return r;
        }
        let scope = self.opts.scope;
        let ext = extremes(px, channels, scope);
        let layout = self.opts.layout;
        let header = npy_header(
            self.opts.dtype,
            &layout.shape(d.height as usize, d.width as usize, channels),
        );
        let (range, dtype) = (self.opts.range, self.opts.dtype);
        if let Some(sink) = sink {
            let ty = px.sample_type();
            let domains = scale_domains(channels, scope, &ext);
            self.kernel
                .prepare_scale(ty, channels, scope, &ext, range, dtype);
            self.stats_scratch.begin(ty, &domains);
            let written = sink.write(
                Scratch {
                    kernel: &self.kernel,
                    counts: &mut self.stats_scratch,
                    tile: &mut self.tile,
                },
                Array {
                    header: &header,
                    px,
                    channels,
                    size: dtype.size(),
                },
            );
            return match written {
                Ok((checksum, spent)) => {
                    self.fused_write = spent;
                    // Read from the table the tiles were written with
                    // (exactly the written value; no table: 32-bit samples).
                    let kernel = &self.kernel;
                    self.stats = Some(self.stats_scratch.finish(
                        |c, x| {
                            kernel.table_value(c, x).unwrap_or_else(|| {
                                let (lo, hi) = domains[c];
                                output_value(x, lo, hi, range, dtype)
                            })
                        },
                        range,
                    ));
                    ok_record(rel, format, d, channels, ext, warning, checksum)
                }
                Err(e) => failed(e.into()),
            };
        }
        let total = header.len() + px.len() * self.opts.dtype.size();
        // Resize without clearing: for same-sized images nothing is zeroed or
        // faulted in; every byte is overwritten below.
        self.out.resize(total, 0);
        let (head, body) = self.out.split_at_mut(header.len());
        head.copy_from_slice(&header);
        self.kernel.scale_to_slice(
            px,
            channels,
            scope,
            &ext,
            self.opts.range,
            self.opts.dtype,
            body,
        );
        layout.arrange(body, channels, self.opts.dtype.size());
        // As in the tiled path: read from the table `scale_to_slice` built.
        let domains = scale_domains(channels, scope, &ext);
        let kernel = &self.kernel;
        self.stats = Some(image_stats_by(
            px,
            &domains,
            |c, x| {
                kernel.table_value(c, x).unwrap_or_else(|| {
                    let (lo, hi) = domains[c];
                    output_value(x, lo, hi, range, dtype)
                })
            },
            range,
            &mut self.stats_scratch,
        ));
        ok_record(rel, format, d, channels, ext, warning, checksum(&self.out))
    }
}

/// Whole-dataset normalization (`--scope dataset|full`, `--standardize`):
/// the statistics phase, which decodes and reports raw statistics without
/// writing, and the writing phase's per-channel transform. Both decode the
/// image the same way as the min-max path.
impl Engine {
    /// Sets the dataset parameters the writing phase applies (from the
    /// statistics phase, or [`DatasetParams::from_options`]).
    pub fn set_params(&mut self, params: DatasetParams) {
        self.dataset.params = Some(params);
    }

    /// Raw statistics of the image the statistics phase handled last, when
    /// its status is `ok` (taken).
    pub fn take_raw(&mut self) -> Option<RawStats> {
        self.dataset.raw.take()
    }

    /// The statistics phase ([`Sink::Measure`]): decode, convert channels
    /// and measure (see [`Engine::take_raw`]); writes nothing. The row is
    /// `ok` (with shape, no output), `skipped` or `failed` with the same
    /// reason the writing phase would give.
    fn measure(&mut self, rel: &str, data: &[u8]) -> Record {
        let t = Instant::now();
        // The statistics describe the arrays the writing phase scales:
        // after the geometry, as in `process_bytes_inner`.
        let (format, warning, d) = match self.decode_shaped(rel, data, t) {
            Ok(v) => v,
            Err(r) => return *r,
        };
        if let Err(e) = imgnorm_core::paths::output_name(rel) {
            let mut r = Record::bare(
                rel,
                Status::Failed,
                Some(Problem::OutputName(e).to_string()),
            );
            r.format = Some(format_name(format).to_string());
            return r;
        }
        let t = Instant::now();
        let n = d.width as usize * d.height as usize * d.channels;
        let (px, channels) = match convert(
            &self.samples,
            &mut self.converted,
            self.opts.channels,
            &d,
            n,
        ) {
            Ok(v) => v,
            Err(p) => {
                let mut r = Record::bare(rel, Status::Failed, Some(p.to_string()));
                r.format = Some(format_name(format).to_string());
                return r;
            }
        };
        if let Err(e) = check_channels(&self.opts, channels) {
            return Record::bare(rel, Status::Failed, Some(e.to_string()));
        }
        let raw = raw_stats(px, channels);
        self.times.scale += t.elapsed();
        let mut r = Record::bare(rel, Status::Ok, None);
        r.format = Some(format_name(format).to_string());
        r.width = Some(d.width);
        r.height = Some(d.height);
        r.channels = Some(channels as u32);
        r.bit_depth = Some(raw.sample_type.bits());
        r.sample_type = Some(raw.sample_type);
        r.min = raw.channels.iter().map(|c| c.min).collect();
        r.max = raw.channels.iter().map(|c| c.max).collect();
        r.warning = warning.map(imgnorm_core::record::bounded_text);
        self.dataset.raw = Some(raw);
        r
    }

    /// True when outputs go through [`transform`] instead of the per-image
    /// min-max kernel.
    fn mapped(&self) -> bool {
        matches!(self.opts.scope, Scope::Dataset | Scope::Full) || self.opts.standardize.is_some()
    }

    /// The writing phase of a mapped job: one table per channel from
    /// [`imgnorm_core::dataset::ChannelMap::value`].
    fn scale_mapped(
        &mut self,
        rel: &str,
        format: ImageFormat,
        warning: Option<String>,
        d: &Decoded,
        sink: Option<TileSink>,
    ) -> Record {
        let n = d.width as usize * d.height as usize * d.channels;
        let (px, channels) =
            match convert(&self.samples, &mut self.converted, self.opts.channels, d, n) {
                Ok(v) => v,
                Err(p) => {
                    if let Some(sink) = sink {
                        sink.abandon();
                    }
                    let mut r = Record::bare(rel, Status::Failed, Some(p.to_string()));
                    r.format = Some(format_name(format).to_string());
                    return r;
                }
            };
        let ext = extremes(px, channels, Scope::Channel);
        let params = match &self.dataset.params {
            Some(p) => p.clone(),
            None => DatasetParams::from_options(&self.opts),
        };
        let maps = match transform(&self.opts, &params, &ext.min, &ext.max, px.sample_type()) {
            Ok(m) => m,
            Err(e) => {
                if let Some(sink) = sink {
                    sink.abandon();
                }
                return Record::bare(rel, Status::Failed, Some(e.to_string()));
            }
        };
        let dtype = self.opts.dtype;
        let domains: Vec<(f64, f64)> = ext
            .min
            .iter()
            .copied()
            .zip(ext.max.iter().copied())
            .collect();
        let layout = self.opts.layout;
        let header = npy_header(
            dtype,
            &layout.shape(d.height as usize, d.width as usize, channels),
        );
        let shown = if self.opts.per_channel || self.opts.scope == Scope::Channel {
            ext
        } else {
            extremes(px, channels, Scope::Image)
        };
        let range = params.output_range(&self.opts);
        let ty = px.sample_type();
        let checksum = if let Some(sink) = sink {
            self.kernel.prepare_map(ty, &domains, &maps, dtype);
            self.stats_scratch.begin(ty, &domains);
            let written = sink.write(
                Scratch {
                    kernel: &self.kernel,
                    counts: &mut self.stats_scratch,
                    tile: &mut self.tile,
                },
                Array {
                    header: &header,
                    px,
                    channels,
                    size: dtype.size(),
                },
            );
            match written {
                Ok((checksum, spent)) => {
                    self.fused_write = spent;
                    checksum
                }
                Err(e) => {
                    let mut r =
                        Record::bare(rel, Status::Failed, Some(Problem::from(e).to_string()));
                    r.format = Some(format_name(format).to_string());
                    return r;
                }
            }
        } else {
            let total = header.len() + px.len() * dtype.size();
            self.out.resize(total, 0);
            let (head, body) = self.out.split_at_mut(header.len());
            head.copy_from_slice(&header);
            self.kernel.map_to_slice(px, &domains, &maps, dtype, body);
            layout.arrange(body, channels, dtype.size());
            self.stats_scratch.begin(ty, &domains);
            self.stats_scratch.count(px);
            checksum(&self.out)
        };
        // Read from the table the array was written with (see `scale`).
        let kernel = &self.kernel;
        self.stats = Some(self.stats_scratch.finish(
            |c, x| {
                kernel
                    .table_value(c, x)
                    .unwrap_or_else(|| round_to(maps[c].value(x), dtype))
            },
            range,
        ));
        ok_record(rel, format, d, channels, shown, warning, checksum)
    }
}

/// The manifest checksum of a `.npy` file's bytes (header included).
fn checksum(npy: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(npy))
}

/// The row of an image written as `npy` with `checksum` (of the whole array
/// file, header included, see [`checksum`]), with the extremes it shows.
fn ok_record(
    rel: &str,
    format: ImageFormat,
    d: &Decoded,
    channels: usize,
    shown: Extremes,
    warning: Option<String>,
    checksum: String,
) -> Record {
    Record {
        path: rel.to_string(),
        status: Status::Ok,
        reason: None,
        format: Some(format_name(format).to_string()),
        output: Some(format!("{rel}.npy")),
        width: Some(d.width),
        height: Some(d.height),
        channels: Some(channels as u32),
        bit_depth: Some(d.sample.bits()),
        sample_type: Some(d.sample),
        constant: shown.constant(),
        min: shown.min,
        max: shown.max,
        checksum: Some(checksum),
        warning,
    }
}

/// The samples after `--channels`, borrowing the engine's buffers. Keeping
/// or repeating channels works for every sample type; luma (`gray` from
/// color) for `uint8`, `uint16` and `float32` samples (OpenCV's
/// `cvtColor` has no conversion for the others).
fn convert<'a>(
    samples: &'a [u32],
    conv: &'a mut Vec<u32>,
    mode: ChannelMode,
    d: &Decoded,
    n: usize,
) -> Result<(Pixels<'a>, usize), Problem> {
    let c = d.channels;
    let target = match mode {
        ChannelMode::Keep => c,
        ChannelMode::Rgb => 3,
        ChannelMode::Gray => 1,
    };
    if target == c {
        return Ok((samples_view(samples, n, d.sample), c));
    }
    let src = samples_view(samples, n, d.sample);
    match (mode, src) {
        (ChannelMode::Gray, Pixels::U8(s)) if c > 2 => {
            let mut tmp = Vec::new();
            luma_u8(s, c, &mut tmp);
            store(conv, &tmp);
        }
        (ChannelMode::Gray, Pixels::U16(s)) if c > 2 => {
            let mut tmp = Vec::new();
            luma_u16(s, c, &mut tmp);
            store(conv, bytemuck::cast_slice(&tmp));
        }
        (ChannelMode::Gray, Pixels::F32(s)) if c > 2 => {
            // OpenCV's COLOR_RGB2GRAY for CV_32F: float weights, in float.
            let tmp: Vec<f32> = s
                .chunks_exact(c)
                .map(|p| p[2] * 0.114f32 + p[1] * 0.587f32 + p[0] * 0.299f32)
                .collect();
            store(conv, bytemuck::cast_slice(&tmp));
        }
        (ChannelMode::Gray, _) if c > 2 => {
            return Err(Problem::GrayOf {
                ty: d.sample.name(),
                channels: c,
            });
        }
        _ => {
            // Gray from gray (+ alpha): the first channel; RGB from gray:
            // it three times; RGB from color: the first three. Byte copies,
            // whatever the sample type.
            let size = d.sample.size();
            let bytes: &[u8] = bytemuck::cast_slice(samples);
            let bytes = &bytes[..(n * size).min(bytes.len())];
            let pick: &[usize] = match (mode, c) {
                (ChannelMode::Gray, _) => &[0],
                (_, 1 | 2) => &[0, 0, 0],
                _ => &[0, 1, 2],
            };
            let mut tmp = Vec::with_capacity(n / c.max(1) * pick.len() * size);
            for p in bytes.chunks_exact(c * size) {
                for &k in pick {
                    tmp.extend_from_slice(&p[k * size..(k + 1) * size]);
                }
            }
            store(conv, &tmp);
        }
    }
    let m = n / c * target;
    Ok((samples_view(conv, m, d.sample), target))
}

impl Engine {
    /// Opens the temporary file of `root/rel.npy`: a short name in the same
    /// folder (see [`unique_tmp_suffix`]), so any output name that fits
    /// fits with it. Makes the folders once per engine, and again when they
    /// went away.
    fn open_output(&mut self, root: &Path, rel: &str) -> Result<TileSink, Problem> {
        let path = root.join(format!("{rel}.npy"));
        let dir = path.parent().unwrap_or(root).to_path_buf();
        let tmp = dir.join(&self.tmp_suffix);
        let shown = format!("{rel}.npy");
        let werr = |source| Problem::Write {
            path: shown.clone(),
            source,
        };
        if !self.made_dirs.contains(&dir) {
            crate::formats::make_parent_dirs(root, &path).map_err(werr)?;
            self.made_dirs.insert(dir.clone());
        }
        match TileSink::create(tmp.clone(), path.clone(), shown.clone()) {
            // The folder went away since this engine made it (a user may
            // clear the output between jobs; a later job to the same output
            // has a fresh staging folder): make it again, once. A finished
            // job's staging folder is never made again (see
            // `make_parent_dirs`), so a late duplicate result fails here.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.made_dirs.remove(&dir);
                crate::formats::make_parent_dirs(root, &path).map_err(werr)?;
                self.made_dirs.insert(dir);
                TileSink::create(tmp, path, shown.clone()).map_err(werr)
            }
            r => r.map_err(werr),
        }
    }

    /// Writes `self.out` into slice `index` of the stack file (`--format
    /// stack`; per-image files are written as they are scaled, see
    /// [`Engine::open_output`]). The error shows the path relative to the
    /// output folder.
    fn write_output(&mut self, output_root: &Path, rel: &str, index: u64) -> Result<(), Problem> {
        if !self.slices {
            let root = crate::formats::tree_root(output_root, &self.opts.format);
            let path = root.join(format!("{rel}.npy"));
            return crate::formats::make_parent_dirs(&root, &path)
                .and_then(|()| crate::fsio::write_atomic(&path, &self.out, &self.tmp_suffix))
                .map_err(|source| Problem::Write {
                    path: format!("{rel}.npy"),
                    source,
                });
        }
        let header = crate::formats::npy_data_offset(&self.out);
        crate::formats::StackWriter::write(&mut self.stack, output_root, index, &self.out[header..])
            .map_err(|(path, source)| Problem::Write {
                path: path
                    .strip_prefix(output_root)
                    .unwrap_or(&path)
                    .display()
                    .to_string(),
                source,
            })
    }
}

fn failed_from(rel: &str, ok: &Record, p: Problem) -> Record {
    let mut r = Record::bare(rel, Status::Failed, Some(p.to_string()));
    r.format = ok.format.clone();
    r
}

/// Whether an input of `size` bytes may be read at all: not over `limit`
/// (`--max-input-bytes`) nor over what `budget` leaves for images.
fn check_input_size(size: u64, limit: u64, budget: Option<&MemoryBudget>) -> Result<(), Problem> {
    if size > limit {
        return Err(Problem::InputTooLarge { size, limit });
    }
    match budget {
        Some(b) if size > b.capacity() => Err(Problem::InputOverBudget {
            size,
            size_mib: size.div_ceil(1 << 20),
            capacity_mib: b.capacity() >> 20,
            total_mib: b.total() >> 20,
        }),
        _ => Ok(()),
    }
}

/// The size check an object-store fetch applies before reading a body:
/// the rules and reasons of [`Engine::admit_input`], without taking any of
/// the budget (the engine admits the bytes when it takes them).
pub fn input_check(
    opts: &EngineOptions,
    budget: Option<Arc<MemoryBudget>>,
) -> crate::storage::SizeCheck {
    let limit = opts.max_input_bytes;
    Arc::new(move |size| {
        check_input_size(size, limit, budget.as_deref()).map_err(|p| p.to_string())
    })
}

/// The manifest reason of an input over `--max-input-bytes`, the same in
/// every mode (local file, stream-mode upload, object store).
pub fn input_too_large(size: u64, limit: u64) -> String {
    format!("input file is {size} bytes, over the limit of {limit} bytes (--max-input-bytes)")
}

/// Copies `bytes` into the start of `conv` (as native-endian words).
fn store(conv: &mut Vec<u32>, bytes: &[u8]) {
    conv.clear();
    conv.resize(bytes.len().div_ceil(4), 0);
    let buf: &mut [u8] = bytemuck::cast_slice_mut(&mut conv[..]);
    buf[..bytes.len()].copy_from_slice(bytes);
}

/// The first `n` samples of type `ty` held in `buf`.
fn samples_view(buf: &[u32], n: usize, ty: SampleType) -> Pixels<'_> {
    let bytes: &[u8] = bytemuck::cast_slice(buf);
    Pixels::from_bytes(ty, &bytes[..(n * ty.size()).min(bytes.len())])
}

fn format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Jpeg => "jpeg",
        ImageFormat::Png => "png",
        ImageFormat::Bmp => "bmp",
        ImageFormat::Tiff => "tiff",
        ImageFormat::WebP => "webp",
        ImageFormat::Gif => "gif",
        ImageFormat::Pnm => "pnm",
        _ => "other",
    }
}

fn extension(rel: &str) -> Option<String> {
    let name = rel.rsplit('/').next()?;
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty()).then(|| ext.to_ascii_lowercase())
}

/// True when a JPEG stream has an end-of-image marker after its last
/// start-of-scan marker. Entropy-coded data cannot contain `FF D9` or `FF DA`
/// (0xFF is byte-stuffed), so this detects truncation exactly, also when an
/// embedded EXIF thumbnail carries markers of its own near the start.
pub fn jpeg_complete(data: &[u8]) -> bool {
    let last = |m: u8| data.windows(2).rposition(|w| w[0] == 0xFF && w[1] == m);
    match (last(0xD9), last(0xDA)) {
        (Some(eoi), Some(sos)) => eoi > sos,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_writers_of_one_file_never_share_a_temporary_name() {
        // Workers in containers are all pid 1: the suffix must differ anyway.
        let (a, b) = (unique_tmp_suffix(), unique_tmp_suffix());
        assert_ne!(a, b);
        assert!(a.starts_with(&format!(".{}.", std::process::id())) && a.ends_with(".tmp"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..50 {
                        write_atomic(path, &[i; 4096], &unique_tmp_suffix()).unwrap();
                    }
                });
            }
        });
        assert_eq!(std::fs::read(&path).unwrap().len(), 4096);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn channel_conversion_works_on_wide_samples_and_refuses_signed_luma() {
        let d = |channels, sample| Decoded {
            width: 2,
            height: 1,
            channels,
            sample,
        };
        // Float RGB to gray: OpenCV's float weights.
        let rgb: Vec<f32> = vec![1.0, 0.5, 0.25, -2.0, 4.0, 8.0];
        let mut words = vec![0u32; 6];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words).copy_from_slice(bytemuck::cast_slice(&rgb));
        let mut conv = Vec::new();
        let (px, c) = convert(
            &words,
            &mut conv,
            ChannelMode::Gray,
            &d(3, SampleType::Float32),
            6,
        )
        .unwrap();
        assert_eq!(c, 1);
        let want = |p: &[f32]| p[2] * 0.114f32 + p[1] * 0.587f32 + p[0] * 0.299f32;
        assert_eq!(
            (px.value(0), px.value(1)),
            (f64::from(want(&rgb[..3])), f64::from(want(&rgb[3..])))
        );
        // int16 gray to RGB: repeated, whatever the type.
        let gray: Vec<i16> = vec![-5, 300];
        let mut words = vec![0u32; 1];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)
            .copy_from_slice(bytemuck::cast_slice(&gray));
        let (px, c) = convert(
            &words,
            &mut conv,
            ChannelMode::Rgb,
            &d(1, SampleType::Int16),
            2,
        )
        .unwrap();
        assert_eq!(c, 3);
        let got: Vec<f64> = (0..6).map(|i| px.value(i)).collect();
        assert_eq!(got, [-5.0, -5.0, -5.0, 300.0, 300.0, 300.0]);
        // Signed RGB to gray: no OpenCV conversion to match, refused.
        let words = vec![0u32; 3];
        let e = convert(
            &words,
            &mut conv,
            ChannelMode::Gray,
            &d(3, SampleType::Int32),
            6,
        )
        .expect_err("refused");
        assert!(e.to_string().contains("int32"), "{e}");
    }

    #[test]
    fn extension_is_lowercased_and_needs_a_stem() {
        assert_eq!(extension("a/B.JPG").as_deref(), Some("jpg"));
        assert_eq!(extension("a/.hidden"), None);
        assert_eq!(extension("noext"), None);
    }

    #[test]
    fn jpeg_completeness() {
        assert!(jpeg_complete(&[0xFF, 0xD8, 0xFF, 0xDA, 1, 2, 0xFF, 0xD9]));
        assert!(!jpeg_complete(&[0xFF, 0xD8, 0xFF, 0xDA, 1, 2, 3]));
        // A thumbnail's EOI before the main scan does not count.
        assert!(!jpeg_complete(&[
            0xFF, 0xD8, 0xFF, 0xDA, 0xFF, 0xD9, 0xFF, 0xDA, 5
        ]));
    }

    #[test]
    fn hostile_bytes_become_records() {
        let mut e = Engine::new(EngineOptions::default());
        let r = e
            .process(
                Source::Bytes {
                    rel: "x.jpg",
                    data: b"",
                },
                Sink::Memory,
            )
            .record;
        assert_eq!(r.status, Status::Failed);
        assert!(r.reason.unwrap().contains("empty"));
        let r = e
            .process(
                Source::Bytes {
                    rel: "x.txt",
                    data: b"hello",
                },
                Sink::Memory,
            )
            .record;
        assert_eq!(r.status, Status::Skipped);
        let r = e
            .process(
                Source::Bytes {
                    rel: "x.png",
                    data: b"hello",
                },
                Sink::Memory,
            )
            .record;
        assert_eq!(r.status, Status::Failed);
        let r = e
            .process(
                Source::Bytes {
                    rel: "x.jpg",
                    data: &[0xFF, 0xD8, 0xFF, 0xE0, 0, 0],
                },
                Sink::Memory,
            )
            .record;
        assert_eq!(r.status, Status::Failed);
    }

    fn png_of(w: u32, h: u32, seed: u8) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 7) as u8 ^ seed,
                (y * 3) as u8,
                seed.wrapping_add(x as u8),
            ])
        });
        let mut png = Vec::new();
        img.write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        png
    }

    /// Buffers are reused without zeroing: a big image followed by a small
    /// one must give the same bytes as a fresh engine.
    #[test]
    fn reused_buffers_leave_no_stale_bytes() {
        let big = png_of(40, 30, 1);
        let small = png_of(5, 3, 2);
        let mut reused = Engine::new(EngineOptions::default());
        let _ = reused.process(
            Source::Bytes {
                rel: "big.png",
                data: &big,
            },
            Sink::Memory,
        );
        let a = reused
            .process(
                Source::Bytes {
                    rel: "small.png",
                    data: &small,
                },
                Sink::Memory,
            )
            .npy
            .unwrap()
            .to_vec();
        let mut fresh = Engine::new(EngineOptions::default());
        let b = fresh
            .process(
                Source::Bytes {
                    rel: "small.png",
                    data: &small,
                },
                Sink::Memory,
            )
            .npy
            .unwrap()
            .to_vec();
        assert_eq!(a, b);
        assert_eq!(a.len(), 128 + 5 * 3 * 3 * 4);
    }

    /// Workers on different CPUs must resize to the same bytes: the SIMD
    /// code paths fast_image_resize picks at run time agree with its scalar
    /// one, for 8 and 16 bit, both filters, shrinking and enlarging.
    #[test]
    fn resize_is_identical_on_every_cpu_code_path() {
        use fast_image_resize::images::{Image, ImageRef};
        use fast_image_resize::{CpuExtensions, FilterType, PixelType, ResizeAlg, ResizeOptions};
        let (w, h) = (37u32, 23u32);
        let src8: Vec<u8> = (0..w * h * 3).map(|i| (i * 97 % 251) as u8).collect();
        let src16: Vec<u16> = (0..w * h).map(|i| (i * 7919 % 65521) as u16).collect();
        let src16b: &[u8] = bytemuck::cast_slice(&src16);
        let srcf: Vec<f32> = (0..w * h * 2)
            .map(|i| (i * 7919 % 65521) as f32 / 7.0)
            .collect();
        let srcfb: &[u8] = bytemuck::cast_slice(&srcf);
        let mut paths = vec![CpuExtensions::None];
        #[cfg(target_arch = "x86_64")]
        paths.extend([CpuExtensions::Sse4_1, CpuExtensions::Avx2]);
        for (pt, bytes, bpp) in [
            (PixelType::U8x3, &src8[..], 3),
            (PixelType::U16, src16b, 2),
            (PixelType::F32x2, srcfb, 8),
        ] {
            for filter in [FilterType::Bilinear, FilterType::Lanczos3] {
                for (dw, dh) in [(16u32, 9u32), (80, 51)] {
                    let opts = ResizeOptions::new()
                        .resize_alg(ResizeAlg::Convolution(filter))
                        .use_alpha(false);
                    let mut results = Vec::new();
                    for &ext in &paths {
                        if !ext.is_supported() {
                            continue;
                        }
                        let mut r = fast_image_resize::Resizer::new();
                        // SAFETY: only extensions the CPU supports are set.
                        unsafe { r.set_cpu_extensions(ext) };
                        let src = ImageRef::new(w, h, bytes, pt).unwrap();
                        let mut out = vec![0u32; (dw * dh) as usize * bpp / 4 + 1];
                        let buf: &mut [u8] = bytemuck::cast_slice_mut(&mut out[..]);
                        let len = (dw * dh) as usize * bpp;
                        let mut dst = Image::from_slice_u8(dw, dh, &mut buf[..len], pt).unwrap();
                        r.resize(&src, &mut dst, &opts).unwrap();
                        results.push((ext, out));
                    }
                    for (ext, out) in &results[1..] {
                        assert!(
                            *out == results[0].1,
                            "{ext:?} differs from scalar for {pt:?} {filter:?} {dw}x{dh}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn png_roundtrip_values() {
        let img = image::RgbImage::from_fn(4, 2, |x, y| image::Rgb([x as u8 * 10, y as u8, 200]));
        let mut png = Vec::new();
        img.write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        let mut e = Engine::new(EngineOptions::default());
        let p = e.process(
            Source::Bytes {
                rel: "a.png",
                data: &png,
            },
            Sink::Memory,
        );
        assert_eq!(p.record.status, Status::Ok, "{:?}", p.record.reason);
        assert_eq!(p.record.min, vec![0.0]);
        assert_eq!(p.record.max, vec![200.0]);
        let npy = p.npy.unwrap();
        let data = &npy[npy.len() - 4 * 4 * 2 * 3..];
        let first = f32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        assert_eq!(first, 0.0);
        let third = f32::from_le_bytes([data[8], data[9], data[10], data[11]]);
        assert_eq!(third, 1.0);
    }
}
