//! One manifest row per input file, and the job-level counts. The manifest's
//! field order and formatting are part of the output format (docs/FORMAT.md):
//! every mode writes byte-identical rows for the same input and options.
use serde::{Deserialize, Serialize};

use crate::sample::SampleType;

/// Outcome of one input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Decoded, normalized and written.
    Ok,
    /// Looked like an image (content or extension) but could not be processed.
    Failed,
    /// Not an image: neither its content nor its extension says so.
    Skipped,
}

impl Status {
    /// The lowercase name used in the manifest and the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "ok" => Some(Status::Ok),
            "failed" => Some(Status::Failed),
            "skipped" => Some(Status::Skipped),
            _ => None,
        }
    }
}

/// A manifest row (`manifest.jsonl`, one JSON object per line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Path relative to the input root, `/`-separated.
    pub path: String,
    /// What happened.
    pub status: Status,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Detected format (`jpeg`, `png`, ...), from the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Output path relative to the output root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Width in pixels of the output array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Height in pixels of the output array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Channels of the output array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u32>,
    /// Bits per sample of the source (8, 16 or 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit_depth: Option<u32>,
    /// Type of the source samples (`uint8`, `uint16`, `int8`, `int16`,
    /// `uint32`, `int32`, `float32`: OpenCV's depth for `IMREAD_UNCHANGED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_type: Option<SampleType>,
    /// Minimum source value found: one entry, or one per channel for
    /// `--scope channel` (integers written as JSON integers).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "crate::sample::serialize_values"
    )]
    pub min: Vec<f64>,
    /// Maximum source value found, shaped like `min`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "crate::sample::serialize_values"
    )]
    pub max: Vec<f64>,
    /// True when max == min (for any channel under `--scope channel`): the
    /// output is filled with the range's lower bound.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub constant: bool,
    /// xxh3-128 of the output file, 32 lowercase hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// A non-fatal problem (e.g. truncated JPEG accepted with
    /// `--allow-truncated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// Longest reason or warning a row carries, in bytes: a decoder's message
/// can repeat a whole tag (a TIFF with thousands of BitsPerSample values gave
/// a 41 KB reason), which says nothing more after the first lines and would
/// exceed what the master accepts from a worker
/// ([`crate::validate::MAX_TEXT_BYTES`]).
pub const MAX_REASON_BYTES: usize = 2048;

/// `text`, cut on a character boundary to at most [`MAX_REASON_BYTES`] plus a
/// note saying how many bytes were left out.
pub fn bounded_text(mut text: String) -> String {
    if text.len() <= MAX_REASON_BYTES {
        return text;
    }
    let mut end = MAX_REASON_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text.len() - end;
    text.truncate(end);
    text.push_str(&format!(" … ({cut} more bytes)"));
    text
}

impl Record {
    /// A row with only path, status and reason set (the reason bounded by
    /// [`bounded_text`]).
    pub fn bare(path: impl Into<String>, status: Status, reason: Option<String>) -> Record {
        Record {
            path: path.into(),
            status,
            reason: reason.map(bounded_text),
            format: None,
            output: None,
            width: None,
            height: None,
            channels: None,
            bit_depth: None,
            sample_type: None,
            min: Vec::new(),
            max: Vec::new(),
            constant: false,
            checksum: None,
            warning: None,
        }
    }
}

/// Counts over a set of records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Every input file.
    pub images: u64,
    /// Status ok.
    pub ok: u64,
    /// Status failed.
    pub failed: u64,
    /// Status skipped.
    pub skipped: u64,
}

impl Counts {
    /// Adds one record's status.
    pub fn add(&mut self, status: Status) {
        self.images += 1;
        match status {
            Status::Ok => self.ok += 1,
            Status::Failed => self.failed += 1,
            Status::Skipped => self.skipped += 1,
        }
    }
}

#[cfg(test)]
mod bounded_tests {
    use super::*;

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary_and_say_so() {
        assert_eq!(bounded_text("short".into()), "short");
        let long = "é".repeat(MAX_REASON_BYTES); // 2 bytes each
        let r = Record::bare("p", Status::Failed, Some(long));
        let reason = r.reason.unwrap();
        assert!(reason.len() < crate::validate::MAX_TEXT_BYTES);
        assert!(reason.ends_with(&format!(" … ({} more bytes)", MAX_REASON_BYTES)));
        assert!(reason.starts_with("éé"));
    }
}
