//! What the master checks before it believes a worker's result: that the
//! result names a lease this worker holds, for that lease's job, attempt and
//! items ([`check_claim`]), and that the row describes the leased file the way
//! the job's options allow ([`check_result`]): the right path, the output
//! exactly `<path>.npy` (never outside the output root), a shape the options
//! can produce, extremes that fit the bit depth, a well-formed checksum and
//! statistics that match the shape. Pure functions of their arguments, so they
//! are unit-tested and fuzzed (`fuzz/fuzz_targets/validate_result.rs`).
//!
//! A result that fails here is *refused*: it never reaches the manifest, and
//! the master counts it against the worker's session (see
//! `crates/imgnorm-master/src/service.rs`). Results that are merely late (a
//! lease that ended, a phase that is over) are not refusals; the scheduler
//! discards them.
use thiserror::Error;

use crate::dataset::{RawStats, RawStatsError};
use crate::ids::{JobId, WorkerId};
use crate::options::{ChannelMode, EngineOptions, Resize, Scope};
use crate::paths::{PathError, check_relative};
use crate::record::{Record, Status};
use crate::stats::{ImageStats, StatsError};

/// Longest `reason` or `warning` accepted from a worker, in bytes. The
/// engine's own reasons are one line naming at most an output path
/// (≤ 4096 bytes) and an OS error.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;

/// Format names the engine reports (`Record::format`).
pub const FORMATS: &[&str] = &["jpeg", "png", "bmp", "tiff", "webp", "gif", "pnm", "other"];

/// Which phase of its job a result belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultPhase {
    /// Statistics phase of a two-phase job: shape and raw statistics, no
    /// output.
    Stats,
    /// Normalize and write (every single-phase job).
    Write,
}

/// What the master knows about the item a result names.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The item's relative path, from the master's own discovery.
    pub path: &'a str,
    /// The job's engine options.
    pub options: &'a EngineOptions,
    /// The job's current phase.
    pub phase: ResultPhase,
}

/// An active lease as the scheduler holds it.
#[derive(Debug, Clone, Copy)]
pub struct LeaseFacts<'a> {
    /// Its holder.
    pub worker: WorkerId,
    /// Its job (scheduler id: `job-N` or `job-N.stats`).
    pub job: &'a JobId,
    /// Its attempt number.
    pub attempt: u32,
    /// Its items (scheduler indexes), ascending.
    pub items: &'a [u64],
}

/// What a result claims about where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// The sending worker (known from its session, not from the message).
    pub worker: WorkerId,
    /// The job id in the message.
    pub job: &'a str,
    /// The lease id in the message.
    pub lease: u64,
    /// The attempt in the message.
    pub attempt: u32,
    /// The item, as the scheduler counts it in the current phase.
    pub item: u64,
}

/// Why a worker's result is not believed. Every variant is something an
/// honest worker of this version never sends.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Refusal {
    /// The index is not an item of the job.
    #[error("index {index} out of range for {job} ({files} files)")]
    IndexOutOfRange {
        /// Job id.
        job: String,
        /// The index sent.
        index: u64,
        /// Files in the job.
        files: usize,
    },
    /// The item is not part of the job's current phase.
    #[error("item {0} is not part of the job's current phase")]
    NotInPhase(u64),
    /// The lease is held by another worker.
    #[error("lease {lease} is held by worker {holder}, not by this worker")]
    NotLeaseHolder {
        /// Lease id.
        lease: u64,
        /// Its real holder.
        holder: WorkerId,
    },
    /// The lease belongs to another job.
    #[error("lease {lease} belongs to {actual}, the result names {claimed}")]
    WrongJob {
        /// Lease id.
        lease: u64,
        /// The job in the result.
        claimed: String,
        /// The lease's job.
        actual: String,
    },
    /// The attempt is not the lease's.
    #[error("lease {lease} is attempt {actual}, the result names attempt {claimed}")]
    WrongAttempt {
        /// Lease id.
        lease: u64,
        /// The attempt in the result.
        claimed: u32,
        /// The lease's attempt.
        actual: u32,
    },
    /// The item is not in the lease.
    #[error("item {item} is not in lease {lease}")]
    NotInLease {
        /// Lease id.
        lease: u64,
        /// The item.
        item: u64,
    },
    /// The row is about another file.
    #[error("result path {got:?} does not match the leased file {want:?}")]
    Path {
        /// Path in the row.
        got: String,
        /// The leased file.
        want: String,
    },
    /// The output is not `<path>.npy`.
    #[error("result output {got:?} is not {want:?}")]
    Output {
        /// Output in the row.
        got: Option<String>,
        /// The only output allowed.
        want: String,
    },
    /// The output path could escape the output root.
    #[error("result output is not a safe relative path: {0}")]
    UnsafeOutput(PathError),
    /// A failed or skipped row with an output, a checksum or no reason.
    #[error("a {status} row must have a reason and no output or checksum")]
    NotOkRow {
        /// The row's status.
        status: &'static str,
    },
    /// A reason or warning over [`MAX_TEXT_BYTES`].
    #[error("{field} is {len} bytes long, over the limit of {MAX_TEXT_BYTES}")]
    TextTooLong {
        /// `reason` or `warning`.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// A format name the engine never reports.
    #[error("unknown format {0:?}")]
    Format(String),
    /// Zero or out-of-range dimensions.
    #[error("impossible shape {height}x{width}x{channels}")]
    Shape {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Channels.
        channels: u32,
    },
    /// More pixels than the job's `--max-pixels`.
    #[error("shape {width}x{height} is over the job's pixel limit of {limit}")]
    OverPixelLimit {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// `--max-pixels`.
        limit: u64,
    },
    /// A channel count `--channels` cannot produce.
    #[error("{channels} channels, but --channels {mode} gives {allowed}")]
    Channels {
        /// Channels in the row.
        channels: u32,
        /// The job's channel mode.
        mode: &'static str,
        /// What it allows.
        allowed: &'static str,
    },
    /// A size `--resize`/`--fit`/`--resize-shorter`/`--center-crop` cannot
    /// produce.
    #[error("shape {width}x{height} contradicts the job's geometry: {why}")]
    Geometry {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// What the geometry requires.
        why: String,
    },
    /// No sample type, or a bit depth that is not the sample type's.
    #[error("sample type {sample_type:?} with bit depth {bit_depth:?}")]
    BitDepth {
        /// The row's sample type.
        sample_type: Option<&'static str>,
        /// The row's bit depth.
        bit_depth: Option<u32>,
    },
    /// Minimum/maximum lists of the wrong length or with impossible values.
    #[error("impossible extremes: {0}")]
    Extremes(String),
    /// The checksum is not 32 lowercase hex digits.
    #[error("missing or malformed checksum")]
    Checksum,
    /// An `ok` result of the writing phase without output statistics.
    #[error("an ok result without output statistics")]
    MissingStats,
    /// Output statistics that do not fit the shape.
    #[error("inconsistent statistics: {0}")]
    Stats(#[from] StatsError),
    /// An `ok` result of the statistics phase without raw statistics.
    #[error("an ok statistics-phase result without raw statistics")]
    MissingRaw,
    /// Raw statistics that do not fit the shape.
    #[error("inconsistent raw statistics: {0}")]
    Raw(#[from] RawStatsError),
    /// Raw statistics of another sample type than the row's.
    #[error("raw statistics are {raw}, the row says {row}")]
    RawBitDepth {
        /// In the statistics.
        raw: &'static str,
        /// In the row.
        row: &'static str,
    },
}

/// Checks that `claim` names a lease its worker holds, of the named job and
/// attempt, containing the item. `lease` is the scheduler's view of the
/// named lease; `None` (it ended: finished, revoked, expired) is not a
/// refusal, the scheduler discards such late results.
pub fn check_claim(claim: &Claim<'_>, lease: Option<LeaseFacts<'_>>) -> Result<(), Refusal> {
    let Some(l) = lease else { return Ok(()) };
    if l.worker != claim.worker {
        return Err(Refusal::NotLeaseHolder {
            lease: claim.lease,
            holder: l.worker,
        });
    }
    if l.job.0 != claim.job {
        return Err(Refusal::WrongJob {
            lease: claim.lease,
            claimed: claim.job.to_string(),
            actual: l.job.0.clone(),
        });
    }
    if l.attempt != claim.attempt {
        return Err(Refusal::WrongAttempt {
            lease: claim.lease,
            claimed: claim.attempt,
            actual: l.attempt,
        });
    }
    if l.items.binary_search(&claim.item).is_err() {
        return Err(Refusal::NotInLease {
            lease: claim.lease,
            item: claim.item,
        });
    }
    Ok(())
}

/// Checks a worker's row (and the statistics that come with it) against
/// what the master expects for the item. On `Ok`, an `ok` row of the
/// writing phase has `output == Some(format!("{path}.npy"))` with `path` the
/// master's own.
pub fn check_result(
    want: &Expected<'_>,
    r: &Record,
    stats: Option<&ImageStats>,
    raw: Option<&RawStats>,
) -> Result<(), Refusal> {
    if r.path != want.path {
        return Err(Refusal::Path {
            got: r.path.clone(),
            want: want.path.to_string(),
        });
    }
    for (field, text) in [("reason", &r.reason), ("warning", &r.warning)] {
        if let Some(t) = text
            && t.len() > MAX_TEXT_BYTES
        {
            return Err(Refusal::TextTooLong {
                field,
                len: t.len(),
            });
        }
    }
    if let Some(f) = &r.format
        && !FORMATS.contains(&f.as_str())
    {
        return Err(Refusal::Format(f.chars().take(64).collect()));
    }
    if r.status != Status::Ok {
        if r.output.is_some() || r.checksum.is_some() || r.reason.is_none() {
            return Err(Refusal::NotOkRow {
                status: r.status.as_str(),
            });
        }
        return Ok(());
    }
    let (width, height, channels) = check_shape(want.options, r)?;
    let depth = check_extremes(want, r, channels)?;
    let pixels = u64::from(width) * u64::from(height);
    match want.phase {
        ResultPhase::Stats => {
            if r.output.is_some() || r.checksum.is_some() {
                return Err(Refusal::Output {
                    got: r.output.clone(),
                    want: String::new(),
                });
            }
            let raw = raw.ok_or(Refusal::MissingRaw)?;
            raw.validate(channels as usize, pixels)?;
            if raw.sample_type != depth {
                return Err(Refusal::RawBitDepth {
                    raw: raw.sample_type.name(),
                    row: depth.name(),
                });
            }
        }
        ResultPhase::Write => {
            let expected = format!("{}.npy", want.path);
            if r.output.as_deref() != Some(expected.as_str()) {
                return Err(Refusal::Output {
                    got: r.output.clone(),
                    want: expected,
                });
            }
            // Defence in depth: the master's own path could only fail this
            // if discovery let a bad name through.
            check_relative(&expected).map_err(Refusal::UnsafeOutput)?;
            let well_formed = r.checksum.as_deref().is_some_and(|s| {
                s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            });
            if !well_formed {
                return Err(Refusal::Checksum);
            }
            let stats = stats.ok_or(Refusal::MissingStats)?;
            stats.validate(channels as usize, pixels)?;
        }
    }
    Ok(())
}

/// The shape an `ok` row claims, checked against the options: non-zero,
/// within `--max-pixels`, channels `--channels` allows, the size the
/// geometry gives.
fn check_shape(o: &EngineOptions, r: &Record) -> Result<(u32, u32, u32), Refusal> {
    let (width, height, channels) = (
        r.width.unwrap_or(0),
        r.height.unwrap_or(0),
        r.channels.unwrap_or(0),
    );
    if width == 0 || height == 0 || !(1..=4).contains(&channels) {
        return Err(Refusal::Shape {
            width,
            height,
            channels,
        });
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > o.max_pixels {
        return Err(Refusal::OverPixelLimit {
            width,
            height,
            limit: o.max_pixels,
        });
    }
    let (mode, allowed, ok) = match o.channels {
        ChannelMode::Keep => ("keep", "1 to 4", true),
        ChannelMode::Rgb => ("rgb", "3", channels == 3),
        ChannelMode::Gray => ("gray", "1", channels == 1),
    };
    if !ok {
        return Err(Refusal::Channels {
            channels,
            mode,
            allowed,
        });
    }
    let g = &o.geometry;
    let why = match (g.center_crop, g.resize) {
        (Some((cw, ch)), _) if (width, height) != (cw, ch) => {
            Some(format!("--center-crop gives {cw}x{ch}"))
        }
        (
            None,
            Some(Resize::Exact {
                width: w,
                height: h,
            }),
        ) if (width, height) != (w, h) => Some(format!("--resize gives {w}x{h}")),
        (None, Some(Resize::Shorter { size })) if width.min(height) != size => {
            Some(format!("--resize-shorter gives a shorter side of {size}"))
        }
        (
            None,
            Some(Resize::Fit {
                width: w,
                height: h,
            }),
        ) if width > w || height > h || (width != w && height != h) => Some(format!(
            "--fit gives a size inside {w}x{h} touching one side"
        )),
        _ => None,
    };
    if let Some(why) = why {
        return Err(Refusal::Geometry { width, height, why });
    }
    Ok((width, height, channels))
}

/// Checks `min`/`max` of an `ok` row and returns its sample type (whose
/// bit depth the row's must be): one entry per channel in the statistics
/// phase and for per-channel scopes, one entry otherwise; `min <= max`, both
/// values of the sample type.
fn check_extremes(
    want: &Expected<'_>,
    r: &Record,
    channels: u32,
) -> Result<crate::sample::SampleType, Refusal> {
    let depth = match r.sample_type {
        Some(t) if r.bit_depth == Some(t.bits()) => t,
        other => {
            return Err(Refusal::BitDepth {
                sample_type: other.map(|t| t.name()),
                bit_depth: r.bit_depth,
            });
        }
    };
    let o = want.options;
    let per_channel =
        want.phase == ResultPhase::Stats || o.scope == Scope::Channel || o.per_channel;
    let n = if per_channel { channels as usize } else { 1 };
    if r.min.len() != n || r.max.len() != n {
        return Err(Refusal::Extremes(format!(
            "{} minima and {} maxima, expected {n} of each",
            r.min.len(),
            r.max.len()
        )));
    }
    if let Some((lo, hi)) = r
        .min
        .iter()
        .zip(&r.max)
        .find(|(lo, hi)| !(lo <= hi && depth.holds(**lo) && depth.holds(**hi)))
    {
        return Err(Refusal::Extremes(format!(
            "min {lo} and max {hi} for {} samples",
            depth.name()
        )));
    }
    Ok(depth)
}

#[cfg(test)]
mod tests;
