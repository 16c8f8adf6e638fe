//! Output dataset layouts other than the plain `.npy` tree (`--format`):
//! where per-image arrays go while a job runs (`prepare`, `tree_root`,
//! `StackWriter`) and how the layout is completed once every image has a
//! result (`finish`): webdataset tar shards assembled in index order, or the
//! stack's labels, mask and rename. Shared by the centralized run and the
//! master; see docs/FORMAT.md.
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use imgnorm_core::normalize::npy_header;
use imgnorm_core::options::{EngineOptions, OutputFormat};
use imgnorm_core::record::{Record, Status};
use serde::Serialize;

use crate::claim::OutputClaim;
use crate::fsio::{unique_tmp_suffix, write_atomic};

/// Folder under the output where per-image arrays wait to be packed into
/// shards (webdataset) or the stack (stream mode); removed when the job ends.
pub const STAGING: &str = ".imgnorm-staging";
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

/// Preparing or completing an output layout failed.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// A file or folder could not be created, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A staged array does not have the stack's slice size.
    #[error("staged array {path} holds {got} bytes of data, the stack slice is {want}")]
    SliceSize {
        /// The staged file.
        path: PathBuf,
        /// Data bytes found.
        got: usize,
        /// Bytes per stack slice.
        want: usize,
    },
    /// `--format stack` without a fixed shape (options not validated).
    #[error("--format stack needs a fixed shape")]
    NoStackShape,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FormatError + '_ {
    move |source| FormatError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where per-image `.npy` files go for a job writing to `out`: the output
/// itself for the `npy` tree, the staging folder otherwise.
pub fn tree_root(out: &Path, format: &OutputFormat) -> PathBuf {
    match format {
        OutputFormat::Npy => out.to_path_buf(),
        OutputFormat::Webdataset { .. } | OutputFormat::Stack => out.join(STAGING),
    }
}

/// Creates the folders between `root` and the file `dest` under it. The
/// output folder itself may be created; the staging folder never is: only
/// the job owner creates it (`prepare`) and removes it (`finish`), so a late
/// duplicate writer (a speculative copy still running when the job ended)
/// fails instead of leaving files behind.
pub fn make_parent_dirs(root: &Path, dest: &Path) -> std::io::Result<()> {
    let Some(parent) = dest.parent() else {
        return Ok(());
    };
    if !root.ends_with(STAGING) {
        return std::fs::create_dir_all(parent);
    }
    let Ok(below) = parent.strip_prefix(root) else {
        return Err(std::io::Error::other("output outside the staging folder"));
    };
    if !root.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "staging folder is gone (the job has ended)",
        ));
    }
    let mut dir = root.to_path_buf();
    for part in below.components() {
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Offset of the data in a `.npy` file (version 1.0 header, as ours are).
pub fn npy_data_offset(npy: &[u8]) -> usize {
    if npy.len() < 10 {
        return npy.len();
    }
    (10 + usize::from(u16::from_le_bytes([npy[8], npy[9]]))).min(npy.len())
}

/// Sets up the layout of the output `claim` holds before any image is
/// processed: removes stale staging left by a killed run, and for `stack`
/// preallocates [`STACK_PARTIAL`] with the header of an N×H×W×C array
/// (N = `files`), zero-filled (sparse), so that workers write their slices
/// in place. Taking the claim, not a path, is what keeps one job from wiping
/// the staging or truncating the stack of another one still running there.
pub fn prepare(
    claim: &OutputClaim,
    opts: &EngineOptions,
    files: &[String],
) -> Result<(), FormatError> {
    if opts.format == OutputFormat::Npy {
        return Ok(());
    }
    let out = claim.path();
    let staging = out.join(STAGING);
    match std::fs::remove_dir_all(&staging) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&staging)(e)),
        _ => {}
    }
    std::fs::create_dir(&staging).map_err(io(&staging))?;
    if opts.format == OutputFormat::Stack {
        let [h, w, c] = opts.stack_shape().ok_or(FormatError::NoStackShape)?;
        let header = npy_header(opts.dtype, &[files.len(), h, w, c]);
        let slice = (h * w * c * opts.dtype.size()) as u64;
        let path = out.join(STACK_PARTIAL);
        let mut f = File::create(&path).map_err(io(&path))?;
        f.write_all(&header).map_err(io(&path))?;
        f.set_len(header.len() as u64 + slice * files.len() as u64)
            .map_err(io(&path))?;
    }
    Ok(())
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

/// Completes the layout once every file of the job has its record.
/// `records[i]` is the result for `files[i]` (index order). Rewrites the
/// `output` field of `ok` records to where the array ended up.
pub fn finish(
    out: &Path,
    opts: &EngineOptions,
    files: &[String],
    records: &mut [Record],
) -> Result<(), FormatError> {
    match opts.format {
        OutputFormat::Npy => Ok(()),
        OutputFormat::Webdataset { shard_size } => {
            write_shards(out, opts, shard_size, records)?;
            remove_staging(out)
        }
        OutputFormat::Stack => {
            finish_stack(out, opts, files, records)?;
            remove_staging(out)
        }
    }
}

/// Moves the staging folder out of the way in one rename (late writers then
/// find no staging folder and fail), then deletes it. A late writer that
/// raced the rename can make the deletion fail once; it is retried.
fn remove_staging(out: &Path) -> Result<(), FormatError> {
    let staging = out.join(STAGING);
    let mut gone = staging.clone().into_os_string();
    gone.push(unique_tmp_suffix());
    let gone = PathBuf::from(gone);
    match std::fs::rename(&staging, &gone) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(&staging)(e)),
        Ok(()) => {}
    }
    let mut result = std::fs::remove_dir_all(&gone);
    for _ in 0..3 {
        if result.is_ok() {
            break;
        }
        result = std::fs::remove_dir_all(&gone);
    }
    result.map_err(io(&gone))
}

/// Name of shard number `n`.
pub fn shard_name(n: u64) -> String {
    format!("shard-{n:06}.tar")
}

/// The webdataset key of an input path: the path with, in its last
/// component only, `%` written `%25` and `.` written `%2E`. The webdataset
/// library splits a member name at the first dot of its last component, so
/// the key must have none there; the escape keeps keys distinct.
pub fn sample_key(rel: &str) -> String {
    let (dir, base) = match rel.rfind('/') {
        Some(i) => rel.split_at(i + 1),
        None => ("", rel),
    };
    let mut key = String::with_capacity(rel.len() + 8);
    key.push_str(dir);
    for ch in base.chars() {
        match ch {
            '%' => key.push_str("%25"),
            '.' => key.push_str("%2E"),
            c => key.push(c),
        }
    }
    key
}

/// The class of an input path: its top-level folder, if it has one.
pub fn class_of(rel: &str) -> Option<&str> {
    rel.split_once('/').map(|(c, _)| c)
}

/// The `<key>.json` of a webdataset sample.
#[derive(Serialize)]
struct SampleMeta<'a> {
    path: &'a str,
    shape: [u32; 3],
    dtype: &'static str,
    class: Option<&'a str>,
    min: &'a [u32],
    max: &'a [u32],
    checksum: Option<&'a str>,
}

/// Shards of `shard_size` ok samples each, in index order, each written to a
/// temporary name and renamed; tar headers carry no time, owner or host data
/// (mtime 0, uid/gid 0, mode 0644), so shards are byte-identical across runs.
fn write_shards(
    out: &Path,
    opts: &EngineOptions,
    shard_size: u64,
    records: &mut [Record],
) -> Result<(), FormatError> {
    let staging = out.join(STAGING);
    let mut open: Option<(tar::Builder<BufWriter<File>>, PathBuf, PathBuf)> = None;
    let mut done = 0u64;
    let mut npy = Vec::new();
    for r in records.iter_mut().filter(|r| r.status == Status::Ok) {
        if done.is_multiple_of(shard_size) {
            if let Some(shard) = open.take() {
                close_shard(shard)?;
            }
            let dest = out.join(shard_name(done / shard_size));
            let mut tmp = dest.clone().into_os_string();
            tmp.push(unique_tmp_suffix());
            let tmp = PathBuf::from(tmp);
            let f = File::create(&tmp).map_err(io(&tmp))?;
            open = Some((tar::Builder::new(BufWriter::new(f)), tmp, dest));
        }
        let Some((builder, tmp, _)) = open.as_mut() else {
            continue;
        };
        let src = staging.join(format!("{}.npy", r.path));
        npy.clear();
        File::open(&src)
            .and_then(|mut f| f.read_to_end(&mut npy))
            .map_err(io(&src))?;
        let key = sample_key(&r.path);
        let meta = SampleMeta {
            path: &r.path,
            shape: [
                r.height.unwrap_or(0),
                r.width.unwrap_or(0),
                r.channels.unwrap_or(0),
            ],
            dtype: opts.dtype.descr(),
            class: class_of(&r.path),
            min: &r.min,
            max: &r.max,
            checksum: r.checksum.as_deref(),
        };
        let json = serde_json::to_vec(&meta).unwrap_or_default();
        append(builder, &format!("{key}.npy"), &npy).map_err(io(tmp))?;
        append(builder, &format!("{key}.json"), &json).map_err(io(tmp))?;
        r.output = Some(shard_name(done / shard_size));
        done += 1;
    }
    if let Some(shard) = open.take() {
        close_shard(shard)?;
    }
    Ok(())
}

fn append(b: &mut tar::Builder<BufWriter<File>>, name: &str, data: &[u8]) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    b.append_data(&mut h, name, data)
}

fn close_shard(
    (builder, tmp, dest): (tar::Builder<BufWriter<File>>, PathBuf, PathBuf),
) -> Result<(), FormatError> {
    let result = builder
        .into_inner()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &dest));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io(&dest))
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
    let classes: Vec<&str> = classes.into_iter().collect();
    let labels: Vec<u8> = records
        .iter()
        .flat_map(|r| {
            let label = class_of(&r.path)
                .filter(|_| r.status != Status::Skipped)
                .and_then(|c| classes.binary_search(&c).ok())
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
fn npy_file(descr: &str, n: usize, data: &[u8]) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_no_dot_in_the_last_component_and_stay_distinct() {
        assert_eq!(sample_key("cat/img.1.jpg"), "cat/img%2E1%2Ejpg");
        assert_eq!(sample_key("v1.0/x.png"), "v1.0/x%2Epng");
        assert_eq!(sample_key("a%2Epng"), "a%252Epng");
        assert_ne!(sample_key("a.png"), sample_key("a%2Epng"));
        assert_eq!(sample_key("noext"), "noext");
    }

    #[test]
    fn small_npy_headers_are_aligned() {
        let f = npy_file("<i8", 3, &[0; 24]);
        let offset = npy_data_offset(&f);
        assert_eq!(offset % 64, 0);
        assert_eq!(f.len(), offset + 24);
        assert!(
            std::str::from_utf8(&f[10..offset])
                .unwrap()
                .contains("(3,)")
        );
    }
}
