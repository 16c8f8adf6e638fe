//! The min-max kernel: extremes of decoded samples and their scaling into the
//! output dtype, plus the `.npy` header. Pure functions over slices; the
//! caller owns (and reuses) every buffer.
//!
//! Each output value is `a + (x - min) * (b - a) / (max - min)`, computed in
//! f64 and rounded once to the output type (round-half-away and saturation for
//! integer dtypes). Every sample type ([`SampleType`]) goes through the same
//! per-channel map ([`ChannelMap`]); how it is evaluated depends on the width:
//! samples of at most 16 bits (signed ones offset to a table index) go through
//! a lookup table built once per image over `min..=max` (per channel for
//! [`Scope::Channel`]), so the per-pixel work is one table load; 32-bit
//! samples (`uint32`, `int32`, `float32`) are computed per sample in f64 with
//! the same formula. The result is the correctly rounded value, within one
//! float32 step of OpenCV's `x*scale + shift` in float32. As in OpenCV, a
//! group whose `max - min` is at most `f64::EPSILON` is constant (the lower
//! range bound). Float images must be finite ([`Pixels::non_finite`]).
use crate::options::{Dtype, Scope};
use crate::sample::SampleType;

/// Decoded samples, interleaved by channel (`HWC`).
#[derive(Debug, Clone, Copy)]
pub enum Pixels<'a> {
    /// `uint8` samples.
    U8(&'a [u8]),
    /// `uint16` samples (native values, not bytes).
    U16(&'a [u16]),
    /// `int8` samples.
    I8(&'a [i8]),
    /// `int16` samples.
    I16(&'a [i16]),
    /// `uint32` samples.
    U32(&'a [u32]),
    /// `int32` samples.
    I32(&'a [i32]),
    /// `float32` samples (finite: see [`Pixels::non_finite`]).
    F32(&'a [f32]),
}

/// Runs `$body` with `$s` bound to the variant's slice, whatever the variant.
macro_rules! each {
    ($px:expr, $s:ident => $body:expr) => {
        match $px {
            Pixels::U8($s) => $body,
            Pixels::U16($s) => $body,
            Pixels::I8($s) => $body,
            Pixels::I16($s) => $body,
            Pixels::U32($s) => $body,
            Pixels::I32($s) => $body,
            Pixels::F32($s) => $body,
        }
    };
}

impl<'a> Pixels<'a> {
    /// Views `bytes` (native-endian samples of type `ty`, aligned to the
    /// type's size) as pixels; a misaligned or short tail is dropped, so a
    /// caller holding samples in a `u32` buffer never fails here.
    pub fn from_bytes(ty: SampleType, bytes: &'a [u8]) -> Pixels<'a> {
        fn cast<T: bytemuck::Pod>(b: &[u8]) -> &[T] {
            let n = b.len() / std::mem::size_of::<T>() * std::mem::size_of::<T>();
            bytemuck::try_cast_slice(&b[..n]).unwrap_or_default()
        }
        match ty {
            SampleType::Uint8 => Pixels::U8(bytes),
            SampleType::Uint16 => Pixels::U16(cast(bytes)),
            SampleType::Int8 => Pixels::I8(cast(bytes)),
            SampleType::Int16 => Pixels::I16(cast(bytes)),
            SampleType::Uint32 => Pixels::U32(cast(bytes)),
            SampleType::Int32 => Pixels::I32(cast(bytes)),
            SampleType::Float32 => Pixels::F32(cast(bytes)),
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        each!(self, s => s.len())
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples `start..end` (clamped to the length).
    pub fn range(&self, start: usize, end: usize) -> Pixels<'a> {
        let cut = |n: usize| (start.min(n), end.clamp(start.min(n), n));
        match *self {
            Pixels::U8(s) => {
                let (a, b) = cut(s.len());
                Pixels::U8(&s[a..b])
            }
            Pixels::U16(s) => {
                let (a, b) = cut(s.len());
                Pixels::U16(&s[a..b])
            }
            Pixels::I8(s) => {
                let (a, b) = cut(s.len());
                Pixels::I8(&s[a..b])
            }
            Pixels::I16(s) => {
                let (a, b) = cut(s.len());
                Pixels::I16(&s[a..b])
            }
            Pixels::U32(s) => {
                let (a, b) = cut(s.len());
                Pixels::U32(&s[a..b])
            }
            Pixels::I32(s) => {
                let (a, b) = cut(s.len());
                Pixels::I32(&s[a..b])
            }
            Pixels::F32(s) => {
                let (a, b) = cut(s.len());
                Pixels::F32(&s[a..b])
            }
        }
    }

    /// The samples' type.
    pub fn sample_type(&self) -> SampleType {
        match self {
            Pixels::U8(_) => SampleType::Uint8,
            Pixels::U16(_) => SampleType::Uint16,
            Pixels::I8(_) => SampleType::Int8,
            Pixels::I16(_) => SampleType::Int16,
            Pixels::U32(_) => SampleType::Uint32,
            Pixels::I32(_) => SampleType::Int32,
            Pixels::F32(_) => SampleType::Float32,
        }
    }

    /// Bits per sample.
    pub fn bit_depth(&self) -> u32 {
        self.sample_type().bits()
    }

    /// Sample `i` as an f64 (exact for every type); 0 past the end.
    pub fn value(&self, i: usize) -> f64 {
        each!(self, s => s.get(i).map_or(0.0, |v| v.to_f64()))
    }

    /// The index of the first NaN or infinite sample, if any (only float
    /// samples can have one). Min-max scaling is undefined there: OpenCV
    /// gives NaN or zeros depending on where the value sits, so the engine
    /// refuses such images.
    pub fn non_finite(&self) -> Option<usize> {
        match self {
            Pixels::F32(s) => s.iter().position(|v| !v.is_finite()),
            _ => None,
        }
    }
}

/// A sample type the kernel reads.
pub(crate) trait Sample: Copy + PartialOrd + 'static {
    /// The value, exactly.
    fn to_f64(self) -> f64;
    /// Table index (value minus the type's [`SampleType::table_offset`]);
    /// only meaningful for types of at most 16 bits.
    fn key(self) -> usize;
    /// The value as an integer; only meaningful for integer types.
    fn to_i64(self) -> i64;
}

macro_rules! sample {
    ($t:ty, $off:expr) => {
        impl Sample for $t {
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn key(self) -> usize {
                (i64::from(self) - $off) as usize
            }
            #[inline]
            fn to_i64(self) -> i64 {
                i64::from(self)
            }
        }
    };
}
sample!(u8, 0);
sample!(u16, 0);
sample!(i8, -128);
sample!(i16, -32768);
sample!(u32, 0);
sample!(i32, 0);

impl Sample for f32 {
    #[inline]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline]
    fn key(self) -> usize {
        0
    }
    #[inline]
    fn to_i64(self) -> i64 {
        self as i64
    }
}

/// Minimum and maximum sample values: one entry for [`Scope::Image`], one per
/// channel for [`Scope::Channel`]. Values of the image's sample type, as f64.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Extremes {
    /// Smallest sample of each group.
    pub min: Vec<f64>,
    /// Largest sample of each group.
    pub max: Vec<f64>,
}

impl Extremes {
    /// True when some group is constant (see [`constant`]); that group's
    /// output is filled with the lower range bound.
    pub fn constant(&self) -> bool {
        self.min
            .iter()
            .zip(&self.max)
            .any(|(&lo, &hi)| constant(lo, hi))
    }
}

/// OpenCV's rule: `lo..=hi` is constant when `hi - lo` is at most
/// `f64::EPSILON` (for integers: `hi == lo`).
#[inline]
pub fn constant(lo: f64, hi: f64) -> bool {
    // NaN extremes (never produced: see `extremes`) count as constant too.
    (hi - lo).partial_cmp(&f64::EPSILON) != Some(std::cmp::Ordering::Greater)
}

/// Extremes of `px` (with `channels` interleaved channels) over `scope`
/// ([`Scope::Dataset`] and [`Scope::Full`] group like [`Scope::Image`]).
/// Empty input gives `0` for every group; NaN samples are skipped (the
/// engine refuses images that have any).
pub fn extremes(px: Pixels<'_>, channels: usize, scope: Scope) -> Extremes {
    let channels = channels.max(1);
    let groups = match scope {
        Scope::Channel => channels,
        Scope::Image | Scope::Dataset | Scope::Full => 1,
    };
    let mut ext = match (px, groups) {
        (Pixels::U8(s), 1) => {
            let (lo, hi) = min_max(s);
            single(f64::from(lo), f64::from(hi))
        }
        (Pixels::U16(s), 1) => {
            let (lo, hi) = min_max(s);
            single(f64::from(lo), f64::from(hi))
        }
        // Integer comparisons for the common types, per channel.
        (Pixels::U8(s), _) => per_channel(s, channels),
        (Pixels::U16(s), _) => per_channel(s, channels),
        _ => each!(px, s => per_group(s, channels, groups)),
    };
    if px.len() < channels {
        ext.min.iter_mut().for_each(|v| *v = 0.0);
        ext.max.iter_mut().for_each(|v| *v = 0.0);
    }
    ext
}

fn single(lo: f64, hi: f64) -> Extremes {
    Extremes {
        min: vec![lo],
        max: vec![hi],
    }
}

/// Min and max of a slice in one pass written so that it vectorises.
fn min_max<T: Copy + Ord + Bounded>(s: &[T]) -> (T, T) {
    // Independent accumulators per lane let the compiler use SIMD min/max.
    const LANES: usize = 32;
    let mut lo = [T::MAX; LANES];
    let mut hi = [T::MIN; LANES];
    let mut chunks = s.chunks_exact(LANES);
    for chunk in &mut chunks {
        for i in 0..LANES {
            lo[i] = lo[i].min(chunk[i]);
            hi[i] = hi[i].max(chunk[i]);
        }
    }
    let mut l = T::MAX;
    let mut h = T::MIN;
    for i in 0..LANES {
        l = l.min(lo[i]);
        h = h.max(hi[i]);
    }
    for &v in chunks.remainder() {
        l = l.min(v);
        h = h.max(v);
    }
    (l, h)
}

/// Extremes of each channel of unsigned samples, compared as integers.
fn per_channel<T: Copy + Ord + Bounded + Into<u32>>(s: &[T], channels: usize) -> Extremes {
    let mut lo = vec![T::MAX; channels];
    let mut hi = vec![T::MIN; channels];
    for px in s.chunks_exact(channels) {
        for c in 0..channels {
            lo[c] = lo[c].min(px[c]);
            hi[c] = hi[c].max(px[c]);
        }
    }
    Extremes {
        min: lo.into_iter().map(|v| f64::from(v.into())).collect(),
        max: hi.into_iter().map(|v| f64::from(v.into())).collect(),
    }
}

/// Extremes per channel (`groups == channels`) or over all channels.
fn per_group<T: Sample>(s: &[T], channels: usize, groups: usize) -> Extremes {
    let mut lo = vec![f64::INFINITY; groups];
    let mut hi = vec![f64::NEG_INFINITY; groups];
    for px in s.chunks_exact(channels) {
        for (c, &v) in px.iter().enumerate() {
            let g = if groups == 1 { 0 } else { c };
            let v = v.to_f64();
            // NaN compares false both ways: skipped.
            if v < lo[g] {
                lo[g] = v;
            }
            if v > hi[g] {
                hi[g] = v;
            }
        }
    }
    for g in 0..groups {
        if lo[g] > hi[g] {
            (lo[g], hi[g]) = (0.0, 0.0);
        }
    }
    Extremes { min: lo, max: hi }
}

/// Integer sample types with known bounds.
trait Bounded {
    const MIN: Self;
    const MAX: Self;
}

impl Bounded for u8 {
    const MIN: u8 = 0;
    const MAX: u8 = u8::MAX;
}

impl Bounded for u16 {
    const MIN: u16 = 0;
    const MAX: u16 = u16::MAX;
}

/// The scaled value of sample `x` for a group with extremes `lo..=hi`.
#[inline]
pub(crate) fn scaled(x: f64, lo: f64, hi: f64, range: (f64, f64)) -> f64 {
    let (a, b) = range;
    if constant(lo, hi) {
        return a;
    }
    let t = (x - lo) / (hi - lo);
    // Hit both endpoints exactly, whatever the rounding of (b - a) * t.
    if x == hi { b } else { a + (b - a) * t }
}

/// What one channel maps its samples through: the min-max stage over
/// `lo..=hi` into `range`, then an optional standardization.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelMap {
    /// Min-max bounds.
    pub lo: f64,
    /// Min-max bounds.
    pub hi: f64,
    /// Output range of the min-max stage.
    pub range: (f64, f64),
    /// `(mean, std)` of the standardization, if any (`std > 0`).
    pub z: Option<(f64, f64)>,
}

impl ChannelMap {
    /// The output value of sample `x`, in f64 before rounding to the dtype
    /// (samples outside `lo..=hi` are clamped).
    #[inline]
    pub fn value(&self, x: f64) -> f64 {
        let u = scaled(x.clamp(self.lo, self.hi), self.lo, self.hi, self.range);
        match self.z {
            Some((m, s)) => (u - m) / s,
            None => u,
        }
    }
}

/// The maps and sample domains of the min-max kernel with `ext` (from
/// [`extremes`] over `scope`): one group per channel for
/// [`Scope::Channel`], else one.
pub fn scale_maps(
    channels: usize,
    scope: Scope,
    ext: &Extremes,
    range: (f64, f64),
) -> Vec<ChannelMap> {
    let groups = match scope {
        Scope::Channel => channels.max(1),
        Scope::Image | Scope::Dataset | Scope::Full => 1,
    };
    (0..groups)
        .map(|g| {
            let lo = ext.min.get(g).copied().unwrap_or(0.0);
            let hi = ext.max.get(g).copied().unwrap_or(0.0).max(lo);
            ChannelMap {
                lo,
                hi,
                range,
                z: None,
            }
        })
        .collect()
}

/// Scratch space reused across images so no per-image allocation happens on the
/// hot path.
///
/// For samples of at most 16 bits, the table holds each group's output
/// values as little-endian bytes. For 8-bit samples it covers all 256 values
/// (those outside `min..=max` hold the nearest endpoint's value), so the
/// per-sample work is one load and store; for 16-bit samples it covers
/// `min..=max` only and the index is clamped, which keeps the table small for
/// narrow ranges. For 32-bit samples the kernel keeps the maps and computes
/// each sample.
#[derive(Debug, Default)]
pub struct Kernel {
    lut: Vec<u8>,
    groups: Vec<Group>,
    /// Bytes per output value of the table.
    size: usize,
    /// 32-bit samples: each group's map, evaluated per sample.
    maps: Vec<ChannelMap>,
    dtype: Option<Dtype>,
    /// The sample value of table index 0 (`None`: no table, 32-bit samples).
    offset: Option<f64>,
}

/// One group's slice of the table.
#[derive(Debug, Clone, Copy)]
struct Group {
    /// Offset of the group's first entry, in bytes.
    off: usize,
    /// Index of the first entry (0 for 8-bit tables).
    lo: usize,
    /// Number of entries.
    entries: usize,
}

impl Kernel {
    /// A kernel with empty scratch space.
    pub fn new() -> Self {
        Kernel::default()
    }

    /// Scales `px` into `out` (little-endian bytes of `dtype`, appended after
    /// whatever `out` already holds, e.g. a `.npy` header) using `ext` from
    /// [`extremes`] with the same `scope`.
    #[allow(clippy::too_many_arguments)]
    pub fn scale_into(
        &mut self,
        px: Pixels<'_>,
        channels: usize,
        scope: Scope,
        ext: &Extremes,
        range: (f64, f64),
        dtype: Dtype,
        out: &mut Vec<u8>,
    ) {
        let base = out.len();
        out.resize(base + px.len() * dtype.size(), 0);
        self.scale_to_slice(px, channels, scope, ext, range, dtype, &mut out[base..]);
    }

    /// Like [`Kernel::scale_into`], but writes into `dst`, which should be
    /// `px.len() * dtype.size()` bytes long (a shorter `dst` gets the first
    /// values only). Lets the caller reuse an output buffer without zeroing it.
    #[allow(clippy::too_many_arguments)]
    pub fn scale_to_slice(
        &mut self,
        px: Pixels<'_>,
        channels: usize,
        scope: Scope,
        ext: &Extremes,
        range: (f64, f64),
        dtype: Dtype,
        dst: &mut [u8],
    ) {
        self.prepare_scale(px.sample_type(), channels, scope, ext, range, dtype);
        self.apply(px, dst);
    }

    /// Prepares [`Kernel::apply`] to scale samples of type `ty` as
    /// [`Kernel::scale_to_slice`] does. Lets a caller scale an image tile by
    /// tile, each tile written while it is in cache.
    pub fn prepare_scale(
        &mut self,
        ty: SampleType,
        channels: usize,
        scope: Scope,
        ext: &Extremes,
        range: (f64, f64),
        dtype: Dtype,
    ) {
        let maps = scale_maps(channels, scope, ext, range);
        let domains: Vec<(f64, f64)> = maps.iter().map(|m| (m.lo, m.hi)).collect();
        self.prepare_map(ty, &domains, &maps, dtype);
    }

    /// Writes the output of `px` as the last [`Kernel::prepare_scale`] or
    /// [`Kernel::prepare_map`] said into `dst` (`px.len()` values). `px`
    /// must start at a pixel (a multiple of the channel count into the
    /// image) when there is one group per channel.
    pub fn apply(&self, px: Pixels<'_>, dst: &mut [u8]) {
        if !self.maps.is_empty() {
            if let Some(dtype) = self.dtype {
                each!(px, s => compute(s, &self.maps, dtype, dst));
            }
            return;
        }
        let lut = &self.lut[..];
        match px {
            Pixels::U8(s) => self.gather_any(s, lut, dst),
            Pixels::U16(s) => self.gather_any(s, lut, dst),
            Pixels::I8(s) => self.gather_any(s, lut, dst),
            Pixels::I16(s) => self.gather_any(s, lut, dst),
            // A table kernel never sees 32-bit samples (prepared for
            // another type): nothing is written.
            Pixels::U32(_) | Pixels::I32(_) | Pixels::F32(_) => {}
        }
    }

    fn gather_any<T: Sample>(&self, s: &[T], lut: &[u8], dst: &mut [u8]) {
        match (self.groups.len(), self.size) {
            (0, _) => {}
            (1, 4) => gather::<4, T>(s, lut, self.groups[0], dst),
            (1, 2) => gather::<2, T>(s, lut, self.groups[0], dst),
            (1, 1) => gather::<1, T>(s, lut, self.groups[0], dst),
            (_, 4) => gather_channels::<4, T>(s, lut, &self.groups, dst),
            (_, 2) => gather_channels::<2, T>(s, lut, &self.groups, dst),
            _ => gather_channels::<1, T>(s, lut, &self.groups, dst),
        }
    }

    /// Writes `maps[c].value(x)` rounded to `dtype` for every sample `x` of
    /// channel `c` into `dst` (`px.len() * dtype.size()` bytes). `domains[c]`
    /// bounds channel `c`'s samples (from [`extremes`] with
    /// [`Scope::Channel`]); for types of at most 16 bits a table covers it
    /// (all 256 values for 8 bit), so each map is evaluated once per distinct
    /// sample, never per pixel. `domains.len() == maps.len()` is the channel
    /// count (or 1: every channel alike).
    pub fn map_to_slice(
        &mut self,
        px: Pixels<'_>,
        domains: &[(f64, f64)],
        maps: &[ChannelMap],
        dtype: Dtype,
        dst: &mut [u8],
    ) {
        self.prepare_map(px.sample_type(), domains, maps, dtype);
        self.apply(px, dst);
    }

    /// Prepares [`Kernel::apply`] to write `maps[c].value(x)` for samples
    /// of type `ty`, as [`Kernel::map_to_slice`] does.
    pub fn prepare_map(
        &mut self,
        ty: SampleType,
        domains: &[(f64, f64)],
        maps: &[ChannelMap],
        dtype: Dtype,
    ) {
        self.lut.clear();
        self.groups.clear();
        self.maps.clear();
        self.size = dtype.size();
        self.dtype = Some(dtype);
        self.offset = ty.table_offset();
        let Some(offset) = self.offset else {
            self.maps.extend_from_slice(maps);
            return;
        };
        for (&(lo, hi), map) in domains.iter().zip(maps) {
            let (first, last) = if ty.eight() {
                (0, 255)
            } else {
                let key = |v: f64| (v - offset).clamp(0.0, 65535.0) as usize;
                (key(lo), key(hi.max(lo)))
            };
            self.groups.push(Group {
                off: self.lut.len(),
                lo: first,
                entries: last - first + 1,
            });
            for k in first..=last {
                push_value(&mut self.lut, map.value(k as f64 + offset), dtype);
            }
        }
    }

    /// The value the table of the last [`Kernel::prepare_map`] or
    /// [`Kernel::prepare_scale`] holds for sample `x` of channel `c`,
    /// widened to f64: exactly what that call wrote for `x`, without
    /// evaluating the map again (statistics read it for every distinct
    /// sample, twice; on 16-bit photos that is up to 65,536 values per
    /// channel). Channel `c` reads group `c`, or the only group of a
    /// one-group table (`Scope::Image`); `x` outside the group's entries is
    /// clamped to them. `None` when the kernel has no table (32-bit samples)
    /// or no such group.
    pub fn table_value(&self, c: usize, x: f64) -> Option<f64> {
        let offset = self.offset?;
        let dtype = self.dtype?;
        let g = if self.groups.len() == 1 { 0 } else { c };
        let group = self.groups.get(g)?;
        let last = group.entries.checked_sub(1)?;
        let i = ((x - offset).max(0.0) as usize)
            .saturating_sub(group.lo)
            .min(last);
        let at = group.off + i * self.size;
        Some(match (dtype, self.lut.get(at..at + self.size)?) {
            (Dtype::F32, &[a, b, c, d]) => f64::from(f32::from_le_bytes([a, b, c, d])),
            (Dtype::F16, &[a, b]) => half::f16::from_le_bytes([a, b]).to_f64(),
            (Dtype::U16, &[a, b]) => f64::from(u16::from_le_bytes([a, b])),
            (Dtype::U8, &[a]) => f64::from(a),
            _ => return None,
        })
    }
}

/// Per-sample evaluation for 32-bit samples: one map, or one per channel.
fn compute<T: Sample>(s: &[T], maps: &[ChannelMap], dtype: Dtype, dst: &mut [u8]) {
    let size = dtype.size();
    let c = maps.len().max(1);
    for (i, (d, &x)) in dst.chunks_exact_mut(size).zip(s).enumerate() {
        let map = if c == 1 { &maps[0] } else { &maps[i % c] };
        put_value(d, map.value(x.to_f64()), dtype);
    }
}

/// `v` rounded to `dtype` as the kernel's table stores it, back as an f64.
pub fn round_to(v: f64, dtype: Dtype) -> f64 {
    match dtype {
        Dtype::F32 => f64::from(v as f32),
        Dtype::F16 => half::f16::from_f64(v).to_f64(),
        Dtype::U8 => f64::from(v.round().clamp(0.0, 255.0) as u8),
        Dtype::U16 => f64::from(v.round().clamp(0.0, 65535.0) as u16),
    }
}

/// The value the output array holds for sample `x` of a group with extremes
/// `lo..=hi`, as an f64: the same rounding to `dtype` the kernel applies (so
/// statistics computed from it match the written arrays exactly).
pub fn output_value(x: f64, lo: f64, hi: f64, range: (f64, f64), dtype: Dtype) -> f64 {
    let hi = hi.max(lo);
    round_to(scaled(x.clamp(lo, hi), lo, hi, range), dtype)
}

fn push_value(lut: &mut Vec<u8>, v: f64, dtype: Dtype) {
    let at = lut.len();
    lut.resize(at + dtype.size(), 0);
    put_value(&mut lut[at..], v, dtype);
}

/// Writes `v` rounded to `dtype` into `d` (`dtype.size()` bytes).
#[inline]
fn put_value(d: &mut [u8], v: f64, dtype: Dtype) {
    match dtype {
        Dtype::F32 => d.copy_from_slice(&(v as f32).to_le_bytes()),
        Dtype::F16 => d.copy_from_slice(&half::f16::from_f64(v).to_le_bytes()),
        Dtype::U8 => d[0] = v.round().clamp(0.0, 255.0) as u8,
        Dtype::U16 => d.copy_from_slice(&(v.round().clamp(0.0, 65535.0) as u16).to_le_bytes()),
    }
}

/// One group's entries as `N`-byte values.
fn table<const N: usize>(lut: &[u8], g: Group) -> &[[u8; N]] {
    let end = (g.off + g.entries * N).min(lut.len());
    lut.get(g.off..end).unwrap_or_default().as_chunks::<N>().0
}

/// One group: `dst[i] = table[key(px[i])]`.
fn gather<const N: usize, T: Sample>(s: &[T], lut: &[u8], g: Group, dst: &mut [u8]) {
    let table = table::<N>(lut, g);
    let (dst, _) = dst.as_chunks_mut::<N>();
    if std::mem::size_of::<T>() == 1 {
        // A full 256-entry table: the index needs no clamp and no bounds check.
        let Ok(table) = <&[[u8; N]; 256]>::try_from(table) else {
            return;
        };
        for (d, &x) in dst.iter_mut().zip(s) {
            *d = table[x.key() & 255];
        }
        return;
    }
    let Some(last) = table.len().checked_sub(1) else {
        return;
    };
    for (d, &x) in dst.iter_mut().zip(s) {
        // `key - lo` is within the table because lo/hi came from this
        // data; the `min` keeps a wrong `Extremes` from indexing out of
        // bounds.
        *d = table[x.key().wrapping_sub(g.lo).min(last)];
    }
}

/// One group per channel, pixel by pixel.
fn gather_channels<const N: usize, T: Sample>(
    s: &[T],
    lut: &[u8],
    groups: &[Group],
    dst: &mut [u8],
) {
    let c = groups.len();
    let tables: Vec<&[[u8; N]]> = groups.iter().map(|&g| table::<N>(lut, g)).collect();
    if tables.iter().any(|t| t.is_empty()) {
        return;
    }
    let (dst, _) = dst.as_chunks_mut::<N>();
    for (d, p) in dst.chunks_exact_mut(c).zip(s.chunks_exact(c)) {
        for k in 0..c {
            let t = tables[k];
            d[k] = t[p[k].key().wrapping_sub(groups[k].lo).min(t.len() - 1)];
        }
    }
}

/// The `.npy` (format version 1.0) header for a C-order array of `shape` and
/// `dtype`, padded so the data starts at a multiple of 64 bytes.
pub fn npy_header(dtype: Dtype, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
        dtype.descr(),
        shape_txt
    );
    let unpadded = 10 + dict.len() + 1;
    let total = unpadded.div_ceil(64) * 64;
    let header_len = total - 10;
    let mut h = Vec::with_capacity(total);
    h.extend_from_slice(b"\x93NUMPY\x01\x00");
    h.extend_from_slice(&(header_len as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.resize(total - 1, b' ');
    h.push(b'\n');
    h
}

/// BT.601 luma of interleaved RGB(A) samples, with OpenCV's fixed-point
/// coefficients for 8 bit (`COLOR_RGB2GRAY`) and rounding.
pub fn luma_u8(src: &[u8], channels: usize, dst: &mut Vec<u8>) {
    dst.clear();
    dst.extend(src.chunks_exact(channels.max(1)).map(|p| {
        let (r, g, b) = rgb_of(p);
        ((r * 4899 + g * 9617 + b * 1868 + (1 << 13)) >> 14) as u8
    }));
}

/// BT.601 luma of interleaved 16-bit RGB(A) samples (same weights as
/// [`luma_u8`]).
pub fn luma_u16(src: &[u16], channels: usize, dst: &mut Vec<u16>) {
    dst.clear();
    dst.extend(src.chunks_exact(channels.max(1)).map(|p| {
        let (r, g, b) = rgb_of(p);
        ((r * 4899 + g * 9617 + b * 1868 + (1 << 13)) >> 14) as u16
    }));
}

fn rgb_of<T: Copy + Into<u32>>(p: &[T]) -> (u32, u32, u32) {
    match p.len() {
        0 => (0, 0, 0),
        1 | 2 => {
            let v = p[0].into();
            (v, v, v)
        }
        _ => (p[0].into(), p[1].into(), p[2].into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(px: Pixels<'_>, c: usize, scope: Scope, range: (f64, f64), dtype: Dtype) -> Vec<u8> {
        let ext = extremes(px, c, scope);
        let mut out = Vec::new();
        Kernel::new().scale_into(px, c, scope, &ext, range, dtype, &mut out);
        out
    }

    fn f32s_of(b: &[u8]) -> Vec<f32> {
        f32s(b)
    }

    fn f32s(b: &[u8]) -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    /// The naive reference: per-pixel f64 arithmetic with no table.
    fn naive(vals: &[u32], c: usize, scope: Scope, range: (f64, f64)) -> Vec<f64> {
        let groups = if scope == Scope::Image { 1 } else { c };
        let mut lo = vec![u32::MAX; groups];
        let mut hi = vec![0; groups];
        for (k, &v) in vals.iter().enumerate() {
            let g = if groups == 1 { 0 } else { k % c };
            lo[g] = lo[g].min(v);
            hi[g] = hi[g].max(v);
        }
        vals.iter()
            .enumerate()
            .map(|(k, &v)| {
                let g = if groups == 1 { 0 } else { k % c };
                if hi[g] == lo[g] {
                    range.0
                } else {
                    range.0 + (range.1 - range.0) * (v - lo[g]) as f64 / (hi[g] - lo[g]) as f64
                }
            })
            .collect()
    }

    #[test]
    fn image_scope_matches_reference_f32() {
        let data: Vec<u8> = vec![10, 20, 30, 40, 50, 60, 255, 10, 12];
        let out = f32s(&run(
            Pixels::U8(&data),
            3,
            Scope::Image,
            (0.0, 1.0),
            Dtype::F32,
        ));
        let want = naive(
            &data.iter().map(|&v| v as u32).collect::<Vec<_>>(),
            3,
            Scope::Image,
            (0.0, 1.0),
        );
        for (o, w) in out.iter().zip(&want) {
            assert!((*o as f64 - w).abs() < 1e-7, "{o} vs {w}");
        }
        assert_eq!(out[0], 0.0);
        assert_eq!(out[6], 1.0);
    }

    #[test]
    fn constant_image_gives_lower_bound_and_flag() {
        let data = vec![7u8; 12];
        let ext = extremes(Pixels::U8(&data), 3, Scope::Image);
        assert!(ext.constant());
        let out = f32s(&run(
            Pixels::U8(&data),
            3,
            Scope::Image,
            (-1.0, 1.0),
            Dtype::F32,
        ));
        assert!(out.iter().all(|&v| v == -1.0));
    }

    #[test]
    fn per_channel_scales_each_channel() {
        // Channel 0 spans 0..100, channel 1 spans 50..60.
        let data: Vec<u8> = vec![0, 50, 100, 60, 50, 55];
        let ext = extremes(Pixels::U8(&data), 2, Scope::Channel);
        assert_eq!(ext.min, vec![0.0, 50.0]);
        assert_eq!(ext.max, vec![100.0, 60.0]);
        let out = f32s(&run(
            Pixels::U8(&data),
            2,
            Scope::Channel,
            (0.0, 1.0),
            Dtype::F32,
        ));
        assert_eq!(out, vec![0.0, 0.0, 1.0, 1.0, 0.5, 0.5]);
    }

    #[test]
    fn sixteen_bit_keeps_precision() {
        let data: Vec<u16> = vec![0, 1, 65534, 65535];
        let out = f32s(&run(
            Pixels::U16(&data),
            1,
            Scope::Image,
            (0.0, 1.0),
            Dtype::F32,
        ));
        assert_eq!(out[0], 0.0);
        assert_eq!(out[1], (1.0f64 / 65535.0) as f32);
        assert_eq!(out[2], (65534.0f64 / 65535.0) as f32);
        assert_eq!(out[3], 1.0);
    }

    #[test]
    fn integer_dtypes_round_and_saturate() {
        let data: Vec<u8> = vec![0, 1, 2, 3];
        let out = run(Pixels::U8(&data), 1, Scope::Image, (0.0, 255.0), Dtype::U8);
        assert_eq!(out, vec![0, 85, 170, 255]);
        let out = run(
            Pixels::U8(&data),
            1,
            Scope::Image,
            (0.0, 65535.0),
            Dtype::U16,
        );
        let v: Vec<u16> = out
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(v, vec![0, 21845, 43690, 65535]);
    }

    #[test]
    fn f16_output() {
        let data: Vec<u8> = vec![0, 255, 51];
        let out = run(Pixels::U8(&data), 1, Scope::Image, (0.0, 1.0), Dtype::F16);
        let v: Vec<f32> = out
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        assert_eq!(v[0], 0.0);
        assert_eq!(v[1], 1.0);
        assert!((v[2] - 0.2).abs() < 1e-3);
    }

    #[test]
    fn inverted_range() {
        let data: Vec<u8> = vec![0, 255];
        let out = f32s(&run(
            Pixels::U8(&data),
            1,
            Scope::Image,
            (1.0, 0.0),
            Dtype::F32,
        ));
        assert_eq!(out, vec![1.0, 0.0]);
    }

    #[test]
    fn more_than_four_channels_per_channel_scope() {
        let data: Vec<u8> = (0..50).collect();
        let out = f32s(&run(
            Pixels::U8(&data),
            5,
            Scope::Channel,
            (0.0, 1.0),
            Dtype::F32,
        ));
        assert_eq!(&out[..5], &[0.0; 5]);
        assert_eq!(&out[45..], &[1.0; 5]);
    }

    #[test]
    fn scale_to_slice_matches_scale_into_and_overwrites_everything() {
        let data: Vec<u16> = vec![3, 900, 17, 4000, 3, 250];
        for scope in [Scope::Image, Scope::Channel] {
            let want = run(Pixels::U16(&data), 2, scope, (0.0, 1.0), Dtype::F32);
            let ext = extremes(Pixels::U16(&data), 2, scope);
            let mut dst = vec![0xAB; data.len() * 4];
            Kernel::new().scale_to_slice(
                Pixels::U16(&data),
                2,
                scope,
                &ext,
                (0.0, 1.0),
                Dtype::F32,
                &mut dst,
            );
            assert_eq!(dst, want);
            // A short destination gets the first values and no panic.
            let mut short = vec![0; 5];
            Kernel::new().scale_to_slice(
                Pixels::U16(&data),
                2,
                scope,
                &ext,
                (0.0, 1.0),
                Dtype::F32,
                &mut short,
            );
            assert_eq!(&short[..4], &want[..4]);
        }
    }

    #[test]
    fn eight_bit_table_clamps_values_outside_wrong_extremes() {
        // Extremes that do not cover the data must not panic or index out of
        // bounds; values outside are clamped to the endpoints.
        let data: Vec<u8> = vec![0, 100, 200, 255];
        let ext = Extremes {
            min: vec![100.0],
            max: vec![200.0],
        };
        let mut out = Vec::new();
        Kernel::new().scale_into(
            Pixels::U8(&data),
            1,
            Scope::Image,
            &ext,
            (0.0, 1.0),
            Dtype::F32,
            &mut out,
        );
        assert_eq!(f32s(&out), vec![0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn npy_header_is_aligned_and_parsable() {
        let h = npy_header(Dtype::F32, &[480, 640, 3]);
        assert_eq!(h.len() % 64, 0);
        assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
        let len = u16::from_le_bytes([h[8], h[9]]) as usize;
        assert_eq!(len + 10, h.len());
        let text = std::str::from_utf8(&h[10..]).unwrap();
        assert!(
            text.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (480, 640, 3), }")
        );
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn luma_matches_opencv_fixed_point() {
        let mut d = Vec::new();
        luma_u8(&[255, 255, 255, 0, 0, 0, 255, 0, 0], 3, &mut d);
        assert_eq!(d, vec![255, 0, 76]);
    }

    /// The naive reference over f64 values (any sample type).
    fn naive_f64(vals: &[f64], c: usize, per_channel: bool, range: (f64, f64)) -> Vec<f64> {
        let groups = if per_channel { c } else { 1 };
        let mut lo = vec![f64::INFINITY; groups];
        let mut hi = vec![f64::NEG_INFINITY; groups];
        for (k, &v) in vals.iter().enumerate() {
            let g = k % c % groups;
            lo[g] = lo[g].min(v);
            hi[g] = hi[g].max(v);
        }
        vals.iter()
            .enumerate()
            .map(|(k, &v)| {
                let g = k % c % groups;
                if hi[g] - lo[g] <= f64::EPSILON {
                    range.0
                } else {
                    range.0 + (range.1 - range.0) * (v - lo[g]) / (hi[g] - lo[g])
                }
            })
            .collect()
    }

    #[test]
    fn float_ranges_within_f64_epsilon_are_constant_like_opencv() {
        // cv2.normalize gives zeros for [1e-20, 2e-20] (range <= DBL_EPSILON).
        let data = [1e-20f32, 2e-20];
        let ext = extremes(Pixels::F32(&data), 1, Scope::Image);
        assert!(ext.constant());
        let out = f32s(&run(
            Pixels::F32(&data),
            1,
            Scope::Image,
            (0.0, 1.0),
            Dtype::F32,
        ));
        assert_eq!(out, [0.0, 0.0]);
        let data = [1.0f32, 1.0 + f32::EPSILON];
        let out = f32s(&run(
            Pixels::F32(&data),
            1,
            Scope::Image,
            (0.0, 1.0),
            Dtype::F32,
        ));
        assert_eq!(out, [0.0, 1.0]);
    }

    #[test]
    fn non_finite_float_samples_are_found_and_skipped_by_extremes() {
        let data = [1.0f32, f32::NAN, 3.0, f32::INFINITY];
        assert_eq!(Pixels::F32(&data).non_finite(), Some(1));
        assert_eq!(Pixels::F32(&data[2..3]).non_finite(), None);
        assert_eq!(Pixels::U8(&[1, 2]).non_finite(), None);
        let ext = extremes(Pixels::F32(&data[..3]), 1, Scope::Image);
        assert_eq!((ext.min[0], ext.max[0]), (1.0, 3.0));
    }

    #[test]
    fn from_bytes_views_each_type_and_drops_a_ragged_tail() {
        let words = [1u32, 0xFFFF_FFFF, 3];
        let bytes: &[u8] = bytemuck::cast_slice(&words);
        assert_eq!(Pixels::from_bytes(SampleType::Uint32, bytes).len(), 3);
        assert_eq!(Pixels::from_bytes(SampleType::Int32, bytes).value(1), -1.0);
        assert_eq!(Pixels::from_bytes(SampleType::Int16, &bytes[..5]).len(), 2);
        assert_eq!(Pixels::from_bytes(SampleType::Int8, bytes).value(4), -1.0);
        for t in SampleType::ALL {
            assert_eq!(Pixels::from_bytes(t, bytes).sample_type(), t);
        }
    }

    proptest! {
        /// What statistics read from the table is, bit for bit, what the
        /// formula rounded to the output type gives: for `prepare_map`
        /// (`round_to(map.value(x))`) and `prepare_scale` (`output_value`
        /// over the channel's domain), every dtype, 8/16-bit and signed
        /// tables, one group per channel or one for all.
        #[test]
        fn table_value_is_the_rounded_formula(
            ty in prop_oneof![Just(SampleType::Uint8), Just(SampleType::Uint16), Just(SampleType::Int8), Just(SampleType::Int16)],
            a0 in 0u32..65536,
            width in 0u32..5000,
            per_channel in any::<bool>(),
            z in any::<bool>(),
            r0 in -10.0f64..10.0,
            span in 0.001f64..100.0,
            dtype in prop_oneof![Just(Dtype::F32), Just(Dtype::F16), Just(Dtype::U8), Just(Dtype::U16)],
            probe in any::<u32>(),
        ) {
            let offset = ty.table_offset().unwrap_or(0.0);
            let top = if ty.eight() { 255 } else { 65535 };
            let lo = f64::from(a0 % (top + 1)) + offset;
            let hi = (lo + f64::from(width)).min(f64::from(top) + offset);
            let range = (r0, r0 + span);
            let ext = if per_channel {
                Extremes { min: vec![lo, ((lo + hi) / 2.0).floor()], max: vec![hi, hi] }
            } else {
                Extremes { min: vec![lo], max: vec![hi] }
            };
            let scope = if per_channel { Scope::Channel } else { Scope::Image };
            let mut k = Kernel::new();
            k.prepare_scale(ty, 2, scope, &ext, range, dtype);
            let domains = crate::stats::scale_domains(2, scope, &ext);
            for (c, &(l, h)) in domains.iter().enumerate() {
                let x = l + f64::from(probe % ((h - l) as u32 + 1));
                prop_assert_eq!(
                    k.table_value(c, x).map(f64::to_bits),
                    Some(output_value(x, l, h, range, dtype).to_bits())
                );
            }
            let maps: Vec<ChannelMap> = domains
                .iter()
                .map(|&(l, h)| ChannelMap { lo: l, hi: h, range, z: z.then_some((0.25, 0.5)) })
                .collect();
            k.prepare_map(ty, &domains, &maps, dtype);
            for (c, &(l, h)) in domains.iter().enumerate() {
                let x = l + f64::from(probe % ((h - l) as u32 + 1));
                prop_assert_eq!(
                    k.table_value(c, x).map(f64::to_bits),
                    Some(round_to(maps[c].value(x), dtype).to_bits())
                );
            }
        }
    }

    proptest! {
        /// Every sample type, table or per-sample path, gives the naive
        /// f64 value rounded once, and hits the range ends exactly.
        #[test]
        fn every_sample_type_matches_naive(
            data in proptest::collection::vec(-1000i32..1000, 1..300),
            c in 1usize..5,
            per_channel in any::<bool>(),
            ty in 0usize..7,
            a in -10.0f64..10.0,
            span in 0.001f64..100.0,
        ) {
            let n = data.len() / c * c;
            prop_assume!(n > 0);
            let data = &data[..n];
            let u8s: Vec<u8> = data.iter().map(|&v| (v + 1000) as u8).collect();
            let u16s: Vec<u16> = data.iter().map(|&v| ((v + 1000) * 60) as u16).collect();
            let i8s: Vec<i8> = data.iter().map(|&v| (v % 128) as i8).collect();
            let i16s: Vec<i16> = data.iter().map(|&v| (v * 30) as i16).collect();
            let u32s: Vec<u32> = data.iter().map(|&v| (v + 1000) as u32 * 2_000_000).collect();
            let i32s: Vec<i32> = data.iter().map(|&v| v * 2_000_000).collect();
            let f32s: Vec<f32> = data.iter().map(|&v| v as f32 / 3.0).collect();
            let px = match ty {
                0 => Pixels::U8(&u8s),
                1 => Pixels::U16(&u16s),
                2 => Pixels::I8(&i8s),
                3 => Pixels::I16(&i16s),
                4 => Pixels::U32(&u32s),
                5 => Pixels::I32(&i32s),
                _ => Pixels::F32(&f32s),
            };
            let vals: Vec<f64> = (0..n).map(|i| px.value(i)).collect();
            let scope = if per_channel { Scope::Channel } else { Scope::Image };
            let range = (a, a + span);
            let out = f32s_of(&run(px, c, scope, range, Dtype::F32));
            let want = naive_f64(&vals, c, per_channel, range);
            for (o, w) in out.iter().zip(&want) {
                prop_assert!((*o as f64 - w).abs() <= (w.abs() * 1.2e-7).max(1e-12), "{} vs {}", o, w);
            }
            // Integer dtypes too: the same value, rounded once.
            let out = run(px, c, scope, (0.0, 255.0), Dtype::U8);
            let want = naive_f64(&vals, c, per_channel, (0.0, 255.0));
            for (o, w) in out.iter().zip(&want) {
                prop_assert!((f64::from(*o) - w).abs() <= 0.5 + 1e-9, "{} vs {}", o, w);
            }
        }

        #[test]
        fn bounded_monotonic_and_matches_naive(
            data in proptest::collection::vec(any::<u16>(), 1..300),
            c in 1usize..5,
            per_channel in any::<bool>(),
            a in -10.0f64..10.0,
            span in 0.001f64..100.0,
        ) {
            let n = data.len() / c * c;
            prop_assume!(n > 0);
            let data = &data[..n];
            let scope = if per_channel { Scope::Channel } else { Scope::Image };
            let range = (a, a + span);
            let out = f32s(&run(Pixels::U16(data), c, scope, range, Dtype::F32));
            let want = naive(&data.iter().map(|&v| v as u32).collect::<Vec<_>>(), c, scope, range);
            for (o, w) in out.iter().zip(&want) {
                prop_assert!(*o as f64 >= range.0 - 1e-6 * range.0.abs().max(1.0));
                prop_assert!(*o as f64 <= range.1 + 1e-6 * range.1.abs().max(1.0));
                prop_assert!((*o as f64 - w).abs() <= (w.abs() * 1.2e-7).max(1e-12));
                prop_assert!(!o.is_nan());
            }
            // Monotonic within each group: larger input never gives smaller output.
            let groups = if per_channel { c } else { 1 };
            for g in 0..groups {
                let mut pairs: Vec<(u16, f32)> = data.iter().zip(&out).enumerate()
                    .filter(|(k, _)| groups == 1 || k % c == g)
                    .map(|(_, (&x, &y))| (x, y)).collect();
                pairs.sort_by_key(|p| p.0);
                for w in pairs.windows(2) {
                    prop_assert!(w[0].1 <= w[1].1);
                }
            }
        }
    }
}
