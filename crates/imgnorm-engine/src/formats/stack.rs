//! `--format stack`: one preallocated N×H×W×C `.npy` that workers write
//! their slices into (stream mode: staged, then copied in), completed with
//! labels, a validity mask, class names and paths.
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use imgnorm_core::normalize::npy_header;
use imgnorm_core::options::EngineOptions;
use imgnorm_core::record::{Record, Status};

use super::{FormatError, Layout, STAGING, class_of, io, npy_data_offset};
use crate::fsio::{unique_tmp_suffix, write_atomic};

/// The stack while it is being filled; renamed to [`STACK`] when complete.
pub const STACK_PARTIAL: &str = "images.npy.partial";
/// The finished stack, N×H×W×C.
pub const STACK: &str = "images.npy";
/// Class index per stack row (`<i8`, -1 when the image has no class folder).
pub const LABELS: &str = "labels.npy";
/// Whether each stack row holds an `ok` image (`|b1`).
pub const VALID: &str = "valid.npy";
/// Class names, sorted; a label indexes this list.
pub const CLASSES: &str = "classes.json";
/// The input path of each stack row.
pub const PATHS: &str = "paths.json";

/// `--format stack`.
pub struct Stack;

impl Layout for Stack {
    fn staged(&self) -> bool {
        true
    }

    fn per_image_files(&self) -> bool {
        false
    }

    /// Preallocates [`STACK_PARTIAL`] with the header of an N×H×W×C array
    /// (N = `files`), zero-filled (sparse), so that workers write their
    /// slices in place.
    fn prepare(&self, out: &Path, opts: &EngineOptions, files: usize) -> Result<(), FormatError> {
        let [h, w, c] = opts.stack_shape().ok_or(FormatError::NoStackShape)?;
        let [a, b, d] = opts.layout.shape(h, w, c);
        let header = npy_header(opts.dtype, &[files, a, b, d]);
        let slice = (h * w * c * opts.dtype.size()) as u64;
        let path = out.join(STACK_PARTIAL);
        let mut f = File::create(&path).map_err(io(&path))?;
        f.write_all(&header).map_err(io(&path))?;
        f.set_len(header.len() as u64 + slice * files as u64)
            .map_err(io(&path))?;
        Ok(())
    }

    fn finish(
        &self,
        out: &Path,
        opts: &EngineOptions,
        files: &[String],
        records: &mut [Record],
    ) -> Result<(), FormatError> {
        finish_stack(out, opts, files, records)
    }
}

/// An engine's handle on the stack file of the job it is working on.
pub struct StackWriter {
    path: PathBuf,
    /// Device and inode of the open file: a later job writing to the same
    /// output creates a new file under the same name.
    id: (u64, u64),
    file: File,
    data_offset: u64,
    len: u64,
}

impl StackWriter {
    /// Writes `body` (one image's data, no header) as slice `index` of the
    /// stack under `out`, opening it (and reading its header) on first use.
    pub fn write(
        slot: &mut Option<StackWriter>,
        out: &Path,
        index: u64,
        body: &[u8],
    ) -> Result<(), (PathBuf, std::io::Error)> {
        use std::os::unix::fs::MetadataExt;
        let path = out.join(STACK_PARTIAL);
        let id = std::fs::metadata(&path)
            .map(|m| (m.dev(), m.ino()))
            .map_err(|e| (path.clone(), e))?;
        if slot.as_ref().is_none_or(|s| s.path != path || s.id != id) {
            *slot = None;
            *slot = Some(StackWriter::open(path.clone()).map_err(|e| (path.clone(), e))?);
        }
        let Some(s) = slot.as_ref() else {
            return Err((path, std::io::Error::other("stack not open")));
        };
        let offset = s.data_offset + index * body.len() as u64;
        if offset + body.len() as u64 > s.len {
            return Err((
                path,
                std::io::Error::other(format!(
                    "slice {index} of {} bytes lies past the end of the stack",
                    body.len()
                )),
            ));
        }
        s.file
            .write_all_at(body, offset)
            .map_err(|e| (s.path.clone(), e))
    }

    fn open(path: PathBuf) -> std::io::Result<StackWriter> {
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let mut head = [0u8; 10];
        file.read_exact_at(&mut head, 0)?;
        if &head[..6] != b"\x93NUMPY" {
            return Err(std::io::Error::other("not a .npy file"));
        }
        let data_offset = 10 + u64::from(u16::from_le_bytes([head[8], head[9]]));
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata()?;
        let len = meta.len();
        Ok(StackWriter {
            path,
            id: (meta.dev(), meta.ino()),
            file,
            data_offset,
            len,
        })
    }
}

/// Fills the stack from staging (stream mode), zeroes the slices of images
/// that are not `ok`, writes labels, mask, classes and paths, then renames
/// the stack into place.
fn finish_stack(
    out: &Path,
    opts: &EngineOptions,
    files: &[String],
    records: &mut [Record],
) -> Result<(), FormatError> {
    let [h, w, c] = opts.stack_shape().ok_or(FormatError::NoStackShape)?;
    let slice = h * w * c * opts.dtype.size();
    let partial = out.join(STACK_PARTIAL);
    let stack = StackWriter::open(partial.clone()).map_err(io(&partial))?;
    let staging = out.join(STAGING);
    let zeros = vec![0u8; slice];
    let mut npy = Vec::new();
    for (i, r) in records.iter_mut().enumerate() {
        let offset = stack.data_offset + (i * slice) as u64;
        if r.status == Status::Ok {
            // Stream mode: the master received the row as a staged `.npy`;
            // with shared storage the worker wrote it in place (no file).
            let src = staging.join(format!("{}.npy", r.path));
            let staged = match File::open(&src) {
                Ok(mut f) => {
                    npy.clear();
                    f.read_to_end(&mut npy).map_err(io(&src))?;
                    true
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(io(&src)(e)),
            };
            if staged {
                let body = &npy[npy_data_offset(&npy)..];
                if body.len() != slice {
                    return Err(FormatError::SliceSize {
                        path: src,
                        got: body.len(),
                        want: slice,
                    });
                }
                stack
                    .file
                    .write_all_at(body, offset)
                    .map_err(io(&partial))?;
            }
            r.output = Some(STACK.to_string());
        } else {
            // A worker that died after writing a slice may have left data
            // for an image that ended up failed: the slice is zero whatever
            // happened on the way.
            stack
                .file
                .write_all_at(&zeros, offset)
                .map_err(io(&partial))?;
        }
    }
    stack.file.sync_all().map_err(io(&partial))?;
    let classes: BTreeSet<&str> = records
        .iter()
        .filter(|r| r.status != Status::Skipped)
        .filter_map(|r| class_of(&r.path))
        .collect();
    // `--stats-from`: the previous run's list, so that splits agree.
    let classes: Vec<&str> = match &opts.classes {
        Some(given) => given.iter().map(String::as_str).collect(),
        None => classes.into_iter().collect(),
    };
    let labels: Vec<u8> = records
        .iter()
        .flat_map(|r| {
            let label = class_of(&r.path)
                .filter(|_| r.status != Status::Skipped)
                .and_then(|c| classes.iter().position(|x| *x == c))
                .map_or(-1i64, |i| i as i64);
            label.to_le_bytes()
        })
        .collect();
    let valid: Vec<u8> = records
        .iter()
        .map(|r| u8::from(r.status == Status::Ok))
        .collect();
    let n = records.len();
    write_small(out, LABELS, &npy_file("<i8", n, &labels))?;
    write_small(out, VALID, &npy_file("|b1", n, &valid))?;
    let json = |v: &[&str]| {
        let mut s = serde_json::to_vec(v).unwrap_or_default();
        s.push(b'\n');
        s
    };
    write_small(out, CLASSES, &json(&classes))?;
    let paths: Vec<&str> = files.iter().map(String::as_str).collect();
    write_small(out, PATHS, &json(&paths))?;
    let dest = out.join(STACK);
    std::fs::rename(&partial, &dest).map_err(io(&dest))
}

fn write_small(out: &Path, name: &str, bytes: &[u8]) -> Result<(), FormatError> {
    let path = out.join(name);
    write_atomic(&path, bytes, &unique_tmp_suffix()).map_err(io(&path))
}

/// A one-dimensional `.npy` file of `n` elements of `descr`.
pub(super) fn npy_file(descr: &str, n: usize, data: &[u8]) -> Vec<u8> {
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({n},), }}");
    let total = (10 + dict.len() + 1).div_ceil(64) * 64;
    let mut v = Vec::with_capacity(total + data.len());
    v.extend_from_slice(b"\x93NUMPY\x01\x00");
    v.extend_from_slice(&((total - 10) as u16).to_le_bytes());
    v.extend_from_slice(dict.as_bytes());
    v.resize(total - 1, b' ');
    v.push(b'\n');
    v.extend_from_slice(data);
    v
}
