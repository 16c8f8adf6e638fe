//! Conversions between protocol messages and domain types. The gRPC layer calls
//! these and nothing else: no logic lives here, only field mapping and the
//! checks that turn untrusted wire data into typed values.
use imgnorm_core::dataset::{DatasetParams, RawChannel, RawStats};
use imgnorm_core::options::EngineOptions;
use imgnorm_core::record::{Record, Status};
use imgnorm_core::sample::SampleType;
use imgnorm_core::stats::{ChannelStats, ImageStats};
use imgnorm_proto::v1 as pb;

/// A protocol message that cannot be turned into a domain value.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A status string other than ok/failed/skipped.
    #[error("unknown record status {0:?}")]
    Status(String),
    /// Engine options that do not parse or validate.
    #[error("invalid engine options: {0}")]
    Options(String),
    /// A sample type name this version does not know.
    #[error("unknown sample type {0:?}")]
    SampleType(String),
    /// A transfer mode other than shared/stream.
    #[error(transparent)]
    Transfer(#[from] imgnorm_core::jobs::UnknownTransfer),
}

/// How images and arrays travel between master and workers (defined with
/// the job logic, [`imgnorm_core::jobs`]).
pub use imgnorm_core::jobs::Transfer;

fn opt_str(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn opt_u32(v: u32) -> Option<u32> {
    (v != 0).then_some(v)
}

fn opt_sample(s: &str) -> Result<Option<SampleType>, WireError> {
    if s.is_empty() {
        return Ok(None);
    }
    SampleType::parse(s)
        .map(Some)
        .ok_or_else(|| WireError::SampleType(s.chars().take(32).collect()))
}

/// Domain record to protocol record.
pub fn record_to_pb(r: &Record) -> pb::Record {
    pb::Record {
        path: r.path.clone(),
        status: r.status.as_str().to_string(),
        reason: r.reason.clone().unwrap_or_default(),
        output: r.output.clone().unwrap_or_default(),
        width: r.width.unwrap_or(0),
        height: r.height.unwrap_or(0),
        channels: r.channels.unwrap_or(0),
        bit_depth: r.bit_depth.unwrap_or(0),
        sample_type: r
            .sample_type
            .map(|t| t.name())
            .unwrap_or_default()
            .to_string(),
        min: r.min.clone(),
        max: r.max.clone(),
        constant: r.constant,
        checksum: r.checksum.clone().unwrap_or_default(),
        format: r.format.clone().unwrap_or_default(),
        warning: r.warning.clone().unwrap_or_default(),
    }
}

/// Protocol record to domain record.
pub fn record_from_pb(p: pb::Record) -> Result<Record, WireError> {
    let status = Status::parse(&p.status).ok_or_else(|| WireError::Status(p.status.clone()))?;
    Ok(Record {
        path: p.path,
        status,
        reason: opt_str(&p.reason),
        format: opt_str(&p.format),
        output: opt_str(&p.output),
        width: opt_u32(p.width),
        height: opt_u32(p.height),
        channels: opt_u32(p.channels),
        bit_depth: opt_u32(p.bit_depth),
        sample_type: opt_sample(&p.sample_type)?,
        min: p.min,
        max: p.max,
        constant: p.constant,
        checksum: opt_str(&p.checksum),
        warning: opt_str(&p.warning),
    })
}

/// Domain image statistics to protocol statistics (doubles travel bit for bit).
pub fn stats_to_pb(s: &ImageStats) -> pb::ImageStats {
    pb::ImageStats {
        channels: s
            .channels
            .iter()
            .map(|c| pb::ChannelStats {
                count: c.count,
                mean: c.mean,
                m2: c.m2,
                min: c.min,
                max: c.max,
                histogram: c.histogram.clone(),
            })
            .collect(),
    }
}

/// Protocol statistics to domain statistics; the master then checks them
/// against the record with [`ImageStats::validate`].
pub fn stats_from_pb(p: pb::ImageStats) -> ImageStats {
    ImageStats {
        channels: p
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
    }
}

/// Engine options to the JSON carried in `JobSpec`.
pub fn options_to_json(o: &EngineOptions) -> String {
    serde_json::to_string(o).unwrap_or_default()
}

/// `JobSpec` JSON to validated engine options.
pub fn options_from_json(s: &str) -> Result<EngineOptions, WireError> {
    let o: EngineOptions =
        serde_json::from_str(s).map_err(|e| WireError::Options(e.to_string()))?;
    o.validate()
        .map_err(|e| WireError::Options(e.to_string()))?;
    Ok(o)
}

/// Raw statistics of a statistics-phase result to the wire.
pub fn raw_to_pb(r: &RawStats) -> pb::RawStats {
    pb::RawStats {
        bit_depth: r.sample_type.bits(),
        sample_type: r.sample_type.name().to_string(),
        channels: r
            .channels
            .iter()
            .map(|c| pb::RawChannel {
                count: c.count,
                mean: c.mean,
                m2: c.m2,
                min: c.min,
                max: c.max,
            })
            .collect(),
    }
}

/// Raw statistics from the wire (validated later against the record).
pub fn raw_from_pb(p: pb::RawStats) -> Result<RawStats, WireError> {
    let sample_type = SampleType::parse(&p.sample_type)
        .filter(|t| t.bits() == p.bit_depth)
        .ok_or_else(|| WireError::SampleType(p.sample_type.chars().take(32).collect()))?;
    Ok(RawStats {
        sample_type,
        channels: p
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
    })
}

/// A two-phase job's parameters to the wire.
pub fn params_to_pb(p: &DatasetParams) -> pb::DatasetParams {
    pb::DatasetParams {
        min: p.min.clone(),
        max: p.max.clone(),
        mean: p.mean.clone(),
        std: p.std.clone(),
    }
}

/// A two-phase job's parameters from the wire.
pub fn params_from_pb(p: pb::DatasetParams) -> DatasetParams {
    DatasetParams {
        min: p.min,
        max: p.max,
        mean: p.mean,
        std: p.std,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_roundtrip() {
        let mut r = Record::bare("a/b.png", Status::Ok, None);
        r.width = Some(3);
        r.bit_depth = Some(32);
        r.sample_type = Some(SampleType::Float32);
        r.min = vec![-1.5, 2.0];
        r.max = vec![3.0, 4.25];
        r.constant = true;
        r.checksum = Some("ab".into());
        assert_eq!(record_from_pb(record_to_pb(&r)).unwrap(), r);
        let bad = pb::Record {
            status: "weird".into(),
            ..Default::default()
        };
        assert!(record_from_pb(bad).is_err());
    }

    #[test]
    fn stats_roundtrip() {
        use imgnorm_core::stats::Binning;
        let b = Binning::new((0.0, 1.0));
        let s = ImageStats {
            channels: vec![ChannelStats::from_values(&[0.1, 0.7, 1.0 / 3.0], &b); 2],
        };
        assert_eq!(stats_from_pb(stats_to_pb(&s)), s);
    }

    #[test]
    fn options_roundtrip() {
        let o = EngineOptions::default();
        assert_eq!(options_from_json(&options_to_json(&o)).unwrap(), o);
        assert!(options_from_json("{").is_err());
    }
}
