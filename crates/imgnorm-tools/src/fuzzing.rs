//! The bodies of the fuzz targets (`fuzz/`, see docs/RELIABILITY.md,
//! "Fuzzing"), kept in the library so the normal test suite runs them over a
//! committed seed corpus and they cannot rot. Each takes raw bytes and
//! panics only when a property is broken:
//!
//! - [`decode_normalize`]: the first byte picks the engine options, the rest
//!   is a file. The engine must never panic, must respect the pixel limit
//!   and the memory budget, and every `ok` row it produces must pass the
//!   master's own result checks.
//! - [`jpeg_decode`]: the bytes are a JPEG for [`crate::jpeg`] (libjpeg-turbo
//!   behind the C shim). Any input must come back as a header error, a
//!   decode error or pixels, never a crash; decoding must write every output
//!   byte and give the same pixels twice.
//! - [`bmp_gif_decode`]: the bytes after the first (whose parity picks the
//!   format) are a BMP for [`crate::decode::bmp`] or a GIF for
//!   [`crate::decode::gif`], this project's own readers. Any input must come
//!   back as an error or pixels, never a crash; images over the pixel limit
//!   stop after the header; decoding must write every output byte.
//! - [`validate_result`]: the bytes are read as a worker's result (row,
//!   statistics, lease claim) against a job; the master's checks must never
//!   panic and never accept an output that is not `<path>.npy` inside the
//!   output root, nor a claim about a lease that is not the worker's.
//! - [`zip_read`]: the bytes are a zip archive for the upload reader
//!   ([`crate::http::zipread`]). It must never panic, never hand out more
//!   entries than the archive declares, nor more bytes of an entry than its
//!   declared size, whatever the directory, local headers, ZIP64 fields or
//!   deflate streams say.
use std::sync::Arc;

use imgnorm_core::dataset::{RawChannel, RawStats};
use imgnorm_core::ids::{JobId, WorkerId};
use imgnorm_core::options::{
    ChannelMode, Dtype, EngineOptions, Geometry, Orientation, OutputFormat, Resize, Scope,
};
use imgnorm_core::paths::check_relative;
use imgnorm_core::record::{Record, Status};
use imgnorm_core::sample::SampleType;
use imgnorm_core::stats::{BINS, ChannelStats, ImageStats};
use imgnorm_core::validate::{self, Claim, Expected, LeaseFacts, ResultPhase};

use crate::budget::MemoryBudget;
use crate::engine::{Engine, Sink, Source};

/// Pixel limit of the decode target: small, so that no input can make the
/// fuzzer itself run out of memory, and so the limit is exercised.
pub const FUZZ_MAX_PIXELS: u64 = 1 << 22;

/// Number of option sets [`decode_normalize`] chooses from.
pub const OPTION_SETS: u8 = 8;

/// Engine options number `k % OPTION_SETS`: defaults, then each of the
/// geometry, channel, scope, dtype and orientation paths.
pub fn options_for(k: u8) -> EngineOptions {
    let base = EngineOptions {
        max_pixels: FUZZ_MAX_PIXELS,
        ..EngineOptions::default()
    };
    let geometry = |resize, center_crop| Geometry {
        resize,
        center_crop,
        ..Geometry::default()
    };
    match k % OPTION_SETS {
        0 => base,
        1 => EngineOptions {
            geometry: geometry(
                Some(Resize::Exact {
                    width: 7,
                    height: 5,
                }),
                None,
            ),
            channels: ChannelMode::Rgb,
            ..base
        },
        2 => EngineOptions {
            geometry: geometry(Some(Resize::Shorter { size: 9 }), Some((4, 3))),
            channels: ChannelMode::Gray,
            dtype: Dtype::U8,
            range: (0.0, 255.0),
            ..base
        },
        3 => EngineOptions {
            geometry: geometry(
                Some(Resize::Fit {
                    width: 6,
                    height: 11,
                }),
                None,
            ),
            scope: Scope::Channel,
            ..base
        },
        4 => EngineOptions {
            orientation: Orientation::Apply,
            allow_truncated: true,
            dtype: Dtype::F16,
            ..base
        },
        5 => EngineOptions {
            scope: Scope::Full,
            dtype: Dtype::U16,
            range: (0.0, 65535.0),
            ..base
        },
        6 => EngineOptions {
            geometry: geometry(None, Some((2, 2))),
            format: OutputFormat::Npy,
            ..base
        },
        _ => EngineOptions {
            scope: Scope::Dataset,
            per_channel: true,
            ..base
        },
    }
}

fn fuzz_budget() -> Arc<MemoryBudget> {
    static BUDGET: std::sync::OnceLock<Arc<MemoryBudget>> = std::sync::OnceLock::new();
    Arc::clone(BUDGET.get_or_init(|| {
        // The smallest budget one thread may have: 64 MiB for images.
        MemoryBudget::new(crate::budget::min_mib(1), 1).expect("the minimum is accepted")
    }))
}

/// The `decode_normalize` target: `data[0]` picks the options and the file
/// name's extension, `data[1..]` is the file.
pub fn decode_normalize(data: &[u8]) {
    let Some((&k, file)) = data.split_first() else {
        return;
    };
    let opts = options_for(k);
    let ext = ["png", "jpg", "gif", "bmp", "tif", "webp", "bin", "JPEG"][usize::from(k >> 5)];
    let rel = format!("fuzz/input.{ext}");
    let budget = fuzz_budget();
    let mut engine = Engine::new(opts.clone());
    engine.set_budget(Arc::clone(&budget));
    let two_phase = opts.two_phase();
    let (record, stats, raw) = if two_phase {
        let r = engine
            .process(
                Source::Bytes {
                    rel: &rel,
                    data: file,
                },
                Sink::Measure,
            )
            .record;
        let raw = engine.take_raw();
        (r, None, raw)
    } else {
        let p = engine.process(
            Source::Bytes {
                rel: &rel,
                data: file,
            },
            Sink::Memory,
        );
        let record = p.record;
        if let Some(npy) = p.npy {
            let sum = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(npy));
            assert_eq!(record.checksum.as_deref(), Some(sum.as_str()));
            let shape = (
                record.height.unwrap_or(0) as usize,
                record.width.unwrap_or(0) as usize,
                record.channels.unwrap_or(0) as usize,
            );
            let body = shape.0 * shape.1 * shape.2 * opts.dtype.size();
            assert_eq!(npy.len(), crate::formats::npy_data_offset(npy) + body);
        }
        let stats = engine.take_stats();
        (record, stats, None)
    };
    assert!(
        budget.in_use() <= budget.capacity(),
        "the budget was overdrawn"
    );
    engine.release();
    assert_eq!(
        budget.in_use(),
        0,
        "a share of the budget was not given back"
    );
    assert_eq!(record.path, rel);
    // The engine turns a decoder's panic into this row so that no image can
    // take a run down; under libFuzzer the panic aborts first, and here (the
    // test suite replaying the corpus) the row says it happened.
    assert!(
        !record
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("panicked")),
        "the decoder panicked: {record:?}"
    );
    if record.status == Status::Ok {
        let pixels = u64::from(record.width.unwrap_or(0)) * u64::from(record.height.unwrap_or(0));
        assert!(pixels <= FUZZ_MAX_PIXELS, "ok row over the pixel limit");
    }
    let want = Expected {
        path: &rel,
        options: &opts,
        phase: if two_phase {
            ResultPhase::Stats
        } else {
            ResultPhase::Write
        },
    };
    if let Err(e) = validate::check_result(&want, &record, stats.as_ref(), raw.as_ref()) {
        panic!("the master would refuse the engine's own row {record:?}: {e}");
    }
}

/// Reads fields out of fuzz input bytes; zeros once they run out.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    fn f64(&mut self) -> f64 {
        f64::from_bits(self.u64())
    }

    /// A small number, biased to the shapes that pass other checks.
    fn small(&mut self) -> u32 {
        u32::from(self.u8() % 12)
    }

    fn text(&mut self) -> String {
        let n = usize::from(self.u8() % 24).min(self.0.len());
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8_lossy(s).into_owned()
    }

    fn opt_text(&mut self) -> Option<String> {
        (self.u8() % 2 == 1).then(|| self.text())
    }

    /// Up to 4 sample values: small integers, or now and then any f64
    /// (negative, fractional, NaN, infinite).
    fn list(&mut self) -> Vec<f64> {
        let n = self.u8() % 5;
        (0..n).map(|_| self.value()).collect()
    }

    fn value(&mut self) -> f64 {
        if self.u8().is_multiple_of(8) {
            self.f64()
        } else {
            f64::from(self.u8())
        }
    }

    /// A sample type, or none.
    fn sample_type(&mut self) -> Option<SampleType> {
        SampleType::ALL.get(usize::from(self.u8() % 8)).copied()
    }
}

/// Paths the validation target checks results against, including ones a
/// lying worker could aim for.
const PATHS: &[&str] = &["a/x.png", "x.jpg", "d/e/f.tif", "ü/b c.webp"];

/// Outputs a lying worker may claim.
fn output_for(r: &mut Reader<'_>, path: &str) -> Option<String> {
    match r.u8() % 8 {
        0 => None,
        1 | 2 => Some(format!("{path}.npy")),
        3 => Some(format!("../{path}.npy")),
        4 => Some(format!("/{path}.npy")),
        5 => Some(format!("{path}.npy\0")),
        6 => Some(path.replace('/', "\\") + ".npy"),
        _ => Some(r.text()),
    }
}

fn channel_stats(r: &mut Reader<'_>, count: u64) -> ChannelStats {
    let honest = r.u8().is_multiple_of(2);
    let mut histogram = vec![0u64; if honest { BINS } else { usize::from(r.u8()) }];
    if let Some(first) = histogram.first_mut() {
        *first = if honest { count } else { r.u64() };
    }
    ChannelStats {
        count: if honest { count } else { r.u64() },
        mean: if honest { 0.5 } else { r.f64() },
        m2: if honest { 0.0 } else { r.f64() },
        min: if honest { 0.0 } else { r.f64() },
        max: if honest { 1.0 } else { r.f64() },
        histogram,
    }
}

/// The `validate_result` target: a job (options, path, phase), a worker's
/// row with statistics, and a lease claim, all read from `data`.
pub fn validate_result(data: &[u8]) {
    let mut r = Reader(data);
    let opts = options_for(r.u8());
    let path = PATHS[usize::from(r.u8()) % PATHS.len()];
    let phase = if r.u8().is_multiple_of(3) {
        ResultPhase::Stats
    } else {
        ResultPhase::Write
    };
    let status = [Status::Ok, Status::Ok, Status::Failed, Status::Skipped][usize::from(r.u8() % 4)];
    let row_path = if r.u8().is_multiple_of(8) {
        r.text()
    } else {
        path.to_string()
    };
    let (width, height, channels) = (r.small(), r.small(), r.u8() % 6);
    let record = Record {
        path: row_path,
        status,
        reason: r.opt_text(),
        format: ["png", "jpeg", "exe", ""]
            .get(usize::from(r.u8() % 5))
            .map(|s| s.to_string()),
        output: output_for(&mut r, path),
        width: (width > 0).then_some(width),
        height: (height > 0).then_some(height),
        channels: (channels > 0).then_some(u32::from(channels)),
        bit_depth: [Some(8), Some(16), None, Some(12), Some(32)][usize::from(r.u8() % 5)],
        sample_type: r.sample_type(),
        min: r.list(),
        max: r.list(),
        constant: r.u8().is_multiple_of(2),
        checksum: match r.u8() % 4 {
            0 => None,
            1 => Some(r.text()),
            _ => Some(format!("{:032x}", r.u64())),
        },
        warning: r.opt_text(),
    };
    let count = u64::from(width) * u64::from(height);
    let stats = (!r.u8().is_multiple_of(4)).then(|| ImageStats {
        channels: (0..r.u8() % 5)
            .map(|_| channel_stats(&mut r, count))
            .collect(),
    });
    let raw = (!r.u8().is_multiple_of(4)).then(|| RawStats {
        sample_type: r.sample_type().unwrap_or(SampleType::Uint8),
        channels: (0..r.u8() % 5)
            .map(|_| RawChannel {
                count: if r.u8().is_multiple_of(2) {
                    count
                } else {
                    r.u64()
                },
                mean: f64::from(r.u8()),
                m2: r.f64().abs(),
                min: r.value(),
                max: r.value(),
            })
            .collect(),
    });
    let want = Expected {
        path,
        options: &opts,
        phase,
    };
    let verdict = validate::check_result(&want, &record, stats.as_ref(), raw.as_ref());
    if verdict.is_ok() {
        assert_eq!(record.path, path, "a row for another file was accepted");
        if let Some(out) = &record.output {
            assert_eq!(out, &format!("{path}.npy"), "a foreign output was accepted");
            assert_eq!(check_relative(out), Ok(()), "an unsafe output was accepted");
        }
        if status == Status::Ok {
            let pixels = u64::from(width) * u64::from(height);
            assert!(pixels > 0 && pixels <= opts.max_pixels);
            assert!((1..=4).contains(&channels));
            if phase == ResultPhase::Write {
                assert!(record.output.is_some() && stats.is_some());
            } else {
                assert!(raw.is_some());
            }
        }
    }
    let job = JobId(format!("job-{}", r.u8() % 3));
    let items: Vec<u64> = (0..r.u8() % 6).map(|_| u64::from(r.u8() % 8)).collect();
    let mut items = items;
    items.sort_unstable();
    let facts = LeaseFacts {
        worker: WorkerId(u64::from(r.u8() % 3)),
        job: &job,
        attempt: u32::from(r.u8() % 3),
        items: &items,
    };
    let claim_job = format!("job-{}", r.u8() % 3);
    let claim = Claim {
        worker: WorkerId(u64::from(r.u8() % 3)),
        job: &claim_job,
        lease: r.u64(),
        attempt: u32::from(r.u8() % 3),
        item: u64::from(r.u8() % 8),
    };
    let held = !r.u8().is_multiple_of(4);
    let verdict = validate::check_claim(&claim, held.then_some(facts));
    if verdict.is_ok() && held {
        assert_eq!(
            claim.worker, facts.worker,
            "another worker's lease accepted"
        );
        assert_eq!(claim.job, job.0, "a lease of another job accepted");
        assert_eq!(claim.attempt, facts.attempt, "another attempt accepted");
        assert!(
            items.contains(&claim.item),
            "an item outside the lease accepted"
        );
    }
}

/// Fuzz body of `jpeg_decode`: `data` through [`crate::jpeg::Reader`]. Images
/// over [`FUZZ_MAX_PIXELS`] stop after the header, as the engine's would.
/// Decoding into a buffer of zeros and into one of 0xFF must give the same
/// bytes: every sample is written, none comes from uninitialised memory.
pub fn jpeg_decode(data: &[u8]) {
    use crate::jpeg::Reader;
    let decode = |fill: u8| {
        let reader = Reader::new(data, true, FUZZ_MAX_PIXELS * 8).ok()?;
        let h = reader.header();
        let pixels = u64::from(h.width) * u64::from(h.height);
        assert!(
            h.width > 0 && h.height > 0,
            "libjpeg accepted an empty image"
        );
        assert!(matches!(h.channels(), 1 | 3));
        if pixels > FUZZ_MAX_PIXELS {
            return None;
        }
        let mut out = vec![fill; h.output_len()];
        let report = reader.decode_into(&mut out).ok()?;
        assert_eq!(report.warnings > 0, report.first_warning.is_some());
        Some(out)
    };
    same_whatever_the_fill(decode);
}

/// Decodes into a buffer filled with zeros and into one filled with 0xFF
/// (`decode(fill)`): the outcome and the bytes must be the same, so every
/// sample is written and none comes from the buffer's previous contents.
fn same_whatever_the_fill(decode: impl Fn(u8) -> Option<Vec<u8>>) {
    let zeros = decode(0);
    let ones = decode(0xFF);
    assert_eq!(
        zeros.is_some(),
        ones.is_some(),
        "same input, different outcome"
    );
    assert!(
        zeros == ones,
        "output depends on the buffer's previous contents"
    );
}

/// Fuzz body of `bmp_gif_decode`: `data[0]` even picks the BMP reader, odd
/// the GIF reader; `data[1..]` is the file. Images over [`FUZZ_MAX_PIXELS`]
/// stop after the header, as the engine's would. Decoding into a buffer of
/// zeros and into one of 0xFF must give the same bytes: every sample is
/// written, none is left from the buffer's previous contents.
pub fn bmp_gif_decode(data: &[u8]) {
    use image::ImageDecoder;
    let Some((&k, file)) = data.split_first() else {
        return;
    };
    let decode = |fill: u8| {
        let dec: Box<dyn ImageDecoder + '_> = if k % 2 == 0 {
            Box::new(crate::decode::bmp::BmpDecoder::new(file).ok()?)
        } else {
            Box::new(crate::decode::gif::GifDecoder::new(file).ok()?)
        };
        let (w, h) = dec.dimensions();
        assert!(w > 0 && h > 0, "a reader accepted an empty image");
        if u64::from(w) * u64::from(h) > FUZZ_MAX_PIXELS {
            return None;
        }
        let mut out = vec![fill; usize::try_from(dec.total_bytes()).ok()?];
        dec.read_image_boxed(&mut out).ok()?;
        Some(out)
    };
    same_whatever_the_fill(decode);
}

/// Entries [`zip_read`] accepts before it stops, like an upload's file limit.
const FUZZ_ZIP_ENTRIES: u64 = 4096;

/// Largest entry [`zip_read`] reads, like an upload's per-file limit.
const FUZZ_ZIP_ENTRY_BYTES: u64 = 1 << 20;

/// Fuzz body: `data` as an uploaded zip archive, read the way the upload
/// path reads it (the entry count checked first, each entry's size checked
/// before its data is read). Panics when the reader hands out an entry the
/// directory does not declare, or more bytes than an entry's declared size.
pub fn zip_read(data: &[u8]) {
    use std::cell::Cell;
    use std::io::Read;
    use std::sync::atomic::{AtomicU64, Ordering};

    use crate::http::zipread::{self, ZipError};

    /// Why the walk stopped: the archive, or one of our limits.
    enum Stop {
        Zip,
        Limit,
    }
    impl From<ZipError> for Stop {
        fn from(_: ZipError) -> Stop {
            Stop::Zip
        }
    }

    static N: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "imgnorm-fuzz-zip.{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let declared = Cell::new(0u64);
    let mut seen = 0u64;
    let before = |d: &zipread::Directory| {
        declared.set(d.declared);
        if d.declared > FUZZ_ZIP_ENTRIES {
            return Err(Stop::Limit);
        }
        Ok(())
    };
    let each = |e: &zipread::Entry, r: Option<&mut dyn Read>| -> Result<(), Stop> {
        seen += 1;
        assert!(
            seen <= declared.get(),
            "entry {seen} of an archive that declares {}",
            declared.get()
        );
        let Some(r) = r else {
            assert!(e.is_dir, "a file entry without a reader");
            return Ok(());
        };
        if e.size > FUZZ_ZIP_ENTRY_BYTES {
            return Err(Stop::Limit);
        }
        let (mut n, mut buf) = (0u64, [0u8; 8192]);
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => return Ok(()),
                Ok(k) => {
                    n += k as u64;
                    assert!(n <= e.size, "read {n} bytes of an entry of {}", e.size);
                }
            }
        }
    };
    // Either way of stopping is an answer; only the asserts above are bugs.
    let _: Result<(), Stop> = zipread::for_each_entry(&path, before, each);
    let _ = std::fs::remove_file(&path);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option set is valid: the targets must not test impossible jobs.
    #[test]
    fn every_option_set_is_valid() {
        for k in 0..OPTION_SETS {
            let o = options_for(k);
            assert_eq!(o.validate(), Ok(()), "option set {k}");
        }
    }

    #[test]
    fn the_targets_survive_trivial_inputs() {
        for data in [&b""[..], b"\0", b"\x07\x89PNG", &[0xFF; 300]] {
            decode_normalize(data);
            validate_result(data);
            bmp_gif_decode(data);
        }
    }
}
