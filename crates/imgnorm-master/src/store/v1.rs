//! Reading schema version 1 of the state database, for its migration: a
//! result was stored as the protobuf encoding of the `ImageDone` message of
//! protocol `imgnorm.v1` at that time. The messages are frozen here (field
//! numbers and types as they were), so later protocol changes cannot break
//! the migration.
use imgnorm_core::dataset::{RawChannel, RawStats};
use imgnorm_core::record::{Record, Status};
use imgnorm_core::sample::SampleType;
use imgnorm_core::stats::{ChannelStats, ImageStats};
use prost::Message;

#[derive(Clone, PartialEq, Message)]
struct ImageDone {
    #[prost(uint64, tag = "2")]
    lease_id: u64,
    #[prost(uint32, tag = "3")]
    attempt: u32,
    #[prost(message, optional, tag = "5")]
    record: Option<RecordV1>,
    #[prost(message, optional, tag = "7")]
    stats: Option<StatsV1>,
    #[prost(message, optional, tag = "20")]
    raw: Option<RawV1>,
}

#[derive(Clone, PartialEq, Message)]
struct RecordV1 {
    #[prost(string, tag = "1")]
    path: String,
    #[prost(string, tag = "2")]
    status: String,
    #[prost(string, tag = "3")]
    reason: String,
    #[prost(string, tag = "4")]
    output: String,
    #[prost(uint32, tag = "5")]
    width: u32,
    #[prost(uint32, tag = "6")]
    height: u32,
    #[prost(uint32, tag = "7")]
    channels: u32,
    #[prost(uint32, tag = "8")]
    bit_depth: u32,
    #[prost(uint32, repeated, tag = "9")]
    min: Vec<u32>,
    #[prost(uint32, repeated, tag = "10")]
    max: Vec<u32>,
    #[prost(bool, tag = "11")]
    constant: bool,
    #[prost(string, tag = "12")]
    checksum: String,
    #[prost(string, tag = "13")]
    format: String,
    #[prost(string, tag = "14")]
    warning: String,
}

#[derive(Clone, PartialEq, Message)]
struct StatsV1 {
    #[prost(message, repeated, tag = "1")]
    channels: Vec<ChannelV1>,
}

#[derive(Clone, PartialEq, Message)]
struct ChannelV1 {
    #[prost(uint64, tag = "1")]
    count: u64,
    #[prost(double, tag = "2")]
    mean: f64,
    #[prost(double, tag = "3")]
    m2: f64,
    #[prost(double, tag = "4")]
    min: f64,
    #[prost(double, tag = "5")]
    max: f64,
    #[prost(uint64, repeated, tag = "6")]
    histogram: Vec<u64>,
}

#[derive(Clone, PartialEq, Message)]
struct RawV1 {
    #[prost(uint32, tag = "1")]
    bit_depth: u32,
    #[prost(message, repeated, tag = "2")]
    channels: Vec<RawChannelV1>,
}

#[derive(Clone, PartialEq, Message)]
struct RawChannelV1 {
    #[prost(uint64, tag = "1")]
    count: u64,
    #[prost(double, tag = "2")]
    mean: f64,
    #[prost(double, tag = "3")]
    m2: f64,
    #[prost(uint32, tag = "4")]
    min: u32,
    #[prost(uint32, tag = "5")]
    max: u32,
}

/// A version-1 result blob, decoded.
pub struct ResultV1 {
    /// Lease.
    pub lease: u64,
    /// Attempt.
    pub attempt: u32,
    /// The row.
    pub record: Record,
    /// Output statistics.
    pub stats: Option<ImageStats>,
    /// Raw statistics.
    pub raw: Option<RawStats>,
}

fn opt_str(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn opt_u32(v: u32) -> Option<u32> {
    (v != 0).then_some(v)
}

/// Decodes a version-1 result blob (`Err`: what is wrong with it).
pub fn decode(blob: &[u8]) -> Result<ResultV1, String> {
    let done = ImageDone::decode(blob).map_err(|e| e.to_string())?;
    let r = done.record.ok_or("no record")?;
    let status =
        Status::parse(&r.status).ok_or_else(|| format!("unknown status {:?}", r.status))?;
    let record = Record {
        path: r.path,
        status,
        reason: opt_str(r.reason),
        format: opt_str(r.format),
        output: opt_str(r.output),
        width: opt_u32(r.width),
        height: opt_u32(r.height),
        channels: opt_u32(r.channels),
        bit_depth: opt_u32(r.bit_depth),
        // Version 1 held 8- and 16-bit unsigned samples only.
        sample_type: match r.bit_depth {
            8 => Some(SampleType::Uint8),
            16 => Some(SampleType::Uint16),
            _ => None,
        },
        min: r.min.into_iter().map(f64::from).collect(),
        max: r.max.into_iter().map(f64::from).collect(),
        constant: r.constant,
        checksum: opt_str(r.checksum),
        warning: opt_str(r.warning),
    };
    let stats = done.stats.map(|s| ImageStats {
        channels: s
            .channels
            .into_iter()
            .map(|c| ChannelStats {
                count: c.count,
                mean: c.mean,
                m2: c.m2,
                min: c.min,
                max: c.max,
                histogram: c.histogram,
            })
            .collect(),
    });
    let raw = done.raw.map(|s| RawStats {
        sample_type: if s.bit_depth == 16 {
            SampleType::Uint16
        } else {
            SampleType::Uint8
        },
        channels: s
            .channels
            .into_iter()
            .map(|c| RawChannel {
                count: c.count,
                mean: c.mean,
                m2: c.m2,
                min: f64::from(c.min),
                max: f64::from(c.max),
            })
            .collect(),
    });
    Ok(ResultV1 {
        lease: done.lease_id,
        attempt: done.attempt,
        record,
        stats,
        raw,
    })
}

/// A version-1 result blob as a version-2 master stored it (tests write
/// schema-1 databases with it: the current protocol's encoding differs).
#[cfg(test)]
pub fn encode(
    lease: u64,
    attempt: u32,
    r: &Record,
    stats: Option<&ImageStats>,
    raw: Option<&RawStats>,
) -> Vec<u8> {
    let ints = |v: &[f64]| v.iter().map(|&x| x as u32).collect();
    ImageDone {
        lease_id: lease,
        attempt,
        record: Some(RecordV1 {
            path: r.path.clone(),
            status: r.status.as_str().to_string(),
            reason: r.reason.clone().unwrap_or_default(),
            output: r.output.clone().unwrap_or_default(),
            width: r.width.unwrap_or(0),
            height: r.height.unwrap_or(0),
            channels: r.channels.unwrap_or(0),
            bit_depth: r.bit_depth.unwrap_or(0),
            min: ints(&r.min),
            max: ints(&r.max),
            constant: r.constant,
            checksum: r.checksum.clone().unwrap_or_default(),
            format: r.format.clone().unwrap_or_default(),
            warning: r.warning.clone().unwrap_or_default(),
        }),
        stats: stats.map(|s| StatsV1 {
            channels: s
                .channels
                .iter()
                .map(|c| ChannelV1 {
                    count: c.count,
                    mean: c.mean,
                    m2: c.m2,
                    min: c.min,
                    max: c.max,
                    histogram: c.histogram.clone(),
                })
                .collect(),
        }),
        raw: raw.map(|s| RawV1 {
            bit_depth: s.sample_type.bits(),
            channels: s
                .channels
                .iter()
                .map(|c| RawChannelV1 {
                    count: c.count,
                    mean: c.mean,
                    m2: c.m2,
                    min: c.min as u32,
                    max: c.max as u32,
                })
                .collect(),
        }),
    }
    .encode_to_vec()
}
