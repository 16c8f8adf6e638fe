//! Deterministic synthetic image generator behind `imgnorm gen`: pixel synthesis
//! ([`render`]), file naming and layout, encoding and atomic writes ([`generate`]).
//!
//! Images look roughly like photographs to an encoder (smooth gradients, soft
//! shapes, low-frequency texture, fine grain, occasional vignette) rather than
//! flat random noise, so decode cost and compressed sizes are realistic. Every
//! byte is a pure function of the options: the same [`GenOptions`] always yield
//! the same file names and the same file contents, whatever the thread count.

use std::fmt;
use std::fs;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use image::codecs::bmp::BmpEncoder;
use image::codecs::gif::GifEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::tiff::TiffEncoder;
use image::codecs::webp::WebPEncoder;
use image::{DynamicImage, ImageBuffer, Luma, Rgb, RgbImage, Rgba};

/// Smallest side of a varied-size image (when [`GenOptions::size`] is `None`).
pub const MIN_SIDE: u32 = 256;
/// Largest side of a varied-size image (when [`GenOptions::size`] is `None`).
pub const MAX_SIDE: u32 = 768;
/// Largest side accepted for a fixed size (WebP's limit, the tightest of the encoders).
pub const MAX_FIXED_SIDE: u32 = 16383;
/// Default JPEG quality.
pub const DEFAULT_JPEG_QUALITY: u8 = 90;

/// Which file formats [`generate`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GenFormat {
    /// Every image is an 8-bit RGB JPEG (`.jpg`).
    #[default]
    Jpeg,
    /// Every image is an 8-bit RGB PNG (`.png`).
    Png,
    /// A deterministic mix, two thirds JPEG; the rest are 8-bit RGB PNG,
    /// 16-bit RGB PNG, 8-bit gray PNG, 8-bit RGBA PNG, BMP, TIFF, lossless WebP
    /// and GIF, one of each in every 24 consecutive indices.
    Mixed,
}

impl GenFormat {
    /// The name accepted by [`FromStr`]: `jpeg`, `png` or `mixed`.
    pub fn as_str(self) -> &'static str {
        match self {
            GenFormat::Jpeg => "jpeg",
            GenFormat::Png => "png",
            GenFormat::Mixed => "mixed",
        }
    }
}

impl fmt::Display for GenFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GenFormat {
    type Err = String;

    /// Parses `jpeg`/`jpg`, `png` or `mixed` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "jpeg" | "jpg" => Ok(GenFormat::Jpeg),
            "png" => Ok(GenFormat::Png),
            "mixed" | "mix" => Ok(GenFormat::Mixed),
            other => Err(format!(
                "unknown image format {other:?} (expected jpeg, png or mixed)"
            )),
        }
    }
}

/// What to generate and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenOptions {
    /// Output root directory; created if missing.
    pub out: PathBuf,
    /// Number of images.
    pub count: u64,
    /// Seed of the whole data set.
    pub seed: u64,
    /// File formats to write.
    pub format: GenFormat,
    /// Fixed `(width, height)`; `None` draws each side from
    /// [`MIN_SIDE`]`..=`[`MAX_SIDE`] per image.
    pub size: Option<(u32, u32)>,
    /// `0`: all files directly in `out`; `N > 0`: ImageFolder layout, image `i`
    /// goes to `out/class_{i % N:03}/`.
    pub classes: u32,
    /// JPEG quality, 1..=100 (default [`DEFAULT_JPEG_QUALITY`]).
    pub jpeg_quality: u8,
}

impl GenOptions {
    /// Options with the defaults: seed 0, JPEG, varied sizes, flat folder, quality 90.
    pub fn new(out: impl Into<PathBuf>, count: u64) -> Self {
        GenOptions {
            out: out.into(),
            count,
            seed: 0,
            format: GenFormat::Jpeg,
            size: None,
            classes: 0,
            jpeg_quality: DEFAULT_JPEG_QUALITY,
        }
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GenReport {
    /// Number of files written.
    pub files: u64,
    /// Total size of the files, in bytes.
    pub bytes: u64,
    /// Total number of pixels (sum of width × height).
    pub pixels: u64,
}

impl GenReport {
    fn add(&mut self, other: GenReport) {
        self.files += other.files;
        self.bytes += other.bytes;
        self.pixels += other.pixels;
    }
}

/// Why [`generate`] failed.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// The options cannot be honoured (zero size, bad quality, ...).
    #[error("invalid generator options: {0}")]
    InvalidOptions(String),
    /// A directory could not be created.
    #[error("cannot create directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A file could not be written or renamed into place.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file (its final name, not the temporary one).
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// An image could not be encoded.
    #[error("cannot encode {}: {source}", path.display())]
    Encode {
        /// The file that was being produced.
        path: PathBuf,
        /// The underlying error.
        source: image::ImageError,
    },
}

/// Writes `opts.count` images under `opts.out` and reports what was written.
///
/// Deterministic: file names and bytes depend only on `opts`. Each file is
/// written as `NAME.tmp` and renamed into place. Work is spread over a few
/// threads; the output does not depend on how many.
pub fn generate(opts: &GenOptions) -> Result<GenReport, GenError> {
    validate(opts)?;
    create_dir(&opts.out)?;
    let dirs = u64::from(opts.classes).min(opts.count);
    for c in 0..dirs {
        create_dir(&opts.out.join(class_dir(c)))?;
    }
    if opts.count == 0 {
        return Ok(GenReport::default());
    }

    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8) as u64;
    let threads = threads.min(opts.count);
    let stop = AtomicBool::new(false);
    let results: Vec<Result<GenReport, GenError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let stop = &stop;
                s.spawn(move || {
                    let mut report = GenReport::default();
                    let mut i = t;
                    while i < opts.count {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match generate_one(opts, i) {
                            Ok(r) => report.add(r),
                            Err(e) => {
                                stop.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                        i += threads;
                    }
                    Ok(report)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });

    let mut total = GenReport::default();
    for r in results {
        total.add(r?);
    }
    Ok(total)
}

/// The path of image `index` relative to `opts.out`, e.g. `img_000042.jpg` or
/// `class_002/img_000042.png`.
pub fn relative_path(opts: &GenOptions, index: u64) -> PathBuf {
    let name = format!(
        "img_{index:06}.{}",
        file_kind(opts.format, opts.seed, index).extension()
    );
    if opts.classes == 0 {
        PathBuf::from(name)
    } else {
        Path::new(&class_dir(index % u64::from(opts.classes))).join(name)
    }
}

/// The `(width, height)` of image `index`.
pub fn image_size(opts: &GenOptions, index: u64) -> (u32, u32) {
    match opts.size {
        Some(size) => size,
        None => {
            let mut rng = Rng::new(mix(image_seed(opts.seed, index), STREAM_SIZE));
            let span = MAX_SIDE - MIN_SIDE + 1;
            (MIN_SIDE + rng.below(span), MIN_SIDE + rng.below(span))
        }
    }
}

/// Synthesises image `index` of the data set `seed` as 8-bit RGB.
///
/// This is exactly what [`generate`] encodes for 8-bit RGB outputs (JPEG before
/// compression, PNG, BMP, TIFF, WebP). Panics if a side is zero.
pub fn render(seed: u64, index: u64, width: u32, height: u32) -> RgbImage {
    Field::synth(seed, index, width, height).to_rgb8()
}

// ---------------------------------------------------------------------------
// Options, naming, files.

fn validate(opts: &GenOptions) -> Result<(), GenError> {
    if !(1..=100).contains(&opts.jpeg_quality) {
        return Err(GenError::InvalidOptions(format!(
            "JPEG quality must be 1..=100, got {}",
            opts.jpeg_quality
        )));
    }
    if let Some((w, h)) = opts.size
        && (!(1..=MAX_FIXED_SIDE).contains(&w) || !(1..=MAX_FIXED_SIDE).contains(&h))
    {
        return Err(GenError::InvalidOptions(format!(
            "image size must be 1..={MAX_FIXED_SIDE} on each side, got {w}x{h}"
        )));
    }
    if opts.count > 1_000_000_000_000 {
        return Err(GenError::InvalidOptions(format!(
            "count {} is unreasonably large",
            opts.count
        )));
    }
    Ok(())
}

fn class_dir(class: u64) -> String {
    format!("class_{class:03}")
}

fn create_dir(path: &Path) -> Result<(), GenError> {
    fs::create_dir_all(path).map_err(|source| GenError::CreateDir {
        path: path.to_path_buf(),
        source,
    })
}

fn generate_one(opts: &GenOptions, index: u64) -> Result<GenReport, GenError> {
    let path = opts.out.join(relative_path(opts, index));
    let (w, h) = image_size(opts, index);
    let kind = file_kind(opts.format, opts.seed, index);
    let field = Field::synth(opts.seed, index, w, h);
    let bytes = encode(&field, kind, opts).map_err(|source| GenError::Encode {
        path: path.clone(),
        source,
    })?;
    write_atomic(&path, &bytes)?;
    Ok(GenReport {
        files: 1,
        bytes: bytes.len() as u64,
        pixels: u64::from(w) * u64::from(h),
    })
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), GenError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let err = |source| GenError::Write {
        path: path.to_path_buf(),
        source,
    };
    fs::write(&tmp, bytes).map_err(err)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        err(e)
    })
}

/// The concrete encoding of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Jpeg,
    Png8,
    Png16,
    PngGray,
    PngRgba,
    Bmp,
    Tiff,
    WebP,
    Gif,
}

impl FileKind {
    fn extension(self) -> &'static str {
        match self {
            FileKind::Jpeg => "jpg",
            FileKind::Png8 | FileKind::Png16 | FileKind::PngGray | FileKind::PngRgba => "png",
            FileKind::Bmp => "bmp",
            FileKind::Tiff => "tif",
            FileKind::WebP => "webp",
            FileKind::Gif => "gif",
        }
    }
}

/// The mixed cycle: 16 JPEGs and one of each other kind in every 24 indices.
const MIXED_CYCLE: [FileKind; 24] = {
    use FileKind::*;
    [
        Jpeg, Jpeg, Png8, Jpeg, Jpeg, Png16, Jpeg, Jpeg, PngGray, Jpeg, Jpeg, PngRgba, Jpeg, Jpeg,
        Bmp, Jpeg, Jpeg, Tiff, Jpeg, Jpeg, WebP, Jpeg, Jpeg, Gif,
    ]
};

fn file_kind(format: GenFormat, seed: u64, index: u64) -> FileKind {
    match format {
        GenFormat::Jpeg => FileKind::Jpeg,
        GenFormat::Png => FileKind::Png8,
        GenFormat::Mixed => {
            let n = MIXED_CYCLE.len() as u64;
            let rotation = mix(seed, STREAM_CYCLE) % n;
            MIXED_CYCLE[((index % n + rotation) % n) as usize]
        }
    }
}

fn encode(field: &Field, kind: FileKind, opts: &GenOptions) -> image::ImageResult<Vec<u8>> {
    let mut buf = Cursor::new(Vec::new());
    match kind {
        FileKind::Jpeg => DynamicImage::ImageRgb8(field.to_rgb8())
            .write_with_encoder(JpegEncoder::new_with_quality(&mut buf, opts.jpeg_quality))?,
        FileKind::Png8 => DynamicImage::ImageRgb8(field.to_rgb8())
            .write_with_encoder(PngEncoder::new(&mut buf))?,
        FileKind::Png16 => DynamicImage::ImageRgb16(field.to_rgb16())
            .write_with_encoder(PngEncoder::new(&mut buf))?,
        FileKind::PngGray => DynamicImage::ImageLuma8(field.to_luma8())
            .write_with_encoder(PngEncoder::new(&mut buf))?,
        FileKind::PngRgba => DynamicImage::ImageRgba8(field.to_rgba8())
            .write_with_encoder(PngEncoder::new(&mut buf))?,
        FileKind::Bmp => DynamicImage::ImageRgb8(field.to_rgb8())
            .write_with_encoder(BmpEncoder::new(&mut buf))?,
        FileKind::Tiff => DynamicImage::ImageRgb8(field.to_rgb8())
            .write_with_encoder(TiffEncoder::new(&mut buf))?,
        FileKind::WebP => DynamicImage::ImageRgb8(field.to_rgb8())
            .write_with_encoder(WebPEncoder::new_lossless(&mut buf))?,
        FileKind::Gif => DynamicImage::ImageRgb8(field.to_rgb8())
            .write_with_encoder(GifEncoder::new_with_speed(&mut buf, 10))?,
    }
    Ok(buf.into_inner())
}

// ---------------------------------------------------------------------------
// Randomness.

const STREAM_SIZE: u64 = 0x5349_5a45;
const STREAM_CYCLE: u64 = 0x4359_434c;
const STREAM_CONTENT: u64 = 0x434f_4e54;
const STREAM_GRAIN: u64 = 0x4752_4149;
const STREAM_ALPHA: u64 = 0x414c_5048;

/// SplitMix64 finaliser of `a` combined with `b`.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn image_seed(seed: u64, index: u64) -> u64 {
    mix(mix(seed, 0x696d_676e_6f72_6d00), index)
}

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in `[lo, hi)`.
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }

    fn chance(&mut self, p: f32) -> bool {
        self.unit() < p
    }
}

// ---------------------------------------------------------------------------
// Pixel synthesis.

/// A linear-ish RGB float image, values nominally in `[0, 1]` (grain included;
/// quantisation clamps).
struct Field {
    w: usize,
    h: usize,
    px: Vec<[f32; 3]>,
    alpha_seed: u64,
}

fn smoothstep(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}

fn lerp3(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

/// HSV (all in `[0, 1]`, hue wraps) to RGB.
fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h = (h - h.floor()) * 6.0;
    let i = h.floor();
    let f = h - i;
    let p = v * (1.0 - s);
    let q = v * (1.0 - s * f);
    let t = v * (1.0 - s * (1.0 - f));
    match i as u32 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// A random colour near the image's base hue (sometimes a complementary or
/// unrelated one), as photos tend to have a limited palette.
fn palette_color(rng: &mut Rng, base_hue: f32) -> [f32; 3] {
    let hue = if rng.chance(0.7) {
        base_hue + rng.range(-0.08, 0.08)
    } else if rng.chance(0.5) {
        base_hue + 0.5 + rng.range(-0.06, 0.06)
    } else {
        rng.unit()
    };
    hsv(hue, rng.range(0.1, 0.85), rng.range(0.15, 0.95))
}

/// Adds `amp * n(x, y)` to `out`, where `n` is bilinear value noise in
/// `[-1, 1]` on a lattice of `cell` pixels (smoothstep-weighted).
fn add_value_noise(out: &mut [f32], w: usize, h: usize, cell: f32, amp: f32, rng: &mut Rng) {
    let cell = cell.max(1.0);
    let ox = rng.range(0.0, cell);
    let oy = rng.range(0.0, cell);
    let gw = ((w as f32 + ox) / cell) as usize + 2;
    let gh = ((h as f32 + oy) / cell) as usize + 2;
    let lattice: Vec<f32> = (0..gw * gh).map(|_| rng.range(-amp, amp)).collect();

    // Horizontal pass: every lattice row upsampled to full width.
    let mut xi = Vec::with_capacity(w);
    let mut xt = Vec::with_capacity(w);
    for x in 0..w {
        let fx = (x as f32 + ox) / cell;
        let i = fx as usize;
        xi.push(i);
        xt.push(smoothstep(fx - i as f32));
    }
    let mut rows = vec![0.0f32; gh * w];
    for (gy, row) in rows.chunks_exact_mut(w).enumerate() {
        let l = &lattice[gy * gw..(gy + 1) * gw];
        for ((r, &i), &t) in row.iter_mut().zip(&xi).zip(&xt) {
            *r = l[i] + (l[i + 1] - l[i]) * t;
        }
    }
    // Vertical pass.
    for (y, line) in out.chunks_exact_mut(w).enumerate().take(h) {
        let fy = (y as f32 + oy) / cell;
        let i = fy as usize;
        let t = smoothstep(fy - i as f32);
        let a = &rows[i * w..(i + 1) * w];
        let b = &rows[(i + 1) * w..(i + 2) * w];
        for ((o, &a), &b) in line.iter_mut().zip(a).zip(b) {
            *o += a + (b - a) * t;
        }
    }
}

#[derive(Clone, Copy)]
enum ShapeKind {
    Ellipse { a: f32, b: f32 },
    Rect { a: f32, b: f32 },
    Triangle { n: [[f32; 2]; 3], d: [f32; 3] },
}

/// Where and how to blend one shape: placement, rotation, shading, bounds.
struct Paint {
    cx: f32,
    cy: f32,
    rc: f32,
    rs: f32,
    sc: f32,
    ss: f32,
    inv2r: f32,
    inv_soft: f32,
    opacity: f32,
    c0: [f32; 3],
    c1: [f32; 3],
    x0: usize,
    x1: usize,
    y0: usize,
    y1: usize,
}

impl Paint {
    /// Blends the shape whose signed distance (pixels, negative inside) in
    /// rotated coordinates is `dist(u, v)` into `px`.
    fn fill(&self, px: &mut [[f32; 3]], w: usize, dist: impl Fn(f32, f32) -> f32) {
        for y in self.y0..self.y1 {
            let dy = y as f32 + 0.5 - self.cy;
            let line = &mut px[y * w + self.x0..y * w + self.x1];
            for (x, p) in (self.x0..).zip(line.iter_mut()) {
                let dx = x as f32 + 0.5 - self.cx;
                let u = dx * self.rc + dy * self.rs;
                let v = -dx * self.rs + dy * self.rc;
                let alpha = (0.5 - dist(u, v) * self.inv_soft).clamp(0.0, 1.0) * self.opacity;
                if alpha <= 0.0 {
                    continue;
                }
                let t = ((dx * self.sc + dy * self.ss) * self.inv2r + 0.5).clamp(0.0, 1.0);
                let c = lerp3(self.c0, self.c1, t);
                *p = lerp3(*p, c, alpha);
            }
        }
    }
}

impl Field {
    fn synth(seed: u64, index: u64, width: u32, height: u32) -> Field {
        assert!(width > 0 && height > 0, "image sides must be non-zero");
        let (w, h) = (width as usize, height as usize);
        let iseed = image_seed(seed, index);
        let mut rng = Rng::new(mix(iseed, STREAM_CONTENT));
        let (wf, hf) = (w as f32, h as f32);
        let min_side = wf.min(hf);
        let base_hue = rng.unit();

        // 1. Background: a multi-stop gradient, linear or radial, via a LUT.
        const LUT: usize = 1024;
        let stops = 2 + rng.below(4) as usize;
        let mut pos: Vec<f32> = (0..stops).map(|_| rng.unit()).collect();
        pos.sort_by(f32::total_cmp);
        pos[0] = 0.0;
        pos[stops - 1] = 1.0;
        let colors: Vec<[f32; 3]> = (0..stops)
            .map(|_| palette_color(&mut rng, base_hue))
            .collect();
        let lut: Vec<[f32; 3]> = (0..LUT)
            .map(|k| {
                let t = k as f32 / (LUT - 1) as f32;
                let s = pos.partition_point(|&p| p <= t).clamp(1, stops - 1);
                let span = (pos[s] - pos[s - 1]).max(1e-6);
                let u = ((t - pos[s - 1]) / span).clamp(0.0, 1.0);
                lerp3(colors[s - 1], colors[s], smoothstep(u))
            })
            .collect();
        let mut px = vec![[0.0f32; 3]; w * h];
        if rng.chance(0.7) {
            let theta = rng.range(0.0, std::f32::consts::TAU);
            let (s, c) = theta.sin_cos();
            let extent = (wf * c).abs() + (hf * s).abs();
            let k = (LUT - 1) as f32 / extent;
            let (cx, cy) = (wf * 0.5, hf * 0.5);
            for (y, line) in px.chunks_exact_mut(w).enumerate() {
                let base = ((y as f32 - cy) * s) * k + (LUT as f32 - 1.0) * 0.5;
                for (x, p) in line.iter_mut().enumerate() {
                    let t = base + (x as f32 - cx) * c * k;
                    *p = lut[(t.max(0.0) as usize).min(LUT - 1)];
                }
            }
        } else {
            let cx = rng.range(-0.2, 1.2) * wf;
            let cy = rng.range(-0.2, 1.2) * hf;
            let reach = rng.range(0.6, 1.4) * (wf * wf + hf * hf).sqrt();
            let k = (LUT - 1) as f32 / reach;
            for (y, line) in px.chunks_exact_mut(w).enumerate() {
                let dy2 = (y as f32 - cy) * (y as f32 - cy);
                for (x, p) in line.iter_mut().enumerate() {
                    let dx = x as f32 - cx;
                    let t = (dx * dx + dy2).sqrt() * k;
                    *p = lut[(t as usize).min(LUT - 1)];
                }
            }
        }

        // 2. Low-frequency texture (fbm, 3 octaves): brightness and a colour tint.
        let mut tex = vec![0.0f32; w * h];
        let cell = rng.range(0.12, 0.4) * min_side;
        add_value_noise(&mut tex, w, h, cell, 1.0, &mut rng);
        add_value_noise(&mut tex, w, h, cell * 0.5, 0.5, &mut rng);
        add_value_noise(&mut tex, w, h, cell * 0.25, 0.25, &mut rng);
        let bright = rng.range(0.05, 0.22);
        let tint = {
            let t = palette_color(&mut rng, base_hue + 0.33);
            let amt = rng.range(0.0, 0.12);
            [(t[0] - 0.5) * amt, (t[1] - 0.5) * amt, (t[2] - 0.5) * amt]
        };
        for (p, &n) in px.iter_mut().zip(&tex) {
            let m = 1.0 + bright * n;
            for ch in 0..3 {
                p[ch] = p[ch] * m + tint[ch] * n;
            }
        }

        // 3. Shapes with soft edges, shading and partial opacity.
        let shapes = 5 + rng.below(16);
        for _ in 0..shapes {
            let u = rng.unit();
            let r = (0.03 + 0.32 * u * u) * min_side;
            Self::draw_shape(&mut px, w, h, &mut rng, base_hue, r);
        }
        // Clutter: many small objects, the kind of edges photos are full of.
        let area = (wf * hf) / (512.0 * 512.0);
        let clutter = (area * rng.range(20.0, 120.0)) as u32;
        for _ in 0..clutter {
            let r = rng.range(0.006, 0.035) * min_side + 1.0;
            Self::draw_shape(&mut px, w, h, &mut rng, base_hue, r);
        }

        // 4. Fine texture (2 octaves) modulating brightness, like surface detail.
        tex.fill(0.0);
        let fine = rng.range(2.5, 6.0);
        add_value_noise(&mut tex, w, h, fine * 3.0, 0.6, &mut rng);
        add_value_noise(&mut tex, w, h, fine, 1.0, &mut rng);
        add_value_noise(&mut tex, w, h, (fine * 0.5).max(1.5), 0.5, &mut rng);
        let detail = rng.range(0.07, 0.2);
        for (p, &n) in px.iter_mut().zip(&tex) {
            let m = 1.0 + detail * n;
            p[0] *= m;
            p[1] *= m;
            p[2] *= m;
        }

        // 5. Occasional vignette.
        if rng.chance(0.35) {
            let strength = rng.range(0.2, 0.6);
            let col: Vec<f32> = (0..w)
                .map(|x| {
                    let u = (x as f32 + 0.5) / wf * 2.0 - 1.0;
                    u * u * 0.5
                })
                .collect();
            for (y, line) in px.chunks_exact_mut(w).enumerate() {
                let v = (y as f32 + 0.5) / hf * 2.0 - 1.0;
                let rv = v * v * 0.5;
                for (p, &ru) in line.iter_mut().zip(&col) {
                    let m = 1.0 - strength * smoothstep((ru + rv).min(1.0));
                    p[0] *= m;
                    p[1] *= m;
                    p[2] *= m;
                }
            }
        }

        // 6. Levels (so extremes vary per image) and grain of up to ±3/255.
        let lo = if rng.chance(0.3) {
            0.0
        } else {
            rng.range(0.0, 0.12)
        };
        let hi = if rng.chance(0.3) {
            1.0
        } else {
            rng.range(0.8, 1.0)
        };
        let grain = rng.range(2.0, 3.0) / 255.0 / 1023.0;
        let mut g = Rng::new(mix(iseed, STREAM_GRAIN));
        for p in px.iter_mut() {
            let r = g.next_u64();
            for (ch, v) in p.iter_mut().enumerate() {
                // Uniform in [-1023, 1023] * grain.
                let n = ((r >> (ch * 21)) & 2047) as f32 - 1023.5;
                *v = lo + (hi - lo) * v.clamp(0.0, 1.0) + n * grain;
            }
        }

        Field {
            w,
            h,
            px,
            alpha_seed: mix(iseed, STREAM_ALPHA),
        }
    }

    fn draw_shape(px: &mut [[f32; 3]], w: usize, h: usize, rng: &mut Rng, base_hue: f32, r: f32) {
        let cx = rng.range(-0.1, 1.1) * w as f32;
        let cy = rng.range(-0.1, 1.1) * h as f32;
        let rot = rng.range(0.0, std::f32::consts::PI);
        let (rs, rc) = rot.sin_cos();
        let kind = match rng.below(4) {
            0 => ShapeKind::Ellipse { a: r, b: r },
            1 => ShapeKind::Ellipse {
                a: r,
                b: r * rng.range(0.3, 0.9),
            },
            2 => ShapeKind::Rect {
                a: r,
                b: r * rng.range(0.2, 1.0),
            },
            _ => {
                // Vertices at increasing angles around the centre (CCW in
                // rotated coordinates), each at its own radius.
                let a0 = rng.range(0.0, std::f32::consts::TAU);
                let a1 = a0 + rng.range(1.6, 2.6);
                let a2 = a1
                    + rng
                        .range(1.6, 2.6)
                        .min(a0 + std::f32::consts::TAU - a1 - 0.5);
                let v: Vec<[f32; 2]> = [a0, a1, a2]
                    .iter()
                    .map(|&a| {
                        let rr = r * rng.range(0.6, 1.0);
                        [rr * a.cos(), rr * a.sin()]
                    })
                    .collect();
                let mut n = [[0.0; 2]; 3];
                let mut d = [0.0; 3];
                for e in 0..3 {
                    let (p, q) = (v[e], v[(e + 1) % 3]);
                    let (ex, ey) = (q[0] - p[0], q[1] - p[1]);
                    let len = (ex * ex + ey * ey).sqrt().max(1e-3);
                    // Outward normal of a CCW polygon edge.
                    n[e] = [ey / len, -ex / len];
                    d[e] = n[e][0] * p[0] + n[e][1] * p[1];
                }
                ShapeKind::Triangle { n, d }
            }
        };
        let soft = if rng.chance(0.15) {
            rng.range(6.0, 24.0)
        } else {
            rng.range(0.7, 4.0)
        };
        let opacity = if rng.chance(0.6) {
            1.0
        } else {
            rng.range(0.35, 0.95)
        };
        let c0 = palette_color(rng, base_hue);
        let shade = rng.range(0.5, 1.3);
        let c1 = [
            (c0[0] * shade).min(1.0),
            (c0[1] * shade).min(1.0),
            (c0[2] * shade).min(1.0),
        ];
        let sh = rng.range(0.0, std::f32::consts::TAU);
        let (ss, sc) = sh.sin_cos();
        let inv2r = 0.5 / r.max(1.0);

        let reach = r + soft * 2.0;
        let x0 = (cx - reach).floor().max(0.0) as usize;
        let x1 = ((cx + reach).ceil().max(0.0) as usize).min(w);
        let y0 = (cy - reach).floor().max(0.0) as usize;
        let y1 = ((cy + reach).ceil().max(0.0) as usize).min(h);
        if x0 >= x1 || y0 >= y1 {
            return;
        }
        let paint = Paint {
            cx,
            cy,
            rc,
            rs,
            sc,
            ss,
            inv2r,
            inv_soft: 1.0 / soft,
            opacity,
            c0,
            c1,
            x0,
            x1,
            y0,
            y1,
        };
        match kind {
            ShapeKind::Ellipse { a, b } => {
                let (ia, ib) = (1.0 / a, 1.0 / b);
                paint.fill(px, w, |u, v| {
                    let (ua, vb) = (u * ia, v * ib);
                    let f = ua * ua + vb * vb - 1.0;
                    let (gx, gy) = (ua * ia, vb * ib);
                    let g = 2.0 * (gx * gx + gy * gy).sqrt();
                    if g > 1e-6 { f / g } else { -r }
                });
            }
            ShapeKind::Rect { a, b } => paint.fill(px, w, |u, v| {
                let qx = u.abs() - a;
                let qy = v.abs() - b;
                let ox = qx.max(0.0);
                let oy = qy.max(0.0);
                (ox * ox + oy * oy).sqrt() + qx.max(qy).min(0.0)
            }),
            ShapeKind::Triangle { n, d } => paint.fill(px, w, |u, v| {
                let e0 = n[0][0] * u + n[0][1] * v - d[0];
                let e1 = n[1][0] * u + n[1][1] * v - d[1];
                let e2 = n[2][0] * u + n[2][1] * v - d[2];
                e0.max(e1).max(e2)
            }),
        }
    }

    fn to_rgb8(&self) -> RgbImage {
        let mut data = vec![0u8; self.px.len() * 3];
        for (d, p) in data.chunks_exact_mut(3).zip(&self.px) {
            for (d, &v) in d.iter_mut().zip(p) {
                *d = (v * 255.0 + 0.5).clamp(0.0, 255.0) as u8;
            }
        }
        ImageBuffer::from_raw(self.w as u32, self.h as u32, data).expect("buffer size")
    }

    fn to_rgb16(&self) -> ImageBuffer<Rgb<u16>, Vec<u16>> {
        let mut data = vec![0u16; self.px.len() * 3];
        for (d, p) in data.chunks_exact_mut(3).zip(&self.px) {
            for (d, &v) in d.iter_mut().zip(p) {
                *d = (v * 65535.0 + 0.5).clamp(0.0, 65535.0) as u16;
            }
        }
        ImageBuffer::from_raw(self.w as u32, self.h as u32, data).expect("buffer size")
    }

    fn to_luma8(&self) -> ImageBuffer<Luma<u8>, Vec<u8>> {
        let data = self
            .px
            .iter()
            .map(|p| {
                let l = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
                (l * 255.0 + 0.5).clamp(0.0, 255.0) as u8
            })
            .collect();
        ImageBuffer::from_raw(self.w as u32, self.h as u32, data).expect("buffer size")
    }

    /// RGB plus a smooth alpha: opaque near a random centre, fading towards
    /// the edges, with some low-frequency variation.
    fn to_rgba8(&self) -> ImageBuffer<Rgba<u8>, Vec<u8>> {
        let (w, h) = (self.w, self.h);
        let mut rng = Rng::new(self.alpha_seed);
        let mut a = vec![0.0f32; w * h];
        let cell = rng.range(0.15, 0.4) * (w.min(h) as f32);
        add_value_noise(&mut a, w, h, cell, 0.25, &mut rng);
        let cx = rng.range(0.3, 0.7) * w as f32;
        let cy = rng.range(0.3, 0.7) * h as f32;
        let floor = rng.range(0.1, 0.7);
        let inv = 1.0 / (w as f32).hypot(h as f32) * 2.0;
        let mut out = Vec::with_capacity(w * h * 4);
        for (i, p) in self.px.iter().enumerate() {
            let (x, y) = ((i % w) as f32, (i / w) as f32);
            let d = ((x - cx).hypot(y - cy) * inv).min(1.0);
            let al = 1.0 - (1.0 - floor) * smoothstep(d) + a[i];
            out.extend(p.map(|v| (v * 255.0 + 0.5).clamp(0.0, 255.0) as u8));
            out.push((al * 255.0 + 0.5).clamp(0.0, 255.0) as u8);
        }
        ImageBuffer::from_raw(w as u32, h as u32, out).expect("buffer size")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ColorType, ImageFormat};
    use std::collections::BTreeSet;

    fn opts(dir: &Path, count: u64) -> GenOptions {
        GenOptions {
            out: dir.to_path_buf(),
            count,
            seed: 7,
            format: GenFormat::Jpeg,
            size: Some((96, 80)),
            classes: 0,
            jpeg_quality: 90,
        }
    }

    /// All files under `dir`, relative path → bytes.
    fn read_tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(dir).unwrap().to_path_buf();
                    out.push((rel, fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn gen_is_deterministic() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let mut o = opts(a.path(), 26);
        o.format = GenFormat::Mixed;
        o.size = Some((150, 110));
        let ra = generate(&o).unwrap();
        o.out = b.path().to_path_buf();
        let rb = generate(&o).unwrap();
        assert_eq!(ra, rb);
        assert_eq!(ra.files, 26);
        let (ta, tb) = (read_tree(a.path()), read_tree(b.path()));
        assert_eq!(ta.len(), 26);
        assert_eq!(ta, tb);
        assert_eq!(
            ra.bytes,
            ta.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
        );
        assert!(ta.iter().all(|(p, _)| p.extension().unwrap() != "tmp"));
        let names: Vec<String> = ta
            .iter()
            .map(|(p, _)| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names[0], "img_000000");
        assert_eq!(names[25], "img_000025");
    }

    #[test]
    fn gen_seed_changes_content() {
        let a = render(1, 0, 64, 64);
        let b = render(2, 0, 64, 64);
        let c = render(1, 1, 64, 64);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, render(1, 0, 64, 64));
    }

    #[test]
    fn gen_mixed_produces_every_format() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(dir.path(), 24);
        o.format = GenFormat::Mixed;
        o.seed = 12345;
        let report = generate(&o).unwrap();
        assert_eq!(report.files, 24);
        assert_eq!(report.pixels, 24 * 96 * 80);
        let mut seen = BTreeSet::new();
        let mut jpegs = 0;
        for (path, bytes) in read_tree(dir.path()) {
            let fmt = image::guess_format(&bytes).unwrap();
            let img = image::load_from_memory(&bytes).unwrap();
            assert_eq!((img.width(), img.height()), (96, 80), "{path:?}");
            let ext = path.extension().unwrap().to_str().unwrap();
            let expected_ext = match fmt {
                ImageFormat::Jpeg => "jpg",
                ImageFormat::Png => "png",
                ImageFormat::Bmp => "bmp",
                ImageFormat::Tiff => "tif",
                ImageFormat::WebP => "webp",
                ImageFormat::Gif => "gif",
                other => panic!("unexpected format {other:?}"),
            };
            assert_eq!(ext, expected_ext);
            if fmt == ImageFormat::Jpeg {
                jpegs += 1;
            }
            if img.color() == ColorType::Rgb16 {
                // Real 16-bit precision, not 8-bit values times 257.
                let raw = img.to_rgb16().into_raw();
                assert!(raw.iter().any(|v| v % 257 != 0));
            }
            let color = match fmt {
                ImageFormat::Png => format!("{:?}", img.color()),
                _ => String::new(),
            };
            seen.insert(format!("{fmt:?}{color}"));
        }
        let want: BTreeSet<String> = [
            "Jpeg", "PngRgb8", "PngRgb16", "PngL8", "PngRgba8", "Bmp", "Tiff", "WebP", "Gif",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(seen, want);
        assert_eq!(jpegs, 16);
    }

    #[test]
    fn gen_varied_sizes_in_range() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(dir.path(), 6);
        o.size = None;
        let report = generate(&o).unwrap();
        let mut sizes = BTreeSet::new();
        let mut pixels = 0;
        for (i, (_, bytes)) in read_tree(dir.path()).into_iter().enumerate() {
            let img = image::load_from_memory(&bytes).unwrap();
            let (w, h) = (img.width(), img.height());
            assert!((MIN_SIDE..=MAX_SIDE).contains(&w), "{w}");
            assert!((MIN_SIDE..=MAX_SIDE).contains(&h), "{h}");
            assert_eq!((w, h), image_size(&o, i as u64));
            sizes.insert((w, h));
            pixels += u64::from(w) * u64::from(h);
        }
        assert_eq!(report.pixels, pixels);
        assert!(sizes.len() > 1, "sizes should vary: {sizes:?}");
    }

    #[test]
    fn gen_content_is_not_constant() {
        let mut mins = BTreeSet::new();
        let mut maxs = BTreeSet::new();
        for i in 0..12 {
            let img = render(99, i, 128, 96);
            let raw = img.as_raw();
            let lo = *raw.iter().min().unwrap();
            let hi = *raw.iter().max().unwrap();
            assert!(hi - lo > 40, "image {i} too flat: {lo}..{hi}");
            let mean = raw.iter().map(|&v| f64::from(v)).sum::<f64>() / raw.len() as f64;
            let var = raw
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / raw.len() as f64;
            assert!(var.sqrt() > 5.0, "image {i} std {}", var.sqrt());
            // Not flat noise: neighbouring pixels are strongly correlated.
            let diff = raw
                .chunks_exact(3)
                .zip(raw.chunks_exact(3).skip(1))
                .map(|(a, b)| (i32::from(a[1]) - i32::from(b[1])).unsigned_abs())
                .sum::<u32>() as f64
                / (raw.len() / 3) as f64;
            assert!(diff < var.sqrt(), "image {i} looks like noise: {diff}");
            mins.insert(lo);
            maxs.insert(hi);
        }
        assert!(mins.len() > 3 && maxs.len() > 3, "{mins:?} {maxs:?}");
        assert!(mins.iter().any(|&m| m > 0) && maxs.iter().any(|&m| m < 255));
    }

    #[test]
    fn gen_png_matches_render() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(dir.path(), 2);
        o.format = GenFormat::Png;
        generate(&o).unwrap();
        for i in 0..2 {
            let bytes = fs::read(dir.path().join(format!("img_{i:06}.png"))).unwrap();
            let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
            assert_eq!(img, render(o.seed, i, 96, 80));
        }
    }

    #[test]
    fn gen_class_folders() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(dir.path(), 7);
        o.classes = 3;
        generate(&o).unwrap();
        let tree: Vec<PathBuf> = read_tree(dir.path()).into_iter().map(|(p, _)| p).collect();
        let want: Vec<PathBuf> = [
            "class_000/img_000000.jpg",
            "class_000/img_000003.jpg",
            "class_000/img_000006.jpg",
            "class_001/img_000001.jpg",
            "class_001/img_000004.jpg",
            "class_002/img_000002.jpg",
            "class_002/img_000005.jpg",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(tree, want);
        assert_eq!(
            relative_path(&o, 4),
            PathBuf::from("class_001/img_000004.jpg")
        );
    }

    #[test]
    fn gen_errors_carry_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not_a_dir");
        fs::write(&file, b"x").unwrap();
        let o = opts(&file.join("sub"), 1);
        let err = generate(&o).unwrap_err();
        assert!(matches!(&err, GenError::CreateDir { path, .. } if path.starts_with(&file)));
        assert!(err.to_string().contains("not_a_dir"), "{err}");

        let mut o = opts(dir.path(), 1);
        o.jpeg_quality = 0;
        assert!(matches!(generate(&o), Err(GenError::InvalidOptions(_))));
        o.jpeg_quality = 90;
        o.size = Some((0, 10));
        assert!(matches!(generate(&o), Err(GenError::InvalidOptions(_))));
    }

    #[test]
    fn gen_zero_count_and_format_names() {
        let dir = tempfile::tempdir().unwrap();
        let report = generate(&opts(&dir.path().join("empty"), 0)).unwrap();
        assert_eq!(report, GenReport::default());
        assert!(dir.path().join("empty").is_dir());
        for f in [GenFormat::Jpeg, GenFormat::Png, GenFormat::Mixed] {
            assert_eq!(f.as_str().parse::<GenFormat>().unwrap(), f);
        }
        assert!("gif".parse::<GenFormat>().is_err());
    }

    /// Release-mode timing and size check:
    /// `cargo test --release -p imgnorm-tools --lib gen_stats -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn gen_stats() {
        let t = std::time::Instant::now();
        let n = 40;
        for i in 0..n {
            std::hint::black_box(render(3, i, 512, 512));
        }
        let per = t.elapsed() / n as u32;
        let t = std::time::Instant::now();
        for i in 0..n {
            std::hint::black_box(Field::synth(3, i, 512, 512));
        }
        println!("synth only: {:?}", t.elapsed() / n as u32);
        let mut sizes = Vec::new();
        for i in 0..n {
            let field = Field::synth(3, i, 512, 512);
            let o = GenOptions::new("unused", 1);
            sizes.push(encode(&field, FileKind::Jpeg, &o).unwrap().len() / 1024);
        }
        sizes.sort();
        println!("render 512x512: {per:?}; jpeg q90 KiB: {sizes:?}");
    }
}
