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
        Ok(())
    }
}
