//! The sample types a decoded image can hold (OpenCV's depths for
//! `IMREAD_UNCHANGED`: `CV_8U`, `CV_16U`, `CV_8S`, `CV_16S`, `CV_32U`,
//! `CV_32S`, `CV_32F`), and how their values are written in manifests.
use serde::{Deserialize, Serialize, Serializer};

/// The type of one decoded sample. Every value of every type is exactly
/// representable as an `f64`, which is how extremes and statistics carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleType {
    /// Unsigned 8-bit (`uint8`).
    Uint8,
    /// Unsigned 16-bit (`uint16`; also 12-bit TIFF, widened).
    Uint16,
    /// Signed 8-bit (`int8`).
    Int8,
    /// Signed 16-bit (`int16`).
    Int16,
    /// Unsigned 32-bit (`uint32`).
    Uint32,
    /// Signed 32-bit (`int32`).
    Int32,
    /// IEEE 754 single precision (`float32`).
    Float32,
}

impl SampleType {
    /// Every type, narrowest first.
    pub const ALL: [SampleType; 7] = [
        SampleType::Uint8,
        SampleType::Uint16,
        SampleType::Int8,
        SampleType::Int16,
        SampleType::Uint32,
        SampleType::Int32,
        SampleType::Float32,
    ];

    /// Bytes per sample.
    pub fn size(self) -> usize {
        match self {
            SampleType::Uint8 | SampleType::Int8 => 1,
            SampleType::Uint16 | SampleType::Int16 => 2,
            SampleType::Uint32 | SampleType::Int32 | SampleType::Float32 => 4,
        }
    }

    /// Bits per sample (the manifest's `bit_depth`).
    pub fn bits(self) -> u32 {
        self.size() as u32 * 8
    }

    /// NumPy's name of the type (the manifest's `sample_type`).
    pub fn name(self) -> &'static str {
        match self {
            SampleType::Uint8 => "uint8",
            SampleType::Uint16 => "uint16",
            SampleType::Int8 => "int8",
            SampleType::Int16 => "int16",
            SampleType::Uint32 => "uint32",
            SampleType::Int32 => "int32",
            SampleType::Float32 => "float32",
        }
    }

    /// The type named `s` (see [`SampleType::name`]).
    pub fn parse(s: &str) -> Option<SampleType> {
        SampleType::ALL.into_iter().find(|t| t.name() == s)
    }

    /// True for floating-point samples.
    pub fn is_float(self) -> bool {
        self == SampleType::Float32
    }

    /// For types of at most 16 bits, whose samples the kernel maps through
    /// a table: the value of table index 0 (the index of sample `x` is
    /// `x - offset`). `None` for 32-bit types, computed per sample.
    pub fn table_offset(self) -> Option<f64> {
        match self {
            SampleType::Uint8 | SampleType::Uint16 => Some(0.0),
            SampleType::Int8 => Some(-128.0),
            SampleType::Int16 => Some(-32768.0),
            SampleType::Uint32 | SampleType::Int32 | SampleType::Float32 => None,
        }
    }

    /// True when a table over all 256 indices covers the type.
    pub fn eight(self) -> bool {
        self.size() == 1
    }

    /// The type's full range, `--scope full` (torchvision's `ToTensor`
    /// divides integers by their maximum and leaves floats, taken as
    /// `0..=1`, alone).
    pub fn full_scale(self) -> (f64, f64) {
        match self {
            SampleType::Uint8 => (0.0, 255.0),
            SampleType::Uint16 => (0.0, 65535.0),
            SampleType::Int8 => (-128.0, 127.0),
            SampleType::Int16 => (-32768.0, 32767.0),
            SampleType::Uint32 => (0.0, f64::from(u32::MAX)),
            SampleType::Int32 => (f64::from(i32::MIN), f64::from(i32::MAX)),
            SampleType::Float32 => (0.0, 1.0),
        }
    }

    /// True when `v` is a value this type can hold (finite; an integer
    /// within the type's range for integer types).
    pub fn holds(self, v: f64) -> bool {
        match self {
            SampleType::Float32 => v.is_finite() && f64::from(v as f32) == v,
            t => {
                let (lo, hi) = t.full_scale();
                v.fract() == 0.0 && (lo..=hi).contains(&v)
            }
        }
    }
}

/// Serializes sample values (extremes) as JSON integers when they are
/// integers, so 8- and 16-bit rows read `"min":[0]` as they always did, and
/// as the shortest round-tripping decimal otherwise.
pub fn serialize_values<S: Serializer>(values: &[f64], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(values.len()))?;
    for &v in values {
        if v.fract() == 0.0 && v.abs() < 9.007_199_254_740_992e15 {
            seq.serialize_element(&(v as i64))?;
        } else {
            seq.serialize_element(&v)?;
        }
    }
    seq.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_ranges_hold_their_ends() {
        for t in SampleType::ALL {
            assert_eq!(SampleType::parse(t.name()), Some(t));
            let (lo, hi) = t.full_scale();
            assert!(t.holds(lo) && t.holds(hi), "{t:?}");
        }
        assert!(!SampleType::Int8.holds(128.0));
        assert!(!SampleType::Uint16.holds(0.5));
        assert!(SampleType::Float32.holds(0.4f32 as f64));
        assert!(!SampleType::Float32.holds(0.4));
        assert!(!SampleType::Float32.holds(f64::NAN));
    }

    #[test]
    fn integral_values_serialize_as_integers() {
        #[derive(Serialize)]
        struct W(#[serde(serialize_with = "serialize_values")] Vec<f64>);
        let s = serde_json::to_string(&W(vec![0.0, 255.0, -128.0, 0.4f32 as f64])).unwrap();
        assert_eq!(s, "[0,255,-128,0.4000000059604645]");
    }
}
