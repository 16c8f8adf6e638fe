//! Dataset-wide statistics of the output values, computed in the same pass as
//! the arrays: per output channel the count, min, max, mean, (population)
//! standard deviation and a 256-bin histogram over the output range.
//!
//! Per image, [`image_stats`] counts the source samples per channel (a
//! histogram of the 8- or 16-bit values; for 16 bit only over `min..=max`) and
//! sums over the distinct values with the output value each one maps to, in
//! f64; there is no per-pixel float work. Partials merge with the parallel
//! update of Chan, Golub and LeVeque on `(count, mean, M2)`, which is
//! numerically stable. Floating-point merging is not associative, so callers
//! that want identical numbers from every run must fold partials in one fixed
//! order (imgnorm folds them in image index order, i.e. sorted path order).
use std::collections::BTreeMap;

use serde::Serialize;

use crate::normalize::{Extremes, Pixels, Sample, output_value};
use crate::options::{Dtype, Scope};
use crate::sample::SampleType;

/// Number of histogram bins.
pub const BINS: usize = 256;

/// The histogram's bin rule over an output range `[a, b]`.
///
/// With `lo = min(a, b)` and `hi = max(a, b)`, value `v` falls in bin
/// `floor((v - lo) / (hi - lo) * 256)`, clamped to `0..=255`: bin `i` covers
/// `[lo + i*(hi-lo)/256, lo + (i+1)*(hi-lo)/256)` and the last bin is closed.
/// When `lo == hi` every value is in bin 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Binning {
    /// Lower end of the histogram range.
    pub lo: f64,
    /// Upper end of the histogram range.
    pub hi: f64,
}

impl Binning {
    /// The binning for output range `(a, b)` (either order).
    pub fn new(range: (f64, f64)) -> Binning {
        let (a, b) = range;
        Binning {
            lo: a.min(b),
            hi: a.max(b),
        }
    }

    /// The bin of value `v`.
    pub fn bin(&self, v: f64) -> usize {
        if self.hi <= self.lo {
            return 0;
        }
        let t = ((v - self.lo) / (self.hi - self.lo) * BINS as f64).floor();
        if t >= (BINS - 1) as f64 {
            BINS - 1
        } else if t >= 0.0 {
            t as usize
        } else {
            0
        }
    }
}

/// The order-dependent part of a [`ChannelStats`]: what [`OrderedFold`]
/// holds for an image that arrived ahead of its turn (24 bytes instead of a
/// whole histogram).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moments {
    /// Number of values.
    pub count: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
}

impl Moments {
    /// The moments of `c`.
    pub fn of(c: &ChannelStats) -> Moments {
        Moments {
            count: c.count,
            mean: c.mean,
            m2: c.m2,
        }
    }
}

/// Statistics of one channel's values: a mergeable partial.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelStats {
    /// Number of values.
    pub count: u64,
    /// Arithmetic mean (0 when `count == 0`).
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
    /// Smallest value (`+inf` when empty).
    pub min: f64,
    /// Largest value (`-inf` when empty).
    pub max: f64,
    /// [`BINS`] counts, see [`Binning`].
    pub histogram: Vec<u64>,
}

impl Default for ChannelStats {
    fn default() -> Self {
        ChannelStats::empty()
    }
}

impl ChannelStats {
    /// No values.
    pub fn empty() -> ChannelStats {
        ChannelStats {
            count: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            histogram: vec![0; BINS],
        }
    }

    /// Statistics of values given as `(value, how many times)` pairs, in two
    /// passes (mean, then squared deviations). Pairs with count 0 are ignored.
    pub fn from_counts<I>(pairs: I, binning: &Binning) -> ChannelStats
    where
        I: IntoIterator<Item = (f64, u64)>,
        I::IntoIter: Clone,
    {
        let pairs = pairs.into_iter().filter(|&(_, c)| c > 0);
        let mut s = ChannelStats::empty();
        let mut sum = 0.0;
        for (v, c) in pairs.clone() {
            s.count += c;
            sum += v * c as f64;
            s.min = s.min.min(v);
            s.max = s.max.max(v);
            s.histogram[binning.bin(v)] += c;
        }
        if s.count == 0 {
            return s;
        }
        if s.min == s.max {
            // Constant: exact, whatever the rounding of the sum.
            s.mean = s.min;
            return s;
        }
        s.mean = sum / s.count as f64;
        s.m2 = pairs
            .map(|(v, c)| {
                let d = v - s.mean;
                d * d * c as f64
            })
            .sum();
        s
    }

    /// Statistics of a plain list of values (the reference the tests use).
    pub fn from_values(values: &[f64], binning: &Binning) -> ChannelStats {
        ChannelStats::from_counts(values.iter().map(|&v| (v, 1)), binning)
    }

    /// Folds `other` into `self` (Chan et al.). Merging with an empty partial
    /// leaves the other side unchanged, bit for bit.
    pub fn merge(&mut self, other: &ChannelStats) {
        self.merge_exact(other);
        self.merge_moments(&Moments::of(other));
    }

    /// The order-free part of [`ChannelStats::merge`]: extremes and
    /// histogram counts (integers and min/max: any order gives the same).
    pub fn merge_exact(&mut self, other: &ChannelStats) {
        if other.count == 0 {
            return;
        }
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        for (h, o) in self.histogram.iter_mut().zip(&other.histogram) {
            *h += o;
        }
    }

    /// The order-dependent part of [`ChannelStats::merge`]: count, mean and
    /// squared deviations (floating point: folded in a fixed order).
    pub fn merge_moments(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            (self.count, self.mean, self.m2) = (other.count, other.mean, other.m2);
            return;
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        let delta = other.mean - self.mean;
        self.mean += delta * (nb / n);
        self.m2 += other.m2 + delta * delta * (na * nb / n);
        self.count += other.count;
    }

    /// Population standard deviation (`ddof = 0`, NumPy's default).
    pub fn std(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            (self.m2.max(0.0) / self.count as f64).sqrt()
        }
    }

    /// The reported form.
    pub fn summary(&self) -> ChannelSummary {
        let (min, max) = if self.count == 0 {
            (0.0, 0.0)
        } else {
            (self.min, self.max)
        };
        ChannelSummary {
            count: self.count,
            min,
            max,
            mean: self.mean,
            std: self.std(),
            histogram: self.histogram.clone(),
        }
    }
}

/// One channel as written to `stats.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelSummary {
    /// Number of values.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
    /// [`BINS`] counts.
    pub histogram: Vec<u64>,
}

/// Per-channel statistics of one image's output.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImageStats {
    /// One entry per output channel.
    pub channels: Vec<ChannelStats>,
}

/// An image's statistics do not describe the image they came with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    /// Wrong number of channels.
    #[error("statistics have {got} channels, the image has {want}")]
    Channels {
        /// Channels in the statistics.
        got: usize,
        /// Channels of the image.
        want: usize,
    },
    /// A channel's count is not the pixel count.
    #[error("channel {channel} counts {got} values, the image has {want} pixels")]
    Count {
        /// The channel.
        channel: usize,
        /// Its count.
        got: u64,
        /// Width times height.
        want: u64,
    },
    /// A histogram has the wrong length or does not sum to the count.
    #[error("channel {channel} has a malformed histogram")]
    Histogram {
        /// The channel.
        channel: usize,
    },
    /// A mean, M2, min or max that is not finite, or min above max.
    #[error("channel {channel} has non-finite or inconsistent moments")]
    Moments {
        /// The channel.
        channel: usize,
    },
}

impl ImageStats {
    /// Checks that these statistics can describe an image of `channels`
    /// channels and `pixels` pixels (what a master checks before trusting a
    /// worker's numbers).
    pub fn validate(&self, channels: usize, pixels: u64) -> Result<(), StatsError> {
        if self.channels.len() != channels {
            return Err(StatsError::Channels {
                got: self.channels.len(),
                want: channels,
            });
        }
        for (channel, c) in self.channels.iter().enumerate() {
            if c.count != pixels {
                return Err(StatsError::Count {
                    channel,
                    got: c.count,
                    want: pixels,
                });
            }
            let total = c
                .histogram
                .iter()
                .try_fold(0u64, |acc, &h| acc.checked_add(h));
            if c.histogram.len() != BINS || total != Some(c.count) {
                return Err(StatsError::Histogram { channel });
            }
            let finite = [c.mean, c.m2, c.min, c.max].iter().all(|v| v.is_finite());
            if pixels > 0 && (!finite || c.min > c.max || c.m2 < 0.0) {
                return Err(StatsError::Moments { channel });
            }
        }
        Ok(())
    }
}

/// Scratch counters reused from one image to the next. Besides the one-call
/// [`image_stats`] and [`image_stats_by`], an image can be counted tile by
/// tile: [`StatsScratch::begin`], [`StatsScratch::count`] for each tile (in
/// any order; each starting at a pixel), then [`StatsScratch::finish`].
///
/// Samples of at most 16 bits are counted in tables indexed like the
/// kernel's ([`SampleType::table_offset`]); 32-bit samples are kept (as
/// f64) and sorted at the end, so both give the distinct values in
/// increasing order with their counts.
#[derive(Debug, Default)]
pub struct StatsScratch {
    counts: Vec<u64>,
    /// Where each channel's counters start in `counts` (and the end).
    offsets: Vec<usize>,
    /// The table index of each channel's first counter.
    firsts: Vec<usize>,
    /// The value of table index 0; `None` for 32-bit samples.
    offset: Option<f64>,
    /// 32-bit samples: each channel's values.
    values: Vec<Vec<f64>>,
}

/// The `lo..=hi` bounds of each output channel's samples for the min-max
/// kernel with `ext` from [`crate::normalize::extremes`] over `scope`.
pub fn scale_domains(channels: usize, scope: Scope, ext: &Extremes) -> Vec<(f64, f64)> {
    let group = |c: usize| match scope {
        Scope::Channel => c,
        Scope::Image | Scope::Dataset | Scope::Full => 0,
    };
    (0..channels.max(1))
        .map(|c| {
            let g = group(c);
            let lo = ext.min.get(g).copied().unwrap_or(0.0);
            let hi = ext.max.get(g).copied().unwrap_or(0.0).max(lo);
            (lo, hi)
        })
        .collect()
}

/// Statistics of the output of `px` (interleaved, `channels` channels) scaled
/// with `ext` (from [`crate::normalize::extremes`] with the same `scope`) into
/// `range` and `dtype`. Counts each channel's source values, then sums over the
/// distinct values in increasing order.
pub fn image_stats(
    px: Pixels<'_>,
    channels: usize,
    scope: Scope,
    ext: &Extremes,
    range: (f64, f64),
    dtype: Dtype,
    scratch: &mut StatsScratch,
) -> ImageStats {
    let domains = scale_domains(channels, scope, ext);
    image_stats_by(
        px,
        &domains,
        |c, x| {
            let (lo, hi) = domains[c];
            output_value(x, lo, hi, range, dtype)
        },
        range,
        scratch,
    )
}

/// Statistics of an output whose channel `c` holds `value(c, x)` (already
/// rounded to the output dtype) for source sample `x`, with histogram bins
/// over `range`. `domains[c]` bounds channel `c`'s samples (`lo..=hi`, as from
/// [`crate::normalize::extremes`] with [`Scope::Channel`], or wider);
/// `domains.len()` is the channel count. `value` is called once per distinct
/// sample value, in increasing order.
pub fn image_stats_by(
    px: Pixels<'_>,
    domains: &[(f64, f64)],
    value: impl Fn(usize, f64) -> f64,
    range: (f64, f64),
    scratch: &mut StatsScratch,
) -> ImageStats {
    scratch.begin(px.sample_type(), domains);
    scratch.count(px);
    scratch.finish(value, range)
}

impl StatsScratch {
    /// Starts counting an image of `domains.len()` channels of samples of
    /// type `ty` bounded by `domains` (see [`image_stats_by`]).
    pub fn begin(&mut self, ty: SampleType, domains: &[(f64, f64)]) {
        let channels = domains.len().max(1);
        self.offsets.clear();
        self.firsts.clear();
        self.counts.clear();
        self.offset = ty.table_offset();
        self.values.resize_with(channels, Vec::new);
        self.values.truncate(channels);
        self.values.iter_mut().for_each(Vec::clear);
        let Some(offset) = self.offset else {
            self.firsts.resize(channels, 0);
            return;
        };
        let mut total = 0usize;
        for c in 0..channels {
            let (lo, hi) = domains.get(c).copied().unwrap_or((0.0, 0.0));
            let key = |v: f64| (v - offset).clamp(0.0, 65535.0) as usize;
            let (first, last) = if ty.eight() {
                (0, 255)
            } else {
                (key(lo), key(hi.max(lo)))
            };
            self.offsets.push(total);
            self.firsts.push(first);
            total += last - first + 1;
        }
        self.offsets.push(total);
        self.counts.resize(total, 0);
    }

    /// Counts the samples of `px` (whole pixels of the channels given to
    /// [`StatsScratch::begin`], of the same type).
    pub fn count(&mut self, px: Pixels<'_>) {
        let channels = self.firsts.len().max(1);
        if self.offset.is_none() {
            let values = &mut self.values;
            let mut keep = |i: usize, v: f64| values[i % channels].push(v);
            match px {
                Pixels::U32(s) => s
                    .iter()
                    .enumerate()
                    .for_each(|(i, &x)| keep(i, f64::from(x))),
                Pixels::I32(s) => s
                    .iter()
                    .enumerate()
                    .for_each(|(i, &x)| keep(i, f64::from(x))),
                Pixels::F32(s) => s
                    .iter()
                    .enumerate()
                    .for_each(|(i, &x)| keep(i, f64::from(x))),
                // Counted as another type than begun: nothing is counted.
                _ => {}
            }
            return;
        }
        let (counts, offsets, firsts) = (&mut self.counts, &self.offsets, &self.firsts);
        match (px, channels) {
            (Pixels::U8(s), 1) => count_u8::<1>(s, counts),
            (Pixels::U8(s), 2) => count_u8::<2>(s, counts),
            (Pixels::U8(s), 3) => count_u8::<3>(s, counts),
            (Pixels::U8(s), 4) => count_u8::<4>(s, counts),
            (Pixels::U16(s), 1) => count_u16::<1>(s, counts, offsets, firsts),
            (Pixels::U16(s), 2) => count_u16::<2>(s, counts, offsets, firsts),
            (Pixels::U16(s), 3) => count_u16::<3>(s, counts, offsets, firsts),
            (Pixels::U16(s), 4) => count_u16::<4>(s, counts, offsets, firsts),
            (Pixels::U8(s), _) => count_keys(s, channels, counts, offsets, firsts),
            (Pixels::U16(s), _) => count_keys(s, channels, counts, offsets, firsts),
            (Pixels::I8(s), _) => count_keys(s, channels, counts, offsets, firsts),
            (Pixels::I16(s), _) => count_keys(s, channels, counts, offsets, firsts),
            (Pixels::U32(_) | Pixels::I32(_) | Pixels::F32(_), _) => {}
        }
    }

    /// The statistics of everything counted since [`StatsScratch::begin`],
    /// channel `c`'s sample `x` standing for the output value `value(c, x)`.
    pub fn finish(&mut self, value: impl Fn(usize, f64) -> f64, range: (f64, f64)) -> ImageStats {
        let binning = Binning::new(range);
        let value = &value;
        let Some(offset) = self.offset else {
            let channels = self
                .values
                .iter_mut()
                .enumerate()
                .map(|(c, vals)| {
                    vals.sort_unstable_by(f64::total_cmp);
                    let mut pairs: Vec<(f64, u64)> = Vec::new();
                    for &x in vals.iter() {
                        match pairs.last_mut() {
                            Some((v, n)) if *v == x => *n += 1,
                            _ => pairs.push((x, 1)),
                        }
                    }
                    let pairs: Vec<(f64, u64)> =
                        pairs.into_iter().map(|(x, n)| (value(c, x), n)).collect();
                    ChannelStats::from_counts(pairs, &binning)
                })
                .collect();
            return ImageStats { channels };
        };
        let channels = (0..self.firsts.len())
            .map(|c| {
                let slice = &self.counts[self.offsets[c]..self.offsets[c + 1]];
                let first = self.firsts[c];
                let pairs = slice.iter().enumerate().map(move |(i, &n)| {
                    let x = (first + i) as f64 + offset;
                    (value(c, x), n)
                });
                ChannelStats::from_counts(pairs, &binning)
            })
            .collect();
        ImageStats { channels }
    }
}

/// Counts samples of any table type, channel by channel (the general case).
fn count_keys<T: Sample>(
    s: &[T],
    channels: usize,
    counts: &mut [u64],
    offsets: &[usize],
    firsts: &[usize],
) {
    for p in s.chunks_exact(channels) {
        for (k, &x) in p.iter().enumerate() {
            let width = offsets[k + 1] - offsets[k];
            let i = x.key().saturating_sub(firsts[k]).min(width - 1);
            counts[offsets[k] + i] += 1;
        }
    }
}

/// Counts 8-bit samples of `C` interleaved channels into `C` tables of 256
/// (laid out one after the other in `counts`). Fixed sizes: no bounds checks.
fn count_u8<const C: usize>(s: &[u8], counts: &mut [u64]) {
    let (tables, _) = counts.as_chunks_mut::<256>();
    let Some(tables) = tables.get_mut(..C) else {
        return;
    };
    let Ok(tables) = <&mut [[u64; 256]; C]>::try_from(tables) else {
        return;
    };
    for p in s.as_chunks::<C>().0 {
        for k in 0..C {
            tables[k][p[k] as usize] += 1;
        }
    }
}

/// Counts 16-bit samples of `C` interleaved channels; channel `k`'s counters
/// are `counts[offsets[k]..offsets[k + 1]]` for values from `firsts[k]`.
fn count_u16<const C: usize>(s: &[u16], counts: &mut [u64], offsets: &[usize], firsts: &[usize]) {
    let mut rest = counts;
    let mut tables: [&mut [u64]; C] = std::array::from_fn(|_| <&mut [u64]>::default());
    let mut first = [0usize; C];
    let mut last = [0usize; C];
    for k in 0..C {
        let width = (offsets[k + 1] - offsets[k]).min(rest.len());
        let (table, tail) = std::mem::take(&mut rest).split_at_mut(width);
        if table.is_empty() {
            return;
        }
        tables[k] = table;
        rest = tail;
        first[k] = firsts[k];
        last[k] = width - 1;
    }
    for p in s.as_chunks::<C>().0 {
        for k in 0..C {
            let i = (p[k] as usize).wrapping_sub(first[k]).min(last[k]);
            tables[k][i] += 1;
        }
    }
}

/// The running statistics of a dataset: image partials folded in a fixed
/// order. Channel `k` collects the `k`-th channel of every image that has one
/// (with `--channels keep`, a gray image adds to channel 0 only).
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetStats {
    /// Images folded in.
    pub images: u64,
    /// Histogram binning.
    pub binning: Binning,
    /// Per output channel.
    pub channels: Vec<ChannelStats>,
}

impl DatasetStats {
    /// Nothing yet, for output range `range`.
    pub fn new(range: (f64, f64)) -> DatasetStats {
        DatasetStats {
            images: 0,
            binning: Binning::new(range),
            channels: Vec::new(),
        }
    }

    /// Folds in the next image.
    pub fn add(&mut self, image: &ImageStats) {
        self.images += 1;
        if self.channels.len() < image.channels.len() {
            self.channels
                .resize_with(image.channels.len(), ChannelStats::empty);
        }
        for (acc, c) in self.channels.iter_mut().zip(&image.channels) {
            acc.merge(c);
        }
    }
}

/// Folds per-item partials in item index order, whatever order they are
/// settled in. The order-free parts (image count, extremes, histograms) are
/// added at once; the floating-point moments of the in-order prefix are
/// folded as soon as it is complete, and only the moments of items settled
/// ahead of the first missing one are held: 24 bytes per channel and item,
/// so a long gap (a lost batch redone at the end of a job) costs little.
#[derive(Debug, Clone)]
pub struct OrderedFold {
    dataset: DatasetStats,
    next: u64,
    ahead: BTreeMap<u64, Option<Vec<Moments>>>,
}

impl OrderedFold {
    /// Nothing settled yet, for output range `range`.
    pub fn new(range: (f64, f64)) -> OrderedFold {
        OrderedFold {
            dataset: DatasetStats::new(range),
            next: 0,
            ahead: BTreeMap::new(),
        }
    }

    /// Item `index` is final, with its statistics (`None` when it is not
    /// `ok`). Settling an item a second time changes nothing.
    pub fn settle(&mut self, index: u64, stats: Option<ImageStats>) {
        if index < self.next || self.ahead.contains_key(&index) {
            return;
        }
        let held = stats.map(|s| {
            let d = &mut self.dataset;
            d.images += 1;
            if d.channels.len() < s.channels.len() {
                d.channels
                    .resize_with(s.channels.len(), ChannelStats::empty);
            }
            for (acc, c) in d.channels.iter_mut().zip(&s.channels) {
                acc.merge_exact(c);
            }
            s.channels.iter().map(Moments::of).collect::<Vec<_>>()
        });
        self.ahead.insert(index, held);
        while let Some(entry) = self.ahead.first_entry() {
            if *entry.key() != self.next {
                break;
            }
            if let Some(m) = entry.remove() {
                self.fold_moments(&m);
            }
            self.next += 1;
        }
    }

    fn fold_moments(&mut self, moments: &[Moments]) {
        for (acc, m) in self.dataset.channels.iter_mut().zip(moments) {
            acc.merge_moments(m);
        }
    }

    /// Items settled ahead of the first unsettled one (held in memory).
    pub fn held(&self) -> usize {
        self.ahead.len()
    }

    /// The statistics: the folded prefix, then whatever is held, in index
    /// order (gaps only remain when items never settled).
    pub fn finish(mut self) -> DatasetStats {
        for m in std::mem::take(&mut self.ahead).into_values().flatten() {
            self.fold_moments(&m);
        }
        self.dataset
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::{Kernel, extremes};
    use proptest::prelude::*;

    const UNIT: Binning = Binning { lo: 0.0, hi: 1.0 };

    fn close(a: f64, b: f64, rel: f64) -> bool {
        a == b || (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-300)
    }

    fn assert_same(merged: &ChannelStats, whole: &ChannelStats) {
        assert_eq!(merged.count, whole.count);
        assert_eq!(merged.min, whole.min);
        assert_eq!(merged.max, whole.max);
        assert_eq!(merged.histogram, whole.histogram);
        assert!(
            close(merged.mean, whole.mean, 1e-12),
            "mean {} vs {}",
            merged.mean,
            whole.mean
        );
        assert!(
            close(merged.std(), whole.std(), 1e-12)
                || (merged.std() - whole.std()).abs() < 1e-15 * whole.mean.abs().max(1.0),
            "std {} vs {}",
            merged.std(),
            whole.std()
        );
    }

    /// Splits `values` at `cuts` and merges the pieces' statistics in order.
    fn merged(values: &[f64], cuts: &[usize], b: &Binning) -> ChannelStats {
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| c % (values.len() + 1)).collect();
        cuts.push(0);
        cuts.push(values.len());
        cuts.sort_unstable();
        let mut acc = ChannelStats::empty();
        for w in cuts.windows(2) {
            acc.merge(&ChannelStats::from_values(&values[w[0]..w[1]], b));
        }
        acc
    }

    proptest! {
        #[test]
        fn merging_random_splits_equals_one_pass(
            values in prop::collection::vec(0.0f64..=1.0, 0..400),
            cuts in prop::collection::vec(0usize..1000, 0..12),
        ) {
            let whole = ChannelStats::from_values(&values, &UNIT);
            assert_same(&merged(&values, &cuts, &UNIT), &whole);
        }

        #[test]
        fn tiny_inputs(values in prop::collection::vec(-1.0f64..=1.0, 0..4),
                       cuts in prop::collection::vec(0usize..8, 0..4)) {
            let b = Binning::new((1.0, -1.0));
            let whole = ChannelStats::from_values(&values, &b);
            assert_same(&merged(&values, &cuts, &b), &whole);
        }

        #[test]
        fn constant_values_have_zero_spread(v in 0.0f64..=1.0, n in 1usize..300,
                                            cuts in prop::collection::vec(0usize..300, 0..6)) {
            let values = vec![v; n];
            let m = merged(&values, &cuts, &UNIT);
            prop_assert_eq!(m.mean, v);
            prop_assert_eq!(m.std(), 0.0);
            prop_assert_eq!(m.histogram[UNIT.bin(v)], n as u64);
        }

        /// Billions of values per partial, as weighted pairs.
        #[test]
        fn large_counts(pairs in prop::collection::vec((0.0f64..=1.0, 1u64..2_000_000_000), 1..40),
                        cut in 0usize..40) {
            let cut = cut % (pairs.len() + 1);
            let whole = ChannelStats::from_counts(pairs.iter().copied(), &UNIT);
            let mut m = ChannelStats::from_counts(pairs[..cut].iter().copied(), &UNIT);
            m.merge(&ChannelStats::from_counts(pairs[cut..].iter().copied(), &UNIT));
            assert_same(&m, &whole);
        }

        /// The counting shortcut equals statistics of the scaled array itself.
        #[test]
        fn image_stats_match_the_written_values(
            data in prop::collection::vec(0u16..1000, 4..200),
            c in 1usize..=4,
            ty in 0usize..7,
            channel_scope in any::<bool>(),
            f16 in any::<bool>(),
        ) {
            let data = &data[..data.len() / c * c];
            // Every sample type: 16-bit tables, 8-bit full tables, signed
            // offsets and the per-sample 32-bit path.
            let bytes: Vec<u8> = data.iter().map(|&v| (v % 256) as u8).collect();
            let i8s: Vec<i8> = data.iter().map(|&v| (v % 256) as u8 as i8).collect();
            let i16s: Vec<i16> = data.iter().map(|&v| v as i16 - 500).collect();
            let u32s: Vec<u32> = data.iter().map(|&v| u32::from(v) * 4_000_000).collect();
            let i32s: Vec<i32> = data.iter().map(|&v| (i32::from(v) - 500) * 4_000_000).collect();
            let f32s: Vec<f32> = data.iter().map(|&v| (f32::from(v) - 500.0) / 7.0).collect();
            let px = match ty {
                0 => Pixels::U8(&bytes),
                1 => Pixels::U16(data),
                2 => Pixels::I8(&i8s),
                3 => Pixels::I16(&i16s),
                4 => Pixels::U32(&u32s),
                5 => Pixels::I32(&i32s),
                _ => Pixels::F32(&f32s),
            };
            let scope = if channel_scope { Scope::Channel } else { Scope::Image };
            let dtype = if f16 { Dtype::F16 } else { Dtype::F32 };
            let range = (-1.0, 2.0);
            let ext = extremes(px, c, scope);
            let got = image_stats(px, c, scope, &ext, range, dtype, &mut StatsScratch::default());
            let mut out = Vec::new();
            Kernel::new().scale_into(px, c, scope, &ext, range, dtype, &mut out);
            let vals: Vec<f64> = match dtype {
                Dtype::F16 => out.chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f64()).collect(),
                _ => out.chunks_exact(4)
                    .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))).collect(),
            };
            let b = Binning::new(range);
            for k in 0..c {
                let ch: Vec<f64> = vals.iter().skip(k).step_by(c).copied().collect();
                assert_same(&got.channels[k], &ChannelStats::from_values(&ch, &b));
            }
            prop_assert!(got.validate(c, (data.len() / c) as u64).is_ok());
        }
    }

    #[test]
    fn ordered_fold_is_independent_of_arrival_order() {
        let images: Vec<ImageStats> = (0..20)
            .map(|i| ImageStats {
                channels: vec![ChannelStats::from_values(
                    &[f64::from(i) / 19.0, 0.3, 1.0 / f64::from(i + 1)],
                    &UNIT,
                )],
            })
            .collect();
        let mut in_order = OrderedFold::new((0.0, 1.0));
        for (i, s) in images.iter().enumerate() {
            in_order.settle(i as u64, (i % 7 != 3).then(|| s.clone()));
        }
        assert_eq!(in_order.held(), 0);
        let mut shuffled = OrderedFold::new((0.0, 1.0));
        for i in [
            5u64, 19, 0, 1, 2, 3, 4, 18, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17,
        ] {
            let s = (i % 7 != 3).then(|| images[i as usize].clone());
            shuffled.settle(i, s.clone());
            shuffled.settle(i, s); // a duplicate changes nothing
        }
        assert_eq!(shuffled.held(), 0);
        assert_eq!(in_order.finish(), shuffled.finish());
    }

    #[test]
    fn ordered_fold_equals_the_plain_fold_in_index_order_bit_for_bit() {
        // Gray and RGB images (channel 0 collects both), some not ok, the
        // first one arriving last: only moments are held meanwhile.
        let images: Vec<Option<ImageStats>> = (0..30u32)
            .map(|i| {
                let ch = |k: u32| {
                    ChannelStats::from_values(
                        &[f64::from(i * 7 + k) / 217.0, 0.5, f64::from(k) / 3.0],
                        &UNIT,
                    )
                };
                (i % 5 != 2).then(|| ImageStats {
                    channels: (0..if i % 3 == 0 { 1 } else { 3 }).map(ch).collect(),
                })
            })
            .collect();
        let mut plain = DatasetStats::new((0.0, 1.0));
        for s in images.iter().flatten() {
            plain.add(s);
        }
        let mut fold = OrderedFold::new((0.0, 1.0));
        for (i, s) in images.iter().enumerate().skip(1).rev() {
            fold.settle(i as u64, s.clone());
        }
        assert_eq!(fold.held(), 29);
        fold.settle(0, images[0].clone());
        assert_eq!(fold.held(), 0);
        let got = fold.finish();
        assert_eq!(got, plain);
        for (a, b) in got.channels.iter().zip(&plain.channels) {
            assert_eq!(a.mean.to_bits(), b.mean.to_bits());
            assert_eq!(a.m2.to_bits(), b.m2.to_bits());
        }
    }

    #[test]
    fn bins_follow_the_rule() {
        let b = Binning::new((0.0, 1.0));
        assert_eq!(b.bin(0.0), 0);
        assert_eq!(b.bin(1.0 / 256.0), 1);
        assert_eq!(b.bin(0.999), 255);
        assert_eq!(b.bin(1.0), 255);
        let inverted = Binning::new((255.0, 0.0));
        assert_eq!(inverted.bin(255.0), 255);
        assert_eq!(inverted.bin(0.0), 0);
        assert_eq!(Binning::new((3.0, 3.0)).bin(3.0), 0);
    }

    #[test]
    fn u8_image_counts_every_sample() {
        let data = [0u8, 10, 255, 7, 0, 3];
        let px = Pixels::U8(&data);
        let ext = extremes(px, 3, Scope::Image);
        let s = image_stats(
            px,
            3,
            Scope::Image,
            &ext,
            (0.0, 1.0),
            Dtype::F32,
            &mut StatsScratch::default(),
        );
        assert!(s.validate(3, 2).is_ok());
        assert_eq!(s.channels[2].max, 1.0);
        assert_eq!(s.channels[0].min, 0.0);
        assert!(matches!(
            s.validate(3, 3),
            Err(StatsError::Count { channel: 0, .. })
        ));
        assert!(matches!(
            s.validate(1, 2),
            Err(StatsError::Channels { got: 3, want: 1 })
        ));
    }

    #[test]
    fn dataset_grows_channels_and_skips_empty_merges() {
        let mut d = DatasetStats::new((0.0, 1.0));
        let gray = ImageStats {
            channels: vec![ChannelStats::from_values(&[0.5], &UNIT)],
        };
        let rgb = ImageStats {
            channels: vec![ChannelStats::from_values(&[1.0, 0.0], &UNIT); 3],
        };
        d.add(&gray);
        d.add(&rgb);
        assert_eq!(d.images, 2);
        assert_eq!(d.channels.len(), 3);
        assert_eq!(d.channels[0].count, 3);
        assert_eq!(d.channels[1].count, 2);
    }
}
