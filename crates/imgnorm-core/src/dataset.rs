//! Normalizations that need the whole dataset (`--scope dataset`,
//! `--standardize`): the per-image raw statistics of the statistics phase,
//! their fold (in image index order) into the dataset's parameters, and the
//! per-sample transform of the writing phase, the one function every mode
//! applies.
//!
//! # Definitions
//!
//! For a sample `x` of channel `c`, the min-max stage gives
//! `u = a + (x - lo) * (b - a) / (hi - lo)` (`a` when `hi == lo`), with
//! `[a, b]` = `--range` and `lo..=hi` taken per the scope: the image
//! (`image`), the image's channel (`channel`), the dataset over every channel
//! or per channel (`dataset`, `--per-channel`), or the sample type's full
//! range `0..=255` / `0..=65535` (`full`, torchvision's `ToTensor`).
//! `--standardize` then writes `z = (u - mean[c]) / std[c]`, with `mean`
//! and `std` given (`--mean`, `--std`) or the population mean and standard
//! deviation of `u` over every sample of channel `c` in the dataset (a
//! channel with `std == 0` is divided by 1). Each value is computed in f64
//! and rounded once to the output dtype.
//!
//! # Determinism
//!
//! Per image, the raw partial comes from exact integer sums (`Σx`, and
//! `nΣx² − (Σx)²` for M2), rounded to f64 only at the end. The min-max
//! stage is affine per image (or, for `dataset`, for the whole dataset), so
//! the partial of `u` follows from it in closed form; partials merge with
//! Chan's update in image index order ([`ParamsFold`]), so the parameters
//! are bit-identical whatever the worker count or arrival order.
use std::collections::BTreeMap;

use thiserror::Error;

pub use crate::normalize::ChannelMap;
use crate::normalize::{Pixels, Sample};
use crate::options::{EngineOptions, Scope};
use crate::sample::SampleType;

/// Raw statistics of one channel of one decoded image (after `--channels`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawChannel {
    /// Number of samples.
    pub count: u64,
    /// Mean of the raw sample values.
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
}

/// What the statistics phase reports for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct RawStats {
    /// Sample type of the decoded image.
    pub sample_type: SampleType,
    /// One entry per channel.
    pub channels: Vec<RawChannel>,
}

/// Raw statistics that do not describe the image they came with.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum RawStatsError {
    /// Wrong number of channels.
    #[error("raw statistics for {got} channels, the image has {want}")]
    Channels {
        /// Channels in the statistics.
        got: usize,
        /// Channels of the image.
        want: usize,
    },
    /// Counts do not match the pixel count, or impossible values.
    #[error("raw statistics of channel {0} do not match the image")]
    Inconsistent(usize),
}

impl RawStats {
    /// Checks the partial against the image's shape (results from the wire
    /// are untrusted).
    pub fn validate(&self, channels: usize, pixels: u64) -> Result<(), RawStatsError> {
        if self.channels.len() != channels {
            return Err(RawStatsError::Channels {
                got: self.channels.len(),
                want: channels,
            });
        }
        let ty = self.sample_type;
        for (c, ch) in self.channels.iter().enumerate() {
            let ok = ch.count == pixels
                && ty.holds(ch.min)
                && ty.holds(ch.max)
                && ch.min <= ch.max
                && ch.mean.is_finite()
                && ch.m2.is_finite()
                && ch.m2 >= 0.0
                && (ch.min..=ch.max).contains(&ch.mean);
            if !ok {
                return Err(RawStatsError::Inconsistent(c));
            }
        }
        Ok(())
    }
}

/// Per-channel statistics of `px` (`channels` interleaved channels): exact
/// integer sums for samples of at most 16 bits; for 32-bit samples the mean
/// and M2 in two f64 passes in sample order (deterministic, so every mode
/// gets the same bits).
pub fn raw_stats(px: Pixels<'_>, channels: usize) -> RawStats {
    let channels = channels.max(1);
    let stats = match px {
        Pixels::U8(s) => exact(s, channels),
        Pixels::U16(s) => exact(s, channels),
        Pixels::I8(s) => exact(s, channels),
        Pixels::I16(s) => exact(s, channels),
        Pixels::U32(s) => two_pass(s, channels),
        Pixels::I32(s) => two_pass(s, channels),
        Pixels::F32(s) => two_pass(s, channels),
    };
    RawStats {
        sample_type: px.sample_type(),
        channels: stats,
    }
}

fn empty_channels(channels: usize) -> Vec<RawChannel> {
    vec![
        RawChannel {
            count: 0,
            mean: 0.0,
            m2: 0.0,
            min: 0.0,
            max: 0.0,
        };
        channels
    ]
}

/// Exact sums of samples of at most 16 bits (as signed integers).
fn exact<T: Sample>(s: &[T], c: usize) -> Vec<RawChannel> {
    let mut sum = vec![0i128; c];
    let mut sq = vec![0u128; c];
    let mut lo = vec![i64::MAX; c];
    let mut hi = vec![i64::MIN; c];
    let mut n = 0u64;
    // Per-pixel 64-bit partial sums, flushed before they could overflow.
    const FLUSH: usize = 1 << 20;
    for block in s.chunks(FLUSH * c) {
        let mut s1 = vec![0i64; c];
        let mut s2 = vec![0u64; c];
        for p in block.chunks_exact(c) {
            for k in 0..c {
                let v = p[k].to_i64();
                s1[k] += v;
                s2[k] += v.unsigned_abs() * v.unsigned_abs();
                lo[k] = lo[k].min(v);
                hi[k] = hi[k].max(v);
            }
            n += 1;
        }
        for k in 0..c {
            sum[k] += i128::from(s1[k]);
            sq[k] += u128::from(s2[k]);
        }
    }
    if n == 0 {
        return empty_channels(c);
    }
    (0..c)
        .map(|k| {
            let nn = n as i128;
            // n * Σx² − (Σx)² is exact in i128 (and never negative).
            let num = (nn * sq[k] as i128 - sum[k] * sum[k]).max(0);
            RawChannel {
                count: n,
                mean: sum[k] as f64 / n as f64,
                m2: num as f64 / n as f64,
                min: lo[k] as f64,
                max: hi[k] as f64,
            }
        })
        .collect()
}

/// Two f64 passes (mean, then squared deviations) for 32-bit samples.
fn two_pass<T: Sample>(s: &[T], c: usize) -> Vec<RawChannel> {
    let n = (s.len() / c) as u64;
    if n == 0 {
        return empty_channels(c);
    }
    let mut sum = vec![0f64; c];
    let mut lo = vec![f64::INFINITY; c];
    let mut hi = vec![f64::NEG_INFINITY; c];
    for p in s.chunks_exact(c) {
        for k in 0..c {
            let v = p[k].to_f64();
            sum[k] += v;
            lo[k] = lo[k].min(v);
            hi[k] = hi[k].max(v);
        }
    }
    let mean: Vec<f64> = (0..c)
        .map(|k| (sum[k] / n as f64).clamp(lo[k], hi[k]))
        .collect();
    let mut m2 = vec![0f64; c];
    for p in s.chunks_exact(c) {
        for k in 0..c {
            let d = p[k].to_f64() - mean[k];
            m2[k] += d * d;
        }
    }
    (0..c)
        .map(|k| RawChannel {
            count: n,
            mean: mean[k],
            m2: m2[k],
            min: lo[k],
            max: hi[k],
        })
        .collect()
}

/// A mergeable `(count, mean, M2)` partial.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Moments {
    /// Number of values.
    pub count: u64,
    /// Their mean.
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
}

impl Moments {
    /// Chan, Golub and LeVeque's parallel update (the same as
    /// [`crate::stats::ChannelStats::merge`]).
    pub fn merge(&mut self, o: &Moments) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *o;
            return;
        }
        let (na, nb) = (self.count as f64, o.count as f64);
        let n = na + nb;
        let delta = o.mean - self.mean;
        self.mean += delta * (nb / n);
        self.m2 += o.m2 + delta * delta * (na * nb / n);
        self.count += o.count;
    }

    /// The moments of `a + (v - lo) * k` given those of `v`.
    pub fn affine(&self, a: f64, lo: f64, k: f64) -> Moments {
        Moments {
            count: self.count,
            mean: if k == 0.0 {
                a
            } else {
                a + (self.mean - lo) * k
            },
            m2: self.m2 * k * k,
        }
    }

    /// Population standard deviation.
    pub fn std(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            (self.m2 / self.count as f64).max(0.0).sqrt()
        }
    }
}

/// The slope of the min-max stage for `lo..=hi` into `range` (0 when
/// `hi == lo`: every sample maps to `a`).
fn slope(lo: f64, hi: f64, range: (f64, f64)) -> f64 {
    if crate::normalize::constant(lo, hi) {
        0.0
    } else {
        (range.1 - range.0) / (hi - lo)
    }
}

/// The dataset-wide parameters the writing phase applies (carried in each
/// lease of that phase).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct DatasetParams {
    /// `--scope dataset`: the dataset's minimum, one value (all channels) or
    /// one per channel. Empty for other scopes.
    pub min: Vec<f64>,
    /// `--scope dataset`: the dataset's maximum, as `min`.
    pub max: Vec<f64>,
    /// `--standardize`: per-channel means (one value: every channel).
    pub mean: Vec<f64>,
    /// `--standardize`: per-channel standard deviations, as `mean`.
    pub std: Vec<f64>,
}

impl DatasetParams {
    /// The parameters of a job that needs no statistics phase (given
    /// `--mean`/`--std`, or no standardization at all).
    pub fn from_options(opts: &EngineOptions) -> DatasetParams {
        let z = opts.standardize.clone().unwrap_or_default();
        DatasetParams {
            min: opts.dataset_min.iter().map(|&v| f64::from(v)).collect(),
            max: opts.dataset_max.iter().map(|&v| f64::from(v)).collect(),
            mean: z.mean,
            std: z.std,
        }
    }

    /// The output range the histograms of `stats.json` use: `--range`, or
    /// for standardized outputs the union over channels of where
    /// `[a, b]` lands.
    pub fn output_range(&self, opts: &EngineOptions) -> (f64, f64) {
        if opts.standardize.is_none() || self.mean.is_empty() {
            return opts.range;
        }
        let (a, b) = opts.range;
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for (m, s) in self.mean.iter().zip(&self.std) {
            for v in [(a - m) / s, (b - m) / s] {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        if lo.is_finite() && hi.is_finite() {
            (lo, hi)
        } else {
            opts.range
        }
    }
}

/// An image that the job's parameters cannot be applied to.
#[derive(Debug, Error, PartialEq)]
pub enum TransformError {
    /// `--mean`/`--std` were given for a different channel count.
    #[error(
        "image has {image} channels but --mean/--std give {given} values (use --channels rgb or gray, or give one value)"
    )]
    ChannelCount {
        /// Channels of the image.
        image: usize,
        /// Values given.
        given: usize,
    },
    /// The parameters do not cover this channel (they come from a statistics
    /// phase that did not see it: an internal error).
    #[error("dataset parameters do not cover channel {0}")]
    Missing(usize),
}

/// Checks that given `--mean`/`--std` fit an image with `channels` channels.
pub fn check_channels(opts: &EngineOptions, channels: usize) -> Result<(), TransformError> {
    match &opts.standardize {
        Some(z) if z.mean.len() > 1 && z.mean.len() != channels => {
            Err(TransformError::ChannelCount {
                image: channels,
                given: z.mean.len(),
            })
        }
        _ => Ok(()),
    }
}

/// The per-channel maps of an image with per-channel extremes
/// `min[c]..=max[c]` (from [`crate::normalize::extremes`] with
/// [`Scope::Channel`]) and sample type `ty`, under `opts` and `params`.
pub fn transform(
    opts: &EngineOptions,
    params: &DatasetParams,
    min: &[f64],
    max: &[f64],
    ty: SampleType,
) -> Result<Vec<ChannelMap>, TransformError> {
    let channels = min.len();
    check_channels(opts, channels)?;
    let img_lo = min.iter().copied().reduce(f64::min).unwrap_or(0.0);
    let img_hi = max.iter().copied().reduce(f64::max).unwrap_or(0.0);
    let pick = |v: &[f64], c: usize| -> Result<f64, TransformError> {
        match v.len() {
            1 => Ok(v[0]),
            _ => v.get(c).copied().ok_or(TransformError::Missing(c)),
        }
    };
    (0..channels)
        .map(|c| {
            let (lo, hi) = match opts.scope {
                Scope::Image => (img_lo, img_hi),
                Scope::Channel => (min[c], max.get(c).copied().unwrap_or(min[c])),
                Scope::Full => ty.full_scale(),
                Scope::Dataset => (pick(&params.min, c)?, pick(&params.max, c)?),
            };
            let z = match &opts.standardize {
                None => None,
                Some(_) => {
                    let m = pick_f(&params.mean, c).ok_or(TransformError::Missing(c))?;
                    let s = pick_f(&params.std, c).ok_or(TransformError::Missing(c))?;
                    Some((m, if s > 0.0 { s } else { 1.0 }))
                }
            };
            Ok(ChannelMap {
                lo,
                hi: hi.max(lo),
                range: opts.range,
                z,
            })
        })
        .collect()
}

fn pick_f(v: &[f64], c: usize) -> Option<f64> {
    match v.len() {
        1 => Some(v[0]),
        _ => v.get(c).copied(),
    }
}

/// The statistics phase's running state: raw partials folded in image index
/// order into what [`ParamsFold::finish`] turns into [`DatasetParams`].
/// Channel `k` collects the `k`-th channel of every image that has one.
#[derive(Debug, Clone)]
pub struct ParamsFold {
    opts: EngineOptions,
    next: u64,
    ahead: BTreeMap<u64, Option<RawStats>>,
    min: Vec<f64>,
    max: Vec<f64>,
    /// Moments of `u` (image-local scopes) or of the raw samples (`dataset`,
    /// turned into moments of `u` at the end: the stage is one affine map).
    moments: Vec<Moments>,
    images: u64,
}

impl ParamsFold {
    /// Nothing settled yet.
    pub fn new(opts: &EngineOptions) -> ParamsFold {
        ParamsFold {
            opts: opts.clone(),
            next: 0,
            ahead: BTreeMap::new(),
            min: Vec::new(),
            max: Vec::new(),
            moments: Vec::new(),
            images: 0,
        }
    }

    /// Item `index` is final, with its raw statistics (`None` when it is not
    /// `ok`). Settling an item a second time changes nothing.
    pub fn settle(&mut self, index: u64, stats: Option<RawStats>) {
        if index < self.next || self.ahead.contains_key(&index) {
            return;
        }
        self.ahead.insert(index, stats);
        while let Some(entry) = self.ahead.first_entry() {
            if *entry.key() != self.next {
                break;
            }
            if let Some(s) = entry.remove() {
                self.add(&s);
            }
            self.next += 1;
        }
    }

    /// Images folded so far.
    pub fn images(&self) -> u64 {
        self.images
    }

    fn add(&mut self, s: &RawStats) {
        self.images += 1;
        let n = s.channels.len();
        if self.min.len() < n {
            self.min.resize(n, f64::INFINITY);
            self.max.resize(n, f64::NEG_INFINITY);
            self.moments.resize(n, Moments::default());
        }
        let img_lo = s
            .channels
            .iter()
            .map(|c| c.min)
            .reduce(f64::min)
            .unwrap_or(0.0);
        let img_hi = s
            .channels
            .iter()
            .map(|c| c.max)
            .reduce(f64::max)
            .unwrap_or(0.0);
        let range = self.opts.range;
        for (k, ch) in s.channels.iter().enumerate() {
            self.min[k] = self.min[k].min(ch.min);
            self.max[k] = self.max[k].max(ch.max);
            let raw = Moments {
                count: ch.count,
                mean: ch.mean,
                m2: ch.m2,
            };
            let (lo, hi) = match self.opts.scope {
                Scope::Image => (img_lo, img_hi),
                Scope::Channel => (ch.min, ch.max),
                Scope::Full => s.sample_type.full_scale(),
                Scope::Dataset => {
                    self.moments[k].merge(&raw);
                    continue;
                }
            };
            let u = raw.affine(range.0, lo, slope(lo, hi, range));
            self.moments[k].merge(&u);
        }
    }

    /// The parameters: the folded prefix, then whatever is held, in index
    /// order (gaps only remain when items never settled).
    pub fn finish(mut self) -> DatasetParams {
        for s in std::mem::take(&mut self.ahead).into_values().flatten() {
            self.add(&s);
        }
        let mut p = DatasetParams::from_options(&self.opts);
        if self.opts.scope == Scope::Dataset && !self.min.is_empty() {
            if self.opts.per_channel {
                p.min = self.min.clone();
                p.max = self.max.clone();
            } else {
                p.min = vec![self.min.iter().copied().reduce(f64::min).unwrap_or(0.0)];
                p.max = vec![self.max.iter().copied().reduce(f64::max).unwrap_or(0.0)];
            }
        }
        if self.opts.standardize.as_ref().is_some_and(|z| z.computed()) {
            let range = self.opts.range;
            let u: Vec<Moments> = self
                .moments
                .iter()
                .enumerate()
                .map(|(k, m)| match self.opts.scope {
                    Scope::Dataset => {
                        let g = if p.min.len() == 1 { 0 } else { k };
                        let (lo, hi) = (p.min[g], p.max[g]);
                        m.affine(range.0, lo, slope(lo, hi, range))
                    }
                    _ => *m,
                })
                .collect();
            p.mean = u.iter().map(|m| m.mean).collect();
            p.std = u.iter().map(|m| m.std()).collect();
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Standardize;
    use proptest::prelude::*;

    fn opts(scope: Scope, per_channel: bool, z: bool) -> EngineOptions {
        EngineOptions {
            scope,
            per_channel,
            standardize: z.then(Standardize::default),
            ..EngineOptions::default()
        }
    }

    /// Reference: every sample of every image, in f64, no tables.
    fn reference(images: &[(Vec<u8>, usize)], o: &EngineOptions) -> Vec<Vec<f64>> {
        let c = images.iter().map(|i| i.1).max().unwrap();
        // dataset min/max
        let mut lo = vec![u32::MAX; c];
        let mut hi = vec![0; c];
        for (px, ch) in images {
            for p in px.chunks(*ch) {
                for k in 0..*ch {
                    lo[k] = lo[k].min(p[k] as u32);
                    hi[k] = hi[k].max(p[k] as u32);
                }
            }
        }
        let (glo, ghi) = (*lo.iter().min().unwrap(), *hi.iter().max().unwrap());
        let (a, b) = o.range;
        let mm = |x: u32, l: u32, h: u32| {
            if h == l {
                a
            } else {
                a + (x - l) as f64 * (b - a) / (h - l) as f64
            }
        };
        let mut u: Vec<Vec<Vec<f64>>> = Vec::new();
        for (px, ch) in images {
            let imin = *px.iter().min().unwrap() as u32;
            let imax = *px.iter().max().unwrap() as u32;
            let mut per: Vec<Vec<f64>> = vec![Vec::new(); *ch];
            for p in px.chunks(*ch) {
                for k in 0..*ch {
                    let x = p[k] as u32;
                    let (l, h) = match o.scope {
                        Scope::Image => (imin, imax),
                        Scope::Full => (0, 255),
                        Scope::Dataset if o.per_channel => (lo[k], hi[k]),
                        Scope::Dataset => (glo, ghi),
                        Scope::Channel => unreachable!(),
                    };
                    per[k].push(mm(x, l, h));
                }
            }
            u.push(per);
        }
        if o.standardize.is_none() {
            return u.into_iter().flatten().collect();
        }
        let mut mean = vec![0.0; c];
        let mut n = vec![0.0; c];
        for img in &u {
            for (k, v) in img.iter().enumerate() {
                mean[k] += v.iter().sum::<f64>();
                n[k] += v.len() as f64;
            }
        }
        for k in 0..c {
            mean[k] /= n[k];
        }
        let mut var = vec![0.0; c];
        for img in &u {
            for (k, v) in img.iter().enumerate() {
                var[k] += v.iter().map(|x| (x - mean[k]).powi(2)).sum::<f64>();
            }
        }
        let std: Vec<f64> = (0..c)
            .map(|k| {
                let s = (var[k] / n[k]).sqrt();
                if s > 0.0 { s } else { 1.0 }
            })
            .collect();
        u.into_iter()
            .flat_map(|img| {
                img.into_iter()
                    .enumerate()
                    .map(|(k, v)| v.into_iter().map(|x| (x - mean[k]) / std[k]).collect())
                    .collect::<Vec<Vec<f64>>>()
            })
            .collect()
    }

    /// Two passes as the engine runs them: raw stats, fold, then maps.
    fn two_pass(images: &[(Vec<u8>, usize)], o: &EngineOptions) -> Vec<Vec<f64>> {
        let mut fold = ParamsFold::new(o);
        // Settle in reverse: the order must not matter.
        for (i, (px, ch)) in images.iter().enumerate().rev() {
            fold.settle(i as u64, Some(raw_stats(Pixels::U8(px), *ch)));
        }
        let p = fold.finish();
        let mut out = Vec::new();
        for (px, ch) in images {
            let r = raw_stats(Pixels::U8(px), *ch);
            let min: Vec<f64> = r.channels.iter().map(|c| c.min).collect();
            let max: Vec<f64> = r.channels.iter().map(|c| c.max).collect();
            let maps = transform(o, &p, &min, &max, SampleType::Uint8).unwrap();
            for (k, map) in maps.iter().enumerate() {
                out.push(
                    px.iter()
                        .skip(k)
                        .step_by(*ch)
                        .map(|&x| map.value(f64::from(x)))
                        .collect(),
                );
            }
        }
        out
    }

    fn images() -> impl Strategy<Value = Vec<(Vec<u8>, usize)>> {
        prop::collection::vec(
            (1usize..=4, 1usize..40)
                .prop_flat_map(|(c, n)| (prop::collection::vec(any::<u8>(), c * n), Just(c))),
            1..6,
        )
    }

    proptest! {
        #[test]
        fn two_passes_match_the_whole_dataset_reference(
            imgs in images(),
            scope in prop::sample::select(vec![Scope::Image, Scope::Full, Scope::Dataset]),
            per_channel in any::<bool>(),
            z in any::<bool>(),
        ) {
            let o = opts(scope, per_channel && scope == Scope::Dataset, z);
            let got = two_pass(&imgs, &o);
            let want = reference(&imgs, &o);
            prop_assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
                prop_assert!((g - w).abs() <= 1e-9 * (1.0 + w.abs()), "{} vs {}", g, w);
            }
        }

        #[test]
        fn merged_moments_equal_one_pass(
            v in prop::collection::vec(-1e3f64..1e3, 1..200),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(v.len() + 1)).collect();
            cuts.extend([0, v.len()]);
            cuts.sort_unstable();
            let mut merged = Moments::default();
            for w in cuts.windows(2) {
                let part = &v[w[0]..w[1]];
                if part.is_empty() {
                    continue;
                }
                let n = part.len() as f64;
                let mean = part.iter().sum::<f64>() / n;
                let m2 = part.iter().map(|x| (x - mean).powi(2)).sum();
                merged.merge(&Moments { count: part.len() as u64, mean, m2 });
            }
            let n = v.len() as f64;
            let mean = v.iter().sum::<f64>() / n;
            let m2: f64 = v.iter().map(|x| (x - mean).powi(2)).sum();
            prop_assert_eq!(merged.count, v.len() as u64);
            prop_assert!((merged.mean - mean).abs() <= 1e-9 * (1.0 + mean.abs()));
            prop_assert!((merged.m2 - m2).abs() <= 1e-8 * (1.0 + m2));
        }

        #[test]
        fn raw_stats_are_exact(px in prop::collection::vec(any::<u16>(), 1..300), c in 1usize..=4) {
            let px = &px[..px.len() / c * c];
            prop_assume!(!px.is_empty());
            let r = raw_stats(Pixels::U16(px), c);
            for k in 0..c {
                let v: Vec<f64> = px.iter().skip(k).step_by(c).map(|&x| f64::from(x)).collect();
                let n = v.len() as f64;
                let mean = v.iter().sum::<f64>() / n;
                let m2: f64 = v.iter().map(|x| (x - mean).powi(2)).sum();
                prop_assert_eq!(r.channels[k].count, v.len() as u64);
                prop_assert!((r.channels[k].mean - mean).abs() <= 1e-9 * mean.abs().max(1.0));
                prop_assert!((r.channels[k].m2 - m2).abs() <= 1e-6 * m2.max(1.0));
            }
            prop_assert!(r.validate(c, (px.len() / c) as u64).is_ok());
        }
    }

    #[test]
    fn fold_is_bit_identical_whatever_the_settle_order() {
        let o = opts(Scope::Image, false, true);
        let stats: Vec<RawStats> = (0..50u8)
            .map(|i| {
                let px: Vec<u8> = (0..30)
                    .map(|k| i.wrapping_mul(37).wrapping_add(k * 7))
                    .collect();
                raw_stats(Pixels::U8(&px), 3)
            })
            .collect();
        let mut a = ParamsFold::new(&o);
        for (i, s) in stats.iter().enumerate() {
            a.settle(i as u64, Some(s.clone()));
        }
        let mut b = ParamsFold::new(&o);
        for (i, s) in stats.iter().enumerate().rev() {
            b.settle(i as u64, Some(s.clone()));
        }
        let (a, b) = (a.finish(), b.finish());
        assert_eq!(a, b);
        assert!(
            a.mean
                .iter()
                .zip(&b.mean)
                .all(|(x, y)| x.to_bits() == y.to_bits())
        );
    }

    #[test]
    fn given_mean_std_must_fit_the_channels() {
        let mut o = opts(Scope::Full, false, false);
        o.standardize = Some(Standardize {
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        });
        let p = DatasetParams::from_options(&o);
        assert!(matches!(
            transform(&o, &p, &[0.0], &[255.0], SampleType::Uint8),
            Err(TransformError::ChannelCount { image: 1, given: 3 })
        ));
        let maps = transform(
            &o,
            &p,
            &[0.0, 0.0, 0.0],
            &[255.0, 255.0, 255.0],
            SampleType::Uint8,
        )
        .unwrap();
        assert!((maps[0].value(255.0) - (1.0 - 0.485) / 0.229).abs() < 1e-12);
        assert!((maps[2].value(0.0) - (0.0 - 0.406) / 0.225).abs() < 1e-12);
    }

    #[test]
    fn constant_dataset_channel_divides_by_one() {
        let o = opts(Scope::Dataset, false, true);
        let mut f = ParamsFold::new(&o);
        f.settle(0, Some(raw_stats(Pixels::U8(&[9, 9, 9]), 1)));
        let p = f.finish();
        assert_eq!((p.min.clone(), p.max.clone()), (vec![9.0], vec![9.0]));
        assert_eq!(p.std, vec![0.0]);
        let maps = transform(&o, &p, &[9.0], &[9.0], SampleType::Uint8).unwrap();
        assert_eq!(maps[0].value(9.0), 0.0);
    }

    #[test]
    fn signed_and_float_samples_fold_like_unsigned_ones() {
        // The same values shifted into int16 and float32: the same
        // min-max outputs, and raw statistics in their own units.
        let o = opts(Scope::Dataset, false, true);
        let u: Vec<u16> = vec![10, 20, 40, 70];
        let i: Vec<i16> = u.iter().map(|&v| v as i16 - 1000).collect();
        let f: Vec<f32> = u.iter().map(|&v| f32::from(v) / 4.0).collect();
        let ru = raw_stats(Pixels::U16(&u), 1);
        let ri = raw_stats(Pixels::I16(&i), 1);
        let rf = raw_stats(Pixels::F32(&f), 1);
        assert_eq!(ri.sample_type, SampleType::Int16);
        assert_eq!((ri.channels[0].min, ri.channels[0].max), (-990.0, -930.0));
        assert_eq!(ri.channels[0].mean, ru.channels[0].mean - 1000.0);
        assert_eq!(ri.channels[0].m2, ru.channels[0].m2);
        assert_eq!(rf.channels[0].m2, ru.channels[0].m2 / 16.0);
        for r in [&ru, &ri, &rf] {
            assert!(r.validate(1, 4).is_ok());
        }
        let mut bad = ri.clone();
        bad.channels[0].min = 0.5;
        assert!(bad.validate(1, 4).is_err());
        let params = |r: &RawStats| {
            let mut fold = ParamsFold::new(&o);
            fold.settle(0, Some(r.clone()));
            fold.finish()
        };
        let (pu, pi, pf) = (params(&ru), params(&ri), params(&rf));
        assert!((pu.mean[0] - pi.mean[0]).abs() < 1e-12 && (pu.mean[0] - pf.mean[0]).abs() < 1e-12);
        assert!((pu.std[0] - pi.std[0]).abs() < 1e-12 && (pu.std[0] - pf.std[0]).abs() < 1e-12);
        let mi = transform(&o, &pi, &[-990.0], &[-930.0], SampleType::Int16).unwrap();
        let mu = transform(&o, &pu, &[10.0], &[70.0], SampleType::Uint16).unwrap();
        assert!((mi[0].value(-960.0) - mu[0].value(40.0)).abs() < 1e-12);
        // --scope full: the type's range (floats: 0..=1).
        let full = opts(Scope::Full, false, false);
        let m = transform(
            &full,
            &DatasetParams::default(),
            &[0.0],
            &[0.5],
            SampleType::Float32,
        )
        .unwrap();
        assert_eq!(m[0].value(0.25), 0.25);
        let m = transform(
            &full,
            &DatasetParams::default(),
            &[0.0],
            &[0.0],
            SampleType::Int8,
        )
        .unwrap();
        assert_eq!(m[0].value(-128.0), 0.0);
        assert_eq!(m[0].value(127.0), 1.0);
    }
}
