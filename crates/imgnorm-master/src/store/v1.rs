//! Reading schema version 1 of the state database, for its migration: a
//! result was stored as the protobuf encoding of the `ImageDone` message of
//! protocol `imgnorm.v1` at that time. The messages are frozen here (field
//! numbers and types as they were), so later protocol changes cannot break
//! the migration.
use imgnorm_core::dataset::{RawChannel, RawStats};
use imgnorm_core::record::{Record, Status};
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
        min: r.min,
        max: r.max,
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
        bit_depth: s.bit_depth,
        channels: s
            .channels
            .into_iter()
            .map(|c| RawChannel {
                count: c.count,
                mean: c.mean,
                m2: c.m2,
                min: c.min,
                max: c.max,
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
