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
    /// Accept truncated JPEGs (missing part filled) with a warning instead of
    /// failing them.
    pub allow_truncated: bool,
    /// Coordination only: workers skip reading and decoding and report every
    /// file as skipped ("dry run"). Measures the master, not the engine.
    #[serde(default)]
    pub dry_run: bool,
    /// With [`Scope::Dataset`]: one min and max per channel instead of one
    /// over all channels.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub per_channel: bool,
    /// Z-score after the min-max scaling (see [`crate::dataset`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standardize: Option<Standardize>,
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
            allow_truncated: false,
            dry_run: false,
            per_channel: false,
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
    /// `--per-channel` only applies to `--scope dataset`.
    #[error("--per-channel needs --scope dataset (image scope has --scope channel)")]
    PerChannelScope,
    /// Z-scores do not fit integer outputs.
    #[error("--standardize needs a float output (--dtype f32 or f16), got {0}")]
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
        if self.per_channel && self.scope != Scope::Dataset {
            return Err(OptionsError::PerChannelScope);
        }
        if let Some(z) = &self.standardize {
            if !matches!(self.dtype, Dtype::F32 | Dtype::F16) {
                return Err(OptionsError::StandardizeDtype(self.dtype.descr()));
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
        Ok(())
    }

    /// True when the job needs a statistics phase over the whole dataset
    /// before any output is written.
    pub fn two_phase(&self) -> bool {
        self.scope == Scope::Dataset || self.standardize.as_ref().is_some_and(|z| z.computed())
    }
}
