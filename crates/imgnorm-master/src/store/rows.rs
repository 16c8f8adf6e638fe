//! The state database's own encoding of a result's statistics: JSON of
//! row structs that belong to the database alone (floats stored as their
//! IEEE-754 bits, so a restored fold is bit-identical), so neither a wire
//! message nor a core type can change the disk format by accident.
use imgnorm_core::dataset::{RawChannel, RawStats};
use imgnorm_core::sample::SampleType;
use imgnorm_core::stats::{ChannelStats, ImageStats};
use serde::{Deserialize, Serialize};

/// Output statistics of one image, per channel.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatsRow {
    channels: Vec<ChannelRow>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ChannelRow {
    count: u64,
    mean_bits: u64,
    m2_bits: u64,
    min_bits: u64,
    max_bits: u64,
    histogram: Vec<u64>,
}

/// Raw statistics of one decoded image (statistics phase).
#[derive(Debug, Serialize, Deserialize)]
pub struct RawRow {
    bit_depth: u32,
    /// Absent in rows written before signed, 32-bit and float samples:
    /// those were `uint8` or `uint16` by their bit depth.
    #[serde(default)]
    sample_type: Option<SampleType>,
    channels: Vec<RawChannelRow>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RawChannelRow {
    count: u64,
    mean_bits: u64,
    m2_bits: u64,
    /// Sample values (older rows: unsigned integers, read as f64 exactly).
    min: f64,
    max: f64,
}

impl From<&ImageStats> for StatsRow {
    fn from(s: &ImageStats) -> StatsRow {
        StatsRow {
            channels: s
                .channels
                .iter()
                .map(|c| ChannelRow {
                    count: c.count,
                    mean_bits: c.mean.to_bits(),
                    m2_bits: c.m2.to_bits(),
                    min_bits: c.min.to_bits(),
                    max_bits: c.max.to_bits(),
                    histogram: c.histogram.clone(),
                })
                .collect(),
        }
    }
}

impl From<StatsRow> for ImageStats {
    fn from(s: StatsRow) -> ImageStats {
        ImageStats {
            channels: s
                .channels
                .into_iter()
                .map(|c| ChannelStats {
                    count: c.count,
                    mean: f64::from_bits(c.mean_bits),
                    m2: f64::from_bits(c.m2_bits),
                    min: f64::from_bits(c.min_bits),
                    max: f64::from_bits(c.max_bits),
                    histogram: c.histogram,
                })
                .collect(),
        }
    }
}

impl From<&RawStats> for RawRow {
    fn from(s: &RawStats) -> RawRow {
        RawRow {
            bit_depth: s.sample_type.bits(),
            sample_type: Some(s.sample_type),
            channels: s
                .channels
                .iter()
                .map(|c| RawChannelRow {
                    count: c.count,
                    mean_bits: c.mean.to_bits(),
                    m2_bits: c.m2.to_bits(),
                    min: c.min,
                    max: c.max,
                })
                .collect(),
        }
    }
}

impl From<RawRow> for RawStats {
    fn from(s: RawRow) -> RawStats {
        RawStats {
            sample_type: s.sample_type.unwrap_or(if s.bit_depth == 16 {
                SampleType::Uint16
            } else {
                SampleType::Uint8
            }),
            channels: s
                .channels
                .into_iter()
                .map(|c| RawChannel {
                    count: c.count,
                    mean: f64::from_bits(c.mean_bits),
                    m2: f64::from_bits(c.m2_bits),
                    min: c.min,
                    max: c.max,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_round_trip_bit_for_bit() {
        let s = ImageStats {
            channels: vec![ChannelStats {
                count: 3,
                mean: 0.1 + 0.2,
                m2: f64::MIN_POSITIVE / 3.0,
                min: -0.0,
                max: 1.0 / 3.0,
                histogram: vec![1, 0, 2],
            }],
        };
        let json = serde_json::to_string(&StatsRow::from(&s)).expect("encode");
        let back: StatsRow = serde_json::from_str(&json).expect("decode");
        let back = ImageStats::from(back);
        assert_eq!(
            back.channels[0].mean.to_bits(),
            s.channels[0].mean.to_bits()
        );
        assert_eq!(back.channels[0].min.to_bits(), (-0.0f64).to_bits());
        assert_eq!(back, s);
        let r = RawStats {
            sample_type: SampleType::Uint16,
            channels: vec![RawChannel {
                count: 9,
                mean: 1.0 / 7.0,
                m2: 2.5,
                min: 3.0,
                max: 60000.0,
            }],
        };
        let json = serde_json::to_string(&RawRow::from(&r)).expect("encode");
        let back: RawRow = serde_json::from_str(&json).expect("decode");
        assert_eq!(RawStats::from(back), r);
        // A row written before sample types: integers and a bit depth.
        let old = r#"{"bit_depth":16,"channels":[{"count":9,"mean_bits":0,"m2_bits":0,"min":3,"max":60000}]}"#;
        let back = RawStats::from(serde_json::from_str::<RawRow>(old).expect("decode"));
        assert_eq!(back.sample_type, SampleType::Uint16);
        assert_eq!((back.channels[0].min, back.channels[0].max), (3.0, 60000.0));
        let f = RawStats {
            sample_type: SampleType::Float32,
            channels: vec![RawChannel {
                count: 1,
                mean: 0.5,
                m2: 0.0,
                min: -0.25,
                max: 0.5,
            }],
        };
        let json = serde_json::to_string(&RawRow::from(&f)).expect("encode");
        assert_eq!(
            RawStats::from(serde_json::from_str::<RawRow>(&json).expect("decode")),
            f
        );
    }
}
