//! The per-image write path: an output file written while its array is
//! scaled, one cache-sized tile at a time. Each tile is filled from the
//! kernel's table, counted into the image's statistics, hashed into the
//! manifest checksum and handed to the kernel while it is still in cache, so
//! the array is never held whole and is read once instead of three times
//! (scale, statistics and checksum, then the kernel's copy into the page
//! cache). The bytes, the checksum and the statistics are the same as those
//! of the whole-array path stream mode uses.
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use imgnorm_core::normalize::{Kernel, Pixels};
use imgnorm_core::stats::StatsScratch;

/// Output bytes per tile: well inside a core's L2 cache, large enough that
/// the `write` calls cost nothing next to the copying (measured in
/// docs/BENCHMARKS.md, "The write path").
pub const TILE_BYTES: usize = 128 * 1024;

/// An output file being written under a temporary name in its folder.
pub struct TileSink {
    file: File,
    tmp: PathBuf,
    path: PathBuf,
    /// `path` as manifest reasons show it (relative to the output tree).
    shown: String,
}

/// The kernel and buffers an engine thread writes its images with, kept
/// between images.
pub struct Scratch<'a> {
    /// The scaling kernel, prepared for this image.
    pub kernel: &'a Kernel,
    /// The image's statistics counters, begun for this image.
    pub counts: &'a mut StatsScratch,
    /// The tile buffer (resized as needed).
    pub tile: &'a mut Vec<u8>,
}

/// One image's array as it is written: the `.npy` header, then the pixels
/// through the kernel.
pub struct Array<'a> {
    /// The `.npy` header, written before the first tile.
    pub header: &'a [u8],
    /// The decoded pixels, `channels` interleaved.
    pub px: Pixels<'a>,
    /// Channels per pixel.
    pub channels: usize,
    /// Bytes per output value.
    pub size: usize,
}

/// Writing an output file failed: the reason, with the path relative to the
/// output tree.
#[derive(Debug, thiserror::Error)]
#[error("cannot write output {path}: {source}")]
pub struct SinkError {
    /// The output, relative to the output tree.
    pub path: String,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

impl TileSink {
    /// Creates the temporary file `tmp` that becomes `path` (shown in errors
    /// as `shown`) once written.
    pub fn create(tmp: PathBuf, path: PathBuf, shown: String) -> std::io::Result<TileSink> {
        let file = File::create(&tmp)?;
        Ok(TileSink {
            file,
            tmp,
            path,
            shown,
        })
    }

    /// Writes the `.npy` file `array.header` + the output of `array.px`
    /// through `with.kernel` (prepared for this image), counts the pixels into
    /// `with.counts` (begun for this image), then renames the file into
    /// place. Returns the manifest checksum of the file's bytes and the time
    /// spent in `write` and `rename`. On error the temporary file is removed.
    pub fn write(
        self,
        with: Scratch<'_>,
        array: Array<'_>,
    ) -> Result<(String, Duration), SinkError> {
        let Scratch {
            kernel,
            counts,
            tile,
        } = with;
        let Array {
            header,
            px,
            channels,
            size,
        } = array;
        let mut file = self.file;
        let mut spent = Duration::ZERO;
        let mut hash = xxhash_rust::xxh3::Xxh3::new();
        let (size, channels) = (size.max(1), channels.max(1));
        // Whole pixels per tile, so per-channel tables and counters line up.
        let per_tile = (TILE_BYTES / size / channels).max(1) * channels;
        tile.resize(header.len() + per_tile * size, 0);
        let mut result: std::io::Result<()>;
        let (mut start, mut head) = (0, header);
        loop {
            let part = px.range(start, start + per_tile);
            let buf = &mut tile[..head.len() + part.len() * size];
            let (h, body) = buf.split_at_mut(head.len());
            h.copy_from_slice(head);
            kernel.apply(part, body);
            counts.count(part);
            hash.update(buf);
            let t = Instant::now();
            result = file.write_all(buf);
            spent += t.elapsed();
            start += part.len();
            head = &[];
            if result.is_err() || start >= px.len() {
                break;
            }
        }
        let t = Instant::now();
        let result = result.and_then(|()| {
            drop(file);
            std::fs::rename(&self.tmp, &self.path)
        });
        spent += t.elapsed();
        match result {
            Ok(()) => Ok((format!("{:032x}", hash.digest128()), spent)),
            Err(source) => {
                let _ = std::fs::remove_file(&self.tmp);
                Err(SinkError {
                    path: self.shown,
                    source,
                })
            }
        }
    }

    /// Removes the temporary file (the image failed before writing).
    pub fn abandon(self) {
        drop(self.file);
        let _ = std::fs::remove_file(&self.tmp);
    }
}
