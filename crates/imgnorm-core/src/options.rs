//! Engine options: what a job asks of every image (scope, output range, dtype,
//! channel handling, limits). Parsed once at the edge, then passed around
//! validated; serialised as JSON into the protocol's `JobSpec`.
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Over which values min and max are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One min and max over every pixel and channel of the image (OpenCV's
    /// `cv2.normalize(img, None, a, b, NORM_MINMAX, CV_32F)`).
    #[default]
    Image,
    /// Each channel scaled with its own min and max.
    Channel,
    /// One min and max for the whole dataset (over all channels, or per
    /// channel with [`EngineOptions::per_channel`]): a statistics phase over
    /// every image, then the scaling phase. See [`crate::dataset`].
    Dataset,
    /// The sample type's full range: `0..=255` for 8-bit images,
    /// `0..=65535` for 16-bit ones (torchvision's `ToTensor`). Needs no
    /// statistics; the default input of `--standardize`.
    Full,
}

/// Element type of the output arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// IEEE float32 (`<f4`).
    #[default]
    F32,
    /// IEEE float16 (`<f2`).
    F16,
    /// Unsigned 8 bit (`|u1`), rounded and saturated.
    U8,
    /// Unsigned 16 bit (`<u2`), rounded and saturated.
    U16,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::U16 => 2,
            Dtype::U8 => 1,
        }
    }

    /// The numpy `descr` string of this dtype.
    pub fn descr(self) -> &'static str {
        match self {
            Dtype::F32 => "<f4",
            Dtype::F16 => "<f2",
            Dtype::U8 => "|u1",
            Dtype::U16 => "<u2",
        }
    }

    /// The name `--dtype` takes (`f32`, `f16`, `u8`, `u16`).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::U8 => "u8",
            Dtype::U16 => "u16",
        }
    }

    /// The output range used when the user gives none.
    pub fn default_range(self) -> (f64, f64) {
        match self {
            Dtype::F32 | Dtype::F16 => (0.0, 1.0),
            Dtype::U8 => (0.0, 255.0),
            Dtype::U16 => (0.0, 65535.0),
        }
    }

    /// Lowest and highest value this dtype can hold.
    pub fn limits(self) -> (f64, f64) {
        match self {
            Dtype::F32 => (f32::MIN as f64, f32::MAX as f64),
            Dtype::F16 => (-65504.0, 65504.0),
            Dtype::U8 => (0.0, 255.0),
            Dtype::U16 => (0.0, 65535.0),
        }
    }
}

/// What to do with the channels of the decoded image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChannelMode {
    /// As stored: gray, gray+alpha, RGB or RGBA (palettes expanded).
    #[default]
    Keep,
    /// Three channels: gray replicated, alpha dropped.
    Rgb,
    /// One channel: BT.601 luma (as OpenCV's `COLOR_RGB2GRAY`), alpha dropped.
    Gray,
}

/// Whether the EXIF orientation tag is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Orientation {
    /// Pixels as stored, like OpenCV's `IMREAD_UNCHANGED` (the reference).
    #[default]
    Ignore,
    /// Rotate/flip as the EXIF tag says, like `IMREAD_COLOR` and most viewers.
    Apply,
}

/// Default refusal threshold for decoded size, in pixels (width × height).
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// Default refusal threshold for an input file's size, in bytes (1 GiB):
/// larger files fail before a byte of them is read, in every mode.
pub const DEFAULT_MAX_INPUT_BYTES: u64 = 1 << 30;

fn default_max_input_bytes() -> u64 {
    DEFAULT_MAX_INPUT_BYTES
}

/// Everything the engine needs to turn one input file into one output array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineOptions {
    /// Min/max scope.
    pub scope: Scope,
    /// Output range `[a, b]`; `a` may be greater than `b` (inverted scale).
    pub range: (f64, f64),
    /// Output element type.
    pub dtype: Dtype,
    /// Channel handling.
    pub channels: ChannelMode,
    /// EXIF orientation handling.
    pub orientation: Orientation,
    /// Images whose header claims more pixels are refused before decoding.
    pub max_pixels: u64,
    /// Input files larger than this (from their metadata, object-store
    /// size or upload size) are refused before they are read.
    #[serde(default = "default_max_input_bytes")]
    pub max_input_bytes: u64,
    /// Accept truncated JPEGs (missing part filled) with a warning instead of
    /// failing them.
    pub allow_truncated: bool,
    /// Coordination only: workers skip reading and decoding and report every
    /// file as skipped ("dry run"). Measures the master, not the engine.
    #[serde(default)]
    pub dry_run: bool,
    /// Resize and crop between decoding and scaling (none by default).
    #[serde(default)]
    pub geometry: Geometry,
    /// Layout of the output dataset (a `.npy` tree by default).
    #[serde(default)]
    pub format: OutputFormat,
    /// Axis order of every array: H×W×C (default) or C×H×W (PyTorch).
    #[serde(default)]
    pub layout: ArrayLayout,
    /// With [`Scope::Dataset`]: one min and max per channel instead of one
    /// over all channels.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub per_channel: bool,
    /// Z-score after the min-max scaling (see [`crate::dataset`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standardize: Option<Standardize>,
    /// `--scope dataset` with a given dataset minimum (`--stats-from`: a
    /// previous run's), one value or one per channel; empty: measured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dataset_min: Vec<u32>,
    /// The given dataset maximum, as `dataset_min`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dataset_max: Vec<u32>,
    /// The class list labels index (`--stats-from`: a previous run's), so
    /// that splits agree; `None`: this run's sorted class folders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
}

/// `--layout`: the axis order of the arrays written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArrayLayout {
    /// Height, width, channels (numpy/OpenCV/PIL order).
    #[default]
    Hwc,
    /// Channels, height, width (PyTorch order).
    Chw,
}

impl ArrayLayout {
    /// The array shape of an image of `h`×`w` pixels and `c` channels.
    pub fn shape(self, h: usize, w: usize, c: usize) -> [usize; 3] {
        match self {
            ArrayLayout::Hwc => [h, w, c],
            ArrayLayout::Chw => [c, h, w],
        }
    }

    /// Reorders `body` (H×W×C elements of `size` bytes) into this layout.
    pub fn arrange(self, body: &mut [u8], channels: usize, size: usize) {
        if self == ArrayLayout::Hwc || channels < 2 {
            return;
        }
        let src = body.to_vec();
        let plane = src.len() / (channels * size);
        for (i, px) in src.chunks_exact(channels * size).enumerate() {
            for (c, elem) in px.chunks_exact(size).enumerate() {
                let at = (c * plane + i) * size;
                body[at..at + size].copy_from_slice(elem);
            }
        }
    }
}

/// `--standardize`: `(u - mean[c]) / std[c]` per channel, where `u` is the
/// min-max output of the job's scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Standardize {
    /// Per-channel means (one value: every channel). Empty: computed over
    /// the dataset in a statistics phase, together with `std`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mean: Vec<f64>,
    /// Per-channel standard deviations, same rules as `mean`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub std: Vec<f64>,
}

impl Standardize {
    /// True when mean and std come from the dataset (a statistics phase).
    pub fn computed(&self) -> bool {
        self.mean.is_empty()
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            scope: Scope::Image,
            range: Dtype::F32.default_range(),
            dtype: Dtype::F32,
            channels: ChannelMode::Keep,
            orientation: Orientation::Ignore,
            max_pixels: DEFAULT_MAX_PIXELS,
            max_input_bytes: DEFAULT_MAX_INPUT_BYTES,
            allow_truncated: false,
            dry_run: false,
            geometry: Geometry::default(),
            format: OutputFormat::default(),
            layout: ArrayLayout::Hwc,
            per_channel: false,
            dataset_min: Vec::new(),
            dataset_max: Vec::new(),
            classes: None,
            standardize: None,
        }
    }
}

/// Options that cannot be honoured.
#[derive(Debug, Error, PartialEq)]
pub enum OptionsError {
    /// A range bound is NaN or infinite.
    #[error("range bounds must be finite numbers, got {0},{1}")]
    NotFinite(f64, f64),
    /// A range bound does not fit the output dtype.
    #[error("range {a},{b} does not fit dtype {dtype} (limits {lo},{hi})")]
    OutOfDtype {
        /// Lower bound asked for.
        a: f64,
        /// Upper bound asked for.
        b: f64,
        /// The dtype's name.
        dtype: &'static str,
        /// The dtype's lowest value.
        lo: f64,
        /// The dtype's highest value.
        hi: f64,
    },
    /// The pixel limit is zero.
    #[error("max pixels must be at least 1")]
    ZeroMaxPixels,
    /// The input size limit is zero.
    #[error("--max-input-bytes must be at least 1")]
    ZeroMaxInputBytes,
    /// `--format stack` without a fixed array shape.
    #[error(
        "--format stack needs one shape for every image: give --resize WxH or --center-crop WxH, and --channels rgb or gray"
    )]
    StackNeedsShape,
    /// A webdataset shard size of zero.
    #[error("--shard-size must be at least 1")]
    ZeroShardSize,
    /// `--per-channel` only applies to `--scope dataset`.
    #[error("--per-channel needs --scope dataset (image scope has --scope channel)")]
    PerChannelScope,
    /// A given dataset min/max that does not fit the options.
    #[error(
        "a given dataset min/max needs --scope dataset and one value (one per channel with --per-channel), min <= max"
    )]
    GivenDatasetRange,
    /// `--stats-from` could not be used.
    #[error("--stats-from {path}: {why}")]
    StatsFrom {
        /// The file given.
        path: String,
        /// Why it cannot be used.
        why: String,
    },
    /// Z-scores do not fit integer outputs.
    #[error("--standardize needs a float output (--dtype f32 or f16), got --dtype {0}")]
    StandardizeDtype(&'static str),
    /// Only one of mean and std given, or lists of different lengths.
    #[error(
        "--mean and --std go together, with the same number of values (1 to 4); got {mean} and {std}"
    )]
    MeanStdShape {
        /// Number of means.
        mean: usize,
        /// Number of standard deviations.
        std: usize,
    },
    /// A mean or std that cannot standardize.
    #[error("--mean values must be finite and --std values finite and > 0")]
    MeanStdValue,
}

impl EngineOptions {
    /// Checks that the options can be honoured.
    pub fn validate(&self) -> Result<(), OptionsError> {
        let (a, b) = self.range;
        if !a.is_finite() || !b.is_finite() {
            return Err(OptionsError::NotFinite(a, b));
        }
        let (lo, hi) = self.dtype.limits();
        if a < lo || a > hi || b < lo || b > hi {
            return Err(OptionsError::OutOfDtype {
                a,
                b,
                dtype: self.dtype.descr(),
                lo,
                hi,
            });
        }
        if self.max_pixels == 0 {
            return Err(OptionsError::ZeroMaxPixels);
        }
        if self.max_input_bytes == 0 {
            return Err(OptionsError::ZeroMaxInputBytes);
        }
        if self.per_channel && self.scope != Scope::Dataset {
            return Err(OptionsError::PerChannelScope);
        }
        let given = (self.dataset_min.len(), self.dataset_max.len());
        if given != (0, 0)
            && (self.scope != Scope::Dataset
                || given.0 != given.1
                || given.0 > 4
                || (!self.per_channel && given.0 != 1)
                || self
                    .dataset_min
                    .iter()
                    .zip(&self.dataset_max)
                    .any(|(lo, hi)| lo > hi))
        {
            return Err(OptionsError::GivenDatasetRange);
        }
        if let Some(z) = &self.standardize {
            if !matches!(self.dtype, Dtype::F32 | Dtype::F16) {
                return Err(OptionsError::StandardizeDtype(self.dtype.name()));
            }
            let (m, s) = (z.mean.len(), z.std.len());
            if m != s || m > 4 {
                return Err(OptionsError::MeanStdShape { mean: m, std: s });
            }
            if z.mean.iter().any(|v| !v.is_finite())
                || z.std.iter().any(|v| !v.is_finite() || *v <= 0.0)
            {
                return Err(OptionsError::MeanStdValue);
            }
        }
        self.validate_layout()
    }

    /// True when the job needs a statistics phase over the whole dataset
    /// before any output is written.
    pub fn two_phase(&self) -> bool {
        (self.scope == Scope::Dataset && self.dataset_min.is_empty())
            || self.standardize.as_ref().is_some_and(|z| z.computed())
    }

    /// The checks on geometry and output format (kept apart from the
    /// scaling checks above).
    fn validate_layout(&self) -> Result<(), OptionsError> {
        match self.format {
            OutputFormat::Stack if self.stack_shape().is_none() => {
                Err(OptionsError::StackNeedsShape)
            }
            OutputFormat::Webdataset { shard_size: 0 } => Err(OptionsError::ZeroShardSize),
            _ => Ok(()),
        }
    }

    /// The shape `[H, W, C]` every array has, when the options fix it: the
    /// geometry gives a fixed size and the channel mode a fixed count.
    pub fn stack_shape(&self) -> Option<[usize; 3]> {
        let (w, h) = self.geometry.fixed_size()?;
        let c = match self.channels {
            ChannelMode::Keep => return None,
            ChannelMode::Rgb => 3,
            ChannelMode::Gray => 1,
        };
        Some([h as usize, w as usize, c])
    }
}

/// How the output dataset is laid out (see docs/FORMAT.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// One `.npy` per image, mirroring the input tree.
    #[default]
    Npy,
    /// Tar shards of `<key>.npy` + `<key>.json`, read by the `webdataset`
    /// library.
    Webdataset {
        /// Samples (ok images) per shard.
        shard_size: u64,
    },
    /// One `images.npy` of shape N×H×W×C plus labels.
    Stack,
}

/// Default samples per webdataset shard.
pub const DEFAULT_SHARD_SIZE: u64 = 1000;

/// How an image is resized before scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resize {
    /// Exactly `width × height` (the aspect ratio may change).
    Exact {
        /// Output width.
        width: u32,
        /// Output height.
        height: u32,
    },
    /// The shorter side becomes `size`, the longer one keeps the aspect
    /// ratio (rounded down), like torchvision's `Resize(size)`.
    Shorter {
        /// Length of the shorter side.
        size: u32,
    },
    /// The largest size that fits inside `width × height` keeping the aspect
    /// ratio (one side equals the box, the other is rounded down); no
    /// padding, so sizes vary.
    Fit {
        /// Box width.
        width: u32,
        /// Box height.
        height: u32,
    },
}

/// Resampling filter of a resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    /// Bilinear (triangle) convolution, antialiased when shrinking.
    #[default]
    Bilinear,
    /// Lanczos with a = 3: sharper, slower.
    Lanczos3,
}

/// Geometry applied between decoding and scaling: an optional resize, then
/// an optional center crop. Channels are resampled independently (alpha is
/// not premultiplied) at the source precision: 16-bit stays 16-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Geometry {
    /// Resize, if any.
    pub resize: Option<Resize>,
    /// Center crop `(width, height)` after the resize, if any.
    pub center_crop: Option<(u32, u32)>,
    /// Filter of the resize.
    pub filter: Filter,
}

/// What [`Geometry::plan`] decided for one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeometryPlan {
    /// Resize to `(width, height)`, when it changes the size.
    pub resize_to: Option<(u32, u32)>,
    /// Crop `(left, top, width, height)` of the resized image.
    pub crop: Option<(u32, u32, u32, u32)>,
}

/// An image the geometry cannot be applied to (a per-image failure).
#[derive(Debug, Error, PartialEq)]
pub enum GeometryError {
    /// The center crop is larger than the (resized) image.
    #[error(
        "image is {width}x{height} (after any resize), smaller than the center crop {crop_w}x{crop_h}"
    )]
    CropTooLarge {
        /// Image width before cropping.
        width: u32,
        /// Image height before cropping.
        height: u32,
        /// Crop width.
        crop_w: u32,
        /// Crop height.
        crop_h: u32,
    },
}

impl Geometry {
    /// True when the geometry leaves every image as decoded.
    pub fn is_identity(&self) -> bool {
        self.resize.is_none() && self.center_crop.is_none()
    }

    /// `(width, height)` of every output, when fixed by the options.
    pub fn fixed_size(&self) -> Option<(u32, u32)> {
        match (self.center_crop, self.resize) {
            (Some(c), _) => Some(c),
            (None, Some(Resize::Exact { width, height })) => Some((width, height)),
            _ => None,
        }
    }

    /// The resize and crop for an image of `width × height` (both > 0).
    pub fn plan(&self, width: u32, height: u32) -> Result<GeometryPlan, GeometryError> {
        let (w, h) = (u64::from(width), u64::from(height));
        let size = match self.resize {
            None => (w, h),
            Some(Resize::Exact { width, height }) => (u64::from(width), u64::from(height)),
            Some(Resize::Shorter { size }) => {
                let s = u64::from(size);
                if w <= h {
                    (s, (s * h / w).max(1))
                } else {
                    ((s * w / h).max(1), s)
                }
            }
            Some(Resize::Fit { width, height }) => {
                let (bw, bh) = (u64::from(width), u64::from(height));
                // w/h >= bw/bh: the width is the limiting side.
                if w * bh >= h * bw {
                    (bw, (h * bw / w).max(1))
                } else {
                    ((w * bh / h).max(1), bh)
                }
            }
        };
        // Both sides are at most u32::MAX: the scaled side never exceeds the
        // requested one in `Fit`, and `Shorter` clamps below.
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        let (rw, rh) = (clamp(size.0), clamp(size.1));
        let resize_to = ((rw, rh) != (width, height)).then_some((rw, rh));
        let crop = match self.center_crop {
            None => None,
            Some((cw, ch)) if cw > rw || ch > rh => {
                return Err(GeometryError::CropTooLarge {
                    width: rw,
                    height: rh,
                    crop_w: cw,
                    crop_h: ch,
                });
            }
            Some((cw, ch)) if (cw, ch) == (rw, rh) => None,
            Some((cw, ch)) => Some((half_even(rw - cw), half_even(rh - ch), cw, ch)),
        };
        Ok(GeometryPlan { resize_to, crop })
    }
}

/// `round(d / 2)` with ties to even, as Python's `round` in torchvision's
/// `CenterCrop` offsets.
fn half_even(d: u32) -> u32 {
    let k = d / 2;
    if d % 2 == 1 && k % 2 == 1 { k + 1 } else { k }
}

#[cfg(test)]
mod geometry_tests {
    use super::*;

    fn g(resize: Option<Resize>, crop: Option<(u32, u32)>) -> Geometry {
        Geometry {
            resize,
            center_crop: crop,
            filter: Filter::Bilinear,
        }
    }

    #[test]
    fn resize_modes() {
        let exact = g(
            Some(Resize::Exact {
                width: 8,
                height: 4,
            }),
            None,
        );
        assert_eq!(exact.plan(100, 50).unwrap().resize_to, Some((8, 4)));
        assert_eq!(exact.plan(8, 4).unwrap().resize_to, None);
        let shorter = g(Some(Resize::Shorter { size: 256 }), None);
        assert_eq!(shorter.plan(640, 480).unwrap().resize_to, Some((341, 256)));
        assert_eq!(shorter.plan(480, 640).unwrap().resize_to, Some((256, 341)));
        let fit = g(
            Some(Resize::Fit {
                width: 100,
                height: 100,
            }),
            None,
        );
        assert_eq!(fit.plan(400, 200).unwrap().resize_to, Some((100, 50)));
        assert_eq!(fit.plan(200, 400).unwrap().resize_to, Some((50, 100)));
        assert_eq!(fit.plan(1000, 1).unwrap().resize_to, Some((100, 1)));
    }

    #[test]
    fn center_crop_offsets_follow_torchvision() {
        let c = g(None, Some((4, 4)));
        // (10-4)/2 = 3; (7-4)/2 = 1.5 rounds to 2 (ties to even).
        assert_eq!(c.plan(10, 7).unwrap().crop, Some((3, 2, 4, 4)));
        // (9-4)/2 = 2.5 rounds to 2.
        assert_eq!(c.plan(9, 4).unwrap().crop, Some((2, 0, 4, 4)));
        assert_eq!(c.plan(4, 4).unwrap().crop, None);
        assert!(matches!(
            c.plan(3, 10),
            Err(GeometryError::CropTooLarge { width: 3, .. })
        ));
    }

    #[test]
    fn stack_needs_a_fixed_shape() {
        let mut o = EngineOptions {
            format: OutputFormat::Stack,
            ..EngineOptions::default()
        };
        assert_eq!(o.validate(), Err(OptionsError::StackNeedsShape));
        o.geometry = g(Some(Resize::Shorter { size: 8 }), Some((8, 6)));
        assert_eq!(o.validate(), Err(OptionsError::StackNeedsShape));
        o.channels = ChannelMode::Rgb;
        assert_eq!(o.validate(), Ok(()));
        assert_eq!(o.stack_shape(), Some([6, 8, 3]));
    }

    #[test]
    fn old_option_json_still_parses() {
        let mut v = serde_json::to_value(EngineOptions::default()).unwrap();
        let m = v.as_object_mut().unwrap();
        m.remove("geometry");
        m.remove("format");
        let o: EngineOptions = serde_json::from_value(v).unwrap();
        assert_eq!(o, EngineOptions::default());
        let wds = EngineOptions {
            format: OutputFormat::Webdataset { shard_size: 3 },
            ..EngineOptions::default()
        };
        let s = serde_json::to_string(&wds).unwrap();
        assert_eq!(serde_json::from_str::<EngineOptions>(&s).unwrap(), wds);
    }
}
