//! The min-max kernel: extremes of decoded 8/16-bit samples and their scaling
//! into the output dtype, plus the `.npy` header. Pure functions over slices;
//! the caller owns (and reuses) every buffer.
//!
//! Each output value is `a + (x - min) * (b - a) / (max - min)`, computed in
//! f64 and rounded once to the output type (round-half-away and saturation for
//! integer dtypes). Since inputs are integers, the kernel builds a lookup table
//! over `min..=max` once per image (per channel for [`Scope::Channel`]) and the
//! per-pixel work is one table load. The result is the correctly rounded value,
//! within one float32 step of OpenCV's `x*scale + shift` in float32.
use crate::options::{Dtype, Scope};

/// Decoded samples, interleaved by channel (`HWC`).
#[derive(Debug, Clone, Copy)]
pub enum Pixels<'a> {
    /// 8 bits per sample.
    U8(&'a [u8]),
    /// 16 bits per sample (native values, not bytes).
    U16(&'a [u16]),
}

impl<'a> Pixels<'a> {
    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            Pixels::U8(s) => s.len(),
            Pixels::U16(s) => s.len(),
        }
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
        }
    }

    /// Bits per sample.
    pub fn bit_depth(&self) -> u32 {
        match self {
            Pixels::U8(_) => 8,
            Pixels::U16(_) => 16,
        }
    }
}

/// Minimum and maximum sample values: one entry for [`Scope::Image`], one per
/// channel for [`Scope::Channel`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extremes {
    /// Smallest sample of each group.
    pub min: Vec<u32>,
    /// Largest sample of each group.
    pub max: Vec<u32>,
}

impl Extremes {
    /// True when some group has `max == min`; that group's output is filled with
    /// the lower range bound.
    pub fn constant(&self) -> bool {
        self.min.iter().zip(&self.max).any(|(lo, hi)| lo == hi)
    }
}

/// Extremes of `px` (with `channels` interleaved channels) over `scope`
/// ([`Scope::Dataset`] and [`Scope::Full`] group like [`Scope::Image`]).
/// Empty input gives `0` for every group.
pub fn extremes(px: Pixels<'_>, channels: usize, scope: Scope) -> Extremes {
    let channels = channels.max(1);
    match (px, scope) {
        (Pixels::U8(s), Scope::Image | Scope::Dataset | Scope::Full) => {
            let (lo, hi) = min_max(s);
            single(lo as u32, hi as u32, s.is_empty())
        }
        (Pixels::U16(s), Scope::Image | Scope::Dataset | Scope::Full) => {
            let (lo, hi) = min_max(s);
            single(lo as u32, hi as u32, s.is_empty())
        }
        (Pixels::U8(s), Scope::Channel) => per_channel(s, channels),
        (Pixels::U16(s), Scope::Channel) => per_channel(s, channels),
    }
}

fn single(lo: u32, hi: u32, empty: bool) -> Extremes {
    if empty {
        return Extremes {
            min: vec![0],
            max: vec![0],
        };
    }
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

fn per_channel<T: Copy + Ord + Bounded + Into<u32>>(s: &[T], channels: usize) -> Extremes {
    let mut lo = vec![T::MAX; channels];
    let mut hi = vec![T::MIN; channels];
    for px in s.chunks_exact(channels) {
        for c in 0..channels {
            lo[c] = lo[c].min(px[c]);
            hi[c] = hi[c].max(px[c]);
        }
    }
    if s.len() < channels {
        return Extremes {
            min: vec![0; channels],
            max: vec![0; channels],
        };
    }
    Extremes {
        min: lo.into_iter().map(Into::into).collect(),
        max: hi.into_iter().map(Into::into).collect(),
    }
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
pub(crate) fn scaled(x: u32, lo: u32, hi: u32, range: (f64, f64)) -> f64 {
    let (a, b) = range;
    if hi == lo {
        return a;
    }
    let t = f64::from(x - lo) / f64::from(hi - lo);
    // Hit both endpoints exactly, whatever the rounding of (b - a) * t.
    if x == hi { b } else { a + (b - a) * t }
}

/// Scratch space reused across images so no per-image allocation happens on the
/// hot path.
///
/// The table holds each group's output values as little-endian bytes. For
/// 8-bit samples it covers all 256 values (those outside `min..=max` hold the
/// nearest endpoint's value), so the per-sample work is one unchecked-free
/// load and store; for 16-bit samples it covers `min..=max` only and the index
/// is clamped, which keeps the table small for narrow ranges.
#[derive(Debug, Default)]
pub struct Kernel {
    lut: Vec<u8>,
    groups: Vec<Group>,
    /// Bytes per output value of the table.
    size: usize,
    /// The output type of the table's values.
    dtype: Dtype,
}

/// One group's slice of the table.
#[derive(Debug, Clone, Copy)]
struct Group {
    /// Offset of the group's first entry, in bytes.
    off: usize,
    /// Sample value of the first entry (0 for 8-bit tables).
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
        let eight = matches!(px, Pixels::U8(_));
        self.prepare_scale(eight, channels, scope, ext, range, dtype);
        self.apply(px, dst);
    }

    /// Builds the table [`Kernel::apply`] uses to scale samples (8-bit when
    /// `eight`, else 16-bit) as [`Kernel::scale_to_slice`] does. Lets a caller
    /// scale an image tile by tile, each tile written while it is in cache.
    pub fn prepare_scale(
        &mut self,
        eight: bool,
        channels: usize,
        scope: Scope,
        ext: &Extremes,
        range: (f64, f64),
        dtype: Dtype,
    ) {
        let channels = channels.max(1);
        let groups = match scope {
            Scope::Channel => channels,
            Scope::Image | Scope::Dataset | Scope::Full => 1,
        };
        self.lut.clear();
        self.groups.clear();
        self.size = dtype.size();
        self.dtype = dtype;
        for g in 0..groups {
            let lo = ext.min.get(g).copied().unwrap_or(0);
            let hi = ext.max.get(g).copied().unwrap_or(0).max(lo);
            let (first, last) = if eight { (0, 255) } else { (lo, hi) };
            self.groups.push(Group {
                off: self.lut.len(),
                lo: first as usize,
                entries: (last - first) as usize + 1,
            });
            for x in first..=last {
                push_value(&mut self.lut, scaled(x.clamp(lo, hi), lo, hi, range), dtype);
            }
        }
    }

    /// Writes the output of `px` through the table of the last
    /// [`Kernel::prepare_scale`] or [`Kernel::prepare_map`] into `dst`
    /// (`px.len()` values). `px` must start at a pixel (a multiple of the
    /// channel count into the image) when the table has one group per
    /// channel.
    pub fn apply(&self, px: Pixels<'_>, dst: &mut [u8]) {
        let lut = &self.lut[..];
        match (self.groups.len(), self.size) {
            (0, _) => {}
            (1, 4) => gather::<4>(px, lut, self.groups[0], dst),
            (1, 2) => gather::<2>(px, lut, self.groups[0], dst),
            (1, 1) => gather::<1>(px, lut, self.groups[0], dst),
            (_, 4) => gather_channels::<4>(px, lut, &self.groups, dst),
            (_, 2) => gather_channels::<2>(px, lut, &self.groups, dst),
            _ => gather_channels::<1>(px, lut, &self.groups, dst),
        }
    }
}

impl Kernel {
    /// Writes `value(c, x)` rounded to `dtype` for every sample `x` of
    /// channel `c` into `dst` (`px.len() * dtype.size()` bytes). `domains[c]`
    /// is the range `lo..=hi` of channel `c`'s samples (from
    /// [`extremes`] with [`Scope::Channel`]); the table covers it (all 256
    /// values for 8 bit), so `value` is evaluated once per distinct sample,
    /// never per pixel. `domains.len()` is the channel count.
    pub fn map_to_slice(
        &mut self,
        px: Pixels<'_>,
        domains: &[(u32, u32)],
        value: impl Fn(usize, u32) -> f64,
        dtype: Dtype,
        dst: &mut [u8],
    ) {
        let eight = matches!(px, Pixels::U8(_));
        self.prepare_map(eight, domains, value, dtype);
        self.apply(px, dst);
    }

    /// Builds the table [`Kernel::apply`] uses to write `value(c, x)` as
    /// [`Kernel::map_to_slice`] does.
    pub fn prepare_map(
        &mut self,
        eight: bool,
        domains: &[(u32, u32)],
        value: impl Fn(usize, u32) -> f64,
        dtype: Dtype,
    ) {
        self.lut.clear();
        self.groups.clear();
        self.size = dtype.size();
        self.dtype = dtype;
        for (c, &(lo, hi)) in domains.iter().enumerate() {
            let hi = hi.max(lo);
            let (first, last) = if eight { (0, 255) } else { (lo, hi) };
            self.groups.push(Group {
                off: self.lut.len(),
                lo: first as usize,
                entries: (last - first) as usize + 1,
            });
            for x in first..=last {
                push_value(&mut self.lut, value(c, x), dtype);
            }
        }
    }

    /// The value the table of the last [`Kernel::prepare_map`] or
    /// [`Kernel::prepare_scale`] holds for sample `x` of channel `c`, widened
    /// to f64: exactly what that call rounded to the output type
    /// (`round_to(value(c, x), dtype)`, or [`output_value`] with the group's
    /// extremes), without evaluating it again: statistics read it for every
    /// distinct sample, twice. Channel `c` reads group `c`, or the only group
    /// of a one-group table (`Scope::Image`). `x` outside the group's entries
    /// is clamped to them; a group that does not exist gives 0.
    pub fn table_value(&self, c: usize, x: u32) -> f64 {
        let g = if self.groups.len() == 1 { 0 } else { c };
        let Some(group) = self.groups.get(g) else {
            return 0.0;
        };
        if group.entries == 0 {
            return 0.0;
        }
        let i = (x as usize).saturating_sub(group.lo).min(group.entries - 1);
        let at = group.off + i * self.size;
        let Some(b) = self.lut.get(at..at + self.size) else {
            return 0.0;
        };
        match (self.dtype, b) {
            (Dtype::F32, &[a, b, c, d]) => f64::from(f32::from_le_bytes([a, b, c, d])),
            (Dtype::F16, &[a, b]) => half::f16::from_le_bytes([a, b]).to_f64(),
            (Dtype::U16, &[a, b]) => f64::from(u16::from_le_bytes([a, b])),
            (Dtype::U8, &[a]) => f64::from(a),
            _ => 0.0,
        }
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
/// `lo..=hi`, as an f64: the same rounding to `dtype` the kernel's table
/// applies (so statistics computed from it match the written arrays exactly).
pub fn output_value(x: u32, lo: u32, hi: u32, range: (f64, f64), dtype: Dtype) -> f64 {
    let hi = hi.max(lo);
    round_to(scaled(x.clamp(lo, hi), lo, hi, range), dtype)
}

fn push_value(lut: &mut Vec<u8>, v: f64, dtype: Dtype) {
    match dtype {
        Dtype::F32 => lut.extend_from_slice(&(v as f32).to_le_bytes()),
        Dtype::F16 => lut.extend_from_slice(&half::f16::from_f64(v).to_le_bytes()),
        Dtype::U8 => lut.push(v.round().clamp(0.0, 255.0) as u8),
        Dtype::U16 => lut.extend_from_slice(&(v.round().clamp(0.0, 65535.0) as u16).to_le_bytes()),
    }
}

/// One group's entries as `N`-byte values.
fn table<const N: usize>(lut: &[u8], g: Group) -> &[[u8; N]] {
    let end = (g.off + g.entries * N).min(lut.len());
    lut.get(g.off..end).unwrap_or_default().as_chunks::<N>().0
}

/// One group: `dst[i] = table[px[i]]`.
fn gather<const N: usize>(px: Pixels<'_>, lut: &[u8], g: Group, dst: &mut [u8]) {
    let table = table::<N>(lut, g);
    let (dst, _) = dst.as_chunks_mut::<N>();
    match px {
        Pixels::U8(s) => {
            // A full 256-entry table: the index needs no clamp and no bounds check.
            let Ok(table) = <&[[u8; N]; 256]>::try_from(table) else {
                return;
            };
            for (d, &x) in dst.iter_mut().zip(s) {
                *d = table[x as usize];
            }
        }
        Pixels::U16(s) => {
            let Some(last) = table.len().checked_sub(1) else {
                return;
            };
            for (d, &x) in dst.iter_mut().zip(s) {
                // `x - lo` is within the table because lo/hi came from this
                // data; the `min` keeps a wrong `Extremes` from indexing out of
                // bounds.
                *d = table[(x as usize).wrapping_sub(g.lo).min(last)];
            }
        }
    }
}

/// One group per channel, pixel by pixel.
fn gather_channels<const N: usize>(px: Pixels<'_>, lut: &[u8], groups: &[Group], dst: &mut [u8]) {
    let c = groups.len();
    let tables: Vec<&[[u8; N]]> = groups.iter().map(|&g| table::<N>(lut, g)).collect();
    if tables.iter().any(|t| t.is_empty()) {
        return;
    }
    let (dst, _) = dst.as_chunks_mut::<N>();
    let pick = |k: usize, x: usize| {
        let t = tables[k];
        t[x.wrapping_sub(groups[k].lo).min(t.len() - 1)]
    };
    match px {
        Pixels::U8(s) => {
            for (d, p) in dst.chunks_exact_mut(c).zip(s.chunks_exact(c)) {
                for k in 0..c {
                    d[k] = pick(k, p[k] as usize);
                }
            }
        }
        Pixels::U16(s) => {
            for (d, p) in dst.chunks_exact_mut(c).zip(s.chunks_exact(c)) {
                for k in 0..c {
                    d[k] = pick(k, p[k] as usize);
                }
            }
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
        assert_eq!(ext.min, vec![0, 50]);
        assert_eq!(ext.max, vec![100, 60]);
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
            min: vec![100],
            max: vec![200],
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

    proptest! {
        /// What statistics read from the table is exactly what evaluating
        /// the map and rounding it to the output type gives, for every
        /// dtype, 8- and 16-bit tables and samples anywhere in the domain.
        #[test]
        fn table_value_is_the_rounded_map_value(
            lo in 0u32..60000,
            width in 0u32..5000,
            eight in any::<bool>(),
            a in -10.0f64..10.0,
            span in 0.001f64..100.0,
            dtype in prop_oneof![Just(Dtype::F32), Just(Dtype::F16), Just(Dtype::U8), Just(Dtype::U16)],
            probe in any::<u32>(),
        ) {
            let (lo, hi) = if eight { (lo % 256, (lo % 256 + width).min(255)) } else { (lo, lo + width) };
            let domains = [(lo, hi), (hi / 2, hi)];
            let value = |c: usize, x: u32| {
                let (l, h) = domains[c];
                (c as f64) + scaled(x.clamp(l, h), l, h, (a, a + span))
            };
            let mut k = Kernel::new();
            k.prepare_map(eight, &domains, value, dtype);
            for (c, &(l, h)) in domains.iter().enumerate() {
                let x = l + probe % (h - l + 1);
                prop_assert_eq!(
                    k.table_value(c, x).to_bits(),
                    round_to(value(c, x), dtype).to_bits()
                );
            }
        }

        /// The same for the tables of `prepare_scale` (no map: the scaled
        /// value of [`output_value`]), one group per channel or one for all.
        #[test]
        fn table_value_is_the_output_value(
            lo in 0u32..60000,
            width in 0u32..5000,
            eight in any::<bool>(),
            per_channel in any::<bool>(),
            a in -10.0f64..10.0,
            span in 0.001f64..100.0,
            dtype in prop_oneof![Just(Dtype::F32), Just(Dtype::F16), Just(Dtype::U8), Just(Dtype::U16)],
            probe in any::<u32>(),
        ) {
            let (lo, hi) = if eight { (lo % 256, (lo % 256 + width).min(255)) } else { (lo, lo + width) };
            let (scope, ext) = if per_channel {
                (Scope::Channel, Extremes { min: vec![lo, lo / 2], max: vec![hi, hi] })
            } else {
                (Scope::Image, Extremes { min: vec![lo], max: vec![hi] })
            };
            let range = (a, a + span);
            let mut k = Kernel::new();
            k.prepare_scale(eight, 2, scope, &ext, range, dtype);
            for c in 0..2 {
                let g = if per_channel { c } else { 0 };
                let (l, h) = (ext.min[g], ext.max[g]);
                let x = l + probe % (h - l + 1);
                prop_assert_eq!(
                    k.table_value(c, x).to_bits(),
                    output_value(x, l, h, range, dtype).to_bits()
                );
            }
        }
    }

    proptest! {
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
