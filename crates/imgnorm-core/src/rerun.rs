//! Reruns into an existing output: given the earlier run's manifest rows
//! (each with the stamp its input had then) and today's listing of the
//! input, decides which files keep their row and output, which are
//! processed (new, changed, or failed and retried) and which rows leave
//! because their file left the input. Pure: the I/O edge
//! (`imgnorm_engine::rerun`) reads the old manifest, stats the inputs,
//! verifies every kept output's checksum and may still send a kept file
//! back to processing when its output is missing or damaged.
//!
//! Two modes ([`Mode`]): an ordinary rerun ([`Mode::Update`]) brings the
//! output up to date with the input (the result is what a clean run would
//! write); `--retry-failed` ([`Mode::RetryFailed`]) processes exactly the
//! earlier run's `failed` rows and adds nothing new.
use serde::{Deserialize, Serialize};

use crate::normalize::{Extremes, output_value};
use crate::options::{ArrayLayout, Dtype, EngineOptions, Scope};
use crate::record::{Record, Status};
use crate::stats::{Binning, ChannelStats, ImageStats, scale_domains};

/// The flags of a run that say what to do with an output folder holding an
/// earlier run (`--overwrite`, `--retry-failed`, `--prune`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RerunFlags {
    /// Delete whatever the output folder holds and start afresh.
    #[serde(default)]
    pub overwrite: bool,
    /// Process only the earlier run's `failed` rows ([`Mode::RetryFailed`]).
    #[serde(default)]
    pub retry_failed: bool,
    /// Delete the outputs of rows whose file left the input.
    #[serde(default)]
    pub prune: bool,
}

impl RerunFlags {
    /// The planning mode these flags ask for.
    pub fn mode(&self) -> Mode {
        if self.retry_failed {
            Mode::RetryFailed
        } else {
            Mode::Update
        }
    }
}

/// What an input file looked like when it was listed: its size and
/// modification time. Two equal stamps are taken to mean the same content
/// (as `make` and `rsync` do); a changed size or time sends the file back to
/// processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputStamp {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

/// One file of today's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Path relative to the input root (the manifest's `path`).
    pub path: String,
    /// Its stamp now (`None`: it could not be read; never equal to anything).
    pub stamp: Option<InputStamp>,
}

/// One row of the earlier run's manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Earlier {
    /// The row as the manifest has it.
    pub record: Record,
    /// The stamp its input had when that run listed it (`None`: unknown,
    /// e.g. a discovery row, which has no file).
    pub stamp: Option<InputStamp>,
}

/// What kind of rerun.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Bring the output up to date: new and changed files are processed,
    /// unchanged ones keep their row (whatever its status).
    #[default]
    Update,
    /// `--retry-failed`: only the earlier `failed` rows are processed;
    /// every other row is kept as it is, files new to the input are not
    /// added.
    RetryFailed,
}

/// Why a file is processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// No earlier row.
    New,
    /// Its stamp differs from the earlier one (or one is unknown).
    Changed,
    /// `--retry-failed`: its earlier row is `failed`.
    Retry,
}

/// The decision for one file of the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Keep the earlier row (index into the `earlier` slice given to
    /// [`plan`]); an `ok` row's output is verified by the caller.
    Keep(usize),
    /// Process the file.
    Process(Why),
    /// `--retry-failed`: a file new to the input, left out of this run.
    Leave,
}

/// Counts of a plan, as the summary reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RerunCounts {
    /// Rows kept from the earlier run (their outputs not rewritten).
    pub kept: u64,
    /// Files with no earlier row, processed.
    pub new: u64,
    /// Files changed since the earlier run, processed.
    pub changed: u64,
    /// `--retry-failed`: earlier `failed` rows processed again.
    pub retried: u64,
    /// Earlier rows whose file left the input (dropped from the manifest).
    pub gone: u64,
    /// `--retry-failed`: files new to the input that were not added.
    pub not_added: u64,
    /// `--retry-failed`: kept rows whose file changed since (run without
    /// `--retry-failed` to process them).
    pub stale: u64,
}

/// The rerun fields of the final JSON line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RerunSummary {
    /// Rows kept from the earlier run, outputs not rewritten.
    pub kept: u64,
    /// Files new to the input, processed.
    pub new: u64,
    /// Files changed since the earlier run, processed.
    pub changed: u64,
    /// Earlier `failed` rows processed again (`--retry-failed`).
    pub retried: u64,
    /// Of those, how many are `ok` now.
    pub recovered: u64,
    /// Kept rows whose output was missing or damaged, processed again.
    pub repaired: u64,
    /// Earlier rows whose file left the input, dropped from the manifest.
    pub gone: u64,
    /// Their outputs deleted (`--prune`).
    pub pruned: u64,
    /// `--retry-failed`: files new to the input, not added.
    pub not_added: u64,
}

/// The decisions for a listing ([`plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// One decision per listed file, in listing order.
    pub decisions: Vec<Decision>,
    /// Indices (into `earlier`) of rows whose file is no longer listed: they
    /// leave the manifest; their outputs are deleted with `--prune`.
    pub gone: Vec<usize>,
    /// The counts.
    pub counts: RerunCounts,
}

/// Decides, for each file of `listed` (sorted by path), whether the row of
/// `earlier` (sorted by path, as the manifest is) is kept or the file is
/// processed, and which earlier rows left. Files listed today among
/// `problems` (paths discovery gave a row of its own) are neither kept nor
/// gone: their new row replaces the earlier one.
pub fn plan(earlier: &[Earlier], listed: &[Listed], problems: &[&str], mode: Mode) -> Plan {
    let mut decisions = Vec::with_capacity(listed.len());
    let mut counts = RerunCounts::default();
    let mut gone = Vec::new();
    let mut seen = vec![false; earlier.len()];
    let mut e = 0;
    for file in listed {
        while e < earlier.len() && earlier[e].record.path < file.path {
            e += 1;
        }
        let old = (e < earlier.len() && earlier[e].record.path == file.path).then_some(e);
        let decision = match old {
            None => match mode {
                Mode::Update => Decision::Process(Why::New),
                Mode::RetryFailed => Decision::Leave,
            },
            Some(i) => {
                seen[i] = true;
                let row = &earlier[i];
                let same = row.stamp.is_some() && row.stamp == file.stamp;
                match mode {
                    Mode::RetryFailed if row.record.status == Status::Failed => {
                        Decision::Process(Why::Retry)
                    }
                    Mode::RetryFailed => {
                        if !same {
                            counts.stale += 1;
                        }
                        Decision::Keep(i)
                    }
                    Mode::Update if same => Decision::Keep(i),
                    Mode::Update => Decision::Process(Why::Changed),
                }
            }
        };
        match decision {
            Decision::Keep(_) => counts.kept += 1,
            Decision::Process(Why::New) => counts.new += 1,
            Decision::Process(Why::Changed) => counts.changed += 1,
            Decision::Process(Why::Retry) => counts.retried += 1,
            Decision::Leave => counts.not_added += 1,
        }
        decisions.push(decision);
    }
    for (i, row) in earlier.iter().enumerate() {
        if seen[i] {
            continue;
        }
        if problems.binary_search(&row.record.path.as_str()).is_err() {
            counts.gone += 1;
        }
        // A path that is a discovery row today has no file to keep an
        // output for either.
        gone.push(i);
    }
    Plan {
        decisions,
        gone,
        counts,
    }
}

/// The output statistics of an `ok` row's array, recovered from the array's
/// data bytes (the `.npy` file after its header) and the row: exactly the
/// [`ImageStats`] the engine folded when it wrote them, so a kept image adds
/// the same numbers to `stats.json` as a clean run. The engine counts each
/// source sample value `x` and sums over the distinct values with the output
/// value each maps to ([`crate::stats::image_stats`]); reading the array
/// back gives those counts as long as no two source values of a channel
/// map to the same output bytes (f32 outputs, and min-max stretches to u8
/// or u16 of 8-bit sources). `None` when they can (f16 or u8 outputs of
/// 16-bit sources), when the options are not the per-image min-max
/// (`--scope image|channel` without `--standardize`), or when the bytes do
/// not match the row: the caller then processes the image again.
pub fn stats_from_array(row: &Record, data: &[u8], opts: &EngineOptions) -> Option<ImageStats> {
    if !matches!(opts.scope, Scope::Image | Scope::Channel) || opts.standardize.is_some() {
        return None;
    }
    let channels = row.channels? as usize;
    let pixels = (row.width? as usize).checked_mul(row.height? as usize)?;
    let size = opts.dtype.size();
    if channels == 0 || data.len() != pixels.checked_mul(channels)?.checked_mul(size)? {
        return None;
    }
    let ext = Extremes {
        min: row.min.clone(),
        max: row.max.clone(),
    };
    let domains = scale_domains(channels, opts.scope, &ext);
    let (range, dtype) = (opts.range, opts.dtype);
    // Per channel: the output bits of each source value `lo + i`, a table
    // from bits back to `i` (which also proves no two values share bits),
    // and the inverse of the scaling, which finds `i` for almost every
    // element with a few flops (the table is the fallback).
    let mut channels_maps = Vec::with_capacity(channels);
    for &(lo, hi) in &domains {
        let n = (hi - lo) as usize + 1;
        let mut table = ValueTable::new(n);
        let mut bits = Vec::with_capacity(n);
        for x in lo..=hi {
            let b = output_bits(output_value(x, lo, hi, range, dtype), dtype);
            if !table.insert(b, x - lo) {
                return None;
            }
            bits.push(b);
        }
        let k = if hi > lo && range.1 != range.0 {
            f64::from(hi - lo) / (range.1 - range.0)
        } else {
            0.0
        };
        channels_maps.push(ChannelMap {
            table,
            bits,
            a: range.0,
            k,
        });
    }
    let mut counts: Vec<Vec<u64>> = domains
        .iter()
        .map(|&(lo, hi)| vec![0; (hi - lo) as usize + 1])
        .collect();
    // The channel of each element, without a division per element: the
    // next channel after every element (HWC) or after every plane (CHW).
    let run = match opts.layout {
        ArrayLayout::Hwc => 1,
        ArrayLayout::Chw => pixels,
    };
    let (mut c, mut left) = (0usize, run);
    let mut add = |bits: u32| -> Option<()> {
        let x = channels_maps.get(c)?.find(bits, dtype)?;
        *counts.get_mut(c)?.get_mut(x)? += 1;
        left -= 1;
        if left == 0 {
            left = run;
            c += 1;
            if c == channels {
                c = 0;
            }
        }
        Some(())
    };
    match size {
        1 => {
            for &b in data {
                add(u32::from(b))?;
            }
        }
        2 => {
            for e in data.as_chunks::<2>().0 {
                add(u32::from(u16::from_le_bytes(*e)))?;
            }
        }
        4 => {
            for e in data.as_chunks::<4>().0 {
                add(u32::from_le_bytes(*e))?;
            }
        }
        _ => return None,
    }
    let binning = Binning::new(range);
    let channels = domains
        .iter()
        .zip(&counts)
        .map(|(&(lo, hi), n)| {
            let pairs = (lo..=hi)
                .zip(n.iter().copied())
                .map(move |(x, n)| (output_value(x, lo, hi, range, dtype), n));
            ChannelStats::from_counts(pairs, &binning)
        })
        .collect();
    Some(ImageStats { channels })
}

/// One channel's way from output bits back to the source value's offset.
struct ChannelMap {
    table: ValueTable,
    bits: Vec<u32>,
    /// The range's first end.
    a: f64,
    /// Source steps per unit of output (0 for a constant channel).
    k: f64,
}

impl ChannelMap {
    /// The offset of the source value whose output has `bits`.
    fn find(&self, bits: u32, dtype: Dtype) -> Option<usize> {
        let v = match dtype {
            Dtype::F32 => f64::from(f32::from_bits(bits)),
            Dtype::F16 => half::f16::from_bits(bits as u16).to_f64(),
            Dtype::U8 | Dtype::U16 => f64::from(bits),
        };
        let last = self.bits.len() - 1;
        // Rounded by truncation (`round` is a libm call on baseline x86-64).
        let guess = (v - self.a) * self.k + 0.5;
        if guess.is_finite() && guess >= 0.0 {
            let g = (guess as usize).min(last);
            for x in [g, g.saturating_sub(1), (g + 1).min(last)] {
                if self.bits[x] == bits {
                    return Some(x);
                }
            }
        }
        self.table.get(bits).map(|x| x as usize)
    }
}

/// The bytes (as an integer) the kernel writes for output value `v`.
fn output_bits(v: f64, dtype: Dtype) -> u32 {
    match dtype {
        Dtype::F32 => (v as f32).to_bits(),
        Dtype::F16 => u32::from(half::f16::from_f64(v).to_bits()),
        Dtype::U8 => u32::from(v.round().clamp(0.0, 255.0) as u8),
        Dtype::U16 => u32::from(v.round().clamp(0.0, 65535.0) as u16),
    }
}

/// Output bits to source-value offset: a small open-addressing table (at
/// most 65536 entries, one lookup per array element).
struct ValueTable {
    keys: Vec<u32>,
    values: Vec<u32>,
    used: Vec<bool>,
    mask: usize,
}

impl ValueTable {
    fn new(n: usize) -> ValueTable {
        let cap = (n * 2).next_power_of_two().max(2);
        ValueTable {
            keys: vec![0; cap],
            values: vec![0; cap],
            used: vec![false; cap],
            mask: cap - 1,
        }
    }

    fn slot(&self, key: u32) -> usize {
        (key.wrapping_mul(0x9E37_79B1) as usize ^ (key >> 16) as usize) & self.mask
    }

    /// Adds `key`; false when it is there already.
    fn insert(&mut self, key: u32, value: u32) -> bool {
        let mut s = self.slot(key);
        while self.used[s] {
            if self.keys[s] == key {
                return false;
            }
            s = (s + 1) & self.mask;
        }
        (self.keys[s], self.values[s], self.used[s]) = (key, value, true);
        true
    }

    fn get(&self, key: u32) -> Option<u32> {
        let mut s = self.slot(key);
        while self.used[s] {
            if self.keys[s] == key {
                return Some(self.values[s]);
            }
            s = (s + 1) & self.mask;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(size: u64) -> Option<InputStamp> {
        Some(InputStamp {
            size,
            mtime_ns: 1_700_000_000_000_000_000,
        })
    }

    fn old(path: &str, status: Status, size: u64) -> Earlier {
        Earlier {
            record: Record::bare(path, status, None),
            stamp: stamp(size),
        }
    }

    fn now(path: &str, size: u64) -> Listed {
        Listed {
            path: path.into(),
            stamp: stamp(size),
        }
    }

    #[test]
    fn an_unchanged_input_keeps_every_row() {
        let earlier = [
            old("a", Status::Ok, 1),
            old("b", Status::Failed, 2),
            old("c", Status::Skipped, 3),
        ];
        let listed = [now("a", 1), now("b", 2), now("c", 3)];
        let p = plan(&earlier, &listed, &[], Mode::Update);
        assert_eq!(
            p.decisions,
            [Decision::Keep(0), Decision::Keep(1), Decision::Keep(2)]
        );
        assert!(p.gone.is_empty());
        assert_eq!(p.counts.kept, 3);
    }

    #[test]
    fn new_changed_and_gone_files_are_told_apart() {
        let earlier = [
            old("a", Status::Ok, 1),
            old("b", Status::Ok, 2),
            old("d", Status::Ok, 4),
        ];
        let listed = [now("a", 1), now("b", 20), now("c", 3)];
        let p = plan(&earlier, &listed, &[], Mode::Update);
        assert_eq!(
            p.decisions,
            [
                Decision::Keep(0),
                Decision::Process(Why::Changed),
                Decision::Process(Why::New)
            ]
        );
        assert_eq!(p.gone, [2]);
        assert_eq!(
            (p.counts.kept, p.counts.changed, p.counts.new, p.counts.gone),
            (1, 1, 1, 1)
        );
    }

    #[test]
    fn a_changed_mtime_alone_is_a_change_and_an_unknown_stamp_never_matches() {
        let mut touched = now("a", 1);
        touched.stamp = Some(InputStamp {
            size: 1,
            mtime_ns: 5,
        });
        let p = plan(&[old("a", Status::Ok, 1)], &[touched], &[], Mode::Update);
        assert_eq!(p.decisions, [Decision::Process(Why::Changed)]);
        let mut unknown = old("a", Status::Ok, 1);
        unknown.stamp = None;
        let mut unreadable = now("a", 1);
        unreadable.stamp = None;
        let p = plan(&[unknown], &[unreadable], &[], Mode::Update);
        assert_eq!(p.decisions, [Decision::Process(Why::Changed)]);
    }

    #[test]
    fn retry_failed_processes_only_failed_rows_and_adds_nothing() {
        let earlier = [
            old("a", Status::Ok, 1),
            old("b", Status::Failed, 2),
            old("c", Status::Skipped, 3),
            old("e", Status::Failed, 5),
        ];
        let listed = [now("a", 10), now("b", 2), now("c", 3), now("d", 4)];
        let p = plan(&earlier, &listed, &[], Mode::RetryFailed);
        assert_eq!(
            p.decisions,
            [
                Decision::Keep(0),
                Decision::Process(Why::Retry),
                Decision::Keep(2),
                Decision::Leave
            ]
        );
        assert_eq!(p.gone, [3]);
        assert_eq!(
            (
                p.counts.kept,
                p.counts.retried,
                p.counts.not_added,
                p.counts.stale,
                p.counts.gone
            ),
            (2, 1, 1, 1, 1)
        );
    }

    #[test]
    fn a_path_that_became_a_discovery_row_is_replaced_not_counted_gone() {
        let earlier = [old("a", Status::Ok, 1), old("link", Status::Ok, 2)];
        let p = plan(&earlier, &[now("a", 1)], &["link"], Mode::Update);
        assert_eq!(p.gone, [1]);
        assert_eq!(p.counts.gone, 0);
    }

    #[test]
    fn an_empty_earlier_run_processes_everything() {
        let p = plan(&[], &[now("a", 1), now("b", 1)], &[], Mode::Update);
        assert_eq!(p.counts.new, 2);
        let p = plan(&[], &[now("a", 1)], &[], Mode::RetryFailed);
        assert_eq!(p.decisions, [Decision::Leave]);
    }

    /// The array and the statistics the engine's kernel makes of `px`.
    fn written(
        px: crate::normalize::Pixels<'_>,
        channels: usize,
        opts: &EngineOptions,
    ) -> (Record, Vec<u8>, ImageStats) {
        use crate::normalize::{Kernel, extremes};
        let n = match px {
            crate::normalize::Pixels::U8(s) => s.len(),
            crate::normalize::Pixels::U16(s) => s.len(),
        };
        let ext = extremes(px, channels, opts.scope);
        let mut body = vec![0u8; n * opts.dtype.size()];
        Kernel::new().scale_to_slice(
            px, channels, opts.scope, &ext, opts.range, opts.dtype, &mut body,
        );
        opts.layout.arrange(&mut body, channels, opts.dtype.size());
        let stats = crate::stats::image_stats(
            px,
            channels,
            opts.scope,
            &ext,
            opts.range,
            opts.dtype,
            &mut crate::stats::StatsScratch::default(),
        );
        let mut row = Record::bare("x", Status::Ok, None);
        row.width = Some((n / channels / 3) as u32);
        row.height = Some(3);
        row.channels = Some(channels as u32);
        row.min = ext.min;
        row.max = ext.max;
        (row, body, stats)
    }

    fn options(scope: Scope, dtype: Dtype, layout: ArrayLayout) -> EngineOptions {
        EngineOptions {
            scope,
            dtype,
            range: dtype.default_range(),
            layout,
            ..EngineOptions::default()
        }
    }

    #[test]
    fn stats_read_back_from_the_array_equal_the_engines_bit_for_bit() {
        let eight: Vec<u8> = (0..3 * 7 * 3u32).map(|i| (i * 37 % 251) as u8).collect();
        let sixteen: Vec<u16> = (0..3 * 7 * 3u32)
            .map(|i| (i * 7919 % 65521) as u16)
            .collect();
        let constant = vec![9u8; 3 * 5 * 3];
        for scope in [Scope::Image, Scope::Channel] {
            for layout in [ArrayLayout::Hwc, ArrayLayout::Chw] {
                for dtype in [Dtype::F32, Dtype::F16, Dtype::U8, Dtype::U16] {
                    let opts = options(scope, dtype, layout);
                    for px in [
                        crate::normalize::Pixels::U8(&eight),
                        crate::normalize::Pixels::U8(&constant),
                    ] {
                        let (row, body, want) = written(px, 3, &opts);
                        let got = stats_from_array(&row, &body, &opts);
                        assert_eq!(got.as_ref(), Some(&want), "{scope:?} {layout:?} {dtype:?}");
                    }
                    let (row, body, want) =
                        written(crate::normalize::Pixels::U16(&sixteen), 3, &opts);
                    match (dtype, stats_from_array(&row, &body, &opts)) {
                        // Many 16-bit values share one output value.
                        (Dtype::F16 | Dtype::U8, got) => assert_eq!(got, None),
                        (_, got) => assert_eq!(got, Some(want), "{scope:?} {layout:?} {dtype:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn a_damaged_array_or_other_options_give_no_stats() {
        let eight: Vec<u8> = (0..3 * 4 * 3u32).map(|i| (i * 37 % 251) as u8).collect();
        let opts = options(Scope::Image, Dtype::F32, ArrayLayout::Hwc);
        let (row, mut body, _) = written(crate::normalize::Pixels::U8(&eight), 3, &opts);
        assert!(stats_from_array(&row, &body[4..], &opts).is_none());
        body[0..4].copy_from_slice(&7.5f32.to_le_bytes());
        assert!(stats_from_array(&row, &body, &opts).is_none());
        let mut dataset = opts.clone();
        dataset.scope = Scope::Dataset;
        assert!(stats_from_array(&row, &body, &dataset).is_none());
    }
}
